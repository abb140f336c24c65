/*
 * store/resilient — the store a cluster node runs: the shared RedisStore,
 * backed by a local MemoryStore so that the mail server never waits on Redis.
 *
 * Normal mode (`redis`): every decision is one Redis round trip at most, with
 * a short deadline (`store.timeout`). The local store mirrors the cluster's
 * bans and suspensions, kept current by Redis pub/sub (a ban made on any node
 * reaches every node's cache at once) and re-read whenever the subscription
 * comes back. While the mirror is known to be in step (the subscription up,
 * re-read since it came, and holding the latest ban event an APPLY reported
 * in the last second), it answers what needs no counter: a decision that
 * counts nothing, and the refusal of a banned client or suspended user whose
 * counters would be charged only if the event passed. No round trip for those
 * (`mirrorDecisions`); what Redis would answer is the same. A ban made on
 * another node reaches them when its pub/sub message does (within a round
 * trip of Redis's, or a second if the subscription died unnoticed).
 *
 * Fallback (`local-fallback`): when Redis is unreachable (the connection is
 * down), or slow (3 decisions in a row past the deadline), or a write to it
 * fails, the node decides from its local store: the mirrored bans and
 * suspensions plus counters of its own traffic. The change of mode is logged
 * once, and once when Redis is back; `stats()` shows the mode and how often it
 * happened. Bans, suspensions and lifts made meanwhile are queued in the local
 * SQLite file (`pending`), so they survive a restart, and pushed to Redis when
 * it answers again (a ping every `probeMs`); so are the audit rows written
 * locally meanwhile. Then the caches are re-read and the local counters,
 * stale by then, are dropped.
 *
 * A single slow answer is not yet an outage: that request is decided locally
 * (fail open) and the next one tries Redis again.
 *
 * Known limits: counts made during an outage stay local (each node counted
 * only its own traffic, and they are not added to Redis's). A decision that
 * timed out may still have been charged in Redis. A ban made during the
 * outage is pushed as it is (a longer ban in Redis wins); IPv6 aggregation
 * during the outage sees only this node's bans.
 */
import type { Logger } from 'pino';
import type { ApplyResult } from '../engine/decide.js';
import type { Charge, CounterOp, Plan } from '../engine/plan.js';
import type { BanRecord, Effect, MailEvent, RuleHit, SuspensionRecord } from '../engine/types.js';
import type { MemoryStore } from './memory.js';
import type { RedisStore, RestoreItem, StoreEvent } from './redis.js';
import type { AuditPage, AuditQuery, AuditRow, CommitResult, Store, StoreStats } from './types.js';
import { Deadlines, settle } from '../deadlines.js';

export interface ResilientOptions {
  redis: RedisStore;
  local: MemoryStore;
  logger: Logger;
  /** Deadline of one decision's round trip. */
  timeoutMs: number;
  /** How often Redis is probed during an outage. */
  probeMs?: number;
  /** Consecutive late answers that make an outage. */
  slowLimit?: number;
  /** How long open() waits for the first connection before starting in fallback. */
  connectWaitMs?: number;
}

const AUDIT_MARK = 'redis_audit_pushed';
/** Charges made only when the event passes: a refused event's counters stay as they are (APPLY_LUA). */
const PASS_ONLY: ReadonlySet<Charge> = new Set<Charge>(['if-pass', 'never', 'pending']);
const PUSH_BATCH = 500;

class Timeout extends Error {
  constructor(ms: number) {
    super(`no answer from Redis within ${ms} ms`);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Timeout(ms)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(t);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

export class ResilientStore implements Store {
  readonly backend = 'redis';
  readonly redis: RedisStore;
  readonly local: MemoryStore;
  mode: 'redis' | 'local-fallback' = 'local-fallback';
  private readonly logger: Logger;
  private readonly timeoutMs: number;
  /** Admin reads and writes off the hot path may take longer. */
  private readonly slowOpMs: number;
  private readonly probeMs: number;
  private readonly slowLimit: number;
  private late = 0;
  private fallbacks = 0;
  private localDecisions = 0;
  /** Decisions that counted nothing, made from the mirror of the cluster's bans (apply()). */
  private mirrorDecisions = 0;
  /** Breaks of the subscription so far, and the last one the mirror was re-read after (mirrorCurrent()). */
  private breaks = 0;
  private readAfter = -1;
  /** A re-read was asked for while one was running: it runs again once that one ends. */
  private resyncAgain = false;
  private lastError: string | null = null;
  private fallbackSince = 0;
  private probe: NodeJS.Timeout | undefined;
  private recovering = false;
  private resyncing = false;
  private closed = false;
  private subscribed = false;
  private readonly deadlines: Deadlines;

  private constructor(o: ResilientOptions) {
    this.redis = o.redis;
    this.local = o.local;
    this.logger = o.logger;
    this.timeoutMs = o.timeoutMs;
    this.deadlines = new Deadlines(o.timeoutMs);
    this.slowOpMs = Math.max(1000, o.timeoutMs * 20);
    this.probeMs = o.probeMs ?? 500;
    this.slowLimit = o.slowLimit ?? 3;
  }

  /** Connects (waiting at most `connectWaitMs`); an unreachable Redis starts the node in fallback, never stops it. */
  static async open(o: ResilientOptions): Promise<ResilientStore> {
    const s = new ResilientStore(o);
    if (s.local.db.getMeta(AUDIT_MARK) === undefined) s.local.db.setMeta(AUDIT_MARK, String(s.local.db.maxAuditId()));
    await s.waitReady(o.connectWaitMs ?? 3000);
    s.redis.client.on('error', (err: Error) => {
      s.lastError = err.message;
    });
    // A lost connection is an outage now, not at the next request: the status tells the truth on an idle
    // node, and its recovery re-reads the lists changed while it was cut off before it decides from Redis again.
    s.redis.client.on('close', () => {
      if (s.mode === 'redis' && !s.closed)
        s.enterFallback(`Redis connection closed${s.lastError ? `: ${s.lastError}` : ''}`);
    });
    try {
      if (!s.redis.ready()) throw new Error(s.lastError ?? 'not connected');
      await s.recover();
    } catch (err) {
      s.enterFallback(`Redis unreachable at start: ${(err as Error).message}`);
    }
    return s;
  }

  private async waitReady(ms: number): Promise<void> {
    const c = this.redis.client;
    if (c.status === 'ready') return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        c.off('ready', done);
        resolve();
      };
      const t = setTimeout(done, ms);
      c.on('ready', done);
    });
  }

  private async subscribeOnce(): Promise<void> {
    if (this.subscribed) return;
    this.subscribed = true;
    await this.redis.subscribe(
      (e) => this.mirror(e),
      () => {
        // Subscribed (again): messages before this are lost, so the mirror is current only after a re-read
        // that starts now. recover() does it on the way to mode redis.
        this.breaks++;
        if (this.mode === 'redis') this.resyncOrFallback();
      },
    );
  }

  /** Keeps the local cache equal to the cluster's (pub/sub). */
  private mirror(e: StoreEvent): void {
    if (this.closed) return;
    switch (e.t) {
      case 'ban':
        this.local.mirrorBan(e.rec);
        break;
      case 'unban':
        this.local.mirrorUnban(e.subject);
        break;
      case 'suspend':
        this.local.mirrorSuspension(e.rec);
        break;
      case 'resume':
        this.local.mirrorResume(e.user);
        break;
    }
  }

  private useRedis(): boolean {
    if (this.mode !== 'redis') return false;
    if (this.redis.ready()) return true;
    this.enterFallback(`Redis connection ${this.redis.client.status}${this.lastError ? `: ${this.lastError}` : ''}`);
    return false;
  }

  /** A failed or late call. Writes (`force`) and a lost connection switch to fallback at once; late decisions after `slowLimit` in a row. */
  private failed(err: unknown, what: string, force: boolean): void {
    const msg = err instanceof Error ? err.message : String(err);
    this.lastError = `${what}: ${msg}`;
    if (err instanceof Timeout) this.late++;
    if (force || !this.redis.ready() || !(err instanceof Timeout) || this.late >= this.slowLimit)
      this.enterFallback(this.lastError);
  }

  private enterFallback(reason: string): void {
    if (this.mode === 'local-fallback' && this.probe) return;
    const was = this.mode;
    this.mode = 'local-fallback';
    this.fallbacks++;
    this.fallbackSince = Date.now();
    this.logger.warn(
      { reason, was, pending: this.local.db.pendingCount() },
      'store: Redis is unreachable or slow; deciding from local memory (local-fallback) until it answers again',
    );
    this.probe = setInterval(() => void this.tryRecover(), this.probeMs);
    this.probe.unref();
  }

  private async tryRecover(): Promise<void> {
    if (this.recovering || this.closed || !this.redis.ready()) return;
    this.recovering = true;
    try {
      await withTimeout(this.redis.ping(), this.slowOpMs);
      await this.recover();
    } catch (err) {
      this.lastError = `recovery: ${(err as Error).message}`;
    } finally {
      this.recovering = false;
    }
  }

  private resyncOrFallback(): void {
    this.resync().catch((err: unknown) => this.failed(err, 'resync', true));
  }

  /**
   * The local mirror holds every ban and suspension of the cluster: the lists were re-read after the
   * subscription last came (back), and it is in step (RedisStore.mirrorInStep()).
   */
  private mirrorCurrent(): boolean {
    return this.readAfter === this.breaks && this.redis.mirrorInStep();
  }

  /**
   * Pushes what was done meanwhile, re-reads the lists, drops stale local counters, then decides from Redis
   * again. Audit rows written locally follow once decisions come from Redis: they change no decision, and
   * a flood refused locally writes them faster than they could all be pushed before the switch.
   */
  private async recover(): Promise<void> {
    await this.subscribeOnce();
    let pushed = await this.pushChanges();
    await this.resync();
    // Bans and lifts made while the calls above were in flight: pushed too, then the switch in the same tick.
    for (let i = 0; i < 10 && this.local.db.pendingCount() > 0; i++) pushed += await this.pushChanges();
    if (this.local.db.pendingCount() > 0) throw new Error('bans and lifts keep coming faster than they are pushed');
    this.local.clearCounters();
    const outage = this.fallbacks > 0 ? Date.now() - this.fallbackSince : 0;
    if (this.probe) clearInterval(this.probe);
    this.probe = undefined;
    const was = this.mode;
    this.mode = 'redis';
    this.late = 0;
    if (this.fallbacks > 0 && was === 'local-fallback') {
      this.logger.info(
        { outageSeconds: Math.round(outage / 1000), pushed },
        'store: Redis answers again; deciding from Redis (mode redis)',
      );
    } else {
      this.logger.info({ node: this.redis.node }, 'store: connected to Redis (mode redis)');
    }
    // The subscription came (back) during the re-read above: read again.
    if (this.readAfter !== this.breaks) this.resyncOrFallback();
    this.pushAudit().then(
      (n) => {
        if (n > 0) this.logger.info({ rows: n }, 'store: audit rows written during the outage pushed to Redis');
      },
      (err: unknown) => {
        // Kept locally: the next recovery pushes them.
        this.logger.warn({ err }, 'store: audit rows written during the outage not pushed yet');
      },
    );
  }

  /** Sends queued bans, suspensions and lifts to Redis, in batches; returns how many items went. */
  private async pushChanges(): Promise<number> {
    let sent = 0;
    const db = this.local.db;
    for (;;) {
      const batch = db.pending().slice(0, PUSH_BATCH);
      if (batch.length === 0) break;
      const items = batch.map((b) => JSON.parse(b.item) as RestoreItem);
      await withTimeout(this.redis.restore(items, Date.now()), this.slowOpMs);
      db.deletePending((batch[batch.length - 1] as { id: number }).id);
      sent += items.length;
    }
    return sent;
  }

  /** Sends the audit rows written locally to Redis, in batches; returns how many went. */
  private async pushAudit(): Promise<number> {
    let sent = 0;
    const db = this.local.db;
    for (;;) {
      const mark = Number(db.getMeta(AUDIT_MARK) ?? 0);
      const rows = db.auditAfter(mark, PUSH_BATCH);
      if (rows.length === 0) break;
      const items: RestoreItem[] = rows.map((row) => ({ t: 'audit', row, node: this.redis.node }));
      await withTimeout(this.redis.restore(items, Date.now()), this.slowOpMs);
      db.setMeta(AUDIT_MARK, String((rows[rows.length - 1] as AuditRow).id));
      sent += items.length;
    }
    return sent;
  }

  /** Copies the cluster's bans and suspensions into the local cache (keeping what is still queued to push). */
  private async resync(): Promise<void> {
    if (this.resyncing) {
      this.resyncAgain = true;
      return;
    }
    this.resyncing = true;
    this.resyncAgain = false;
    const after = this.breaks;
    try {
      const seq = await withTimeout(this.redis.eventSeq(), this.slowOpMs);
      const [bans, susps] = await Promise.all([
        withTimeout(this.redis.listBans(Date.now()), this.slowOpMs),
        withTimeout(this.redis.listSuspensions(Date.now()), this.slowOpMs),
      ]);
      this.local.replaceMirror(bans, susps);
      for (const p of this.local.db.pending()) {
        const it = JSON.parse(p.item) as RestoreItem;
        if (it.t === 'ban') this.local.mirrorBan(it.rec);
        else if (it.t === 'suspend') this.local.mirrorSuspension(it.rec);
        else if (it.t === 'unban') this.local.mirrorUnban(it.subject);
        else if (it.t === 'resume') this.local.mirrorResume(it.user);
      }
      this.redis.readThrough(seq);
      this.readAfter = after;
    } finally {
      this.resyncing = false;
    }
    if (this.resyncAgain) await this.resync();
  }

  private queue(item: RestoreItem): void {
    this.local.db.addPending(JSON.stringify(item));
  }

  /**
   * A decision the mirror of the cluster's bans and suspensions answers as Redis would, without a round
   * trip: one that counts nothing (an unauthenticated client's END-OF-MESSAGE, say), and the refusal of a
   * banned client or suspended user whose counters would be charged only if the event passed (Redis would
   * read them and charge nothing). Judged on Redis's clock, as the scripts do. Undefined: ask Redis.
   */
  private fromMirror(plan: Plan, now: number): ApplyResult | undefined {
    if (!this.mirrorCurrent()) return undefined;
    const skew = this.redis.clockSkewMs;
    const at = skew === null ? now : Date.now() + skew;
    if (plan.counters.length === 0) return { ...this.local.standing(plan, at), counters: [] };
    if (!plan.counters.every((op) => PASS_ONLY.has(op.charge))) return undefined;
    const standing = this.local.standing(plan, at);
    if (standing.ban === undefined && standing.suspension === undefined) return undefined;
    return { ...standing, counters: [] };
  }

  apply(plan: Plan, now: number): ApplyResult | Promise<ApplyResult> {
    if (!this.useRedis()) {
      this.localDecisions++;
      return this.local.applySync(plan, now);
    }
    const fromMirror = this.fromMirror(plan, now);
    if (fromMirror !== undefined) {
      this.mirrorDecisions++;
      return fromMirror;
    }
    return new Promise<ApplyResult>((resolve, reject) => {
      // Also from the deadlines' timer: nothing may throw out of here.
      const locally = (err: unknown): void => {
        try {
          this.failed(err, 'decision', false);
          this.localDecisions++;
          resolve(this.local.applySync(plan, now));
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      };
      const w = this.deadlines.add(() => locally(new Timeout(this.timeoutMs)));
      this.redis.applyTo(
        plan,
        now,
        (r) => {
          if (!settle(w)) return;
          this.late = 0;
          resolve(r);
        },
        (err) => {
          if (settle(w)) locally(err);
        },
      );
    });
  }

  /** From the local cache, which mirrors the cluster's bans (and holds the ones made during an outage). */
  localBan(ip: string, now: number): BanRecord | undefined {
    return this.local.localBan(ip, now);
  }

  async commit(effects: readonly Effect[], now: number, actor: string): Promise<CommitResult> {
    if (this.useRedis()) {
      try {
        const out = await withTimeout(this.redis.commit(effects, now, actor), this.timeoutMs);
        // Into the cache at once (pub/sub confirms it a moment later).
        for (const b of out.bans) this.local.mirrorBan(b);
        for (const s of out.suspensions) this.local.mirrorSuspension(s);
        return out;
      } catch (err) {
        this.failed(err, 'commit', true);
      }
    }
    const out = await this.local.commit(effects, now, actor);
    for (const rec of out.bans) this.queue({ t: 'ban', rec, node: this.redis.node });
    for (const rec of out.suspensions) this.queue({ t: 'suspend', rec, node: this.redis.node });
    return out;
  }

  unban(subject: string, actor: string, now: number, reason: string): Promise<BanRecord | undefined> {
    return this.lift(
      'unban',
      (store) => store.unban(subject, actor, now, reason),
      () => this.local.mirrorUnban(subject),
      { t: 'unban', subject, time: now },
    );
  }

  resume(user: string, actor: string, now: number, reason: string): Promise<SuspensionRecord | undefined> {
    return this.lift(
      'resume',
      (store) => store.resume(user, actor, now, reason),
      () => this.local.mirrorResume(user),
      { t: 'resume', user, time: now },
    );
  }

  /** An administrator's lift: in Redis, mirrored locally; during an outage locally, pushed back later. */
  private async lift<T>(
    what: string,
    run: (store: Store) => Promise<T>,
    mirror: () => void,
    pushBack: RestoreItem,
  ): Promise<T> {
    if (this.useRedis()) {
      try {
        const gone = await withTimeout(run(this.redis), this.slowOpMs);
        mirror();
        return gone;
      } catch (err) {
        this.failed(err, what, true);
      }
    }
    const gone = await run(this.local);
    // Only a lift that lifted something is pushed back: an unban of nothing would otherwise remove,
    // once Redis returns, a ban this node never saw (issue: bans gone everywhere after an outage).
    if (gone !== undefined) this.queue(pushBack);
    return gone;
  }

  /** A read: from Redis while it answers within the slow-op timeout, else from local memory. */
  private async read<T>(what: string, run: (store: Store) => Promise<T>): Promise<T> {
    if (this.useRedis()) {
      try {
        return await withTimeout(run(this.redis), this.slowOpMs);
      } catch (err) {
        this.failed(err, what, false);
      }
    }
    return run(this.local);
  }

  listBans(now: number): Promise<BanRecord[]> {
    return this.read('list bans', (store) => store.listBans(now));
  }

  listSuspensions(now: number): Promise<SuspensionRecord[]> {
    return this.read('list suspensions', (store) => store.listSuspensions(now));
  }

  async recordHits(event: MailEvent, hits: readonly RuleHit[], now: number): Promise<void> {
    if (this.useRedis()) {
      try {
        await withTimeout(this.redis.recordHits(event, hits, now), this.timeoutMs);
        return;
      } catch (err) {
        // The row goes to the local trail, which is pushed when Redis is back.
        this.failed(err, 'audit', true);
      }
    }
    this.local.recordHits(event, hits, now);
  }

  auditFor(subjects: readonly string[], limit: number): Promise<AuditRow[]> {
    return this.read('audit trail', (store) => store.auditFor(subjects, limit));
  }

  auditSearch(q: AuditQuery): Promise<AuditPage> {
    return this.read('audit trail', (store) => store.auditSearch(q));
  }

  peek(ops: readonly CounterOp[], now: number): Promise<number[]> {
    return this.read('peek', (store) => store.peek(ops, now));
  }

  stats(now: number): StoreStats {
    const local = this.local.stats(now);
    const shared = this.redis.stats(now);
    const onRedis = this.mode === 'redis';
    return {
      backend: this.backend,
      mode: this.mode,
      counterKeys: onRedis ? shared.counterKeys : local.counterKeys,
      // A counter (mailwarden_store_evicted_keys_total): the local table's own count, never reset to 0.
      evictions: local.evictions,
      // The local cache mirrors the cluster's bans and suspensions (and holds the ones made during an outage).
      activeBans: local.activeBans,
      activeSuspensions: local.activeSuspensions,
      fallbacks: this.fallbacks,
      localDecisions: this.localDecisions,
      mirrorDecisions: this.mirrorDecisions,
      pending: this.local.db.pendingCount(),
      persistence: local.persistence,
      redis: {
        connected: this.redis.ready(),
        lastError: this.lastError,
        clockSkewMs: this.redis.clockSkewMs,
        keysSampledAt: this.redis.keysSampledAt,
      },
    };
  }

  /** Local counters are snapshotted like the embedded store's (they matter during an outage). */
  snapshot(now: number): Promise<number> {
    return this.local.snapshot(now);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.probe) clearInterval(this.probe);
    this.probe = undefined;
    await this.redis.close();
    await this.local.close();
  }
}
