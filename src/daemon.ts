/*
 * daemon — wires config → store → decider → adapters → admin, and owns the
 * process lifecycle: start, SIGHUP reload (a bad new config is refused and
 * the old one stays), graceful stop on SIGTERM/SIGINT (listeners closed,
 * counters snapshotted, SQLite closed).
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Firewall } from './actions/firewall.js';
import { describeAlerts, Notifier } from './actions/notify.js';
import { DovecotPolicyServer } from './adapters/dovecot/server.js';
import { PostfixPolicyServer } from './adapters/postfix/server.js';
import { Activity } from './admin/activity.js';
import { buildAdminApi } from './admin/api.js';
import { Metrics } from './admin/metrics.js';
import type { Settings } from './config/compile.js';
import { ConfigError } from './config/errors.js';
import { loadSettings, type Overrides } from './config/load.js';
import { RuntimeAllowlist } from './allowlist.js';
import { Decider } from './decider.js';
import { DnsService } from './dns/service.js';
import {
  ADMIN_MAX_CONNECTIONS,
  describeTarget,
  fitConnectionCaps,
  openFileLimit,
  exposureWarnings,
  prepareUnixSocket,
} from './listen.js';
import { setLogFormat } from './log.js';
import { LogFollowers } from './logs/followers.js';
import type { DiskHealth } from './store/disk-writes.js';
import { openStore } from './store/open.js';

export const VERSION = '0.1.0';

export function adminSocketPath(dataDir: string): string {
  return join(dataDir, 'admin.sock');
}

/** The admin token: from `<data>/admin.token`, created (mode 0600) on first start. */
export function ensureToken(dataDir: string): string {
  const file = join(dataDir, 'admin.token');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const token = randomBytes(32).toString('base64url');
  writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
  return token;
}

/**
 * A listener that cannot open at start. It is the operator's to fix, not a bug, so it is one line that
 * says what to do, with no stack trace (the CLI prints `mailwarden: ` and the error's stack).
 */
export class ListenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ListenError';
    this.stack = message;
  }
}

const LISTEN_FAILURES: Record<string, string> = {
  EADDRINUSE: 'address already in use; stop the other process or set',
  EACCES: 'permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE); set',
  EADDRNOTAVAIL: 'this host has no such address; set',
  EEXIST: 'a file that is not a socket is in the way; move it or set',
};

/** Runs a listener's start, turning "address in use" and its kin into a ListenError naming the config key. */
async function listening<T>(what: string, key: string, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { address?: string; port?: number };
    const failure = e.code === undefined ? undefined : LISTEN_FAILURES[e.code];
    if (failure === undefined || e.address === undefined) throw err;
    const addr = e.port === undefined ? e.address : describeTarget({ kind: 'tcp', host: e.address, port: e.port });
    throw new ListenError(`cannot listen on ${addr} (${what}): ${failure} ${key}`);
  }
}

export interface DaemonHandle {
  settings: Settings;
  bound: { postfix: string[]; dovecot: string[]; admin: string[] };
  reload(): Promise<boolean>;
  stop(): Promise<void>;
}

export async function startDaemon(
  settings: Settings,
  logger: Logger,
  reloadFrom: { file: string | undefined; overrides: Overrides },
  now: () => number = Date.now,
): Promise<DaemonHandle> {
  const started = now();
  // log.format is in the settings; the CLI made the logger before it had them.
  setLogFormat(logger, settings.logFormat);
  mkdirSync(settings.dataDir, { recursive: true, mode: 0o700 });
  // The embedded store, or in cluster mode Redis backed by local memory (store/open.ts).
  let onDisk = (_h: DiskHealth): void => undefined;
  const store = await openStore(settings, logger, now, (h) => onDisk(h));
  const node = settings.node;
  const notifier = new Notifier(settings.alerts, logger, node);
  // The data directory failing is loud: an error line when it starts (and at start), an alert, a line when it ends.
  onDisk = (h) => {
    if (h.ok) {
      logger.info({ dataDir: settings.dataDir }, 'persistence recovered: every waiting write is on disk');
      return;
    }
    const reason = `persistence degraded: ${h.error ?? 'unknown error'}; bans are enforced from memory and written when the data directory takes them again`;
    logger.error({ dataDir: settings.dataDir, queued: h.queued }, reason);
    const time = now();
    const evidence = { dataDir: settings.dataDir, queued: h.queued, since: new Date(h.since ?? time).toISOString() };
    notifier.notify(
      { type: 'notify', rule: 'persistence', subject: settings.dataDir, ip: '', action: 'allow', reason, evidence },
      time,
      {
        bans: [],
        suspensions: [],
      },
    );
  };
  const atStart = store.stats(now()).persistence;
  if (atStart && !atStart.ok) onDisk(atStart);
  const decider = new Decider(settings.policy, store, logger, notifier);
  // Log lines are decided like the hooks' requests; positions live in the node's own SQLite.
  const logs = new LogFollowers({
    evaluate: decider.evaluate,
    positions: ('local' in store ? store.local : store).db,
    logger,
    now,
    hooks: settings.listen.dovecot.length > 0,
  });
  for (const w of exposureWarnings(settings)) logger.warn(w);
  const caps = fitConnectionCaps(settings, openFileLimit());
  if (caps.lowered)
    logger.warn(
      { openFiles: caps.limit, postfix: caps.postfix, dovecot: caps.dovecot },
      'connection caps lowered to fit the open-file limit; raise it (systemd: LimitNOFILE=) to serve more',
    );
  // DNSBL answers on Postfix events (policy in force: dnsbl reloads with the rules); the watch on our own name.
  const dns = new DnsService(settings, {
    policy: () => decider.policy,
    alert: (e, time) => notifier.notify(e, time, { bans: [], suspensions: [] }),
    logger,
    now,
  });
  const postfix = new PostfixPolicyServer({
    evaluate: decider.evaluate,
    logger,
    now,
    budgetMs: settings.postfix.budgetMs,
    idleTimeoutMs: settings.postfix.idleTimeoutMs,
    maxLine: settings.postfix.maxLine,
    maxAttributes: settings.postfix.maxAttributes,
    repeatWindowMs: settings.postfix.repeatWindowMs,
    limits: caps.postfix,
    listing: dns.dnsbl.attach,
  });
  const dovecot = new DovecotPolicyServer({
    evaluate: (event) => {
      logs.hookReported(event);
      return decider.evaluate(event);
    },
    logger,
    now,
    budgetMs: settings.dovecot.budgetMs,
    maxDelayMs: settings.dovecot.maxDelayMs,
    smtpMaxDelayMs: settings.dovecot.smtpMaxDelayMs,
    repeatWindowMs: settings.dovecot.repeatWindowMs,
    apiHeader: settings.dovecot.apiHeader,
    limits: caps.dovecot,
    headersTimeoutMs: settings.dovecot.headersTimeoutMs,
    requestTimeoutMs: settings.dovecot.requestTimeoutMs,
    maxBody: settings.dovecot.maxBody,
  });
  let current = settings;
  // The node's own memory: in cluster mode it mirrors the shared bans, so each node's kernel gets them all.
  const local = 'local' in store ? store.local : store;
  const firewall = new Firewall(settings.firewall, await local.listBans(now()), {
    logger,
    now,
    allowed: () => [
      ...current.allowlist.networks,
      ...local.allowEntries(now()).flatMap((e) => (e.kind === 'network' ? [e.subject] : [])),
    ],
  });
  local.onBanChange = (change) => firewall.change(change);
  // The config's policy plus the runtime allowlist (node-local: the cluster's local memory).
  const allowlist = new RuntimeAllowlist(
    local,
    () => current,
    (policy) => {
      decider.policy = policy;
      firewall.allowChanged();
    },
    now,
  );
  allowlist.refresh();
  const activity = new Activity(now(), () => decider.policy);
  const metrics = new Metrics({
    store: () => store.stats(now()),
    adapters: () => ({ postfix: postfix.stats, dovecot: dovecot.stats }),
    alerts: () => notifier.stats,
    dns: () => dns.status(),
    firewall: () => firewall.status(),
  });
  decider.onDecision = (event, d, seconds) => {
    activity.record(event, d);
    metrics.decision(event, d, seconds);
  };
  decider.onCommitted = (done, time) => {
    metrics.committed(done);
    for (const b of done.bans)
      activity.publish({ time, kind: 'ban', subject: b.subject, rule: b.rule, reason: b.reason });
    for (const x of done.suspensions)
      activity.publish({ time, kind: 'suspend', user: x.user, rule: x.rule, reason: x.reason });
  };
  const status = (): Record<string, unknown> => ({
    name: 'mailwarden',
    version: VERSION,
    node,
    pid: process.pid,
    uptimeSeconds: Math.round((now() - started) / 1000),
    configFile: current.file ?? null,
    locale: current.locale,
    dataDir: current.dataDir,
    rules: current.policy.rules.map((r) => ({ name: r.name, mode: r.mode })),
    allowlist: { config: current.allowlist.networks.length + current.allowlist.users.length, runtime: allowlist.runtimeCount() },
    store: store.stats(now()),
    postfix: { listen: bound.postfix, ...postfix.stats },
    dovecot: { listen: bound.dovecot, ...dovecot.stats },
    alerts: { channels: notifier.channels, ...notifier.stats },
    logs: logs.status(),
    firewall: firewall.status(),
    ...dns.status(),
    memory: { rssBytes: process.memoryUsage().rss },
  });
  const reload = (): Promise<{ ok: boolean; problems?: string }> => {
    try {
      const next = loadSettings(reloadFrom.file, reloadFrom.overrides);
      current = next;
      allowlist.refresh();
      firewall.reload(next.firewall);
      void logs.follow(next.logs);
      logger.info(
        { config: next.file ?? '(built-in defaults)', rules: next.policy.rules.length },
        'configuration reloaded',
      );
      return Promise.resolve({ ok: true });
    } catch (err) {
      const problems = err instanceof ConfigError ? err.message : String(err);
      logger.error({ problems }, 'new configuration refused; the running one stays');
      return Promise.resolve({ ok: false, problems });
    }
  };
  const ctx = { store, allowlist, policy: () => decider.policy, now, status, activity, metrics, reload };
  const token = ensureToken(settings.dataDir);
  const admins: FastifyInstance[] = [];
  const bound = { postfix: [] as string[], dovecot: [] as string[], admin: [] as string[] };
  const dashboards: string[] = [];

  try {
    bound.postfix = await listening('Postfix policy', 'listen.postfix', () => postfix.start(settings.listen.postfix));
    bound.dovecot = await listening('Dovecot auth policy', 'listen.dovecot', () =>
      dovecot.start(settings.listen.dovecot),
    );
    const local = buildAdminApi(ctx, { token: undefined });
    const sock = adminSocketPath(settings.dataDir);
    try {
      await listening('CLI admin socket', 'data_dir (another mailwarden may be using this data directory)', async () => {
        await prepareUnixSocket(sock);
        await local.listen({ path: sock });
      });
      chmodSync(sock, 0o600);
      admins.push(local);
      bound.admin.push(sock);
    } catch (err) {
      // A read-only data directory (already reported as degraded persistence) must not stop the mail answers.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EROFS' && code !== 'EACCES' && code !== 'EPERM') throw err;
      await local.close();
      logger.error(
        { socket: sock, code },
        `the CLI socket cannot be created (${code}); the CLI cannot reach this daemon until the data directory is writable; the admin API on its TCP listener still works`,
      );
    }
    for (const t of settings.listen.admin) {
      const app = buildAdminApi(ctx, { token });
      // The CLI's socket above is never capped; these must not take the descriptors it needs.
      app.server.maxConnections = ADMIN_MAX_CONNECTIONS;
      const addr = await listening('admin API and dashboard', 'listen.admin', async () => {
        if (t.kind === 'unix') await prepareUnixSocket(t.path);
        return t.kind === 'unix' ? app.listen({ path: t.path }) : app.listen({ host: t.host, port: t.port });
      });
      admins.push(app);
      bound.admin.push(addr.replace(/^http:\/\//, ''));
      if (t.kind === 'tcp') dashboards.push(`${addr}/`);
    }
  } catch (err) {
    await postfix.stop();
    await dovecot.stop();
    await Promise.all(admins.map((a) => a.close()));
    await firewall.close();
    await store.close();
    throw err;
  }

  await logs.follow(settings.logs);

  dns.start();
  const snapshot = setInterval(() => {
    store.snapshot(now()).catch((err: unknown) => logger.error({ err }, 'counter snapshot failed'));
  }, settings.store.snapshotMs);
  snapshot.unref();

  // First, so a person reading the start line finds where to point the browser and where its token is.
  logger.info(
    {
      dashboard: dashboards[0] ?? 'none (listen.admin has no TCP address)',
      tokenFile: join(settings.dataDir, 'admin.token'),
      version: VERSION,
      config: settings.file ?? '(built-in defaults)',
      data: settings.dataDir,
      postfix: bound.postfix,
      admin: bound.admin,
      dovecot: bound.dovecot,
      rules: settings.policy.rules.length,
      bans: store.stats(now()).activeBans,
      store: store.stats(now()).mode ?? store.backend,
      node,
      alerts: describeAlerts(settings.alerts),
      firewall:
        settings.firewall.backend === 'none' ? 'off' : `${settings.firewall.backend}, table inet ${settings.firewall.table}`,
    },
    'mailwarden started',
  );

  return {
    settings,
    bound,
    reload: async () => (await reload()).ok,
    stop: async () => {
      // First: what the logs told last is decided while the store is open.
      await logs.stop();
      clearInterval(snapshot);
      dns.stop();
      allowlist.close();
      await postfix.stop();
      await dovecot.stop();
      await Promise.all(admins.map((a) => a.close()));
      notifier.close();
      await firewall.close();
      await store.close();
      logger.info('mailwarden stopped');
    },
  };
}
