/*
 * Smoke test of the e2e harness itself: a real Postfix and a real Dovecot
 * (test/e2e/stack.ts) pointed at two tiny in-test policy responders, driven
 * by the clients in test/e2e/clients.ts. Each scenario uses its own source
 * address, because Dovecot delays auth per remote IP after a failure.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingHttpHeaders, type Server as HttpServer } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { imapLogin, pop3Login, sendMail, smtpSession } from './clients.js';
import { MAIL_USERS, startMailStack, type MailStack } from './stack.js';

type Attrs = Record<string, string>;

interface PostfixResponder {
  port: number;
  requests: Attrs[];
  /** Connections accepted so far / currently open (smtpd keeps one per process). */
  accepted: number;
  open(): number;
  decide: (req: Attrs) => string;
  close(): Promise<void>;
}

/** Postfix policy protocol: `name=value` lines, empty line; answers `action=...`. */
async function startPostfixResponder(): Promise<PostfixResponder> {
  const sockets = new Set<Socket>();
  const r: PostfixResponder = {
    port: 0,
    requests: [],
    accepted: 0,
    open: () => sockets.size,
    decide: () => 'DUNNO',
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    r.accepted += 1;
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const req: Attrs = {};
        for (const line of block.split('\n')) {
          const eq = line.indexOf('=');
          if (eq > 0) req[line.slice(0, eq)] = line.slice(eq + 1);
        }
        r.requests.push(req);
        sock.write(`action=${r.decide(req)}\n\n`);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const a = server.address();
  r.port = typeof a === 'object' && a ? a.port : 0;
  return r;
}

interface DovecotRequest {
  url: string;
  command: string;
  headers: IncomingHttpHeaders;
  json: Record<string, unknown>;
}

interface DovecotResponder {
  port: number;
  requests: DovecotRequest[];
  close(): Promise<void>;
}

/** Dovecot auth policy: POST JSON, answers {"status":0,"msg":""}. */
async function startDovecotResponder(): Promise<DovecotResponder> {
  const requests: DovecotRequest[] = [];
  const server: HttpServer = createHttpServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      const url = req.url ?? '';
      let json: Record<string, unknown> = {};
      try {
        json = JSON.parse(body) as Record<string, unknown>;
      } catch {
        /* recorded as {} */
      }
      requests.push({
        url,
        command: new URL(url, 'http://x').searchParams.get('command') ?? '',
        headers: req.headers,
        json,
      });
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end('{"status":0,"msg":""}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const a = server.address();
  return {
    port: typeof a === 'object' && a ? a.port : 0,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function waitFor<T>(what: string, fn: () => T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie (exited, not reaped by PID 1 here) counts as gone.
  try {
    return !/^\d+ \(.*\) [ZX] /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

describe('e2e harness: real Postfix + Dovecot on loopback', { timeout: 90_000 }, () => {
  let pf: PostfixResponder;
  let dv: DovecotResponder;
  let stack: MailStack;

  before(async () => {
    pf = await startPostfixResponder();
    dv = await startDovecotResponder();
    pf.decide = (req) =>
      req.protocol_state === 'CONNECT' && req.client_address === '127.0.0.63' ? '554 5.7.1 go away' : 'DUNNO';
    stack = await startMailStack({
      postfixPolicy: `inet:127.0.0.1:${pf.port}`,
      dovecotPolicyUrl: `http://127.0.0.1:${dv.port}/dovecot/policy`,
      dovecotPolicyHeader: 'X-Mailwarden-Key: s3cret',
    });
  });

  after(async () => {
    await stack?.stop();
    await pf?.close();
    await dv?.close();
  });

  test('IMAP login succeeds and Dovecot asks the policy server allow/allow/report', async () => {
    const r = await imapLogin({
      port: stack.ports.imap,
      localAddress: '127.0.0.61',
      user: MAIL_USERS.alice.user,
      password: MAIL_USERS.alice.password,
    });
    assert.equal(r.ok, true, r.line);
    assert.match(r.line, /^a1 OK/);
    const seen = await waitFor('allow/allow/report from 127.0.0.61', () => {
      const mine = dv.requests.filter((q) => q.json.remote === '127.0.0.61');
      return mine.length >= 3 && mine;
    });
    assert.deepEqual(
      seen.map((q) => q.command),
      ['allow', 'allow', 'report'],
    );
    for (const q of seen) {
      assert.equal(q.json.protocol, 'imap');
      assert.equal(q.json.login, MAIL_USERS.alice.user);
      assert.equal(q.headers['x-mailwarden-key'], 's3cret');
      assert.ok(q.url.startsWith('/dovecot/policy?command='), q.url);
    }
    assert.equal(seen[2]!.json.success, true);
    // pwhash with the default nonce, as computed in docs/PROTOCOL.md
    assert.equal(seen[0]!.json.pwhash, '04a1');
  });

  test('IMAP login with a wrong password fails', async () => {
    const r = await imapLogin({
      port: stack.ports.imap,
      localAddress: '127.0.0.64',
      user: MAIL_USERS.alice.user,
      password: 'wrong',
    });
    assert.equal(r.ok, false);
    assert.match(r.line, /^a1 NO /);
    const report = await waitFor('report from 127.0.0.64', () =>
      dv.requests.find((q) => q.json.remote === '127.0.0.64' && q.command === 'report'),
    );
    assert.equal(report.json.success, false);
    assert.match(stack.dovecotLog(), /Password mismatch/);
  });

  test('POP3 login succeeds', async () => {
    const r = await pop3Login({
      port: stack.ports.pop3,
      localAddress: '127.0.0.65',
      user: MAIL_USERS.bob.user,
      password: MAIL_USERS.bob.password,
    });
    assert.equal(r.ok, true, r.line);
    assert.match(r.line, /^\+OK/);
    await waitFor('pop3 report', () =>
      dv.requests.find((q) => q.json.remote === '127.0.0.65' && q.json.protocol === 'pop3' && q.command === 'report'),
    );
  });

  test('SMTP AUTH on submission (through Dovecot) and a delivered message', async () => {
    const res = await sendMail({
      port: stack.ports.submission,
      localAddress: '127.0.0.62',
      auth: { user: MAIL_USERS.bob.user, pass: MAIL_USERS.bob.password },
      from: MAIL_USERS.bob.user,
      to: [MAIL_USERS.alice.user],
      subject: 'e2e smoke submission',
    });
    assert.equal(res.greeting.code, 220, res.transcript.join('\n'));
    assert.equal(res.auth?.code, 235, res.transcript.join('\n'));
    assert.equal(res.data?.code, 250, res.transcript.join('\n'));
    assert.equal(res.ok, true);

    const mine = await waitFor('END-OF-MESSAGE from 127.0.0.62', () => {
      const m = pf.requests.filter((q) => q.client_address === '127.0.0.62');
      return m.some((q) => q.protocol_state === 'END-OF-MESSAGE') && m;
    });
    assert.deepEqual(
      mine.map((q) => q.protocol_state),
      ['CONNECT', 'MAIL', 'RCPT', 'END-OF-MESSAGE'],
    );
    for (const q of mine) {
      assert.equal(q.policy_context, 'submission');
      assert.equal(q.server_port, String(stack.ports.submission));
    }
    for (const q of mine.slice(1)) assert.equal(q.sasl_username, MAIL_USERS.bob.user);
    assert.equal(mine[2]!.recipient, MAIL_USERS.alice.user);

    const smtpAuth = dv.requests.filter((q) => q.json.remote === '127.0.0.62');
    assert.deepEqual(
      smtpAuth.map((q) => [q.command, q.json.protocol, q.json.login]),
      [
        ['allow', 'smtp', MAIL_USERS.bob.user],
        ['allow', 'smtp', MAIL_USERS.bob.user],
        ['report', 'smtp', MAIL_USERS.bob.user],
      ],
    );

    const msgs = await stack.waitForMail('alice');
    assert.equal(msgs.length, 1);
    assert.match(msgs[0]!, /^Subject: e2e smoke submission$/m);
    assert.match(msgs[0]!, /^Delivered-To: alice@mailprobe\.test$/m);
  });

  test('MX port: unauthenticated inbound mail for postmaster lands in the admin mailbox', async () => {
    const res = await sendMail({
      port: stack.ports.smtp,
      localAddress: '127.0.0.66',
      from: 'someone@example.org',
      to: ['postmaster@mailprobe.test'],
      subject: 'e2e smoke mx',
    });
    assert.equal(res.ok, true, res.transcript.join('\n'));
    const eom = pf.requests.find((q) => q.client_address === '127.0.0.66' && q.protocol_state === 'END-OF-MESSAGE');
    assert.equal(eom?.policy_context, '');
    assert.equal(eom?.sasl_username, '');
    const msgs = await stack.waitForMail('admin@mailprobe.test');
    assert.match(msgs[0]!, /^Subject: e2e smoke mx$/m);
    // relaying without AUTH is refused by smtpd_relay_restrictions
    const relay = await sendMail({
      port: stack.ports.smtp,
      localAddress: '127.0.0.66',
      from: 'a@example.org',
      to: ['b@example.net'],
    });
    assert.equal(relay.rcpts[0]?.code, 554, relay.transcript.join('\n'));
  });

  test('a policy 554 at CONNECT becomes the greeting', async () => {
    const s = await smtpSession({ port: stack.ports.smtp, localAddress: '127.0.0.63' });
    try {
      assert.equal(s.greeting.code, 554, s.greeting.text);
      assert.match(s.greeting.text, /go away/);
      assert.equal(s.ehloReply, undefined);
    } finally {
      await s.quit();
    }
    assert.ok(pf.requests.some((q) => q.client_address === '127.0.0.63' && q.protocol_state === 'CONNECT'));
    await waitFor('postfix log line', () => /reject: CONNECT from unknown\[127\.0\.0\.63\]/.test(stack.postfixLog()));
  });

  test('restartPostfixPolicyConnections makes smtpd reconnect to the policy server', async () => {
    assert.ok(pf.open() > 0, 'smtpd holds policy connections');
    const acceptedBefore = pf.accepted;
    await stack.restartPostfixPolicyConnections();
    await waitFor('policy connections closed', () => pf.open() === 0);
    const res = await sendMail({
      port: stack.ports.smtp,
      localAddress: '127.0.0.67',
      from: 'x@example.org',
      to: ['bob@mailprobe.test'],
    });
    assert.equal(res.ok, true, res.transcript.join('\n'));
    assert.equal(pf.accepted, acceptedBefore + 1);
    assert.ok(pf.requests.some((q) => q.client_address === '127.0.0.67' && q.protocol_state === 'END-OF-MESSAGE'));
  });

  test('reloadDovecot applies new settings to IMAP and to SMTP AUTH (Postfix reloaded too)', async () => {
    await stack.reloadDovecot({ auth_policy_server_api_header: 'X-Mailwarden-Key: changed' });
    const imap = await imapLogin({ port: stack.ports.imap, localAddress: '127.0.0.68', ...MAIL_USERS.carol });
    assert.equal(imap.ok, true, imap.line);
    const smtp = await sendMail({
      port: stack.ports.submission,
      localAddress: '127.0.0.69',
      auth: { user: MAIL_USERS.carol.user, pass: MAIL_USERS.carol.password },
      from: MAIL_USERS.carol.user,
      to: [MAIL_USERS.bob.user],
    });
    assert.equal(smtp.ok, true, smtp.transcript.join('\n'));
    for (const ip of ['127.0.0.68', '127.0.0.69']) {
      const mine = dv.requests.filter((q) => q.json.remote === ip);
      assert.ok(mine.length >= 2, ip);
      for (const q of mine) assert.equal(q.headers['x-mailwarden-key'], 'changed', ip);
    }
  });

  test('stop() stops both masters and every child, and removes the dir', async () => {
    const { postfix, dovecot } = stack.pids;
    assert.ok(alive(postfix) && alive(dovecot));
    const all = stack.processes();
    assert.ok(all.length > 4, `only ${all.length} processes`);
    await stack.stop();
    assert.equal(alive(postfix), false, 'postfix master still alive');
    assert.equal(alive(dovecot), false, 'dovecot master still alive');
    assert.deepEqual(all.filter(alive), [], 'processes left behind');
    assert.equal(existsSync(stack.dir), false);
    await stack.stop(); // idempotent
  });
});
