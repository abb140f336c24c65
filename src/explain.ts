/*
 * explain — why is this address, network or user limited, banned or
 * suspended? Gathers the subject's active bans or suspension, its counters
 * against every rule that counts it, and its audit trail, plus a plain-English
 * summary for the CLI. Read-only: peeking never charges a counter.
 */
import { clientNetwork, parseSubject } from './engine/address.js';
import { formatDuration } from './engine/decide.js';
import { banSubjectsFor, counterKey, limitFor, usualKey, type CounterOp } from './engine/plan.js';
import type { Policy, Rule } from './engine/policy.js';
import type { BanRecord, SuspensionRecord } from './engine/types.js';
import type { AuditRow, Store } from './store/types.js';

export interface CounterView {
  rule: string;
  subject: string;
  /** As the rule counts it: a rate, a distinct count, the recent rate (baseline), or the counter a detector reads. */
  count: number;
  /** The limit in force for this subject: its override, or for a baseline max(floor, factor × usual). */
  limit: number;
  window: string;
  mode: string;
  action: string;
  /** What the rule does when it fires (e.g. `hold, suspend 1d, notify`); empty for a rule that only counts. */
  acts: string;
  /** Baseline rules: the subject's own usual count per window. */
  usual?: number | undefined;
  /** Detector rules: the rule whose counter this one reads. */
  reads?: string | undefined;
}

export interface Explanation {
  subject: string;
  kind: 'ip' | 'network' | 'user';
  allowlisted: boolean;
  bans: BanRecord[];
  suspension: SuspensionRecord | null;
  counters: CounterView[];
  audit: AuditRow[];
  summary: string[];
}

export async function explain(raw: string, policy: Policy, store: Store, now: number): Promise<Explanation> {
  const parsed = parseSubject(raw);
  const kind = parsed ? parsed.kind : 'user';
  const subject = parsed ? parsed.text : raw.trim().toLowerCase();
  const iso = (t: number): string => new Date(t).toISOString();

  let covering: readonly string[] = [subject];
  let allowlisted = false;
  const pairs: Array<[Rule, string]> = [];
  // Without zones no client is listed: the rules for listed clients (the built-in listed-*) count nothing.
  const rules = policy.rules.filter(
    (r) => policy.dnsbl.zones.length > 0 || r.when.listed === undefined || r.when.listed === false,
  );
  if (parsed?.kind === 'ip') {
    covering = banSubjectsFor(subject);
    allowlisted = policy.allowNetworks.has(subject);
    const net = clientNetwork(subject, policy);
    for (const r of rules) {
      if (r.key === 'ip') pairs.push([r, subject]);
      if (r.key === 'network') pairs.push([r, net]);
    }
  } else if (parsed?.kind === 'network') {
    for (const r of rules) if (r.key === 'network') pairs.push([r, subject]);
  } else {
    allowlisted = policy.allowUsers.has(subject);
    for (const r of rules) if (r.key === 'user') pairs.push([r, subject]);
  }

  const bans = (await store.listBans(now)).filter((b) => covering.includes(b.subject));
  const suspension =
    kind === 'user' ? ((await store.listSuspensions(now)).find((s) => s.user === subject) ?? null) : null;
  const peeks = pairs.map(([r, s]) => peekOps(r, s));
  const counts = await store.peek(peeks.flat(), now);
  let next = 0;
  const counters = pairs.map(([r, s], i): CounterView => {
    // A baseline rule has two answers (recent, usual); every other rule one.
    const [count = 0, usual = 0] = counts.slice(next, (next += (peeks[i] as CounterOp[]).length));
    const view = {
      rule: r.name,
      subject: s,
      count,
      limit: limitFor(r, s),
      window: formatDuration(r.windowMs),
      mode: r.mode,
      action: r.then.action,
      acts: actsOf(r),
      reads: r.uses?.rule,
    };
    if (!r.baseline) return view;
    // decide.ts: the usual count per window, times the factor, never below the floor.
    const limit = Math.max(r.baseline.floor, Math.ceil(r.baseline.factor * usual));
    return { ...view, count: tenths(count), limit, usual: tenths(usual) };
  });
  const auditSubjects = [...new Set([...covering, ...pairs.map(([, s]) => s)])];
  const audit = await store.auditFor(auditSubjects, 50);

  const summary: string[] = [];
  if (allowlisted) {
    summary.push(
      kind === 'user'
        ? `${subject} is allowlisted: counted, never limited (bans on its source address and manual suspensions still apply).`
        : `${subject} is allowlisted: counted, never limited or banned.`,
    );
  }
  for (const b of bans) {
    summary.push(
      `BANNED: ${b.subject} until ${iso(b.until)} by ${b.actor} (rule ${b.rule}, offence ${b.offence}): ${b.reason}`,
    );
  }
  if (suspension) {
    summary.push(
      `SUSPENDED: ${suspension.user} until ${iso(suspension.until)} by ${suspension.actor} (rule ${suspension.rule}): ${suspension.reason}`,
    );
  }
  for (const [i, c] of counters.entries()) {
    // An allowlisted subject is never acted on, and a rule that only counts has nothing to warn of.
    if (c.count < c.limit || c.acts === '' || allowlisted) continue;
    const r = (pairs[i] as [Rule, string])[0];
    const counted = `${c.rule} counts ${c.count}/${c.limit} per ${c.window} for ${c.subject}${
      c.reads
        ? ` (the counter of ${c.reads})`
        : r.baseline
          ? ` (${r.baseline.factor}× its usual ${c.usual ?? 0}, at least ${r.baseline.floor})`
          : ''
    }`;
    summary.push(
      c.mode === 'observe' ? `${counted} (observe only: would ${c.acts})` : `AT LIMIT: ${counted}: would ${c.acts}`,
    );
  }
  if (summary.length === 0) summary.push(`${subject} is not banned, suspended or at any limit that acts.`);
  return { subject, kind, allowlisted, bans, suspension, counters, audit, summary };
}

/**
 * The counters of one rule as plan() counts them, read without charging: a detector reads the
 * counter of the rule it `uses`; a baseline rule is its recent rate (time constant = the window)
 * and its usual rate (the `|usual` key), with nothing new added.
 */
function peekOps(r: Rule, subject: string): CounterOp[] {
  const limit = limitFor(r, subject);
  if (r.uses) {
    const of = r.count.startsWith('distinct:') ? 'distinct' : 'rate';
    const key = counterKey(r.uses.rule, subject);
    const u = r.uses;
    return [{ type: 'read', of, rule: r.name, key, limit, rateLimit: u.limit, windowMs: u.windowMs, charge: 'never' }];
  }
  const key = counterKey(r.name, subject);
  const windowMs = r.windowMs;
  if (r.count.startsWith('distinct:'))
    return [{ type: 'distinct', rule: r.name, key, member: '', limit, windowMs, charge: 'never', flags: 0 }];
  if (!r.baseline) return [{ type: 'rate', rule: r.name, key, cost: 0, limit, windowMs, charge: 'never', flags: 0 }];
  const ewma = (k: string, tauMs: number): CounterOp => ({
    type: 'ewma',
    rule: r.name,
    key: k,
    cost: 0,
    tauMs,
    windowMs,
    withSelf: false,
    charge: 'never',
  });
  return [ewma(key, windowMs), ewma(usualKey(key), r.baseline.tauMs)];
}

/** What a rule does when it fires, or '' when it only counts (allow, no ban, suspension or alert). */
function actsOf(r: Rule): string {
  const t = r.then;
  return [
    t.action === 'allow' ? '' : t.action === 'delay' ? `delay ${t.delaySeconds}s` : t.action,
    t.ban ? `ban ${t.ban}` : '',
    t.suspendMs !== undefined ? `suspend ${formatDuration(t.suspendMs)}` : '',
    t.notify ? 'notify' : '',
  ]
    .filter((x) => x !== '')
    .join(', ');
}

/** An exponentially weighted count, to one decimal. */
const tenths = (n: number): number => Math.round(n * 10) / 10;
