/*
 * store/open — builds the store the settings ask for: the embedded
 * MemoryStore (default), or, in cluster mode (`store.backend: redis`,
 * MAILWARDEN_STORE=redis://…), the shared RedisStore behind a
 * ResilientStore whose local memory is the same SQLite file in the data dir.
 * Opening never fails on an unreachable Redis: the node starts in fallback.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Settings } from '../config/compile.js';
import type { DiskHealth } from './disk-writes.js';
import { MemoryStore } from './memory.js';
import { createRedisClient, RedisStore } from './redis.js';
import { ResilientStore } from './resilient.js';
import { DATABASE_FILE } from './sqlite.js';

export type NodeStore = MemoryStore | ResilientStore;

export async function openStore(
  settings: Settings,
  logger: Logger,
  now: () => number,
  onDisk?: (health: DiskHealth) => void,
): Promise<NodeStore> {
  const warn = (fields: Record<string, unknown>, message: string): void => logger.warn(fields, message);
  const local = new MemoryStore({
    file: join(settings.dataDir, DATABASE_FILE),
    maxKeys: settings.store.maxKeys,
    lookbackMs: settings.policy.escalation.lookbackMs,
    now,
    onDisk,
    warn,
  });
  const r = settings.redis;
  if (!r) return local;
  const client = createRedisClient(r, `mailwarden:${settings.node}`);
  // ioredis reports connection errors as events; the store logs the change of mode instead.
  client.on('error', () => undefined);
  const redis = new RedisStore({
    client,
    prefix: r.prefix,
    node: settings.node,
    lookbackMs: settings.policy.escalation.lookbackMs,
    warn,
  });
  return ResilientStore.open({ redis, local, logger, timeoutMs: r.timeoutMs });
}
