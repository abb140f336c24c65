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
import { formatDuration, isoTime, MESSAGES, replyLocale, textIn, type Locale } from './messages.js';
import type { Plan } from './plan.js';
import type { Policy, Rule } from './policy.js';
import {
  ACTION_RANK,
  ALLOW,
  type BanRecord,
  type Decision,
  type Effect,
  type Listing,
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

// The rest of mailwarden reads these two from here.
export { formatDuration, isoTime };

/** A rule's refusal text; a rule on a DNSBL listing also names the zones that list the client and their codes. */
function ruleReason(rule: Rule, subject: string, limit: number, locale: Locale, listed: Listing | undefined): string {
  const text = ownOrGenerated(rule, subject, limit, locale);
  const cond = rule.when.listed;
  if (cond === undefined || cond === false || listed === undefined) return text;
  const zones = listed.zones.filter((z) => (cond === true ? z.weight > 0 : cond.includes(z.zone)));
  return zones.length ? text + MESSAGES[locale].listedIn(zones) : text;
}

/** A rule's own message, else the generated one. */
function ownOrGenerated(rule: Rule, subject: string, limit: number, locale: Locale): string {
  const own = textIn(rule.then.message, locale);
  if (own) return own;
  const counted = rule.uses ?? rule;
  const m = MESSAGES[locale];
  const o = { count: counted.count, subject, limit, windowMs: counted.windowMs, rule: rule.name };
  if (rule.baseline) return m.unusualRate(o);
  if (rule.then.action === 'allow') return m.unusualActivity(o);
  return m.tooMany(o, rule.then.action !== 'reject');
}

export function banReason(ban: BanRecord, locale: Locale = 'en'): string {
  return MESSAGES[locale].banned(ban.subject, ban.until, ban.rule);
}

/**
 * A refusal made once per ban or suspension record and variant, then reused (frozen) for every request
 * it refuses while the record stands: under attack most requests are these, and the reply text (a
 * Japanese ban end goes through Intl) would otherwise be built anew for each. The store hands back the
 * same record object until the ban or suspension changes; a new record is a new key. (A Japanese ban end
 * keeps the time zone it was written in: the daemon's TZ does not change while it runs.)
 */
const refusals = new WeakMap<BanRecord | SuspensionRecord, Map<string, Decision>>();

function keep(rec: BanRecord | SuspensionRecord, variant: string, d: Decision): Decision {
  let made = refusals.get(rec);
  if (made === undefined) refusals.set(rec, (made = new Map<string, Decision>()));
  made.set(variant, Object.freeze(d));
  return d;
}

/** The refusal of a banned source (also what the decider answers when the rest of a decision failed). */
export function banDecision(ban: BanRecord, locale: Locale = 'en'): Decision {
  return (
    refusals.get(ban)?.get(locale) ??
    keep(ban, locale, {
      ...ALLOW,
      action: 'reject',
      rule: 'ban',
      reason: banReason(ban, locale),
      hits: [],
      effects: [],
    })
  );
}

export function suspensionReason(s: SuspensionRecord, login = false, locale: Locale = 'en'): string {
  return MESSAGES[locale].suspended(s.user, s.rule, login);
}

const AT_LOGIN: Readonly<Record<Locale, string>> = { en: 'en/login', ja: 'ja/login' };

function suspensionDecision(s: SuspensionRecord, login: boolean, locale: Locale): Decision {
  const variant = login ? AT_LOGIN[locale] : locale;
  return (
    refusals.get(s)?.get(variant) ??
    keep(s, variant, {
      ...ALLOW,
      action: 'reject',
      rule: 'suspension',
      reason: suspensionReason(s, login, locale),
      hits: [],
      effects: [],
    })
  );
}

/**
 * The decision on one event. Its `reason` is what the client is told, in the language its protocol can
 * carry (engine/messages.ts); every hit's reason, which the audit trail, bans, suspensions and alerts keep,
 * is English.
 */
export function decide(event: MailEvent, policy: Policy, plan: Plan, result: ApplyResult): Decision {
  const locale = replyLocale(policy.locale, event.protocol);
  if (result.ban) return banDecision(result.ban, locale);
  if (result.suspension) return suspensionDecision(result.suspension, event.kind === 'auth-attempt', locale);
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
      reason: ruleReason(rule, subject, limit, 'en', event.listed),
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
    reason:
      locale === 'en'
        ? winner.hit.reason
        : ruleReason(winner.rule, winner.hit.subject, winner.hit.limit, locale, event.listed),
    hits,
    effects,
  };
}

function effectsOf(rule: Rule, hit: RuleHit, event: MailEvent, policy: Policy): Effect[] {
  const out: Effect[] = [];
  // Most refusing rules only refuse: no evidence to build for them.
  if (!rule.then.ban && rule.then.suspendMs === undefined && !rule.then.notify) return out;
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
