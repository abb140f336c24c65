/*
 * store/sqlite — durable state of the embedded store in one SQLite file
 * (better-sqlite3, WAL): bans, suspensions, offence history (for escalation),
 * the audit trail, and periodic snapshots of counters.
 *
 * Writes are synchronous and happen before a decision is returned, so a
 * `kill -9` right after a ban keeps the ban (WAL with synchronous=NORMAL is
 * durable against a process crash; a power loss may lose the last commit).
 * Counter snapshots are written in chunks so a large table never stalls the
 * event loop for long.
 *
 * In cluster mode (store/resilient.ts) the same file is the node's local
 * memory: `pending` queues the bans, suspensions and lifts made while Redis
 * was unreachable until they are pushed back, and `meta` keeps how far the
 * local audit trail has been pushed.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { BanRecord, SuspensionRecord } from '../engine/types.js';
import type { AllowRecord, AuditKind, AuditPage, AuditQuery, AuditRow } from './types.js';

/**
 * The schema, one step per release that changed it; the file's `user_version` says how many
 * steps it has taken. Step 1 is release 0.1.0's schema as it was (it had no version: a file
 * with tables and user_version 0 is at step 1, and its IF NOT EXISTS statements change nothing).
 * A step is applied in one transaction with the version bump, so a crash leaves the old schema.
 * Never edit a released step: add one.
 */
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS bans (subject TEXT PRIMARY KEY, since INTEGER NOT NULL, until INTEGER NOT NULL,
  rule TEXT NOT NULL, reason TEXT NOT NULL, offence INTEGER NOT NULL, actor TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS suspensions (user TEXT PRIMARY KEY, since INTEGER NOT NULL, until INTEGER NOT NULL,
  rule TEXT NOT NULL, reason TEXT NOT NULL, actor TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS offences (subject TEXT NOT NULL, time INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS offences_subject ON offences (subject, time);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL, kind TEXT NOT NULL,
  subject TEXT NOT NULL, rule TEXT NOT NULL, reason TEXT NOT NULL, actor TEXT NOT NULL, evidence TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_subject ON audit (subject, id);
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, tat REAL, members TEXT);
CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY AUTOINCREMENT, item TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);`,
  // 0.2.0: the runtime allowlist (`mailwarden allow add`), and the audit trail by time (`mailwarden audit --since`).
  `CREATE TABLE allowlist (subject TEXT PRIMARY KEY, kind TEXT NOT NULL, since INTEGER NOT NULL, until INTEGER,
  reason TEXT NOT NULL, actor TEXT NOT NULL);
CREATE INDEX audit_time ON audit (time);`,
];

/** The embedded store's file in the data directory. */
export const DATABASE_FILE = 'mailwarden.sqlite';

/** A database this release cannot use: written by a newer one (downgrade) — the file is left as it is. */
export class SchemaError extends Error {}

/** Brings a database to the newest schema; returns the version it had. */
export function migrate(db: Database.Database): number {
  const found = db.pragma('user_version', { simple: true }) as number;
  if (found > MIGRATIONS.length) {
    throw new SchemaError(
      `${db.name} has schema version ${found}, written by a newer mailwarden; this one knows versions up to ` +
        `${MIGRATIONS.length}. Run the newer release again, or restore a backup made by this one (docs/OPERATIONS.md)`,
    );
  }
  for (let v = found; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v] ?? '');
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
  return found;
}

interface AuditDbRow {
  id: number;
  time: number;
  kind: string;
  subject: string;
  rule: string;
  reason: string;
  actor: string;
  evidence: string;
}

/** A row read back from the file: evidence that does not parse is shown as it is, not thrown. */
function auditRow(r: AuditDbRow): AuditRow {
  let evidence: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(r.evidence);
    evidence =
      parsed && typeof parsed === 'object' && !Array.isArray(parsed)
        ? (parsed as Record<string, unknown>)
        : { unreadable: r.evidence.slice(0, 200) };
  } catch {
    evidence = { unreadable: String(r.evidence).slice(0, 200) };
  }
  return { ...r, kind: r.kind as AuditKind, evidence };
}

/**
 * A WAL database's file image, marked as a rollback-journal one (header bytes 18 and 19: the
 * file format's write and read versions, 2 for WAL) so SQLite can open it from memory, where
 * there is no -shm file. Known limit: what is still only in the -wal file is not in the image.
 */
function rollbackImage(image: Buffer): Buffer {
  if (image.length >= 20 && image[18] === 2 && image[19] === 2) {
    image[18] = 1;
    image[19] = 1;
  }
  return image;
}

export class SqlitePersistence {
  readonly db: Database.Database;
  /**
   * Why the file could not be opened for writing (a read-only or full data directory), when the
   * store runs from a copy in memory instead: the bans of the file's last checkpoint are
   * enforced, and nothing reaches the disk until the directory is fixed and mailwarden restarts.
   */
  readonly unwritable: string | undefined;
  private stmts;

  constructor(file: string) {
    let db: Database.Database;
    let unwritable: string | undefined;
    const prepare = (d: Database.Database): Database.Database => {
      d.pragma('synchronous = NORMAL');
      d.pragma('busy_timeout = 2000');
      migrate(d);
      return d;
    };
    try {
      if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
      db = new Database(file);
      try {
        db.pragma('journal_mode = WAL');
        prepare(db);
      } catch (err) {
        db.close();
        throw err;
      }
    } catch (err) {
      if (err instanceof SchemaError) throw err;
      unwritable = err instanceof Error ? err.message : String(err);
      db = prepare(existsSync(file) ? new Database(rollbackImage(readFileSync(file))) : new Database(':memory:'));
    }
    this.db = db;
    this.unwritable = unwritable;
    this.stmts = {
      putBan: db.prepare(
        'INSERT OR REPLACE INTO bans (subject, since, until, rule, reason, offence, actor) VALUES (@subject, @since, @until, @rule, @reason, @offence, @actor)',
      ),
      delBan: db.prepare('DELETE FROM bans WHERE subject = ?'),
      allBans: db.prepare('SELECT * FROM bans WHERE until > ?'),
      putSusp: db.prepare(
        'INSERT OR REPLACE INTO suspensions (user, since, until, rule, reason, actor) VALUES (@user, @since, @until, @rule, @reason, @actor)',
      ),
      delSusp: db.prepare('DELETE FROM suspensions WHERE user = ?'),
      allSusp: db.prepare('SELECT * FROM suspensions WHERE until > ?'),
      addOffence: db.prepare('INSERT INTO offences (subject, time) VALUES (?, ?)'),
      countOffences: db.prepare('SELECT count(*) AS n FROM offences WHERE subject = ? AND time > ?'),
      pruneOffences: db.prepare('DELETE FROM offences WHERE time <= ?'),
      pruneBans: db.prepare('DELETE FROM bans WHERE until <= ?'),
      pruneSusp: db.prepare('DELETE FROM suspensions WHERE until <= ?'),
      pruneAllow: db.prepare('DELETE FROM allowlist WHERE until <= ?'),
      audit: db.prepare(
        'INSERT INTO audit (time, kind, subject, rule, reason, actor, evidence) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      allCounters: db.prepare('SELECT key, tat, members FROM counters'),
      maxAudit: db.prepare('SELECT coalesce(max(id), 0) AS n FROM audit'),
      auditAfter: db.prepare('SELECT * FROM audit WHERE id > ? ORDER BY id LIMIT ?'),
      addPending: db.prepare('INSERT INTO pending (item) VALUES (?)'),
      allPending: db.prepare('SELECT id, item FROM pending ORDER BY id'),
      delPending: db.prepare('DELETE FROM pending WHERE id <= ?'),
      countPending: db.prepare('SELECT count(*) AS n FROM pending'),
      getMeta: db.prepare('SELECT value FROM meta WHERE key = ?'),
      putMeta: db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)'),
      putAllow: db.prepare(
        'INSERT OR REPLACE INTO allowlist (subject, kind, since, until, reason, actor) VALUES (@subject, @kind, @since, @until, @reason, @actor)',
      ),
      delAllow: db.prepare('DELETE FROM allowlist WHERE subject = ?'),
      allAllow: db.prepare('SELECT * FROM allowlist WHERE until IS NULL OR until > ? ORDER BY since'),
      clearBans: db.prepare('DELETE FROM bans'),
      clearSusp: db.prepare('DELETE FROM suspensions'),
    };
  }

  saveBan(ban: BanRecord, newOffence: boolean): void {
    this.db.transaction(() => {
      this.stmts.putBan.run(ban);
      if (newOffence) this.stmts.addOffence.run(ban.subject, ban.since);
    })();
  }

  deleteBan(subject: string): void {
    this.stmts.delBan.run(subject);
  }

  loadBans(now: number): BanRecord[] {
    return this.stmts.allBans.all(now) as BanRecord[];
  }

  saveSuspension(s: SuspensionRecord): void {
    this.stmts.putSusp.run(s);
  }

  deleteSuspension(user: string): void {
    this.stmts.delSusp.run(user);
  }

  loadSuspensions(now: number): SuspensionRecord[] {
    return this.stmts.allSusp.all(now) as SuspensionRecord[];
  }

  /** Offences of a subject after `since` (the escalation look-back). */
  offencesSince(subject: string, since: number): number {
    return (this.stmts.countOffences.get(subject, since) as { n: number }).n;
  }

  /** Drops expired bans, suspensions and allowlist entries, and offences older than the look-back. */
  prune(now: number, lookbackMs: number): void {
    this.stmts.pruneBans.run(now);
    this.stmts.pruneSusp.run(now);
    this.stmts.pruneAllow.run(now);
    this.stmts.pruneOffences.run(now - lookbackMs);
  }

  audit(
    time: number,
    kind: AuditKind,
    subject: string,
    rule: string,
    reason: string,
    actor: string,
    evidence: object,
  ): void {
    this.stmts.audit.run(time, kind, subject, rule, reason, actor, JSON.stringify(evidence));
  }

  auditFor(subjects: readonly string[], limit: number): AuditRow[] {
    if (subjects.length === 0) return [];
    const marks = subjects.map(() => '?').join(',');
    const rows = this.db
      .prepare(`SELECT * FROM audit WHERE subject IN (${marks}) ORDER BY id DESC LIMIT ?`)
      .all(...subjects, limit) as AuditDbRow[];
    return rows.map(auditRow);
  }

  /**
   * The audit trail newest first, from `since` on, optionally of one subject (an exact address,
   * network or user), paged; `total` counts every match.
   */
  auditSearch(q: AuditQuery): AuditPage {
    const where: string[] = ['time >= ?'];
    const args: Array<string | number> = [q.since];
    if (q.subject !== undefined) {
      where.push('subject = ?');
      args.push(q.subject);
    }
    const cond = where.join(' AND ');
    const total = (this.db.prepare(`SELECT count(*) AS n FROM audit WHERE ${cond}`).get(...args) as { n: number }).n;
    const rows = this.db
      .prepare(`SELECT * FROM audit WHERE ${cond} ORDER BY id DESC LIMIT ? OFFSET ?`)
      .all(...args, q.limit, q.offset) as AuditDbRow[];
    return { total, items: rows.map(auditRow) };
  }

  saveAllow(entry: AllowRecord): void {
    this.stmts.putAllow.run(entry);
  }

  deleteAllow(subject: string): void {
    this.stmts.delAllow.run(subject);
  }

  /** The runtime allowlist entries that have not expired. */
  loadAllow(now: number): AllowRecord[] {
    return this.stmts.allAllow.all(now) as AllowRecord[];
  }

  /**
   * Replaces the counter snapshot. Rows go to a side table in chunks (yielding to
   * the event loop between them), then one rename swaps it in, so a crash
   * mid-snapshot leaves the previous snapshot whole.
   */
  async saveCounters(rows: Iterable<[string, number | null, string | null]>, chunk = 5000): Promise<void> {
    this.db.exec(
      'DROP TABLE IF EXISTS counters_next; CREATE TABLE counters_next (key TEXT PRIMARY KEY, tat REAL, members TEXT)',
    );
    const put = this.db.prepare('INSERT OR REPLACE INTO counters_next (key, tat, members) VALUES (?, ?, ?)');
    const insert = this.db.transaction((batch: Array<[string, number | null, string | null]>) => {
      for (const r of batch) put.run(r[0], r[1], r[2]);
    });
    let batch: Array<[string, number | null, string | null]> = [];
    for (const r of rows) {
      batch.push(r);
      if (batch.length >= chunk) {
        insert(batch);
        batch = [];
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    if (batch.length) insert(batch);
    this.db.transaction(() => {
      this.db.exec('DROP TABLE counters; ALTER TABLE counters_next RENAME TO counters');
    })();
    this.stmts.allCounters = this.db.prepare('SELECT key, tat, members FROM counters');
  }

  /** The newest audit row's id (0 when there is none). */
  maxAuditId(): number {
    return (this.stmts.maxAudit.get() as { n: number }).n;
  }

  /** Audit rows after `id`, oldest first. */
  auditAfter(id: number, limit: number): AuditRow[] {
    const rows = this.stmts.auditAfter.all(id, limit) as AuditDbRow[];
    return rows.map(auditRow);
  }

  addPending(item: string): void {
    this.stmts.addPending.run(item);
  }

  pending(): Array<{ id: number; item: string }> {
    return this.stmts.allPending.all() as Array<{ id: number; item: string }>;
  }

  pendingCount(): number {
    return (this.stmts.countPending.get() as { n: number }).n;
  }

  /** Drops queued items up to and including `id`. */
  deletePending(id: number): void {
    this.stmts.delPending.run(id);
  }

  getMeta(key: string): string | undefined {
    return (this.stmts.getMeta.get(key) as { value: string } | undefined)?.value;
  }

  setMeta(key: string, value: string): void {
    this.stmts.putMeta.run(key, value);
  }

  /** Replaces every ban and suspension (a mirror of the shared store); offences are kept. */
  replaceBansAndSuspensions(bans: readonly BanRecord[], suspensions: readonly SuspensionRecord[]): void {
    this.db.transaction(() => {
      this.stmts.clearBans.run();
      this.stmts.clearSusp.run();
      for (const b of bans) this.stmts.putBan.run(b);
      for (const s of suspensions) this.stmts.putSusp.run(s);
    })();
  }

  loadCounters(): Array<{ key: string; tat: number | null; members: string | null }> {
    return this.stmts.allCounters.all() as Array<{ key: string; tat: number | null; members: string | null }>;
  }

  close(): void {
    this.db.close();
  }
}
