/*
 * bench/redis-logins — what Dovecot logins cost Redis in cluster mode: the
 * login workload of bench/logins.ts (allow, then report; one in ten fails)
 * applied through RedisStore against the phase's redis-server, 50 logins at a
 * time (their decisions share APPLYs as a busy node's do). Counted from INFO
 * commandstats: the commands APPLY runs per login, and the time Redis spends
 * in APPLY per login. A prefix of its own keeps it apart from the daemons.
 */
import { Redis } from 'ioredis';
import { loadSettings } from '../src/config/load.js';
import { plan } from '../src/engine/plan.js';
import { RedisStore } from '../src/store/redis.js';
import { loginEvent, loginSucceeds } from './login-events.js';

export interface CommandStat {
  calls: number;
  usec: number;
}

/** INFO commandstats, by command. */
export function commandStats(info: string): Map<string, CommandStat> {
  const m = new Map<string, CommandStat>();
  for (const line of info.split('\n')) {
    const x = /^cmdstat_([\w|]+):calls=(\d+),usec=(\d+)/.exec(line.trim());
    if (x) m.set(x[1] as string, { calls: Number(x[2]), usec: Number(x[3]) });
  }
  return m;
}

/** Commands a client sends itself; the rest ran inside the scripts. */
export const CLIENT_LEVEL = new Set([
  'evalsha',
  'eval',
  'ping',
  'info',
  'subscribe',
  'client|setname',
  'client|setinfo',
  'select',
  'quit',
  'config|resetstat',
]);

export interface LoginsOnRedis {
  logins: number;
  /** Commands APPLY ran per login (an allow and a report). */
  commandsPerLogin: number;
  /** µs Redis spent in APPLY per login (commandstats' usec of EVALSHA and EVAL). */
  scriptUsPerLogin: number;
  /** The commands, most first. */
  byCommand: Array<[string, number]>;
}

/** `admin`: the phase's own connection, for RESETSTAT and INFO; the store gets a connection of its own. */
export async function loginsOnRedis(port: number, admin: Redis, logins = 20_000): Promise<LoginsOnRedis> {
  const policy = loadSettings(undefined, {}).policy;
  const client = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1 });
  const store = new RedisStore({ client, prefix: 'bench-logins', node: 'bench', lookbackMs: 86_400_000 });
  try {
    const now = Date.now();
    const apply = (i: number, kind: 'auth-attempt' | 'auth-result') =>
      store.apply(plan(loginEvent(i, kind, now, kind === 'auth-result' ? loginSucceeds(i) : undefined), policy), now);
    // Warm-up: the script is loaded (EVAL once) before counting.
    await apply(logins, 'auth-attempt');
    await admin.config('RESETSTAT');
    for (let first = 0; first < logins; first += 50) {
      const batch = Array.from({ length: Math.min(50, logins - first) }, (_, k) => first + k);
      await Promise.all(batch.map((i) => apply(i, 'auth-attempt')));
      await Promise.all(batch.map((i) => apply(i, 'auth-result')));
    }
    const stats = commandStats(await admin.info('commandstats'));
    const inside = [...stats].filter(([k]) => !CLIENT_LEVEL.has(k)).map(([k, s]): [string, number] => [k, s.calls]);
    const scriptUs = (stats.get('evalsha')?.usec ?? 0) + (stats.get('eval')?.usec ?? 0);
    return {
      logins,
      commandsPerLogin: inside.reduce((n, [, c]) => n + c, 0) / logins,
      scriptUsPerLogin: scriptUs / logins,
      byCommand: inside.sort((a, b) => b[1] - a[1]),
    };
  } finally {
    client.disconnect();
  }
}
