/*
 * store/ban-table — the embedded store's bans in force, by subject, with a
 * count of how many there are of each network size.
 *
 * Every request is checked against bans on its address and its enclosing
 * networks (/32, /24, /16, /8, …). Building and hashing those subjects cost
 * more than the rest of a typical request's store work, and nearly always
 * for nothing: a size no ban has cannot match, so only sizes some ban has
 * are built and looked up.
 */
import { banSubject, type BanCover } from '../engine/plan.js';
import type { BanRecord } from '../engine/types.js';

export class BanTable {
  private readonly bySubject = new Map<string, BanRecord>();
  /** Bans per prefix length, IPv4 and IPv6 apart. */
  private readonly v4 = new Uint32Array(33);
  private readonly v6 = new Uint32Array(129);

  get(subject: string): BanRecord | undefined {
    return this.bySubject.get(subject);
  }

  set(rec: BanRecord): void {
    if (!this.bySubject.has(rec.subject)) this.count(rec.subject, 1);
    this.bySubject.set(rec.subject, rec);
  }

  delete(subject: string): boolean {
    if (!this.bySubject.delete(subject)) return false;
    this.count(subject, -1);
    return true;
  }

  clear(): void {
    this.bySubject.clear();
    this.v4.fill(0);
    this.v6.fill(0);
  }

  values(): IterableIterator<BanRecord> {
    return this.bySubject.values();
  }

  /** The longest-lasting ban in force on the cover's address or networks; expired ones are dropped on the way. */
  covering(cover: BanCover, now: number): BanRecord | undefined {
    const sizes = cover.v6 ? this.v6 : this.v4;
    let best: BanRecord | undefined;
    for (const len of cover.lengths) {
      if (sizes[len] === 0) continue;
      const s = banSubject(cover, len);
      const b = this.bySubject.get(s);
      if (b === undefined) continue;
      if (b.until <= now) {
        this.delete(s);
        continue;
      }
      if (!best || b.until > best.until) best = b;
    }
    return best;
  }

  /** Subjects are canonical (engine/address.ts): an address, or a CIDR with its length after the slash. */
  private count(subject: string, by: 1 | -1): void {
    const v6 = subject.includes(':');
    const slash = subject.indexOf('/');
    const len = slash < 0 ? (v6 ? 128 : 32) : Number(subject.slice(slash + 1));
    const sizes = v6 ? this.v6 : this.v4;
    if (len >= 0 && len < sizes.length) sizes[len] = (sizes[len] as number) + by;
  }
}
