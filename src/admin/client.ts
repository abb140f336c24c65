/*
 * admin/client — how the CLI talks to a running daemon: HTTP over the admin
 * unix socket in the data dir. Errors come back as one readable sentence
 * (daemon not running, permission denied, or the API's own message).
 *
 * Which data dir: findDaemon() tries, in order, --data, MAILWARDEN_DATA, the
 * `data_dir` line of the config file (read on its own, so a broken file never
 * locks the administrator out), then the well-known places, and takes the
 * first with a live admin.sock. A dir named by --data or MAILWARDEN_DATA is
 * the only one tried: acting on some other daemon than the one named would
 * be worse than saying it is not there.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { userInfo } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';

export class AdminError extends Error {
  override name = 'AdminError';
  /** The HTTP status, or 0 when the daemon was not reached at all. */
  readonly status: number;
  constructor(message: string, status: number) {
    super(message);
    this.status = status;
  }
  get unreachable(): boolean {
    return this.status === 0;
  }
}

export interface DataDirCandidate {
  dir: string;
  /** Where the CLI got it, said back when nothing answers: "--data", "MAILWARDEN_DATA", "config …". */
  from: string;
}

export interface SearchInput {
  flag?: string | undefined;
  env: NodeJS.ProcessEnv;
  configFile?: string | undefined;
  cwd: string;
  /** The quick start's data dir: the repository's `data/` next to the installed dist/main.js. */
  installDataDir: string;
}

/** Installed services keep their state here (the systemd unit and packages use it). */
export const SYSTEM_DATA_DIR = '/var/lib/mailwarden';

/**
 * The `data_dir` value of a config file, read without parsing the rest: a file
 * the daemon refused (after a bad SIGHUP) must still point the CLI at it.
 */
export function configDataDir(file: string): string | undefined {
  let text: string;
  try {
    if (statSync(file).size > 4 * 1024 * 1024) return undefined;
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const m = /^data_dir[ \t]*:[ \t]*(.*)$/m.exec(text);
  if (!m) return undefined;
  let v = (m[1] ?? '').trim();
  const quoted = /^(["'])(.*?)\1/.exec(v);
  if (quoted) v = quoted[2] ?? '';
  else v = v.replace(/\s+#.*$/, '').trim();
  return v || undefined;
}

export function dataDirCandidates(i: SearchInput): { explicit: boolean; candidates: DataDirCandidate[] } {
  if (i.flag) return { explicit: true, candidates: [{ dir: resolve(i.cwd, i.flag), from: '--data' }] };
  const envDir = i.env.MAILWARDEN_DATA;
  if (envDir) return { explicit: true, candidates: [{ dir: resolve(i.cwd, envDir), from: 'MAILWARDEN_DATA' }] };
  const out: DataDirCandidate[] = [];
  if (i.configFile) {
    const v = configDataDir(i.configFile);
    if (v) {
      // The daemon resolves a relative data_dir against its own working directory, which the CLI cannot
      // know: the one here and the config file's own directory are the likely ones.
      out.push({ dir: resolve(i.cwd, v), from: `data_dir in ${i.configFile}` });
      if (!isAbsolute(v)) out.push({ dir: resolve(dirname(i.configFile), v), from: `data_dir in ${i.configFile}` });
    }
  }
  out.push({ dir: resolve(i.cwd, 'data'), from: 'default ./data' });
  out.push({ dir: i.installDataDir, from: 'the quick start' });
  out.push({ dir: SYSTEM_DATA_DIR, from: 'installed service' });
  const seen = new Set<string>();
  return { explicit: false, candidates: out.filter((c) => !seen.has(c.dir) && seen.add(c.dir)) };
}

type Probe = 'live' | 'absent' | 'denied';

/** Whether something accepts connections on the socket (a crashed daemon leaves a dead one behind). */
export function probe(socketPath: string, timeoutMs = 2000): Promise<Probe> {
  return new Promise((done) => {
    const s = connect(socketPath);
    const finish = (r: Probe): void => {
      s.destroy();
      done(r);
    };
    s.setTimeout(timeoutMs, () => finish('absent'));
    s.once('connect', () => finish('live'));
    s.once('error', (err: NodeJS.ErrnoException) => finish(err.code === 'EACCES' ? 'denied' : 'absent'));
  });
}

/** The admin socket of the first candidate with a live daemon, or an AdminError saying where it looked. */
export async function findDaemon(i: SearchInput): Promise<string> {
  const { explicit, candidates } = dataDirCandidates(i);
  const looked: string[] = [];
  for (const c of candidates) {
    const sock = join(c.dir, 'admin.sock');
    const p = await probe(sock);
    if (p === 'live') return sock;
    if (p === 'denied')
      throw new AdminError(`permission denied on ${sock}; run as the user that runs the daemon (or root)`, 0);
    looked.push(`  ${sock}  (${c.from})`);
  }
  const how = explicit
    ? `check ${candidates[0]?.from ?? 'the data directory'}, or start it with: mailwarden serve`
    : 'point the CLI at its data directory with --data DIR or MAILWARDEN_DATA=DIR, or start it with: mailwarden serve';
  throw new AdminError(
    `mailwarden is not running where the CLI looked; no daemon answers at:\n${looked.join('\n')}\n${how}`,
    0,
  );
}

/**
 * The data directory for commands that read its files themselves (backup): the running daemon's,
 * or else the first candidate holding a database, so a stopped daemon's data can be copied too.
 */
export async function findDataDir(i: SearchInput, file: string): Promise<string> {
  try {
    return dirname(await findDaemon(i));
  } catch (err) {
    if (!(err instanceof AdminError) || err.message.startsWith('permission denied')) throw err;
    const { candidates } = dataDirCandidates(i);
    const found = candidates.find((c) => existsSync(join(c.dir, file)));
    if (found) return found.dir;
    throw new AdminError(
      `no ${file} in ${candidates.map((c) => c.dir).join(', ')}; point the CLI at the data directory with --data DIR`,
      1,
    );
  }
}

export async function call<T>(socketPath: string, method: string, path: string, body?: unknown): Promise<T> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  let actor = 'cli';
  try {
    actor = `cli:${userInfo().username}`;
  } catch {
    // no passwd entry (containers): plain "cli"
  }
  return new Promise<T>((resolve, reject) => {
    const req = request(
      {
        socketPath,
        method,
        path,
        headers: {
          'x-mailwarden-actor': actor,
          ...(payload === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
        },
        timeout: 10_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => {
          let data: unknown;
          try {
            data = text ? JSON.parse(text) : undefined;
          } catch {
            data = text;
          }
          const status = res.statusCode ?? 0;
          if (status >= 400) {
            const msg = (data as { error?: string } | undefined)?.error ?? `HTTP ${status}`;
            reject(new AdminError(msg, status));
          } else resolve(data as T);
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('the daemon did not answer within 10 s')));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') {
        reject(
          new AdminError(`mailwarden is not running (no daemon at ${socketPath}); start it with: mailwarden serve`, 0),
        );
      } else if (err.code === 'EACCES') {
        reject(new AdminError(`permission denied on ${socketPath}; run as the user that runs the daemon (or root)`, 0));
      } else reject(new AdminError(err.message, 0));
    });
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}
