/*
 * The daemon as a child process under abuse: more connections than its
 * open-file limit allows (the admin socket and the CLI must keep answering),
 * and a client that pipelines without ever reading (RSS must stay put).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { call } from '../../src/admin/client.js';
import { adminSocketPath } from '../../src/daemon.js';
import { ADMIN_MAX_CONNECTIONS } from '../../src/listen.js';
import { attempt } from '../helpers/dovecot.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { connectRequest, PolicyClient } from '../helpers/postfix.js';
import { settled } from '../helpers/sockets.js';

interface Status {
  postfix: { requests: number; connectionsOpen: number; connectionsRefused: number; readPauses: number };
}

const hasPrlimit = spawnSync('prlimit', ['--version']).status === 0;

/** Resident memory of a process, in bytes (/proc). */
function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

describe('daemon: more connections than open files', { skip: hasPrlimit ? false : 'prlimit is not installed' }, () => {
  const LIMIT = 600;
  let dir: string;
  let d: DaemonProcess;
  const sockets: Socket[] = [];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-limits-'));
    d = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: '' }, undefined, [
      'prlimit',
      `--nofile=${LIMIT}:${LIMIT}`,
    ]);
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await d?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  test('the caps are lowered to fit, connections past them are refused, and admin, CLI and held connections answer', async (t) => {
    const lowered = d
      .output()
      .split('\n')
      .filter((l) => l.includes('connection caps lowered'))
      .map((l) => JSON.parse(l) as { openFiles: number; postfix: { maxConnections: number } });
    assert.equal(lowered.length, 1, 'the start says the caps were lowered, and to what');
    assert.equal(lowered[0]?.openFiles, LIMIT);
    const cap = lowered[0]?.postfix.maxConnections ?? 0;
    assert.ok(cap > 50 && cap < LIMIT - 256, `postfix cap ${cap}`);

    // 700 connections, more than the process may open, from ten addresses (under the per-peer cap).
    const TOTAL = 700;
    let closedByServer = 0;
    for (let i = 0; i < TOTAL; i += 50)
      await Promise.all(
        Array.from({ length: 50 }, async (_, k) => {
          const s = connect({ port: d.postfixPort, host: '127.0.0.1', localAddress: `127.0.0.${10 + ((i + k) % 10)}` });
          s.on('error', () => undefined);
          s.once('close', () => closedByServer++);
          sockets.push(s);
          await once(s, 'connect');
        }),
      );
    await sleep(300);
    assert.equal(TOTAL - closedByServer, cap, 'exactly the cap is held');
    t.diagnostic(`fd exhaustion: fd limit ${LIMIT}, ${TOTAL} connections opened, ${cap} held, ${closedByServer} refused`);

    // The CLI's socket and the token-protected TCP API both answer.
    const status = await call<Status>(adminSocketPath(join(dir, 'data')), 'GET', '/v1/status');
    assert.equal(status.postfix.connectionsOpen, cap);
    assert.equal(status.postfix.connectionsRefused, TOTAL - cap);
    const token = readFileSync(join(dir, 'data', 'admin.token'), 'utf8').trim();
    const metrics = await fetch(`http://127.0.0.1:${d.adminPort}/metrics`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(metrics.status, 200);
    assert.match(
      await metrics.text(),
      new RegExp(`mailwarden_adapter_connections_refused_total\\{adapter="postfix",reason="listener_full"\\} ${TOTAL - cap}`),
    );

    // So do the Dovecot endpoint and a connection that was let in.
    const dovecot = await fetch(`http://127.0.0.1:${d.dovecotPort}/dovecot/policy?command=allow`, {
      method: 'POST',
      body: JSON.stringify(attempt('192.0.2.50', 'alice@mailprobe.test', '0aaf')),
    });
    assert.equal(dovecot.status, 200);
    const held = sockets.find((s) => !s.destroyed) as Socket;
    const reply = new Promise<string>((resolve) => held.once('data', (b: Buffer) => resolve(b.toString())));
    held.write(connectRequest('192.0.2.51'));
    assert.equal(await reply, 'action=DUNNO\n\n');

    // The TCP admin listener is capped too (ADMIN_MAX_CONNECTIONS), and the CLI's socket is not.
    let adminClosed = 0;
    for (let i = 0; i < ADMIN_MAX_CONNECTIONS + 16; i++) {
      const s = connect(d.adminPort, '127.0.0.1');
      s.on('error', () => undefined);
      s.once('close', () => adminClosed++);
      sockets.push(s);
      await once(s, 'connect');
    }
    await sleep(200);
    assert.ok(adminClosed >= 16, `${adminClosed} admin connections refused`);
    assert.equal(
      (await call<Status>(adminSocketPath(join(dir, 'data')), 'GET', '/v1/status')).postfix.connectionsOpen,
      cap,
    );

    // Hundreds of refusals, a handful of log lines.
    const refusals = d
      .output()
      .split('\n')
      .filter((l) => l.includes('"listener-full"'));
    assert.ok(refusals.length <= 5, `${refusals.length} refusal lines`);
  });
});

describe('daemon: a pipelining client that never reads its answers', () => {
  let dir: string;
  let d: DaemonProcess;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-limits-'));
    d = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: '' });
  });
  after(async () => {
    await d?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  test('leaves the RSS where it was, and the daemon serves others meanwhile', async (t) => {
    const sock = adminSocketPath(join(dir, 'data'));
    await call(sock, 'POST', '/v1/bans', { subject: '192.0.2.1', duration: '1h', reason: 'refusals are long answers' });
    const pid = d.proc.pid as number;
    const rssBefore = rssOf(pid);
    const N = 600_000; // 47 MB of requests; unread answers to them would be ~60 MB
    const req = 'request=smtpd_access_policy\nprotocol_state=CONNECT\nclient_address=192.0.2.1\n\n';
    const c = connect(d.postfixPort, '127.0.0.1');
    t.after(() => c.destroy());
    await once(c, 'connect');
    c.pause();
    c.write(req.repeat(N));

    await settled(async () => (await call<Status>(sock, 'GET', '/v1/status')).postfix.requests, 300);
    const status = await call<Status>(sock, 'GET', '/v1/status');
    const grew = rssOf(pid) - rssBefore;
    assert.ok(
      status.postfix.requests < N / 4,
      `the daemon read ${status.postfix.requests} of ${N} requests, then stopped`,
    );
    assert.ok(status.postfix.readPauses >= 1);
    assert.ok(grew < 32 * 1024 * 1024, `RSS grew by ${(grew / 1048576).toFixed(1)} MB`);
    t.diagnostic(
      `non-reading client: ${N} requests written, ${status.postfix.requests} read before reading stopped, RSS +${(grew / 1048576).toFixed(1)} MB`,
    );

    const other = await PolicyClient.open({ port: d.postfixPort });
    t.after(() => other.close());
    assert.equal(await other.send(connectRequest('192.0.2.52')), 'action=DUNNO');
  });
});
