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
 */
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { ListenTarget } from '../../config/schema.js';
import type { Decision, MailEvent } from '../../engine/types.js';
import { prepareUnixSocket } from '../../listen.js';
import { withinBudget, type Evaluate } from '../budget.js';
import { ALLOW_REPLY, toEvent, toReply, type DovecotCommand, type DovecotReply, type DovecotRequest } from './translate.js';

export interface DovecotServerOptions {
  evaluate: Evaluate;
  logger: Logger;
  now: () => number;
  budgetMs: number;
  maxDelayMs: number;
  smtpMaxDelayMs: number;
  apiHeader: { name: string; value: string } | undefined;
}

export interface DovecotStats {
  requests: number;
  allows: number;
  reports: number;
  refused: number;
  delayed: number;
  budgetMisses: number;
  errors: number;
  badRequests: number;
  unauthorized: number;
}

export const DOVECOT_PATH = '/dovecot/policy';
const WARN_EVERY_MS = 10_000;

function sameSecret(given: string | string[] | undefined, want: string): boolean {
  if (typeof given !== 'string') return false;
  const a = Buffer.from(given.trim());
  const b = Buffer.from(want);
  return a.length === b.length && timingSafeEqual(a, b);
}

export class DovecotPolicyServer {
  readonly stats: DovecotStats = {
    requests: 0,
    allows: 0,
    reports: 0,
    refused: 0,
    delayed: 0,
    budgetMisses: 0,
    errors: 0,
    badRequests: 0,
    unauthorized: 0,
  };
  private readonly apps: FastifyInstance[] = [];
  private readonly o: DovecotServerOptions;
  private lastWarn = 0;

  constructor(o: DovecotServerOptions) {
    this.o = o;
  }

  /** Logs bad input at most once per 10 s, so a misconfigured Dovecot cannot flood the log. */
  private warn(obj: object, msg: string): void {
    const now = this.o.now();
    if (now - this.lastWarn < WARN_EVERY_MS) return;
    this.lastWarn = now;
    this.o.logger.warn({ adapter: 'dovecot', ...obj }, msg);
  }

  build(): FastifyInstance {
    const app = Fastify({ logger: false, bodyLimit: 64 * 1024, keepAliveTimeout: 65_000 });
    const header = this.o.apiHeader;
    if (header) {
      app.addHook('onRequest', async (req, reply) => {
        if (!sameSecret(req.headers[header.name], header.value)) {
          this.stats.unauthorized++;
          this.warn({ peer: req.ip }, `request without the right ${header.name} header refused (check auth_policy_server_api_header)`);
          await reply.code(401).send({ error: 'unauthorized' });
        }
      });
    }
    app.setErrorHandler((err: Error & { statusCode?: number }, req, reply) => {
      const code = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
      if (code === 500) this.stats.errors++;
      else this.stats.badRequests++;
      this.warn({ peer: req.ip, status: code }, `bad request: ${err.message}`);
      void reply.code(code).send({ error: code === 500 ? 'internal error' : err.message });
    });
    app.post<{ Querystring: { command?: string }; Body: unknown }>(DOVECOT_PATH, async (req, reply) => {
      this.stats.requests++;
      const command = req.query.command;
      if (command !== 'allow' && command !== 'report') {
        this.stats.badRequests++;
        this.warn({ peer: req.ip }, `unknown command ${JSON.stringify(command)}`);
        return reply.code(400).send({ error: 'command must be allow or report (Dovecot appends ?command=…)' });
      }
      const body = req.body;
      if (typeof body !== 'object' || body === null || Array.isArray(body)) {
        this.stats.badRequests++;
        this.warn({ peer: req.ip }, 'request body is not a JSON object');
        return reply.code(400).send({ error: 'the body must be a JSON object' });
      }
      const t = toEvent(command, body as DovecotRequest, this.o.now());
      if (!t.ok) {
        this.stats.badRequests++;
        this.warn({ peer: req.ip }, `bad request: ${t.problem}`);
        return reply.code(400).send({ error: t.problem });
      }
      return this.answer(command, t.event);
    });
    return app;
  }

  private answer(command: DovecotCommand, event: MailEvent): DovecotReply | Promise<DovecotReply> {
    if (command === 'allow') this.stats.allows++;
    else this.stats.reports++;
    let d: Decision | Promise<Decision>;
    try {
      d = this.o.evaluate(event);
    } catch (err) {
      return this.failed(err, event.ip);
    }
    if (!(d instanceof Promise)) return this.reply(command, event, d);
    return withinBudget(d, this.o.budgetMs).then(
      (late) => {
        if (late !== undefined) return this.reply(command, event, late);
        this.stats.budgetMisses++;
        this.o.logger.warn({ adapter: 'dovecot', ip: event.ip, budgetMs: this.o.budgetMs }, 'decision missed the budget; answered status 0');
        return ALLOW_REPLY;
      },
      (err: unknown) => this.failed(err, event.ip),
    );
  }

  private reply(command: DovecotCommand, event: MailEvent, d: Decision): DovecotReply {
    // Dovecot does not read the answer to a report; its effects (bans) are what matter.
    if (command === 'report') return ALLOW_REPLY;
    const r = toReply(d, event.protocol, this.o);
    if (r.status < 0) this.stats.refused++;
    else if (r.status > 0) this.stats.delayed++;
    return r;
  }

  private failed(err: unknown, ip: string): DovecotReply {
    this.stats.errors++;
    this.o.logger.error({ err, adapter: 'dovecot', ip }, 'decision failed; answered status 0');
    return ALLOW_REPLY;
  }

  async start(targets: readonly ListenTarget[]): Promise<string[]> {
    const bound: string[] = [];
    for (const t of targets) {
      const app = this.build();
      if (t.kind === 'unix') await prepareUnixSocket(t.path);
      const addr = t.kind === 'unix' ? await app.listen({ path: t.path }) : await app.listen({ host: t.host, port: t.port });
      this.apps.push(app);
      bound.push(addr.replace(/^http:\/\//, ''));
    }
    return bound;
  }

  async stop(): Promise<void> {
    await Promise.all(this.apps.map((a) => a.close()));
    this.apps.length = 0;
  }
}
