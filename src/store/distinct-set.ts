/*
 * store/distinct-set — the members of one distinct count (store/counting.ts),
 * each with the time it was last seen, in last-seen order.
 *
 * Most sets hold one member: the password one address tried, the one user
 * behind an address, the network an account logged in from. A login in
 * flight makes about ten of them (engine/plan.ts). So a set keeps its first
 * member in two fields and takes a Map only for a second one: an empty Map
 * costs about 150 bytes more than those fields, and making one with a member
 * several times the time. A set that grew keeps its Map.
 */
import { isPending } from './counting.js';

export class DistinctSet {
  /** The only member while there is no Map. */
  private one: string | undefined;
  private oneAt = 0;
  private many: Map<string, number> | undefined;

  /** A set of one member. */
  static of(member: string, time: number): DistinctSet {
    const s = new DistinctSet();
    s.one = member;
    s.oneAt = time;
    return s;
  }

  /** A set holding a Map's members, in its order; the Map is taken over, not copied. */
  static adopt(members: Map<string, number>): DistinctSet {
    const s = new DistinctSet();
    if (members.size > 1) s.many = members;
    else
      for (const [m, t] of members) {
        s.one = m;
        s.oneAt = t;
      }
    return s;
  }

  get size(): number {
    return this.many !== undefined ? this.many.size : this.one === undefined ? 0 : 1;
  }

  /** When a member was last seen; undefined when it is not in the set. */
  get(member: string): number | undefined {
    if (this.many !== undefined) return this.many.get(member);
    return member === this.one ? this.oneAt : undefined;
  }

  has(member: string): boolean {
    return this.get(member) !== undefined;
  }

  delete(member: string): void {
    if (this.many !== undefined) this.many.delete(member);
    else if (member === this.one) this.one = undefined;
  }

  /** A new member goes to the back; a member already in keeps its place (delete it first to move it), as in a Map. */
  set(member: string, time: number): void {
    if (this.many !== undefined) this.many.set(member, time);
    else if (this.one === undefined || member === this.one) {
      this.one = member;
      this.oneAt = time;
    } else {
      this.many = new Map([
        [this.one, this.oneAt],
        [member, time],
      ]);
      this.one = undefined;
    }
  }

  /** Members and their times, oldest first. */
  *entries(): IterableIterator<[string, number]> {
    if (this.many !== undefined) yield* this.many;
    else if (this.one !== undefined) yield [this.one, this.oneAt];
  }

  /**
   * Drops members not seen within the window; returns the live count. Members are in last-seen
   * order, so the walk stops at the first live one: O(expired), not O(size) on every check of a
   * big set (an account attacked from a thousand networks is checked on every login attempt).
   */
  prune(now: number, windowMs: number): number {
    const horizon = now - windowMs;
    if (this.many === undefined) {
      if (this.one !== undefined && this.oneAt <= horizon) this.one = undefined;
      return this.size;
    }
    for (const [m, seen] of this.many) {
      if (seen > horizon) break;
      this.many.delete(m);
    }
    return this.many.size;
  }

  /** Members confirmed (not in flight) within the window: what a detector reads. */
  confirmed(now: number, windowMs: number): number {
    let n = this.prune(now, windowMs);
    for (const [, t] of this.entries()) if (isPending(t)) n--;
    return n;
  }
}
