/*
 * The message tables (engine/messages.ts): both languages complete, every text
 * one clean line, English plain ASCII (it is every SMTP reply's), Japanese as
 * written, ban ends in the server's local time, and replyLine's cuts.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import {
  builtInMessage,
  formatDuration,
  LOCALES,
  MESSAGES,
  replyLine,
  replyLocale,
  textIn,
  type Catalogue,
  type Overrun,
} from '../../src/engine/messages.js';
import type { CountKind } from '../../src/engine/policy.js';
import { DAY, HOUR, MINUTE, SECOND } from '../helpers/policy.js';

const COUNTS: CountKind[] = [
  'events',
  'recipients',
  'messages',
  'bytes',
  'failures',
  'distinct:pwhash',
  'distinct:ip',
  'distinct:network',
  'distinct:user',
  'distinct:recipient_domain',
];
const STATIC = ['addressGuessing', 'accountGuessingFromAddress', 'accountUnderAttack', 'accountGuessCap'] as const;
const UNTIL = Date.UTC(2026, 11, 3, 5, 4, 37);

/** Every text a catalogue can produce, over every count, window size, action and suspension kind. */
function everyText(c: Catalogue, subject = '192.0.2.10'): string[] {
  const out: string[] = STATIC.map((k) => c[k]);
  for (const count of COUNTS) {
    for (const windowMs of [250, SECOND, 15 * MINUTE, HOUR, DAY, 7 * DAY]) {
      const o: Overrun = { count, subject, limit: 6, windowMs, rule: 'auth-guess-refuse' };
      out.push(c.tooMany(o, true), c.tooMany(o, false), c.unusualRate(o), c.unusualActivity(o));
    }
  }
  out.push(c.banned(subject, UNTIL, 'auth-guess-ban'), c.suspended('bob@example.org', 'compromise-burst', true));
  out.push(c.suspended('bob@example.org', 'compromise-burst', false));
  return out;
}

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f\u2028\u2029]/;

void describe('message tables', () => {
  const savedTz = process.env.TZ;
  after(() => {
    if (savedTz === undefined) delete process.env.TZ;
    else process.env.TZ = savedTz;
  });

  void test('both languages have every message', () => {
    assert.deepEqual(LOCALES, ['en', 'ja']);
    const keys = Object.keys(MESSAGES.en).sort();
    assert.deepEqual(Object.keys(MESSAGES.ja).sort(), keys);
    for (const l of LOCALES) for (const k of keys) assert.ok(MESSAGES[l][k as keyof Catalogue], `${l}.${k}`);
    for (const k of STATIC) assert.deepEqual(builtInMessage(k), { en: MESSAGES.en[k], ja: MESSAGES.ja[k] });
  });

  void test('every text is one line without control characters, ending as a sentence ends', () => {
    for (const l of LOCALES) {
      for (const t of everyText(MESSAGES[l])) {
        assert.doesNotMatch(t, CONTROL, `${l}: ${JSON.stringify(t)}`);
        assert.equal(t, t.trim(), `${l}: no leading or trailing space: ${JSON.stringify(t)}`);
        if (l === 'ja') assert.match(t, /。$/, `ja ends with 。: ${t}`);
      }
    }
  });

  void test('English is printable ASCII (it is every SMTP reply, whatever the locale)', () => {
    for (const t of everyText(MESSAGES.en)) assert.match(t, /^[\x20-\x7e]+$/, t);
  });

  void test('the English texts are the ones mailwarden always had', () => {
    const o: Overrun = { count: 'events', subject: '192.0.2.10', limit: 3, windowMs: MINUTE, rule: 'conn' };
    assert.equal(
      MESSAGES.en.tooMany(o, true),
      'Too many requests from 192.0.2.10 (limit 3 per 1m, rule conn); try again later',
    );
    assert.equal(MESSAGES.en.tooMany(o, false), 'Too many requests from 192.0.2.10 (limit 3 per 1m, rule conn)');
    assert.equal(
      MESSAGES.en.banned('127.0.1.1', UNTIL, 'auth-guess-ban'),
      'Access denied: 127.0.1.1 is blocked until 2026-12-03T05:04:37.000Z (rule auth-guess-ban)',
    );
    assert.equal(
      MESSAGES.en.suspended('bob@example.org', 'compromise-burst', false),
      'Account bob@example.org is suspended from sending (rule compromise-burst); contact your mail administrator',
    );
    assert.equal(MESSAGES.en.addressGuessing, 'Too many failed logins from your address; try again later');
  });

  void test('Japanese: polite, with the subject, limit and rule, and a counter word that fits what is counted', () => {
    const ja = MESSAGES.ja;
    const o = (count: CountKind, limit: number, windowMs: number): Overrun => ({
      count,
      subject: '192.0.2.10',
      limit,
      windowMs,
      rule: 'fails',
    });
    assert.equal(
      ja.tooMany(o('failures', 3, 10 * MINUTE), true),
      'ログインの失敗が多すぎます（対象：192.0.2.10、上限：10分あたり3回、ルール：fails）。しばらくしてから再度お試しください。',
    );
    assert.equal(
      ja.tooMany(o('distinct:pwhash', 6, HOUR), false),
      '異なるパスワードでの試行が多すぎます（対象：192.0.2.10、上限：1時間あたり6種類、ルール：fails）。',
    );
    assert.match(ja.tooMany(o('messages', 500, DAY), true), /上限：1日あたり500通/);
    assert.match(ja.tooMany(o('bytes', 1000, 2 * 7 * DAY), true), /上限：2週間あたり1000バイト/);
    assert.equal(
      ja.unusualActivity({ ...o('distinct:network', 3, HOUR), subject: 'dave@example.org', rule: 'compromise-spread' }),
      '通常と異なる利用を検知しました：異なるネットワークからの接続が1時間あたり3件を超えています（対象：dave@example.org、ルール：compromise-spread）。',
    );
    assert.equal(
      ja.suspended('bob@example.org', 'compromise-burst', true),
      'アカウント「bob@example.org」は利用停止中です（ルール：compromise-burst）。メール管理者にお問い合わせください。',
    );
    assert.equal(
      ja.addressGuessing,
      'このIPアドレスからのログインの失敗が多すぎます。しばらくしてから再度お試しください。',
    );
  });

  void test("a ban's end in Japanese is the server's local time, to the minute, never earlier than the end", () => {
    process.env.TZ = 'Asia/Tokyo';
    assert.equal(
      MESSAGES.ja.banned('127.0.1.1', UNTIL, 'auth-guess-ban'),
      '接続元「127.0.1.1」からのアクセスは2026年12月3日 14:05 JSTまで制限されています（ルール：auth-guess-ban）。',
    );
    // An end on the minute stays on it; a new TZ is taken at once.
    process.env.TZ = 'UTC';
    assert.match(MESSAGES.ja.banned('10.0.0.0/8', Date.UTC(2026, 0, 2, 3, 4), 'manual'), /2026年1月2日 03:04 UTCまで/);
    // A time Date cannot print does not throw.
    assert.match(MESSAGES.ja.banned('10.0.0.1', 9e15, 'manual'), /an unreadable time/);
  });

  void test('durations in English keep their short form', () => {
    assert.deepEqual([0, 250, 1500, SECOND, 90 * SECOND, 15 * MINUTE, HOUR, DAY, 14 * DAY].map(formatDuration), [
      '0s',
      '250ms',
      '1500ms',
      '1s',
      '90s',
      '15m',
      '1h',
      '1d',
      '2w',
    ]);
  });

  void test('IMAP and POP3 replies speak the locale; SMTP and anything not measured stay English', () => {
    assert.equal(replyLocale('ja', 'imap'), 'ja');
    assert.equal(replyLocale('ja', 'pop3'), 'ja');
    for (const p of ['smtp', 'submission', 'sieve', 'lmtp', 'unknown']) assert.equal(replyLocale('ja', p), 'en', p);
    assert.equal(replyLocale('en', 'imap'), 'en');
  });

  void test("a rule's own message: one text for every locale, or one per locale", () => {
    assert.equal(textIn('Go away', 'ja'), 'Go away');
    assert.equal(textIn({ en: 'Go away', ja: 'お断りします。' }, 'ja'), 'お断りします。');
    assert.equal(textIn({ en: 'Go away', ja: 'お断りします。' }, 'en'), 'Go away');
  });
});

void describe('replyLine', () => {
  void test('control characters become one space; short text is kept', () => {
    assert.equal(replyLine('no\r\nINJECT=1', 200), 'no INJECT=1');
    assert.equal(replyLine('a\u0085b\u2028c\x7fd', 200), 'a b c d');
    assert.equal(replyLine('ログイン', 12), 'ログイン');
  });

  void test('cut to the byte budget of UTF-8, never inside a character', () => {
    assert.equal(replyLine('x'.repeat(300), 200), 'x'.repeat(200));
    // 3 bytes a character: 11 bytes hold 3 of them.
    assert.equal(replyLine('ログインの失敗', 11), 'ログイ');
    // A character outside the BMP (4 bytes, two UTF-16 units) is kept whole or left out.
    assert.equal(replyLine('ab😀cd', 5), 'ab');
    assert.equal(replyLine('ab😀cd', 6), 'ab😀');
    for (let max = 0; max < 40; max++) {
      const cut = replyLine('アクセスは2026年12月3日 14:05 JSTまで😀制限', max);
      assert.ok(Buffer.byteLength(cut) <= max, `${max}: ${cut}`);
      assert.equal(Buffer.from(cut).toString('utf8'), cut, 'valid UTF-8, no lone surrogate');
    }
  });
});
