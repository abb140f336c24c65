/*
 * An in-process mailwarden for adapter tests: real MemoryStore on a real
 * SQLite file, the real engine and Decider, the real Postfix server on a real
 * TCP port (and optionally a unix socket). Logs are captured for assertions.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { DovecotPolicyServer, type DovecotServerOptions } from '../../src/adapters/dovecot/server.js';
import type { Evaluate } from '../../src/adapters/budget.js';
import { PostfixPolicyServer, type PostfixServerOptions } from '../../src/adapters/postfix/server.js';
import { loadSettings, loadSettingsFromText } from '../../src/config/load.js';
import { Decider } from '../../src/decider.js';
import type { Settings } from '../../src/config/compile.js';
import { MemoryStore } from '../../src/store/memory.js';
import type { CommitResult } from '../../src/store/types.js';

export interface Harness {
  settings: Settings;
  store: MemoryStore;
  decider: Decider;
  server: PostfixPolicyServer;
  bound: string[];
  dovecot: DovecotPolicyServer;
  /** `http://127.0.0.1:port/dovecot/policy` */
  dovecotUrl: string;
  logs: Array<Record<string, unknown>>;
  dir: string;
  clock: { now: number };
  close(): Promise<void>;
}

export function captureLogger(logs: Array<Record<string, unknown>>): Logger {
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return pino({ level: 'debug' }, sink);
}

export async function startHarness(
  opts: {
    yaml?: string;
    unix?: boolean;
    evaluate?: (d: Decider) => Evaluate;
    budget?: string;
    idle?: string;
    /** Options the servers take beyond the settings (log throttling, the read path). */
    postfix?: Partial<PostfixServerOptions>;
    dovecot?: Partial<DovecotServerOptions>;
  } = {},
): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'mw-test-'));
  const settings = opts.yaml ? loadSettingsFromText(opts.yaml, 'test.yaml') : loadSettings(undefined);
  const clock = { now: Date.parse('2026-11-27T12:00:00Z') };
  const now = (): number => clock.now;
  const logs: Array<Record<string, unknown>> = [];
  const logger = captureLogger(logs);
  const store = new MemoryStore({
    file: join(dir, 'mw.sqlite'),
    maxKeys: 100_000,
    lookbackMs: settings.policy.escalation.lookbackMs,
    now,
  });
  const decider = new Decider(settings.policy, store, logger);
  const server = new PostfixPolicyServer({
    evaluate: opts.evaluate ? opts.evaluate(decider) : decider.evaluate,
    logger,
    now,
    budgetMs: opts.budget ? Number(opts.budget) : settings.postfix.budgetMs,
    idleTimeoutMs: opts.idle ? Number(opts.idle) : settings.postfix.idleTimeoutMs,
    maxLine: settings.postfix.maxLine,
    maxAttributes: settings.postfix.maxAttributes,
    repeatWindowMs: settings.postfix.repeatWindowMs,
    limits: settings.postfix.limits,
    ...opts.postfix,
  });
  const targets: Settings['listen']['postfix'] = [{ kind: 'tcp', host: '127.0.0.1', port: 0 }];
  if (opts.unix) targets.push({ kind: 'unix', path: join(dir, 'policy.sock') });
  const bound = await server.start(targets);
  const dovecot = new DovecotPolicyServer({
    evaluate: opts.evaluate ? opts.evaluate(decider) : decider.evaluate,
    logger,
    now,
    budgetMs: opts.budget ? Number(opts.budget) : settings.dovecot.budgetMs,
    maxDelayMs: settings.dovecot.maxDelayMs,
    smtpMaxDelayMs: settings.dovecot.smtpMaxDelayMs,
    apiHeader: settings.dovecot.apiHeader,
    repeatWindowMs: settings.dovecot.repeatWindowMs,
    limits: settings.dovecot.limits,
    headersTimeoutMs: settings.dovecot.headersTimeoutMs,
    requestTimeoutMs: settings.dovecot.requestTimeoutMs,
    maxBody: settings.dovecot.maxBody,
    ...opts.dovecot,
  });
  const [dovecotAddr] = await dovecot.start([{ kind: 'tcp', host: '127.0.0.1', port: 0 }]);
  return {
    settings,
    store,
    decider,
    server,
    bound,
    dovecot,
    dovecotUrl: `http://${dovecotAddr}/dovecot/policy`,
    logs,
    dir,
    clock,
    close: async () => {
      await server.stop();
      await dovecot.stop();
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An administrator's one-hour ban of `subject` (an address or a network), made durable in the harness's store. */
export function banForAnHour(h: Harness, subject: string): Promise<CommitResult> {
  return h.store.commit(
    [
      {
        type: 'ban',
        subject,
        rule: 'manual',
        reason: 'test',
        evidence: {},
        escalation: h.settings.policy.escalation,
        durationMs: 3_600_000,
      },
    ],
    h.clock.now,
    'test',
  );
}
