/*
 * bench/wakeups — what this machine charges for waking a process: two node
 * processes passing one byte back and forth over a unix socket, each asleep
 * while the other works, as the bench client, the daemon and redis-server
 * are. Measured across CPUs (as the scheduler places them) and with both on
 * one CPU. Cluster mode adds a hop to every request (daemon to Redis and
 * back), so where a wake-up across CPUs is dear (a VM whose idle vCPUs halt
 * at once), the Redis/embedded ratio of phase 5 is low for that reason alone.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROUND_TRIPS = 5000;

const ECHO = `const s = require('node:net').createServer((c) => c.on('data', (d) => c.write(d)));
s.listen(process.argv[1], () => process.stdout.write('ready\\n'));`;

const PING = `const n = Number(process.argv[2]);
const c = require('node:net').connect(process.argv[1], () => {
  let left = n; const t0 = process.hrtime.bigint();
  c.on('data', () => {
    if (--left > 0) return void c.write('x');
    process.stdout.write(String(Number(process.hrtime.bigint() - t0) / n / 1000) + '\\n');
    c.destroy();
  });
  c.write('x');
});`;

/** A node child running `code` (on one CPU when `cpu` is given), its stdout lines to `onLine`. */
function start(code: string, args: string[], cpu: number | undefined, onLine: (line: string) => void): ChildProcess {
  const argv = ['-e', code, ...args];
  const child =
    cpu === undefined
      ? spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'inherit'] })
      : spawn('taskset', ['-c', String(cpu), process.execPath, ...argv], { stdio: ['ignore', 'pipe', 'inherit'] });
  child.stdout?.setEncoding('utf8').on('data', (d: string) => d.split('\n').filter(Boolean).forEach(onLine));
  return child;
}

/** µs per round trip between two sleeping node processes; on one CPU when `cpu` is given (needs taskset). */
export async function wakeRoundTrip(cpu?: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'mw-wake-'));
  const path = join(dir, 's');
  let echo: ChildProcess | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      echo = start(ECHO, [path], cpu, (l) => l === 'ready' && resolve());
      echo.on('error', reject).on('exit', () => reject(new Error('the echo process ended before it listened')));
    });
    return await new Promise<number>((resolve, reject) => {
      let us = NaN;
      start(PING, [path, String(ROUND_TRIPS)], cpu, (l) => (us = Number(l)))
        .on('error', reject)
        .on('exit', (code) =>
          code === 0 && Number.isFinite(us) ? resolve(us) : reject(new Error(`ping: exit ${code}`)),
        );
    });
  } finally {
    echo?.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}
