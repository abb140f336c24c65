/*
 * explain — why is this address, network or user limited, banned or
 * suspended? Gathers the subject's active bans or suspension, its counters
 * against every rule that counts it, and its audit trail, plus a plain-English
 * summary for the CLI. Read-only: peeking never charges a counter.
 */
import { clientNetwork, parseSubject } from './engine/address.js';
import { formatDuration } from './engine/decide.js';
import { banSubjectsFor, counterKey, type CounterOp } from './engine/plan.js';
import type { Policy, Rule } from './engine/policy.js';
import type { BanRecord, SuspensionRecord } from './engine/types.js';
import type { AuditRow, Store } from './store/types.js';

export interface CounterView {
  rule: string;
  subject: string;
  count: number;
  limit: number;
  window: string;
  mode: string;
  action: string;
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
  if (parsed?.kind === 'ip') {
    covering = banSubjectsFor(subject, policy);
    allowlisted = policy.allowNetworks.has(subject);
    const net = clientNetwork(subject, policy);
    for (const r of policy.rules) {
      if (r.key === 'ip') pairs.push([r, subject]);
      if (r.key === 'network') pairs.push([r, net]);
    }
  } else if (parsed?.kind === 'network') {
    for (const r of policy.rules) if (r.key === 'network') pairs.push([r, subject]);
  } else {
    allowlisted = policy.allowUsers.has(subject);
    for (const r of policy.rules) if (r.key === 'user') pairs.push([r, subject]);
  }

  const bans = (await store.listBans(now)).filter((b) => covering.includes(b.subject));
  const suspension =
    kind === 'user' ? ((await store.listSuspensions(now)).find((s) => s.user === subject) ?? null) : null;
  const ops: CounterOp[] = pairs.map(([r, s]) =>
    r.count.startsWith('distinct:')
      ? {
          type: 'distinct',
          rule: r.name,
          key: counterKey(r.name, s),
          member: '',
          limit: r.limit,
          windowMs: r.windowMs,
          charge: 'never',
        }
      : {
          type: 'rate',
          rule: r.name,
          key: counterKey(r.name, s),
          cost: 0,
          limit: r.limit,
          windowMs: r.windowMs,
          charge: 'never',
        },
  );
  const counts = await store.peek(ops, now);
  const counters = pairs.map(([r, s], i) => ({
    rule: r.name,
    subject: s,
    count: counts[i] ?? 0,
    limit: r.limit,
    window: formatDuration(r.windowMs),
    mode: r.mode,
    action: r.then.action,
  }));
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
  for (const c of counters) {
    if (c.count >= c.limit)
      summary.push(
        `AT LIMIT: ${c.rule} counts ${c.count}/${c.limit} per ${c.window} for ${c.subject} (${c.mode === 'observe' ? 'observe only' : c.action})`,
      );
  }
  if (summary.length === 0) summary.push(`${subject} is not banned, suspended or at any limit.`);
  return { subject, kind, allowlisted, bans, suspension, counters, audit, summary };
}
