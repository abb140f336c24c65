/*
 * Bytes to lines in bounded memory: lines cut anywhere between reads (inside
 * a UTF-8 character too), CRLF, and lines too long dropped whole however
 * long they go on, with `pending` always pointing at the start of the next
 * unread line.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LineSplitter } from '../../src/logs/lines.js';

function feed(s: LineSplitter, chunks: Buffer[]): string[] {
  const out: string[] = [];
  for (const c of chunks) s.push(c, (l) => out.push(l));
  return out;
}

/** `text` cut into pieces of `size` bytes. */
function pieces(text: string, size: number): Buffer[] {
  const b = Buffer.from(text, 'utf8');
  const out: Buffer[] = [];
  for (let i = 0; i < b.length; i += size) out.push(b.subarray(i, i + size));
  return out;
}

describe('logs: LineSplitter', () => {
  test('lines cut at every possible place come out whole, multi-byte characters too; CRLF and empty lines', () => {
    const text = 'first line\r\nsecond: ログインの失敗\n\nthird ü\n';
    for (let size = 1; size <= 12; size++) {
      const s = new LineSplitter(100);
      assert.deepEqual(
        feed(s, pieces(text, size)),
        ['first line', 'second: ログインの失敗', 'third ü'],
        `size ${size}`,
      );
      assert.equal(s.pending, 0);
    }
  });

  test('an unfinished last line waits, and pending says how far back it starts', () => {
    const s = new LineSplitter(100);
    assert.deepEqual(feed(s, [Buffer.from('one\ntwo\nthr')]), ['one', 'two']);
    assert.equal(s.pending, 3);
    assert.deepEqual(feed(s, [Buffer.from('ee')]), []);
    assert.equal(s.pending, 5);
    assert.deepEqual(feed(s, [Buffer.from('\n')]), ['three']);
    assert.equal(s.pending, 0);
  });

  test('a line longer than the bound is dropped whole, however it arrives, and the next one is whole', () => {
    for (const size of [7, 100, 4096, 1 << 20]) {
      const s = new LineSplitter(50);
      const giant = 'x'.repeat(200_000);
      const out = feed(s, pieces(`before\n${giant}\nafter\nshort ${'y'.repeat(60)}\nlast\n`, size));
      assert.deepEqual(out, ['before', 'after', 'last'], `size ${size}`);
      assert.equal(s.tooLong, 2, `size ${size}`);
      assert.equal(s.pending, 0);
    }
  });

  test('memory stays bounded while a giant line goes on: pending grows, the buffer does not', () => {
    const s = new LineSplitter(1000);
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    for (let i = 0; i < 200; i++) feed(s, [chunk]);
    assert.equal(s.pending, 200 * 64 * 1024, 'a restart would skip back to the giant line and drop it again');
    assert.deepEqual(feed(s, [Buffer.from('tail\nnext\n')]), ['next']);
    assert.equal(s.tooLong, 1);
  });

  test('reset forgets a partial line', () => {
    const s = new LineSplitter(100);
    feed(s, [Buffer.from('half a li')]);
    s.reset();
    assert.equal(s.pending, 0);
    assert.deepEqual(feed(s, [Buffer.from('new\n')]), ['new']);
  });
});
