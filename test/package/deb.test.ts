/*
 * The Debian package, installed and run the way it is meant to run (issue 14). scripts/package.sh builds
 * it, dpkg installs it on this machine, and the installed daemon runs with the unit's ExecStart as the
 * mailwarden user: there is no systemd as PID 1 here, so setpriv gives it the unit's user and group. It
 * answers Postfix on TCP and on a unix socket laid out as docs/OPERATIONS.md says, and Dovecot, and the
 * installed CLI reaches it. systemd-analyze verifies and scores the installed unit.
 *
 * It changes the machine: it needs root, installs the package and purges it after (the system user
 * stays, as Debian leaves system users). Without root or a tool (systemd-analyze comes from Debian's
 * systemd package, scripts/install-system-deps.sh), or with a mailwarden package already installed, it
 * skips on a dev machine; in CI (CI=true) a missing tool fails it, and an installed package, which can
 * only be left by an interrupted run, is replaced.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import {
  appendFileSync,
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort } from '../helpers/daemon.js';
import { attempt } from '../helpers/dovecot.js';
import { ask, connectRequest, REPO } from '../helpers/postfix.js';

const inCi = (process.env.CI ?? '') !== '' && process.env.CI !== 'false';
const TOOLS = ['dpkg', 'dpkg-deb', 'dpkg-query', 'systemd-analyze', 'setpriv', 'getent', 'npm'];

const has = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
const installed = (): boolean =>
  spawnSync('dpkg-query', ['-W', '-f=${Status}', 'mailwarden'], { encoding: 'utf8' }).stdout.includes(
    'install ok installed',
  );

function why(): string | false {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return 'needs root on Linux (installs a package)';
  const missing = TOOLS.filter((t) => !has(t));
  if (missing.length)
    return `${missing.join(', ')} missing: run scripts/install-system-deps.sh (systemd-analyze: Debian package systemd)`;
  if (!existsSync('/usr/bin/node')) return '/usr/bin/node missing (the package depends on Debian-style nodejs)';
  if (!inCi && installed()) return 'a mailwarden package is installed on this machine; not touching it';
  return false;
}
const skip = why();
if (skip && inCi) throw new Error(skip);

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}
function run(cmd: string, args: string[], opts: { input?: string; timeout?: number } = {}): Run {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd: '/', timeout: opts.timeout ?? 60_000, input: opts.input });
  return { status: r.status, stdout: r.stdout ?? '', stderr: `${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}
function ok(cmd: string, args: string[], opts: { input?: string; timeout?: number } = {}): string {
  const r = run(cmd, args, opts);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

const uidOf = (user: string): number => Number(ok('id', ['-u', user]).trim());
const gidOf = (group: string): number => Number(ok('getent', ['group', group]).split(':')[2]);

const UNIT = '/lib/systemd/system/mailwarden.service';
const CONFIG = '/etc/mailwarden/mailwarden.yaml';
/** Not /var/lib/mailwarden itself: the CLI looks for a daemon there, and the CLI tests running beside this one must find none. */
const DATA = '/var/lib/mailwarden/deb-test';

describe('Debian package', { skip }, () => {
  let work = '';
  let deb = '';
  let daemon: ChildProcess | undefined;
  let out = '';
  let exited: Promise<number | null> = Promise.resolve(null);
  let ports = { postfix: 0, dovecot: 0, admin: 0 };
  let postfixSocket = '';

  before(
    async () => {
      work = mkdtempSync(join(tmpdir(), 'mw-deb-'));
      const built = run('bash', [join(REPO, 'scripts', 'package.sh'), join(work, 'out')], { timeout: 600_000 });
      assert.equal(built.status, 0, `scripts/package.sh failed:\n${built.stdout}${built.stderr}`);
      deb = built.stdout.trim().split('\n').pop() ?? '';
      assert.match(deb, /\/mailwarden_\d+\.\d+\.\d+_[a-z0-9]+\.deb$/);
      ok('dpkg', ['-i', deb], { timeout: 120_000 });

      // The Postfix socket as OPERATIONS.md lays it out in Postfix's chroot: a setgid directory of group
      // postfix that mailwarden owns, so the socket it creates (mode 0660) is of group postfix.
      chmodSync(work, 0o755);
      const sockDir = join(work, 'spool-mailwarden');
      mkdirSync(sockDir);
      if (run('getent', ['group', 'postfix']).status === 0) {
        chownSync(sockDir, uidOf('mailwarden'), gidOf('postfix'));
        chmodSync(sockDir, 0o2750);
        postfixSocket = join(sockDir, 'policy.sock');
      } else if (inCi) {
        throw new Error('no postfix group: scripts/install-system-deps.sh installs postfix');
      }

      ports = { postfix: await freePort(), dovecot: await freePort(), admin: await freePort() };
      // Exactly the unit's ExecStart, as the unit's user, plus the addresses and data dir of this test.
      const execStart = (/^ExecStart=(.+)$/m.exec(readFileSync(UNIT, 'utf8'))?.[1] ?? '').trim().split(/\s+/);
      const argv = [
        '--reuid=mailwarden',
        '--regid=mailwarden',
        '--init-groups',
        '--reset-env',
        ...execStart,
        '--data',
        DATA,
        '--postfix-listen',
        [`127.0.0.1:${ports.postfix}`, ...(postfixSocket ? [postfixSocket] : [])].join(','),
        '--dovecot-listen',
        `127.0.0.1:${ports.dovecot}`,
        '--admin-listen',
        `127.0.0.1:${ports.admin}`,
      ];
      const p = spawn('setpriv', argv, { cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
      daemon = p;
      exited = new Promise((resolve) => p.once('exit', (code) => resolve(code)));
      p.stdout.on('data', (c: Buffer) => (out += c.toString()));
      p.stderr.on('data', (c: Buffer) => (out += c.toString()));
      await waitFor(() => out.includes('"mailwarden started"'), 20_000, 'the daemon to start');
    },
    { timeout: 900_000 },
  );

  after(async () => {
    if (daemon && daemon.exitCode === null && daemon.signalCode === null) {
      daemon.kill('SIGTERM');
      const t = setTimeout(() => daemon?.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    }
    if (installed()) run('dpkg', ['--purge', 'mailwarden'], { timeout: 120_000 });
    if (work) rmSync(work, { recursive: true, force: true });
  });

  async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
    const end = Date.now() + ms;
    while (!cond()) {
      if (daemon?.exitCode !== null && daemon?.exitCode !== undefined)
        throw new Error(`daemon exited ${daemon.exitCode} while waiting for ${what}:\n${out}`);
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}:\n${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  test('the package: its architecture, node dependency, conffile, and production dependencies only', () => {
    const field = (f: string): string => ok('dpkg-deb', ['-f', deb, f]).trim();
    // The native addon makes it architecture-specific, and ties it to the node major version it was built for.
    assert.equal(field('Architecture'), ok('dpkg', ['--print-architecture']).trim());
    const major = process.versions.node.split('.')[0] as string;
    assert.match(field('Depends'), new RegExp(`nodejs \\(>= [\\d.]+\\), nodejs \\(<< ${Number(major) + 1}~\\)`));
    assert.match(
      ok('dpkg-query', ['-W', '-f=${Conffiles}', 'mailwarden']),
      /^ \/etc\/mailwarden\/mailwarden\.yaml [0-9a-f]{32}$/m,
    );

    const app = '/usr/lib/mailwarden';
    const modules = readdirSync(join(app, 'node_modules'));
    for (const dev of ['typescript', 'tsx', 'eslint', 'prettier', 'playwright-core', '@types'])
      assert.ok(!modules.includes(dev), `devDependency ${dev} is in the package`);
    assert.ok(existsSync(join(app, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node')));
    const pkg = JSON.parse(readFileSync(join(app, 'package.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(pkg.type, 'module');
    assert.equal(pkg.scripts, undefined);
    assert.ok(existsSync(join(app, 'dist', 'admin', 'static', 'index.html')), 'the dashboard files are in dist/');
    // The daemon's user cannot change its own program: everything under /usr/lib/mailwarden is root's.
    assert.equal(ok('find', [app, '!', '-user', 'root', '-print', '-quit']), '');
  });

  test('users and modes: data dir 0700 mailwarden, config 0640 root:mailwarden (it may hold secrets)', () => {
    assert.equal(ok('getent', ['passwd', 'mailwarden']).trim().split(':')[6], '/usr/sbin/nologin');
    const dataDir = statSync('/var/lib/mailwarden');
    assert.equal(dataDir.uid, uidOf('mailwarden'));
    assert.equal(dataDir.mode & 0o7777, 0o700);
    const cfg = statSync(CONFIG);
    assert.equal(cfg.uid, 0);
    assert.equal(cfg.gid, gidOf('mailwarden'));
    assert.equal(cfg.mode & 0o777, 0o640);
  });

  test('check-config accepts the installed config, read as the mailwarden user, and every example in it', () => {
    const r = ok('setpriv', [
      '--reuid=mailwarden',
      '--regid=mailwarden',
      '--init-groups',
      '--reset-env',
      'mailwarden',
      'check-config',
      CONFIG,
    ]);
    assert.match(r, /^# \/etc\/mailwarden\/mailwarden\.yaml: OK$/m);
    assert.match(r, /^data_dir: \/var\/lib\/mailwarden$/m);
    // Every commented-out block after data_dir is an example meant to be uncommented: it must stay valid.
    const text = readFileSync(CONFIG, 'utf8');
    const at = text.indexOf('\ndata_dir:');
    const uncommented = text.slice(0, at) + text.slice(at).replace(/^# ?/gm, '');
    const examples = join(work, 'examples.yaml');
    writeFileSync(examples, uncommented);
    const all = ok('mailwarden', ['check-config', examples, '--json']);
    const s = (JSON.parse(all) as { settings: Record<string, unknown> }).settings;
    assert.ok(s.alerts && s.listen, all);
  });

  test('the daemon runs as mailwarden and answers Postfix and Dovecot', async () => {
    const status = readFileSync(`/proc/${daemon?.pid}/status`, 'utf8');
    const uid = String(uidOf('mailwarden'));
    assert.match(status, new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'));
    assert.equal(await ask(ports.postfix, connectRequest('192.0.2.9')), 'action=DUNNO');
    const dv = await fetch(`http://127.0.0.1:${ports.dovecot}/dovecot/policy?command=allow`, {
      method: 'POST',
      body: JSON.stringify(attempt('192.0.2.9', 'alice@example.org', '0aaf')),
    });
    assert.equal(dv.status, 200);
    // Dovecot's answer: 0 lets the attempt through, a positive number delays it, a negative one refuses it.
    assert.equal(((await dv.json()) as { status: number }).status, 0);
  });

  test('the installed CLI: status, and a ban it adds refuses that client at Postfix', async () => {
    const st = JSON.parse(ok('mailwarden', ['--data', DATA, 'status', '--json'])) as Record<string, unknown>;
    assert.equal(st.pid, daemon?.pid);
    assert.equal(st.configFile, CONFIG);
    assert.equal(st.dataDir, DATA);
    ok('mailwarden', ['--data', DATA, 'bans', 'add', '192.0.2.66', '--duration', '10m', '--reason', 'deb test']);
    assert.match(await ask(ports.postfix, connectRequest('192.0.2.66')), /^action=554 5\.7\.1 /);
  });

  test('what the daemon writes belongs to mailwarden; the token and the CLI socket are its alone', () => {
    const uid = uidOf('mailwarden');
    const names = readdirSync(DATA);
    for (const n of ['mailwarden.sqlite', 'admin.token', 'admin.sock'])
      assert.ok(names.includes(n), `${n} in ${names.join(' ')}`);
    for (const n of names) assert.equal(statSync(join(DATA, n)).uid, uid, `${n} is not mailwarden's`);
    assert.equal(statSync(join(DATA, 'admin.token')).mode & 0o777, 0o600);
    assert.equal(statSync(join(DATA, 'admin.sock')).mode & 0o777, 0o600);
  });

  test('the Postfix socket: smtpd (user postfix, no supplementary groups) gets in, other users do not', (t) => {
    if (!postfixSocket) return t.skip('no postfix group on this machine');
    const sock = statSync(postfixSocket);
    assert.ok(sock.isSocket());
    assert.equal(sock.mode & 0o777, 0o660);
    assert.equal(sock.gid, gidOf('postfix'), 'the setgid directory gives the socket the group postfix');
    // Postfix's set_ugid() keeps no supplementary groups (setgroups(1, &gid)): --clear-groups is what smtpd has.
    const probe = `const s = require('net').connect(process.argv[1]);
      s.on('connect', () => s.write(${JSON.stringify(connectRequest('192.0.2.10'))}));
      s.on('data', (d) => { process.stdout.write(String(d).split('\\n')[0]); s.destroy(); });
      s.on('error', (e) => process.stdout.write(e.code));`;
    const as = (user: string, group: string): string =>
      ok('setpriv', [
        `--reuid=${user}`,
        `--regid=${group}`,
        '--clear-groups',
        '--reset-env',
        '/usr/bin/node',
        '-e',
        probe,
        postfixSocket,
      ]);
    assert.equal(as('postfix', 'postfix'), 'action=DUNNO');
    assert.equal(as('nobody', 'nogroup'), 'EACCES');
  });

  test('SIGHUP (ExecReload) reloads the config; SIGTERM stops it cleanly', async () => {
    assert.match(readFileSync(UNIT, 'utf8'), /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
    daemon?.kill('SIGHUP');
    await waitFor(() => out.includes('configuration reloaded'), 10_000, 'the reload');
    daemon?.kill('SIGTERM');
    assert.equal(await exited, 0, out);
  });

  test('systemd-analyze verifies the installed unit, and scores its hardening', () => {
    const v = run('systemd-analyze', ['verify', UNIT]);
    assert.equal(v.status, 0, v.stdout + v.stderr);
    assert.equal((v.stdout + v.stderr).trim(), '', 'no warnings');
    // 0 is a sealed box, 10 none at all; 1.4 when written. The allowance catches a dropped protection.
    const sec = run('systemd-analyze', ['security', '--offline=yes', '--no-pager', UNIT]);
    const score = /Overall exposure level for mailwarden\.service: ([\d.]+)/.exec(sec.stdout);
    assert.ok(score, sec.stdout + sec.stderr);
    assert.ok(Number(score[1]) <= 2.0, `exposure ${score[1]}:\n${sec.stdout}`);

    const unit = readFileSync(UNIT, 'utf8');
    const set = (key: string): string[] =>
      [...unit.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => (m[1] ?? '').trim());
    assert.deepEqual(set('User'), ['mailwarden']);
    assert.deepEqual(set('StateDirectory'), ['mailwarden']);
    assert.deepEqual(set('RuntimeDirectory'), ['mailwarden']);
    assert.deepEqual(set('Restart'), ['on-failure']);
    assert.deepEqual(set('CapabilityBoundingSet'), ['']);
    assert.match(set('LimitNOFILE')[0] ?? '', /^\d+$/);
    assert.deepEqual(set('RestrictAddressFamilies'), ['AF_UNIX AF_INET AF_INET6 AF_NETLINK']);
    // V8's JIT writes and then runs its code: node cannot run under MemoryDenyWriteExecute.
    assert.deepEqual(set('MemoryDenyWriteExecute'), []);
  });

  test('reinstalling (the upgrade path) keeps an edited config and the data', () => {
    appendFileSync(CONFIG, '# edited by the administrator\n');
    ok('dpkg', ['-i', deb], { timeout: 120_000 });
    assert.match(readFileSync(CONFIG, 'utf8'), /# edited by the administrator\n$/);
    assert.deepEqual(readdirSync('/etc/mailwarden').sort(), ['mailwarden.yaml']);
    assert.equal(statSync(CONFIG).mode & 0o777, 0o640);
    assert.ok(statSync(join(DATA, 'mailwarden.sqlite')).size > 0);
    assert.equal(statSync('/var/lib/mailwarden').uid, uidOf('mailwarden'));
  });

  test('dpkg --purge removes the program, the config and the data; the system user stays', () => {
    ok('dpkg', ['--purge', 'mailwarden'], { timeout: 120_000 });
    for (const p of ['/usr/bin/mailwarden', '/usr/lib/mailwarden', UNIT, '/etc/mailwarden', '/var/lib/mailwarden'])
      assert.ok(!existsSync(p), `${p} is left`);
    assert.equal(run('getent', ['passwd', 'mailwarden']).status, 0);
  });
});
