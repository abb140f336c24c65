import type { Positions } from '../../src/logs/file.js';

/** A follower's saved positions in a Map (the store's meta table in the daemon), for the tests to read and preset. */
export class MapPositions implements Positions {
  readonly map = new Map<string, string>();
  getMeta(k: string): string | undefined {
    return this.map.get(k);
  }
  setMeta(k: string, v: string): void {
    this.map.set(k, v);
  }
}
