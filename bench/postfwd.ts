/*
 * bench/postfwd — the peer: Debian's postfwd (a Perl policy server), with one
 * rule comparable to mailwarden's default `smtp-connections-per-ip`:
 *
 *   id=CONN01; protocol_state==CONNECT; action=rate(client_address/60/60/450 …)
 *
 * Both editions Debian ships are measured when present:
 *   postfwd1  one process (Net::Server::Multiplex): the same shape as mailwarden;
 *   postfwd2  prefork (Net::Server::PreFork) plus a cache process for rate
 *             counters: one child per connection, so it is started with enough
 *             children for the benchmark's persistent connections.
 * Its request cache is turned off (--cache=0): the benchmark reuses its
 * requests, and a real Postfix never repeats one after the session.
 *
 * postfwd always daemonizes (without it postfwd2 cannot rate-limit), so it is
 * tracked through its pid file and stopped by PID with its whole process tree.
 * It is optional: when it is not installed, or fails to start, the benchmark
 * says why and carries on.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, chmodSync, constants, readFileSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import type { Target } from './policy-client.js';
import { adoptDaemon, logTail, readPidFile, spawnLogged, stopDaemon, waitForListen } from './procs.js';

export const POSTFWD_RULE =
  'id=CONN01; protocol_state==CONNECT; action=rate(client_address/60/60/450 4.7.1 too many connections)';

function which(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  for (const d of dirs) {
    if (!d) continue;
    const f = join(d, name);
    try {
      accessSync(f, constants.X_OK);
      return f;
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface PostfwdFound {
  editions: Array<{ name: 'postfwd1' | 'postfwd2'; bin: string }>;
  version: string;
}

/** The installed postfwd editions, or why there are none. */
export function findPostfwd(): PostfwdFound | { missing: string } {
  const editions: PostfwdFound['editions'] = [];
  for (const name of ['postfwd1', 'postfwd2'] as const) {
    const bin = which(name);
    if (bin) editions.push({ name, bin });
  }
  if (editions.length === 0) {
    return {
      missing: 'postfwd is not installed (Debian: apt-get install -y postfwd); the peer comparison was skipped',
    };
  }
  // `postfwd -V` prints its version and exits 1.
  const out = spawnSync(editions[0]!.bin, ['-V'], { encoding: 'utf8', timeout: 10_000 });
  const version = /postfwd2? (\d\S*)/.exec(`${out.stdout ?? ''}${out.stderr ?? ''}`)?.[1] ?? '?';
  return { editions, version };
}

export interface RunningPeer {
  target: Target;
  pid: number;
  stop(): Promise<void>;
}

/** postfwd drops to this user; it must be able to write its pid file and cache socket in `dir`. */
function runAs(): { user: string; group: string } {
  if (process.getuid?.() !== 0) {
    const u = userInfo();
    const group =
      readFileSync('/etc/group', 'utf8')
        .split('\n')
        .find((l) => l.split(':')[2] === String(u.gid))
        ?.split(':')[0] ?? String(u.gid);
    return { user: u.username, group };
  }
  const hasNogroup = readFileSync('/etc/group', 'utf8')
    .split('\n')
    .some((l) => l.startsWith('nogroup:'));
  return { user: 'nobody', group: hasNogroup ? 'nogroup' : 'nobody' };
}

export async function startPostfwd(
  edition: PostfwdFound['editions'][number],
  dir: string,
  port: number,
  connections: number,
): Promise<RunningPeer> {
  chmodSync(dir, 0o777);
  const rules = join(dir, 'postfwd.cf');
  writeFileSync(rules, `${POSTFWD_RULE}\n`, { mode: 0o644 });
  const pidFile = join(dir, `${edition.name}.pid`);
  const log = join(dir, `${edition.name}.log`);
  const { user, group } = runAs();
  const common = ['-f', rules, '-u', user, '-g', group, '--pidfile', pidFile, '--cache=0'];
  const args =
    edition.name === 'postfwd1'
      ? ['-d', ...common, '-i', '127.0.0.1', '-p', String(port)]
      : [
          '-d',
          ...common,
          '--server_socket',
          `tcp:127.0.0.1:${port}`,
          '--cache_proto',
          'unix',
          '--cache_port',
          join(dir, 'postfwd2-cache.sock'),
          '--min_servers',
          String(connections + 5),
          '--max_servers',
          String(connections + 50),
        ];
  const launcher = spawnLogged(edition.name, edition.bin, args, process.env, log);
  await launcher.exited; // the launcher forks the daemon and returns
  const target: Target = { kind: 'tcp', host: '127.0.0.1', port };
  let pid: number | undefined;
  const deadline = Date.now() + 15_000;
  while ((pid = readPidFile(pidFile)) === undefined && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 50));
  if (pid === undefined)
    throw new Error(`${edition.name} wrote no pid file (${launcher.exit}); last log lines:\n${logTail(log)}`);
  adoptDaemon(pid);
  const daemonPid = pid;
  try {
    await waitForListen(undefined, edition.name, log, [target], 15_000);
  } catch (err) {
    await stopDaemon(daemonPid);
    throw err;
  }
  return { target, pid: daemonPid, stop: () => stopDaemon(daemonPid) };
}
