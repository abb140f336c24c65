/*
 * admin/activity — what the dashboard shows of the last hour: decisions per
 * 10 s by action, failed logins by protocol, flow-limit hits, the top
 * offending addresses, networks and users, and a live feed of refusals, bans
 * and suspensions for server-sent events.
 *
 * Fed by the decider for every decision, so the per-event work is a few
 * array increments; allowed decisions never reach the feed. A Dovecot login
 * is two events, its allow and its report: the allow's refusal is the
 * attempt's one row, and its report is neither a second row nor a second
 * count in the top lists. Under attack one source is refused again and
 * again: its refusals by one rule make one feed row per FEED_INTERVAL_MS,
 * whose `count` says how many it stands for (the series and top lists still
 * count each). Memory is bounded: 360 buckets per series, at most TOP_CAP
 * subjects per 10-minute slice of the top lists, SHOWN_CAP attempts awaiting
 * their report, and OPEN_CAP sources with a feed row open.
 */
import { clientNetwork } from '../engine/address.js';
import type { Action, Decision, MailEvent } from '../engine/types.js';

export const STEP_S = 10;
const POINTS = 360;
const SLICE_MS = 600_000;
const SLICES = 6;
const TOP_CAP = 50_000;
const RECENT = 50;
const SHOWN_CAP = 4096;
/** Longer than any login takes between its allow and its report (the allow's delay included). */
const REPORT_WAIT_MS = 120_000;
/** A source's refusals by one rule within this long of its row are counted on that row. */
export const FEED_INTERVAL_MS = 10_000;
/** Sources and rules with a row open, about 300 bytes each: past this, the oldest row closes early. */
const OPEN_CAP = 50_000;

export const SERIES = [
  'decisions.allow',
  'decisions.delay',
  'decisions.tempfail',
  'decisions.reject',
  'decisions.hold',
  'auth_failures.imap',
  'auth_failures.pop3',
  'auth_failures.smtp',
  'auth_failures.other',
  'flow_limit_hits',
] as const;
type SeriesName = (typeof SERIES)[number];

export interface FeedItem {
  time: number;
  kind: 'decision' | 'ban' | 'unban' | 'suspend' | 'resume';
  adapter?: string | undefined;
  protocol?: string | undefined;
  action?: string | undefined;
  rule?: string | undefined;
  ip?: string | undefined;
  user?: string | undefined;
  subject?: string | undefined;
  reason?: string | undefined;
  /** A refusal's row: the refusals it stands for, of this source by this rule since its previous row. */
  count?: number | undefined;
}

/** A count in the top lists, changed in place. */
type Cell = { n: number };
type Slice = { start: number; ips: Map<string, Cell>; networks: Map<string, Cell>; users: Map<string, Cell> };
/** A source's cells in one slice (undefined: that list was full, the source is not in it). */
type Tally = { slice: Slice; ip: Cell | undefined; network: Cell | undefined; user: Cell | undefined };

/**
 * A source's feed row for one rule: its repeats are counted, not published, until the source's next refusal
 * FEED_INTERVAL_MS after the row opens a row of its own (with that count), or until the source has been quiet
 * that long (sweep()).
 */
interface OpenRow {
  row: FeedItem;
  repeats: number;
  /** The time of its last refusal (the row's own, until a repeat). */
  last: number;
  /** Still the source's row for this rule (its place in the opening order is skipped once not). */
  live: boolean;
  /** The source's next open row (another rule, protocol or user). */
  next: OpenRow | undefined;
  /** The source's network (made once per row, not per refusal), and its cells: a repeat adds to them. */
  network: string;
  tally: Tally;
}

const SENDING = new Set(['mail', 'recipient', 'data', 'message']);
// Constant names: a name built per decision would be hashed anew on every lookup.
const DECISION_SERIES: Record<Action, SeriesName> = {
  allow: 'decisions.allow',
  delay: 'decisions.delay',
  tempfail: 'decisions.tempfail',
  reject: 'decisions.reject',
  hold: 'decisions.hold',
};

const sliceOf = (time: number): number => Math.floor(time / SLICE_MS) * SLICE_MS;

const attemptKey = (event: MailEvent): string => `${event.ip}|${event.protocol}|${event.user ?? ''}`;

function inc(m: Map<string, Cell>, k: string): Cell | undefined {
  let c = m.get(k);
  if (c !== undefined) c.n++;
  else if (m.size < TOP_CAP) m.set(k, (c = { n: 1 }));
  return c;
}

export class Activity {
  private readonly series = new Map<SeriesName, Float64Array>(SERIES.map((s) => [s, new Float64Array(POINTS)]));
  /** Epoch step index of the newest bucket. */
  private head: number;
  private slices: Slice[] = [];
  private readonly listeners = new Set<(item: FeedItem) => void>();
  private readonly recentItems: FeedItem[] = [];
  /** Dovecot attempts refused or delayed at allow, per ip|protocol|user: how many, and the last one's time. */
  private readonly shown = new Map<string, { n: number; time: number }>();
  /** ip → its open feed rows, chained (one per rule, protocol and user: mostly one); no key is built per refusal. */
  private readonly open = new Map<string, OpenRow>();
  private openRows = 0;
  /**
   * The open rows in the order they were opened, from `first` on (the place of a row no longer live is
   * skipped). Not a Map's own order: finding the oldest key of a Map that many keys left walks past every
   * hole they left.
   */
  private order: OpenRow[] = [];
  private first = 0;
  /** When the oldest open row may close: its source quiet for an interval (a decision at or after it sweeps). */
  private nextSweep = Infinity;
  /** Sweeps while rows are open and no decision comes: on the decisions' clock, from the last row's time. */
  private sweeper: NodeJS.Timeout | undefined;
  private lastRow = { time: 0, at: 0 };

  constructor(
    now: number,
    private readonly prefixes: () => { ipv4Prefix: number; ipv6Prefix: number },
  ) {
    this.head = Math.floor(now / 1000 / STEP_S);
  }

  /** Advances the ring to `now`, zeroing the buckets that were skipped. */
  private advance(now: number): number {
    const step = Math.floor(now / 1000 / STEP_S);
    if (step > this.head) {
      const gap = Math.min(POINTS, step - this.head);
      for (const arr of this.series.values()) {
        for (let i = 1; i <= gap; i++) arr[(this.head + i) % POINTS] = 0;
      }
      this.head = step;
    }
    return this.head % POINTS;
  }

  private bump(name: SeriesName, at: number): void {
    const arr = this.series.get(name) as Float64Array;
    arr[at] = (arr[at] as number) + 1;
  }

  record(event: MailEvent, d: Decision): void {
    const at = this.advance(event.time);
    this.bump(DECISION_SERIES[d.action], at);
    const failed = event.kind === 'auth-result' && event.success === false;
    if (failed) {
      const p =
        event.protocol === 'imap' || event.protocol === 'pop3' || event.protocol === 'smtp' ? event.protocol : 'other';
      this.bump(`auth_failures.${p}`, at);
    }
    if (SENDING.has(event.kind) && d.hits.some((h) => !h.observe)) this.bump('flow_limit_hits', at);
    if (event.time >= this.nextSweep) this.sweep(event.time);
    // Before the allow test: a successful report ends its attempt's wait too.
    if (event.kind === 'auth-result' && this.reported(event)) return;
    if (d.action === 'allow') {
      if (failed) this.count(event, clientNetwork(event.ip, this.prefixes()));
      return;
    }
    if (event.kind === 'auth-attempt') this.attempted(event);
    this.refused(event, d);
  }

  /** A refusal: counted, and a feed row unless the source has one open for this rule (its count grows then). */
  private refused(event: MailEvent, d: Decision): void {
    const head = this.open.get(event.ip);
    let o = head;
    while (
      o !== undefined &&
      !(o.row.rule === d.rule && o.row.protocol === event.protocol && o.row.user === event.user)
    )
      o = o.next;
    // Either way round: decisions that wait for the store may come back a little out of order.
    if (o !== undefined && Math.abs(event.time - o.row.time) < FEED_INTERVAL_MS) {
      o.repeats++;
      o.last = event.time;
      const t = o.tally;
      if (t.slice.start === sliceOf(event.time)) {
        if (t.ip !== undefined) t.ip.n++;
        if (t.network !== undefined) t.network.n++;
        if (t.user !== undefined) t.user.n++;
      } else o.tally = this.count(event, o.network);
      return;
    }
    const network = o?.network ?? clientNetwork(event.ip, this.prefixes());
    const tally = this.count(event, network);
    const row: FeedItem = {
      time: event.time,
      kind: 'decision',
      adapter: event.kind.startsWith('auth-') ? 'dovecot' : 'postfix',
      protocol: event.protocol,
      action: d.action,
      rule: d.rule,
      ip: event.ip,
      user: event.user,
      reason: d.reason,
      count: (o?.repeats ?? 0) + 1,
    };
    if (this.openRows === 0) this.nextSweep = event.time + FEED_INTERVAL_MS;
    // Replaces the source's row for this rule, or joins its chain.
    const opened: OpenRow = { row, repeats: 0, last: event.time, live: true, next: head, network, tally };
    if (o !== undefined) {
      this.unchain(o);
      opened.next = this.open.get(event.ip);
    } else this.openRows++;
    this.open.set(event.ip, opened);
    this.order.push(opened);
    if (this.openRows > OPEN_CAP) this.closeOldest(this.oldest() as OpenRow);
    this.lastRow = { time: event.time, at: performance.now() };
    if (this.sweeper === undefined) {
      this.sweeper = setInterval(
        () => this.sweep(this.lastRow.time + performance.now() - this.lastRow.at),
        FEED_INTERVAL_MS,
      );
      this.sweeper.unref();
    }
    this.publish(row);
  }

  /**
   * Closes the feed rows of sources quiet for FEED_INTERVAL_MS at `now`, publishing the count of the
   * repeats each had. (A source still refused keeps its row until its next refusal after the interval,
   * which opens the next row with that count.)
   */
  sweep(now: number): void {
    this.nextSweep = Infinity;
    // Oldest first: the first row not to close ends the walk (it moves on at its source's next refusal).
    for (let o = this.oldest(); o !== undefined; o = this.oldest()) {
      if (Math.abs(now - o.last) < FEED_INTERVAL_MS) {
        this.nextSweep = o.last + FEED_INTERVAL_MS;
        break;
      }
      this.closeOldest(o);
    }
    if (this.openRows === 0 && this.sweeper !== undefined) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  /** Takes a row out of its source's chain; it is no longer live. */
  private unchain(o: OpenRow): void {
    o.live = false;
    const ip = o.row.ip as string;
    const head = this.open.get(ip) as OpenRow;
    if (head === o) {
      if (o.next === undefined) this.open.delete(ip);
      else this.open.set(ip, o.next);
      return;
    }
    let prev = head;
    while (prev.next !== o) prev = prev.next as OpenRow;
    prev.next = o.next;
  }

  /** The oldest row still open (skipping the places of rows no longer live). */
  private oldest(): OpenRow | undefined {
    while (this.first < this.order.length) {
      const o = this.order[this.first] as OpenRow;
      if (o.live) return o;
      this.first++;
    }
    this.order = [];
    this.first = 0;
    return undefined;
  }

  /** Closes the oldest open row (what oldest() returned), publishing its repeats. */
  private closeOldest(o: OpenRow): void {
    this.unchain(o);
    this.openRows--;
    this.first++;
    if (this.first > 1024 && this.first * 2 > this.order.length) {
      this.order = this.order.slice(this.first);
      this.first = 0;
    }
    if (o.repeats > 0) this.publish({ ...o.row, time: o.last, count: o.repeats });
  }

  /** Notes a Dovecot attempt that has its row, so that its report makes none. */
  private attempted(event: MailEvent): void {
    const key = attemptKey(event);
    const had = this.shown.get(key);
    const n = had && event.time - had.time < REPORT_WAIT_MS ? had.n + 1 : 1;
    // Re-inserted at the end, so the first key is always the one waiting longest.
    this.shown.delete(key);
    this.shown.set(key, { n, time: event.time });
    if (this.shown.size > SHOWN_CAP) this.shown.delete(this.shown.keys().next().value as string);
  }

  /**
   * Whether this report's attempt already has its row: refused at allow (Dovecot says
   * `policy_reject`), or delayed and noted by attempted().
   */
  private reported(event: MailEvent): boolean {
    const key = attemptKey(event);
    const had = this.shown.get(key);
    if (had) {
      if (had.n > 1) had.n--;
      else this.shown.delete(key);
    }
    return event.refused === true || (had !== undefined && event.time - had.time < REPORT_WAIT_MS);
  }

  /** Counts the event's source in the top lists; its cells there. */
  private count(event: MailEvent, network: string): Tally {
    const sliceStart = sliceOf(event.time);
    let s = this.slices[this.slices.length - 1];
    if (!s || s.start !== sliceStart) {
      s = { start: sliceStart, ips: new Map(), networks: new Map(), users: new Map() };
      this.slices.push(s);
      this.slices = this.slices.filter((x) => x.start > sliceStart - SLICES * SLICE_MS);
    }
    return {
      slice: s,
      ip: inc(s.ips, event.ip),
      network: inc(s.networks, network),
      user: event.user ? inc(s.users, event.user) : undefined,
    };
  }

  publish(item: FeedItem): void {
    this.recentItems.push(item);
    if (this.recentItems.length > RECENT) this.recentItems.shift();
    for (const l of this.listeners) l(item);
  }

  /** The last items published, oldest first: a new subscriber starts with them. */
  recent(): readonly FeedItem[] {
    return this.recentItems;
  }

  subscribe(listener: (item: FeedItem) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  timeline(now: number): { step: number; start: number; series: Record<string, number[]> } {
    const at = this.advance(now);
    const series: Record<string, number[]> = {};
    for (const [name, arr] of this.series) {
      const out = new Array<number>(POINTS);
      for (let i = 0; i < POINTS; i++) out[i] = arr[(at + 1 + i) % POINTS] as number;
      series[name] = out;
    }
    return { step: STEP_S, start: (this.head - POINTS + 1) * STEP_S, series };
  }

  top(now: number, n = 10): Record<'ips' | 'networks' | 'users', Array<{ subject: string; count: number }>> {
    const live = this.slices.filter((s) => s.start > now - SLICES * SLICE_MS);
    const sum = (pick: (s: Slice) => Map<string, Cell>): Array<{ subject: string; count: number }> => {
      const total = new Map<string, number>();
      for (const s of live) for (const [k, v] of pick(s)) total.set(k, (total.get(k) ?? 0) + v.n);
      return [...total]
        .sort((a, b) => b[1] - a[1])
        .slice(0, n)
        .map(([subject, count]) => ({ subject, count }));
    };
    return { ips: sum((s) => s.ips), networks: sum((s) => s.networks), users: sum((s) => s.users) };
  }
}
