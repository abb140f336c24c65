/* The write queue in front of SQLite: order kept, nothing lost, a person's write now or never. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DiskWrites, PersistenceError, type DiskHealth } from '../../src/store/disk-writes.js';

/** A "disk" that fails while `broken` is set, and records what reached it. */
function disk(): { written: string[]; broken: boolean; put: (s: string) => () => void } {
  const d = {
    written: [] as string[],
    broken: false,
    put: (s: string) => () => {
      if (d.broken) throw new Error('SQLITE_FULL: database or disk is full');
      d.written.push(s);
    },
  };
  return d;
}

void describe('DiskWrites', () => {
  void test('writes wait in order behind a failure and drain in order when the disk is back', () => {
    const d = disk();
    const changes: DiskHealth[] = [];
    const w = new DiskWrites({ now: () => 1000, onChange: (h) => changes.push(h) });
    assert.equal(w.write(d.put('a')), true);
    d.broken = true;
    assert.equal(w.write(d.put('ban x')), false);
    d.broken = false;
    // Written after the disk came back, but must wait behind the ban (a lift before its ban would undo nothing).
    assert.equal(w.write(d.put('unban x')), false);
    assert.deepEqual(w.health(), {
      ok: false,
      queued: 2,
      dropped: 0,
      error: 'SQLITE_FULL: database or disk is full',
      since: 1000,
    });
    assert.equal(w.drain(), true);
    assert.deepEqual(d.written, ['a', 'ban x', 'unban x']);
    assert.equal(w.health().ok, true);
    assert.deepEqual(
      changes.map((h) => h.ok),
      [false, true],
    );
    w.close();
  });

  void test("a person's write is on disk now or refused, never queued", () => {
    const d = disk();
    const w = new DiskWrites({ now: () => 0 });
    d.broken = true;
    assert.throws(() => w.now(d.put('manual ban')), PersistenceError);
    assert.equal(w.health().queued, 0);
    d.broken = false;
    w.now(d.put('manual ban'));
    assert.deepEqual(d.written, ['manual ban']);
    w.close();
  });

  void test('past the bound, audit rows are dropped (oldest first) and counted; bans never', () => {
    const d = disk();
    const w = new DiskWrites({ now: () => 0, maxQueued: 3 });
    d.broken = true;
    w.write(d.put('ban 1'));
    w.write(d.put('audit 1'), true);
    w.write(d.put('audit 2'), true);
    w.write(d.put('ban 2'));
    w.write(d.put('ban 3'));
    d.broken = false;
    w.drain();
    assert.deepEqual(d.written, ['ban 1', 'ban 2', 'ban 3']);
    assert.equal(w.health().dropped, 2);
    w.close();
  });

  void test('retries on its own, with a timer that never holds the process', async () => {
    const d = disk();
    const w = new DiskWrites({ now: () => 0 });
    d.broken = true;
    w.write(d.put('ban'));
    d.broken = false;
    const end = Date.now() + 5000;
    while (!w.health().ok && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(d.written, ['ban']);
    w.close();
  });

  void test('an unwritable file at start is degraded for good, and refuses a person at once', () => {
    const d = disk();
    const w = new DiskWrites({ now: () => 5, unwritable: 'unable to open database file' });
    assert.equal(w.health().ok, false);
    assert.match(w.health().error ?? '', /cannot write the data directory \(unable to open database file\)/);
    assert.throws(() => w.now(d.put('manual')), PersistenceError);
    w.close();
  });
});
