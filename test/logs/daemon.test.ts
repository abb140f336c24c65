/*
 * The log follower in the real daemon (`mailwarden serve` as a child
 * process): a source of the config followed from the start, its failures
 * banning through the same store the Postfix hook asks at CONNECT, a source
 * added by a reload, `logs` in /v1/status and in `mailwarden status`, and a
 * login the Dovecot hook reported over HTTP not counted again from the log.
 */
import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { call } from '../../src/admin/client.js';
import type { BanRecord } from '../../src/engine/types.js';
import type { SourceStatus } from '../../src/logs/followers.js';
import { runCli, startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { ask, connectRequest } from '../helpers/postfix.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Status {
  logs: { sources: SourceStatus[]; errors: number; hookMatched: number };
}

const cyrus = (ip: string) =>
  `Nov 27 23:26:14 mx postfix/smtpd[1]: warning: unknown[${ip}]: SASL LOGIN authentication failed: authentication failure\n`;

describe('logs: in the daemon', { timeout: 60_000 }, () => {
  let dir: string;
  let mw: DaemonProcess;
  let sock: string;
  const mailLog = () => join(dir, 'mail.log');
  const writeConfig = (sources: string[]) =>
    writeFileSync(
      join(dir, 'mailwarden.yaml'),
      `allowlist: { networks: [] }\nlogs:\n${sources.map((p) => `  - path: ${p}`).join('\n')}\n`,
    );

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-logs-daemon-'));
    appendFileSync(mailLog(), cyrus('198.51.100.99')); // before the first start: never counted
    writeConfig([mailLog()]);
    mw = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') });
    sock = join(dir, 'data', 'admin.sock');
    await until('following', async () => (await status()).logs.sources[0]?.state === 'following');
  });
  after(async () => {
    await mw?.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  const status = (): Promise<Status> => call<Status>(sock, 'GET', '/v1/status');
  const bans = async (ip: string): Promise<BanRecord[]> =>
    (await call<{ bans: BanRecord[] }>(sock, 'GET', `/v1/bans/check/${ip}`)).bans;

  async function until(what: string, cond: () => Promise<boolean>): Promise<void> {
    for (let i = 0; !(await cond()); i++) {
      if (i > 100) throw new Error(`timed out waiting for ${what}\n${mw.output().slice(-2000)}`);
      await sleep(100);
    }
  }

  test('failures in the log ban the address; the Postfix hook refuses it at CONNECT', async () => {
    for (let i = 0; i < 11; i++) appendFileSync(mailLog(), cyrus('198.51.100.1'));
    await until('a ban', async () => (await bans('198.51.100.1')).length > 0);
    const reply = await ask(mw.postfixPort, connectRequest('198.51.100.1'));
    assert.match(reply, /^action=554 5\.7\.1 .*198\.51\.100\.1 is blocked/);
    const st = (await status()).logs.sources[0];
    assert.equal(st?.events, 11, 'the line written before the first start is not counted');
    assert.equal(await bans('198.51.100.99').then((b) => b.length), 0);
  });

  test('a reload adds a source', async () => {
    const second = join(dir, 'dovecot.log');
    writeFileSync(second, '');
    writeConfig([mailLog(), second]);
    mw.proc.kill('SIGHUP');
    await until('two sources', async () => (await status()).logs.sources[1]?.state === 'following');
    appendFileSync(
      second,
      '2026-11-27 23:27:18 imap-login: Info: Disconnected: Aborted login by logging out (auth failed, 2 attempts in 4 secs): user=<bob>, method=PLAIN, rip=198.51.100.2, lip=192.0.2.1, session=<r1>\n',
    );
    await until('its events', async () => (await status()).logs.sources[1]?.events === 2);
  });

  test('a failure the Dovecot hook reported is not counted again from the log', async () => {
    const body = JSON.stringify({
      login: 'carol',
      pwhash: '0abc',
      remote: '198.51.100.3',
      protocol: 'smtp',
      session_id: '',
      device_id: '',
      success: false,
      policy_reject: false,
      tls: false,
    });
    await new Promise<void>((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: mw.dovecotPort,
          method: 'POST',
          path: '/dovecot/policy?command=report',
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (res) => {
          res.resume();
          res.on('end', resolve);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
    const before = (await status()).logs.sources[0]?.events ?? 0;
    appendFileSync(
      mailLog(),
      'Nov 27 23:26:16 mx postfix/smtpd[1]: warning: unknown[198.51.100.3]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=carol\n',
    );
    await until('matched', async () => (await status()).logs.hookMatched === 1);
    assert.equal((await status()).logs.sources[0]?.events, before + 1, 'read and made into an event, then dropped');
  });

  test('mailwarden status: a line per source; a file that does not exist is a degraded state until it does', async () => {
    const env = { MAILWARDEN_DATA: join(dir, 'data'), MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') };
    const ok = await runCli(['status'], env);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(
      ok.stdout,
      new RegExp(`^logs +${escape(mailLog())} \\(mail\\): following, \\d+ lines, \\d+ events$`, 'm'),
    );
    assert.match(
      ok.stdout,
      new RegExp(`^ +${escape(join(dir, 'dovecot.log'))} \\(mail\\): following, 1 line, 2 events$`, 'm'),
    );
    assert.match(ok.stdout, /^state +ok$/m);

    const missing = join(dir, 'later.log');
    writeConfig([mailLog(), join(dir, 'dovecot.log'), missing]);
    mw.proc.kill('SIGHUP');
    await until('three sources', async () => (await status()).logs.sources.length === 3);
    const down = await runCli(['status'], env);
    assert.match(down.stdout, new RegExp(`^ +${escape(missing)} \\(mail\\): waiting, 0 lines, 0 events$`, 'm'));
    assert.match(
      down.stdout,
      new RegExp(`DEGRADED:\\n(?:.*\\n)*\\s+logs: ${escape(missing)} \\(mail\\) is not read: the file does not exist`),
    );

    writeFileSync(missing, '');
    await until('following it', async () => (await status()).logs.sources[2]?.state === 'following');
    assert.match((await runCli(['status'], env)).stdout, /^state +ok$/m);
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
