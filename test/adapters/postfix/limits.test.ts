/*
 * The Postfix policy server under abuse, on real sockets: connection caps per
 * listener and per peer, backpressure on a client that never reads its
 * answers (both read paths of adapters/read-buffer), and a flood of bad
 * connections that must not flood the log.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test, type TestContext } from 'node:test';
import { banForAnHour, startHarness, type Harness } from '../../helpers/harness.js';
import { connectRequest, PolicyClient, portOf } from '../../helpers/postfix.js';
import { arrivals, settled } from '../../helpers/sockets.js';

/** A connection from `localAddress` (any 127.0.0.x is a distinct peer), destroyed after the test. */
async function openFrom(t: TestContext, port: number, localAddress: string): Promise<Socket> {
  const s = connect({ port, host: '127.0.0.1', localAddress });
  t.after(() => s.destroy());
  s.on('error', () => undefined);
  await once(s, 'connect');
  return s;
}

/** Whether the server answers a request on `s` (true), or closes it without a word (false). */
function served(s: Socket, ip = '192.0.2.10'): Promise<boolean> {
  return new Promise((resolve) => {
    s.once('data', () => resolve(true));
    s.once('close', () => resolve(false));
    s.write(connectRequest(ip));
  });
}

describe('Postfix policy server: connection caps', () => {
  test('the (N+1)th connection of one peer is refused, other peers are served up to the listener cap', async (t) => {
    const h = await startHarness({
      yaml: 'postfix:\n  max_connections: 5\n  max_connections_per_peer: 3\n',
      postfix: { logThrottle: { burst: 2, intervalMs: 60_000 } },
    });
    t.after(() => h.close());
    const port = portOf(h.bound[0] as string);

    const first = [];
    for (let i = 0; i < 3; i++) {
      const s = await openFrom(t, port, '127.0.0.2');
      assert.ok(await served(s), `connection ${i + 1} of the peer is served`);
      first.push(s);
    }
    assert.equal(await served(await openFrom(t, port, '127.0.0.2')), false, 'the 4th of that peer is refused');
    assert.equal(h.server.stats.peerConnectionsRefused, 1);

    // Another peer still gets in, up to the listener's cap of 5 ...
    for (let i = 0; i < 2; i++) assert.ok(await served(await openFrom(t, port, '127.0.0.3')));
    assert.equal(h.server.stats.connectionsOpen, 5);
    // ... and past it nobody does, whatever the peer.
    assert.equal(await served(await openFrom(t, port, '127.0.0.4')), false, 'the listener is full');
    assert.equal(h.server.stats.connectionsRefused, 1);
    // The connections held are served as before.
    for (const s of first) assert.ok(await served(s));

    // A closed connection frees its place for its peer and for the listener.
    const closed = once(first[0] as Socket, 'close');
    (first[0] as Socket).destroy();
    await closed;
    await sleep(20);
    assert.ok(await served(await openFrom(t, port, '127.0.0.2')), 'a place was freed');

    // Refusals are logged by kind, throttled.
    for (let i = 0; i < 5; i++) await served(await openFrom(t, port, '127.0.0.5'));
    const refusals = h.logs.filter((l) => l.kind === 'listener-full');
    assert.equal(refusals.length, 2, 'at most the burst per interval');
    assert.match(String(refusals[0]?.msg), /maximum of 5 connections/);
    assert.equal(h.logs.filter((l) => l.kind === 'peer-full').length, 1);
  });

  test('unix socket peers have no address: only the listener cap applies', async (t) => {
    const h = await startHarness({
      unix: true,
      yaml: 'postfix:\n  max_connections: 3\n  max_connections_per_peer: 1\n',
    });
    t.after(() => h.close());
    const path = h.bound[1] as string;
    const clients: PolicyClient[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await PolicyClient.open({ path });
      t.after(() => c.close());
      assert.equal(await c.send(connectRequest('192.0.2.20')), 'action=DUNNO');
      clients.push(c);
    }
    const over = await PolicyClient.open({ path });
    t.after(() => over.close());
    assert.ok(await over.waitClosed(2000), 'the 4th is closed');
    assert.equal(h.server.stats.connectionsRefused, 1);
    assert.equal(h.server.stats.peerConnectionsRefused, 0);
  });
});

for (const shared of [true, false]) {
  describe(`Postfix policy server: backpressure (${shared ? 'shared read buffer' : "'data' events"})`, () => {
    test('a pipelining client that never reads is no longer read; it gets every answer once it reads', async (t) => {
      const h: Harness = await startHarness({ postfix: { sharedReadBuffer: shared } });
      t.after(() => h.close());
      await banForAnHour(h, '192.0.2.1');
      const port = portOf(h.bound[0] as string);
      // Refusals are long answers (~100 bytes): what piled up in memory before, 20 MB/s.
      const req = 'request=smtpd_access_policy\nprotocol_state=CONNECT\nclient_address=192.0.2.1\n\n';
      const N = 150_000;
      const c = connect(port, '127.0.0.1');
      t.after(() => c.destroy());
      await once(c, 'connect');
      c.pause();
      c.write(req.repeat(N));

      const consumed = await settled(() => h.server.stats.requests);
      // The kernel's socket buffers take a few MB of answers; past them the server stopped reading.
      assert.ok(consumed < N / 2, `the server read ${consumed} of ${N} requests and stopped`);
      assert.ok(h.server.stats.readPauses >= 1);
      const unsent = h.server.unsentBytes();
      assert.ok(unsent < 256 * 1024, `answers queued in the daemon: ${unsent} bytes`);

      // Meanwhile everyone else is served.
      const other = await PolicyClient.open({ port });
      t.after(() => other.close());
      assert.equal(await other.send(connectRequest('192.0.2.30')), 'action=DUNNO');

      // Reading resumes as the answers are taken: all of them arrive (each a refusal), none lost.
      await arrivals(c, 'action=554 ', N);
      assert.equal(h.server.stats.requests, N + 1);
    });
  });
}

describe('Postfix policy server: a flood of bad connections', () => {
  test('writes a bounded number of warnings and one "N suppressed" line per kind', async (t) => {
    const h = await startHarness({ postfix: { logThrottle: { burst: 5, intervalMs: 400 } } });
    t.after(() => h.close());
    const port = portOf(h.bound[0] as string);
    const FLOOD = 300;
    const bad = async (i: number): Promise<void> => {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => undefined);
      await once(s, 'connect');
      const closed = once(s, 'close');
      // Half break the framing (a line over max_line closes the connection), half send garbage.
      s.write(i % 2 ? `x=${'a'.repeat(20_000)}\n` : 'no equals sign here\n\n');
      if (i % 2 === 0) {
        await once(s, 'data');
        s.destroy();
      }
      await closed;
    };
    for (let i = 0; i < FLOOD; i += 50) await Promise.all(Array.from({ length: 50 }, (_, k) => bad(i + k)));
    const warnings = (kind: string): Array<Record<string, unknown>> => h.logs.filter((l) => l.kind === kind);
    assert.equal(warnings('framing').length, 5);
    assert.equal(warnings('bad-request').length, 5);
    await sleep(600);
    for (const kind of ['framing', 'bad-request']) {
      const summary = warnings(kind).filter((l) => l.suppressed !== undefined);
      const suppressed = summary.reduce((n, l) => n + Number(l.suppressed), 0);
      assert.ok(summary.length >= 1, `a suppressed line for ${kind}`);
      // Every bad connection is accounted for: written or counted as suppressed.
      assert.equal(warnings(kind).length - summary.length + suppressed, FLOOD / 2, kind);
    }
    assert.equal(h.server.stats.framingErrors, FLOOD / 2);
    assert.ok(h.logs.length < 40, `${h.logs.length} log lines for ${FLOOD} bad connections`);
  });
});
