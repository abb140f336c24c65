/*
 * dns/reputation — a watch on our own name: every `reputation.interval`, each
 * of our outbound addresses is looked up in the ip zones and each of our
 * domains in the domain zones (DBL-style: example.org.dbl.spamhaus.org).
 *
 * A listing that appears, and one that clears, is an alert through the alert
 * channels (rules `reputation-listed` and `reputation-cleared`), with the
 * zone, the answer code and the zone's TXT reason; it is logged, shown in
 * /v1/status (`reputation`), on the dashboard, by `mailwarden reputation`,
 * and as the metric mailwarden_listed{zone,subject}.
 *
 * Only an answer changes what we believe: a timeout, a SERVFAIL or a refusal
 * (127.255.255.x: Spamhaus will not answer this resolver) keeps the last
 * state and is shown as the check's problem, so a flaky resolver never
 * raises a "cleared" alert for a listing that is still there.
 */
import type { Logger } from 'pino';
import { isoTime } from '../engine/decide.js';
import { formatDuration } from '../engine/messages.js';
import type { NotifyEffect } from '../engine/types.js';
import type { Resolver } from './resolver.js';
import { listingCodes, refusal, reverseName, type CodeRange } from './zones.js';

/** A zone the monitor asks: about our addresses (`ip`) or our domains (`domain`, DBL-style). */
export interface ReputationZone {
  zone: string;
  type: 'ip' | 'domain';
  codes: readonly CodeRange[];
}

/** The `reputation` key: our outbound addresses and our domains, the zones to check them in, how often. */
export interface ReputationSettings {
  addresses: string[];
  domains: string[];
  zones: ReputationZone[];
  intervalMs: number;
}

/** One of our addresses or domains in one zone, as last seen. Times are ms since the epoch. */
export interface ReputationCheck {
  subject: string;
  kind: 'address' | 'domain';
  zone: string;
  /** `unknown` until the zone has answered once. */
  state: 'listed' | 'clear' | 'unknown';
  /** The answer codes that list it. */
  codes: string[];
  /** The zone's TXT record for the listing (its reason, often a URL), if it has one. */
  reason: string | null;
  /** When the state began (as far as this daemon saw). */
  since: number | null;
  /** The last answer. */
  time: number | null;
  /** Why the last check got no answer (timeout, SERVFAIL, a refusal); null when it got one. */
  problem: string | null;
}

/** `reputation` in /v1/status. */
export interface ReputationView {
  /** Whether anything is watched (addresses or domains, and zones for them). */
  enabled: boolean;
  interval: string;
  /** The end of the last round of checks, or null before the first. */
  time: number | null;
  /** How many (subject, zone) pairs are listed now. */
  listed: number;
  checks: ReputationCheck[];
}

export interface ReputationOptions {
  settings: ReputationSettings;
  resolver: Resolver;
  /** Sends an alert (the daemon's notifier). */
  alert: (e: NotifyEffect, time: number) => void;
  logger: Logger;
  now: () => number;
}

export class ReputationMonitor {
  private readonly checks: ReputationCheck[] = [];
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private last: number | null = null;

  constructor(private readonly o: ReputationOptions) {
    const s = o.settings;
    for (const z of s.zones) {
      const subjects = z.type === 'ip' ? s.addresses : s.domains;
      for (const subject of subjects)
        this.checks.push({
          subject,
          kind: z.type === 'ip' ? 'address' : 'domain',
          zone: z.zone,
          state: 'unknown',
          codes: [],
          reason: null,
          since: null,
          time: null,
          problem: null,
        });
    }
  }

  /** Checks now, then every interval (the timer never keeps the process alive). */
  start(): void {
    if (this.checks.length === 0) return;
    const round = (): void => {
      void this.checkNow().finally(() => {
        if (this.stopped) return;
        this.timer = setTimeout(round, this.o.settings.intervalMs);
        this.timer.unref();
      });
    };
    round();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** One round: every subject in every zone for it, at once. */
  async checkNow(): Promise<void> {
    await Promise.all(this.checks.map((c) => this.check(c)));
    this.last = this.o.now();
  }

  view(): ReputationView {
    return {
      enabled: this.checks.length > 0,
      interval: formatDuration(this.o.settings.intervalMs),
      time: this.last,
      listed: this.checks.filter((c) => c.state === 'listed').length,
      checks: this.checks.map((c) => ({ ...c, codes: [...c.codes] })),
    };
  }

  private async check(c: ReputationCheck): Promise<void> {
    const name = c.kind === 'address' ? reverseName(c.subject, c.zone) : `${c.subject}.${c.zone}`;
    const a = await this.o.resolver.query(name, 'A');
    const now = this.o.now();
    const refused = a.ok ? a.records.map(refusal).find((x) => x !== undefined) : undefined;
    const problem = a.ok ? (refused ?? null) : a.error;
    if (problem !== c.problem && problem !== null)
      this.o.logger.warn(
        { zone: c.zone, subject: c.subject, problem },
        `reputation: ${c.zone} gave no answer for ${c.subject}: ${problem}`,
      );
    c.problem = problem;
    if (problem !== null || !a.ok) return;
    const zone = this.o.settings.zones.find(
      (z) => z.zone === c.zone && z.type === (c.kind === 'address' ? 'ip' : 'domain'),
    );
    const codes = listingCodes(a.records, zone?.codes ?? []);
    c.time = now;
    if (codes.length === 0) {
      const was = c.state;
      this.move(c, 'clear', [], null, now);
      if (was === 'listed') this.tell(c, 'reputation-cleared', `${c.subject} is no longer listed in ${c.zone}`, now);
      return;
    }
    const txt = await this.o.resolver.query(name, 'TXT');
    const reason = txt.ok && txt.records.length > 0 ? txt.records.join(' ') : null;
    const was = c.state;
    this.move(c, 'listed', codes, reason, now);
    if (was !== 'listed') {
      const what = c.kind === 'address' ? 'mail from this address' : 'mail naming this domain';
      this.tell(
        c,
        'reputation-listed',
        `${c.subject} is listed in ${c.zone} (${codes.join(', ')}${reason ? `: ${reason}` : ''}); ${what} may be refused by other mail servers`,
        now,
      );
    }
  }

  private move(
    c: ReputationCheck,
    state: ReputationCheck['state'],
    codes: string[],
    reason: string | null,
    now: number,
  ): void {
    if (c.state !== state) c.since = now;
    c.state = state;
    c.codes = codes;
    c.reason = reason;
  }

  private tell(c: ReputationCheck, rule: string, reason: string, now: number): void {
    if (rule === 'reputation-listed') this.o.logger.error({ zone: c.zone, subject: c.subject, codes: c.codes }, reason);
    else this.o.logger.info({ zone: c.zone, subject: c.subject }, reason);
    this.o.alert(
      {
        type: 'notify',
        rule,
        subject: `${c.subject} in ${c.zone}`,
        // Our own address: nothing to explain or unban, so no source (the alert then suggests no command).
        ip: '',
        action: 'allow',
        reason,
        evidence: {
          [c.kind]: c.subject,
          zone: c.zone,
          codes: c.codes,
          txt: c.reason ?? undefined,
          checked: isoTime(now),
          status: 'mailwarden reputation',
        },
      },
      now,
    );
  }
}

/** `mailwarden reputation`: one line per subject and zone, listings first. */
export function reputationLines(v: ReputationView): string[] {
  if (!v.enabled)
    return ['reputation: nothing is watched (set reputation.addresses or reputation.domains, and reputation.zones)'];
  const when = (t: number | null): string => (t === null ? 'never' : isoTime(t).replace('.000Z', 'Z'));
  const rank = { listed: 0, unknown: 1, clear: 2 };
  const rows = [...v.checks].sort((a, b) => rank[a.state] - rank[b.state]);
  const width = Math.max(...rows.map((c) => c.subject.length));
  const zoneWidth = Math.max(...rows.map((c) => c.zone.length));
  return [
    `reputation: checked every ${v.interval}, last ${when(v.time)}; ${v.listed} listing(s)`,
    ...rows.map((c) => {
      const head = `  ${c.state.toUpperCase().padEnd(7)} ${c.subject.padEnd(width)}  ${c.zone.padEnd(zoneWidth)}`;
      const what =
        c.state === 'listed'
          ? `  ${c.codes.join(', ')} since ${when(c.since)}${c.reason ? `: ${c.reason}` : ''}`
          : c.state === 'clear'
            ? `  since ${when(c.since)}`
            : '';
      return `${head}${what}${c.problem ? `  (last check: ${c.problem})` : ''}`;
    }),
  ];
}
