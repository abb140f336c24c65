/*
 * The `dns`, `dnsbl` and `reputation` keys and `when.listed`, from YAML to
 * what the engine runs: values compiled, every mistake at its place, the
 * built-in listed-* rules inert until zones are set, and plan() counting a
 * listed rule only for the events whose listing meets it (score against the
 * threshold, or a zone the rule names).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { describeSettings, type Settings } from '../../src/config/compile.js';
import { ConfigError, formatProblem } from '../../src/config/errors.js';
import { loadSettings, loadSettingsFromText } from '../../src/config/load.js';
import { plan } from '../../src/engine/plan.js';
import type { Listing, MailEvent } from '../../src/engine/types.js';

const load = (...lines: string[]): Settings => loadSettingsFromText(`${lines.join('\n')}\n`, 'mw.yaml');

function problems(...lines: string[]): string[] {
  try {
    load(...lines);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems.map(formatProblem);
  }
  return assert.fail('expected the config to be refused');
}

const ZONES = [
  'dnsbl:',
  '  zones:',
  '    - {zone: Zen.Spamhaus.Org., weight: 2, codes: [127.0.0.2-127.0.0.9]}',
  '    - {zone: zen.spamhaus.org, weight: 1, codes: [127.0.0.10-127.0.0.11]}',
  '    - {zone: bl.spamcop.net}',
  '  threshold: 2',
];

void describe('config: dns, dnsbl, reputation', () => {
  void test('every key compiled, and shown by check-config as it is written', () => {
    const s = load(
      'dns: {servers: [127.0.0.1:5353, "[::1]"], timeout: 500ms, cache_entries: 1000, max_in_flight: 64}',
      ...ZONES,
      'reputation:',
      '  addresses: [198.51.100.25]',
      '  domains: [Example.ORG]',
      '  zones: [{zone: zen.spamhaus.org}, {zone: dbl.spamhaus.org, type: domain, codes: [127.0.1.2-127.0.1.99]}]',
      '  interval: 30m',
    );
    assert.deepEqual(s.dns, {
      servers: [
        { host: '127.0.0.1', port: 5353 },
        { host: '::1', port: 53 },
      ],
      timeoutMs: 500,
      cacheEntries: 1000,
      maxInFlight: 64,
    });
    assert.deepEqual(
      s.policy.dnsbl.zones.map((z) => [z.zone, z.weight]),
      [
        ['zen.spamhaus.org', 2],
        ['zen.spamhaus.org', 1],
        ['bl.spamcop.net', 1],
      ],
    );
    assert.equal(s.policy.dnsbl.threshold, 2);
    assert.equal(s.reputation.intervalMs, 1_800_000);
    assert.deepEqual(s.reputation.domains, ['example.org']);
    const shown = describeSettings(s);
    assert.deepEqual(shown.dns, {
      servers: ['127.0.0.1:5353', '[::1]:53'],
      timeout: '500ms',
      cache_entries: 1000,
      max_in_flight: 64,
    });
    assert.deepEqual((shown.dnsbl as { zones: unknown[] }).zones, [
      { zone: 'zen.spamhaus.org', weight: 2, codes: ['127.0.0.2-127.0.0.9'] },
      { zone: 'zen.spamhaus.org', weight: 1, codes: ['127.0.0.10-127.0.0.11'] },
      { zone: 'bl.spamcop.net', weight: 1, codes: ['127.0.0.0-127.255.255.255'] },
    ]);
  });

  void test('the defaults: no zones (nothing is asked), a threshold of 1, resolv.conf, a 15m watch of nothing', () => {
    const s = loadSettings(undefined);
    assert.deepEqual(s.policy.dnsbl, { zones: [], threshold: 1 });
    assert.equal(s.dns.timeoutMs, 300);
    assert.ok(s.dns.servers.length > 0);
    assert.deepEqual(s.reputation, { addresses: [], domains: [], zones: [], intervalMs: 900_000 });
  });

  void test('mistakes, each at its place', () => {
    assert.deepEqual(
      problems(
        'dns:',
        '  servers: [dns.example]',
        'dnsbl:',
        '  zones: [{zone: "not a zone", codes: [127.0.0.9-127.0.0.2]}]',
      ),
      [
        'mw.yaml:2:13: dns.servers.0: not a DNS server; write an IP address, with a port if not 53 (127.0.0.1, 127.0.0.1:5353, [::1]:53) [MW_CONFIG_INVALID]',
        'mw.yaml:4:18: dnsbl.zones.0.zone: not a DNS name; write e.g. zen.spamhaus.org [MW_CONFIG_INVALID]',
        'mw.yaml:4:40: dnsbl.zones.0.codes.0: not an answer code; write 127.0.0.2, a range 127.0.0.2-127.0.0.11, or 127.0.0.0/24 [MW_CONFIG_INVALID]',
      ],
    );
    assert.deepEqual(problems('reputation:', '  addresses: [198.51.100.25]', '  domains: [example.org]'), [
      'mw.yaml:2:14: reputation.addresses needs a zone of type ip in reputation.zones to be checked in, e.g. {zone: zen.spamhaus.org} [MW_CONFIG_INVALID]',
      'mw.yaml:3:12: reputation.domains needs a zone of type domain in reputation.zones to be checked in, e.g. {zone: dbl.spamhaus.org, type: domain} [MW_CONFIG_INVALID]',
    ]);
  });

  void test('a rule written on listings needs zones, and may name only configured ones', () => {
    const rule = (when: string): string[] => [
      'rules:',
      '  - name: mine',
      '    on: [recipient]',
      `    when: ${when}`,
      '    key: ip',
      '    count: recipients',
      '    limit: 5',
      '    window: 1h',
    ];
    assert.deepEqual(problems(...rule('{listed: true}')), [
      'mw.yaml:4:11: rule mine: when.listed needs blocklists in dnsbl.zones; without them no client is ever listed [MW_CONFIG_RULE]',
    ]);
    assert.deepEqual(problems(...ZONES, ...rule('{listed: [zen.spamhaus.org, b.barracudacentral.org]}')), [
      'mw.yaml:10:11: rule mine: when.listed names b.barracudacentral.org, not in dnsbl.zones (zen.spamhaus.org, bl.spamcop.net) [MW_CONFIG_RULE]',
    ]);
    const s = load(...ZONES, ...rule('{listed: [BL.SpamCop.net]}'));
    assert.deepEqual(s.policy.rules.find((r) => r.name === 'mine')?.when, { listed: ['bl.spamcop.net'] });
    // Tuning a built-in listed rule needs no zones: it waits, inert, for them.
    load('rules:', '  - name: listed-recipients-per-ip', '    limit: 20');
  });
});

void describe('engine: when.listed', () => {
  const s = load(
    ...ZONES,
    'rules:',
    '  - {name: spamcop, on: [recipient], when: {listed: [bl.spamcop.net]}, key: ip, count: recipients, limit: 5, window: 1h}',
    '  - {name: clean, on: [recipient], when: {listed: false}, key: ip, count: recipients, limit: 5, window: 1h}',
  );
  const event = (listed: Listing | undefined): MailEvent => ({
    kind: 'recipient',
    time: 0,
    ip: '192.0.2.7',
    protocol: 'smtp',
    context: '',
    recipient: 'a@example.org',
    recipients: 1,
    size: 0,
    listed,
  });
  const rules = (listed: Listing | undefined): string[] =>
    plan(event(listed), s.policy)
      .rules.map((r) => r.name)
      .filter((n) => n.startsWith('listed-') || n === 'spamcop' || n === 'clean');
  const zone = (name: string, weight: number): Listing['zones'][number] => ({
    zone: name,
    codes: ['127.0.0.2'],
    weight,
  });

  void test('a score under the threshold is not listed; at it, the listed-* rules count; a rule may name its zones', () => {
    assert.deepEqual(rules(undefined), ['clean']);
    assert.deepEqual(rules({ score: 1, zones: [zone('zen.spamhaus.org', 1)] }), ['clean']);
    assert.deepEqual(rules({ score: 2, zones: [zone('zen.spamhaus.org', 2)] }), [
      'listed-recipients-per-ip',
      'listed-recipients-per-network',
    ]);
    assert.deepEqual(rules({ score: 1, zones: [zone('bl.spamcop.net', 1)] }), ['spamcop', 'clean']);
  });
});
