/*
 * store/counting — the counting arithmetic every backend shares (the Redis Lua
 * script mirrors it line for line).
 *
 * Rates use GCRA: one number per key, the "theoretical arrival time" (TAT).
 * `limit` events per `window` means one event every window/limit ms, with a
 * burst of up to `limit`. Unlike a fixed window it never lets 2× the limit
 * through at a window edge, and unlike a log of timestamps it is O(1) memory.
 *
 * Distinct counts keep each member with the time it was last seen, pruned to
 * the window, and capped (`DISTINCT_CAP`): past the cap the count means
 * "at least". A member that is only in flight (a login attempt not yet
 * reported, engine/plan.ts) is kept at a time half a millisecond past a whole
 * one: times are whole milliseconds otherwise, so the mark costs no room, sorts
 * and prunes like any time, and survives snapshots and Redis sorted sets.
 */

export interface RateOutcome {
  /** TAT to store if the event is charged. */
  tat: number;
  /** Count in the window including this event. */
  count: number;
  exceeded: boolean;
}

/**
 * Float rounding must not turn exactly `limit` into limit+epsilon. TATs are epoch
 * milliseconds (~1.7e12), where a double resolves only ~0.0002 ms, and a burst
 * chains up to `limit` additions that each round by up to half of that; a fixed
 * epsilon refused e.g. the 7th of a burst of 7 per second. The slack covers that
 * worst case and is never more than half an interval, so it never admits an
 * extra event.
 */
function slack(tat: number, limit: number, interval: number): number {
  return Math.min(interval / 2, (limit + 1) * Math.abs(tat) * Number.EPSILON);
}

export function gcra(
  storedTat: number | undefined,
  now: number,
  cost: number,
  limit: number,
  windowMs: number,
): RateOutcome {
  const interval = windowMs / limit;
  const base = storedTat !== undefined && storedTat > now ? storedTat : now;
  const tat = base + cost * interval;
  const s = slack(tat, limit, interval);
  // count > limit exactly when exceeded: both allow the same slack.
  const count = Math.ceil((tat - now - s) / interval);
  return { tat, count, exceeded: tat - now > windowMs + s };
}

/** The count a stored TAT stands for at `now`, without charging. */
export function gcraCount(storedTat: number | undefined, now: number, limit: number, windowMs: number): number {
  if (storedTat === undefined || storedTat <= now) return 0;
  const interval = windowMs / limit;
  return Math.max(0, Math.ceil((storedTat - now - slack(storedTat, limit, interval)) / interval));
}

export const DISTINCT_CAP = 1024;

/** A distinct member's time: confirmed (a whole ms) or pending (half a ms past it). */
export function memberTime(now: number, pending: boolean): number {
  return Math.floor(now) + (pending ? 0.5 : 0);
}

export function isPending(time: number): boolean {
  return time !== Math.floor(time);
}

/** An exponentially weighted rate: `r` events per ms as of time `t`. */
export interface Usual {
  r: number;
  t: number;
}

/** The usual rate at `now` (events per ms), decayed since it was last updated. */
export function usualRate(u: Usual | undefined, now: number, tauMs: number): number {
  if (!u) return 0;
  return u.r * Math.exp(-Math.max(0, now - u.t) / tauMs);
}

/** Adds `cost` events at `now`: in a steady stream of λ events per ms, r converges to λ. */
export function usualAdd(u: Usual | undefined, now: number, tauMs: number, cost: number): Usual {
  return { r: usualRate(u, now, tauMs) + cost / tauMs, t: now };
}
