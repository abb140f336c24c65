/*
 * engine/gate — what decide() and every store agree on about one event before
 * anything is charged: is the client a known-good source of this user, is its
 * address shared, and does the event pass (so its pending and if-pass charges
 * are made)?
 *
 * A store cannot ask decide() (Redis runs the whole event in one Lua call), so
 * plan() writes onto each rate and distinct op the few bits that matter
 * (`flags`), and the Redis script mirrors these functions line for line.
 */
import type { CounterResult } from './decide.js';
import type { CounterOp, Plan } from './plan.js';

/** This op, exceeded, refuses the event: it then does not pass. */
export const VETO = 1;
/** The veto does not count for a source the user has logged in from before (known-good). */
export const EXCEPT_KNOWN_GOOD = 2;
/** The op counts and acts only for a shared address (`when.shared: true`) … */
export const ONLY_SHARED = 4;
/** … or only for an address that is not shared (`when.shared: false`). */
export const ONLY_UNSHARED = 8;

export interface GateContext {
  knownGood: boolean;
  shared: boolean;
}

/** Known-good and shared, from the plan's two bookkeeping ops (absent: false). */
export function gateContext(plan: Plan, counters: ReadonlyArray<CounterResult | undefined>): GateContext {
  const kg = plan.knownGood === undefined ? undefined : counters[plan.knownGood];
  const sh = plan.shared === undefined ? undefined : counters[plan.shared];
  // A check's count includes this event's user when it is new; being shared is about the others.
  const users = sh === undefined ? 0 : sh.seen === true ? sh.count : sh.count - 1;
  return { knownGood: kg?.seen === true, shared: sh !== undefined && plan.sharedMin > 0 && users >= plan.sharedMin };
}

/** The op's `when.shared` holds for this address (an op that does not hold is neither charged nor acts). */
export function holds(flags: number, shared: boolean): boolean {
  return (flags & (shared ? ONLY_UNSHARED : ONLY_SHARED)) === 0;
}

/** The event passes: no ban, no suspension, and no holding, exceeded op that refuses it. */
export function passes(
  plan: Plan,
  counters: ReadonlyArray<CounterResult | undefined>,
  blocked: boolean,
  ctx: GateContext,
): boolean {
  if (blocked) return false;
  for (let i = 0; i < plan.counters.length; i++) {
    const op = plan.counters[i] as CounterOp;
    if (op.type !== 'rate' && op.type !== 'distinct') continue;
    const f = op.flags;
    if ((f & VETO) === 0 || counters[i]?.exceeded !== true || !holds(f, ctx.shared)) continue;
    if ((f & EXCEPT_KNOWN_GOOD) !== 0 && ctx.knownGood) continue;
    return false;
  }
  return true;
}
