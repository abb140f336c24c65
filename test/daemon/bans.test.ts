/*
 * Bans as an attacker, a careless administrator and a damaged data file would
 * try them, on a real daemon (child process, built-in policy and allowlist):
 * durations bounded where they enter (API, CLI), over-broad bans only with
 * force, the allowlist checked by range both ways, bans of odd prefix lengths
 * enforced on the real Postfix socket, and stored bans with absurd times
 * still enforced, listed and explained.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SqlitePersistence } from '../../src/store/sqlite.js';
import { runCli, startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { ask, connectRequest } from '../helpers/postfix.js';

describe('bans: bounded, forced, of any prefix length, and safe to read back', () => {
  let dir: string;
  let d: DaemonProcess | undefined;
  let env: Record<string, string>;
  let token: string;
  const connect = (ip: string): Promise<string> => ask((d as DaemonProcess).postfixPort, connectRequest(ip));
  const post = async (path: string, body: object): Promise<{ status: number; body: Record<string, unknown> }> => {
    const r = await fetch(`http://127.0.0.1:${(d as DaemonProcess).adminPort}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: r.status, body: (await r.json()) as Record<string, unknown> };
  };
  const cli = (...args: string[]) => runCli(args, env);
  const REFUSED = /^action=554 5\.7\.1 Access denied: /;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-bans-'));
    const data = join(dir, 'data');
    mkdirSync(data, { recursive: true, mode: 0o700 });
    // Rows a hand edit, an older version or a damaged file could leave behind.
    const db = new SqlitePersistence(join(data, 'mailwarden.sqlite'));
    const put = db.db.prepare(
      'INSERT INTO bans (subject, since, until, rule, reason, offence, actor) VALUES (?, ?, ?, ?, ?, ?, ?)',
    );
    put.run('198.51.100.1', Date.now(), 1e300, 'manual', 'absurd end', 1, 'cli');
    put.run('198.51.100.2', 'yesterday', 'forever', 'manual', 'unreadable end', 'many', 'cli');
    db.close();
    d = await startDaemonProcess(data);
    env = d.env;
    token = readFileSync(join(data, 'admin.token'), 'utf8').trim();
  });
  after(async () => {
    await d?.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  test('stored bans with absurd or unreadable ends are enforced, listed, explained, and reported', async () => {
    assert.match(await connect('198.51.100.1'), REFUSED);
    assert.match(await connect('198.51.100.2'), /Access denied: 198\.51\.100\.2 is blocked until \d{4}-/);
    const list = await cli('bans', 'list');
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /198\.51\.100\.1 +until \d{4}-.*absurd end/);
    assert.match(list.stdout, /198\.51\.100\.2 +until \d{4}-.*offence 1 .*unreadable end/);
    const e = await cli('explain', '198.51.100.2');
    assert.equal(e.code, 0, e.stderr);
    assert.match(e.stdout, /BANNED: 198\.51\.100\.2 until \d{4}-/);
    assert.match((d as DaemonProcess).output(), /a stored ban was repaired: until \\"forever\\" is not a time/);
  });

  test('durations are bounded where they enter: a clear 400 from the API, the same message from the CLI', async () => {
    for (const duration of ['999999999999d', 1e300, '3651d', '9999999999999999999999999w']) {
      const r = await post('/v1/bans', { subject: '192.0.2.50', duration });
      assert.deepEqual([r.status, r.body.error], [400, 'duration must be at most 3650d'], String(duration));
    }
    assert.deepEqual((await post('/v1/bans', { subject: '192.0.2.50', duration: '0s' })).body, {
      error: 'duration must be longer than 0',
    });
    const s = await post('/v1/users/eve@example.org/suspend', { duration: '99999d' });
    assert.deepEqual([s.status, s.body.error], [400, 'duration must be at most 3650d']);
    const add = await cli('bans', 'add', '192.0.2.50', '--duration', '999999999999d');
    assert.equal(add.code, 1);
    assert.match(add.stderr, /duration must be at most 3650d/);
    const sus = await cli('users', 'suspend', 'eve@example.org', '--duration', '4000d');
    assert.equal(sus.code, 1);
    assert.match(sus.stderr, /duration must be at most 3650d/);
    assert.match(await connect('192.0.2.50'), /^action=DUNNO$/, 'nothing was banned');
    // The limit itself is fine, and prints.
    const ok = await post('/v1/bans', { subject: '192.0.2.51', duration: '3650d' });
    assert.equal(ok.status, 201);
    assert.equal((ok.body.until as number) - (ok.body.since as number), 3650 * 86_400_000);
    assert.match((await cli('bans', 'list')).stdout, /192\.0\.2\.51 +until 2\d{3}-/);
    assert.equal((await cli('bans', 'remove', '192.0.2.51')).code, 0);
  });

  test('a ban wider than IPv4 /8 or IPv6 /16 needs force; a forced /0 refuses every address but the allowlisted', async () => {
    for (const subject of ['0.0.0.0/0', '::/0', '10.0.0.0/7', '2000::/15']) {
      const r = await post('/v1/bans', { subject, duration: '1h' });
      assert.equal(r.status, 400, subject);
      assert.match(String(r.body.error), /needs force: pass --force \(CLI\) or "force": true \(API\)/, subject);
    }
    const refused = await cli('bans', 'add', '0.0.0.0/0', '--duration', '1h');
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /0\.0\.0\.0\/0 covers 4294967296 addresses, more than a \/8 \(IPv4\); such a ban needs force: pass --force/);
    assert.equal(await connect('8.8.8.8'), 'action=DUNNO');

    const forced = await cli('bans', 'add', '0.0.0.0/0', '--force', '--duration', '1h');
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(await connect('8.8.8.8'), /Access denied: 0\.0\.0\.0\/0 is blocked/);
    assert.match(await connect('203.0.113.200'), REFUSED);
    assert.equal(await connect('127.0.0.1'), 'action=DUNNO', 'the allowlist still wins');
    assert.equal(await connect('2001:db8::1'), 'action=DUNNO', 'IPv4 only');
    const v6 = await post('/v1/bans', { subject: '::/0', duration: '1h', force: true });
    assert.equal(v6.status, 201);
    assert.match(await connect('2001:4860:4860::8888'), /Access denied: ::\/0 is blocked/);
    assert.equal(await connect('::1'), 'action=DUNNO');
    assert.equal((await cli('bans', 'remove', '0.0.0.0/0')).code, 0);
    assert.equal((await cli('bans', 'remove', '::/0')).code, 0);
    assert.equal(await connect('8.8.8.8'), 'action=DUNNO');
  });

  test('the allowlist is checked by range both ways: inside it is refused, holding it needs force', async () => {
    const inside = await post('/v1/bans', { subject: '127.0.0.1', duration: '1h', force: true });
    assert.deepEqual(
      [inside.status, inside.body.error],
      [409, '127.0.0.1 is allowlisted (127.0.0.1); remove it from the allowlist first (mailwarden allow list shows where it is)'],
    );
    const holding = await post('/v1/bans', { subject: '127.0.0.0/8', duration: '1h' });
    assert.equal(holding.status, 409);
    assert.match(String(holding.body.error), /127\.0\.0\.0\/8 holds the allowlisted 127\.0\.0\.1, .*force/);
    assert.equal((await post('/v1/bans', { subject: '::/64', duration: '1h' })).status, 409, 'holds ::1');
    const forced = await cli('bans', 'add', '127.0.0.0/8', '--force', '--duration', '1h');
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(await connect('127.0.0.2'), REFUSED);
    assert.equal(await connect('127.0.0.1'), 'action=DUNNO');
    assert.equal((await cli('bans', 'remove', '127.0.0.0/8')).code, 0);
  });

  test('network bans of odd sizes (/15, /23, IPv6 /40) refuse every address inside and none outside', async () => {
    for (const subject of ['198.18.0.0/15', '203.0.112.0/23', '2001:db8:ff00::/40']) {
      const r = await cli('bans', 'add', subject, '--duration', '1h', '--reason', 'provider allocation');
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`banned ${subject.replace(/[./]/g, '\\$&')}( \\(\\S+ addresses\\))? until`));
    }
    for (const ip of ['198.18.1.1', '198.19.255.255', '203.0.112.5', '203.0.113.255', '2001:db8:ffff::1'])
      assert.match(await connect(ip), REFUSED, ip);
    for (const ip of ['198.17.255.255', '198.20.0.0', '203.0.111.255', '203.0.114.0', '2001:db9::1'])
      assert.equal(await connect(ip), 'action=DUNNO', ip);
    const e = await cli('explain', '198.18.1.1');
    assert.match(e.stdout, /BANNED: 198\.18\.0\.0\/15 until .*provider allocation/);
    const e6 = await cli('explain', '2001:db8:ffff::1', '--json');
    assert.deepEqual(
      (JSON.parse(e6.stdout) as { bans: Array<{ subject: string }> }).bans.map((b) => b.subject),
      ['2001:db8:ff00::/40'],
    );
    for (const subject of ['198.18.0.0/15', '203.0.112.0/23', '2001:db8:ff00::/40'])
      assert.equal((await cli('bans', 'remove', subject)).code, 0);
    assert.equal(await connect('198.18.1.1'), 'action=DUNNO');
  });
});
