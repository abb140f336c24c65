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
 * count in the top lists. Memory is bounded: 360 buckets per series, at most
 * TOP_CAP subjects per 10-minute slice of the top lists, and SHOWN_CAP
 * attempts awaiting their report.
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
}

type Slice = { start: number; ips: Map<string, number>; networks: Map<string, number>; users: Map<string, number> };

const SENDING = new Set(['mail', 'recipient', 'data', 'message']);
// Constant names: a name built per decision would be hashed anew on every lookup.
const DECISION_SERIES: Record<Action, SeriesName> = {
  allow: 'decisions.allow',
  delay: 'decisions.delay',
  tempfail: 'decisions.tempfail',
  reject: 'decisions.reject',
  hold: 'decisions.hold',
};

const attemptKey = (event: MailEvent): string => `${event.ip}|${event.protocol}|${event.user ?? ''}`;

export class Activity {
  private readonly series = new Map<SeriesName, Float64Array>(SERIES.map((s) => [s, new Float64Array(POINTS)]));
  /** Epoch step index of the newest bucket. */
  private head: number;
  private slices: Slice[] = [];
  private readonly listeners = new Set<(item: FeedItem) => void>();
  private readonly recentItems: FeedItem[] = [];
  /** Dovecot attempts refused or delayed at allow, per ip|protocol|user: how many, and the last one's time. */
  private readonly shown = new Map<string, { n: number; time: number }>();

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
    // Before the allow test: a successful report ends its attempt's wait too.
    if (event.kind === 'auth-result' && this.reported(event)) return;
    if (d.action === 'allow' && !failed) return;
    this.count(event);
    if (d.action !== 'allow') {
      const adapter = event.kind.startsWith('auth-') ? 'dovecot' : 'postfix';
      if (event.kind === 'auth-attempt') this.attempted(event);
      this.publish({
        time: event.time,
        kind: 'decision',
        adapter,
        protocol: event.protocol,
        action: d.action,
        rule: d.rule,
        ip: event.ip,
        user: event.user,
        reason: d.reason,
      });
    }
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

  private count(event: MailEvent): void {
    const sliceStart = Math.floor(event.time / SLICE_MS) * SLICE_MS;
    let s = this.slices[this.slices.length - 1];
    if (!s || s.start !== sliceStart) {
      s = { start: sliceStart, ips: new Map(), networks: new Map(), users: new Map() };
      this.slices.push(s);
      this.slices = this.slices.filter((x) => x.start > sliceStart - SLICES * SLICE_MS);
    }
    const p = this.prefixes();
    const inc = (m: Map<string, number>, k: string): void => {
      const v = m.get(k);
      if (v !== undefined) m.set(k, v + 1);
      else if (m.size < TOP_CAP) m.set(k, 1);
    };
    inc(s.ips, event.ip);
    inc(s.networks, clientNetwork(event.ip, p));
    if (event.user) inc(s.users, event.user);
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
    const sum = (pick: (s: Slice) => Map<string, number>): Array<{ subject: string; count: number }> => {
      const total = new Map<string, number>();
      for (const s of live) for (const [k, v] of pick(s)) total.set(k, (total.get(k) ?? 0) + v);
      return [...total]
        .sort((a, b) => b[1] - a[1])
        .slice(0, n)
        .map(([subject, count]) => ({ subject, count }));
    };
    return { ips: sum((s) => s.ips), networks: sum((s) => s.networks), users: sum((s) => s.users) };
  }
}
