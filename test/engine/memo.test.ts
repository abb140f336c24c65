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

  test('bounded by bytes too: 60 KB bodies stay under the byte bound, and the newest stay', () => {
    const maxBytes = 8 * 1024 * 1024;
    const m = new Memo<string, string>(4096, maxBytes);
    const body = (i: number): string => `${i}:`.padEnd(60_000, 'x');
    let peak = 0;
    for (let i = 0; i < 4096; i++) {
      m.set(`s${i}`, body(i), 60_000);
      peak = Math.max(peak, m.bytes);
      assert.equal(m.get(`s${i}`), body(i));
    }
    assert.ok(peak <= maxBytes, `peaked at ${peak} bytes`);
    const held = Array.from({ length: 4096 }, (_, i) => m.get(`s${i}`)).filter((v) => v !== undefined).length;
    // 4,096 bodies by count would be 246 MB; half the byte bound holds at least 69 of them.
    assert.ok(held >= 69 && held <= 140, `holds ${held} bodies`);
    assert.equal(m.get('s4095'), body(4095));
  });

  test('an entry heavier than half the byte bound is not kept, and forgets the older value of its key', () => {
    const m = new Memo<string, string>(100, 1000);
    m.set('a', 'small', 10);
    m.set('a', 'huge', 600);
    assert.equal(m.get('a'), undefined);
    assert.equal(m.bytes, 10, 'nothing was added');
  });
});
