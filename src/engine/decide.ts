/*
 * engine/decide — second pure half of a decision: from the event, the plan and
 * what the store answered, the Decision and its effects (bans, suspensions).
 *
 * Order of precedence: a ban on the source (never planned for an allowlisted
 * network); then a suspension of the user (sending events only); then the
 * strongest action among the enforcing rules that fired (none for allowlisted
 * networks and users, whose hits are observe-only). Observe-mode rules are
 * reported in `hits` and never change the action.
 */
import { clientNetwork, isIPv6, networkOf } from './address.js';
import { gateContext } from './gate.js';
import type { Plan } from './plan.js';
import type { Policy, Rule } from './policy.js';
import {
  ACTION_RANK,
  ALLOW,
  type BanRecord,
  type Decision,
  type Effect,
  type MailEvent,
  type RuleHit,
  type SuspensionRecord,
} from './types.js';

export interface CounterResult {
  /** The count including this event (what it would be, if refused). */
  count: number;
  /** This counter alone is over its limit. */
  exceeded: boolean;
  /** Distinct counters: the member was already in the set. */
  seen?: boolean | undefined;
}

export interface ApplyResult {
  /** The longest-lasting active ban covering the client, if any. */
  ban?: BanRecord | undefined;
  suspension?: SuspensionRecord | undefined;
  counters: CounterResult[];
}

const NOUN: Record<string, string> = {
  events: 'requests',
  recipients: 'recipients',
  messages: 'messages',
  bytes: 'bytes',
  failures: 'failed logins',
  'distinct:pwhash': 'different passwords',
  'distinct:ip': 'different addresses',
  'distinct:network': 'different networks',
  'distinct:user': 'different logins',
  'distinct:recipient_domain': 'different recipient domains',
};

export function formatDuration(ms: number): string {
  const units: Array<[string, number]> = [
    ['w', 604_800_000],
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ];
  for (const [u, size] of units) if (ms >= size && ms % size === 0) return `${ms / size}${u}`;
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

function defaultReason(rule: Rule, subject: string, limit: number): string {
  const counted = rule.uses ?? rule;
  const what = NOUN[counted.count] ?? counted.count;
  const per = formatDuration(counted.windowMs);
  if (rule.baseline)
    return `Unusual sending: ${what} from ${subject} far above its usual rate (over ${limit} per ${per}, rule ${rule.name})`;
  if (rule.then.action === 'allow')
    return `Unusual activity: ${what} from ${subject} (over ${limit} per ${per}, rule ${rule.name})`;
  const tail = rule.then.action === 'reject' ? '' : '; try again later';
  return `Too many ${what} from ${subject} (limit ${limit} per ${per}, rule ${rule.name})${tail}`;
}

/** An ISO time that cannot throw: Date's toISOString() throws a RangeError for a time it cannot print. */
export function isoTime(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? `an unreadable time (${String(ms)})` : d.toISOString();
}

export function banReason(ban: BanRecord): string {
  return `Access denied: ${ban.subject} is blocked until ${isoTime(ban.until)} (rule ${ban.rule})`;
}

/** The refusal of a banned source (also what the decider answers when the rest of a decision failed). */
export function banDecision(ban: BanRecord): Decision {
  return { ...ALLOW, action: 'reject', rule: 'ban', reason: banReason(ban), hits: [], effects: [] };
}

export function suspensionReason(s: SuspensionRecord, login = false): string {
  return `Account ${s.user} is suspended${login ? '' : ' from sending'} (rule ${s.rule}); contact your mail administrator`;
}

export function decide(event: MailEvent, policy: Policy, plan: Plan, result: ApplyResult): Decision {
  if (result.ban) return banDecision(result.ban);
  if (result.suspension) {
    const reason = suspensionReason(result.suspension, event.kind === 'auth-attempt');
    return { ...ALLOW, action: 'reject', rule: 'suspension', reason, hits: [], effects: [] };
  }
  const hits: RuleHit[] = [];
  const fired: Rule[] = [];
  let winner: { rule: Rule; hit: RuleHit } | undefined;
  const { knownGood, shared } = gateContext(plan, result.counters);
  for (let i = 0; i < plan.rules.length; i++) {
    const r = result.counters[i];
    const rule = plan.rules[i] as Rule;
    if (!r) continue;
    if (rule.when.shared !== undefined && rule.when.shared !== shared) continue;
    let limit = (plan.counters[i] as { limit: number }).limit;
    let exceeded = r.exceeded;
    const usualAt = plan.baselines.get(i);
    if (rule.baseline && usualAt !== undefined) {
      // Usual rate per window, before this event; a quiet or new subject gets the floor.
      const usual = result.counters[usualAt]?.count ?? 0;
      limit = Math.max(rule.baseline.floor, Math.ceil(rule.baseline.factor * usual));
      exceeded = r.count > limit + 1e-9;
    }
    if (!exceeded) continue;
    if (rule.exceptKnownGood && knownGood) continue;
    if (
      rule.minAddresses !== undefined &&
      (result.counters[plan.companions.get(i) ?? -1]?.count ?? 0) < rule.minAddresses
    )
      continue;
    const subject = plan.subjects[i] as string;
    const hit: RuleHit = {
      rule: rule.name,
      subject,
      count: Math.round(r.count),
      limit,
      action: rule.then.action,
      observe: rule.mode === 'observe' || plan.allowlisted,
      reason: rule.then.message || defaultReason(rule, subject, limit),
    };
    hits.push(hit);
    fired.push(rule);
    if (hit.observe) continue;
    if (!winner || ACTION_RANK[hit.action] > ACTION_RANK[winner.hit.action]) winner = { rule, hit };
  }
  if (!winner) return hits.length ? { ...ALLOW, hits, effects: [] } : ALLOW;
  const effects: Effect[] = [];
  for (let i = 0; i < hits.length; i++) {
    const hit = hits[i] as RuleHit;
    if (!hit.observe) effects.push(...effectsOf(fired[i] as Rule, hit, event, policy));
  }
  return {
    action: winner.hit.action,
    delaySeconds: winner.hit.action === 'delay' ? winner.rule.then.delaySeconds : 0,
    rule: winner.rule.name,
    reason: winner.hit.reason,
    hits,
    effects,
  };
}

function effectsOf(rule: Rule, hit: RuleHit, event: MailEvent, policy: Policy): Effect[] {
  const out: Effect[] = [];
  const evidence = {
    event: event.kind,
    protocol: event.protocol,
    ip: event.ip,
    user: event.user,
    count: hit.count,
    limit: hit.limit,
    subject: hit.subject,
    window: formatDuration((rule.uses ?? rule).windowMs),
    time: isoTime(event.time),
  };
  if (rule.then.ban) {
    const v6 = isIPv6(event.ip);
    const subject = rule.then.ban === 'ip' ? event.ip : clientNetwork(event.ip, policy);
    const agg = policy.ipv6Aggregate;
    out.push({
      type: 'ban',
      subject,
      rule: rule.name,
      reason: hit.reason,
      evidence,
      escalation: policy.escalation,
      aggregate:
        v6 && agg.enabled
          ? {
              prefix: networkOf(event.ip, agg.prefix),
              member: networkOf(event.ip, policy.ipv6Prefix),
              threshold: agg.threshold,
            }
          : undefined,
    });
  }
  if (rule.then.suspendMs !== undefined && event.user !== undefined) {
    out.push({
      type: 'suspend',
      user: event.user,
      rule: rule.name,
      reason: hit.reason,
      durationMs: rule.then.suspendMs,
      evidence,
    });
  }
  if (rule.then.notify) {
    out.push({
      type: 'notify',
      rule: rule.name,
      subject: hit.subject,
      user: event.user,
      ip: event.ip,
      action: hit.action,
      reason: hit.reason,
      evidence,
    });
  }
  return out;
}

/** Ban length for the n-th offence (1-based) within the look-back period. */
export function escalatedDuration(esc: { baseMs: number; factor: number; maxMs: number }, offence: number): number {
  return Math.min(esc.maxMs, Math.round(esc.baseMs * esc.factor ** Math.max(0, offence - 1)));
}
