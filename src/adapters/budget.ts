/*
 * adapters/budget — what every adapter shares about asking the engine: the
 * Evaluate signature, and the answer budget. A decision that is not ready in
 * time is given up (the adapter answers "no opinion" and counts it); the mail
 * server is never kept waiting by our failure. A synchronous decision (the
 * embedded store) never gets here: no promise, no timer on the hot path.
 */
import type { Decision, MailEvent } from '../engine/types.js';

export type Evaluate = (event: MailEvent) => Decision | Promise<Decision>;

/** Resolves with the decision, or with undefined once `ms` have passed. */
export function withinBudget<T>(pending: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(resolve, ms, undefined);
  });
  return Promise.race([pending, late]).finally(() => clearTimeout(timer));
}
