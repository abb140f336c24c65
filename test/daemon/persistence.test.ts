/*
 * The data directory fails under the running daemon: a real tmpfs of 4 MiB
 * (mounted by the test; CI runs as root), filled up to the last byte, then
 * freed. A ban a rule makes meanwhile is enforced at once, waits in memory,
 * is written when the space returns, and survives a restart; an
 * administrator's ban is refused with 503 instead of being acknowledged and
 * lost; status, metrics and the log say "degraded" while it lasts. A data
 * directory that is read-only from the start is reported the same way.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import { attempt } from '../helpers/dovecot.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { PolicyClient, request } from '../helpers/postfix.js';

const mount = (dir: string, opts: string): void => {
  execFileSync('mount', ['-t', 'tmpfs', '-o', opts, 'tmpfs', dir]);
};
const umount = (dir: string): void => {
  try {
    execFileSync('umount', ['-l', dir]);
  } catch {
    // not mounted (the test failed before mounting)
  }
};

/** Writes zeros into `file` until the file system is full. */
function fill(file: string): void {
  const fd = openSync(file, 'w');
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
  // The last blocks: whatever a 64 KiB write could not take.
  const small = openSync(file, 'a');
  try {
    for (;;) writeSync(small, Buffer.alloc(512));
  } catch {
    // full to the byte
  } finally {
    closeSync(small);
  }
}

const waitFor = async (what: string, ok: () => Promise<boolean>, ms = 15_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
};

void describe('the data directory fails under the daemon', { timeout: 120_000 }, () => {
  let root: string;
  let data: string;
  let d: DaemonProcess | undefined;
  let token = '';
  const api = (path: string, init: RequestInit = {}): Promise<Response> =>
    fetch(`http://127.0.0.1:${(d as DaemonProcess).adminPort}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
    });
  const status = async (): Promise<{
    store: { persistence?: { ok: boolean; queued: number; error: string | null } };
  }> =>
    (await (await api('/v1/status')).json()) as {
      store: { persistence?: { ok: boolean; queued: number; error: string | null } };
    };
  const dovecot = async (command: string, body: object): Promise<{ status: number }> =>
    (await (
      await fetch(`http://127.0.0.1:${(d as DaemonProcess).dovecotPort}/dovecot/policy?command=${command}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      })
    ).json()) as { status: number };
  const connect = async (ip: string): Promise<string> => {
    const c = await PolicyClient.open({ port: (d as DaemonProcess).postfixPort });
    try {
      return await c.send(request({ protocol_state: 'CONNECT', client_address: ip, instance: '' }));
    } finally {
      c.close();
    }
  };

  before(() => {
    root = mkdtempSync(join(tmpdir(), 'mw-disk-'));
    data = join(root, 'data');
    mkdirSync(data);
    mount(data, 'size=4m,mode=0700');
  });
  after(async () => {
    await d?.kill('SIGKILL');
    umount(data);
    rmSync(root, { recursive: true, force: true });
  });

  test('full disk: a rule ban is enforced, waits, is written when space returns, and survives a restart', async () => {
    d = await startDaemonProcess(data, { MAILWARDEN_CONFIG: '' });
    token = readFileSync(join(data, 'admin.token'), 'utf8').trim();
    assert.equal((await status()).store.persistence?.ok, true);
    fill(join(data, 'filler'));

    // A guesser going on after its refusal: auth-guess-ban bans it.
    const ip = '203.0.113.77';
    for (let i = 0; i < 14; i++) {
      const body = attempt(ip, 'victim@example.org', `0d${i.toString(16).padStart(2, '0')}`);
      const a = await dovecot('allow', body);
      await dovecot('report', { ...body, success: false, policy_reject: a.status < 0 });
    }
    assert.match(await connect(ip), /^action=554 5\.7\.1 Access denied: 203\.0\.113\.77 is blocked/);
    const degraded = await status();
    assert.equal(degraded.store.persistence?.ok, false);
    assert.ok((degraded.store.persistence?.queued ?? 0) > 0);
    assert.match(degraded.store.persistence?.error ?? '', /full|disk/i);
    const metrics = await (await api('/metrics')).text();
    assert.match(metrics, /^mailwarden_persistence_degraded 1$/m);
    assert.match(d.output(), /persistence degraded: .*bans are enforced from memory/);
    // The dashboard says it on every page, in a real browser.
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    });
    try {
      const page = await browser.newPage();
      await page.goto(`http://127.0.0.1:${d.adminPort}/`);
      await page.evaluate(`sessionStorage.setItem('mailwarden.token', ${JSON.stringify(token)})`);
      await page.reload();
      const banner = page.locator('[data-degraded="persistence"]');
      await banner.waitFor({ timeout: 10_000 });
      assert.match(await banner.innerText(), /Degraded: persistence\..*(full|disk).*writes waiting/s);
    } finally {
      await browser.close();
    }

    // An administrator's ban is not acknowledged when it cannot be written.
    const manual = await api('/v1/bans', {
      method: 'POST',
      body: JSON.stringify({ subject: '198.51.100.99', duration: '1h' }),
    });
    assert.equal(manual.status, 503);
    assert.match(((await manual.json()) as { error: string }).error, /not written/);
    assert.match(await connect('198.51.100.99'), /^action=DUNNO/);

    rmSync(join(data, 'filler'));
    await waitFor('the waiting writes to drain', async () => (await status()).store.persistence?.ok === true);
    assert.match(d.output(), /persistence recovered/);

    // kill -9: only what is on disk comes back.
    await d.kill('SIGKILL');
    d = await startDaemonProcess(data, { MAILWARDEN_CONFIG: '' }, d);
    const bans = (await (await api('/v1/bans')).json()) as { items: Array<{ subject: string; rule: string }> };
    assert.ok(
      bans.items.some((b) => b.subject === ip && b.rule === 'auth-guess-ban'),
      JSON.stringify(bans.items),
    );
    assert.match(await connect(ip), /^action=554 5\.7\.1 Access denied/);
    await d.kill('SIGTERM');
    d = undefined;
  });

  test('a read-only data directory at start: the bans on file are enforced, and status says degraded', async () => {
    d = await startDaemonProcess(data, { MAILWARDEN_CONFIG: '' });
    token = readFileSync(join(data, 'admin.token'), 'utf8').trim();
    const made = await api('/v1/bans', {
      method: 'POST',
      body: JSON.stringify({ subject: '192.0.2.55', duration: '1h' }),
    });
    assert.equal(made.status, 201);
    await d.kill('SIGTERM');
    execFileSync('mount', ['-o', 'remount,ro', data]);
    try {
      d = await startDaemonProcess(
        data,
        { MAILWARDEN_CONFIG: '', MAILWARDEN_ADMIN_LISTEN: `127.0.0.1:${d.adminPort}` },
        d,
      );
      assert.match(await connect('192.0.2.55'), /^action=554 5\.7\.1 Access denied/);
      const s = await status();
      assert.equal(s.store.persistence?.ok, false);
      assert.match(s.store.persistence?.error ?? '', /cannot write the data directory/);
      assert.match(d.output(), /persistence degraded/);
    } finally {
      await d?.kill('SIGTERM');
      d = undefined;
      execFileSync('mount', ['-o', 'remount,rw', data]);
    }
  });
});
