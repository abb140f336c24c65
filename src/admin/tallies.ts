/*
 * admin/tallies — the metrics counted on every decision, kept in plain
 * numbers and handed to prom-client only when Prometheus scrapes.
 *
 * prom-client hashes the label set on every inc() and observe(), even through
 * a label child; at ~70k decisions/s that cost 7% of the daemon's throughput.
 * Here the hot path is one small Map lookup per label and an addition.
 */
import { Counter, type Histogram, type Registry } from 'prom-client';

interface Row {
  n: number;
  exported: number;
}

/** Label value → the next label's level, or the row at the last label. */
type Level = Map<string, Level | Row>;

/** A counter over a fixed set of labels; its deltas go into a prom-client Counter at scrape time. */
export class TalliedCounter<L extends string> {
  private readonly tree: Level = new Map();
  private readonly rows: Array<{ labels: Record<L, string>; row: Row }> = [];
  private readonly labelNames: readonly L[];

  constructor(o: { name: string; help: string; labelNames: readonly L[]; registry: Registry }) {
    const rows = this.rows;
    this.labelNames = o.labelNames;
    new Counter<L>({
      name: o.name,
      help: o.help,
      labelNames: o.labelNames,
      registers: [o.registry],
      collect(this: Counter<L>) {
        for (const { labels, row } of rows) {
          if (row.n > row.exported) this.inc(labels, row.n - row.exported);
          row.exported = row.n;
        }
      },
    });
  }

  /**
   * Counts one for the label values, in `labelNames` order. Each value is looked up on
   * its own: values are the same few strings every time, so their hashes are cached,
   * where a key joined from them would be a new string to hash on every call.
   */
  inc(values: readonly string[]): void {
    let level = this.tree;
    const last = values.length - 1;
    for (let i = 0; i < last; i++) {
      const v = values[i] as string;
      let next = level.get(v) as Level | undefined;
      if (next === undefined) level.set(v, (next = new Map()));
      level = next;
    }
    const row = level.get(values[last] as string) as Row | undefined;
    if (row !== undefined) {
      row.n++;
      return;
    }
    const made: Row = { n: 1, exported: 0 };
    level.set(values[last] as string, made);
    const labels = {} as Record<L, string>;
    this.labelNames.forEach((name, i) => (labels[name] = values[i] as string));
    this.rows.push({ labels, row: made });
  }
}

interface Series {
  /** Observations per bucket (not cumulative); the last one is +Inf. */
  counts: number[];
  sum: number;
  count: number;
}

/**
 * A histogram by one label, registered as a metric of its own: prom-client has
 * no way to set a Histogram's buckets, so this renders the same exposition
 * (`_bucket{le}` cumulative, `_sum`, `_count`) from its own numbers.
 */
export class TalliedHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, Series>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly label: string,
    private readonly bounds: readonly number[],
    registry: Registry,
  ) {
    // The registry reads a metric through get(); the cast is only for its typing, which lists prom-client's own classes.
    registry.registerMetric(this as unknown as Histogram);
  }

  observe(labelValue: string, v: number): void {
    let s = this.series.get(labelValue);
    if (!s)
      this.series.set(
        labelValue,
        (s = { counts: new Array<number>(this.bounds.length + 1).fill(0), sum: 0, count: 0 }),
      );
    let i = 0;
    while (i < this.bounds.length && v > (this.bounds[i] as number)) i++;
    (s.counts[i] as number)++;
    s.sum += v;
    s.count++;
  }

  get(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }>;
  }> {
    const values = [];
    for (const [lv, s] of this.series) {
      let cumulative = 0;
      for (let i = 0; i <= this.bounds.length; i++) {
        cumulative += s.counts[i] as number;
        const le = i < this.bounds.length ? (this.bounds[i] as number) : '+Inf';
        values.push({ metricName: `${this.name}_bucket`, labels: { le, [this.label]: lv }, value: cumulative });
      }
      values.push({ metricName: `${this.name}_sum`, labels: { [this.label]: lv }, value: s.sum });
      values.push({ metricName: `${this.name}_count`, labels: { [this.label]: lv }, value: s.count });
    }
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values });
  }
}
