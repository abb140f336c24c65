/*
 * Schema versions: a database written by release 0.1.0 (test/fixtures/db/schema-0.1.0.sqlite, made
 * by that release's code before schema versions existed) opens in this one with every ban,
 * suspension, offence and audit row, and takes the new steps; a database from a newer release is
 * refused without being touched, at the store and by `mailwarden serve` (one line, exit 2).
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { backupDatabase } from '../../src/store/backup.js';
import { MemoryStore } from '../../src/store/memory.js';
import { migrate, MIGRATIONS, SchemaError, SqlitePersistence } from '../../src/store/sqlite.js';
import { runCli } from '../helpers/daemon.js';
import { REPO } from '../helpers/postfix.js';

const FIXTURE = join(REPO, 'test', 'fixtures', 'db', 'schema-0.1.0.sqlite');
/** When the fixture was written (scripted: 2026-12-01T00:00Z). */
const WRITTEN = Date.UTC(2026, 11, 1);
const HOUR = 3_600_000;

describe('schema migrations', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-migrate-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const copy = (name: string): string => {
    const f = join(dir, name);
    copyFileSync(FIXTURE, f);
    return f;
  };
  const version = (file: string): number => {
    const db = new Database(file, { readonly: true });
    try {
      return db.pragma('user_version', { simple: true }) as number;
    } finally {
      db.close();
    }
  };

  test('the fixture is what 0.1.0 wrote: no version, no allowlist table', () => {
    const db = new Database(FIXTURE, { readonly: true });
    try {
      assert.equal(db.pragma('user_version', { simple: true }), 0);
      const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as Array<{ name: string }>)
        .map((t) => t.name)
        .sort();
      assert.ok(tables.includes('bans') && !tables.includes('allowlist'), tables.join(','));
    } finally {
      db.close();
    }
  });

  test("a 0.1.0 database opens with all its state, and takes this release's steps", async () => {
    const file = copy('old.sqlite');
    const now = WRITTEN + HOUR;
    const store = new MemoryStore({ file, maxKeys: 1000, lookbackMs: 30 * 24 * HOUR, now: () => now });
    try {
      assert.deepEqual(
        (await store.listBans(now)).map((b) => [b.subject, b.rule, b.until]).sort(),
        [
          ['198.51.100.0/24', 'manual', WRITTEN + 365 * 24 * HOUR],
          ['203.0.113.7', 'auth-guess-ban', WRITTEN + 24 * HOUR],
        ],
      );
      assert.equal(store.localBan?.('198.51.100.9', now)?.subject, '198.51.100.0/24', 'and enforced');
      assert.deepEqual(
        (await store.listSuspensions(now)).map((s) => s.user),
        ['alice@example.org'],
      );
      // The offence history escalates the next ban as before the upgrade.
      assert.equal(store.db.offencesSince('203.0.113.7', WRITTEN - 1), 1);
      const audit = await store.auditSearch({ since: 0, limit: 10, offset: 0 });
      assert.equal(audit.total, 3);
      assert.deepEqual(audit.items[0]?.evidence, { until: WRITTEN + 2 * HOUR });
      // The new step's table works.
      store.putAllow({
        subject: '192.0.2.0/24',
        kind: 'network',
        since: now,
        until: null,
        reason: 'x',
        actor: 'cli',
      });
      assert.equal(store.allowEntries(now).length, 1);
    } finally {
      await store.close();
    }
    assert.equal(version(file), MIGRATIONS.length);
    // Opening again changes nothing.
    const again = new SqlitePersistence(file);
    try {
      assert.equal(again.loadBans(now).length, 2);
      assert.equal(again.loadAllow(now).length, 1);
    } finally {
      again.close();
    }
  });

  test('a fresh database gets every step; migrating again is a no-op', () => {
    const db = new Database(':memory:');
    try {
      assert.equal(migrate(db), 0);
      assert.equal(db.pragma('user_version', { simple: true }), MIGRATIONS.length);
      assert.equal(migrate(db), MIGRATIONS.length);
    } finally {
      db.close();
    }
  });

  test('a database from a newer release is refused and left as it was', () => {
    const file = copy('newer.sqlite');
    const db = new Database(file);
    db.pragma(`user_version = ${MIGRATIONS.length + 1}`);
    db.pragma('wal_checkpoint(TRUNCATE)');
    db.close();
    const bytes = readFileSync(file);
    assert.throws(
      () => new SqlitePersistence(file),
      (err: unknown) =>
        err instanceof SchemaError &&
        /schema version \d+, written by a newer mailwarden; this one knows versions up to \d+/.test(err.message),
    );
    assert.deepEqual(readFileSync(file), bytes, 'not a byte changed');
  });

  test('serve on a newer database: one line, exit 2, nothing started', async () => {
    const data = join(dir, 'newer-data');
    const file = join(data, 'mailwarden.sqlite');
    mkdirSync(data, { mode: 0o700 });
    copyFileSync(join(dir, 'newer.sqlite'), file);
    const r = await runCli(['serve'], {
      MAILWARDEN_DATA: data,
      MAILWARDEN_POSTFIX_LISTEN: '127.0.0.1:0',
      MAILWARDEN_DOVECOT_LISTEN: '127.0.0.1:0',
      MAILWARDEN_ADMIN_LISTEN: '127.0.0.1:0',
    });
    assert.equal(r.code, 2, r.stderr);
    assert.deepEqual(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /^mailwarden: .*mailwarden\.sqlite has schema version \d+, written by a newer mailwarden/);
  });

  test('backup of a 0.1.0 database copies it as it is (no migration of the copy)', async () => {
    const r = await backupDatabase(copy('old-for-backup.sqlite'), join(dir, 'old-backup.sqlite'));
    assert.deepEqual(
      [r.schemaVersion, r.bans, r.suspensions, r.allowlist, r.auditRows],
      [0, 2, 1, 0, 3],
    );
  });
});
