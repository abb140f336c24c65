/*
 * Runs the real `mailwarden` command (src/main.ts through tsx) as a child
 * process, on free loopback ports and a temp data dir, for CLI, durability
 * and admin API tests. Every process started is killed by PID in stop().
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO } from './postfix.js';

const MAIN = join(REPO, 'src', 'main.ts');
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI; `cwd` (default: the repository) shows it finds the daemon from anywhere. */
export function runCli(
  args: string[],
  env: Record<string, string> = {},
  opts: { cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    // An absolute tsx loader: from another directory, `--import tsx` would be looked up there.
    const p = spawn(process.execPath, ['--import', TSX, MAIN, ...args], {
      cwd: opts.cwd ?? REPO,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    p.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

export interface DaemonProcess {
  proc: ChildProcess;
  postfixPort: number;
  dovecotPort: number;
  adminPort: number;
  env: Record<string, string>;
  output: () => string;
  /** Sends a signal and waits for the process to exit. */
  kill(signal: NodeJS.Signals): Promise<number | null>;
}

/**
 * Starts `mailwarden serve`; pass `ports` (e.g. a stopped daemon's) to restart it on the same addresses,
 * and `prefix` to run it under a command that execs it (e.g. `prlimit --nofile=512:512`: the PID stays its).
 */
export async function startDaemonProcess(
  dataDir: string,
  extraEnv: Record<string, string> = {},
  ports?: { postfixPort: number; dovecotPort: number; adminPort: number },
  prefix: string[] = [],
): Promise<DaemonProcess> {
  // A free port can be taken by another test's process before the daemon binds it: new ports, again.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnPorts(dataDir, extraEnv, ports, prefix);
    } catch (err) {
      if (ports !== undefined || attempt >= 3 || !String(err).includes('address already in use')) throw err;
    }
  }
}

async function startOnPorts(
  dataDir: string,
  extraEnv: Record<string, string>,
  ports: { postfixPort: number; dovecotPort: number; adminPort: number } | undefined,
  prefix: string[],
): Promise<DaemonProcess> {
  const postfixPort = ports?.postfixPort ?? (await freePort());
  const adminPort = ports?.adminPort ?? (await freePort());
  const dovecotPort = ports?.dovecotPort ?? (await freePort());
  const env = {
    MAILWARDEN_DATA: dataDir,
    MAILWARDEN_POSTFIX_LISTEN: `127.0.0.1:${postfixPort}`,
    MAILWARDEN_DOVECOT_LISTEN: `127.0.0.1:${dovecotPort}`,
    MAILWARDEN_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
    ...extraEnv,
  };
  const argv = [...prefix, process.execPath, '--import', 'tsx', MAIN, 'serve'];
  const proc = spawn(argv[0] as string, argv.slice(1), {
    cwd: REPO,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  proc.stderr?.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`daemon did not start within 20 s:\n${out}`)), 20_000);
    const check = (): void => {
      if (out.includes('"mailwarden started"')) {
        clearTimeout(timer);
        resolve();
      }
    };
    proc.stdout?.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited with ${code} before starting:\n${out}`));
    });
  }).catch((err: unknown) => {
    proc.kill('SIGKILL');
    throw err;
  });
  return {
    proc,
    postfixPort,
    dovecotPort,
    adminPort,
    env,
    output: () => out,
    kill: async (signal) => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}
