import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { RepeatCache } from '../../../src/adapters/postfix/repeats.js';

describe('RepeatCache (the answers to recent RCPT requests)', () => {
  test('an answer is found within the window and not after it', () => {
    const c = new RepeatCache(100, 10_000);
    c.set('k', 1_000, 'action=DUNNO\n\n');
    assert.equal(c.get('k', 1_000), 'action=DUNNO\n\n');
    assert.equal(c.get('k', 10_999), 'action=DUNNO\n\n');
    assert.equal(c.get('k', 11_000), undefined);
    assert.equal(c.get('other', 1_000), undefined);
  });

  test('the bound holds under a stream of new keys, and the newest half is always kept', () => {
    const c = new RepeatCache(1_000, 10_000);
    for (let i = 0; i < 25_000; i++) {
      c.set(`k${i}`, 0, `r${i}`);
      assert.ok(c.size <= 1_000, `size ${c.size} after ${i + 1} keys`);
      const back = i - Math.min(i, 499);
      assert.equal(c.get(`k${back}`, 0), `r${back}`, `key ${back} lost after ${i + 1} keys`);
    }
    assert.equal(c.get('k0', 0), undefined, 'the oldest keys are gone');
  });

  test('a window of 0 turns it off: not even a repeat in the same millisecond is answered from it', () => {
    const c = new RepeatCache(100, 0);
    c.set('k', 5, 'a');
    assert.equal(c.get('k', 5), undefined);
    assert.equal(c.size, 0);
  });

  test('a newer answer for the same key replaces the older one', () => {
    const c = new RepeatCache(4, 10_000);
    c.set('k', 0, 'a');
    c.set('x', 0, 'x');
    c.set('k', 5, 'b');
    assert.equal(c.get('k', 5), 'b');
  });
});
