/*
 * Cluster mode end to end: two real `mailwarden serve` processes (mx1, mx2)
 * sharing one real redis-server through MAILWARDEN_STORE. What one server
 * counts, the other sees; what one bans, the other refuses at once.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli, type DaemonProcess } from '../helpers/daemon.js';
import { attempt } from '../helpers/dovecot.js';
import { ask, connectRequest, request } from '../helpers/postfix.js';
import { startTwoNodes, type TwoNodes } from '../helpers/redis.js';

const CONFIG = `
rules:
  - name: user-messages-per-hour
    limit: 4
`;

type Reply = { status?: number; msg?: string };

async function dovecot(d: DaemonProcess, command: 'allow' | 'report', body: Record<string, unknown>): Promise<Reply> {
  const r = await fetch(`http://127.0.0.1:${d.dovecotPort}/dovecot/policy?command=${command}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const reply = (await r.json()) as Reply & { error?: string };
  assert.equal(r.status, 200, JSON.stringify(reply));
  return reply;
}

/** One failed login as Dovecot reports it: allow, then report success:false. */
async function failLogin(d: DaemonProcess, ip: string, login: string, pwhash: string): Promise<Reply> {
  const a = await dovecot(d, 'allow', attempt(ip, login, pwhash));
  await dovecot(d, 'report', { ...attempt(ip, login, pwhash), success: false, policy_reject: (a.status ?? 0) < 0 });
  return a;
}

async function status(d: DaemonProcess): Promise<{ node: string; store: Record<string, unknown> }> {
  const token = readFileSync(join(d.env.MAILWARDEN_DATA as string, 'admin.token'), 'utf8').trim();
  const res = await fetch(`http://127.0.0.1:${d.adminPort}/v1/status`, {
    headers: { authorization: `Bearer ${token}` },
  });
  return (await res.json()) as { node: string; store: Record<string, unknown> };
}

const connect = connectRequest;

describe('cluster mode: two daemons on one Redis', () => {
  let nodes: TwoNodes;
  let a: DaemonProcess;
  let b: DaemonProcess;

  before(async () => {
    nodes = await startTwoNodes(CONFIG, 'cluster');
    ({ a, b } = nodes);
  });
  after(() => nodes?.stop());

  test('both nodes run on Redis and say so in their status', async () => {
    for (const [d, node] of [
      [a, 'mx1'],
      [b, 'mx2'],
    ] as const) {
      const s = await status(d);
      assert.equal(s.node, node);
      assert.equal(s.store.backend, 'redis');
      assert.equal(s.store.mode, 'redis');
      assert.match(d.output(), /store: connected to Redis \(mode redis\)/);
    }
  });

  test('password guessing spread over both servers is counted as one attack and banned everywhere', async () => {
    const ip = '198.51.100.66';
    // 11 different wrong passwords, alternating servers: neither sees more than 6 of them.
    const replies: Reply[] = [];
    for (let i = 0; i < 11; i++)
      replies.push(
        await failLogin(i % 2 === 0 ? a : b, ip, 'victim@example.org', `beef${i.toString(16).padStart(4, '0')}`),
      );
    // From the 4th distinct password a delay (auth-guess-delay: 3), from the 7th a refusal before the
    // password check (auth-guess-refuse: 6): on either server, which each saw only half of the failures.
    assert.deepEqual(
      replies.map((r) => (r.status === 0 ? 'allow' : (r.status ?? 0) > 0 ? 'delay' : 'refuse')),
      ['allow', 'allow', 'allow', 'delay', 'delay', 'delay', 'refuse', 'refuse', 'refuse', 'refuse', 'refuse'],
    );
    // The 11th failure banned the address (auth-guess-ban: 10 per hour), on every protocol and server.
    for (const d of [a, b]) {
      assert.match(
        await ask(d.postfixPort, connect(ip)),
        /^action=554 5\.7\.1 Access denied: 198\.51\.100\.66 is blocked/,
      );
      const next = await dovecot(d, 'allow', attempt(ip, 'someone@example.org', 'abcd'));
      assert.equal(next.status, -1);
    }
    const list = await runCli(['bans', 'list'], b.env);
    assert.match(list.stdout, /198\.51\.100\.66 .*rule auth-guess-ban/);
  });

  test('a ban made through node A (bans add) is refused by node B at once', async () => {
    const ip = '203.0.113.50';
    const cached = Number((await status(b)).store.activeBans);
    assert.equal(await ask(b.postfixPort, connect(ip, 1)), 'action=DUNNO');
    const add = await runCli(['bans', 'add', ip, '--duration', '1h', '--reason', 'abuse report'], a.env);
    assert.equal(add.code, 0, add.stderr);
    assert.match(
      await ask(b.postfixPort, connect(ip, 2)),
      /^action=554 5\.7\.1 Access denied: 203\.0\.113\.50 is blocked .*rule manual/,
    );
    // B's local cache (used when Redis is unreachable) learned it by pub/sub.
    const until = Date.now() + 3000;
    let seen = 0;
    while (Date.now() < until) {
      seen = Number((await status(b)).store.activeBans);
      if (seen > cached) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(seen, cached + 1, `B's cached bans: ${seen}`);
    // And lifting it on B frees it on A.
    const rm = await runCli(['bans', 'remove', ip], b.env);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal(await ask(a.postfixPort, connect(ip, 3)), 'action=DUNNO');
  });

  test("a user's hourly message limit is shared by both servers", async () => {
    const eom = (i: number): string =>
      request({
        protocol_state: 'END-OF-MESSAGE',
        client_address: `192.0.2.${20 + i}`,
        client_port: 41000 + i,
        sasl_method: 'PLAIN',
        sasl_username: 'sender@example.org',
        sender: 'sender@example.org',
        recipient: '',
        recipient_count: 1,
        size: 1000,
        instance: `inst${i}`,
        policy_context: 'submission',
      });
    const replies: string[] = [];
    for (let i = 0; i < 6; i++) replies.push(await ask(i % 2 === 0 ? a.postfixPort : b.postfixPort, eom(i)));
    assert.deepEqual(replies.slice(0, 4), Array<string>(4).fill('action=DUNNO'));
    for (const r of replies.slice(4)) assert.match(r, /^action=450 4\.7\.1 .*rule user-messages-per-hour/);
  });

  test('the audit trail is shared and names the node that wrote each row', async () => {
    const r = await runCli(['explain', '198.51.100.66', '--json'], a.env);
    assert.equal(r.code, 0, r.stderr);
    const e = JSON.parse(r.stdout) as { audit: Array<{ kind: string; node?: string; rule: string }> };
    const ban = e.audit.find((x) => x.kind === 'ban');
    assert.ok(ban, JSON.stringify(e.audit));
    assert.ok(ban.node === 'mx1' || ban.node === 'mx2', JSON.stringify(ban));
    assert.ok(
      e.audit.some((x) => x.kind === 'limit'),
      'refusals of both nodes are audited',
    );
  });
});
