/*
 * listen — binds a node server to a TCP address or a unix socket path.
 * A stale unix socket left by a crash is removed first, but only if nothing
 * answers on it (so a second daemon never steals a live socket).
 *
 * Also sizes the connection caps to the open-file limit. node itself raises
 * the soft limit to the hard one at start (it has no setrlimit for us, and a
 * higher hard limit needs privilege: systemd's LimitNOFILE sets it), so the
 * caps are fitted to what it got, read from /proc/self/limits, keeping
 * FD_RESERVE descriptors for the admin socket, the CLI, SQLite, Redis and
 * alerts whatever the mail listeners hold.
 */
import { chmodSync, lstatSync, mkdirSync, readFileSync, unlinkSync } from 'node:fs';
import { connect, type Server } from 'node:net';
import { dirname } from 'node:path';
import type { ConnectionLimits } from './adapters/caps.js';
import type { Settings } from './config/compile.js';
import type { ListenTarget } from './config/schema.js';

/** Descriptors the mail listeners never get: the admin socket and CLI, the dashboard, SQLite, Redis, alerts, logs. */
export const FD_RESERVE = 256;
/** Connections each admin TCP listener (dashboard, API, scrapes) holds at most; the CLI's unix socket is not capped. */
export const ADMIN_MAX_CONNECTIONS = 64;

/** Whether a TCP host is this machine's loopback (127/8, ::1, localhost): reachable from here only. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || h === '::ffff:127.0.0.1';
}

/**
 * One warning per listener reachable from the network, with the fix: the policy protocols carry
 * no authentication (Dovecot's only an optional shared header), and the admin API speaks plain
 * HTTP, so its token crosses the network in clear.
 */
export function exposureWarnings(s: Pick<Settings, 'listen' | 'dovecot'>): string[] {
  const exposed = (ts: readonly ListenTarget[]): string[] =>
    ts.flatMap((t) => (t.kind === 'tcp' && !isLoopback(t.host) ? [describeTarget(t)] : []));
  const out: string[] = [];
  for (const addr of exposed(s.listen.postfix)) {
    out.push(
      `listen.postfix ${addr} is reachable from the network, and the policy protocol has no authentication: ` +
        'anyone who reaches it can read decisions and fill counters. Listen on 127.0.0.1 or a unix socket, ' +
        'or let only your mail servers reach the port (firewall)',
    );
  }
  for (const addr of exposed(s.listen.dovecot)) {
    const secret = s.dovecot.apiHeader
      ? 'dovecot.api_header is set, but it crosses the network in clear'
      : 'set dovecot.api_header (a shared secret) too';
    out.push(
      `listen.dovecot ${addr} is reachable from the network: anyone who reaches it can report logins. ` +
        `Listen on 127.0.0.1, or let only your Dovecot servers reach the port (firewall); ${secret}`,
    );
  }
  for (const addr of exposed(s.listen.admin)) {
    out.push(
      `listen.admin ${addr} is reachable from the network, in plain HTTP: the admin token crosses it in clear. ` +
        'Listen on 127.0.0.1 and reach it through an SSH tunnel or a TLS reverse proxy',
    );
  }
  return out;
}

/** The soft limit on open files from /proc/self/limits' text; undefined where there is none (not Linux). */
export function openFileLimit(
  read: () => string = () => readFileSync('/proc/self/limits', 'utf8'),
): number | undefined {
  let text: string;
  try {
    text = read();
  } catch {
    return undefined;
  }
  const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(text);
  if (!m) return undefined;
  return m[1] === 'unlimited' ? Infinity : Number(m[1]);
}

export interface FittedCaps {
  postfix: ConnectionLimits;
  dovecot: ConnectionLimits;
  /** The open-file limit they were fitted to (undefined: unknown, taken as configured). */
  limit: number | undefined;
  /** Whether the configured caps were lowered to fit. */
  lowered: boolean;
}

/**
 * The caps of the mail listeners, lowered in proportion when every listener full at once would
 * leave fewer than FD_RESERVE descriptors (and the admin TCP listeners' share) under `limit`.
 */
export function fitConnectionCaps(s: Settings, limit: number | undefined): FittedCaps {
  const pf = s.postfix.limits;
  const dv = s.dovecot.limits;
  const wanted = pf.maxConnections * s.listen.postfix.length + dv.maxConnections * s.listen.dovecot.length;
  const admin = s.listen.admin.filter((t) => t.kind === 'tcp').length * ADMIN_MAX_CONNECTIONS;
  const room = limit === undefined ? Infinity : limit - FD_RESERVE - admin;
  if (wanted <= room) return { postfix: pf, dovecot: dv, limit, lowered: false };
  const factor = Math.max(0, room) / wanted;
  const scale = (l: ConnectionLimits): ConnectionLimits => {
    const max = Math.max(1, Math.floor(l.maxConnections * factor));
    return { maxConnections: max, maxConnectionsPerPeer: Math.max(1, Math.floor(l.maxConnectionsPerPeer * factor)) };
  };
  return { postfix: scale(pf), dovecot: scale(dv), limit, lowered: true };
}

export function describeTarget(t: ListenTarget): string {
  if (t.kind === 'unix') return t.path;
  return t.host.includes(':') ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}

/** An error shaped like node's own listen errors (code, address), so the daemon words both alike. */
function inTheWay(code: string, path: string, message: string): NodeJS.ErrnoException & { address: string } {
  return Object.assign(new Error(message), { code, address: path });
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
  if (!isSocket) throw inTheWay('EEXIST', path, `${path} exists and is not a socket; refusing to replace it`);
  const alive = await new Promise<boolean>((resolve) => {
    const c = connect(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (alive) throw inTheWay('EADDRINUSE', path, `another process is listening on ${path}`);
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
