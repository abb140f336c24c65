/*
 * admin/metrics — Prometheus metrics (prom-client), served at /metrics.
 *
 * Counted on the hot path, in plain numbers (admin/tallies): decisions by
 * adapter, action and rule, and the decision latency per adapter (a
 * histogram). Everything else is read from
 * the components' own counters when Prometheus scrapes (collect callbacks),
 * so it costs nothing between scrapes. No label ever holds an address or a
 * user: series stay bounded (rule names come from the config).
 */
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Decision, MailEvent } from '../engine/types.js';
import type { ConnectionStats } from '../adapters/caps.js';
import type { StoreStats } from '../store/types.js';
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
}

export class Metrics {
  readonly registry = new Registry();
  private readonly decisions: TalliedCounter<'adapter' | 'action' | 'rule'>;
  private readonly latency: TalliedHistogram;

  constructor(src: MetricSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'mailwarden_' });
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
      [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1],
      this.registry,
    );
    const gauge = (name: string, help: string, labelNames: string[], collect: (g: Gauge) => void): void => {
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        collect(this: Gauge) {
          collect(this);
        },
      });
    };
    gauge('mailwarden_active_bans', 'Bans in force.', [], (g) => g.set(src.store().activeBans));
    gauge('mailwarden_active_suspensions', 'Users suspended now.', [], (g) => g.set(src.store().activeSuspensions));
    gauge(
      'mailwarden_persistence_degraded',
      '1 while writes to the data directory fail (bans are enforced from memory and written when the disk takes them again).',
      [],
      (g) => g.set(src.store().persistence?.ok === false ? 1 : 0),
    );
    gauge('mailwarden_persistence_queued_writes', 'Writes waiting for the data directory.', [], (g) =>
      g.set(src.store().persistence?.queued ?? 0),
    );
    gauge('mailwarden_store_keys', 'Counter keys held by the store.', ['backend'], (g) => {
      const s = src.store();
      g.set({ backend: s.backend }, s.counterKeys);
    });
    gauge(
      'mailwarden_store_fallback',
      'Cluster mode: 1 while decisions come from local memory because Redis is unreachable or slow.',
      [],
      (g) => g.set(src.store().mode === 'local-fallback' ? 1 : 0),
    );
    gauge(
      'mailwarden_store_fallbacks',
      'Cluster mode: times this node fell back to local memory since start.',
      [],
      (g) => g.set(src.store().fallbacks ?? 0),
    );
    gauge(
      'mailwarden_store_local_decisions',
      'Cluster mode: requests decided from local memory since start.',
      [],
      (g) => g.set(src.store().localDecisions ?? 0),
    );
    gauge(
      'mailwarden_store_evicted_keys',
      'Counter keys evicted (unused for a whole generation of store.max_keys / 2) since start.',
      [],
      (g) => g.set(src.store().evictions),
    );
    gauge('mailwarden_adapter_requests', 'Requests received since start, by adapter.', ['adapter'], (g) => {
      for (const [adapter, s] of Object.entries(src.adapters())) g.set({ adapter }, s.requests);
    });
    /** A gauge by adapter and one more label, whose values each adapter's stats give. */
    const perAdapter = (
      name: string,
      help: string,
      label: string,
      values: (s: AdapterStats) => Record<string, number>,
    ): void =>
      gauge(name, help, ['adapter', label], (g) => {
        for (const [adapter, s] of Object.entries(src.adapters()))
          for (const [value, n] of Object.entries(values(s))) g.set({ adapter, [label]: value }, n);
      });
    perAdapter(
      'mailwarden_adapter_failures',
      'Requests answered "no opinion" since start, by adapter and why: budget_miss (the decision was late), error (engine or store failed), bad_request.',
      'kind',
      (s) => ({ budget_miss: s.budgetMisses, error: s.errors, bad_request: s.badRequests }),
    );
    gauge('mailwarden_adapter_connections', 'Connections open now, by adapter.', ['adapter'], (g) => {
      for (const [adapter, s] of Object.entries(src.adapters())) g.set({ adapter }, s.connectionsOpen);
    });
    perAdapter(
      'mailwarden_adapter_connections_refused',
      'Connections refused since start, by adapter and why: listener_full (max_connections), peer_full (max_connections_per_peer).',
      'reason',
      (s) => ({ listener_full: s.connectionsRefused, peer_full: s.peerConnectionsRefused }),
    );
    gauge('mailwarden_alerts', 'Alerts since start, by channel and result.', ['channel', 'result'], (g) => {
      const a = src.alerts();
      for (const [channel, n] of Object.entries(a.sent)) g.set({ channel, result: 'sent' }, n);
      for (const [channel, n] of Object.entries(a.failed)) g.set({ channel, result: 'failed' }, n);
      g.set({ channel: 'any', result: 'retried' }, a.retried);
      g.set({ channel: 'any', result: 'dropped' }, a.dropped);
      g.set({ channel: 'any', result: 'suppressed' }, a.suppressed);
    });
  }

  decision(event: MailEvent, d: Decision, seconds: number): void {
    const adapter = event.kind.startsWith('auth-') ? 'dovecot' : 'postfix';
    this.decisions.inc([adapter, d.action, d.rule]);
    this.latency.observe(adapter, seconds);
  }
}
