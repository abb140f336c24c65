/*
 * The guessing defence of the built-in policy, on any store (run by the store
 * contract for the MemoryStore and for Redis, whose Lua script must agree):
 * attempts in flight count at once, only passwords the server checked are
 * guesses, a shared address is limited per account and never banned with its
 * people, one account gets a capped number of passwords checked however many
 * sources take part, and a network is banned only for guessing from several of
 * its addresses.
 *
 * Each login is played the way Dovecot plays it: `allow` before the password
 * check; if we refused, a report with `policy_reject` (`refused`), else a
 * report of the check's result.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadSettings } from '../../src/config/load.js';
import type { Policy } from '../../src/engine/policy.js';
import type { Decision } from '../../src/engine/types.js';
import { type AsyncHarness } from './contract.js';

type WithStore = (policy: Policy, body: (h: AsyncHarness) => Promise<void>) => Promise<void>;

const RIGHT = 'f00d';

interface Login {
  /** The answer to `allow`. */
  answer: Decision;
  /** The server checked the password (we did not refuse it first). */
  checked: boolean;
  /** Bans and other effects of the report. */
  report: Decision;
}

/** One login as Dovecot plays it; `pw === RIGHT` is the account's right password. */
async function login(h: AsyncHarness, ip: string, user: string, pw: string): Promise<Login> {
  const base = { protocol: 'imap', ip, user, pwhash: pw };
  const answer = (await h.handle({ ...base, kind: 'auth-attempt' })).decision;
  const checked = answer.action === 'allow' || answer.action === 'delay';
  const result = checked ? { success: pw === RIGHT, refused: false } : { success: false, refused: true };
  const report = (await h.handle({ ...base, kind: 'auth-result', ...result })).decision;
  return { answer, checked, report };
}

const banned = (d: Decision): string[] =>
  d.effects.flatMap((e) => (e.type === 'ban' ? [`${e.subject} ${e.rule}`] : []));
const hex = (n: number): string => n.toString(16).padStart(3, '0');

export function guessingContract(withStore: WithStore): void {
  const policy = loadSettings(undefined).policy;

  void describe('guessing (built-in policy)', () => {
    void test('sixteen attempts in flight at once: six get their password checked, and going on after refusals bans', () =>
      withStore(policy, async (h) => {
        const ip = '198.51.100.10';
        const base = { protocol: 'imap', ip, user: 'u1@example.org' };
        // Every allow arrives before any report, as from 16 parallel connections.
        const answers = [];
        for (let i = 0; i < 16; i++)
          answers.push((await h.handle({ ...base, kind: 'auth-attempt', pwhash: hex(i) })).decision);
        const through = answers.filter((d) => d.action === 'allow' || d.action === 'delay');
        assert.equal(through.length, 6, answers.map((d) => d.action).join(' '));
        assert.ok(answers.slice(6).every((d) => d.action === 'reject' && d.rule === 'auth-guess-refuse'));
        assert.ok(answers.slice(3, 6).every((d) => d.action === 'delay'));
        const bans: string[] = [];
        for (let i = 0; i < 16; i++) {
          const result = i < 6 ? { success: false } : { success: false, refused: true };
          bans.push(...banned((await h.handle({ ...base, kind: 'auth-result', pwhash: hex(i), ...result })).decision));
        }
        // The 5th different password tried after the refusal bans the address.
        assert.deepEqual(bans, [`${ip} auth-guess-ban`]);
      }));

    void test('a right password in flight is no guess: its success takes it out again', () =>
      withStore(policy, async (h) => {
        const ip = '198.51.100.20';
        const user = 'u2@example.org';
        for (let i = 0; i < 4; i++) assert.equal((await login(h, ip, user, hex(i))).checked, true);
        const ok = await login(h, ip, user, RIGHT);
        assert.equal(ok.answer.action, 'delay');
        assert.equal(ok.report.effects.length, 0, 'four wrong passwords before a success are no cracked account');
        // 4 wrong passwords counted, the right one not: the 5th and 6th wrong ones are still checked.
        assert.equal((await login(h, ip, user, hex(4))).checked, true);
        assert.equal((await login(h, ip, user, hex(5))).checked, true);
        const seventh = await login(h, ip, user, hex(6));
        assert.equal(seventh.checked, false);
        // Known-good for this user now, so the per-address rules spare it; the per-account one does not.
        assert.equal(seventh.answer.rule, 'auth-guess-user-ip-refuse');
      }));

    void test('a refused attempt is no guess; a refusal after the check drops only its own pending mark', () =>
      withStore(policy, async (h) => {
        const ip = '198.51.100.30';
        const user = 'u3@example.org';
        const base = { protocol: 'imap', ip, user };
        const refuseCount = async (): Promise<number> =>
          (await h.peek({ ...base, kind: 'auth-attempt', pwhash: 'eee' }))[`auth-guess-refuse|${ip}`] ?? -1;
        await login(h, ip, user, hex(1));
        assert.equal(await refuseCount(), 1);
        // Reports of attempts refused by the policy, with new passwords: never counted as guesses.
        for (let i = 2; i < 6; i++)
          await h.handle({ ...base, kind: 'auth-result', pwhash: hex(i), success: false, refused: true });
        assert.equal(await refuseCount(), 1);
        // Let through (pending), then refused after the check: it leaves nothing behind.
        assert.equal((await h.handle({ ...base, kind: 'auth-attempt', pwhash: hex(9) })).decision.action, 'allow');
        assert.equal(await refuseCount(), 2);
        await h.handle({ ...base, kind: 'auth-result', pwhash: hex(9), success: false, refused: true });
        assert.equal(await refuseCount(), 1);
        // A confirmed failure stays when the same password is later refused.
        await h.handle({ ...base, kind: 'auth-result', pwhash: hex(1), success: false, refused: true });
        assert.equal(await refuseCount(), 1);
      }));

    void test('a shared office: stale devices and a guesser do not lock out its people, and the guesser gets 6 checks', () =>
      withStore(policy, async (h) => {
        const office = '198.51.100.40';
        const people = ['alice@example.org', 'bob@example.org'];
        const stale = ['s1@example.org', 's2@example.org', 's3@example.org'];
        // The office was at work before the attack: two people logged in from its address.
        for (const p of people) assert.equal((await login(h, office, p, RIGHT)).checked, true);
        let refusedPeople = 0;
        let checkedGuesses = 0;
        const bans: string[] = [];
        for (let round = 0; round < 20; round++) {
          for (const s of stale) {
            const l = await login(h, office, s, 'dead');
            assert.equal(l.checked, true, `stale device of ${s}, round ${round}`);
            bans.push(...banned(l.report));
          }
          const guess = await login(h, office, 'dave@example.org', hex(round));
          if (guess.checked) checkedGuesses++;
          else assert.match(guess.answer.reason, /Too many failed logins for this account/);
          bans.push(...banned(guess.report));
          for (const p of people) if (!(await login(h, office, p, RIGHT)).checked) refusedPeople++;
          h.advance(2000);
        }
        assert.equal(refusedPeople, 0);
        assert.equal(checkedGuesses, 6);
        assert.deepEqual(bans, []);
        // Someone new at the office still logs in: the address itself is not refused.
        assert.equal((await login(h, office, 'erin@example.org', RIGHT)).answer.action, 'allow');
        // No immunity: spraying many accounts from the shared address still ends in a ban.
        const spray: string[] = [];
        for (let i = 0; i < 20 && spray.length === 0; i++)
          spray.push(...banned((await login(h, office, `victim${i}@example.org`, 'abc')).report));
        assert.deepEqual(spray, [`${office} auth-spray-ban-shared`]);
      }));

    void test('twenty people who mistype once and then log in are no spraying', () =>
      withStore(policy, async (h) => {
        const office = '198.51.100.50';
        const bans: string[] = [];
        for (let i = 0; i < 20; i++) {
          const user = `person${i}@example.org`;
          bans.push(...banned((await login(h, office, user, 'typo')).report));
          assert.equal((await login(h, office, user, RIGHT)).answer.action, 'allow', user);
        }
        assert.deepEqual(bans, []);
      }));

    void test('one account attacked from five networks: at most 50 passwords checked; its owner keeps logging in', () =>
      withStore(policy, async (h) => {
        const user = 'vic@example.org';
        const home = '192.0.2.77';
        assert.equal((await login(h, home, user, RIGHT)).checked, true);
        let checked = 0;
        let capped = 0;
        const bans: string[] = [];
        for (let round = 0; round < 8; round++)
          for (let net = 1; net <= 5; net++)
            for (let host = 1; host <= 3; host++) {
              const l = await login(h, `203.0.${net}.${host}`, user, hex(round * 100 + net * 10 + host));
              if (l.checked) checked++;
              if (/for this account today/.test(l.answer.reason)) capped++;
              bans.push(...banned(l.report));
            }
        assert.equal(checked, 50);
        assert.ok(capped > 0);
        assert.ok(
          bans.every((b) => !b.includes('/')),
          `no network ban: ${bans.join(', ')}`,
        );
        assert.equal((await login(h, home, user, RIGHT)).answer.action, 'allow', 'the owner from a known-good network');
        const elsewhere = await login(h, '203.0.1.50', user, RIGHT);
        assert.equal(elsewhere.checked, false);
        assert.match(elsewhere.answer.reason, /log in from a device or network you have used before/);
      }));

    void test('a network is banned for guessing from several of its addresses, never for one address going on', () =>
      withStore(policy, async (h) => {
        const bans: string[] = [];
        // One address guesses, is refused, banned, and goes on while banned.
        for (let i = 0; i < 40; i++)
          bans.push(...banned((await login(h, '192.0.2.5', 'w@example.org', hex(i))).report));
        assert.deepEqual(bans, ['192.0.2.5 auth-guess-ban']);
        // A neighbour mistypes once, then logs in.
        bans.push(...banned((await login(h, '192.0.2.6', 'n@example.org', 'oops')).report));
        assert.equal((await login(h, '192.0.2.6', 'n@example.org', RIGHT)).answer.action, 'allow');
        assert.deepEqual(bans, ['192.0.2.5 auth-guess-ban']);
        // Nine addresses of another network, six passwords each: past 50 from 3 or more addresses.
        const net: string[] = [];
        for (let host = 1; host <= 9 && net.length === 0; host++)
          for (let i = 0; i < 6; i++)
            net.push(
              ...banned(
                (await login(h, `198.51.100.${100 + host}`, `x${host}@example.org`, hex(host * 10 + i))).report,
              ),
            );
        assert.deepEqual(net, ['198.51.100.0/24 auth-guess-network-ban']);
      }));
  });
}
