/*
 * Real Redis servers for the shared-store tests: Debian's redis-server on free
 * loopback ports, no persistence, killed by PID in stop(). A missing
 * redis-server fails the test (scripts/install-system-deps.sh installs it):
 * these suites never skip.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startDaemonProcess, type DaemonProcess } from './daemon.js';

export const REDIS_SERVER = process.env.MAILWARDEN_REDIS_SERVER ?? '/usr/bin/redis-server';
export const REDIS_CLI = process.env.MAILWARDEN_REDIS_CLI ?? '/usr/bin/redis-cli';

function requireBinaries(): void {
  for (const bin of [REDIS_SERVER, REDIS_CLI]) {
    if (!existsSync(bin))
      throw new Error(`${bin} is missing: run scripts/install-system-deps.sh (Debian package redis-server)`);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One raw command over RESP (no client library), for checks independent of ioredis. */
export function rawCommand(port: number, args: string[], timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createConnection(port, '127.0.0.1');
    let buf = '';
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`redis :${port} did not answer ${args[0] ?? ''}`));
    }, timeoutMs);
    s.on('connect', () =>
      s.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`),
    );
    s.on('data', (c) => {
      buf += c.toString();
      if (buf.endsWith('\r\n')) {
        clearTimeout(t);
        s.end();
        resolve(buf);
      }
    });
    s.on('error', (err) => {
      clearTimeout(t);
      reject(err);
    });
  });
}

export interface RedisServer {
  port: number;
  pid: number;
  proc: ChildProcess;
  url: string;
  output: () => string;
  /** SIGKILL (or another signal) and wait for the exit. Its data dir stays for restart() (removed when the test process exits). */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Starts a fresh server on the same port (after kill). */
  restart(): Promise<void>;
  cli(...args: string[]): string;
}

/** A throw-away redis-server on loopback: no persistence, its files in `dir` (tests and the bench). */
export function redisServerArgs(port: number, dir: string): string[] {
  return [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--dir',
    dir,
    '--protected-mode',
    'no',
  ];
}

function spawnServer(port: number, dir: string, extra: string[]): { proc: ChildProcess; out: { text: string } } {
  const out = { text: '' };
  const proc = spawn(REDIS_SERVER, [...redisServerArgs(port, dir), ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout?.on('data', (c: Buffer) => (out.text += c.toString()));
  proc.stderr?.on('data', (c: Buffer) => (out.text += c.toString()));
  return { proc, out };
}

async function waitPing(port: number, proc: ChildProcess, out: { text: string }): Promise<void> {
  const until = Date.now() + 10_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`redis-server on :${port} exited: ${out.text}`);
    try {
      if ((await rawCommand(port, ['PING'], 500)).startsWith('+PONG')) return;
    } catch {
      // not up yet
    }
    if (Date.now() > until) throw new Error(`redis-server on :${port} did not start: ${out.text}`);
    await sleep(50);
  }
}

const started = new Set<ChildProcess>();
const dirs: string[] = [];
process.on('exit', () => {
  for (const p of started) if (p.exitCode === null && p.pid) process.kill(p.pid, 'SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

export async function startRedis(extra: string[] = [], port?: number): Promise<RedisServer> {
  requireBinaries();
  const p = port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), 'mw-redis-'));
  dirs.push(dir);
  let cur = spawnServer(p, dir, extra);
  started.add(cur.proc);
  await waitPing(p, cur.proc, cur.out);
  const server: RedisServer = {
    port: p,
    get pid() {
      return cur.proc.pid as number;
    },
    get proc() {
      return cur.proc;
    },
    url: `redis://127.0.0.1:${p}/0`,
    output: () => cur.out.text,
    kill: async (signal = 'SIGKILL') => {
      const proc = cur.proc;
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise<void>((r) => proc.once('exit', () => r()));
        process.kill(proc.pid as number, signal);
        await exited;
      }
      started.delete(proc);
    },
    restart: async () => {
      mkdirp(dir);
      cur = spawnServer(p, dir, extra);
      started.add(cur.proc);
      await waitPing(p, cur.proc, cur.out);
    },
    cli: (...args: string[]) => execFileSync(REDIS_CLI, ['-p', String(p), ...args], { encoding: 'utf8' }).trim(),
  };
  return server;
}

function mkdirp(dir: string): void {
  mkdirSync(dir, { recursive: true });
}

export interface RedisCluster {
  nodes: RedisServer[];
  ports: number[];
  stop(): Promise<void>;
}

/** Three masters on loopback, slots spread by redis-cli --cluster create, no replicas. */
export async function startRedisCluster(n = 3): Promise<RedisCluster> {
  requireBinaries();
  const nodes: RedisServer[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const port = await freePort();
      nodes.push(
        await startRedis(
          ['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '2000'],
          port,
        ),
      );
    }
    execFileSync(
      REDIS_CLI,
      ['--cluster', 'create', ...nodes.map((s) => `127.0.0.1:${s.port}`), '--cluster-replicas', '0', '--cluster-yes'],
      {
        encoding: 'utf8',
        timeout: 30_000,
      },
    );
    const until = Date.now() + 20_000;
    for (const s of nodes) {
      while (!s.cli('cluster', 'info').includes('cluster_state:ok')) {
        if (Date.now() > until) throw new Error(`cluster node :${s.port} never reached cluster_state:ok`);
        await sleep(100);
      }
    }
  } catch (err) {
    for (const s of nodes) await s.kill();
    throw err;
  }
  return {
    nodes,
    ports: nodes.map((s) => s.port),
    stop: async () => {
      for (const s of nodes) await s.kill();
    },
  };
}

export interface TwoNodes {
  redis: RedisServer;
  dir: string;
  a: DaemonProcess;
  b: DaemonProcess;
  stop(): Promise<void>;
}

/** One Redis and two real daemons (nodes mx1 and mx2) sharing it, with the given config. */
export async function startTwoNodes(config: string, name: string): Promise<TwoNodes> {
  const redis = await startRedis();
  const dir = mkdtempSync(join(tmpdir(), `mw-${name}-`));
  writeFileSync(join(dir, 'mailwarden.yaml'), config);
  const env = (node: string): Record<string, string> => ({
    MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml'),
    MAILWARDEN_STORE: redis.url,
    MAILWARDEN_NODE: node,
  });
  const [a, b] = await Promise.all([
    startDaemonProcess(join(dir, 'a'), env('mx1')),
    startDaemonProcess(join(dir, 'b'), env('mx2')),
  ]);
  return {
    redis,
    dir,
    a,
    b,
    stop: async () => {
      await a.kill('SIGKILL');
      await b.kill('SIGKILL');
      await redis.kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
