/*
 * Test helpers for the Postfix policy protocol: the captured Postfix 3.7
 * requests in test/fixtures/protocol, a real TCP/unix policy client, and a
 * request builder. The captures must exist: a missing fixture fails the suite.
 */
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const PROTOCOL_DIR = join(REPO, 'test', 'fixtures', 'protocol');

export interface CapturedRequest {
  test: string;
  conn: number;
  text: string;
  attrs: Record<string, string>;
  /** What the capture server answered (not ours; for reference). */
  capturedReply: string;
}

export function capturedRequests(): CapturedRequest[] {
  const lines = readFileSync(join(PROTOCOL_DIR, 'policy-requests.txt'), 'utf8').split('\n');
  const out: CapturedRequest[] = [];
  let test = '';
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i] as string;
    const t = /^===== \[TEST (.+?)\]/.exec(l);
    if (t) test = t[1] as string;
    const h = /^### \S+ conn=(\d+) req=\d+ state=\S+ bytes=\d+ -> (.*)$/.exec(l);
    if (!h) continue;
    const attrs: Record<string, string> = {};
    let j = i + 1;
    for (; j < lines.length && lines[j] !== ''; j++) {
      const line = lines[j] as string;
      const eq = line.indexOf('=');
      attrs[line.slice(0, eq)] = line.slice(eq + 1);
    }
    out.push({
      test,
      conn: Number(h[1]),
      text: `${lines.slice(i + 1, j).join('\n')}\n\n`,
      attrs,
      capturedReply: h[2] as string,
    });
    i = j;
  }
  return out;
}

/** The 29 attributes Postfix 3.7 sends, with overrides. */
export function request(over: Record<string, string | number>): string {
  const base: Record<string, string | number> = {
    request: 'smtpd_access_policy',
    protocol_state: 'RCPT',
    protocol_name: 'ESMTP',
    client_address: '192.0.2.10',
    client_name: 'unknown',
    client_port: 40000,
    reverse_client_name: 'unknown',
    server_address: '127.0.0.1',
    server_port: 25,
    helo_name: 'client.example',
    sender: 'someone@example.org',
    recipient: 'alice@mailprobe.test',
    recipient_count: 0,
    queue_id: '',
    instance: 'aaaa.bbbb.cccc.0',
    size: 0,
    etrn_domain: '',
    stress: '',
    sasl_method: '',
    sasl_username: '',
    sasl_sender: '',
    ccert_subject: '',
    ccert_issuer: '',
    ccert_fingerprint: '',
    ccert_pubkey_fingerprint: '',
    encryption_protocol: '',
    encryption_cipher: '',
    encryption_keysize: 0,
    policy_context: '',
  };
  return `${Object.entries({ ...base, ...over })
    .map(([k, v]) => `${k}=${v}`)
    .join('\n')}\n\n`;
}

/** A CONNECT request as Postfix sends it (no HELO, sender or recipient yet). */
export function connectRequest(ip: string, port = 40000): string {
  return request({
    protocol_state: 'CONNECT',
    client_address: ip,
    client_port: port,
    instance: '',
    sender: '',
    recipient: '',
  });
}

/** A persistent policy connection, as one Postfix smtpd process keeps it. */
export class PolicyClient {
  private buf = '';
  private waiters: Array<(reply: string) => void> = [];
  private closedWaiters: Array<() => void> = [];
  closed = false;
  readonly socket: Socket;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => {
      this.buf += c;
      for (;;) {
        const end = this.buf.indexOf('\n\n');
        if (end < 0) break;
        const reply = this.buf.slice(0, end);
        this.buf = this.buf.slice(end + 2);
        this.waiters.shift()?.(reply);
      }
    });
    socket.on('close', () => {
      this.closed = true;
      // a request the server never answered resolves as '(closed)' instead of hanging the test
      for (const w of this.waiters.splice(0)) w('(closed)');
      for (const w of this.closedWaiters) w();
    });
    socket.on('error', () => undefined);
  }

  static open(addr: { port: number; host?: string } | { path: string }): Promise<PolicyClient> {
    return new Promise((resolve, reject) => {
      const s = 'path' in addr ? connect(addr.path) : connect(addr.port, addr.host ?? '127.0.0.1');
      s.once('connect', () => resolve(new PolicyClient(s)));
      s.once('error', reject);
    });
  }

  /** Sends raw text and resolves with the next reply (without the trailing blank line). */
  send(text: string): Promise<string> {
    const p = new Promise<string>((resolve) => this.waiters.push(resolve));
    this.socket.write(text);
    return p;
  }

  /** Resolves when the server closes the connection (or after `ms`, with false). */
  waitClosed(ms: number): Promise<boolean> {
    if (this.closed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), ms);
      this.closedWaiters.push(() => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Parses `host:port` as printed by the daemon. */
export function portOf(bound: string): number {
  return Number(bound.slice(bound.lastIndexOf(':') + 1));
}

/** One request on a fresh connection to a policy server on loopback; the reply's text. */
export async function ask(port: number, text: string): Promise<string> {
  const c = await PolicyClient.open({ port });
  try {
    return await c.send(text);
  } finally {
    c.close();
  }
}
