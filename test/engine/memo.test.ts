import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Memo } from '../../src/engine/memo.js';

describe('Memo (a bounded map in two generations)', () => {
  test('under a stream of new keys it never holds more than its bound and always the newest half', () => {
    const m = new Memo<string, number>(1000);
    for (let i = 0; i < 25_000; i++) {
      m.set(`k${i}`, i);
      for (const back of [0, 250, 499]) {
        if (i - back >= 0) assert.equal(m.get(`k${i - back}`), i - back, `key ${i - back} lost after ${i + 1} keys`);
      }
    }
    const held = Array.from({ length: 25_000 }, (_, i) => m.get(`k${i}`)).filter((v) => v !== undefined).length;
    assert.ok(held <= 1000 && held >= 500, `holds ${held}`);
    assert.equal(m.get('k0'), undefined, 'the oldest keys are gone');
  });

  test('a newer value replaces the older one; delete removes it from either generation', () => {
    const m = new Memo<string, string>(4);
    m.set('a', '1');
    m.set('b', '2');
    m.set('a', '3'); // the young generation was full: a=1 and b are old now, a=3 is young
    assert.equal(m.get('a'), '3');
    m.delete('a'); // both copies go, or the old a=1 would come back
    assert.equal(m.get('a'), undefined);
    assert.equal(m.get('b'), '2');
  });
});
