import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { TalliedCounter, TalliedHistogram } from '../../src/admin/tallies.js';

const line = (text: string, prefix: string): string | undefined => text.split('\n').find((l) => l.startsWith(prefix));

describe('tallies: hot-path metrics exported at scrape time', () => {
  test('a tallied counter exports its totals; scraping twice never counts twice', async () => {
    const registry = new Registry();
    const c = new TalliedCounter({ name: 't_total', help: 'h', labelNames: ['a', 'b'], registry });
    for (let i = 0; i < 5; i++) c.inc(['x', 'y']);
    c.inc(['x', 'z']);
    c.inc(['xy', '']); // the same characters split differently are another label set
    let text = await registry.metrics();
    assert.match(text, /# TYPE t_total counter/);
    assert.equal(line(text, 't_total{a="x",b="y"}'), 't_total{a="x",b="y"} 5');
    assert.equal(line(text, 't_total{a="x",b="z"}'), 't_total{a="x",b="z"} 1');
    assert.equal(line(text, 't_total{a="xy",b=""}'), 't_total{a="xy",b=""} 1');
    c.inc(['x', 'z']);
    text = await registry.metrics();
    assert.equal(line(text, 't_total{a="x",b="y"}'), 't_total{a="x",b="y"} 5');
    assert.equal(line(text, 't_total{a="x",b="z"}'), 't_total{a="x",b="z"} 2');
  });

  test('a tallied histogram renders cumulative buckets, +Inf, sum and count per label value', async () => {
    const registry = new Registry();
    const h = new TalliedHistogram('lat_seconds', 'latency', 'adapter', [0.001, 0.01], registry);
    for (const v of [0.0005, 0.001, 0.005, 0.5]) h.observe('postfix', v);
    h.observe('dovecot', 0.02);
    const text = await registry.metrics();
    assert.match(text, /# HELP lat_seconds latency\n# TYPE lat_seconds histogram/);
    const get = (sel: string): number => {
      const l = line(text, `lat_seconds${sel} `);
      assert.ok(l, `${sel} in\n${text}`);
      return Number(l.split(' ')[1]);
    };
    assert.equal(get('_bucket{le="0.001",adapter="postfix"}'), 2, 'a value equal to a bound is in that bucket');
    assert.equal(get('_bucket{le="0.01",adapter="postfix"}'), 3);
    assert.equal(get('_bucket{le="+Inf",adapter="postfix"}'), 4);
    assert.equal(get('_count{adapter="postfix"}'), 4);
    assert.ok(Math.abs(get('_sum{adapter="postfix"}') - 0.5065) < 1e-12);
    assert.equal(get('_bucket{le="0.01",adapter="dovecot"}'), 0);
    assert.equal(get('_bucket{le="+Inf",adapter="dovecot"}'), 1);
  });
});
