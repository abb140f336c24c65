/*
 * adapters/budget — what every adapter shares about asking the engine: the
 * Evaluate signature, and the answer budget. A decision that is not ready in
 * time is given up (the adapter answers "no opinion" and counts it); the mail
 * server is never kept waiting by our failure. A synchronous decision (the
 * embedded store) never gets here: no promise, no timer on the hot path.
 */
import { Deadlines, settle } from '../deadlines.js';
import type { Decision, MailEvent } from '../engine/types.js';

export type Evaluate = (event: MailEvent) => Decision | Promise<Decision>;

/** One Deadlines per budget in use (a handful: the adapters' budgets and the DNSBL wait). */
const budgets = new Map<number, Deadlines>();

/** Resolves with the decision, or with undefined once `ms` have passed; a rejection passes through. */
export function withinBudget<T>(pending: Promise<T>, ms: number): Promise<T | undefined> {
  let deadlines = budgets.get(ms);
  if (deadlines === undefined) {
    // A budget changed by reloads many times over: the old ones' waits still end on their own timers.
    if (budgets.size >= 16) budgets.clear();
    deadlines = new Deadlines(ms);
    budgets.set(ms, deadlines);
  }
  const d = deadlines;
  return new Promise<T | undefined>((resolve, reject) => {
    const w = d.add(() => resolve(undefined));
    pending.then(
      (v) => {
        if (settle(w)) resolve(v);
      },
      (err: unknown) => {
        if (settle(w)) reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
