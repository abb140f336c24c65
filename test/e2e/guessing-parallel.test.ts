/*
 * End to end, issue 11: password guessing the way real attackers do it (many
 * connections at once, going on after every refusal), from an office address
 * that many people share, from many networks at once, and on after a ban;
 * against a real Postfix + Dovecot wired to the real mailwarden (the CLI as a
 * child process) with its BUILT-IN policy. The only change to it: no network
 * is trusted (the built-in allowlist trusts 127.0.0.1, and the clients here
 * come from 127.0.0.0/8).
 *
 * What counts is what Dovecot really checked, not only what mailwarden
 * answered: every password Dovecot looked up and found wrong is one
 * `passwd-file(<user>,<address>...): Password mismatch` line in its log
 * (auth_verbose = yes, set by stack.ts); a password refused by mailwarden
 * before the check leaves none. The clients' answers are counted as well: a
 * refusal by mailwarden is `NO [ALERT] <reason>` (IMAP) or `535 5.7.8 ...:
 * <reason>` (SMTP), a checked wrong password `NO [AUTHENTICATIONFAILED]` or
 * `535 ... (reason unavailable)` (docs/PROTOCOL.md, section 2).
 *
 * Dovecot's own auth penalty (anvil) is off, as docs/INTEGRATION.md recommends
 * with mailwarden and as guessing.test.ts does. With it on, Dovecot itself
 * holds back every new attempt from an address that failed (2, 4, 8, up to
 * 15 s) before it even asks mailwarden, so these scenarios would measure
 * Dovecot's penalty instead of mailwarden (the attempts of 16 parallel
 * connections would be spread out by Dovecot, not arrive together), SMTP AUTH
 * would wait past Postfix's 10 s SASL timeout and get 454 with nothing checked
 * (measured in guessing.test.ts), and the office's stale phones would slow
 * down its colleagues. hydra.test.ts runs with the penalty on, as Dovecot ships.
 *
 * Each scenario has networks of its own (127.0.111-114.x and
 * 127.0.130-135.x; the other e2e files use 127.0.0-10.x and 127.0.41-47.x)
 * and accounts of its own (extra mailboxes of this stack), so no counter of
 * one scenario is seen by another. The guessed passwords are chosen with
 * pairwise different pwhash values (Dovecot sends only 12 bits of the hash,
 * so two random passwords share one now and then), so "different passwords"
 * is exact. Every loop is bounded in count and time, and every connection is
 * closed by the helper that opened it.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { runCli, startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import {
  answers,
  guess,
  imapDoor,
  imapOutcome,
  mailbox,
  smtpDoor,
  smtpOutcome,
  tally,
  wrongPasswords,
  type Attempt,
} from './attacks.js';
import { imapLogin, sendMail, smtpSession } from './clients.js';
import { MAIL_USERS, startMailStack, type MailStack, type MailUser } from './stack.js';

/** One account per attacked role, so per-account counters never mix between scenarios. */
const U = {
  dave: mailbox('dave', 'DavePass5'), // 1: guessed over IMAP
  erin: mailbox('erin', 'ErinPass6'), // 1: guessed over SMTP AUTH
  frank: mailbox('frank', 'FrankPass7'), // 2: a stale phone
  grace: mailbox('grace', 'GracePass8'), // 2: a stale phone
  heidi: mailbox('heidi', 'HeidiPass9'), // 2: guessed from the office address
  ivan: mailbox('ivan', 'IvanPass10'), // 3: guessed from five networks
  judy: mailbox('judy', 'JudyPass11'), // 4: guessed on after the ban
  kim: mailbox('kim', 'KimPass12'), // 4: the neighbour
};
const { alice, bob, carol } = MAIL_USERS;

/** Whether an IPv4 CIDR (e.g. 127.0.114.0/24) contains the address. */
function covers(cidr: string, ip: string): boolean {
  const [net = '', bits = '32'] = cidr.split('/');
  const n = (a: string) => a.split('.').reduce((v, o) => v * 256 + Number(o), 0);
  const size = 2 ** (32 - Number(bits));
  return Math.floor(n(net) / size) === Math.floor(n(ip) / size);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe(
  'e2e: parallel, shared-address and distributed guessing against real Dovecot and Postfix',
  {
    timeout: 240_000,
  },
  () => {
    let dir: string;
    let mw: DaemonProcess;
    let stack: MailStack;

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'mw-e2e-par-'));
      // The built-in policy; only the allowlist is emptied (the clients come from 127.0.0.0/8).
      writeFileSync(join(dir, 'mailwarden.yaml'), 'allowlist: { networks: [] }\n');
      mw = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') });
      stack = await startMailStack({
        postfixPolicy: `inet:127.0.0.1:${mw.postfixPort}`,
        dovecotPolicyUrl: `http://127.0.0.1:${mw.dovecotPort}/dovecot/policy`,
        authPenalty: false,
        extraUsers: Object.values(U),
      });
    });
    after(async () => {
      // MAILWARDEN_E2E_KEEP=<dir>: keep the logs (Dovecot, Postfix, mailwarden's own) for a look afterwards.
      const keep = process.env.MAILWARDEN_E2E_KEEP;
      if (keep) {
        try {
          mkdirSync(keep, { recursive: true });
          writeFileSync(join(keep, 'dovecot.log'), stack?.dovecotLog() ?? '');
          writeFileSync(join(keep, 'postfix.log'), stack?.postfixLog() ?? '');
          writeFileSync(join(keep, 'mailwarden.log'), mw?.output() ?? '');
        } catch {
          /* best effort */
        }
      }
      try {
        await stack?.stop();
      } finally {
        await mw?.kill('SIGTERM');
        rmSync(dir, { recursive: true, force: true });
      }
    });

    /** The `Password mismatch` lines for this user (and address, if given), once Dovecot's log has settled. */
    const checked = async (user: string, ip?: string | RegExp): Promise<number> =>
      (await stack.settledPasswordChecks()).filter(
        (c) => c.user === user && (ip === undefined || (typeof ip === 'string' ? c.ip === ip : ip.test(c.ip))),
      ).length;

    /** What Dovecot and mailwarden said about an address, for failure messages. */
    const evidence = (ip: string): string => {
      const mine = (text: string) =>
        text
          .split('\n')
          .filter((l) => l.includes(ip))
          .slice(-15)
          .join('\n');
      return `\n--- dovecot log (${ip}) ---\n${mine(stack.dovecotLog())}\n--- mailwarden log (${ip}) ---\n${mine(mw.output())}`;
    };

    const bans = async (): Promise<string[]> => {
      const r = await runCli(['bans', 'list', '--json'], mw.env);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as { items: Array<{ subject: string }> }).items.map((b) => b.subject);
    };

    /**
     * 40 different wrong passwords for one account from one address, over 16 connections at once,
     * each connection going on after every refusal.
     */
    const parallel = async (t: TestContext, door: typeof imapDoor, port: number, ip: string, u: MailUser) => {
      const run = await guess(
        { ip, user: u.user, passwords: wrongPasswords(u, 40, ip), connections: 16, budgetMs: 40_000 },
        door(port, ip, u.user),
      );
      const n = await checked(u.user, ip);
      const k = tally(run);
      const said = `Dovecot checked ${n}; answers:\n${answers(run)}`;
      assert.equal(run.length, 40, `every password was tried\n${said}`);
      assert.ok(n <= 6, `at most 6 passwords checked by Dovecot\n${said}${evidence(ip)}`);
      assert.equal(k.ok, 0, said);
      assert.equal(k.refused, 40 - k.failed, `every other attempt was refused by mailwarden\n${said}`);
      assert.ok(k.failed <= n, `no checked failure the Dovecot log does not show\n${said}`);
      t.diagnostic(`${ip}: Dovecot checked ${n} of 40 passwords; ${k.refused} attempts refused`);
    };

    test('1a. 16 parallel IMAP connections guessing one account from one address: at most 6 passwords checked', (t) =>
      parallel(t, imapDoor, stack.ports.imap, '127.0.111.1', U.dave));

    test('1b. the same with 16 parallel SMTP AUTH sessions on the submission port', (t) =>
      parallel(t, smtpDoor, stack.ports.submission, '127.0.111.2', U.erin));

    test('2. an office address: stale phones, colleagues working and an attacker; no colleague refused, the attacker stopped, no ban', async (t) => {
      const office = '127.0.112.10';
      const imapOk = async (u: MailUser): Promise<Attempt> => {
        const r = await imapLogin({ port: stack.ports.imap, localAddress: office, user: u.user, password: u.password });
        return { outcome: imapOutcome(r), line: r.line, ms: r.ms };
      };
      const smtpAuth = async (u: MailUser, password: string): Promise<Attempt> => {
        const s = await smtpSession({ port: stack.ports.submission, localAddress: office });
        try {
          if (s.greeting.code !== 220) return { outcome: 'refused', line: s.greeting.text, ms: 0 };
          const t0 = performance.now();
          const r = await s.authPlain(u.user, password);
          return { outcome: smtpOutcome(r), line: r.text, ms: performance.now() - t0 };
        } finally {
          await s.quit();
        }
      };
      let stop = false;
      const legit: Attempt[] = [];
      const stale: Attempt[] = [];
      /** Every `everyMs`, at most `max` times, until told to stop; a thrown error counts as an attempt (a failed one). */
      const loop = async (into: Attempt[], everyMs: number, max: number, step: (i: number) => Promise<Attempt>) => {
        for (let i = 0; i < max && !stop; i++) {
          const t0 = Date.now();
          into.push(await step(i).catch((e: unknown) => ({ outcome: 'error' as const, line: String(e), ms: 0 })));
          const wait = everyMs - (Date.now() - t0);
          for (let w = 0; w < wait && !stop; w += 100) await sleep(Math.min(100, wait - w));
        }
      };

      // A real office was logged in before the attack: the two colleagues' mail clients have been
      // logging in from the office address all along (IMAP and SMTP AUTH), so they start first.
      legit.push(await imapOk(alice), await smtpAuth(bob, bob.password));
      assert.deepEqual(
        legit.map((a) => a.outcome),
        ['ok', 'ok'],
        `alice and bob log in from the office before the attack\n${answers(legit)}`,
      );
      const colleagues = [
        loop(legit, 3_000, 15, (i) => (i % 2 === 0 ? imapOk(alice) : smtpAuth(alice, alice.password))),
        loop(legit, 3_000, 15, (i) => (i % 2 === 0 ? smtpAuth(bob, bob.password) : imapOk(bob))),
      ];
      await sleep(1_000);
      // Three stale devices, each retrying its one old password (two phones over IMAP, one over SMTP AUTH).
      const phones = [
        loop(stale, 2_000, 20, () =>
          imapLogin({ port: stack.ports.imap, localAddress: office, user: carol.user, password: 'CarolOld2023' }).then(
            (r) => ({ outcome: imapOutcome(r), line: r.line, ms: r.ms }),
          ),
        ),
        loop(stale, 2_000, 20, () =>
          imapLogin({
            port: stack.ports.imap,
            localAddress: office,
            user: U.frank.user,
            password: 'FrankOld2023',
          }).then((r) => ({ outcome: imapOutcome(r), line: r.line, ms: r.ms })),
        ),
        loop(stale, 2_000, 20, () => smtpAuth(U.grace, 'GraceOld2023')),
      ];
      // The attacker at the same address: heidi's account, many different passwords, 4 connections at
      // once, going on after every refusal.
      const attack = await guess(
        {
          ip: office,
          user: U.heidi.user,
          passwords: wrongPasswords(U.heidi, 32, 'office'),
          connections: 4,
          budgetMs: 18_000,
        },
        imapDoor(stack.ports.imap, office, U.heidi.user),
      );
      // The office goes on working a little after the attack, then everyone stops.
      await sleep(5_000);
      stop = true;
      await Promise.all([...colleagues, ...phones]);

      const heidiChecked = await checked(U.heidi.user, office);
      const at = tally(attack);
      const lt = tally(legit);
      const said =
        `Dovecot checked ${heidiChecked} of heidi's; attacker answers:\n${answers(attack)}\n` +
        `colleagues (${legit.length}):\n${answers(legit)}\nstale devices (${stale.length}):\n${answers(stale)}`;
      assert.ok(legit.length >= 12, `the colleagues kept logging in during and after the attack\n${said}`);
      assert.equal(lt.ok, legit.length, `no legitimate login refused\n${said}${evidence(office)}`);
      assert.ok(
        heidiChecked <= 10,
        `at most 10 of the attacker's passwords checked by Dovecot\n${said}${evidence(office)}`,
      );
      assert.ok(attack.length > heidiChecked, said);
      assert.equal(at.ok, 0, said);
      assert.equal(at.refused, attack.length - at.failed, `then the attacker was refused, every time\n${said}`);
      assert.equal(tally(stale).failed, stale.length, `the stale devices just fail (never refused)\n${said}`);
      // Not banned: not in the list, and Postfix greets it normally.
      const list = await bans();
      assert.ok(
        !list.some((s) => covers(s.includes('/') ? s : `${s}/32`, office)),
        `no ban covers the office: ${list.join(', ')}`,
      );
      const s = await smtpSession({ port: stack.ports.smtp, localAddress: office, ehlo: false });
      try {
        assert.equal(s.greeting.code, 220, s.greeting.text);
      } finally {
        await s.quit();
      }
      t.diagnostic(
        `scenario 2: colleagues ${lt.ok}/${legit.length} logged in; attacker checked ${heidiChecked}, refused ` +
          `${at.refused}/${attack.length}; stale ${stale.length} (${tally(stale).failed} plain failures)`,
      );
    });

    test('3. five networks guessing one account: at most 50 passwords checked; the owner still logs in and sends from home', async (t) => {
      const home = '127.0.130.5';
      const attackers = [131, 132, 133, 134, 135].map((n) => `127.0.${n}.9`);
      assert.equal(
        (await imapLogin({ port: stack.ports.imap, localAddress: home, ...U.ivan })).ok,
        true,
        'ivan at home',
      );
      const pws = wrongPasswords(U.ivan, 60, 'spread');
      const runs = await Promise.all(
        attackers.map((ip, i) =>
          guess(
            { ip, user: U.ivan.user, passwords: pws.slice(i * 12, i * 12 + 12), connections: 3, budgetMs: 30_000 },
            imapDoor(stack.ports.imap, ip, U.ivan.user),
          ),
        ),
      );
      const all = runs.flat();
      const ivanChecked = await checked(U.ivan.user);
      const at = tally(all);
      const said =
        `Dovecot checked ${ivanChecked} of ivan's (${attackers.map((ip, i) => `${ip}: ${runs[i]!.length} tried`).join(', ')}); ` +
        `answers:\n${answers(all)}`;
      assert.equal(all.length, 60, said);
      assert.ok(ivanChecked <= 50, `at most 50 passwords checked for the account\n${said}`);
      assert.equal(at.ok, 0, said);
      assert.equal(at.refused, all.length - at.failed, said);

      const login = await imapLogin({ port: stack.ports.imap, localAddress: home, ...U.ivan });
      assert.equal(login.ok, true, `ivan still logs in from home: ${login.line}${evidence(home)}`);
      const mail = await sendMail({
        port: stack.ports.submission,
        localAddress: home,
        auth: { user: U.ivan.user, pass: U.ivan.password },
        from: U.ivan.user,
        to: [alice.user],
        subject: 'ivan still sends',
      });
      assert.equal(mail.ok, true, mail.transcript.join('\n'));
      const deadline = Date.now() + 15_000;
      while (!stack.readMailbox('alice').some((m) => m.includes('Subject: ivan still sends'))) {
        assert.ok(Date.now() < deadline, 'ivan’s message reached alice');
        await sleep(100);
      }
      t.diagnostic(`scenario 3: Dovecot checked ${ivanChecked} of 60 passwords for ivan; ${at.refused} refused`);
    });

    test('4. an address guessing on after its ban does not get its neighbours banned', async (t) => {
      const attacker = '127.0.114.20';
      const neighbour = '127.0.114.21';
      const attack = await guess(
        {
          ip: attacker,
          user: U.judy.user,
          passwords: wrongPasswords(U.judy, 64, 'on'),
          connections: 8,
          budgetMs: 40_000,
        },
        imapDoor(stack.ports.imap, attacker, U.judy.user),
      );
      const judyChecked = await checked(U.judy.user, attacker);
      const afterBan = attack.filter((a) => a.line.includes(`Access denied: ${attacker} is blocked`)).length;
      const said = `Dovecot checked ${judyChecked} of judy's; attacker answers:\n${answers(attack)}`;
      assert.equal(attack.length, 64, said);
      assert.ok(afterBan >= 40, `the attacker went on guessing after its ban\n${said}`);
      assert.ok((await bans()).includes(attacker), 'the attacker is banned');

      const typo = await imapLogin({
        port: stack.ports.imap,
        localAddress: neighbour,
        user: U.kim.user,
        password: 'KimPass21',
      });
      assert.equal(
        imapOutcome(typo),
        'failed',
        `the neighbour's typo is checked, not refused: ${typo.line}${evidence(neighbour)}`,
      );
      const login = await imapLogin({ port: stack.ports.imap, localAddress: neighbour, ...U.kim });
      assert.equal(login.ok, true, `the neighbour logs in: ${login.line}${evidence(neighbour)}`);
      const list = await bans();
      assert.ok(
        !list.some((s) => s.includes('/') && covers(s, neighbour)),
        `no network ban over ${neighbour}: ${list.join(', ')}${evidence('127.0.114.')}`,
      );
      t.diagnostic(
        `scenario 4: Dovecot checked ${judyChecked} of judy's; refused after the ban ${afterBan}/64; bans: ${list.join(', ')}`,
      );
    });
  },
);
