/*
 * bench/retained — how much of the daemon's memory the counters really need:
 * the same store and engine code as the daemon (MemoryStore on an in-memory
 * SQLite, plan() with the default policy), fed N CONNECT events from distinct
 * IPv4 addresses in-process, then a full GC; prints the live heap they hold
 * as one JSON line. RSS in the daemon adds V8's free heap, garbage not yet
 * collected, and the rest of the process; this is the floor under it.
 *
 *   node --expose-gc --import tsx bench/retained.ts [N]
 */
import { loadSettings } from '../src/config/load.js';
import { plan } from '../src/engine/plan.js';
import type { MailEvent } from '../src/engine/types.js';
import { MemoryStore } from '../src/store/memory.js';
import { ipv4 } from './requests.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');
const n = Number(process.argv[2] ?? 1_000_000);
const settings = loadSettings(undefined, {});
const store = new MemoryStore({
  file: ':memory:',
  maxKeys: settings.store.maxKeys,
  lookbackMs: settings.policy.escalation.lookbackMs,
  now: Date.now,
});
gc();
const before = process.memoryUsage().heapUsed;
const now = Date.now();
for (let i = 0; i < n; i++) {
  const event: MailEvent = {
    kind: 'connect',
    time: now,
    ip: ipv4(i),
    protocol: 'smtp',
    context: '',
    user: undefined,
    sender: undefined,
    recipient: undefined,
    recipients: 0,
    size: 0,
  };
  store.applySync(plan(event, settings.policy), now);
}
gc();
const after = process.memoryUsage().heapUsed;
process.stdout.write(`${JSON.stringify({ keys: store.stats(now).counterKeys, liveBytes: after - before })}\n`);
