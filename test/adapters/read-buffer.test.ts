import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { ACCEPT_PAUSED, adopt, canAdopt } from '../../src/adapters/read-buffer.js';

/** A server whose connections are adopted (`own` picks the path) and echo what they read. */
async function echoServer(
  own: boolean,
  target: 'tcp' | 'unix',
): Promise<{ server: Server; sockets: Socket[]; adoptable: boolean[]; connectArgs: [number, string] | [string] }> {
  const sockets: Socket[] = [];
  const adoptable: boolean[] = [];
  const server = createServer(ACCEPT_PAUSED, (raw) => {
    adoptable.push(canAdopt(raw));
    const s = adopt(raw, (n, buf) => s.write(Buffer.from(buf.subarray(0, n))), own);
    s.on('error', () => s.destroy());
    sockets.push(s);
  });
  if (target === 'unix') {
    const path = join(mkdtempSync(join(tmpdir(), 'read-buffer-')), 's.sock');
    server.listen(path);
    await once(server, 'listening');
    return { server, sockets, adoptable, connectArgs: [path] };
  }
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, sockets, adoptable, connectArgs: [(server.address() as AddressInfo).port, '127.0.0.1'] };
}

function collect(c: Socket, bytes: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let got = 0;
  return new Promise((resolve) => {
    c.on('data', (d: Buffer) => {
      parts.push(d);
      got += d.length;
      if (got >= bytes) resolve(Buffer.concat(parts));
    });
  });
}

/** A client connection to an echo server, and the server's side of it, after one echoed byte. */
async function echoing(own: boolean, target: 'tcp' | 'unix'): Promise<{ server: Server; c: Socket; s: Socket }> {
  const { server, sockets, connectArgs } = await echoServer(own, target);
  const c = connect(...(connectArgs as [string]));
  await once(c, 'connect');
  c.write('x');
  await once(c, 'data');
  return { server, c, s: sockets[0] as Socket };
}

const closed = (server: Server): Promise<void> => new Promise((resolve) => server.close(() => resolve()));

for (const own of [true, false]) {
  for (const target of ['tcp', 'unix'] as const) {
    describe(`read-buffer over ${target}, ${own ? 'shared buffer' : "fallback to 'data' events"}`, () => {
      test('every byte arrives once and in order across many reads, several connections at once', async () => {
        const { server, adoptable, connectArgs } = await echoServer(own, target);
        // 300 KiB each: more than one 64 KiB read, and the shared buffer reused between connections.
        const payloads = [1, 2, 3].map((k) => Buffer.from(Array.from({ length: 300 * 1024 }, (_, i) => (i * k) % 251)));
        const echoed = await Promise.all(
          payloads.map(async (p) => {
            const c = connect(...(connectArgs as [string]));
            await once(c, 'connect');
            const back = collect(c, p.length);
            c.write(p);
            const b = await back;
            c.destroy();
            return b;
          }),
        );
        for (const [i, p] of payloads.entries()) assert.ok(echoed[i]?.equals(p), `connection ${i} echoed its bytes`);
        assert.deepEqual(adoptable, [true, true, true], 'this node lets accepted sockets be re-wrapped');
        await closed(server);
      });

      test("a peer's end closes the connection and the server's count of connections", { timeout: 5000 }, async () => {
        const { server, c, s } = await echoing(own, target);
        const serverClosed = once(s, 'close');
        c.end();
        await serverClosed;
        // close() waits for every connection it counts: it returns only if the adopted one was counted down
        await closed(server);
      });

      test('pause() stops reading and resume() starts again (backpressure)', async () => {
        const { server, c, s } = await echoing(own, target);
        s.pause();
        let echoed = 0;
        c.on('data', (d: Buffer) => (echoed += d.length));
        const size = 1024 * 1024;
        c.write(Buffer.alloc(size, 1));
        await sleep(100);
        assert.equal(echoed, 0, 'nothing is handed over while paused');
        s.resume();
        while (echoed < size) await sleep(10);
        assert.equal(echoed, size, 'every byte is read after resume()');
        c.destroy();
        await closed(server);
      });

      test('idle timeouts and destroy() work on the adopted socket', async () => {
        const { server, c, s } = await echoing(own, target);
        s.setTimeout(30, () => s.destroy());
        await once(c, 'close');
        assert.ok(s.destroyed);
        await closed(server);
      });
    });
  }
}
