/*
 * decider — runs one event through the engine and the store:
 * plan (pure) → store.apply (the only I/O) → decide (pure) → commit effects
 * (durable before the answer) → audit and log what fired.
 *
 * Every adapter calls this and nothing else; it holds no protocol knowledge
 * and no policy of its own.
 *
 * A decision that fails anywhere (a counter, a script, the disk, a bug) still
 * refuses a banned source: the store's local ban table is asked on its own
 * (`rescue`), a lookup in memory that stored data cannot make throw. Only an
 * event with no ban in force fails open (the adapter answers DUNNO).
 *
 * Under attack refusals are most requests, so what they cost besides the
 * decision is bounded: log lines (RuleLog: per rule and interval, a few lines
 * and then one that counts the rest) and audit rows (one per rule and subject
 * per AUDIT_THROTTLE_MS: the store is not even asked in between, which in
 * cluster mode saves a Redis round trip per refusal).
 */
import type { Logger } from 'pino';
import type { Notifier } from './actions/notify.js';
import { banDecision, decide, isoTime, type ApplyResult } from './engine/decide.js';
import { replyLocale } from './engine/messages.js';
import { plan, type Plan } from './engine/plan.js';
import type { Policy } from './engine/policy.js';
import type { BanRecord, Decision, MailEvent, RuleHit } from './engine/types.js';
import { AUDIT_THROTTLE_MS, type CommitResult, type Store } from './store/types.js';

const LOG_EVERY_MS = 10_000;
/** Lines per rule and interval about what clients provoke (refusals, observe-mode hits, rescues). */
const LOG_BURST = 20;
/** Rule and subject pairs whose audit row was asked for recently; forgotten all at once past this. */
const AUDITED_MAX = 100_000;

/**
 * Log lines about what clients provoke, bounded per rule: a subject at most once per interval, at most
 * LOG_BURST lines per rule; the rest are counted and told in one line per rule when the interval ends. A
 * flood from thousands of sources costs one map lookup per request here, not a line each.
 */
class RuleLog {
  private readonly rules = new Map<string, { lines: number; held: number }>();
  private readonly seen = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly logger: Logger) {}

  /** Whether to write a line about `who` for `rule` now; when not, it is counted. */
  admit(rule: string, who: string): boolean {
    let r = this.rules.get(rule);
    if (r === undefined) {
      this.rules.set(rule, (r = { lines: 0, held: 0 }));
      if (this.timer === undefined) {
        this.timer = setTimeout(this.end, LOG_EVERY_MS);
        this.timer.unref();
      }
    }
    if (r.lines >= LOG_BURST) {
      r.held++;
      return false;
    }
    const key = `${rule}|${who}`;
    if (this.seen.has(key)) {
      r.held++;
      return false;
    }
    this.seen.add(key);
    r.lines++;
    return true;
  }

  private readonly end = (): void => {
    this.timer = undefined;
    const seconds = LOG_EVERY_MS / 1000;
    for (const [rule, r] of this.rules) {
      if (r.held > 0)
        this.logger.info(
          { rule, notLogged: r.held, intervalSeconds: seconds },
          `${r.held} more for rule ${rule} not logged (a subject once, at most ${LOG_BURST} lines per rule every ${seconds} s)`,
        );
    }
    this.rules.clear();
    this.seen.clear();
  };
}

export class Decider {
  policy: Policy;
  private readonly store: Store;
  private readonly logger: Logger;
  private readonly lines: RuleLog;
  /** rule|subject → when its hit was last handed to the store's audit trail. */
  private readonly audited = new Map<string, number>();

  private readonly notifier: Notifier | undefined;
  /** Watchers of every decision (metrics, the dashboard's activity); must be cheap. */
  onDecision: ((event: MailEvent, d: Decision, seconds: number) => void) | undefined;
  /** Watchers of bans and suspensions the rules made. */
  onCommitted: ((done: CommitResult, time: number) => void) | undefined;

  constructor(policy: Policy, store: Store, logger: Logger, notifier?: Notifier) {
    this.policy = policy;
    this.store = store;
    this.logger = logger;
    this.lines = new RuleLog(logger);
    this.notifier = notifier;
  }

  /**
   * Decides one event. Synchronous when the store answers synchronously (the
   * embedded store): the common path allocates no promise and arms no timer.
   * Effects (bans, suspensions) are made durable before the decision returns.
   */
  readonly evaluate = (event: MailEvent): Decision | Promise<Decision> => {
    const started = performance.now();
    const policy = this.policy;
    try {
      const p = plan(event, policy);
      const result = this.store.apply(p, event.time);
      return result instanceof Promise
        ? result.then(
            (r) => this.finish(event, policy, p, r, started),
            (err: unknown) => this.rescue(event, err, started),
          )
        : this.finish(event, policy, p, result, started);
    } catch (err) {
      return this.rescue(event, err, started);
    }
  };

  /** The decision from the store's answer; whatever fails on the way is rescued. */
  private finish(
    event: MailEvent,
    policy: Policy,
    p: Plan,
    r: ApplyResult,
    started: number,
  ): Decision | Promise<Decision> {
    try {
      const d = this.settle(event, decide(event, policy, p, r), started);
      return d instanceof Promise ? d.catch((err: unknown) => this.rescue(event, err, started)) : d;
    } catch (err) {
      return this.rescue(event, err, started);
    }
  }

  /** A decision failed: a ban in force still refuses; anything else is thrown on, for the adapter to fail open. */
  private rescue(event: MailEvent, err: unknown, started: number): Decision {
    let ban: BanRecord | undefined;
    try {
      if (!this.policy.allowNetworks.has(event.ip)) ban = this.store.localBan?.(event.ip, event.time);
    } catch {
      // no better answer than the original error
    }
    if (ban === undefined) throw err;
    const d = banDecision(ban, replyLocale(this.policy.locale, event.protocol));
    if (this.lines.admit('rescue', event.ip))
      this.logger.error(
        { err, ip: event.ip, event: event.kind, ban: ban.subject },
        'decision failed; refused by the ban in force',
      );
    try {
      this.onDecision?.(event, d, (performance.now() - started) / 1000);
    } catch {
      // a watcher's failure must not undo the refusal
    }
    return d;
  }

  private settle(event: MailEvent, d: Decision, started: number): Decision | Promise<Decision> {
    this.onDecision?.(event, d, (performance.now() - started) / 1000);
    if (d.effects.length > 0) return this.record(event, d);
    const due = this.unaudited(d, event.time);
    if (due !== undefined) {
      // A refusal that repeats (a flood being refused) stays synchronous on the embedded store.
      const audited = this.store.recordHits(event, due, event.time);
      if (audited instanceof Promise) return audited.then(() => this.report(event, d));
    }
    return this.report(event, d);
  }

  /**
   * The hits whose audit row may be due: the store writes one per rule and subject per AUDIT_THROTTLE_MS
   * (shared by every node in cluster mode), so a hit handed over within that time of the last is not
   * handed over again. Undefined when there is none.
   */
  private unaudited(d: Decision, now: number): RuleHit[] | undefined {
    let due: RuleHit[] | undefined;
    for (const h of d.hits) {
      const key = `${h.rule}|${h.subject}`;
      const last = this.audited.get(key);
      if (last !== undefined && now - last < AUDIT_THROTTLE_MS && now >= last) continue;
      if (this.audited.size >= AUDITED_MAX) this.audited.clear();
      this.audited.set(key, now);
      (due ??= []).push(h);
    }
    return due;
  }

  /** The rare path: a rule banned, suspended or alerted. Commit the effects, audit the hits, log, alert. */
  private async record(event: MailEvent, d: Decision): Promise<Decision> {
    const done = await this.store.commit(d.effects, event.time, 'mailwarden');
    for (const b of done.bans) {
      this.logger.warn(
        { subject: b.subject, rule: b.rule, until: isoTime(b.until), offence: b.offence, ip: event.ip },
        `banned ${b.subject}: ${b.reason}`,
      );
    }
    for (const s of done.suspensions) {
      this.logger.warn(
        { user: s.user, rule: s.rule, until: isoTime(s.until), ip: event.ip },
        `suspended ${s.user}: ${s.reason}`,
      );
    }
    for (const e of d.effects) if (e.type === 'notify') this.notifier?.notify(e, event.time, done);
    this.onCommitted?.(done, event.time);
    const due = this.unaudited(d, event.time);
    if (due !== undefined) await this.store.recordHits(event, due, event.time);
    return this.report(event, d);
  }

  /** Logs what observe-mode rules would have done, and the refusal (both throttled). */
  private report(event: MailEvent, d: Decision): Decision {
    for (const h of d.hits) {
      if (!h.observe || !this.lines.admit(h.rule, h.subject)) continue;
      this.logger.info(
        {
          rule: h.rule,
          subject: h.subject,
          count: h.count,
          limit: h.limit,
          would: h.action,
          ip: event.ip,
          user: event.user,
        },
        `observe: ${h.rule} would ${h.action}`,
      );
    }
    if (d.action !== 'allow') this.logRefusal(event, d);
    return d;
  }

  private logRefusal(event: MailEvent, d: Decision): void {
    if (!this.lines.admit(d.rule, event.user === undefined ? event.ip : `${event.ip}|${event.user}`)) return;
    this.logger.info(
      { event: event.kind, protocol: event.protocol, ip: event.ip, user: event.user, action: d.action, rule: d.rule },
      d.reason,
    );
  }
}
