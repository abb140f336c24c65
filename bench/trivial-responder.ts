/*
 * bench/trivial-responder — the floor to compare mailwarden with: a node:net
 * policy server that has no policy at all. It reads until each request's
 * empty line and answers `action=DUNNO\n\n`, nothing else (no parsing of the
 * attributes, no engine, no store, no logging).
 *
 * Run as its own process (so it gets its own core, like the daemon):
 *   node --import tsx bench/trivial-responder.ts [--shared-buffer] --tcp 127.0.0.1:PORT [--unix /path/to.sock]
 * By default it reads the idiomatic way ('data' events, a Buffer per read).
 * `--shared-buffer` reads as mailwarden's policy server does
 * (src/adapters/read-buffer.ts), to show what that read path is worth alone.
 * It prints one line `ready` on stdout when every listener is bound, and
 * stops on SIGTERM/SIGINT.
 *
 * Framing: a request ends at a line that is empty; empty lines between
 * requests are ignored. Requests may arrive split across reads or several in
 * one read (pipelined); each gets one answer, in order.
 */
import { unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { ACCEPT_PAUSED, adopt } from '../src/adapters/read-buffer.js';

const DUNNO = Buffer.from('action=DUNNO\n\n');

/** Counts the requests that end in each read and answers each; `buf[0..n)` is the read. */
function responder(): (sock: Socket, n: number, buf: Buffer) => void {
  let pendingNL = false; // the previous read ended with '\n'
  let hasContent = false; // the current request has at least one non-empty line so far
  return (sock, n, chunk) => {
    let replies = 0;
    let last = -1;
    for (let i = chunk.indexOf(10); i !== -1 && i < n; i = chunk.indexOf(10, i + 1)) {
      const emptyLine = last === -1 ? i === 0 && pendingNL : i === last + 1;
      if (!emptyLine) hasContent = true;
      else if (hasContent) {
        replies++;
        hasContent = false;
      }
      last = i;
    }
    if (last < n - 1) {
      hasContent = true;
      pendingNL = false;
    } else pendingNL = true;
    if (replies === 1) sock.write(DUNNO);
    else if (replies > 1) sock.write(Buffer.concat(Array.from({ length: replies }, () => DUNNO)));
  };
}

function serve(sock: Socket): void {
  const answer = responder();
  sock.setNoDelay(true);
  sock.on('data', (chunk: Buffer) => answer(sock, chunk.length, chunk));
  sock.on('error', () => sock.destroy());
}

function serveShared(raw: Socket): void {
  const answer = responder();
  const sock: Socket = adopt(raw, (n, buf) => answer(sock, n, buf));
  sock.setNoDelay(true);
  sock.on('error', () => sock.destroy());
}

function listen(server: Server, spec: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    if (spec.startsWith('/')) {
      try {
        unlinkSync(spec);
      } catch {
        // not there: fine
      }
      server.listen(spec, () => resolve());
    } else {
      const colon = spec.lastIndexOf(':');
      server.listen(Number(spec.slice(colon + 1)), spec.slice(0, colon), () => resolve());
    }
  });
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const shared = args[0] === '--shared-buffer';
  if (shared) args.shift();
  const specs: string[] = [];
  for (let i = 0; i < args.length; i += 2) {
    const flag = args[i];
    const value = args[i + 1];
    if ((flag !== '--tcp' && flag !== '--unix') || value === undefined)
      throw new Error(`usage: trivial-responder [--shared-buffer] --tcp host:port [--unix /path]`);
    specs.push(value);
  }
  if (specs.length === 0) specs.push('127.0.0.1:10099');
  const servers = specs.map(() => (shared ? createServer(ACCEPT_PAUSED, serveShared) : createServer(serve)));
  await Promise.all(servers.map((s, i) => listen(s, specs[i]!)));
  const stop = (): void => {
    for (const s of servers) s.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write('ready\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`trivial-responder: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
