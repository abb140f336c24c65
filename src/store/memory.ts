/*
 * store/memory — the embedded store: hot counters in bounded Maps, durable
 * state (bans, suspensions, offences, audit) in SQLite via store/sqlite.ts.
 *
 * Bounded memory: rate counters and distinct sets share one table holding at
 * most `maxKeys` keys (store/counter-table.ts), and the coldest key of either
 * kind is evicted first (one order, so neither kind can crowd the other out).
 * An evicted key simply starts again from zero, so eviction can only ever
 * under-count a cold subject, never block a warm one.
 *
 * Atomicity is free here: apply() runs to completion on the event loop.
 *
 * In cluster mode (store/resilient.ts) a MemoryStore is each node's local
 * memory: `mirror*` keep its bans and suspensions equal to the shared Redis
 * store's (no audit rows, and an offence only for a ban it had not seen), and
 * it counts on its own only while Redis is unreachable.
 */
import { escalatedDuration, type ApplyResult, type CounterResult } from '../engine/decide.js';
import { banCoverFor, type CounterOp, type Plan } from '../engine/plan.js';
import type { BanEffect, BanRecord, Effect, MailEvent, RuleHit, SuspensionRecord } from '../engine/types.js';
import { gateContext, holds, passes } from '../engine/gate.js';
import { DISTINCT_CAP, gcra, gcraCount, isPending, memberTime, usualAdd, usualRate, type Usual } from './counting.js';
import { BanTable } from './ban-table.js';
import { checkBan, checkCounter, checkSuspension, type Checked, type CounterValue } from './records.js';
import { CounterTable } from './counter-table.js';
import { DiskWrites, type DiskHealth } from './disk-writes.js';
import { DistinctSet } from './distinct-set.js';
import { SqlitePersistence } from './sqlite.js';
import {
  AUDIT_THROTTLE_MS,
  hitEvidence,
  type AllowRecord,
  type AuditPage,
  type AuditQuery,
  type AuditRow,
  type CommitResult,
  type Store,
  type StoreStats,
} from './types.js';

export interface MemoryStoreOptions {
  /** SQLite file; ':memory:' for tests that need no durability. */
  file: string;
  maxKeys: number;
  /** Offence history older than this is forgotten (the escalation look-back). */
  lookbackMs: number;
  now: () => number;
  /** Where a repaired or skipped stored record is reported (store/records.ts); silent when unset. */
  warn?: ((fields: Record<string, unknown>, message: string) => void) | undefined;
  /** Told when writes to the data directory start failing and when they work again (store/disk-writes.ts). */
  onDisk?: ((health: DiskHealth) => void) | undefined;
}

/** A change to the bans in force, told to whoever copies them elsewhere (the firewall: actions/firewall.ts). */
export type BanChange =
  | { kind: 'set'; rec: BanRecord }
  | { kind: 'delete'; subject: string }
  | { kind: 'replace'; bans: readonly BanRecord[] };

/** The actor of what the rules do; anyone else is a person waiting for an answer. */
const AUTOMATIC = 'mailwarden';

export class MemoryStore implements Store {
  readonly backend = 'memory';
  /**
   * Told of every ban made, changed, lifted or replaced here, rules' and people's and (in cluster
   * mode) the mirrored ones alike; not of a ban running out. Called synchronously: it must not throw.
   */
  onBanChange: ((change: BanChange) => void) | undefined;
  /** Counter key → GCRA TAT (rate rules), member → last seen (distinct rules), or a usual rate; coldest evicted first. */
  private readonly counters: CounterTable<CounterValue>;
  private readonly bans = new BanTable();
  private readonly suspensions = new Map<string, SuspensionRecord>();
  /** aggregate prefix → member network → ban time, for IPv6 escalation. */
  private readonly aggregates = new Map<string, Map<string, number>>();
  private readonly lastAudit = new Map<string, number>();
  readonly db: SqlitePersistence;
  private readonly disk: DiskWrites;
  private readonly opts: MemoryStoreOptions;

  constructor(opts: MemoryStoreOptions) {
    this.opts = opts;
    this.counters = new CounterTable(opts.maxKeys);
    this.db = new SqlitePersistence(opts.file);
    this.disk = new DiskWrites({ now: opts.now, onChange: opts.onDisk, unwritable: this.db.unwritable });
    const now = opts.now();
    this.db.prune(now, opts.lookbackMs);
    // Rows are checked as they come back (store/records.ts): a damaged one is repaired and written back
    // (so the repair does not move on at every start), or skipped, and reported either way.
    for (const row of this.db.loadBans(now)) {
      const c = checkBan(row, now);
      const rec = this.checked('ban', row.subject, c);
      if (rec === undefined) continue;
      this.bans.set(rec);
      if (c.problems.length === 0) continue;
      if (rec.subject !== row.subject) this.disk.write(() => this.db.deleteBan(String(row.subject)));
      this.disk.write(() => this.db.saveBan(rec, false));
    }
    for (const row of this.db.loadSuspensions(now)) {
      const c = checkSuspension(row, now);
      const rec = this.checked('suspension', row.user, c);
      if (rec === undefined) continue;
      this.suspensions.set(rec.user, rec);
      if (c.problems.length > 0) this.disk.write(() => this.db.saveSuspension(rec));
    }
    let unreadable = 0;
    for (const row of this.db.loadCounters()) {
      const { value } = checkCounter(row, now);
      if (value === undefined) unreadable++;
      else this.counters.set(row.key, value);
    }
    if (unreadable > 0)
      this.opts.warn?.({ unreadable }, 'store: counter snapshot rows that cannot be read start again from zero');
  }

  /** A record from outside (the shared store, the push-back queue) as checked: reported if it was not sound. */
  private checked<T>(kind: string, subject: unknown, c: Checked<T>): T | undefined {
    if (c.problems.length > 0) this.reportRecord(kind, subject, c.problems, c.rec !== undefined);
    return c.rec;
  }

  private reportRecord(kind: string, subject: unknown, problems: string[], kept: boolean): void {
    this.opts.warn?.(
      { kind, subject, problems },
      `store: a stored ${kind} was ${kept ? 'repaired' : 'skipped'}: ${problems.join('; ')}`,
    );
  }

  /**
   * The ban in force on an address or any network holding it, from memory alone: no counter,
   * script or disk is involved, so the decider can still refuse a banned source when the rest
   * of a decision failed. Never throws for a stored value (bans are checked on the way in).
   */
  localBan(ip: string, now: number): BanRecord | undefined {
    return this.bans.covering(banCoverFor(ip), now);
  }

  apply(plan: Plan, now: number): ApplyResult {
    return this.applySync(plan, now);
  }

  /** The ban and the suspension in force on a plan's client and user, if any (counts nothing). */
  standing(plan: Plan, now: number): Pick<ApplyResult, 'ban' | 'suspension'> {
    return {
      ban: plan.banCover === undefined ? undefined : this.bans.covering(plan.banCover, now),
      suspension: plan.suspendedUser === undefined ? undefined : this.activeSuspension(plan.suspendedUser, now),
    };
  }

  /** The synchronous core of apply(), exposed for the benchmark and tests. */
  applySync(plan: Plan, now: number): ApplyResult {
    const { ban, suspension } = this.standing(plan, now);
    const counters: CounterResult[] = new Array<CounterResult>(plan.counters.length);
    // What each op read, kept for its charge: a rate's new TAT, a distinct set, a usual rate.
    const held: Array<CounterValue | undefined> = new Array<CounterValue | undefined>(plan.counters.length);
    for (let i = 0; i < plan.counters.length; i++) {
      const op = plan.counters[i] as CounterOp;
      let r: CounterResult;
      if (op.type === 'rate') {
        const out = gcra(this.rateOf(op.key), now, op.cost, op.limit, op.windowMs);
        r = { count: out.count, exceeded: out.exceeded };
        held[i] = out.tat;
      } else if (op.type === 'distinct') {
        const set = this.setOf(op.key);
        let seen = false;
        let count = 1; // with this member
        if (set) {
          set.prune(now, op.windowMs);
          seen = set.has(op.member);
          count = seen ? set.size : set.size + 1;
        }
        r = { count, exceeded: count > op.limit, seen };
        held[i] = set;
      } else if (op.type === 'read') {
        const count = this.readCount(op, now);
        r = { count, exceeded: count >= op.limit };
      } else {
        const usual = this.usualOf(op.key);
        r = {
          count: usualRate(usual, now, op.tauMs) * op.windowMs + (op.withSelf ? op.cost : 0),
          exceeded: false,
        };
        held[i] = usual;
      }
      counters[i] = r;
    }
    const ctx = gateContext(plan, counters);
    const pass = passes(plan, counters, ban !== undefined || suspension !== undefined, ctx);
    // Charge as each op says (engine/plan.ts): if the event passes, if this counter conforms, always, or never;
    // in-flight members as pending, settled or forgotten. A check or a read (charge `never`) does not mark
    // its key used: the failures it reads were charged when they happened.
    for (let i = 0; i < plan.counters.length; i++) {
      const op = plan.counters[i] as CounterOp;
      if (op.charge === 'never') continue;
      if ((op.type === 'rate' || op.type === 'distinct') && !holds(op.flags, ctx.shared)) continue;
      const r = counters[i] as CounterResult;
      if (op.type === 'distinct' && (op.charge === 'settle' || op.charge === 'forget')) {
        const set = held[i] as DistinctSet | undefined;
        const t = set?.get(op.member);
        if (set === undefined || t === undefined || (op.charge === 'settle' && !isPending(t))) continue;
        set.delete(op.member);
        // A login's in-flight members are mostly settled by its own report: leave no empty set behind.
        if (set.size === 0) this.counters.delete(op.key);
        continue;
      }
      const charge =
        op.charge === 'always' ||
        (op.charge === 'pending' && pass) ||
        (op.charge === 'if-pass' && pass && !r.exceeded) ||
        (op.charge === 'if-conform' && !r.exceeded);
      if (!charge) {
        // A refused subject is hot, not cold: keep its key from eviction, or a flood
        // from one address during a scan of many would win a fresh burst each time.
        this.counters.refresh(op.key);
        continue;
      }
      if (op.type === 'rate') {
        this.counters.set(op.key, held[i] as number);
      } else if (op.type === 'distinct') {
        const set = held[i] as DistinctSet | undefined;
        // A pending charge keeps a confirmed member confirmed; any other charge confirms.
        const was = set?.get(op.member);
        const time = memberTime(now, op.charge === 'pending' && (was === undefined || isPending(was)));
        // A member seen again moves to the back: sets are kept in last-seen order (DistinctSet.prune).
        if (set === undefined) this.counters.set(op.key, DistinctSet.of(op.member, time));
        else {
          if (r.seen === true) set.delete(op.member);
          if (set.size < DISTINCT_CAP) set.set(op.member, time);
          this.counters.refresh(op.key); // changed in place
        }
      } else {
        this.counters.set(op.key, usualAdd(held[i] as Usual | undefined, now, op.tauMs, op.cost));
      }
    }
    return { ban, suspension, counters };
  }

  /** A rate counter's TAT (a key holding the other kind, after a rule changed its count, reads as new). */
  private rateOf(key: string): number | undefined {
    const v = this.counters.get(key);
    return typeof v === 'number' ? v : undefined;
  }

  private setOf(key: string): DistinctSet | undefined {
    const v = this.counters.get(key);
    return v instanceof DistinctSet ? v : undefined;
  }

  private usualOf(key: string): Usual | undefined {
    const v = this.counters.get(key);
    return typeof v === 'object' && !(v instanceof DistinctSet) ? v : undefined;
  }

  /** Another rule's count, read without charging (detector rules). */
  private readCount(op: Extract<CounterOp, { type: 'read' }>, now: number): number {
    if (op.of === 'rate') return gcraCount(this.rateOf(op.key), now, op.rateLimit, op.windowMs);
    const set = this.setOf(op.key);
    return set ? set.confirmed(now, op.windowMs) : 0;
  }

  private activeSuspension(user: string, now: number): SuspensionRecord | undefined {
    const s = this.suspensions.get(user);
    if (s === undefined) return undefined;
    if (s.until > now) return s;
    this.suspensions.delete(user);
    return undefined;
  }

  commit(effects: readonly Effect[], now: number, actor: string): Promise<CommitResult> {
    const out: CommitResult = { bans: [], suspensions: [] };
    for (const e of effects) {
      if (e.type === 'ban') out.bans.push(...this.ban(e, now, actor));
      else if (e.type === 'suspend') {
        const existing = this.activeSuspension(e.user, now);
        const until = Math.max(existing?.until ?? 0, now + e.durationMs);
        const s: SuspensionRecord = {
          user: e.user,
          since: existing?.since ?? now,
          until,
          rule: e.rule,
          reason: e.reason,
          actor,
        };
        this.persist(actor, () => this.db.saveSuspension(s));
        this.suspensions.set(e.user, s);
        this.audit(now, 'suspend', e.user, e.rule, e.reason, actor, { ...e.evidence, until });
        out.suspensions.push(s);
      }
    }
    return Promise.resolve(out);
  }

  /** Records a ban (escalated for repeat offenders) and, for IPv6, the covering prefix if it is now due. */
  private ban(e: BanEffect, now: number, actor: string): BanRecord[] {
    const existing = this.bans.get(e.subject);
    // Several requests of one attack can fire the same rule before the ban lands; one offence is one ban.
    if (existing && existing.until > now && e.durationMs === undefined) return [];
    const esc = e.escalation;
    const offence = this.db.offencesSince(e.subject, now - esc.lookbackMs) + 1;
    const length = e.durationMs ?? escalatedDuration(esc, offence);
    const rec: BanRecord = {
      subject: e.subject,
      since: now,
      until: now + length,
      rule: e.rule,
      reason: e.reason,
      offence,
      actor,
    };
    this.persist(actor, () => this.db.saveBan(rec, true));
    this.bans.set(rec);
    this.onBanChange?.({ kind: 'set', rec });
    this.audit(now, 'ban', e.subject, e.rule, e.reason, actor, { ...e.evidence, until: rec.until, offence });
    const out = [rec];
    if (e.aggregate) {
      // member network → until: count the networks inside the prefix whose ban is still active.
      let members = this.aggregates.get(e.aggregate.prefix);
      if (!members) this.aggregates.set(e.aggregate.prefix, (members = new Map<string, number>()));
      members.set(e.aggregate.member, Math.max(members.get(e.aggregate.member) ?? 0, rec.until));
      for (const [m, until] of members) if (until <= now) members.delete(m);
      const held = this.bans.get(e.aggregate.prefix);
      if (members.size >= e.aggregate.threshold && !(held && held.until > now)) {
        const reason = `${members.size} banned networks inside ${e.aggregate.prefix} (threshold ${e.aggregate.threshold})`;
        const evidence = { networks: [...members.keys()], trigger: e.subject };
        out.push(
          ...this.ban(
            { type: 'ban', subject: e.aggregate.prefix, rule: e.rule, reason, escalation: esc, evidence },
            now,
            actor,
          ),
        );
      }
    }
    return out;
  }

  /** Mirrors a ban made in the shared store; a ban not seen before also counts as an offence here. */
  mirrorBan(rec: BanRecord): void {
    const b = this.checked('ban', rec.subject, checkBan(rec, this.opts.now()));
    if (b === undefined) return;
    const known = this.bans.get(b.subject);
    if (known && known.since === b.since && known.until === b.until) return;
    this.bans.set(b);
    this.onBanChange?.({ kind: 'set', rec: b });
    this.disk.write(() => this.db.saveBan(b, known?.since !== b.since));
  }

  /** Mirrors a lifted ban. */
  mirrorUnban(subject: string): void {
    if (!this.bans.delete(subject)) return;
    this.onBanChange?.({ kind: 'delete', subject });
    for (const members of this.aggregates.values()) members.delete(subject);
    this.disk.write(() => this.db.deleteBan(subject));
  }

  mirrorSuspension(rec: SuspensionRecord): void {
    const s = this.checked('suspension', rec.user, checkSuspension(rec, this.opts.now()));
    if (s === undefined) return;
    this.suspensions.set(s.user, s);
    this.disk.write(() => this.db.saveSuspension(s));
  }

  mirrorResume(user: string): void {
    if (!this.suspensions.delete(user)) return;
    this.disk.write(() => this.db.deleteSuspension(user));
  }

  /** Makes the bans and suspensions exactly these (a full copy of the shared store's). */
  replaceMirror(bans: readonly BanRecord[], suspensions: readonly SuspensionRecord[]): void {
    this.bans.clear();
    this.suspensions.clear();
    const now = this.opts.now();
    for (const b of bans) {
      const rec = this.checked('ban', b.subject, checkBan(b, now));
      if (rec) this.bans.set(rec);
    }
    for (const s of suspensions) {
      const rec = this.checked('suspension', s.user, checkSuspension(s, now));
      if (rec) this.suspensions.set(rec.user, rec);
    }
    const kept = [...this.bans.values()];
    this.onBanChange?.({ kind: 'replace', bans: kept });
    const keptSuspensions = [...this.suspensions.values()];
    this.disk.write(() => this.db.replaceBansAndSuspensions(kept, keptSuspensions));
  }

  /** Forgets every counter (local counts from an outage are stale once the shared store is back). */
  clearCounters(): void {
    this.counters.clear();
  }

  unban(subject: string, actor: string, now: number, reason: string): Promise<BanRecord | undefined> {
    const b = this.bans.get(subject);
    if (!b) return Promise.resolve(undefined);
    // Lifted on disk first: a lift acknowledged and then undone by a restart would be a ban back from the dead.
    this.disk.now(() => this.db.deleteBan(subject));
    this.bans.delete(subject);
    this.onBanChange?.({ kind: 'delete', subject });
    // A lifted network ban no longer counts towards banning its covering IPv6 prefix.
    for (const members of this.aggregates.values()) members.delete(subject);
    this.audit(now, 'unban', subject, b.rule, reason, actor, { was: b });
    return Promise.resolve(b.until > now ? b : undefined);
  }

  resume(user: string, actor: string, now: number, reason: string): Promise<SuspensionRecord | undefined> {
    const s = this.suspensions.get(user);
    if (!s) return Promise.resolve(undefined);
    this.disk.now(() => this.db.deleteSuspension(user));
    this.suspensions.delete(user);
    this.audit(now, 'resume', user, s.rule, reason, actor, { was: s });
    return Promise.resolve(s.until > now ? s : undefined);
  }

  listBans(now: number): Promise<BanRecord[]> {
    return Promise.resolve([...this.bans.values()].filter((b) => b.until > now).sort((a, b) => b.since - a.since));
  }

  listSuspensions(now: number): Promise<SuspensionRecord[]> {
    return Promise.resolve(
      [...this.suspensions.values()].filter((s) => s.until > now).sort((a, b) => b.since - a.since),
    );
  }

  /** Synchronous: a refusal that repeats (a flood being refused) stays on the decision's fast path. */
  recordHits(event: MailEvent, hits: readonly RuleHit[], now: number): void {
    for (const h of hits) {
      const k = `${h.rule}|${h.subject}`;
      const last = this.lastAudit.get(k);
      if (last !== undefined && now - last < AUDIT_THROTTLE_MS) continue;
      if (this.lastAudit.size > 100_000) this.lastAudit.clear();
      this.lastAudit.set(k, now);
      this.audit(now, h.observe ? 'observe' : 'limit', h.subject, h.rule, h.reason, AUTOMATIC, hitEvidence(event, h));
    }
  }

  /**
   * A rule's ban or suspension is enforced at once and written when the disk can take it; a
   * person's is on disk before it is acknowledged (or refused: PersistenceError).
   */
  private persist(actor: string, write: () => void): void {
    if (actor === AUTOMATIC) this.disk.write(write);
    else this.disk.now(write);
  }

  /** An audit row: written when the disk allows, dropped first if the disk stays away long. */
  /** The runtime allowlist entries in force (src/allowlist.ts); node-local in cluster mode too. */
  allowEntries(now: number): AllowRecord[] {
    return this.db.loadAllow(now);
  }

  /** Adds or replaces a runtime allowlist entry: on disk before it is acknowledged, or PersistenceError. */
  putAllow(rec: AllowRecord): void {
    this.disk.now(() => this.db.saveAllow(rec));
    this.audit(rec.since, 'allow', rec.subject, 'allowlist', rec.reason, rec.actor, { until: rec.until });
  }

  /** Removes a runtime allowlist entry; the removed one, or undefined when there was none. */
  dropAllow(subject: string, actor: string, now: number, reason: string): AllowRecord | undefined {
    const had = this.db.loadAllow(now).find((e) => e.subject === subject);
    if (!had) return undefined;
    this.disk.now(() => this.db.deleteAllow(subject));
    this.audit(now, 'unallow', subject, 'allowlist', reason, actor, { was: had });
    return had;
  }

  /** The audit trail by time and subject (`mailwarden audit`). */
  auditSearch(q: AuditQuery): Promise<AuditPage> {
    return Promise.resolve(this.db.auditSearch(q));
  }

  private audit(...row: Parameters<SqlitePersistence['audit']>): void {
    this.disk.write(() => this.db.audit(...row), true);
  }

  /** The data directory's health: degraded while writes wait for the disk. */
  diskHealth(): DiskHealth {
    return this.disk.health();
  }

  auditFor(subjects: readonly string[], limit: number): Promise<AuditRow[]> {
    return Promise.resolve(this.db.auditFor(subjects, limit));
  }

  peek(ops: readonly CounterOp[], now: number): Promise<number[]> {
    return Promise.resolve(
      ops.map((op) => {
        if (op.type === 'rate') return gcraCount(this.rateOf(op.key), now, op.limit, op.windowMs);
        if (op.type === 'read') return this.readCount(op, now);
        if (op.type === 'ewma') return usualRate(this.usualOf(op.key), now, op.tauMs) * op.windowMs;
        const set = this.setOf(op.key);
        return set ? set.prune(now, op.windowMs) : 0;
      }),
    );
  }

  stats(now: number): StoreStats {
    let activeBans = 0;
    for (const b of this.bans.values()) if (b.until > now) activeBans++;
    let activeSuspensions = 0;
    for (const s of this.suspensions.values()) if (s.until > now) activeSuspensions++;
    return {
      backend: this.backend,
      counterKeys: this.counters.size,
      evictions: this.counters.evictions,
      activeBans,
      activeSuspensions,
      persistence: this.disk.health(),
    };
  }

  /** Writes live counters to SQLite (called periodically and at shutdown). */
  async snapshot(now: number): Promise<number> {
    const rows: Array<[string, number | null, string | null]> = [];
    for (const [k, v] of this.counters.entries()) {
      if (typeof v === 'number') {
        if (v > now) rows.push([k, v, null]);
      } else if (v instanceof DistinctSet) {
        if (v.size > 0) rows.push([k, null, JSON.stringify([...v.entries()])]);
      } else rows.push([k, null, JSON.stringify({ usual: [v.r, v.t] })]);
    }
    await this.db.saveCounters(rows);
    this.db.prune(now, this.opts.lookbackMs);
    return rows.length;
  }

  async close(): Promise<void> {
    this.disk.close();
    // A last try for what waits (the disk may be back); what still cannot be written is reported by the caller.
    this.disk.drain();
    try {
      await this.snapshot(this.opts.now());
    } finally {
      this.db.close();
    }
  }
}
