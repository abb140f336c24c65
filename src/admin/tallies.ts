/*
 * admin/tallies — the metrics counted on every decision, kept in plain
 * numbers and handed to prom-client only when Prometheus scrapes.
 *
 * prom-client hashes the label set on every inc() and observe(), even through
 * a label child; at ~70k decisions/s that cost 7% of the daemon's throughput.
 * Here the hot path is one Map lookup and a few additions.
 */
import { Counter, type Histogram, type Registry } from 'prom-client';

/** A counter over a fixed set of labels; its deltas go into a prom-client Counter at scrape time. */
export class TalliedCounter<L extends string> {
  private readonly rows = new Map<string, { labels: Record<L, string>; n: number; exported: number }>();

  constructor(o: { name: string; help: string; labelNames: readonly L[]; registry: Registry }) {
    const rows = this.rows;
    new Counter<L>({
      name: o.name,
      help: o.help,
      labelNames: o.labelNames,
      registers: [o.registry],
      collect(this: Counter<L>) {
        for (const r of rows.values()) {
          if (r.n > r.exported) this.inc(r.labels, r.n - r.exported);
          r.exported = r.n;
        }
      },
    });
  }

  /** Counts one; `key` names the label set, `labels` makes it the first time. */
  inc(key: string, labels: () => Record<L, string>): void {
    const r = this.rows.get(key);
    if (r) r.n++;
    else this.rows.set(key, { labels: labels(), n: 1, exported: 0 });
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
