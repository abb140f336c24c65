/*
 * bench/procs — the processes the benchmark starts, and nothing else: spawn
 * with output to a log file, wait until a socket answers, stop by PID
 * (SIGTERM, then SIGKILL after a grace period), and a last-resort SIGKILL of
 * everything still registered when the benchmark exits for any reason.
 *
 * Daemons that fork away (postfwd) are tracked by the PID in their pid file
 * plus that process's descendants, read from /proc: still only processes this
 * benchmark started.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { Target } from './policy-client.js';
import { freePort } from '../test/helpers/daemon.js';
import { REPO } from './requests.js';

export interface Proc {
  name: string;
  pid: number;
  child: ChildProcess;
  logFile: string;
  /** Set once the process has exited. */
  exit: string | undefined;
  exited: Promise<void>;
}

const children = new Set<Proc>();
const daemonPids = new Set<number>();

/** Node flags for a V8 CPU profile of a daemon, into MAILWARDEN_BENCH_CPU_PROF (a directory) when it is set. */
export function profileArgs(): string[] {
  const dir = process.env.MAILWARDEN_BENCH_CPU_PROF;
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : [];
}

/**
 * `mailwarden serve` from dist/ on its own data dir, logging to `dir/daemon.log`: the default policy and the
 * embedded store whatever the caller's environment says (`env` sets others), the admin and Dovecot
 * listeners on free ports unless given (never the default ones: a real mailwarden may run here).
 */
export async function spawnMailwarden(
  dir: string,
  listen: { postfix: string; dovecot?: number; admin?: number },
  env: NodeJS.ProcessEnv = {},
  nodeArgs: string[] = [],
): Promise<{ proc: Proc; sock: string; log: string }> {
  mkdirSync(dir, { recursive: true });
  const all: NodeJS.ProcessEnv = {
    ...process.env,
    MAILWARDEN_DATA: dir,
    MAILWARDEN_POSTFIX_LISTEN: listen.postfix,
    MAILWARDEN_ADMIN_LISTEN: `127.0.0.1:${listen.admin ?? (await freePort())}`,
    MAILWARDEN_DOVECOT_LISTEN: `127.0.0.1:${listen.dovecot ?? (await freePort())}`,
  };
  delete all.MAILWARDEN_CONFIG;
  delete all.MAILWARDEN_STORE;
  Object.assign(all, env);
  const log = join(dir, 'daemon.log');
  const proc = spawnLogged(
    'mailwarden',
    process.execPath,
    [...nodeArgs, join(REPO, 'dist', 'main.js'), 'serve'],
    all,
    log,
  );
  return { proc, sock: join(dir, 'admin.sock'), log };
}

export function spawnLogged(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, logFile: string): Proc {
  const fd = openSync(logFile, 'a');
  const child = spawn(cmd, args, { env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  if (child.pid === undefined) throw new Error(`${name}: could not start ${cmd}`);
  let markExited: () => void = () => undefined;
  const p: Proc = {
    name,
    pid: child.pid,
    child,
    logFile,
    exit: undefined,
    exited: new Promise<void>((r) => (markExited = r)),
  };
  children.add(p);
  child.on('exit', (code, signal) => {
    p.exit = signal ? `killed by ${signal}` : `exit code ${code}`;
    children.delete(p);
    markExited();
  });
  child.on('error', (err) => {
    p.exit = `failed: ${err.message}`;
    children.delete(p);
    markExited();
  });
  return p;
}

export function logTail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function canConnect(t: Target): Promise<boolean> {
  return new Promise((resolve) => {
    const s = t.kind === 'tcp' ? connect({ host: t.host, port: t.port }) : connect({ path: t.path });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Polls until every target accepts a connection; throws with the log tail if the process dies or time runs out. */
export async function waitForListen(
  p: Proc | undefined,
  name: string,
  logFile: string,
  targets: Target[],
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (p?.exit) throw new Error(`${name} exited during start-up (${p.exit}); last log lines:\n${logTail(logFile)}`);
    const ok = await Promise.all(targets.map(canConnect));
    if (ok.every(Boolean)) return;
    if (Date.now() > deadline)
      throw new Error(
        `${name} did not accept connections within ${timeoutMs / 1000} s; last log lines:\n${logTail(logFile)}`,
      );
    await sleep(50);
  }
}

export async function stopProc(p: Proc, graceMs = 5000): Promise<void> {
  if (p.exit) return;
  p.child.kill('SIGTERM');
  const timer = setTimeout(() => {
    if (!p.exit) p.child.kill('SIGKILL');
  }, graceMs);
  await p.exited;
  clearTimeout(timer);
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** `pid` and every process below it, from /proc (parents first). */
export function processTree(pid: number): number[] {
  const kids = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = kids.get(ppid) ?? [];
      list.push(Number(d));
      kids.set(ppid, list);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const todo = [pid];
  while (todo.length) {
    const p = todo.shift() as number;
    out.push(p);
    todo.push(...(kids.get(p) ?? []));
  }
  return out;
}

/** Registers the PID a forking daemon wrote to its pid file, so an abnormal exit still kills it. */
export function adoptDaemon(pid: number): void {
  daemonPids.add(pid);
}

/** Stops a forked daemon and everything under it: SIGTERM, then SIGKILL after the grace period. */
export async function stopDaemon(pid: number, graceMs = 5000): Promise<void> {
  const pids = processTree(pid).filter(alive);
  for (const p of pids) signal(p, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (pids.some(alive) && Date.now() < deadline) await sleep(50);
  for (const p of pids) if (alive(p)) signal(p, 'SIGKILL');
  daemonPids.delete(pid);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Resident memory of a process and its descendants, in bytes (VmRSS summed; peak of the first process). */
export function rssOf(pid: number): { rss: number; peak: number } {
  let rss = 0;
  let peak = 0;
  for (const p of processTree(pid)) {
    try {
      const st = readFileSync(`/proc/${p}/status`, 'utf8');
      const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? 0) * 1024;
      rss += kb('VmRSS');
      if (p === pid) peak = kb('VmHWM');
    } catch {
      // gone meanwhile
    }
  }
  return { rss, peak };
}

/** CPU time (user + system) of a process and its live descendants, in seconds (Linux clock ticks of 1/100 s). */
export function cpuSeconds(pid: number): number {
  let ticks = 0;
  for (const p of processTree(pid)) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      // gone meanwhile
    }
  }
  return ticks / 100;
}

/** Machine-wide CPU time in seconds, all cores: user+nice+system (softirq and irq left out), and steal. */
export function machineCpu(): { busy: number; steal: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { busy: ((f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0)) / 100, steal: (f[7] ?? 0) / 100 };
}

export function readPidFile(file: string): number | undefined {
  if (!existsSync(file)) return undefined;
  const n = Number(readFileSync(file, 'utf8').trim());
  return Number.isInteger(n) && n > 1 ? n : undefined;
}

// One way to find a free loopback port, shared with the tests.
export { freePort };

/** Last resort on any exit: SIGKILL every process this benchmark started that is still running. */
export function killEverything(): void {
  for (const p of children) if (!p.exit) p.child.kill('SIGKILL');
  for (const pid of daemonPids) for (const p of processTree(pid)) signal(p, 'SIGKILL');
}
