import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { PolicyAttributes } from '../../../src/adapters/postfix/parse.js';
import { RepeatMemo } from '../../../src/adapters/postfix/repeats.js';

const rcpt = (over: Partial<PolicyAttributes> = {}): PolicyAttributes => ({
  request: 'smtpd_access_policy',
  protocol_state: 'RCPT',
  client_address: '192.0.2.7',
  client_port: '40000',
  instance: '1a2b.5f0c.1.0',
  sender: 'alice@example.org',
  recipient: 'bob@example.net',
  recipient_count: '0',
  size: '0',
  sasl_username: '',
  policy_context: '',
  ...over,
});

describe('RepeatMemo (the last RCPT request of a connection)', () => {
  test('the same request within the window gets the first answer; not at the end of the window', () => {
    const m = new RepeatMemo(10_000);
    m.set(rcpt(), 1_000, 'action=DUNNO\n\n');
    assert.equal(m.get(rcpt(), 1_000), 'action=DUNNO\n\n');
    assert.equal(m.get(rcpt(), 10_999), 'action=DUNNO\n\n');
    assert.equal(m.get(rcpt(), 11_000), undefined);
  });

  test('any field that tells requests apart makes it a new request', () => {
    const m = new RepeatMemo(10_000);
    m.set(rcpt(), 0, 'r');
    for (const over of [
      { recipient: 'carol@example.net' },
      { instance: '1a2b.5f0c.2.0' },
      { client_port: '40001' },
      { client_address: '192.0.2.8' },
      { sender: '' },
      { sasl_username: 'alice' },
      { policy_context: 'submission' },
    ]) {
      assert.equal(m.get(rcpt(over), 0), undefined, JSON.stringify(over));
    }
    // fields Postfix fills in later stages do not matter for a repeat
    assert.equal(m.get(rcpt({ size: '10' }), 0), 'r');
  });

  test('only the last request is remembered', () => {
    const m = new RepeatMemo(10_000);
    m.set(rcpt(), 0, 'a');
    m.set(rcpt({ recipient: 'carol@example.net' }), 1, 'b');
    assert.equal(m.get(rcpt(), 2), undefined);
    assert.equal(m.get(rcpt({ recipient: 'carol@example.net' }), 2), 'b');
  });

  test('a window of 0 turns it off: not even a repeat in the same millisecond', () => {
    const m = new RepeatMemo(0);
    m.set(rcpt(), 5, 'a');
    assert.equal(m.get(rcpt(), 5), undefined);
  });

  test('only RCPT requests are repeats', () => {
    assert.equal(RepeatMemo.applies(rcpt()), true);
    assert.equal(RepeatMemo.applies(rcpt({ protocol_state: 'END-OF-MESSAGE' })), false);
    assert.equal(RepeatMemo.applies(rcpt({ request: 'other' })), false);
  });
});
