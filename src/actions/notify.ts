/*
 * actions/notify — tells the administrator, by email (through an SMTP relay)
 * and/or a signed webhook, when a rule with `then.notify` fires.
 *
 * Never in the way of mail: notify() only enqueues and returns at once; a
 * slow or failing relay or receiver is retried with exponential backoff in the
 * background. The queue is bounded (the oldest alert is dropped and counted
 * when it is full), and one alert per rule and subject is sent per cooldown,
 * so an attack cannot turn into an alert storm.
 *
 * A failed delivery is logged at error level, naming the channel, where it
 * goes and the error, at most once per channel per minute (with a count of
 * the failures held back), so a relay outage does not flood the log.
 *
 * Webhook: JSON POST with `X-Mailwarden-Signature: sha256=<hex>`, the
 * HMAC-SHA256 of the raw body with the shared secret. The body carries the
 * time, so a receiver can refuse replays.
 */
import { createHmac, randomUUID } from 'node:crypto';
import nodemailer, { type Transporter } from 'nodemailer';
import type { Logger } from 'pino';
import type { BanRecord, NotifyEffect, SuspensionRecord } from '../engine/types.js';

export interface AlertSettings {
  cooldownMs: number;
  queueMax: number;
  retries: number;
  email: { host: string; port: number; from: string; to: string[] };
  webhook: { url: string | undefined; secret: string | undefined; timeoutMs: number };
}

export interface Alert {
  id: string;
  time: string;
  node: string;
  rule: string;
  subject: string;
  user: string | undefined;
  ip: string;
  action: string;
  reason: string;
  evidence: Record<string, unknown>;
  bans: Array<{ subject: string; until: string }>;
  suspension: { user: string; until: string } | undefined;
  /** What the administrator may want to run next. */
  commands: string[];
}

type Channel = 'email' | 'webhook';

interface Job {
  channel: Channel;
  alert: Alert;
  attempt: number;
}

export interface NotifyStats {
  queued: number;
  sent: Record<Channel, number>;
  failed: Record<Channel, number>;
  retried: number;
  dropped: number;
  suppressed: number;
}

/** At most one delivery-failure line per channel per this period; the rest are counted into the next line. */
export const FAILURE_LOG_INTERVAL_MS = 60_000;

const iso = (t: number): string => new Date(t).toISOString();

/**
 * Where a channel delivers, for log lines: `email to a@x via host:port`, or
 * `webhook to https://host` (only the origin: a webhook's path often holds its token).
 */
function destination(s: AlertSettings, channel: Channel): string {
  if (channel === 'email') return `email to ${s.email.to.join(', ')} via ${s.email.host}:${s.email.port}`;
  let where = '(invalid URL)';
  try {
    where = new URL(s.webhook.url ?? '').origin;
  } catch {
    // keep the placeholder: the schema checks the URL, so this is only a guard
  }
  return `webhook to ${where}`;
}

/** Where alerts go, for the start log: every channel in use, or that they are off. */
export function describeAlerts(s: AlertSettings): string {
  const on = channelsOf(s).map((c) => destination(s, c));
  return on.length ? on.join('; ') : 'off (alerts.email.to is empty and alerts.webhook.url is unset)';
}

function channelsOf(s: AlertSettings): Channel[] {
  return [...(s.email.to.length > 0 ? (['email'] as const) : []), ...(s.webhook.url ? (['webhook'] as const) : [])];
}

export function buildAlert(
  e: NotifyEffect,
  node: string,
  time: number,
  made: { bans: BanRecord[]; suspensions: SuspensionRecord[] },
): Alert {
  const bans = made.bans.map((b) => ({ subject: b.subject, until: iso(b.until) }));
  const s = made.suspensions.find((x) => x.user === e.user);
  // A system alert (e.g. persistence) has no user or address to explain.
  const who = e.user ?? e.ip;
  const commands = who ? [`mailwarden explain ${who}`] : [];
  if (s) commands.push(`mailwarden users resume ${s.user}    # after the password has been changed`);
  for (const b of bans) commands.push(`mailwarden bans remove ${b.subject}`);
  return {
    id: randomUUID(),
    time: iso(time),
    node,
    rule: e.rule,
    subject: e.subject,
    user: e.user,
    ip: e.ip,
    action: e.action,
    reason: e.reason,
    evidence: e.evidence,
    bans,
    suspension: s ? { user: s.user, until: iso(s.until) } : undefined,
    commands,
  };
}

export function alertText(a: Alert): { subject: string; text: string } {
  const lines = [
    `mailwarden on ${a.node} at ${a.time}`,
    '',
    `Rule:    ${a.rule}`,
    `Subject: ${a.subject}`,
    ...(a.user ? [`User:    ${a.user}`] : []),
    ...(a.ip ? [`Source:  ${a.ip}`] : []),
    `Action:  ${a.action}`,
    `Reason:  ${a.reason}`,
    ...(a.suspension ? [`Suspended: ${a.suspension.user} may not send until ${a.suspension.until}`] : []),
    ...a.bans.map((b) => `Banned:  ${b.subject} on every protocol until ${b.until}`),
    '',
    'Evidence:',
    ...Object.entries(a.evidence)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => `  ${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`),
    '',
    ...(a.commands.length ? ['Next steps:', ...a.commands.map((c) => `  ${c}`), ''] : []),
  ];
  return {
    subject: `[mailwarden] ${a.rule}: ${a.user ?? a.subject} (${a.action}${a.suspension ? ', suspended' : ''})`,
    text: lines.join('\n'),
  };
}

export function signBody(body: string, secret: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

const plural = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? '' : 's'}`;

export class Notifier {
  readonly stats: NotifyStats = {
    queued: 0,
    sent: { email: 0, webhook: 0 },
    failed: { email: 0, webhook: 0 },
    retried: 0,
    dropped: 0,
    suppressed: 0,
  };
  private readonly queue: Job[] = [];
  private readonly last = new Map<string, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private running = 0;
  private closed = false;
  private readonly transport: Transporter | undefined;
  private readonly s: AlertSettings;
  private readonly logger: Logger;
  private readonly node: string;
  private readonly now: () => number;
  /** Per channel: when its last failure line was logged, failures held back since, and whether it is failing. */
  private readonly failures = new Map<Channel, { loggedAt: number; held: number; failing: boolean }>();

  /** `now` is the clock of the failure-log throttle (tests move it). */
  constructor(s: AlertSettings, logger: Logger, node: string, now: () => number = Date.now) {
    this.s = s;
    this.logger = logger;
    this.node = node;
    this.now = now;
    this.transport =
      s.email.to.length > 0
        ? nodemailer.createTransport({
            host: s.email.host,
            port: s.email.port,
            secure: false,
            // The relay is usually the local Postfix with a self-signed certificate.
            tls: { rejectUnauthorized: false },
            connectionTimeout: 10_000,
            greetingTimeout: 10_000,
            socketTimeout: 20_000,
          })
        : undefined;
  }

  get channels(): Channel[] {
    return channelsOf(this.s);
  }

  /** Enqueues an alert unless one for this rule and subject went out within the cooldown. Never blocks. */
  notify(
    e: NotifyEffect,
    time: number,
    made: { bans: BanRecord[]; suspensions: SuspensionRecord[] },
  ): Alert | undefined {
    const key = `${e.rule}|${e.subject}`;
    const prev = this.last.get(key);
    if (prev !== undefined && time - prev < this.s.cooldownMs) {
      this.stats.suppressed++;
      return undefined;
    }
    if (this.last.size > 100_000) this.last.clear();
    this.last.set(key, time);
    const alert = buildAlert(e, this.node, time, made);
    this.logger.warn(
      {
        alert: alert.id,
        rule: alert.rule,
        subject: alert.subject,
        user: alert.user,
        ip: alert.ip,
        channels: this.channels,
      },
      `ALERT ${alert.reason}`,
    );
    for (const channel of this.channels) this.enqueue({ channel, alert, attempt: 0 });
    return alert;
  }

  private enqueue(job: Job): void {
    if (this.closed) return;
    if (this.queue.length >= this.s.queueMax) {
      this.queue.shift();
      this.stats.dropped++;
    }
    this.queue.push(job);
    this.stats.queued++;
    this.pump();
  }

  private pump(): void {
    while (this.running < 2 && this.queue.length > 0) {
      const job = this.queue.shift() as Job;
      this.running++;
      this.deliver(job)
        .then(() => {
          this.stats.sent[job.channel]++;
          this.recovered(job.channel);
        })
        .catch((err: unknown) => this.retry(job, err))
        .finally(() => {
          this.running--;
          this.pump();
        });
    }
  }

  private retry(job: Job, err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    const final = job.attempt >= this.s.retries || this.closed;
    this.logger.debug(
      { alert: job.alert.id, channel: job.channel, attempt: job.attempt + 1, err: message },
      'alert delivery attempt failed',
    );
    if (final) this.stats.failed[job.channel]++;
    this.reportFailure(job, message, final);
    if (final) return;
    const delay = Math.min(60_000, 1000 * 2 ** job.attempt);
    this.stats.retried++;
    const t = setTimeout(() => {
      this.timers.delete(t);
      this.enqueue({ ...job, attempt: job.attempt + 1 });
    }, delay);
    t.unref();
    this.timers.add(t);
  }

  /** One error line per channel per FAILURE_LOG_INTERVAL_MS; the failures in between are counted into the next. */
  private reportFailure(job: Job, message: string, final: boolean): void {
    const now = this.now();
    const f = this.failures.get(job.channel) ?? { loggedAt: -Infinity, held: 0, failing: false };
    this.failures.set(job.channel, f);
    if (now - f.loggedAt < FAILURE_LOG_INTERVAL_MS) {
      f.held++;
      return;
    }
    const left = this.s.retries - job.attempt;
    const next = final
      ? `gave up after ${plural(job.attempt + 1, 'attempt')}; alert ${job.alert.id} not delivered`
      : `will retry ${plural(left, 'more time')}`;
    const held = f.held ? `; ${plural(f.held, 'more failure')} on this channel not logged since the last line` : '';
    this.logger.error(
      {
        alert: job.alert.id,
        channel: job.channel,
        to: destination(this.s, job.channel),
        attempt: job.attempt + 1,
        err: message,
        suppressed: f.held,
      },
      `alert delivery failed: ${destination(this.s, job.channel)}: ${message} (${next}${held})`,
    );
    f.loggedAt = now;
    f.held = 0;
    f.failing = true;
  }

  /** After a logged failure, one line saying the channel works again (and what was held back since). */
  private recovered(channel: Channel): void {
    const f = this.failures.get(channel);
    if (!f?.failing) return;
    this.logger.info(
      { channel, to: destination(this.s, channel), suppressed: f.held },
      `alert delivery works again: ${destination(this.s, channel)}${f.held ? ` (${plural(f.held, 'failure')} not logged since the last line)` : ''}`,
    );
    f.failing = false;
    f.held = 0;
  }

  private async deliver(job: Job): Promise<void> {
    if (job.channel === 'email') {
      const { subject, text } = alertText(job.alert);
      await (this.transport as Transporter).sendMail({ from: this.s.email.from, to: this.s.email.to, subject, text });
      return;
    }
    const body = JSON.stringify({ type: 'mailwarden.alert', ...job.alert });
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'mailwarden' };
    if (this.s.webhook.secret) headers['x-mailwarden-signature'] = signBody(body, this.s.webhook.secret);
    const res = await fetch(this.s.webhook.url as string, {
      method: 'POST',
      headers,
      body,
      signal: AbortSignal.timeout(this.s.webhook.timeoutMs),
    });
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`webhook answered HTTP ${res.status}`);
  }

  /** Stops retrying; deliveries in flight finish on their own. */
  close(): void {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.queue.length = 0;
    this.transport?.close();
  }
}
