/*
 * log — the daemon's structured logger (pino, JSON lines on stdout).
 * Nothing that holds a password or password hash is ever passed to it; the
 * redaction list is a second line of defence for fields an adapter might add.
 *
 * ThrottledLog: what a client can provoke (bad requests, refused connections,
 * missed budgets) is logged at most `burst` times per kind and interval, and
 * the rest as one "N suppressed" line per kind when the interval ends. A
 * fuzzing flood once wrote 25,258 warn lines in 9 s, one per bad connection.
 */
import { pino, type Logger } from 'pino';

export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { name: 'mailwarden' },
    redact: {
      paths: ['password', 'pwhash', '*.password', '*.pwhash', 'req.headers.authorization'],
      censor: '[redacted]',
    },
  });
}

export interface ThrottleOptions {
  /** Lines of one kind written per interval before the rest are only counted. */
  burst?: number;
  intervalMs?: number;
}

type Level = 'warn' | 'error';

interface KindState {
  level: Level;
  logged: number;
  suppressed: number;
}

/**
 * Warnings and errors rate-limited per kind. Kinds are fixed strings from the
 * code, never from input, so the map stays as small as the code's list. An
 * interval starts with the first line after a quiet one; its timer is unref'd,
 * so it never keeps the process alive.
 */
export class ThrottledLog {
  /** Lines not written since start, all kinds together. */
  suppressedTotal = 0;
  private readonly kinds = new Map<string, KindState>();
  private timer: NodeJS.Timeout | undefined;
  private readonly burst: number;
  private readonly intervalMs: number;

  constructor(
    readonly logger: Logger,
    o: ThrottleOptions = {},
  ) {
    this.burst = o.burst ?? 5;
    this.intervalMs = o.intervalMs ?? 10_000;
  }

  warn(kind: string, obj: object, msg: string): void {
    this.write('warn', kind, obj, msg);
  }

  error(kind: string, obj: object, msg: string): void {
    this.write('error', kind, obj, msg);
  }

  /** Writes the pending "N suppressed" lines now and stops the timer (at shutdown). */
  flush(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.report();
  }

  private write(level: Level, kind: string, obj: object, msg: string): void {
    let k = this.kinds.get(kind);
    if (k === undefined) this.kinds.set(kind, (k = { level, logged: 0, suppressed: 0 }));
    if (this.timer === undefined) {
      this.timer = setTimeout(this.tick, this.intervalMs);
      this.timer.unref();
    }
    if (k.logged < this.burst) {
      k.logged++;
      this.logger[level]({ ...obj, kind }, msg);
      return;
    }
    k.suppressed++;
    this.suppressedTotal++;
  }

  private readonly tick = (): void => {
    this.timer = undefined;
    this.report();
  };

  private report(): void {
    const seconds = this.intervalMs / 1000;
    for (const [kind, k] of this.kinds) {
      if (k.suppressed > 0)
        this.logger[k.level](
          { kind, suppressed: k.suppressed, intervalSeconds: seconds },
          `${k.suppressed} more "${kind}" lines suppressed (at most ${this.burst} every ${seconds} s)`,
        );
    }
    this.kinds.clear();
  }
}
