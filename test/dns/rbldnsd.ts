/*
 * A real DNSBL server for the DNS tests: Debian's rbldnsd on a free loopback
 * UDP port, serving zone files the test writes, killed by PID in stop() (and
 * when the test process exits). A missing rbldnsd fails the test, in CI and
 * out of it: scripts/install-system-deps.sh installs it. These suites never
 * skip.
 *
 * Also a resolver that never answers: a UDP socket that reads every query and
 * replies to none.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { chmodSync, existsSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const RBLDNSD = process.env.MAILWARDEN_RBLDNSD ?? '/usr/sbin/rbldnsd';

/** An SOA whose minimum (the negative TTL) is `negTtl` seconds, and a default TTL for the entries. */
export function zoneHead(ttl: number, negTtl: number): string {
  return `$SOA ${ttl} ns.test. admin.test. 1 1h 1h 1w ${negTtl}\n$TTL ${ttl}\n`;
}

export interface Rbldnsd {
  port: number;
  /** `127.0.0.1:port`, as dns.servers writes it. */
  server: string;
  /** Rewrites a data file and makes rbldnsd load it (SIGHUP), resolving once it has. */
  rewrite(file: string, text: string): Promise<void>;
  stop(): Promise<void>;
}

const started = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of started) if (p.exitCode === null && p.pid) process.kill(p.pid, 'SIGKILL');
});

/** A UDP port free right now (rbldnsd binds it a moment later). */
export function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    s.once('error', reject);
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts rbldnsd with `files` (name → content) in a fresh directory and `zones` (`zone:type:file,…`, e.g.
 * `bl.test:ip4set:ip4`).
 */
export async function startRbldnsd(files: Record<string, string>, zones: string[]): Promise<Rbldnsd> {
  if (!existsSync(RBLDNSD))
    throw new Error(`${RBLDNSD} is missing: run scripts/install-system-deps.sh (Debian package rbldnsd)`);
  const dir = mkdtempSync(join(tmpdir(), 'mw-rbldnsd-'));
  // Run as root, rbldnsd drops to its own user (rbldns), which must read the files.
  chmodSync(dir, 0o755);
  let stamp = Math.floor(Date.now() / 1000);
  const write = (file: string, text: string): void => {
    const path = join(dir, file);
    writeFileSync(path, text, { mode: 0o644 });
    // rbldnsd reloads a file whose mtime changed: a rewrite within the same second must still count.
    stamp += 2;
    utimesSync(path, stamp, stamp);
  };
  for (const [file, text] of Object.entries(files)) write(file, text);
  const port = await freeUdpPort();
  // -n: stay in the foreground; -c 0: reload on SIGHUP only.
  const proc = spawn(RBLDNSD, ['-n', '-c', '0', '-b', `127.0.0.1/${port}`, '-w', dir, ...zones], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.add(proc);
  let out = '';
  proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
  proc.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const waitFor = async (test: () => boolean, what: string): Promise<void> => {
    const end = Date.now() + 10_000;
    while (!test()) {
      if (proc.exitCode !== null) throw new Error(`rbldnsd exited (${proc.exitCode}) before ${what}:\n${out}`);
      if (Date.now() > end) throw new Error(`rbldnsd: no ${what} within 10 s:\n${out}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  const reloads = (): number => out.split('zones reloaded').length - 1;
  try {
    await waitFor(() => out.includes(' started'), 'start');
  } catch (err) {
    proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    port,
    server: `127.0.0.1:${port}`,
    async rewrite(file, text) {
      const before = reloads();
      write(file, text);
      proc.kill('SIGHUP');
      await waitFor(() => reloads() > before, 'reload');
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise<void>((r) => proc.once('exit', () => r()));
        process.kill(proc.pid as number, 'SIGTERM');
        await exited;
      }
      started.delete(proc);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A DNS server that reads every query and answers none; `queries` counts them. */
export async function blackHole(): Promise<{ server: string; queries: () => number; close: () => Promise<void> }> {
  const s: Socket = createSocket('udp4');
  let n = 0;
  s.on('message', () => n++);
  await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', () => resolve()));
  return {
    server: `127.0.0.1:${s.address().port}`,
    queries: () => n,
    close: () => new Promise((resolve) => s.close(() => resolve())),
  };
}
