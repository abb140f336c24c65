/*
 * admin/metrics — Prometheus metrics (prom-client), served at /metrics.
 *
 * Counted on the hot path, in plain numbers (admin/tallies): decisions by
 * adapter, action and rule, and the decision latency per adapter (a
 * histogram). Bans and suspensions made are counted as the decider commits
 * them (the rare path). Everything else is read from the components' own
 * counters when Prometheus scrapes (collect callbacks), so it costs nothing
 * between scrapes. What only grows while the process lives is a counter named
 * `_total`, so that rate() and increase() see a restart as a reset; what goes
 * up and down is a gauge. No label ever holds an address or a user: series
 * stay bounded (rule names come from the config).
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Decision, MailEvent } from '../engine/types.js';
import type { ConnectionStats } from '../adapters/caps.js';
import type { DnsStatus } from '../dns/service.js';
import type { FirewallStatus } from '../actions/firewall.js';
import type { CommitResult, StoreStats } from '../store/types.js';
import { TalliedCounter, TalliedHistogram } from './tallies.js';

type AdapterStats = { requests: number; budgetMisses: number; errors: number; badRequests: number } & ConnectionStats;

export interface MetricSources {
  store: () => StoreStats;
  adapters: () => Record<string, AdapterStats>;
  alerts: () => {
    sent: Record<string, number>;
    failed: Record<string, number>;
    retried: number;
    dropped: number;
    suppressed: number;
  };
  /** DNSBL lookups and the reputation watch (dns/service.ts); absent: no such series. */
  dns?: (() => DnsStatus) | undefined;
  /** The kernel firewall (actions/firewall.ts); absent: no firewall series. */
  firewall?: (() => Pick<FirewallStatus, 'state' | 'errors'>) | undefined;
}

/** One series: its label values and its value. */
type Sample = [labels: Record<string, string>, value: number];

const PREFIX = 'mailwarden_';
/**
 * prom-client's default gauges named `_total`, which `promtool check metrics` rejects; each
 * is the sum of the by-type gauge that stays (`…_active_handles{type}` and so on).
 */
const MISNAMED_DEFAULTS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];
/** Up to 1 s: both budgets (Postfix 100 ms, Dovecot 500 ms) fall inside, so a late decision still has a bucket. */
const LATENCY_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

export class Metrics {
  readonly registry = new Registry();
  private readonly decisions: TalliedCounter<'adapter' | 'action' | 'rule'>;
  private readonly latency: TalliedHistogram;
  // prom-client Counters: a ban is rare, so hashing its label set costs nothing that matters.
  private readonly bans: Counter<'rule'>;
  private readonly suspensions: Counter<'rule'>;

  constructor(src: MetricSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
    for (const name of MISNAMED_DEFAULTS) this.registry.removeSingleMetric(PREFIX + name);
    this.decisions = new TalliedCounter({
      name: 'mailwarden_decisions_total',
      help: 'Decisions made, by adapter (postfix, dovecot), action and rule ("" when no rule fired).',
      labelNames: ['adapter', 'action', 'rule'],
      registry: this.registry,
    });
    this.latency = new TalliedHistogram(
      'mailwarden_decision_seconds',
      'Time to decide one request, by adapter.',
      'adapter',
      LATENCY_BUCKETS,
      this.registry,
    );
    this.bans = new Counter({
      name: 'mailwarden_bans_total',
      help: 'Bans made by rules since start, by rule (an IPv6 prefix banned for the /64s inside it counts too).',
      labelNames: ['rule'],
      registers,
    });
    this.suspensions = new Counter({
      name: 'mailwarden_suspensions_total',
      help: 'Users suspended by rules since start, by rule.',
      labelNames: ['rule'],
      registers,
    });

    const gauge = (name: string, help: string, labelNames: string[], read: () => Sample[]): void => {
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        collect(this: Gauge) {
          for (const [labels, v] of read()) this.set(labels, v);
        },
      });
    };
    // The components count since start; their count is the counter's value (reset() then inc() sets it).
    const counter = (name: string, help: string, labelNames: string[], read: () => Sample[]): void => {
      new Counter({
        name,
        help,
        labelNames,
        registers,
        collect(this: Counter) {
          this.reset();
          for (const [labels, v] of read()) this.inc(labels, v);
        },
      });
    };
    const byAdapter = (value: (s: AdapterStats) => number) => (): Sample[] =>
      Object.entries(src.adapters()).map(([adapter, s]): Sample => [{ adapter }, value(s)]);
    /** A sample per adapter and value of one more label. */
    const perAdapter = (label: string, values: (s: AdapterStats) => Record<string, number>) => (): Sample[] =>
      Object.entries(src.adapters()).flatMap(([adapter, s]) =>
        Object.entries(values(s)).map(([value, n]): Sample => [{ adapter, [label]: value }, n]),
      );
    const one = (v: number): Sample[] => [[{}, v]];

    gauge('mailwarden_active_bans', 'Bans in force.', [], () => one(src.store().activeBans));
    gauge('mailwarden_active_suspensions', 'Users suspended now.', [], () => one(src.store().activeSuspensions));
    gauge(
      'mailwarden_persistence_degraded',
      '1 while writes to the data directory fail (bans are enforced from memory and written when the disk takes them again).',
      [],
      () => one(src.store().persistence?.ok === false ? 1 : 0),
    );
    gauge('mailwarden_persistence_queued_writes', 'Writes waiting for the data directory.', [], () =>
      one(src.store().persistence?.queued ?? 0),
    );
    gauge('mailwarden_store_keys', 'Counter keys held by the store.', ['backend'], () => {
      const s = src.store();
      return [[{ backend: s.backend }, s.counterKeys]];
    });
    counter(
      'mailwarden_store_evicted_keys_total',
      'Counter keys evicted (unused for a whole generation of store.max_keys / 2) since start.',
      [],
      () => one(src.store().evictions),
    );
    gauge(
      'mailwarden_store_fallback',
      'Cluster mode: 1 while decisions come from local memory because Redis is unreachable or slow.',
      [],
      () => one(src.store().mode === 'local-fallback' ? 1 : 0),
    );
    counter('mailwarden_store_fallbacks_total', 'Cluster mode: times this node fell back to local memory.', [], () =>
      one(src.store().fallbacks ?? 0),
    );
    counter('mailwarden_store_local_decisions_total', 'Cluster mode: requests decided from local memory.', [], () =>
      one(src.store().localDecisions ?? 0),
    );
    counter(
      'mailwarden_store_mirror_decisions_total',
      "Cluster mode: requests that counted nothing, decided from this node's mirror of the cluster's bans and suspensions without a round trip.",
      [],
      () => one(src.store().mirrorDecisions ?? 0),
    );
    gauge(
      'mailwarden_store_pending_changes',
      'Cluster mode: bans, suspensions and lifts made during an outage, waiting to be pushed to Redis.',
      [],
      () => one(src.store().pending ?? 0),
    );
    counter(
      'mailwarden_adapter_requests_total',
      'Requests received, by adapter.',
      ['adapter'],
      byAdapter((s) => s.requests),
    );
    counter(
      'mailwarden_adapter_failures_total',
      'Requests answered "no opinion" (Postfix DUNNO, Dovecot status 0), by adapter and why: budget_miss (the decision was late), error (engine or store failed), bad_request.',
      ['adapter', 'kind'],
      perAdapter('kind', (s) => ({ budget_miss: s.budgetMisses, error: s.errors, bad_request: s.badRequests })),
    );
    gauge(
      'mailwarden_adapter_connections',
      'Connections open now, by adapter.',
      ['adapter'],
      byAdapter((s) => s.connectionsOpen),
    );
    counter(
      'mailwarden_adapter_connections_refused_total',
      'Connections refused, by adapter and why: listener_full (max_connections), peer_full (max_connections_per_peer).',
      ['adapter', 'reason'],
      perAdapter('reason', (s) => ({ listener_full: s.connectionsRefused, peer_full: s.peerConnectionsRefused })),
    );
    counter('mailwarden_alerts_total', 'Alerts, by channel and result.', ['channel', 'result'], () => {
      const a = src.alerts();
      return [
        ...Object.entries(a.sent).map(([channel, n]): Sample => [{ channel, result: 'sent' }, n]),
        ...Object.entries(a.failed).map(([channel, n]): Sample => [{ channel, result: 'failed' }, n]),
        [{ channel: 'any', result: 'retried' }, a.retried],
        [{ channel: 'any', result: 'dropped' }, a.dropped],
        [{ channel: 'any', result: 'suppressed' }, a.suppressed],
      ];
    });
    const firewall = src.firewall;
    if (firewall) {
      gauge(
        'mailwarden_firewall_degraded',
        '1 while the kernel firewall fails (nft missing, not permitted or failing): bans are refused inline only, and retried.',
        [],
        () => one(firewall().state === 'degraded' ? 1 : 0),
      );
      counter('mailwarden_firewall_errors_total', 'nft runs of the kernel firewall that failed.', [], () =>
        one(firewall().errors),
      );
    }
    const dns = src.dns;
    if (dns) {
      // Its subject label holds our own addresses and domains, from the config: a bounded set.
      gauge(
        'mailwarden_listed',
        '1 while a zone lists one of our own addresses or domains (reputation), else 0.',
        ['zone', 'subject'],
        () =>
          dns().reputation.checks.map((c): Sample => [
            { zone: c.zone, subject: c.subject },
            c.state === 'listed' ? 1 : 0,
          ]),
      );
      counter('mailwarden_dnsbl_lookups_total', 'Postfix clients looked up in the DNSBL zones.', [], () =>
        one(dns().dnsbl.lookups),
      );
      counter(
        'mailwarden_dnsbl_failures_total',
        'DNSBL answers missing, by why: failed (timeout, SERVFAIL), refused (127.255.255.x), overflow (dns.max_in_flight reached).',
        ['reason'],
        () => {
          const d = dns().dnsbl;
          return [
            [{ reason: 'failed' }, d.failed],
            [{ reason: 'refused' }, d.refused],
            [{ reason: 'overflow' }, d.overflow],
          ];
        },
      );
      counter(
        'mailwarden_dnsbl_late_total',
        'Postfix requests decided without the DNSBL answer: it was not back within half of postfix.budget.',
        [],
        () => one(dns().dnsbl.late),
      );
    }
  }

  decision(event: MailEvent, d: Decision, seconds: number): void {
    const adapter = event.kind.startsWith('auth-') ? 'dovecot' : 'postfix';
    this.decisions.inc([adapter, d.action, d.rule]);
    this.latency.observe(adapter, seconds);
  }

  /** The bans and suspensions a rule's decision just made (the decider's `onCommitted`). */
  committed(done: CommitResult): void {
    for (const b of done.bans) this.bans.inc({ rule: b.rule });
    for (const s of done.suspensions) this.suspensions.inc({ rule: s.rule });
  }
}
