/*
 * bench/requests — the benchmark's Postfix policy requests, built from the
 * real Postfix 3.7 captures in test/fixtures/protocol/policy-requests.txt.
 *
 * One captured request per (protocol_state, authenticated?) is the template;
 * a workload only overrides the per-session values (client address and port,
 * sender, recipients, instance, queue id, SASL user, count, size) and keeps
 * every other attribute, and their order, exactly as Postfix sent them.
 *
 * Requests are pre-built Buffers so the load generator does no string work on
 * the hot path. `client_port` is written with a fixed width of five digits at
 * a known offset, so the generator can patch it in place each time it reuses
 * a request: mailwarden answers identical repeats within 10 s from a cache
 * (Postfix sends them with smtpd_delay_reject=yes), and the benchmark means to
 * measure real decisions, not that cache.
 *
 * Known limit: the captures hold no HELO/MAIL/DATA in the mix here; the mix is
 * CONNECT, RCPT and END-OF-MESSAGE only (the states the default rules count).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
// The same deterministic PRNG as the tests: every run sends the same workload.
import { prng } from '../test/helpers/prng.js';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..');
export const CAPTURES =
  process.env.MAILWARDEN_BENCH_CAPTURES ?? join(REPO, 'test', 'fixtures', 'protocol', 'policy-requests.txt');

/** One captured request: its attributes in wire order. */
export type Template = Array<[string, string]>;

export interface Templates {
  connect: Template;
  rcpt: Template;
  rcptAuth: Template;
  eom: Template;
  eomAuth: Template;
  /** How many requests the capture file held. */
  captured: number;
}

export function loadTemplates(file = CAPTURES): Templates {
  if (!existsSync(file))
    throw new Error(`captured Postfix requests not found at ${file} (set MAILWARDEN_BENCH_CAPTURES)`);
  const found = new Map<string, Template>();
  let captured = 0;
  let cur: Template | undefined;
  const finish = (): void => {
    if (!cur || cur.length === 0) return;
    captured++;
    const a = new Map(cur);
    const key = `${a.get('protocol_state') ?? ''}/${a.get('sasl_username') ? 'auth' : 'noauth'}`;
    if (!found.has(key)) found.set(key, cur);
    cur = undefined;
  };
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (line.startsWith('### ') || line.startsWith('===== ')) {
      finish();
      if (/^### \S+ conn=\d+ req=\d+ /.test(line)) cur = [];
      continue;
    }
    if (cur === undefined) continue;
    if (line === '') {
      finish();
      continue;
    }
    const eq = line.indexOf('=');
    if (eq > 0) cur.push([line.slice(0, eq), line.slice(eq + 1)]);
  }
  finish();
  const need = (key: string): Template => {
    const t = found.get(key);
    if (!t) throw new Error(`${file} holds no ${key} request to use as a template`);
    if (!t.some(([k]) => k === 'client_port')) throw new Error(`the ${key} template has no client_port`);
    return t;
  };
  return {
    connect: need('CONNECT/noauth'),
    rcpt: need('RCPT/noauth'),
    rcptAuth: need('RCPT/auth'),
    eom: need('END-OF-MESSAGE/noauth'),
    eomAuth: need('END-OF-MESSAGE/auth'),
    captured,
  };
}

/** A request ready to send, and where its five client_port digits are. */
export interface Built {
  text: string;
  portOffset: number;
}

/** Renders a template with overrides; client_port is always five digits. */
export function render(t: Template, over: Record<string, string | number>, port: number): Built {
  let text = '';
  let portOffset = -1;
  for (const [k, v] of t) {
    if (k === 'client_port') {
      portOffset = text.length + k.length + 1;
      text += `${k}=${String(port % 100_000).padStart(5, '0')}\n`;
    } else text += `${k}=${k in over ? String(over[k]) : v}\n`;
  }
  return { text: `${text}\n`, portOffset };
}

/** 10.a.b.c for an index below 2^24. */
export function ipv4(i: number): string {
  return `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
}

export interface Workload {
  /** Per connection: its requests in session order, cycled. */
  perConn: Array<{ reqs: Buffer[]; portOffsets: Int32Array; sessions: Int32Array }>;
  requests: number;
  sessions: number;
  authSessions: number;
  distinctIps: number;
  distinctUsers: number;
  mix: Record<string, number>;
}

export interface WorkloadOptions {
  connections: number;
  sessions: number;
  /** Share of sessions that are authenticated submissions. */
  authShare: number;
  /** SASL users the authenticated sessions are drawn from. */
  users: number;
  seed: number;
}

const hex = (r: () => number, n: number): string => {
  let s = '';
  for (let i = 0; i < n; i++) s += '0123456789ABCDEF'[Math.floor(r() * 16)];
  return s;
};

/**
 * SMTP sessions like Postfix reports them with smtpd_delay_reject=no: CONNECT,
 * 1-3 RCPT, END-OF-MESSAGE. Each session has its own client address (spread
 * over 10.0.0.0/12); one in `authShare` is an authenticated submission.
 * Session s goes to connection s % connections, as one smtpd process
 * reports all of one SMTP session on its own policy connection.
 */
export function buildWorkload(t: Templates, o: WorkloadOptions): Workload {
  const r = prng(o.seed);
  const perConn = Array.from({ length: o.connections }, () => ({ texts: [] as Built[], sessions: [] as number[] }));
  const ips = new Set<string>();
  const users = new Set<string>();
  const mix: Record<string, number> = { CONNECT: 0, RCPT: 0, 'END-OF-MESSAGE': 0 };
  let authSessions = 0;
  let requests = 0;
  for (let s = 0; s < o.sessions; s++) {
    // An odd multiplier modulo 2^20 is a bijection: distinct sessions, distinct addresses, scattered.
    const ip = ipv4((s * 7919 + 12345) % (1 << 20));
    ips.add(ip);
    const port = 10_000 + Math.floor(r() * 50_000);
    const auth = r() < o.authShare;
    const user = auth ? `user${Math.floor(r() * o.users)}@mailprobe.test` : '';
    if (auth) {
      authSessions++;
      users.add(user);
    }
    const sender = auth ? user : `news${Math.floor(r() * 5000)}@sender${Math.floor(r() * 2000)}.example`;
    const instance = `${hex(r, 4).toLowerCase()}.${hex(r, 8).toLowerCase()}.${hex(r, 5).toLowerCase()}.0`;
    const queueId = hex(r, 11);
    const n = 1 + Math.floor(r() * 3);
    const rcpts = Array.from({ length: n }, () => `user${Math.floor(r() * 10_000)}@mailprobe.test`);
    const common = { client_address: ip, client_name: 'unknown', reverse_client_name: 'unknown' };
    const conn = perConn[s % o.connections]!;
    const out = conn.texts;
    out.push(render(t.connect, common, port));
    mix.CONNECT!++;
    rcpts.forEach((rcpt, i) => {
      const over = {
        ...common,
        sender,
        recipient: rcpt,
        instance,
        queue_id: i === 0 ? '' : queueId,
        sasl_username: user,
        recipient_count: 0,
        size: 0,
      };
      out.push(render(auth ? t.rcptAuth : t.rcpt, over, port));
      mix.RCPT!++;
    });
    const size = 1000 + Math.floor(r() * 200_000);
    const eom = {
      ...common,
      sender,
      recipient: n === 1 ? rcpts[0]! : '',
      instance,
      queue_id: queueId,
      sasl_username: user,
      recipient_count: n,
      size,
    };
    out.push(render(auth ? t.eomAuth : t.eom, eom, port));
    mix['END-OF-MESSAGE']!++;
    requests += n + 2;
    for (let k = 0; k < n + 2; k++) conn.sessions.push(s);
  }
  return {
    perConn: perConn.map((c) => ({
      reqs: c.texts.map((b) => Buffer.from(b.text, 'latin1')),
      portOffsets: Int32Array.from(c.texts.map((b) => b.portOffset)),
      sessions: Int32Array.from(c.sessions),
    })),
    requests,
    sessions: o.sessions,
    authSessions,
    distinctIps: ips.size,
    distinctUsers: users.size,
    mix,
  };
}

/** CONNECT requests for the memory fill: request i comes from the i-th address of 10.0.0.0/8. */
export function connectMaker(t: Templates): (i: number) => string {
  // Split the template around client_address and client_port so each request is two concatenations.
  const marker = '\u0001';
  const { text } = render(
    t.connect,
    { client_address: marker, client_name: 'unknown', reverse_client_name: 'unknown' },
    0,
  );
  const [head, tail] = text.split(marker) as [string, string];
  const portAt = tail.indexOf('client_port=') + 'client_port='.length;
  const mid = tail.slice(0, portAt);
  const rest = tail.slice(portAt + 5);
  return (i) => `${head}${ipv4(i)}${mid}${String(10_000 + (i % 50_000))}${rest}`;
}
