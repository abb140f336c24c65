/*
 * logs/lines — bytes to lines, in bounded memory: a line longer than
 * `maxLine` is dropped whole (counted), however long it goes on, and the
 * partial line kept between reads never exceeds it. UTF-8 is decoded once
 * per read, not per line (a newline byte never occurs inside a multi-byte
 * character, so cutting at the last one is safe).
 */
const NL = 10;

export class LineSplitter {
  /** Lines dropped for being longer than `maxLine`. */
  tooLong = 0;
  private rest: Buffer | undefined;
  /** Inside a line already too long: drop bytes up to its end. */
  private dropping = false;
  /** Bytes after the last complete line (kept or dropped): the next line starts that far back. */
  private pendingBytes = 0;

  constructor(private readonly maxLine: number) {}

  /** Bytes fed since the end of the last complete line: resume reading that far back to lose nothing. */
  get pending(): number {
    return this.pendingBytes;
  }

  /** Feeds the next bytes; `onLine` gets each complete line without its line end. `chunk` may be reused afterwards. */
  push(chunk: Buffer, onLine: (line: string) => void): void {
    let start = 0;
    if (this.dropping) {
      const nl = chunk.indexOf(NL);
      if (nl < 0) {
        this.pendingBytes += chunk.length;
        return;
      }
      this.dropping = false;
      this.pendingBytes = 0;
      start = nl + 1;
    }
    const last = chunk.lastIndexOf(NL);
    if (last < start) {
      this.keep(chunk.subarray(start));
      return;
    }
    const head = chunk.subarray(start, last);
    const text = (this.rest ? Buffer.concat([this.rest, head]) : head).toString('utf8');
    this.rest = undefined;
    this.pendingBytes = 0;
    for (const raw of text.split('\n')) {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line.length > this.maxLine) this.tooLong++;
      else if (line.length > 0) onLine(line);
    }
    this.keep(chunk.subarray(last + 1));
  }

  /** Forgets a partial line (the file it came from was truncated or replaced). */
  reset(): void {
    this.rest = undefined;
    this.dropping = false;
    this.pendingBytes = 0;
  }

  private keep(tail: Buffer): void {
    if (tail.length === 0) return;
    this.pendingBytes += tail.length;
    const size = (this.rest?.length ?? 0) + tail.length;
    if (size > this.maxLine) {
      this.rest = undefined;
      this.dropping = true;
      this.tooLong++;
      return;
    }
    // A copy: the caller reuses its read buffer.
    this.rest = this.rest ? Buffer.concat([this.rest, tail]) : Buffer.from(tail);
  }
}
