/*
 * `locale: ja` through the whole decision path (plan → MemoryStore → decide →
 * commit): what an IMAP or POP3 client is told is Japanese, what an SMTP client
 * is told stays English, and the administrator's records (hits, audit rows,
 * bans, suspensions) stay English in every case.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { loadSettings } from '../../src/config/load.js';
import { banReason, decide, suspensionReason } from '../../src/engine/decide.js';
import { MESSAGES } from '../../src/engine/messages.js';
import { plan } from '../../src/engine/plan.js';
import type { MailEvent } from '../../src/engine/types.js';
import { Harness, HOUR, makeEvent, policyFrom, rulesPolicy, T0 } from '../helpers/policy.js';

const LOGIN: Partial<MailEvent> = { kind: 'auth-attempt', protocol: 'imap', user: 'alice@example.org', pwhash: 'a1' };
const FAILED = (pwhash: string, protocol = 'imap'): Partial<MailEvent> => ({
  ...LOGIN,
  kind: 'auth-result',
  protocol,
  pwhash,
  success: false,
  refused: false,
});

void describe('locale: ja in decisions', () => {
  const savedTz = process.env.TZ;
  before(() => {
    process.env.TZ = 'Asia/Tokyo';
  });
  after(() => {
    if (savedTz === undefined) delete process.env.TZ;
    else process.env.TZ = savedTz;
  });

  void test('the default is English, and the built-in rules carry both languages', () => {
    const s = loadSettings(undefined);
    assert.equal(s.locale, 'en');
    assert.equal(s.policy.locale, 'en');
    const refuse = s.policy.rules.find((r) => r.name === 'auth-guess-refuse');
    assert.deepEqual(refuse?.then.message, { en: MESSAGES.en.addressGuessing, ja: MESSAGES.ja.addressGuessing });
  });

  void test('a built-in refusal: Japanese over IMAP and POP3, English over SMTP AUTH; hits stay English', () => {
    const h = new Harness(policyFrom('locale: ja\nallowlist: { networks: [] }\n'));
    for (const pw of ['01', '02', '03', '04', '05', '06']) h.run(FAILED(pw));
    for (const [protocol, reason] of [
      ['imap', MESSAGES.ja.addressGuessing],
      ['pop3', MESSAGES.ja.addressGuessing],
      ['smtp', MESSAGES.en.addressGuessing],
    ] as const) {
      const d = h.run({ ...LOGIN, protocol, pwhash: 'ff' }).decision;
      assert.equal(d.action, 'reject', protocol);
      assert.equal(d.rule, 'auth-guess-refuse');
      assert.equal(d.reason, reason, protocol);
      assert.ok(
        d.hits.every((x) => /^[\x20-\x7e]+$/.test(x.reason)),
        `${protocol}: ${d.hits.map((x) => x.reason).join(' | ')}`,
      );
    }
  });

  void test('a generated reason in Japanese; the ban it makes, its audit row and its log text in English', async () => {
    const h = new Harness(
      rulesPolicy(
        '  - {name: fails, on: [auth-result], check_on: [auth-attempt], key: ip, count: failures, limit: 3, window: 10m, then: {action: reject, ban: ip}}',
        'locale: ja',
      ),
    );
    for (const pw of ['01', '02', '03']) await h.handle(FAILED(pw));
    const fourth = await h.handle(FAILED('04'));
    assert.equal(
      fourth.decision.reason,
      'ログインの失敗が多すぎます（対象：192.0.2.10、上限：10分あたり3回、ルール：fails）。',
    );
    const english = 'Too many failed logins from 192.0.2.10 (limit 3 per 10m, rule fails)';
    assert.equal(fourth.decision.hits[0]?.reason, english);
    assert.equal(fourth.committed.bans[0]?.reason, english);
    const audit = await h.store.auditFor(['192.0.2.10'], 50);
    assert.ok(
      audit.length > 0 && audit.every((a) => /^[\x20-\x7e]+$/.test(a.reason)),
      audit.map((a) => a.reason).join('\n'),
    );
    // The ban itself, told to the next login in Japanese, to an SMTP client in English.
    const ban = fourth.committed.bans[0];
    assert.ok(ban);
    const imap = h.run(LOGIN).decision;
    assert.equal(imap.rule, 'ban');
    assert.equal(imap.reason, banReason(ban, 'ja'));
    assert.match(
      imap.reason,
      /^接続元「192\.0\.2\.10」からのアクセスは2025年1月1日 10:00 JSTまで制限されています（ルール：fails）。$/,
    );
    assert.equal(h.run({ kind: 'connect' }).decision.reason, banReason(ban));
  });

  void test('a suspension blocks the login in Japanese over IMAP, sending in English over SMTP', () => {
    const policy = rulesPolicy(
      '  - {name: conn, on: [connect], key: ip, count: events, limit: 100, window: 1m}',
      'locale: ja\nsuspensions: { block_login: true }',
    );
    const susp = {
      user: 'alice@example.org',
      since: T0,
      until: T0 + HOUR,
      rule: 'compromise-burst',
      reason: 'x',
      actor: 'mailwarden',
    };
    const at = (over: Partial<MailEvent>) => {
      const e = makeEvent(over);
      return decide(e, policy, plan(e, policy), { suspension: susp, counters: [] });
    };
    assert.equal(at(LOGIN).reason, suspensionReason(susp, true, 'ja'));
    assert.equal(
      at(LOGIN).reason,
      'アカウント「alice@example.org」は利用停止中です（ルール：compromise-burst）。メール管理者にお問い合わせください。',
    );
    assert.equal(at({ kind: 'mail', user: 'alice@example.org' }).reason, suspensionReason(susp));
  });

  void test("the administrator's message: a plain string as written everywhere, a pair by language", () => {
    const rules = (message: string) =>
      rulesPolicy(
        `  - {name: r, on: [auth-attempt], key: ip, count: events, limit: 1, window: 1m, then: {action: reject, message: ${message}}}`,
        'locale: ja',
      );
    const second = (message: string, protocol: string) => {
      const h = new Harness(rules(message));
      h.run({ ...LOGIN, protocol });
      return h.run({ ...LOGIN, protocol }).decision.reason;
    };
    assert.equal(second('"Go away"', 'imap'), 'Go away');
    assert.equal(second('"お断りします。"', 'smtp'), 'お断りします。');
    const pair = '{en: "Go away", ja: "ご利用いただけません。"}';
    assert.equal(second(pair, 'imap'), 'ご利用いただけません。');
    assert.equal(second(pair, 'smtp'), 'Go away');
  });
});
