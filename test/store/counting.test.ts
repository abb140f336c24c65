import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DISTINCT_CAP, gcra, gcraCount } from '../../src/store/counting.js';
import { prng } from '../helpers/prng.js';

/** Feeds events through gcra like a store does: charge only when not exceeded. */
function feed(
  times: readonly number[],
  limit: number,
  windowMs: number,
  cost = 1,
): { passed: number[]; tat: number | undefined } {
  let tat: number | undefined;
  const passed: number[] = [];
  for (const t of times) {
    const out = gcra(tat, t, cost, limit, windowMs);
    if (!out.exceeded) {
      tat = out.tat;
      passed.push(t);
    }
  }
  return { passed, tat };
}

const rng = prng;

void describe('gcra', () => {
  void test('the first event counts 1 and sets TAT one interval ahead', () => {
    const out = gcra(undefined, 1000, 1, 60, 60_000);
    assert.deepEqual(out, { tat: 2000, count: 1, exceeded: false });
  });

  void test('a burst of exactly `limit` passes; the next one is exceeded and counts limit+1', () => {
    let tat: number | undefined;
    for (let i = 1; i <= 10; i++) {
      const out = gcra(tat, 0, 1, 10, 60_000);
      assert.equal(out.count, i);
      assert.equal(out.exceeded, false, `event ${i} of 10`);
      tat = out.tat;
    }
    const over = gcra(tat, 0, 1, 10, 60_000);
    assert.equal(over.exceeded, true);
    assert.equal(over.count, 11);
  });

  void test('float rounding never turns exactly `limit` into a refusal, nor lets limit+1 through', () => {
    // Epoch-ms clocks (~1.7e12) resolve only ~0.0002 ms in a double; small clocks are checked too.
    const T0 = Date.UTC(2025, 0, 1);
    for (const now of [12_345, T0 + 123, T0 + 0.5, 2 ** 42 + 7]) {
      for (const windowMs of [1000, 7000, 60_000, 3_600_000, 86_400_000, 604_800_000]) {
        for (const limit of [1, 3, 6, 7, 9, 11, 13, 49, 97, 100, 333, 499, 500, 999, 1000, 4999]) {
          // Sub-millisecond intervals (5000 per second) are beyond what a double at epoch scale resolves.
          if (windowMs / limit < 1) continue;
          const { passed, tat } = feed(new Array<number>(limit + 5).fill(now), limit, windowMs);
          const what = `limit ${limit} per ${windowMs}ms at ${now}`;
          assert.equal(passed.length, limit, what);
          assert.equal(gcraCount(tat, now, limit, windowMs), limit, what);
          const next = gcra(tat, now, 1, limit, windowMs);
          assert.deepEqual([next.count, next.exceeded], [limit + 1, true], what);
        }
      }
    }
  });

  void test('every limit from 1 to 300 per second admits exactly its burst at an epoch-ms clock', () => {
    const now = Date.UTC(2031, 5, 15, 12, 0, 0, 1);
    for (let limit = 1; limit <= 300; limit++) {
      assert.equal(feed(new Array<number>(limit + 2).fill(now), limit, 1000).passed.length, limit, `limit ${limit}/s`);
    }
  });

  void test('cost > 1 charges several units at once', () => {
    let tat: number | undefined;
    const a = gcra(tat, 0, 4, 10, 10_000);
    assert.deepEqual([a.count, a.exceeded], [4, false]);
    tat = a.tat;
    const b = gcra(tat, 0, 4, 10, 10_000);
    assert.deepEqual([b.count, b.exceeded], [8, false]);
    tat = b.tat;
    const c = gcra(tat, 0, 4, 10, 10_000);
    assert.deepEqual([c.count, c.exceeded], [12, true]);
    const d = gcra(tat, 0, 2, 10, 10_000);
    assert.deepEqual([d.count, d.exceeded], [10, false]);
  });

  void test('a single event costing more than the limit is always exceeded', () => {
    const out = gcra(undefined, 0, 11, 10, 10_000);
    assert.equal(out.exceeded, true);
    assert.equal(out.count, 11);
  });

  void test('a stale TAT in the past counts as empty', () => {
    const out = gcra(500, 10_000, 1, 10, 10_000);
    assert.deepEqual(out, { tat: 11_000, count: 1, exceeded: false });
  });

  void test('capacity comes back at one event per window/limit', () => {
    // 10 per 10 s: one interval is 1 s.
    const { tat } = feed(new Array<number>(10).fill(0), 10, 10_000);
    assert.equal(gcra(tat, 999, 1, 10, 10_000).exceeded, true);
    assert.equal(gcra(tat, 1000, 1, 10, 10_000).exceeded, false);
    assert.equal(gcra(tat, 1000, 2, 10, 10_000).exceeded, true);
    assert.equal(gcra(tat, 2000, 2, 10, 10_000).exceeded, false);
    assert.equal(gcra(tat, 10_000, 10, 10, 10_000).exceeded, false);
  });

  void test('window edge: 60 at 0:59 then a burst at 1:01 lets only ~2 more through, never another 60', () => {
    const limit = 60;
    const windowMs = 60_000;
    const first = feed(new Array<number>(60).fill(59_000), limit, windowMs);
    assert.equal(first.passed.length, 60);
    let tat = first.tat;
    let more = 0;
    for (let i = 0; i < 60; i++) {
      const out = gcra(tat, 61_000, 1, limit, windowMs);
      if (!out.exceeded) {
        more++;
        tat = out.tat;
      }
    }
    assert.ok(more >= 1 && more <= 3, `passed ${more} at the edge`);
    assert.equal(more, 2);
  });

  void test('a steady rate at the limit is never refused; twice the limit is refused about half the time', () => {
    // 60 per minute = one per second. One per second for ten minutes: all pass.
    const atRate = Array.from({ length: 600 }, (_, i) => i * 1000);
    assert.equal(feed(atRate, 60, 60_000).passed.length, 600);
    // Two per second for ten minutes: the burst of 60 plus one per second.
    const double = Array.from({ length: 1200 }, (_, i) => i * 500);
    const n = feed(double, 60, 60_000).passed.length;
    assert.ok(n >= 600 + 59 && n <= 600 + 61, `passed ${n}`);
  });

  void test('property: in any interval of length L at most limit + L·limit/window events pass', () => {
    const limit = 20;
    const windowMs = 10_000;
    const interval = windowMs / limit;
    const rand = rng(42);
    let t = 0;
    const times: number[] = [];
    for (let i = 0; i < 3000; i++) {
      // Bursty arrivals: mostly dense, sometimes a pause.
      t += rand() < 0.05 ? Math.floor(rand() * 20_000) : Math.floor(rand() * 200);
      times.push(t);
    }
    const { passed } = feed(times, limit, windowMs);
    assert.ok(passed.length > limit, 'the test must exercise the limiter');
    for (let i = 0; i < passed.length; i++) {
      for (let j = i; j < passed.length; j++) {
        const span = (passed[j] as number) - (passed[i] as number);
        const bound = limit + Math.floor(span / interval);
        assert.ok(j - i + 1 <= bound, `${j - i + 1} passed within ${span} ms (bound ${bound})`);
        if (span > 3 * windowMs) break;
      }
    }
  });
});

void describe('gcraCount', () => {
  void test('no TAT or a TAT in the past counts zero', () => {
    assert.equal(gcraCount(undefined, 0, 10, 1000), 0);
    assert.equal(gcraCount(500, 500, 10, 1000), 0);
    assert.equal(gcraCount(400, 500, 10, 1000), 0);
  });

  void test('decays one unit per interval, rounding up', () => {
    const { tat } = feed(new Array<number>(10).fill(0), 10, 10_000);
    assert.equal(gcraCount(tat, 0, 10, 10_000), 10);
    assert.equal(gcraCount(tat, 1, 10, 10_000), 10);
    assert.equal(gcraCount(tat, 1000, 10, 10_000), 9);
    assert.equal(gcraCount(tat, 1001, 10, 10_000), 9);
    assert.equal(gcraCount(tat, 9999, 10, 10_000), 1);
    assert.equal(gcraCount(tat, 10_000, 10, 10_000), 0);
  });

  void test('agrees with the count gcra reports for the last charged event', () => {
    let tat: number | undefined;
    for (let i = 0; i < 7; i++) {
      const out = gcra(tat, i * 10, 1, 7, 3_600_000);
      tat = out.tat;
      assert.equal(gcraCount(tat, i * 10, 7, 3_600_000), out.count);
    }
  });
});

void describe('distinct sets', () => {
  void test('the cap is a sane bound', () => {
    assert.ok(Number.isInteger(DISTINCT_CAP) && DISTINCT_CAP >= 100);
  });
});
