/*
 * logs/echo — a login result is counted once when both the Dovecot hook
 * reported it and a log line tells it again (docs/LOGS.md, "Hooks and logs").
 *
 * Every login result the hook reports is remembered by client address and
 * outcome (the user name is not compared: auth_username_format may have
 * changed it). Every login result read from a log is held `graceMs` (Dovecot
 * writes its auth line a moment before it sends the report) and then dropped
 * if the hook reported one of the same address and outcome within the time
 * the line covers: each report answers for one line. The rest go on to the
 * engine. So SMTP AUTH through Cyrus SASL, services without the hook, and
 * webmail are counted from the logs, and what the hook saw is not counted
 * twice, whichever arrives first.
 *
 * Bounded: reports per address and outcome, addresses, and results held.
 */
import { Memo } from '../engine/memo.js';
import type { MailEvent } from '../engine/types.js';

export interface EchoOptions {
  now: () => number;
  /** Where a log's login result goes when no report answers for it. */
  release: (event: MailEvent) => void;
  graceMs?: number;
}

/** Reports are kept this long: a Dovecot login line sums up attempts of a connection up to minutes old. */
const KEEP_MS = 15 * 60_000;
/** How far a report may be from the line's own span (clock steps, `in N secs` rounded down). */
const SLACK_MS = 5_000;
const MAX_REPORTS_PER_KEY = 64;
const MAX_KEYS = 100_000;
/** Held results beyond this are decided at once (a flood of log lines must not grow memory). */
const MAX_HELD = 20_000;

interface Held {
  event: MailEvent;
  spanMs: number;
  due: number;
}

export class HookEcho {
  /** Log results dropped because the hook had reported them, and released to the engine. */
  readonly stats = { matched: 0, released: 0 };
  private readonly reports = new Memo<string, number[]>(MAX_KEYS);
  private held: Held[] = [];
  private head = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly graceMs: number;

  constructor(private readonly o: EchoOptions) {
    this.graceMs = o.graceMs ?? 2_000;
  }

  /** The hook reported this login result. */
  reported(e: MailEvent): void {
    const key = keyOf(e);
    const times = this.reports.get(key) ?? [];
    while (times.length > 0 && ((times[0] as number) < e.time - KEEP_MS || times.length >= MAX_REPORTS_PER_KEY))
      times.shift();
    times.push(e.time);
    this.reports.set(key, times);
  }

  /** A login result read from a log, its attempt `spanMs` before the line: held, then matched or released. */
  hold(event: MailEvent, spanMs: number): void {
    this.held.push({ event, spanMs, due: this.o.now() + this.graceMs });
    if (this.held.length - this.head > MAX_HELD) this.settle(this.held[this.head++] as Held);
    this.arm();
  }

  get waiting(): number {
    return this.held.length - this.head;
  }

  /** Decides everything held now (at stop). */
  flush(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.head < this.held.length) this.settle(this.held[this.head++] as Held);
    this.held = [];
    this.head = 0;
  }

  private arm(): void {
    if (this.timer !== undefined || this.head >= this.held.length) return;
    const wait = Math.max(0, (this.held[this.head] as Held).due - this.o.now());
    this.timer = setTimeout(this.tick, wait);
    this.timer.unref();
  }

  private readonly tick = (): void => {
    this.timer = undefined;
    const now = this.o.now();
    while (this.head < this.held.length && (this.held[this.head] as Held).due <= now)
      this.settle(this.held[this.head++] as Held);
    if (this.head > 1024 && this.head * 2 > this.held.length) {
      this.held = this.held.slice(this.head);
      this.head = 0;
    }
    this.arm();
  };

  private settle(h: Held): void {
    const key = keyOf(h.event);
    const times = this.reports.get(key);
    const from = h.event.time - h.spanMs - SLACK_MS;
    const to = h.event.time + this.graceMs + SLACK_MS;
    const i = times?.findIndex((t) => t >= from && t <= to) ?? -1;
    if (i >= 0) {
      times?.splice(i, 1);
      this.stats.matched++;
      return;
    }
    this.stats.released++;
    this.o.release(h.event);
  }
}

function keyOf(e: MailEvent): string {
  return `${e.ip}|${e.success === true ? 1 : 0}`;
}
