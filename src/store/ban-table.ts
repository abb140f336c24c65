/*
 * store/ban-table — the embedded store's bans in force, by subject, with a
 * count of how many there are of each network size.
 *
 * A ban of any prefix length covers every address inside it, so a request
 * could be checked against 33 (IPv4) or 129 (IPv6) subjects: its address and
 * every enclosing network. Building and hashing those subjects cost more than
 * the rest of a typical request's store work, and nearly always for nothing:
 * a size no ban has cannot match. So only the sizes some ban has are built
 * and looked up, longest first (`lengths`, kept sorted as bans come and go).
 */
import { banSubject, type BanCover } from '../engine/plan.js';
import type { BanRecord } from '../engine/types.js';

export class BanTable {
  private readonly bySubject = new Map<string, BanRecord>();
  /** Bans per prefix length, IPv4 and IPv6 apart. */
  private readonly v4 = new Uint32Array(33);
  private readonly v6 = new Uint32Array(129);
  /** The lengths with at least one ban, longest first; replaced (never changed in place) when that set changes. */
  private v4Lengths: readonly number[] = [];
  private v6Lengths: readonly number[] = [];

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
    this.v4Lengths = [];
    this.v6Lengths = [];
  }

  values(): IterableIterator<BanRecord> {
    return this.bySubject.values();
  }

  /** The prefix lengths some ban of this family has, longest first. */
  lengths(v6: boolean): readonly number[] {
    return v6 ? this.v6Lengths : this.v4Lengths;
  }

  /** The longest-lasting ban in force on the cover's address or networks; expired ones are dropped on the way. */
  covering(cover: BanCover, now: number): BanRecord | undefined {
    let best: BanRecord | undefined;
    // Dropping an expired ban may replace the list; this loop goes on over the one it started with.
    for (const len of cover.v6 ? this.v6Lengths : this.v4Lengths) {
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
    if (!Number.isInteger(len) || len < 0 || len >= sizes.length) return;
    const was = sizes[len] as number;
    sizes[len] = was + by;
    if (was !== 0 && sizes[len] !== 0) return;
    const lengths: number[] = [];
    for (let l = sizes.length - 1; l >= 0; l--) if (sizes[l] !== 0) lengths.push(l);
    if (v6) this.v6Lengths = lengths;
    else this.v4Lengths = lengths;
  }
}
