/*
 * store/disk-writes — the embedded store's writes to SQLite, never lost and
 * never silent when the disk fails (full, read-only, gone).
 *
 * A write is tried at once. If it fails, it is queued, and so is every write
 * after it (the file must see them in order: a ban, then its lift), and the
 * queue is retried with a growing pause until the disk takes them again. In
 * the meantime the store keeps deciding from memory, so a ban a rule made is
 * enforced even though it is not on disk yet: the caller sees `degraded`
 * (status, metrics, dashboard) and one error line per minute at most.
 *
 * An administrator's action is different: someone waits for its answer, so it
 * is written now or refused (`now()` throws PersistenceError), never
 * acknowledged and then lost with the next restart.
 *
 * Bounds: bans, lifts and suspensions are never dropped (their number is
 * bounded by the bans themselves); audit rows beyond `maxQueued` are dropped
 * oldest first and counted.
 */

export class PersistenceError extends Error {
  readonly statusCode = 503;
}

export interface DiskHealth {
  ok: boolean;
  /** Writes waiting for the disk. */
  queued: number;
  /** Audit rows dropped because the queue was full. */
  dropped: number;
  /** The last error, while degraded. */
  error: string | null;
  /** Since when the disk has been failing (ms since epoch), while degraded. */
  since: number | null;
}

interface Queued {
  write: () => void;
  /** Audit rows may be dropped under pressure; state (bans, suspensions) never. */
  droppable: boolean;
}

export interface DiskWritesOptions {
  now: () => number;
  /** The file could not be opened for writing at all (store/sqlite.ts `unwritable`): degraded until a restart. */
  unwritable?: string | undefined;
  maxQueued?: number;
  /** Told when the disk starts failing and when it works again. */
  onChange?: (health: DiskHealth) => void;
}

const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 30_000;

export class DiskWrites {
  private queue: Queued[] = [];
  private dropped = 0;
  private error: string | null = null;
  private since: number | null = null;
  private timer: NodeJS.Timeout | undefined;
  private pauseMs = FIRST_RETRY_MS;
  private closed = false;
  private readonly maxQueued: number;

  private readonly started: number;

  constructor(private readonly opts: DiskWritesOptions) {
    this.maxQueued = opts.maxQueued ?? 100_000;
    this.started = opts.now();
  }

  /** Writes now, or behind the writes already waiting; false when it had to wait. */
  write(write: () => void, droppable = false): boolean {
    if (this.queue.length === 0) {
      try {
        write();
        return true;
      } catch (err) {
        this.failed(err);
      }
    }
    this.enqueue({ write, droppable });
    return false;
  }

  /** An administrator's write: on disk now (after whatever waits before it), or a PersistenceError. */
  now(write: () => void): void {
    if (this.opts.unwritable !== undefined) throw new PersistenceError(`not written: ${this.health().error ?? ''}`);
    if (this.queue.length > 0 && !this.drain())
      throw new PersistenceError(`not written: the data directory is failing (${this.error ?? 'unknown error'})`);
    try {
      write();
    } catch (err) {
      this.failed(err);
      this.arm();
      throw new PersistenceError(`not written: ${this.error ?? 'unknown error'}`);
    }
  }

  /** Writes what waits, in order, until one fails; true when nothing waits any more. */
  drain(): boolean {
    while (this.queue.length > 0) {
      const next = this.queue[0] as Queued;
      try {
        next.write();
      } catch (err) {
        this.failed(err);
        return false;
      }
      this.queue.shift();
    }
    if (this.error !== null) {
      this.error = null;
      this.since = null;
      this.pauseMs = FIRST_RETRY_MS;
      this.opts.onChange?.(this.health());
    }
    return true;
  }

  health(): DiskHealth {
    const stuck = this.opts.unwritable;
    return {
      ok: stuck === undefined && this.error === null && this.queue.length === 0,
      queued: this.queue.length,
      dropped: this.dropped,
      error:
        stuck === undefined
          ? this.error
          : `cannot write the data directory (${stuck}); running from a copy in memory until it is fixed and mailwarden restarts`,
      since: stuck === undefined ? this.since : this.started,
    };
  }

  /** Stops retrying (the store is closing); what still waits is lost with the process, and said so by the caller. */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
  }

  private enqueue(q: Queued): void {
    this.queue.push(q);
    if (this.queue.length > this.maxQueued) {
      const i = this.queue.findIndex((x) => x.droppable);
      if (i >= 0) {
        this.queue.splice(i, 1);
        this.dropped++;
      }
    }
    this.arm();
  }

  private failed(err: unknown): void {
    const first = this.error === null;
    this.error = err instanceof Error ? err.message : String(err);
    if (first) {
      this.since = this.opts.now();
      this.opts.onChange?.(this.health());
    }
  }

  private arm(): void {
    if (this.timer !== undefined || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.drain()) return;
      this.pauseMs = Math.min(MAX_RETRY_MS, this.pauseMs * 2);
      this.arm();
    }, this.pauseMs);
    // Retrying must never keep a stopping daemon alive.
    this.timer.unref();
  }
}
