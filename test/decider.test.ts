/*
 * The decider when part of a decision fails: a ban in force still refuses
 * (on the real Postfix socket too), and only a source with no ban fails open.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { Plan } from '../src/engine/plan.js';
import { Decider } from '../src/decider.js';
import type { Decision } from '../src/engine/types.js';
import { MemoryStore } from '../src/store/memory.js';
import { banForAnHour, captureLogger, startHarness, type Harness } from './helpers/harness.js';
import { makeEvent, rulesPolicy, T0 } from './helpers/policy.js';
import { ask, connectRequest, portOf } from './helpers/postfix.js';

const boom = (): never => {
  throw new Error('boom: a counter, a script or a disk failed');
};

/**
 * Makes deciders with these rules, each on a fresh MemoryStore of its own (clock at T0); the stores are
 * closed and their directories removed after the enclosing describe.
 */
function deciders(
  maxKeys: number,
): (yaml: string) => { store: MemoryStore; decider: Decider; logs: Array<Record<string, unknown>> } {
  const dirs: string[] = [];
  const stores: MemoryStore[] = [];
  after(async () => {
    for (const s of stores) await s.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  return (yaml) => {
    const dir = mkdtempSync(join(tmpdir(), 'mw-decider-'));
    dirs.push(dir);
    const store = new MemoryStore({
      file: join(dir, 'mw.sqlite'),
      maxKeys,
      lookbackMs: 86_400_000,
      now: () => T0,
    });
    stores.push(store);
    const logs: Array<Record<string, unknown>> = [];
    return { store, decider: new Decider(rulesPolicy(yaml), store, captureLogger(logs)), logs };
  };
}

/** An administrator's one-hour ban of `subject` (an address or a network), made at T0. */
const ban = (store: MemoryStore, subject: string) =>
  store.commit(
    [
      {
        type: 'ban',
        subject,
        rule: 'manual',
        reason: 'test',
        evidence: {},
        escalation: { baseMs: 3_600_000, factor: 4, maxMs: 86_400_000, lookbackMs: 86_400_000 },
        durationMs: 3_600_000,
      },
    ],
    T0,
    'cli',
  );

describe('decider: a failed decision never lets a banned source in', () => {
  const setup = deciders(1000);
  const CONN_BAN =
    '  - {name: conn, on: [connect], key: ip, count: events, limit: 2, window: 1m, then: {action: reject, ban: ip}}';

  test('the store failing (synchronously or not) still refuses a banned source; any other source fails open', async () => {
    const { store, decider, logs } = setup(CONN_BAN);
    await ban(store, '198.18.0.0/15');
    store.apply = boom;
    const d = decider.evaluate(makeEvent({ ip: '198.19.0.1' })) as Decision;
    assert.deepEqual([d.action, d.rule], ['reject', 'ban']);
    assert.match(d.reason, /198\.18\.0\.0\/15 is blocked until/);
    assert.throws(() => decider.evaluate(makeEvent({ ip: '198.20.0.1' })), /boom/);
    store.apply = (_p: Plan, _n: number) => Promise.reject(new Error('boom later')) as never;
    const late = await decider.evaluate(makeEvent({ ip: '198.18.7.7' }));
    assert.deepEqual([late.action, late.rule], ['reject', 'ban']);
    await assert.rejects(Promise.resolve(decider.evaluate(makeEvent({ ip: '203.0.113.1' }))), /boom later/);
    assert.ok(logs.some((l) => l.msg === 'decision failed; refused by the ban in force' && l.ban === '198.18.0.0/15'));
  });

  test('a rule ban made in a decision that then fails (its audit row cannot be written) still refuses', async () => {
    const { store, decider } = setup(CONN_BAN);
    const ev = makeEvent({ ip: '192.0.2.66' });
    assert.equal((decider.evaluate(ev) as Decision).action, 'allow');
    assert.equal((decider.evaluate(ev) as Decision).action, 'allow');
    store.recordHits = boom;
    const d = await decider.evaluate(ev);
    assert.deepEqual([d.action, d.rule], ['reject', 'ban'], 'the ban just made, not DUNNO');
  });

  describe('through the real Postfix socket', () => {
    let h: Harness | undefined;
    after(async () => {
      await h?.close();
    });

    test('a banned client gets a rejection, not DUNNO, when the store fails', async () => {
      const hh = (h = await startHarness());
      await banForAnHour(hh, '203.0.112.0/23');
      hh.store.apply = boom;
      const port = portOf(hh.bound[0] as string);
      assert.match(
        await ask(port, connectRequest('203.0.113.5')),
        /^action=554 5\.7\.1 Access denied: 203\.0\.112\.0\/23/,
      );
      assert.equal(await ask(port, connectRequest('203.0.114.5')), 'action=DUNNO');
      assert.equal(hh.server.stats.errors, 1, 'only the unbanned one failed open');
    });
  });
});

describe('decider: a flood of refusals is counted, not written line by line', () => {
  const setup = deciders(10_000);

  test('log lines: a source once per rule and interval, at most 20 per rule; the rest told in one line', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const { store, decider, logs } = setup(
      '  - {name: conn, on: [connect], key: ip, count: events, limit: 1000, window: 1m, then: tempfail}',
    );
    await ban(store, '198.18.0.0/16');
    // 50 banned sources, 3 requests each
    for (let round = 0; round < 3; round++)
      for (let i = 0; i < 50; i++) {
        const d = decider.evaluate(makeEvent({ ip: `198.18.0.${i}`, time: T0 + round })) as Decision;
        assert.deepEqual([d.action, d.rule], ['reject', 'ban']);
      }
    const lines = logs.filter(
      (l) => l.rule === 'ban' && typeof l.msg === 'string' && l.msg.startsWith('Access denied'),
    );
    assert.equal(lines.length, 20, 'the first 20 sources');
    assert.equal(new Set(lines.map((l) => l.ip)).size, 20, 'each once');
    t.mock.timers.tick(10_000);
    const told = logs.filter((l) => l.notLogged !== undefined);
    assert.deepEqual(
      told.map((l) => [l.rule, l.notLogged]),
      [['ban', 130]],
    );
  });

  test('audit: a hit reaches the store once per rule and subject per minute, whatever the flood', () => {
    const { store, decider } = setup(
      '  - {name: conn, on: [connect], key: ip, count: events, limit: 2, window: 1h, then: reject}',
    );
    const handed: string[] = [];
    const recordHits = store.recordHits.bind(store);
    store.recordHits = (event, hits, now) => {
      handed.push(...hits.map((h) => `${h.rule}|${h.subject}`));
      return recordHits(event, hits, now);
    };
    const refusals = (ip: string, from: number, n: number): void => {
      for (let i = 0; i < n; i++) void decider.evaluate(makeEvent({ ip, time: from + i * 100 }));
    };
    refusals('192.0.2.7', T0, 300); // 30 s: 2 allowed, 298 refused
    refusals('192.0.2.8', T0, 10);
    assert.deepEqual(handed, ['conn|192.0.2.7', 'conn|192.0.2.8']);
    refusals('192.0.2.7', T0 + 60_000, 5); // a minute after its last row
    assert.deepEqual(handed, ['conn|192.0.2.7', 'conn|192.0.2.8', 'conn|192.0.2.7']);
    assert.equal(
      store.db.auditFor(['192.0.2.7'], 10).filter((r) => r.kind === 'limit').length,
      2,
      'one audit row per minute',
    );
  });
});
