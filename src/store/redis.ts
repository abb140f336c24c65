/*
 * store/redis — the shared store of a cluster of mailwarden nodes: every
 * counter, ban, suspension, offence and audit row lives in Redis (or Valkey),
 * so several mail servers share one memory.
 *
 * One event is one round trip at most: apply() is one Lua script
 * (store/redis-lua.ts; EVALSHA, and EVAL when the server does not have it)
 * that does what MemoryStore.applySync does, atomically, on Redis's own clock
 * (TIME), so nodes whose clocks are skewed still agree on windows and ban
 * ends. The decisions asked in one turn of the event loop share one call:
 * the script applies each in turn, so Redis pays its per-call cost, and both
 * sides the network's, once per batch (enqueue()); at most IN_FLIGHT_MAX
 * batches are in flight, and the arguments are encoded here, in one string
 * (ApplyCommand). Each reply also says which ban event is the latest (`evseq`):
 * the node's mirror of the bans (store/resilient.ts) is in step only once the
 * subscription has brought that one (mirrorInStep()).
 *
 * Hash tag: every key starts with `{prefix}:`, so all of mailwarden's keys
 * live in one hash slot. One event touches several subjects at once (address,
 * network, user, sender) and its counters are charged only if the whole event
 * passes: that needs one atomic script over all of them, which Redis Cluster
 * allows only within one slot. So there is no CROSSSLOT error, ever; the price
 * is that in a Cluster mailwarden's data sits on one master (and its
 * replicas): the Cluster gives failover, not sharding. One Redis core does
 * far more script calls per second than a mail system makes policy requests.
 *
 * Bans of any prefix length: a request's ban keys are built only for the
 * lengths some ban in force has, as last learnt from Redis (`blen`, see
 * BANLENS in store/redis-lua.ts). APPLY checks that the node's copy is
 * current and, when a ban of a new length was made meanwhile, answers the
 * new lengths instead; the node then asks again. So a ban made on any node
 * holds on every node from its next request, without a second round trip
 * per request.
 *
 * Trusts: the Redis server and everyone who can write to it (it holds the
 * bans). What it reads back is still checked (store/records.ts): a damaged
 * or hand-edited record is repaired or skipped, never a reason to throw.
 * Knows nothing about fallback: errors and slowness are for
 * store/resilient.ts to handle.
 *
 * Known limits: the usual rate (ewma) uses Redis's libm `exp`, which may differ
 * from V8's in the last bit; counts are compared with a tolerance, so this
 * never changes a decision except at an exact tie. Keys expire by their TTL,
 * computed from the logical time; a test clock far behind Redis's would keep
 * keys longer, never shorter.
 */
import { createHash } from 'node:crypto';
import { Cluster, Command, Redis, type RedisOptions } from 'ioredis';
import type { ApplyResult, CounterResult } from '../engine/decide.js';
import { banSubject, type CounterOp, type Plan } from '../engine/plan.js';
import type { BanRecord, Effect, MailEvent, RuleHit, SuspensionRecord } from '../engine/types.js';
import { DISTINCT_CAP } from './counting.js';
import { checkBan, checkSuspension, type Checked } from './records.js';
import {
  APPLY_LUA,
  AUDIT_LUA,
  AUDITLOG_LUA,
  COMMIT_LUA,
  HITS_LUA,
  LIFT_LUA,
  LIST_LUA,
  PEEK_LUA,
  RESTORE_LUA,
  STATS_LUA,
} from './redis-lua.js';
import {
  AUDIT_THROTTLE_MS,
  hitEvidence,
  type AuditKind,
  type AuditPage,
  type AuditQuery,
  type AuditRow,
  type CommitResult,
  type Store,
  type StoreStats,
} from './types.js';

export type RedisClient = Redis | Cluster;

/** How a node reaches Redis (compiled from the `store` section of the config). */
export interface RedisSettings {
  /** `redis://[user:password@]host:port/db` or `rediss://…`; with sentinels or cluster, only credentials and TLS are taken from it. */
  url: string;
  /** Key prefix, used as the hash tag: keys are `{prefix}:…`. */
  prefix: string;
  /** How long a decision waits for Redis before it is made from local memory. */
  timeoutMs: number;
  sentinels?: Array<{ host: string; port: number }> | undefined;
  sentinelMaster?: string | undefined;
  cluster?: Array<{ host: string; port: number }> | undefined;
}

/** Usual-rate keys live this many time constants past their last update (the value is then < 0.005 % of itself). */
export const EWMA_TTL_TAUS = 10;
/** Audit rows kept per subject (approximately: streams are trimmed with MAXLEN ~). */
export const AUDIT_MAX_PER_SUBJECT = 1000;

export interface RedisStoreOptions {
  client: RedisClient;
  prefix: string;
  /** This node's name, written into audit rows and ban records. */
  node: string;
  /** Offence history look-back (escalation); audit rows are kept at least this long too. */
  lookbackMs: number;
  /**
   * `server` (the default): every script uses Redis's TIME and ignores the caller's `now`.
   * `caller`: the scripts use the `now` passed in. For tests with a simulated clock only.
   */
  time?: 'server' | 'caller';
  auditMax?: number;
  /** Where a repaired or skipped stored record is reported (once per subject); silent when unset. */
  warn?: ((fields: Record<string, unknown>, message: string) => void) | undefined;
}

type Script = (numKeys: number, ...args: string[]) => Promise<unknown>;
interface Scripts {
  mwPeek: Script;
  mwCommit: Script;
  mwLift: Script;
  mwRestore: Script;
  mwHits: Script;
  mwList: Script;
  mwAudit: Script;
  mwAuditLog: Script;
  mwStats: Script;
}

/** An item a node queued while Redis was unreachable (store/resilient.ts). */
export type RestoreItem =
  | { t: 'ban'; rec: BanRecord; node: string }
  | { t: 'suspend'; rec: SuspensionRecord; node: string }
  | { t: 'unban'; subject: string; time: number }
  | { t: 'resume'; user: string; time: number }
  | { t: 'audit'; row: AuditRow; node: string };

/** A ban, suspension or lift made anywhere in the cluster, as published on `{prefix}:events`. */
export type StoreEvent =
  | { t: 'ban'; rec: BanRecord }
  | { t: 'unban'; subject: string }
  | { t: 'suspend'; rec: SuspensionRecord }
  | { t: 'resume'; user: string };

const CHARGE = {
  'if-pass': 'p',
  'if-conform': 'c',
  always: 'a',
  never: 'n',
  pending: 'P',
  settle: 'S',
  forget: 'F',
} as const;
const CAP = String(DISTINCT_CAP);
const APPLY_SHA = createHash('sha1').update(APPLY_LUA).digest('hex');
const TAUS = String(EWMA_TTL_TAUS);

/** One RESP bulk string (a script argument as Redis reads it off the wire). */
function bulk(s: string): string {
  return `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
}

/** The six script arguments of a counter op (see APPLY_LUA). */
function opArgs(op: CounterOp): string[] {
  const charge = CHARGE[op.charge];
  switch (op.type) {
    case 'rate':
      return ['r', charge, String(op.cost), String(op.limit), String(op.windowMs), String(op.flags)];
    case 'distinct':
      return ['d', charge, op.member, String(op.limit), String(op.windowMs), String(op.flags)];
    case 'read':
      return ['R', charge, op.of, String(op.limit), String(op.rateLimit), String(op.windowMs)];
    case 'ewma':
      return ['e', charge, String(op.cost), String(op.tauMs), String(op.windowMs), op.withSelf ? '1' : '0'];
  }
}

function flatToMap(flat: unknown): Map<string, string> {
  const m = new Map<string, string>();
  const a = flat as string[];
  for (let i = 0; i + 1 < a.length; i += 2) m.set(a[i] as string, a[i + 1] as string);
  return m;
}

/** The prefix lengths some ban in force has, as of a version of the `blen` index (APPLY_LUA). */
interface BanLengths {
  version: string;
  v4: readonly number[];
  v6: readonly number[];
}

const NO_LENGTHS: readonly number[] = [];
/** Records kept by recordOf before it starts again (one per ban or suspension in force that requests meet). */
const RECORDS_MAX = 10_000;
/** Decisions in one APPLY at most (more in one turn of the event loop go in several). */
const BATCH_MAX = 256;
/** How long an APPLY's word that the mirror is in step holds (mirrorInStep()). */
const MIRROR_CHECK_MS = 1000;
/**
 * APPLYs in flight at most: past it, decisions wait for one to land and go in the next, larger batch. Redis
 * runs scripts one at a time anyway; more in flight would only queue there, in smaller batches that cost
 * more writes and wake-ups on both sides.
 */
const IN_FLIGHT_MAX = 4;
/** A decision waiting for its batch's APPLY. */
interface Queued {
  plan: Plan;
  now: number;
  /** Answers that the prefix lengths changed so far. */
  tries: number;
  resolve: (r: ApplyResult) => void;
  reject: (err: Error) => void;
}
/** Answers of APPLY that the lengths changed, in a row, before the store gives up (bans changing that fast). */
const LENGTH_RETRIES = 5;

function lengthsOf(version: string, flat: unknown): BanLengths {
  const v4: number[] = [];
  const v6: number[] = [];
  for (const field of flatToMap(flat).keys()) {
    const len = Number(field.slice(2));
    if (field.startsWith('4/') && len >= 0 && len <= 32) v4.push(len);
    else if (field.startsWith('6/') && len >= 0 && len <= 128) v6.push(len);
  }
  return { version, v4: v4.sort((a, b) => b - a), v6: v6.sort((a, b) => b - a) };
}

/** A batch's APPLY arguments, already in RESP: its keys, then the rest. */
interface Encoded {
  keys: string;
  nkeys: number;
  firstKey: string;
  args: string;
  nargs: number;
}

/**
 * APPLY as ioredis sends it, encoded by us into one string (store/redis.ts encode()): ioredis's own
 * encoding takes an array of every argument, copies it, and chains several small strings per argument;
 * a batch has hundreds. ioredis is told of one key, the first (every key is in its slot): what a Cluster
 * needs to route the command.
 */
class ApplyCommand extends Command {
  constructor(
    private readonly script: string,
    private readonly e: Encoded,
  ) {
    super(script === APPLY_SHA ? 'evalsha' : 'eval', [script, '1', e.firstKey], { replyEncoding: 'utf8' });
  }

  override toWritable(): string {
    const nk = String(this.e.nkeys);
    return `*${3 + this.e.nkeys + this.e.nargs}\r\n${bulk(this.name)}${bulk(this.script)}$${nk.length}\r\n${nk}\r\n${this.e.keys}${this.e.args}`;
  }
}

/** Credentials and TLS from a redis:// URL, for Sentinel and Cluster connections. */
function credentialsOf(url: string): Pick<RedisOptions, 'username' | 'password' | 'db' | 'tls'> {
  const u = new URL(url);
  const out: Pick<RedisOptions, 'username' | 'password' | 'db' | 'tls'> = {};
  if (u.username) out.username = decodeURIComponent(u.username);
  if (u.password) out.password = decodeURIComponent(u.password);
  const db = Number(u.pathname.slice(1));
  if (u.pathname.length > 1 && Number.isInteger(db)) out.db = db;
  if (u.protocol === 'rediss:') out.tls = {};
  return out;
}

/**
 * A connection as mailwarden needs it: fail fast (no offline queue, no retried
 * commands: the caller falls back to local memory instead), reconnect forever
 * in the background, RESP2 (works with every Redis and Valkey). No command
 * timeout of ioredis's own: it arms a timer per command, and every call the
 * daemon makes already has its deadline (store/resilient.ts).
 */
export function createRedisClient(s: RedisSettings, name: string): RedisClient {
  const common: RedisOptions = {
    connectionName: name,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    connectTimeout: Math.max(1000, s.timeoutMs * 20),
    protocol: 2,
    retryStrategy: (times: number) => Math.min(50 * times, 1000),
  };
  if (s.cluster && s.cluster.length > 0) {
    // A Cluster has no databases, and its own retry strategy and offline queue (below).
    const cred = credentialsOf(s.url);
    delete cred.db;
    const redisOptions: RedisOptions = { ...common, ...cred };
    delete redisOptions.retryStrategy;
    delete redisOptions.enableOfflineQueue;
    return new Cluster(s.cluster, {
      redisOptions,
      enableOfflineQueue: false,
      scaleReads: 'master',
      clusterRetryStrategy: (times: number) => Math.min(100 * times, 2000),
      slotsRefreshTimeout: Math.max(1000, s.timeoutMs * 20),
    });
  }
  if (s.sentinels && s.sentinels.length > 0) {
    return new Redis({
      ...common,
      ...credentialsOf(s.url),
      sentinels: s.sentinels,
      name: s.sentinelMaster ?? 'mymaster',
    });
  }
  return new Redis(s.url, common);
}

/** An audit row as the Lua scripts return it (a stream entry's fields); evidence that does not parse is shown as it is. */
function auditRowOf(flat: string[]): AuditRow {
  const m = flatToMap(flat);
  const json = (name: string): Record<string, unknown> => {
    const text = m.get(name) ?? '{}';
    try {
      const v: unknown = JSON.parse(text);
      return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : { unreadable: text };
    } catch {
      return { unreadable: text.slice(0, 200) };
    }
  };
  return {
    id: Number(m.get('id')),
    time: Number(m.get('t')),
    kind: m.get('k') as AuditKind,
    subject: m.get('s') ?? '',
    rule: m.get('r') ?? '',
    reason: m.get('why') ?? '',
    actor: m.get('a') ?? '',
    evidence: { ...json('ev'), ...json('x') },
    node: m.get('n') ?? '',
  };
}

function defineScripts(client: RedisClient): Scripts {
  const defs: Array<[keyof Scripts, string, boolean]> = [
    ['mwPeek', PEEK_LUA, true],
    ['mwCommit', COMMIT_LUA, false],
    ['mwLift', LIFT_LUA, false],
    ['mwRestore', RESTORE_LUA, false],
    ['mwHits', HITS_LUA, false],
    ['mwList', LIST_LUA, true],
    ['mwAudit', AUDIT_LUA, true],
    ['mwAuditLog', AUDITLOG_LUA, true],
    ['mwStats', STATS_LUA, true],
  ];
  for (const [name, lua, readOnly] of defs) {
    if (!(name in client)) client.defineCommand(name, { lua, readOnly });
  }
  return client as unknown as Scripts;
}

export class RedisStore implements Store {
  readonly backend = 'redis';
  readonly client: RedisClient;
  /** `{prefix}:` — every key starts with it. */
  readonly P: string;
  readonly node: string;
  private readonly scripts: Scripts;
  private readonly opts: RedisStoreOptions;
  private readonly serverTime: boolean;
  private readonly auditTtl: string;
  private readonly auditMax: string;
  private readonly bansKey: string;
  private readonly suspsKey: string;
  private readonly lensKey: string;
  /** Ban keys are built for these lengths only; APPLY says when they are out of date. */
  private lengths: BanLengths = { version: '', v4: NO_LENGTHS, v6: NO_LENGTHS };
  /** Damaged records already reported (a ban is read on every request of its source). */
  private readonly reported = new Set<string>();
  /** Bans and suspensions APPLY found, by their stored fields (recordOf). */
  private readonly records = new Map<string, BanRecord | SuspensionRecord>();
  private subscriber: RedisClient | undefined;
  /** Subscribed to the events channel on the subscriber's current connection. */
  private listening = false;
  /** The latest ban event the subscription (or a re-read) brought, and the latest an APPLY reported, and when. */
  private seenSeq = 0;
  private latestSeq = 0;
  private latestAt = -Infinity;
  /** Decisions waiting for this turn's APPLY (enqueue()). */
  private queued: Queued[] = [];
  /** APPLYs sent and not answered yet; at IN_FLIGHT_MAX, decisions wait for one to land (enqueue()). */
  private inFlight = 0;
  /** A flush is scheduled. */
  private flushing = false;
  /** APPLY was sent as a whole once on this connection: EVALSHA from then on (send()). */
  private applyLoaded = false;
  /** Redis's clock minus ours at the last answer (server time only). */
  clockSkewMs: number | null = null;
  private sampled = { at: null as number | null, keys: 0, bans: 0, suspensions: 0, pending: false };

  constructor(opts: RedisStoreOptions) {
    this.opts = opts;
    this.client = opts.client;
    this.P = `{${opts.prefix}}:`;
    this.node = opts.node;
    this.serverTime = (opts.time ?? 'server') === 'server';
    this.auditTtl = String(Math.max(opts.lookbackMs, 86_400_000));
    this.auditMax = String(opts.auditMax ?? AUDIT_MAX_PER_SUBJECT);
    this.bansKey = `${this.P}bans`;
    this.suspsKey = `${this.P}susps`;
    this.lensKey = `${this.P}blen`;
    this.scripts = defineScripts(opts.client);
  }

  /** The connection can take commands now. */
  ready(): boolean {
    return this.client.status === 'ready';
  }

  private t(now: number): string {
    return this.serverTime ? '' : String(now);
  }

  private sawTime(serverNow: string): number {
    const n = Number(serverNow);
    if (this.serverTime) this.clockSkewMs = n - Date.now();
    return n;
  }

  apply(plan: Plan, now: number): Promise<ApplyResult> {
    return new Promise<ApplyResult>((resolve, reject) => this.enqueue({ plan, now, tries: 0, resolve, reject }));
  }

  /** apply() with callbacks, for the hot path (store/resilient.ts): no promise of its own. Never throws. */
  applyTo(plan: Plan, now: number, resolve: (r: ApplyResult) => void, reject: (err: Error) => void): void {
    this.enqueue({ plan, now, tries: 0, resolve, reject });
  }

  /**
   * The decisions asked in one turn of the event loop go to Redis together: one APPLY for all of them,
   * sent once the turn's I/O callbacks have run (setImmediate), as the Postfix adapter sends its answers.
   * Each still waits for one round trip at most, and Redis runs the script, and the network, once per
   * batch instead of once per request.
   */
  private enqueue(q: Queued): void {
    this.queued.push(q);
    if (this.queued.length >= BATCH_MAX) this.flush();
    else if (!this.flushing && this.inFlight < IN_FLIGHT_MAX) {
      this.flushing = true;
      setImmediate(this.flush);
    }
  }

  /** A batch was answered (or failed): what queued meanwhile goes next. */
  private landed(): void {
    this.inFlight--;
    if (this.queued.length > 0 && !this.flushing) {
      this.flushing = true;
      setImmediate(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.flushing = false;
    const batch = this.queued;
    if (batch.length === 0) return;
    this.queued = [];
    try {
      this.send(this.applyLoaded ? APPLY_SHA : APPLY_LUA, this.encode(batch), batch);
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      for (const q of batch) q.reject(e);
    }
  };

  /** APPLY's arguments for a batch (see APPLY_LUA), in RESP. */
  private encode(batch: readonly Queued[]): Encoded {
    const P = this.P;
    const lengths = this.lengths;
    let keys = bulk(this.lensKey);
    let args = bulk(lengths.version) + bulk(CAP) + bulk(TAUS) + bulk(String(batch.length));
    let nkeys = 1;
    let nargs = 4;
    for (const { plan, now } of batch) {
      const cover = plan.banCover;
      let nb = 0;
      if (cover !== undefined)
        for (const len of cover.v6 ? lengths.v6 : lengths.v4) {
          keys += bulk(`${P}ban:${banSubject(cover, len)}`);
          nb++;
        }
      const ns = plan.suspendedUser === undefined ? 0 : 1;
      if (ns === 1) keys += bulk(`${P}susp:${plan.suspendedUser as string}`);
      const ops = plan.counters;
      for (const op of ops) keys += bulk(`${P}c:${op.key}`);
      nkeys += nb + ns + ops.length;
      // Op positions are 1-based in Lua; 0: none.
      args += bulk(this.t(now)) + bulk(String(nb)) + bulk(String(ns));
      args += bulk(String(plan.knownGood === undefined ? 0 : plan.knownGood + 1));
      args += bulk(String(plan.shared === undefined ? 0 : plan.shared + 1));
      args += bulk(String(plan.sharedMin)) + bulk(String(ops.length));
      for (const op of ops) for (const a of opArgs(op)) args += bulk(a);
      nargs += 7 + 6 * ops.length;
    }
    return { keys, nkeys, firstKey: this.lensKey, args, nargs };
  }

  /** EVALSHA, or EVAL when Redis does not have the script (yet, or any more: a restart, SCRIPT FLUSH). */
  private send(script: string, e: Encoded, batch: Queued[]): void {
    this.applyLoaded = true;
    const command = new ApplyCommand(script, e);
    void this.client.sendCommand(command);
    this.inFlight++;
    (command.promise as Promise<unknown>).then(
      (raw) => {
        this.landed();
        this.answered(raw as unknown[], batch);
      },
      (err: unknown) => {
        this.landed();
        if (script === APPLY_SHA && err instanceof Error && err.message.startsWith('NOSCRIPT')) {
          this.send(APPLY_LUA, e, batch);
          return;
        }
        const error = err instanceof Error ? err : new Error(String(err));
        for (const q of batch) q.reject(error);
      },
    );
  }

  private answered(r: unknown[], batch: Queued[]): void {
    if (r[0] === 'lengths') {
      // The ban keys were built for other prefix lengths: nothing was read or charged. Again, with the new ones.
      this.lengths = lengthsOf(r[1] as string, r[2]);
      for (const q of batch) {
        if (q.tries + 1 >= LENGTH_RETRIES)
          q.reject(new Error('the prefix lengths of bans kept changing during one decision'));
        else this.enqueue({ ...q, tries: q.tries + 1 });
      }
      return;
    }
    const seq = Number(r[batch.length]);
    if (seq > this.latestSeq) this.latestSeq = seq;
    this.latestAt = performance.now();
    batch.forEach((q, i) => {
      try {
        q.resolve(this.applyResult(r[i], q.plan.counters.length));
      } catch (err) {
        q.reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  /** A ban hash as read back, checked (store/records.ts); undefined when there is none, or it was skipped. */
  private readonly banOf = (flat: unknown, now: number): BanRecord | undefined => {
    const m = flatToMap(flat);
    return m.has('until') ? this.checked('ban', m.get('subject'), checkBan(Object.fromEntries(m), now)) : undefined;
  };

  private readonly suspensionOf = (flat: unknown, now: number): SuspensionRecord | undefined => {
    const m = flatToMap(flat);
    return m.has('until')
      ? this.checked('suspension', m.get('user'), checkSuspension(Object.fromEntries(m), now))
      : undefined;
  };

  /** Damage is reported once per subject. */
  private checked<T>(kind: string, id: string | undefined, c: Checked<T>): T | undefined {
    if (c.problems.length === 0) return c.rec;
    const key = `${kind}|${id ?? ''}`;
    if (!this.reported.has(key)) {
      if (this.reported.size >= 10_000) this.reported.clear();
      this.reported.add(key);
      this.opts.warn?.(
        { kind, subject: id, problems: c.problems },
        `store: a ${kind} in Redis was ${c.rec ? 'repaired' : 'skipped'} as read: ${c.problems.join('; ')}`,
      );
    }
    return c.rec;
  }

  /** One decision's part of APPLY's answer: its counts as one string, with the ban and suspension when there is one. */
  private applyResult(r: unknown, n: number): ApplyResult {
    const text = typeof r === 'string' ? r : ((r as unknown[])[0] as string);
    const f = text.split(' ');
    const at = this.sawTime(f[0] as string);
    const counters = new Array<CounterResult>(n);
    for (let i = 0, j = 1; i < n; i++, j += 3) {
      const count = Number(f[j]);
      const exceeded = f[j + 1] === '1';
      const seen = f[j + 2] as string;
      counters[i] = seen === '-' ? { count, exceeded } : { count, exceeded, seen: seen === '1' };
    }
    if (typeof r === 'string') return { ban: undefined, suspension: undefined, counters };
    const [, banFlat, suspFlat] = r as [string, string[], string[]];
    return {
      ban: banFlat.length ? (this.recordOf(banFlat, at, 'ban') as BanRecord | undefined) : undefined,
      suspension: suspFlat.length
        ? (this.recordOf(suspFlat, at, 'suspension') as SuspensionRecord | undefined)
        : undefined,
      counters,
    };
  }

  /**
   * A ban or suspension APPLY found, as the same object while its stored fields stay the same: the
   * refusal of a banned source is then made once per record (engine/decide.ts), not per request. Only
   * a sound record is kept (a repaired one depends on the time it was read).
   */
  private recordOf(flat: string[], now: number, kind: 'ban' | 'suspension'): BanRecord | SuspensionRecord | undefined {
    const key = `${kind}\u0000${flat.join('\u0000')}`;
    const known = this.records.get(key);
    if (known !== undefined) return known;
    const m = flatToMap(flat);
    if (!m.has('until')) return undefined;
    const row = Object.fromEntries(m);
    const c: Checked<BanRecord | SuspensionRecord> = kind === 'ban' ? checkBan(row, now) : checkSuspension(row, now);
    if (c.rec !== undefined && c.problems.length === 0) {
      if (this.records.size >= RECORDS_MAX) this.records.clear();
      this.records.set(key, c.rec);
    }
    return this.checked(kind, m.get(kind === 'ban' ? 'subject' : 'user'), c);
  }

  private recordArgs(actor: string): string[] {
    return [this.P, this.node, actor, this.auditTtl, this.auditMax];
  }

  async commit(effects: readonly Effect[], now: number, actor: string): Promise<CommitResult> {
    const args: string[] = [this.t(now), ...this.recordArgs(actor)];
    for (const e of effects) {
      if (e.type === 'ban') {
        const esc = e.escalation;
        const agg = e.aggregate;
        args.push(
          'b',
          e.subject,
          e.rule,
          e.reason,
          JSON.stringify(e.evidence),
          String(esc.baseMs),
          String(esc.factor),
          String(esc.maxMs),
          String(esc.lookbackMs),
          e.durationMs === undefined ? '' : String(e.durationMs),
          agg ? agg.prefix : '',
          agg ? agg.member : '',
          agg ? String(agg.threshold) : '',
        );
      } else if (e.type === 'suspend') {
        args.push(
          's',
          e.user,
          e.rule,
          e.reason,
          JSON.stringify(e.evidence),
          String(e.durationMs),
          '',
          '',
          '',
          '',
          '',
          '',
          '',
        );
      }
    }
    const out: CommitResult = { bans: [], suspensions: [] };
    if (args.length === 6) return out;
    const recs = (await this.scripts.mwCommit(1, this.bansKey, ...args)) as string[][];
    for (const r of recs) {
      if (r[0] === 'b') {
        out.bans.push({
          subject: r[1] as string,
          since: Number(r[2]),
          until: Number(r[3]),
          rule: r[4] as string,
          reason: r[5] as string,
          offence: Number(r[6]),
          actor: r[7] as string,
        });
      } else {
        out.suspensions.push({
          user: r[1] as string,
          since: Number(r[2]),
          until: Number(r[3]),
          rule: r[4] as string,
          reason: r[5] as string,
          actor: r[6] as string,
        });
      }
    }
    return out;
  }

  unban(subject: string, actor: string, now: number, reason: string): Promise<BanRecord | undefined> {
    return this.lift(this.bansKey, 'ban', subject, actor, now, reason, this.banOf);
  }

  resume(user: string, actor: string, now: number, reason: string): Promise<SuspensionRecord | undefined> {
    return this.lift(this.suspsKey, 'susp', user, actor, now, reason, this.suspensionOf);
  }

  /** Lifts one ban or suspension; returns it if it was still in force. */
  private async lift<T extends { until: number }>(
    index: string,
    kind: 'ban' | 'susp',
    id: string,
    actor: string,
    now: number,
    reason: string,
    parse: (flat: unknown, now: number) => T | undefined,
  ): Promise<T | undefined> {
    const r = (await this.scripts.mwLift(1, index, this.t(now), ...this.recordArgs(actor), kind, id, reason)) as [
      string,
      string[],
    ];
    const at = this.sawTime(r[0]);
    const rec = parse(r[1], at);
    return rec && rec.until > at ? rec : undefined;
  }

  listBans(now: number): Promise<BanRecord[]> {
    return this.list(this.bansKey, 'ban', now, this.banOf);
  }

  listSuspensions(now: number): Promise<SuspensionRecord[]> {
    return this.list(this.suspsKey, 'susp', now, this.suspensionOf);
  }

  /** The bans or suspensions in force, newest first. */
  private async list<T extends { since: number; until: number }>(
    index: string,
    kind: 'ban' | 'susp',
    now: number,
    parse: (flat: unknown, now: number) => T | undefined,
  ): Promise<T[]> {
    const r = (await this.scripts.mwList(1, index, this.t(now), this.P, kind)) as unknown[];
    const at = this.sawTime(r[0] as string);
    const out: T[] = [];
    for (let i = 1; i < r.length; i++) {
      const rec = parse(r[i], at);
      if (rec && rec.until > at) out.push(rec);
    }
    return out.sort((a, b) => b.since - a.since);
  }

  async recordHits(event: MailEvent, hits: readonly RuleHit[], now: number): Promise<void> {
    if (hits.length === 0) return;
    const args: string[] = [this.t(now), ...this.recordArgs(''), String(AUDIT_THROTTLE_MS)];
    for (const h of hits) {
      args.push(h.rule, h.subject, h.reason, h.observe ? 'observe' : 'limit', JSON.stringify(hitEvidence(event, h)));
    }
    await this.scripts.mwHits(1, this.bansKey, ...args);
  }

  async auditFor(subjects: readonly string[], limit: number): Promise<AuditRow[]> {
    if (subjects.length === 0 || limit <= 0) return [];
    const unique = [...new Set(subjects)];
    const r = (await this.scripts.mwAudit(1, this.bansKey, this.P, String(limit), ...unique)) as string[][];
    return r
      .map(auditRowOf)
      .sort((a, b) => b.id - a.id)
      .slice(0, limit);
  }

  async auditSearch(q: AuditQuery): Promise<AuditPage> {
    const args = [this.P, String(Math.max(0, Math.floor(q.since))), q.subject ?? '', String(q.limit), String(q.offset)];
    const [total, ...rows] = (await this.scripts.mwAuditLog(1, this.bansKey, ...args)) as [number, ...string[][]];
    return { total: Number(total), items: rows.map(auditRowOf) };
  }

  async peek(ops: readonly CounterOp[], now: number): Promise<number[]> {
    if (ops.length === 0) return [];
    const keys = ops.map((op) => `${this.P}c:${op.key}`);
    const args: string[] = [this.t(now)];
    for (const op of ops) args.push(...opArgs(op));
    const r = (await this.scripts.mwPeek(keys.length, ...keys, ...args)) as string[];
    this.sawTime(r[0] as string);
    return r.slice(1).map(Number);
  }

  /** Pushes what a node did while Redis was unreachable; returns how many items changed something. */
  async restore(items: readonly RestoreItem[], now: number): Promise<number> {
    if (items.length === 0) return 0;
    const args: string[] = [
      this.t(now),
      this.P,
      this.node,
      '',
      this.auditTtl,
      this.auditMax,
      String(this.opts.lookbackMs),
    ];
    const e = '';
    // The time the scripts will use: Redis's (as last seen) unless the caller's is in force.
    const at = this.serverTime ? Date.now() + (this.clockSkewMs ?? 0) : now;
    for (const it of items) {
      // Queued in SQLite during an outage: checked like any record read back, so one damaged item
      // cannot fail the script (and with it every push) for good.
      if (it.t === 'ban') {
        const b = this.checked('ban', it.rec.subject, checkBan(it.rec, at));
        if (b === undefined) continue;
        args.push(
          'B',
          b.subject,
          String(b.since),
          String(b.until),
          b.rule,
          b.reason,
          String(b.offence),
          b.actor,
          it.node,
          e,
        );
      } else if (it.t === 'suspend') {
        const s = this.checked('suspension', it.rec.user, checkSuspension(it.rec, at));
        if (s === undefined) continue;
        args.push('S', s.user, String(s.since), String(s.until), s.rule, s.reason, s.actor, it.node, e, e);
      } else if (it.t === 'unban' || it.t === 'resume') {
        if (!Number.isFinite(Number(it.time))) continue;
        const [tag, id] = it.t === 'unban' ? ['U', it.subject] : ['R', it.user];
        args.push(tag, id, String(it.time), e, e, e, e, e, e, e);
      } else {
        const a = it.row;
        args.push(
          'A',
          String(a.time),
          a.kind,
          a.subject,
          a.rule,
          a.reason,
          a.actor,
          it.node,
          JSON.stringify(a.evidence),
          e,
        );
      }
    }
    return Number(await this.scripts.mwRestore(1, this.bansKey, ...args));
  }

  /** Round trip check. */
  async ping(): Promise<void> {
    await this.client.ping();
  }

  /**
   * Listens to bans, suspensions and lifts made by any node. `onReady` runs
   * whenever the subscription is (re)established: messages missed while it
   * was down are lost, so the caller re-reads the lists then.
   */
  async subscribe(onEvent: (e: StoreEvent) => void, onReady: () => void): Promise<void> {
    const sub: RedisClient = this.client instanceof Cluster ? this.client.duplicate() : this.client.duplicate();
    this.subscriber = sub;
    const channel = `${this.P}events`;
    sub.on('message', (ch: string, text: string) => {
      if (ch !== channel) return;
      const m = parseEvent(text);
      if (m === undefined) return;
      onEvent(m.e);
      if (m.seq > this.seenSeq) this.seenSeq = m.seq;
    });
    sub.on('error', () => undefined);
    // From the connection's loss until the next subscription, messages may be lost.
    sub.on('close', () => {
      this.listening = false;
    });
    // Subscribe on every (re)connection, then tell the caller: the lists it re-reads then can miss nothing.
    const subscribed = new Promise<void>((resolve) => {
      sub.on('ready', () => {
        sub.subscribe(channel).then(
          () => {
            this.listening = sub.status === 'ready';
            resolve();
            onReady();
          },
          () => undefined,
        );
      });
    });
    await Promise.race([subscribed, new Promise((r) => setTimeout(r, 2000).unref())]);
  }

  /**
   * What the subscription delivered is all there is: it is up, it has brought every ban event up to the latest
   * an APPLY reported, and an APPLY reported within MIRROR_CHECK_MS (a connection that died silently
   * delivers nothing, and says nothing either).
   */
  mirrorInStep(): boolean {
    return (
      this.listening &&
      this.subscriber?.status === 'ready' &&
      this.seenSeq >= this.latestSeq &&
      performance.now() - this.latestAt < MIRROR_CHECK_MS
    );
  }

  /** The mirror was re-read from the lists after this ban event (store/resilient.ts resync()). */
  readThrough(seq: number): void {
    if (seq > this.seenSeq) this.seenSeq = seq;
  }

  /** The number of the latest ban event, read before the lists are (store/resilient.ts resync()). */
  async eventSeq(): Promise<number> {
    return seqOf(await this.client.get(`${this.P}evseq`));
  }

  /** Samples key and record counts (stats() is synchronous and reports the last sample). */
  async refreshStats(): Promise<void> {
    const r = (await this.scripts.mwStats(1, this.bansKey, '', this.P)) as [string, number, number, number];
    this.sampled = {
      at: Date.now(),
      keys: Number(r[1]),
      bans: Number(r[2]),
      suspensions: Number(r[3]),
      pending: false,
    };
  }

  stats(_now: number): StoreStats {
    // Sample at most every 5 s, in the background.
    if (!this.sampled.pending && this.ready() && (this.sampled.at === null || Date.now() - this.sampled.at > 5000)) {
      this.sampled.pending = true;
      this.refreshStats().catch(() => {
        this.sampled.pending = false;
      });
    }
    return {
      backend: this.backend,
      counterKeys: this.sampled.keys,
      evictions: 0,
      activeBans: this.sampled.bans,
      activeSuspensions: this.sampled.suspensions,
    };
  }

  get keysSampledAt(): number | null {
    return this.sampled.at;
  }

  async close(): Promise<void> {
    const quit = async (c: RedisClient | undefined): Promise<void> => {
      if (!c) return;
      try {
        if (c.status === 'ready') await c.quit();
        else c.disconnect();
      } catch {
        c.disconnect();
      }
    };
    await quit(this.subscriber);
    await quit(this.client);
  }
}

/** A published event and its number (0: none, from an older release). */
function parseEvent(text: string): { e: StoreEvent; seq: number } | undefined {
  let a: string[];
  try {
    a = JSON.parse(text) as string[];
  } catch {
    return undefined;
  }
  const e = eventOf(a);
  if (e === undefined) return undefined;
  return { e, seq: seqOf(a[EVENT_FIELDS[e.t]]) };
}

/** A ban event's number as Redis gave it (`P evseq`); 0 for none or anything that is not one. */
function seqOf(v: unknown): number {
  const n = Number(v);
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

/** Fields of each published event before its number (RECORDS publish() in store/redis-lua.ts). */
const EVENT_FIELDS: Record<StoreEvent['t'], number> = { ban: 8, suspend: 7, unban: 2, resume: 2 };

function eventOf(a: string[]): StoreEvent | undefined {
  switch (a[0]) {
    case 'ban':
      return {
        t: 'ban',
        rec: {
          subject: a[1] ?? '',
          since: Number(a[2]),
          until: Number(a[3]),
          rule: a[4] ?? '',
          reason: a[5] ?? '',
          offence: Number(a[6]),
          actor: a[7] ?? '',
        },
      };
    case 'suspend':
      return {
        t: 'suspend',
        rec: {
          user: a[1] ?? '',
          since: Number(a[2]),
          until: Number(a[3]),
          rule: a[4] ?? '',
          reason: a[5] ?? '',
          actor: a[6] ?? '',
        },
      };
    case 'unban':
      return { t: 'unban', subject: a[1] ?? '' };
    case 'resume':
      return { t: 'resume', user: a[1] ?? '' };
    default:
      return undefined;
  }
}
