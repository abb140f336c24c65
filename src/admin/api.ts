/*
 * admin/api — the administration HTTP API (fastify), used by the CLI.
 *
 * Two doors, one set of routes: the unix socket in the data dir (mode 0600:
 * whoever can open it is trusted, as with Postfix's own control sockets) and
 * TCP (loopback by default), where every request needs the bearer token from
 * `<data>/admin.token`. A wrong or missing token gets a bare 401 that says
 * nothing about what exists.
 *
 * Input is validated before it reaches the store: addresses and networks go
 * through parseSubject (strict), durations through parseDuration and are at
 * most MAX_DURATION_MS. A ban wider than an IPv4 /8 or an IPv6 /16 needs
 * `force`. A ban inside an allowlisted network would do nothing and is
 * refused; one holding allowlisted addresses needs `force` (they stay exempt).
 */
import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { parseDuration } from '../config/schema.js';
import { contains, parseSubject, tooBroad, type ParsedSubject } from '../engine/address.js';
import type { Policy } from '../engine/policy.js';
import { MAX_DURATION_MS, MAX_DURATION_TEXT } from '../engine/types.js';
import { RuntimeAllowlist } from '../allowlist.js';
import { explain } from '../explain.js';
import type { Store } from '../store/types.js';
import type { Activity, FeedItem } from './activity.js';
import { badRequest, conflict } from './errors.js';
import { registerDashboard } from './dashboard.js';
import type { Metrics } from './metrics.js';

export interface AdminContext {
  store: Store;
  allowlist: RuntimeAllowlist;
  policy: () => Policy;
  now: () => number;
  status: () => Record<string, unknown>;
  activity: Activity;
  metrics: Metrics;
  /** Re-reads the config; the running one stays when the new one is wrong. */
  reload: () => Promise<{ ok: boolean; problems?: string }>;
}

export interface AdminOptions {
  /** Bearer token required on every request; undefined for the trusted unix socket. */
  token: string | undefined;
}

interface BanBody {
  subject: string;
  duration?: string | number;
  reason?: string;
  force?: boolean;
}
interface SuspendBody {
  duration?: string | number;
  reason?: string;
}

const banBody = {
  type: 'object',
  required: ['subject'],
  additionalProperties: false,
  properties: {
    subject: { type: 'string', minLength: 1, maxLength: 64 },
    duration: { anyOf: [{ type: 'number' }, { type: 'string' }] },
    reason: { type: 'string', maxLength: 300 },
    force: { type: 'boolean' },
  },
} as const;

/** An allowlist entry: like a ban, but the subject may be a user too. */
const allowBody = {
  ...banBody,
  properties: { ...banBody.properties, subject: { type: 'string', minLength: 1, maxLength: 320 } },
} as const;

const suspendBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    duration: { anyOf: [{ type: 'number' }, { type: 'string' }] },
    reason: { type: 'string', maxLength: 300 },
  },
} as const;

function actorOf(req: FastifyRequest, trusted: boolean): string {
  const h = req.headers['x-mailwarden-actor'];
  const who = typeof h === 'string' && /^[\w.@:-]{1,64}$/.test(h) ? h : undefined;
  return trusted ? (who ?? 'cli') : `api${who ? `:${who}` : ''}`;
}

function tokenMatches(header: string | undefined, token: string): boolean {
  if (!header?.startsWith('Bearer ')) return false;
  const given = Buffer.from(header.slice(7));
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}

interface PageQuery {
  limit?: string;
  offset?: string;
}

/** A list's paging: at most 1000 a page, 100 unless asked. */
function paging(q: PageQuery): { limit: number; offset: number } {
  return {
    limit: Math.min(1000, Math.max(1, Math.floor(Number(q.limit ?? 100)) || 100)),
    offset: Math.max(0, Math.floor(Number(q.offset ?? 0)) || 0),
  };
}

/** One page of a list, with its total: no list is ever cut off without saying so. */
function page<T>(all: readonly T[], q: PageQuery): { total: number; offset: number; limit: number; items: T[] } {
  const { limit, offset } = paging(q);
  return { total: all.length, offset, limit, items: all.slice(offset, offset + limit) };
}

/** `since` of the audit export: epoch ms, an ISO-8601 time, or a duration back from now (`24h`). */
function sinceOf(raw: string | undefined, now: number): number {
  if (raw === undefined || raw === '') return 0;
  if (/^\d+$/.test(raw)) return Number(raw);
  const back = parseDuration(raw);
  if (back !== undefined && back > 0) return now - back;
  const t = Date.parse(raw);
  if (Number.isNaN(t)) {
    throw badRequest(`since ${JSON.stringify(raw)} is neither a time (2026-12-01T08:00:00Z) nor a duration back (24h, 7d)`);
  }
  return t;
}

/** A subject as it is stored: an address or network in canonical form, a user in lower case. */
function canonicalSubject(raw: string): string {
  return parseSubject(raw)?.text ?? raw.trim().toLowerCase();
}

function durationOf(v: string | number | undefined): number | undefined {
  if (v === undefined) return undefined;
  const ms = parseDuration(v);
  if (ms === undefined) throw badRequest(`duration ${JSON.stringify(v)} is not a duration; write e.g. 30m, 2h, 7d`);
  if (ms <= 0) throw badRequest(`duration must be longer than 0`);
  if (ms > MAX_DURATION_MS) throw badRequest(`duration must be at most ${MAX_DURATION_TEXT}`);
  return ms;
}

/** Why a ban of `s` is refused (over-broad without force, or against the allowlist), or undefined. */
function refusedBan(s: ParsedSubject, policy: Policy, force: boolean): Error | undefined {
  const broad = tooBroad(s);
  if (broad && !force) return badRequest(`${broad}; such a ban needs force: pass --force (CLI) or "force": true (API)`);
  const allowed = policy.allowNetworks.overlapping(s);
  if (allowed === undefined) return undefined;
  if (contains(allowed, s)) {
    return conflict(
      `${s.text} is allowlisted (${allowed.text}); remove it from the allowlist first (mailwarden allow list shows where it is)`,
    );
  }
  if (force) return undefined;
  return conflict(
    `${s.text} holds the allowlisted ${allowed.text}, which no ban can cover; ban a narrower network, ` +
      'or pass --force (CLI) or "force": true (API) to ban the rest of it',
  );
}

export function buildAdminApi(ctx: AdminContext, opts: AdminOptions): FastifyInstance {
  // removeAdditional off: an unknown field is a 400, not silently dropped.
  const app = Fastify({ logger: false, bodyLimit: 16 * 1024, ajv: { customOptions: { removeAdditional: false } } });
  const trusted = opts.token === undefined;
  if (opts.token !== undefined) {
    const token = opts.token;
    app.addHook('onRequest', async (req, reply) => {
      // The dashboard's page and assets are public; every byte of data needs the token.
      const path = req.url.split('?', 1)[0] ?? '';
      if (req.method === 'GET' && (path === '/' || path.startsWith('/assets/'))) return;
      if (!tokenMatches(req.headers.authorization, token)) {
        await reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'unauthorized' });
      }
    });
  }
  app.setErrorHandler((err: Error & { statusCode?: number; validation?: unknown }, _req, reply) => {
    // 503: the data directory refused an administrator's change (store/disk-writes.ts); it did not happen.
    const code =
      err.statusCode && ((err.statusCode >= 400 && err.statusCode < 500) || err.statusCode === 503)
        ? err.statusCode
        : 500;
    void reply.code(code).send({ error: code === 500 ? 'internal error' : err.message });
  });

  registerDashboard(app);

  app.get('/v1/status', () => ctx.status());

  app.get('/metrics', async (_req, reply) => {
    const text = await ctx.metrics.registry.metrics();
    return reply.header('content-type', ctx.metrics.registry.contentType).send(text);
  });

  app.get('/v1/timeline', () => ctx.activity.timeline(ctx.now()));
  app.get('/v1/top', () => ctx.activity.top(ctx.now()));

  // Server-sent events: refusals, bans and suspensions as they happen (allowed requests are not sent),
  // after the last 50 of them.
  app.get('/v1/events', (req, reply) => {
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.write(': mailwarden events\n\n');
    const send = (item: FeedItem): void => {
      res.write(`data: ${JSON.stringify(item)}\n\n`);
    };
    // The recent past first, so a page opened after an attack still shows it.
    for (const item of ctx.activity.recent()) send(item);
    const unsubscribe = ctx.activity.subscribe(send);
    const ping = setInterval(() => res.write(': ping\n\n'), 15_000);
    req.raw.on('close', () => {
      clearInterval(ping);
      unsubscribe();
    });
  });

  app.post('/v1/reload', async (_req, reply) => {
    const r = await ctx.reload();
    return r.ok
      ? { reloaded: true }
      : reply.code(400).send({ error: r.problems ?? 'the new configuration was refused' });
  });

  app.get<{ Querystring: PageQuery & { q?: string } }>('/v1/bans', async (req) => {
    const all = await ctx.store.listBans(ctx.now());
    const q = req.query.q?.toLowerCase();
    const hits = q
      ? all.filter((b) => b.subject.includes(q) || b.rule.includes(q) || b.reason.toLowerCase().includes(q))
      : all;
    return page(hits, req.query);
  });

  // Every ban in force that covers an address or network: the exact one and any wider network holding it.
  app.get<{ Params: { address: string } }>('/v1/bans/check/:address', async (req) => {
    const s = parseSubject(decodeURIComponent(req.params.address));
    if (!s) throw badRequest(`${JSON.stringify(req.params.address)} is not an IP address or CIDR network`);
    const bans = (await ctx.store.listBans(ctx.now())).filter((b) => {
      const outer = parseSubject(b.subject);
      return outer !== undefined && contains(outer, s);
    });
    const allowed = ctx.policy().allowNetworks.overlapping(s);
    return { subject: s.text, allowlisted: allowed !== undefined && contains(allowed, s), bans };
  });

  app.post<{ Body: BanBody }>('/v1/bans', { schema: { body: banBody } }, async (req, reply) => {
    const s = parseSubject(req.body.subject);
    if (!s) throw badRequest(`${JSON.stringify(req.body.subject)} is not an IP address or CIDR network`);
    const policy = ctx.policy();
    const refused = refusedBan(s, policy, req.body.force === true);
    if (refused) throw refused;
    const now = ctx.now();
    const durationMs = durationOf(req.body.duration);
    const reason = req.body.reason ?? 'banned by an administrator';
    const done = await ctx.store.commit(
      [
        {
          type: 'ban',
          subject: s.text,
          rule: 'manual',
          reason,
          evidence: {},
          escalation: policy.escalation,
          durationMs,
        },
      ],
      now,
      actorOf(req, trusted),
    );
    const made = done.bans[0];
    if (made) {
      ctx.activity.publish({ time: now, kind: 'ban', subject: made.subject, rule: made.rule, reason: made.reason });
      return reply.code(201).send(made);
    }
    // Already banned and no new length asked for: the existing ban stands.
    return (await ctx.store.listBans(now)).find((b) => b.subject === s.text);
  });

  app.delete<{ Params: { subject: string }; Querystring: { reason?: string } }>(
    '/v1/bans/:subject',
    async (req, reply) => {
      const s = parseSubject(decodeURIComponent(req.params.subject));
      if (!s) throw badRequest(`${JSON.stringify(req.params.subject)} is not an IP address or CIDR network`);
      const gone = await ctx.store.unban(
        s.text,
        actorOf(req, trusted),
        ctx.now(),
        req.query.reason ?? 'unbanned by an administrator',
      );
      if (!gone) return reply.code(404).send({ error: `${s.text} is not banned` });
      ctx.activity.publish({ time: ctx.now(), kind: 'unban', subject: gone.subject, rule: gone.rule });
      return { removed: gone };
    },
  );

  app.get<{ Querystring: PageQuery }>('/v1/users', async (req) =>
    page(await ctx.store.listSuspensions(ctx.now()), req.query),
  );

  app.get<{ Querystring: PageQuery }>('/v1/allowlist', (req) => page(ctx.allowlist.list(), req.query));

  app.post<{ Body: BanBody }>('/v1/allowlist', { schema: { body: allowBody } }, async (req, reply) => {
    const entry = ctx.allowlist.add(
      {
        subject: req.body.subject,
        reason: req.body.reason,
        durationMs: durationOf(req.body.duration),
        force: req.body.force,
      },
      actorOf(req, trusted),
    );
    const s = parseSubject(entry.subject);
    // Bans sharing addresses with an allowlisted network stay, but no longer stop those: say which.
    const bansOverlapping = s ? RuntimeAllowlist.bansOverlapping(s, await ctx.store.listBans(ctx.now())) : [];
    return reply.code(201).send({ ...entry, bansOverlapping });
  });

  app.delete<{ Params: { subject: string } }>('/v1/allowlist/:subject', (req) => ({
    removed: ctx.allowlist.remove(decodeURIComponent(req.params.subject), actorOf(req, trusted)),
  }));

  app.get<{ Querystring: PageQuery & { since?: string; subject?: string } }>('/v1/audit', async (req) => {
    const { limit, offset } = paging(req.query);
    const since = sinceOf(req.query.since, ctx.now());
    const raw = req.query.subject;
    if (raw !== undefined && (!raw.trim() || raw.length > 320)) throw badRequest('subject: give an address, a network or a user');
    const subject = raw === undefined ? undefined : canonicalSubject(raw);
    const found = await ctx.store.auditSearch({ since, subject, limit, offset });
    return { since: new Date(since).toISOString(), subject: subject ?? null, total: found.total, offset, limit, items: found.items };
  });

  app.post<{ Params: { user: string }; Body: SuspendBody | undefined }>(
    '/v1/users/:user/suspend',
    { schema: { body: suspendBody } },
    async (req, reply) => {
      const user = req.params.user.trim().toLowerCase();
      if (!user || user.length > 320) throw badRequest('a user name is required');
      const durationMs = durationOf(req.body?.duration) ?? ctx.policy().suspensionMs;
      const reason = req.body?.reason ?? 'suspended by an administrator';
      const done = await ctx.store.commit(
        [{ type: 'suspend', user, rule: 'manual', reason, durationMs, evidence: {} }],
        ctx.now(),
        actorOf(req, trusted),
      );
      const made = done.suspensions[0];
      if (made)
        ctx.activity.publish({
          time: made.since,
          kind: 'suspend',
          user: made.user,
          rule: made.rule,
          reason: made.reason,
        });
      return reply.code(201).send(made);
    },
  );

  app.post<{ Params: { user: string } }>('/v1/users/:user/resume', async (req, reply) => {
    const user = req.params.user.trim().toLowerCase();
    const gone = await ctx.store.resume(user, actorOf(req, trusted), ctx.now(), 'resumed by an administrator');
    if (!gone) return reply.code(404).send({ error: `${user} is not suspended` });
    ctx.activity.publish({ time: ctx.now(), kind: 'resume', user: gone.user, rule: gone.rule });
    return { resumed: gone };
  });

  app.get<{ Params: { subject: string } }>('/v1/explain/:subject', async (req) => {
    const raw = decodeURIComponent(req.params.subject);
    if (!raw.trim() || raw.length > 320) throw badRequest('give an IP address, a network or a user');
    return explain(raw, ctx.policy(), ctx.store, ctx.now());
  });

  return app;
}
