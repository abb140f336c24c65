/*
 * test/config/load — the YAML loader, the schema, defaults, rule merging,
 * overrides, and error reporting (codes and file:line:col places).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, describe, test } from 'node:test';
import { describeSettings, type Settings } from '../../src/config/compile.js';
import { DEFAULT_RULES } from '../../src/config/defaults.js';
import { ConfigError, formatProblem, type ConfigErrorCode, type ConfigProblem } from '../../src/config/errors.js';
import { loadSettings, loadSettingsFromText, overridesFromEnv, type Overrides } from '../../src/config/load.js';
import { parseDuration, parseListen } from '../../src/config/schema.js';
import type { Rule } from '../../src/engine/policy.js';

const FILE = 'mailwarden.yaml';
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** Joins lines so that each test can read positions off the array index (line = index + 1). */
const yaml = (...lines: string[]): string => lines.join('\n') + '\n';

const load = (text: string, overrides?: Overrides): Settings => loadSettingsFromText(text, FILE, overrides);

/** The problems a config produces; fails the test if it loads. */
function problemsOf(text: string, overrides?: Overrides): ConfigProblem[] {
  try {
    load(text, overrides);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.problems;
  }
  assert.fail('expected the config to be rejected');
}

/** Exactly one problem, with this code and place; returns it for message checks. */
function oneProblem(text: string, code: ConfigErrorCode, where: string, overrides?: Overrides): ConfigProblem {
  const ps = problemsOf(text, overrides);
  assert.equal(ps.length, 1, `expected one problem, got:\n${ps.map(formatProblem).join('\n')}`);
  const p = ps[0] as ConfigProblem;
  assert.equal(p.code, code, formatProblem(p));
  assert.equal(p.where, where, formatProblem(p));
  return p;
}

/** `then: tempfail` as compiled: no delay, no message of its own, no ban, suspension or notice. */
const TEMPFAIL_THEN: Rule['then'] = {
  action: 'tempfail',
  delaySeconds: 0,
  message: '',
  ban: undefined,
  suspendMs: undefined,
  notify: false,
};

function rule(s: Settings, name: string): Rule {
  const r = s.policy.rules.find((x) => x.name === name);
  assert.ok(r, `rule ${name} not found in ${s.policy.rules.map((x) => x.name).join(', ')}`);
  return r;
}

/** The built-in rules, in their order (the numbers of each are checked below). */
const DEFAULT_RULE_NAMES = DEFAULT_RULES.map((r) => r.name);

/** The SMTP flow rules: connections and recipients per IP and network (stricter when listed); per user. */
const SMTP_RULE_NAMES = [
  'smtp-connections-per-ip',
  'inbound-recipients-per-ip',
  'inbound-recipients-per-network',
  'listed-connections-per-ip',
  'listed-recipients-per-ip',
  'listed-recipients-per-network',
  'listed-messages-per-ip',
  'listed-messages-per-network',
  'user-messages-per-hour',
  'user-messages-per-day',
  'user-recipients-per-hour',
  'user-recipients-per-day',
];

/** Password guessing (Dovecot) and compromised-account detectors. */
const AUTH_RULE_NAMES = [
  'auth-guess-delay',
  'auth-guess-refuse',
  'auth-guess-ban',
  'auth-spray-ban',
  'auth-spray-ban-shared',
  'auth-guess-network-ban',
  'auth-guess-user-ip',
  'auth-guess-user-ip-refuse',
  'auth-guess-user-network',
  'auth-account-under-attack',
  'auth-account-guess-cap',
];
const COMPROMISE_RULE_NAMES = [
  'compromise-cracked',
  'compromise-cracked-network',
  'compromise-spread',
  'compromise-burst',
];

const tmp = mkdtempSync(join(tmpdir(), 'mailwarden-config-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

void describe('built-in defaults', () => {
  void test('loadSettings(undefined) gives the built-in policy', () => {
    const s = loadSettings(undefined);
    assert.equal(s.file, undefined);
    assert.equal(s.dataDir, resolve('./data'));
    assert.deepEqual(s.listen, {
      postfix: [{ kind: 'tcp', host: '127.0.0.1', port: 10031 }],
      dovecot: [{ kind: 'tcp', host: '127.0.0.1', port: 10032 }],
      admin: [{ kind: 'tcp', host: '127.0.0.1', port: 10033 }],
    });
    assert.equal(s.logLevel, 'info');
    assert.deepEqual(s.allowlist, { networks: ['127.0.0.1', '::1'], users: [] });
    assert.deepEqual(s.postfix, {
      budgetMs: 100,
      idleTimeoutMs: 330_000,
      maxLine: 16384,
      maxAttributes: 256,
      repeatWindowMs: 10_000,
      limits: { maxConnections: 4096, maxConnectionsPerPeer: 2048 },
    });
    assert.deepEqual(s.store, { maxKeys: 2_000_000, snapshotMs: 60_000 });
    const p = s.policy;
    assert.equal(p.ipv4Prefix, 24);
    assert.equal(p.ipv6Prefix, 64);
    assert.deepEqual(p.escalation, { baseMs: HOUR, factor: 4, maxMs: 30 * DAY, lookbackMs: 30 * DAY });
    assert.deepEqual(p.ipv6Aggregate, { enabled: true, prefix: 48, threshold: 3 });
    assert.equal(p.suspensionMs, DAY);
    assert.equal(p.suspensionBlocksLogin, false);
    assert.deepEqual(p.knownGood, { windowMs: 30 * DAY });
    assert.equal(p.allowUsers.size, 0);
    assert.deepEqual(s.dovecot, {
      apiHeader: undefined,
      budgetMs: 500,
      maxDelayMs: 15_000,
      smtpMaxDelayMs: 5000,
      repeatWindowMs: 1000,
      limits: { maxConnections: 1024, maxConnectionsPerPeer: 512 },
      headersTimeoutMs: 5000,
      requestTimeoutMs: 10_000,
      maxBody: 65_536,
    });
    assert.deepEqual(s.alerts, {
      cooldownMs: HOUR,
      queueMax: 1000,
      retries: 5,
      email: { host: '127.0.0.1', port: 25, from: 'mailwarden@localhost', to: ['postmaster@localhost'] },
      webhook: { url: undefined, secret: undefined, timeoutMs: 5000 },
    });
  });

  void test('the allowlist holds exactly 127.0.0.1 and ::1', () => {
    const nets = loadSettings(undefined).policy.allowNetworks;
    assert.equal(nets.has('127.0.0.1'), true);
    assert.equal(nets.has('::1'), true);
    assert.equal(nets.has('127.0.0.2'), false);
    assert.equal(nets.has('192.0.2.1'), false);
  });

  void test('the built-in rules, in order: password guessing, SMTP flow, compromise detectors', () => {
    const s = loadSettings(undefined);
    assert.deepEqual(
      s.policy.rules.map((r) => r.name),
      [...AUTH_RULE_NAMES, ...SMTP_RULE_NAMES, ...COMPROMISE_RULE_NAMES],
    );
    for (const r of s.policy.rules) {
      assert.equal(r.mode, 'enforce', r.name);
      assert.ok(r.description.length > 0, `${r.name} has a description`);
      assert.equal(r.overrides.size, 0, r.name);
    }
  });

  void test('the SMTP flow rules and their numbers', () => {
    const s = loadSettings(undefined);
    const summary = SMTP_RULE_NAMES.map((n) => rule(s, n)).map((r) => [
      r.name,
      r.on.join(','),
      r.key,
      r.count,
      r.limit,
      r.windowMs,
      r.when.authenticated,
      r.then.action,
    ]);
    assert.deepEqual(summary, [
      ['smtp-connections-per-ip', 'connect', 'ip', 'events', 60, 60_000, undefined, 'tempfail'],
      ['inbound-recipients-per-ip', 'recipient', 'ip', 'recipients', 500, HOUR, false, 'tempfail'],
      ['inbound-recipients-per-network', 'recipient', 'network', 'recipients', 2000, HOUR, false, 'tempfail'],
      ['listed-connections-per-ip', 'connect', 'ip', 'events', 10, 60_000, undefined, 'tempfail'],
      ['listed-recipients-per-ip', 'recipient', 'ip', 'recipients', 50, HOUR, false, 'tempfail'],
      ['listed-recipients-per-network', 'recipient', 'network', 'recipients', 200, HOUR, false, 'tempfail'],
      ['listed-messages-per-ip', 'message', 'ip', 'messages', 20, HOUR, false, 'tempfail'],
      ['listed-messages-per-network', 'message', 'network', 'messages', 60, HOUR, false, 'tempfail'],
      ['user-messages-per-hour', 'message', 'user', 'messages', 100, HOUR, true, 'tempfail'],
      ['user-messages-per-day', 'message', 'user', 'messages', 500, DAY, true, 'tempfail'],
      ['user-recipients-per-hour', 'message', 'user', 'recipients', 300, HOUR, true, 'tempfail'],
      ['user-recipients-per-day', 'message', 'user', 'recipients', 1000, DAY, true, 'tempfail'],
    ]);
    for (const n of SMTP_RULE_NAMES) {
      const r = rule(s, n);
      assert.deepEqual(r.then, TEMPFAIL_THEN);
      assert.deepEqual(r.checkOn, []);
    }
  });

  void test('the password-guessing rules and their numbers', () => {
    const s = loadSettings(undefined);
    // when: success / refused / shared; min_addresses
    const summary = AUTH_RULE_NAMES.map((n) => rule(s, n)).map((r) => [
      r.name,
      `${r.on.join(',')}|${r.checkOn.join(',')}`,
      `${r.when.success}/${r.when.refused}/${r.when.shared}/${r.minAddresses}`,
      r.key,
      r.count,
      r.limit,
      r.windowMs,
      r.then.action,
      r.then.delaySeconds,
      r.then.ban,
      r.exceptKnownGood,
    ]);
    const R = 'auth-result';
    const A = 'auth-attempt';
    const PW = 'distinct:pwhash';
    const U = undefined;
    assert.deepEqual(summary, [
      [
        'auth-guess-delay',
        `${R}|${A}`,
        'false/undefined/false/undefined',
        'ip',
        PW,
        3,
        15 * 60_000,
        'delay',
        3,
        U,
        true,
      ],
      ['auth-guess-refuse', `${R}|${A}`, 'false/undefined/false/undefined', 'ip', PW, 6, HOUR, 'reject', 0, U, true],
      ['auth-guess-ban', `${R}|`, 'undefined/true/false/undefined', 'ip', PW, 4, HOUR, 'reject', 0, 'ip', false],
      [
        'auth-spray-ban',
        `${R}|`,
        'false/undefined/false/undefined',
        'ip',
        'distinct:user',
        5,
        HOUR,
        'reject',
        0,
        'ip',
        false,
      ],
      [
        'auth-spray-ban-shared',
        `${R}|`,
        'false/undefined/true/undefined',
        'ip',
        'distinct:user',
        15,
        HOUR,
        'reject',
        0,
        'ip',
        false,
      ],
      [
        'auth-guess-network-ban',
        `${R}|`,
        'false/undefined/false/3',
        'network',
        PW,
        50,
        HOUR,
        'reject',
        0,
        'network',
        false,
      ],
      [
        'auth-guess-user-ip',
        `${R}|${A}`,
        'false/undefined/undefined/undefined',
        'user_ip',
        PW,
        4,
        HOUR,
        'delay',
        2,
        U,
        false,
      ],
      [
        'auth-guess-user-ip-refuse',
        `${R}|${A}`,
        'false/undefined/undefined/undefined',
        'user_ip',
        PW,
        6,
        HOUR,
        'reject',
        0,
        U,
        false,
      ],
      [
        'auth-guess-user-network',
        `${R}|${A}`,
        'false/undefined/undefined/undefined',
        'user_network',
        PW,
        6,
        HOUR,
        'delay',
        2,
        U,
        false,
      ],
      [
        'auth-account-under-attack',
        `${R}|${A}`,
        'false/undefined/undefined/undefined',
        'user',
        'distinct:network',
        5,
        HOUR,
        'reject',
        0,
        U,
        true,
      ],
      [
        'auth-account-guess-cap',
        `${R}|${A}`,
        'false/undefined/undefined/undefined',
        'user',
        PW,
        50,
        DAY,
        'reject',
        0,
        U,
        true,
      ],
    ]);
    assert.deepEqual(s.policy.shared, { minUsers: 2, windowMs: 7 * DAY });
  });

  void test('the compromise detectors: uses, baseline, suspend and notify', () => {
    const s = loadSettings(undefined);
    const cracked = rule(s, 'compromise-cracked');
    assert.deepEqual(cracked.uses, { rule: 'auth-guess-user-ip', count: 'distinct:pwhash', windowMs: HOUR, limit: 4 });
    assert.deepEqual(
      [cracked.key, cracked.limit, cracked.count, cracked.windowMs, cracked.when.success],
      ['user_ip', 5, 'distinct:pwhash', HOUR, true],
    );
    assert.deepEqual(cracked.then, {
      action: 'reject',
      delaySeconds: 0,
      message: '',
      ban: 'ip',
      suspendMs: DAY,
      notify: true,
    });
    const net = rule(s, 'compromise-cracked-network');
    assert.deepEqual(net.uses, { rule: 'auth-guess-user-network', count: 'distinct:pwhash', windowMs: HOUR, limit: 6 });
    assert.deepEqual(
      [net.key, net.limit, net.then.ban, net.then.suspendMs, net.then.notify],
      ['user_network', 8, 'ip', DAY, true],
    );
    const spread = rule(s, 'compromise-spread');
    assert.deepEqual([spread.key, spread.count, spread.limit, spread.windowMs], ['user', 'distinct:network', 3, HOUR]);
    assert.deepEqual(spread.then, {
      action: 'allow',
      delaySeconds: 0,
      message: '',
      ban: undefined,
      suspendMs: undefined,
      notify: true,
    });
    const burst = rule(s, 'compromise-burst');
    assert.deepEqual(
      [burst.key, burst.count, burst.windowMs, burst.limit, burst.uses],
      ['user', 'recipients', HOUR, 50, undefined],
    );
    assert.equal(burst.baseline?.factor, 10);
    assert.equal(burst.baseline?.floor, 50);
    assert.ok(Math.abs((burst.baseline?.tauMs ?? 0) * Math.LN2 - 7 * DAY) < 1, 'half-life 7d');
    assert.deepEqual(burst.then, {
      action: 'hold',
      delaySeconds: 0,
      message: '',
      ban: undefined,
      suspendMs: DAY,
      notify: true,
    });
  });

  void test('an empty or comment-only file is the built-in defaults', () => {
    const expected = describeSettings(loadSettings(undefined));
    for (const text of ['', '# nothing here\n', '---\n']) {
      const got = describeSettings(load(text));
      assert.equal(got.config_file, FILE);
      assert.deepEqual({ ...got, config_file: undefined }, { ...expected, config_file: undefined });
    }
  });

  void test('DEFAULT_RULES is not changed by loading', () => {
    const before = JSON.stringify(DEFAULT_RULES);
    load(
      yaml(
        'rules:',
        '  - name: user-messages-per-hour',
        '    limit: 5',
        '  - name: smtp-connections-per-ip',
        '    enabled: false',
      ),
    );
    assert.equal(JSON.stringify(DEFAULT_RULES), before);
    assert.equal(rule(loadSettings(undefined), 'user-messages-per-hour').limit, 100);
  });
});

void describe('a full valid config', () => {
  const FULL = yaml(
    '# every key mailwarden knows',
    'data_dir: /var/lib/mailwarden',
    'listen:',
    '  postfix: 127.0.0.1:12340',
    '  dovecot: ["[::1]:12341", /run/mailwarden/dovecot.sock]',
    '  admin: 0.0.0.0:12342',
    'log:',
    '  level: debug',
    'networks:',
    '  ipv4_prefix: 22',
    '  ipv6_prefix: 56',
    'allowlist:',
    '  networks: [127.0.0.1, "::1", 10.1.2.3/24, "2001:db8::/32"]',
    '  users: [Webmaster@Example.ORG]',
    'bans:',
    '  duration: 30m',
    '  factor: 2',
    '  max: 2w',
    '  lookback: 3d',
    '  ipv6_aggregate:',
    '    enabled: true',
    '    prefix: 40',
    '    threshold: 5',
    'suspensions:',
    '  duration: 12h',
    '  block_login: true',
    'known_good:',
    '  window: 14d',
    'dovecot:',
    '  api_header: "X-API-Key: s3cret-value"',
    '  budget: 300ms',
    '  max_delay: 10s',
    '  smtp_max_delay: 4s',
    '  repeat_window: 0',
    '  max_connections: 200',
    '  max_connections_per_peer: 150',
    '  headers_timeout: 1s',
    '  request_timeout: 3s',
    '  max_body: 8192',
    'postfix:',
    '  budget: 250ms',
    '  idle_timeout: 5m',
    '  max_line: 4096',
    '  max_attributes: 64',
    '  repeat_window: 0',
    '  max_connections: 500',
    '  max_connections_per_peer: 100',
    'store:',
    '  max_keys: 100000',
    '  snapshot_interval: 30',
    'alerts:',
    '  cooldown: 30m',
    '  queue_max: 50',
    '  retries: 0',
    '  email:',
    '    relay: smtp.example.org:587',
    '    from: mailwarden@example.org',
    '    to: [postmaster@example.org, root@localhost]',
    '  webhook:',
    '    url: https://hooks.example.org/mailwarden',
    '    secret: 0123456789abcdef',
    '    timeout: 2s',
    'use_default_rules: true',
    'rules:',
    '  - name: auth-failures-per-ip',
    '    description: Failed logins from one address.',
    '    mode: observe',
    '    on: [auth-result]',
    '    check_on: [auth-attempt]',
    '    except_known_good: true',
    '    when:',
    '      protocol: [imap, pop3]',
    '      success: false',
    '    key: ip',
    '    count: failures',
    '    limit: 10',
    '    window: 10m',
    '    then:',
    '      action: reject',
    '      message: Too many failed logins',
    '      ban: network',
    '  - name: submission-slowdown',
    '    on: [recipient]',
    '    when:',
    '      authenticated: true',
    '      context: [submission]',
    '    key: user',
    '    count: distinct:recipient_domain',
    '    limit: 50',
    '    window: 1h',
    '    overrides:',
    '      Robot@Example.org: 500',
    '      "@lists.example.org": 200',
    '    then:',
    '      action: delay',
    '      delay: 2.5s',
    '      suspend: 1d',
    '      notify: true',
    '  - name: failures-then-success',
    '    on: [auth-result]',
    '    when: { success: true }',
    '    key: ip',
    '    uses: auth-failures-per-ip',
    '    limit: 4',
    '    then: { action: reject, notify: true }',
    '  - name: bytes-burst',
    '    on: [message]',
    '    key: user',
    '    count: bytes',
    '    window: 1h',
    '    baseline: { factor: 5, floor: 10000000, half_life: 3d }',
    '    then: hold',
  );

  void test('loads from a file with every value applied', () => {
    const path = join(tmp, 'full.yaml');
    writeFileSync(path, FULL);
    const s = loadSettings(path);
    assert.equal(s.file, path);
    assert.equal(s.dataDir, '/var/lib/mailwarden');
    assert.deepEqual(s.listen, {
      postfix: [{ kind: 'tcp', host: '127.0.0.1', port: 12340 }],
      dovecot: [
        { kind: 'tcp', host: '::1', port: 12341 },
        { kind: 'unix', path: '/run/mailwarden/dovecot.sock' },
      ],
      admin: [{ kind: 'tcp', host: '0.0.0.0', port: 12342 }],
    });
    assert.equal(s.logLevel, 'debug');
    assert.deepEqual(s.allowlist, {
      networks: ['127.0.0.1', '::1', '10.1.2.3/24', '2001:db8::/32'],
      users: ['webmaster@example.org'],
    });
    const p = s.policy;
    assert.equal(p.ipv4Prefix, 22);
    assert.equal(p.ipv6Prefix, 56);
    assert.equal(p.allowNetworks.has('10.1.2.200'), true);
    assert.equal(p.allowNetworks.has('10.1.3.1'), false);
    assert.equal(p.allowNetworks.has('2001:db8:ffff::1'), true);
    assert.equal(p.allowUsers.has('webmaster@example.org'), true);
    assert.deepEqual(p.escalation, { baseMs: 30 * 60_000, factor: 2, maxMs: 14 * DAY, lookbackMs: 3 * DAY });
    assert.deepEqual(p.ipv6Aggregate, { enabled: true, prefix: 40, threshold: 5 });
    assert.equal(p.suspensionMs, 12 * HOUR);
    assert.equal(p.suspensionBlocksLogin, true);
    assert.deepEqual(p.knownGood, { windowMs: 14 * DAY });
    // The header name is compared case-insensitively (HTTP), the value exactly.
    assert.deepEqual(s.dovecot, {
      apiHeader: { name: 'x-api-key', value: 's3cret-value' },
      budgetMs: 300,
      maxDelayMs: 10_000,
      smtpMaxDelayMs: 4000,
      repeatWindowMs: 0,
      limits: { maxConnections: 200, maxConnectionsPerPeer: 150 },
      headersTimeoutMs: 1000,
      requestTimeoutMs: 3000,
      maxBody: 8192,
    });
    assert.deepEqual(s.alerts, {
      cooldownMs: 30 * 60_000,
      queueMax: 50,
      retries: 0,
      email: {
        host: 'smtp.example.org',
        port: 587,
        from: 'mailwarden@example.org',
        to: ['postmaster@example.org', 'root@localhost'],
      },
      webhook: { url: 'https://hooks.example.org/mailwarden', secret: '0123456789abcdef', timeoutMs: 2000 },
    });
    assert.deepEqual(s.postfix, {
      budgetMs: 250,
      idleTimeoutMs: 300_000,
      maxLine: 4096,
      maxAttributes: 64,
      repeatWindowMs: 0,
      limits: { maxConnections: 500, maxConnectionsPerPeer: 100 },
    });
    assert.deepEqual(s.store, { maxKeys: 100_000, snapshotMs: 30_000 });

    assert.deepEqual(
      p.rules.map((r) => r.name),
      [...DEFAULT_RULE_NAMES, 'auth-failures-per-ip', 'submission-slowdown', 'failures-then-success', 'bytes-burst'],
    );
    assert.deepEqual(rule(s, 'auth-failures-per-ip'), {
      name: 'auth-failures-per-ip',
      description: 'Failed logins from one address.',
      mode: 'observe',
      on: ['auth-result'],
      checkOn: ['auth-attempt'],
      exceptKnownGood: true,
      key: 'ip',
      count: 'failures',
      limit: 10,
      windowMs: 600_000,
      when: { protocol: ['imap', 'pop3'], success: false },
      minAddresses: undefined,
      then: {
        action: 'reject',
        delaySeconds: 0,
        message: 'Too many failed logins',
        ban: 'network',
        suspendMs: undefined,
        notify: false,
      },
      overrides: new Map(),
      uses: undefined,
      baseline: undefined,
    });
    const slow = rule(s, 'submission-slowdown');
    assert.equal(slow.mode, 'enforce');
    assert.equal(slow.description, '');
    assert.equal(slow.count, 'distinct:recipient_domain');
    assert.deepEqual(slow.when, { authenticated: true, context: ['submission'] });
    // Delays are kept in whole seconds; a fraction rounds up.
    assert.deepEqual(slow.then, {
      action: 'delay',
      delaySeconds: 3,
      message: '',
      ban: undefined,
      suspendMs: DAY,
      notify: true,
    });
    // Override keys are lower-cased, like the subjects they are compared with.
    assert.deepEqual(
      [...slow.overrides],
      [
        ['robot@example.org', 500],
        ['@lists.example.org', 200],
      ],
    );
    // A detector takes count and window from the rule it uses; it keeps its own key and limit.
    const det = rule(s, 'failures-then-success');
    assert.deepEqual(det.uses, { rule: 'auth-failures-per-ip', count: 'failures', windowMs: 600_000, limit: 10 });
    assert.deepEqual([det.count, det.windowMs, det.limit, det.key], ['failures', 600_000, 4, 'ip']);
    // A baseline rule without a limit uses its floor.
    const burst = rule(s, 'bytes-burst');
    assert.equal(burst.limit, 10_000_000);
    assert.deepEqual([burst.baseline?.factor, burst.baseline?.floor], [5, 10_000_000]);
    assert.ok(Math.abs((burst.baseline?.tauMs ?? 0) * Math.LN2 - 3 * DAY) < 1);
  });

  void test('a new rule without then tempfails', () => {
    const s = load(
      yaml(
        'rules:',
        '  - name: per-sender',
        '    on: [mail]',
        '    key: sender',
        '    count: events',
        '    limit: 5',
        '    window: 1m',
      ),
    );
    assert.deepEqual(rule(s, 'per-sender').then, TEMPFAIL_THEN);
  });

  void test('then as a word or as an object; ban true/false', () => {
    const base = ['    on: [connect]', '    key: ip', '    count: events', '    limit: 5', '    window: 1m'];
    const s = load(
      yaml(
        'use_default_rules: false',
        'rules:',
        '  - name: a',
        ...base,
        '    then: reject',
        '  - name: b',
        ...base,
        '    then: { action: hold, ban: true }',
        '  - name: c',
        ...base,
        '    then: { action: allow, ban: false }',
      ),
    );
    assert.equal(rule(s, 'a').then.action, 'reject');
    assert.deepEqual([rule(s, 'b').then.action, rule(s, 'b').then.ban], ['hold', 'ip']);
    assert.deepEqual([rule(s, 'c').then.action, rule(s, 'c').then.ban], ['allow', undefined]);
  });
});

void describe('durations', () => {
  void test('parseDuration reads units and plain seconds', () => {
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('90s'), 90_000);
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration('1.5h'), 5_400_000);
    assert.equal(parseDuration('7d'), 7 * DAY);
    assert.equal(parseDuration('2w'), 14 * DAY);
    assert.equal(parseDuration(' 1h '), HOUR);
    assert.equal(parseDuration(30), 30_000);
    assert.equal(parseDuration(0.5), 500);
    for (const bad of ['5 minutes', '5', '1H', 'h', '-1s', '1y', '']) assert.equal(parseDuration(bad), undefined, bad);
    assert.equal(parseDuration(-1), undefined);
    assert.equal(parseDuration(Number.POSITIVE_INFINITY), undefined);
  });

  void test('a number in the file is seconds', () => {
    const s = load(yaml('bans:', '  duration: 90', 'rules:', '  - name: smtp-connections-per-ip', '    window: 120'));
    assert.equal(s.policy.escalation.baseMs, 90_000);
    assert.equal(rule(s, 'smtp-connections-per-ip').windowMs, 120_000);
  });

  void test('a duration is at most 3650d: longer ones are refused, naming the limit', () => {
    assert.equal(load(yaml('bans:', '  max: 3650d')).policy.escalation.maxMs, 3650 * DAY);
    for (const value of ['999999999999d', '3651d', '1e300']) {
      const p = oneProblem(yaml('bans:', `  max: ${value}`), 'MW_CONFIG_INVALID', 'mailwarden.yaml:2:8');
      assert.match(p.message, /bans\.max: .* is too long: must be at most 3650d/, value);
    }
    const w = oneProblem(
      yaml('rules:', '  - name: smtp-connections-per-ip', '    window: 99999w'),
      'MW_CONFIG_INVALID',
      'mailwarden.yaml:3:13',
    );
    assert.match(w.message, /must be at most 3650d/);
  });
});

void describe('YAML syntax errors', () => {
  void test('reported as file:line:col with MW_CONFIG_SYNTAX', () => {
    const p = oneProblem(
      yaml('log:', '  level: info', 'listen:', '  postfix: 127.0.0.1:10031: x'),
      'MW_CONFIG_SYNTAX',
      `${FILE}:4:12`,
    );
    assert.match(p.message, /^YAML syntax: /);
  });

  void test('at the line of the broken entry, not the start of the file', () => {
    oneProblem(yaml('log:', '  level: info', '  bad', 'rules: []'), 'MW_CONFIG_SYNTAX', `${FILE}:3:3`);
    oneProblem(yaml('bans:', '  duration: 1h', ' factor: 4'), 'MW_CONFIG_SYNTAX', `${FILE}:3:1`);
  });

  void test('a key given twice is an error at the second one', () => {
    const p = oneProblem(
      yaml('log:', '  level: info', 'store:', '  max_keys: 5000', 'log:', '  level: debug'),
      'MW_CONFIG_SYNTAX',
      `${FILE}:5:1`,
    );
    assert.match(p.message, /unique/);
  });

  void test('an alias to an unknown anchor is a syntax error at the alias', () => {
    const p = oneProblem(yaml('x: &a info', 'log:', '  level: *b'), 'MW_CONFIG_SYNTAX', `${FILE}:3:10`);
    assert.match(p.message, /alias/i);
  });

  void test('the error message has the form where: message [CODE]', () => {
    assert.throws(
      () => load(yaml('log:', '\tlevel: info')),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.name === 'ConfigError' &&
        /^mailwarden\.yaml:2:1: YAML syntax: .* \[MW_CONFIG_SYNTAX\]$/.test(err.message),
    );
  });
});

void describe('unknown keys', () => {
  void test('a top-level key is reported at the key', () => {
    const p = oneProblem(
      yaml('log:', '  level: info', 'lsten:', '  postfix: 127.0.0.1:10031'),
      'MW_CONFIG_UNKNOWN_KEY',
      `${FILE}:3:1`,
    );
    assert.equal(p.message, 'unknown key "lsten" in the config; did you mean "listen"?');
  });

  void test('a typo inside a rule (limt) is reported at the key', () => {
    const p = oneProblem(
      yaml('rules:', '  - name: user-messages-per-hour', '    window: 1h', '    limt: 5'),
      'MW_CONFIG_UNKNOWN_KEY',
      `${FILE}:4:5`,
    );
    assert.equal(p.message, 'unknown key "limt" in rules.0; did you mean "limit"?');
  });

  void test('in nested objects: listen, bans.ipv6_aggregate, when, then', () => {
    const ps = problemsOf(
      yaml(
        'listen:',
        '  postfx: 127.0.0.1:1',
        'bans:',
        '  ipv6_aggregate:',
        '    treshold: 4',
        'rules:',
        '  - name: x',
        '    when: { authenticatd: true }',
        '    then: { action: delay, dealy: 3s }',
      ),
    );
    assert.deepEqual(
      ps.map((p) => [p.code, p.where, p.message.match(/"(\w+)"/)?.[1]]),
      [
        ['MW_CONFIG_UNKNOWN_KEY', `${FILE}:2:3`, 'postfx'],
        ['MW_CONFIG_UNKNOWN_KEY', `${FILE}:5:5`, 'treshold'],
        ['MW_CONFIG_UNKNOWN_KEY', `${FILE}:8:13`, 'authenticatd'],
        ['MW_CONFIG_UNKNOWN_KEY', `${FILE}:9:28`, 'dealy'],
      ],
    );
  });
});

void describe('invalid values', () => {
  void test('a string for a number, at the value', () => {
    const p = oneProblem(
      yaml('rules:', '  - name: user-messages-per-hour', '    limit: "ten"'),
      'MW_CONFIG_INVALID',
      `${FILE}:3:12`,
    );
    assert.equal(p.message, 'rules.0.limit: must be a number, not text');
  });

  void test('a bad enum value (then: tmpfail) lists the choices and suggests the nearest', () => {
    const p = oneProblem(
      yaml('rules:', '  - name: user-messages-per-hour', '    then: tmpfail'),
      'MW_CONFIG_INVALID',
      `${FILE}:3:11`,
    );
    assert.equal(
      p.message,
      'rules.0.then: "tmpfail" is not one of "allow", "delay", "tempfail", "reject", "hold"; did you mean "tempfail"?',
    );
  });

  void test('a bad action inside the object form of then is reported at then.action', () => {
    const p = oneProblem(
      yaml('rules:', '  - name: user-messages-per-hour', '    then:', '      action: tmpfail', '      delay: 3s'),
      'MW_CONFIG_INVALID',
      `${FILE}:4:15`,
    );
    assert.equal(
      p.message,
      'rules.0.then.action: "tmpfail" is not one of "allow", "delay", "tempfail", "reject", "hold"; did you mean "tempfail"?',
    );
  });

  void test('a bad duration (window: 5 minutes) says how to write one', () => {
    const p = oneProblem(
      yaml('rules:', '  - name: user-messages-per-hour', '    window: 5 minutes'),
      'MW_CONFIG_INVALID',
      `${FILE}:3:13`,
    );
    assert.equal(
      p.message,
      'rules.0.window: not a duration: "5 minutes"; write e.g. 30s, 5m, 1h, 7d, or a number of seconds',
    );
  });

  void test('zero and negative durations', () => {
    assert.equal(
      oneProblem(yaml('bans:', '  duration: 0'), 'MW_CONFIG_INVALID', `${FILE}:2:13`).message,
      'bans.duration: must be longer than 0',
    );
    assert.match(
      oneProblem(yaml('bans:', '  max: -5'), 'MW_CONFIG_INVALID', `${FILE}:2:8`).message,
      /^bans\.max: not a duration: -5;/,
    );
  });

  void test('event kinds, keys and counts are checked', () => {
    const ps = problemsOf(
      yaml('rules:', '  - name: x', '    on: [connect, sent]', '    key: client', '    count: distinct:password'),
    );
    assert.deepEqual(
      ps.map((p) => [p.code, p.where]),
      [
        ['MW_CONFIG_INVALID', `${FILE}:3:19`],
        ['MW_CONFIG_INVALID', `${FILE}:4:10`],
        ['MW_CONFIG_INVALID', `${FILE}:5:12`],
      ],
    );
    assert.match(
      ps[0]?.message ?? '',
      /^rules\.0\.on\.1: "sent" is not one of "connect", "helo", "mail", "recipient", "data", "message", "vrfy", "etrn", "auth-attempt", "auth-result", "pregreet", "blocklisted", "relay-denied", "smtp-errors", "lost-after-auth"$/,
    );
    assert.match(
      ps[1]?.message ?? '',
      /^rules\.0\.key: "client" is not one of "ip", "network", "user", "sender", "sender_domain", "user_ip", "user_network"$/,
    );
    assert.match(ps[2]?.message ?? '', /"distinct:pwhash"/);
  });

  void test('out-of-range numbers and bad names', () => {
    const ps = problemsOf(
      yaml(
        'networks:',
        '  ipv4_prefix: 33',
        'rules:',
        '  - name: Bad Name',
        '    limit: 0',
        '  - name: user-messages-per-day',
        '    limit: 2.5',
        '    on: []',
      ),
    );
    assert.deepEqual(
      ps.map((p) => p.where),
      // In the order of the file, whatever the order of the schema.
      [`${FILE}:2:16`, `${FILE}:4:11`, `${FILE}:5:12`, `${FILE}:7:12`, `${FILE}:8:9`],
    );
    assert.ok(ps.every((p) => p.code === 'MW_CONFIG_INVALID'));
    assert.match(ps[1]?.message ?? '', /rule names are 1-64 characters of a-z, 0-9, _ \. -/);
  });

  void test('a rule without a name, a rule that is not a mapping, a config that is not a mapping', () => {
    const p = oneProblem(yaml('rules:', '  - limit: 5'), 'MW_CONFIG_INVALID', `${FILE}:2:5`);
    assert.match(p.message, /^rules\.0\.name: /);
    assert.equal(
      oneProblem(yaml('rules:', '  - just-a-name'), 'MW_CONFIG_INVALID', `${FILE}:2:5`).message,
      'rules.0: must be a mapping of keys to values, not text',
    );
    assert.equal(
      oneProblem(yaml('- a', '- b'), 'MW_CONFIG_INVALID', `${FILE}:1:1`).message,
      'the config: must be a mapping of keys to values, not a list',
    );
  });

  void test('log level and then.message length', () => {
    assert.match(oneProblem(yaml('log:', '  level: verbose'), 'MW_CONFIG_INVALID', `${FILE}:2:10`).message, /"debug"/);
    oneProblem(
      yaml('rules:', '  - name: user-messages-per-hour', `    then: { action: reject, message: ${'x'.repeat(201)} }`),
      'MW_CONFIG_INVALID',
      `${FILE}:3:38`,
    );
  });
});

void describe('several problems at once', () => {
  void test('every problem in the file is reported, each at its place', () => {
    const text = yaml(
      'lsten: 127.0.0.1:1',
      'bans:',
      '  factor: 0.5',
      'rules:',
      '  - name: user-messages-per-hour',
      '    limt: 5',
      '    window: 5 minutes',
      '    then: tmpfail',
    );
    const ps = problemsOf(text);
    const got = ps.map((p) => `${p.where} ${p.code}`).sort();
    assert.deepEqual(got, [
      `${FILE}:1:1 MW_CONFIG_UNKNOWN_KEY`,
      `${FILE}:3:11 MW_CONFIG_INVALID`,
      `${FILE}:6:5 MW_CONFIG_UNKNOWN_KEY`,
      `${FILE}:7:13 MW_CONFIG_INVALID`,
      `${FILE}:8:11 MW_CONFIG_INVALID`,
    ]);
    try {
      load(text);
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.message.split('\n').length, 5);
      assert.equal(err.message, ps.map(formatProblem).join('\n'));
    }
  });

  void test('rule problems are all reported too', () => {
    const ps = problemsOf(
      yaml(
        'rules:',
        '  - name: a',
        '    on: [connect]',
        '  - name: b',
        '    key: ip',
        '  - name: user-messages-per-hour',
        '    then: { action: delay }',
      ),
    );
    // In the order of the file, though built-in rules are checked before the file's new ones.
    assert.deepEqual(
      ps.map((p) => [p.code, p.where]),
      [
        ['MW_CONFIG_RULE', `${FILE}:2:5`],
        ['MW_CONFIG_RULE', `${FILE}:4:5`],
        ['MW_CONFIG_RULE', `${FILE}:7:11`],
      ],
    );
  });
});

void describe('rules: completeness and names', () => {
  void test('a new rule missing limit and window is reported at the rule', () => {
    const p = oneProblem(
      yaml(
        'log:',
        '  level: info',
        'rules:',
        '  - name: my-rule',
        '    on: [connect]',
        '    key: ip',
        '    count: events',
      ),
      'MW_CONFIG_RULE',
      `${FILE}:4:5`,
    );
    assert.equal(
      p.message,
      'rule my-rule needs limit, window (a new rule must say on which events, key, count, limit and window)',
    );
  });

  void test('a rule name used twice is reported at the second name', () => {
    const r = ['    on: [connect]', '    key: ip', '    count: events', '    limit: 1', '    window: 1m'];
    const p = oneProblem(
      yaml('rules:', '  - name: twice', ...r, '  - name: twice', ...r),
      'MW_CONFIG_RULE',
      `${FILE}:8:11`,
    );
    assert.equal(p.message, 'rule name "twice" is used twice; give each rule its own name');
  });

  void test('naming a built-in rule twice is also an error', () => {
    oneProblem(
      yaml(
        'rules:',
        '  - name: user-messages-per-hour',
        '    limit: 5',
        '  - name: user-messages-per-hour',
        '    limit: 6',
      ),
      'MW_CONFIG_RULE',
      `${FILE}:4:11`,
    );
  });
});

void describe('rules: merging over the built-in rules', () => {
  void test('only limit: 5 changes the limit; every other field is kept', () => {
    const s = load(yaml('rules:', '  - name: user-messages-per-hour', '    limit: 5'));
    const base = rule(loadSettings(undefined), 'user-messages-per-hour');
    assert.deepEqual(rule(s, 'user-messages-per-hour'), { ...base, limit: 5 });
    // Position and the other rules stay as they were.
    assert.deepEqual(
      s.policy.rules.map((r) => r.name),
      DEFAULT_RULE_NAMES,
    );
  });

  void test('then, mode and when can be changed on a built-in rule', () => {
    const s = load(
      yaml(
        'rules:',
        '  - name: smtp-connections-per-ip',
        '    mode: observe',
        '    then: { action: delay, delay: 5s }',
        '  - name: inbound-recipients-per-ip',
        '    when: { context: [smtpd] }',
      ),
    );
    const c = rule(s, 'smtp-connections-per-ip');
    assert.equal(c.mode, 'observe');
    assert.equal(c.limit, 60);
    assert.deepEqual([c.then.action, c.then.delaySeconds], ['delay', 5]);
    // `when` given in the file replaces the built-in `when` as a whole.
    assert.deepEqual(rule(s, 'inbound-recipients-per-ip').when, { context: ['smtpd'] });
    // Without `when` in the file, the built-in one is kept.
    assert.deepEqual(c.when, {});
  });

  void test('enabled: false removes a built-in rule', () => {
    const s = load(yaml('rules:', '  - name: user-recipients-per-day', '    enabled: false'));
    assert.deepEqual(
      s.policy.rules.map((r) => r.name),
      DEFAULT_RULE_NAMES.filter((n) => n !== 'user-recipients-per-day'),
    );
  });

  void test('enabled: false on a new, incomplete rule is accepted and removes it', () => {
    const s = load(yaml('rules:', '  - name: later', '    enabled: false'));
    assert.equal(
      s.policy.rules.some((r) => r.name === 'later'),
      false,
    );
  });

  void test('new rules come after the built-in ones, in file order', () => {
    const r = ['    on: [helo]', '    key: network', '    count: events', '    limit: 1', '    window: 1m'];
    const s = load(yaml('rules:', '  - name: zz', ...r, '  - name: aa', ...r));
    assert.deepEqual(
      s.policy.rules.map((x) => x.name),
      [...DEFAULT_RULE_NAMES, 'zz', 'aa'],
    );
  });

  void test('use_default_rules: false keeps only the rules of the file', () => {
    const s = load(
      yaml(
        'use_default_rules: false',
        'rules:',
        '  - name: only',
        '    on: [connect]',
        '    key: ip',
        '    count: events',
        '    limit: 9',
        '    window: 1m',
      ),
    );
    assert.deepEqual(
      s.policy.rules.map((r) => r.name),
      ['only'],
    );
    assert.equal(load(yaml('use_default_rules: false')).policy.rules.length, 0);
  });

  void test('use_default_rules: false makes a built-in name a new rule that must be complete', () => {
    const p = oneProblem(
      yaml('use_default_rules: false', 'rules:', '  - name: user-messages-per-hour', '    limit: 5'),
      'MW_CONFIG_RULE',
      `${FILE}:3:5`,
    );
    assert.match(p.message, /needs on, key, count, window/);
  });
});

void describe('rules: contradictions', () => {
  void test('action delay without then.delay is an error at then', () => {
    const p = oneProblem(
      yaml('rules:', '  - name: user-messages-per-hour', '    then: delay'),
      'MW_CONFIG_RULE',
      `${FILE}:3:11`,
    );
    assert.equal(p.message, 'rule user-messages-per-hour: action delay needs then.delay (e.g. 3s)');
  });

  void test('then.suspend is accepted with any key (it suspends the user of the event)', () => {
    // compromise-cracked counts per ip and suspends the user who logged in.
    const s = load(
      yaml(
        'rules:',
        '  - name: user-messages-per-day',
        '    then: { action: reject, suspend: 2d }',
        '  - name: smtp-connections-per-ip',
        '    then: { action: reject, suspend: 1h }',
      ),
    );
    assert.equal(rule(s, 'user-messages-per-day').then.suspendMs, 2 * DAY);
    assert.equal(rule(s, 'smtp-connections-per-ip').then.suspendMs, HOUR);
  });
});

void describe('rules: detectors (uses) and baselines', () => {
  const counted = [
    '  - name: fails',
    '    on: [auth-result]',
    '    key: ip',
    '    count: failures',
    '    limit: 9',
    '    window: 1h',
  ];
  /** `counted` (lines 3-8), then a rule det on auth-result (lines 9-10) with these lines (from line 11). */
  const withDet = (...det: string[]): string =>
    yaml('use_default_rules: false', 'rules:', ...counted, '  - name: det', '    on: [auth-result]', ...det);

  void test('a detector needs on, key and limit only; count and window come from the rule it uses', () => {
    const s = load(withDet('    key: ip', '    uses: fails', '    limit: 3'));
    assert.deepEqual(rule(s, 'det').uses, { rule: 'fails', count: 'failures', windowMs: HOUR, limit: 9 });
    const p = oneProblem(withDet('    uses: fails'), 'MW_CONFIG_RULE', `${FILE}:9:5`);
    assert.match(p.message, /^rule det needs key, limit /);
  });

  void test('uses must name an enabled rule with its own counter', () => {
    const p = oneProblem(withDet('    key: ip', '    uses: fail', '    limit: 3'), 'MW_CONFIG_RULE', `${FILE}:12:11`);
    assert.equal(
      p.message,
      'rule det: uses "fail", which is not an enabled rule with its own counter; name one of: fails',
    );
    // A detector cannot read another detector.
    const q = problemsOf(
      yaml(
        'use_default_rules: false',
        'rules:',
        ...counted,
        '  - name: d1',
        '    on: [auth-result]',
        '    key: ip',
        '    uses: fails',
        '    limit: 3',
        '  - name: d2',
        '    on: [auth-result]',
        '    key: ip',
        '    uses: d1',
        '    limit: 3',
      ),
    );
    assert.deepEqual(
      q.map((x) => [x.code, x.where]),
      [['MW_CONFIG_RULE', `${FILE}:17:11`]],
    );
  });

  void test('a detector must have the key of the rule it uses', () => {
    const p = oneProblem(
      withDet('    key: network', '    uses: fails', '    limit: 3'),
      'MW_CONFIG_RULE',
      `${FILE}:11:10`,
    );
    assert.equal(p.message, 'rule det: key must be ip, the key of rule fails it uses');
  });

  void test('disabling a built-in rule that a built-in detector uses names the detector', () => {
    const p = oneProblem(
      yaml('rules:', '  - name: auth-guess-user-ip', '    enabled: false'),
      'MW_CONFIG_RULE',
      '(built-in rule compromise-cracked)',
    );
    assert.match(p.message, /^rule compromise-cracked: uses "auth-guess-user-ip", which is not an enabled rule/);
    // Disabling both is fine.
    const s = load(
      yaml(
        'rules:',
        '  - name: auth-guess-user-ip',
        '    enabled: false',
        '  - name: compromise-cracked',
        '    enabled: false',
      ),
    );
    assert.equal(
      s.policy.rules.some((r) => r.name === 'compromise-cracked' || r.name === 'auth-guess-user-ip'),
      false,
    );
  });

  void test('a baseline needs no limit, and only compares rates', () => {
    const base = [
      '    on: [message]',
      '    key: user',
      '    window: 1h',
      '    baseline: { factor: 3, floor: 20, half_life: 1d }',
    ];
    const s = load(yaml('rules:', '  - name: b1', ...base, '    count: messages'));
    assert.equal(rule(s, 'b1').limit, 20);
    const p = oneProblem(
      yaml('rules:', '  - name: b2', ...base, '    count: distinct:recipient_domain'),
      'MW_CONFIG_RULE',
      `${FILE}:6:15`,
    );
    assert.equal(p.message, 'rule b2: a baseline compares rates; use count: messages, recipients, bytes or events');
    const q = problemsOf(
      yaml(
        'rules:',
        '  - name: b3',
        '    on: [message]',
        '    key: user',
        '    count: messages',
        '    window: 1h',
        '    baseline: { factor: 0.5, floor: 0, half_life: 0 }',
      ),
    );
    assert.deepEqual(
      q.map((x) => [x.code, x.where, x.message.split(':')[0]]),
      [
        ['MW_CONFIG_INVALID', `${FILE}:7:25`, 'rules.0.baseline.factor'],
        ['MW_CONFIG_INVALID', `${FILE}:7:37`, 'rules.0.baseline.floor'],
        ['MW_CONFIG_INVALID', `${FILE}:7:51`, 'rules.0.baseline.half_life'],
      ],
    );
  });

  void test('overrides must be positive whole numbers', () => {
    const ps = problemsOf(
      yaml(
        'rules:',
        '  - name: user-messages-per-day',
        '    overrides:',
        '      a@example.org: 0',
        '      b@example.org: lots',
      ),
    );
    assert.deepEqual(
      ps.map((p) => [p.code, p.where]),
      [
        ['MW_CONFIG_INVALID', `${FILE}:4:22`],
        ['MW_CONFIG_INVALID', `${FILE}:5:22`],
      ],
    );
  });
});

void describe('dovecot and alerts', () => {
  void test('dovecot.api_header must be written as "Name: value"', () => {
    const p = oneProblem(yaml('dovecot:', '  api_header: s3cret'), 'MW_CONFIG_INVALID', `${FILE}:2:15`);
    assert.equal(
      p.message,
      'dovecot.api_header: write it as Dovecot does, "Header-Name: value" (e.g. "Authorization: Bearer s3cret")',
    );
    const s = load(yaml('dovecot:', '  api_header: "Authorization: Bearer abc def"'));
    assert.deepEqual(s.dovecot.apiHeader, { name: 'authorization', value: 'Bearer abc def' });
  });

  void test('alerts: relay, addresses, webhook URL and secret are checked', () => {
    const ps = problemsOf(
      yaml(
        'alerts:',
        '  retries: 21',
        '  email:',
        '    relay: localhost',
        '    from: mailwarden',
        '    to: [admin@example.org, nobody]',
        '  webhook:',
        '    url: ftp://example.org/x',
        '    secret: short',
      ),
    );
    assert.deepEqual(
      ps.map((p) => [p.code, p.where]),
      [
        ['MW_CONFIG_INVALID', `${FILE}:2:12`],
        ['MW_CONFIG_INVALID', `${FILE}:4:12`],
        ['MW_CONFIG_INVALID', `${FILE}:5:11`],
        ['MW_CONFIG_INVALID', `${FILE}:6:29`],
        ['MW_CONFIG_INVALID', `${FILE}:8:10`],
        ['MW_CONFIG_INVALID', `${FILE}:9:13`],
      ],
    );
    assert.equal(ps[1]?.message, 'alerts.email.relay: write host:port, e.g. localhost:25');
    assert.equal(ps[2]?.message, 'alerts.email.from: not an email address (e.g. postmaster@example.org)');
    assert.equal(ps[4]?.message, 'alerts.webhook.url: not an http(s) URL');
    assert.equal(ps[5]?.message, 'alerts.webhook.secret: use at least 16 characters for the HMAC secret');
  });

  void test('alerts.email.to: [] switches the default email alerts off, and check-config says so', () => {
    const s = load(yaml('alerts:', '  email:', '    to: []'));
    assert.deepEqual(s.alerts.email.to, []);
    assert.equal((describeSettings(s).alerts as { email: unknown }).email, 'off (alerts.email.to is empty)');
  });

  void test('zero durations are allowed where 0 means off', () => {
    const s = load(yaml('known_good:', '  window: 0', 'alerts:', '  cooldown: 0'));
    assert.equal(s.policy.knownGood.windowMs, 0);
    assert.equal(s.alerts.cooldownMs, 0);
  });
});

void describe('listen addresses', () => {
  void test('parseListen: host:port, [v6]:port, unix paths', () => {
    assert.deepEqual(parseListen('127.0.0.1:10031'), { kind: 'tcp', host: '127.0.0.1', port: 10031 });
    assert.deepEqual(parseListen('[::1]:10031'), { kind: 'tcp', host: '::1', port: 10031 });
    assert.deepEqual(parseListen('[2001:db8::5]:25'), { kind: 'tcp', host: '2001:db8::5', port: 25 });
    assert.deepEqual(parseListen('localhost:8080'), { kind: 'tcp', host: 'localhost', port: 8080 });
    assert.deepEqual(parseListen('/var/spool/postfix/private/mailwarden'), {
      kind: 'unix',
      path: '/var/spool/postfix/private/mailwarden',
    });
    assert.deepEqual(parseListen(' ./mw.sock '), { kind: 'unix', path: './mw.sock' });
    for (const bad of [
      '127.0.0.1',
      ':10031',
      '::1:10031',
      '127.0.0.1:99999',
      '127.0.0.1:port',
      'mw.sock',
      '[zz]:1',
      'a b:1',
      '',
    ]) {
      assert.equal(parseListen(bad), undefined, bad);
    }
  });

  void test('one address or a list, in the file', () => {
    const s = load(
      yaml('listen:', '  postfix: [127.0.0.1:10031, "[::1]:10031", /run/mw/postfix.sock]', '  admin: "[::]:8080"'),
    );
    assert.deepEqual(s.listen.postfix, [
      { kind: 'tcp', host: '127.0.0.1', port: 10031 },
      { kind: 'tcp', host: '::1', port: 10031 },
      { kind: 'unix', path: '/run/mw/postfix.sock' },
    ]);
    assert.deepEqual(s.listen.admin, [{ kind: 'tcp', host: '::', port: 8080 }]);
    assert.deepEqual(s.listen.dovecot, [{ kind: 'tcp', host: '127.0.0.1', port: 10032 }]);
  });

  void test('bad addresses are rejected at their place', () => {
    const ps = problemsOf(
      yaml('listen:', '  postfix: 127.0.0.1', '  dovecot: [127.0.0.1:1, "[::1]:70000"]', '  admin: 8080'),
    );
    assert.deepEqual(
      ps.map((p) => [p.code, p.where]),
      [
        ['MW_CONFIG_INVALID', `${FILE}:2:12`],
        ['MW_CONFIG_INVALID', `${FILE}:3:26`],
        ['MW_CONFIG_INVALID', `${FILE}:4:10`],
      ],
    );
    assert.equal(
      ps[0]?.message,
      'listen.postfix: not a listen address; write host:port (127.0.0.1:10031, [::1]:10031) or an absolute unix socket path',
    );
    assert.match(ps[1]?.message ?? '', /^listen\.dovecot\.1: not a listen address/);
  });
});

void describe('allowlist', () => {
  void test('entries are parsed strictly, like the engine does', () => {
    const ps = problemsOf(
      yaml('allowlist:', '  networks: ["127.1", 0x7f.0.0.1, 10.0.0.0/33, "::1/129", 192.0.2.0/24]'),
    );
    assert.deepEqual(
      ps.map((p) => p.where),
      [`${FILE}:2:14`, `${FILE}:2:23`, `${FILE}:2:35`, `${FILE}:2:48`],
    );
    assert.ok(ps.every((p) => p.code === 'MW_CONFIG_INVALID' && /not an IP address or CIDR network/.test(p.message)));
  });

  void test('a list in the file replaces the default list', () => {
    const s = load(yaml('allowlist:', '  networks: [192.0.2.0/24]'));
    assert.equal(s.policy.allowNetworks.has('127.0.0.1'), false);
    assert.equal(s.policy.allowNetworks.has('192.0.2.77'), true);
    assert.deepEqual(load(yaml('allowlist:', '  networks: []')).allowlist.networks, []);
  });
});

void describe('IPv6 aggregation', () => {
  void test('the aggregate prefix must be shorter than the network prefix', () => {
    const p = oneProblem(
      yaml('bans:', '  ipv6_aggregate:', '    prefix: 60', 'networks:', '  ipv6_prefix: 56'),
      'MW_CONFIG_INVALID',
      `${FILE}:3:13`,
    );
    assert.equal(p.message, 'bans.ipv6_aggregate.prefix (60) must be shorter than networks.ipv6_prefix (56)');
  });

  void test('a short ipv6_prefix against the default aggregate prefix is reported at networks.ipv6_prefix', () => {
    oneProblem(yaml('networks:', '  ipv6_prefix: 48'), 'MW_CONFIG_INVALID', `${FILE}:2:16`);
  });

  void test('no conflict when aggregation is disabled', () => {
    const s = load(yaml('networks:', '  ipv6_prefix: 40', 'bans:', '  ipv6_aggregate:', '    enabled: false'));
    assert.deepEqual(s.policy.ipv6Aggregate, { enabled: false, prefix: 48, threshold: 3 });
    assert.equal(s.policy.ipv6Prefix, 40);
  });
});

void describe('environment overrides', () => {
  void test('overridesFromEnv picks the MAILWARDEN_ variables and ignores empty ones', () => {
    assert.deepEqual(
      overridesFromEnv({
        MAILWARDEN_DATA: '/srv/mw',
        MAILWARDEN_POSTFIX_LISTEN: '127.0.0.1:1',
        MAILWARDEN_DOVECOT_LISTEN: '',
        MAILWARDEN_ADMIN_LISTEN: '/run/a.sock',
        MAILWARDEN_OTHER: 'x',
      }),
      {
        dataDir: { value: '/srv/mw', from: 'MAILWARDEN_DATA' },
        postfixListen: { value: '127.0.0.1:1', from: 'MAILWARDEN_POSTFIX_LISTEN' },
        dovecotListen: undefined,
        adminListen: { value: '/run/a.sock', from: 'MAILWARDEN_ADMIN_LISTEN' },
      },
    );
  });

  void test('they win over the file; a comma-separated value is a list', () => {
    const text = yaml('data_dir: /var/lib/file', 'listen:', '  postfix: 127.0.0.1:1', '  dovecot: 127.0.0.1:2');
    const env = overridesFromEnv({
      MAILWARDEN_POSTFIX_LISTEN: '0.0.0.0:10031, [::]:10031',
      MAILWARDEN_DATA: '/var/lib/env',
    });
    const s = load(text, env);
    assert.deepEqual(s.listen.postfix, [
      { kind: 'tcp', host: '0.0.0.0', port: 10031 },
      { kind: 'tcp', host: '::', port: 10031 },
    ]);
    assert.deepEqual(s.listen.dovecot, [{ kind: 'tcp', host: '127.0.0.1', port: 2 }]);
    assert.equal(s.dataDir, '/var/lib/env');
  });

  void test('they also apply to the built-in defaults', () => {
    const s = loadSettings(undefined, overridesFromEnv({ MAILWARDEN_ADMIN_LISTEN: '/run/mailwarden/admin.sock' }));
    assert.deepEqual(s.listen.admin, [{ kind: 'unix', path: '/run/mailwarden/admin.sock' }]);
  });

  void test('a bad value names the variable (MW_CONFIG_ENV)', () => {
    const env = overridesFromEnv({ MAILWARDEN_POSTFIX_LISTEN: '127.0.0.1:1,nope', MAILWARDEN_DOVECOT_LISTEN: '10032' });
    const ps = problemsOf(yaml('log:', '  level: info'), env);
    assert.deepEqual(ps, [
      {
        code: 'MW_CONFIG_ENV',
        where: 'MAILWARDEN_POSTFIX_LISTEN',
        message:
          '"nope" is not a listen address; write host:port (127.0.0.1:10031, [::1]:10031) or an absolute unix socket path',
      },
      {
        code: 'MW_CONFIG_ENV',
        where: 'MAILWARDEN_DOVECOT_LISTEN',
        message:
          '"10032" is not a listen address; write host:port (127.0.0.1:10031, [::1]:10031) or an absolute unix socket path',
      },
    ]);
  });

  void test('a flag is reported under its own name', () => {
    assert.throws(
      () => loadSettings(undefined, { postfixListen: { value: 'x', from: '--postfix-listen' } }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.problems[0]?.where === '--postfix-listen' &&
        err.problems[0].code === 'MW_CONFIG_ENV',
    );
  });
});

void describe('reading the file', () => {
  void test('a missing file is MW_CONFIG_READ naming the file', () => {
    const path = join(tmp, 'does-not-exist.yaml');
    assert.throws(
      () => loadSettings(path),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.deepEqual(err.problems, [
          { code: 'MW_CONFIG_READ', where: path, message: 'cannot read the config file: no such file' },
        ]);
        assert.equal(err.message, `${path}: cannot read the config file: no such file [MW_CONFIG_READ]`);
        return true;
      },
    );
  });

  void test('a directory is MW_CONFIG_READ too', () => {
    assert.throws(
      () => loadSettings(tmp),
      (err: unknown) =>
        err instanceof ConfigError && err.problems[0]?.code === 'MW_CONFIG_READ' && err.problems[0].where === tmp,
    );
  });

  void test('problems in a file name that file', () => {
    const path = join(tmp, 'typo.yaml');
    writeFileSync(path, yaml('rules:', '  - name: user-messages-per-hour', '    limt: 5'));
    assert.throws(
      () => loadSettings(path),
      (err: unknown) => err instanceof ConfigError && err.problems[0]?.where === `${path}:3:5`,
    );
  });
});

void describe('describeSettings', () => {
  void test('durations are written as text', () => {
    const d = describeSettings(loadSettings(undefined));
    assert.equal(d.config_file, '(none: built-in defaults)');
    assert.deepEqual(d.listen, {
      postfix: ['127.0.0.1:10031'],
      dovecot: ['127.0.0.1:10032'],
      admin: ['127.0.0.1:10033'],
    });
    assert.deepEqual(d.bans, {
      duration: '1h',
      factor: 4,
      max: '30d',
      lookback: '30d',
      ipv6_aggregate: { enabled: true, prefix: 48, threshold: 3 },
    });
    assert.deepEqual(d.suspensions, { duration: '1d', block_login: false });
    assert.deepEqual(d.known_good, { window: '30d' });
    assert.deepEqual(d.shared_address, { users: 2, window: '1w' });
    assert.deepEqual(d.dovecot, {
      api_header: '(none)',
      budget: '500ms',
      max_delay: '15s',
      smtp_max_delay: '5s',
      repeat_window: '1s',
      max_connections: 1024,
      max_connections_per_peer: 512,
      headers_timeout: '5s',
      request_timeout: '10s',
      max_body: 65_536,
    });
    assert.deepEqual(d.alerts, {
      cooldown: '1h',
      queue_max: 1000,
      retries: 5,
      email: { relay: '127.0.0.1:25', from: 'mailwarden@localhost', to: ['postmaster@localhost'] },
      webhook: { url: '(none)', secret: '(none)', timeout: '5s' },
    });
    assert.deepEqual(d.postfix, {
      budget: '100ms',
      idle_timeout: '330s',
      max_line: 16384,
      max_attributes: 256,
      repeat_window: '10s',
      max_connections: 4096,
      max_connections_per_peer: 2048,
    });
    assert.deepEqual(d.store, { max_keys: 2_000_000, snapshot_interval: '1m' });
    const rules = d.rules as Array<Record<string, unknown>>;
    const named = (n: string): Record<string, unknown> | undefined => rules.find((r) => r.name === n);
    assert.equal(named('auth-guess-network-ban')?.min_addresses, 3);
    assert.deepEqual(named('smtp-connections-per-ip'), {
      name: 'smtp-connections-per-ip',
      mode: 'enforce',
      on: ['connect'],
      key: 'ip',
      count: 'events',
      limit: 60,
      window: '1m',
      then: { action: 'tempfail' },
    });
    assert.deepEqual(named('user-messages-per-hour'), {
      name: 'user-messages-per-hour',
      mode: 'enforce',
      on: ['message'],
      when: { authenticated: true },
      key: 'user',
      count: 'messages',
      limit: 100,
      window: '1h',
      then: { action: 'tempfail' },
    });
    assert.deepEqual(named('auth-guess-delay'), {
      name: 'auth-guess-delay',
      mode: 'enforce',
      on: ['auth-result'],
      check_on: ['auth-attempt'],
      when: { success: false, shared: false },
      except_known_good: true,
      key: 'ip',
      count: 'distinct:pwhash',
      limit: 3,
      window: '15m',
      then: { action: 'delay', delay: '3s' },
    });
    assert.deepEqual(named('compromise-cracked')?.uses, 'auth-guess-user-ip');
    assert.deepEqual(named('compromise-burst')?.baseline, { factor: 10, floor: 50, half_life: '1w' });
    const text = JSON.stringify(d);
    assert.ok(text.includes('"1h"') && text.includes('"1d"'));
  });

  void test('secrets are not printed', () => {
    const d = describeSettings(
      load(
        yaml(
          'dovecot:',
          '  api_header: "X-Key: topsecretvalue"',
          'alerts:',
          '  webhook:',
          '    url: https://h.example.org/',
          '    secret: topsecretvalue-123',
        ),
      ),
    );
    const text = JSON.stringify(d);
    assert.equal(text.includes('topsecretvalue'), false);
    assert.equal((d.dovecot as { api_header: string }).api_header, 'x-key: (set)');
    assert.equal((d.alerts as { webhook: { secret: string } }).webhook.secret, '(set)');
  });

  void test('shows overrides, IPv6 listen addresses and rule actions', () => {
    const s = load(
      yaml(
        'rules:',
        '  - name: user-messages-per-day',
        '    then: { action: delay, delay: 2s, message: slow down, ban: network, suspend: 36h }',
      ),
      overridesFromEnv({ MAILWARDEN_POSTFIX_LISTEN: '[::1]:10031,/run/p.sock' }),
    );
    const d = describeSettings(s);
    assert.equal(d.config_file, FILE);
    assert.deepEqual((d.listen as { postfix: string[] }).postfix, ['[::1]:10031', '/run/p.sock']);
    const r = (d.rules as Array<{ name: string; then: unknown }>).find((x) => x.name === 'user-messages-per-day');
    assert.deepEqual(r?.then, { action: 'delay', delay: '2s', message: 'slow down', ban: 'network', suspend: '36h' });
  });
});
