/*
 * Following a file: from the end on first start, on from the saved position
 * after a restart (a partial last line included), across rotation by rename
 * (the writer still writing to the old file for a while) and by
 * copytruncate (lines written between the last read and the copy are in the
 * copy), live and while stopped, and with a giant line in the middle. Every
 * numbered line must come out exactly once.
 */
import assert from 'node:assert/strict';
import {
  appendFileSync,
  closeSync,
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  renameSync,
  rmSync,
  truncateSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { FileFollower } from '../../src/logs/file.js';
import { MapPositions } from './positions.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** What logrotate's copytruncate does: copy the file, then truncate it in place. */
function copytruncate(path: string, copy: string): void {
  copyFileSync(path, copy);
  truncateSync(path, 0);
}

describe('logs: FileFollower', () => {
  const root = mkdtempSync(join(tmpdir(), 'mw-follow-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  let n = 0;

  const numbered = (from: number, to: number, tag = 'line') =>
    Array.from({ length: to - from + 1 }, (_, i) => `${tag} ${from + i}\n`).join('');

  /** A follower of a fresh file in its own directory, collecting lines; `restart` makes a new one with the same positions. */
  function setup(opts: { pollMs?: number; drainMs?: number; create?: boolean } = {}) {
    const dir = join(root, `case${++n}`);
    mkdirSync(dir);
    const path = join(dir, 'mail.log');
    if (opts.create !== false) appendFileSync(path, 'old line before start 1\nold line before start 2\n');
    const positions = new MapPositions();
    const lines: string[] = [];
    const warnings: string[] = [];
    const make = () =>
      new FileFollower({
        path,
        key: 'log:file',
        positions,
        maxLine: 1000,
        pollMs: opts.pollMs ?? 20,
        drainMs: opts.drainMs ?? 300,
        onLine: (l) => lines.push(l),
        settled: () => Promise.resolve(),
        warn: (kind) => warnings.push(kind),
        now: Date.now,
      });
    let f = make();
    f.start();
    return {
      path,
      lines,
      warnings,
      get f() {
        return f;
      },
      restart: async () => {
        await f.stop();
        f = make();
        f.start();
      },
      stop: () => f.stop(),
      /** Appends lines 1..`to` to a file that had none yet and waits until all are in. */
      appendFirst: async (to: number) => {
        appendFileSync(path, numbered(1, to));
        await until(`${to} lines`, () => lines.length === to);
      },
      /** Waits until `count` lines are in, then `quietMs` more, so that a line read twice would show. */
      settled: async (count: number, quietMs: number, timeoutMs?: number) => {
        await until(`${count} lines`, () => lines.length >= count, timeoutMs);
        await sleep(quietMs);
      },
    };
  }

  /** setup(), once the follower has reached the end of the file. */
  async function following(opts: Parameters<typeof setup>[0] = {}) {
    const s = setup(opts);
    await until('following', () => s.f.state === 'following');
    return s;
  }

  test('from the end on first start; a restart neither recounts nor misses, a partial line included', async () => {
    const s = await following();
    await s.appendFirst(3);
    appendFileSync(s.path, 'line 4\nline 5 is half');
    await until('line 4', () => s.lines.length === 4);
    await s.stop();
    appendFileSync(s.path, ' a line\nline 6\n');
    await s.restart();
    await s.settled(6, 100);
    assert.deepEqual(s.lines, ['line 1', 'line 2', 'line 3', 'line 4', 'line 5 is half a line', 'line 6']);
    await s.stop();
  });

  test('rotation by rename, live: the old file is read to its end, and on while its writer still writes to it', async () => {
    const s = await following({ drainMs: 400 });
    const fd = openSync(s.path, 'a');
    writeSync(fd, numbered(1, 50));
    await until('50 lines', () => s.lines.length === 50);
    writeSync(fd, numbered(51, 60));
    renameSync(s.path, `${s.path}.1`);
    writeSync(fd, numbered(61, 70)); // the writer has not reopened yet
    await sleep(60);
    appendFileSync(s.path, numbered(71, 80)); // a new file at the path
    writeSync(fd, numbered(81, 90)); // still the old one, within the drain time
    closeSync(fd);
    await s.settled(90, 100);
    assert.deepEqual([...s.lines].sort(byNumber), numberedList(1, 90));
    assert.equal(s.f.stats.rotations, 1);
    await s.stop();
  });

  test('rotation by copytruncate, live: what was written after the last read is read from the copy', async () => {
    const s = await following({ pollMs: 300 });
    await s.appendFirst(10);
    // Right after a poll: these lines are written, copied and truncated away before the next one.
    appendFileSync(s.path, numbered(11, 20));
    copytruncate(s.path, `${s.path}.1`);
    appendFileSync(s.path, numbered(21, 25));
    await s.settled(25, 400);
    assert.deepEqual([...s.lines].sort(byNumber), numberedList(1, 25));
    assert.equal(s.f.stats.truncations, 1);
    await s.stop();
  });

  test('truncated and grown past the old size between two polls: told by the first bytes', async () => {
    const s = await following({ pollMs: 300 });
    await s.appendFirst(2);
    copytruncate(s.path, `${s.path}.1`);
    appendFileSync(s.path, numbered(3, 40, 'a longer line than the ones before'));
    await s.settled(40, 400);
    assert.equal(s.lines.length, 40);
    assert.equal(s.f.stats.truncations, 1);
    await s.stop();
  });

  /**
   * Lines 1-5 read, 6-8 written while stopped, the file rotated by `rotate`, 9-10 written to the new one:
   * after the restart all 10 come out once, in order.
   */
  async function rotatedWhileStopped(rotate: (path: string) => void): Promise<void> {
    const s = await following();
    await s.appendFirst(5);
    await s.stop();
    appendFileSync(s.path, numbered(6, 8));
    rotate(s.path);
    appendFileSync(s.path, numbered(9, 10));
    await s.restart();
    await s.settled(10, 100);
    assert.deepEqual(s.lines, numberedList(1, 10));
    await s.stop();
  }

  test('rotated by rename while stopped: the rest of the renamed file, then the new one', () =>
    rotatedWhileStopped((path) => {
      renameSync(path, `${path}-20261127`);
      appendFileSync(`${path}.2.gz`, 'not read: compressed\n');
    }));

  test('rotated by copytruncate while stopped: the copy from the saved offset, then the file from its start', () =>
    rotatedWhileStopped((path) => copytruncate(path, `${path}.1`)));

  test('a missing file is waited for, then read from its start; a giant line is dropped and counted', async () => {
    const s = setup({ create: false });
    await until('a warning', () => s.warnings.includes('log-missing'));
    assert.equal(s.f.state, 'waiting');
    appendFileSync(s.path, `line 1\n${'x'.repeat(5_000_000)}\nline 2\n`);
    await until('2 lines', () => s.lines.length === 2);
    assert.deepEqual(s.lines, ['line 1', 'line 2']);
    assert.equal(s.f.tooLong, 1);
    await s.stop();
  });

  test('a steady writer, rotated both ways in the middle: every line exactly once', async () => {
    const s = await following({ pollMs: 15, drainMs: 200 });
    let fd = openSync(s.path, 'a');
    let i = 0;
    const write = async (count: number) => {
      for (let k = 0; k < count; k++) {
        writeSync(fd, `line ${++i}\n`);
        if (k % 20 === 0) await sleep(1);
      }
    };
    await write(2000);
    renameSync(s.path, `${s.path}.1`);
    await write(300); // the writer's old descriptor
    closeSync(fd);
    fd = openSync(s.path, 'a'); // it reopens: a new file
    await write(2000);
    copytruncate(s.path, `${s.path}.0`);
    await write(2000);
    closeSync(fd);
    await s.settled(i, 300, 10_000);
    assert.equal(s.lines.length, i, 'no line twice');
    assert.deepEqual([...s.lines].sort(byNumber), numberedList(1, i));
    await s.stop();
  });
});

function numberOf(l: string): number {
  return Number(l.slice(l.lastIndexOf(' ') + 1));
}

function byNumber(a: string, b: string): number {
  return numberOf(a) - numberOf(b);
}

function numberedList(from: number, to: number): string[] {
  return Array.from({ length: to - from + 1 }, (_, i) => `line ${from + i}`);
}
