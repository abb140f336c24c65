/*
 * The decision path, half by half and end to end: plan() alone, decide() alone
 * on hand-made store answers, and plan → MemoryStore.applySync → decide (+ the
 * store's commit) for every rule kind, action, ban, suspension and allowlist.
 * Time is an injected clock (Harness.now); nothing here waits.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadSettings } from '../../src/config/load.js';
import {
  banReason,
  decide,
  escalatedDuration,
  formatDuration,
  suspensionReason,
  type ApplyResult,
} from '../../src/engine/decide.js';
import { banSubject, banSubjectsFor, counterKey, plan, ruleId, type CounterOp } from '../../src/engine/plan.js';
import { VETO } from '../../src/engine/gate.js';
import type { Policy } from '../../src/engine/policy.js';
import {
  ALLOW,
  type Action,
  type BanEffect,
  type BanRecord,
  type Decision,
  type MailEvent,
  type SuspendEffect,
  type SuspensionRecord,
} from '../../src/engine/types.js';
import { allowed, DAY, Harness, HOUR, makeEvent, MINUTE, rulesPolicy, SECOND, T0 } from '../helpers/policy.js';

const CONN = (limit = 3, then = 'tempfail'): string =>
  `  - {name: conn, on: [connect], key: ip, count: events, limit: ${limit}, window: 1m, then: ${then}}`;

/** A harness whose policy is just these rules (YAML list items, one a string): no default rules. */
const harnessWith = (...rules: string[]): Harness => new Harness(rulesPolicy(rules.join('\n')));

function rateOp(p: ReturnType<typeof plan>, i = 0): Extract<CounterOp, { type: 'rate' }> {
  const op = p.counters[i];
  assert.ok(op && op.type === 'rate', `counter ${i} is a rate counter`);
  return op;
}

/** Runs identical events until one carries effects; commits them; returns what was committed. */
async function offend(
  h: Harness,
  over: Partial<MailEvent> = {},
  max = 100,
): Promise<{ bans: BanRecord[]; suspensions: SuspensionRecord[] }> {
  for (let i = 0; i < max; i++) {
    const out = await h.handle(over);
    if (out.decision.effects.length > 0) return out.committed;
  }
  throw new Error('no effects after many events');
}

function manualBan(policy: Policy, subject: string, durationMs: number): BanEffect {
  return {
    type: 'ban',
    subject,
    rule: 'manual',
    reason: 'set by a test',
    evidence: {},
    escalation: policy.escalation,
    durationMs,
  };
}

function manualSuspension(user: string, durationMs: number, reason = 'x'): SuspendEffect {
  return { type: 'suspend', user, rule: 'manual', reason, durationMs, evidence: {} };
}

void describe('plan()', () => {
  const policy = rulesPolicy(
    [
      CONN(),
      '  - {name: rcpt, on: [recipient], key: ip, count: recipients, limit: 10, window: 1h}',
      '  - {name: watch, mode: observe, on: [connect], key: network, count: events, limit: 5, window: 1m}',
    ].join('\n'),
  );

  void test('takes only the rules whose `on` names the event, with key, cost, limit, window and gating', () => {
    const p = plan(makeEvent(), policy);
    assert.deepEqual(
      p.rules.map((r) => r.name),
      ['conn', 'watch'],
    );
    assert.deepEqual(p.counters, [
      {
        type: 'rate',
        rule: 'conn',
        key: counterKey('conn', '192.0.2.10'),
        cost: 1,
        limit: 3,
        windowMs: 60_000,
        charge: 'if-pass',
        flags: VETO,
      },
      {
        type: 'rate',
        rule: 'watch',
        key: counterKey('watch', '192.0.2.0/24'),
        cost: 1,
        limit: 5,
        windowMs: 60_000,
        charge: 'if-conform',
        flags: 0,
      },
    ]);
    assert.deepEqual(p.subjects, ['192.0.2.10', '192.0.2.0/24']);
    assert.equal(p.allowlisted, false);
    const r = plan(makeEvent({ kind: 'recipient', recipients: 1, recipient: 'x@example.net' }), policy);
    assert.deepEqual(
      r.counters.map((c) => c.rule),
      ['rcpt'],
    );
    assert.equal(plan(makeEvent({ kind: 'helo' }), policy).counters.length, 0);
  });

  void test('counter keys are rule|subject, so they survive a reload that keeps the rule name', () => {
    assert.equal(counterKey('conn', '192.0.2.10'), `${ruleId('conn')}|192.0.2.10`);
    assert.notEqual(ruleId('conn'), ruleId('conn2'));
    assert.match(ruleId('smtp-connections-per-ip'), /^[0-9a-z]{1,7}$/);
  });

  void test('ban subjects: the address and every enclosing network of any length, longest prefix first', () => {
    const cover = plan(makeEvent(), policy).banCover;
    assert.deepEqual(cover, { ip: '192.0.2.10', v6: false, groups: undefined });
    const v4 = banSubjectsFor('192.0.2.10');
    assert.equal(v4.length, 33);
    assert.deepEqual(v4.slice(0, 3), ['192.0.2.10', '192.0.2.10/31', '192.0.2.8/30']);
    assert.equal(v4[8], '192.0.2.0/24');
    assert.equal(v4[17], '192.0.0.0/15');
    assert.equal(v4[32], '0.0.0.0/0');
    assert.deepEqual(
      v4.map((_s, i) => banSubject({ ip: '192.0.2.10', v6: false }, 32 - i)),
      v4,
    );
    const v6 = banSubjectsFor('2001:db8:1:2::7');
    assert.equal(v6.length, 129);
    assert.equal(v6[0], '2001:db8:1:2::7');
    assert.equal(v6[64], '2001:db8:1:2::/64');
    assert.equal(v6[88], '2001:db8::/40');
    assert.equal(v6[104], '2001:d00::/24');
    assert.equal(v6[128], '::/0');
  });

  void test('suspension is checked only for events that send mail, and only with a user', () => {
    const sending = ['mail', 'recipient', 'data', 'message'] as const;
    for (const kind of sending)
      assert.equal(plan(makeEvent({ kind, user: 'u@example.org' }), policy).suspendedUser, 'u@example.org', kind);
    for (const kind of ['connect', 'helo', 'auth-attempt', 'auth-result', 'vrfy', 'etrn'] as const) {
      assert.equal(plan(makeEvent({ kind, user: 'u@example.org' }), policy).suspendedUser, undefined, kind);
    }
    assert.equal(plan(makeEvent({ kind: 'message' }), policy).suspendedUser, undefined);
  });

  void test('subjects per key, with the configured network sizes', () => {
    const keys = rulesPolicy(
      ['ip', 'network', 'user', 'sender', 'sender_domain']
        .map((k) => `  - {name: k-${k.replace('_', '-')}, on: [mail], key: ${k}, count: events, limit: 9, window: 1m}`)
        .join('\n'),
      'networks: {ipv4_prefix: 16, ipv6_prefix: 56}',
    );
    const full = plan(makeEvent({ kind: 'mail', user: 'alice@example.org', sender: 'bob@mail.example.org' }), keys);
    assert.deepEqual(full.subjects, [
      '192.0.2.10',
      '192.0.0.0/16',
      'alice@example.org',
      'bob@mail.example.org',
      'mail.example.org',
    ]);
    const v6 = plan(makeEvent({ kind: 'mail', ip: '2001:db8:1:2ff::9' }), keys);
    assert.deepEqual(v6.subjects, ['2001:db8:1:2ff::9', '2001:db8:1:200::/56']);
    // No user, the null sender, and a sender without a domain count against nothing.
    assert.deepEqual(plan(makeEvent({ kind: 'mail', sender: '' }), keys).subjects, ['192.0.2.10', '192.0.0.0/16']);
    assert.deepEqual(plan(makeEvent({ kind: 'mail', sender: 'postmaster' }), keys).subjects, [
      '192.0.2.10',
      '192.0.0.0/16',
      'postmaster',
    ]);
  });

  void test('costs: recipients, bytes, messages, failures; zero-cost events are left out', () => {
    const costs = rulesPolicy(
      [
        '  - {name: c-rcpt, on: [message, recipient], key: ip, count: recipients, limit: 100, window: 1h}',
        '  - {name: c-bytes, on: [message], key: ip, count: bytes, limit: 100000000, window: 1h}',
        '  - {name: c-msgs, on: [message], key: ip, count: messages, limit: 100, window: 1h}',
        '  - {name: c-fail, on: [auth-attempt, auth-result], key: ip, count: failures, limit: 10, window: 1h}',
      ].join('\n'),
    );
    const msg = plan(makeEvent({ kind: 'message', recipients: 7, size: 12_345 }), costs);
    assert.deepEqual(
      msg.counters.map((c) => [c.rule, (c as { cost: number }).cost]),
      [
        ['c-rcpt', 7],
        ['c-bytes', 12_345],
        ['c-msgs', 1],
      ],
    );
    // A RCPT event always stands for at least one recipient; an empty message costs no bytes.
    assert.equal(rateOp(plan(makeEvent({ kind: 'recipient', recipients: 0 }), costs)).cost, 1);
    assert.deepEqual(
      plan(makeEvent({ kind: 'message', recipients: 1, size: 0 }), costs).rules.map((r) => r.name),
      ['c-rcpt', 'c-msgs'],
    );
    assert.equal(plan(makeEvent({ kind: 'auth-result', success: false }), costs).rules.length, 1);
    assert.equal(plan(makeEvent({ kind: 'auth-result', success: true }), costs).rules.length, 0);
    assert.equal(plan(makeEvent({ kind: 'auth-result' }), costs).rules.length, 0);
    assert.equal(plan(makeEvent({ kind: 'auth-attempt', success: false }), costs).counters.length, 0);
  });

  void test('distinct members: pwhash, recipient domain, ip, network, user; a missing member is left out', () => {
    const d = rulesPolicy(
      ['pwhash', 'recipient_domain', 'ip', 'network', 'user']
        .map(
          (f) =>
            `  - {name: d-${f.replace('_', '-')}, on: [auth-result, recipient], key: ip, count: 'distinct:${f}', limit: 3, window: 1h}`,
        )
        .join('\n'),
    );
    const full = plan(
      makeEvent({ kind: 'recipient', pwhash: 'abc123', recipient: 'x@Dest.example', user: 'u@example.org' }),
      d,
    );
    assert.deepEqual(
      full.counters.map((c) => (c.type === 'distinct' ? c.member : undefined)),
      ['abc123', 'Dest.example', '192.0.2.10', '192.0.2.0/24', 'u@example.org'],
    );
    const bare = plan(makeEvent({ kind: 'auth-result', success: false, pwhash: '' }), d);
    assert.deepEqual(
      bare.rules.map((r) => r.name),
      ['d-ip', 'd-network'],
    );
  });

  void test('`when` filters: authenticated, context, protocol', () => {
    const w = rulesPolicy(
      [
        '  - {name: w-auth, on: [mail], key: ip, count: events, limit: 9, window: 1m, when: {authenticated: true}}',
        '  - {name: w-anon, on: [mail], key: ip, count: events, limit: 9, window: 1m, when: {authenticated: false}}',
        '  - {name: w-sub, on: [mail], key: ip, count: events, limit: 9, window: 1m, when: {context: [submission, smtps]}}',
        '  - {name: w-imap, on: [mail, auth-result], key: ip, count: events, limit: 9, window: 1m, when: {protocol: [imap, pop3]}}',
      ].join('\n'),
    );
    const names = (e: Partial<MailEvent>): string[] =>
      plan(makeEvent({ kind: 'mail', ...e }), w).rules.map((r) => r.name);
    assert.deepEqual(names({}), ['w-anon']);
    assert.deepEqual(names({ user: 'u@example.org' }), ['w-auth']);
    assert.deepEqual(names({ context: 'submission' }), ['w-anon', 'w-sub']);
    assert.deepEqual(names({ context: 'smtps', user: 'u@example.org' }), ['w-auth', 'w-sub']);
    assert.deepEqual(names({ protocol: 'imap' }), ['w-anon', 'w-imap']);
    assert.deepEqual(names({ protocol: 'pop3', user: 'u@example.org', context: 'submission' }), [
      'w-auth',
      'w-sub',
      'w-imap',
    ]);
    const rule = w.rules[3];
    assert.ok(rule);
    const applies = (e: Partial<MailEvent>): boolean => plan(makeEvent(e), w).rules.includes(rule);
    assert.equal(applies({ kind: 'auth-result', protocol: 'imap' }), true);
    assert.equal(applies({ kind: 'auth-result', protocol: 'smtp' }), false);
    assert.equal(applies({ kind: 'connect', protocol: 'imap' }), false);
  });

  void test('allowlisted networks and users: counted but never gated; trusted networks skip ban lookups', () => {
    const a = rulesPolicy(
      [CONN(), '  - {name: um, on: [message], key: user, count: messages, limit: 2, window: 1h}'].join('\n'),
      "allowlist: {networks: ['198.51.100.0/24', '2001:db8:aa::/48'], users: [Boss@Example.org]}",
    );
    for (const e of [makeEvent({ ip: '198.51.100.77' }), makeEvent({ ip: '2001:db8:aa:1::1' })]) {
      const p = plan(e, a);
      assert.equal(p.allowlisted, true, e.ip);
      assert.equal(p.banCover, undefined);
      assert.ok(p.counters.length > 0);
      assert.ok(p.counters.every((c) => c.charge === 'if-conform'));
    }
    // An allowlisted user is never limited, but bans on the source and manual suspensions are still looked up.
    const boss = makeEvent({ kind: 'message', user: 'boss@example.org', recipients: 1 });
    const pb = plan(boss, a);
    assert.equal(pb.allowlisted, true);
    assert.equal(pb.banCover?.ip, boss.ip);
    assert.equal(pb.suspendedUser, 'boss@example.org');
    assert.ok(pb.counters.length > 0 && pb.counters.every((c) => c.charge === 'if-conform'));
    const notListed = makeEvent({ kind: 'message', user: 'other@example.org', ip: '198.51.101.1' });
    assert.equal(plan(notListed, a).allowlisted, false);
    assert.ok(plan(notListed, a).counters.every((c) => c.charge === 'if-pass'));
    // Built-in defaults trust the host itself only.
    const defaults = loadSettings(undefined).policy;
    assert.equal(plan(makeEvent({ ip: '127.0.0.1' }), defaults).allowlisted, true);
    assert.equal(plan(makeEvent({ ip: '::1' }), defaults).allowlisted, true);
    assert.equal(plan(makeEvent({ ip: '127.0.0.2' }), defaults).allowlisted, false);
  });
});

void describe('decide() on hand-made store answers', () => {
  const policy = rulesPolicy(
    [
      CONN(3, 'tempfail'),
      '  - {name: conn-hard, on: [connect], key: network, count: events, limit: 10, window: 1h, then: {action: reject, message: Go away}}',
    ].join('\n'),
  );
  const event = makeEvent();
  const p = plan(event, policy);
  const ban: BanRecord = {
    subject: '192.0.2.0/24',
    since: T0,
    until: T0 + HOUR,
    rule: 'conn',
    reason: 'r',
    offence: 1,
    actor: 'mailwarden',
  };
  const susp: SuspensionRecord = {
    user: 'u@example.org',
    since: T0,
    until: T0 + HOUR,
    rule: 'um',
    reason: 'r',
    actor: 'mailwarden',
  };
  const under: ApplyResult = {
    counters: [
      { count: 1, exceeded: false },
      { count: 1, exceeded: false },
    ],
  };

  void test('nothing exceeded: allow, no rule, no hits, no effects', () => {
    const d = decide(event, policy, p, under);
    assert.deepEqual(d, ALLOW);
    assert.equal(d.rule, '');
  });

  void test('a ban rejects with rule "ban" before any counter is looked at', () => {
    const d = decide(event, policy, p, {
      ban,
      counters: [
        { count: 99, exceeded: true },
        { count: 99, exceeded: true },
      ],
    });
    assert.equal(d.action, 'reject');
    assert.equal(d.rule, 'ban');
    assert.equal(d.reason, banReason(ban));
    assert.match(d.reason, /192\.0\.2\.0\/24 is blocked until 2025-01-01T01:00:00\.000Z \(rule conn\)/);
    assert.deepEqual(d.hits, []);
    assert.deepEqual(d.effects, []);
  });

  void test('a ban refuses with one decision per ban record and language, made once (the flood path)', () => {
    const result = { ban, counters: under.counters };
    const first = decide(event, policy, p, result);
    assert.equal(decide(event, policy, p, result), first, 'the same decision object');
    assert.ok(Object.isFrozen(first));
    assert.equal(decide(event, policy, p, { suspension: susp, counters: under.counters }).rule, 'suspension');
    const later = { ...ban, until: ban.until + HOUR };
    const again = decide(event, policy, p, { ban: later, counters: under.counters });
    assert.notEqual(again, first, 'a changed ban is a new record: a new decision');
    assert.match(again.reason, /blocked until 2025-01-01T02:00:00\.000Z/);
    const login = decide(makeEvent({ kind: 'auth-attempt', protocol: 'imap' }), policy, p, {
      suspension: susp,
      counters: under.counters,
    });
    assert.equal(login.reason, suspensionReason(susp, true), 'refused at login: its own words');
  });

  void test('a suspension rejects with rule "suspension"; a ban outranks it', () => {
    const d = decide(event, policy, p, { suspension: susp, counters: under.counters });
    assert.equal(d.action, 'reject');
    assert.equal(d.rule, 'suspension');
    assert.equal(d.reason, suspensionReason(susp));
    assert.match(d.reason, /u@example\.org is suspended/);
    assert.equal(decide(event, policy, p, { ban, suspension: susp, counters: under.counters }).rule, 'ban');
  });

  void test('the strongest exceeded rule decides; every hit is listed; default and custom reasons', () => {
    const both = decide(event, policy, p, {
      counters: [
        { count: 4, exceeded: true },
        { count: 11, exceeded: true },
      ],
    });
    assert.equal(both.action, 'reject');
    assert.equal(both.rule, 'conn-hard');
    assert.equal(both.reason, 'Go away');
    assert.deepEqual(
      both.hits.map((h) => [h.rule, h.subject, h.count, h.limit, h.action, h.observe]),
      [
        ['conn', '192.0.2.10', 4, 3, 'tempfail', false],
        ['conn-hard', '192.0.2.0/24', 11, 10, 'reject', false],
      ],
    );
    assert.equal(
      both.hits[0]?.reason,
      'Too many requests from 192.0.2.10 (limit 3 per 1m, rule conn); try again later',
    );
    const one = decide(event, policy, p, {
      counters: [
        { count: 4, exceeded: true },
        { count: 5, exceeded: false },
      ],
    });
    assert.equal(one.action, 'tempfail');
    assert.equal(one.rule, 'conn');
    assert.equal(one.delaySeconds, 0);
    assert.equal(one.hits.length, 1);
  });

  void test('an allowlisted plan only observes hits (bans are not even planned for trusted networks)', () => {
    const listed = { ...p, allowlisted: true };
    const d = decide(event, policy, listed, {
      counters: [
        { count: 4, exceeded: true },
        { count: 1, exceeded: false },
      ],
    });
    assert.equal(d.action, 'allow');
    assert.equal(d.rule, '');
    assert.equal(d.hits.length, 1);
    assert.equal(d.hits[0]?.observe, true);
    assert.deepEqual(d.effects, []);
  });

  void test('helpers: durations, escalation', () => {
    assert.equal(formatDuration(60_000), '1m');
    assert.equal(formatDuration(90_000), '90s');
    assert.equal(formatDuration(3_600_000), '1h');
    assert.equal(formatDuration(86_400_000), '1d');
    assert.equal(formatDuration(604_800_000), '1w');
    assert.equal(formatDuration(1500), '1500ms');
    const esc = { baseMs: HOUR, factor: 4, maxMs: 10 * HOUR };
    assert.deepEqual(
      [1, 2, 3, 4].map((n) => escalatedDuration(esc, n)),
      [HOUR, 4 * HOUR, 10 * HOUR, 10 * HOUR],
    );
    assert.equal(escalatedDuration(esc, 0), HOUR);
    assert.equal(escalatedDuration({ baseMs: HOUR, factor: 1, maxMs: DAY }, 9), HOUR);
  });
});

void describe('every count kind through plan → store → decide', () => {
  void test('events per ip: the limit passes, the next is refused by the rule, named with count and limit', () => {
    const h = harnessWith(CONN(3));
    assert.equal(allowed(h.runMany(3)), 3);
    const d = h.run().decision;
    assert.equal(d.action, 'tempfail');
    assert.equal(d.rule, 'conn');
    assert.equal(d.reason, 'Too many requests from 192.0.2.10 (limit 3 per 1m, rule conn); try again later');
    assert.deepEqual(
      d.hits.map((x) => [x.count, x.limit]),
      [[4, 3]],
    );
    assert.deepEqual(d.effects, []);
    // Another client is unaffected.
    assert.equal(h.run({ ip: '192.0.2.11' }).decision.action, 'allow');
  });

  void test('recipients per RCPT event, only for unauthenticated clients', () => {
    const h = harnessWith(
      '  - {name: inbound, on: [recipient], when: {authenticated: false}, key: ip, count: recipients, limit: 5, window: 1h}',
    );
    const rcpt = { kind: 'recipient' as const, recipients: 1, recipient: 'x@example.net' };
    assert.equal(allowed(h.runMany(5, rcpt)), 5);
    const d = h.run(rcpt).decision;
    assert.deepEqual([d.action, d.rule, d.hits[0]?.count], ['tempfail', 'inbound', 6]);
    assert.match(d.reason, /Too many recipients from 192\.0\.2\.10 \(limit 5 per 1h/);
    // Authenticated submissions from the same address are not this rule's business.
    assert.equal(allowed(h.runMany(10, { ...rcpt, user: 'u@example.org' })), 10);
  });

  void test('recipients of accepted messages per user (recipient_count at END-OF-MESSAGE)', async () => {
    const h = harnessWith(
      '  - {name: urcpt, on: [message], when: {authenticated: true}, key: user, count: recipients, limit: 10, window: 1h}',
    );
    const msg = (n: number): Partial<MailEvent> => ({
      kind: 'message',
      user: 'u@example.org',
      recipients: n,
      size: 100,
    });
    assert.equal(h.run(msg(4)).decision.action, 'allow');
    assert.equal(h.run(msg(4)).decision.action, 'allow');
    const over = h.run(msg(4)).decision;
    assert.equal(over.action, 'tempfail');
    assert.equal(over.hits[0]?.count, 12);
    // The refused message was not charged: two more recipients still fit exactly.
    assert.deepEqual(await h.peek(msg(1)), { 'urcpt|u@example.org': 8 });
    assert.equal(h.run(msg(2)).decision.action, 'allow');
    assert.equal(h.run(msg(1)).decision.action, 'tempfail');
  });

  void test('messages per user recover one per window/limit', () => {
    const h = harnessWith('  - {name: umsg, on: [message], key: user, count: messages, limit: 2, window: 1h}');
    const msg = { kind: 'message' as const, user: 'u@example.org', recipients: 1 };
    assert.equal(allowed(h.runMany(3, msg)), 2);
    h.advance(30 * MINUTE - 1);
    assert.equal(h.run(msg).decision.action, 'tempfail');
    h.advance(1);
    assert.equal(h.run(msg).decision.action, 'allow');
    assert.equal(h.run(msg).decision.action, 'tempfail');
  });

  void test('bytes per user; an empty message is free; one message over the limit is always refused', () => {
    const h = harnessWith(
      '  - {name: ubytes, on: [message], key: user, count: bytes, limit: 1000, window: 1h, then: reject}',
    );
    const msg = (size: number, user = 'u@example.org'): Partial<MailEvent> => ({
      kind: 'message',
      user,
      recipients: 1,
      size,
    });
    assert.equal(h.run(msg(400)).decision.action, 'allow');
    assert.equal(h.run(msg(400)).decision.action, 'allow');
    const over = h.run(msg(400)).decision;
    assert.deepEqual([over.action, over.hits[0]?.count], ['reject', 1200]);
    assert.match(over.reason, /Too many bytes from u@example\.org \(limit 1000 per 1h, rule ubytes\)$/);
    assert.equal(h.run(msg(200)).decision.action, 'allow');
    assert.equal(h.run(msg(0)).decision.action, 'allow');
    assert.equal(h.run(msg(1)).decision.action, 'reject');
    assert.equal(h.run(msg(1500, 'fresh@example.org')).decision.action, 'reject');
  });

  void test('failed logins per ip; successes are not counted and not refused', () => {
    const h = harnessWith(
      '  - {name: fails, on: [auth-result], key: ip, count: failures, limit: 3, window: 10m, then: reject}',
    );
    const fail = { kind: 'auth-result' as const, protocol: 'imap', success: false, user: 'victim@example.org' };
    assert.equal(allowed(h.runMany(10, { ...fail, success: true })), 10);
    assert.equal(allowed(h.runMany(3, fail)), 3);
    const d = h.run(fail).decision;
    assert.deepEqual([d.action, d.rule, d.hits[0]?.count], ['reject', 'fails', 4]);
    assert.match(d.reason, /Too many failed logins from 192\.0\.2\.10 \(limit 3 per 10m, rule fails\)$/);
    assert.equal(h.run({ ...fail, success: true }).decision.action, 'allow');
  });

  void test('distinct password fingerprints per ip: repeats are free, a new one past the limit fires, results keep counting, the window forgets', () => {
    const h = harnessWith(
      "  - {name: spray, on: [auth-result], key: ip, count: 'distinct:pwhash', limit: 3, window: 1h, then: reject}",
    );
    const att = (pwhash: string): Partial<MailEvent> => ({
      kind: 'auth-result',
      protocol: 'imap',
      success: false,
      pwhash,
    });
    assert.equal(allowed(h.runMany(10, att('h1'))), 10);
    assert.equal(h.run(att('h2')).decision.action, 'allow');
    assert.equal(h.run(att('h3')).decision.action, 'allow');
    const d = h.run(att('h4')).decision;
    assert.deepEqual([d.action, d.rule, d.hits[0]?.count], ['reject', 'spray', 4]);
    assert.match(d.reason, /Too many different passwords from 192\.0\.2\.10/);
    // A login result is a fact: it was charged although the rule fired, so the source stays over the limit.
    const again = h.run(att('h2')).decision;
    assert.deepEqual([again.action, again.hits[0]?.count], ['reject', 4], 'a known fingerprint does not grow the set');
    assert.equal(h.run(att('')).decision.action, 'allow', 'no fingerprint, nothing to count');
    h.advance(HOUR);
    assert.equal(allowed([h.run(att('h5')).decision, h.run(att('h6')).decision, h.run(att('h7')).decision]), 3);
  });

  void test('distinct recipient domains per sender domain', () => {
    const h = harnessWith(
      "  - {name: spread, on: [recipient], key: sender_domain, count: 'distinct:recipient_domain', limit: 2, window: 1h}",
    );
    const rc = (recipient: string, sender = 'a@example.org'): Partial<MailEvent> => ({
      kind: 'recipient',
      recipients: 1,
      sender,
      recipient,
    });
    assert.equal(h.run(rc('x@one.example')).decision.action, 'allow');
    assert.equal(h.run(rc('y@one.example', 'b@example.org')).decision.action, 'allow');
    assert.equal(h.run(rc('z@two.example')).decision.action, 'allow');
    const d = h.run(rc('w@three.example', 'c@example.org')).decision;
    assert.deepEqual([d.action, d.hits[0]?.subject, d.hits[0]?.count], ['tempfail', 'example.org', 3]);
    assert.equal(h.run(rc('w@three.example', 'c@other.example')).decision.action, 'allow');
  });

  void test('distinct source networks per user', () => {
    const h = harnessWith(
      "  - {name: roam, on: [auth-result], key: user, count: 'distinct:network', limit: 2, window: 1d}",
    );
    const login = (ip: string): Decision =>
      h.run({ kind: 'auth-result', protocol: 'imap', success: true, user: 'u@example.org', ip }).decision;
    assert.equal(login('192.0.2.1').action, 'allow');
    assert.equal(login('192.0.2.200').action, 'allow');
    assert.equal(login('198.51.100.1').action, 'allow');
    const d = login('203.0.113.1');
    assert.deepEqual([d.action, d.hits[0]?.count], ['tempfail', 3]);
  });
});

void describe('keys through the store', () => {
  void test('network: clients of one /24 (or IPv6 /64) share a counter', () => {
    const h = harnessWith('  - {name: net, on: [connect], key: network, count: events, limit: 2, window: 1m}');
    assert.equal(h.run({ ip: '192.0.2.1' }).decision.action, 'allow');
    assert.equal(h.run({ ip: '192.0.2.254' }).decision.action, 'allow');
    assert.deepEqual(
      [h.run({ ip: '192.0.2.99' }).decision.action, h.run({ ip: '192.0.2.99' }).decision.hits[0]?.subject],
      ['tempfail', '192.0.2.0/24'],
    );
    assert.equal(h.run({ ip: '192.0.3.1' }).decision.action, 'allow');
    assert.equal(h.run({ ip: '2001:db8:1:2::1' }).decision.action, 'allow');
    assert.equal(h.run({ ip: '2001:db8:1:2:ffff::1' }).decision.action, 'allow');
    assert.equal(h.run({ ip: '2001:db8:1:2::3' }).decision.hits[0]?.subject, '2001:db8:1:2::/64');
    assert.equal(h.run({ ip: '2001:db8:1:3::1' }).decision.action, 'allow');
  });

  void test('user: one account from many addresses shares a counter', () => {
    const h = harnessWith('  - {name: u, on: [mail], key: user, count: events, limit: 2, window: 1m, then: reject}');
    assert.equal(h.run({ kind: 'mail', user: 'u@example.org', ip: '192.0.2.1' }).decision.action, 'allow');
    assert.equal(h.run({ kind: 'mail', user: 'u@example.org', ip: '198.51.100.1' }).decision.action, 'allow');
    assert.equal(h.run({ kind: 'mail', user: 'u@example.org', ip: '203.0.113.1' }).decision.action, 'reject');
    assert.equal(h.run({ kind: 'mail', user: 'other@example.org', ip: '203.0.113.1' }).decision.action, 'allow');
    assert.equal(h.run({ kind: 'mail', ip: '203.0.113.1' }).decision.action, 'allow', 'no user, no count');
  });

  void test('sender and sender_domain; the null sender counts against neither', () => {
    const h = harnessWith(
      '  - {name: snd, on: [mail], key: sender, count: events, limit: 2, window: 1m}',
      '  - {name: sdom, on: [mail], key: sender_domain, count: events, limit: 3, window: 1m, then: reject}',
    );
    const mail = (sender: string): Decision => h.run({ kind: 'mail', sender }).decision;
    assert.equal(mail('a@example.org').action, 'allow');
    assert.equal(mail('a@example.org').action, 'allow');
    assert.deepEqual([mail('a@example.org').rule], ['snd']);
    assert.equal(mail('b@example.org').action, 'allow');
    assert.equal(mail('c@example.org').rule, 'sdom');
    assert.equal(mail('a@other.example').action, 'allow');
    assert.equal(allowed(Array.from({ length: 10 }, () => mail(''))), 10);
  });
});

void describe('actions and precedence', () => {
  const ORDER: Action[] = ['delay', 'hold', 'tempfail', 'reject'];
  const thenOf = (a: Action): string => (a === 'delay' ? '{action: delay, delay: 5s}' : a);
  const ruleFor = (a: Action): string =>
    `  - {name: r-${a}, on: [mail], key: ip, count: events, limit: 1, window: 1m, then: ${thenOf(a)}}`;

  void test('each action is returned as configured; delay carries its seconds', () => {
    for (const a of ORDER) {
      const h = harnessWith(ruleFor(a));
      assert.equal(h.run({ kind: 'mail' }).decision.action, 'allow');
      const d = h.run({ kind: 'mail' }).decision;
      assert.equal(d.action, a);
      assert.equal(d.rule, `r-${a}`);
      assert.equal(d.delaySeconds, a === 'delay' ? 5 : 0);
      assert.equal(d.reason.endsWith('try again later'), a !== 'reject', d.reason);
    }
    const ms = harnessWith(
      '  - {name: d, on: [mail], key: ip, count: events, limit: 1, window: 1m, then: {action: delay, delay: 1500ms}}',
    );
    ms.run({ kind: 'mail' });
    assert.equal(ms.run({ kind: 'mail' }).decision.delaySeconds, 2);
  });

  void test('the strongest action wins whatever the rule order: reject > tempfail > hold > delay', () => {
    for (let i = 0; i < ORDER.length; i++) {
      for (let j = 0; j < ORDER.length; j++) {
        if (i === j) continue;
        const a = ORDER[i] as Action;
        const b = ORDER[j] as Action;
        const h = harnessWith(ruleFor(a), ruleFor(b));
        h.run({ kind: 'mail' });
        const d = h.run({ kind: 'mail' }).decision;
        const strongest = ORDER[Math.max(i, j)] as Action;
        assert.equal(d.action, strongest, `${a} + ${b}`);
        assert.equal(d.rule, `r-${strongest}`);
        assert.equal(d.delaySeconds, strongest === 'delay' ? 5 : 0);
        assert.deepEqual(
          d.hits.map((x) => x.rule),
          [`r-${a}`, `r-${b}`],
        );
      }
    }
    const all = harnessWith(...ORDER.map(ruleFor));
    all.run({ kind: 'mail' });
    const d = all.run({ kind: 'mail' }).decision;
    assert.deepEqual([d.action, d.hits.length], ['reject', 4]);
  });

  void test('equal actions: the first rule in the policy names the decision', () => {
    const h = harnessWith(
      '  - {name: first, on: [mail], key: ip, count: events, limit: 1, window: 1m, then: tempfail}',
      '  - {name: second, on: [mail], key: network, count: events, limit: 1, window: 1m, then: tempfail}',
    );
    h.run({ kind: 'mail' });
    assert.equal(h.run({ kind: 'mail' }).decision.rule, 'first');
  });
});

void describe('observe mode', () => {
  const policy = rulesPolicy(
    [
      '  - {name: watch, mode: observe, on: [connect], key: ip, count: events, limit: 2, window: 1m, then: {action: reject, ban: ip}}',
      '  - {name: guard, on: [connect], key: ip, count: events, limit: 5, window: 1m, then: tempfail}',
    ].join('\n'),
  );

  void test('a firing observe rule is reported with observe=true and changes nothing', async () => {
    const h = new Harness(policy);
    await h.handle();
    await h.handle();
    const out = await h.handle();
    assert.equal(out.decision.action, 'allow');
    assert.equal(out.decision.rule, '');
    assert.deepEqual(
      out.decision.hits.map((x) => [x.rule, x.observe, x.action, x.count, x.limit]),
      [['watch', true, 'reject', 3, 2]],
    );
    assert.deepEqual(out.decision.effects, [], 'no ban from an observe rule');
    assert.deepEqual(out.committed, { bans: [], suspensions: [] });
    const rows = await h.store.auditFor(['192.0.2.10'], 10);
    assert.deepEqual(
      rows.map((r) => [r.kind, r.rule, r.subject, r.actor]),
      [['observe', 'watch', '192.0.2.10', 'mailwarden']],
    );
    assert.equal(rows[0]?.evidence.count, 3);
    assert.equal(rows[0]?.evidence.action, 'reject');
  });

  void test('audit of hits is throttled to one row per rule and subject per minute; enforcing hits are "limit" rows', async () => {
    const h = new Harness(policy);
    for (let i = 0; i < 8; i++) await h.handle();
    const rows = await h.store.auditFor(['192.0.2.10'], 50);
    assert.deepEqual(
      rows.map((r) => [r.kind, r.rule]),
      [
        ['limit', 'guard'],
        ['observe', 'watch'],
      ],
    );
    const d = (await h.handle()).decision;
    assert.deepEqual([d.action, d.rule, d.hits.length], ['tempfail', 'guard', 2]);
    assert.deepEqual(d.effects, [], 'the observe rule’s ban is not an effect even when another rule enforces');
    h.advance(MINUTE);
    for (let i = 0; i < 8; i++) await h.handle();
    assert.equal((await h.store.auditFor(['192.0.2.10'], 50)).length, 4);
  });
});

void describe('window edges (GCRA through the store)', () => {
  const policy = loadSettings(undefined).policy; // smtp-connections-per-ip: 60 per minute

  void test('60 connections at 0:59 and a flood at 1:01: only ~2 more pass, never another 60', () => {
    const h = new Harness(policy);
    h.advance(59 * SECOND);
    assert.equal(allowed(h.runMany(60)), 60);
    assert.equal(h.run().decision.rule, 'smtp-connections-per-ip');
    h.advance(2 * SECOND);
    const more = allowed(h.runMany(60));
    assert.ok(more >= 1 && more <= 3, `${more} passed after the window edge`);
    // Sliding, not fixed: in the minute from 0:59 to 1:58 still only ~60 + 59 at the rate.
    let total = 60 + more;
    for (let s = 3; s <= 59; s++) {
      h.advance(SECOND);
      total += allowed(h.runMany(10));
    }
    assert.ok(total <= 60 + 60, `${total} passed within one minute`);
  });

  void test('a steady rate at the limit is never refused, and an idle minute restores the full burst', () => {
    const h = new Harness(policy);
    for (let i = 0; i < 600; i++) {
      assert.equal(h.run().decision.action, 'allow', `connection ${i}`);
      h.advance(SECOND);
    }
    assert.equal(allowed(h.runMany(100)), 60);
    h.advance(30 * SECOND);
    assert.equal(allowed(h.runMany(100)), 30);
    h.advance(MINUTE);
    assert.equal(allowed(h.runMany(100)), 60);
  });
});

void describe('gating: a refused event charges no enforcing counter', () => {
  void test('a message refused for recipients is not counted as a sent message', async () => {
    const h = harnessWith(
      '  - {name: msgs, on: [message], key: user, count: messages, limit: 100, window: 1h}',
      '  - {name: rcpts, on: [message], key: user, count: recipients, limit: 5, window: 1h}',
      '  - {name: seen, mode: observe, on: [message], key: user, count: messages, limit: 100, window: 1h}',
    );
    const msg = (n: number): Partial<MailEvent> => ({
      kind: 'message',
      user: 'u@example.org',
      recipients: n,
      size: 10,
    });
    assert.equal(h.run(msg(3)).decision.action, 'allow');
    const refused = h.run(msg(3)).decision;
    assert.deepEqual([refused.action, refused.rule], ['tempfail', 'rcpts']);
    assert.deepEqual(await h.peek(msg(1)), {
      'msgs|u@example.org': 1,
      'rcpts|u@example.org': 3,
      'seen|u@example.org': 2,
    });
    assert.equal(h.run(msg(2)).decision.action, 'allow');
    assert.deepEqual(await h.peek(msg(1)), {
      'msgs|u@example.org': 2,
      'rcpts|u@example.org': 5,
      'seen|u@example.org': 3,
    });
  });

  void test('a refusal by a network rule does not use up the address quota', async () => {
    const h = harnessWith(
      '  - {name: per-ip, on: [connect], key: ip, count: events, limit: 100, window: 1m}',
      '  - {name: per-net, on: [connect], key: network, count: events, limit: 2, window: 1m}',
    );
    h.run({ ip: '192.0.2.1' });
    h.run({ ip: '192.0.2.2' });
    for (let i = 0; i < 5; i++) assert.equal(h.run({ ip: '192.0.2.3' }).decision.rule, 'per-net');
    assert.deepEqual(await h.peek({ ip: '192.0.2.3' }), { 'per-ip|192.0.2.3': 0, 'per-net|192.0.2.0/24': 2 });
  });

  void test('a banned source charges nothing, and has its full quota when the ban ends', async () => {
    const h = harnessWith(CONN(3));
    await h.store.commit([manualBan(h.policy, '192.0.2.10', 10 * MINUTE)], h.now, 'cli');
    const ds = h.runMany(20);
    assert.ok(ds.every((d) => d.action === 'reject' && d.rule === 'ban'));
    assert.deepEqual(await h.peek(), { 'conn|192.0.2.10': 0 });
    h.advance(10 * MINUTE);
    assert.equal(allowed(h.runMany(4)), 3);
  });

  void test('a suspended user’s messages charge nothing', async () => {
    const h = harnessWith('  - {name: msgs, on: [message], key: user, count: messages, limit: 3, window: 1h}');
    const suspend = manualSuspension('u@example.org', HOUR, 'test');
    await h.store.commit([suspend], h.now, 'cli');
    const msg = { kind: 'message' as const, user: 'u@example.org', recipients: 1 };
    assert.ok(h.runMany(5, msg).every((d) => d.rule === 'suspension'));
    assert.deepEqual(await h.peek(msg), { 'msgs|u@example.org': 0 });
  });
});

void describe('bans', () => {
  const banPolicy = (
    scope: 'ip' | 'network',
    extra = 'bans: {duration: 1h, factor: 4, max: 10h, lookback: 1d}',
  ): Policy => rulesPolicy(CONN(3, `{action: reject, ban: ${scope}}`), extra);

  void test('then.ban makes a BanEffect; the committed ban blocks the address on every protocol', async () => {
    const h = new Harness(banPolicy('ip'));
    assert.equal(allowed(h.runMany(3)), 3);
    const out = await h.handle();
    assert.deepEqual([out.decision.action, out.decision.rule], ['reject', 'conn']);
    const effect = out.decision.effects[0] as BanEffect;
    assert.equal(out.decision.effects.length, 1);
    assert.equal(effect.type, 'ban');
    assert.equal(effect.subject, '192.0.2.10');
    assert.equal(effect.rule, 'conn');
    assert.equal(effect.aggregate, undefined);
    assert.deepEqual(effect.escalation, h.policy.escalation);
    assert.equal(effect.evidence.count, 4);
    assert.deepEqual(out.committed.bans, [
      {
        subject: '192.0.2.10',
        since: T0,
        until: T0 + HOUR,
        rule: 'conn',
        reason: effect.reason,
        offence: 1,
        actor: 'mailwarden',
      },
    ]);
    h.advance(MINUTE);
    for (const e of [
      {},
      { kind: 'auth-attempt' as const, protocol: 'imap' },
      { kind: 'auth-result' as const, protocol: 'pop3', success: true },
    ]) {
      const d = h.run(e).decision;
      assert.deepEqual([d.action, d.rule], ['reject', 'ban']);
      assert.match(d.reason, /192\.0\.2\.10 is blocked until 2025-01-01T01:00:00\.000Z \(rule conn\)/);
    }
    assert.equal(h.run({ ip: '192.0.2.11' }).decision.action, 'allow', 'the neighbour is not banned');
    assert.deepEqual(
      (await h.store.listBans(h.now)).map((b) => b.subject),
      ['192.0.2.10'],
    );
    assert.equal(h.store.stats(h.now).activeBans, 1);
    const audit = await h.store.auditFor(['192.0.2.10'], 10);
    const banRow = audit.find((r) => r.kind === 'ban');
    assert.ok(banRow);
    assert.equal(banRow.evidence.offence, 1);
    assert.equal(banRow.evidence.until, T0 + HOUR);
    // It ends by itself.
    h.now = T0 + HOUR;
    assert.equal(h.run().decision.action, 'allow');
    assert.equal(h.store.stats(h.now).activeBans, 0);
  });

  void test('ban: network blocks the whole /24 and nothing outside it', async () => {
    const h = new Harness(banPolicy('network'));
    const { bans } = await offend(h);
    assert.equal(bans[0]?.subject, '192.0.2.0/24');
    assert.equal(h.run({ ip: '192.0.2.200' }).decision.rule, 'ban');
    assert.equal(h.run({ ip: '192.0.3.1' }).decision.action, 'allow');
  });

  void test('administrators’ bans on wider networks hold, and the longest covering ban is reported', async () => {
    const h = new Harness(banPolicy('ip'));
    await h.store.commit(
      [manualBan(h.policy, '192.0.0.0/16', HOUR), manualBan(h.policy, '192.0.2.10', 5 * HOUR)],
      h.now,
      'cli',
    );
    const r = h.run().result;
    assert.equal(r.ban?.subject, '192.0.2.10');
    assert.equal(r.ban?.until, T0 + 5 * HOUR);
    assert.equal(h.run({ ip: '192.0.99.1' }).result.ban?.subject, '192.0.0.0/16');
    assert.equal(h.run({ ip: '192.1.0.1' }).decision.action, 'allow');
  });

  void test('escalation: base, then base×factor, capped at max; forgotten after the look-back', async () => {
    const h = new Harness(banPolicy('ip'));
    const first = await offend(h);
    assert.deepEqual([first.bans[0]?.offence, (first.bans[0]?.until ?? 0) - h.now], [1, HOUR]);
    h.advance(HOUR);
    const second = await offend(h);
    assert.deepEqual([second.bans[0]?.offence, (second.bans[0]?.until ?? 0) - h.now], [2, 4 * HOUR]);
    h.advance(4 * HOUR);
    const third = await offend(h);
    assert.deepEqual(
      [third.bans[0]?.offence, (third.bans[0]?.until ?? 0) - h.now],
      [3, 10 * HOUR],
      '16h capped at 10h',
    );
    const lastOffence = h.now;
    h.now = lastOffence + DAY + 1;
    const fresh = await offend(h);
    assert.deepEqual([fresh.bans[0]?.offence, (fresh.bans[0]?.until ?? 0) - h.now], [1, HOUR]);
  });

  void test('one offence per active ban, however many requests fired the rule before it landed', async () => {
    const h = new Harness(banPolicy('ip'));
    // Six requests in flight before any commit: three over the limit, each carrying the same ban.
    const outs = Array.from({ length: 6 }, () => h.run());
    const effects = outs.flatMap((o) => o.decision.effects);
    assert.equal(effects.length, 3);
    const committed = [];
    for (const e of effects) committed.push(await h.store.commit([e], h.now, 'mailwarden'));
    assert.deepEqual(
      committed.map((c) => c.bans.length),
      [1, 0, 0],
    );
    h.advance(10 * MINUTE);
    assert.deepEqual((await h.store.commit([effects[0] as BanEffect], h.now, 'mailwarden')).bans, []);
    assert.equal(h.store.db.offencesSince('192.0.2.10', 0), 1);
    const banRows = (await h.store.auditFor(['192.0.2.10'], 50)).filter((r) => r.kind === 'ban');
    assert.equal(banRows.length, 1);
    assert.equal((await h.store.listBans(h.now))[0]?.until, T0 + HOUR, 'the ban was not extended');
    // The next ban after it ends is the second offence, not the fourth.
    h.now = T0 + HOUR;
    assert.equal((await offend(h)).bans[0]?.offence, 2);
  });

  void test('a manual ban always takes effect, with its own length', async () => {
    const h = new Harness(banPolicy('ip'));
    await offend(h);
    const manual = await h.store.commit([manualBan(h.policy, '192.0.2.10', 2 * DAY)], h.now, 'cli');
    assert.equal(manual.bans[0]?.until, h.now + 2 * DAY);
    assert.equal(manual.bans[0]?.actor, 'cli');
  });

  void test('unban lifts a ban at once and is audited; unknown subjects return undefined', async () => {
    const h = new Harness(banPolicy('ip'));
    await offend(h);
    h.advance(MINUTE);
    const lifted = await h.store.unban('192.0.2.10', 'cli', h.now, 'false positive');
    assert.equal(lifted?.subject, '192.0.2.10');
    assert.equal(h.run().decision.action, 'allow');
    assert.deepEqual(await h.store.listBans(h.now), []);
    const rows = await h.store.auditFor(['192.0.2.10'], 10);
    assert.deepEqual([rows[0]?.kind, rows[0]?.actor, rows[0]?.reason], ['unban', 'cli', 'false positive']);
    assert.equal(await h.store.unban('192.0.2.10', 'cli', h.now, 'again'), undefined);
    assert.equal(await h.store.unban('203.0.113.1', 'cli', h.now, 'never banned'), undefined);
  });

  void describe('IPv6 aggregation', () => {
    const v6Policy = (extra = ''): Policy =>
      rulesPolicy(
        '  - {name: v6, on: [connect], key: network, count: events, limit: 2, window: 1m, then: {action: reject, ban: network}}',
        extra,
      );

    void test('bans on 3 distinct /64s inside one /48 ban the /48, which blocks a fresh /64', async () => {
      const h = new Harness(v6Policy());
      const a = await offend(h, { ip: '2001:db8:1:a::1' });
      assert.deepEqual(
        a.bans.map((b) => b.subject),
        ['2001:db8:1:a::/64'],
      );
      const first = h.run({ ip: '2001:db8:1:a::2' }).decision;
      assert.equal(first.rule, 'ban');
      const b = await offend(h, { ip: '2001:db8:1:b::1' });
      assert.deepEqual(
        b.bans.map((x) => x.subject),
        ['2001:db8:1:b::/64'],
      );
      assert.equal(h.run({ ip: '2001:db8:1:d::7' }).decision.action, 'allow', 'two networks are not enough');
      // Check the effect's aggregate description on the third.
      let effect: BanEffect | undefined;
      for (let i = 0; i < 5 && !effect; i++)
        effect = h.run({ ip: '2001:db8:1:c::1' }).decision.effects[0] as BanEffect | undefined;
      assert.ok(effect);
      assert.deepEqual(effect.aggregate, { prefix: '2001:db8:1::/48', member: '2001:db8:1:c::/64', threshold: 3 });
      const c = await h.store.commit([effect], h.now, 'mailwarden');
      assert.deepEqual(
        c.bans.map((x) => x.subject),
        ['2001:db8:1:c::/64', '2001:db8:1::/48'],
      );
      assert.match(c.bans[1]?.reason ?? '', /3 banned networks inside 2001:db8:1::\/48 \(threshold 3\)/);
      const fresh = h.run({ ip: '2001:db8:1:d::7' });
      assert.deepEqual(
        [fresh.decision.action, fresh.decision.rule, fresh.result.ban?.subject],
        ['reject', 'ban', '2001:db8:1::/48'],
      );
      assert.equal(h.run({ ip: '2001:db8:2::1' }).decision.action, 'allow', 'another /48 is untouched');
    });

    void test('addresses inside one /64 count once; expired and lifted member bans do not count', async () => {
      const h = harnessWith(
        '  - {name: v6ip, on: [connect], key: ip, count: events, limit: 1, window: 1m, then: {action: reject, ban: ip}}',
      );
      for (const ip of ['2001:db8:5:1::1', '2001:db8:5:1::2', '2001:db8:5:1::3', '2001:db8:5:1::4']) {
        const got = await offend(h, { ip });
        assert.deepEqual(
          got.bans.map((x) => x.subject),
          [ip],
        );
      }
      const g = new Harness(v6Policy());
      await offend(g, { ip: '2001:db8:7:1::1' });
      g.advance(HOUR); // the first ban has ended
      await offend(g, { ip: '2001:db8:7:2::1' });
      const third = await offend(g, { ip: '2001:db8:7:3::1' });
      assert.deepEqual(
        third.bans.map((x) => x.subject),
        ['2001:db8:7:3::/64'],
      );
      await g.store.unban('2001:db8:7:2::/64', 'cli', g.now, 'mistake');
      const fourth = await offend(g, { ip: '2001:db8:7:4::1' });
      assert.deepEqual(
        fourth.bans.map((x) => x.subject),
        ['2001:db8:7:4::/64'],
        'a lifted ban no longer counts towards the /48',
      );
      const fifth = await offend(g, { ip: '2001:db8:7:5::1' });
      assert.deepEqual(
        fifth.bans.map((x) => x.subject),
        ['2001:db8:7:5::/64', '2001:db8:7::/48'],
      );
    });

    void test('threshold and prefix come from the config; aggregation can be switched off', async () => {
      const two = new Harness(v6Policy('bans: {ipv6_aggregate: {threshold: 2, prefix: 56}}'));
      await offend(two, { ip: '2001:db8:9:101::1' });
      const got = await offend(two, { ip: '2001:db8:9:1ff::1' });
      assert.deepEqual(
        got.bans.map((x) => x.subject),
        ['2001:db8:9:1ff::/64', '2001:db8:9:100::/56'],
      );
      const off = new Harness(v6Policy('bans: {ipv6_aggregate: {enabled: false}}'));
      for (const n of ['a', 'b', 'c', 'd']) {
        const r = await offend(off, { ip: `2001:db8:1:${n}::1` });
        assert.equal(r.bans.length, 1);
        assert.equal(off.run({ ip: `2001:db8:1:${n}::1` }).decision.effects.length, 0);
      }
      assert.equal(off.run({ ip: '2001:db8:1:e::1' }).decision.action, 'allow');
    });

    void test('IPv4 bans never aggregate', async () => {
      const h = new Harness(banPolicy('network'));
      for (const ip of ['192.0.2.1', '192.0.3.1', '192.0.4.1', '192.0.5.1']) {
        const r = await offend(h, { ip });
        assert.equal(r.bans.length, 1);
      }
      assert.equal(h.run({ ip: '192.0.6.1' }).decision.action, 'allow');
    });
  });
});

void describe('suspensions', () => {
  const policy = rulesPolicy(
    '  - {name: umsg, on: [message], when: {authenticated: true}, key: user, count: messages, limit: 2, window: 1h, then: {action: reject, suspend: 1h}}',
  );
  const msg = { kind: 'message' as const, user: 'u@example.org', recipients: 1, size: 100 };

  void test('then.suspend suspends the user; sending is refused with rule "suspension", logging in and connecting are not', async () => {
    const h = new Harness(policy);
    await h.handle(msg);
    await h.handle(msg);
    const out = await h.handle(msg);
    assert.deepEqual([out.decision.action, out.decision.rule], ['reject', 'umsg']);
    const effect = out.decision.effects[0] as SuspendEffect;
    assert.deepEqual(
      [effect.type, effect.user, effect.durationMs, effect.rule],
      ['suspend', 'u@example.org', HOUR, 'umsg'],
    );
    assert.deepEqual(out.committed.suspensions, [
      { user: 'u@example.org', since: T0, until: T0 + HOUR, rule: 'umsg', reason: effect.reason, actor: 'mailwarden' },
    ]);
    h.advance(MINUTE);
    for (const kind of ['mail', 'recipient', 'data', 'message'] as const) {
      const d = h.run({ ...msg, kind, ip: '203.0.113.50' }).decision;
      assert.deepEqual([d.action, d.rule], ['reject', 'suspension'], kind);
      assert.match(d.reason, /Account u@example\.org is suspended from sending \(rule umsg\)/);
    }
    for (const kind of ['connect', 'helo', 'auth-attempt', 'auth-result'] as const) {
      assert.equal(h.run({ kind, user: 'u@example.org', success: true }).decision.action, 'allow', kind);
    }
    assert.equal(h.run({ ...msg, user: 'other@example.org' }).decision.action, 'allow');
    assert.deepEqual(
      (await h.store.listSuspensions(h.now)).map((s) => s.user),
      ['u@example.org'],
    );
    assert.equal(h.store.stats(h.now).activeSuspensions, 1);
    assert.equal(
      (await h.store.auditFor(['u@example.org'], 10)).some((r) => r.kind === 'suspend'),
      true,
    );
    h.now = T0 + HOUR;
    assert.equal(h.run(msg).decision.action, 'allow', 'the suspension ends by itself');
  });

  void test('resume lifts a suspension and is audited', async () => {
    const h = new Harness(policy);
    await offend(h, msg);
    h.advance(MINUTE);
    const s = await h.store.resume('u@example.org', 'api:alice', h.now, 'verified the owner');
    assert.equal(s?.user, 'u@example.org');
    assert.equal(h.run({ ...msg, kind: 'mail' }).decision.action, 'allow');
    const rows = await h.store.auditFor(['u@example.org'], 10);
    assert.deepEqual([rows[0]?.kind, rows[0]?.actor, rows[0]?.reason], ['resume', 'api:alice', 'verified the owner']);
    assert.equal(await h.store.resume('u@example.org', 'cli', h.now, 'again'), undefined);
    assert.equal(await h.store.resume('nobody@example.org', 'cli', h.now, 'unknown'), undefined);
  });

  void test('suspending again extends the end but keeps the start', async () => {
    const h = new Harness(policy);
    const eff = manualSuspension('u@example.org', HOUR);
    await h.store.commit([eff], h.now, 'cli');
    h.advance(30 * MINUTE);
    const again = await h.store.commit([{ ...eff, durationMs: 2 * HOUR }], h.now, 'cli');
    assert.deepEqual([again.suspensions[0]?.since, again.suspensions[0]?.until], [T0, T0 + 30 * MINUTE + 2 * HOUR]);
    const shorter = await h.store.commit([{ ...eff, durationMs: MINUTE }], h.now, 'cli');
    assert.equal(shorter.suspensions[0]?.until, T0 + 30 * MINUTE + 2 * HOUR, 'never shortened');
  });

  void test('a ban outranks a suspension', async () => {
    const h = new Harness(policy);
    const eff = manualSuspension('u@example.org', HOUR);
    await h.store.commit([eff, manualBan(policy, '192.0.2.10', HOUR)], h.now, 'cli');
    assert.equal(h.run(msg).decision.rule, 'ban');
  });
});

void describe('allowlists', () => {
  const policy = rulesPolicy(
    [
      CONN(3, '{action: reject, ban: network}'),
      '  - {name: umsg, on: [message], key: user, count: messages, limit: 2, window: 1h, then: {action: reject, suspend: 1h}}',
    ].join('\n'),
    "allowlist: {networks: ['198.51.100.0/24'], users: [Boss@Example.org]}",
  );

  void test('an allowlisted network is never limited nor banned, but is counted and its hits are observed', async () => {
    const h = new Harness(policy);
    const ip = '198.51.100.5';
    const outs = [];
    for (let i = 0; i < 10; i++) outs.push(await h.handle({ ip }));
    assert.ok(outs.every((o) => o.decision.action === 'allow'));
    assert.ok(outs.every((o) => o.decision.effects.length === 0));
    assert.deepEqual(
      outs[3]?.decision.hits.map((x) => [x.rule, x.observe, x.count]),
      [['conn', true, 4]],
    );
    assert.deepEqual(await h.peek({ ip }), { 'conn|198.51.100.5': 3 });
    assert.deepEqual(await h.store.listBans(h.now), []);
    assert.deepEqual(
      (await h.store.auditFor([ip], 10)).map((r) => r.kind),
      ['observe'],
    );
    // A ban an administrator puts on the network does not apply to it either.
    await h.store.commit([manualBan(policy, '198.51.100.0/24', HOUR)], h.now, 'cli');
    assert.equal(h.run({ ip }).decision.action, 'allow');
  });

  void test('an allowlisted user (matched case-folded) is never limited or auto-suspended, but bans and manual suspensions hold', async () => {
    const h = new Harness(policy);
    const boss = { kind: 'message' as const, user: 'boss@example.org', recipients: 1, ip: '203.0.113.9' };
    const outs = [];
    for (let i = 0; i < 6; i++) outs.push(await h.handle(boss));
    assert.ok(outs.every((o) => o.decision.action === 'allow'));
    assert.equal(outs[2]?.decision.hits[0]?.observe, true);
    assert.deepEqual(await h.store.listSuspensions(h.now), []);
    assert.deepEqual(await h.peek(boss), { 'umsg|boss@example.org': 2 });
    const eff = manualSuspension('boss@example.org', HOUR);
    await h.store.commit([eff], h.now, 'cli');
    assert.equal(h.run(boss).decision.rule, 'suspension');
    await h.store.resume('boss@example.org', 'cli', h.now, 'ok');
    assert.equal(h.run(boss).decision.action, 'allow');
    // A stolen allowlisted password does not unlock a banned address.
    await h.store.commit([manualBan(policy, '203.0.113.9', HOUR)], h.now, 'cli');
    assert.equal(h.run(boss).decision.rule, 'ban');
    assert.equal(h.run({ ...boss, user: 'someone@example.org' }).decision.rule, 'ban');
  });
});
