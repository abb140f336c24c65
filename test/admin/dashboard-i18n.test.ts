/*
 * The dashboard's words (src/admin/static/i18n.js): English and Japanese have
 * the same keys and the same {placeholders}, every key app.js names exists,
 * no Japanese text is left in English, and dates and spans take each
 * language's form. The pages themselves are checked in Chromium by
 * dashboard.test.ts.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { REPO } from '../helpers/postfix.js';

const STATIC = join(REPO, 'src', 'admin', 'static');

interface I18n {
  STRINGS: Record<'en' | 'ja', Record<string, string>>;
  setLocale(lang: string): void;
  t(key: string, vars?: Record<string, unknown>): string;
  fmtTime(ms: number): string;
  fmtRelative(ms: number, now?: number): string;
}

// A plain browser module, untyped: imported by its URL.
const i18n = (await import(pathToFileURL(join(STATIC, 'i18n.js')).href)) as I18n;
const { en, ja } = i18n.STRINGS;

const placeholders = (text: string): string[] => [...text.matchAll(/\{(\w+)\}/g)].map((m) => m[1] as string).sort();

test('English and Japanese have the same keys, each with the same placeholders', () => {
  assert.deepEqual(Object.keys(ja).sort(), Object.keys(en).sort());
  for (const [key, text] of Object.entries(en)) assert.deepEqual(placeholders(ja[key] ?? ''), placeholders(text), key);
});

test('every key app.js names is in the tables', () => {
  const app = readFileSync(join(STATIC, 'app.js'), 'utf8');
  const named = [...app.matchAll(/\btx?\('([\w.]+)'/g)].map((m) => m[1] as string);
  assert.ok(named.length > 150, `keys found in app.js: ${named.length}`);
  const missing = [...new Set(named)].filter((k) => !(k in en));
  assert.deepEqual(missing, []);
});

test('no Japanese text is left in English', () => {
  // Names that stay as they are in Japanese UIs: BAN (as in fail2ban), IP, and the date separator.
  const same = new Set(['tab.bans', 'badge.ban', 'badge.ip', 'date.sep']);
  const untranslated = Object.entries(ja).filter(([key, text]) => !same.has(key) && !/[^\p{ASCII}]/u.test(text));
  assert.deepEqual(untranslated, []);
});

test('dates as 2026-12-03 14:05:09 and 2026/12/03 14:05:09; spans in each language', () => {
  const at = new Date(2026, 11, 3, 14, 5, 9).getTime();
  i18n.setLocale('ja');
  assert.equal(i18n.fmtTime(at), '2026/12/03 14:05:09');
  assert.equal(i18n.fmtRelative(at + 7_200_000, at), '2時間00分後');
  assert.equal(i18n.fmtRelative(at - 185_000, at), '3分05秒前');
  assert.equal(i18n.fmtRelative(at + 3 * 86_400_000, at), '3日0時間後');
  assert.equal(i18n.t('bans.unbanned', { subject: '192.0.2.7' }), '192.0.2.7 のBANを解除しました。');
  i18n.setLocale('en');
  assert.equal(i18n.fmtTime(at), '2026-12-03 14:05:09');
  assert.equal(i18n.fmtRelative(at + 7_200_000, at), 'in 2h 00m');
  assert.equal(i18n.fmtRelative(at - 45_000, at), '45s ago');
  i18n.setLocale('fr');
  assert.equal(i18n.t('tab.bans'), 'Bans', 'an unknown language is English');
});
