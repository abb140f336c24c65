/*
 * dns/dnsbl — what the blocklists of `dnsbl.zones` say of a Postfix client,
 * handed to the engine as data on the event (`event.listed`), so the engine
 * stays pure and rules can say `when: { listed: true }`.
 *
 * Never in the way of an answer: the first event of a client starts the
 * lookup (CONNECT, or with smtpd_delay_reject=yes the first RCPT) and waits
 * for it at most `waitMs` (half of postfix.budget, so the decision keeps the
 * other half), and only on events some rule asks about listings for. An
 * answer not back in time is decided without (counted: `late`); it still
 * lands in the cache, and the client's later stages (RCPT, DATA, END-OF-
 * MESSAGE) read it from there, synchronously.
 *
 * Per client: the zones' answers combined (score = the weights of the zones
 * that list it), kept until the first of them expires, at most
 * dns.cache_entries clients. A reload that changes `dnsbl` starts afresh. A
 * zone that refuses the query (127.255.255.x) lists no one, and is logged.
 */
import type { Logger } from 'pino';
import { withinBudget } from '../adapters/budget.js';
import type { Policy } from '../engine/policy.js';
import type { EventKind, Listing, MailEvent } from '../engine/types.js';
import { TtlCache } from './cache.js';
import type { Resolver } from './resolver.js';
import { listingCodes, refusal, reverseName } from './zones.js';

export interface DnsblOptions {
  resolver: Resolver;
  /** The policy in force: its `dnsbl` zones and threshold, its rules, its allowlist. */
  policy: () => Policy;
  /** How long an event waits for a lookup in flight. */
  waitMs: number;
  /** Clients whose answers are kept. */
  cacheEntries: number;
  now: () => number;
  logger: Logger;
}

export interface DnsblStats {
  /** Clients looked up (every zone asked, or answered from the resolver's cache). */
  lookups: number;
  /** Events that found their client's answer in the cache. */
  cached: number;
  /** Events decided without the answer, because it was not back within the wait. */
  late: number;
  /** Zone answers that failed (timeout, SERVFAIL, …): the client counts as listed nowhere there, for a while. */
  failed: number;
  /** Zone answers that were a refusal (127.255.255.x): the zone lists no one until it answers again. */
  refused: number;
  /** Lookups not made because dns.max_in_flight questions were out. */
  overflow: number;
  /** Events that carried a listing. */
  listed: number;
}

/** How often a zone's refusals are logged at most. */
const REFUSAL_LOG_MS = 10 * 60_000;

export class Dnsbl {
  readonly stats: DnsblStats = { lookups: 0, cached: 0, late: 0, failed: 0, refused: 0, overflow: 0, listed: 0 };
  /** Per client: its listing, or null for listed nowhere. */
  private readonly memo: TtlCache<Listing | null>;
  private readonly pending = new Map<string, Promise<Listing | null>>();
  /** The `dnsbl` the memo was made with. */
  private zones: Policy['dnsbl'] | undefined;
  /** The event kinds on which some rule of a policy asks about listings (undefined: none). */
  private asking: { policy: Policy; kinds: ReadonlySet<EventKind> | undefined } | undefined;
  private readonly warned = new Map<string, number>();

  constructor(private readonly o: DnsblOptions) {
    this.memo = new TtlCache(o.cacheEntries);
  }

  get cacheEntries(): number {
    return this.memo.size;
  }

  /**
   * The Postfix adapter's hook: puts the client's listing on the event when the cache has it; otherwise
   * starts the lookup and, on an event a rule asks about listings for, returns a promise that resolves
   * when the answer is on the event or the wait is over. Never rejects.
   */
  readonly attach = (event: MailEvent): Promise<void> | undefined => {
    const policy = this.o.policy();
    const d = policy.dnsbl;
    if (d.zones.length === 0 || policy.allowNetworks.has(event.ip)) return undefined;
    const kinds = this.kindsOf(policy);
    if (kinds === undefined) return undefined;
    if (d !== this.zones) {
      this.memo.clear();
      this.zones = d;
    }
    const known = this.memo.get(event.ip, this.o.now());
    if (known !== undefined) {
      this.stats.cached++;
      this.put(event, known);
      return undefined;
    }
    const found = this.lookup(event.ip, d);
    if (!kinds.has(event.kind)) return undefined;
    return withinBudget(found, this.o.waitMs).then((listing) => {
      if (listing === undefined) this.stats.late++;
      else this.put(event, listing);
    });
  };

  private put(event: MailEvent, listing: Listing | null): void {
    if (listing === null) return;
    event.listed = listing;
    this.stats.listed++;
  }

  private kindsOf(policy: Policy): ReadonlySet<EventKind> | undefined {
    if (this.asking?.policy !== policy) {
      const kinds = new Set<EventKind>();
      for (const r of policy.rules)
        if (r.when.listed !== undefined) for (const k of [...r.on, ...r.checkOn]) kinds.add(k);
      this.asking = { policy, kinds: kinds.size > 0 ? kinds : undefined };
    }
    return this.asking.kinds;
  }

  /** Every zone asked about one client, once however many events wait for it; never rejects. */
  private lookup(ip: string, d: Policy['dnsbl']): Promise<Listing | null> {
    const flying = this.pending.get(ip);
    if (flying !== undefined) return flying;
    this.stats.lookups++;
    const names = [...new Set(d.zones.map((z) => z.zone))];
    const asked = Promise.all(names.map((zone) => this.o.resolver.query(reverseName(ip, zone), 'A'))).then(
      (answers) => {
        this.pending.delete(ip);
        const now = this.o.now();
        let expires = Infinity;
        let known = true;
        const records = new Map<string, readonly string[]>();
        answers.forEach((a, i) => {
          const zone = names[i] as string;
          expires = Math.min(expires, a.expires);
          if (a.ok) records.set(zone, a.records);
          else if (a.expires <= now)
            known = false; // busy or closed: nothing was asked, nothing to keep
          else this.stats.failed++;
          for (const code of a.ok ? a.records : []) this.refused(zone, code, now);
        });
        if (!known) this.stats.overflow++;
        let score = 0;
        const zones: Array<Listing['zones'][number]> = [];
        for (const z of d.zones) {
          const codes = listingCodes(records.get(z.zone) ?? [], z.codes);
          if (codes.length === 0) continue;
          score += z.weight;
          zones.push({ zone: z.zone, codes, weight: z.weight });
        }
        const listing = zones.length > 0 ? { score, zones } : null;
        if (known && d === this.zones) this.memo.set(ip, listing, expires);
        return listing;
      },
    );
    this.pending.set(ip, asked);
    return asked;
  }

  /** A refusal code (127.255.255.x) is counted, and logged once in a while per zone. */
  private refused(zone: string, code: string, now: number): void {
    const why = refusal(code);
    if (why === undefined) return;
    this.stats.refused++;
    if (now - (this.warned.get(zone) ?? -Infinity) < REFUSAL_LOG_MS) return;
    this.warned.set(zone, now);
    this.o.logger.warn(
      { zone, code },
      `dnsbl: ${zone} refused our query: ${why}; it lists no one meanwhile (use a resolver of your own, not a public one: docs/CONFIG.md, dnsbl)`,
    );
  }
}
