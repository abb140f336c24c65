/*
 * listen — binds a node server to a TCP address or a unix socket path.
 * A stale unix socket left by a crash is removed first, but only if nothing
 * answers on it (so a second daemon never steals a live socket).
 */
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect, type Server } from 'node:net';
import { dirname } from 'node:path';
import type { ListenTarget } from './config/schema.js';

export function describeTarget(t: ListenTarget): string {
  if (t.kind === 'unix') return t.path;
  return t.host.includes(':') ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}

/** Makes `path` free for a new unix socket: removes a stale one left by a crash, refuses a live one. */
export async function prepareUnixSocket(path: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  let isSocket = false;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return;
  }
  if (!isSocket) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  const alive = await new Promise<boolean>((resolve) => {
    const c = connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (alive) throw new Error(`another process is listening on ${path}`);
  unlinkSync(path);
}

/** Listens and resolves with the bound address text (the real port when 0 was asked). */
export async function listenOn(server: Server, t: ListenTarget, socketMode = 0o660): Promise<string> {
  if (t.kind === 'unix') await prepareUnixSocket(t.path);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => {
      server.off('error', reject);
      resolve();
    };
    if (t.kind === 'unix') server.listen(t.path, done);
    else server.listen(t.port, t.host, done);
  });
  if (t.kind === 'unix') {
    chmodSync(t.path, socketMode);
    return t.path;
  }
  const a = server.address();
  return typeof a === 'object' && a
    ? describeTarget({ kind: 'tcp', host: a.address, port: a.port })
    : describeTarget(t);
}
