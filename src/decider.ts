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
 */
import type { Logger } from 'pino';
import type { Notifier } from './actions/notify.js';
import { banDecision, decide, isoTime } from './engine/decide.js';
import { replyLocale } from './engine/messages.js';
import { plan } from './engine/plan.js';
import type { Policy } from './engine/policy.js';
import type { BanRecord, Decision, MailEvent } from './engine/types.js';
import type { CommitResult, Store } from './store/types.js';

const LOG_EVERY_MS = 10_000;

export class Decider {
  policy: Policy;
  private readonly store: Store;
  private readonly logger: Logger;
  private readonly logged = new Map<string, { at: number; skipped: number }>();

  private readonly notifier: Notifier | undefined;
  /** Watchers of every decision (metrics, the dashboard's activity); must be cheap. */
  onDecision: ((event: MailEvent, d: Decision, seconds: number) => void) | undefined;
  /** Watchers of bans and suspensions the rules made. */
  onCommitted: ((done: CommitResult, time: number) => void) | undefined;

  constructor(policy: Policy, store: Store, logger: Logger, notifier?: Notifier) {
    this.policy = policy;
    this.store = store;
    this.logger = logger;
    this.notifier = notifier;
  }

  /** Log at most one refusal per rule and client every 10 s: -1 to stay quiet, else how many were skipped. */
  private throttle(key: string, now: number): number {
    const t = this.logged.get(key);
    if (t && now - t.at < LOG_EVERY_MS) {
      t.skipped++;
      return -1;
    }
    if (this.logged.size > 50_000) this.logged.clear();
    this.logged.set(key, { at: now, skipped: 0 });
    return t?.skipped ?? 0;
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
      const d =
        result instanceof Promise
          ? result.then((r) => this.settle(event, decide(event, policy, p, r), started))
          : this.settle(event, decide(event, policy, p, result), started);
      return d instanceof Promise ? d.catch((err: unknown) => this.rescue(event, err, started)) : d;
    } catch (err) {
      return this.rescue(event, err, started);
    }
  };

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
    const suppressed = this.throttle(`rescue|${event.ip}`, event.time);
    if (suppressed >= 0)
      this.logger.error(
        { err, ip: event.ip, event: event.kind, ban: ban.subject, suppressed },
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
    if (d.hits.length > 0) {
      // A refusal that repeats (a flood being refused) stays synchronous on the embedded store.
      const audited = this.store.recordHits(event, d.hits, event.time);
      if (audited instanceof Promise) return audited.then(() => this.report(event, d));
    }
    return this.report(event, d);
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
    if (d.hits.length > 0) await this.store.recordHits(event, d.hits, event.time);
    return this.report(event, d);
  }

  /** Logs what observe-mode rules would have done, and the refusal (both throttled). */
  private report(event: MailEvent, d: Decision): Decision {
    for (const h of d.hits) {
      if (!h.observe) continue;
      const suppressed = this.throttle(`observe|${h.rule}|${h.subject}`, event.time);
      if (suppressed < 0) continue;
      this.logger.info(
        {
          rule: h.rule,
          subject: h.subject,
          count: h.count,
          limit: h.limit,
          would: h.action,
          ip: event.ip,
          user: event.user,
          suppressed,
        },
        `observe: ${h.rule} would ${h.action}`,
      );
    }
    if (d.action !== 'allow') this.logRefusal(event, d);
    return d;
  }

  private logRefusal(event: MailEvent, d: Decision): void {
    const suppressed = this.throttle(`${d.rule}|${event.ip}|${event.user ?? ''}`, event.time);
    if (suppressed < 0) return;
    this.logger.info(
      {
        event: event.kind,
        protocol: event.protocol,
        ip: event.ip,
        user: event.user,
        action: d.action,
        rule: d.rule,
        suppressed,
      },
      d.reason,
    );
  }
}
