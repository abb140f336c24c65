/*
 * The `locale` key (en | ja), MAILWARDEN_LOCALE, and a rule message given per
 * language (`message: {en, ja}`): accepted values, where they end up, and
 * their errors at file:line:col like every other key.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import { describeSettings, type Settings } from '../../src/config/compile.js';
import { ConfigError } from '../../src/config/errors.js';
import { loadSettings, loadSettingsFromText, type Overrides } from '../../src/config/load.js';

const FILE = 'mailwarden.yaml';
const yaml = (...lines: string[]): string => lines.join('\n') + '\n';
// The process environment must not leak in: MAILWARDEN_LOCALE is passed explicitly, or set on purpose below.
const none: Overrides = { locale: undefined };
const load = (text: string, o: Overrides = {}): Settings => loadSettingsFromText(text, FILE, { ...none, ...o });
const problems = (text: string, o: Overrides = {}): string[] => {
  try {
    load(text, o);
  } catch (err) {
    if (err instanceof ConfigError) return err.message.split('\n');
    throw err;
  }
  return [];
};

/** A rule whose `then.message` is the given YAML value (on line 10). */
const withMessage = (message: string): string =>
  yaml(
    'rules:',
    '  - name: r',
    '    on: [connect]',
    '    key: ip',
    '    count: events',
    '    limit: 1',
    '    window: 1m',
    '    then:',
    '      action: reject',
    `      message: ${message}`,
  );

void describe('config: locale', () => {
  const saved = process.env.MAILWARDEN_LOCALE;
  afterEach(() => {
    if (saved === undefined) delete process.env.MAILWARDEN_LOCALE;
    else process.env.MAILWARDEN_LOCALE = saved;
  });

  void test('en by default; ja when set; on Settings, in the policy and in check-config', () => {
    assert.equal(load('').locale, 'en');
    const s = load('locale: ja\n');
    assert.equal(s.locale, 'ja');
    assert.equal(s.policy.locale, 'ja');
    assert.equal(describeSettings(s).locale, 'ja');
    assert.equal(load('locale: en\n').policy.locale, 'en');
  });

  void test('another value is refused at its place, with the nearest one', () => {
    assert.deepEqual(problems('locale: jp\n'), [
      `${FILE}:1:9: locale: "jp" is not one of "en", "ja"; did you mean "ja"? [MW_CONFIG_INVALID]`,
    ]);
    assert.deepEqual(problems('log: { level: info }\nlocale: ja_JP\n'), [
      `${FILE}:2:9: locale: "ja_JP" is not one of "en", "ja" [MW_CONFIG_INVALID]`,
    ]);
    assert.deepEqual(problems('lcoale: ja\n'), [
      `${FILE}:1:1: unknown key "lcoale" in the config; did you mean "locale"? [MW_CONFIG_UNKNOWN_KEY]`,
    ]);
  });

  void test('MAILWARDEN_LOCALE overrides the file; a bad value is named by the variable', () => {
    const env = { value: 'ja', from: 'MAILWARDEN_LOCALE' };
    assert.equal(load('locale: en\n', { locale: env }).locale, 'ja');
    assert.deepEqual(problems('', { locale: { value: 'jp', from: 'MAILWARDEN_LOCALE' } }), [
      'MAILWARDEN_LOCALE: "jp" is not a locale; write en or ja (did you mean "ja"?) [MW_CONFIG_ENV]',
    ]);
    // Read from the process environment by every entry point, like MAILWARDEN_NODE.
    process.env.MAILWARDEN_LOCALE = 'ja';
    assert.equal(loadSettings(undefined).policy.locale, 'ja');
    process.env.MAILWARDEN_LOCALE = '';
    assert.equal(loadSettings(undefined).policy.locale, 'en', 'an empty variable counts as unset');
  });

  void test('a rule message per language, or one for every language', () => {
    const pair = load(withMessage('{en: "Closed for you", ja: "ご利用いただけません。"}'));
    const r = pair.policy.rules.find((x) => x.name === 'r');
    assert.deepEqual(r?.then.message, { en: 'Closed for you', ja: 'ご利用いただけません。' });
    assert.deepEqual((describeSettings(pair).rules as Array<{ name: string; then: unknown }>).at(-1)?.then, {
      action: 'reject',
      message: { en: 'Closed for you', ja: 'ご利用いただけません。' },
    });
    assert.equal(
      load(withMessage('お断りします。')).policy.rules.find((x) => x.name === 'r')?.then.message,
      'お断りします。',
    );
  });

  void test("a message pair's errors: the English one must be ASCII, both present, no other language", () => {
    assert.deepEqual(problems(withMessage('{en: "Café closed", ja: "閉店です。"}')), [
      `${FILE}:10:21: rules.0.then.message.en: the en text is also every SMTP reply, which must be plain ASCII: write it without accents or other non-ASCII characters [MW_CONFIG_INVALID]`,
    ]);
    assert.deepEqual(problems(withMessage('{en: "Closed"}')), [
      `${FILE}:10:16: rules.0.then.message.ja: must be text, not empty [MW_CONFIG_INVALID]`,
    ]);
    assert.deepEqual(problems(withMessage('{en: "Closed", ja: "閉店です。", jp: "x"}')), [
      `${FILE}:10:44: unknown key "jp" in rules.0.then.message; did you mean "ja"? [MW_CONFIG_UNKNOWN_KEY]`,
    ]);
    assert.deepEqual(problems(withMessage(`{en: "${'x'.repeat(201)}", ja: "閉店です。"}`)), [
      `${FILE}:10:21: rules.0.then.message.en: must be at most 200 characters long [MW_CONFIG_INVALID]`,
    ]);
  });
});
