/*
 * The administrator's incident commands through the real CLI binary (a child process, run from
 * another directory than the daemon's) against a real daemon: the runtime allowlist (it changes
 * what the daemon answers, survives a restart, and ends on time), the audit export, `bans list -q`
 * naming a covering network, `backup` while bans are being written and the documented restore,
 * and a unix socket already in use as one line.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli, startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { ask, connectRequest } from '../helpers/postfix.js';

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;
// Two connections per address and minute, then a refusal: enough to see the allowlist at work.
const CONFIG = 'rules:\n  - name: smtp-connections-per-ip\n    limit: 2\n';

interface AllowEntry {
  subject: string;
  kind: string;
  source: string;
  since: string | null;
  until: string | null;
  reason: string;
}
interface AuditRow {
  id: number;
  time: string;
  kind: string;
  subject: string;
  actor: string;
  evidence: Record<string, unknown>;
}

describe('CLI: allowlist, audit, backup', () => {
  let dir: string;
  let elsewhere: string;
  let d: DaemonProcess | undefined;
  const data = (): string => join(dir, 'data');
  const cli = (args: string[]) => runCli(args, { MAILWARDEN_DATA: data() }, { cwd: elsewhere });
  const ok = async (args: string[]): Promise<string> => {
    const r = await cli(args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  /** What the daemon answers to `n` new SMTP connections from `ip`. */
  const connections = async (ip: string, n: number): Promise<string[]> => {
    const out: string[] = [];
    for (let i = 0; i < n; i++)
      out.push((await ask(d?.postfixPort ?? 0, connectRequest(ip, 40000 + i))).replace(/^action=/, ''));
    return out;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-cliadm-'));
    elsewhere = mkdtempSync(join(tmpdir(), 'mw-cwd-'));
    writeFileSync(join(dir, 'mailwarden.yaml'), CONFIG);
    d = await startDaemonProcess(data(), { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') });
  });
  after(async () => {
    await d?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    rmSync(elsewhere, { recursive: true, force: true });
  });

  test('allow add exempts a network at once; remove makes the limit apply again', async () => {
    const before = await connections('192.0.2.10', 4);
    assert.deepEqual(before.slice(0, 2), ['DUNNO', 'DUNNO']);
    assert.match(before[3] ?? '', /^(450|554|DEFER)/, 'over the limit without the allowlist');

    const added = await ok(['allow', 'add', '192.0.2.0/24', '--reason', 'office NAT']);
    assert.match(added, /^allowlisted 192\.0\.2\.0\/24$/m);
    assert.deepEqual(await connections('192.0.2.11', 5), Array(5).fill('DUNNO'), 'no limit for the office');

    const list = JSON.parse(await ok(['allow', 'list', '--json'])) as { total: number; items: AllowEntry[] };
    const office = list.items.find((e) => e.subject === '192.0.2.0/24');
    assert.equal(office?.source, 'runtime');
    assert.equal(office?.reason, 'office NAT');
    assert.match(office?.since ?? '', ISO);
    assert.equal(office?.until, null);
    const fromConfig = list.items.find((e) => e.subject === '127.0.0.1');
    assert.deepEqual([fromConfig?.source, fromConfig?.since], ['config', null]);
    assert.equal(list.total, list.items.length);

    assert.match(await ok(['allow', 'remove', '192.0.2.0/24']), /removed 192\.0\.2\.0\/24/);
    const again = await connections('192.0.2.12', 3);
    assert.match(again[2] ?? '', /^(450|554|DEFER)/, 'limited again once removed');
  });

  test('refusals say why and exit 1: too broad, in the config file, not there, not an address', async () => {
    const broad = await cli(['allow', 'add', '10.0.0.0/4']);
    assert.equal(broad.code, 1);
    assert.match(broad.stderr, /covers 268435456 addresses.*--force/);
    const config = await cli(['allow', 'remove', '127.0.0.1']);
    assert.equal(config.code, 1);
    assert.match(config.stderr, /allowlisted by the config file.*remove it there and reload/);
    const absent = await cli(['allow', 'remove', 'nobody@example.org']);
    assert.equal(absent.code, 1);
    assert.match(absent.stderr, /nobody@example\.org is not on the runtime allowlist/);
    const typo = await cli(['allow', 'add', '192.0.2.300']);
    assert.equal(typo.code, 1);
    assert.match(typo.stderr, /not a valid IP address or CIDR network/);
  });

  test('an entry with a duration ends by itself; a user entry is kept in lower case', async () => {
    const j = JSON.parse(await ok(['allow', 'add', '198.51.100.77', '--duration', '2s', '--json'])) as AllowEntry;
    assert.match(j.until ?? '', ISO);
    assert.deepEqual(await connections('198.51.100.77', 3), Array(3).fill('DUNNO'));
    await new Promise((r) => setTimeout(r, 2500));
    const list = JSON.parse(await ok(['allow', 'list', '--json'])) as { items: AllowEntry[] };
    assert.ok(!list.items.some((e) => e.subject === '198.51.100.77'), 'gone from the list');
    const after = await connections('198.51.100.77', 1);
    assert.match(after[0] ?? '', /^(450|554|DEFER)/, 'and from the policy: its earlier connections count again');
    const u = JSON.parse(await ok(['allow', 'add', 'Boss@Example.ORG', '--json'])) as AllowEntry;
    assert.deepEqual([u.subject, u.kind], ['boss@example.org', 'user']);
  });

  test('allowlisting a banned network says the ban stays but no longer stops it', async () => {
    assert.match(await ok(['bans', 'add', '203.0.113.0/24', '--duration', '1h']), /^banned 203\.0\.113\.0\/24 until /);
    // A wide ban is allowed, but says how much it holds.
    assert.match(await ok(['bans', 'add', '100.0.0.0/8', '--duration', '1m']), /^banned 100\.0\.0\.0\/8 \(16,777,216 addresses\) until/);
    await ok(['bans', 'remove', '100.0.0.0/8']);
    const out = await ok(['allow', 'add', '203.0.113.128/25']);
    assert.match(out, /note: the ban of 203\.0\.113\.0\/24 \(rule manual\) stays, but no longer stops 203\.0\.113\.128\/25/);
    await ok(['allow', 'remove', '203.0.113.128/25']);
  });

  test('bans list -q ADDRESS names the network ban that covers it', async () => {
    const out = await ok(['bans', 'list', '-q', '203.0.113.5']);
    assert.match(out, /no matching bans/);
    assert.match(out, /203\.0\.113\.5 is covered by 203\.0\.113\.0\/24 \(rule manual, until /);
    const j = JSON.parse(await ok(['bans', 'list', '-q', '203.0.113.5', '--json'])) as {
      coveredBy: Array<{ subject: string }>;
    };
    assert.deepEqual(
      j.coveredBy.map((b) => b.subject),
      ['203.0.113.0/24'],
    );
  });

  test('audit: newest first, by time and subject, paged with its total; --all --json is one row a line', async () => {
    const all = JSON.parse(await ok(['audit', '--json', '--limit', '1000'])) as { total: number; items: AuditRow[] };
    assert.ok(all.total >= 8, `allow, unallow, ban rows and rule hits: ${all.total}`);
    const ids = all.items.map((a) => a.id);
    assert.deepEqual(
      ids,
      [...ids].sort((a, b) => b - a),
      'newest first',
    );
    assert.ok(all.items.every((a) => ISO.test(a.time)));
    const kinds = new Set(all.items.map((a) => a.kind));
    for (const k of ['allow', 'unallow', 'ban', 'limit']) assert.ok(kinds.has(k), `${k} in ${[...kinds].join(',')}`);
    const office = JSON.parse(await ok(['audit', '--subject', '192.0.2.0/24', '--json'])) as {
      total: number;
      items: AuditRow[];
    };
    assert.deepEqual(
      office.items.map((a) => a.kind),
      ['unallow', 'allow'],
    );
    assert.ok(office.items.every((a) => a.actor.startsWith('cli')));
    // A subject is matched as stored: an address in any spelling, a user in any case.
    const boss = JSON.parse(await ok(['audit', '--subject', 'BOSS@example.org', '--json'])) as { total: number };
    assert.equal(boss.total, 1);
    const none = JSON.parse(await ok(['audit', '--since', '2099-01-01T00:00:00Z', '--json'])) as { total: number };
    assert.equal(none.total, 0);
    const recent = JSON.parse(await ok(['audit', '--since', '1h', '--json'])) as { total: number };
    assert.equal(recent.total, all.total);
    const page = JSON.parse(await ok(['audit', '--limit', '2', '--offset', '1', '--json'])) as { items: AuditRow[] };
    assert.deepEqual(
      page.items.map((a) => a.id),
      ids.slice(1, 3),
    );
    const lines = (await ok(['audit', '--all', '--json'])).trim().split('\n');
    assert.equal(lines.length, all.total);
    assert.equal((JSON.parse(lines[0] ?? '{}') as AuditRow).id, ids[0]);
    const text = await ok(['audit', '--limit', '3']);
    assert.match(text, /showing 1–3 of \d+ audit rows; --offset 3 for more/);
    const bad = await cli(['audit', '--since', 'yesterday-ish']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /neither a time .* nor a duration back/);
  });

  test('backup while bans are written, then the documented restore brings them all back', async () => {
    const token = readFileSync(join(data(), 'admin.token'), 'utf8').trim();
    const ban = (i: number): Promise<Response> =>
      fetch(`http://127.0.0.1:${d?.adminPort}/v1/bans`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ subject: `100.64.${i >> 8}.${i & 255}`, duration: '1d', reason: 'load' }),
      });
    // Bans keep arriving while the copy is made: the copy is of one moment, whole.
    let writing = true;
    const writer = (async () => {
      let i = 0;
      while (writing && i < 2000) await ban(i++);
      return i;
    })();
    await new Promise((r) => setTimeout(r, 300));
    const file = join(dir, 'backup.sqlite');
    const r = JSON.parse(await ok(['backup', file, '--json'])) as { bans: number; schemaVersion: number };
    writing = false;
    const written = await writer;
    assert.ok(r.bans > 1 && r.bans <= written + 1, `${r.bans} bans in the backup of ${written} written`);
    assert.equal(r.schemaVersion, 2);
    const twice = await cli(['backup', file]);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /exists; give a new file name/);

    // docs/OPERATIONS.md: stop the daemon, copy the backup over the database, drop -wal/-shm, start.
    const ports = { postfixPort: d?.postfixPort ?? 0, dovecotPort: d?.dovecotPort ?? 0, adminPort: d?.adminPort ?? 0 };
    await d?.kill('SIGTERM');
    const restored = join(dir, 'restored');
    mkdirSync(restored, { mode: 0o700 });
    copyFileSync(file, join(restored, 'mailwarden.sqlite'));
    d = await startDaemonProcess(restored, { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') }, ports);
    const bans = JSON.parse(
      (await runCli(['bans', 'list', '--json', '--limit', '1'], { MAILWARDEN_DATA: restored }, { cwd: elsewhere }))
        .stdout,
    ) as { total: number };
    assert.equal(bans.total, r.bans, 'every ban of the backup, and only those');
    const allow = await runCli(['allow', 'list'], { MAILWARDEN_DATA: restored }, { cwd: elsewhere });
    assert.match(allow.stdout, /boss@example\.org/, 'the runtime allowlist came back too');
  });

  test('check-config warns of a listener reachable from the network, and still says OK', async () => {
    const file = join(dir, 'exposed.yaml');
    writeFileSync(file, 'listen:\n  postfix: [0.0.0.0:10040]\n  admin: [127.0.0.1:10042]\n');
    const r = await cli(['check-config', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /exposed\.yaml: OK/);
    assert.deepEqual(
      r.stderr.trim().split('\n').map((l) => l.slice(0, 40)),
      ['warning: listen.postfix 0.0.0.0:10040 is'],
    );
    const j = JSON.parse((await cli(['check-config', file, '--json'])).stdout) as { warnings: string[] };
    assert.equal(j.warnings.length, 1);
  });

  test('a second daemon on the same data directory: one line naming the socket, exit 1', async () => {
    const second = await runCli(['serve'], {
      MAILWARDEN_DATA: join(dir, 'restored'),
      MAILWARDEN_POSTFIX_LISTEN: '127.0.0.1:0',
      MAILWARDEN_DOVECOT_LISTEN: '127.0.0.1:0',
      MAILWARDEN_ADMIN_LISTEN: '127.0.0.1:0',
    });
    assert.equal(second.code, 1);
    const lines = second.stderr.trim().split('\n');
    assert.equal(lines.length, 1, second.stderr);
    assert.match(lines[0] ?? '', /^mailwarden: cannot listen on .*admin\.sock \(CLI admin socket\): address already in use/);
  });
});
