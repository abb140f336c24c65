/*
 * The admin API and /metrics of a real daemon (child process), after real
 * traffic on its Postfix and Dovecot endpoints: every route, paging and
 * filters, the live event stream, reload, and auth on each route.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { attempt } from '../helpers/dovecot.js';
import { PolicyClient, request } from '../helpers/postfix.js';

describe('admin API and metrics', () => {
  let dir: string;
  let d: DaemonProcess;
  let token: string;
  const api = (path: string, init: RequestInit = {}): Promise<Response> =>
    fetch(`http://127.0.0.1:${d.adminPort}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${token}`, ...(init.headers ?? {}) },
    });
  const json = async <T>(path: string, init?: RequestInit): Promise<T> => (await (await api(path, init)).json()) as T;
  const dovecot = (command: string, body: object): Promise<Response> =>
    fetch(`http://127.0.0.1:${d.dovecotPort}/dovecot/policy?command=${command}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-api-'));
    writeFileSync(join(dir, 'mailwarden.yaml'), 'allowlist: { networks: [] }\n');
    d = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') });
    token = readFileSync(join(dir, 'data', 'admin.token'), 'utf8').trim();
    // Postfix traffic: 30 allowed requests
    const c = await PolicyClient.open({ port: d.postfixPort });
    for (let i = 0; i < 30; i++)
      await c.send(request({ protocol_state: 'CONNECT', client_address: `198.51.100.${i}`, instance: '' }));
    c.close();
  });
  after(async () => {
    await d.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  test('every data route refuses a missing token with a bare 401', async () => {
    for (const path of [
      '/v1/status',
      '/v1/bans',
      '/v1/users',
      '/v1/allowlist',
      '/v1/audit?since=1h',
      '/v1/explain/192.0.2.1',
      '/v1/timeline',
      '/v1/top',
      '/v1/events',
      '/metrics',
    ]) {
      const r = await fetch(`http://127.0.0.1:${d.adminPort}${path}`);
      assert.equal(r.status, 401, path);
      assert.deepEqual(await r.json(), { error: 'unauthorized' });
    }
    const reload = await fetch(`http://127.0.0.1:${d.adminPort}/v1/reload`, { method: 'POST' });
    assert.equal(reload.status, 401);
    for (const [method, path] of [
      ['POST', '/v1/allowlist'],
      ['DELETE', '/v1/allowlist/192.0.2.1'],
    ] as const) {
      const r = await fetch(`http://127.0.0.1:${d.adminPort}${path}`, { method });
      assert.equal(r.status, 401, `${method} ${path}`);
    }
    // The page itself is public, with a query string too (a bookmarked link); a path trick is not.
    assert.equal((await fetch(`http://127.0.0.1:${d.adminPort}/?from=bookmark`)).status, 200);
    assert.equal((await fetch(`http://127.0.0.1:${d.adminPort}/v1/status?/`)).status, 401);
  });

  test('a wrong token of the right length is refused too, on the API and the event stream', async () => {
    // Same length, last character changed: a length check alone would let it in.
    const last = token.at(-1) === 'a' ? 'b' : 'a';
    const wrong = `${token.slice(0, -1)}${last}`;
    assert.equal(wrong.length, token.length);
    for (const path of ['/v1/status', '/v1/bans', '/v1/events', '/metrics']) {
      const r = await fetch(`http://127.0.0.1:${d.adminPort}${path}`, {
        headers: { authorization: `Bearer ${wrong}` },
      });
      assert.equal(r.status, 401, path);
      assert.deepEqual(await r.json(), { error: 'unauthorized' });
    }
    const ok = await fetch(`http://127.0.0.1:${d.adminPort}/v1/status`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
  });

  test('a brute force shows up live: event stream, bans, top offenders, timeline, metrics', async () => {
    const events: Array<Record<string, unknown>> = [];
    const ac = new AbortController();
    const stream = await api('/v1/events', { signal: ac.signal });
    assert.equal(stream.headers.get('content-type'), 'text/event-stream');
    const reader = (stream.body as ReadableStream<Uint8Array>).getReader();
    const reading = (async () => {
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
        if (done || !value) return;
        buf += Buffer.from(value).toString();
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (block.startsWith('data: ')) events.push(JSON.parse(block.slice(6)) as Record<string, unknown>);
        }
      }
    })();

    const ip = '203.0.113.66';
    for (let i = 0; i < 12; i++) {
      const body = attempt(ip, 'alice@example.org', `0c${i.toString(16).padStart(2, '0')}`);
      // As Dovecot does: an attempt we refused is reported with policy_reject (its password was never checked).
      const answer = (await (await dovecot('allow', body)).json()) as { status: number };
      await dovecot('report', { ...body, success: false, policy_reject: answer.status < 0 });
    }
    const end = Date.now() + 5000;
    while (!events.some((e) => e.kind === 'ban') && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    ac.abort();
    await reading;
    assert.ok(
      events.some((e) => e.kind === 'decision' && e.action === 'delay' && e.ip === ip && e.adapter === 'dovecot'),
      JSON.stringify(events.slice(0, 3)),
    );
    assert.ok(events.some((e) => e.kind === 'ban' && e.subject === ip && e.rule === 'auth-guess-ban'));

    const bans = await json<{ total: number; items: Array<{ subject: string }> }>('/v1/bans');
    assert.deepEqual(
      bans.items.map((b) => b.subject),
      [ip],
    );

    const top = await json<{
      ips: Array<{ subject: string; count: number }>;
      networks: Array<{ subject: string }>;
      users: Array<{ subject: string }>;
    }>('/v1/top');
    assert.equal(top.ips[0]?.subject, ip);
    assert.ok((top.ips[0]?.count ?? 0) >= 12);
    assert.equal(top.networks[0]?.subject, '203.0.113.0/24');
    assert.equal(top.users[0]?.subject, 'alice@example.org');

    const tl = await json<{ step: number; start: number; series: Record<string, number[]> }>('/v1/timeline');
    assert.equal(tl.step, 10);
    const sum = (name: string): number => (tl.series[name] ?? []).reduce((a, b) => a + b, 0);
    assert.equal((tl.series['decisions.allow'] ?? []).length, 360);
    assert.ok(sum('decisions.allow') >= 30);
    assert.ok(sum('auth_failures.imap') >= 12);
    assert.ok(sum('decisions.delay') >= 1 && sum('decisions.reject') >= 1);

    const m = await (await api('/metrics')).text();
    const value = (re: RegExp): number => Number(re.exec(m)?.[1] ?? NaN);
    assert.ok(
      value(/mailwarden_decisions_total\{adapter="postfix",action="allow",rule=""\} (\d+)/) >= 30,
      m.slice(0, 500),
    );
    assert.ok(
      value(/mailwarden_decisions_total\{adapter="dovecot",action="reject",rule="auth-guess-refuse"\} (\d+)/) >= 1,
    );
    assert.equal(value(/mailwarden_active_bans (\d+)/), 1);
    assert.ok(value(/mailwarden_decision_seconds_count\{adapter="postfix"\} (\d+)/) >= 30);
    assert.match(m, /mailwarden_process_cpu_seconds_total/);
    assert.match(m, /mailwarden_adapter_failures_total\{adapter="postfix",kind="budget_miss"\} 0/);
    assert.match(m, /mailwarden_store_fallback 0/);
    assert.match(m, /mailwarden_store_keys\{backend="memory"\} \d+/);
    // no label may hold an address or a user: series must stay bounded
    assert.doesNotMatch(m, /\{[^}]*(\d+\.\d+\.\d+\.\d+|@)[^}]*\}/);
  });

  test('a late subscriber to the event stream first gets the recent past', async () => {
    const ac = new AbortController();
    const res = await api('/v1/events', { signal: ac.signal });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    let text = '';
    while (!text.includes('"kind":"ban"')) {
      const { value, done } = await reader.read();
      if (done || !value) break;
      text += Buffer.from(value).toString();
    }
    ac.abort();
    assert.match(text, /data: \{"time":\d+,"kind":"ban","subject":"203\.0\.113\.66","rule":"auth-guess-ban"/);
  });

  test('bans: filter and paging', async () => {
    for (let i = 1; i <= 5; i++) {
      const r = await api('/v1/bans', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ subject: `192.0.2.${i}`, duration: '1h', reason: `page test ${i}` }),
      });
      assert.equal(r.status, 201);
    }
    const page = await json<{ total: number; offset: number; limit: number; items: unknown[] }>(
      '/v1/bans?q=page%20test&limit=2&offset=2',
    );
    assert.deepEqual([page.total, page.offset, page.limit, page.items.length], [5, 2, 2, 2]);
    const none = await json<{ total: number }>('/v1/bans?q=no-such-thing');
    assert.equal(none.total, 0);
  });

  test('reload: a good config is applied, a bad one is refused with its errors and the old one stays', async () => {
    writeFileSync(
      join(dir, 'mailwarden.yaml'),
      'allowlist: { networks: [] }\nrules:\n  - name: smtp-connections-per-ip\n    limit: 7\n',
    );
    const ok = await api('/v1/reload', { method: 'POST' });
    assert.equal(ok.status, 200);
    const e = await json<{ counters: Array<{ rule: string; limit: number }> }>('/v1/explain/198.51.100.1');
    assert.equal(e.counters.find((c) => c.rule === 'smtp-connections-per-ip')?.limit, 7);
    writeFileSync(join(dir, 'mailwarden.yaml'), 'rules:\n  - name: smtp-connections-per-ip\n    limit: lots\n');
    const bad = await api('/v1/reload', { method: 'POST' });
    assert.equal(bad.status, 400);
    assert.match(
      ((await bad.json()) as { error: string }).error,
      /mailwarden\.yaml:3:12: rules\.0\.limit: must be a number/,
    );
    const still = await json<{ counters: Array<{ rule: string; limit: number }> }>('/v1/explain/198.51.100.1');
    assert.equal(still.counters.find((c) => c.rule === 'smtp-connections-per-ip')?.limit, 7);
  });

  test('users: suspend, list, resume; bad input is a 400 with a reason', async () => {
    const s = await api('/v1/users/Mallory@Example.org/suspend', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ duration: '2h', reason: 'phished' }),
    });
    assert.equal(s.status, 201);
    const list = await json<{ items: Array<{ user: string; reason: string }> }>('/v1/users');
    assert.deepEqual(
      list.items.map((u) => [u.user, u.reason]),
      [['mallory@example.org', 'phished']],
    );
    assert.equal((await api('/v1/users/mallory@example.org/resume', { method: 'POST' })).status, 200);
    assert.equal((await api('/v1/users/mallory@example.org/resume', { method: 'POST' })).status, 404);
    const bad = await api('/v1/users/x@y/suspend', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ duration: 'forever' }),
    });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { error: string }).error, /not a duration/);
    assert.equal((await api('/v1/bans/not-an-address', { method: 'DELETE' })).status, 400);
  });
});
