/*
 * logs/followers — the `logs:` sources of the config, followed: each line
 * recognised (logs/recognise.ts), made into engine events (logs/events.ts),
 * held against the hooks' reports (logs/echo.ts), and decided by the same
 * decider as the hooks' requests, so the same rules, counters and bans apply.
 *
 * Positions and cursors are kept in the data directory's SQLite (`meta`),
 * saved once the events of what was read are decided. Unknown lines are
 * counted and skipped; a line too long is dropped; a failing decision is
 * counted and logged (throttled): nothing a line holds stops a follower.
 */
import type { Logger } from 'pino';
import type { Decision, MailEvent } from '../engine/types.js';
import { ThrottledLog } from '../log.js';
import { HookEcho } from './echo.js';
import { LogEvents } from './events.js';
import { FileFollower, type Positions } from './file.js';
import { JournalFollower } from './journal.js';
import { recogniseMailLine, recogniseMessage } from './recognise.js';
import { parseRoundcube } from './roundcube.js';
import type { Finding, LogSource } from './types.js';

export interface LogFollowersOptions {
  evaluate: (event: MailEvent) => Decision | Promise<Decision>;
  positions: Positions;
  logger: Logger;
  now: () => number;
  /** A Dovecot hook is listening: the logins the logs tell are held and matched against its reports. */
  hooks: boolean;
  pollMs?: number;
  graceMs?: number;
  drainMs?: number;
}

export interface SourceStatus {
  source: string;
  state: 'following' | 'waiting' | 'stopped';
  lines: number;
  events: number;
  skipped: number;
  unknown: number;
  tooLong: number;
  [detail: string]: unknown;
}

/** A syslog line of Postfix is at most a few KiB (syslog itself cuts at 8 KiB). */
const MAX_LINE = 16 * 1024;

interface Counts {
  lines: number;
  events: number;
  skipped: number;
  unknown: number;
}

interface Running {
  spec: string;
  follower: FileFollower | JournalFollower;
  status: () => SourceStatus;
}

/** A source's identity: its position's key, and what a reload compares. */
function idOf(s: LogSource): string {
  return s.kind === 'file' ? `file:${s.path}` : `journal:${[s.command, ...s.args].join(' ')}`;
}

export class LogFollowers {
  /** Decisions that threw or failed. */
  errors = 0;
  private running = new Map<string, Running>();
  private readonly events = new LogEvents();
  private readonly echo: HookEcho | undefined;
  private readonly pending = new Set<Promise<unknown>>();
  private readonly log: ThrottledLog;
  private readonly o: LogFollowersOptions;

  constructor(o: LogFollowersOptions) {
    this.o = o;
    this.log = new ThrottledLog(o.logger);
    this.echo = o.hooks ? new HookEcho({ now: o.now, release: this.decide, graceMs: o.graceMs }) : undefined;
  }

  /** Starts following `sources`; on a reload, stops the ones gone or changed and starts the new ones. */
  async follow(sources: readonly LogSource[]): Promise<void> {
    const wanted = new Map(sources.map((s) => [idOf(s), s]));
    for (const [id, r] of this.running) {
      if (r.spec === JSON.stringify(wanted.get(id))) continue;
      await r.follower.stop();
      this.running.delete(id);
    }
    for (const [id, source] of wanted) {
      if (this.running.has(id)) continue;
      const r = this.create(id, source);
      this.running.set(id, r);
      r.follower.start();
    }
    if (sources.length > 0) this.o.logger.info({ logs: sources.map(describe), hooks: this.o.hooks }, 'following logs');
  }

  /** A login result a hook reported: a log line telling it again is not counted. */
  readonly hookReported = (event: MailEvent): void => {
    if (event.kind === 'auth-result') this.echo?.reported(event);
  };

  async stop(): Promise<void> {
    for (const r of this.running.values()) await r.follower.stop();
    this.running.clear();
    this.echo?.flush();
    await this.settled();
    this.log.flush();
  }

  status(): { sources: SourceStatus[]; errors: number; hookMatched: number; held: number } {
    return {
      sources: [...this.running.values()].map((r) => r.status()),
      errors: this.errors,
      hookMatched: this.echo?.stats.matched ?? 0,
      held: this.echo?.waiting ?? 0,
    };
  }

  private create(id: string, source: LogSource): Running {
    const counts: Counts = { lines: 0, events: 0, skipped: 0, unknown: 0 };
    const common = {
      key: `log:${id}`,
      positions: this.o.positions,
      settled: this.settled,
      warn: (kind: string, fields: object, msg: string) => this.log.warn(kind, fields, msg),
    };
    const trust = source.trustForwarded;
    if (source.kind === 'journal') {
      const follower = new JournalFollower({
        ...common,
        command: source.command,
        units: source.units,
        args: source.args,
        onEntry: (identifier, message) => this.found(counts, recogniseMessage(identifier, message, trust)),
      });
      const status = (): SourceStatus => ({
        source: describe(source),
        state: follower.state,
        ...counts,
        tooLong: follower.tooLong,
        ...follower.stats,
      });
      return { spec: JSON.stringify(source), follower, status };
    }
    const recognise = source.format === 'roundcube' ? parseRoundcube : recogniseMailLine;
    const follower = new FileFollower({
      ...common,
      path: source.path,
      maxLine: MAX_LINE,
      pollMs: this.o.pollMs ?? 250,
      drainMs: this.o.drainMs ?? 60_000,
      now: this.o.now,
      onLine: (line) => this.found(counts, recognise(line, trust)),
    });
    const status = (): SourceStatus => ({
      source: describe(source),
      state: follower.state,
      ...counts,
      tooLong: follower.tooLong,
      offset: follower.offset,
      ...follower.stats,
    });
    return { spec: JSON.stringify(source), follower, status };
  }

  private found(counts: Counts, f: Finding | undefined): void {
    counts.lines++;
    if (f === undefined) counts.unknown++;
    else if (f.kind === 'skip') counts.skipped++;
    else counts.events += this.events.emit(f, this.o.now(), this.sink);
  }

  private readonly sink = (event: MailEvent, spanMs: number): void => {
    if (this.echo !== undefined && event.kind === 'auth-result') this.echo.hold(event, spanMs);
    else this.decide(event);
  };

  private readonly decide = (event: MailEvent): void => {
    try {
      const d = this.o.evaluate(event);
      if (d instanceof Promise) {
        const p = d.catch((err: unknown) => this.failed(event, err)).finally(() => this.pending.delete(p));
        this.pending.add(p);
      }
    } catch (err) {
      this.failed(event, err);
    }
  };

  private failed(event: MailEvent, err: unknown): void {
    this.errors++;
    this.log.error(
      'log-decision',
      { err: String(err), ip: event.ip, event: event.kind },
      'a log event could not be decided',
    );
  }

  /** Resolves when every decision started so far is done. */
  private readonly settled = (): Promise<void> =>
    this.pending.size === 0 ? Promise.resolve() : Promise.all(this.pending).then(() => undefined);
}

function describe(s: LogSource): string {
  return s.kind === 'file'
    ? `${s.path} (${s.format})`
    : `journal${s.units.length ? ` ${s.units.join(' ')}` : ''}${s.args.length ? ` ${s.args.join(' ')}` : ''}`;
}
