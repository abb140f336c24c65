/*
 * store/counter-table — the embedded store's counters, bounded, coldest
 * first out, in two generations.
 *
 * Keys used since the young generation began live there, updated in place;
 * the old generation holds the keys of the generation before. A key used
 * while old moves to the young one. When the young generation has `max / 2`
 * keys it becomes the old one, and the keys still in the old one, unused for
 * a whole generation, are evicted together. So the table never holds more
 * than `max` keys, and a key is never evicted while it is among the `max / 2`
 * most recently used: LRU at the grain of half the table.
 *
 * Why not exact LRU (delete and re-insert on every use, as before): each
 * re-insert stored the request's new key string in the table, so every
 * counted request left a string for the garbage collector to copy to the old
 * space, and the delete and insert cost two more hash lookups: together about
 * a tenth of a whole decision's time.
 */
export class CounterTable<V> {
  private young = new Map<string, V>();
  private old = new Map<string, V>();
  private readonly half: number;
  private evicted = 0;

  constructor(max: number) {
    this.half = Math.max(1, Math.floor(max / 2));
  }

  get size(): number {
    return this.young.size + this.old.size;
  }

  /** Keys evicted since the table was made. */
  get evictions(): number {
    return this.evicted;
  }

  get(key: string): V | undefined {
    const v = this.young.get(key);
    return v !== undefined || this.old.size === 0 ? v : this.old.get(key);
  }

  /** Sets a key's value and marks it used. */
  set(key: string, value: V): void {
    const before = this.young.size;
    this.young.set(key, value);
    if (this.young.size === before) return; // already young: updated in place
    if (this.old.size > 0) this.old.delete(key);
    if (this.young.size >= this.half) this.turn();
  }

  /** Marks an existing key used, without changing it. */
  refresh(key: string): void {
    if (this.old.size === 0) return;
    const v = this.old.get(key);
    if (v !== undefined) this.set(key, v);
  }

  /** Forgets a key (an emptied set: nothing left to count). */
  delete(key: string): void {
    if (!this.young.delete(key) && this.old.size > 0) this.old.delete(key);
  }

  clear(): void {
    this.young.clear();
    this.old.clear();
  }

  /** Every entry, the old generation first. */
  *entries(): IterableIterator<[string, V]> {
    yield* this.old;
    yield* this.young;
  }

  /** The young generation becomes the old one; the old one's keys are evicted. */
  private turn(): void {
    this.evicted += this.old.size;
    this.old = this.young;
    this.young = new Map();
  }
}
