/*
 * The Dovecot endpoint under abuse, on real sockets: header, request and body
 * limits (a chunked body of size ffffffffffffffff once kept a connection
 * forever), answers given before the body that close instead of draining,
 * connection caps, the repeat memo's byte bound with 60 KB bodies, a
 * pipelining client that never reads, and a flood of bad requests.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test, type TestContext } from 'node:test';
import { REPEAT_MEMO_BYTES } from '../../../src/adapters/dovecot/server.js';
import { attempt } from '../../helpers/dovecot.js';
import { startHarness, type Harness } from '../../helpers/harness.js';
import { arrivals, settled } from '../../helpers/sockets.js';

const SHORT = 'dovecot:\n  headers_timeout: 200ms\n  request_timeout: 400ms\n';

/** A raw connection to the endpoint, from `localAddress`, destroyed after the test. */
async function raw(t: TestContext, h: Harness, localAddress = '127.0.0.1'): Promise<Socket> {
  const s = connect({ port: Number(new URL(h.dovecotUrl).port), host: '127.0.0.1', localAddress });
  t.after(() => s.destroy());
  s.on('error', () => undefined);
  await once(s, 'connect');
  return s;
}

/** What the server sent on `s` until it closed it, and how long that took (or `waitMs` and open: true). */
function untilClosed(s: Socket, waitMs: number): Promise<{ text: string; ms: number; open: boolean }> {
  const t0 = Date.now();
  let text = '';
  s.on('data', (d: Buffer) => (text += d.toString()));
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ text, ms: Date.now() - t0, open: true }), waitMs);
    s.once('close', () => {
      clearTimeout(timer);
      resolve({ text, ms: Date.now() - t0, open: false });
    });
  });
}

function httpRequest(body: string, command = 'allow', extra = ''): string {
  return (
    `POST /dovecot/policy?command=${command} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`
  );
}

const CHUNKED_FOREVER =
  'Host: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n{"login":"';

/** Keeps writing a byte every 50 ms (a slow body that never ends) until the socket closes. */
function trickle(s: Socket): void {
  const timer = setInterval(() => (s.destroyed ? clearInterval(timer) : s.write('a')), 50);
  s.once('close', () => clearInterval(timer));
}

describe('Dovecot endpoint: header, request and body limits', () => {
  test('a chunked body of size ffffffffffffffff sent forever is cut off by the request timeout', async (t) => {
    const h = await startHarness({ yaml: SHORT });
    t.after(() => h.close());
    const s = await raw(t, h);
    s.write(`POST /dovecot/policy?command=allow HTTP/1.1\r\n${CHUNKED_FOREVER}`);
    trickle(s);
    const r = await untilClosed(s, 5000);
    assert.equal(r.open, false, 'the connection was closed');
    assert.ok(r.ms < 2000, `closed after ${r.ms} ms (request_timeout 400ms)`);
    assert.ok(h.logs.some((l) => l.kind === 'timeout'));
  });

  test('headers that never end are cut off by the headers timeout', async (t) => {
    const h = await startHarness({ yaml: SHORT });
    t.after(() => h.close());
    const s = await raw(t, h);
    s.write('POST /dovecot/policy?command=allow HTTP/1.1\r\nHost: x\r\n');
    const timer = setInterval(() => (s.destroyed ? clearInterval(timer) : s.write('X-A: b\r\n')), 50);
    t.after(() => clearInterval(timer));
    const r = await untilClosed(s, 5000);
    assert.equal(r.open, false);
    assert.ok(r.ms < 1500, `closed after ${r.ms} ms (headers_timeout 200ms)`);
  });

  test('an answer given before the body (404, 401) closes the connection instead of draining an endless body', async (t) => {
    const h = await startHarness({ yaml: 'dovecot:\n  api_header: "X-Policy-Secret: s3cret"\n' });
    t.after(() => h.close());
    for (const [path, status] of [
      ['/elsewhere', 404],
      ['/dovecot/policy?command=allow', 401],
    ] as const) {
      const s = await raw(t, h);
      s.write(`POST ${path} HTTP/1.1\r\n${CHUNKED_FOREVER}`);
      trickle(s);
      const r = await untilClosed(s, 5000);
      assert.match(r.text, new RegExp(`^HTTP/1.1 ${status} `), path);
      assert.match(r.text, /\r\nconnection: close\r\n/i);
      assert.equal(r.open, false, `${path}: closed`);
      assert.ok(r.ms < 1000, `${path}: closed after ${r.ms} ms`);
    }
  });

  test('a body over max_body is refused 413: at once when announced, as soon as it is over when chunked', async (t) => {
    const h = await startHarness({ yaml: 'dovecot:\n  max_body: 2048\n' });
    t.after(() => h.close());
    const announced = await raw(t, h);
    announced.write(
      'POST /dovecot/policy?command=allow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{',
    );
    const a = await untilClosed(announced, 5000);
    assert.match(a.text, /^HTTP\/1.1 413 /);
    assert.match(a.text, /larger than 2048 bytes/);
    assert.equal(a.open, false);

    const chunked = await raw(t, h);
    chunked.write(`POST /dovecot/policy?command=allow HTTP/1.1\r\n${CHUNKED_FOREVER}${'a'.repeat(4096)}`);
    const c = await untilClosed(chunked, 5000);
    assert.match(c.text, /^HTTP\/1.1 413 /);
    assert.equal(c.open, false);

    // A body within the limit is served as before.
    const ok = await fetch(`${h.dovecotUrl}?command=allow`, {
      method: 'POST',
      body: JSON.stringify(attempt('192.0.2.40', 'alice@mailprobe.test', '0aaa')),
    });
    assert.equal(ok.status, 200);
  });
});

describe('Dovecot endpoint: connection caps', () => {
  test('the (N+1)th connection of one peer, and any past the listener cap, are refused', async (t) => {
    const h = await startHarness({ yaml: 'dovecot:\n  max_connections: 4\n  max_connections_per_peer: 2\n' });
    t.after(() => h.close());
    const body = JSON.stringify(attempt('192.0.2.41', 'alice@mailprobe.test', '0aab'));
    const answered = async (s: Socket): Promise<boolean> => {
      s.write(httpRequest(body));
      const r = await Promise.race([once(s, 'data').then(() => true), once(s, 'close').then(() => false)]);
      return r;
    };
    for (const peer of ['127.0.0.2', '127.0.0.2', '127.0.0.3', '127.0.0.3'])
      assert.ok(await answered(await raw(t, h, peer)), `a connection from ${peer}`);
    assert.equal(h.dovecot.stats.connectionsOpen, 4);
    assert.equal(await answered(await raw(t, h, '127.0.0.4')), false, 'the listener is full');
    assert.equal(h.dovecot.stats.connectionsRefused, 1);
    assert.ok(h.logs.some((l) => l.kind === 'listener-full' && l.adapter === 'dovecot'));
  });

  test('a peer at its cap is refused while the listener has room', async (t) => {
    const h = await startHarness({ yaml: 'dovecot:\n  max_connections: 10\n  max_connections_per_peer: 2\n' });
    t.after(() => h.close());
    const held = [await raw(t, h, '127.0.0.5'), await raw(t, h, '127.0.0.5')];
    await sleep(20);
    const r = await untilClosed(await raw(t, h, '127.0.0.5'), 2000);
    assert.equal(r.open, false, 'the third of the peer is closed');
    assert.equal(h.dovecot.stats.peerConnectionsRefused, 1);
    assert.equal(held.filter((s) => !s.destroyed).length, 2);
  });
});

describe('Dovecot endpoint: the repeat memo is bounded by bytes', () => {
  test('distinct sessions with 60 KB bodies keep it under its byte bound; the after-auth check still repeats', async (t) => {
    const h = await startHarness();
    t.after(() => h.close());
    const pad = 'x'.repeat(60_000);
    const post = async (i: number): Promise<{ status: number }> => {
      const body = JSON.stringify({
        ...attempt('192.0.2.42', 'alice@mailprobe.test', '0aac'),
        session_id: `S${i}`,
        pad,
      });
      const r = await fetch(`${h.dovecotUrl}?command=allow`, { method: 'POST', body });
      return (await r.json()) as { status: number };
    };
    let peak = 0;
    for (let i = 0; i < 400; i++) {
      assert.equal((await post(i)).status, 0);
      peak = Math.max(peak, h.dovecot.lastAllow.bytes);
    }
    assert.ok(peak <= REPEAT_MEMO_BYTES, `peaked at ${peak} bytes`);
    const repeats = h.dovecot.stats.repeats;
    assert.equal((await post(399)).status, 0);
    assert.equal(h.dovecot.stats.repeats, repeats + 1, "the latest session's after-auth allow was answered from it");
  });
});

describe('Dovecot endpoint: a pipelining client that never reads', () => {
  test('is no longer read (node:http backpressure); others are served; it gets every answer once it reads', async (t) => {
    const h = await startHarness();
    t.after(() => h.close());
    const N = 60_000;
    const one = httpRequest(
      JSON.stringify({ ...attempt('192.0.2.43', 'bob@mailprobe.test', '0aad'), success: false }),
      'report',
    );
    const s = await raw(t, h);
    s.pause();
    s.write(one.repeat(N));
    const last = await settled(() => h.dovecot.stats.requests);
    assert.ok(last < N / 2, `the server read ${last} of ${N} requests and stopped`);

    const other = await fetch(`${h.dovecotUrl}?command=allow`, {
      method: 'POST',
      body: JSON.stringify(attempt('192.0.2.44', 'carol@mailprobe.test', '0aae')),
    });
    assert.equal(other.status, 200);

    await arrivals(s, 'HTTP/1.1 200 ', N);
    assert.equal(h.dovecot.stats.reports, N);
  });
});

describe('Dovecot endpoint: a flood of bad requests', () => {
  test('writes a bounded number of warnings and a "N suppressed" line', async (t) => {
    const h = await startHarness({ dovecot: { logThrottle: { burst: 5, intervalMs: 300 } } });
    t.after(() => h.close());
    const FLOOD = 400;
    for (let i = 0; i < FLOOD; i += 40)
      await Promise.all(
        Array.from({ length: 40 }, async () => {
          const r = await fetch(`${h.dovecotUrl}?command=allow`, { method: 'POST', body: 'this is not json' });
          assert.equal(r.status, 400);
          await r.arrayBuffer();
        }),
      );
    await sleep(500);
    const lines = h.logs.filter((l) => l.kind === 'bad-request');
    const summaries = lines.filter((l) => l.suppressed !== undefined);
    assert.ok(summaries.length >= 1);
    const written = lines.length - summaries.length;
    assert.ok(written <= 5 * (summaries.length + 1), `${written} warnings for ${FLOOD} bad requests`);
    assert.equal(written + summaries.reduce((n, l) => n + Number(l.suppressed), 0), FLOOD);
  });
});
