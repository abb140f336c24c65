#!/usr/bin/env node
/*
 * main — the `mailwarden` command line.
 *
 *   mailwarden serve                       run the daemon
 *   mailwarden check-config [file]         validate a config, print the effective policy
 *   mailwarden status | reload             the running daemon
 *   mailwarden bans list|check|add|remove  manage bans
 *   mailwarden users list|suspend|resume   manage suspended users
 *   mailwarden allow list|add|remove       the runtime allowlist
 *   mailwarden audit [--since] [--subject] the audit trail (export with --all)
 *   mailwarden backup <file>               a consistent copy of the database, while running
 *   mailwarden explain <ip|network|user>   why is it limited, banned or suspended?
 *   mailwarden reputation                  are our own addresses or domains on a blocklist?
 *   mailwarden doctor                      is the mail server locked down and wired to us?
 *   mailwarden firewall script             the nft script loading the bans in force into the kernel
 *
 * Every command but serve and check-config talks to the running daemon over
 * the admin unix socket in a data dir found by admin/client.ts findDaemon
 * (never by loading the whole config). Where settings come from, strongest
 * first: flags, MAILWARDEN_* environment variables, the config file, defaults.
 *
 * Exit codes: 0 done; 1 refused, not found or bad input; 2 the daemon was not
 * reached (or, for serve and check-config, the config is wrong).
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { stringify } from 'yaml';
import { call, AdminError, findDaemon, findDataDir } from './admin/client.js';
import { describeSettings, type Settings } from './config/compile.js';
import { ConfigError } from './config/errors.js';
import { loadSettings, overridesFromEnv, type Overrides } from './config/load.js';
import { ListenError, startDaemon, VERSION } from './daemon.js';
import { isoTime } from './engine/decide.js';
import { loadScript, type FirewallStatus } from './actions/firewall.js';
import type { BanRecord, SuspensionRecord } from './engine/types.js';
import type { AllowEntry } from './allowlist.js';
import { parseSubject } from './engine/address.js';
import { reputationLines, type ReputationView } from './dns/reputation.js';
import type { Explanation } from './explain.js';
import { backupDatabase, type BackupReport } from './store/backup.js';
import { DATABASE_FILE, SchemaError } from './store/sqlite.js';
import type { AuditRow } from './store/types.js';
import { exposureWarnings } from './listen.js';
import { runDoctor, type DoctorOptions } from './doctor/index.js';
import { createLogger } from './log.js';
import { tuneHeap } from './heap.js';

interface GlobalOpts {
  config?: string;
  data?: string;
  postfixListen?: string;
  dovecotListen?: string;
  adminListen?: string;
  json?: boolean;
}

function overrides(o: GlobalOpts): Overrides {
  const env = overridesFromEnv(process.env);
  const flag = (v: string | undefined, name: string): Overrides['dataDir'] =>
    v ? { value: v, from: name } : undefined;
  return {
    dataDir: flag(o.data, '--data') ?? env.dataDir,
    postfixListen: flag(o.postfixListen, '--postfix-listen') ?? env.postfixListen,
    dovecotListen: flag(o.dovecotListen, '--dovecot-listen') ?? env.dovecotListen,
    adminListen: flag(o.adminListen, '--admin-listen') ?? env.adminListen,
  };
}

function configFile(o: GlobalOpts): string | undefined {
  return o.config ?? (process.env.MAILWARDEN_CONFIG || undefined);
}

function settingsOrExit(file: string | undefined, ov: Overrides): Settings {
  try {
    return loadSettings(file, ov);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n${err.problems.length} problem(s); mailwarden did not start.\n`);
      process.exit(2);
    }
    throw err;
  }
}

const iso = (t: number): string => isoTime(t).replace('.000Z', 'Z');

/** The quick start's data dir: `data/` at the top of the repository this file was installed from. */
const INSTALL_DATA_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'data');

/** Fields that hold ms since the epoch in API answers; --json prints them as ISO-8601. */
const TIME_FIELDS = new Set(['since', 'until', 'time', 'keysSampledAt']);

function withIsoTimes(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(withIsoTimes);
  if (v === null || typeof v !== 'object') return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    out[k] = TIME_FIELDS.has(k) && typeof x === 'number' ? isoTime(x) : withIsoTimes(x);
  }
  return out;
}

const json = (v: unknown): void => console.log(JSON.stringify(withIsoTimes(v), null, 2));

const count = (n: number): string => n.toLocaleString('en-US');
/** `1 line`, `2 lines`: a count and its noun. */
const counted = (n: number, one: string, many = `${one}s`): string => `${count(n)} ${n === 1 ? one : many}`;

/** "showing 1–100 of 1,106; --offset 100 for more": a list never stops without saying so. */
function pageLine(total: number, offset: number, shown: number, what: string): string {
  if (total === 0) return `no ${what}`;
  if (shown === 0) return `none shown: ${count(total)} ${what} in all, --offset ${offset} is past the end`;
  const last = offset + shown;
  const more = last < total ? `; --offset ${last} for more` : '';
  return `showing ${count(offset + 1)}–${count(last)} of ${count(total)} ${what}${more}`;
}

function banLine(b: BanRecord): string {
  return `${b.subject.padEnd(24)} until ${iso(b.until)}  offence ${b.offence}  rule ${b.rule}  by ${b.actor}  ${b.reason}`;
}

function allowLine(e: AllowEntry): string {
  const until = e.until === null ? 'until removed' : `until ${iso(e.until)}`;
  const from = e.source === 'config' ? 'config file' : `${until}  by ${e.actor}  ${e.reason}`;
  return `${e.subject.padEnd(32)} ${e.kind.padEnd(7)} ${from}`;
}

function auditLine(a: AuditRow): string {
  const ev = Object.entries(a.evidence)
    .map(([k, v]) => `${k}=${TIME_FIELDS.has(k) && typeof v === 'number' ? iso(v) : JSON.stringify(withIsoTimes(v))}`)
    .join(' ');
  return `${iso(a.time)} ${a.kind.padEnd(7)} ${a.subject} rule ${a.rule} by ${a.actor}${a.node ? `@${a.node}` : ''}: ${a.reason}${ev ? `  ${ev}` : ''}`;
}

function printSuspensions(items: SuspensionRecord[]): void {
  for (const s of items)
    console.log(`${s.user.padEnd(32)} until ${iso(s.until)}  rule ${s.rule}  by ${s.actor}  ${s.reason}`);
}

function printExplanation(e: Explanation): void {
  console.log(`${e.kind} ${e.subject}`);
  for (const line of e.summary) console.log(`  ${line}`);
  if (e.counters.length) {
    console.log('counters:');
    for (const c of e.counters)
      console.log(
        `  ${c.rule.padEnd(28)} ${String(c.count).padStart(6)}/${c.limit} per ${c.window}  (${c.subject}${c.mode === 'observe' ? ', observe' : ''})`,
      );
  }
  if (e.audit.length) {
    console.log('audit trail (newest first):');
    for (const a of e.audit) {
      console.log(`  ${iso(a.time)} ${a.kind.padEnd(7)} ${a.subject} rule ${a.rule} by ${a.actor}: ${a.reason}`);
    }
  }
}

interface StatusView {
  version: string;
  pid: number;
  uptimeSeconds: number;
  configFile: string | null;
  dataDir: string;
  rules: Array<{ name: string; mode: string }>;
  allowlist: { config: number; runtime: number };
  store: {
    backend: string;
    counterKeys: number;
    activeBans: number;
    activeSuspensions: number;
    mode?: string;
    pending?: number;
    persistence?: { ok: boolean; queued: number; dropped: number; error: string | null; since: number | null };
    redis?: { connected: boolean; lastError: string | null };
  };
  postfix: { listen: string[]; requests?: number; budgetMisses?: number; errors?: number };
  dovecot: { listen: string[]; requests?: number; budgetMisses?: number; errors?: number };
  alerts?: { channels?: unknown };
  firewall?: FirewallStatus;
  logs?: { sources: LogSourceView[] };
}

/** A followed log source as /v1/status shows it (logs/followers.ts SourceStatus); files have an `offset`. */
interface LogSourceView {
  source: string;
  state: string;
  lines: number;
  events: number;
  offset?: number;
  [detail: string]: unknown;
}

/** A source's troubles worth a look, the counters that are not zero. */
const LOG_TROUBLES: Array<[string, string, string?]> = [
  ['readErrors', 'read error'],
  ['badEntries', 'unreadable journal entry', 'unreadable journal entries'],
  ['restarts', 'journalctl restart'],
  ['tooLong', 'overlong line'],
];

function logLine(s: LogSourceView): string {
  const troubles = LOG_TROUBLES.filter(([k]) => Number(s[k] ?? 0) > 0).map(([k, one, many]) =>
    counted(Number(s[k]), one, many),
  );
  return `${s.source}: ${s.state}, ${counted(s.lines, 'line')}, ${counted(s.events, 'event')}${troubles.length ? ` (${troubles.join(', ')})` : ''}`;
}

/** What is wrong right now, one line each; empty when the daemon is healthy. */
function degraded(st: StatusView): string[] {
  const out: string[] = [];
  const p = st.store.persistence;
  if (p && !p.ok) {
    out.push(
      `store.persistence: the data directory refuses writes${p.since ? ` since ${iso(p.since)}` : ''}` +
        ` (${p.error ?? 'unknown error'}); ${p.queued} write(s) queued, ${p.dropped} audit row(s) dropped`,
    );
  }
  if (st.store.mode === 'local-fallback') out.push('store.mode: local-fallback (Redis unreachable or slow)');
  if (st.store.redis && !st.store.redis.connected)
    out.push(`store.redis: not connected${st.store.redis.lastError ? ` (${st.store.redis.lastError})` : ''}`);
  if (st.store.pending) out.push(`store.pending: ${st.store.pending} change(s) not yet pushed to Redis`);
  for (const l of st.logs?.sources ?? []) {
    if (l.state !== 'waiting') continue;
    out.push(
      `logs: ${l.source} is not read: ${l.offset === undefined ? 'journalctl is not running (it is started again)' : 'the file does not exist (it is looked for again)'}`,
    );
  }
  const f = st.firewall;
  if (f?.state === 'degraded')
    out.push(
      `firewall: nft fails${f.since ? ` since ${iso(f.since)}` : ''} (${f.lastError ?? 'unknown error'});` +
        ' bans are refused inline only, the kernel does not drop them; retrying',
    );
  return out;
}

function printStatus(st: StatusView, socket: string): void {
  const rules = st.rules.filter((r) => r.mode !== 'off');
  const observe = rules.filter((r) => r.mode === 'observe').length;
  const lines = [
    `mailwarden ${st.version}, pid ${st.pid}, up ${st.uptimeSeconds}s`,
    `config     ${st.configFile ?? '(built-in defaults)'}`,
    `data       ${st.dataDir}`,
    `admin      ${socket}`,
    `postfix    ${st.postfix.listen.join(', ') || '(not listening)'}  requests ${count(st.postfix.requests ?? 0)}`,
    `dovecot    ${st.dovecot.listen.join(', ') || '(not listening)'}  requests ${count(st.dovecot.requests ?? 0)}`,
    `store      ${st.store.backend}${st.store.mode ? ` (${st.store.mode})` : ''}  counters ${count(st.store.counterKeys)}`,
    `bans       ${count(st.store.activeBans)}   suspended users ${count(st.store.activeSuspensions)}`,
    `rules      ${rules.length}${observe ? ` (${observe} observe only)` : ''}`,
    `allowlist  ${count(st.allowlist.config)} from the config file, ${count(st.allowlist.runtime)} added at run time`,
    `firewall   ${st.firewall && st.firewall.backend !== 'none' ? `${st.firewall.backend} table inet ${st.firewall.table}: ${st.firewall.state}, ${count(st.firewall.elements)} elements` : 'off'}`,
  ];
  const logs = st.logs?.sources ?? [];
  if (logs.length === 0) lines.push('logs       none followed');
  else logs.forEach((l, i) => lines.push(`${i === 0 ? 'logs      ' : '          '} ${logLine(l)}`));
  for (const l of lines) console.log(l);
  const bad = degraded(st);
  console.log(bad.length ? `DEGRADED:\n${bad.map((b) => `  ${b}`).join('\n')}` : 'state      ok');
}

interface Page<T> {
  total: number;
  offset: number;
  limit: number;
  items: T[];
}
type BanPage = Page<BanRecord>;
interface BanCheck {
  subject: string;
  allowlisted: boolean;
  bans: BanRecord[];
}

const PAGE_MAX = 1000;

function intOption(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0)
    throw new AdminError(`${name} must be a whole number ≥ 0, not ${JSON.stringify(v)}`, 400);
  return n;
}

async function main(argv: string[]): Promise<void> {
  const program = new Command('mailwarden')
    .version(VERSION)
    .description('Guards Postfix and Dovecot against password guessing and spam from stolen accounts.')
    .option('-c, --config <file>', 'YAML config file (or MAILWARDEN_CONFIG)')
    .option(
      '-d, --data <dir>',
      "data directory (or MAILWARDEN_DATA); the CLI otherwise looks in the config's data_dir, ./data, the quick start's data/ and /var/lib/mailwarden",
    )
    .showHelpAfterError();

  let socket: string | undefined;
  const adminSocket = async (): Promise<string> => {
    const o = program.opts<GlobalOpts>();
    // Only the data dir matters here, found without loading the config: a broken one must not lock the
    // administrator out.
    socket ??= await findDaemon({
      flag: o.data,
      env: process.env,
      configFile: configFile(o),
      cwd: process.cwd(),
      installDataDir: INSTALL_DATA_DIR,
    });
    return socket;
  };
  const admin = async <T>(method: string, path: string, body?: unknown): Promise<T> =>
    call<T>(await adminSocket(), method, path, body);
  const allPages = async <T>(path: string): Promise<T[]> => {
    const out: T[] = [];
    for (;;) {
      const r = await admin<Page<T>>('GET', `${path}?limit=${PAGE_MAX}&offset=${out.length}`);
      out.push(...r.items);
      if (r.items.length === 0 || out.length >= r.total) return out;
    }
  };
  const allBans = (): Promise<BanRecord[]> => allPages<BanRecord>('/v1/bans');

  program
    .command('serve')
    .description('run the daemon')
    .option(
      '--postfix-listen <addrs>',
      'Postfix policy listen address(es), comma-separated (or MAILWARDEN_POSTFIX_LISTEN)',
    )
    .option('--dovecot-listen <addrs>', 'Dovecot auth policy listen address (or MAILWARDEN_DOVECOT_LISTEN)')
    .option('--admin-listen <addrs>', 'admin API listen address(es) (or MAILWARDEN_ADMIN_LISTEN)')
    .action(async (cmdOpts: GlobalOpts) => {
      tuneHeap();
      const o = { ...program.opts<GlobalOpts>(), ...cmdOpts };
      const file = configFile(o);
      const ov = overrides(o);
      const settings = settingsOrExit(file, ov);
      const logger = createLogger(settings.logLevel);
      // Signals are handled from the first moment: one that comes while the daemon starts stops it once started.
      const held: { d?: Awaited<ReturnType<typeof startDaemon>> } = {};
      let wanted: string | undefined;
      let stopping = false;
      const stop = (sig: string): void => {
        const d = held.d;
        if (d === undefined) {
          wanted = sig;
          return;
        }
        if (stopping) return;
        stopping = true;
        logger.info({ signal: sig }, 'stopping');
        d.stop().then(
          () => process.exit(0),
          (err: unknown) => {
            logger.error({ err }, 'error while stopping');
            process.exit(1);
          },
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGHUP', () => void held.d?.reload());
      held.d = await startDaemon(settings, logger, { file, overrides: ov });
      if (wanted !== undefined) stop(wanted);
    });

  program
    .command('check-config [file]')
    .description('validate a config file and print the effective policy (built-in defaults without a file)')
    .option('--json', 'print JSON')
    .action((file: string | undefined, c: { json?: boolean }) => {
      const o = program.opts<GlobalOpts>();
      const s = settingsOrExit(file ?? configFile(o), overrides(o));
      const warnings = exposureWarnings(s);
      if (c.json) return json({ file: s.file ?? null, warnings, settings: describeSettings(s) });
      for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
      process.stdout.write(
        `# ${s.file ? `${s.file}: OK` : 'no config file: built-in defaults'}\n${stringify(describeSettings(s))}`,
      );
    });

  program
    .command('status')
    .description('the running daemon: listeners, store, degraded states, counts, version')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const st = await admin<StatusView>('GET', '/v1/status');
      if (o.json) json({ ...st, adminSocket: await adminSocket() });
      else printStatus(st, await adminSocket());
    });

  program
    .command('reload')
    .description('re-read the config file; a wrong one is refused and the running one stays')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const r = await admin<{ reloaded: boolean }>('POST', '/v1/reload');
      if (o.json) json(r);
      else console.log('configuration reloaded');
    });

  const bans = program.command('bans').description('list, check, add and remove bans');
  bans
    .command('list')
    .option('-q, --query <text>', 'filter by address, rule or reason')
    .option('--limit <n>', `how many to show (at most ${PAGE_MAX})`, '100')
    .option('--offset <n>', 'how many to skip', '0')
    .option('--json', 'print JSON')
    .action(async (o: { query?: string; limit: string; offset: string; json?: boolean }) => {
      const limit = intOption('--limit', o.limit, 100);
      const offset = intOption('--offset', o.offset, 0);
      const q = o.query ? `&q=${encodeURIComponent(o.query)}` : '';
      const r = await admin<BanPage>('GET', `/v1/bans?limit=${Math.max(1, limit)}&offset=${offset}${q}`);
      // An address searched for may be banned by a network around it, which a text search does not find.
      const cover =
        o.query && parseSubject(o.query)
          ? (await admin<BanCheck>('GET', `/v1/bans/check/${encodeURIComponent(o.query)}`)).bans.filter(
              (b) => !r.items.some((x) => x.subject === b.subject),
            )
          : [];
      if (o.json) return json(o.query && parseSubject(o.query) ? { ...r, coveredBy: cover } : r);
      for (const b of r.items) console.log(banLine(b));
      console.log(pageLine(r.total, r.offset, r.items.length, o.query ? 'matching bans' : 'active bans'));
      for (const b of cover) console.log(`${o.query ?? ''} is covered by ${b.subject} (rule ${b.rule}, until ${iso(b.until)})`);
    });
  bans
    .command('check <address>')
    .description('every ban that covers an address or network, wider networks included (exit 1 when none)')
    .option('--json', 'print JSON')
    .action(async (address: string, o: { json?: boolean }) => {
      const r = await admin<BanCheck>('GET', `/v1/bans/check/${encodeURIComponent(address)}`);
      if (o.json) json(r);
      else {
        if (r.bans.length === 0) console.log(`${r.subject} is not banned`);
        else console.log(`${r.subject} is banned by ${r.bans.length} ban(s):`);
        for (const b of r.bans) console.log(`  ${banLine(b)}`);
        if (r.allowlisted) console.log(`${r.subject} is allowlisted: no ban applies to it`);
      }
      if (r.bans.length === 0) process.exitCode = 1;
    });
  bans
    .command('add <subject>')
    .description('ban an address or network (CIDR) on every protocol')
    .option('--duration <d>', 'e.g. 2h, 7d, at most 3650d (default: the escalating ban length)')
    .option('--reason <text>', 'why (kept in the audit trail)')
    .option('--force', 'ban a network wider than IPv4 /8 or IPv6 /16, or one holding allowlisted addresses')
    .option('--json', 'print JSON')
    .action(async (subject: string, o: { duration?: string; reason?: string; force?: boolean; json?: boolean }) => {
      const body = { subject, duration: o.duration, reason: o.reason, force: o.force };
      const b = await admin<BanRecord>('POST', '/v1/bans', body);
      if (o.json) return json(b);
      // A wide network is allowed, but the operator should see how much it holds.
      const s = parseSubject(b.subject);
      const size = s && s.prefix < (s.v6 ? 48 : 16) ? ` (${s.v6 ? `2^${128 - s.prefix}` : count(2 ** (32 - s.prefix))} addresses)` : '';
      console.log(`banned ${b.subject}${size} until ${iso(b.until)}`);
    });
  bans
    .command('remove [subjects...]')
    .alias('rm')
    .description('lift bans: the subjects given, every ban of a rule (--rule), or every ban (--all --yes)')
    .option('--rule <name>', 'lift every ban made by this rule (manual: those made by an administrator)')
    .option('--all', 'lift every ban (needs --yes)')
    .option('--yes', 'confirm --all')
    .option('--json', 'print JSON')
    .action(async (subjects: string[], o: { rule?: string; all?: boolean; yes?: boolean; json?: boolean }) => {
      const ways = [subjects.length > 0, o.rule !== undefined, o.all === true].filter(Boolean).length;
      if (ways !== 1)
        throw new AdminError('give the subjects to unban, or --rule NAME, or --all --yes (one of them)', 400);
      if (o.all && !o.yes) throw new AdminError('--all lifts every ban; add --yes to confirm', 400);
      let targets = subjects;
      if (!subjects.length) {
        const every = await allBans();
        targets = (o.rule === undefined ? every : every.filter((b) => b.rule === o.rule)).map((b) => b.subject);
      }
      const removed: BanRecord[] = [];
      const notBanned: Array<{ subject: string; coveredBy: BanRecord[] }> = [];
      for (const subject of targets) {
        try {
          const r = await admin<{ removed: BanRecord }>('DELETE', `/v1/bans/${encodeURIComponent(subject)}`);
          removed.push(r.removed);
          if (!o.json) console.log(`unbanned ${r.removed.subject}`);
        } catch (err) {
          if (!(err instanceof AdminError) || err.status !== 404) throw err;
          // Not banned itself, but maybe inside a banned network: say which, or the operator thinks it is free.
          const c = await admin<BanCheck>('GET', `/v1/bans/check/${encodeURIComponent(subject)}`);
          notBanned.push({ subject: c.subject, coveredBy: c.bans });
          if (!o.json) {
            const cover = c.bans.map((b) => `${b.subject} (rule ${b.rule})`).join(', ');
            process.stderr.write(
              `mailwarden: ${c.subject} is not banned${cover ? `, but is covered by ${cover}: remove that to free it` : ''}\n`,
            );
          }
        }
      }
      if (o.json) json({ removed, notBanned });
      else if (!subjects.length) console.log(`${removed.length} ban(s) lifted`);
      if (subjects.length && notBanned.length) process.exitCode = 1;
    });

  const users = program.command('users').description('list, suspend and resume users');
  users
    .command('list')
    .option('--limit <n>', 'how many to show', '100')
    .option('--offset <n>', 'how many to skip', '0')
    .option('--json', 'print JSON')
    .action(async (o: { limit: string; offset: string; json?: boolean }) => {
      const limit = intOption('--limit', o.limit, 100);
      const offset = intOption('--offset', o.offset, 0);
      const r = await admin<Page<SuspensionRecord>>('GET', `/v1/users?limit=${Math.max(1, limit)}&offset=${offset}`);
      if (o.json) return json(r);
      printSuspensions(r.items);
      console.log(pageLine(r.total, r.offset, r.items.length, 'suspended users'));
    });
  users
    .command('suspend <user>')
    .description('stop a user from sending mail')
    .option('--duration <d>', 'e.g. 1d, at most 3650d (default: suspensions.duration)')
    .option('--reason <text>', 'why (kept in the audit trail)')
    .option('--json', 'print JSON')
    .action(async (user: string, o: { duration?: string; reason?: string; json?: boolean }) => {
      const s = await admin<SuspensionRecord>('POST', `/v1/users/${encodeURIComponent(user)}/suspend`, {
        duration: o.duration,
        reason: o.reason,
      });
      if (o.json) json(s);
      else console.log(`suspended ${s.user} until ${iso(s.until)}`);
    });
  users
    .command('resume <user>')
    .description('let a suspended user send again')
    .option('--json', 'print JSON')
    .action(async (user: string, o: { json?: boolean }) => {
      const r = await admin<{ resumed: SuspensionRecord }>('POST', `/v1/users/${encodeURIComponent(user)}/resume`);
      if (o.json) json(r);
      else console.log(`resumed ${r.resumed.user}`);
    });

  const allow = program
    .command('allow')
    .description('the runtime allowlist: addresses, networks and users exempt from every limit and ban');
  allow
    .command('list')
    .option('--limit <n>', `how many to show (at most ${PAGE_MAX})`, '100')
    .option('--offset <n>', 'how many to skip', '0')
    .option('--json', 'print JSON')
    .action(async (o: { limit: string; offset: string; json?: boolean }) => {
      const limit = intOption('--limit', o.limit, 100);
      const offset = intOption('--offset', o.offset, 0);
      const r = await admin<Page<AllowEntry>>('GET', `/v1/allowlist?limit=${Math.max(1, limit)}&offset=${offset}`);
      if (o.json) return json(r);
      for (const e of r.items) console.log(allowLine(e));
      console.log(pageLine(r.total, r.offset, r.items.length, 'allowlist entries'));
    });
  allow
    .command('add <subject>')
    .description('exempt an address, a network (CIDR) or a user from every limit and ban; kept across restarts')
    .option('--duration <d>', 'e.g. 2h, 7d, at most 3650d (default: until removed)')
    .option('--reason <text>', 'why (kept in the audit trail)')
    .option('--force', 'allowlist a network wider than IPv4 /8 or IPv6 /16')
    .option('--json', 'print JSON')
    .action(async (subject: string, o: { duration?: string; reason?: string; force?: boolean; json?: boolean }) => {
      const body = { subject, duration: o.duration, reason: o.reason, force: o.force };
      const e = await admin<AllowEntry & { bansOverlapping: BanRecord[] }>('POST', '/v1/allowlist', body);
      if (o.json) return json(e);
      console.log(`allowlisted ${e.subject}${e.until === null ? '' : ` until ${iso(e.until)}`}`);
      for (const b of e.bansOverlapping)
        console.log(`  note: the ban of ${b.subject} (rule ${b.rule}) stays, but no longer stops ${e.subject}`);
    });
  allow
    .command('remove <subjects...>')
    .alias('rm')
    .description('take entries off the runtime allowlist (config file entries are changed in the file)')
    .option('--json', 'print JSON')
    .action(async (subjects: string[], o: { json?: boolean }) => {
      const removed: AllowEntry[] = [];
      const refused: Array<{ subject: string; error: string }> = [];
      for (const subject of subjects) {
        try {
          const r = await admin<{ removed: AllowEntry }>('DELETE', `/v1/allowlist/${encodeURIComponent(subject)}`);
          removed.push(r.removed);
          if (!o.json) console.log(`removed ${r.removed.subject} from the allowlist`);
        } catch (err) {
          if (!(err instanceof AdminError) || err.unreachable) throw err;
          refused.push({ subject, error: err.message });
          if (!o.json) process.stderr.write(`mailwarden: ${err.message}\n`);
        }
      }
      if (o.json) json({ removed, refused });
      if (refused.length) process.exitCode = 1;
    });

  program
    .command('audit')
    .description('the audit trail, newest first: bans, lifts, suspensions, rule hits, allowlist changes')
    .option('--since <when>', 'from this time (2026-12-01T08:00Z) or this long ago (24h, 7d)')
    .option('--subject <s>', 'only this address, network or user (exactly)')
    .option('--limit <n>', `how many to show (at most ${PAGE_MAX})`, '100')
    .option('--offset <n>', 'how many to skip', '0')
    .option('--all', 'every row that matches, page after page (for an export)')
    .option('--json', 'print JSON (with --all: one JSON object per line)')
    .action(
      async (o: { since?: string; subject?: string; limit: string; offset: string; all?: boolean; json?: boolean }) => {
        const q = (limit: number, offset: number): string =>
          `/v1/audit?limit=${limit}&offset=${offset}` +
          (o.since ? `&since=${encodeURIComponent(o.since)}` : '') +
          (o.subject ? `&subject=${encodeURIComponent(o.subject)}` : '');
        const print = (a: AuditRow): void => console.log(o.json ? JSON.stringify(withIsoTimes(a)) : auditLine(a));
        if (o.all) {
          // Newest first; rows written while paging shift the pages, so the ids already printed are skipped.
          const seen = new Set<number>();
          for (let offset = 0; ; ) {
            const r = await admin<Page<AuditRow>>('GET', q(PAGE_MAX, offset));
            for (const a of r.items) if (!seen.has(a.id) && seen.add(a.id)) print(a);
            offset += r.items.length;
            if (r.items.length === 0 || offset >= r.total) break;
          }
          if (!o.json) console.log(`${count(seen.size)} audit rows`);
          return;
        }
        const r = await admin<Page<AuditRow>>(
          'GET',
          q(Math.max(1, intOption('--limit', o.limit, 100)), intOption('--offset', o.offset, 0)),
        );
        if (o.json) return json(r);
        r.items.forEach(print);
        console.log(pageLine(r.total, r.offset, r.items.length, 'audit rows'));
      },
    );

  program
    .command('backup <file>')
    .description('copy the database to FILE, consistent while the daemon runs (restore: docs/OPERATIONS.md)')
    .option('--json', 'print JSON')
    .action(async (file: string, o: { json?: boolean }) => {
      const g = program.opts<GlobalOpts>();
      const dir = await findDataDir(
        { flag: g.data, env: process.env, configFile: configFile(g), cwd: process.cwd(), installDataDir: INSTALL_DATA_DIR },
        DATABASE_FILE,
      );
      let r: BackupReport;
      try {
        r = await backupDatabase(join(dir, DATABASE_FILE), resolve(file));
      } catch (err) {
        throw new AdminError(err instanceof Error ? err.message : String(err), 1);
      }
      if (o.json) return json(r);
      console.log(
        `backed up ${join(dir, DATABASE_FILE)} to ${r.file} (${count(r.bytes)} bytes, schema ${r.schemaVersion}): ` +
          `${count(r.bans)} bans, ${count(r.suspensions)} suspensions, ${count(r.allowlist)} allowlist entries, ${count(r.auditRows)} audit rows`,
      );
    });

  program
    .command('doctor')
    .description(
      'is this mail server locked down, and wired to mailwarden? (docs/DOCTOR.md; exit 0 ok, 1 errors, 2 unreadable)',
    )
    .option('--postfix-config <dir>', "Postfix's configuration directory (default: the system's)")
    .option('--dovecot-config <file>', "Dovecot's dovecot.conf (default: the system's)")
    .option('--probe <host>', 'also probe the live ports on this loopback host')
    .option('--probe-remote', 'allow --probe to reach a host that is not loopback (a server you run)')
    .option('--json', 'print JSON')
    .action(async (c: Omit<DoctorOptions, 'configFile' | 'overrides'>) => {
      const o = program.opts<GlobalOpts>();
      process.exitCode = await runDoctor({ ...c, configFile: configFile(o), overrides: overrides(o) });
    });

  program
    .command('reputation')
    .description(
      'our own addresses and domains on the blocklists of reputation.zones, as last checked (exit 1 when listed)',
    )
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const r = (await admin<{ reputation: ReputationView }>('GET', '/v1/status')).reputation;
      if (o.json) json(r);
      else for (const line of reputationLines(r)) console.log(line);
      if (r.listed > 0) process.exitCode = 1;
    });

  program
    .command('explain <subject>')
    .description('why an address, network or user is limited, banned or suspended')
    .addOption(new Option('--json', 'print JSON'))
    .action(async (subject: string, o: { json?: boolean }) => {
      const e = await admin<Explanation>('GET', `/v1/explain/${encodeURIComponent(subject)}`);
      if (o.json) json(e);
      else printExplanation(e);
    });

  program
    .command('firewall')
    .description('the kernel firewall (nftables)')
    .command('script')
    .description(
      "print the nft script that loads the bans in force into the kernel, as the daemon's firewall settings say; nothing is run (pipe it to `nft -c -f -` to check it)",
    )
    .action(async () => {
      const st = await admin<StatusView>('GET', '/v1/status');
      if (!st.firewall) throw new AdminError('this daemon has no firewall (an older version?)', 1);
      const allowed = (await allPages<AllowEntry>('/v1/allowlist')).filter((e) => e.kind === 'network');
      const bans = await allBans();
      process.stdout.write(await loadScript(st.firewall, bans, allowed.map((e) => e.subject), Date.now()));
    });

  await program.parseAsync(argv);
}

main(process.argv).catch((err: unknown) => {
  if (err instanceof AdminError) {
    process.stderr.write(`mailwarden: ${err.message}\n`);
    process.exit(err.unreachable ? 2 : 1);
  }
  if (err instanceof SchemaError || err instanceof ListenError) {
    process.stderr.write(`mailwarden: ${err.message}\n`);
    process.exit(err instanceof SchemaError ? 2 : 1);
  }
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`mailwarden: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
