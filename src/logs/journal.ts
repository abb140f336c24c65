/*
 * logs/journal — follows the systemd journal through `journalctl --follow
 * --output=json` (spawned with its arguments, no shell), from the end on
 * first start, and after a restart from the cursor of the last entry whose
 * events were decided (`--after-cursor`). journalctl is started again when it
 * exits (with a growing pause); a cursor it cannot seek to is dropped, with a
 * warning, and it goes on from the end.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { LineSplitter } from './lines.js';
import type { Positions } from './file.js';

export interface JournalFollowerOptions {
  command: string;
  units: readonly string[];
  /** More arguments, e.g. `--file=/path/x.journal` or `--directory=/var/log/journal`. */
  args: readonly string[];
  key: string;
  positions: Positions;
  /** One entry: its SYSLOG_IDENTIFIER and MESSAGE. */
  onEntry: (identifier: string, message: string) => void;
  settled: () => Promise<void>;
  warn: (kind: string, fields: object, msg: string) => void;
}

/** An entry's JSON is a few hundred bytes; MESSAGE longer than 4 KiB is printed as null anyway. */
const MAX_ENTRY = 64 * 1024;
const RESTART_MS = [1_000, 2_000, 5_000, 10_000, 30_000];

interface Entry {
  MESSAGE?: unknown;
  SYSLOG_IDENTIFIER?: unknown;
  __CURSOR?: unknown;
}

export class JournalFollower {
  readonly stats = { entries: 0, badEntries: 0, restarts: 0 };
  private child: ChildProcess | undefined;
  private cursor: string | undefined;
  private savedCursor: string | undefined;
  private stopped = false;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private splitter = new LineSplitter(MAX_ENTRY);
  private readonly o: JournalFollowerOptions;

  constructor(o: JournalFollowerOptions) {
    this.o = o;
    this.cursor = this.savedCursor = o.positions.getMeta(o.key);
  }

  get state(): 'following' | 'waiting' | 'stopped' {
    return this.stopped ? 'stopped' : this.child ? 'following' : 'waiting';
  }

  get tooLong(): number {
    return this.splitter.tooLong;
  }

  /** The arguments journalctl is started with. */
  argv(): string[] {
    return [
      '--follow',
      '--output=json',
      '--output-fields=MESSAGE,SYSLOG_IDENTIFIER',
      '--no-pager',
      '--quiet',
      this.cursor === undefined ? '--lines=0' : `--after-cursor=${this.cursor}`,
      ...this.o.units.flatMap((u) => ['--unit', u]),
      ...this.o.args,
    ];
  }

  start(): void {
    if (this.stopped) return;
    const usedCursor = this.cursor;
    const received = this.stats.entries;
    let stderr = '';
    const child = spawn(this.o.command, this.argv(), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.splitter = new LineSplitter(MAX_ENTRY);
    child.stderr?.on('data', (c: Buffer) => {
      stderr = (stderr + c.toString()).slice(-1000);
    });
    child.stdout?.on('data', (c: Buffer) => {
      this.splitter.push(c, this.entry);
      // Wait for what this chunk started before reading on and saving the cursor.
      child.stdout?.pause();
      void this.o.settled().then(() => {
        this.save();
        child.stdout?.resume();
      });
    });
    child.on('error', (err) => {
      this.o.warn('journal', { command: this.o.command, err: err.message }, `cannot run ${this.o.command}`);
    });
    child.on('close', (code, signal) => {
      this.child = undefined;
      if (this.stopped) return;
      if (usedCursor !== undefined && this.stats.entries === received && /cursor/i.test(stderr)) {
        this.o.warn(
          'journal',
          { cursor: usedCursor, stderr: stderr.trim() },
          'journalctl refused the saved cursor; following from the end',
        );
        this.cursor = undefined;
      }
      this.failures = this.stats.entries > received ? 0 : this.failures + 1;
      const wait = RESTART_MS[Math.min(this.failures, RESTART_MS.length - 1)] as number;
      this.o.warn(
        'journal',
        { command: this.o.command, code, signal, stderr: stderr.trim() },
        `journalctl exited; starting it again in ${wait / 1000} s`,
      );
      this.stats.restarts++;
      this.timer = setTimeout(() => this.start(), wait);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const child = this.child;
    if (child) {
      const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
      child.kill('SIGTERM');
      const kill = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await closed;
      clearTimeout(kill);
    }
    await this.o.settled();
    this.save();
  }

  private readonly entry = (line: string): void => {
    let e: Entry;
    try {
      e = JSON.parse(line) as Entry;
    } catch {
      this.stats.badEntries++;
      return;
    }
    if (typeof e.__CURSOR === 'string') this.cursor = e.__CURSOR;
    this.stats.entries++;
    const message = textOf(e.MESSAGE);
    if (message !== undefined) this.o.onEntry(textOf(e.SYSLOG_IDENTIFIER) ?? '', message);
  };

  private save(): void {
    if (this.cursor === undefined || this.cursor === this.savedCursor) return;
    try {
      this.o.positions.setMeta(this.o.key, this.cursor);
      this.savedCursor = this.cursor;
    } catch (err) {
      this.o.warn('log-position', { err: String(err) }, 'cannot save the journal cursor');
    }
  }
}

/** A journal field: a string, or (not valid UTF-8) an array of bytes; null when too long to print. */
function textOf(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && v.every((b) => typeof b === 'number')) return Buffer.from(v).toString('utf8');
  return undefined;
}
