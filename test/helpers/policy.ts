/*
 * test/helpers/policy — small builders shared by the engine and store tests:
 * a Policy from YAML text, a MailEvent with neutral defaults, and a Harness
 * that runs the whole decision path (plan → MemoryStore.applySync → decide)
 * on an injected clock, optionally committing the effects like the daemon.
 */
import { loadSettingsFromText } from '../../src/config/load.js';
import { decide, type ApplyResult } from '../../src/engine/decide.js';
import { plan, type CounterOp, type Plan } from '../../src/engine/plan.js';
import type { Policy } from '../../src/engine/policy.js';
import type { Decision, MailEvent } from '../../src/engine/types.js';
import { MemoryStore } from '../../src/store/memory.js';
import type { CommitResult, Store } from '../../src/store/types.js';

/** A fixed, realistic start time (2025-01-01T00:00:00Z); tests move the clock from here. */
export const T0 = Date.UTC(2025, 0, 1);
export const SECOND = 1000;
export const MINUTE = 60 * SECOND;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

/** The compiled Policy of a YAML config text (throws ConfigError when the text is wrong). */
export function policyFrom(yaml: string): Policy {
  return loadSettingsFromText(yaml, 'test.yaml').policy;
}

/** A policy with only the given rules (YAML list items, indented by two spaces) plus optional top-level YAML. */
export function rulesPolicy(rules: string, extra = ''): Policy {
  return policyFrom(`use_default_rules: false\n${extra}\nrules:\n${rules}\n`);
}

/** An event with neutral defaults: an SMTP connect from 192.0.2.10 at T0. */
export function makeEvent(over: Partial<MailEvent> = {}): MailEvent {
  return {
    kind: 'connect',
    time: T0,
    ip: '192.0.2.10',
    protocol: 'smtp',
    context: '',
    recipients: 0,
    size: 0,
    ...over,
  };
}

export interface Outcome {
  event: MailEvent;
  plan: Plan;
  result: ApplyResult;
  decision: Decision;
}

export interface HarnessOptions {
  file?: string;
  maxKeys?: number;
  lookbackMs?: number;
}

/** One policy, one MemoryStore, one clock: feeds events through the whole decision path. */
export class Harness {
  now = T0;
  readonly store: MemoryStore;

  constructor(
    readonly policy: Policy,
    opts: HarnessOptions = {},
  ) {
    this.store = new MemoryStore({
      file: opts.file ?? ':memory:',
      maxKeys: opts.maxKeys ?? 100_000,
      lookbackMs: opts.lookbackMs ?? policy.escalation.lookbackMs,
      now: () => this.now,
    });
  }

  advance(ms: number): this {
    this.now += ms;
    return this;
  }

  /** plan + applySync + decide for one event at the current time; commits nothing. */
  run(over: Partial<MailEvent> = {}): Outcome {
    const event = makeEvent({ time: this.now, ...over });
    const p = plan(event, this.policy);
    const result = this.store.applySync(p, this.now);
    return { event, plan: p, result, decision: decide(event, this.policy, p, result) };
  }

  /** Like the daemon: decide, then make the effects durable and audit the hits. */
  async handle(over: Partial<MailEvent> = {}): Promise<Outcome & { committed: CommitResult }> {
    const out = this.run(over);
    const committed = await this.store.commit(out.decision.effects, this.now, 'mailwarden');
    this.store.recordHits(out.event, out.decision.hits, this.now);
    return { ...out, committed };
  }

  /** Runs `n` identical events at the current time; returns the decisions. */
  runMany(n: number, over: Partial<MailEvent> = {}): Decision[] {
    const out: Decision[] = [];
    for (let i = 0; i < n; i++) out.push(this.run(over).decision);
    return out;
  }

  /** The current counts of the counters an event would touch, without charging them. */
  peek(over: Partial<MailEvent> = {}): Promise<Record<string, number>> {
    return peekCounts(this.store, this.policy, this.now, over);
  }
}

/** The counts, on any store, of the counters an event at `now` would touch, without charging them. */
export async function peekCounts(
  store: Store,
  policy: Policy,
  now: number,
  over: Partial<MailEvent> = {},
): Promise<Record<string, number>> {
  const event = makeEvent({ time: now, ...over });
  const p = plan(event, policy);
  const counts = await store.peek(p.counters, now);
  // Readable keys: the rule's name instead of its short counter id.
  return Object.fromEntries(
    p.counters.map((op: CounterOp, i) => [`${op.rule}${op.key.slice(op.key.indexOf('|'))}`, counts[i] as number]),
  );
}

/** How many decisions let the event through. */
export function allowed(decisions: readonly Decision[]): number {
  return decisions.filter((d) => d.action === 'allow').length;
}
