/*
 * End to end, issue 3: a real attack tool. Debian's hydra, bounded to a
 * handful of passwords and loopback, against IMAP and SMTP AUTH of a real
 * Dovecot and Postfix wired to mailwarden. Dovecot's auth penalty stays on,
 * as Dovecot ships. hydra cannot pick its source address, so it comes from
 * 127.0.0.1; this file's config therefore trusts no network.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli, startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { imapLogin } from './clients.js';
import { GUESSING_CONFIG } from './config.js';
import { MAIL_USERS, startMailStack, type MailStack } from './stack.js';

/**
 * One hydra run: one user, passwords from a file, one task at a time with a 1 s wait,
 * stopping at the first password found.
 */
function hydra(
  user: string,
  passwords: string,
  port: number,
  url: string,
): Promise<{ code: number | null; out: string }> {
  const args = ['-I', '-t', '1', '-W', '1', '-f', '-l', user, '-P', passwords, '-s', String(port), url];
  return new Promise((resolve, reject) => {
    execFile('hydra', args, { timeout: 180_000 }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
        reject(new Error('hydra is not installed; scripts/install-system-deps.sh installs it'));
        return;
      }
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` });
    });
  });
}

describe('e2e: hydra against IMAP and SMTP AUTH is stopped', { timeout: 420_000 }, () => {
  let dir: string;
  let mw: DaemonProcess;
  let stack: MailStack;
  let list: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-hydra-'));
    writeFileSync(join(dir, 'mailwarden.yaml'), GUESSING_CONFIG);
    // the right password comes last: hydra must be stopped before it gets there
    list = join(dir, 'passwords.txt');
    writeFileSync(list, `123456\npassword\nletmein\nqwerty\ndragon\n${MAIL_USERS.alice.password}\n`);
    mw = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') });
    stack = await startMailStack({
      postfixPolicy: `inet:127.0.0.1:${mw.postfixPort}`,
      dovecotPolicyUrl: `http://127.0.0.1:${mw.dovecotPort}/dovecot/policy`,
    });
  });
  after(async () => {
    await stack?.stop();
    await mw?.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  test('hydra on IMAP does not find the password; the source is banned on every protocol', async () => {
    const r = await hydra(MAIL_USERS.alice.user, list, stack.ports.imap, 'imap://127.0.0.1/PLAIN');
    assert.match(r.out, /0 valid password(s)? found/, r.out);
    assert.doesNotMatch(r.out, new RegExp(MAIL_USERS.alice.password));
    const bans = await runCli(['bans', 'list'], mw.env);
    assert.match(bans.stdout, /127\.0\.0\.1 .*rule auth-guess-ban/);
    // the banned source cannot log in, even with the right password
    const login = await imapLogin({
      port: stack.ports.imap,
      localAddress: '127.0.0.1',
      user: MAIL_USERS.alice.user,
      password: MAIL_USERS.alice.password,
    });
    assert.match(login.line, /Access denied: 127\.0\.0\.1 is blocked/);
  });

  test('hydra on SMTP AUTH, from the now banned source, is refused at the greeting', async () => {
    const r = await hydra(MAIL_USERS.alice.user, list, stack.ports.submission, 'smtp://127.0.0.1/PLAIN');
    assert.doesNotMatch(r.out, /1 valid password found/, r.out);
    assert.match(
      stack.postfixLog(),
      /reject: CONNECT from localhost\[127\.0\.0\.1\]: 554 5\.7\.1 .*Access denied: 127\.0\.0\.1 is blocked/,
    );
  });

  test('after an unban, SMTP AUTH from the address is still refused while its IMAP guessing run is fresh', async () => {
    assert.equal((await runCli(['bans', 'remove', '127.0.0.1'], mw.env)).code, 0);
    const short = join(dir, 'two.txt');
    writeFileSync(short, `hunter2\n${MAIL_USERS.bob.password}\n`);
    const r = await hydra(MAIL_USERS.bob.user, short, stack.ports.submission, 'smtp://127.0.0.1/PLAIN');
    assert.doesNotMatch(r.out, /1 valid password found/, r.out);
    // the counters are one memory across protocols: Postfix logs our refusal of the SASL attempts
    assert.match(stack.postfixLog(), /SASL PLAIN authentication failed: Too many failed logins from your address/);
  });
});
