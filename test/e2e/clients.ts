/*
 * Small IMAP, POP3 and SMTP clients for the end-to-end tests (node:net only).
 * Every client takes `localAddress`, so one test can play many source
 * addresses from 127.0.0.0/8 (Dovecot's per-IP auth penalty and mailwarden's
 * per-IP counters then stay apart). Every read has a deadline (default 20 s)
 * and every socket is destroyed when the client is done, on success or error.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import type { MailStack, MailUser } from './stack.js';

export const DEFAULT_TIMEOUT_MS = 20_000;

export interface ConnectOptions {
  port: number;
  /** Source address, e.g. '127.0.0.51'. */
  localAddress?: string;
  /** Server address (default 127.0.0.1). */
  host?: string;
  /** Deadline for the connect and for each reply, ms (default 20000). */
  timeoutMs?: number;
}

/** Line-oriented socket: CRLF out, lines (without CR/LF) in. */
export class LineConnection {
  private buf = '';
  private readonly lines: string[] = [];
  private waiter: ((line: string | null) => void) | undefined;
  private closed = false;
  /** Everything received and sent, for failure messages ('S: ' / 'C: ' prefixed). */
  readonly transcript: string[] = [];

  private constructor(
    private readonly socket: Socket,
    readonly timeoutMs: number,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buf += chunk;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).replace(/\r$/, '');
        this.buf = this.buf.slice(i + 1);
        this.transcript.push(`S: ${line}`);
        this.push(line);
      }
    });
    const onEnd = () => {
      this.closed = true;
      const w = this.waiter;
      this.waiter = undefined;
      w?.(null);
    };
    socket.on('end', onEnd);
    socket.on('close', onEnd);
    socket.on('error', onEnd);
  }

  static open(opts: ConnectOptions): Promise<LineConnection> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const socket = connect({ host: opts.host ?? '127.0.0.1', port: opts.port, localAddress: opts.localAddress });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`connect to ${opts.host ?? '127.0.0.1'}:${opts.port} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new LineConnection(socket, timeoutMs));
      });
      socket.once('error', (e) => {
        clearTimeout(timer);
        socket.destroy();
        reject(e);
      });
    });
  }

  private push(line: string): void {
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      w(line);
    } else {
      this.lines.push(line);
    }
  }

  /** The next line, or null once the server closed the connection. Throws on timeout. */
  readLine(timeoutMs = this.timeoutMs): Promise<string | null> {
    const queued = this.lines.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`no reply within ${timeoutMs} ms\n${this.transcript.slice(-10).join('\n')}`));
      }, timeoutMs);
      this.waiter = (line) => {
        clearTimeout(timer);
        resolve(line);
      };
    });
  }

  /** Sends `line` + CRLF. `logAs` replaces the line in the transcript (passwords). */
  writeLine(line: string, logAs?: string): void {
    this.transcript.push(`C: ${logAs ?? line}`);
    if (!this.closed && !this.socket.destroyed) this.socket.write(`${line}\r\n`);
  }

  /** Raw bytes, no CRLF added, not logged line by line. */
  writeRaw(data: string): void {
    this.transcript.push(`C: <${data.length} bytes>`);
    if (!this.closed && !this.socket.destroyed) this.socket.write(data);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  destroy(): void {
    this.closed = true;
    this.socket.destroy();
  }
}

// ------------------------------------------------------------------ IMAP/POP3

export interface LoginOptions extends ConnectOptions {
  user: string;
  password: string;
}

export interface LoginResult {
  ok: boolean;
  /** The server's answer to the login, e.g. 'a1 NO [ALERT] Blocked' or '-ERR [AUTH] ...'; '(connection closed)' if none. */
  line: string;
  /** Time from sending the password to the answer. */
  ms: number;
  /** The greeting line. */
  greeting: string;
}

function imapQuote(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** One IMAP connection that may try LOGIN several times, as a guesser does after a NO. */
export interface ImapSession {
  /** The greeting line ('* OK ...'), or '(connection closed)'. */
  readonly greeting: string;
  readonly transcript: string[];
  /** True once the server (or close()) ended the connection. */
  readonly isClosed: boolean;
  /**
   * `LOGIN user password` with a fresh tag; `line` is the tagged answer, e.g.
   * 'a3 NO [AUTHENTICATIONFAILED] Authentication failed.' or 'a3 NO [ALERT] ...'.
   * After a NO the connection stays usable; after an OK it is logged in.
   */
  login(user: string, password: string): Promise<LoginResult>;
  /** LOGOUT (waits briefly for its answer), then closes. */
  logout(): Promise<void>;
  /** Closes without LOGOUT. */
  close(): void;
}

/** Connects and reads the greeting. Call logout() or close() when done. */
export async function imapSession(opts: ConnectOptions): Promise<ImapSession> {
  const c = await LineConnection.open(opts);
  try {
    const greeting = (await c.readLine()) ?? '(connection closed)';
    let n = 0;
    return {
      greeting,
      transcript: c.transcript,
      get isClosed() {
        return c.isClosed;
      },
      async login(user, password) {
        n += 1;
        const tag = `a${n}`;
        const start = performance.now();
        if (c.isClosed) return { ok: false, line: '(connection closed)', ms: 0, greeting };
        c.writeLine(`${tag} LOGIN ${imapQuote(user)} ${imapQuote(password)}`, `${tag} LOGIN ${imapQuote(user)} ***`);
        let line: string | null;
        do {
          line = await c.readLine();
        } while (line !== null && !line.startsWith(`${tag} `));
        const ms = performance.now() - start;
        if (line === null) return { ok: false, line: '(connection closed)', ms, greeting };
        return { ok: line.startsWith(`${tag} OK`), line, ms, greeting };
      },
      async logout() {
        try {
          if (!c.isClosed) {
            n += 1;
            const tag = `a${n}`;
            c.writeLine(`${tag} LOGOUT`);
            // Wait (briefly) for the tagged LOGOUT answer so the server logs a clean logout.
            let l: string | null;
            do {
              l = await c.readLine(2_000);
            } while (l !== null && !l.startsWith(`${tag} `));
          }
        } catch {
          /* no LOGOUT answer: fine */
        } finally {
          c.destroy();
        }
      },
      close: () => c.destroy(),
    };
  } catch (e) {
    c.destroy();
    throw e;
  }
}

/** IMAP `LOGIN user password`, then LOGOUT. */
export async function imapLogin(opts: LoginOptions): Promise<LoginResult> {
  const s = await imapSession(opts);
  try {
    if (!s.greeting.startsWith('* OK')) return { ok: false, line: s.greeting, ms: 0, greeting: s.greeting };
    const r = await s.login(opts.user, opts.password);
    await s.logout();
    return r;
  } finally {
    s.close();
  }
}

/** POP3 `USER` / `PASS`, then QUIT. `line` is the answer to PASS (or to USER if that failed). */
export async function pop3Login(opts: LoginOptions): Promise<LoginResult> {
  const c = await LineConnection.open(opts);
  try {
    const greeting = (await c.readLine()) ?? '(connection closed)';
    if (!greeting.startsWith('+OK')) return { ok: false, line: greeting, ms: 0, greeting };
    c.writeLine(`USER ${opts.user}`);
    const userReply = await c.readLine();
    if (userReply === null || !userReply.startsWith('+OK')) {
      return { ok: false, line: userReply ?? '(connection closed)', ms: 0, greeting };
    }
    const start = performance.now();
    c.writeLine(`PASS ${opts.password}`, 'PASS ***');
    const line = await c.readLine();
    const ms = performance.now() - start;
    if (line === null) return { ok: false, line: '(connection closed)', ms, greeting };
    c.writeLine('QUIT');
    try {
      await c.readLine(2_000);
    } catch {
      /* fine */
    }
    return { ok: line.startsWith('+OK'), line, ms, greeting };
  } finally {
    c.destroy();
  }
}

// ----------------------------------------------------------------------- SMTP

export interface SmtpReply {
  /** 3-digit code; 0 if the connection closed before a complete reply. */
  code: number;
  /** The complete reply as sent, lines joined with '\n', codes included ('554 5.7.1 <...>: ...'). */
  text: string;
  /** The reply lines (codes included). */
  lines: string[];
}

const CLOSED: SmtpReply = { code: 0, text: '(connection closed)', lines: [] };

export interface SmtpSessionOptions extends ConnectOptions {
  /** EHLO name sent right after a 220 greeting (default 'client.mailprobe.test'); false: send no EHLO. */
  ehlo?: string | false;
}

export interface SmtpSession {
  /** The banner (e.g. code 220, or 554 when the client is refused at CONNECT). */
  greeting: SmtpReply;
  /** The answer to the automatic EHLO (absent when the greeting was not 220 or ehlo was false). */
  ehloReply?: SmtpReply;
  readonly transcript: string[];
  /** Sends one command line, returns the (multi-line) reply. */
  cmd(line: string): Promise<SmtpReply>;
  ehlo(name?: string): Promise<SmtpReply>;
  /** AUTH PLAIN with the initial response. */
  authPlain(user: string, password: string): Promise<SmtpReply>;
  mailFrom(address: string, params?: string): Promise<SmtpReply>;
  rcptTo(address: string): Promise<SmtpReply>;
  /** DATA, and if 354 the message (dot-stuffed, CRLF) and the final dot; returns the final reply (or the DATA reply if not 354). */
  data(message: string): Promise<SmtpReply>;
  /** RSET */
  rset(): Promise<SmtpReply>;
  /** QUIT (waits briefly for 221), then closes. */
  quit(): Promise<void>;
  /** Closes without QUIT. */
  close(): void;
}

async function readSmtpReply(c: LineConnection, timeoutMs?: number): Promise<SmtpReply> {
  const lines: string[] = [];
  for (;;) {
    const line = await c.readLine(timeoutMs);
    if (line === null) return lines.length ? { code: 0, text: lines.join('\n'), lines } : CLOSED;
    lines.push(line);
    // "250-..." continues, "250 ..." (or a bare "250") ends the reply.
    if (/^\d{3}(?: |$)/.test(line)) {
      return { code: Number(line.slice(0, 3)), text: lines.join('\n'), lines };
    }
    if (!/^\d{3}-/.test(line)) return { code: 0, text: lines.join('\n'), lines };
  }
}

/** Connects, reads the greeting and (if 220) sends EHLO. Call quit() or close() when done. */
export async function smtpSession(opts: SmtpSessionOptions): Promise<SmtpSession> {
  const c = await LineConnection.open(opts);
  try {
    const greeting = await readSmtpReply(c);
    const cmd = async (line: string, logAs?: string): Promise<SmtpReply> => {
      if (c.isClosed) return CLOSED;
      c.writeLine(line, logAs);
      return readSmtpReply(c);
    };
    const session: SmtpSession = {
      greeting,
      transcript: c.transcript,
      cmd: (line) => cmd(line),
      ehlo: (name = 'client.mailprobe.test') => cmd(`EHLO ${name}`),
      authPlain: (user, password) =>
        cmd(`AUTH PLAIN ${Buffer.from(`\0${user}\0${password}`, 'utf8').toString('base64')}`, `AUTH PLAIN <${user}>`),
      mailFrom: (address, params) => cmd(`MAIL FROM:<${address}>${params ? ` ${params}` : ''}`),
      rcptTo: (address) => cmd(`RCPT TO:<${address}>`),
      async data(message) {
        const r = await cmd('DATA');
        if (r.code !== 354) return r;
        const body = message
          .replace(/\r?\n/g, '\r\n')
          .split('\r\n')
          .map((l) => (l.startsWith('.') ? `.${l}` : l))
          .join('\r\n');
        c.writeRaw(`${body}${body.endsWith('\r\n') ? '' : '\r\n'}.\r\n`);
        return readSmtpReply(c);
      },
      rset: () => cmd('RSET'),
      async quit() {
        try {
          if (!c.isClosed) {
            c.writeLine('QUIT');
            await readSmtpReply(c, 2_000).catch(() => CLOSED);
          }
        } finally {
          c.destroy();
        }
      },
      close: () => c.destroy(),
    };
    if (greeting.code === 220 && opts.ehlo !== false) {
      session.ehloReply = await session.ehlo(opts.ehlo === undefined ? undefined : opts.ehlo);
    }
    return session;
  } catch (e) {
    c.destroy();
    throw e;
  }
}

export interface SendMailOptions extends SmtpSessionOptions {
  auth?: { user: string; pass: string };
  from: string;
  to: string[];
  /** Message body; headers (From, To, Subject, Date, Message-ID) are added unless `raw` is given. */
  body?: string;
  subject?: string;
  /** Extra header lines, e.g. { 'X-Test': '1' }. */
  headers?: Record<string, string>;
  /** The whole message, sent as is (no headers added). */
  raw?: string;
  /** Go on with the next recipients (and DATA if any was accepted) after a refused RCPT. Default false. */
  continueAfterRcptFailure?: boolean;
}

export interface SendMailResult {
  greeting: SmtpReply;
  ehlo?: SmtpReply;
  auth?: SmtpReply;
  mail?: SmtpReply;
  rcpts: SmtpReply[];
  data?: SmtpReply;
  /** True when the message was accepted (final 250 after the data). */
  ok: boolean;
  transcript: string[];
}

let messageCounter = 0;

export function buildMessage(opts: {
  from: string;
  to: string[];
  subject?: string;
  body?: string;
  headers?: Record<string, string>;
}): string {
  messageCounter += 1;
  const id = `${Date.now().toString(36)}.${process.pid}.${messageCounter}@client.mailprobe.test`;
  const headers = [
    `From: <${opts.from}>`,
    `To: ${opts.to.map((t) => `<${t}>`).join(', ')}`,
    `Subject: ${opts.subject ?? 'mailwarden e2e test'}`,
    `Date: ${new Date().toUTCString().replace('GMT', '+0000')}`,
    `Message-ID: <${id}>`,
    ...Object.entries(opts.headers ?? {}).map(([k, v]) => `${k}: ${v}`),
  ];
  return `${headers.join('\r\n')}\r\n\r\n${opts.body ?? 'Hello from the mailwarden end-to-end tests.\r\n'}`;
}

/** One whole SMTP transaction; stops at the first failing stage and always closes the connection. */
export async function sendMail(opts: SendMailOptions): Promise<SendMailResult> {
  const s = await smtpSession(opts);
  const res: SendMailResult = { greeting: s.greeting, rcpts: [], ok: false, transcript: s.transcript };
  try {
    if (s.greeting.code !== 220) return res;
    if (s.ehloReply) {
      res.ehlo = s.ehloReply;
      if (s.ehloReply.code !== 250) return res;
    }
    if (opts.auth) {
      res.auth = await s.authPlain(opts.auth.user, opts.auth.pass);
      if (res.auth.code !== 235) return res;
    }
    res.mail = await s.mailFrom(opts.from);
    if (res.mail.code !== 250) return res;
    let accepted = 0;
    for (const to of opts.to) {
      const r = await s.rcptTo(to);
      res.rcpts.push(r);
      if (r.code === 250 || r.code === 251) accepted += 1;
      else if (!opts.continueAfterRcptFailure) return res;
    }
    if (accepted === 0) return res;
    res.data = await s.data(opts.raw ?? buildMessage(opts));
    res.ok = res.data.code === 250;
    return res;
  } finally {
    await s.quit().catch(() => undefined);
  }
}

/**
 * A user sends a message through submission (SMTP AUTH) from `localAddress`, and it is accepted and lands in
 * the recipient's mailbox: what a user who must not be affected does.
 */
export async function mailArrives(
  stack: Pick<MailStack, 'ports' | 'waitForMail'>,
  localAddress: string,
  from: MailUser,
  to: MailUser,
  subject: string,
): Promise<void> {
  const sent = await sendMail({
    port: stack.ports.submission,
    localAddress,
    auth: { user: from.user, pass: from.password },
    from: from.user,
    to: [to.user],
    subject,
  });
  assert.equal(sent.ok, true, sent.transcript.join('\n'));
  const box = await stack.waitForMail(to.user.split('@')[0] as string, 1);
  assert.ok(box.some((m) => m.includes(`Subject: ${subject}`)));
}
