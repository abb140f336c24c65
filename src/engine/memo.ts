/*
 * engine/memo — a bounded map for caches on the hot path, in two generations:
 * when the young one is full it becomes the old one and the previous old one
 * is dropped whole. Every operation is O(1); trimming one Map from its oldest
 * end is not, because V8 walks the holes that deletes leave at its front.
 * An entry outlives at least `max / 2` newer ones (reads do not renew it:
 * these caches hold what is cheap to work out again).
 */
export class Memo<K, V> {
  private young = new Map<K, V>();
  private old = new Map<K, V>();
  private readonly half: number;

  constructor(max: number) {
    this.half = Math.max(1, Math.floor(max / 2));
  }

  get(key: K): V | undefined {
    return this.young.get(key) ?? this.old.get(key);
  }

  delete(key: K): void {
    this.young.delete(key);
    this.old.delete(key);
  }

  set(key: K, value: V): void {
    if (this.young.size >= this.half) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(key, value);
  }
}
