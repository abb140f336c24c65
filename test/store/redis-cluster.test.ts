/*
 * The shared store on a real three-node Redis Cluster (three redis-server
 * masters on loopback, slots assigned by `redis-cli --cluster create`): every
 * script runs without CROSSSLOT for a realistic mix of events, bans,
 * suspensions, audit and admin calls, all keys sit in the tag's one slot, and
 * a daemon configured with `store.cluster` runs on it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loadSettings } from '../../src/config/load.js';
import { decide } from '../../src/engine/decide.js';
import { plan } from '../../src/engine/plan.js';
import type { MailEvent } from '../../src/engine/types.js';
import { createRedisClient, RedisStore, type StoreEvent } from '../../src/store/redis.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { makeEvent } from '../helpers/policy.js';
import { PolicyClient, request } from '../helpers/postfix.js';
import { startRedisCluster, type RedisCluster } from '../helpers/redis.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('shared store on a three-node Redis Cluster', () => {
  let cluster: RedisCluster;
  const stores: RedisStore[] = [];
  before(async () => {
    cluster = await startRedisCluster(3);
  });
  after(async () => {
    // close() ends the store's connections, its pub/sub connection included (a Cluster client left open reconnects forever).
    for (const s of stores) await s.close();
    await cluster?.stop();
  });

  async function clusterStore(node: string, prefix = 'mailwarden'): Promise<RedisStore> {
    const c = createRedisClient(
      {
        url: 'redis://127.0.0.1:6379/0',
        prefix,
        timeoutMs: 50,
        cluster: cluster.ports.map((port) => ({ host: '127.0.0.1', port })),
      },
      `test:${node}`,
    );
    c.on('error', () => undefined);
    const until = Date.now() + 10_000;
    while (c.status !== 'ready') {
      if (Date.now() > until) throw new Error(`cluster client ${c.status}`);
      await sleep(20);
    }
    const s = new RedisStore({ client: c, prefix, node, lookbackMs: 30 * 86_400_000 });
    stores.push(s);
    return s;
  }

  test('slots are spread over three masters', () => {
    const info = cluster.nodes[0]?.cli('cluster', 'info') ?? '';
    assert.match(info, /cluster_state:ok/);
    assert.match(info, /cluster_known_nodes:3/);
    assert.match(info, /cluster_size:3/);
  });

  test('a realistic event mix through every script: no CROSSSLOT, decisions as on one server', async () => {
    const settings = loadSettings(undefined);
    const policy = settings.policy;
    const a = await clusterStore('mx1');
    const b = await clusterStore('mx2');
    const events: MailEvent[] = [];
    const seen: StoreEvent[] = [];
    await b.subscribe(
      (e) => seen.push(e),
      () => undefined,
    );
    for (let i = 0; i < 40; i++) {
      const ip = `198.51.100.${i % 20}`;
      const user = `user${i % 7}@example.org`;
      events.push(
        makeEvent({ kind: 'connect', ip }),
        makeEvent({ kind: 'helo', ip }),
        makeEvent({ kind: 'auth-attempt', ip, user, protocol: 'imap', pwhash: `aa${i}` }),
        makeEvent({ kind: 'auth-result', ip, user, protocol: 'imap', pwhash: `aa${i}`, success: i % 5 === 0 }),
        makeEvent({
          kind: 'recipient',
          ip,
          recipient: `r${i}@example.net`,
          sender: `s${i}@example.com`,
          recipients: 1,
        }),
        makeEvent({
          kind: 'message',
          ip,
          user,
          sender: user,
          recipients: 3,
          size: 2000,
          protocol: 'smtp',
          context: 'submission',
        }),
        makeEvent({ kind: 'connect', ip: `2001:db8:${i % 3}:${i}::1` }),
      );
    }
    // A guessing run from one address, split over both nodes, then a success: cracked (ban + suspension).
    const login = (pwhash: string, success: boolean) =>
      makeEvent({ kind: 'auth-result', ip: '203.0.113.7', user: 'v0@example.org', protocol: 'imap', pwhash, success });
    for (let i = 0; i < 6; i++) events.push(login(`bb${i}`, false));
    events.push(login('cc', true));
    let bans = 0;
    let suspensions = 0;
    let refused = 0;
    for (const [i, ev] of events.entries()) {
      const s = i % 2 === 0 ? a : b;
      const p = plan(ev, policy);
      const r = await s.apply(p, 0);
      const d = decide(ev, policy, p, r);
      if (d.action !== 'allow') refused++;
      const done = await s.commit(d.effects, 0, 'mailwarden');
      bans += done.bans.length;
      suspensions += done.suspensions.length;
      await s.recordHits(ev, d.hits, 0);
    }
    assert.ok(bans >= 1, 'the guessing run was banned');
    assert.equal(suspensions, 1, 'the cracked account was suspended');
    assert.ok(refused > 0);
    const banned = await a.listBans(0);
    assert.ok(
      banned.some((x) => x.subject === '203.0.113.7'),
      JSON.stringify(banned),
    );
    assert.deepEqual(
      (await b.listSuspensions(0)).map((x) => x.user),
      ['v0@example.org'],
    );
    const rejected = await b.apply(plan(makeEvent({ kind: 'connect', ip: '203.0.113.7' }), policy), 0);
    assert.equal(rejected.ban?.subject, '203.0.113.7');
    const audit = await a.auditFor(['203.0.113.7', 'v0@example.org'], 20);
    assert.ok(
      audit.some((x) => x.kind === 'ban'),
      JSON.stringify(audit),
    );
    assert.ok(audit.some((x) => x.kind === 'suspend'));
    const counts = await b.peek(plan(makeEvent({ kind: 'connect', ip: '198.51.100.1' }), policy).counters, 0);
    assert.deepEqual(counts, [2]);
    // IPv6 aggregation and admin calls
    const esc = policy.escalation;
    for (const n of [1, 2, 3]) {
      await a.commit(
        [
          {
            type: 'ban',
            subject: `2001:db8:77:${n}::/64`,
            rule: 'm',
            reason: 'r',
            evidence: {},
            escalation: esc,
            aggregate: { prefix: '2001:db8:77::/48', member: `2001:db8:77:${n}::/64`, threshold: 3 },
          },
        ],
        0,
        'cli',
      );
    }
    assert.ok((await b.listBans(0)).some((x) => x.subject === '2001:db8:77::/48'));
    assert.equal((await b.unban('2001:db8:77:1::/64', 'cli', 0, 'x'))?.subject, '2001:db8:77:1::/64');
    assert.equal((await a.resume('v0@example.org', 'cli', 0, 'x'))?.user, 'v0@example.org');
    assert.equal(await a.restore([{ t: 'unban', subject: '203.0.113.7', time: Date.now() + 1000 }], 0), 1);
    await a.refreshStats();
    assert.ok(a.stats(0).counterKeys > 50);
    const until = Date.now() + 2000;
    while (!seen.some((e) => e.t === 'resume') && Date.now() < until) await sleep(20);
    assert.ok(
      seen.some((e) => e.t === 'ban') && seen.some((e) => e.t === 'unban') && seen.some((e) => e.t === 'resume'),
      'pub/sub works on the cluster',
    );

    // Every key of the store sits in the slot of its tag, on one master.
    const slot = Number(cluster.nodes[0]?.cli('cluster', 'keyslot', '{mailwarden}'));
    const holders = cluster.nodes.filter((n) => Number(n.cli('cluster', 'countkeysinslot', String(slot))) > 0);
    assert.equal(holders.length, 1);
    const keys = Number(holders[0]?.cli('cluster', 'countkeysinslot', String(slot)));
    assert.ok(keys > 50, `${keys} keys in slot ${slot}`);
    for (const n of cluster.nodes)
      if (n !== holders[0]) assert.equal(n.cli('--scan', '--pattern', '{mailwarden}:*'), '');
  });

  test('two prefixes (two mail systems on one Cluster) live in different slots and never meet', async () => {
    const x = await clusterStore('x', 'mw-one');
    const y = await clusterStore('y', 'mw-two');
    const slotOf = (tag: string): string => cluster.nodes[0]?.cli('cluster', 'keyslot', tag) ?? '';
    assert.notEqual(slotOf('{mw-one}'), slotOf('{mw-two}'));
    const policy = loadSettings(undefined).policy;
    const ev = makeEvent({ kind: 'connect', ip: '192.0.2.44' });
    await x.apply(plan(ev, policy), 0);
    await x.apply(plan(ev, policy), 0);
    assert.deepEqual(await y.peek(plan(ev, policy).counters, 0), [0]);
    assert.deepEqual(await x.peek(plan(ev, policy).counters, 0), [2]);
  });

  test('a daemon configured with store.cluster decides through the Cluster', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mw-rcluster-'));
    let d: DaemonProcess | undefined;
    try {
      const yaml = [
        'node: edge1',
        'store:',
        '  backend: redis',
        '  prefix: mw-daemon',
        '  cluster:',
        ...cluster.ports.map((p) => `    - 127.0.0.1:${p}`),
        'rules:',
        '  - name: smtp-connections-per-ip',
        '    limit: 2',
      ].join('\n');
      writeFileSync(join(dir, 'mailwarden.yaml'), yaml);
      d = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') });
      const c = await PolicyClient.open({ port: d.postfixPort });
      const replies: string[] = [];
      for (let i = 0; i < 3; i++)
        replies.push(
          await c.send(
            request({ protocol_state: 'CONNECT', client_address: '192.0.2.99', client_port: 100 + i, instance: '' }),
          ),
        );
      c.close();
      assert.deepEqual(
        replies.map((r) => r.slice(0, 14)),
        ['action=DUNNO', 'action=DUNNO', 'action=450 4.7'],
      );
      const token = readFileSync(join(dir, 'data', 'admin.token'), 'utf8').trim();
      const st = (await (
        await fetch(`http://127.0.0.1:${d.adminPort}/v1/status`, { headers: { authorization: `Bearer ${token}` } })
      ).json()) as {
        node: string;
        store: { mode: string; localDecisions: number };
      };
      assert.deepEqual([st.node, st.store.mode, st.store.localDecisions], ['edge1', 'redis', 0]);
    } finally {
      await d?.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
