import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isPending } from '../../src/store/counting.js';
import { DistinctSet } from '../../src/store/distinct-set.js';
import { prng } from '../helpers/prng.js';

/** What a set must equal: a Map in insertion order, pruned and counted the same way. */
function modelPrune(m: Map<string, number>, now: number, windowMs: number): number {
  for (const [k, t] of m) {
    if (t > now - windowMs) break;
    m.delete(k);
  }
  return m.size;
}

void describe('DistinctSet', () => {
  void test('prune drops members seen at or before now - window and returns the live count', () => {
    const set = DistinctSet.adopt(
      new Map([
        ['a', 0],
        ['b', 500],
        ['c', 1000],
        ['d', 1500],
      ]),
    );
    assert.equal(set.prune(1500, 1000), 2);
    assert.deepEqual(
      [...set.entries()],
      [
        ['c', 1000],
        ['d', 1500],
      ],
    );
    assert.equal(set.prune(1500, 1000), 2, 'pruning is idempotent');
    assert.equal(set.prune(10_000, 1000), 0);
    assert.equal(set.size, 0);
  });

  void test('pruning stops at the first live member: a big live set costs one step, not its size', () => {
    /** A Map that counts the members its iterator hands out. */
    class CountingMap extends Map<string, number> {
      steps = 0;
      override *[Symbol.iterator](): MapIterator<[string, number]> {
        for (const e of super.entries()) {
          this.steps++;
          yield e;
        }
      }
    }
    const counting = new CountingMap();
    for (let i = 0; i < 1000; i++) counting.set(`m${i}`, 10_000 + i);
    const set = DistinctSet.adopt(counting);
    assert.equal(set.prune(10_500, 3_600_000), 1000);
    assert.equal(counting.steps, 1);
    // members seen before the horizon are at the front (a member seen again moves to the back)
    assert.equal(set.prune(10_000 + 3_600_000 + 9, 3_600_000), 990);
    assert.equal(counting.steps, 12);
  });

  void test('a set of one member, and one adopted from a Map of one or none, answer as the Map would', () => {
    const one = DistinctSet.of('pw1', 100.5);
    assert.equal(one.size, 1);
    assert.equal(one.get('pw1'), 100.5);
    assert.equal(one.has('pw2'), false);
    assert.equal(one.confirmed(200, 1000), 0, 'a pending member is not confirmed');
    one.set('pw1', 150);
    assert.deepEqual([...one.entries()], [['pw1', 150]]);
    assert.equal(one.confirmed(200, 1000), 1);
    one.delete('pw2');
    assert.equal(one.size, 1, 'deleting a member that is not there changes nothing');
    one.delete('pw1');
    assert.equal(one.size, 0);
    assert.deepEqual([...one.entries()], []);
    assert.equal(DistinctSet.adopt(new Map()).size, 0);
    assert.deepEqual([...DistinctSet.adopt(new Map([['x', 7]])).entries()], [['x', 7]]);
  });

  void test('any sequence of changes leaves the same members, order and counts as a Map (both forms)', () => {
    const rnd = prng(20261203);
    for (let run = 0; run < 300; run++) {
      const model = new Map<string, number>();
      const set = new DistinctSet();
      let now = 1_000_000;
      // few members, so the set often goes from none to one to several and back
      const members = ['a', 'b', 'c', 'd'].slice(0, 1 + Math.floor(rnd() * 4));
      for (let step = 0; step < 60; step++) {
        // steps of 100 ms against windows of 300 and 500: members often sit exactly on the horizon
        now += 100 * Math.floor(rnd() * 4);
        const m = members[Math.floor(rnd() * members.length)] as string;
        const r = rnd();
        const time = Math.floor(now) + (rnd() < 0.3 ? 0.5 : 0);
        if (r < 0.35) {
          model.set(m, time);
          set.set(m, time);
        } else if (r < 0.55) {
          // seen again: moves to the back, as MemoryStore charges it
          model.delete(m);
          model.set(m, time);
          set.delete(m);
          set.set(m, time);
        } else if (r < 0.75) {
          model.delete(m);
          set.delete(m);
        } else if (r < 0.9) {
          assert.equal(set.prune(now, 300), modelPrune(model, now, 300));
        } else {
          let confirmed = modelPrune(model, now, 500);
          for (const t of model.values()) if (isPending(t)) confirmed--;
          assert.equal(set.confirmed(now, 500), confirmed);
        }
        const where = `run ${run}, step ${step}`;
        assert.deepEqual([...set.entries()], [...model], where);
        assert.equal(set.size, model.size, where);
        for (const x of members) {
          assert.equal(set.get(x), model.get(x), where);
          assert.equal(set.has(x), model.has(x), where);
        }
      }
    }
  });
});
