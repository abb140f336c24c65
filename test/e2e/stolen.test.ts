/*
 * End to end, issue 4: a stolen password on a real Postfix + Dovecot. The
 * attacker knows bob's password, logs in from a new address and tries to
 * send to 500 recipients. The first messages go out, the burst detector holds
 * the next one and suspends bob, the administrator's mailbox gets one alert
 * naming the rule and the address, and bob's IMAP login is refused
 * (suspensions.block_login). alice sends normally throughout.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort, runCli, startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { imapLogin, sendMail } from './clients.js';
import { MAIL_USERS, startMailStack, type MailStack } from './stack.js';

const { alice, bob } = MAIL_USERS;
const ATTACKER = '127.0.9.1';
const ALICE = '127.0.8.1';

describe('e2e: a stolen account is stopped and the administrator is told', { timeout: 240_000 }, () => {
  let dir: string;
  let mw: DaemonProcess;
  let stack: MailStack;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-stolen-'));
    const ports = { postfixPort: await freePort(), dovecotPort: await freePort(), adminPort: await freePort() };
    stack = await startMailStack({
      postfixPolicy: `inet:127.0.0.1:${ports.postfixPort}`,
      dovecotPolicyUrl: `http://127.0.0.1:${ports.dovecotPort}/dovecot/policy`,
      outbound: 'discard',
    });
    // Alerts go through the stack's own Postfix, to the administrator's mailbox there.
    writeFileSync(
      join(dir, 'mailwarden.yaml'),
      `allowlist: { networks: [] }
suspensions: { block_login: true }
alerts:
  email: { relay: "127.0.0.1:${stack.ports.smtp}", from: mailwarden@mailprobe.test, to: [${MAIL_USERS.admin.user}] }
`,
    );
    mw = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') }, ports);
  });
  after(async () => {
    await stack?.stop();
    await mw?.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  const aliceSends = (subject: string) =>
    sendMail({
      port: stack.ports.submission,
      localAddress: ALICE,
      auth: { user: alice.user, pass: alice.password },
      from: alice.user,
      to: [bob.user, 'partner@example.com'],
      subject,
    });

  test('the thief gets a few messages out, then is held and suspended; alice is not affected', async () => {
    assert.equal((await aliceSends('before')).ok, true);
    const results = [];
    // 50 messages of 10 recipients each; the thief gives up after being refused three times in a row
    for (let m = 0; m < 50 && results.slice(-3).filter((r) => !r.ok).length < 3; m++) {
      const to = Array.from({ length: 10 }, (_, i) => `victim${m * 10 + i}@example.net`);
      results.push(
        await sendMail({
          port: stack.ports.submission,
          localAddress: ATTACKER,
          auth: { user: bob.user, pass: bob.password },
          from: bob.user,
          to,
          subject: `spam ${m}`,
        }),
      );
      if (m === 3) assert.equal((await aliceSends('during')).ok, true, 'alice sends normally during the attack');
    }
    const said = results.map((r) => r.data?.text ?? r.mail?.text ?? r.auth?.text).join('\n');
    // 5 messages (50 recipients) are within the floor; the 6th is accepted into the hold queue, not delivered
    assert.deepEqual(
      results.map((r) => r.ok),
      [true, true, true, true, true, true, false, false, false],
      said,
    );
    // suspended, and with suspensions.block_login even the password no longer works, on SMTP AUTH too
    for (const r of results.slice(6)) {
      assert.match(
        r.auth?.text ?? '',
        /^535 5\.7\.8 .*Account bob@mailprobe\.test is suspended \(rule compromise-burst\); contact your mail administrator/,
        said,
      );
    }
    assert.match(
      stack.postfixLog(),
      /hold: END-OF-MESSAGE from unknown\[127\.0\.9\.1\]: .*Unusual sending: recipients from bob@mailprobe\.test/,
    );
    assert.equal((await aliceSends('after')).ok, true, 'alice still sends after the attack');
  });

  test('the administrator gets exactly one alert naming the rule, the user and the address', async () => {
    const mails = await stack.waitForMail('admin', 1, 30_000);
    const alerts = mails.filter((m) => m.includes('[mailwarden]'));
    assert.equal(alerts.length, 1, mails.map((m) => m.slice(0, 300)).join('\n---\n'));
    // unfold headers, undo quoted-printable soft breaks
    const text = (alerts[0] as string).replace(/\r?\n[ \t]+/g, ' ').replace(/=\r?\n/g, '');
    assert.match(text, /Subject: \[mailwarden\] compromise-burst: bob@mailprobe\.test \(hold, suspended\)/);
    assert.match(text, /Source: {2}127\.0\.9\.1/);
    assert.match(text, /mailwarden users resume bob@mailprobe\.test/);
  });

  test('bob is refused at IMAP login while suspended, and gets back in after an administrator resumes him', async () => {
    const refused = await imapLogin({
      port: stack.ports.imap,
      localAddress: '127.0.10.1',
      user: bob.user,
      password: bob.password,
    });
    assert.equal(refused.ok, false);
    assert.match(
      refused.line,
      /NO \[ALERT\] Account bob@mailprobe\.test is suspended \(rule compromise-burst\); contact your mail administrator/,
    );
    const explain = await runCli(['explain', bob.user], mw.env);
    assert.match(explain.stdout, /SUSPENDED: bob@mailprobe\.test until .* by mailwarden \(rule compromise-burst\)/);
    assert.equal((await runCli(['users', 'resume', bob.user], mw.env)).code, 0);
    const back = await imapLogin({
      port: stack.ports.imap,
      localAddress: '127.0.10.1',
      user: bob.user,
      password: bob.password,
    });
    assert.equal(back.ok, true, back.line);
  });
});
