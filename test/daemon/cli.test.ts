/*
 * The CLI as an administrator runs it: the real binary as a child process, from another working directory
 * than the daemon's, finding the daemon through MAILWARDEN_DATA or a config file's data_dir (even a broken
 * file), and the incident commands: status, reload, bans check, bulk remove, paged lists, --json times.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { configDataDir, dataDirCandidates, SYSTEM_DATA_DIR } from '../../src/admin/client.js';
import { runCli, startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;
const CONFIG = 'rules:\n  - name: smtp-connections-per-ip\n    limit: 2\n';

describe('CLI: finds the daemon from any directory', () => {
  let dir: string;
  let elsewhere: string;
  let d: DaemonProcess;
  let env: Record<string, string>;
  const cli = (args: string[], e: Record<string, string> = env) => runCli(args, e, { cwd: elsewhere });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-cli-'));
    elsewhere = mkdtempSync(join(tmpdir(), 'mw-cwd-'));
    writeFileSync(join(dir, 'mailwarden.yaml'), CONFIG);
    d = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') });
    // Only what the CLI needs: the data dir.
    env = { MAILWARDEN_DATA: join(dir, 'data') };
  });
  after(async () => {
    await d.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    rmSync(elsewhere, { recursive: true, force: true });
  });

  test('status, from another directory: listeners, store, counts, version; --json', async () => {
    const r = await cli(['status']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^mailwarden \d+\.\d+\.\d+, pid \d+/);
    assert.match(r.stdout, new RegExp(`postfix +127\\.0\\.0\\.1:${d.postfixPort}`));
    assert.match(r.stdout, /store +memory/);
    assert.match(r.stdout, /state +ok/);
    const j = await cli(['status', '--json']);
    assert.equal(j.code, 0, j.stderr);
    const st = JSON.parse(j.stdout) as {
      version: string;
      dataDir: string;
      adminSocket: string;
      store: { activeBans: number; persistence: { ok: boolean } };
    };
    assert.equal(st.dataDir, join(dir, 'data'));
    assert.equal(st.adminSocket, join(dir, 'data', 'admin.sock'));
    assert.equal(st.store.persistence.ok, true);
    assert.equal(typeof st.store.activeBans, 'number');
  });

  test('a broken config file does not lock the CLI out: its data_dir line is enough', async () => {
    const bad = join(dir, 'broken.yaml');
    writeFileSync(
      bad,
      `# edited in a hurry\ndata_dir: "${join(dir, 'data')}"  # here\nrules: [ {name: x, limt: 3\n  : :\n`,
    );
    const r = await cli(['bans', 'list'], { MAILWARDEN_CONFIG: bad, MAILWARDEN_DATA: '' });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /no active bans|showing/);
  });

  test('bans check names every ban covering an address, networks included', async () => {
    for (const s of ['203.0.113.0/24', '203.0.113.7', '2001:db8::/32']) {
      const a = await cli(['bans', 'add', s, '--duration', '1h', '--reason', 'cli test']);
      assert.equal(a.code, 0, a.stderr);
    }
    const r = await cli(['bans', 'check', '203.0.113.7']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /203\.0\.113\.7 is banned by 2 ban\(s\)/);
    assert.match(r.stdout, /203\.0\.113\.0\/24 +until/);
    const v6 = await cli(['bans', 'check', '2001:db8:1::5', '--json']);
    const j = JSON.parse(v6.stdout) as {
      subject: string;
      bans: Array<{ subject: string; since: string; until: string }>;
    };
    assert.deepEqual(
      j.bans.map((b) => b.subject),
      ['2001:db8::/32'],
    );
    assert.match(j.bans[0]?.until ?? '', ISO);
    assert.match(j.bans[0]?.since ?? '', ISO);
    const none = await cli(['bans', 'check', '192.0.2.99']);
    assert.equal(none.code, 1);
    assert.match(none.stdout, /192\.0\.2\.99 is not banned/);
    const bad = await cli(['bans', 'check', 'nope']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /not an IP address or CIDR/);
  });

  test('remove of an address inside a banned network says which network covers it', async () => {
    const r = await cli(['bans', 'remove', '203.0.113.7', '203.0.113.9']);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /unbanned 203\.0\.113\.7/);
    assert.match(r.stderr, /203\.0\.113\.9 is not banned, but is covered by 203\.0\.113\.0\/24 \(rule manual\)/);
  });

  test('lists show their total and page; --json has ISO times', async () => {
    for (let i = 1; i <= 4; i++) assert.equal((await cli(['bans', 'add', `198.51.100.${i}`])).code, 0);
    const all = await cli(['bans', 'list']);
    assert.match(all.stdout, /showing 1–6 of 6 active bans\n$/);
    const page = await cli(['bans', 'list', '--limit', '2', '--offset', '2']);
    assert.equal(page.stdout.trim().split('\n').length, 3);
    assert.match(page.stdout, /showing 3–4 of 6 active bans; --offset 4 for more\n$/);
    const j = JSON.parse((await cli(['bans', 'list', '--limit', '1', '--json'])).stdout) as {
      total: number;
      limit: number;
      items: Array<{ until: string }>;
    };
    assert.equal(j.total, 6);
    assert.equal(j.limit, 1);
    assert.match(j.items[0]?.until ?? '', ISO);
  });

  test('bans remove --rule, and --all only with --yes', async () => {
    const byRule = await cli(['bans', 'remove', '--rule', 'manual', '--json']);
    assert.equal(byRule.code, 0, byRule.stderr);
    const removed = (JSON.parse(byRule.stdout) as { removed: Array<{ rule: string; until: string }> }).removed;
    assert.equal(removed.length, 6);
    assert.ok(removed.every((b) => b.rule === 'manual' && ISO.test(b.until)));
    for (let i = 1; i <= 3; i++) assert.equal((await cli(['bans', 'add', `192.0.2.${i}`])).code, 0);
    const refused = await cli(['bans', 'remove', '--all']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /--yes/);
    assert.match((await cli(['bans', 'list'])).stdout, /of 3 active bans/);
    const all = await cli(['bans', 'remove', '--all', '--yes']);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /3 ban\(s\) lifted/);
    assert.match((await cli(['bans', 'list'])).stdout, /^no active bans\n$/);
  });

  test('reload: a good config is applied, a wrong one refused with exit 1', async () => {
    const ok = await cli(['reload']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /configuration reloaded/);
    const file = join(dir, 'mailwarden.yaml');
    const good = readFileSync(file, 'utf8');
    writeFileSync(file, 'rules:\n  - name: x\n    limt: 3\n');
    try {
      const bad = await cli(['reload', '--json']);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /limt/);
    } finally {
      writeFileSync(file, good);
    }
  });

  test('users list shows its total; resume --json', async () => {
    assert.equal((await cli(['users', 'suspend', 'mallory@example.org'])).code, 0);
    const l = await cli(['users', 'list']);
    assert.match(l.stdout, /mallory@example\.org +until/);
    assert.match(l.stdout, /showing 1–1 of 1 suspended users/);
    const r = await cli(['users', 'resume', 'mallory@example.org', '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.match((JSON.parse(r.stdout) as { resumed: { since: string } }).resumed.since, ISO);
  });
});

describe('CLI: no daemon where it looked', () => {
  test('a named data dir without a daemon: exit 2, the path and where it came from', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'mw-empty-'));
    try {
      const r = await runCli(['bans', 'list'], { MAILWARDEN_DATA: empty }, { cwd: tmpdir() });
      assert.equal(r.code, 2);
      assert.match(r.stderr, /mailwarden is not running/);
      assert.ok(r.stderr.includes(`${join(empty, 'admin.sock')}  (MAILWARDEN_DATA)`), r.stderr);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  test('nothing named: it lists every place it tried and how to point it', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'mw-nowhere-'));
    try {
      const r = await runCli(['status'], { MAILWARDEN_DATA: '', MAILWARDEN_CONFIG: '' }, { cwd });
      assert.equal(r.code, 2);
      assert.ok(r.stderr.includes(join(cwd, 'data', 'admin.sock')), r.stderr);
      assert.ok(r.stderr.includes(join(SYSTEM_DATA_DIR, 'admin.sock')), r.stderr);
      assert.match(r.stderr, /--data DIR or MAILWARDEN_DATA=DIR/);
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  });
});

describe('CLI: where it looks', () => {
  test('configDataDir reads only the data_dir line, quoted or not, and survives any file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mw-cfg-'));
    try {
      const f = join(dir, 'c.yaml');
      writeFileSync(f, "rules: [\ndata_dir: '/srv/mw data' # x\n");
      assert.equal(configDataDir(f), '/srv/mw data');
      writeFileSync(f, 'data_dir: rel/dir  # comment\n');
      assert.equal(configDataDir(f), 'rel/dir');
      writeFileSync(f, '  data_dir: nested\n');
      assert.equal(configDataDir(f), undefined);
      assert.equal(configDataDir(join(dir, 'missing.yaml')), undefined);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('order: --data alone, MAILWARDEN_DATA alone, else config, ./data, the quick start, /var/lib', () => {
    const base = { cwd: '/home/op', installDataDir: '/opt/mailwarden/data' };
    assert.deepEqual(dataDirCandidates({ ...base, flag: 'd', env: { MAILWARDEN_DATA: '/x' } }).candidates, [
      { dir: '/home/op/d', from: '--data' },
    ]);
    assert.deepEqual(
      dataDirCandidates({ ...base, env: { MAILWARDEN_DATA: '/x' } }).candidates.map((c) => c.dir),
      ['/x'],
    );
    assert.deepEqual(
      dataDirCandidates({ ...base, env: {} }).candidates.map((c) => c.dir),
      ['/home/op/data', '/opt/mailwarden/data', SYSTEM_DATA_DIR],
    );
  });
});
