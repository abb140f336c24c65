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
import { FileFollower, type Positions } from '../../src/logs/file.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

class MapPositions implements Positions {
  readonly map = new Map<string, string>();
  getMeta(k: string): string | undefined {
    return this.map.get(k);
  }
  setMeta(k: string, v: string): void {
    this.map.set(k, v);
  }
}

describe('logs: FileFollower', () => {
  const root = mkdtempSync(join(tmpdir(), 'mw-follow-'));
  after(() => rmSync(root, { recursive: true, force: true }));
  let n = 0;

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
    };
  }

  const numbered = (from: number, to: number, tag = 'line') =>
    Array.from({ length: to - from + 1 }, (_, i) => `${tag} ${from + i}\n`).join('');

  test('from the end on first start; a restart neither recounts nor misses, a partial line included', async () => {
    const s = setup();
    await until('following', () => s.f.state === 'following');
    appendFileSync(s.path, numbered(1, 3));
    await until('3 lines', () => s.lines.length === 3);
    appendFileSync(s.path, 'line 4\nline 5 is half');
    await until('line 4', () => s.lines.length === 4);
    await s.stop();
    appendFileSync(s.path, ' a line\nline 6\n');
    await s.restart();
    await until('6 lines', () => s.lines.length === 6);
    await sleep(100);
    assert.deepEqual(s.lines, ['line 1', 'line 2', 'line 3', 'line 4', 'line 5 is half a line', 'line 6']);
    await s.stop();
  });

  test('rotation by rename, live: the old file is read to its end, and on while its writer still writes to it', async () => {
    const s = setup({ drainMs: 400 });
    await until('following', () => s.f.state === 'following');
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
    await until('90 lines', () => s.lines.length >= 90);
    await sleep(100);
    assert.deepEqual([...s.lines].sort(byNumber), numberedList(1, 90));
    assert.equal(s.f.stats.rotations, 1);
    await s.stop();
  });

  test('rotation by copytruncate, live: what was written after the last read is read from the copy', async () => {
    const s = setup({ pollMs: 300 });
    await until('following', () => s.f.state === 'following');
    appendFileSync(s.path, numbered(1, 10));
    await until('10 lines', () => s.lines.length === 10);
    // Right after a poll: these lines are written, copied and truncated away before the next one.
    appendFileSync(s.path, numbered(11, 20));
    copyFileSync(s.path, `${s.path}.1`);
    truncateSync(s.path, 0);
    appendFileSync(s.path, numbered(21, 25));
    await until('25 lines', () => s.lines.length >= 25);
    await sleep(400);
    assert.deepEqual([...s.lines].sort(byNumber), numberedList(1, 25));
    assert.equal(s.f.stats.truncations, 1);
    await s.stop();
  });

  test('truncated and grown past the old size between two polls: told by the first bytes', async () => {
    const s = setup({ pollMs: 300 });
    await until('following', () => s.f.state === 'following');
    appendFileSync(s.path, numbered(1, 2));
    await until('2 lines', () => s.lines.length === 2);
    copyFileSync(s.path, `${s.path}.1`);
    truncateSync(s.path, 0);
    appendFileSync(s.path, numbered(3, 40, 'a longer line than the ones before'));
    await until('40 lines', () => s.lines.length >= 40);
    await sleep(400);
    assert.equal(s.lines.length, 40);
    assert.equal(s.f.stats.truncations, 1);
    await s.stop();
  });

  test('rotated by rename while stopped: the rest of the renamed file, then the new one', async () => {
    const s = setup();
    await until('following', () => s.f.state === 'following');
    appendFileSync(s.path, numbered(1, 5));
    await until('5 lines', () => s.lines.length === 5);
    await s.stop();
    appendFileSync(s.path, numbered(6, 8));
    renameSync(s.path, `${s.path}-20261127`);
    appendFileSync(`${s.path}.2.gz`, 'not read: compressed\n');
    appendFileSync(s.path, numbered(9, 10));
    await s.restart();
    await until('10 lines', () => s.lines.length >= 10);
    await sleep(100);
    assert.deepEqual(s.lines, numberedList(1, 10));
    await s.stop();
  });

  test('rotated by copytruncate while stopped: the copy from the saved offset, then the file from its start', async () => {
    const s = setup();
    await until('following', () => s.f.state === 'following');
    appendFileSync(s.path, numbered(1, 5));
    await until('5 lines', () => s.lines.length === 5);
    await s.stop();
    appendFileSync(s.path, numbered(6, 8));
    copyFileSync(s.path, `${s.path}.1`);
    truncateSync(s.path, 0);
    appendFileSync(s.path, numbered(9, 10));
    await s.restart();
    await until('10 lines', () => s.lines.length >= 10);
    await sleep(100);
    assert.deepEqual(s.lines, numberedList(1, 10));
    await s.stop();
  });

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
    const s = setup({ pollMs: 15, drainMs: 200 });
    await until('following', () => s.f.state === 'following');
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
    copyFileSync(s.path, `${s.path}.0`);
    truncateSync(s.path, 0);
    await write(2000);
    closeSync(fd);
    await until('every line', () => s.lines.length >= i, 10_000);
    await sleep(300);
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
