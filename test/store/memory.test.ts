/*
 * MemoryStore: bounded counters (LRU eviction), distinct sets, and durability
 * on a real SQLite file (bans, suspensions, offences and audit written at once;
 * counters by snapshot). A "crash" is simulated by dropping a store without
 * close() and opening a new one on the same file.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { loadSettings } from '../../src/config/load.js';
import { plan } from '../../src/engine/plan.js';
import type { BanEffect, SuspendEffect } from '../../src/engine/types.js';
import { DISTINCT_CAP } from '../../src/store/counting.js';
import { MemoryStore } from '../../src/store/memory.js';
import { allowed, DAY, Harness, HOUR, makeEvent, MINUTE, rulesPolicy, T0 } from '../helpers/policy.js';
import { prng } from '../helpers/prng.js';

const dirs: string[] = [];
function tempFile(name = 'mailwarden.sqlite'): string {
  const dir = mkdtempSync(join(tmpdir(), 'mw-store-'));
  dirs.push(dir);
  return join(dir, name);
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** The nth address of a large pool: 10.x.y.z. */
const nthIp = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

/** An administrator's (rule manual) one-hour suspension. */
function manualSuspension(user: string, reason: string, evidence: SuspendEffect['evidence'] = {}): SuspendEffect {
  return { type: 'suspend', user, rule: 'manual', reason, durationMs: HOUR, evidence };
}

const defaults = loadSettings(undefined).policy; // smtp-connections-per-ip: 60 per minute

void describe('eviction (bounded memory)', () => {
  // A distinct set per address (recipient events) and a rate counter per address (connects), in one store.
  const setsAndRates = rulesPolicy(
    [
      "  - {name: dom, on: [recipient], key: ip, count: 'distinct:recipient_domain', limit: 100, window: 1h}",
      '  - {name: conn, on: [connect], key: ip, count: events, limit: 2, window: 1h}',
    ].join('\n'),
  );

  void test('5000 distinct addresses into 1000 keys: the bound holds, evictions are counted, the newest keys survive', async () => {
    const h = new Harness(defaults, { maxKeys: 1000 });
    for (let i = 0; i < 5000; i++) {
      assert.equal(h.run({ ip: nthIp(i) }).decision.action, 'allow');
      assert.ok(h.store.stats(h.now).counterKeys <= 1000);
    }
    const stats = h.store.stats(h.now);
    assert.ok(stats.counterKeys >= 500, 'at least the newest half is kept');
    assert.equal(stats.evictions, 5000 - stats.counterKeys);
    assert.equal(stats.backend, 'memory');
    for (const i of [4500, 4750, 4999])
      assert.deepEqual(Object.values(await h.peek({ ip: nthIp(i) })), [1], `key ${i} kept`);
    for (const i of [0, 1, 2500, 3999])
      assert.deepEqual(Object.values(await h.peek({ ip: nthIp(i) })), [0], `key ${i} evicted`);
  });

  void test('eviction keeps the most recently used keys, against a model, through reuses and a clear', async () => {
    const policy = rulesPolicy('  - {name: c, on: [connect], key: ip, count: events, limit: 1000000, window: 1h}');
    const h = new Harness(policy, { maxKeys: 100 });
    const rnd = prng(11);
    // The model (store/counter-table.ts): keys used in this generation and in the one before.
    let young = new Set<string>();
    let old = new Set<string>();
    let recent: string[] = []; // the 50 most recently used, which must never be evicted
    for (let i = 0; i < 3000; i++) {
      if (i === 1500) {
        h.store.clearCounters();
        young = new Set();
        old = new Set();
        recent = [];
      }
      const known = [...young, ...old];
      const ip = known.length > 0 && rnd() < 0.4 ? (known[Math.floor(rnd() * known.length)] as string) : nthIp(i);
      h.run({ ip });
      if (!young.has(ip)) {
        young.add(ip);
        old.delete(ip);
        if (young.size >= 50) [old, young] = [young, new Set()];
      }
      recent = [...recent.filter((x) => x !== ip), ip].slice(-50);
      assert.ok(young.size + old.size <= 100);
      assert.equal(h.store.stats(h.now).counterKeys, young.size + old.size);
      for (const r of recent) assert.ok(young.has(r) || old.has(r), `${r} is among the 50 most recently used`);
    }
    for (let i = 1400; i < 3000; i++) {
      const ip = nthIp(i);
      const n = Object.values(await h.peek({ ip }))[0] ?? 0;
      const kept = young.has(ip) || old.has(ip);
      assert.equal(n > 0, kept, `${ip}: counted ${n}, in the model ${kept}`);
    }
  });

  void test('a key used again moves to the back and outlives colder ones', async () => {
    const h = new Harness(defaults, { maxKeys: 1000 });
    const hot = '192.0.2.1';
    for (let i = 0; i < 3000; i++) {
      h.run({ ip: nthIp(i) });
      if (i % 100 === 0) h.run({ ip: hot });
    }
    assert.deepEqual(await h.peek({ ip: hot }), { 'smtp-connections-per-ip|192.0.2.1': 30 });
  });

  void test('a flooding address that is being refused keeps its counter through a scan of many others', () => {
    const h = new Harness(defaults, { maxKeys: 1000 });
    const flood = '192.0.2.66';
    let passed = 0;
    for (let i = 0; i < 5000; i++) {
      h.run({ ip: nthIp(i) });
      passed += allowed([h.run({ ip: flood }).decision]);
    }
    assert.equal(passed, 60, 'eviction must not hand a refused flood a fresh burst');
  });

  void test('an evicted subject starts again from zero (eviction only ever under-counts)', () => {
    const h = new Harness(defaults, { maxKeys: 1000 });
    const victim = '192.0.2.9';
    assert.equal(allowed(h.runMany(61, { ip: victim })), 60);
    h.advance(1000); // one second: room for one more
    for (let i = 0; i < 1000; i++) h.run({ ip: nthIp(i) });
    assert.equal(allowed(h.runMany(61, { ip: victim })), 60);
  });

  void test('distinct sets and rate counters share one bound and one LRU order', async () => {
    const h = new Harness(setsAndRates, { maxKeys: 1000 });
    for (let i = 0; i < 1500; i++)
      h.run({ kind: 'recipient', recipients: 1, recipient: 'x@example.net', ip: nthIp(i) });
    assert.ok(h.store.stats(h.now).counterKeys <= 1000);
    // With the store full of distinct sets, a rate rule must still count.
    assert.deepEqual(
      h.runMany(3, { ip: '192.0.2.1' }).map((d) => d.action),
      ['allow', 'allow', 'tempfail'],
    );
    assert.ok(h.store.stats(h.now).counterKeys <= 1000);
    assert.deepEqual(await h.peek({ kind: 'recipient', recipients: 1, recipient: 'y@example.net', ip: nthIp(1499) }), {
      'dom|10.0.5.219': 1,
    });
    assert.deepEqual(await h.peek({ kind: 'recipient', recipients: 1, recipient: 'y@example.net', ip: nthIp(500) }), {
      'dom|10.0.1.244': 0,
    });
  });

  void test('a snapshot larger than the bound is loaded within it, newest kept (trimming it used to loop forever)', async () => {
    const file = tempFile();
    const big = new Harness(setsAndRates, { file, maxKeys: 3000 });
    for (let i = 0; i < 2000; i++)
      big.run({ kind: 'recipient', recipients: 1, recipient: 'x@example.net', ip: nthIp(i) });
    assert.equal(await big.store.snapshot(big.now), 2000);
    const small = new Harness(setsAndRates, { file, maxKeys: 1000 });
    assert.ok(small.store.stats(small.now).counterKeys <= 1000);
    const rcpt = (i: number) => ({
      kind: 'recipient' as const,
      recipients: 1,
      recipient: 'y@example.net',
      ip: nthIp(i),
    });
    assert.deepEqual(Object.values(await small.peek(rcpt(1999))), [1], 'the newest key of the snapshot is kept');
    assert.deepEqual(Object.values(await small.peek(rcpt(0))), [0], 'the oldest is not');
    assert.equal(small.run({ ip: '192.0.2.1' }).decision.action, 'allow');
    assert.ok(small.store.stats(small.now).counterKeys <= 1000);
    assert.deepEqual(await small.peek({ ip: '192.0.2.1' }), { 'conn|192.0.2.1': 1 });
    await big.store.close();
    await small.store.close();
  });

  void test('a rule whose count kind changes across a reload starts its counters afresh', async () => {
    const asRate = rulesPolicy('  - {name: r, on: [auth-result], key: ip, count: events, limit: 5, window: 1h}');
    const asSet = rulesPolicy(
      "  - {name: r, on: [auth-result], key: ip, count: 'distinct:pwhash', limit: 5, window: 1h}",
    );
    const store = new MemoryStore({ file: ':memory:', maxKeys: 1000, lookbackMs: DAY, now: () => T0 });
    const ev = makeEvent({ kind: 'auth-result', success: false, pwhash: 'p1' });
    for (let i = 0; i < 3; i++) store.applySync(plan(ev, asRate), T0);
    const r = store.applySync(plan(ev, asSet), T0);
    assert.deepEqual(r.counters, [{ count: 1, exceeded: false, seen: false }]);
    assert.deepEqual(await store.peek(plan(ev, asSet).counters, T0), [1]);
    const back = store.applySync(plan(ev, asRate), T0);
    assert.deepEqual(back.counters, [{ count: 1, exceeded: false }]);
  });
});

void describe('distinct sets in the store', () => {
  void test('observe-mode sets keep counting past the limit up to the cap; the count then means "at least"', async () => {
    const h = new Harness(
      rulesPolicy(
        "  - {name: sp, mode: observe, on: [auth-result], key: ip, count: 'distinct:pwhash', limit: 10, window: 1h}",
      ),
    );
    let last = 0;
    for (let i = 0; i < DISTINCT_CAP + 200; i++) {
      const out = h.run({ kind: 'auth-result', success: false, pwhash: `h${i}` });
      assert.equal(out.decision.action, 'allow');
      last = out.result.counters[0]?.count ?? -1;
    }
    assert.equal(last, DISTINCT_CAP + 1);
    assert.deepEqual(Object.values(await h.peek({ kind: 'auth-result', success: false, pwhash: 'x' })), [DISTINCT_CAP]);
  });

  void test('members expire individually at the end of the window', async () => {
    const h = new Harness(
      rulesPolicy("  - {name: sp, on: [auth-result], key: ip, count: 'distinct:pwhash', limit: 3, window: 10m}"),
    );
    const att = (pwhash: string): ReturnType<Harness['run']> => h.run({ kind: 'auth-result', success: false, pwhash });
    att('a');
    h.advance(5 * MINUTE);
    att('b');
    att('c');
    assert.equal(att('d').decision.action, 'tempfail');
    h.advance(5 * MINUTE); // 'a' is now exactly one window old; 'd' was kept (a login result is always counted)
    assert.deepEqual(Object.values(await h.peek({ kind: 'auth-result', success: false, pwhash: 'x' })), [3]);
    assert.equal(att('d').decision.action, 'allow');
    assert.equal(att('e').decision.action, 'tempfail');
  });
});

void describe('durability on a real SQLite file', () => {
  const banPolicy = rulesPolicy(
    '  - {name: conn, on: [connect], key: ip, count: events, limit: 3, window: 1m, then: {action: reject, ban: ip}}',
    'bans: {duration: 1h, factor: 4, max: 1d, lookback: 7d}',
  );

  void test('creates the data directory when it is missing', () => {
    const file = join(tempFile('x'), '..', 'nested', 'deeper', 'mw.sqlite');
    const store = new MemoryStore({ file, maxKeys: 1000, lookbackMs: DAY, now: () => T0 });
    assert.ok(statSync(file).isFile());
    assert.equal(statSync(join(file, '..')).mode & 0o777, 0o700);
    store.db.close();
  });

  void test('a ban survives a crash (no close) and still blocks; its offence still escalates', async () => {
    const file = tempFile();
    const a = new Harness(banPolicy, { file });
    a.runMany(3);
    const out = await a.handle();
    assert.equal(out.committed.bans.length, 1);
    // Crash: drop `a` without close() and start again on the same file.
    const b = new Harness(banPolicy, { file });
    b.now = a.now + MINUTE;
    assert.deepEqual(
      (await b.store.listBans(b.now)).map((x) => [x.subject, x.until, x.offence, x.rule]),
      [['192.0.2.10', T0 + HOUR, 1, 'conn']],
    );
    const d = b.run().decision;
    assert.deepEqual([d.action, d.rule], ['reject', 'ban']);
    assert.equal(b.store.stats(b.now).activeBans, 1);
    const rows = await b.store.auditFor(['192.0.2.10'], 10);
    assert.ok(rows.some((r) => r.kind === 'ban' && r.evidence.offence === 1));
    // After it ends, the next ban is the second offence: 4h.
    b.now = T0 + HOUR;
    b.runMany(3);
    const again = await b.handle();
    assert.deepEqual([again.committed.bans[0]?.offence, (again.committed.bans[0]?.until ?? 0) - b.now], [2, 4 * HOUR]);
    await b.store.close();
  });

  void test('an unban and a suspension survive a restart too', async () => {
    const file = tempFile();
    const a = new Harness(banPolicy, { file });
    const ban: BanEffect = {
      type: 'ban',
      subject: '198.51.100.0/24',
      rule: 'manual',
      reason: 'x',
      evidence: {},
      escalation: banPolicy.escalation,
      durationMs: HOUR,
    };
    const susp = manualSuspension('u@example.org', 'y', { n: 1 });
    await a.store.commit([ban, { ...ban, subject: '203.0.113.0/24' }, susp], a.now, 'cli');
    await a.store.unban('203.0.113.0/24', 'cli', a.now, 'lifted');
    const b = new Harness(banPolicy, { file });
    assert.deepEqual(
      (await b.store.listBans(b.now)).map((x) => x.subject),
      ['198.51.100.0/24'],
    );
    assert.deepEqual(await b.store.listSuspensions(b.now), [
      { user: 'u@example.org', since: T0, until: T0 + HOUR, rule: 'manual', reason: 'y', actor: 'cli' },
    ]);
    assert.equal(b.run({ kind: 'message', user: 'u@example.org', recipients: 1 }).decision.rule, 'suspension');
    assert.equal(b.run({ ip: '203.0.113.5' }).decision.action, 'allow');
    await b.store.close();
  });

  void test('expired bans and suspensions are not loaded and are pruned; old offences are forgotten', async () => {
    const file = tempFile();
    const a = new Harness(banPolicy, { file, lookbackMs: 7 * DAY });
    a.runMany(3);
    assert.equal((await a.handle()).committed.bans.length, 1);
    const susp = manualSuspension('u@example.org', 'y');
    await a.store.commit([susp], a.now, 'cli');
    const later = new MemoryStore({ file, maxKeys: 1000, lookbackMs: 7 * DAY, now: () => T0 + 2 * HOUR });
    assert.deepEqual(await later.listBans(T0 + 2 * HOUR), []);
    assert.deepEqual(await later.listSuspensions(T0 + 2 * HOUR), []);
    const count = (): unknown =>
      later.db.db
        .prepare('SELECT (SELECT count(*) FROM bans) AS bans, (SELECT count(*) FROM suspensions) AS susp')
        .get();
    assert.deepEqual(count(), { bans: 0, susp: 0 });
    assert.equal(later.db.offencesSince('192.0.2.10', 0), 1, 'the offence is kept for the look-back');
    const muchLater = new MemoryStore({ file, maxKeys: 1000, lookbackMs: 7 * DAY, now: () => T0 + 8 * DAY });
    assert.equal(muchLater.db.offencesSince('192.0.2.10', 0), 0, 'and forgotten after it');
    // The audit trail is kept.
    assert.ok((await muchLater.auditFor(['192.0.2.10'], 10)).some((r) => r.kind === 'ban'));
    assert.ok((await muchLater.auditFor(['u@example.org'], 10)).some((r) => r.kind === 'suspend'));
    later.db.close();
    muchLater.db.close();
    await a.store.close();
  });

  void test('snapshot() then a restart restores rate counters and distinct sets', async () => {
    const file = tempFile();
    const policy = rulesPolicy(
      [
        '  - {name: conn, on: [connect], key: ip, count: events, limit: 10, window: 1h}',
        "  - {name: sp, on: [auth-result], key: ip, count: 'distinct:pwhash', limit: 5, window: 1h}",
      ].join('\n'),
    );
    const a = new Harness(policy, { file });
    a.runMany(7);
    for (const p of ['p1', 'p2', 'p3']) a.run({ kind: 'auth-result', success: false, pwhash: p });
    assert.equal(await a.store.snapshot(a.now), 2);
    const conn = await a.peek();
    const sp = await a.peek({ kind: 'auth-result', success: false, pwhash: 'x' });
    assert.deepEqual(conn, { 'conn|192.0.2.10': 7 });
    assert.deepEqual(sp, { 'sp|192.0.2.10': 3 });
    // Crash after the snapshot; the new store sees the same counts.
    const b = new Harness(policy, { file });
    b.now = a.now;
    assert.deepEqual(await b.peek(), conn);
    assert.deepEqual(await b.peek({ kind: 'auth-result', success: false, pwhash: 'x' }), sp);
    assert.equal(allowed(b.runMany(5)), 3);
    assert.equal(b.run({ kind: 'auth-result', success: false, pwhash: 'p1' }).decision.action, 'allow');
    assert.equal(b.run({ kind: 'auth-result', success: false, pwhash: 'p4' }).decision.action, 'allow');
    assert.equal(b.run({ kind: 'auth-result', success: false, pwhash: 'p5' }).decision.action, 'allow');
    assert.equal(b.run({ kind: 'auth-result', success: false, pwhash: 'p6' }).decision.action, 'tempfail');
    await b.store.close();
  });

  void test('close() snapshots; expired rate counters are not written; a new snapshot replaces the old', async () => {
    const file = tempFile();
    const policy = rulesPolicy('  - {name: conn, on: [connect], key: ip, count: events, limit: 10, window: 1m}');
    const a = new Harness(policy, { file });
    a.runMany(4, { ip: '192.0.2.1' });
    a.advance(30 * 1000);
    a.runMany(4, { ip: '192.0.2.2' });
    // At 0:36, 192.0.2.1's four events (6 s each) have drained; 192.0.2.2 still holds three.
    a.advance(6 * 1000);
    await a.store.close();
    const b = new Harness(policy, { file });
    b.now = a.now;
    assert.deepEqual(b.store.stats(b.now).counterKeys, 1);
    assert.deepEqual(await b.peek({ ip: '192.0.2.2' }), { 'conn|192.0.2.2': 3 });
    assert.deepEqual(await b.peek({ ip: '192.0.2.1' }), { 'conn|192.0.2.1': 0 });
    b.advance(MINUTE);
    assert.equal(await b.store.snapshot(b.now), 0);
    const c = new MemoryStore({ file, maxKeys: 1000, lookbackMs: DAY, now: () => b.now });
    assert.equal(c.stats(b.now).counterKeys, 0);
    c.db.close();
    await b.store.close();
  });

  void test('a crash in the middle of a snapshot leaves the previous snapshot whole', async () => {
    const file = tempFile();
    const policy = rulesPolicy('  - {name: conn, on: [connect], key: ip, count: events, limit: 10, window: 1h}');
    const a = new Harness(policy, { file });
    a.runMany(5);
    await a.store.snapshot(a.now);
    // A half-written side table, as a crash between chunks would leave it.
    a.store.db.db.exec(
      "CREATE TABLE counters_next (key TEXT PRIMARY KEY, tat REAL, members TEXT); INSERT INTO counters_next VALUES ('conn|junk', 1, NULL)",
    );
    const b = new Harness(policy, { file });
    b.now = a.now;
    assert.deepEqual(await b.peek(), { 'conn|192.0.2.10': 5 });
    assert.equal(b.store.stats(b.now).counterKeys, 1);
    b.runMany(1);
    assert.equal(await b.store.snapshot(b.now), 1, 'the leftover side table does not stop the next snapshot');
    const c = new Harness(policy, { file });
    c.now = a.now;
    assert.deepEqual(await c.peek(), { 'conn|192.0.2.10': 6 });
    await b.store.close();
    await c.store.close();
  });

  void test('counter snapshots are written in chunks and read back whole', async () => {
    const file = tempFile();
    const store = new MemoryStore({ file, maxKeys: 1000, lookbackMs: DAY, now: () => T0 });
    const rows: Array<[string, number | null, string | null]> = Array.from({ length: 11 }, (_, i) => [
      `k${i}`,
      T0 + i,
      null,
    ]);
    rows.push(['set', null, JSON.stringify([['m', T0]])]);
    await store.db.saveCounters(rows, 3);
    const back = store.db.loadCounters();
    assert.equal(back.length, 12);
    assert.deepEqual(
      back.find((r) => r.key === 'k7'),
      { key: 'k7', tat: T0 + 7, members: null },
    );
    assert.deepEqual(
      back.find((r) => r.key === 'set'),
      { key: 'set', tat: null, members: '[["m",1735689600000]]' },
    );
    store.db.close();
  });

  void test('hits audited with recordHits persist, newest first, limited', async () => {
    const file = tempFile();
    const policy = rulesPolicy(
      '  - {name: watch, mode: observe, on: [connect], key: ip, count: events, limit: 1, window: 1m}',
    );
    const a = new Harness(policy, { file });
    for (let i = 0; i < 3; i++) {
      await a.handle();
      await a.handle();
      a.advance(MINUTE);
    }
    const b = new MemoryStore({ file, maxKeys: 1000, lookbackMs: DAY, now: () => T0 });
    const rows = await b.auditFor(['192.0.2.10'], 2);
    assert.equal(rows.length, 2);
    assert.ok((rows[0]?.id ?? 0) > (rows[1]?.id ?? 0));
    assert.deepEqual(
      rows.map((r) => [r.kind, r.time]),
      [
        ['observe', T0 + 2 * MINUTE],
        ['observe', T0 + MINUTE],
      ],
    );
    assert.deepEqual(await b.auditFor([], 10), []);
    assert.deepEqual(await b.auditFor(['203.0.113.1'], 10), []);
    b.db.close();
  });
});
