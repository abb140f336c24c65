/*
 * config/compile — turns a validated config plus overrides into Settings: the
 * compiled Policy the engine runs and the addresses the daemon listens on.
 * Checks what the schema alone cannot (complete rules, unique names) and
 * reports it at the rule's place in the file.
 */
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { FIREWALL_DEFAULTS, type FirewallSettings } from '../actions/firewall.js';
import type { AlertSettings } from '../actions/notify.js';
import type { ConnectionLimits } from '../adapters/caps.js';
import { LOG_RULES } from '../logs/rules.js';
import type { LogSource } from '../logs/types.js';
import type { PostfixServerOptions } from '../adapters/postfix/server.js';
import type { ReputationSettings } from '../dns/reputation.js';
import { describeServer, parseServer, systemServers, type DnsServer, type DnsSettings } from '../dns/resolver.js';
import { ANY_CODE, describeCodes, dnsName, parseCodes, type CodeRange } from '../dns/zones.js';
import { canonicalIp, NetworkSet } from '../engine/address.js';
import { formatDuration, LOCALES, type Locale } from '../engine/messages.js';
import { KNOWN_GOOD_RULE, ruleId, SHARED_RULE } from '../engine/plan.js';
import type { CountKind, Policy, Rule } from '../engine/policy.js';
import type { EventKind } from '../engine/types.js';
import { DEFAULT_LISTEN, DEFAULT_RULES, DEFAULTS } from './defaults.js';
import { ConfigError, type ConfigProblem } from './errors.js';
import type { Locate, Overrides } from './load.js';
import type { RedisSettings } from '../store/redis.js';
import {
  parseDuration,
  parseHostPort,
  parseListen,
  ruleSchema,
  type ListenTarget,
  type ParsedConfig,
  type ParsedRule,
} from './schema.js';

export interface Settings {
  /** The config file, or undefined for built-in defaults. */
  file: string | undefined;
  dataDir: string;
  listen: { postfix: ListenTarget[]; dovecot: ListenTarget[]; admin: ListenTarget[] };
  logLevel: string;
  /** `log.format`; undefined: pretty when stdout is a terminal, else JSON lines. */
  logFormat: 'pretty' | 'json' | undefined;
  allowlist: { networks: string[]; users: string[] };
  postfix: Pick<
    PostfixServerOptions,
    'budgetMs' | 'idleTimeoutMs' | 'maxLine' | 'maxAttributes' | 'repeatWindowMs' | 'limits'
  >;
  store: { maxKeys: number; snapshotMs: number };
  /** The shared store (`store.backend: redis` or MAILWARDEN_STORE); undefined for the embedded store. */
  redis: RedisSettings | undefined;
  /** This node's name in audit rows, status and alerts (`node`, MAILWARDEN_NODE; default: the host name). */
  node: string;
  /** The language of what mail users are told (`locale`, MAILWARDEN_LOCALE); the same as `policy.locale`. */
  locale: Locale;
  dovecot: {
    apiHeader: { name: string; value: string } | undefined;
    budgetMs: number;
    maxDelayMs: number;
    smtpMaxDelayMs: number;
    repeatWindowMs: number;
    limits: ConnectionLimits;
    headersTimeoutMs: number;
    requestTimeoutMs: number;
    maxBody: number;
  };
  alerts: AlertSettings;
  /** The log files and journal followed (`logs`; none by default). */
  logs: LogSource[];
  /** The resolver DNSBL lookups and the reputation monitor ask (`dns`; restart to change). */
  dns: DnsSettings;
  /** Our own addresses and domains, watched on blocklists (`reputation`; restart to change). */
  reputation: ReputationSettings;
  /** Bans dropped in the kernel too (`firewall`; off by default). */
  firewall: FirewallSettings;
  policy: Policy;
}

const ms = (v: string | number): number => parseDuration(v) as number;

export function compileSettings(file: string | undefined, cfg: ParsedConfig, locate: Locate, o: Overrides): Settings {
  const problems: ConfigProblem[] = [];
  const rules = compileRules(cfg, locate, problems);
  if (problems.length) throw new ConfigError(problems);
  const bans = cfg.bans ?? {};
  const agg = bans.ipv6_aggregate ?? {};
  const d = DEFAULTS;
  const escalation = {
    baseMs: bans.duration ?? ms(d.bans.duration),
    factor: bans.factor ?? d.bans.factor,
    maxMs: bans.max ?? ms(d.bans.max),
    lookbackMs: bans.lookback ?? ms(d.bans.lookback),
  };
  const ipv6Prefix = cfg.networks?.ipv6_prefix ?? d.networks.ipv6_prefix;
  const aggPrefix = agg.prefix ?? d.bans.ipv6_aggregate.prefix;
  const aggEnabled = agg.enabled ?? d.bans.ipv6_aggregate.enabled;
  if (aggEnabled && aggPrefix >= ipv6Prefix) {
    throw new ConfigError([
      {
        code: 'MW_CONFIG_INVALID',
        where: locate(agg.prefix === undefined ? ['networks', 'ipv6_prefix'] : ['bans', 'ipv6_aggregate', 'prefix']),
        message: `bans.ipv6_aggregate.prefix (${aggPrefix}) must be shorter than networks.ipv6_prefix (${ipv6Prefix})`,
      },
    ]);
  }
  const policy: Policy = {
    // load.ts has refused any other value of MAILWARDEN_LOCALE.
    locale: LOCALES.find((l) => l === o.locale?.value) ?? cfg.locale ?? d.locale,
    ipv4Prefix: cfg.networks?.ipv4_prefix ?? d.networks.ipv4_prefix,
    ipv6Prefix,
    allowNetworks: new NetworkSet(cfg.allowlist?.networks ?? d.allowlist.networks),
    allowUsers: new Set((cfg.allowlist?.users ?? d.allowlist.users).map((u) => u.toLowerCase())),
    escalation,
    ipv6Aggregate: {
      enabled: aggEnabled,
      prefix: aggPrefix,
      threshold: agg.threshold ?? d.bans.ipv6_aggregate.threshold,
    },
    suspensionMs: cfg.suspensions?.duration ?? ms(d.suspensions.duration),
    suspensionBlocksLogin: cfg.suspensions?.block_login ?? d.suspensions.block_login,
    knownGood: { windowMs: cfg.known_good?.window ?? ms(d.known_good.window) },
    shared: {
      minUsers: cfg.shared_address?.users ?? d.shared_address.users,
      windowMs: cfg.shared_address?.window ?? ms(d.shared_address.window),
    },
    dnsbl: compileDnsbl(cfg),
    rules,
  };
  const listenOf = (key: 'postfix' | 'dovecot' | 'admin', ov: Overrides['postfixListen']): ListenTarget[] =>
    (ov ? ov.value.split(',') : (cfg.listen?.[key] ?? DEFAULT_LISTEN[key])).map((s) => parseListen(s) as ListenTarget);
  const p = cfg.postfix ?? {};
  const dv = cfg.dovecot ?? {};
  const adapterProblems: ConfigProblem[] = [];
  const limitsOf = (
    section: 'postfix' | 'dovecot',
    given: { max_connections?: number | undefined; max_connections_per_peer?: number | undefined },
  ): ConnectionLimits => {
    const max = given.max_connections ?? d[section].max_connections;
    const perPeer = given.max_connections_per_peer ?? Math.max(1, Math.floor(max / 2));
    if (perPeer > max)
      adapterProblems.push({
        code: 'MW_CONFIG_INVALID',
        where: locate([section, 'max_connections_per_peer']),
        message: `${section}.max_connections_per_peer (${perPeer}) must not exceed ${section}.max_connections (${max})`,
      });
    return { maxConnections: max, maxConnectionsPerPeer: perPeer };
  };
  const postfixLimits = limitsOf('postfix', p);
  const dovecotLimits = limitsOf('dovecot', dv);
  const headersTimeoutMs = dv.headers_timeout ?? ms(d.dovecot.headers_timeout);
  const requestTimeoutMs = dv.request_timeout ?? ms(d.dovecot.request_timeout);
  // node:http refuses a headers timeout longer than the whole request's.
  if (headersTimeoutMs > requestTimeoutMs)
    adapterProblems.push({
      code: 'MW_CONFIG_INVALID',
      where: locate(['dovecot', dv.headers_timeout === undefined ? 'request_timeout' : 'headers_timeout']),
      message: `dovecot.headers_timeout (${formatDuration(headersTimeoutMs)}) must not exceed dovecot.request_timeout (${formatDuration(requestTimeoutMs)})`,
    });
  if (adapterProblems.length) throw new ConfigError(adapterProblems);
  return {
    file,
    dataDir: resolve(o.dataDir?.value ?? cfg.data_dir ?? d.data_dir),
    listen: {
      postfix: listenOf('postfix', o.postfixListen),
      dovecot: listenOf('dovecot', o.dovecotListen),
      admin: listenOf('admin', o.adminListen),
    },
    logLevel: cfg.log?.level ?? d.log.level,
    logFormat: cfg.log?.format,
    allowlist: { networks: [...(cfg.allowlist?.networks ?? d.allowlist.networks)], users: [...policy.allowUsers] },
    postfix: {
      budgetMs: p.budget ?? ms(d.postfix.budget),
      idleTimeoutMs: p.idle_timeout ?? ms(d.postfix.idle_timeout),
      maxLine: p.max_line ?? d.postfix.max_line,
      maxAttributes: p.max_attributes ?? d.postfix.max_attributes,
      repeatWindowMs: p.repeat_window ?? ms(d.postfix.repeat_window),
      limits: postfixLimits,
    },
    dovecot: {
      apiHeader: headerOf(cfg.dovecot?.api_header),
      budgetMs: cfg.dovecot?.budget ?? ms(d.dovecot.budget),
      maxDelayMs: cfg.dovecot?.max_delay ?? ms(d.dovecot.max_delay),
      smtpMaxDelayMs: cfg.dovecot?.smtp_max_delay ?? ms(d.dovecot.smtp_max_delay),
      repeatWindowMs: cfg.dovecot?.repeat_window ?? ms(d.dovecot.repeat_window),
      limits: dovecotLimits,
      headersTimeoutMs,
      requestTimeoutMs,
      maxBody: dv.max_body ?? d.dovecot.max_body,
    },
    alerts: compileAlerts(cfg),
    logs: (cfg.logs ?? []).map(compileLogSource),
    dns: compileDns(cfg),
    reputation: compileReputation(cfg, locate),
    firewall: {
      backend: cfg.firewall?.backend ?? FIREWALL_DEFAULTS.backend,
      table: cfg.firewall?.table ?? FIREWALL_DEFAULTS.table,
      ports: cfg.firewall?.ports ?? FIREWALL_DEFAULTS.ports,
      nft: cfg.firewall?.nft ?? FIREWALL_DEFAULTS.nft,
    },
    store: {
      maxKeys: cfg.store?.max_keys ?? d.store.max_keys,
      snapshotMs: cfg.store?.snapshot_interval ?? ms(d.store.snapshot_interval),
    },
    redis: compileRedis(cfg, locate, o),
    node: o.node?.value ?? cfg.node ?? hostname(),
    locale: policy.locale,
    policy,
  };
}

/** The shared store's settings; MAILWARDEN_STORE (memory, or one server's URL) wins over the file. */
function compileRedis(cfg: ParsedConfig, locate: Locate, o: Overrides): RedisSettings | undefined {
  const st = cfg.store ?? {};
  const d = DEFAULTS.store;
  const env = o.store?.value;
  const backend = env === undefined ? (st.backend ?? d.backend) : env === 'memory' ? 'memory' : 'redis';
  if (backend !== 'redis') return undefined;
  if (env === undefined && st.sentinels && st.cluster) {
    throw new ConfigError([
      {
        code: 'MW_CONFIG_INVALID',
        where: locate(['store', 'cluster']),
        message:
          'store.sentinels and store.cluster exclude each other; name either the Sentinels of one master or the nodes of one Cluster',
      },
    ]);
  }
  const nodes = (list: string[] | undefined): RedisSettings['cluster'] =>
    env === undefined && list ? list.map((x) => parseHostPort(x) as { host: string; port: number }) : undefined;
  return {
    url: env ?? st.url ?? d.url,
    prefix: st.prefix ?? d.prefix,
    timeoutMs: st.timeout ?? ms(d.timeout),
    sentinels: nodes(st.sentinels),
    sentinelMaster: st.sentinel_master ?? d.sentinel_master,
    cluster: nodes(st.cluster),
  };
}

/** A Redis URL with its password hidden (for check-config and status). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '(set)';
    return u.toString();
  } catch {
    return '(invalid)';
  }
}

function compileAlerts(cfg: ParsedConfig): AlertSettings {
  const a = cfg.alerts ?? {};
  const d = DEFAULTS.alerts;
  const relay = a.email?.relay ?? d.email.relay;
  const colon = relay.lastIndexOf(':');
  return {
    cooldownMs: a.cooldown ?? ms(d.cooldown),
    queueMax: a.queue_max ?? d.queue_max,
    retries: a.retries ?? d.retries,
    email: {
      host: relay.slice(0, colon),
      port: Number(relay.slice(colon + 1)),
      from: a.email?.from ?? d.email.from,
      // An empty list in the file is kept: it is how email alerts are switched off.
      to: [...(a.email?.to ?? d.email.to)],
    },
    webhook: { url: a.webhook?.url, secret: a.webhook?.secret, timeoutMs: a.webhook?.timeout ?? ms(d.webhook.timeout) },
  };
}

const codesOf = (codes: string[] | undefined): CodeRange[] =>
  codes ? codes.map((c) => parseCodes(c) as CodeRange) : [...ANY_CODE];

/** `dnsbl`, part of the policy: it reloads with the rules that ask about listings. */
function compileDnsbl(cfg: ParsedConfig): Policy['dnsbl'] {
  const zones = cfg.dnsbl?.zones ?? DEFAULTS.dnsbl.zones;
  return {
    zones: zones.map((z) => ({ zone: dnsName(z.zone) as string, weight: z.weight ?? 1, codes: codesOf(z.codes) })),
    threshold: cfg.dnsbl?.threshold ?? DEFAULTS.dnsbl.threshold,
  };
}

function compileDns(cfg: ParsedConfig): DnsSettings {
  const d = cfg.dns ?? {};
  return {
    servers: d.servers ? d.servers.map((x) => parseServer(x) as DnsServer) : systemServers(),
    timeoutMs: d.timeout ?? ms(DEFAULTS.dns.timeout),
    cacheEntries: d.cache_entries ?? DEFAULTS.dns.cache_entries,
    maxInFlight: d.max_in_flight ?? DEFAULTS.dns.max_in_flight,
  };
}

/** `reputation`: addresses need an ip zone to be checked in, domains a domain zone. */
function compileReputation(cfg: ParsedConfig, locate: Locate): ReputationSettings {
  const r = cfg.reputation ?? {};
  const zones = (r.zones ?? []).map((z) => ({
    zone: dnsName(z.zone) as string,
    type: z.type ?? ('ip' as const),
    codes: codesOf(z.codes),
  }));
  const problems: ConfigProblem[] = [];
  for (const [key, type, example] of [
    ['addresses', 'ip', '{zone: zen.spamhaus.org}'],
    ['domains', 'domain', '{zone: dbl.spamhaus.org, type: domain}'],
  ] as const) {
    if ((r[key]?.length ?? 0) > 0 && !zones.some((z) => z.type === type))
      problems.push({
        code: 'MW_CONFIG_INVALID',
        where: locate(['reputation', key]),
        message: `reputation.${key} needs a zone of type ${type} in reputation.zones to be checked in, e.g. ${example}`,
      });
  }
  if (problems.length) throw new ConfigError(problems);
  return {
    addresses: (r.addresses ?? []).map((a) => canonicalIp(a.trim()) as string),
    domains: (r.domains ?? []).map((x) => dnsName(x) as string),
    zones,
    intervalMs: r.interval ?? ms(DEFAULTS.reputation.interval),
  };
}

function compileLogSource(l: NonNullable<ParsedConfig['logs']>[number]): LogSource {
  const trustForwarded = l.trust_forwarded ?? false;
  if (l.path !== undefined) return { kind: 'file', path: l.path, format: l.format ?? 'mail', trustForwarded };
  return {
    kind: 'journal',
    units: l.journal?.units ?? [],
    command: l.journal?.command ?? 'journalctl',
    args: l.journal?.args ?? [],
    trustForwarded,
  };
}

/** `Name: value` as in Dovecot's auth_policy_server_api_header. */
function headerOf(h: string | undefined): { name: string; value: string } | undefined {
  if (h === undefined) return undefined;
  const colon = h.indexOf(':');
  return { name: h.slice(0, colon).trim().toLowerCase(), value: h.slice(colon + 1).trim() };
}

function compileRules(cfg: ParsedConfig, locate: Locate, problems: ConfigProblem[]): Rule[] {
  // The log follower's rules count only what it tells: in force when it follows something.
  const builtIn = (cfg.logs ?? []).length > 0 ? [...DEFAULT_RULES, ...LOG_RULES] : DEFAULT_RULES;
  const defaults = (cfg.use_default_rules ?? true) ? builtIn.map((r) => ruleSchema.parse(r)) : [];
  const merged = new Map<string, { rule: ParsedRule; index: number | undefined }>();
  for (const r of defaults) merged.set(r.name, { rule: r, index: undefined });
  const seen = new Set<string>();
  (cfg.rules ?? []).forEach((r, index) => {
    if (seen.has(r.name)) {
      problems.push({
        code: 'MW_CONFIG_RULE',
        where: locate(['rules', index, 'name']),
        message: `rule name ${JSON.stringify(r.name)} is used twice; give each rule its own name`,
      });
    }
    seen.add(r.name);
    const base = merged.get(r.name)?.rule;
    merged.set(r.name, { rule: base ? { ...base, ...r, when: r.when ?? base.when } : r, index });
  });
  const out: Rule[] = [];
  const dnsblZones = new Set((cfg.dnsbl?.zones ?? []).map((z) => dnsName(z.zone)));
  const live = [...merged.values()].filter(({ rule }) => rule.enabled !== false);
  const ids = new Map<string, string>([
    [ruleId(KNOWN_GOOD_RULE), KNOWN_GOOD_RULE],
    [ruleId(SHARED_RULE), SHARED_RULE],
  ]);
  for (const { rule: r, index } of live) {
    const other = ids.get(ruleId(r.name));
    if (other !== undefined && other !== r.name) {
      problems.push({
        code: 'MW_CONFIG_RULE',
        where: index === undefined ? `(built-in rule ${r.name})` : locate(['rules', index, 'name']),
        message: `rule names ${JSON.stringify(r.name)} and ${JSON.stringify(other)} share a counter id by chance; rename one of them`,
      });
    }
    ids.set(ruleId(r.name), r.name);
  }
  for (const { rule: r, index } of live) {
    const where = (field?: string): string =>
      index === undefined ? `(built-in rule ${r.name})` : locate(field ? ['rules', index, field] : ['rules', index]);
    // A detector reading another rule's counter needs no counter of its own; a baseline needs no fixed limit.
    const needed = r.uses
      ? (['on', 'key', 'limit'] as const)
      : r.baseline
        ? (['on', 'key', 'count', 'window'] as const)
        : (['on', 'key', 'count', 'limit', 'window'] as const);
    const missing = needed.filter((f) => r[f] === undefined);
    if (missing.length) {
      problems.push({
        code: 'MW_CONFIG_RULE',
        where: where(),
        message: `rule ${r.name} needs ${missing.join(', ')} (a new rule must say on which events, key, count, limit and window)`,
      });
      continue;
    }
    let uses: Rule['uses'];
    if (r.uses !== undefined) {
      const target = live.find((x) => x.rule.name === r.uses)?.rule;
      if (
        !target ||
        target.uses !== undefined ||
        target.count === undefined ||
        target.window === undefined ||
        target.limit === undefined
      ) {
        problems.push({
          code: 'MW_CONFIG_RULE',
          where: where('uses'),
          message: `rule ${r.name}: uses ${JSON.stringify(r.uses)}, which is not an enabled rule with its own counter; name one of: ${live
            .filter((x) => !x.rule.uses)
            .map((x) => x.rule.name)
            .join(', ')}`,
        });
        continue;
      }
      if (target.key !== r.key) {
        problems.push({
          code: 'MW_CONFIG_RULE',
          where: where('key'),
          message: `rule ${r.name}: key must be ${target.key}, the key of rule ${target.name} it uses`,
        });
        continue;
      }
      uses = { rule: target.name, count: target.count, windowMs: target.window, limit: target.limit };
    }
    if (r.baseline && (r.count?.startsWith('distinct:') || r.count === 'failures')) {
      problems.push({
        code: 'MW_CONFIG_RULE',
        where: where('baseline'),
        message: `rule ${r.name}: a baseline compares rates; use count: messages, recipients, bytes or events`,
      });
    }
    const then = typeof r.then === 'string' ? { action: r.then } : (r.then ?? { action: 'tempfail' as const });
    if (then.action === 'delay' && then.delay === undefined) {
      problems.push({
        code: 'MW_CONFIG_RULE',
        where: where('then'),
        message: `rule ${r.name}: action delay needs then.delay (e.g. 3s)`,
      });
    }
    if (
      r.min_addresses !== undefined &&
      (r.uses !== undefined || (r.check_on ?? []).length > 0 || r.on?.some((k) => k !== 'auth-result'))
    ) {
      // The store decides whether an attempt passes without it: a refusal must not depend on it.
      problems.push({
        code: 'MW_CONFIG_RULE',
        where: where('min_addresses'),
        message: `rule ${r.name}: min_addresses works only for rules that count login results (on: [auth-result]) without check_on or uses`,
      });
    }
    const listed = r.when?.listed;
    const unknownZones = Array.isArray(listed) ? listed.filter((z) => !dnsblZones.has(dnsName(z))) : [];
    // The built-in rules on listings wait, inert, for zones; one the file writes itself is surely meant to act.
    const written = index === undefined ? undefined : cfg.rules?.[index]?.when?.listed;
    if (written !== undefined && written !== false && (dnsblZones.size === 0 || unknownZones.length > 0)) {
      problems.push({
        code: 'MW_CONFIG_RULE',
        where: where('when'),
        message:
          dnsblZones.size === 0
            ? `rule ${r.name}: when.listed needs blocklists in dnsbl.zones; without them no client is ever listed`
            : `rule ${r.name}: when.listed names ${unknownZones.join(', ')}, not in dnsbl.zones (${[...dnsblZones].join(', ')})`,
      });
    }
    if (r.when?.refused === true && r.when.success === true) {
      problems.push({
        code: 'MW_CONFIG_RULE',
        where: where('when'),
        message: `rule ${r.name}: a refused login is never a success; drop when.success or when.refused`,
      });
    }
    const b = r.baseline;
    out.push({
      name: r.name,
      description: r.description ?? '',
      mode: r.mode ?? 'enforce',
      on: r.on as EventKind[],
      checkOn: (r.check_on ?? []) as EventKind[],
      exceptKnownGood: r.except_known_good ?? false,
      key: r.key as Rule['key'],
      count: (uses?.count ?? r.count) as CountKind,
      limit: r.limit ?? b?.floor ?? 0,
      windowMs: uses?.windowMs ?? (r.window as number),
      when: { ...r.when, ...(Array.isArray(listed) ? { listed: listed.map((z) => dnsName(z) as string) } : {}) },
      then: {
        action: then.action,
        delaySeconds: then.delay === undefined ? 0 : Math.ceil(then.delay / 1000),
        message: then.message ?? '',
        ban: then.ban === true ? 'ip' : then.ban === false ? undefined : then.ban,
        suspendMs: then.suspend,
        notify: then.notify ?? false,
      },
      minAddresses: r.min_addresses,
      overrides: new Map(Object.entries(r.overrides ?? {}).map(([k, v]) => [k.toLowerCase(), v])),
      uses,
      baseline: b ? { factor: b.factor, floor: b.floor, tauMs: b.half_life / Math.LN2 } : undefined,
    });
  }
  return out;
}

/** The effective configuration as plain data, durations written back as text (for check-config). */
const hp = (n: { host: string; port: number }): string =>
  n.host.includes(':') ? `[${n.host}]:${n.port}` : `${n.host}:${n.port}`;

export function describeSettings(s: Settings): Record<string, unknown> {
  const listen = (ts: ListenTarget[]): string[] =>
    ts.map((t) =>
      t.kind === 'unix' ? t.path : t.host.includes(':') ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`,
    );
  const p = s.policy;
  return {
    config_file: s.file ?? '(none: built-in defaults)',
    data_dir: s.dataDir,
    locale: s.locale,
    listen: { postfix: listen(s.listen.postfix), dovecot: listen(s.listen.dovecot), admin: listen(s.listen.admin) },
    log: { level: s.logLevel, format: s.logFormat ?? 'pretty on a terminal, else json' },
    networks: { ipv4_prefix: p.ipv4Prefix, ipv6_prefix: p.ipv6Prefix },
    allowlist: s.allowlist,
    bans: {
      duration: formatDuration(p.escalation.baseMs),
      factor: p.escalation.factor,
      max: formatDuration(p.escalation.maxMs),
      lookback: formatDuration(p.escalation.lookbackMs),
      ipv6_aggregate: p.ipv6Aggregate,
    },
    suspensions: { duration: formatDuration(p.suspensionMs), block_login: p.suspensionBlocksLogin },
    known_good: { window: formatDuration(p.knownGood.windowMs) },
    shared_address: { users: p.shared.minUsers, window: formatDuration(p.shared.windowMs) },
    dovecot: {
      api_header: s.dovecot.apiHeader ? `${s.dovecot.apiHeader.name}: (set)` : '(none)',
      budget: formatDuration(s.dovecot.budgetMs),
      max_delay: formatDuration(s.dovecot.maxDelayMs),
      smtp_max_delay: formatDuration(s.dovecot.smtpMaxDelayMs),
      repeat_window: formatDuration(s.dovecot.repeatWindowMs),
      max_connections: s.dovecot.limits.maxConnections,
      max_connections_per_peer: s.dovecot.limits.maxConnectionsPerPeer,
      headers_timeout: formatDuration(s.dovecot.headersTimeoutMs),
      request_timeout: formatDuration(s.dovecot.requestTimeoutMs),
      max_body: s.dovecot.maxBody,
    },
    postfix: {
      budget: formatDuration(s.postfix.budgetMs),
      idle_timeout: formatDuration(s.postfix.idleTimeoutMs),
      max_line: s.postfix.maxLine,
      max_attributes: s.postfix.maxAttributes,
      repeat_window: formatDuration(s.postfix.repeatWindowMs),
      max_connections: s.postfix.limits.maxConnections,
      max_connections_per_peer: s.postfix.limits.maxConnectionsPerPeer,
    },
    node: s.node,
    store: {
      max_keys: s.store.maxKeys,
      snapshot_interval: formatDuration(s.store.snapshotMs),
      // The embedded store shows only its own keys (backend: memory is the default).
      ...(s.redis
        ? {
            backend: 'redis',
            url: redactUrl(s.redis.url),
            prefix: s.redis.prefix,
            timeout: formatDuration(s.redis.timeoutMs),
            ...(s.redis.sentinels
              ? { sentinels: s.redis.sentinels.map(hp), sentinel_master: s.redis.sentinelMaster }
              : {}),
            ...(s.redis.cluster ? { cluster: s.redis.cluster.map(hp) } : {}),
          }
        : {}),
    },
    alerts: {
      cooldown: formatDuration(s.alerts.cooldownMs),
      queue_max: s.alerts.queueMax,
      retries: s.alerts.retries,
      email: s.alerts.email.to.length
        ? { relay: `${s.alerts.email.host}:${s.alerts.email.port}`, from: s.alerts.email.from, to: s.alerts.email.to }
        : 'off (alerts.email.to is empty)',
      webhook: {
        url: s.alerts.webhook.url ?? '(none)',
        secret: s.alerts.webhook.secret ? '(set)' : '(none)',
        timeout: formatDuration(s.alerts.webhook.timeoutMs),
      },
    },
    firewall: s.firewall,
    dns: {
      servers: s.dns.servers.map(describeServer),
      timeout: formatDuration(s.dns.timeoutMs),
      cache_entries: s.dns.cacheEntries,
      max_in_flight: s.dns.maxInFlight,
    },
    dnsbl: {
      zones: p.dnsbl.zones.map((z) => ({ zone: z.zone, weight: z.weight, codes: describeCodes(z.codes) })),
      threshold: p.dnsbl.threshold,
    },
    reputation: {
      addresses: s.reputation.addresses,
      domains: s.reputation.domains,
      zones: s.reputation.zones.map((z) => ({ zone: z.zone, type: z.type, codes: describeCodes(z.codes) })),
      interval: formatDuration(s.reputation.intervalMs),
    },
    logs: s.logs.map((l) => ({
      ...(l.kind === 'file'
        ? { path: l.path, format: l.format }
        : { journal: { units: l.units, command: l.command, args: l.args } }),
      ...(l.trustForwarded ? { trust_forwarded: true } : {}),
    })),
    rules: p.rules.map((r) => ({
      name: r.name,
      mode: r.mode,
      on: r.on,
      ...(r.checkOn.length ? { check_on: r.checkOn } : {}),
      ...(Object.keys(r.when).length ? { when: r.when } : {}),
      ...(r.exceptKnownGood ? { except_known_good: true } : {}),
      ...(r.minAddresses !== undefined ? { min_addresses: r.minAddresses } : {}),
      key: r.key,
      count: r.count,
      limit: r.limit,
      window: formatDuration(r.windowMs),
      then: {
        action: r.then.action,
        ...(r.then.delaySeconds ? { delay: `${r.then.delaySeconds}s` } : {}),
        ...(r.then.message ? { message: r.then.message } : {}),
        ...(r.then.ban ? { ban: r.then.ban } : {}),
        ...(r.then.suspendMs ? { suspend: formatDuration(r.then.suspendMs) } : {}),
        ...(r.then.notify ? { notify: true } : {}),
      },
      ...(r.uses ? { uses: r.uses.rule } : {}),
      ...(r.baseline
        ? {
            baseline: {
              factor: r.baseline.factor,
              floor: r.baseline.floor,
              half_life: formatDuration(Math.round(r.baseline.tauMs * Math.LN2)),
            },
          }
        : {}),
      ...(r.overrides.size ? { overrides: Object.fromEntries(r.overrides) } : {}),
    })),
  };
}
