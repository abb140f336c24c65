/*
 * explain against a real MemoryStore (SQLite ':memory:') and policies compiled
 * from YAML: each rule is read the way plan() counts it (baseline rules
 * through their two exponentially weighted rates, detectors through the
 * counter they read), and only rules that can act are reported as such.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadSettings } from '../src/config/load.js';
import type { MailEvent } from '../src/engine/types.js';
import { explain, type CounterView } from '../src/explain.js';
import { HOUR, Harness, rulesPolicy } from './helpers/policy.js';

const sent = (user: string, recipients: number): Partial<MailEvent> => ({
  kind: 'message',
  user,
  ip: '192.0.2.200',
  recipients,
  size: 2000,
});

function counter(counters: CounterView[], rule: string): CounterView {
  const c = counters.find((x) => x.rule === rule);
  assert.ok(c, `no counter for ${rule}`);
  return c;
}

describe('explain: baseline rules (compromise-burst)', () => {
  test('right after it fired: the recent count, and the limit decide() used', async () => {
    const h = new Harness(loadSettings(undefined).policy);
    const d = h.run(sent('alice@example.org', 60)).decision;
    assert.deepEqual(
      d.hits.map((x) => [x.rule, x.count, x.limit]),
      [['compromise-burst', 60, 50]],
    );

    const e = await explain('alice@example.org', h.policy, h.store, h.now);
    const c = counter(e.counters, 'compromise-burst');
    // 60 just now; usual: 60 spread over the 7-day half-life, per hour (60 × ln 2 / 168 ≈ 0.25).
    assert.deepEqual([c.count, c.limit, c.usual, c.window], [60, 50, 0.2, '1h']);
    assert.ok(
      e.summary.includes(
        'AT LIMIT: compromise-burst counts 60/50 per 1h for alice@example.org (10× its usual 0.2, at least 50): would hold, suspend 1d, notify',
      ),
      e.summary.join('\n'),
    );
  });

  test("a busy user's limit is 10× their own usual rate, as decide() computes it", async () => {
    const h = new Harness(loadSettings(undefined).policy);
    // 10 recipients an hour for three weeks: the usual rate climbs towards 10 an hour.
    for (let i = 0; i < 21 * 24; i++) {
      assert.equal(h.run(sent('bob@example.org', 10)).decision.action, 'allow');
      h.advance(HOUR);
    }
    const c = counter((await explain('bob@example.org', h.policy, h.store, h.now)).counters, 'compromise-burst');
    assert.ok(c.limit > 80 && c.limit < 100, `limit ${c.limit}`);
    assert.ok((c.usual ?? 0) > 8, `usual ${c.usual}`);
    // The recent rate (time constant: the window) an hour after the last of a steady 10 an hour: 10·e⁻¹/(1−e⁻¹).
    assert.equal(c.count, 5.8);
    const d = h.run(sent('bob@example.org', c.limit)).decision;
    assert.deepEqual(
      d.hits.map((x) => [x.rule, x.limit]),
      [['compromise-burst', c.limit]],
    );
  });
});

describe('explain: who can act', () => {
  const policy = rulesPolicy(
    [
      '  - {name: counts-only, on: [connect], key: ip, count: events, limit: 3, window: 1h, then: allow}',
      '  - {name: tells, on: [connect], key: ip, count: events, limit: 3, window: 1h, then: {action: allow, notify: true}}',
      '  - {name: refuses, on: [connect], key: ip, count: events, limit: 3, window: 1h, then: tempfail}',
      '  - {name: would-ban, mode: observe, on: [connect], key: ip, count: events, limit: 3, window: 1h, then: {action: reject, ban: ip}}',
      '  - {name: not-yet, on: [connect], key: ip, count: events, limit: 4, window: 1h, then: reject}',
    ].join('\n'),
  );

  test('AT LIMIT only for rules that act; observe rules say what they would do; an allow rule is just counted', async () => {
    const h = new Harness(policy);
    for (const d of h.runMany(3, { ip: '198.51.100.7' })) assert.equal(d.action, 'allow');
    const e = await explain('198.51.100.7', h.policy, h.store, h.now);
    assert.deepEqual(
      e.counters.map((c) => [c.rule, c.count, c.limit, c.acts]),
      [
        ['counts-only', 3, 3, ''],
        ['tells', 3, 3, 'notify'],
        ['refuses', 3, 3, 'tempfail'],
        ['would-ban', 3, 3, 'reject, ban ip'],
        ['not-yet', 3, 4, 'reject'],
      ],
    );
    assert.deepEqual(e.summary, [
      'AT LIMIT: tells counts 3/3 per 1h for 198.51.100.7: would notify',
      'AT LIMIT: refuses counts 3/3 per 1h for 198.51.100.7: would tempfail',
      'would-ban counts 3/3 per 1h for 198.51.100.7 (observe only: would reject, ban ip)',
    ]);
  });

  test('an allow rule alone at its limit leaves the subject "not at any limit that acts"', async () => {
    const h = new Harness(
      rulesPolicy('  - {name: counts-only, on: [connect], key: ip, count: events, limit: 2, window: 1h, then: allow}'),
    );
    h.runMany(2, { ip: '198.51.100.8' });
    const e = await explain('198.51.100.8', h.policy, h.store, h.now);
    assert.equal(counter(e.counters, 'counts-only').count, 2);
    assert.deepEqual(e.summary, ['198.51.100.8 is not banned, suspended or at any limit that acts.']);
  });
});

describe('explain: detector rules', () => {
  const policy = rulesPolicy(
    [
      '  - {name: guesses, on: [auth-result], when: {success: false}, key: user, count: "distinct:pwhash", limit: 10, window: 1h, then: {action: delay, delay: 1s}}',
      '  - {name: cracked, on: [auth-result], when: {success: true}, key: user, uses: guesses, limit: 3, then: {action: reject, suspend: 1d, notify: true}}',
    ].join('\n'),
  );

  test('a detector shows the counter it reads, and fires on the next success', async () => {
    const h = new Harness(policy);
    for (const pw of ['a1', 'b2', 'c3'])
      h.run({
        kind: 'auth-result',
        protocol: 'imap',
        ip: '203.0.113.9',
        user: 'carol@example.org',
        pwhash: pw,
        success: false,
      });
    const e = await explain('carol@example.org', h.policy, h.store, h.now);
    const c = counter(e.counters, 'cracked');
    assert.deepEqual(
      [c.count, c.limit, c.window, c.reads, c.acts],
      [3, 3, '1h', 'guesses', 'reject, suspend 1d, notify'],
    );
    assert.equal(counter(e.counters, 'guesses').count, 3);
    assert.deepEqual(e.summary, [
      'AT LIMIT: cracked counts 3/3 per 1h for carol@example.org (the counter of guesses): would reject, suspend 1d, notify',
    ]);
    const d = h.run({
      kind: 'auth-result',
      protocol: 'imap',
      ip: '203.0.113.9',
      user: 'carol@example.org',
      pwhash: 'ok',
      success: true,
    }).decision;
    assert.equal(d.rule, 'cracked');
  });
});
