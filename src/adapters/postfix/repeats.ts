/*
 * adapters/postfix/repeats — the answers to recent RCPT requests, so that
 * Postfix's identical repeats (one per restriction list that calls the policy
 * service, with smtpd_delay_reject=yes) get the first answer and are counted
 * once.
 *
 * Bounded in two generations: when the young one is full it becomes the old
 * one and the previous old one is dropped whole. That is O(1) per request;
 * trimming one Map from its oldest end is not, because V8 walks the holes
 * its deletes leave behind (it cost ~12% of the daemon's CPU under load).
 * An entry lives for at least `max / 2` newer entries and less than `windowMs`.
 */

interface Entry {
  at: number;
  reply: string;
}

export class RepeatCache {
  private young = new Map<string, Entry>();
  private old = new Map<string, Entry>();
  private readonly half: number;

  constructor(
    max: number,
    private readonly windowMs: number,
  ) {
    this.half = Math.max(1, Math.floor(max / 2));
  }

  /** The answer given to `key` within the window before `now`, if it is still held. */
  get(key: string, now: number): string | undefined {
    const e = this.young.get(key) ?? this.old.get(key);
    return e !== undefined && now - e.at < this.windowMs ? e.reply : undefined;
  }

  set(key: string, now: number, reply: string): void {
    if (this.windowMs <= 0) return; // repeat_window 0: off
    if (this.young.size >= this.half) {
      this.old = this.young;
      this.young = new Map();
    }
    this.young.set(key, { at: now, reply });
  }

  get size(): number {
    return this.young.size + this.old.size;
  }
}
