/*
 * Alert delivery to a real SMTP sink (smtp-server) and a real HTTP receiver
 * that checks the HMAC signature; retries after failures; cooldown; bounded
 * queue; a dead relay never blocks the caller; the default recipient
 * (postmaster@localhost) and the throttled failure log.
 */
import assert from 'node:assert/strict';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SMTPServer } from 'smtp-server';
import { describeAlerts, FAILURE_LOG_INTERVAL_MS, Notifier, type AlertSettings } from '../../src/actions/notify.js';
import { loadSettings, loadSettingsFromText } from '../../src/config/load.js';
import type { NotifyEffect } from '../../src/engine/types.js';
import { captureLogger } from '../helpers/harness.js';
import { freePort } from '../helpers/daemon.js';

const SECRET = 'a-webhook-secret-of-some-length';
const effect = (subject = 'alice@example.org'): NotifyEffect => ({
  type: 'notify',
  rule: 'compromise-burst',
  subject,
  user: subject,
  ip: '203.0.113.7',
  action: 'hold',
  reason:
    'Unusual sending: recipients from alice@example.org far above its usual rate (over 50 per 1h, rule compromise-burst)',
  evidence: { count: 51, limit: 50, window: '1h', ip: '203.0.113.7' },
});
const made = {
  bans: [
    {
      subject: '203.0.113.7',
      since: 0,
      until: Date.parse('2026-12-01T00:00:00Z'),
      rule: 'compromise-burst',
      reason: 'x',
      offence: 1,
      actor: 'mailwarden',
    },
  ],
  suspensions: [
    {
      user: 'alice@example.org',
      since: 0,
      until: Date.parse('2026-11-29T00:00:00Z'),
      rule: 'compromise-burst',
      reason: 'x',
      actor: 'mailwarden',
    },
  ],
};

interface Received {
  body: string;
  signature: string | undefined;
}

/** The mail as a person reads it (nodemailer wraps long lines as quoted-printable). */
function decodeQuotedPrintable(s: string): string {
  return s.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
}

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    let b = '';
    req.on('data', (c: Buffer) => (b += c.toString()));
    req.on('end', () => resolve(b));
  });
}

describe('alerts to a real SMTP sink and a real webhook receiver', () => {
  let smtp: SMTPServer;
  let smtpPort: number;
  const mails: Array<{ from: string; to: string[]; data: string }> = [];
  let http: Server;
  let httpPort: number;
  const hooks: Received[] = [];
  let failFirst = 0;

  before(async () => {
    smtp = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      logger: false,
      onData(stream, session, cb) {
        let data = '';
        stream.on('data', (c: Buffer) => (data += c.toString()));
        stream.on('end', () => {
          mails.push({
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((r) => r.address),
            data,
          });
          cb();
        });
      },
    });
    smtpPort = await freePort();
    await new Promise<void>((r) => smtp.listen(smtpPort, '127.0.0.1', r));
    http = createServer((req, res) => {
      void readBody(req).then((body) => {
        if (failFirst > 0) {
          failFirst--;
          res.writeHead(503).end('busy');
          return;
        }
        hooks.push({ body, signature: req.headers['x-mailwarden-signature'] as string | undefined });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    httpPort = (http.address() as AddressInfo).port;
  });
  after(async () => {
    await new Promise<void>((r) => smtp.close(r));
    await new Promise<void>((r) => http.close(() => r()));
  });

  const settings = (over: Partial<AlertSettings> = {}): AlertSettings => ({
    cooldownMs: 3_600_000,
    queueMax: 100,
    retries: 3,
    email: {
      host: '127.0.0.1',
      port: smtpPort,
      from: 'mailwarden@mx.example.org',
      to: ['admin@example.org', 'oncall@example.org'],
    },
    webhook: { url: `http://127.0.0.1:${httpPort}/hook`, secret: SECRET, timeoutMs: 2000 },
    ...over,
  });

  test('one alert reaches the administrators by mail and the webhook, signed, with evidence and the commands to run', async () => {
    const logs: Array<Record<string, unknown>> = [];
    const n = new Notifier(settings(), captureLogger(logs), 'mx1');
    const a = n.notify(effect(), Date.parse('2026-11-28T10:00:00Z'), made);
    assert.ok(a);
    // The receivers have the alert before the notifier has read their answers: wait for both.
    await waitFor(() => mails.length === 1 && hooks.length === 1 && n.stats.sent.email + n.stats.sent.webhook === 2);
    const mail = mails[0] && { ...mails[0], data: decodeQuotedPrintable(mails[0].data) };
    assert.deepEqual(mail?.to, ['admin@example.org', 'oncall@example.org']);
    assert.match(mail?.data ?? '', /Subject: \[mailwarden\] compromise-burst: alice@example\.org \(hold, suspended\)/);
    assert.match(mail?.data ?? '', /Source: {2}203\.0\.113\.7/);
    assert.match(mail?.data ?? '', /mailwarden users resume alice@example\.org/);
    assert.match(mail?.data ?? '', /mailwarden bans remove 203\.0\.113\.7/);
    assert.match(mail?.data ?? '', /count: 51/);

    const hook = hooks[0] as Received;
    const want = `sha256=${createHmac('sha256', SECRET).update(hook.body).digest('hex')}`;
    assert.ok(
      hook.signature && timingSafeEqual(Buffer.from(hook.signature), Buffer.from(want)),
      'valid HMAC-SHA256 signature',
    );
    const json = JSON.parse(hook.body) as {
      type: string;
      rule: string;
      user: string;
      ip: string;
      node: string;
      suspension: { until: string };
    };
    assert.deepEqual(
      [json.type, json.rule, json.user, json.ip, json.node],
      ['mailwarden.alert', 'compromise-burst', 'alice@example.org', '203.0.113.7', 'mx1'],
    );
    assert.equal(json.suspension.until, '2026-11-29T00:00:00.000Z');
    assert.deepEqual(n.stats.sent, { email: 1, webhook: 1 });
    n.close();
  });

  test('one alert per rule and subject per cooldown', async () => {
    mails.length = 0;
    hooks.length = 0;
    const n = new Notifier(
      settings({ webhook: { url: undefined, secret: undefined, timeoutMs: 1000 } }),
      captureLogger([]),
      'mx1',
    );
    const t = Date.parse('2026-11-28T11:00:00Z');
    assert.ok(n.notify(effect('bob@example.org'), t, made));
    assert.equal(n.notify(effect('bob@example.org'), t + 60_000, made), undefined);
    assert.ok(n.notify(effect('carol@example.org'), t + 60_000, made), 'another subject is not held back');
    assert.ok(n.notify(effect('bob@example.org'), t + 3_600_001, made), 'after the cooldown');
    await waitFor(() => mails.length === 3);
    assert.equal(n.stats.suppressed, 1);
    n.close();
  });

  test('a receiver that fails first gets the alert on a retry', async () => {
    hooks.length = 0;
    failFirst = 1;
    const logs: Array<Record<string, unknown>> = [];
    const n = new Notifier(
      settings({ email: { host: '127.0.0.1', port: 1, from: 'a@b', to: [] } }),
      captureLogger(logs),
      'mx1',
    );
    n.notify(effect('dan@example.org'), Date.now(), made);
    // As above: the receiver has it before the notifier has read the answer.
    await waitFor(() => hooks.length === 1 && n.stats.sent.webhook === 1, 8000);
    assert.equal(n.stats.retried, 1);
    assert.equal(n.stats.sent.webhook, 1);
    // The failure names the receiver by its origin only (a webhook's path may hold its token), then the recovery.
    assert.deepEqual(
      logs
        .filter((l) => Number(l.level) >= 30 && String(l.msg).startsWith('alert delivery'))
        .map((l) => [l.level, l.msg]),
      [
        [
          50,
          `alert delivery failed: webhook to http://127.0.0.1:${httpPort}: webhook answered HTTP 503 (will retry 3 more times)`,
        ],
        [30, `alert delivery works again: webhook to http://127.0.0.1:${httpPort}`],
      ],
    );
    n.close();
  });

  test('a dead relay never blocks the caller, is retried, then counted as failed', async () => {
    const dead = await freePort();
    const logs: Array<Record<string, unknown>> = [];
    const n = new Notifier(
      settings({
        retries: 1,
        email: { host: '127.0.0.1', port: dead, from: 'a@b.example', to: ['x@y.example'] },
        webhook: { url: undefined, secret: undefined, timeoutMs: 500 },
      }),
      captureLogger(logs),
      'mx1',
    );
    const started = process.hrtime.bigint();
    n.notify(effect('erin@example.org'), Date.now(), made);
    const tookMs = Number(process.hrtime.bigint() - started) / 1e6;
    assert.ok(tookMs < 50, `notify() returned after ${tookMs} ms`);
    await waitFor(() => n.stats.failed.email === 1, 8000);
    assert.equal(n.stats.retried, 1);
    const errors = logs.filter((l) => l.level === 50).map((l) => String(l.msg));
    assert.equal(errors.length, 1, 'the retry that failed too is held back within the minute');
    assert.match(
      errors[0] ?? '',
      new RegExp(
        `^alert delivery failed: email to x@y\\.example via 127\\.0\\.0\\.1:${dead}: connect ECONNREFUSED .*\\(will retry 1 more time\\)$`,
      ),
    );
    n.close();
  });

  test('by default an alert goes to postmaster@localhost through the local MTA', async () => {
    const defaults = loadSettings(undefined).alerts;
    assert.deepEqual(defaults.email, {
      host: '127.0.0.1',
      port: 25,
      from: 'mailwarden@localhost',
      to: ['postmaster@localhost'],
    });
    assert.equal(describeAlerts(defaults), 'email to postmaster@localhost via 127.0.0.1:25');
    // Port 25 may be taken here: only the relay is moved to the sink, every other setting is the default.
    mails.length = 0;
    const s = loadSettingsFromText(`alerts:\n  email:\n    relay: "127.0.0.1:${smtpPort}"\n`, 'mailwarden.yaml').alerts;
    assert.equal(describeAlerts(s), `email to postmaster@localhost via 127.0.0.1:${smtpPort}`);
    const n = new Notifier(s, captureLogger([]), 'mx1');
    assert.deepEqual(n.channels, ['email']);
    n.notify(effect('fay@example.org'), Date.now(), made);
    await waitFor(() => mails.length === 1);
    assert.deepEqual([mails[0]?.from, mails[0]?.to], ['mailwarden@localhost', ['postmaster@localhost']]);
    assert.match(mails[0]?.data ?? '', /Subject: \[mailwarden\] compromise-burst: fay@example\.org/);
    assert.equal(n.stats.sent.email, 1);
    n.close();
  });

  test('alerts.email.to: [] switches email alerts off, and the start-log description says so', async () => {
    mails.length = 0;
    const s = loadSettingsFromText(
      `alerts:\n  email:\n    relay: "127.0.0.1:${smtpPort}"\n    to: []\n`,
      'mailwarden.yaml',
    ).alerts;
    assert.equal(describeAlerts(s), 'off (alerts.email.to is empty and alerts.webhook.url is unset)');
    const logs: Array<Record<string, unknown>> = [];
    const n = new Notifier(s, captureLogger(logs), 'mx1');
    assert.ok(n.notify(effect('gus@example.org'), Date.now(), made));
    assert.deepEqual(logs.find((l) => String(l.msg).startsWith('ALERT'))?.channels, []);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(mails.length, 0);
    n.close();
    // The webhook alone: named by its origin, never its path (which may hold a token).
    const hookOnly = {
      ...s,
      webhook: { url: 'https://hooks.example.org/T0/secret-path', secret: undefined, timeoutMs: 1 },
    };
    assert.equal(describeAlerts(hookOnly), 'webhook to https://hooks.example.org');
  });

  test('a relay outage is logged once per channel per minute, with a count of the failures held back', async () => {
    const closed = await freePort();
    const clock = { now: Date.parse('2026-11-28T12:00:00Z') };
    const logs: Array<Record<string, unknown>> = [];
    const s = loadSettingsFromText(
      `alerts:\n  retries: 0\n  email:\n    relay: "127.0.0.1:${closed}"\n`,
      'mailwarden.yaml',
    ).alerts;
    const n = new Notifier(s, captureLogger(logs), 'mx1', () => clock.now);
    const errors = (): string[] => logs.filter((l) => l.level === 50).map((l) => String(l.msg));
    for (const u of ['h1', 'h2', 'h3']) n.notify(effect(`${u}@example.org`), clock.now, made);
    await waitFor(() => n.stats.failed.email === 3);
    assert.equal(errors().length, 1);
    assert.match(
      errors()[0] ?? '',
      new RegExp(
        `^alert delivery failed: email to postmaster@localhost via 127\\.0\\.0\\.1:${closed}: connect ECONNREFUSED [^ ]+ \\(gave up after 1 attempt; alert [0-9a-f-]+ not delivered\\)$`,
      ),
    );
    clock.now += FAILURE_LOG_INTERVAL_MS - 1;
    n.notify(effect('h4@example.org'), clock.now, made);
    await waitFor(() => n.stats.failed.email === 4);
    assert.equal(errors().length, 1, 'still within the minute');
    clock.now += 1;
    n.notify(effect('h5@example.org'), clock.now, made);
    await waitFor(() => n.stats.failed.email === 5);
    assert.equal(errors().length, 2);
    assert.match(errors()[1] ?? '', /not delivered; 3 more failures on this channel not logged since the last line\)$/);
    assert.equal(logs.filter((l) => l.level === 50)[1]?.suppressed, 3);
    n.close();
  });

  test('the queue is bounded: the oldest alerts are dropped and counted', () => {
    const n = new Notifier(
      settings({
        queueMax: 2,
        email: { host: '127.0.0.1', port: 1, from: 'a@b', to: [] },
        webhook: { url: 'http://127.0.0.1:1/x', secret: undefined, timeoutMs: 200 },
      }),
      captureLogger([]),
      'mx1',
    );
    for (let i = 0; i < 10; i++) n.notify(effect(`u${i}@example.org`), Date.now(), made);
    // two are in flight at once, two wait; the rest were dropped
    assert.equal(n.stats.dropped, 6);
    n.close();
  });
});
