/*
 * Monitoring: contrib/prometheus/alerts.yml and contrib/grafana/mailwarden.json
 * checked by Prometheus's own promtool (rules valid, each alert firing when it
 * should and not otherwise, every dashboard query valid PromQL), and against
 * the /metrics of a real daemon (child process) after real Postfix and Dovecot
 * traffic: promtool lints the scrape, and every metric the dashboard and the
 * rules name is on it, with the type its name says. promtool comes from
 * Debian's prometheus package (scripts/install-system-deps.sh); without it
 * these tests skip on a dev machine and fail in CI.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse, stringify } from 'yaml';
import { Metrics } from '../../src/admin/metrics.js';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { attempt } from '../helpers/dovecot.js';
import { PolicyClient, REPO, request } from '../helpers/postfix.js';

const PROMTOOL = process.env.MAILWARDEN_PROMTOOL ?? '/usr/bin/promtool';
const ALERTS = join(REPO, 'contrib', 'prometheus', 'alerts.yml');
const DASHBOARD = join(REPO, 'contrib', 'grafana', 'mailwarden.json');
const inCi = (process.env.CI ?? '') !== '' && process.env.CI !== 'false';
const missing = existsSync(PROMTOOL)
  ? false
  : `${PROMTOOL} is missing: run scripts/install-system-deps.sh (Debian package prometheus)`;
if (missing && inCi) throw new Error(missing);
const needsPromtool = { skip: missing };

/** Series Prometheus makes itself, not mailwarden. */
const PROMETHEUS_MADE = new Set(['up']);
/** Counters whose series (one per rule) appear with the first ban or suspension a rule makes. */
const MADE_BY_RULES = new Set(['mailwarden_bans_total', 'mailwarden_suspensions_total']);
/** What only grows while the daemon runs (issue 14: these were gauges without `_total`). */
const COUNTERS = [
  'mailwarden_decisions_total',
  'mailwarden_bans_total',
  'mailwarden_suspensions_total',
  'mailwarden_adapter_requests_total',
  'mailwarden_adapter_failures_total',
  'mailwarden_adapter_connections_refused_total',
  'mailwarden_alerts_total',
  'mailwarden_store_fallbacks_total',
  'mailwarden_store_local_decisions_total',
  'mailwarden_store_evicted_keys_total',
];

function promtool(args: string[], input?: string): { status: number | null; out: string } {
  const r = spawnSync(PROMTOOL, args, { input, encoding: 'utf8', cwd: tmpdir() });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const alertRules = (): AlertRule[] =>
  (parse(readFileSync(ALERTS, 'utf8')) as { groups: Array<{ rules: AlertRule[] }> }).groups.flatMap((g) => g.rules);

interface Panel {
  id: number;
  type: string;
  datasource?: { type: string; uid: string };
  targets?: Array<{ refId: string; expr: string; datasource?: { uid: string } }>;
  panels?: Panel[];
}
interface Dashboard {
  __inputs: Array<{ name: string; type: string; pluginId: string }>;
  panels: Panel[];
  templating: { list: Array<{ name: string; query: { query: string } | string; datasource?: { uid: string } }> };
}
const dashboard = (): Dashboard => JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;
const allPanels = (d: Dashboard): Panel[] => d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const dashboardExprs = (d: Dashboard): Array<{ where: string; expr: string }> =>
  allPanels(d).flatMap((p) => (p.targets ?? []).map((t) => ({ where: `panel ${p.id} ${t.refId}`, expr: t.expr })));
const variableQuery = (v: Dashboard['templating']['list'][number]): string =>
  typeof v.query === 'string' ? v.query : v.query.query;

const KEYWORDS = new Set(['and', 'or', 'unless', 'offset', 'bool', 'inf', 'nan', 'atan2']);
/**
 * The metric names a PromQL expression selects: strings, label matchers, ranges and label
 * lists (`by (…)`, `on (…)`, …) taken out, what is left that is no keyword, function or number.
 */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = [...bare.matchAll(/(?<![\w:.])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()/g)].map((m) => m[1] as string);
  return names.filter((n) => !KEYWORDS.has(n));
}
/** Grafana's `label_values(metric{…}, label)` names one metric; a PromQL query variable is read as PromQL. */
const variableNames = (q: string): string[] => {
  const lv = /^label_values\(\s*([a-zA-Z_:][\w:]*)/.exec(q);
  return lv ? [lv[1] as string] : metricNames(q);
};
/** Grafana's variables in a query, replaced so that Prometheus can parse it. */
const grafanaFree = (expr: string): string =>
  expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '5m').replace(/\$\{?\w+\}?/g, '.*');

describe('monitoring: alert rules, Grafana dashboard, /metrics', () => {
  let dir: string;
  let d: DaemonProcess;
  let scrape: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-monitoring-'));
    writeFileSync(join(dir, 'mailwarden.yaml'), 'allowlist: { networks: [] }\n');
    d = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') });
    const token = readFileSync(join(dir, 'data', 'admin.token'), 'utf8').trim();
    const c = await PolicyClient.open({ port: d.postfixPort });
    await c.send(request({ protocol_state: 'CONNECT', client_address: '198.51.100.7', instance: '' }));
    c.close();
    const body = attempt('198.51.100.8', 'alice@example.org', '0c01');
    for (const command of ['allow', 'report']) {
      const r = await fetch(`http://127.0.0.1:${d.dovecotPort}/dovecot/policy?command=${command}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(command === 'report' ? { ...body, success: true } : body),
      });
      assert.equal(r.status, 200, command);
    }
    const res = await fetch(`http://127.0.0.1:${d.adminPort}/metrics`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(res.status, 200);
    scrape = await res.text();
  });
  after(async () => {
    await d.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  test('the PromQL name reader finds metrics, not functions, labels, keywords or variables', () => {
    assert.deepEqual(
      metricNames(
        'histogram_quantile(0.99, sum by (le, adapter) (rate(a_seconds_bucket{job=~"$job", x="y z"}[$__rate_interval])))',
      ),
      ['a_seconds_bucket'],
    );
    assert.deepEqual(
      metricNames(
        'sum by (job) (increase(b_total[15m])) > 20 and on (job) 4 * rate(c_total[1d] offset 15m) or up == 0',
      ),
      ['b_total', 'c_total', 'up'],
    );
    assert.deepEqual(variableNames('label_values(d_total{job=~"$job"}, instance)'), ['d_total']);
  });

  test(
    'promtool check rules accepts alerts.yml; every alert waits (for), has a severity and tells what to do',
    needsPromtool,
    () => {
      const r = promtool(['check', 'rules', ALERTS]);
      assert.equal(r.status, 0, r.out);
      const rules = alertRules();
      assert.deepEqual(
        rules.map((a) => a.alert),
        [
          'MailwardenDown',
          'MailwardenPersistenceDegraded',
          'MailwardenRedisFallback',
          'MailwardenRedisFlapping',
          'MailwardenBudgetMisses',
          'MailwardenDecisionErrors',
          'MailwardenAlertDeliveryFailing',
          'MailwardenBansSpike',
        ],
      );
      for (const a of rules) {
        assert.match(a.for ?? '', /^\d+[smh]$/, `${a.alert}: for`);
        assert.ok(['critical', 'warning'].includes(a.labels?.severity ?? ''), `${a.alert}: severity`);
        assert.ok((a.annotations?.summary ?? '').length > 20, `${a.alert}: summary`);
        assert.ok((a.annotations?.description ?? '').length > 100, `${a.alert}: description`);
      }
    },
  );

  test('each alert fires when it should and not otherwise (promtool test rules)', needsPromtool, () => {
    // The same rules without their annotations: the cases then compare labels only.
    const rulesFile = join(dir, 'rules.yml');
    const bare = alertRules().map(({ annotations: _, ...rule }) => rule);
    writeFileSync(rulesFile, stringify({ groups: [{ name: 'mailwarden', rules: bare }] }));
    const a = { job: 'mailwarden', instance: 'mx1:10033' };
    const b = { job: 'mailwarden', instance: 'mx2:10033' };
    const series = (name: string, labels: Record<string, string>, values: string) => ({
      series: `${name}{${Object.entries(labels)
        .map(([k, v]) => `${k}="${v}"`)
        .join(',')}}`,
      values,
    });
    const fires = (alertname: string, eval_time: string, ...labels: Array<Record<string, string>>) => ({
      alertname,
      eval_time,
      exp_alerts: labels.map((exp_labels) => ({ exp_labels })),
    });
    const warning = (l: Record<string, string>) => ({ ...l, severity: 'warning' });
    const critical = (l: Record<string, string>) => ({ ...l, severity: 'critical' });
    const tests = [
      {
        // A down target fires after 2 minutes; an up one never.
        interval: '1m',
        input_series: [series('up', a, '1 1 0x10'), series('up', b, '1x12')],
        alert_rule_test: [fires('MailwardenDown', '3m'), fires('MailwardenDown', '5m', critical(a))],
      },
      {
        interval: '1m',
        input_series: [
          series('mailwarden_persistence_degraded', a, '0 0 1x10'),
          series('mailwarden_persistence_degraded', b, '0x12'),
        ],
        alert_rule_test: [
          fires('MailwardenPersistenceDegraded', '2m'),
          fires('MailwardenPersistenceDegraded', '4m', critical(a)),
        ],
      },
      {
        // Local fallback for minutes fires; a one-minute blip does not.
        interval: '1m',
        input_series: [
          series('mailwarden_store_fallback', a, '0 1x10'),
          series('mailwarden_store_fallback', b, '0 1 0x10'),
        ],
        alert_rule_test: [fires('MailwardenRedisFallback', '2m'), fires('MailwardenRedisFallback', '5m', warning(a))],
      },
      {
        // Three fallbacks within 30 minutes fire; one does not.
        interval: '1m',
        input_series: [
          series('mailwarden_store_fallbacks_total', a, '0 1 2 3x10'),
          series('mailwarden_store_fallbacks_total', b, '0 1x12'),
        ],
        alert_rule_test: [fires('MailwardenRedisFlapping', '2m'), fires('MailwardenRedisFlapping', '6m', warning(a))],
      },
      {
        // A miss every minute fires after 10 minutes; a single miss never; errors and bad requests are not misses.
        interval: '1m',
        input_series: [
          series('mailwarden_adapter_failures_total', { ...a, adapter: 'postfix', kind: 'budget_miss' }, '0 0 1x30'),
          series('mailwarden_adapter_failures_total', { ...b, adapter: 'dovecot', kind: 'budget_miss' }, '0+1x30'),
          series('mailwarden_adapter_failures_total', { ...b, adapter: 'postfix', kind: 'bad_request' }, '0+5x30'),
        ],
        alert_rule_test: [
          fires('MailwardenBudgetMisses', '9m'),
          fires('MailwardenBudgetMisses', '11m', warning({ ...b, adapter: 'dovecot' })),
          fires('MailwardenBudgetMisses', '12m', warning({ ...b, adapter: 'dovecot' })),
        ],
      },
      {
        interval: '1m',
        input_series: [
          series('mailwarden_adapter_failures_total', { ...a, adapter: 'postfix', kind: 'error' }, '0 0 1x20'),
          series('mailwarden_adapter_failures_total', { ...a, adapter: 'postfix', kind: 'budget_miss' }, '0+1x20'),
        ],
        alert_rule_test: [
          fires('MailwardenDecisionErrors', '4m', warning({ ...a, adapter: 'postfix' })),
          // The failure has left the 10-minute window.
          fires('MailwardenDecisionErrors', '14m'),
        ],
      },
      {
        // Failed and dropped alerts fire, by channel; sent, retried and suppressed ones do not.
        interval: '1m',
        input_series: [
          series('mailwarden_alerts_total', { ...a, channel: 'email', result: 'failed' }, '0 0 1x10'),
          series('mailwarden_alerts_total', { ...a, channel: 'any', result: 'dropped' }, '0x4 2x8'),
          series('mailwarden_alerts_total', { ...a, channel: 'webhook', result: 'sent' }, '0+3x12'),
          series('mailwarden_alerts_total', { ...a, channel: 'any', result: 'retried' }, '0+1x12'),
          series('mailwarden_alerts_total', { ...b, channel: 'any', result: 'suppressed' }, '0+9x12'),
        ],
        alert_rule_test: [
          fires('MailwardenAlertDeliveryFailing', '1m'),
          fires('MailwardenAlertDeliveryFailing', '4m', warning({ ...a, channel: 'email' })),
          fires(
            'MailwardenAlertDeliveryFailing',
            '7m',
            warning({ ...a, channel: 'email' }),
            warning({ ...a, channel: 'any' }),
          ),
        ],
      },
      {
        // A day of about one ban an hour, then 3 a minute: fires. A server that always bans
        // 2 a minute (its usual attacks) does not, though it passes the floor of 20 in 15 min.
        interval: '1m',
        input_series: [
          series('mailwarden_bans_total', { ...a, rule: 'auth-guess-ban' }, '0+0.02x1440 28.8+3x30'),
          series('mailwarden_bans_total', { ...b, rule: 'auth-guess-ban' }, '0+2x1470'),
        ],
        alert_rule_test: [
          fires('MailwardenBansSpike', '1440m'),
          fires('MailwardenBansSpike', '1446m'),
          fires('MailwardenBansSpike', '1460m', warning(a)),
        ],
      },
    ];
    const testsFile = join(dir, 'alerts.test.yml');
    writeFileSync(testsFile, stringify({ rule_files: [rulesFile], evaluation_interval: '1m', tests }));
    const r = promtool(['test', 'rules', testsFile]);
    assert.equal(r.status, 0, r.out);
  });

  test('every dashboard query and variable is valid PromQL (promtool check rules)', needsPromtool, () => {
    const db = dashboard();
    const exprs = dashboardExprs(db);
    assert.ok(exprs.length >= 20, `${exprs.length} queries`);
    const queries = [
      ...exprs.map((e) => e.expr),
      // label_values(m, label) is Grafana's; the selector inside it is PromQL.
      ...db.templating.list.map((v) => variableQuery(v).replace(/^label_values\((.*),\s*\w+\)$/, '$1')),
    ];
    const file = join(dir, 'dashboard-rules.yml');
    const rules = queries.map((q, i) => ({ record: `dashboard:query_${i}`, expr: grafanaFree(q) }));
    writeFileSync(file, stringify({ groups: [{ name: 'dashboard', rules }] }));
    const r = promtool(['check', 'rules', file]);
    assert.equal(r.status, 0, `${r.out}\n${rules.map((x) => x.expr).join('\n')}`);
  });

  test('the dashboard imports anywhere: one datasource input, used by every panel, query and variable', () => {
    const db = dashboard();
    assert.deepEqual(
      db.__inputs.map((i) => [i.name, i.type, i.pluginId]),
      [['DS_PROMETHEUS', 'datasource', 'prometheus']],
    );
    const panels = allPanels(db);
    assert.equal(new Set(panels.map((p) => p.id)).size, panels.length, 'panel ids are unique');
    for (const p of panels.filter((x) => x.type !== 'row')) {
      assert.equal(p.datasource?.uid, '${DS_PROMETHEUS}', `panel ${p.id}`);
      for (const t of p.targets ?? []) assert.equal(t.datasource?.uid, '${DS_PROMETHEUS}', `panel ${p.id} ${t.refId}`);
    }
    for (const v of db.templating.list) assert.equal(v.datasource?.uid, '${DS_PROMETHEUS}', v.name);
  });

  test('promtool check metrics accepts a live /metrics scrape', needsPromtool, () => {
    const r = promtool(['check', 'metrics'], scrape);
    assert.equal(r.status, 0, r.out);
  });

  test('what only grows is a counter named _total; nothing else is named _total', () => {
    const types = new Map([...scrape.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1] as string, m[2] as string]));
    for (const name of COUNTERS) assert.equal(types.get(name), 'counter', name);
    for (const [name, type] of types) assert.equal(name.endsWith('_total'), type === 'counter', `${name} is a ${type}`);
  });

  test('every metric the dashboard and the alert rules name is on a live /metrics', () => {
    const types = new Map([...scrape.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1] as string, m[2] as string]));
    const exposed = new Map<string, string>();
    for (const [family, type] of types) {
      const names =
        type === 'histogram'
          ? [`${family}_bucket`, `${family}_sum`, `${family}_count`]
          : type === 'summary'
            ? [family, `${family}_sum`, `${family}_count`]
            : [family];
      for (const n of names) exposed.set(n, family);
    }
    const sampled = new Set([...scrape.matchAll(/^([a-zA-Z_:][\w:]*)[{ ]/gm)].map((m) => m[1] as string));
    const db = dashboard();
    const uses = [
      ...dashboardExprs(db).map(({ where, expr }) => ({ where: `dashboard ${where}`, names: metricNames(expr) })),
      ...db.templating.list.map((v) => ({
        where: `dashboard variable ${v.name}`,
        names: variableNames(variableQuery(v)),
      })),
      ...alertRules().map((a) => ({ where: `alert ${a.alert}`, names: metricNames(a.expr) })),
    ];
    const named = new Set<string>();
    for (const { where, names } of uses) {
      assert.ok(names.length > 0, `${where} names no metric`);
      for (const n of names) {
        if (PROMETHEUS_MADE.has(n)) continue;
        named.add(n);
        assert.ok(exposed.has(n), `${where}: ${n} is not on /metrics`);
        if (!MADE_BY_RULES.has(n)) assert.ok(sampled.has(n), `${where}: ${n} has no series after traffic`);
      }
    }
    // The traffic reached both adapters, so the per-adapter series exist for each.
    for (const adapter of ['postfix', 'dovecot']) {
      assert.match(scrape, new RegExp(`^mailwarden_decisions_total\\{adapter="${adapter}",`, 'm'));
      assert.match(scrape, new RegExp(`^mailwarden_decision_seconds_count\\{adapter="${adapter}"\\} [1-9]`, 'm'));
      assert.match(scrape, new RegExp(`^mailwarden_adapter_requests_total\\{adapter="${adapter}"\\} [1-9]`, 'm'));
    }
    assert.ok(named.size >= 15, [...named].join(' '));
  });

  test('bans and suspensions a rule made are counted by rule', async () => {
    const m = new Metrics({
      store: () => ({ backend: 'memory', counterKeys: 0, evictions: 0, activeBans: 0, activeSuspensions: 0 }),
      adapters: () => ({}),
      alerts: () => ({ sent: {}, failed: {}, retried: 0, dropped: 0, suppressed: 0 }),
    });
    const ban = { since: 0, until: 1, reason: '', offence: 1, actor: 'mailwarden' };
    m.committed({
      bans: [
        { ...ban, subject: '2001:db8:1:1::/64', rule: 'auth-guess-ban' },
        { ...ban, subject: '2001:db8:1::/48', rule: 'auth-guess-ban' },
      ],
      suspensions: [],
    });
    m.committed({
      bans: [{ ...ban, subject: '192.0.2.1', rule: 'connect-flood' }],
      suspensions: [{ user: 'bob@example.org', since: 0, until: 1, rule: 'compromise-burst', reason: '', actor: 'x' }],
    });
    const text = await m.registry.metrics();
    assert.match(text, /^mailwarden_bans_total\{rule="auth-guess-ban"\} 2$/m);
    assert.match(text, /^mailwarden_bans_total\{rule="connect-flood"\} 1$/m);
    assert.match(text, /^mailwarden_suspensions_total\{rule="compromise-burst"\} 1$/m);
  });
});
