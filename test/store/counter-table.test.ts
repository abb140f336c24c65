import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CounterTable } from '../../src/store/counter-table.js';

describe('counter table: bounded, coldest out', () => {
  test('never more than max keys; the max/2 most recently used are always kept', () => {
    const t = new CounterTable<number>(10);
    const used: string[] = [];
    let inserted = 0;
    for (let i = 0; i < 200; i++) {
      // Mostly new keys; every 7th reuses a fairly recent one, every 11th a long-unused one.
      const back = i % 7 === 0 ? 4 : i % 11 === 0 ? 30 : 0;
      const key = back > 0 && used.length >= back ? (used[used.length - back] as string) : `k${i}`;
      if (t.get(key) === undefined) inserted++;
      t.set(key, i);
      used.push(key);
      assert.ok(t.size <= 10, `size ${t.size}`);
      const recent = [...new Set(used.slice().reverse())].slice(0, 5);
      for (const k of recent) assert.notEqual(t.get(k), undefined, `${k} is among the 5 most recently used`);
    }
    assert.equal(t.evictions + t.size, inserted, 'every key that came in is either kept or counted as evicted');
    assert.ok(t.evictions > 0);
  });

  test('an update in place keeps the value; refresh saves an old key; clear forgets all', () => {
    const t = new CounterTable<number>(4);
    t.set('a', 1);
    t.set('a', 2);
    assert.equal(t.get('a'), 2);
    assert.equal(t.size, 1);
    t.set('b', 1); // the young generation is full: a and b become old
    t.refresh('a'); // a is young again
    t.set('c', 1); // young full again: b, unused for a generation, is evicted
    assert.equal(t.get('b'), undefined);
    assert.equal(t.get('a'), 2);
    assert.equal(t.get('c'), 1);
    assert.equal(t.evictions, 1);
    assert.deepEqual([...t.entries()].map(([k]) => k).sort(), ['a', 'c']);
    t.refresh('zz'); // unknown: nothing happens
    assert.equal(t.size, 2);
    t.clear();
    assert.equal(t.size, 0);
    assert.deepEqual([...t.entries()], []);
  });
});
