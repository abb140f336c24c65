/*
 * adapters/postfix/server — the policy service Postfix's smtpd talks to
 * (`check_policy_service inet:127.0.0.1:10031` or `unix:…`).
 *
 * Contract: every complete request gets exactly one answer, in order, and
 * fast. If the engine or store has not answered within the budget (default
 * 100 ms) the answer is `DUNNO` and the miss is counted: Postfix fails closed
 * (451 4.3.5) when its policy service is slow or down, so our failure must
 * never become the mail server's outage.
 *
 * Bad input: a line over the limit closes the connection (framing is lost);
 * a malformed request is answered `DUNNO`; idle connections are closed after
 * `idleTimeoutMs` (Postfix's own max_idle is 300 s, so the default is longer);
 * TCP keep-alive reaps half-open peers. Each problem is logged once per
 * connection, and each kind at most a few times per interval (log.ts).
 * Nothing a client sends can throw out of this module.
 *
 * Abuse: connections are capped per listener and per peer (adapters/caps).
 * A connection whose answers are not being read stops being read itself
 * (backpressure): a client that pipelines without reading once grew the
 * daemon by 20 MB/s.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import type { Logger } from 'pino';
import type { ListenTarget } from '../../config/schema.js';
import type { Decision, MailEvent } from '../../engine/types.js';
import { listenOn } from '../../listen.js';
import { ThrottledLog, type ThrottleOptions } from '../../log.js';
import { withinBudget, type Evaluate } from '../budget.js';
import { ConnectionCaps, refusalMessage, type ConnectionLimits, type ConnectionStats } from '../caps.js';
import { ACCEPT_PAUSED, adopt, canAdopt, type OnBytes } from '../read-buffer.js';
import { FramingError, PolicyParser, type PolicyAttributes } from './parse.js';
import { RepeatMemo } from './repeats.js';
import { policyReply, toEvent } from './translate.js';

export interface PostfixServerOptions {
  evaluate: Evaluate;
  logger: Logger;
  now: () => number;
  budgetMs: number;
  idleTimeoutMs: number;
  maxLine: number;
  maxAttributes: number;
  /** Identical repeats within this window get the first answer and are not counted again. */
  repeatWindowMs: number;
  limits: ConnectionLimits;
  /** How often each kind of problem is logged (default: 5 lines per 10 s). */
  logThrottle?: ThrottleOptions;
  /** false: read through 'data' events even where the shared read buffer works (tests cover both). */
  sharedReadBuffer?: boolean;
  /**
   * Puts the client's DNSBL listing on the event (dns/dnsbl.ts): at once from its cache, or a promise that
   * resolves when the answer is there or its own wait (well inside the budget) is over. Never rejects.
   */
  listing?: (event: MailEvent) => Promise<void> | undefined;
}

export interface PostfixStats {
  connections: number;
  requests: number;
  repeats: number;
  /** Answered DUNNO because the decision missed the budget. */
  budgetMisses: number;
  /** Answered DUNNO because the engine or store failed. */
  errors: number;
  badRequests: number;
  /** Connections closed for a framing violation (over-long line). */
  framingErrors: number;
  idleClosed: number;
  /** Times a connection stopped being read because its answers were not (backpressure). */
  readPauses: number;
}

const DUNNO = 'action=DUNNO\n\n';
/** Answer bytes not yet taken by the kernel past which a connection is no longer read, and under which it is again. */
const MAX_UNSENT = 64 * 1024;
const RESUME_UNSENT = 16 * 1024;
/** Decisions in flight on one connection past which it is no longer read (a slow store, a pipelining client). */
const MAX_IN_FLIGHT = 1024;
// Most answers are this one: written as bytes, it skips encoding a string per request.
const DUNNO_BYTES = Buffer.from(DUNNO);

export class PostfixPolicyServer {
  readonly stats: PostfixStats & ConnectionStats = {
    connections: 0,
    requests: 0,
    repeats: 0,
    budgetMisses: 0,
    errors: 0,
    badRequests: 0,
    framingErrors: 0,
    idleClosed: 0,
    readPauses: 0,
    connectionsOpen: 0,
    connectionsRefused: 0,
    peerConnectionsRefused: 0,
  };
  private readonly servers: Server[] = [];
  private readonly sockets = new Set<Socket>();
  private readonly outbox = new Outbox();
  private readonly o: PostfixServerOptions;
  private readonly log: ThrottledLog;
  private readonly caps: ConnectionCaps;

  constructor(o: PostfixServerOptions) {
    this.o = o;
    this.log = new ThrottledLog(o.logger, o.logThrottle);
    this.caps = new ConnectionCaps(o.limits, this.stats, (why, peer) =>
      this.log.warn(why, { adapter: 'postfix', peer }, refusalMessage(why, o.limits)),
    );
  }

  /** Answer bytes waiting on every connection: queued in node, or not yet flushed (tests watch it stay bounded). */
  unsentBytes(): number {
    let n = 0;
    for (const s of this.sockets) n += s.writableLength;
    return n + this.outbox.pending();
  }

  /** Starts listening on every target; returns the bound addresses. */
  async start(targets: readonly ListenTarget[]): Promise<string[]> {
    const bound: string[] = [];
    for (const t of targets) {
      const server = createServer(ACCEPT_PAUSED, (raw) => this.serve(raw));
      this.caps.watch(server);
      bound.push(await listenOn(server, t));
      // Only once listening: a failure to listen is the caller's to report (one line, daemon.ts), not a logged stack.
      server.on('error', (err) => this.o.logger.error({ err }, 'postfix policy listener error'));
      this.servers.push(server);
    }
    return bound;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    this.servers.length = 0;
    this.log.flush();
  }

  private serve(raw: Socket): void {
    const key = this.caps.admit(raw);
    if (key === undefined) return;
    this.stats.connections++;
    const peer = raw.remoteAddress ? `${raw.remoteAddress}:${raw.remotePort}` : 'unix';
    const parser = new PolicyParser({ maxLine: this.o.maxLine, maxAttributes: this.o.maxAttributes });
    let warned = false;
    const warnOnce: Warn = (kind, msg) => {
      if (warned) return;
      warned = true;
      this.log.warn(kind, { adapter: 'postfix', peer }, msg);
    };
    // Answers leave in request order even when a slow decision is followed by a fast one:
    // ready answers go to the outbox at once, pending ones queue behind a chain.
    const repeats = new RepeatMemo(this.o.repeatWindowMs);
    let chain: Promise<void> = Promise.resolve();
    let pending = 0;
    // A read that ends with a line ends with a whole character: it is decoded as it is. Only
    // one cut inside a line goes through the decoder, which keeps a split character's bytes.
    // (Reads start on a later turn of the event loop, after the socket is set up below.)
    const decoder = new StringDecoder('utf8');
    let cut = false;
    const onBytes: OnBytes = (n, buf) => {
      let chunk: string;
      if (!cut && buf[n - 1] === 10) chunk = buf.toString('utf8', 0, n);
      else {
        chunk = decoder.write(buf.subarray(0, n));
        cut = buf[n - 1] !== 10;
      }
      let items;
      try {
        items = parser.push(chunk);
      } catch (err) {
        if (!(err instanceof FramingError)) throw err;
        this.stats.framingErrors++;
        warnOnce('framing', `closing connection: ${err.message}`);
        socket.destroy();
        return;
      }
      for (const item of items) {
        this.stats.requests++;
        let reply: string | Promise<string>;
        if (item.ok) reply = this.answer(item.attrs, repeats, warnOnce);
        else {
          this.stats.badRequests++;
          warnOnce('bad-request', `bad request answered DUNNO: ${item.problem}`);
          reply = DUNNO;
        }
        if (typeof reply === 'string' && pending === 0) {
          this.outbox.send(out, reply);
          continue;
        }
        pending++;
        const answered = reply;
        chain = chain
          .then(() => answered)
          .then((r) => {
            pending--;
            this.outbox.send(out, r);
          });
      }
      // Per read, not per request: stop reading a peer that does not read its answers.
      if (pending > MAX_IN_FLIGHT || out.text.length + socket.writableLength > MAX_UNSENT) pause();
    };
    const socket = adopt(raw, onBytes, this.o.sharedReadBuffer !== false && canAdopt(raw));
    const out: Outgoing = { socket, text: '', resume: undefined };
    const resume = (): void => {
      if (out.text.length + socket.writableLength > RESUME_UNSENT || pending > MAX_IN_FLIGHT / 2) return;
      out.resume = undefined;
      socket.off('drain', resume);
      if (!socket.destroyed) socket.resume();
    };
    const pause = (): void => {
      if (out.resume !== undefined) return;
      this.stats.readPauses++;
      socket.pause();
      // Checked again when the outbox has written, when node's queue drains, and as decisions come in.
      out.resume = resume;
      socket.on('drain', resume);
    };
    this.sockets.add(socket);
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    socket.setTimeout(this.o.idleTimeoutMs, () => {
      this.stats.idleClosed++;
      if (parser.buffered > 0) warnOnce('idle-incomplete', 'closing idle connection with an incomplete request');
      socket.destroy();
    });
    socket.on('error', (err) => this.o.logger.debug({ err, adapter: 'postfix', peer }, 'postfix connection error'));
    socket.on('close', () => {
      this.sockets.delete(socket);
      this.caps.release(key);
    });
  }

  /** One request → one `action=…` reply: at once when the decision is synchronous; never rejects. */
  private answer(attrs: PolicyAttributes, repeats: RepeatMemo, warnOnce: Warn): string | Promise<string> {
    const now = this.o.now();
    const memo = RepeatMemo.applies(attrs) ? repeats : undefined;
    const seen = memo?.get(attrs, now);
    if (seen !== undefined) {
      this.stats.repeats++;
      return seen;
    }
    const t = toEvent(attrs, now);
    if (!t.ok) {
      this.stats.badRequests++;
      warnOnce('bad-request', `request answered DUNNO: ${t.problem}`);
      return DUNNO;
    }
    let d: Decision | Promise<Decision>;
    try {
      const event = t.event;
      const waiting = this.o.listing?.(event);
      d = waiting === undefined ? this.o.evaluate(event) : waiting.then(() => this.o.evaluate(event));
    } catch (err) {
      return this.failed(err, t.event.ip);
    }
    if (!(d instanceof Promise)) return this.reply(memo, attrs, now, d);
    const ip = t.event.ip;
    return withinBudget(d, this.o.budgetMs).then(
      (late) => {
        if (late !== undefined) return this.reply(memo, attrs, now, late);
        this.stats.budgetMisses++;
        this.log.warn(
          'budget-miss',
          { adapter: 'postfix', ip, budgetMs: this.o.budgetMs },
          'decision missed the budget; answered DUNNO',
        );
        return DUNNO;
      },
      (err: unknown) => this.failed(err, ip),
    );
  }

  private reply(memo: RepeatMemo | undefined, attrs: PolicyAttributes, now: number, d: Decision): string {
    const reply = d.action === 'allow' ? DUNNO : policyReply(d);
    memo?.set(attrs, now, reply);
    return reply;
  }

  private failed(err: unknown, ip: string): string {
    this.stats.errors++;
    this.log.error('decision-failed', { err, adapter: 'postfix', ip }, 'decision failed; answered DUNNO');
    return DUNNO;
  }
}

/** Logs one problem of a connection: the first only, and each kind throttled. */
type Warn = (kind: string, msg: string) => void;

interface Outgoing {
  socket: Socket;
  /** Answers not yet written. */
  text: string;
  /** Set while the connection is not read (backpressure): called after its answers were written. */
  resume: (() => void) | undefined;
}

/**
 * Answers wait for the end of the event loop's I/O phase, then leave in one
 * burst, one write per connection: the peers are woken once a burst, not
 * once an answer (measured ~12% more requests/s on loopback at no cost in
 * p99). A connection's answers keep their order: all of them pass here.
 */
class Outbox {
  private readonly dirty: Outgoing[] = [];
  private scheduled = false;

  send(o: Outgoing, text: string): void {
    if (o.text === '') {
      this.dirty.push(o);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(this.flush);
      }
    }
    o.text += text;
  }

  /** Characters waiting for the next burst. */
  pending(): number {
    let n = 0;
    for (const o of this.dirty) n += o.text.length;
    return n;
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    for (const o of this.dirty) {
      const text = o.text;
      o.text = '';
      if (!o.socket.destroyed && o.socket.writable) o.socket.write(text === DUNNO ? DUNNO_BYTES : text);
      if (o.resume !== undefined) o.resume();
    }
    this.dirty.length = 0;
  };
}
