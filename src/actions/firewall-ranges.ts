/*
 * actions/firewall-ranges — the address arithmetic behind the firewall's sets
 * (pure; actions/firewall.ts runs it, actions/firewall-nft.ts prints it).
 *
 * Banned addresses go in sets of their own (actions/firewall-nft.ts), one
 * element each, unless allowlisted (`covered`). Banned networks go in an
 * interval set, which refuses overlapping elements (without auto-merge, which
 * would give a merged element one timeout and so cut short the longer ban).
 * Networks overlap: a /64 and the /48 holding it, each lasting its own time.
 * So the kernel is given disjoint pieces: every range of addresses once, with
 * the end of the longest ban covering it. A /48 banned for a day around a /64
 * banned for a week becomes three elements: below the /64 (a day), the /64 (a
 * week), above it (a day); lift the /48 and only the /64 stays. Allowlisted
 * addresses are cut out the same way, so a banned network holding them is
 * still dropped everywhere else.
 *
 * CIDR blocks are nested or apart, never partly overlapping. That makes the
 * banned networks a forest: each top-level one (no other holds it) is a
 * region whose pieces depend on the networks inside it alone, so a change is
 * recomputed for its region only.
 */
import ipaddr from 'ipaddr.js';
import { networkOf, parseSubject, type ParsedSubject } from '../engine/address.js';
import { BanTable } from '../store/ban-table.js';
import type { BanRecord } from '../engine/types.js';

/** A range of addresses of one family, both ends included (IPv4 in the low 32 bits). */
export interface Span {
  lo: bigint;
  hi: bigint;
}

/** A range dropped until `end` (epoch ms). */
export interface Piece extends Span {
  end: number;
}

/** A ban's network as a range. */
export interface Block extends Span {
  v6: boolean;
  prefix: number;
  subject: string;
}

const BITS = { v4: 32n, v6: 128n };

/** A canonical address (no prefix) as a number. */
export function addressValue(ip: string, v6: boolean): bigint {
  if (v6) return groupsValue(ipaddr.IPv6.parse(ip).parts, 16n);
  // A whole load converts every banned address: one BigInt each, not one per octet.
  let n = 0;
  for (const octet of ip.split('.')) n = n * 256 + Number(octet);
  return BigInt(n);
}

/** The range of a canonical address or network. */
export function blockOf(p: ParsedSubject): Block {
  const slash = p.text.indexOf('/');
  const lo = addressValue(slash < 0 ? p.text : p.text.slice(0, slash), p.v6);
  const host = (p.v6 ? BITS.v6 : BITS.v4) - BigInt(p.prefix);
  return { lo, hi: lo | ((1n << host) - 1n), v6: p.v6, prefix: p.prefix, subject: p.text };
}

function groupsValue(groups: readonly number[], width: bigint): bigint {
  let n = 0n;
  for (const g of groups) n = (n << width) | BigInt(g);
  return n;
}

/** The canonical text of an address given as a number (IPv6 in RFC 5952 form, as nft prints it). */
function addressText(n: bigint, v6: boolean): string {
  if (!v6) return [24n, 16n, 8n, 0n].map((s) => String((n >> s) & 255n)).join('.');
  const parts = [112n, 96n, 80n, 64n, 48n, 32n, 16n, 0n].map((s) => Number((n >> s) & 0xffffn));
  return new ipaddr.IPv6(parts).toRFC5952String();
}

/** How nft is told a span: an address, a CIDR when it is one, else a range `a-b`. */
export function spanText(s: Span, v6: boolean): string {
  const lo = addressText(s.lo, v6);
  if (s.lo === s.hi) return lo;
  const size = s.hi - s.lo + 1n;
  if ((size & (size - 1n)) === 0n && s.lo % size === 0n) {
    const host = size.toString(2).length - 1;
    return `${lo}/${Number(v6 ? BITS.v6 : BITS.v4) - host}`;
  }
  return `${lo}-${addressText(s.hi, v6)}`;
}

/** Sorting order of blocks: by first address, the wider first, so a block comes right before those inside it. */
function compare(a: Span, b: Span): number {
  if (a.lo !== b.lo) return a.lo < b.lo ? -1 : 1;
  return a.hi === b.hi ? 0 : a.hi > b.hi ? -1 : 1;
}

/** Overlapping or touching spans merged into disjoint ones, in order (the allowlist: entries may nest). */
export function union(spans: readonly Span[]): Span[] {
  const out: Span[] = [];
  for (const s of [...spans].sort(compare)) {
    const last = out.at(-1);
    if (last && s.lo <= last.hi + 1n) {
      if (s.hi > last.hi) last.hi = s.hi;
    } else out.push({ lo: s.lo, hi: s.hi });
  }
  return out;
}

/**
 * The pieces of one region: `bans` sorted (compare), nested or apart, each with its end; every
 * address covered gets the latest end of the bans holding it, and neighbours with one end are one piece.
 */
export function coverage(bans: ReadonlyArray<Span & { end: number }>): Piece[] {
  const out: Piece[] = [];
  const emit = (lo: bigint, hi: bigint, end: number): void => {
    if (lo > hi) return;
    const last = out.at(-1);
    if (last && last.end === end && last.hi + 1n === lo) last.hi = hi;
    else out.push({ lo, hi, end });
  };
  // The bans holding the current address, innermost last, each with the latest end of it and those around it.
  const open: Array<{ hi: bigint; end: number }> = [];
  let at = 0n;
  const close = (): void => {
    const t = open.pop() as { hi: bigint; end: number };
    emit(at, t.hi, t.end);
    at = t.hi + 1n;
  };
  for (const b of bans) {
    while (open.length > 0 && (open.at(-1) as { hi: bigint }).hi < b.lo) close();
    const around = open.at(-1);
    if (around) emit(at, b.lo - 1n, around.end);
    at = b.lo;
    open.push({ hi: b.hi, end: Math.max(b.end, around?.end ?? 0) });
  }
  while (open.length > 0) close();
  return out;
}

/** The first of `holes` (disjoint, in order) that ends at or after `n`. */
function firstHole(holes: readonly Span[], n: bigint): number {
  let lo = 0;
  let hi = holes.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((holes[mid] as Span).hi < n) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Whether an address is in one of `holes` (disjoint, in order). */
export function covered(holes: readonly Span[], n: bigint): boolean {
  const h = holes[firstHole(holes, n)];
  return h !== undefined && h.lo <= n;
}

/** `pieces` without the addresses in `holes` (disjoint, in order). */
export function subtract(pieces: readonly Piece[], holes: readonly Span[]): Piece[] {
  if (holes.length === 0) return [...pieces];
  const out: Piece[] = [];
  for (const p of pieces) {
    let from = p.lo;
    for (let k = firstHole(holes, p.lo); from <= p.hi; k++) {
      const h = holes[k];
      if (h === undefined || h.lo > p.hi) {
        out.push({ lo: from, hi: p.hi, end: p.end });
        break;
      }
      if (h.lo > from) out.push({ lo: from, hi: h.lo - 1n, end: p.end });
      from = h.hi + 1n;
    }
  }
  return out;
}

/**
 * The bans in force, with lookups by subject, and for networks by what holds one and what one
 * holds. Addresses need neither: each is one element of its own.
 */
export class BanBlocks {
  /** By subject, with the prefix lengths in use (to find what holds a network without a scan). */
  private readonly table = new BanTable();
  /** The networks per family, in `compare` order: what one holds is the run right after it. */
  private readonly sorted: [Block[], Block[]] = [[], []];

  /** Adds or updates a ban; false when its subject is not a canonical address or network. */
  set(rec: BanRecord): boolean {
    if (this.table.get(rec.subject) === undefined) {
      const p = parseSubject(rec.subject);
      if (p === undefined || p.text !== rec.subject) return false;
      if (p.kind === 'network') {
        const b = blockOf(p);
        const list = this.list(b.v6);
        list.splice(this.position(list, b), 0, b);
      }
    }
    this.table.set(rec);
    return true;
  }

  delete(subject: string): void {
    if (!this.table.delete(subject) || !subject.includes('/')) return;
    const b = blockOf(parseSubject(subject) as ParsedSubject);
    const list = this.list(b.v6);
    list.splice(this.position(list, b), 1);
  }

  /** Replaces every ban (sorted once: inserting 100,000 one by one would move the list each time); returns the subjects that are not canonical. */
  load(bans: Iterable<BanRecord>): string[] {
    this.table.clear();
    this.sorted[0] = [];
    this.sorted[1] = [];
    const bad: string[] = [];
    for (const rec of bans) {
      const p = parseSubject(rec.subject);
      if (p === undefined || p.text !== rec.subject) {
        bad.push(rec.subject);
        continue;
      }
      if (p.kind === 'network' && this.table.get(rec.subject) === undefined) this.list(p.v6).push(blockOf(p));
      this.table.set(rec);
    }
    for (const list of this.sorted) list.sort(compare);
    return bad;
  }

  until(subject: string): number | undefined {
    return this.table.get(subject)?.until;
  }

  /** The banned addresses (not networks), ended or not. */
  *addresses(): Generator<BanRecord> {
    for (const rec of this.table.values()) if (!rec.subject.includes('/')) yield rec;
  }

  /** The banned networks of one family, in order. */
  networks(v6: boolean): readonly Block[] {
    return this.list(v6);
  }

  /** Forgets the bans that are over (the store lets them lapse without a word: expiry is the kernel's). */
  prune(now: number): void {
    const over = [...this.table.values()].filter((b) => b.until <= now).map((b) => b.subject);
    for (const subject of over) this.table.delete(subject);
    for (const i of [0, 1] as const) this.sorted[i] = this.sorted[i].filter((b) => this.table.get(b.subject));
  }

  /** The widest network holding `b` (other than `b`), if any: the top of `b`'s region. */
  holder(b: Block): Block | undefined {
    const base = b.subject.split('/')[0] as string;
    const lengths = this.table.lengths(b.v6);
    // Longest first: the last one below b's own length found is the widest.
    for (let i = lengths.length - 1; i >= 0; i--) {
      const len = lengths[i] as number;
      if (len >= b.prefix) break;
      const s = networkOf(base, len);
      if (this.table.get(s) !== undefined) return blockOf(parseSubject(s) as ParsedSubject);
    }
    return undefined;
  }

  /** The networks inside `span` (itself included), in order. */
  inside(span: Span, v6: boolean): Block[] {
    const list = this.list(v6);
    const out: Block[] = [];
    for (let i = this.position(list, span); i < list.length && (list[i] as Block).lo <= span.hi; i++)
      out.push(list[i] as Block);
    return out;
  }

  private list(v6: boolean): Block[] {
    return this.sorted[v6 ? 1 : 0];
  }

  /** Where `s` is or would go in `list`. */
  private position(list: readonly Block[], s: Span): number {
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compare(list[mid] as Block, s) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/**
 * The regions among `blocks` (in order, nested or apart): each top-level block with the pieces
 * of the bans in force inside it, minus `holes`. `endOf` is a ban's end, undefined once over.
 */
export function regions(
  blocks: readonly Block[],
  endOf: (subject: string) => number | undefined,
  holes: readonly Span[],
): Array<{ top: string; pieces: Piece[] }> {
  const out: Array<{ top: string; pieces: Piece[] }> = [];
  let group: Array<Block & { end: number }> = [];
  let top: Block | undefined;
  const finish = (): void => {
    if (top) out.push({ top: top.subject, pieces: subtract(coverage(group), holes) });
    group = [];
  };
  for (const b of blocks) {
    if (top === undefined || b.lo > top.hi || b.v6 !== top.v6) {
      finish();
      top = b;
    }
    const end = endOf(b.subject);
    if (end !== undefined) group.push({ ...b, end });
  }
  finish();
  return out;
}
