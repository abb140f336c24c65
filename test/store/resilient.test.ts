/*
 * ResilientStore in-process, on a real redis-server: the fallback to local
 * memory and the way back, with a captured log. (The end-to-end version with
 * real daemons is test/daemon/cluster-outage.test.ts.)
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { captureLogger } from '../helpers/harness.js';
import { freePort } from '../helpers/daemon.js';
import { loadSettings } from '../../src/config/load.js';
import { plan } from '../../src/engine/plan.js';
import { MemoryStore } from '../../src/store/memory.js';
import { createRedisClient, RedisStore } from '../../src/store/redis.js';
import { ResilientStore } from '../../src/store/resilient.js';
import type { Effect } from '../../src/engine/types.js';
import { makeEvent } from '../helpers/policy.js';
import { startRedis } from '../helpers/redis.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const policy = loadSettings(undefined).policy;
const esc = policy.escalation;

describe('ResilientStore: local memory when Redis is away', () => {
  let dir: string;
  const open: ResilientStore[] = [];
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'mw-resilient-'));
  });
  after(async () => {
    for (const s of open) await s.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  async function node(
    name: string,
    url: string,
    file: string,
    logs: Array<Record<string, unknown>>,
    connectWaitMs = 1000,
  ): Promise<ResilientStore> {
    const client = createRedisClient({ url, prefix: 'mailwarden', timeoutMs: 50 }, name);
    client.on('error', () => undefined);
    const redis = new RedisStore({ client, prefix: 'mailwarden', node: name, lookbackMs: esc.lookbackMs });
    const local = new MemoryStore({
      file: join(dir, file),
      maxKeys: 10_000,
      lookbackMs: esc.lookbackMs,
      now: Date.now,
    });
    const s = await ResilientStore.open({
      redis,
      local,
      logger: captureLogger(logs),
      timeoutMs: 50,
      probeMs: 100,
      connectWaitMs,
    });
    open.push(s);
    return s;
  }

  const waitMode = async (s: ResilientStore, mode: string): Promise<void> => {
    const until = Date.now() + 8000;
    while (s.mode !== mode) {
      if (Date.now() > until) throw new Error(`mode still ${s.mode}`);
      await sleep(20);
    }
  };

  test('Redis down at start: the node starts at once in fallback, queues its bans (durably), and pushes them when Redis comes', async () => {
    const port = await freePort();
    const url = `redis://127.0.0.1:${port}/0`;
    const logs: Array<Record<string, unknown>> = [];
    const t0 = Date.now();
    const a = await node('a', url, 'a.sqlite', logs, 300);
    assert.ok(Date.now() - t0 < 2000);
    assert.equal(a.mode, 'local-fallback');
    assert.equal(a.stats(Date.now()).mode, 'local-fallback');
    // Decisions are synchronous, from local memory.
    const r = a.apply(plan(makeEvent({ time: Date.now() }), policy), Date.now());
    assert.ok(!(r instanceof Promise));
    const done = await a.commit(
      [
        {
          type: 'ban',
          subject: '198.51.100.5',
          rule: 'manual',
          reason: 'outage ban',
          evidence: {},
          escalation: esc,
          durationMs: 3_600_000,
        },
      ],
      Date.now(),
      'cli',
    );
    assert.equal(done.bans.length, 1);
    assert.equal(a.stats(Date.now()).pending, 1);
    // The node restarts before Redis is back: the queue is in its SQLite file.
    await a.close();
    open.splice(open.indexOf(a), 1);
    const redis = await startRedis([], port);
    try {
      const a2 = await node('a', url, 'a.sqlite', logs);
      await waitMode(a2, 'redis');
      assert.equal(a2.stats(Date.now()).pending, 0);
      assert.equal(redis.cli('hget', '{mailwarden}:ban:198.51.100.5', 'reason'), 'outage ban');
      const audit = await a2.auditFor(['198.51.100.5'], 5);
      assert.deepEqual(
        audit.map((x) => [x.kind, x.node]),
        [['ban', 'a']],
      );
      assert.equal(logs.filter((l) => String(l.msg).includes('local-fallback')).length, 1);
    } finally {
      await redis.kill();
    }
  });

  test('the local cache follows the cluster by pub/sub, and is what refuses during an outage', async () => {
    // With persistence, so that the ban is still in Redis after its restart and the queued lift must remove it.
    const redis = await startRedis(['--appendonly', 'yes', '--appendfsync', 'always']);
    try {
      const logs: Array<Record<string, unknown>> = [];
      const a = await node('a', redis.url, 'c-a.sqlite', logs);
      const b = await node('b', redis.url, 'c-b.sqlite', logs);
      await waitMode(a, 'redis');
      await b.commit(
        [
          {
            type: 'ban',
            subject: '203.0.113.0/24',
            rule: 'manual',
            reason: 'r',
            evidence: {},
            escalation: esc,
            durationMs: 3_600_000,
          },
        ],
        Date.now(),
        'cli',
      );
      await b.commit(
        [{ type: 'suspend', user: 'x@example.org', rule: 'manual', reason: 'r', durationMs: 3_600_000, evidence: {} }],
        Date.now(),
        'cli',
      );
      const until = Date.now() + 2000;
      while ((a.stats(Date.now()).activeBans < 1 || a.stats(Date.now()).activeSuspensions < 1) && Date.now() < until)
        await sleep(10);
      assert.equal(a.stats(Date.now()).activeBans, 1);
      await redis.kill();
      const banned = await a.apply(plan(makeEvent({ ip: '203.0.113.9', time: Date.now() }), policy), Date.now());
      assert.equal(banned.ban?.subject, '203.0.113.0/24');
      assert.equal(a.mode, 'local-fallback');
      const suspended = await a.apply(
        plan(makeEvent({ kind: 'message', user: 'x@example.org', recipients: 1, time: Date.now() }), policy),
        Date.now(),
      );
      assert.equal(suspended.suspension?.user, 'x@example.org');
      // An unban during the outage is queued too, and lifts the ban in Redis when it returns (it is older).
      assert.equal((await a.unban('203.0.113.0/24', 'cli', Date.now(), 'x'))?.subject, '203.0.113.0/24');
      await redis.restart();
      await waitMode(a, 'redis');
      assert.deepEqual(await a.listBans(Date.now()), []);
      assert.equal(redis.cli('exists', '{mailwarden}:ban:203.0.113.0/24'), '0');
      // The suspension made with the ban survived Redis's restart: so did the ban, until the queued lift came.
      assert.equal((await a.listSuspensions(Date.now()))[0]?.user, 'x@example.org');
      assert.deepEqual(
        (await a.auditFor(['203.0.113.0/24'], 5)).map((x) => [x.kind, x.node]),
        [
          ['unban', 'a'],
          ['ban', 'b'],
        ],
      );
    } finally {
      await redis.kill();
    }
  });

  test('during an outage, a lift that found nothing is not pushed, and a rule ban comes back as it was made', async () => {
    const redis = await startRedis(['--appendonly', 'yes', '--appendfsync', 'always']);
    try {
      const logs: Array<Record<string, unknown>> = [];
      const a = await node('a', redis.url, 'o-a.sqlite', logs);
      await waitMode(a, 'redis');
      const ban = (subject: string, durationMs?: number): Effect => ({
        type: 'ban',
        subject,
        rule: durationMs ? 'manual' : 'auth-guess-ban',
        reason: 'r',
        evidence: {},
        escalation: esc,
        durationMs,
      });
      await a.commit([ban('203.0.113.50', 3_600_000)], Date.now(), 'cli');
      await redis.kill();
      // The node's cache lost this ban (say, a pub/sub message that never came): the lift finds nothing here.
      (a as unknown as { local: MemoryStore }).local.mirrorUnban('203.0.113.50');
      assert.equal(await a.unban('203.0.113.50', 'cli', Date.now(), 'x'), undefined);
      assert.equal(a.stats(Date.now()).pending, 0, 'nothing to push back');
      const t = Date.now();
      const made = await a.commit([ban('192.0.2.88')], t, 'mailwarden');
      assert.deepEqual(
        made.bans.map((b) => [b.subject, b.offence, b.since]),
        [['192.0.2.88', 1, t]],
      );
      await redis.restart();
      await waitMode(a, 'redis');
      // The ban the node never saw is still in force everywhere.
      assert.equal(redis.cli('exists', '{mailwarden}:ban:203.0.113.50'), '1');
      // The outage's ban, as it was made: first offence, same start, one offence in the look-back.
      assert.equal(redis.cli('hget', '{mailwarden}:ban:192.0.2.88', 'offence'), '1');
      assert.equal(Number(redis.cli('hget', '{mailwarden}:ban:192.0.2.88', 'since')), t);
      assert.equal(redis.cli('zcard', '{mailwarden}:off:192.0.2.88'), '1');
      const local = (await a.listBans(Date.now())).find((b) => b.subject === '192.0.2.88');
      assert.deepEqual([local?.offence, local?.since], [1, t]);
    } finally {
      await redis.kill();
    }
  });

  test('one late answer is decided locally without leaving Redis; three in a row are an outage', async () => {
    const redis = await startRedis();
    try {
      const logs: Array<Record<string, unknown>> = [];
      const a = await node('a', redis.url, 'l-a.sqlite', logs);
      await waitMode(a, 'redis');
      const ev = (): ReturnType<typeof plan> => plan(makeEvent({ ip: '192.0.2.70', time: Date.now() }), policy);
      process.kill(redis.pid, 'SIGSTOP');
      let t = performance.now();
      await a.apply(ev(), Date.now());
      assert.ok(performance.now() - t < 500);
      process.kill(redis.pid, 'SIGCONT');
      await sleep(50);
      await a.apply(ev(), Date.now());
      assert.equal(a.mode, 'redis');
      assert.deepEqual([a.stats(Date.now()).fallbacks, a.stats(Date.now()).localDecisions], [0, 1]);
      process.kill(redis.pid, 'SIGSTOP');
      t = performance.now();
      for (let i = 0; i < 3; i++) await a.apply(ev(), Date.now());
      assert.equal(a.mode, 'local-fallback');
      const r = a.apply(ev(), Date.now());
      assert.ok(!(r instanceof Promise), 'in fallback, decisions no longer wait for Redis');
      assert.ok(performance.now() - t < 1000);
      process.kill(redis.pid, 'SIGCONT');
      await waitMode(a, 'redis');
      assert.equal(a.stats(Date.now()).fallbacks, 1);
    } finally {
      process.kill(redis.pid, 'SIGCONT');
      await redis.kill();
    }
  });
});
