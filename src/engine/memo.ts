/*
 * engine/memo — a bounded map for caches on the hot path, in two generations:
 * when the young one is full it becomes the old one and the previous old one
 * is dropped whole. Every operation is O(1); trimming one Map from its oldest
 * end is not, because V8 walks the holes that deletes leave at its front.
 * An entry outlives at least `max / 2` newer ones (reads do not renew it:
 * these caches hold what is cheap to work out again).
 *
 * Bounded by count and, when values vary in size, by bytes as the caller
 * weighs them: a generation is full at half of either bound, so both hold for
 * the two together. (4,096 entries of 60 KB bodies once held 1.25 GB.)
 */
export class Memo<K, V> {
  private young = new Map<K, V>();
  private old = new Map<K, V>();
  private youngBytes = 0;
  private oldBytes = 0;
  private readonly half: number;
  private readonly halfBytes: number;

  constructor(max: number, maxBytes = Infinity) {
    this.half = Math.max(1, Math.floor(max / 2));
    this.halfBytes = maxBytes / 2;
  }

  get(key: K): V | undefined {
    return this.young.get(key) ?? this.old.get(key);
  }

  delete(key: K): void {
    this.young.delete(key);
    this.old.delete(key);
  }

  /**
   * Remembers `value`, weighing `bytes`. One heavier than half the byte bound is not kept
   * (and any older value of the key is forgotten, so a stale one cannot answer for it).
   */
  set(key: K, value: V, bytes = 0): void {
    if (bytes > this.halfBytes) {
      this.delete(key);
      return;
    }
    // A replaced value's bytes stay counted until the generation goes: an overestimate, never an under.
    if (this.young.size >= this.half || this.youngBytes + bytes > this.halfBytes) {
      this.old = this.young;
      this.oldBytes = this.youngBytes;
      this.young = new Map();
      this.youngBytes = 0;
    }
    this.young.set(key, value);
    this.youngBytes += bytes;
  }

  /** The bytes counted for what it holds, at most `maxBytes` (deleted entries count until their generation goes). */
  get bytes(): number {
    return this.youngBytes + this.oldBytes;
  }
}
