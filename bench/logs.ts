/*
 * bench/logs — phase `logs` of `npm run bench`: lines per second of the log
 * follower against fail2ban on the same file, in the same run.
 *
 * The file: a synthetic Debian mail.log (syslog lines of Postfix and of
 * Dovecot through syslog) of 500,000 lines, ~20 % of them failed logins
 * (Postfix SASL failures through Dovecot and Cyrus SASL, Dovecot's login and
 * auth lines), the rest the everyday lines of a mail server (connects,
 * deliveries, logins, a few relay attempts and PREGREETs). Failures come
 * from 2,000 guessing addresses, the rest from 20,000 others; each of the
 * 10,000 users logs in from an address of its own.
 *
 * - mailwarden, recognition only: the file read in 64 KiB chunks, split,
 *   each line recognised and made into events (logs/lines, logs/recognise,
 *   logs/events), nothing decided. Best of 3.
 * - mailwarden, the whole follower: the daemon's LogFollowers on the file,
 *   its events decided by the real decider on the embedded store (built-in
 *   rules and the log rules, bans written to SQLite, the position saved),
 *   from the moment the lines are appended until the last is decided.
 * - fail2ban-regex with the stock `postfix[mode=auth]` filter, then with
 *   `dovecot`, each timed as it reports itself (`processed in`, its Python
 *   start-up not counted): fail2ban runs each line through the filter of
 *   each jail that reads the file, so its lines per second are the lines
 *   over the sum of both runs.
 *
 * Each mailwarden measurement runs in a process of its own
 * (`node --import tsx bench/logs.ts <file>` prints one JSON line).
 */
import { spawnSync } from 'node:child_process';
import {
  appendFileSync,
  closeSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { loadSettingsFromText } from '../src/config/load.js';
import { Decider } from '../src/decider.js';
import { LogEvents } from '../src/logs/events.js';
import { LogFollowers } from '../src/logs/followers.js';
import { LineSplitter } from '../src/logs/lines.js';
import { recogniseMailLine } from '../src/logs/recognise.js';
import { MemoryStore } from '../src/store/memory.js';
import { prng } from '../test/helpers/prng.js';
import { findTool } from '../test/logs/tools.js';
import { createLogger } from '../src/log.js';
import { REPO } from './requests.js';

export const LOG_LINES = Number(process.env.MAILWARDEN_BENCH_LOG_LINES ?? 500_000);
const TARGET_RATIO = 10;

/** The synthetic mail.log: `lines` lines; returns how many are failed logins. */
export function writeMailLog(path: string, lines: number, seed = 20261127): { failures: number } {
  const rand = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const addr = (): string =>
    `${1 + Math.floor(rand() * 223)}.${Math.floor(rand() * 256)}.${Math.floor(rand() * 256)}.${1 + Math.floor(rand() * 254)}`;
  const clients = Array.from({ length: 20_000 }, addr);
  const guessers = Array.from({ length: 2_000 }, addr);
  const users = Array.from({ length: 10_000 }, (_, i) => `user${i}@example.org`);
  // A user logs in from home: the same address every time (as people do; compromise-spread would fire otherwise).
  const home = (): [string, string] => {
    const i = Math.floor(rand() * users.length);
    return [users[i] as string, clients[i] as string];
  };
  const hex = (n: number): string =>
    Math.floor(rand() * 16 ** n)
      .toString(16)
      .toUpperCase()
      .padStart(n, '0');
  const session = (): string =>
    Buffer.from(Array.from({ length: 12 }, () => Math.floor(rand() * 256))).toString('base64');
  const pid = (): number => 1000 + Math.floor(rand() * 30_000);
  const host = (ip: string): string => (rand() < 0.6 ? 'unknown' : `mail${ip.replaceAll('.', '-')}.example.net`);
  const start = Date.UTC(2026, 10, 27, 0, 0, 0);
  const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const stamp = (i: number): string => {
    const d = new Date(start + Math.floor((i * 86_400_000) / lines));
    const p = (n: number): string => String(n).padStart(2, '0');
    return `${MONTHS[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, ' ')} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} mx`;
  };
  // [weight in % of lines, is a failed login, the line after the timestamp and host]
  const kinds: Array<[number, boolean, () => string]> = [
    [
      9,
      true,
      () => {
        const ip = pick(guessers);
        return `postfix/submission/smtpd[${pid()}]: warning: ${host(ip)}[${ip}]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=${pick(users)}`;
      },
    ],
    [
      3,
      true,
      () => {
        const ip = pick(guessers);
        return `postfix/smtpd[${pid()}]: warning: ${host(ip)}[${ip}]: SASL PLAIN authentication failed: authentication failure`;
      },
    ],
    [
      4,
      true,
      () =>
        `dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<${pick(users)}>, method=PLAIN, rip=${pick(guessers)}, lip=192.0.2.1, TLS, session=<${session()}>`,
    ],
    [
      2,
      true,
      () =>
        `dovecot: pop3-login: Aborted login (auth failed, 1 attempts in 3 secs): user=<${pick(users)}>, method=PLAIN, rip=${pick(guessers)}, lip=192.0.2.1, session=<${session()}>`,
    ],
    [2, true, () => `dovecot: auth: passwd-file(${pick(users)},${pick(guessers)},<${session()}>): Password mismatch`],
    [
      10,
      false,
      () => {
        const ip = pick(clients);
        return `postfix/smtpd[${pid()}]: connect from ${host(ip)}[${ip}]`;
      },
    ],
    [
      10,
      false,
      () => {
        const ip = pick(clients);
        return `postfix/smtpd[${pid()}]: disconnect from ${host(ip)}[${ip}] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5`;
      },
    ],
    [
      6,
      false,
      () => {
        const ip = pick(clients);
        return `postfix/smtpd[${pid()}]: ${hex(10)}: client=${host(ip)}[${ip}]`;
      },
    ],
    [
      2,
      false,
      () => {
        const [user, ip] = home();
        return `postfix/submission/smtpd[${pid()}]: ${hex(10)}: client=${host(ip)}[${ip}], sasl_method=PLAIN, sasl_username=${user}`;
      },
    ],
    [8, false, () => `postfix/cleanup[${pid()}]: ${hex(10)}: message-id=<${hex(16)}@example.net>`],
    [
      8,
      false,
      () =>
        `postfix/qmgr[${pid()}]: ${hex(10)}: from=<${pick(users)}>, size=${1000 + Math.floor(rand() * 90_000)}, nrcpt=1 (queue active)`,
    ],
    [
      8,
      false,
      () =>
        `postfix/local[${pid()}]: ${hex(10)}: to=<${pick(users)}>, relay=local, delay=0.04, delays=0.02/0.01/0/0.01, dsn=2.0.0, status=sent (delivered to maildir)`,
    ],
    [8, false, () => `postfix/qmgr[${pid()}]: ${hex(10)}: removed`],
    [
      5,
      false,
      () => {
        const [user, ip] = home();
        return `dovecot: imap-login: Login: user=<${user}>, method=PLAIN, rip=${ip}, lip=192.0.2.1, mpid=${pid()}, TLS, session=<${session()}>`;
      },
    ],
    [
      5,
      false,
      () =>
        `dovecot: imap(${pick(users)})<${pid()}><${session()}>: Logged out in=312 out=4096 deleted=0 expunged=0 trashed=0 hdr_count=0 hdr_bytes=0 body_count=0 body_bytes=0`,
    ],
    [
      3,
      false,
      () => {
        const ip = pick(clients);
        return `postfix/smtpd[${pid()}]: NOQUEUE: reject: RCPT from ${host(ip)}[${ip}]: 554 5.7.1 <victim@example.com>: Relay access denied; from=<spam@example.com> to=<victim@example.com> proto=ESMTP helo=<x>`;
      },
    ],
    [
      2,
      false,
      () => {
        const ip = pick(clients);
        return `postfix/smtpd[${pid()}]: lost connection after EHLO from ${host(ip)}[${ip}]`;
      },
    ],
    [
      2,
      false,
      () =>
        `postfix/anvil[${pid()}]: statistics: max connection rate 3/60s for (smtp:${pick(clients)}) at Nov 27 12:00:00`,
    ],
    [
      1,
      false,
      () =>
        `postfix/postscreen[${pid()}]: PREGREET 11 after 0.2 from [${pick(clients)}]:${1024 + Math.floor(rand() * 60_000)}: EHLO bot`,
    ],
    [
      2,
      false,
      () =>
        `postfix/postscreen[${pid()}]: CONNECT from [${pick(clients)}]:${1024 + Math.floor(rand() * 60_000)} to [192.0.2.1]:25`,
    ],
  ];
  const total = kinds.reduce((n, [w]) => n + w, 0);
  let failures = 0;
  writeFileSync(path, '');
  let chunk: string[] = [];
  for (let i = 0; i < lines; i++) {
    let r = rand() * total;
    let k = kinds[0] as (typeof kinds)[number];
    for (const x of kinds) {
      k = x;
      if ((r -= x[0]) < 0) break;
    }
    if (k[1]) failures++;
    chunk.push(`${stamp(i)} ${k[2]()}\n`);
    if (chunk.length === 10_000) {
      appendFileSync(path, chunk.join(''));
      chunk = [];
    }
  }
  appendFileSync(path, chunk.join(''));
  return { failures };
}

interface Measured {
  lines: number;
  parse: { seconds: number; events: number };
  follow: { seconds: number; cpuSeconds: number; events: number; bans: number; unknown: number };
}

/** Recognition only: read, split, recognise, make events. */
function parseOnly(file: string): { seconds: number; lines: number; events: number } {
  const fd = openSync(file, 'r');
  const buf = Buffer.allocUnsafe(64 * 1024);
  const splitter = new LineSplitter(16 * 1024);
  const events = new LogEvents();
  let lines = 0;
  let n = 0;
  const sink = (): void => undefined;
  const t0 = performance.now();
  for (let pos = 0; ;) {
    const got = readSync(fd, buf, 0, buf.length, pos);
    if (got === 0) break;
    pos += got;
    splitter.push(buf.subarray(0, got), (line) => {
      lines++;
      const f = recogniseMailLine(line);
      if (f !== undefined) n += events.emit(f, 0, sink);
    });
  }
  const seconds = (performance.now() - t0) / 1000;
  closeSync(fd);
  return { seconds, lines, events: n };
}

/** The daemon's follower, decider and embedded store, from the append of the lines to the last decision. */
async function follow(file: string): Promise<Measured['follow'] & { lines: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'mw-bench-logs-'));
  try {
    const log = join(dir, 'mail.log');
    writeFileSync(log, '');
    const settings = loadSettingsFromText(`logs: [{ path: ${log} }]\n`, 'bench.yaml');
    const store = new MemoryStore({
      file: join(dir, 'mailwarden.sqlite'),
      maxKeys: settings.store.maxKeys,
      lookbackMs: settings.policy.escalation.lookbackMs,
      now: Date.now,
    });
    const logger = createLogger('error', 'json');
    const decider = new Decider(settings.policy, store, logger);
    const logs = new LogFollowers({
      evaluate: decider.evaluate,
      positions: store.db,
      logger,
      now: Date.now,
      hooks: false,
      pollMs: 20,
    });
    await logs.follow(settings.logs);
    while (logs.status().sources[0]?.state !== 'following') await new Promise((r) => setTimeout(r, 10));
    const content = readFileSync(file);
    let lines = 0;
    for (let at = content.indexOf(10); at >= 0; at = content.indexOf(10, at + 1)) lines++;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    appendFileSync(log, content);
    let st = logs.status().sources[0];
    while ((st?.lines ?? 0) < lines) {
      await new Promise((r) => setImmediate(r));
      st = logs.status().sources[0];
    }
    await logs.stop();
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const bans = (await store.listBans(Date.now())).length;
    await store.close();
    return {
      lines,
      seconds,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      events: st?.events ?? 0,
      bans,
      unknown: st?.unknown ?? 0,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function measure(file: string): Promise<Measured> {
  parseOnly(file); // warm up the JIT
  const runs = [parseOnly(file), parseOnly(file), parseOnly(file)];
  const best = runs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
  const f = await follow(file);
  return { lines: best.lines, parse: { seconds: best.seconds, events: best.events }, follow: f };
}

/** One fail2ban-regex run: the seconds it says it took to process the file (its start-up not counted), and the lines its filter matched. */
function fail2ban(bin: string, file: string, filter: string): { seconds: number; matched: number } | string {
  const r = spawnSync(bin, [file, filter], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 900_000 });
  const lines = /Lines: (\d+) lines, \d+ ignored, (\d+) matched/.exec(r.stdout ?? '');
  const took = /\[processed in ([\d.]+) sec\]/.exec(r.stdout ?? '');
  if (r.status !== 0 || !lines || !took)
    return `fail2ban-regex ${filter} failed (${r.error?.message ?? `exit ${r.status}`}): ${(r.stderr || r.stdout || '').trim().split('\n').slice(-3).join(' ')}`;
  return { seconds: Number(took[1]), matched: Number(lines[2]) };
}

export interface LogsPhaseContext {
  root: string;
  failures: string[];
  warnings: string[];
  progress: (msg: string) => void;
  fmt: (n: number, d?: number) => string;
}

export function phaseLogs(ctx: LogsPhaseContext): string[] {
  const { fmt } = ctx;
  const file = join(ctx.root, 'mail.log');
  ctx.progress(`logs: writing a synthetic mail.log of ${fmt(LOG_LINES)} lines`);
  const { failures } = writeMailLog(file, LOG_LINES);
  const out = [
    `9. Log follower (bench/logs.ts): a synthetic Debian mail.log of ${fmt(LOG_LINES)} lines, ${fmt((100 * failures) / LOG_LINES, 1)} % failed logins`,
  ];
  ctx.progress('logs: mailwarden (recognition only, then the whole follower with the engine)');
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(REPO, 'bench', 'logs.ts'), file], {
    encoding: 'utf8',
    timeout: 600_000,
  });
  if (r.status !== 0) {
    ctx.failures.push(`bench/logs.ts failed: ${(r.stderr || '').trim().split('\n').slice(-3).join(' ')}`);
    return out;
  }
  const mw = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as Measured;
  const row = (label: string, seconds: number, detail: string): string =>
    `   ${label.padEnd(46)} ${fmt(mw.lines / seconds).padStart(11)} lines/s  (${fmt(seconds, 2)} s, ${detail})`;
  out.push(
    row('mailwarden, recognition only', mw.parse.seconds, `${fmt(mw.parse.events)} events`),
    row(
      'mailwarden, follower + engine + store',
      mw.follow.seconds,
      `${fmt(mw.follow.cpuSeconds, 2)} s CPU, ${fmt(mw.follow.events)} events decided, ${fmt(mw.follow.bans)} bans`,
    ),
  );
  const why: string[] = [];
  let bin: string | undefined;
  try {
    bin = findTool('fail2ban-regex', why);
  } catch (err) {
    ctx.failures.push((err as Error).message);
    return out;
  }
  if (bin === undefined) {
    out.push(`   fail2ban-regex: skipped (${why.join('; ')})`, '');
    return out;
  }
  let f2bSeconds = 0;
  let matched = 0;
  for (const filter of ['postfix[mode=auth]', 'dovecot']) {
    ctx.progress(`logs: fail2ban-regex ${filter}`);
    const f = fail2ban(bin, file, filter);
    if (typeof f === 'string') {
      ctx.failures.push(f);
      return out;
    }
    f2bSeconds += f.seconds;
    matched += f.matched;
    out.push(row(`fail2ban-regex ${filter}`, f.seconds, `${fmt(f.matched)} lines matched`));
  }
  out.push(row('fail2ban, both filters on the file', f2bSeconds, `${fmt(matched)} lines matched`));
  // Like with like: fail2ban-regex reads lines and finds failures and their addresses, as recognition does.
  const recognition = f2bSeconds / mw.parse.seconds;
  const whole = f2bSeconds / mw.follow.seconds;
  out.push(
    `   ratio to fail2ban: recognition ${fmt(recognition, 1)}× (target ≥ ${TARGET_RATIO}×: ${recognition >= TARGET_RATIO ? 'met' : 'NOT met'});` +
      ` the whole follower, every event also decided, counted and banned (none of which fail2ban-regex does): ${fmt(whole, 1)}×`,
    '',
  );
  if (recognition < TARGET_RATIO)
    ctx.warnings.push(`log recognition: ${fmt(recognition, 1)}× fail2ban-regex, below the ${TARGET_RATIO}× target`);
  return out;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const file = process.argv[2];
  if (file === undefined) throw new Error('usage: node --import tsx bench/logs.ts <mail.log>');
  process.stdout.write(`${JSON.stringify(await measure(file))}\n`);
}
