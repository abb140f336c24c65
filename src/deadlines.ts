/*
 * deadlines — many waits that share one timeout, as every decision waiting for
 * Redis (store/resilient.ts) or for its answer budget (adapters/budget.ts)
 * does: they fall due in the order they began, so one timer, set for the
 * first still waiting, stands for all of them, instead of a timer armed and
 * cleared (and a promise raced against it) per request.
 */

/** A wait: settled once, by its answer or by its deadline. */
export interface Waiting {
  due: number;
  settled: boolean;
  late: () => void;
}

const SETTLED = (): void => undefined;

/**
 * Settles a wait: true for whichever of its answer and its deadline comes first, false for the other.
 * A settled wait stays queued until its deadline passes, so it lets go of `late` (which holds the whole
 * request): kept for the timeout, each request would outlive a young-generation GC or two and be copied.
 */
export function settle(w: Waiting): boolean {
  if (w.settled) return false;
  w.settled = true;
  w.late = SETTLED;
  return true;
}

export class Deadlines {
  private queue: Waiting[] = [];
  private first = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly ms: number) {}

  /** Starts a wait; `late` runs if it is not settled within the timeout. */
  add(late: () => void): Waiting {
    const w: Waiting = { due: performance.now() + this.ms, settled: false, late };
    this.queue.push(w);
    if (this.timer === undefined) this.timer = setTimeout(this.expire, this.ms);
    return w;
  }

  // Timers run before the poll phase that reads sockets: after a pause of this process (a busy machine, a
  // long GC) an answer Redis gave in time may be waiting unread. Read it first, so that our own delay is not
  // taken for Redis's.
  private readonly expire = (): void => void setImmediate(this.check);

  private readonly check = (): void => {
    this.timer = undefined;
    const now = performance.now();
    const q = this.queue;
    while (this.first < q.length) {
      const w = q[this.first] as Waiting;
      if (!w.settled && w.due > now) break;
      this.first++;
      const late = w.late;
      if (settle(w)) late();
    }
    if (this.first === q.length) {
      this.queue = [];
      this.first = 0;
      return;
    }
    if (this.first * 2 > q.length) {
      this.queue = q.slice(this.first);
      this.first = 0;
    }
    this.timer = setTimeout(this.expire, Math.max(1, (this.queue[this.first] as Waiting).due - now));
  };
}
