/*
 * Findings to engine events: a Dovecot connection told twice (its auth
 * process's lines, its login process's summary) counts each attempt once,
 * with auth_verbose on or off; log results carry no password fingerprint.
 * Then the echo filter: a login result the Dovecot hook reported is not
 * counted again from a log line, whichever comes first.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { MailEvent } from '../../src/engine/types.js';
import { HookEcho } from '../../src/logs/echo.js';
import { LogEvents } from '../../src/logs/events.js';
import { recogniseMailLine } from '../../src/logs/recognise.js';
import { makeEvent, T0 } from '../helpers/policy.js';

const AUTH = (n: number, session = 'S1') =>
  `2026-11-27 23:31:4${n} auth: Info: passwd-file(alice@mailprobe.test,198.51.100.1,<${session}>): Password mismatch`;
const SUMMARY = (attempts: number, session = 'S1') =>
  `2026-11-27 23:31:59 imap-login: Info: Disconnected: Connection closed (auth failed, ${attempts} attempts in 18 secs): user=<alice@mailprobe.test>, method=PLAIN, rip=198.51.100.1, lip=192.0.2.1, session=<${session}>`;

function run(lines: string[]): Array<{ e: MailEvent; span: number }> {
  const events = new LogEvents();
  const out: Array<{ e: MailEvent; span: number }> = [];
  for (const l of lines) {
    const f = recogniseMailLine(l);
    if (f) events.emit(f, T0, (e, span) => out.push({ e, span }));
  }
  return out;
}

describe('logs: LogEvents', () => {
  test('auth_verbose on: each attempt counted at its auth line, the summary adds none', () => {
    const out = run([AUTH(1), AUTH(2), AUTH(3), SUMMARY(3)]);
    assert.equal(out.length, 3);
    for (const { e } of out) {
      assert.equal(e.kind, 'auth-result');
      assert.equal(e.success, false);
      assert.equal(e.pwhash, undefined, 'a log line has no password fingerprint');
      assert.equal(e.ip, '198.51.100.1');
      assert.equal(e.user, 'alice@mailprobe.test');
      assert.equal(e.time, T0);
    }
  });

  test('auth_verbose off: the summary counts all its attempts; a summary with more adds the difference', () => {
    const off = run([SUMMARY(3)]);
    assert.equal(off.length, 3);
    assert.ok(off.every(({ e, span }) => e.protocol === 'imap' && span === 18_000));
    assert.equal(run([AUTH(1), SUMMARY(3)]).length, 3);
    // Sessions are kept apart, and one's summary does not eat another's.
    assert.equal(run([AUTH(1, 'A'), AUTH(2, 'B'), SUMMARY(1, 'A'), SUMMARY(2, 'B')]).length, 3);
  });

  test('a success ends its session: its failures were counted, the Login line is one success', () => {
    const out = run([
      AUTH(1),
      '2026-11-27 23:32:32 imap-login: Info: Login: user=<alice@mailprobe.test>, method=PLAIN, rip=198.51.100.1, lip=192.0.2.1, mpid=1, session=<S1>',
    ]);
    assert.deepEqual(
      out.map(({ e }) => e.success),
      [false, true],
    );
  });

  test('what Postfix refused becomes its own kind of event, with the service as the context', () => {
    const out = run([
      'Nov 27 23:32:43 mx postfix/submission/smtpd[1]: lost connection after AUTH from unknown[198.51.100.2]',
    ]);
    assert.equal(out.length, 1);
    assert.deepEqual(
      { kind: out[0]?.e.kind, ip: out[0]?.e.ip, protocol: out[0]?.e.protocol, context: out[0]?.e.context },
      { kind: 'lost-after-auth', ip: '198.51.100.2', protocol: 'smtp', context: 'submission' },
    );
  });
});

describe('logs: HookEcho', () => {
  const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const failure = (ip: string, time: number, over: Partial<MailEvent> = {}) =>
    makeEvent({ kind: 'auth-result', ip, time, success: false, refused: false, user: 'alice', ...over });

  test('a hook report answers for one log line of the same address and outcome; the others go on', async () => {
    let now = T0;
    const released: MailEvent[] = [];
    const echo = new HookEcho({ now: () => now, release: (e) => released.push(e), graceMs: 20 });
    echo.reported(failure('198.51.100.1', T0, { pwhash: '0abc' }));
    echo.hold(failure('198.51.100.1', T0 + 2000), 0); // Postfix's SASL line, 2 s after the report: matched
    echo.hold(failure('198.51.100.1', T0 + 2000), 0); // a second failure the hook did not see: counted
    echo.hold(failure('198.51.100.2', T0 + 2000), 0); // another address
    echo.hold(failure('198.51.100.1', T0 + 2000, { success: true }), 0); // another outcome
    now += 25;
    await wait(40);
    assert.deepEqual(
      released.map((e) => `${e.ip} ${e.success}`),
      ['198.51.100.1 false', '198.51.100.2 false', '198.51.100.1 true'],
    );
    assert.deepEqual(echo.stats, { matched: 1, released: 3 });
  });

  test('the log line may come first (Dovecot logs before it reports): held for the grace, then matched', async () => {
    const released: MailEvent[] = [];
    const echo = new HookEcho({ now: Date.now, release: (e) => released.push(e), graceMs: 50 });
    echo.hold(failure('198.51.100.3', Date.now()), 0);
    await wait(10);
    echo.reported(failure('198.51.100.3', Date.now(), { pwhash: '0abc' }));
    await wait(80);
    assert.deepEqual(released, []);
    assert.equal(echo.stats.matched, 1);
  });

  test("a login process's summary matches reports as old as its span, not older", async () => {
    const released: MailEvent[] = [];
    const echo = new HookEcho({ now: Date.now, release: (e) => released.push(e), graceMs: 10 });
    const t = Date.now();
    echo.reported(failure('198.51.100.4', t - 17_000));
    echo.reported(failure('198.51.100.4', t - 60_000));
    echo.hold(failure('198.51.100.4', t), 18_000);
    echo.hold(failure('198.51.100.4', t), 18_000);
    await wait(40);
    assert.equal(echo.stats.matched, 1, 'the report 17 s old is within the 18 s; the one a minute old is not');
    assert.equal(released.length, 1);
  });

  test('flush decides everything held at once (at stop); a flood is bounded', () => {
    const released: MailEvent[] = [];
    const echo = new HookEcho({ now: Date.now, release: (e) => released.push(e), graceMs: 60_000 });
    for (let i = 0; i < 25_000; i++) echo.hold(failure(`198.51.${i >> 8}.${i & 255}`, Date.now()), 0);
    assert.ok(echo.waiting <= 20_000, `held ${echo.waiting}`);
    assert.equal(released.length, 5_000, 'the oldest beyond the bound were decided early');
    echo.flush();
    assert.equal(echo.waiting, 0);
    assert.equal(released.length, 25_000);
  });
});
