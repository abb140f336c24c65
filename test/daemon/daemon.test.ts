import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemonProcess, runCli, type DaemonProcess } from '../helpers/daemon.js';
import { ask, request } from '../helpers/postfix.js';

const CONFIG = `
rules:
  - name: smtp-connections-per-ip
    limit: 2
    then: { action: reject, ban: ip }
`;

describe('daemon: durability and the CLI', () => {
  let dir: string;
  let d: DaemonProcess;
  let env: Record<string, string>;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-daemon-'));
    writeFileSync(join(dir, 'mailwarden.yaml'), CONFIG);
    d = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') });
    env = d.env;
  });
  after(async () => {
    await d.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  test('the data dir holds a 0600 admin socket and token', () => {
    assert.equal(statSync(join(dir, 'data', 'admin.sock')).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, 'data', 'admin.token')).mode & 0o777, 0o600);
  });

  test('the start log says where alerts go: by default the local postmaster', () => {
    const started = d
      .output()
      .split('\n')
      .find((l) => l.includes('"mailwarden started"'));
    assert.equal(
      (JSON.parse(started ?? '{}') as { alerts?: string }).alerts,
      'email to postmaster@localhost via 127.0.0.1:25',
    );
  });

  test('a rule earns a ban; CLI bans and suspensions; all survive kill -9', async () => {
    const connect = (ip: string, port: number): string =>
      request({ protocol_state: 'CONNECT', client_address: ip, client_port: port, instance: '' });
    assert.equal(await ask(d.postfixPort, connect('198.51.100.9', 1)), 'action=DUNNO');
    assert.equal(await ask(d.postfixPort, connect('198.51.100.9', 2)), 'action=DUNNO');
    assert.match(
      await ask(d.postfixPort, connect('198.51.100.9', 3)),
      /^action=554 5\.7\.1 .*rule smtp-connections-per-ip/,
    );

    const add = await runCli(
      ['bans', 'add', '203.0.113.0/24', '--duration', '2h', '--reason', 'seen in abuse report'],
      env,
    );
    assert.equal(add.code, 0, add.stderr);
    assert.match(add.stdout, /banned 203\.0\.113\.0\/24 until /);
    const sus = await runCli(['users', 'suspend', 'Eve@Example.org', '--reason', 'phished'], env);
    assert.equal(sus.code, 0, sus.stderr);

    const list = await runCli(['bans', 'list'], env);
    assert.match(list.stdout, /198\.51\.100\.9 .*rule smtp-connections-per-ip/);
    assert.match(list.stdout, /203\.0\.113\.0\/24 .*rule manual .*seen in abuse report/);

    assert.equal(await d.kill('SIGKILL'), null);
    d = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') });
    env = d.env;

    assert.match(
      await ask(d.postfixPort, connect('198.51.100.9', 4)),
      /^action=554 5\.7\.1 Access denied: 198\.51\.100\.9 is blocked/,
    );
    assert.match(
      await ask(d.postfixPort, connect('203.0.113.77', 5)),
      /^action=554 5\.7\.1 Access denied: 203\.0\.113\.0\/24/,
    );
    const mail = request({
      protocol_state: 'MAIL',
      client_address: '192.0.2.1',
      sasl_username: 'eve@example.org',
      sasl_method: 'PLAIN',
      instance: '',
    });
    assert.match(await ask(d.postfixPort, mail), /^action=554 5\.7\.1 Account eve@example\.org is suspended/);
    assert.match(d.output(), /"bans":2/);
  });

  test('explain says why, from the audit trail', async () => {
    const e = await runCli(['explain', '198.51.100.9'], env);
    assert.equal(e.code, 0, e.stderr);
    assert.match(
      e.stdout,
      /BANNED: 198\.51\.100\.9 until .* by mailwarden \(rule smtp-connections-per-ip, offence 1\)/,
    );
    assert.match(e.stdout, /audit trail/);
    assert.match(e.stdout, /ban +198\.51\.100\.9 rule smtp-connections-per-ip/);
    const u = await runCli(['explain', 'eve@example.org', '--json'], env);
    const j = JSON.parse(u.stdout) as { kind: string; suspension: { actor: string } | null };
    assert.equal(j.kind, 'user');
    assert.match(j.suspension?.actor ?? '', /^cli/);
  });

  test('unban and resume take effect at once and are audited', async () => {
    assert.equal((await runCli(['bans', 'remove', '198.51.100.9'], env)).code, 0);
    assert.equal(
      await ask(d.postfixPort, request({ protocol_state: 'RCPT', client_address: '198.51.100.9', instance: 'u1' })),
      'action=DUNNO',
    );
    assert.equal((await runCli(['users', 'resume', 'eve@example.org'], env)).code, 0);
    const again = await runCli(['users', 'resume', 'eve@example.org'], env);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /eve@example\.org is not suspended/);
    const e = await runCli(['explain', '198.51.100.9'], env);
    assert.match(e.stdout, /unban +198\.51\.100\.9 .*by cli/);
  });

  test('SIGHUP reloads a good config and refuses a bad one, keeping the old', async () => {
    writeFileSync(join(dir, 'mailwarden.yaml'), `${CONFIG}\n  - name: inbound-recipients-per-ip\n    mode: observe\n`);
    d.proc.kill('SIGHUP');
    await waitFor(() => d.output().includes('configuration reloaded'));
    writeFileSync(join(dir, 'mailwarden.yaml'), 'rules:\n  - name: x\n    limt: 3\n');
    d.proc.kill('SIGHUP');
    await waitFor(() => d.output().includes('new configuration refused'));
    assert.match(d.output(), /mailwarden\.yaml:3:5: unknown key \\"limt\\"/);
    const st = await runCli(['explain', '192.0.2.200', '--json'], env);
    const counters = (JSON.parse(st.stdout) as { counters: Array<{ rule: string; mode: string }> }).counters;
    assert.equal(counters.find((c) => c.rule === 'inbound-recipients-per-ip')?.mode, 'observe');
  });

  test('the admin TCP API needs the token and says nothing without it', async () => {
    const token = readFileSync(join(dir, 'data', 'admin.token'), 'utf8').trim();
    const url = `http://127.0.0.1:${d.adminPort}/v1/bans`;
    for (const auth of [undefined, 'Bearer wrong', `Basic ${token}`]) {
      const r = await fetch(url, auth ? { headers: { authorization: auth } } : {});
      assert.equal(r.status, 401);
      assert.deepEqual(await r.json(), { error: 'unauthorized' });
    }
    const nope = await fetch(`http://127.0.0.1:${d.adminPort}/v1/does-not-exist`);
    assert.equal(nope.status, 401);
    const ok = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(ok.status, 200);
    const body = (await ok.json()) as { total: number; items: unknown[] };
    assert.equal(body.total, body.items.length);

    const post = (b: unknown): Promise<Response> =>
      fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(b),
      });
    const bad = await post({ subject: 'not-an-ip' });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { error: string }).error, /not an IP address or CIDR/);
    assert.equal((await post({ subject: '127.0.0.1' })).status, 409);
    assert.equal((await post({ subject: '192.0.2.1', duration: 'soon' })).status, 400);
    assert.equal((await post({ subject: '192.0.2.1', extra: 1 })).status, 400);
    const made = await post({ subject: '2001:db8:0:0:1::1', duration: '10m', reason: 'api test' });
    assert.equal(made.status, 201);
    assert.equal(((await made.json()) as { subject: string; actor: string }).subject, '2001:db8::1:0:0:1');
  });
});

describe('CLI without a daemon, and check-config', () => {
  test('a command says the daemon is not running, instead of a stack trace', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mw-cli-'));
    const r = await runCli(['bans', 'list'], { MAILWARDEN_DATA: dir });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /mailwarden is not running/);
    rmSync(dir, { recursive: true, force: true });
  });

  test('check-config prints the effective default policy', async () => {
    const r = await runCli(['check-config']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /built-in defaults/);
    assert.match(r.stdout, /name: user-messages-per-hour/);
    assert.match(r.stdout, /window: 1h/);
  });

  test('check-config reports file:line:col and exits non-zero', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mw-cc-'));
    const f = join(dir, 'bad.yaml');
    writeFileSync(f, 'listen:\n  postfix: nowhere\nrules:\n  - name: smtp-connections-per-ip\n    window: 5 minutes\n');
    const r = await runCli(['check-config', f]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`${f.replace(/[.]/g, '\\.')}:2:12: listen\\.postfix.*not a listen address`));
    assert.match(r.stderr, /bad\.yaml:5:13: rules\.0\.window: not a duration: "5 minutes"/);
    const serve = await runCli(['serve', '--config', f]);
    assert.equal(serve.code, 2);
    assert.match(serve.stderr, /did not start/);
    const env = await runCli(['serve'], { MAILWARDEN_POSTFIX_LISTEN: 'localhost', MAILWARDEN_DATA: dir });
    assert.equal(env.code, 2);
    assert.match(env.stderr, /MAILWARDEN_POSTFIX_LISTEN: "localhost" is not a listen address/);
    rmSync(dir, { recursive: true, force: true });
  });
});

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
