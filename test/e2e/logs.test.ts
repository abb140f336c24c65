/*
 * End to end, issue 16: the real Postfix and Dovecot with the hooks that see
 * logins switched off (no Dovecot auth policy; Postfix asks mailwarden only
 * at CONNECT, where no login is seen), logging to files that mailwarden
 * follows (Postfix's maillog_file, Dovecot's log_path, auth_verbose = yes).
 * Password guessing over SMTP AUTH and over IMAP gets the address banned
 * from the logs alone, and the ban then holds at CONNECT. Both logs are then
 * rotated by rename (the writers go on writing to the renamed files until
 * Postfix reloads and Dovecot reopens its log) and by copytruncate in the
 * middle of a guessing run: every attempt is counted once, none lost.
 * Dovecot's auth penalty is off, so each attempt takes its 2 s failure delay
 * and no more.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { call } from '../../src/admin/client.js';
import type { BanRecord } from '../../src/engine/types.js';
import type { SourceStatus } from '../../src/logs/followers.js';
import { freePort, startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { imapSession, smtpSession } from './clients.js';
import { MAIL_USERS, startMailStack, type MailStack } from './stack.js';

const { alice, bob } = MAIL_USERS;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Status {
  logs: { sources: SourceStatus[]; errors: number };
}

describe('e2e: the log follower against real Postfix and Dovecot logs', { timeout: 300_000 }, () => {
  let dir: string;
  let mw: DaemonProcess | undefined;
  let stack: MailStack | undefined;
  let sock: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-e2e-logs-'));
    const ports = { postfixPort: await freePort(), dovecotPort: await freePort(), adminPort: await freePort() };
    stack = await startMailStack({
      postfixPolicy: `inet:127.0.0.1:${ports.postfixPort}`,
      postfixMainCf: {
        smtpd_sender_restrictions: '',
        smtpd_recipient_restrictions: '',
        smtpd_end_of_data_restrictions: '',
      },
      dovecotPolicyUrl: '',
      authPenalty: false,
    });
    const logDir = join(stack.dir, 'log');
    writeFileSync(
      join(dir, 'mailwarden.yaml'),
      `allowlist: { networks: [] }
logs:
  - path: ${join(logDir, 'postfix.log')}
  - path: ${join(logDir, 'dovecot.log')}
rules:
  - name: auth-failures-ban
    limit: 3
`,
    );
    mw = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') }, ports);
    sock = join(dir, 'data', 'admin.sock');
    // Following both files (from their ends) before anything happens.
    await until('both logs followed', async () => (await status()).logs.sources.every((s) => s.state === 'following'));
  });
  after(async () => {
    await stack?.stop().catch(() => undefined);
    await mw?.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  const status = (): Promise<Status> => call<Status>(sock, 'GET', '/v1/status');
  const bansOf = async (ip: string): Promise<BanRecord[]> =>
    (await call<{ bans: BanRecord[] }>(sock, 'GET', `/v1/bans/check/${ip}`)).bans;
  const events = async (): Promise<number> => (await status()).logs.sources.reduce((n, s) => n + s.events, 0);

  async function until(what: string, cond: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await cond())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${mw?.output().slice(-3000) ?? ''}`);
      await sleep(200);
    }
  }

  /** `n` wrong SMTP AUTH passwords in one submission session, then QUIT. */
  async function smtpGuesses(ip: string, user: string, n: number): Promise<void> {
    const s = await smtpSession({ port: stack?.ports.submission ?? 0, localAddress: ip });
    for (let i = 0; i < n; i++) assert.equal((await s.authPlain(user, `guess-${ip}-${i}`)).code, 535);
    await s.quit();
  }

  /** `n` wrong IMAP LOGIN passwords in one session, then LOGOUT. */
  async function imapGuesses(ip: string, user: string, n: number): Promise<void> {
    const s = await imapSession({ port: stack?.ports.imap ?? 0, localAddress: ip });
    for (let i = 0; i < n; i++) assert.equal((await s.login(user, `guess-${ip}-${i}`)).ok, false);
    await s.logout();
  }

  /** The SMTP greeting at CONNECT, where Postfix asks mailwarden. */
  async function greeting(ip: string): Promise<string> {
    const s = await smtpSession({ port: stack?.ports.smtp ?? 0, localAddress: ip, ehlo: false });
    s.close();
    return s.greeting.text;
  }

  test('SMTP AUTH guessing is banned from the Postfix log alone; the ban holds at CONNECT', async () => {
    const ip = '127.0.16.1';
    assert.match(await greeting(ip), /^220 /);
    await smtpGuesses(ip, alice.user, 4);
    await until('a ban of 127.0.16.1', async () => (await bansOf(ip)).length > 0);
    assert.equal((await bansOf(ip))[0]?.rule, 'auth-failures-ban');
    assert.match(await greeting(ip), /^554 5\.7\.1 .*Access denied: 127\.0\.16\.1 is blocked/);
    assert.match(await greeting('127.0.16.2'), /^220 /, 'another address is not');
  });

  test('IMAP guessing is banned from the Dovecot log alone, and refused at SMTP CONNECT', async () => {
    const ip = '127.0.17.1';
    await imapGuesses(ip, bob.user, 4);
    await until('a ban of 127.0.17.1', async () => (await bansOf(ip)).length > 0);
    assert.match(await greeting(ip), /^554 5\.7\.1 .*Access denied: 127\.0\.17\.1 is blocked/);
  });

  test('both logs rotated by rename and by copytruncate in the middle of a guessing run: every attempt counted once', async () => {
    const pf = join(stack?.dir ?? '', 'log', 'postfix.log');
    const dv = join(stack?.dir ?? '', 'log', 'dovecot.log');
    let phase = 0;
    // Each phase: 2 SMTP AUTH and 2 IMAP failures, from addresses of their own (under the ban limit).
    const guess = async () => {
      phase++;
      await Promise.all([
        smtpGuesses(`127.0.18.${phase}`, alice.user, 2),
        imapGuesses(`127.0.19.${phase}`, bob.user, 2),
      ]);
    };
    await sleep(3000); // the earlier tests' lines are counted (and held) by now
    const before = await events();
    await guess();
    renameSync(pf, `${pf}.1`);
    renameSync(dv, `${dv}.1`);
    await guess(); // both still write to the renamed files
    await stack?.reloadPostfix();
    process.kill(stack?.pids.dovecot ?? 0, 'SIGUSR1'); // Dovecot reopens its log files
    await guess(); // new files
    assert.ok(existsSync(pf) && existsSync(dv), 'Postfix and Dovecot write new files');
    copyFileSync(pf, `${pf}.0`);
    truncateSync(pf, 0);
    copyFileSync(dv, `${dv}.0`);
    truncateSync(dv, 0);
    await guess();
    await until('16 more events', async () => (await events()) - before >= 16, 30_000);
    await sleep(3000);
    const st = await status();
    assert.equal((await events()) - before, 16, JSON.stringify(st.logs.sources));
    assert.equal(st.logs.errors, 0);
    for (const s of st.logs.sources) {
      assert.ok((s.rotations as number) >= 1, `${s.source} rotated by rename`);
      assert.ok((s.truncations as number) >= 1, `${s.source} truncated`);
    }
  });
});
