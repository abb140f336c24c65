/*
 * doctor/probe — talks to the live ports the configs name, as a client
 * would, and records what it sees (doctor/check-probe.ts says what it
 * means): what is offered before TLS, whether STARTTLS works, whether TLS
 * 1.0/1.1 is still accepted, and (SMTP) whether a foreign recipient is
 * accepted without authentication. It never authenticates and never sends a
 * message: RSET and QUIT follow the RCPT.
 *
 * Certificates are not verified here (self-signed ones are common on
 * loopback); doctor/certs.ts checks the files. Dovecot treats a client whose
 * address equals the server's as secured and then allows passwords in clear,
 * so a probe of 127.0.0.1 comes from 127.0.0.2: it sees what a stranger sees.
 */
import { once } from 'node:events';
import { connect as tcpConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { RELAY_TEST_RECIPIENT, type ProbeResult, type ProbeTarget } from './check-probe.js';

/** Each connection, from connect to QUIT. */
const PROBE_TIMEOUT_MS = 10_000;

const LOOSE: ConnectionOptions = { rejectUnauthorized: false };
/** Offers only what must be refused; OpenSSL's security level would otherwise refuse it on our side. */
const OLD_ONLY: ConnectionOptions = {
  ...LOOSE,
  minVersion: 'TLSv1',
  maxVersion: 'TLSv1.1',
  ciphers: 'DEFAULT:@SECLEVEL=0',
};

async function within<T>(p: Promise<T>, deadline: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in time`)), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A line-based conversation over a socket that may turn into TLS half-way. */
class Session {
  private buf = '';
  private readonly lines: string[] = [];
  private wake: (() => void) | undefined;
  private ended: Error | undefined;
  private readonly onData = (chunk: Buffer): void => {
    this.buf += chunk.toString('latin1');
    for (let i = this.buf.indexOf('\n'); i >= 0; i = this.buf.indexOf('\n')) {
      this.lines.push(this.buf.slice(0, i).replace(/\r$/, ''));
      this.buf = this.buf.slice(i + 1);
    }
    this.wake?.();
  };
  private readonly onEnd = (err?: Error): void => {
    this.ended ??= err ?? new Error('the server closed the connection');
    this.wake?.();
  };

  constructor(
    private sock: Socket,
    readonly deadline: number,
  ) {
    this.listen(sock);
  }

  private listen(sock: Socket): void {
    sock.on('data', this.onData);
    sock.on('error', this.onEnd);
    sock.on('close', () => this.onEnd());
  }

  async line(): Promise<string> {
    for (;;) {
      const l = this.lines.shift();
      if (l !== undefined) return l;
      if (this.ended) throw this.ended;
      await within(new Promise<void>((resolve) => (this.wake = resolve)), this.deadline, 'reading');
      this.wake = undefined;
    }
  }

  /** Lines up to and including the one `last` accepts. */
  async until(last: (line: string) => boolean): Promise<string[]> {
    const out: string[] = [];
    for (;;) {
      const l = await this.line();
      out.push(l);
      if (last(l)) return out;
    }
  }

  send(line: string): void {
    this.sock.write(`${line}\r\n`);
  }

  /** Starts TLS on the connection (after the server said yes to STARTTLS); the protocol negotiated. */
  async upgrade(opts: ConnectionOptions): Promise<string> {
    this.sock.off('data', this.onData);
    const secure = tlsConnect({ ...opts, socket: this.sock });
    this.sock = secure;
    this.listen(secure);
    await within(once(secure, 'secureConnect'), this.deadline, 'TLS handshake');
    return secure.getProtocol() ?? 'unknown';
  }

  get source(): string | undefined {
    return this.sock.localAddress;
  }

  close(): void {
    this.sock.destroy();
  }
}

/** What each protocol says to get to TLS, and what it offers before. */
interface Dialect {
  greet(s: Session): Promise<void>;
  offers(s: Session): Promise<{ starttls: boolean; authInClear: string[] }>;
  startTls(s: Session): Promise<void>;
  afterTls(s: Session): Promise<void>;
  quit(s: Session): Promise<void>;
}

const expect = (reply: string, ok: (r: string) => boolean, what: string): void => {
  if (!ok(reply)) throw new Error(`${what}: ${reply}`);
};

/** An SMTP reply: its lines (`250-…`) up to the last (`250 …`). */
const smtpReply = (s: Session): Promise<string[]> => s.until((l) => !/^\d{3}-/.test(l));
async function smtp(s: Session, command: string): Promise<string[]> {
  s.send(command);
  return smtpReply(s);
}
const last = (lines: readonly string[]): string => lines[lines.length - 1] ?? '';

const SMTP: Dialect = {
  async greet(s) {
    expect(last(await smtpReply(s)), (r) => r.startsWith('220'), 'greeting');
  },
  async offers(s) {
    const ehlo = await smtp(s, 'EHLO doctor.mailwarden.invalid');
    expect(last(ehlo), (r) => r.startsWith('250'), 'EHLO');
    const caps = ehlo.map((l) => l.slice(4).trim().split(/\s+/));
    const auth = caps.find((c) => c[0]?.toUpperCase() === 'AUTH');
    return {
      starttls: caps.some((c) => c[0]?.toUpperCase() === 'STARTTLS'),
      authInClear: auth ? [`AUTH ${auth.slice(1).join(' ')}`] : [],
    };
  },
  async startTls(s) {
    expect(last(await smtp(s, 'STARTTLS')), (r) => r.startsWith('220'), 'STARTTLS');
  },
  async afterTls(s) {
    expect(last(await smtp(s, 'EHLO doctor.mailwarden.invalid')), (r) => r.startsWith('250'), 'EHLO after TLS');
  },
  async quit(s) {
    await smtp(s, 'QUIT');
  },
};

let imapTag = 0;
async function imap(s: Session, command: string): Promise<string[]> {
  const tag = `d${++imapTag}`;
  s.send(`${tag} ${command}`);
  const lines = await s.until((l) => l.startsWith(`${tag} `));
  expect(last(lines), (r) => r.startsWith(`${tag} OK`), command);
  return lines;
}

const IMAP: Dialect = {
  async greet(s) {
    expect(await s.line(), (r) => r.startsWith('* OK'), 'greeting');
  },
  async offers(s) {
    const line = (await imap(s, 'CAPABILITY')).find((l) => l.startsWith('* CAPABILITY ')) ?? '';
    const caps = line.slice(13).split(/\s+/);
    const auth = caps.filter((c) => c.toUpperCase().startsWith('AUTH='));
    return {
      starttls: caps.includes('STARTTLS'),
      authInClear: caps.includes('LOGINDISABLED') ? auth : [...auth, 'LOGIN'],
    };
  },
  async startTls(s) {
    await imap(s, 'STARTTLS');
  },
  async afterTls() {},
  async quit(s) {
    await imap(s, 'LOGOUT');
  },
};

async function pop3(s: Session, command: string): Promise<string> {
  s.send(command);
  const reply = await s.line();
  expect(reply, (r) => r.startsWith('+OK'), command);
  return reply;
}

const POP3: Dialect = {
  async greet(s) {
    expect(await s.line(), (r) => r.startsWith('+OK'), 'greeting');
  },
  async offers(s) {
    await pop3(s, 'CAPA');
    const caps = (await s.until((l) => l === '.')).slice(0, -1).map((l) => l.split(/\s+/));
    const sasl = caps.find((c) => c[0] === 'SASL');
    return {
      starttls: caps.some((c) => c[0] === 'STLS'),
      authInClear: [
        ...(sasl && sasl.length > 1 ? [`SASL ${sasl.slice(1).join(' ')}`] : []),
        ...(caps.some((c) => c[0] === 'USER') ? ['USER'] : []),
      ],
    };
  },
  async startTls(s) {
    await pop3(s, 'STLS');
  },
  async afterTls() {},
  async quit(s) {
    await pop3(s, 'QUIT');
  },
};

const DIALECTS: Record<ProbeTarget['protocol'], Dialect> = { smtp: SMTP, imap: IMAP, pop3: POP3 };

/** The source address for a probe of `host` (see the note at the top). */
function sourceFor(host: string): string | undefined {
  return host === '127.0.0.1' ? '127.0.0.2' : undefined;
}

async function open(host: string, t: ProbeTarget, deadline: number): Promise<Session> {
  const sock = tcpConnect({ host, port: t.port, localAddress: sourceFor(host) });
  try {
    await within(once(sock, 'connect'), deadline, 'connect');
  } catch (err) {
    sock.destroy();
    throw err;
  }
  return new Session(sock, deadline);
}

/** Gets to TLS: at once on an implicit-TLS port, else through STARTTLS; the protocol negotiated. */
async function secure(s: Session, t: ProbeTarget, tls: ConnectionOptions): Promise<string> {
  if (!t.implicitTls) await DIALECTS[t.protocol].startTls(s);
  return s.upgrade(tls);
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** The main visit: offers before TLS, STARTTLS, and the relay test. */
async function visit(host: string, t: ProbeTarget, r: ProbeResult): Promise<void> {
  const d = DIALECTS[t.protocol];
  const s = await open(host, t, Date.now() + PROBE_TIMEOUT_MS);
  try {
    r.source = s.source;
    if (!t.implicitTls) {
      await d.greet(s);
      const offers = await d.offers(s);
      r.starttls = offers.starttls;
      r.authInClear = offers.authInClear;
    }
    if (t.implicitTls || r.starttls) {
      try {
        r.tls = { protocol: await secure(s, t, LOOSE) };
      } catch (err) {
        r.tls = { error: message(err) };
        return;
      }
      if (t.implicitTls) await d.greet(s);
      await d.afterTls(s);
    }
    if (t.relay) {
      const mail = last(await smtp(s, 'MAIL FROM:<>'));
      if (!mail.startsWith('2')) r.relay = { command: 'MAIL', reply: mail };
      else {
        r.relay = { command: 'RCPT', reply: last(await smtp(s, `RCPT TO:<${RELAY_TEST_RECIPIENT}>`)) };
        await smtp(s, 'RSET');
      }
    }
    await d.quit(s);
  } finally {
    s.close();
  }
}

/** A second connection that offers only TLS 1.0 and 1.1: the protocol the server took, or undefined. */
async function oldTls(host: string, t: ProbeTarget): Promise<string | undefined> {
  let s: Session | undefined;
  try {
    s = await open(host, t, Date.now() + PROBE_TIMEOUT_MS);
    if (!t.implicitTls) {
      await DIALECTS[t.protocol].greet(s);
      await DIALECTS[t.protocol].offers(s);
    }
    return await secure(s, t, OLD_ONLY);
  } catch {
    return undefined;
  } finally {
    s?.close();
  }
}

/** Visits every target in turn (gently: one connection at a time). */
export async function probe(host: string, targets: readonly ProbeTarget[]): Promise<ProbeResult[]> {
  const out: ProbeResult[] = [];
  for (const t of targets) {
    const r: ProbeResult = { target: t, address: `${host.includes(':') ? `[${host}]` : host}:${t.port}` };
    try {
      await visit(host, t, r);
    } catch (err) {
      // A failure after TLS was seen (a refused relay test, a lost QUIT) leaves what was seen standing.
      if (r.tls === undefined && r.starttls === undefined) r.error = message(err);
    }
    if (r.tls !== undefined && 'protocol' in r.tls) r.oldTls = await oldTls(host, t);
    out.push(r);
  }
  return out;
}
