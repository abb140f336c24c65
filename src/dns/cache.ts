/*
 * dns/cache — answers kept until they expire, and never more than `max` of
 * them: past it, the oldest entry goes (a Map keeps insertion order, so that
 * is O(1) and leaves no holes to walk). An expired entry is dropped when it
 * is next asked for. What falls out is only asked again: nothing is lost but
 * a query.
 */
export class TtlCache<V> {
  private readonly entries = new Map<string, { value: V; expires: number }>();

  constructor(private readonly max: number) {}

  get size(): number {
    return this.entries.size;
  }

  get(key: string, now: number): V | undefined {
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    if (e.expires > now) return e.value;
    this.entries.delete(key);
    return undefined;
  }

  set(key: string, value: V, expires: number): void {
    // Re-inserted at the end: a refreshed entry is the newest.
    this.entries.delete(key);
    this.entries.set(key, { value, expires });
    if (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value as string);
  }

  clear(): void {
    this.entries.clear();
  }
}
