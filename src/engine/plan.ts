/*
 * engine/plan — first pure half of a decision: from an event and the policy,
 * the keys the store must read and bump. The store does all of it in one
 * atomic call (a few Map operations, or one Redis round trip).
 *
 * Charging (`Charge`): counters of enforcing rules are charged only if the
 * whole event passes (no ban, no suspension, no enforcing limit exceeded), so
 * a refused message is never counted as sent and a refused attempt does not
 * use up the other limits. Facts that cannot be refused (a login's result) are
 * always charged, over the limit too, so a guessing run keeps counting. On a
 * rule's `check_on` events (a login attempt, before the password is checked)
 * the counter is only read: would this one more exceed it?
 *
 * In-flight guesses: a login attempt that carries a password fingerprint and
 * passes is at once a *pending* member of every distinct counter that counts
 * failed logins (`pending`), so a hundred parallel connections see each
 * other's attempts, not only the failures already reported. The report
 * settles it: a checked failure confirms it (`always`); a success takes the
 * password (and, for spraying, the user) out again (`forget`), and other
 * members only while pending (`settle`); a refused attempt only drops its
 * pending mark. Only passwords the server really checked stay counted.
 */
import { clientNetwork, isIPv6, networkOf, v6Groups, v6NetworkOf } from './address.js';
import { EXCEPT_KNOWN_GOOD, ONLY_SHARED, ONLY_UNSHARED, VETO } from './gate.js';
import type { DistinctField, Policy, Rule } from './policy.js';
import type { Listing, MailEvent } from './types.js';

/**
 * When the store charges a counter: `if-pass` only if the whole event passes;
 * `if-conform` if this counter alone is within its limit (observe-only and
 * allowlisted counting); `always` even over the limit (facts); `never` (a check).
 */
export type Charge = 'if-pass' | 'if-conform' | 'always' | 'never' | DistinctCharge;

/**
 * Distinct counters only: `pending` adds the member marked pending if the event passes;
 * `settle` removes it if it is still pending; `forget` removes it whatever its mark.
 */
export type DistinctCharge = 'pending' | 'settle' | 'forget';

export type CounterOp =
  /** `flags`: engine/gate.ts (veto, known-good exception, shared condition). */
  | {
      type: 'rate';
      rule: string;
      key: string;
      cost: number;
      limit: number;
      windowMs: number;
      charge: Charge;
      flags: number;
    }
  | {
      type: 'distinct';
      rule: string;
      key: string;
      member: string;
      limit: number;
      windowMs: number;
      charge: Charge;
      flags: number;
    }
  /** Reads another rule's counter; exceeded at count ≥ limit. `rateLimit` is that rule's own limit. */
  | {
      type: 'read';
      of: 'rate' | 'distinct';
      rule: string;
      key: string;
      limit: number;
      rateLimit: number;
      windowMs: number;
      charge: 'never';
    }
  /**
   * An exponentially weighted rate, answered as a count per window: before this event
   * (a subject's usual rate), or including it (`withSelf`: the recent rate).
   */
  | {
      type: 'ewma';
      rule: string;
      key: string;
      cost: number;
      tauMs: number;
      windowMs: number;
      withSelf: boolean;
      charge: Charge;
    };

/**
 * The bans that would cover a client: on its address, or on an enclosing network of any
 * size. A store builds the subject of a size (`banSubject`) only for the sizes some ban
 * in force has (store/ban-table.ts, and the `blen` index of the Redis store): most are
 * never built.
 */
export interface BanCover {
  ip: string;
  v6: boolean;
  /** IPv6: the address's groups, parsed by the first `banSubject` and kept for the other sizes. */
  groups?: readonly number[] | undefined;
}

export interface Plan {
  /** Bans to check; undefined for a trusted source, which is never banned. */
  banCover: BanCover | undefined;
  /** Check this user's suspension (only for events that send mail). */
  suspendedUser?: string | undefined;
  counters: CounterOp[];
  /** Allowlisted sources and users are counted but never limited. */
  allowlisted: boolean;
  /** Subject text per rule (same order as counters), for reasons and evidence. */
  subjects: string[];
  rules: Rule[];
  /** Index in `counters` of the op that tracks known-good sources of the event's user, if any. */
  knownGood?: number | undefined;
  /** Index in `counters` of the op that tracks the users who logged in from this address, if any. */
  shared: number | undefined;
  /** So many users make the address shared (engine/gate.ts). */
  sharedMin: number;
  /** Rule index → index in `counters` of its usual-rate (ewma) op, for baseline rules. */
  baselines: ReadonlyMap<number, number>;
  /** Rule index → index in `counters` of the addresses its count came from (`min_addresses`). */
  companions: ReadonlyMap<number, number>;
}

/** Counter key holding the networks a user has logged in from successfully. */
export const KNOWN_GOOD_RULE = 'known-good';
/** Counter key holding the users who logged in successfully from an address. */
export const SHARED_RULE = 'shared-address';

const SENDING_EVENTS = new Set(['mail', 'recipient', 'data', 'message']);
const NO_STEPS: readonly Step[] = [];
const NO_INDEXES: ReadonlyMap<number, number> = new Map();

/** One rule as it meets one kind of event, worked out once per policy rather than once per event. */
interface Step {
  rule: Rule;
  role: 'count' | 'check';
  /** Counter key prefix: the rule's own, or, for a detector, the prefix of the rule it reads. */
  prefix: string;
  /** What a distinct rule's members are; undefined for the other counts. */
  distinct: DistinctField | undefined;
  /** The rule counts failed logins by distinct member (`countsGuesses`). */
  guess: boolean;
  /** The rule checks login attempts before the password check. */
  checksAttempts: boolean;
  /** Its action refuses (reject, tempfail). */
  refusing: boolean;
  /** Its known-good exception and shared condition, as op flags (`gateFlags`). */
  gate: number;
}

/** What plan() needs of a policy, worked out once per policy rather than once per event. */
interface PolicyIndex {
  /** The rules that count or check each kind of event, in policy order. */
  byKind: Map<string, Step[]>;
  /** Rules that count failed logins by distinct member: in-flight attempts are pending members of theirs. */
  guesses: Step[];
  /** Kinds of event some rule with `when.shared` counts or checks. */
  sharedKinds: Set<string>;
}

const indexes = new WeakMap<Policy, PolicyIndex>();
// The policy in force, without a WeakMap lookup per event.
let lastPolicy: Policy | undefined;
let lastIndex: PolicyIndex | undefined;

function indexOf(policy: Policy): PolicyIndex {
  if (policy === lastPolicy && lastIndex !== undefined) return lastIndex;
  let ix = indexes.get(policy);
  if (ix) return remember(policy, ix);
  const byKind = new Map<string, Step[]>();
  const guesses: Step[] = [];
  const sharedKinds = new Set<string>();
  for (const rule of policy.rules) {
    const counted = rule.uses ?? rule;
    const step = (role: Step['role']): Step => ({
      rule,
      role,
      prefix: keyPrefix(rule.uses ? rule.uses.rule : rule.name),
      distinct: counted.count.startsWith('distinct:') ? (counted.count.slice(9) as DistinctField) : undefined,
      guess: countsGuesses(rule),
      checksAttempts: rule.checkOn.includes('auth-attempt'),
      refusing: REFUSING.has(rule.then.action),
      gate: gateFlags(rule),
    });
    for (const kind of new Set([...rule.on, ...rule.checkOn])) {
      byKind.set(kind, [...(byKind.get(kind) ?? []), step(rule.on.includes(kind) ? 'count' : 'check')]);
      if (rule.when.shared !== undefined) sharedKinds.add(kind);
    }
    if (countsGuesses(rule)) guesses.push(step('count'));
  }
  ix = {
    byKind,
    guesses,
    sharedKinds,
  };
  indexes.set(policy, ix);
  return remember(policy, ix);
}

function remember(policy: Policy, ix: PolicyIndex): PolicyIndex {
  lastPolicy = policy;
  lastIndex = ix;
  return ix;
}

export function banCoverFor(ip: string): BanCover {
  return { ip, v6: isIPv6(ip), groups: undefined };
}

/** The ban subject of one size in a cover: the address itself, or its network. */
export function banSubject(cover: BanCover, length: number): string {
  if (!cover.v6) return length === 32 ? cover.ip : networkOf(cover.ip, length);
  return length === 128 ? cover.ip : v6NetworkOf((cover.groups ??= v6Groups(cover.ip)), length);
}

/** Every ban subject that would cover an address: the address, then each enclosing network, longest first. */
export function banSubjectsFor(ip: string): string[] {
  const cover = banCoverFor(ip);
  const out: string[] = [];
  for (let len = cover.v6 ? 128 : 32; len >= 0; len--) out.push(banSubject(cover, len));
  return out;
}

/** A rule counting checked failed logins by distinct member (passwords, users, networks, addresses). */
function countsGuesses(rule: Rule): boolean {
  return (
    rule.uses === undefined &&
    rule.on.includes('auth-result') &&
    rule.when.success === false &&
    rule.when.refused !== true &&
    rule.count.startsWith('distinct:')
  );
}

/** The rule's `when` conditions, for an event it counts or checks. */
function whenHolds(rule: Rule, s: Seen, role: 'count' | 'check'): boolean {
  const w = rule.when;
  const event = s.event;
  if (w.authenticated !== undefined && w.authenticated !== (event.user !== undefined)) return false;
  if (w.context !== undefined && !w.context.includes(event.context)) return false;
  if (w.protocol !== undefined && !w.protocol.includes(event.protocol)) return false;
  // Here, not in the gate: a rule whose condition does not hold is not in the plan at all (no Lua to mirror).
  if (w.listed !== undefined && !listedHolds(w.listed, event.listed, s.policy.dnsbl.threshold)) return false;
  // `success` and `refused` describe the counted result; a check happens before there is one.
  if (role === 'check') return true;
  if ((w.refused ?? false) !== (event.refused === true)) return false;
  if (w.pwhash !== undefined && w.pwhash !== (event.pwhash !== undefined)) return false;
  return w.success === undefined || w.success === event.success;
}

/** `when.listed`: the score reaches the threshold (true) or does not (false), or one of the zones lists the client. */
function listedHolds(cond: boolean | readonly string[], listing: Listing | undefined, threshold: number): boolean {
  if (typeof cond === 'boolean') return (listing !== undefined && listing.score >= threshold) === cond;
  return listing !== undefined && listing.zones.some((z) => cond.includes(z.zone));
}

/** A rule's part of an op's flags: its known-good exception and its shared condition. */
function gateFlags(rule: Rule): number {
  const shared = rule.when.shared;
  return (
    (rule.exceptKnownGood ? EXCEPT_KNOWN_GOOD : 0) |
    (shared === true ? ONLY_SHARED : shared === false ? ONLY_UNSHARED : 0)
  );
}

const REFUSING = new Set(['reject', 'tempfail']);

/** An event and what plan() works out of it at most once (several rules key on the client's network). */
interface Seen {
  event: MailEvent;
  policy: Policy;
  network: string | undefined;
}

function networkIn(s: Seen): string {
  return (s.network ??= clientNetwork(s.event.ip, s.policy));
}

/** The value a rule counts against, or undefined when the event lacks it (no user, null sender). */
function subjectOf(rule: Rule, s: Seen): string | undefined {
  const event = s.event;
  switch (rule.key) {
    case 'ip':
      return event.ip;
    case 'network':
      return networkIn(s);
    case 'user':
      return event.user;
    case 'sender':
      return event.sender || undefined;
    case 'sender_domain':
      return domainOf(event.sender);
    case 'user_ip':
      return event.user === undefined ? undefined : `${event.user}|${event.ip}`;
    case 'user_network':
      return event.user === undefined ? undefined : `${event.user}|${networkIn(s)}`;
  }
}

function domainOf(address: string | undefined): string | undefined {
  if (!address) return undefined;
  const at = address.lastIndexOf('@');
  return at < 0 ? undefined : address.slice(at + 1);
}

function distinctMember(field: DistinctField, s: Seen): string | undefined {
  const event = s.event;
  switch (field) {
    case 'pwhash':
      return event.pwhash || undefined;
    case 'ip':
      return event.ip;
    case 'network':
      return networkIn(s);
    case 'user':
      return event.user;
    case 'recipient_domain':
      return domainOf(event.recipient);
  }
}

/** How much one event costs a rate rule, or 0 when it does not count (e.g. a successful login for `failures`). */
function costOf(rule: Rule, event: MailEvent): number {
  switch (rule.count) {
    case 'events':
    case 'messages':
      return 1;
    case 'recipients':
      return Math.max(1, event.recipients);
    case 'bytes':
      return event.size;
    case 'failures':
      return event.kind === 'auth-result' && event.success === false ? 1 : 0;
    default:
      return 0;
  }
}

/** The limit for a subject: its own override, its domain's (`@example.org`), or the rule's. */
export function limitFor(rule: Rule, subject: string): number {
  if (rule.overrides.size === 0) return rule.limit;
  const own = rule.overrides.get(subject);
  if (own !== undefined) return own;
  const at = subject.lastIndexOf('@');
  return (at >= 0 ? rule.overrides.get(subject.slice(at)) : undefined) ?? rule.limit;
}

const keyPrefixes = new Map<string, string>();

/**
 * Counter key: a short id of the rule's name and the subject. Stable across
 * reloads and restarts (a hash of the name, not a position), so counters survive
 * a policy change; short, because a million of them are kept in memory.
 */
export function counterKey(rule: string, subject: string): string {
  return keyWith(keyPrefix(rule), subject);
}

function keyPrefix(rule: string): string {
  let prefix = keyPrefixes.get(rule);
  if (prefix === undefined) {
    prefix = `${ruleId(rule)}|`;
    keyPrefixes.set(rule, prefix);
  }
  return prefix;
}

/** The key of a baseline rule's usual rate, beside its recent one. */
export function usualKey(key: string): string {
  return [key, '|usual'].join('');
}

function keyWith(prefix: string, subject: string): string {
  // join() hands back a flat string: a concatenation would be kept as a cons-string wrapper
  // plus its flattened copy, ~50 bytes more for each of a million keys (and normalize() costs more).
  return [prefix, subject].join('');
}

/** FNV-1a of the rule name in base 36 (config/compile.ts refuses two rules with the same id). */
export function ruleId(name: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(36);
}

export function plan(event: MailEvent, policy: Policy): Plan {
  // A trusted network is never banned. A trusted user is never limited, but a ban on the
  // source still holds (a stolen allowlisted password must not unlock a banned address),
  // and so does a suspension an administrator set by hand.
  const trustedSource = policy.allowNetworks.has(event.ip);
  const allowlisted = trustedSource || (event.user !== undefined && policy.allowUsers.has(event.user));
  const checkSuspension =
    SENDING_EVENTS.has(event.kind) || (event.kind === 'auth-attempt' && policy.suspensionBlocksLogin);
  const out: Plan = {
    banCover: trustedSource ? undefined : banCoverFor(event.ip),
    suspendedUser: event.user !== undefined && checkSuspension ? event.user : undefined,
    counters: [],
    allowlisted,
    subjects: [],
    rules: [],
    knownGood: undefined,
    shared: undefined,
    sharedMin: policy.shared.minUsers,
    baselines: NO_INDEXES,
    companions: NO_INDEXES,
  };
  const ix = indexOf(policy);
  const fact = event.kind === 'auth-result';
  const attempt = event.kind === 'auth-attempt';
  const seen: Seen = { event, policy, network: undefined };
  let ewmas: Array<[number, CounterOp]> | undefined;
  let companions: Array<[number, Rule, string, Charge, number]> | undefined;
  for (const { rule, role, prefix, distinct, guess, refusing, gate } of ix.byKind.get(event.kind) ?? NO_STEPS) {
    if (!whenHolds(rule, seen, role)) continue;
    const subject = subjectOf(rule, seen);
    if (subject === undefined) continue;
    const limit = limitFor(rule, subject);
    const key = keyWith(prefix, subject);
    // Every op of a type is built as one literal, so the store's reads of them stay monomorphic.
    if (rule.uses) {
      const u = rule.uses;
      out.counters.push({
        type: 'read',
        of: distinct === undefined ? 'rate' : 'distinct',
        rule: rule.name,
        key,
        limit,
        rateLimit: u.limit,
        windowMs: u.windowMs,
        charge: 'never',
      });
    } else {
      const acts = !allowlisted && rule.mode === 'enforce';
      // An attempt checked against a guessing rule is also one of its in-flight guesses.
      const charge: Charge =
        role === 'check'
          ? attempt && guess
            ? 'pending'
            : 'never'
          : fact
            ? 'always'
            : acts
              ? 'if-pass'
              : 'if-conform';
      const veto = charge === 'if-pass' || (role === 'check' && acts && refusing);
      const flags = gate | (veto ? VETO : 0);
      const windowMs = rule.windowMs;
      if (distinct !== undefined) {
        const member = distinctMember(distinct, seen);
        if (member === undefined) continue;
        out.counters.push({ type: 'distinct', rule: rule.name, key, member, limit, windowMs, charge, flags });
        if (rule.minAddresses !== undefined) (companions ??= []).push([out.rules.length, rule, key, charge, flags]);
      } else {
        // A check asks "would one more exceed?"; a failure-counting rule checks attempts too.
        const cost = role === 'check' ? 1 : costOf(rule, event);
        if (cost <= 0) continue;
        if (rule.baseline) {
          // Recent rate (time constant = the window) against the subject's own usual rate (long time constant).
          out.counters.push({
            type: 'ewma',
            rule: rule.name,
            key,
            cost,
            tauMs: windowMs,
            windowMs,
            withSelf: true,
            charge,
          });
          (ewmas ??= []).push([
            out.rules.length,
            {
              type: 'ewma',
              rule: rule.name,
              key: usualKey(key),
              cost,
              tauMs: rule.baseline.tauMs,
              windowMs,
              withSelf: false,
              charge,
            },
          ]);
        } else {
          out.counters.push({ type: 'rate', rule: rule.name, key, cost, limit, windowMs, charge, flags });
        }
      }
    }
    out.subjects.push(subject);
    out.rules.push(rule);
  }
  if (ewmas !== undefined) {
    const baselines = new Map<number, number>();
    for (const [ruleIndex, op] of ewmas) {
      baselines.set(ruleIndex, out.counters.length);
      out.counters.push(op);
    }
    out.baselines = baselines;
  }
  if (fact) planGuesses(out, seen, ix);
  if (companions !== undefined && companions.length > 0) {
    const at = new Map<number, number>();
    for (const [ruleIndex, rule, key, charge, flags] of companions) {
      at.set(ruleIndex, out.counters.length);
      // The addresses a count came from; a success does not take an address out of a network's guessing.
      out.counters.push({
        type: 'distinct',
        rule: rule.name,
        key: [key, '|a'].join(''),
        member: event.ip,
        limit: Number.MAX_SAFE_INTEGER,
        windowMs: rule.windowMs,
        charge,
        flags: flags & ~VETO,
      });
    }
    out.companions = at;
  }
  if (event.user !== undefined && (fact || attempt) && policy.knownGood.windowMs > 0) {
    // Known-good sources: networks this user logged in from successfully (recorded on success only).
    const member = networkIn(seen);
    out.knownGood = out.counters.length;
    out.counters.push({
      type: 'distinct',
      rule: KNOWN_GOOD_RULE,
      key: counterKey(KNOWN_GOOD_RULE, event.user),
      member,
      limit: Number.MAX_SAFE_INTEGER,
      windowMs: policy.knownGood.windowMs,
      charge: succeeded(event) ? 'always' : 'never',
      flags: 0,
    });
  }
  if (policy.shared.minUsers > 0 && (ix.sharedKinds.has(event.kind) || succeeded(event))) {
    // Shared addresses: the users who logged in successfully from this one (recorded on success only).
    out.shared = out.counters.length;
    out.counters.push({
      type: 'distinct',
      rule: SHARED_RULE,
      key: counterKey(SHARED_RULE, event.ip),
      member: event.user ?? '',
      limit: Number.MAX_SAFE_INTEGER,
      windowMs: policy.shared.windowMs,
      charge: succeeded(event) && event.user !== undefined ? 'always' : 'never',
      flags: 0,
    });
  }
  return out;
}

function succeeded(event: MailEvent): boolean {
  return event.kind === 'auth-result' && event.success === true && event.refused !== true;
}

/**
 * Settling the in-flight side of the guessing rules on a login's report: on a success or a
 * refusal, the pending member its attempt left in each rule that checks attempts; on a
 * success, the user in spraying counts (`distinct:user`) too. Rules that only count reports
 * (the bans) have no pending members: they act on reports, and those are counted anyway.
 */
function planGuesses(out: Plan, seen: Seen, ix: PolicyIndex): void {
  const event = seen.event;
  const success = succeeded(event);
  if (!success && event.refused !== true) return; // a checked failure is counted as a fact
  for (const { rule, prefix, distinct, checksAttempts, gate } of ix.guesses) {
    if (!checksAttempts && !(success && distinct === 'user')) continue;
    if (!whenHolds(rule, seen, 'check')) continue;
    const subject = subjectOf(rule, seen);
    const member = distinctMember(distinct as DistinctField, seen);
    if (subject === undefined || member === undefined) continue;
    // A right password is no guess, and a user who logs in is no target of spraying.
    const charge: DistinctCharge = success && (distinct === 'pwhash' || distinct === 'user') ? 'forget' : 'settle';
    const key = keyWith(prefix, subject);
    const flags = gate & ~EXCEPT_KNOWN_GOOD;
    out.counters.push({
      type: 'distinct',
      rule: rule.name,
      key,
      member,
      limit: limitFor(rule, subject),
      windowMs: rule.windowMs,
      charge,
      flags,
    });
  }
}
