/*
 * config/schema — the shape of mailwarden.yaml, as zod schemas.
 *
 * Every object is strict: an unknown key is an error (a typo in a limit must not
 * silently fall back to a default). Durations are `90s`, `5m`, `1h`, `7d`, or a
 * number of seconds, at most 3650d (MAX_DURATION_MS, engine/types.ts). Defaults
 * live in config/defaults.ts, not here, so that `check-config` can show which
 * values came from where.
 */
import { z } from 'zod';
import { parseServer } from '../dns/resolver.js';
import { dnsName, parseCodes } from '../dns/zones.js';
import { parseSubject } from '../engine/address.js';
import { LOCALES } from '../engine/messages.js';
import { EVENT_KINDS, MAX_DURATION_MS, MAX_DURATION_TEXT } from '../engine/types.js';

const DURATION_RE = /^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** Parses `90s`, `5m`, `1h`, `7d`, `2w`, `250ms`, or seconds as a number; returns ms. */
export function parseDuration(v: string | number): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? Math.round(v * 1000) : undefined;
  const m = DURATION_RE.exec(v.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * (UNIT_MS[m[2] as string] as number));
}

export const duration = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const ms = parseDuration(v);
  if (ms === undefined) {
    ctx.addIssue({
      code: 'custom',
      message: `not a duration: ${JSON.stringify(v)}; write e.g. 30s, 5m, 1h, 7d, or a number of seconds`,
    });
    return z.NEVER;
  }
  if (ms > MAX_DURATION_MS) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is too long: must be at most ${MAX_DURATION_TEXT}` });
    return z.NEVER;
  }
  return ms;
});

const positiveDuration = duration.refine((ms) => ms > 0, { message: 'must be longer than 0' });

/** `host:port`, `[v6]:port`, or a unix socket path (starts with / or .). */
export const listenAddress = z.string().refine((s) => parseListen(s) !== undefined, {
  message: 'not a listen address; write host:port (127.0.0.1:10031, [::1]:10031) or an absolute unix socket path',
});

export type ListenTarget = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export function parseListen(s: string): ListenTarget | undefined {
  const t = s.trim();
  if (t.startsWith('/') || t.startsWith('./') || t.startsWith('../')) return { kind: 'unix', path: t };
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s[\]]+)):(\d{1,5})$/.exec(t);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { kind: 'tcp', host: (m[1] ?? m[2]) as string, port };
}

/** `host:port` or `[v6]:port` of a Redis server (Sentinel, Cluster node). */
export const hostPort = z.string().refine((s) => parseHostPort(s) !== undefined, {
  message: 'write host:port, e.g. 10.0.0.5:6379 or [2001:db8::5]:6379',
});

export function parseHostPort(s: string): { host: string; port: number } | undefined {
  const t = parseListen(s);
  return t?.kind === 'tcp' && t.port > 0 ? { host: t.host, port: t.port } : undefined;
}

/** A Redis URL: redis:// or rediss:// (TLS), with an optional user:password@ and /db. */
export function isRedisUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return (
      (u.protocol === 'redis:' || u.protocol === 'rediss:') && u.hostname !== '' && /^(\/\d{0,2})?$/.test(u.pathname)
    );
  } catch {
    return false;
  }
}

const redisUrl = z.string().refine(isRedisUrl, {
  message:
    'not a Redis URL; write redis://host:6379/0 (rediss:// for TLS; redis://:password@host:6379/0 with a password)',
});

const listenList = z.union([listenAddress, z.array(listenAddress)]).transform((v) => (Array.isArray(v) ? v : [v]));

export const SUBJECT_KEYS = ['ip', 'network', 'user', 'sender', 'sender_domain', 'user_ip', 'user_network'] as const;
export const DISTINCT_FIELDS = ['pwhash', 'ip', 'network', 'user', 'recipient_domain'] as const;
export const COUNT_KINDS = [
  'events',
  'recipients',
  'messages',
  'bytes',
  'failures',
  ...DISTINCT_FIELDS.map((f) => `distinct:${f}` as const),
] as const;
export const ACTIONS = ['allow', 'delay', 'tempfail', 'reject', 'hold'] as const;

const cidr = z.string().refine((s) => isCidrOrIp(s), {
  message: 'not an IP address or CIDR network (e.g. 192.0.2.0/24, 2001:db8::/32)',
});

// The same strict parser NetworkSet uses, so every accepted entry compiles (no `127.1` or `0x7f.0.0.1`).
function isCidrOrIp(s: string): boolean {
  return parseSubject(s) !== undefined;
}

/** A DNS zone or domain name: `zen.spamhaus.org`, `example.org` (no final dot needed). */
const zoneName = z.string().refine((s) => dnsName(s) !== undefined, {
  message: 'not a DNS name; write e.g. zen.spamhaus.org',
});

/** A blocklist zone and the answer codes that count: `127.0.0.2`, `127.0.0.2-127.0.0.11`, `127.0.0.0/24`. */
const zoneEntry = {
  zone: zoneName,
  codes: z
    .array(
      z.string().refine((s) => parseCodes(s) !== undefined, {
        message: 'not an answer code; write 127.0.0.2, a range 127.0.0.2-127.0.0.11, or 127.0.0.0/24',
      }),
    )
    .min(1)
    .optional(),
};

const messageText = z.string().max(200);

/**
 * A rule's message: one text for every locale, or one per locale. The English one is also every SMTP reply's
 * (engine/messages.ts), and SMTP reply text is ASCII.
 */
const message = z.union([
  messageText,
  z.strictObject({
    en: messageText.min(1).regex(/^[\x20-\x7e]*$/, {
      message:
        'the en text is also every SMTP reply, which must be plain ASCII: write it without accents or other non-ASCII characters',
    }),
    ja: messageText.min(1),
  }),
]);

const thenObject = z.strictObject({
  action: z.enum(ACTIONS),
  delay: positiveDuration.optional(),
  message: message.optional(),
  ban: z.union([z.boolean(), z.enum(['ip', 'network'])]).optional(),
  suspend: positiveDuration.optional(),
  notify: z.boolean().optional(),
});

export const ruleSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,63}$/, {
    message: 'rule names are 1-64 characters of a-z, 0-9, _ . - (e.g. smtp-connections-per-ip)',
  }),
  enabled: z.boolean().optional(),
  mode: z.enum(['enforce', 'observe']).optional(),
  on: z
    .array(z.enum(EVENT_KINDS as [string, ...string[]]))
    .min(1)
    .optional(),
  check_on: z.array(z.enum(EVENT_KINDS as [string, ...string[]])).optional(),
  except_known_good: z.boolean().optional(),
  uses: z.string().optional(),
  baseline: z
    .strictObject({
      factor: z.number().min(1),
      floor: z.number().int().min(1),
      half_life: positiveDuration,
    })
    .optional(),
  overrides: z.record(z.string().min(1), z.number().int().positive()).optional(),
  key: z.enum(SUBJECT_KEYS).optional(),
  count: z.enum(COUNT_KINDS).optional(),
  limit: z.number().int().positive().optional(),
  window: positiveDuration.optional(),
  when: z
    .strictObject({
      authenticated: z.boolean().optional(),
      context: z.array(z.string()).optional(),
      protocol: z.array(z.string()).optional(),
      success: z.boolean().optional(),
      refused: z.boolean().optional(),
      shared: z.boolean().optional(),
      pwhash: z.boolean().optional(),
      listed: z.union([z.boolean(), z.array(zoneName).min(1)]).optional(),
    })
    .optional(),
  min_addresses: z.number().int().min(2).max(1024).optional(),
  then: z.union([z.enum(ACTIONS), thenObject]).optional(),
  description: z.string().optional(),
});

/** A `logs:` entry (logs/types.ts): a file to follow, or the systemd journal. */
const logSource = z
  .strictObject({
    path: z
      .string()
      .refine((p) => p.startsWith('/'), { message: 'write the absolute path of the log file (e.g. /var/log/mail.log)' })
      .optional(),
    format: z.enum(['mail', 'roundcube']).optional(),
    journal: z
      .strictObject({
        units: z.array(z.string().min(1)).optional(),
        command: z.string().min(1).optional(),
        args: z.array(z.string()).optional(),
      })
      .optional(),
    trust_forwarded: z.boolean().optional(),
  })
  .refine((s) => (s.path === undefined) !== (s.journal === undefined), {
    message: 'give each logs entry either path (a file) or journal (the systemd journal)',
  })
  .refine((s) => s.format === undefined || s.path !== undefined, {
    message: 'format is for a file (path); the journal tells Postfix, Dovecot and Roundcube apart itself',
  });

// Connections a listener or one peer may hold (adapters/caps.ts); the daemon lowers them to fit the open-file limit.
const connectionCount = z.number().int().min(1).max(1_000_000);

// Local names like root@localhost are fine for an administrator's mailbox.
const mailbox = z
  .string()
  .regex(/^[^@\s]+@[^@\s]+$/, { message: 'not an email address (e.g. postmaster@example.org)' });

export const configSchema = z.strictObject({
  data_dir: z.string().min(1).optional(),
  locale: z.enum(LOCALES).optional(),
  listen: z
    .strictObject({
      postfix: listenList.optional(),
      dovecot: listenList.optional(),
      admin: listenList.optional(),
    })
    .optional(),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).optional(),
      // No default here: unset means pretty on a terminal, JSON otherwise (decided at start, log.ts).
      format: z.enum(['pretty', 'json']).optional(),
    })
    .optional(),
  networks: z
    .strictObject({
      ipv4_prefix: z.number().int().min(8).max(32).optional(),
      ipv6_prefix: z.number().int().min(16).max(128).optional(),
    })
    .optional(),
  allowlist: z
    .strictObject({
      networks: z.array(cidr).optional(),
      users: z.array(z.string().min(1)).optional(),
    })
    .optional(),
  bans: z
    .strictObject({
      duration: positiveDuration.optional(),
      factor: z.number().min(1).max(100).optional(),
      max: positiveDuration.optional(),
      lookback: positiveDuration.optional(),
      ipv6_aggregate: z
        .strictObject({
          prefix: z.number().int().min(16).max(63).optional(),
          threshold: z.number().int().min(2).optional(),
          enabled: z.boolean().optional(),
        })
        .optional(),
    })
    .optional(),
  suspensions: z
    .strictObject({ duration: positiveDuration.optional(), block_login: z.boolean().optional() })
    .optional(),
  known_good: z.strictObject({ window: duration.optional() }).optional(),
  shared_address: z
    .strictObject({ users: z.number().int().min(0).max(1000).optional(), window: positiveDuration.optional() })
    .optional(),
  dovecot: z
    .strictObject({
      api_header: z
        .string()
        .regex(/^[A-Za-z0-9-]+: ?\S.*$/, {
          message: 'write it as Dovecot does, "Header-Name: value" (e.g. "Authorization: Bearer s3cret")',
        })
        .optional(),
      budget: positiveDuration.optional(),
      max_delay: positiveDuration.optional(),
      smtp_max_delay: positiveDuration.optional(),
      repeat_window: duration.optional(),
      max_connections: connectionCount.optional(),
      max_connections_per_peer: connectionCount.optional(),
      headers_timeout: positiveDuration.optional(),
      request_timeout: positiveDuration.optional(),
      max_body: z.number().int().min(1024).max(1_048_576).optional(),
    })
    .optional(),
  postfix: z
    .strictObject({
      budget: positiveDuration.optional(),
      idle_timeout: positiveDuration.optional(),
      max_line: z.number().int().min(512).max(1_048_576).optional(),
      max_attributes: z.number().int().min(8).max(10_000).optional(),
      repeat_window: duration.optional(),
      max_connections: connectionCount.optional(),
      max_connections_per_peer: connectionCount.optional(),
    })
    .optional(),
  node: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, {
      message: 'node names are 1-64 characters of A-Z, a-z, 0-9, _ . - (e.g. mx1)',
    })
    .optional(),
  store: z
    .strictObject({
      max_keys: z.number().int().min(1000).optional(),
      snapshot_interval: positiveDuration.optional(),
      backend: z.enum(['memory', 'redis']).optional(),
      url: redisUrl.optional(),
      prefix: z
        .string()
        .regex(/^[A-Za-z0-9_.:-]{1,64}$/, {
          message: 'a prefix is 1-64 characters of A-Z, a-z, 0-9, _ . : - (no braces: mailwarden adds the hash tag)',
        })
        .optional(),
      timeout: positiveDuration.optional(),
      sentinels: z.array(hostPort).min(1).optional(),
      sentinel_master: z.string().min(1).max(128).optional(),
      cluster: z.array(hostPort).min(1).optional(),
    })
    .optional(),
  dns: z
    .strictObject({
      servers: z
        .array(
          z.string().refine((s) => parseServer(s) !== undefined, {
            message:
              'not a DNS server; write an IP address, with a port if not 53 (127.0.0.1, 127.0.0.1:5353, [::1]:53)',
          }),
        )
        .min(1)
        .optional(),
      timeout: positiveDuration.optional(),
      cache_entries: z.number().int().min(100).max(10_000_000).optional(),
      max_in_flight: z.number().int().min(1).max(65_536).optional(),
    })
    .optional(),
  dnsbl: z
    .strictObject({
      zones: z
        .array(z.strictObject({ ...zoneEntry, weight: z.number().int().min(-100).max(100).optional() }))
        .optional(),
      threshold: z.number().int().min(1).max(1000).optional(),
    })
    .optional(),
  reputation: z
    .strictObject({
      addresses: z
        .array(z.string().refine((s) => parseSubject(s)?.kind === 'ip', { message: 'not an IP address' }))
        .optional(),
      domains: z.array(zoneName).optional(),
      zones: z.array(z.strictObject({ ...zoneEntry, type: z.enum(['ip', 'domain']).optional() })).optional(),
      interval: positiveDuration.optional(),
    })
    .optional(),
  alerts: z
    .strictObject({
      cooldown: duration.optional(),
      queue_max: z.number().int().min(1).max(100_000).optional(),
      retries: z.number().int().min(0).max(20).optional(),
      email: z
        .strictObject({
          relay: z
            .string()
            .regex(/^[^\s:]+:\d{1,5}$/, { message: 'write host:port, e.g. localhost:25' })
            .optional(),
          from: mailbox.optional(),
          to: z.array(mailbox).optional(),
        })
        .optional(),
      webhook: z
        .strictObject({
          url: z.url({ protocol: /^https?$/, message: 'not an http(s) URL' }).optional(),
          secret: z.string().min(16, { message: 'use at least 16 characters for the HMAC secret' }).optional(),
          timeout: positiveDuration.optional(),
        })
        .optional(),
    })
    .optional(),
  firewall: z
    .strictObject({
      backend: z.enum(['none', 'nftables']).optional(),
      // Written into nft scripts: a plain identifier, nothing nft could read as more.
      table: z
        .string()
        .regex(/^[A-Za-z][A-Za-z0-9_]{0,31}$/, {
          message: 'a table name is 1-32 characters of A-Z, a-z, 0-9, _ starting with a letter (e.g. mailwarden)',
        })
        .optional(),
      ports: z
        .union([
          z.literal('all'),
          z
            .array(z.number().int().min(1).max(65535))
            .min(1)
            .refine((ps) => new Set(ps).size === ps.length, { message: 'a port is listed twice' }),
        ])
        .optional(),
      nft: z.string().min(1).optional(),
    })
    .optional(),
  logs: z.array(logSource).optional(),
  use_default_rules: z.boolean().optional(),
  rules: z.array(ruleSchema).optional(),
});

export type RawConfig = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
export type ParsedRule = z.output<typeof ruleSchema>;
