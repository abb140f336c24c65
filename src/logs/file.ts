/*
 * logs/file — follows one log file as `tail -F` would, without losing or
 * repeating a line:
 *
 * - First start: from the end (what happened before is not counted). The
 *   position (device, inode, offset of the last whole line, the file's first
 *   bytes) is saved once the events of what was read are decided (at the
 *   end of each read, every MiB while catching up), so a restart goes on
 *   where the last one stopped.
 * - Rotation by rename (logrotate's default, `postfix logrotate`): the path
 *   names a new file. The old one is read to its end, and kept open and read
 *   for `drainMs` more, since its writer goes on writing to it until it
 *   reopens; the new file is read from its start.
 * - Rotation by copytruncate: the file shrinks (or its first bytes change).
 *   What was written after the last read went into the copy: the sibling
 *   (mail.log.1, mail.log-20261127) starting with the same bytes is read from
 *   the old offset to its end, then the file from its start.
 * - Rotated while mailwarden was stopped: the saved file is found among the
 *   siblings by inode (renamed) or by its first bytes (copied), and read on.
 *
 * Polled (`pollMs`): two stat calls per poll, and nothing read when nothing
 * grew; inotify would miss renames on some filesystems and gains little at
 * these rates.
 */
import { open, readdir, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { LineSplitter } from './lines.js';

/** Where a source was: the daemon's SQLite `meta` table (store/sqlite.ts). */
export interface Positions {
  getMeta(key: string): string | undefined;
  setMeta(key: string, value: string): void;
}

export interface FileFollowerOptions {
  path: string;
  /** The key of its position in `positions`. */
  key: string;
  positions: Positions;
  maxLine: number;
  pollMs: number;
  /** How long a renamed file is still read after the path names a new one. */
  drainMs: number;
  onLine: (line: string) => void;
  /** Resolves when the events of the lines passed so far are decided; only then is the position saved. */
  settled: () => Promise<void>;
  warn: (kind: string, fields: object, msg: string) => void;
  now: () => number;
}

interface Saved {
  dev: number;
  ino: number;
  offset: number;
  /** The file's first bytes (base64): a copy of it starts with them too, a new file does not. */
  head: string;
}

interface Tail {
  fh: FileHandle;
  dev: number;
  ino: number;
  /** Bytes read; the last whole line ends `splitter.pending` before it. */
  offset: number;
  /** The size seen last: nothing to do while it stays. */
  size: number;
  splitter: LineSplitter;
  head: Buffer;
  /** A renamed file: read until then. */
  until: number;
}

const HEAD_BYTES = 128;
const CHUNK = 64 * 1024;
const SAVE_EVERY = 1024 * 1024;
const COMPRESSED = /\.(gz|bz2|xz|zst|lz4|z)$/i;

export class FileFollower {
  readonly stats = { lines: 0, rotations: 0, truncations: 0, readErrors: 0 };
  private cur: Tail | undefined;
  private old: Tail | undefined;
  /** The next open is the first since start: it resumes from the saved position (or the end). */
  private first = true;
  private lastSaved = '';
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly buf = Buffer.allocUnsafe(CHUNK);
  private readonly o: FileFollowerOptions;

  constructor(o: FileFollowerOptions) {
    this.o = o;
  }

  get state(): 'following' | 'waiting' | 'stopped' {
    return this.stopped ? 'stopped' : this.cur ? 'following' : 'waiting';
  }

  /** The offset of the last whole line read in the current file. */
  get offset(): number {
    return this.cur ? this.cur.offset - this.cur.splitter.pending : 0;
  }

  get tooLong(): number {
    return (this.cur?.splitter.tooLong ?? 0) + (this.old?.splitter.tooLong ?? 0);
  }

  start(): void {
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    for (const t of [this.cur, this.old]) await t?.fh.close().catch(() => undefined);
    this.cur = undefined;
    this.old = undefined;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.poll().finally(() => {
        this.running = undefined;
        this.schedule(this.o.pollMs);
      });
    }, ms);
  }

  private async poll(): Promise<void> {
    try {
      if (this.old) await this.drainOld(this.old);
      if (!this.cur) await this.openCurrent();
      if (this.cur) await this.follow(this.cur);
    } catch (err) {
      this.stats.readErrors++;
      // The position is kept: the next poll tries again from it.
      this.o.warn('log-read', { path: this.o.path, err: String(err) }, `cannot read ${this.o.path}; trying again`);
    }
  }

  private async openCurrent(): Promise<void> {
    const { path } = this.o;
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      if (this.first) {
        // Rotated away while mailwarden was stopped (read on in the rotated file), or never there yet:
        // either way, all of it is new when it appears.
        const saved = this.saved();
        if (saved) await this.readRotated(saved);
        this.first = false;
        this.o.warn('log-missing', { path }, `${path} does not exist (yet); waiting for it`);
      }
      return;
    }
    const st = await fh.stat();
    const head = await readHead(fh, st.size);
    let offset = 0;
    if (this.first) {
      this.first = false;
      const saved = this.saved();
      if (saved === undefined) offset = st.size;
      else if (saved.dev === st.dev && saved.ino === st.ino && st.size >= saved.offset && sameStart(head, saved.head))
        offset = saved.offset;
      else await this.readRotated(saved);
    }
    this.cur = this.tail(fh, st, offset, head, Infinity);
    this.save(this.cur);
  }

  /** A file read from `offset` on, nothing of it split into lines yet. */
  private tail(fh: FileHandle, st: { dev: number; ino: number }, offset: number, head: Buffer, until: number): Tail {
    return {
      fh,
      dev: st.dev,
      ino: st.ino,
      offset,
      size: offset,
      splitter: new LineSplitter(this.o.maxLine),
      head,
      until,
    };
  }

  private async follow(cur: Tail): Promise<void> {
    const size = (await cur.fh.stat()).size;
    if (size !== cur.size) {
      const start = await readHead(cur.fh, size);
      if (size < cur.offset || !sameStart(start, cur.head.toString('base64'))) {
        // Truncated in place (copytruncate): what came after the last read is in the copy.
        this.stats.truncations++;
        await this.readCopy(cur);
        cur.offset = 0;
        cur.splitter.reset();
      }
      cur.head = start;
      await this.read(cur, true);
    }
    const st = await stat(this.o.path).catch(() => undefined);
    if (st !== undefined && st.ino === cur.ino && st.dev === cur.dev) return;
    // Renamed away: the path names another file, or none yet.
    this.stats.rotations++;
    if (this.old) await this.closeOld(this.old);
    cur.until = this.o.now() + this.o.drainMs;
    this.old = cur;
    this.cur = undefined;
    await this.openCurrent();
    if (this.cur) await this.read(this.cur, true);
  }

  private async drainOld(old: Tail): Promise<void> {
    const size = (await old.fh.stat()).size;
    if (size > old.size) await this.read(old, false);
    if (this.o.now() >= old.until) await this.closeOld(old);
  }

  private async closeOld(old: Tail): Promise<void> {
    await this.read(old, false);
    await old.fh.close().catch(() => undefined);
    if (this.old === old) this.old = undefined;
  }

  /**
   * Reads `t` to its end, line by line. The current file's position is saved at the end, and every
   * SAVE_EVERY bytes while catching up (a crash then reads at most that much again).
   */
  private async read(t: Tail, save: boolean): Promise<void> {
    let unsaved = 0;
    for (;;) {
      const { bytesRead } = await t.fh.read(this.buf, 0, CHUNK, t.offset);
      if (bytesRead === 0) break;
      t.offset += bytesRead;
      t.splitter.push(this.buf.subarray(0, bytesRead), this.line);
      unsaved += bytesRead;
      if (unsaved >= SAVE_EVERY) {
        await this.o.settled();
        if (save) this.save(t);
        unsaved = 0;
      }
      if (this.stopped) break;
    }
    await this.o.settled();
    if (save) this.save(t);
    t.size = t.offset;
  }

  private readonly line = (line: string): void => {
    this.stats.lines++;
    this.o.onLine(line);
  };

  private saved(): Saved | undefined {
    const raw = this.o.positions.getMeta(this.o.key);
    if (raw === undefined) return undefined;
    try {
      const s = JSON.parse(raw) as Saved;
      return Number.isSafeInteger(s.offset) && s.offset >= 0 && typeof s.head === 'string' ? s : undefined;
    } catch {
      return undefined;
    }
  }

  private save(t: Tail): void {
    const record = JSON.stringify({
      dev: t.dev,
      ino: t.ino,
      offset: t.offset - t.splitter.pending,
      head: t.head.toString('base64'),
    } satisfies Saved);
    if (record === this.lastSaved) return;
    try {
      this.o.positions.setMeta(this.o.key, record);
      this.lastSaved = record;
    } catch (err) {
      // The data directory failing is reported by the store; here it only means a restart may read some lines again.
      this.o.warn(
        'log-position',
        { path: this.o.path, err: String(err) },
        `cannot save the position in ${this.o.path}`,
      );
    }
  }

  /** A file saved before a restart, since rotated: read on from the saved offset. */
  private async readRotated(saved: Saved): Promise<void> {
    const found = await this.sibling(
      (st, head) =>
        (saved.dev === st.dev && saved.ino === st.ino) ||
        (st.size >= saved.offset && saved.head !== '' && sameStart(head, saved.head)),
    );
    if (found) await this.readFrom(found, saved.offset);
  }

  /** The copy copytruncate made of `cur`: read from where `cur` was read to. */
  private async readCopy(cur: Tail): Promise<void> {
    const offset = cur.offset - cur.splitter.pending;
    const head = cur.head.toString('base64');
    const found = await this.sibling((st, h) => st.ino !== cur.ino && st.size >= offset && sameStart(h, head));
    if (found) await this.readFrom(found, offset);
  }

  private async readFrom(path: string, offset: number): Promise<void> {
    const fh = await open(path, 'r');
    try {
      const st = await fh.stat();
      await this.read(this.tail(fh, st, offset, Buffer.alloc(0), 0), false);
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  /** The newest rotated sibling (`<name>.1`, `<name>-20261127`; not compressed ones) that `match` accepts. */
  private async sibling(
    match: (st: { dev: number; ino: number; size: number }, head: Buffer) => boolean,
  ): Promise<string | undefined> {
    const dir = dirname(this.o.path);
    const name = basename(this.o.path);
    const names = (await readdir(dir).catch(() => [] as string[])).filter(
      (n) => n !== name && n.startsWith(name) && !COMPRESSED.test(n),
    );
    const found: Array<{ path: string; mtime: number }> = [];
    for (const n of names) {
      const path = join(dir, n);
      const fh = await open(path, 'r').catch(() => undefined);
      if (!fh) continue;
      try {
        const st = await fh.stat();
        if (st.isFile() && match(st, await readHead(fh, st.size))) found.push({ path, mtime: st.mtimeMs });
      } finally {
        await fh.close().catch(() => undefined);
      }
    }
    return found.sort((a, b) => b.mtime - a.mtime)[0]?.path;
  }
}

async function readHead(fh: FileHandle, size: number): Promise<Buffer> {
  const b = Buffer.alloc(Math.min(size, HEAD_BYTES));
  if (b.length > 0) await fh.read(b, 0, b.length, 0);
  return b;
}

/** One of the two starts is a prefix of the other (a file's first bytes are kept as it grows past them). */
function sameStart(head: Buffer, saved: string): boolean {
  const other = Buffer.from(saved, 'base64');
  const n = Math.min(head.length, other.length);
  return head.subarray(0, n).equals(other.subarray(0, n));
}
