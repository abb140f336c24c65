/*
 * store/types — the one interface every backend implements: memory + SQLite
 * (store/memory.ts) and Redis (store/redis.ts, wrapped by store/resilient.ts). A backend knows counting and persistence, nothing about
 * mail: it executes a Plan atomically and records effects, and the engine
 * decides what they mean. Also what every backend writes alike: the audit
 * throttle and the evidence of a rule hit.
 */
import type { ApplyResult } from '../engine/decide.js';
import type { DiskHealth } from './disk-writes.js';
import type { CounterOp, Plan } from '../engine/plan.js';
import type { BanRecord, Effect, MailEvent, RuleHit, SuspensionRecord } from '../engine/types.js';

export type AuditKind = 'ban' | 'unban' | 'suspend' | 'resume' | 'limit' | 'observe' | 'allow' | 'unallow';

/** An entry of the runtime allowlist (`mailwarden allow add`): an address or network, or a user. */
export interface AllowRecord {
  subject: string;
  kind: 'network' | 'user';
  since: number;
  /** Epoch ms, or null: until removed. */
  until: number | null;
  reason: string;
  actor: string;
}

/** Which audit rows to export: newest first, from `since` (epoch ms), of one subject if given. */
export interface AuditQuery {
  since: number;
  subject?: string | undefined;
  limit: number;
  offset: number;
}

/** A rule hit is audited once per rule and subject in this long (every backend, so every node agrees). */
export const AUDIT_THROTTLE_MS = 60_000;

/** What the audit row of a rule hit keeps as evidence (never a password hash). */
export function hitEvidence(event: MailEvent, h: RuleHit): Record<string, unknown> {
  return {
    event: event.kind,
    protocol: event.protocol,
    ip: event.ip,
    user: event.user,
    count: h.count,
    limit: h.limit,
    action: h.action,
  };
}

export interface AuditRow {
  id: number;
  time: number;
  kind: AuditKind;
  /** An address, a CIDR, or a user. */
  subject: string;
  rule: string;
  reason: string;
  /** `mailwarden` for automatic actions; `cli`, `api:<who>` for people. */
  actor: string;
  evidence: Record<string, unknown>;
  /** The mailwarden node that wrote the row (shared Redis store only). */
  node?: string | undefined;
}

export interface AuditPage {
  /** Every row that matches, of which `items` is one page. */
  total: number;
  items: AuditRow[];
}

export interface CommitResult {
  bans: BanRecord[];
  suspensions: SuspensionRecord[];
}

export interface StoreStats {
  backend: string;
  counterKeys: number;
  evictions: number;
  activeBans: number;
  activeSuspensions: number;
  /** Shared store only: where decisions come from now (`local-fallback` while Redis is unreachable or slow). */
  mode?: 'redis' | 'local-fallback' | undefined;
  /** Shared store only: how often the node fell back to local memory since start. */
  fallbacks?: number | undefined;
  /** Shared store only: requests decided from local memory since start. */
  localDecisions?: number | undefined;
  /** Shared store only: requests that counted nothing, decided from the mirror of the cluster's bans (no round trip). */
  mirrorDecisions?: number | undefined;
  /** Shared store only: bans, suspensions and lifts made during an outage, not yet pushed to Redis. */
  pending?: number | undefined;
  /** Embedded store (and a cluster node's local memory): writes to the data directory (store/disk-writes.ts). */
  persistence?: DiskHealth | undefined;
  /** Shared store only: connection details. */
  redis?:
    | { connected: boolean; lastError: string | null; clockSkewMs: number | null; keysSampledAt: number | null }
    | undefined;
}

/** A backend that can answer at once (the embedded store) returns plain values: no promise on the hot path. */
export type MaybePromise<T> = T | Promise<T>;

export interface Store {
  readonly backend: string;
  /** Check bans/suspension and bump counters, atomically; see engine/plan.ts for charging. */
  apply(plan: Plan, now: number): MaybePromise<ApplyResult>;
  /**
   * The ban in force covering an address, from local memory only, synchronously; never throws
   * for a stored value. The decider asks it when the rest of a decision failed, so that a
   * banned source is still refused. A store without local memory has none.
   */
  localBan?(ip: string, now: number): BanRecord | undefined;
  /** Make bans and suspensions durable (before the decision is returned) and audit them. */
  commit(effects: readonly Effect[], now: number, actor: string): Promise<CommitResult>;
  unban(subject: string, actor: string, now: number, reason: string): Promise<BanRecord | undefined>;
  resume(user: string, actor: string, now: number, reason: string): Promise<SuspensionRecord | undefined>;
  listBans(now: number): Promise<BanRecord[]>;
  listSuspensions(now: number): Promise<SuspensionRecord[]>;
  /** Audit rules that fired (throttled: one row per rule and subject per minute). */
  recordHits(event: MailEvent, hits: readonly RuleHit[], now: number): MaybePromise<void>;
  /** Newest first. */
  auditFor(subjects: readonly string[], limit: number): Promise<AuditRow[]>;
  /** The audit trail newest first, by time and subject, paged (`mailwarden audit`). */
  auditSearch(q: AuditQuery): Promise<AuditPage>;
  /** Current counts of these counters, without charging them. */
  peek(ops: readonly CounterOp[], now: number): Promise<number[]>;
  stats(now: number): StoreStats;
  close(): Promise<void>;
}
