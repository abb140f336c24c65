/*
 * bench/logins — what deciding Dovecot logins costs inside the daemon, without
 * HTTP: the engine and the embedded store (plan → MemoryStore.applySync →
 * decide, as the decider runs them) on the built-in policy.
 *
 * - µs per login: the endpoint benchmark's mix (bench/dovecot.ts): a login is
 *   allow then report, one in ten fails (Dovecot's second, identical allow
 *   after a good password is answered by the endpoint's memo, not the engine).
 *   Best of 3 runs.
 * - bytes per source with a login in flight: N addresses each send one allow
 *   and no report yet (the pending members of the guessing counters), live heap
 *   after a forced GC, against the same store before.
 *
 * Prints one JSON line. `node --expose-gc --import tsx bench/logins.ts [logins] [sources]`
 */
import { loadSettings } from '../src/config/load.js';
import { decide } from '../src/engine/decide.js';
import { plan } from '../src/engine/plan.js';
import type { MailEvent } from '../src/engine/types.js';
import { MemoryStore } from '../src/store/memory.js';
import { loginEvent, loginSucceeds } from './login-events.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error('run with node --expose-gc');
const logins = Number(process.argv[2] ?? 200_000);
const sources = Number(process.argv[3] ?? 100_000);
const policy = loadSettings(undefined, {}).policy;
const newStore = (): MemoryStore =>
  new MemoryStore({ file: ':memory:', maxKeys: 4_000_000, lookbackMs: policy.escalation.lookbackMs, now: Date.now });

function run(store: MemoryStore, e: MailEvent): void {
  const p = plan(e, policy);
  decide(e, policy, p, store.applySync(p, e.time));
}

function usPerLogin(): number {
  const store = newStore();
  const now = Date.now();
  const start = process.cpuUsage();
  for (let i = 0; i < logins; i++) {
    run(store, loginEvent(i, 'auth-attempt', now));
    run(store, loginEvent(i, 'auth-result', now, loginSucceeds(i)));
  }
  const used = process.cpuUsage(start);
  void store.close();
  return (used.user + used.system) / logins;
}

function bytesPerSource(): number {
  const store = newStore();
  const now = Date.now();
  gc?.();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < sources; i++) run(store, loginEvent(i, 'auth-attempt', now));
  gc?.();
  const after = process.memoryUsage().heapUsed;
  void store.close();
  return (after - before) / sources;
}

usPerLogin(); // warm up the JIT
const us = Math.min(usPerLogin(), usPerLogin(), usPerLogin());
process.stdout.write(`${JSON.stringify({ usPerLogin: us, bytesPerSource: bytesPerSource(), logins, sources })}\n`);
