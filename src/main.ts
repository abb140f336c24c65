#!/usr/bin/env node
/*
 * main — the `mailwarden` command line.
 *
 *   mailwarden serve                       run the daemon
 *   mailwarden check-config [file]         validate a config, print the effective policy
 *   mailwarden bans list|add|remove        manage bans
 *   mailwarden users list|suspend|resume   manage suspended users
 *   mailwarden explain <ip|network|user>   why is it limited, banned or suspended?
 *
 * Every command but serve and check-config talks to the running daemon over
 * the admin unix socket in the data dir. Where settings come from, strongest
 * first: flags, MAILWARDEN_* environment variables, the config file, defaults.
 */
import { resolve } from 'node:path';
import { Command, Option } from 'commander';
import { stringify } from 'yaml';
import { call, AdminError } from './admin/client.js';
import { describeSettings, type Settings } from './config/compile.js';
import { ConfigError } from './config/errors.js';
import { loadSettings, overridesFromEnv, type Overrides } from './config/load.js';
import { adminSocketPath, startDaemon, VERSION } from './daemon.js';
import { isoTime } from './engine/decide.js';
import type { BanRecord, SuspensionRecord } from './engine/types.js';
import type { Explanation } from './explain.js';
import { createLogger } from './log.js';

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

function printBans(bans: BanRecord[]): void {
  if (bans.length === 0) return void console.log('no active bans');
  for (const b of bans) {
    console.log(
      `${b.subject.padEnd(24)} until ${iso(b.until)}  offence ${b.offence}  rule ${b.rule}  by ${b.actor}  ${b.reason}`,
    );
  }
}

function printSuspensions(items: SuspensionRecord[]): void {
  if (items.length === 0) return void console.log('no suspended users');
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

async function main(argv: string[]): Promise<void> {
  const program = new Command('mailwarden')
    .version(VERSION)
    .description('Guards Postfix and Dovecot against password guessing and spam from stolen accounts.')
    .option('-c, --config <file>', 'YAML config file (or MAILWARDEN_CONFIG)')
    .option('-d, --data <dir>', 'data directory (or MAILWARDEN_DATA; default ./data)')
    .showHelpAfterError();

  const admin = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const o = program.opts<GlobalOpts>();
    const ov = overrides(o);
    // Only the data dir matters here: a broken config file must not lock the administrator out.
    const dataDir = ov.dataDir ? resolve(ov.dataDir.value) : settingsOrExit(configFile(o), ov).dataDir;
    return call<T>(adminSocketPath(dataDir), method, path, body);
  };
  const json = (v: unknown): void => console.log(JSON.stringify(v, null, 2));

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
      const o = { ...program.opts<GlobalOpts>(), ...cmdOpts };
      const file = configFile(o);
      const ov = overrides(o);
      const settings = settingsOrExit(file, ov);
      const logger = createLogger(settings.logLevel);
      const d = await startDaemon(settings, logger, { file, overrides: ov });
      let stopping = false;
      const stop = (sig: string): void => {
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
      process.on('SIGHUP', () => void d.reload());
    });

  program
    .command('check-config [file]')
    .description('validate a config file and print the effective policy (built-in defaults without a file)')
    .action((file: string | undefined) => {
      const o = program.opts<GlobalOpts>();
      const s = settingsOrExit(file ?? configFile(o), overrides(o));
      process.stdout.write(
        `# ${s.file ? `${s.file}: OK` : 'no config file: built-in defaults'}\n${stringify(describeSettings(s))}`,
      );
    });

  const bans = program.command('bans').description('list, add and remove bans');
  bans
    .command('list')
    .option('-q, --query <text>', 'filter by address, rule or reason')
    .option('--json', 'print JSON')
    .action(async (o: { query?: string; json?: boolean }) => {
      const r = await admin<{ items: BanRecord[] }>(
        'GET',
        `/v1/bans?limit=1000${o.query ? `&q=${encodeURIComponent(o.query)}` : ''}`,
      );
      if (o.json) json(r);
      else printBans(r.items);
    });
  bans
    .command('add <subject>')
    .description('ban an address or network (CIDR) on every protocol')
    .option('--duration <d>', 'e.g. 2h, 7d, at most 3650d (default: the escalating ban length)')
    .option('--reason <text>', 'why (kept in the audit trail)')
    .option('--force', 'ban a network wider than IPv4 /8 or IPv6 /16, or one holding allowlisted addresses')
    .action(async (subject: string, o: { duration?: string; reason?: string; force?: boolean }) => {
      const body = { subject, duration: o.duration, reason: o.reason, force: o.force };
      const b = await admin<BanRecord>('POST', '/v1/bans', body);
      console.log(`banned ${b.subject} until ${iso(b.until)}`);
    });
  bans
    .command('remove <subject>')
    .alias('rm')
    .description('lift a ban')
    .action(async (subject: string) => {
      await admin('DELETE', `/v1/bans/${encodeURIComponent(subject)}`);
      console.log(`unbanned ${subject}`);
    });

  const users = program.command('users').description('list, suspend and resume users');
  users
    .command('list')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const r = await admin<{ items: SuspensionRecord[] }>('GET', '/v1/users');
      if (o.json) json(r);
      else printSuspensions(r.items);
    });
  users
    .command('suspend <user>')
    .description('stop a user from sending mail')
    .option('--duration <d>', 'e.g. 1d, at most 3650d (default: suspensions.duration)')
    .option('--reason <text>', 'why (kept in the audit trail)')
    .action(async (user: string, o: { duration?: string; reason?: string }) => {
      const s = await admin<SuspensionRecord>('POST', `/v1/users/${encodeURIComponent(user)}/suspend`, {
        duration: o.duration,
        reason: o.reason,
      });
      console.log(`suspended ${s.user} until ${iso(s.until)}`);
    });
  users
    .command('resume <user>')
    .description('let a suspended user send again')
    .action(async (user: string) => {
      await admin('POST', `/v1/users/${encodeURIComponent(user)}/resume`);
      console.log(`resumed ${user.toLowerCase()}`);
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

  await program.parseAsync(argv);
}

main(process.argv).catch((err: unknown) => {
  if (err instanceof AdminError) {
    process.stderr.write(`mailwarden: ${err.message}\n`);
    process.exit(1);
  }
  if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`mailwarden: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
