/*
 * The store contract (contract.ts) against RedisStore on a real redis-server
 * (started here on a free loopback port, killed by PID at the end), plus what
 * only the shared store does: Redis's own clock, one round trip per event,
 * TTLs on every key, and the pub/sub feed of bans for the nodes' caches.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { decide } from '../../src/engine/decide.js';
import { plan } from '../../src/engine/plan.js';
import { MAX_DURATION_MS, type BanRecord } from '../../src/engine/types.js';
import { RedisStore, type StoreEvent } from '../../src/store/redis.js';
import { loadSettings } from '../../src/config/load.js';
import { makeEvent, rulesPolicy, SECOND } from '../helpers/policy.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { banEffect, storeContract } from './contract.js';

let server: RedisServer;
const clients: Redis[] = [];
before(async () => {
  server = await startRedis();
});
after(async () => {
  for (const c of clients) c.disconnect();
  await server.kill();
});

function client(): Redis {
  const c = new Redis(server.url, { protocol: 2, maxRetriesPerRequest: 0 });
  clients.push(c);
  return c;
}

const prefix = (): string => `t${randomBytes(6).toString('hex')}`;

storeContract(
  'redis',
  ({ lookbackMs }) => new RedisStore({ client: client(), prefix: prefix(), node: 'test', lookbackMs, time: 'caller' }),
);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

void describe('redis store: what only the shared store does', () => {
  void test("Redis's clock, not the caller's: two nodes with skewed clocks agree", async () => {
    const policy = rulesPolicy(
      '  - {name: conn, on: [connect], key: ip, count: events, limit: 3, window: 1m, then: {action: reject, ban: ip}}',
    );
    const p = prefix();
    const a = new RedisStore({ client: client(), prefix: p, node: 'a', lookbackMs: 86_400_000 });
    const b = new RedisStore({ client: client(), prefix: p, node: 'b', lookbackMs: 86_400_000 });
    const ev = makeEvent();
    // node a thinks it is 1970, node b thinks it is an hour ahead: neither matters
    for (const [s, now] of [
      [a, 0],
      [b, Date.now() + 3_600_000],
      [a, 0],
    ] as const) {
      const r = await s.apply(plan(ev, policy), now);
      assert.equal(r.counters[0]?.exceeded, false);
    }
    const over = await b.apply(plan(ev, policy), 12345);
    assert.deepEqual(over.counters, [{ count: 4, exceeded: true }]);
    const d = decide(ev, policy, plan(ev, policy), over);
    const before = Date.now();
    const [ban] = (await b.commit(d.effects, 0, 'mailwarden')).bans;
    assert.ok(ban && Math.abs(ban.since - before) < 5000, `since ${ban?.since} is Redis's time`);
    assert.equal((ban?.until ?? 0) - (ban?.since ?? 0), policy.escalation.baseMs);
    assert.equal((await a.apply(plan(ev, policy), 0)).ban?.subject, '192.0.2.10');
    assert.ok(a.clockSkewMs !== null && Math.abs(a.clockSkewMs) < 5000);
  });

  void test('a short window on the real clock: the count drains as Redis time passes', async () => {
    const policy = rulesPolicy('  - {name: fast, on: [connect], key: ip, count: events, limit: 2, window: 400ms}');
    const s = new RedisStore({ client: client(), prefix: prefix(), node: 'a', lookbackMs: 86_400_000 });
    const ev = makeEvent({ ip: '198.51.100.3' });
    const run = async (): Promise<boolean> => (await s.apply(plan(ev, policy), 0)).counters[0]?.exceeded ?? true;
    assert.deepEqual([await run(), await run(), await run()], [false, false, true]);
    await sleep(450);
    assert.deepEqual([await run(), await run(), await run()], [false, false, true]);
  });

  void test('one event is one round trip: one EVALSHA per apply, no other command', async () => {
    const policy = loadSettings(undefined).policy;
    const c = client();
    const s = new RedisStore({ client: c, prefix: prefix(), node: 'a', lookbackMs: 86_400_000 });
    const ev = makeEvent({ kind: 'auth-result', success: false, user: 'x@example.org', pwhash: 'p', protocol: 'imap' });
    await s.apply(plan(ev, policy), 0); // loads the script (its first call is an EVAL) once
    const stats = (): Map<string, number> => {
      const m = new Map<string, number>();
      for (const line of server.cli('info', 'commandstats').split('\n')) {
        const x = /^cmdstat_(\w+):calls=(\d+)/.exec(line.trim());
        if (x) m.set(x[1] as string, Number(x[2]));
      }
      return m;
    };
    const before = stats();
    for (let i = 0; i < 50; i++) await s.apply(plan({ ...ev, pwhash: `p${i}` }, policy), 0);
    const after = stats();
    // Commands the client sent (scripts' inner calls are counted too, so look at client-level commands only).
    const delta = (k: string): number => (after.get(k) ?? 0) - (before.get(k) ?? 0);
    assert.equal(delta('evalsha'), 50);
    assert.equal(delta('eval'), 0);
    assert.equal(delta('info'), 1, 'only the stats probe of this test');
  });

  void test('decisions asked at once share one APPLY, each decided as if alone; a flushed script is sent again', async () => {
    const policy = rulesPolicy(
      '  - {name: conn, on: [connect], key: ip, count: events, limit: 3, window: 1m, then: reject}',
    );
    const s = new RedisStore({ client: client(), prefix: prefix(), node: 'a', lookbackMs: 86_400_000 });
    await s.apply(plan(makeEvent(), policy), 0); // loads the script
    const calls = (k: string): number =>
      Number(new RegExp(`^cmdstat_${k}:calls=(\\d+)`, 'm').exec(server.cli('info', 'commandstats'))?.[1] ?? 0);
    const ev = makeEvent({ ip: '192.0.2.77' });
    const before = calls('evalsha');
    const all = await Promise.all(Array.from({ length: 6 }, () => s.apply(plan(ev, policy), 0)));
    assert.deepEqual(
      all.map((r) => [r.counters[0]?.count, r.counters[0]?.exceeded]),
      [
        [1, false],
        [2, false],
        [3, false],
        [4, true],
        [4, true],
        [4, true],
      ],
      'in the order asked; the refused ones not charged',
    );
    assert.equal(calls('evalsha') - before, 1, 'one round trip for the six');
    server.cli('script', 'flush');
    const evals = calls('eval');
    assert.equal((await s.apply(plan(makeEvent({ ip: '192.0.2.78' }), policy), 0)).counters[0]?.count, 1);
    assert.equal(calls('eval') - evals, 1, 'NOSCRIPT: the script went again, whole');
    // A ban read back is one record while it stands: its refusal is made once (engine/decide.ts).
    await s.commit([banEffect(policy, '192.0.2.77', { rule: 'm', reason: 'r' })], 0, 'cli');
    const [a, b] = await Promise.all([s.apply(plan(ev, policy), 0), s.apply(plan(ev, policy), 0)]);
    assert.ok(a.ban !== undefined && a.ban === b.ban);
    assert.equal((await s.apply(plan(ev, policy), 0)).ban, a.ban);
  });

  void test('every key the store writes has a TTL', async () => {
    const p = prefix();
    const s = new RedisStore({ client: client(), prefix: p, node: 'a', lookbackMs: 86_400_000 });
    const policy = loadSettings(undefined).policy;
    const events = [
      makeEvent({ kind: 'connect' }),
      makeEvent({ kind: 'auth-result', success: false, user: 'u@example.org', pwhash: 'a', protocol: 'imap' }),
      makeEvent({ kind: 'auth-result', success: true, user: 'u@example.org', pwhash: 'b', protocol: 'imap' }),
      makeEvent({ kind: 'message', user: 'u@example.org', recipients: 3, size: 1000, sender: 'u@example.org' }),
      makeEvent({ kind: 'recipient', recipient: 'r@example.net', recipients: 1 }),
    ];
    for (const ev of events) {
      const pl = plan(ev, policy);
      const r = await s.apply(pl, 0);
      const d = decide(ev, policy, pl, r);
      await s.recordHits(
        ev,
        [{ rule: 'x', subject: ev.ip, count: 1, limit: 1, action: 'reject', observe: false, reason: 'r' }],
        0,
      );
      await s.commit(d.effects, 0, 'mailwarden');
    }
    await s.commit(
      [
        banEffect(policy, '2001:db8:9:1::/64', {
          rule: 'm',
          reason: 'r',
          aggregate: { prefix: '2001:db8:9::/48', member: '2001:db8:9:1::/64', threshold: 3 },
        }),
        { type: 'suspend', user: 'u@example.org', rule: 'm', reason: 'r', durationMs: 60_000, evidence: {} },
      ],
      0,
      'cli',
    );
    const keys = server.cli('--scan', '--pattern', `{${p}}:*`).split('\n').filter(Boolean);
    assert.ok(keys.length >= 15, keys.join(' '));
    for (const k of keys) assert.ok(Number(server.cli('pttl', k)) > 0, `${k} has no TTL`);
    for (const kind of [
      'c:',
      'ban:',
      'bans',
      'blen',
      'blz:',
      'susp:',
      'susps',
      'off:',
      'agg:',
      'aggof:',
      'audit:',
      'athr:',
    ]) {
      assert.ok(
        keys.some((k) => k.startsWith(`{${p}}:${kind}`)),
        `a ${kind} key`,
      );
    }
  });

  void test("bans, suspensions and lifts are published for the nodes' caches", async () => {
    const p = prefix();
    const s = new RedisStore({ client: client(), prefix: p, node: 'a', lookbackMs: 86_400_000 });
    const listener = new RedisStore({ client: client(), prefix: p, node: 'b', lookbackMs: 86_400_000 });
    const seen: StoreEvent[] = [];
    let ready = 0;
    await listener.subscribe(
      (e) => seen.push(e),
      () => ready++,
    );
    const policy = loadSettings(undefined).policy;
    await s.commit([banEffect(policy, '198.51.100.9', { rule: 'm', reason: 'r', durationMs: 60_000 })], 0, 'cli');
    await s.commit(
      [{ type: 'suspend', user: 'p@example.org', rule: 'm', reason: 'r', durationMs: 60_000, evidence: {} }],
      0,
      'cli',
    );
    await s.unban('198.51.100.9', 'cli', 0, 'x');
    await s.resume('p@example.org', 'cli', 0, 'x');
    const until = Date.now() + 2000;
    while (seen.length < 4 && Date.now() < until) await sleep(20);
    assert.deepEqual(
      seen.map((e) => e.t),
      ['ban', 'suspend', 'unban', 'resume'],
    );
    const first = seen[0];
    assert.ok(
      first?.t === 'ban' && first.rec.subject === '198.51.100.9' && first.rec.until - first.rec.since === 60_000,
    );
    assert.ok(ready >= 1);
    await listener.close();
  });

  void test('a restored outage: bans and suspensions kept unless Redis has longer ones; lifts only of older records', async () => {
    const p = prefix();
    const s = new RedisStore({ client: client(), prefix: p, node: 'a', lookbackMs: 86_400_000 });
    const now = Date.now();
    const policy = loadSettings(undefined).policy;
    await s.commit(
      [banEffect(policy, '198.51.100.20', { rule: 'm', reason: 'long', durationMs: 3_600_000 })],
      0,
      'cli',
    );
    await s.commit([banEffect(policy, '198.51.100.21', { rule: 'm', reason: 'x', durationMs: 3_600_000 })], 0, 'cli');
    const rec = (subject: string, ms: number): BanRecord => ({
      subject,
      since: now,
      until: now + ms,
      rule: 'local',
      reason: 'made during the outage',
      offence: 1,
      actor: 'mailwarden',
    });
    const changed = await s.restore(
      [
        { t: 'ban', rec: rec('198.51.100.20', 60_000), node: 'b' },
        { t: 'ban', rec: rec('198.51.100.22', 60_000), node: 'b' },
        { t: 'unban', subject: '198.51.100.21', time: now - 3_600_000 },
        {
          t: 'suspend',
          rec: {
            user: 'o@example.org',
            since: now,
            until: now + 60_000,
            rule: 'local',
            reason: 'r',
            actor: 'mailwarden',
          },
          node: 'b',
        },
        {
          t: 'audit',
          row: {
            id: 1,
            time: now,
            kind: 'ban',
            subject: '198.51.100.22',
            rule: 'local',
            reason: 'made during the outage',
            actor: 'mailwarden',
            evidence: { offence: 1 },
          },
          node: 'b',
        },
      ],
      0,
    );
    assert.equal(changed, 3);
    const bans = await s.listBans(0);
    assert.deepEqual(bans.map((b) => [b.subject, b.reason]).sort(), [
      ['198.51.100.20', 'long'],
      ['198.51.100.21', 'x'],
      ['198.51.100.22', 'made during the outage'],
    ]);
    assert.deepEqual(
      (await s.listSuspensions(0)).map((x) => x.user),
      ['o@example.org'],
    );
    const [row] = await s.auditFor(['198.51.100.22'], 5);
    assert.deepEqual([row?.kind, row?.node, row?.evidence], ['ban', 'b', { offence: 1 }]);
    await s.restore([{ t: 'unban', subject: '198.51.100.21', time: Date.now() + SECOND }], 0);
    assert.deepEqual((await s.listBans(0)).map((b) => b.subject).sort(), ['198.51.100.20', '198.51.100.22']);
  });

  // No allowlist and no counter on the events asked: only bans decide.
  const anyAddress = rulesPolicy(
    '  - {name: helos, on: [helo], key: ip, count: events, limit: 10, window: 1m}',
    'allowlist: {networks: []}',
  );
  /** The ban the store answers for a CONNECT from `ip`. */
  const banFor = async (s: RedisStore, ip: string): Promise<string | undefined> =>
    (await s.apply(plan(makeEvent({ ip }), anyAddress), 0)).ban?.subject;

  void test('a ban of a new prefix length made by another node holds at once; a node looks up only lengths in force', async () => {
    const p = prefix();
    const c = client();
    const a = new RedisStore({ client: c, prefix: p, node: 'a', lookbackMs: 86_400_000 });
    const b = new RedisStore({ client: client(), prefix: p, node: 'b', lookbackMs: 86_400_000 });
    const ask = (ip: string): Promise<string | undefined> => banFor(a, ip);
    assert.equal(await ask('198.18.1.1'), undefined); // node a learns: no ban, no length
    const calls = (): number => {
      const m = /cmdstat_evalsha:calls=(\d+)/.exec(server.cli('info', 'commandstats'));
      return Number(m?.[1] ?? 0);
    };
    await b.commit([banEffect(anyAddress, '198.18.0.0/15', { durationMs: 60_000 })], 0, 'cli');
    let before = calls();
    assert.equal(await ask('198.18.1.1'), '198.18.0.0/15', 'seen on the first request after it');
    assert.equal(calls() - before, 2, 'one answer with the new lengths, then the decision');
    before = calls();
    assert.equal(await ask('198.19.255.255'), '198.18.0.0/15');
    assert.equal(await ask('198.20.0.0'), undefined);
    assert.equal(calls() - before, 2, 'one round trip each once the lengths are known');
    assert.deepEqual(
      server.cli('hkeys', `{${p}}:blen`).split('\n').filter(Boolean).sort(),
      ['4/15', 'v'],
      'the only length in force',
    );
    await b.commit([banEffect(anyAddress, '2001:db8:ff00::/40', { durationMs: 60_000 })], 0, 'cli');
    assert.equal(await ask('2001:db8:ffff::1'), '2001:db8:ff00::/40');
    await b.unban('198.18.0.0/15', 'cli', 0, 'done');
    await b.unban('2001:db8:ff00::/40', 'cli', 0, 'done');
    assert.equal(server.cli('exists', `{${p}}:blen`), '0', 'no ban, no index');
    assert.equal(await ask('198.18.1.1'), undefined);
  });

  void test('bans made before the index of lengths existed (or after it was lost) are found: it is rebuilt', async () => {
    const p = prefix();
    const s = new RedisStore({ client: client(), prefix: p, node: 'a', lookbackMs: 86_400_000 });
    await s.commit(
      [
        banEffect(anyAddress, '203.0.112.0/23', { durationMs: 60_000 }),
        banEffect(anyAddress, '192.0.2.9', { durationMs: 60_000 }),
      ],
      0,
      'cli',
    );
    const ask = (ip: string): Promise<string | undefined> => banFor(s, ip);
    assert.equal(await ask('203.0.113.5'), '203.0.112.0/23');
    const index = server.cli('--scan', '--pattern', `{${p}}:bl*`).split('\n').filter(Boolean);
    assert.ok(index.length >= 3, index.join(' '));
    server.cli('del', ...index);
    // A fresh store knows no lengths; so does one whose index was lost.
    const fresh = new RedisStore({ client: client(), prefix: p, node: 'b', lookbackMs: 86_400_000 });
    assert.equal(await banFor(fresh, '203.0.112.1'), '203.0.112.0/23');
    assert.equal(await ask('192.0.2.9'), '192.0.2.9');
    assert.equal(await ask('203.0.114.1'), undefined);
  });

  void test('a damaged ban in Redis is enforced with a bounded end and listed; it never makes a decision throw', async () => {
    const p = prefix();
    const warnings: string[] = [];
    const s = new RedisStore({
      client: client(),
      prefix: p,
      node: 'a',
      lookbackMs: 86_400_000,
      warn: (_f, m) => warnings.push(m),
    });
    await s.commit([banEffect(anyAddress, '198.51.100.44', { durationMs: 60_000 })], 0, 'cli');
    // As an older version, a hand edit or a damaged restore could leave it.
    server.cli('hset', `{${p}}:ban:198.51.100.44`, 'until', '1e300', 'since', 'x', 'offence', '-3');
    const ev = makeEvent({ ip: '198.51.100.44' });
    const r = await s.apply(plan(ev, anyAddress), 0);
    const now = Date.now();
    assert.ok(r.ban && r.ban.until > now && r.ban.until <= now + MAX_DURATION_MS, String(r.ban?.until));
    assert.equal(r.ban.offence, 1);
    const d = decide(ev, anyAddress, plan(ev, anyAddress), r);
    assert.equal(d.action, 'reject');
    assert.match(d.reason, /blocked until \d{4}-\d\d-\d\dT/);
    await s.apply(plan(ev, anyAddress), 0);
    assert.equal(warnings.length, 1, 'reported once, not on every request');
    assert.match(warnings[0] ?? '', /until 1e\+300 is more than 3650d away/);
    const [listed] = await s.listBans(0);
    assert.equal(listed?.subject, '198.51.100.44');
    assert.ok(Number.isFinite(new Date(listed.until).getTime()));
  });

  void test('a damaged item queued during an outage is skipped or repaired; the push goes through', async () => {
    const s = new RedisStore({ client: client(), prefix: prefix(), node: 'a', lookbackMs: 86_400_000 });
    const now = Date.now();
    const rec = (subject: string, until: unknown): BanRecord =>
      ({ subject, since: now, until, rule: 'local', reason: 'r', offence: 1, actor: 'mailwarden' }) as BanRecord;
    const changed = await s.restore(
      [
        { t: 'ban', rec: rec('not-an-address', now + 60_000), node: 'b' },
        { t: 'ban', rec: rec('198.51.100.70', 'garbage'), node: 'b' },
        { t: 'unban', subject: '198.51.100.71', time: Number.NaN },
        { t: 'ban', rec: rec('198.51.100.72', now + 60_000), node: 'b' },
      ],
      0,
    );
    assert.equal(changed, 2);
    const bans = await s.listBans(0);
    assert.deepEqual(bans.map((b) => b.subject).sort(), ['198.51.100.70', '198.51.100.72']);
    assert.ok((bans.find((b) => b.subject === '198.51.100.70')?.until ?? 0) <= Date.now() + MAX_DURATION_MS);
  });
});
