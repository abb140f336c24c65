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
import type { Redis } from 'ioredis';
import { createRedisClient, RedisStore } from '../../src/store/redis.js';
import { ResilientStore } from '../../src/store/resilient.js';
import type { Effect } from '../../src/engine/types.js';
import { makeEvent } from '../helpers/policy.js';
import { startRedis } from '../helpers/redis.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const policy = loadSettings(undefined).policy;
const esc = policy.escalation;

/** An administrator's ban for an hour, or (`rule`) a rule's ban, escalated as the policy says. */
const ban = (subject: string, reason = 'r', rule = false): Effect => ({
  type: 'ban',
  subject,
  rule: rule ? 'auth-guess-ban' : 'manual',
  reason,
  evidence: {},
  escalation: esc,
  durationMs: rule ? undefined : 3_600_000,
});

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

  /** Two nodes on one Redis, both deciding from it. */
  const twoNodes = async (url: string, tag: string): Promise<{ a: ResilientStore; b: ResilientStore }> => {
    const logs: Array<Record<string, unknown>> = [];
    const a = await node('a', url, `${tag}-a.sqlite`, logs);
    const b = await node('b', url, `${tag}-b.sqlite`, logs);
    await waitMode(a, 'redis');
    await waitMode(b, 'redis');
    return { a, b };
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
    const done = await a.commit([ban('198.51.100.5', 'outage ban')], Date.now(), 'cli');
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
      await b.commit([ban('203.0.113.0/24')], Date.now(), 'cli');
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
      await a.commit([ban('203.0.113.50')], Date.now(), 'cli');
      await redis.kill();
      // The node's cache lost this ban (say, a pub/sub message that never came): the lift finds nothing here.
      (a as unknown as { local: MemoryStore }).local.mirrorUnban('203.0.113.50');
      assert.equal(await a.unban('203.0.113.50', 'cli', Date.now(), 'x'), undefined);
      assert.equal(a.stats(Date.now()).pending, 0, 'nothing to push back');
      const t = Date.now();
      const made = await a.commit([ban('192.0.2.88', 'r', true)], t, 'mailwarden');
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

  test('the mirror answers what it can as Redis would: nothing to count, or a ban whose client would be charged nothing', async () => {
    const redis = await startRedis();
    try {
      const { a, b } = await twoNodes(redis.url, 'm');
      const message = (ip: string): ReturnType<typeof plan> =>
        plan(makeEvent({ kind: 'message', ip, recipients: 1, time: Date.now() }), policy);
      assert.equal(message('192.0.2.1').counters.length, 0, 'an unauthenticated END-OF-MESSAGE counts nothing');
      // Until an APPLY has said which ban event is the latest, even that goes to Redis.
      const first = a.apply(message('192.0.2.1'), Date.now());
      assert.ok(first instanceof Promise);
      await first;
      const plain = a.apply(message('192.0.2.1'), Date.now());
      assert.ok(!(plain instanceof Promise), 'answered without waiting for Redis');
      assert.equal(plain.ban, undefined);
      assert.equal(a.stats(Date.now()).mirrorDecisions, 1);

      // A ban made on another node: pub/sub brings it here.
      await b.commit([ban('203.0.113.0/24')], Date.now(), 'cli');
      const until = Date.now() + 2000;
      while (a.stats(Date.now()).activeBans < 1 && Date.now() < until) await sleep(5);
      await a.apply(plan(makeEvent({ ip: '192.0.2.2', time: Date.now() }), policy), Date.now());
      const connect = plan(makeEvent({ ip: '203.0.113.7', time: Date.now() }), policy);
      assert.ok(connect.counters.length > 0 && connect.counters.every((op) => op.charge === 'if-pass'));
      const refused = a.apply(connect, Date.now());
      assert.ok(!(refused instanceof Promise), 'a banned client counted only if it passes: no round trip');
      assert.equal(refused.ban?.subject, '203.0.113.0/24');
      const attempt = a.apply(
        plan(
          makeEvent({ kind: 'auth-attempt', user: 'x@example.org', pwhash: 'p', protocol: 'imap', ip: '203.0.113.7' }),
          policy,
        ),
        Date.now(),
      );
      assert.ok(!(attempt instanceof Promise), 'a login attempt of a banned client: no round trip');
      assert.equal(redis.cli('exists', `{mailwarden}:c:${connect.counters[0]?.key ?? ''}`), '0', 'charged nothing');

      // A failed login a banned client reports is counted always (escalation): that one still goes to Redis.
      const failed = plan(
        makeEvent({
          kind: 'auth-result',
          success: false,
          user: 'x@example.org',
          pwhash: 'p',
          protocol: 'imap',
          ip: '203.0.113.7',
        }),
        policy,
      );
      const counted = a.apply(failed, Date.now());
      assert.ok(counted instanceof Promise);
      assert.equal((await counted).ban?.subject, '203.0.113.0/24');
      assert.equal(redis.cli('exists', `{mailwarden}:c:${failed.counters[0]?.key ?? ''}`), '1', 'counted in Redis');
    } finally {
      await redis.kill();
    }
  });

  test('a mirror that missed a ban event is not used once an APPLY has told of it, until it is read again', async () => {
    const redis = await startRedis();
    try {
      const { a, b } = await twoNodes(redis.url, 's');
      const connect = (ip: string): ReturnType<typeof plan> => plan(makeEvent({ ip, time: Date.now() }), policy);
      const message = (): ReturnType<typeof plan> =>
        plan(makeEvent({ kind: 'message', ip: '198.51.100.20', recipients: 1, time: Date.now() }), policy);
      const mirrored = (): number => a.stats(Date.now()).mirrorDecisions ?? 0;
      await a.apply(connect('192.0.2.3'), Date.now());
      assert.ok(!(a.apply(message(), Date.now()) instanceof Promise), 'in step: the mirror answers');
      // The subscription stops delivering while its connection stays up (from the node's side, nothing happened).
      const sub = (a as unknown as { redis: { subscriber: Redis } }).redis.subscriber;
      await sub.unsubscribe('{mailwarden}:events');
      await b.commit([ban('198.51.100.0/24')], Date.now(), 'cli');
      // Any counted decision made after the ban tells the node that its mirror is behind.
      await a.apply(connect('192.0.2.4'), Date.now());
      const before = mirrored();
      for (let n = 0; n < 20; n++) {
        const r = a.apply(message(), Date.now());
        assert.ok(r instanceof Promise, `decision ${n} asks Redis`);
        assert.equal((await r).ban?.subject, '198.51.100.0/24', `decision ${n}`);
      }
      assert.equal(mirrored(), before);
      // The subscription comes back (a new connection): the mirror is read again, and answers again.
      sub.disconnect(true);
      const until = Date.now() + 5000;
      while (mirrored() === before) {
        if (Date.now() > until) throw new Error('the mirror was never used again');
        assert.equal((await a.apply(message(), Date.now())).ban?.subject, '198.51.100.0/24');
        await sleep(5);
      }
    } finally {
      await redis.kill();
    }
  });

  test('a node refusing a flood during an outage still goes back to Redis: its audit rows follow', async () => {
    const redis = await startRedis();
    let writing = true;
    try {
      const logs: Array<Record<string, unknown>> = [];
      const a = await node('a', redis.url, 'f-a.sqlite', logs);
      await waitMode(a, 'redis');
      await redis.kill();
      await a.apply(plan(makeEvent({ ip: '192.0.2.99', time: Date.now() }), policy), Date.now());
      assert.equal(a.mode, 'local-fallback');
      // Refusals of ever new sources: one audit row each, written locally as fast as the node can.
      let i = 0;
      const flood = (async () => {
        while (writing) {
          const ip = `10.9.${(i >> 8) & 255}.${i & 255}`;
          const hit = {
            rule: 'smtp-connections-per-ip',
            subject: ip,
            count: 31,
            limit: 30,
            action: 'reject' as const,
            observe: false,
            reason: 'r',
          };
          await a.recordHits(makeEvent({ ip, time: Date.now() }), [hit], Date.now());
          i++;
          await new Promise((r) => setImmediate(r));
        }
      })();
      await sleep(300);
      await redis.restart();
      await waitMode(a, 'redis');
      writing = false;
      await flood;
      assert.ok(i > 100, `${i} rows written`);
      // The rows written locally reach Redis after the switch.
      const end = Date.now() + 8000;
      let total = 0;
      while (Date.now() < end) {
        total = (await a.auditSearch({ since: 0, limit: 1, offset: 0 })).total;
        if (total >= i) break;
        await sleep(50);
      }
      assert.ok(total >= i, `${total} of ${i} audit rows in Redis`);
    } finally {
      writing = false;
      await redis.kill();
    }
  });
});
