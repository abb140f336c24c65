/*
 * Records read back from storage (store/records.ts): every ban, suspension and
 * counter a damaged, hand-edited or older SQLite file can hold is repaired or
 * skipped, reported, and can never make a decision, a list or a start throw.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { decide } from '../../src/engine/decide.js';
import { plan } from '../../src/engine/plan.js';
import { MAX_DURATION_MS } from '../../src/engine/types.js';
import { MemoryStore } from '../../src/store/memory.js';
import { DistinctSet } from '../../src/store/distinct-set.js';
import { checkBan, checkCounter, checkSuspension } from '../../src/store/records.js';
import { SqlitePersistence } from '../../src/store/sqlite.js';
import { makeEvent, rulesPolicy, T0 } from '../helpers/policy.js';

const NOW = T0;
const LATEST = NOW + MAX_DURATION_MS;
const good = { subject: '192.0.2.1', since: NOW, until: NOW + 1000, rule: 'r', reason: 'x', offence: 2, actor: 'cli' };

describe('checkBan, checkSuspension, checkCounter', () => {
  test('a sound record passes unchanged', () => {
    assert.deepEqual(checkBan(good, NOW), { rec: good, problems: [] });
    const s = { user: 'u@example.org', since: NOW, until: NOW + 5, rule: 'r', reason: 'x', actor: 'cli' };
    assert.deepEqual(checkSuspension(s, NOW), { rec: s, problems: [] });
  });

  test('an end that is unreadable, infinite or too far away is kept in force for at most 3650d', () => {
    for (const until of ['garbage', Infinity, NaN, 1e300, '8.64e15', NOW + MAX_DURATION_MS + 1]) {
      const c = checkBan({ ...good, until }, NOW);
      assert.equal(c.rec?.until, LATEST, String(until));
      assert.equal(c.problems.length, 1, String(until));
    }
    assert.equal(checkBan({ ...good, until: String(NOW + 1000) }, NOW).rec?.until, NOW + 1000, 'a number as text');
  });

  test('a start after the end or unreadable is now; an offence is a count from 1 to a million', () => {
    assert.equal(checkBan({ ...good, since: 'x' }, NOW).rec?.since, NOW);
    assert.equal(checkBan({ ...good, since: NOW + 5000 }, NOW).rec?.since, NOW);
    for (const [offence, want] of [
      [0, 1],
      [-4, 1],
      [2.5, 3],
      ['many', 1],
      [1e12, 1_000_000],
    ] as const)
      assert.equal(checkBan({ ...good, offence }, NOW).rec?.offence, want, String(offence));
  });

  test('a subject that is no address or network is skipped; a non-canonical one is read canonically', () => {
    for (const subject of ['not-an-ip', '', 42, undefined, '10.0.0.0/33'])
      assert.equal(checkBan({ ...good, subject }, NOW).rec, undefined, String(subject));
    assert.equal(checkBan({ ...good, subject: '10.1.2.3/15' }, NOW).rec?.subject, '10.0.0.0/15');
    assert.equal(checkBan({ ...good, subject: '2001:DB8::1/128' }, NOW).rec?.subject, '2001:db8::1');
    assert.equal(checkSuspension({ user: '', since: 0, until: 1 }, NOW).rec, undefined);
  });

  test('counters: a rate beyond any window, or members that are not JSON, start again from zero', () => {
    assert.deepEqual(checkCounter({ tat: NOW + 5, members: null }, NOW), { value: NOW + 5 });
    assert.equal(checkCounter({ tat: 1e300, members: null }, NOW).value, undefined);
    assert.equal(checkCounter({ tat: null, members: '{oops' }, NOW).value, undefined);
    assert.equal(checkCounter({ tat: null, members: '{"usual":["x",1]}' }, NOW).value, undefined);
    assert.deepEqual(checkCounter({ tat: null, members: '{"usual":[0.5,7]}' }, NOW).value, { r: 0.5, t: 7 });
    const set = checkCounter(
      {
        tat: null,
        members: JSON.stringify([
          ['a', NOW],
          ['b', 1e300],
          [3, NOW],
        ]),
      },
      NOW,
    );
    assert.deepEqual([...(set.value as DistinctSet).entries()], [['a', NOW]]);
  });
});

describe('a damaged SQLite file: the store starts, enforces, lists, and repairs it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-records-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('absurd bans are enforced with a bounded end, written back, reported; decisions and lists never throw', async () => {
    const file = join(dir, 'mw.sqlite');
    const db = new SqlitePersistence(file);
    const put = db.db.prepare(
      'INSERT INTO bans (subject, since, until, rule, reason, offence, actor) VALUES (?, ?, ?, ?, ?, ?, ?)',
    );
    put.run('198.51.100.1', NOW, 1e300, 'manual', 'huge', 1, 'cli');
    put.run('198.51.100.2', 'x', 'garbage', 'manual', 'text', 1, 'cli');
    put.run('10.9.8.7/15', NOW, NOW + 60_000, 'manual', 'host bits', 1, 'cli');
    put.run('not-an-address', NOW, NOW + 60_000, 'manual', 'junk', 1, 'cli');
    db.db
      .prepare('INSERT INTO suspensions (user, since, until, rule, reason, actor) VALUES (?, ?, ?, ?, ?, ?)')
      .run('eve@example.org', NOW, 1e300, 'manual', 'x', 'cli');
    db.db.prepare('INSERT INTO counters (key, tat, members) VALUES (?, ?, ?)').run('k1', null, '{not json');
    db.close();

    const warnings: string[] = [];
    const open = (): MemoryStore =>
      new MemoryStore({
        file,
        maxKeys: 1000,
        lookbackMs: 86_400_000,
        now: () => NOW,
        warn: (_f, m) => warnings.push(m),
      });
    let store = open();
    try {
      assert.equal(warnings.length, 6, warnings.join('\n'));
      assert.ok(warnings.some((w) => /skipped: subject "not-an-address"/.test(w)));
      assert.ok(warnings.some((w) => /counter snapshot rows that cannot be read/.test(w)));
      const policy = rulesPolicy('  - {name: helos, on: [helo], key: ip, count: events, limit: 5, window: 1m}');
      for (const ip of ['198.51.100.1', '198.51.100.2', '10.9.0.1']) {
        const ev = makeEvent({ ip });
        const p = plan(ev, policy);
        const d = decide(ev, policy, p, store.applySync(p, NOW));
        assert.equal(d.action, 'reject', ip);
        assert.match(d.reason, /blocked until \d{4}-/);
      }
      const bans = await store.listBans(NOW);
      assert.deepEqual(bans.map((b) => b.subject).sort(), ['10.8.0.0/15', '198.51.100.1', '198.51.100.2']);
      for (const b of bans) assert.ok(b.until <= NOW + MAX_DURATION_MS && new Date(b.until).toISOString());
      assert.equal((await store.listSuspensions(NOW))[0]?.until, NOW + MAX_DURATION_MS);
    } finally {
      await store.close();
    }
    warnings.length = 0;
    store = open();
    try {
      assert.deepEqual(warnings, [
        'store: a stored ban was skipped: subject "not-an-address" is not an IP address or network',
      ]);
      assert.equal((await store.listBans(NOW)).length, 3, 'the repairs were written back');
    } finally {
      await store.close();
    }
  });
});
