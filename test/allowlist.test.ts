/*
 * The runtime allowlist on a real store (SQLite file): what it puts in force (the plan of an event
 * from an entry is allowlisted, the config's entries stay), when an entry ends, and what it refuses.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, beforeEach, describe, test } from 'node:test';
import { MAX_RUNTIME_ENTRIES, RuntimeAllowlist, withRuntimeEntries } from '../src/allowlist.js';
import { loadSettingsFromText } from '../src/config/load.js';
import type { Policy } from '../src/engine/policy.js';
import { plan } from '../src/engine/plan.js';
import { MemoryStore } from '../src/store/memory.js';
import { HOUR, makeEvent, T0 } from './helpers/policy.js';

const settings = loadSettingsFromText(
  'allowlist:\n  networks: [127.0.0.1, 10.0.0.0/8]\n  users: [Root@Example.org]\n',
  'test.yaml',
);

describe('runtime allowlist', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-allow-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let now = T0;
  let inForce: Policy = settings.policy;
  let store: MemoryStore;
  let list: RuntimeAllowlist;
  let n = 0;
  const open = (): RuntimeAllowlist =>
    new RuntimeAllowlist(
      store,
      () => settings,
      (p) => (inForce = p),
      () => now,
    );
  const allowlisted = (over: Parameters<typeof makeEvent>[0]): boolean =>
    plan(makeEvent({ time: now, ...over }), inForce).allowlisted;

  beforeEach(() => {
    now = T0;
    store = new MemoryStore({ file: join(dir, `s${n++}.sqlite`), maxKeys: 1000, lookbackMs: HOUR, now: () => now });
    list = open();
    list.refresh();
  });

  test('an entry is in force at once, the config entries stay, and it survives a restart', async () => {
    assert.equal(allowlisted({ ip: '192.0.2.10' }), false);
    list.add({ subject: '192.0.2.0/24', reason: 'office' }, 'cli');
    list.add({ subject: 'Boss@Example.org' }, 'cli');
    assert.equal(allowlisted({ ip: '192.0.2.10' }), true);
    assert.equal(allowlisted({ ip: '10.1.2.3' }), true, 'config network');
    assert.equal(allowlisted({ ip: '198.51.100.1', user: 'boss@example.org' }), true);
    assert.equal(allowlisted({ ip: '198.51.100.1', user: 'root@example.org' }), true, 'config user');
    assert.equal(allowlisted({ ip: '198.51.100.1', user: 'eve@example.org' }), false);
    list.close();
    await store.close();
    store = new MemoryStore({ file: join(dir, `s${n - 1}.sqlite`), maxKeys: 1000, lookbackMs: HOUR, now: () => now });
    inForce = settings.policy;
    list = open();
    list.refresh();
    assert.equal(allowlisted({ ip: '192.0.2.10' }), true, 'after a restart');
    assert.deepEqual(
      list.list().map((e) => [e.subject, e.source]),
      [
        ['127.0.0.1', 'config'],
        ['10.0.0.0/8', 'config'],
        ['root@example.org', 'config'],
        ['192.0.2.0/24', 'runtime'],
        ['boss@example.org', 'runtime'],
      ],
    );
    const audit = await store.auditSearch({ since: 0, limit: 10, offset: 0 });
    assert.deepEqual(
      audit.items.map((a) => [a.kind, a.subject, a.actor]),
      [
        ['allow', 'boss@example.org', 'cli'],
        ['allow', '192.0.2.0/24', 'cli'],
      ],
    );
    list.close();
    await store.close();
  });

  test('an entry with an end is out of force after it; remove takes one out at once', async () => {
    list.add({ subject: '192.0.2.7', durationMs: HOUR }, 'cli');
    list.add({ subject: '192.0.2.8' }, 'cli');
    assert.equal(allowlisted({ ip: '192.0.2.7' }), true);
    now += HOUR;
    list.refresh(); // what the timer does when the entry ends
    assert.equal(allowlisted({ ip: '192.0.2.7' }), false);
    assert.equal(allowlisted({ ip: '192.0.2.8' }), true);
    assert.equal(list.remove('192.0.2.8', 'cli').subject, '192.0.2.8');
    assert.equal(allowlisted({ ip: '192.0.2.8' }), false);
    assert.equal(inForce, settings.policy, 'back to the config policy itself');
    list.close();
    await store.close();
  });

  test('refusals: too broad without force, already in the config, not there, a typo, a full list', async () => {
    assert.throws(() => list.add({ subject: '0.0.0.0/0' }, 'cli'), { statusCode: 400, message: /--force/ });
    assert.equal(list.add({ subject: '2001:db8::/8', force: true }, 'cli').subject, '2000::/8');
    assert.throws(() => list.add({ subject: '10.9.0.0/16' }, 'cli'), {
      statusCode: 409,
      message: /already allowlisted by the config file \(allowlist\.networks: 10\.0\.0\.0\/8\)/,
    });
    assert.throws(() => list.remove('10.0.0.0/8', 'cli'), { statusCode: 409, message: /remove it there and reload/ });
    assert.throws(() => list.remove('192.0.2.1', 'cli'), { statusCode: 404 });
    assert.throws(() => list.add({ subject: '192.0.2.256' }, 'cli'), { statusCode: 400, message: /not a valid IP/ });
    assert.throws(() => list.add({ subject: 'a b@example.org' }, 'cli'), { statusCode: 400 });
    for (let i = 1; i < MAX_RUNTIME_ENTRIES; i++) list.add({ subject: `100.64.${i >> 8}.${i & 255}` }, 'cli');
    assert.throws(() => list.add({ subject: '100.65.0.1' }, 'cli'), { statusCode: 409, message: /its most/ });
    // Replacing an entry is not a new one.
    assert.equal(list.add({ subject: '100.64.0.1', reason: 'renewed' }, 'cli').reason, 'renewed');
    list.close();
    await store.close();
  });

  test('no runtime entries: the config policy itself (the plan index is not rebuilt)', () => {
    assert.equal(withRuntimeEntries(settings, []), settings.policy);
    list.close();
  });
});
