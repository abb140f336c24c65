/*
 * test/config/errors — config errors in plain words: "did you mean" for unknown
 * keys and values, problems in the order of the file, and the validator's wording
 * replaced. Every message is asserted whole, as `check-config` prints it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { byPlace, ConfigError, editDistance, suggest, type ConfigProblem } from '../../src/config/errors.js';
import { keysAt, loadSettingsFromText } from '../../src/config/load.js';
import { configSchema } from '../../src/config/schema.js';

const FILE = 'mailwarden.yaml';
const yaml = (...lines: string[]): string => lines.join('\n') + '\n';

/** The lines check-config prints for a config; fails the test if it loads. */
function errorLines(text: string): string[] {
  try {
    loadSettingsFromText(text, FILE);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.message.split('\n');
  }
  assert.fail('expected the config to be rejected');
}

void describe('did you mean', () => {
  void test('an unknown top-level key names the key it is closest to', () => {
    assert.deepEqual(errorLines(yaml('lsten:', '  postfix: 127.0.0.1:10031')), [
      `${FILE}:1:1: unknown key "lsten" in the config; did you mean "listen"? [MW_CONFIG_UNKNOWN_KEY]`,
    ]);
  });

  void test('unknown keys deeper down are compared with the keys allowed at their place', () => {
    assert.deepEqual(
      errorLines(
        yaml(
          'listen:',
          '  postfx: 127.0.0.1:1',
          'bans:',
          '  ipv6_aggregate:',
          '    treshold: 4',
          'rules:',
          '  - name: x',
          '    limt: 5',
          '    when: { authenticatd: true }',
          '    then: { action: delay, dealy: 3s }',
        ),
      ),
      [
        `${FILE}:2:3: unknown key "postfx" in listen; did you mean "postfix"? [MW_CONFIG_UNKNOWN_KEY]`,
        `${FILE}:5:5: unknown key "treshold" in bans.ipv6_aggregate; did you mean "threshold"? [MW_CONFIG_UNKNOWN_KEY]`,
        `${FILE}:8:5: unknown key "limt" in rules.0; did you mean "limit"? [MW_CONFIG_UNKNOWN_KEY]`,
        `${FILE}:9:13: unknown key "authenticatd" in rules.0.when; did you mean "authenticated"? [MW_CONFIG_UNKNOWN_KEY]`,
        `${FILE}:10:28: unknown key "dealy" in rules.0.then; did you mean "delay"? [MW_CONFIG_UNKNOWN_KEY]`,
      ],
    );
  });

  void test('with nothing close, a short list of keys is named, a long one is left to the docs', () => {
    assert.deepEqual(errorLines(yaml('listen:', '  smtp: 127.0.0.1:1', 'colour: blue')), [
      `${FILE}:2:3: unknown key "smtp" in listen; the keys here are "postfix", "dovecot", "admin" [MW_CONFIG_UNKNOWN_KEY]`,
      `${FILE}:3:1: unknown key "colour" in the config; remove it or check its spelling (docs/CONFIG.md lists every key) [MW_CONFIG_UNKNOWN_KEY]`,
    ]);
  });

  void test('an unknown value names the nearest allowed one, in either form of then', () => {
    assert.deepEqual(
      errorLines(
        yaml(
          'log:',
          '  format: prety',
          'rules:',
          '  - name: a',
          '    then: tmpfail',
          '  - name: b',
          '    key: IP',
          '    then: { action: rejct }',
        ),
      ),
      [
        `${FILE}:2:11: log.format: "prety" is not one of "pretty", "json"; did you mean "pretty"? [MW_CONFIG_INVALID]`,
        `${FILE}:5:11: rules.0.then: "tmpfail" is not one of "allow", "delay", "tempfail", "reject", "hold"; did you mean "tempfail"? [MW_CONFIG_INVALID]`,
        `${FILE}:7:10: rules.1.key: "IP" is not one of "ip", "network", "user", "sender", "sender_domain", "user_ip", "user_network"; did you mean "ip"? [MW_CONFIG_INVALID]`,
        `${FILE}:8:21: rules.1.then.action: "rejct" is not one of "allow", "delay", "tempfail", "reject", "hold"; did you mean "reject"? [MW_CONFIG_INVALID]`,
      ],
    );
  });

  void test('a value far from every allowed one gets the list alone', () => {
    assert.deepEqual(errorLines(yaml('store:', '  backend: valkey')), [
      `${FILE}:2:12: store.backend: "valkey" is not one of "memory", "redis" [MW_CONFIG_INVALID]`,
    ]);
  });
});

void describe('plain words instead of the validator', () => {
  void test('numbers out of range', () => {
    assert.deepEqual(
      errorLines(
        yaml(
          'networks:',
          '  ipv4_prefix: 33',
          'bans:',
          '  factor: 0.5',
          'rules:',
          '  - name: user-messages-per-hour',
          '    limit: 0',
          '  - name: user-messages-per-day',
          '    limit: 2.5',
        ),
      ),
      [
        `${FILE}:2:16: networks.ipv4_prefix: must be at most 32 [MW_CONFIG_INVALID]`,
        `${FILE}:4:11: bans.factor: must be at least 1 [MW_CONFIG_INVALID]`,
        `${FILE}:7:12: rules.0.limit: must be greater than 0 [MW_CONFIG_INVALID]`,
        `${FILE}:9:12: rules.1.limit: must be a whole number, not 2.5 [MW_CONFIG_INVALID]`,
      ],
    );
  });

  void test('the wrong kind of value', () => {
    assert.deepEqual(
      errorLines(
        yaml(
          'bans:',
          '  ipv6_aggregate:',
          '    enabled: yes',
          '    threshold:',
          'rules:',
          '  - name: user-messages-per-hour',
          '    limit: "ten"',
          '    on: connect',
          '  - just-a-name',
        ),
      ),
      [
        `${FILE}:3:14: bans.ipv6_aggregate.enabled: must be true or false, not text [MW_CONFIG_INVALID]`,
        `${FILE}:4:15: bans.ipv6_aggregate.threshold: must be a number, not empty [MW_CONFIG_INVALID]`,
        `${FILE}:7:12: rules.0.limit: must be a number, not text [MW_CONFIG_INVALID]`,
        `${FILE}:8:9: rules.0.on: must be a list, not text [MW_CONFIG_INVALID]`,
        `${FILE}:9:5: rules.1: must be a mapping of keys to values, not text [MW_CONFIG_INVALID]`,
      ],
    );
    assert.deepEqual(errorLines(yaml('- a', '- b')), [
      `${FILE}:1:1: the config: must be a mapping of keys to values, not a list [MW_CONFIG_INVALID]`,
    ]);
  });

  void test('empty and too long text and lists', () => {
    assert.deepEqual(
      errorLines(
        yaml(
          'data_dir: ""',
          'rules:',
          '  - name: user-messages-per-hour',
          '    on: []',
          `    then: { action: reject, message: ${'x'.repeat(201)} }`,
          '    overrides: { "": 3 }',
        ),
      ),
      [
        `${FILE}:1:11: data_dir: must not be empty [MW_CONFIG_INVALID]`,
        `${FILE}:4:9: rules.0.on: must not be an empty list [MW_CONFIG_INVALID]`,
        `${FILE}:5:38: rules.0.then.message: must be at most 200 characters long [MW_CONFIG_INVALID]`,
        `${FILE}:6:18: rules.0.overrides: the key "" must not be empty [MW_CONFIG_INVALID]`,
      ],
    );
  });

  void test("the schema's own messages stay as they are", () => {
    assert.deepEqual(errorLines(yaml('alerts:', '  webhook:', '    secret: short', 'bans:', '  duration: 0')), [
      `${FILE}:3:13: alerts.webhook.secret: use at least 16 characters for the HMAC secret [MW_CONFIG_INVALID]`,
      `${FILE}:5:13: bans.duration: must be longer than 0 [MW_CONFIG_INVALID]`,
    ]);
  });
});

void describe('order', () => {
  void test('problems are in the order of the file, whatever the order of the schema', () => {
    assert.deepEqual(
      errorLines(
        yaml(
          'rules:',
          '  - name: user-messages-per-hour',
          '    limt: 5',
          '    window: 5 minutes',
          '    then: tmpfail',
          'bans:',
          '  factor: 0.5',
          'lsten: 127.0.0.1:1',
        ),
      ),
      [
        `${FILE}:3:5: unknown key "limt" in rules.0; did you mean "limit"? [MW_CONFIG_UNKNOWN_KEY]`,
        `${FILE}:4:13: rules.0.window: not a duration: "5 minutes"; write e.g. 30s, 5m, 1h, 7d, or a number of seconds [MW_CONFIG_INVALID]`,
        `${FILE}:5:11: rules.0.then: "tmpfail" is not one of "allow", "delay", "tempfail", "reject", "hold"; did you mean "tempfail"? [MW_CONFIG_INVALID]`,
        `${FILE}:7:11: bans.factor: must be at least 1 [MW_CONFIG_INVALID]`,
        `${FILE}:8:1: unknown key "lsten" in the config; did you mean "listen"? [MW_CONFIG_UNKNOWN_KEY]`,
      ],
    );
  });

  void test('byPlace: by line then column; problems without a line keep their order, last', () => {
    const p = (where: string): ConfigProblem => ({ code: 'MW_CONFIG_RULE', where, message: '' });
    const sorted = byPlace([p('f:10:1'), p('(built-in rule b)'), p('f:2:9'), p('(built-in rule a)'), p('f:2:3')]);
    assert.deepEqual(
      sorted.map((x) => x.where),
      ['f:2:3', 'f:2:9', 'f:10:1', '(built-in rule b)', '(built-in rule a)'],
    );
  });
});

void describe('suggest', () => {
  void test('edit distance counts a swap of neighbours as one edit', () => {
    assert.equal(editDistance('lsten', 'listen'), 1);
    assert.equal(editDistance('dealy', 'delay'), 1);
    assert.equal(editDistance('', 'abc'), 3);
    assert.equal(editDistance('kitten', 'sitting'), 3);
  });

  void test('one edit for short words, two for longer ones, case ignored, the closest wins', () => {
    assert.equal(suggest('lsten', ['data_dir', 'listen', 'log']), 'listen');
    assert.equal(suggest('LISTEN', ['listen']), 'listen');
    assert.equal(suggest('io', ['ip', 'user']), 'ip');
    assert.equal(suggest('xy', ['ip', 'user']), undefined, 'two edits in a two-letter word is another word');
    assert.equal(suggest('postfx', ['dovecot', 'postfix']), 'postfix');
    assert.equal(suggest('valkey', ['memory', 'redis']), undefined);
    assert.equal(suggest('distinct:ips', ['distinct:ip', 'distinct:pwhash']), 'distinct:ip');
  });

  void test('keysAt finds the keys of a mapping through lists, optional values and unions', () => {
    assert.deepEqual(keysAt(configSchema, ['listen']), ['postfix', 'dovecot', 'admin']);
    assert.deepEqual(keysAt(configSchema, ['log']), ['level', 'format']);
    assert.deepEqual(keysAt(configSchema, ['rules', 0, 'then']), [
      'action',
      'delay',
      'message',
      'ban',
      'suspend',
      'notify',
    ]);
    assert.deepEqual(keysAt(configSchema, ['nope']), []);
  });
});
