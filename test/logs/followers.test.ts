/*
 * The log follower wired as the daemon wires it: the config's `logs`, the
 * built-in rules for what the logs tell, the real decider and embedded store
 * with positions in its SQLite. A log-read failure counts as a failure, not
 * a distinct password: enough of them ban the source, while the same number
 * of hook reports of one stale password does not; what the hook reported is
 * not counted again from the log; a restart on the same data neither
 * recounts nor misses.
 */
import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ConfigError } from '../../src/config/errors.js';
import { describeSettings, type Settings } from '../../src/config/compile.js';
import { loadSettingsFromText } from '../../src/config/load.js';
import { Decider } from '../../src/decider.js';
import type { MailEvent } from '../../src/engine/types.js';
import { LogFollowers } from '../../src/logs/followers.js';
import { MemoryStore } from '../../src/store/memory.js';
import { captureLogger } from '../helpers/harness.js';
import { makeEvent } from '../helpers/policy.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const load = (yaml: string): Settings => loadSettingsFromText(yaml, 'test.yaml');

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const cyrus = (ip: string, user = 'alice') =>
  `Nov 27 23:26:14 mx postfix/smtpd[1]: warning: unknown[${ip}]: SASL LOGIN authentication failed: authentication failure, sasl_username=${user}\n`;

describe('logs: the `logs` config key', () => {
  test('files and the journal, with their defaults; the log rules are in force only with a source', () => {
    const s = load(`
logs:
  - path: /var/log/mail.log
  - path: /var/log/roundcube/errors.log
    format: roundcube
    trust_forwarded: true
  - journal: { units: [postfix@-.service, dovecot.service] }
  - journal: { command: /usr/bin/journalctl, args: [--directory=/var/log/journal] }
`);
    assert.deepEqual(s.logs, [
      { kind: 'file', path: '/var/log/mail.log', format: 'mail', trustForwarded: false },
      { kind: 'file', path: '/var/log/roundcube/errors.log', format: 'roundcube', trustForwarded: true },
      {
        kind: 'journal',
        units: ['postfix@-.service', 'dovecot.service'],
        command: 'journalctl',
        args: [],
        trustForwarded: false,
      },
      {
        kind: 'journal',
        units: [],
        command: '/usr/bin/journalctl',
        args: ['--directory=/var/log/journal'],
        trustForwarded: false,
      },
    ]);
    const names = s.policy.rules.map((r) => r.name);
    assert.deepEqual(names.slice(-2), ['auth-failures-ban', 'smtp-abuse-ban']);
    const rule = s.policy.rules.find((r) => r.name === 'auth-failures-ban');
    assert.deepEqual(rule?.when, { success: false, pwhash: false, shared: false });
    assert.deepEqual((describeSettings(s).logs as unknown[])[1], {
      path: '/var/log/roundcube/errors.log',
      format: 'roundcube',
      trust_forwarded: true,
    });
    const none = load('allowlist: { networks: [] }\n');
    assert.deepEqual(none.logs, []);
    assert.equal(
      none.policy.rules.some((r) => r.name === 'auth-failures-ban'),
      false,
    );
    // Tuned by name, like any built-in rule.
    const tuned = load('logs: [{ path: /var/log/mail.log }]\nrules:\n  - name: auth-failures-ban\n    limit: 3\n');
    assert.equal(tuned.policy.rules.find((r) => r.name === 'auth-failures-ban')?.limit, 3);
  });

  test('a wrong entry is an error at its place', () => {
    const problems = (yaml: string): string[] => {
      try {
        load(yaml);
      } catch (err) {
        if (err instanceof ConfigError) return err.problems.map((p) => `${p.where} ${p.message}`);
        throw err;
      }
      return [];
    };
    assert.match(problems('logs:\n  - path: mail.log\n').join('\n'), /test\.yaml:2:.*absolute path/);
    assert.match(
      problems('logs:\n  - path: /var/log/mail.log\n    journal: {}\n').join('\n'),
      /either path \(a file\) or journal/,
    );
    assert.match(problems('logs:\n  - journal: {}\n    format: roundcube\n').join('\n'), /format is for a file/);
    assert.match(problems('logs:\n  - path: /x\n    format: syslog\n').join('\n'), /test\.yaml:3:/);
    assert.match(problems('logs:\n  - path: /x\n    follow: true\n').join('\n'), /follow/);
  });
});

describe('logs: followed, decided, banned', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-logs-'));
  const stores: MemoryStore[] = [];
  after(async () => {
    for (const s of stores) await s.close();
    rmSync(dir, { recursive: true, force: true });
  });
  let n = 0;

  /** A decider and store on `data`, and followers of `log` (all of them stopped by `close`). */
  function start(log: string, data: string, opts: { hooks?: boolean; yaml?: string } = {}) {
    const settings = load(`allowlist: { networks: [] }\nlogs: [{ path: ${log} }]\n${opts.yaml ?? ''}`);
    const store = new MemoryStore({
      file: join(data, 'mw.sqlite'),
      maxKeys: 10_000,
      lookbackMs: 86_400_000,
      now: Date.now,
    });
    stores.push(store);
    const decider = new Decider(settings.policy, store, captureLogger([]));
    const decided: MailEvent[] = [];
    const logs = new LogFollowers({
      evaluate: (e) => {
        decided.push(e);
        return decider.evaluate(e);
      },
      positions: store.db,
      logger: captureLogger([]),
      now: Date.now,
      hooks: opts.hooks ?? false,
      pollMs: 20,
      graceMs: 100,
    });
    return { settings, store, decider, logs, decided };
  }

  const paths = () => {
    const d = join(dir, `c${++n}`);
    mkdirSync(d);
    return { log: join(d, 'mail.log'), data: d };
  };

  test('eleven failures from one address in the log ban it; the ban is in the store the hooks ask', async () => {
    const { log, data } = paths();
    const { logs, store, settings } = start(log, data);
    appendFileSync(log, '');
    await logs.follow(settings.logs);
    await until('following', () => logs.status().sources[0]?.state === 'following');
    for (let i = 0; i < 11; i++) appendFileSync(log, cyrus('198.51.100.1', `user${i % 2}`));
    await until('a ban', () => store.localBan('198.51.100.1', Date.now()) !== undefined);
    const ban = store.localBan('198.51.100.1', Date.now());
    assert.equal(ban?.rule, 'auth-failures-ban');
    const st = logs.status().sources[0];
    assert.equal(st?.events, 11);
    assert.equal(st?.unknown, 0);
    await logs.stop();
  });

  test('the same number of hook reports of one password (with its fingerprint) bans nothing', async () => {
    const { log, data } = paths();
    const { decider, store } = start(log, data);
    for (let i = 0; i < 11; i++)
      await decider.evaluate(
        makeEvent({
          kind: 'auth-result',
          ip: '198.51.100.2',
          time: Date.now(),
          user: 'alice',
          pwhash: '0abc',
          success: false,
          refused: false,
          protocol: 'imap',
        }),
      );
    assert.equal(store.localBan('198.51.100.2', Date.now()), undefined);
  });

  test('a log failure is no distinct password: the distinct-password rules do not count it', async () => {
    const { log, data } = paths();
    const { decider } = start(log, data);
    let last;
    for (let i = 0; i < 8; i++)
      last = await decider.evaluate(
        makeEvent({
          kind: 'auth-result',
          ip: '198.51.100.3',
          time: Date.now(),
          user: 'alice',
          success: false,
          refused: false,
        }),
      );
    assert.ok(
      last?.hits.every((h) => !h.rule.startsWith('auth-guess')),
      JSON.stringify(last?.hits),
    );
    const attempt = await decider.evaluate(
      makeEvent({
        kind: 'auth-attempt',
        ip: '198.51.100.3',
        time: Date.now(),
        user: 'alice',
        pwhash: '0abc',
        protocol: 'imap',
      }),
    );
    assert.equal(attempt.action, 'allow', 'eight log failures do not make the hook refuse a password check');
  });

  test('what Postfix refused, six times in an hour, bans the client', async () => {
    const { log, data } = paths();
    const { logs, store, settings } = start(log, data);
    appendFileSync(log, '');
    await logs.follow(settings.logs);
    await until('following', () => logs.status().sources[0]?.state === 'following');
    const lines = [
      'Nov 27 23:40:01 mx postfix/postscreen[1]: PREGREET 11 after 0.21 from [198.51.100.4]:60591: EHLO bot',
      'Nov 27 23:40:02 mx postfix/postscreen[1]: DNSBL rank 6 for [198.51.100.4]:49012',
      'Nov 27 23:40:03 mx postfix/smtpd[2]: NOQUEUE: reject: RCPT from unknown[198.51.100.4]: 554 5.7.1 <v@example.net>: Relay access denied; from=<s@example.org> to=<v@example.net> proto=ESMTP helo=<x>',
      'Nov 27 23:40:04 mx postfix/smtpd[2]: too many errors after RCPT from unknown[198.51.100.4]',
      'Nov 27 23:40:05 mx postfix/smtpd[2]: lost connection after AUTH from unknown[198.51.100.4]',
    ];
    appendFileSync(log, `${lines.join('\n')}\n`);
    await sleep(200);
    assert.equal(store.localBan('198.51.100.4', Date.now()), undefined, 'five are not enough');
    appendFileSync(log, `${lines[0] as string}\n`);
    await until('a ban', () => store.localBan('198.51.100.4', Date.now())?.rule === 'smtp-abuse-ban');
    await logs.stop();
  });

  test('with the Dovecot hook: a failure it reported is not counted again from the log; one it did not see is', async () => {
    const { log, data } = paths();
    const { logs, settings, decided } = start(log, data, { hooks: true });
    appendFileSync(log, '');
    await logs.follow(settings.logs);
    await until('following', () => logs.status().sources[0]?.state === 'following');
    logs.hookReported(
      makeEvent({
        kind: 'auth-result',
        ip: '198.51.100.5',
        time: Date.now(),
        user: 'bob',
        pwhash: '0abc',
        success: false,
        refused: false,
      }),
    );
    // The hook's attempt (Postfix through Dovecot SASL), and a Cyrus one the hook never saw.
    appendFileSync(log, cyrus('198.51.100.5', 'bob') + cyrus('198.51.100.5', 'bob'));
    await until('decided', () => decided.length === 1);
    await sleep(300);
    assert.equal(decided.length, 1);
    assert.equal(logs.status().hookMatched, 1);
    await logs.stop();
  });

  test('a restart on the same data directory goes on from the saved position', async () => {
    const { log, data } = paths();
    appendFileSync(log, cyrus('198.51.100.9')); // before the first start: never read
    let run = start(log, data);
    await run.logs.follow(run.settings.logs);
    await until('following', () => run.logs.status().sources[0]?.state === 'following');
    appendFileSync(log, cyrus('198.51.100.6') + cyrus('198.51.100.7'));
    await until('2 events', () => run.decided.length === 2);
    await run.logs.stop();
    await run.store.close();
    stores.splice(stores.indexOf(run.store), 1);
    appendFileSync(log, cyrus('198.51.100.8'));
    run = start(log, data);
    await run.logs.follow(run.settings.logs);
    await until('1 event', () => run.decided.length === 1);
    await sleep(200);
    assert.deepEqual(
      run.decided.map((e) => e.ip),
      ['198.51.100.8'],
    );
    await run.logs.stop();
  });
});
