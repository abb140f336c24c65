/*
 * store/backup — `mailwarden backup FILE`: a consistent copy of the embedded store's SQLite file,
 * made with SQLite's online backup API while the daemon runs (its writes go on; the copy is of
 * one moment), then checked (integrity_check) and counted. Restore is a file copy with the
 * daemon stopped (docs/OPERATIONS.md).
 *
 * The CLI usually runs as root while the daemon runs as its own user: a -wal or -shm file this
 * process creates beside the database is given back to the database's owner, so the daemon can
 * still open it.
 */
import { chownSync, existsSync, statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { MIGRATIONS } from './sqlite.js';

export interface BackupReport {
  file: string;
  bytes: number;
  schemaVersion: number;
  bans: number;
  suspensions: number;
  allowlist: number;
  auditRows: number;
}

/** Counts of a database file's tables and its schema version, after an integrity check. */
export function inspectDatabase(file: string): Omit<BackupReport, 'file' | 'bytes'> {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const check = db.pragma('integrity_check', { simple: true }) as string;
    if (check !== 'ok') throw new Error(`${file} failed SQLite's integrity check: ${check}`);
    const n = (table: string): number => (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
    const version = db.pragma('user_version', { simple: true }) as number;
    return {
      schemaVersion: version,
      bans: n('bans'),
      suspensions: n('suspensions'),
      allowlist: version >= 2 ? n('allowlist') : 0,
      auditRows: n('audit'),
    };
  } finally {
    db.close();
  }
}

export async function backupDatabase(source: string, dest: string): Promise<BackupReport> {
  if (!existsSync(source)) throw new Error(`no database at ${source}; is this the daemon's data directory?`);
  if (existsSync(dest)) throw new Error(`${dest} exists; give a new file name (a backup never overwrites)`);
  const owner = statSync(source);
  const sides = ['-wal', '-shm'].map((x) => source + x);
  const had = sides.map((f) => existsSync(f));
  const db = new Database(source, { fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > MIGRATIONS.length) {
      throw new Error(`${source} has schema version ${version}, newer than this mailwarden's ${MIGRATIONS.length}`);
    }
    await db.backup(dest);
  } finally {
    db.close();
    sides.forEach((f, i) => {
      if (!had[i] && existsSync(f)) chownSync(f, owner.uid, owner.gid);
    });
  }
  return { file: dest, bytes: statSync(dest).size, ...inspectDatabase(dest) };
}
