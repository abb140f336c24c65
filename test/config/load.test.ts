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

function rule(s: Settings, name: string): Rule {
  const r = s.policy.rules.find((x) => x.name === name);
  assert.ok(r, `rule ${name} not found in ${s.policy.rules.map((x) => x.name).join(', ')}`);
  return r;
}

const DEFAULT_RULE_NAMES = [
  'smtp-connections-per-ip',
  'inbound-recipients-per-ip',
  'user-messages-per-hour',
  'user-messages-per-day',
  'user-recipients-per-hour',
  'user-recipients-per-day',
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
    });
    assert.deepEqual(s.store, { maxKeys: 2_000_000, snapshotMs: 60_000 });
    const p = s.policy;
    assert.equal(p.ipv4Prefix, 24);
    assert.equal(p.ipv6Prefix, 64);
    assert.deepEqual(p.escalation, { baseMs: HOUR, factor: 4, maxMs: 30 * DAY, lookbackMs: 7 * DAY });
    assert.deepEqual(p.ipv6Aggregate, { enabled: true, prefix: 48, threshold: 3 });
    assert.equal(p.suspensionMs, DAY);
    assert.equal(p.allowUsers.size, 0);
  });

  void test('the allowlist holds exactly 127.0.0.1 and ::1', () => {
    const nets = loadSettings(undefined).policy.allowNetworks;
    assert.equal(nets.has('127.0.0.1'), true);
    assert.equal(nets.has('::1'), true);
    assert.equal(nets.has('127.0.0.2'), false);
    assert.equal(nets.has('192.0.2.1'), false);
  });

  void test('the six built-in rules, in order, with their numbers', () => {
    const s = loadSettings(undefined);
    assert.deepEqual(
      s.policy.rules.map((r) => r.name),
      DEFAULT_RULE_NAMES,
    );
    const summary = s.policy.rules.map((r) => [
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
      ['user-messages-per-hour', 'message', 'user', 'messages', 100, HOUR, true, 'tempfail'],
      ['user-messages-per-day', 'message', 'user', 'messages', 500, DAY, true, 'tempfail'],
      ['user-recipients-per-hour', 'message', 'user', 'recipients', 300, HOUR, true, 'tempfail'],
      ['user-recipients-per-day', 'message', 'user', 'recipients', 1000, DAY, true, 'tempfail'],
    ]);
    for (const r of s.policy.rules) {
      assert.equal(r.mode, 'enforce');
      assert.ok(r.description.length > 0, `${r.name} has a description`);
      assert.equal(r.then.ban, undefined);
      assert.equal(r.then.suspendMs, undefined);
      assert.equal(r.then.delaySeconds, 0);
    }
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
    'postfix:',
    '  budget: 250ms',
    '  idle_timeout: 5m',
    '  max_line: 4096',
    '  max_attributes: 64',
    '  repeat_window: 0',
    'store:',
    '  max_keys: 100000',
    '  snapshot_interval: 30',
    'use_default_rules: true',
    'rules:',
    '  - name: auth-failures-per-ip',
    '    description: Failed logins from one address.',
    '    mode: observe',
    '    on: [auth-result]',
    '    when:',
    '      protocol: [imap, pop3]',
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
    '    then:',
    '      action: delay',
    '      delay: 2.5s',
    '      suspend: 1d',
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
    assert.deepEqual(s.postfix, {
      budgetMs: 250,
      idleTimeoutMs: 300_000,
      maxLine: 4096,
      maxAttributes: 64,
      repeatWindowMs: 0,
    });
    assert.deepEqual(s.store, { maxKeys: 100_000, snapshotMs: 30_000 });

    assert.deepEqual(
      p.rules.map((r) => r.name),
      [...DEFAULT_RULE_NAMES, 'auth-failures-per-ip', 'submission-slowdown'],
    );
    assert.deepEqual(rule(s, 'auth-failures-per-ip'), {
      name: 'auth-failures-per-ip',
      description: 'Failed logins from one address.',
      mode: 'observe',
      on: ['auth-result'],
      key: 'ip',
      count: 'failures',
      limit: 10,
      windowMs: 600_000,
      when: { protocol: ['imap', 'pop3'] },
      then: {
        action: 'reject',
        delaySeconds: 0,
        message: 'Too many failed logins',
        ban: 'network',
        suspendMs: undefined,
      },
    });
    const slow = rule(s, 'submission-slowdown');
    assert.equal(slow.mode, 'enforce');
    assert.equal(slow.description, '');
    assert.equal(slow.count, 'distinct:recipient_domain');
    assert.deepEqual(slow.when, { authenticated: true, context: ['submission'] });
    // Delays are whole seconds for Postfix; a fraction rounds up.
    assert.deepEqual(slow.then, { action: 'delay', delaySeconds: 3, message: '', ban: undefined, suspendMs: DAY });
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
    assert.deepEqual(rule(s, 'per-sender').then, {
      action: 'tempfail',
      delaySeconds: 0,
      message: '',
      ban: undefined,
      suspendMs: undefined,
    });
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
    assert.match(p.message, /unknown key "lsten" in the config; remove it or check its spelling/);
  });

  void test('a typo inside a rule (limt) is reported at the key', () => {
    const p = oneProblem(
      yaml('rules:', '  - name: user-messages-per-hour', '    window: 1h', '    limt: 5'),
      'MW_CONFIG_UNKNOWN_KEY',
      `${FILE}:4:5`,
    );
    assert.match(p.message, /unknown key "limt" in rules\.0/);
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
    assert.equal(p.message, 'rules.0.limit: must be a number');
  });

  void test('a bad enum value (then: tmpfail) lists the choices', () => {
    const p = oneProblem(
      yaml('rules:', '  - name: user-messages-per-hour', '    then: tmpfail'),
      'MW_CONFIG_INVALID',
      `${FILE}:3:11`,
    );
    assert.equal(p.message, 'rules.0.then: must be one of "allow", "delay", "tempfail", "reject", "hold"');
  });

  void test('a bad action inside the object form of then is reported at then.action', () => {
    const p = oneProblem(
      yaml('rules:', '  - name: user-messages-per-hour', '    then:', '      action: tmpfail', '      delay: 3s'),
      'MW_CONFIG_INVALID',
      `${FILE}:4:15`,
    );
    assert.equal(p.message, 'rules.0.then.action: must be one of "allow", "delay", "tempfail", "reject", "hold"');
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
      /^rules\.0\.on\.1: must be one of "connect", "helo", "mail", "recipient", "data", "message", "vrfy", "etrn", "auth-attempt", "auth-result"$/,
    );
    assert.match(
      ps[1]?.message ?? '',
      /^rules\.0\.key: must be one of "ip", "network", "user", "sender", "sender_domain"$/,
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
      // In schema order within a rule: `on` comes before `limit`.
      [`${FILE}:2:16`, `${FILE}:4:11`, `${FILE}:5:12`, `${FILE}:8:9`, `${FILE}:7:12`],
    );
    assert.ok(ps.every((p) => p.code === 'MW_CONFIG_INVALID'));
    assert.match(ps[1]?.message ?? '', /rule names are 1-64 characters of a-z, 0-9, _ \. -/);
  });

  void test('a rule without a name, a rule that is not a mapping, a config that is not a mapping', () => {
    const p = oneProblem(yaml('rules:', '  - limit: 5'), 'MW_CONFIG_INVALID', `${FILE}:2:5`);
    assert.match(p.message, /^rules\.0\.name: /);
    assert.equal(
      oneProblem(yaml('rules:', '  - just-a-name'), 'MW_CONFIG_INVALID', `${FILE}:2:5`).message,
      'rules.0: must be an object',
    );
    assert.equal(
      oneProblem(yaml('- a', '- b'), 'MW_CONFIG_INVALID', `${FILE}:1:1`).message,
      'the config: must be an object',
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
    // Built-in rules are checked first (in their order), then the new rules of the file.
    assert.deepEqual(
      ps.map((p) => [p.code, p.where]),
      [
        ['MW_CONFIG_RULE', `${FILE}:7:11`],
        ['MW_CONFIG_RULE', `${FILE}:2:5`],
        ['MW_CONFIG_RULE', `${FILE}:4:5`],
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

  void test('then.suspend with key ip is an error at then', () => {
    const p = oneProblem(
      yaml('rules:', '  - name: smtp-connections-per-ip', '    then:', '      action: reject', '      suspend: 1d'),
      'MW_CONFIG_RULE',
      `${FILE}:4:7`,
    );
    assert.equal(
      p.message,
      'rule smtp-connections-per-ip: then.suspend needs key: user (only a user can be suspended)',
    );
  });

  void test('then.suspend with key user is accepted', () => {
    const s = load(yaml('rules:', '  - name: user-messages-per-day', '    then: { action: reject, suspend: 2d }'));
    assert.equal(rule(s, 'user-messages-per-day').then.suspendMs, 2 * DAY);
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
      lookback: '1w',
      ipv6_aggregate: { enabled: true, prefix: 48, threshold: 3 },
    });
    assert.deepEqual(d.suspensions, { duration: '1d' });
    assert.deepEqual(d.postfix, {
      budget: '100ms',
      idle_timeout: '330s',
      max_line: 16384,
      max_attributes: 256,
      repeat_window: '10s',
    });
    assert.deepEqual(d.store, { max_keys: 2_000_000, snapshot_interval: '1m' });
    const rules = d.rules as Array<Record<string, unknown>>;
    assert.deepEqual(rules[0], {
      name: 'smtp-connections-per-ip',
      mode: 'enforce',
      on: ['connect'],
      key: 'ip',
      count: 'events',
      limit: 60,
      window: '1m',
      then: { action: 'tempfail' },
    });
    assert.deepEqual(rules[2], {
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
    const text = JSON.stringify(d);
    assert.ok(text.includes('"1h"') && text.includes('"1d"'));
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
