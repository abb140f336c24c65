/*
 * log — the daemon's logger (pino): JSON lines on stdout, or with
 * `log.format: pretty` (the default on a terminal) one readable line each,
 * `time LEVEL message key=value …`.
 * Nothing that holds a password or password hash is ever passed to it; the
 * redaction list is a second line of defence for fields an adapter might add.
 *
 * ThrottledLog: what a client can provoke (bad requests, refused connections,
 * missed budgets) is logged at most `burst` times per kind and interval, and
 * the rest as one "N suppressed" line per kind when the interval ends. A
 * fuzzing flood once wrote 25,258 warn lines in 9 s, one per bad connection.
 */
import { pino, type DestinationStream, type Logger } from 'pino';

export type LogFormat = 'pretty' | 'json';

/** Where a logger's lines go, in the format it has now (setLogFormat changes it). */
class FormatSink implements DestinationStream {
  // Synchronous like pino's own stdout, so the last lines before process.exit are not lost.
  private readonly out = pino.destination({ dest: 1, sync: true });
  pretty = false;

  write(line: string): void {
    this.out.write(this.pretty ? prettyLine(line) : line);
  }
}

const sinks = new WeakMap<Logger, FormatSink>();

/**
 * A logger on stdout. `format` unset: pretty for a person at a terminal, JSON lines for journald,
 * files and log shippers (see setLogFormat).
 */
export function createLogger(level: string, format?: LogFormat): Logger {
  const sink = new FormatSink();
  const logger = pino(
    {
      level,
      base: { name: 'mailwarden' },
      redact: {
        paths: ['password', 'pwhash', '*.password', '*.pwhash', 'req.headers.authorization'],
        censor: '[redacted]',
      },
    },
    sink,
  );
  sinks.set(logger, sink);
  setLogFormat(logger, format);
  return logger;
}

/**
 * Sets `log.format` on a logger from createLogger (others are left alone). The daemon applies it from
 * its settings, so the format follows the config whoever created the logger.
 */
export function setLogFormat(logger: Logger, format: LogFormat | undefined, tty = process.stdout.isTTY === true): void {
  const sink = sinks.get(logger);
  if (sink !== undefined) sink.pretty = logFormat(format, tty) === 'pretty';
}

/** `log.format`, or when unset: pretty for a person at a terminal, JSON for everything else. */
export function logFormat(format: LogFormat | undefined, tty: boolean): LogFormat {
  return format ?? (tty ? 'pretty' : 'json');
}

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/**
 * One JSON log line as `2026-12-03T00:20:29.123Z INFO  message key=value …` (newline-terminated).
 * A value is bare when it has no space or quote, JSON otherwise; an error's stack follows, indented.
 */
export function prettyLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const { time, level, msg, ...rest } = o;
  delete rest.name; // always mailwarden
  const when = typeof time === 'number' ? new Date(time).toISOString() : '';
  const lvl = (LEVELS[Number(level)] ?? String(level)).padEnd(5);
  let stack = '';
  const fields = Object.entries(rest).map(([k, v]) => {
    if (isError(v)) {
      if (typeof v.stack === 'string')
        for (const at of v.stack.split('\n').slice(1)) if (at.trim() !== '') stack += `\n    ${at.trim()}`;
      return `${k}=${valueText(v.message)}`;
    }
    return `${k}=${valueText(v)}`;
  });
  const text = [when, lvl, typeof msg === 'string' ? msg : '', ...fields].filter((s) => s !== '').join(' ');
  return `${text}${stack}\n`;
}

function isError(v: unknown): v is { message: string; stack?: unknown } {
  return (
    typeof v === 'object' && v !== null && typeof (v as { message?: unknown }).message === 'string' && 'stack' in v
  );
}

function valueText(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string' && /^[^\s",=]+$/.test(x)))
    return v.join(',');
  return JSON.stringify(v) ?? String(v);
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
