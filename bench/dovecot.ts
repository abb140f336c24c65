/*
 * bench/dovecot — the Dovecot auth policy endpoint under load, against a bare
 * node:http server answering {"status":0,"msg":""} in the same run.
 *
 * A login is what Dovecot 2.3 sends for it: allow (before the password
 * check), allow again (after it) and report, on one keep-alive connection;
 * one in ten logins fails (allow + report success:false). Addresses and
 * users are spread so that no rule fires: the numbers are the price of the
 * checks every login pays, not of the rare refusal. The client is raw HTTP/1.1 over
 * node:net with pre-built requests, so it measures the servers, not itself.
 */
import { createServer } from 'node:http';
import { connect, type Socket } from 'node:net';

export interface HttpTarget {
  port: number;
  path: string;
}

export interface LoginLoad {
  logins: number;
  requests: number;
  seconds: number;
  p50: number;
  p99: number;
  non200: number;
  refused: number;
}

/** One auth policy request as Dovecot sends it: `command` is allow or report. */
export function policyRequest(path: string, command: string, body: object): Buffer {
  const json = JSON.stringify(body);
  return Buffer.from(
    `POST ${path}?command=${command} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: dovecot/auth-policy-client\r\nContent-Length: ${Buffer.byteLength(json)}\r\nConnection: Keep-Alive\r\nContent-Type: application/json\r\n\r\n${json}`,
  );
}

/** The requests of `n` logins, as Dovecot sends them. */
export function buildLogins(path: string, n: number): Buffer[][] {
  const out: Buffer[][] = [];
  for (let i = 0; i < n; i++) {
    const base = {
      device_id: '',
      // one user per login and one address per user: no guessing, spraying or spread rule fires
      login: `${i % 10 === 0 ? 'typo' : 'user'}${i}@example.org`,
      protocol: i % 3 === 0 ? 'pop3' : 'imap',
      pwhash: (i % 4096).toString(16).padStart(4, '0'),
      remote: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
      session_id: `s${i}`,
      tls: true,
    };
    const ok = i % 10 !== 0;
    const allow = policyRequest(path, 'allow', base);
    out.push(
      ok
        ? [allow, allow, policyRequest(path, 'report', { ...base, success: true, policy_reject: false })]
        : [allow, policyRequest(path, 'report', { ...base, success: false, policy_reject: false })],
    );
  }
  return out;
}

/** Reads one HTTP response (headers + Content-Length body) at a time from a keep-alive socket. */
export class HttpConn {
  private buf: Buffer = Buffer.alloc(0);
  private waiter: ((r: { status: number; body: string }) => void) | undefined;
  constructor(readonly sock: Socket) {
    sock.on('data', (c: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, c]) : c;
      this.drain();
    });
  }
  private drain(): void {
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0 || !this.waiter) return;
    const head = this.buf.subarray(0, end).toString('latin1');
    const len = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    if (this.buf.length < end + 4 + len) return;
    const body = this.buf.subarray(end + 4, end + 4 + len).toString();
    this.buf = this.buf.subarray(end + 4 + len);
    const w = this.waiter;
    this.waiter = undefined;
    w({ status: Number(head.slice(9, 12)), body });
  }
  send(b: Buffer): Promise<{ status: number; body: string }> {
    return new Promise((resolve) => {
      this.waiter = resolve;
      this.sock.write(b);
      this.drain();
    });
  }
}

export function openHttp(port: number): Promise<HttpConn> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(new HttpConn(s)));
    s.setNoDelay(true);
    s.once('error', reject);
  });
}

/** `connections` keep-alive connections, each doing one login after another for `ms`. */
export async function loginLoad(
  t: HttpTarget,
  logins: Buffer[][],
  connections: number,
  warmupMs: number,
  ms: number,
): Promise<LoginLoad> {
  const conns = await Promise.all(Array.from({ length: connections }, () => openHttp(t.port)));
  const lat: number[] = [];
  let done = 0;
  let requests = 0;
  let non200 = 0;
  let refused = 0;
  let measuring = false;
  const stopAt = Date.now() + warmupMs + ms;
  setTimeout(() => (measuring = true), warmupMs).unref();
  let next = 0;
  const started = { t: 0 };
  await Promise.all(
    conns.map(async (c) => {
      while (Date.now() < stopAt) {
        const login = logins[next++ % logins.length] as Buffer[];
        for (const r of login) {
          const t0 = performance.now();
          const res = await c.send(r);
          if (measuring) {
            if (started.t === 0) started.t = performance.now();
            lat.push(performance.now() - t0);
            requests++;
            if (res.status !== 200) non200++;
            else if (res.body.includes('"status":-')) refused++;
          }
        }
        if (measuring) done++;
      }
    }),
  );
  const seconds = (performance.now() - started.t) / 1000;
  for (const c of conns) c.sock.destroy();
  lat.sort((a, b) => a - b);
  const q = (p: number): number => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? NaN;
  return { logins: done / seconds, requests: requests / seconds, seconds, p50: q(0.5), p99: q(0.99), non200, refused };
}

/** What Dovecot waits for per successful login (allow + allow + report, one after another, nothing else running). */
export async function perLoginMs(t: HttpTarget, logins: Buffer[][], n: number): Promise<number> {
  const c = await openHttp(t.port);
  const ok = logins.filter((l) => l.length === 3);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) for (const r of ok[i % ok.length] as Buffer[]) await c.send(r);
  c.sock.destroy();
  return (performance.now() - t0) / n;
}

/** The floor: a bare node:http server answering {"status":0,"msg":""}; run as its own process. */
export function serveTrivialHttp(port: number): void {
  const reply = Buffer.from('{"status":0,"msg":""}');
  createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': reply.length });
      res.end(reply);
    });
  }).listen(port, '127.0.0.1', () => process.stdout.write('ready\n')).keepAliveTimeout = 65_000;
}

if (process.argv[2] === '--serve-trivial') serveTrivialHttp(Number(process.argv[3]));
