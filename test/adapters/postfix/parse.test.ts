import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FramingError, PolicyParser } from '../../../src/adapters/postfix/parse.js';
import { toAction, toEvent } from '../../../src/adapters/postfix/translate.js';
import { ALLOW } from '../../../src/engine/types.js';
import { capturedRequests } from '../../helpers/postfix.js';

const limits = { maxLine: 16384, maxAttributes: 256 };

test('a request split at every byte boundary parses to the same attributes', () => {
  const r = capturedRequests()[0];
  assert.ok(r);
  for (const size of [1, 2, 7, 64, 599, 100_000]) {
    const p = new PolicyParser(limits);
    const items = [];
    for (let i = 0; i < r.text.length; i += size) items.push(...p.push(r.text.slice(i, i + size)));
    assert.equal(items.length, 1, `chunk size ${size}`);
    const got = items[0]?.attrs ?? {};
    // every attribute mailwarden reads is there, exactly as sent; the rest are not copied
    for (const [k, v] of Object.entries(got)) assert.equal(v, r.attrs[k], k);
    assert.equal(got.client_address, r.attrs.client_address);
    assert.equal(got.protocol_state, r.attrs.protocol_state);
    assert.equal(Object.keys(got).length, 11);
    assert.equal((got as Record<string, unknown>).helo_name, undefined);
    assert.equal(p.buffered, 0);
  }
});

test('two requests in one chunk, CRLF line ends, and stray blank lines', () => {
  const p = new PolicyParser(limits);
  const items = p.push('\n\nsender=1\r\nrecipient=x=y\r\nhelo_name=h\r\n\r\nsize=3\n\n\n');
  assert.deepEqual(
    items.map((i) => [i.ok, i.attrs.sender, i.attrs.recipient, i.attrs.size]),
    [
      [true, '1', 'x=y', undefined],
      [true, undefined, undefined, '3'],
    ],
  );
});

test('an over-long line is a framing error, even before its newline arrives', () => {
  const p = new PolicyParser({ maxLine: 600, maxAttributes: 256 });
  assert.throws(() => p.push(`sender=${'a'.repeat(700)}`), FramingError);
  const q = new PolicyParser({ maxLine: 600, maxAttributes: 256 });
  assert.throws(() => q.push(`sender=${'a'.repeat(700)}\n\n`), FramingError);
});

test('malformed lines and too many attributes spoil only their request', () => {
  const p = new PolicyParser({ maxLine: 600, maxAttributes: 8 });
  const items = p.push(
    `garbage\n\n${Array.from({ length: 9 }, (_, i) => `k${i}=v`).join('\n')}\n\n=novalue\n\nok=1\n\n`,
  );
  assert.deepEqual(
    items.map((i) => i.ok),
    [false, false, false, true],
  );
  assert.match((items[0] as { problem: string }).problem, /malformed line "garbage"/);
  assert.match((items[1] as { problem: string }).problem, /more than 8 attributes/);
});

test('protocol states map to events; IPv4-mapped addresses are unmapped; users are case-folded', () => {
  const base = {
    request: 'smtpd_access_policy',
    client_address: '::ffff:192.0.2.1',
    sasl_username: ' Alice@Example.COM ',
  };
  const states: Record<string, string> = {
    CONNECT: 'connect',
    EHLO: 'helo',
    HELO: 'helo',
    MAIL: 'mail',
    RCPT: 'recipient',
    DATA: 'data',
    'END-OF-MESSAGE': 'message',
    VRFY: 'vrfy',
    ETRN: 'etrn',
  };
  for (const [state, kind] of Object.entries(states)) {
    const t = toEvent({ ...base, protocol_state: state, recipient_count: '3', size: '1234' }, 5);
    assert.ok(t.ok);
    assert.equal(t.event.kind, kind);
    assert.equal(t.event.ip, '192.0.2.1');
    assert.equal(t.event.user, 'alice@example.com');
    assert.equal(t.event.recipients, kind === 'recipient' ? 1 : kind === 'data' || kind === 'message' ? 3 : 0);
    assert.equal(t.event.size, kind === 'message' ? 1234 : 0);
  }
  const anon = toEvent({ ...base, sasl_username: '', protocol_state: 'RCPT' }, 5);
  assert.ok(anon.ok && anon.event.user === undefined);
  assert.equal(toEvent({ ...base, client_address: '10.1', protocol_state: 'RCPT' }, 5).ok, false);
});

test('decisions become Postfix actions with SMTP and enhanced status codes, on one line', () => {
  const d = (action: typeof ALLOW.action, reason: string) => ({ ...ALLOW, action, reason });
  assert.equal(toAction(ALLOW), 'DUNNO');
  assert.equal(toAction(d('delay', 'slow down')), 'DEFER_IF_PERMIT slow down');
  assert.equal(toAction(d('tempfail', 'later')), '450 4.7.1 later');
  assert.equal(toAction(d('reject', 'no\r\nINJECT=1')), '554 5.7.1 no INJECT=1');
  assert.equal(toAction(d('hold', 'check me')), 'HOLD check me');
});
