/*
 * Cluster mode when Redis goes away: two real daemons on one real
 * redis-server, which is killed (SIGKILL) in the middle of traffic and later
 * frozen (SIGSTOP, a slow Redis). Every request must still be answered at
 * once, the status must show the fallback, and what was decided meanwhile
 * must reach Redis when it is back.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli, type DaemonProcess } from '../helpers/daemon.js';
import { connectRequest, PolicyClient } from '../helpers/postfix.js';
import { startTwoNodes, type RedisServer, type TwoNodes } from '../helpers/redis.js';

const CONFIG = `
rules:
  - name: smtp-connections-per-ip
    limit: 5
    then: { action: reject, ban: ip }
`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const connect = connectRequest;

interface Status {
  store: {
    backend: string;
    mode: string;
    fallbacks: number;
    localDecisions: number;
    pending: number;
    redis: { connected: boolean };
  };
  postfix: { budgetMisses: number; errors: number };
}

async function status(d: DaemonProcess): Promise<Status> {
  const token = readFileSync(join(d.env.MAILWARDEN_DATA as string, 'admin.token'), 'utf8').trim();
  const res = await fetch(`http://127.0.0.1:${d.adminPort}/v1/status`, {
    headers: { authorization: `Bearer ${token}` },
  });
  return (await res.json()) as Status;
}

async function waitMode(d: DaemonProcess, mode: string, ms = 8000): Promise<Status> {
  const until = Date.now() + ms;
  for (;;) {
    const s = await status(d);
    if (s.store.mode === mode) return s;
    if (Date.now() > until) throw new Error(`mode still ${s.store.mode}, wanted ${mode}:\n${d.output().slice(-2000)}`);
    await sleep(50);
  }
}

/** Sends `n` requests one after another on one connection, like an smtpd process; returns replies and the slowest answer. */
async function traffic(
  port: number,
  n: number,
  ip: (i: number) => string,
  during?: (i: number) => Promise<void>,
): Promise<{ replies: string[]; maxMs: number }> {
  const c = await PolicyClient.open({ port });
  const replies: string[] = [];
  let maxMs = 0;
  try {
    for (let i = 0; i < n; i++) {
      if (during) await during(i);
      const t0 = performance.now();
      replies.push(await c.send(connect(ip(i), 30000 + i)));
      maxMs = Math.max(maxMs, performance.now() - t0);
    }
  } finally {
    c.close();
  }
  return { replies, maxMs };
}

const count = (text: string, re: RegExp): number => (text.match(new RegExp(re.source, 'g')) ?? []).length;

describe('cluster mode: Redis killed, then frozen, in the middle of traffic', () => {
  let nodes: TwoNodes;
  let redis: RedisServer;
  let a: DaemonProcess;
  let b: DaemonProcess;

  before(async () => {
    nodes = await startTwoNodes(CONFIG, 'outage');
    ({ redis, a, b } = nodes);
  });
  after(() => nodes?.stop());

  test('killed: every request is answered at once from local memory; bans made meanwhile reach Redis when it returns', async () => {
    // A ban made on B before the outage: A's local cache learns it by pub/sub.
    const early = await runCli(['bans', 'add', '192.0.2.200', '--duration', '1h'], b.env);
    assert.equal(early.code, 0, early.stderr);
    await sleep(200);

    let killedAt = -1;
    const run = await traffic(
      a.postfixPort,
      300,
      (i) => `10.1.${i >> 8}.${i & 255}`,
      async (i) => {
        if (i === 100) {
          killedAt = i;
          await redis.kill('SIGKILL');
        }
      },
    );
    assert.equal(killedAt, 100);
    assert.equal(run.replies.length, 300);
    for (const r of run.replies) assert.match(r, /^action=/);
    assert.ok(
      run.replies.every((r) => r === 'action=DUNNO'),
      'fresh addresses: DUNNO from Redis and from local memory alike',
    );
    assert.ok(run.maxMs < 1000, `slowest answer ${run.maxMs.toFixed(0)} ms`);

    const s = await waitMode(a, 'local-fallback');
    // B has had no traffic since the kill: its status shows the outage all the same.
    assert.equal((await waitMode(b, 'local-fallback')).store.redis.connected, false);
    assert.equal(s.store.backend, 'redis');
    assert.equal(s.store.redis.connected, false);
    assert.ok(s.store.fallbacks >= 1);
    assert.ok(s.store.localDecisions >= 199, `local decisions ${s.store.localDecisions}`);
    assert.equal(
      count(a.output(), /deciding from local memory \(local-fallback\)/),
      1,
      'the change of mode is logged once',
    );

    // The ban made before the outage still holds (local cache), on the policy port, now.
    assert.match(
      (await traffic(a.postfixPort, 1, () => '192.0.2.200')).replies[0] ?? '',
      /^action=554 5\.7\.1 Access denied: 192\.0\.2\.200/,
    );

    // Decisions go on locally: a rule bans, and an administrator bans.
    const flood = await traffic(a.postfixPort, 7, () => '198.51.100.99');
    assert.deepEqual(
      flood.replies.map((r) => r.slice(0, 14)),
      [...Array<string>(5).fill('action=DUNNO'), 'action=554 5.7', 'action=554 5.7'],
    );
    const manual = await runCli(
      ['bans', 'add', '203.0.113.99', '--duration', '2h', '--reason', 'during the outage'],
      a.env,
    );
    assert.equal(manual.code, 0, manual.stderr);
    assert.equal((await status(a)).store.pending, 2);

    await redis.restart();
    const back = await waitMode(a, 'redis');
    assert.equal(back.store.pending, 0);
    await waitMode(b, 'redis');
    assert.equal(count(a.output(), /Redis answers again/), 1);

    // Both bans made during the outage are in Redis now, and B enforces them through it.
    assert.equal(redis.cli('exists', '{mailwarden}:ban:198.51.100.99', '{mailwarden}:ban:203.0.113.99'), '2');
    assert.match(redis.cli('hget', '{mailwarden}:ban:203.0.113.99', 'reason'), /during the outage/);
    assert.equal(redis.cli('hget', '{mailwarden}:ban:198.51.100.99', 'node'), 'mx1');
    for (const ip of ['198.51.100.99', '203.0.113.99']) {
      assert.match((await traffic(b.postfixPort, 1, () => ip)).replies[0] ?? '', /^action=554 5\.7\.1 Access denied/);
    }
    // And so is the audit trail written locally meanwhile.
    const ex = await runCli(['explain', '203.0.113.99', '--json'], b.env);
    const audit = (JSON.parse(ex.stdout) as { audit: Array<{ kind: string; node?: string }> }).audit;
    assert.ok(
      audit.some((r) => r.kind === 'ban' && r.node === 'mx1'),
      JSON.stringify(audit),
    );
    const st = await status(a);
    assert.equal(st.postfix.errors, 0);
  });

  test('frozen (SIGSTOP): answers keep coming within the budget, the node falls back, and comes back on SIGCONT', async () => {
    await waitMode(a, 'redis');
    const before = await status(a);
    const run = await traffic(
      a.postfixPort,
      60,
      (i) => `10.2.0.${i}`,
      (i) => {
        if (i === 10) process.kill(redis.pid, 'SIGSTOP');
        return Promise.resolve();
      },
    );
    try {
      assert.equal(run.replies.length, 60);
      for (const r of run.replies) assert.equal(r, 'action=DUNNO');
      // store.timeout is 50 ms, well inside Postfix's 100 ms budget: never a hang, never a budget miss.
      assert.ok(run.maxMs < 400, `slowest answer ${run.maxMs.toFixed(0)} ms`);
      const s = await waitMode(a, 'local-fallback');
      assert.equal(s.store.fallbacks, before.store.fallbacks + 1);
      assert.equal(s.postfix.budgetMisses, before.postfix.budgetMisses);
    } finally {
      process.kill(redis.pid, 'SIGCONT');
    }
    await waitMode(a, 'redis');
    assert.equal(count(a.output(), /Redis answers again/), 2);
  });
});
