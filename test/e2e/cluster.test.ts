/*
 * End to end, cluster mode: two mailwarden nodes on one real Redis, with the
 * built-in policy (only the allowlist emptied: the clients come from
 * 127.0.0.0/8), in front of one real Dovecot and one real Postfix the way two
 * servers of one mail system are: Dovecot asks node mx1, Postfix asks node
 * mx2. A password sprayer with many connections at once is counted and banned
 * through Redis by mx1; mx2 refuses it at CONNECT (a refusal its mirror of the
 * cluster's bans can answer without a round trip); colleagues at an office
 * address nearby keep logging in and sending mail all along.
 *
 * What counts is what the servers did: Dovecot's `Password mismatch` lines
 * (a password mailwarden refused before the check leaves none), Postfix's
 * 554 greeting, and the colleague's message in the recipient's mailbox.
 * Networks 127.0.160-161.x and accounts of its own: no other e2e file shares
 * a counter with this one.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { call } from '../../src/admin/client.js';
import { runCli } from '../helpers/daemon.js';
import { startTwoNodes, type TwoNodes } from '../helpers/redis.js';
import { answers, guess, imapDoor, imapOutcome, mailbox, tally, wrongPasswords, type Attempt } from './attacks.js';
import { imapLogin, mailArrives, smtpSession } from './clients.js';
import { MAIL_USERS, startMailStack, type MailStack } from './stack.js';

const { alice, bob, carol } = MAIL_USERS;
/** The sprayed accounts: more than auth-spray-ban's 5 distinct users from one address. */
const SPRAYED = Array.from({ length: 8 }, (_, i) => mailbox(`spray${i}`, `SprayPass${i}x`));

describe('e2e: cluster mode, two nodes on one Redis, against real Dovecot and Postfix', { timeout: 240_000 }, () => {
  let nodes: TwoNodes;
  let stack: MailStack;

  before(async () => {
    nodes = await startTwoNodes('allowlist: { networks: [] }\n', 'e2e-cluster');
    stack = await startMailStack({
      postfixPolicy: `inet:127.0.0.1:${nodes.b.postfixPort}`,
      dovecotPolicyUrl: `http://127.0.0.1:${nodes.a.dovecotPort}/dovecot/policy`,
      authPenalty: false,
      extraUsers: SPRAYED,
    });
  });
  after(async () => {
    try {
      await stack?.stop();
    } finally {
      await nodes?.stop();
    }
  });

  /** `Password mismatch` lines from this address, once Dovecot's log has settled. */
  const checked = async (ip: string): Promise<number> =>
    (await stack.settledPasswordChecks()).filter((c) => c.ip === ip).length;

  const status = (node: 'a' | 'b') =>
    call<{ store: { mode: string; mirrorDecisions?: number } }>(
      join(nodes[node].env.MAILWARDEN_DATA as string, 'admin.sock'),
      'GET',
      '/v1/status',
    );

  test('a sprayer on 16 connections is banned through Redis by the node Dovecot asks, and refused at CONNECT by the node Postfix asks; the office next door works on', async (t) => {
    const attacker = '127.0.160.1';
    const office = '127.0.161.10';
    const officeLogin = async (): Promise<Attempt> => {
      const r = await imapLogin({
        port: stack.ports.imap,
        localAddress: office,
        user: alice.user,
        password: alice.password,
      });
      return { outcome: imapOutcome(r), line: r.line, ms: r.ms };
    };
    const colleagues: Attempt[] = [await officeLogin()];

    // Two connections per sprayed account, 16 at once, three passwords each; the office logs in meanwhile.
    let stop = false;
    const officeLoop = (async () => {
      // A mail client's pace: a login every quarter second between them all.
      while (!stop) {
        colleagues.push(await officeLogin());
        await new Promise((r) => setTimeout(r, 250));
      }
    })();
    const runs = await Promise.all(
      SPRAYED.map((u) =>
        guess(
          { ip: attacker, user: u.user, passwords: wrongPasswords(u, 3, attacker), connections: 2, budgetMs: 40_000 },
          imapDoor(stack.ports.imap, attacker, u.user),
        ),
      ),
    );
    stop = true;
    await officeLoop;
    const spray = runs.flat();
    const sprayChecks = await checked(attacker);
    const said = `Dovecot checked ${sprayChecks}; answers:\n${answers(spray)}\noffice:\n${answers(colleagues)}`;
    assert.equal(spray.length, 24, `every password was tried\n${said}`);
    assert.equal(tally(spray).ok, 0, said);
    assert.ok(sprayChecks <= 5 + 16, `at most the ban's 5 accounts, and what was in flight, checked\n${said}`);
    assert.ok(tally(spray).refused > 0, `then refused\n${said}`);
    assert.equal(tally(colleagues).ok, colleagues.length, `no colleague refused\n${said}`);

    // The ban node mx1 made is the cluster's: mx2 lists it.
    const bans = await runCli(['bans', 'list', '--json'], nodes.b.env);
    assert.equal(bans.code, 0, bans.stderr);
    const subjects = (JSON.parse(bans.stdout) as { items: Array<{ subject: string }> }).items.map((b) => b.subject);
    assert.ok(subjects.includes(attacker), `banned in the cluster: ${subjects.join(', ')}`);

    // The sprayer goes on, on 16 connections: nothing more is checked.
    const more = await guess(
      {
        ip: attacker,
        user: bob.user,
        passwords: wrongPasswords(bob, 16, `${attacker}-again`),
        connections: 16,
        budgetMs: 30_000,
      },
      imapDoor(stack.ports.imap, attacker, bob.user),
    );
    assert.equal(tally(more).refused, 16, `every later attempt refused\n${answers(more)}`);
    assert.equal(await checked(attacker), sprayChecks, 'Dovecot checked no more of its passwords');

    // The MX asks mx2: the office sends mail through it, then the banned address is refused at CONNECT.
    await mailArrives(stack, office, bob, carol, 'from the office, during the attack');
    const s = await smtpSession({ port: stack.ports.smtp, localAddress: attacker, ehlo: false });
    try {
      assert.equal(s.greeting.code, 554, s.greeting.text);
      assert.match(s.greeting.text, /Access denied: 127\.0\.160\.1 is blocked/);
    } finally {
      await s.quit();
    }
    const b = await status('b');
    assert.equal(b.store.mode, 'redis');
    assert.ok((b.store.mirrorDecisions ?? 0) > 0, 'mx2 answered the requests that count nothing from its mirror');
    t.diagnostic(
      `sprayer: ${sprayChecks} checked of ${spray.length}, then ${more.length} refused; office: ${colleagues.length} logins; ` +
        `mx2 decided ${b.store.mirrorDecisions ?? 0} requests from its mirror`,
    );
  });
});
