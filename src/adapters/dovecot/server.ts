/*
 * adapters/dovecot/server — the HTTP endpoint Dovecot's auth policy client
 * calls (`auth_policy_server_url = http://127.0.0.1:10032/dovecot/policy`):
 * `POST ?command=allow` before (and after) the password check, and
 * `POST ?command=report` with the result.
 *
 * Contract: answer within the budget (default 500 ms, well inside Dovecot's
 * 2 s timeout) or answer `{"status":0}` and count the miss. Dovecot fails open
 * on any error, so a broken request gets a 400 with a clear message and the
 * login goes on; the daemon never crashes on input.
 *
 * Trust: with `dovecot.api_header` set, requests without that exact header
 * (Dovecot's auth_policy_server_api_header) get a bare 401. `pwhash` is never
 * logged.
 *
 * Plain node:http, not fastify: one route with one JSON body, and the
 * framework's per-request work measurably cost more than deciding
 * (`npm run bench`, phase 4).
 *
 * Abuse: bodies are capped (`maxBody`), headers and whole requests timed out
 * (a chunked body of size ffffffffffffffff trickled forever), a request
 * answered before its body was read closes the connection instead of draining
 * it, connections are capped per listener and per peer (adapters/caps), and
 * the repeat memo is bounded by bytes. node:http itself stops reading a
 * pipelining connection whose answers are not read. Problems are logged
 * throttled per kind (log.ts).
 */
import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { ListenTarget } from '../../config/schema.js';
import { Memo } from '../../engine/memo.js';
import type { Decision, MailEvent } from '../../engine/types.js';
import { listenOn } from '../../listen.js';
import { ThrottledLog, type ThrottleOptions } from '../../log.js';
import { withinBudget, type Evaluate } from '../budget.js';
import { ConnectionCaps, refusalMessage, type ConnectionLimits, type ConnectionStats } from '../caps.js';
import {
  ALLOW_REPLY,
  toEvent,
  toReply,
  type DovecotCommand,
  type DovecotReply,
  type DovecotRequest,
} from './translate.js';

export interface DovecotServerOptions {
  evaluate: Evaluate;
  logger: Logger;
  now: () => number;
  budgetMs: number;
  maxDelayMs: number;
  smtpMaxDelayMs: number;
  apiHeader: { name: string; value: string } | undefined;
  /** An allow identical to the one before it in the same session, within this window, gets its answer (the after-auth check). */
  repeatWindowMs: number;
  limits: ConnectionLimits;
  /** Time to receive a request's headers, and the whole request. */
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  /** The largest body accepted, in bytes. */
  maxBody: number;
  /** How often each kind of problem is logged (default: 5 lines per 10 s). */
  logThrottle?: ThrottleOptions;
}

export interface DovecotStats {
  requests: number;
  allows: number;
  /** Allows answered from the identical one before them in the same session (after-auth checks). */
  repeats: number;
  reports: number;
  refused: number;
  delayed: number;
  budgetMisses: number;
  errors: number;
  badRequests: number;
  unauthorized: number;
}

export const DOVECOT_PATH = '/dovecot/policy';

interface Answer {
  status: number;
  body: object;
}
/** Sessions whose last allow is remembered; an after-auth check follows its before-auth one by one password check. */
const REPEAT_MEMO = 4096;
/** The bytes those bodies may weigh together (Dovecot's are ~300 bytes; 4,096 of 60 KB once held 1.25 GB). */
export const REPEAT_MEMO_BYTES = 8 * 1024 * 1024;
/** What one remembered allow weighs besides its body: the key, the entry, the answer. */
const ENTRY_BYTES = 200;
/** Idle keep-alive connections are closed after this (Dovecot's HTTP client keeps them for less). */
const KEEP_ALIVE_MS = 65_000;

const JSON_TYPE = 'application/json; charset=utf-8';
// Most answers (every report, and most allows) are this one: serialized once.
const ALLOW_TEXT = JSON.stringify(ALLOW_REPLY);

// Header lists as flat arrays (name, value, …): no object to walk per answer.
const ALLOW_HEADERS = ['content-type', JSON_TYPE, 'content-length', String(Buffer.byteLength(ALLOW_TEXT))];

// Each refusal's and delay's reply is one shared object (dovecot/translate.ts): serialized once.
const SERIALIZED = new WeakMap<object, { text: string; length: string }>();

// Bodies are strings: node:http joins a string body to the headers and writes once, where a
// Buffer body goes out as a second chunk through writev (measured ~5% more logins/s).
function send(res: ServerResponse, status: number, body: object, close = false): void {
  if (body === ALLOW_REPLY) {
    res.writeHead(status, ALLOW_HEADERS);
    res.end(ALLOW_TEXT);
    return;
  }
  let made = SERIALIZED.get(body);
  if (made === undefined) {
    const json = JSON.stringify(body);
    SERIALIZED.set(body, (made = { text: json, length: String(Buffer.byteLength(json)) }));
  }
  const text = made.text;
  const headers = ['content-type', JSON_TYPE, 'content-length', made.length];
  if (close) headers.push('connection', 'close');
  res.writeHead(status, headers);
  res.end(text);
}

/** An answer given before the body was read: the connection closes after it, rather than drain a body of any size. */
function refuse(res: ServerResponse, status: number, error: string): void {
  send(res, status, { error }, true);
}

/** The `command` query parameter (Dovecot appends `?command=…`, or `&command=…` after its own query). */
function commandOf(url: string, q: number): string | null {
  if (q < 0) return null;
  const at = url.indexOf('command=', q);
  if (at < 0 || (url[at - 1] !== '?' && url[at - 1] !== '&')) return null;
  const end = url.indexOf('&', at);
  return decodeURIComponent(url.slice(at + 8, end < 0 ? undefined : end));
}

function sameSecret(given: string | string[] | undefined, want: string): boolean {
  if (typeof given !== 'string') return false;
  const a = Buffer.from(given.trim());
  const b = Buffer.from(want);
  return a.length === b.length && timingSafeEqual(a, b);
}

export class DovecotPolicyServer {
  readonly stats: DovecotStats & ConnectionStats = {
    requests: 0,
    allows: 0,
    repeats: 0,
    reports: 0,
    refused: 0,
    delayed: 0,
    budgetMisses: 0,
    errors: 0,
    badRequests: 0,
    unauthorized: 0,
    connectionsOpen: 0,
    connectionsRefused: 0,
    peerConnectionsRefused: 0,
  };
  private readonly servers: Server[] = [];
  private readonly o: DovecotServerOptions;
  private readonly log: ThrottledLog;
  private readonly caps: ConnectionCaps;
  /** Session id → its last allow (the exact body) and the answer, until the session's report. */
  readonly lastAllow = new Memo<string, { text: string; at: number; reply: DovecotReply }>(
    REPEAT_MEMO,
    REPEAT_MEMO_BYTES,
  );

  constructor(o: DovecotServerOptions) {
    this.o = o;
    this.log = new ThrottledLog(o.logger, o.logThrottle);
    this.caps = new ConnectionCaps(o.limits, this.stats, (why, peer) =>
      this.log.warn(why, { adapter: 'dovecot', peer }, refusalMessage(why, o.limits)),
    );
  }

  /** Logs bad input throttled per kind, so a misconfigured Dovecot or a fuzzer cannot flood the log. */
  private warn(kind: string, obj: object, msg: string): void {
    this.log.warn(kind, { adapter: 'dovecot', ...obj }, msg);
  }

  build(): Server {
    const server = createServer(
      {
        keepAliveTimeout: KEEP_ALIVE_MS,
        headersTimeout: this.o.headersTimeoutMs,
        requestTimeout: this.o.requestTimeoutMs,
        // node checks both timeouts only this often (30 s by default): a quarter of the shorter, at most 1 s.
        connectionsCheckingInterval: Math.max(25, Math.min(1000, Math.floor(this.o.headersTimeoutMs / 4))),
      },
      (req, res) => this.handle(req, res),
    );
    // A connection that makes no progress at all (a peer that neither sends nor reads its answers).
    server.timeout = KEEP_ALIVE_MS + this.o.requestTimeoutMs;
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      const peer = socket.remoteAddress;
      if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT')
        this.warn('timeout', { peer }, 'closing a connection: the request took too long to arrive');
      else if (err.code !== 'ECONNRESET')
        this.warn(
          'bad-http',
          { peer, code: err.code },
          `closing a connection: malformed HTTP (${err.code ?? err.message})`,
        );
      socket.destroy();
    });
    this.caps.watch(server);
    server.on('connection', (socket: Socket) => {
      const key = this.caps.admit(socket);
      if (key !== undefined) socket.once('close', () => this.caps.release(key));
    });
    return server;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const peer = req.socket.remoteAddress;
    if (path !== DOVECOT_PATH || req.method !== 'POST') {
      this.stats.badRequests++;
      this.warn('no-route', { peer, path, method: req.method }, `no such route: ${req.method ?? ''} ${path}`);
      refuse(res, 404, `not found; Dovecot posts to ${DOVECOT_PATH}`);
      return;
    }
    const header = this.o.apiHeader;
    if (header && !sameSecret(req.headers[header.name], header.value)) {
      this.stats.unauthorized++;
      this.warn(
        'unauthorized',
        { peer },
        `request without the right ${header.name} header refused (check auth_policy_server_api_header)`,
      );
      refuse(res, 401, 'unauthorized');
      return;
    }
    const maxBody = this.o.maxBody;
    const tooLarge = (): void => {
      this.stats.badRequests++;
      this.warn('body-too-large', { peer }, `request body over ${maxBody} bytes`);
      refuse(res, 413, `the body is larger than ${maxBody} bytes`);
    };
    if (Number(req.headers['content-length'] ?? 0) > maxBody) {
      tooLarge();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      if (res.headersSent) return;
      size += c.length;
      if (size > maxBody) {
        tooLarge();
        chunks.length = 0;
        return;
      }
      chunks.push(c);
    });
    req.on('error', () => undefined);
    req.on('end', () => {
      if (res.headersSent) return;
      this.stats.requests++;
      let command: string | null;
      try {
        command = commandOf(url, q);
      } catch {
        command = null;
      }
      const reply = this.request(command, chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks), peer);
      if (!(reply instanceof Promise)) send(res, reply.status, reply.body);
      else void reply.then((r) => send(res, r.status, r.body));
    });
  }

  /** One request body → one answer; never throws. */
  private request(command: string | null, raw: Buffer, peer: string | undefined): Answer | Promise<Answer> {
    const bad = (problem: string): Answer => {
      this.stats.badRequests++;
      this.warn('bad-request', { peer }, `bad request: ${problem}`);
      return { status: 400, body: { error: problem } };
    };
    if (command !== 'allow' && command !== 'report')
      return bad('command must be allow or report (Dovecot appends ?command=…)');
    const now = this.o.now();
    const text = raw.toString('utf8');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (err) {
      return bad(`the body is not valid JSON: ${(err as Error).message}`);
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return bad('the body must be a JSON object');
    // Dovecot's after-auth check repeats the allow of the same attempt byte for byte: the same question, and
    // checks charge nothing, so it gets the same answer (before translating: the body was valid the first time).
    // Only within one session (IMAP/POP3: Postfix's SASL requests carry no session id, and two logins must
    // never share an answer) and until the report ends the attempt, so a ban or suspension made since holds.
    const sid = (body as DovecotRequest).session_id;
    const session = typeof sid === 'string' && this.o.repeatWindowMs > 0 ? sid : '';
    if (session !== '' && command === 'allow') {
      const last = this.lastAllow.get(session);
      if (last !== undefined && last.text === text && now - last.at < this.o.repeatWindowMs) {
        this.stats.allows++;
        this.stats.repeats++;
        return { status: 200, body: last.reply };
      }
    }
    const t = toEvent(command, body as DovecotRequest, now);
    if (!t.ok) return bad(t.problem);
    if (session !== '' && command === 'report') this.lastAllow.delete(session);
    const r = this.answer(command, t.event, session, text);
    return r instanceof Promise ? r.then((x) => ({ status: 200, body: x })) : { status: 200, body: r };
  }

  private answer(
    command: DovecotCommand,
    event: MailEvent,
    session: string,
    text: string,
  ): DovecotReply | Promise<DovecotReply> {
    if (command === 'allow') this.stats.allows++;
    else this.stats.reports++;
    let d: Decision | Promise<Decision>;
    try {
      d = this.o.evaluate(event);
    } catch (err) {
      return this.failed(err, event.ip);
    }
    if (!(d instanceof Promise)) return this.reply(command, event, d, session, text);
    return withinBudget(d, this.o.budgetMs).then(
      (late) => {
        if (late !== undefined) return this.reply(command, event, late, session, text);
        this.stats.budgetMisses++;
        this.warn(
          'budget-miss',
          { ip: event.ip, budgetMs: this.o.budgetMs },
          'decision missed the budget; answered status 0',
        );
        return ALLOW_REPLY;
      },
      (err: unknown) => this.failed(err, event.ip),
    );
  }

  private reply(command: DovecotCommand, event: MailEvent, d: Decision, session: string, text: string): DovecotReply {
    // Dovecot does not read the answer to a report; its effects (bans) are what matter.
    if (command === 'report') return ALLOW_REPLY;
    const r = toReply(d, event.protocol, this.o);
    if (session !== '') this.lastAllow.set(session, { text, at: event.time, reply: r }, text.length + ENTRY_BYTES);
    if (r.status < 0) this.stats.refused++;
    else if (r.status > 0) this.stats.delayed++;
    return r;
  }

  private failed(err: unknown, ip: string): DovecotReply {
    this.stats.errors++;
    this.log.error('decision-failed', { err, adapter: 'dovecot', ip }, 'decision failed; answered status 0');
    return ALLOW_REPLY;
  }

  async start(targets: readonly ListenTarget[]): Promise<string[]> {
    const bound: string[] = [];
    for (const t of targets) {
      const server = this.build();
      bound.push(await listenOn(server, t));
      this.servers.push(server);
    }
    return bound;
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.servers.map(
        (s) =>
          new Promise<void>((resolve) => {
            s.close(() => resolve());
            s.closeAllConnections();
          }),
      ),
    );
    this.servers.length = 0;
    this.log.flush();
  }
}
