/*
 * What the adapters put on the wire for a refusal: one line, within the
 * protocol's limits (an SMTP reply line is at most 512 octets with its CRLF,
 * RFC 5321 4.5.3.1.5, and Postfix does not cut a longer one), cut at a
 * character boundary, and Japanese passed to Dovecot as it is.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { toReply } from '../../src/adapters/dovecot/translate.js';
import { policyReply, toAction } from '../../src/adapters/postfix/translate.js';
import { MESSAGES } from '../../src/engine/messages.js';
import type { CountKind } from '../../src/engine/policy.js';
import { ALLOW, type Action, type Decision } from '../../src/engine/types.js';

const d = (action: Action, reason: string): Decision => ({ ...ALLOW, action, reason });
const CAPS = { maxDelayMs: 15_000, smtpMaxDelayMs: 5_000 };
const octets = (s: string): number => Buffer.byteLength(s, 'utf8');

// The longest subjects and rule names a reason can name.
const RULE = 'r'.repeat(64);
const SUBJECTS = ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffff:ffff:ffff:ffff::/64', '255.255.255.255'];
const COUNTS: CountKind[] = ['events', 'failures', 'distinct:recipient_domain', 'distinct:pwhash'];

/** What Postfix sends for `action=<code> <enh> <text>` at RCPT: the code, then `<recipient>: Recipient address rejected: `. */
function postfixLine(action: string, recipient: string): string {
  const [code, enhanced, ...text] = action.split(' ');
  return `${code} ${enhanced} <${recipient}>: Recipient address rejected: ${text.join(' ')}\r\n`;
}

void describe('refusals on the wire', () => {
  void test('every English text fits an SMTP reply line, even after the longest recipient address', () => {
    const longest = `${'a'.repeat(64)}@${'d'.repeat(189)}`; // 254 octets: the longest address
    const en = MESSAGES.en;
    const texts = [en.addressGuessing, en.accountGuessingFromAddress, en.accountUnderAttack, en.accountGuessCap];
    for (const subject of SUBJECTS) {
      texts.push(
        en.banned(subject, Date.UTC(2026, 11, 3, 5, 4), RULE),
        en.suspended(`${'u'.repeat(60)}@example.org`, RULE, false),
      );
      for (const count of COUNTS)
        texts.push(en.tooMany({ count, subject, limit: 1_000_000, windowMs: 86_400_000, rule: RULE }, true));
    }
    for (const t of texts) {
      for (const action of ['tempfail', 'reject'] as const) {
        const line = postfixLine(toAction(d(action, t)), longest);
        assert.ok(octets(line) <= 512, `${octets(line)} octets: ${line}`);
        assert.match(line, /^[\x20-\x7e]+\r\n$/, 'ASCII');
      }
      const sasl = `535 5.7.8 Error: authentication failed: ${toReply(d('reject', t), 'smtp', CAPS).msg}\r\n`;
      assert.ok(octets(sasl) <= 512, sasl);
    }
  });

  void test('Postfix: a longer text is cut to 200 octets at a character boundary', () => {
    assert.equal(toAction(d('reject', 'x'.repeat(400))), `554 5.7.1 ${'x'.repeat(200)}`);
    // An administrator's own message is sent as written, only cut whole characters.
    const ja = 'ログインの失敗が多すぎます。'.repeat(10);
    const text = toAction(d('reject', ja)).slice('554 5.7.1 '.length);
    assert.equal(octets(text), 198);
    assert.ok(ja.startsWith(text));
    assert.equal(toAction(d('reject', '\r\n')), '554 5.7.1  ');
    assert.equal(toAction(d('reject', '')), '554 5.7.1 Policy rejection');
  });

  void test('Dovecot: Japanese passes as it is; SMTP AUTH is cut to fit the 535 line, IMAP at 900 octets', () => {
    const ja = MESSAGES.ja.addressGuessing;
    assert.deepEqual(toReply(d('reject', ja), 'imap', CAPS), { status: -1, msg: ja });
    assert.deepEqual(toReply(d('tempfail', `${ja}\r\nX`), 'pop3', CAPS), { status: -1, msg: `${ja} X` });
    const long = 'あ'.repeat(400);
    assert.equal(toReply(d('reject', long), 'imap', CAPS).msg, 'あ'.repeat(300));
    assert.equal(toReply(d('reject', 'x'.repeat(600)), 'smtp', CAPS).msg, 'x'.repeat(470));
    assert.deepEqual(
      toReply({ ...d('delay', ja), delaySeconds: 3 }, 'imap', CAPS),
      { status: 3, msg: '' },
      'a delay says nothing',
    );
  });

  void test('a reply is made once per reason and shared: the same text, the same frozen Dovecot answer', () => {
    const ban = d('reject', 'Access denied: 192.0.2.0/24 is blocked until 2026-12-04T05:00:00.000Z (rule manual)');
    const line = policyReply(ban);
    assert.equal(line, `action=${toAction(ban)}\n\n`);
    assert.equal(policyReply({ ...ban }), line);
    assert.equal(policyReply(d('tempfail', ban.reason)), `action=450 4.7.1 ${ban.reason}\n\n`, 'per action');
    assert.equal(policyReply(ALLOW), 'action=DUNNO\n\n');
    const imap = toReply(ban, 'imap', CAPS);
    assert.equal(toReply({ ...ban }, 'pop3', CAPS), imap, 'one answer for IMAP and POP3');
    assert.ok(Object.isFrozen(imap));
    assert.notEqual(toReply(ban, 'smtp', CAPS), imap, 'SMTP AUTH has its own length');
    assert.equal(
      toReply({ ...d('delay', ''), delaySeconds: 3 }, 'imap', CAPS),
      toReply({ ...d('delay', 'x'), delaySeconds: 3 }, 'pop3', CAPS),
    );
  });
});
