/*
 * dns/service — the DNS side of the daemon in one piece: one resolver
 * (`dns`), the DNSBL lookups the Postfix adapter attaches to its events
 * (`dnsbl`), and the watch on our own addresses and domains (`reputation`);
 * what /v1/status and /metrics show of them.
 */
import type { Logger } from 'pino';
import type { Settings } from '../config/compile.js';
import type { Policy } from '../engine/policy.js';
import type { NotifyEffect } from '../engine/types.js';
import { Dnsbl, type DnsblStats } from './dnsbl.js';
import { ReputationMonitor, type ReputationView } from './reputation.js';
import { describeServer, Resolver, type ResolverStats } from './resolver.js';

export interface DnsStatus {
  dns: { servers: string[]; timeoutMs: number; inFlight: number; cacheEntries: number } & ResolverStats;
  dnsbl: { zones: string[]; threshold: number; cacheEntries: number } & DnsblStats;
  reputation: ReputationView;
}

export class DnsService {
  readonly resolver: Resolver;
  readonly dnsbl: Dnsbl;
  readonly reputation: ReputationMonitor;
  private readonly policy: () => Policy;
  private readonly settings: Settings;

  constructor(
    settings: Settings,
    o: { policy: () => Policy; alert: (e: NotifyEffect, time: number) => void; logger: Logger; now: () => number },
  ) {
    this.settings = settings;
    this.policy = o.policy;
    this.resolver = new Resolver({ ...settings.dns, now: o.now });
    this.dnsbl = new Dnsbl({
      resolver: this.resolver,
      policy: o.policy,
      // The other half of the budget is the decision's (a Redis round trip, store.timeout, fits in it).
      waitMs: settings.postfix.budgetMs / 2,
      cacheEntries: settings.dns.cacheEntries,
      now: o.now,
      logger: o.logger,
    });
    this.reputation = new ReputationMonitor({
      settings: settings.reputation,
      resolver: this.resolver,
      alert: o.alert,
      logger: o.logger,
      now: o.now,
    });
  }

  start(): void {
    this.reputation.start();
  }

  stop(): void {
    this.reputation.stop();
    this.resolver.close();
  }

  status(): DnsStatus {
    const d = this.policy().dnsbl;
    return {
      dns: {
        servers: this.settings.dns.servers.map(describeServer),
        timeoutMs: this.settings.dns.timeoutMs,
        inFlight: this.resolver.inFlight,
        cacheEntries: this.resolver.cacheEntries,
        ...this.resolver.stats,
      },
      dnsbl: {
        zones: [...new Set(d.zones.map((z) => z.zone))],
        threshold: d.threshold,
        cacheEntries: this.dnsbl.cacheEntries,
        ...this.dnsbl.stats,
      },
      reputation: this.reputation.view(),
    };
  }
}
