import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { counterKey } from '../../../src/engine/plan.js';
import { banForAnHour, startHarness, type Harness } from '../../helpers/harness.js';
import { capturedRequests, PolicyClient, portOf, request } from '../../helpers/postfix.js';

const peekRate = async (h: Harness, rule: string, subject: string): Promise<number> => {
  const r = h.settings.policy.rules.find((x) => x.name === rule);
  assert.ok(r, `rule ${rule} exists`);
  const [n] = await h.store.peek(
    [
      {
        type: 'rate',
        rule,
        key: counterKey(rule, subject),
        cost: 0,
        limit: r.limit,
        windowMs: r.windowMs,
        charge: 'never',
        flags: 0,
      },
    ],
    h.clock.now,
  );
  return n as number;
};

describe('Postfix policy server: captured Postfix 3.7 traffic', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ unix: true });
  });
  after(() => h.close());

  test('every captured request gets exactly one action, in order, on one persistent connection', async () => {
    const reqs = capturedRequests();
    assert.ok(reqs.length >= 150, `expected the full capture, got ${reqs.length}`);
    const c = await PolicyClient.open({ port: portOf(h.bound[0] as string) });
    for (const r of reqs) {
      const reply = await c.send(r.text);
      assert.equal(reply, 'action=DUNNO', `${r.test}: ${r.attrs.protocol_state} from ${r.attrs.client_address}`);
    }
    c.close();
    assert.equal(h.server.stats.badRequests, 0);
    assert.equal(h.server.stats.errors, 0);
  });

  test('pipelined requests are all answered in order (also on the unix socket)', async () => {
    const c = await PolicyClient.open({ path: h.bound[1] as string });
    const texts = capturedRequests()
      .slice(0, 40)
      .map((r) => r.text);
    const replies = await Promise.all(texts.map((t) => c.send(t)));
    assert.equal(replies.length, 40);
    assert.ok(replies.every((r) => r === 'action=DUNNO'));
    c.close();
  });

  test('unknown attributes from a newer Postfix are tolerated', async () => {
    const c = await PolicyClient.open({ port: portOf(h.bound[0] as string) });
    const reply = await c.send(
      request({ client_address: '198.51.100.3', server_hostname: 'mx.example', compatibility_level: '3.9' }),
    );
    assert.equal(reply, 'action=DUNNO');
    c.close();
  });
});

describe('Postfix policy server: decisions', () => {
  let h: Harness;
  let c: PolicyClient;
  before(async () => {
    h = await startHarness({
      yaml: `
rules:
  - name: user-messages-per-hour
    limit: 2
  - name: user-messages-per-day
    limit: 10
  - name: smtp-connections-per-ip
    limit: 3
`,
    });
    c = await PolicyClient.open({ port: portOf(h.bound[0] as string) });
  });
  after(async () => {
    c.close();
    await h.close();
  });

  test('connections over the per-IP limit are tempfailed with 450 4.7.1 naming the rule', async () => {
    const ip = '203.0.113.5';
    for (let i = 0; i < 3; i++) {
      assert.equal(
        await c.send(request({ protocol_state: 'CONNECT', client_address: ip, client_port: 1000 + i, instance: '' })),
        'action=DUNNO',
      );
    }
    const r = await c.send(request({ protocol_state: 'CONNECT', client_address: ip, client_port: 1003, instance: '' }));
    assert.match(r, /^action=450 4\.7\.1 Too many requests from 203\.0\.113\.5 .*rule smtp-connections-per-ip/);
  });

  test('a refused message is not counted as sent, by any rule', async () => {
    const eom = (n: number): string =>
      request({
        protocol_state: 'END-OF-MESSAGE',
        sasl_username: 'Carol@Example.ORG',
        sasl_method: 'PLAIN',
        recipient: '',
        recipient_count: 1,
        size: 900,
        instance: `msg.${n}`,
        client_port: 2000 + n,
      });
    assert.equal(await c.send(eom(1)), 'action=DUNNO');
    assert.equal(await c.send(eom(2)), 'action=DUNNO');
    assert.match(await c.send(eom(3)), /^action=450 4\.7\.1 .*rule user-messages-per-hour/);
    assert.match(await c.send(eom(4)), /^action=450 4\.7\.1 /);
    // user names are case-folded; the refused messages charged neither the hourly nor the daily counter
    assert.equal(await peekRate(h, 'user-messages-per-hour', 'carol@example.org'), 2);
    assert.equal(await peekRate(h, 'user-messages-per-day', 'carol@example.org'), 2);
    assert.equal(await peekRate(h, 'user-recipients-per-day', 'carol@example.org'), 2);
  });

  test('a UTF-8 name cut inside a character between two reads is decoded whole', async () => {
    const bytes = Buffer.from(
      request({
        protocol_state: 'END-OF-MESSAGE',
        sasl_username: 'Jörg@Example.ORG',
        sasl_method: 'PLAIN',
        recipient: '',
        recipient_count: 1,
        instance: 'utf8.1',
        client_port: 2100,
      }),
    );
    const cut = bytes.indexOf(Buffer.from('ö')) + 1; // between the two bytes of ö
    const reply = new Promise<string>((resolve) => c.socket.once('data', (d) => resolve(String(d))));
    c.socket.write(bytes.subarray(0, cut));
    await new Promise((r) => setTimeout(r, 50)); // the server reads the first part on its own
    c.socket.write(bytes.subarray(cut));
    assert.equal((await reply).trim(), 'action=DUNNO');
    assert.equal(await peekRate(h, 'user-messages-per-hour', 'jörg@example.org'), 1);
  });

  test('the 4 identical RCPT requests of smtpd_delay_reject=yes are counted once', async () => {
    const rcpt = request({ client_address: '198.51.100.77', recipient: 'bob@mailprobe.test', instance: 'dup.1' });
    for (let i = 0; i < 4; i++) assert.equal(await c.send(rcpt), 'action=DUNNO');
    assert.equal(await peekRate(h, 'inbound-recipients-per-ip', '198.51.100.77'), 1);
    assert.ok(h.server.stats.repeats >= 3);
    // a different recipient in the same transaction is a new recipient
    await c.send(request({ client_address: '198.51.100.77', recipient: 'carol@mailprobe.test', instance: 'dup.1' }));
    assert.equal(await peekRate(h, 'inbound-recipients-per-ip', '198.51.100.77'), 2);
  });

  test('a banned network is refused at every stage with 554 5.7.1', async () => {
    await banForAnHour(h, '192.0.2.0/24');
    for (const state of ['CONNECT', 'EHLO', 'MAIL', 'RCPT', 'DATA', 'END-OF-MESSAGE', 'VRFY', 'ETRN']) {
      const r = await c.send(
        request({ protocol_state: state, client_address: '192.0.2.44', instance: `ban.${state}` }),
      );
      assert.match(r, /^action=554 5\.7\.1 Access denied: 192\.0\.2\.0\/24 is blocked until /, state);
    }
    // IPv4-mapped IPv6 is the same client
    assert.match(
      await c.send(request({ protocol_state: 'CONNECT', client_address: '::ffff:192.0.2.45', instance: '' })),
      /^action=554 5\.7\.1/,
    );
    assert.equal(
      await c.send(request({ protocol_state: 'CONNECT', client_address: '192.0.3.1', instance: '' })),
      'action=DUNNO',
    );
  });

  test('a suspended user is refused at MAIL with a 5.7.1 text that says to contact the administrator', async () => {
    await h.store.commit(
      [{ type: 'suspend', user: 'dave@example.org', rule: 'manual', reason: 'x', durationMs: 3_600_000, evidence: {} }],
      h.clock.now,
      'test',
    );
    const r = await c.send(
      request({
        protocol_state: 'MAIL',
        sasl_username: 'dave@example.org',
        sasl_method: 'PLAIN',
        client_address: '198.51.100.200',
        instance: '',
      }),
    );
    assert.match(r, /^action=554 5\.7\.1 Account dave@example\.org is suspended .*contact your mail administrator/);
    // the same address is fine for an unauthenticated session
    assert.equal(
      await c.send(request({ protocol_state: 'MAIL', client_address: '198.51.100.200', instance: 'x2' })),
      'action=DUNNO',
    );
  });
});

describe('Postfix policy server: bad input', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ idle: '300' });
  });
  after(() => h.close());
  const port = (): number => portOf(h.bound[0] as string);

  test('a line over 16 KiB closes that connection, logged once; the next client is answered', async () => {
    const bad = await PolicyClient.open({ port: port() });
    bad.socket.write(`request=smtpd_access_policy\nsender=${'x'.repeat(20_000)}\n\n`);
    assert.equal(await bad.waitClosed(2000), true);
    const warnings = h.logs.filter((l) => String(l.msg).includes('line longer than'));
    assert.equal(warnings.length, 1);
    const good = await PolicyClient.open({ port: port() });
    assert.equal(await good.send(request({})), 'action=DUNNO');
    good.close();
  });

  test('garbage, too many attributes and invalid addresses get DUNNO, and the connection stays usable', async () => {
    const c = await PolicyClient.open({ port: port() });
    assert.equal(await c.send('hello there\n\n'), 'action=DUNNO');
    const many = `${Array.from({ length: 300 }, (_, i) => `x${i}=1`).join('\n')}\n\n`;
    assert.equal(await c.send(many), 'action=DUNNO');
    assert.equal(await c.send(request({ client_address: '999.1.1.1' })), 'action=DUNNO');
    assert.equal(await c.send(request({ client_address: 'unknown' })), 'action=DUNNO');
    assert.equal(await c.send(request({ protocol_state: 'BOGUS' })), 'action=DUNNO');
    assert.equal(await c.send(request({ request: 'junk' })), 'action=DUNNO');
    assert.equal(await c.send('\u0000\u0001=\xff\n\n'), 'action=DUNNO');
    assert.equal(await c.send(request({})), 'action=DUNNO');
    assert.equal(c.closed, false);
    assert.ok(h.server.stats.badRequests >= 7, JSON.stringify(h.server.stats));
    // logged once per connection, not once per bad request
    const perConn = h.logs.filter(
      (l) => l.level === 40 && String(l.msg).includes('DUNNO') && l.peer === `127.0.0.1:${c.socket.localPort}`,
    );
    assert.equal(perConn.length, 1);
    c.close();
  });

  test('an idle or half-open connection is closed after the idle timeout without disturbing others', async () => {
    const idle = await PolicyClient.open({ port: port() });
    idle.socket.write('request=smtpd_access_policy\nprotocol_state=RCPT\n'); // never finished
    const other = await PolicyClient.open({ port: port() });
    assert.equal(await other.send(request({})), 'action=DUNNO');
    assert.equal(await idle.waitClosed(3000), true);
    assert.ok(h.server.stats.idleClosed >= 1);
    other.close();
    const third = await PolicyClient.open({ port: port() });
    assert.equal(await third.send(request({ client_port: 5 })), 'action=DUNNO');
    third.close();
  });

  test('a client that vanishes mid-request does not hurt the daemon', async () => {
    const c = await PolicyClient.open({ port: port() });
    c.socket.write('request=smtpd_access_policy\nprotocol_st');
    c.socket.destroy();
    const next = await PolicyClient.open({ port: port() });
    assert.equal(await next.send(request({ client_port: 6 })), 'action=DUNNO');
    next.close();
  });
});

describe('Postfix policy server: the mail server is never blocked by our failure', () => {
  // Servers and clients are closed in t.after, so a failed assertion fails fast instead of hanging the run.
  test('a decision slower than the budget is answered DUNNO and counted', async (t) => {
    const h = await startHarness({ budget: '50', evaluate: () => () => new Promise(() => undefined) });
    t.after(() => h.close());
    const c = await PolicyClient.open({ port: portOf(h.bound[0] as string) });
    t.after(() => c.close());
    assert.equal(await c.send(request({})), 'action=DUNNO');
    assert.equal(h.server.stats.budgetMisses, 1);
  });

  test('a failing store or engine is answered DUNNO and counted, and the daemon keeps serving', async (t) => {
    const h = await startHarness({
      evaluate: (d) => (e) => (e.ip === '192.0.2.66' ? Promise.reject(new Error('disk on fire')) : d.evaluate(e)),
    });
    t.after(() => h.close());
    const c = await PolicyClient.open({ port: portOf(h.bound[0] as string) });
    t.after(() => c.close());
    assert.equal(await c.send(request({ client_address: '192.0.2.66' })), 'action=DUNNO');
    assert.equal(h.server.stats.errors, 1);
    assert.equal(await c.send(request({ client_address: '192.0.2.67' })), 'action=DUNNO');
    assert.ok(h.logs.some((l) => l.level === 50 && String(l.msg).includes('decision failed')));
  });
});
