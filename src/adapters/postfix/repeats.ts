/*
 * adapters/postfix/repeats — Postfix's identical RCPT repeats get the first
 * answer and are counted once.
 *
 * With smtpd_delay_reject=yes (the default) every restriction list runs at
 * RCPT time, and each list that calls the policy service sends the same
 * request again (4 for one recipient, measured on Postfix 3.7). One smtpd
 * process sends them one after another on its own policy connection, so
 * remembering the last RCPT request of each connection finds every repeat,
 * exactly (the fields are compared, not hashed), with nothing to bound: a
 * cache of all recent requests keyed by their text cost ~10% of the daemon's
 * throughput in string keys kept alive.
 */
import type { PolicyAttributes } from './parse.js';

/** The last RCPT request of one connection and its answer. */
export class RepeatMemo {
  private last: PolicyAttributes | undefined;
  private at = 0;
  private reply = '';

  constructor(private readonly windowMs: number) {}

  /** Only RCPT requests are repeated (other stages run once, even with smtpd_delay_reject=no). */
  static applies(a: PolicyAttributes): boolean {
    return a.protocol_state === 'RCPT' && a.request === 'smtpd_access_policy';
  }

  /** The answer to the same request made on this connection less than `windowMs` before `now`. */
  get(a: PolicyAttributes, now: number): string | undefined {
    const last = this.last;
    if (last === undefined || now - this.at >= this.windowMs) return undefined;
    // What makes two RCPT requests the same one (Postfix repeats them byte for byte),
    // compared by name: a loop over the names would make each a megamorphic lookup.
    const same =
      a.recipient === last.recipient &&
      a.instance === last.instance &&
      a.client_port === last.client_port &&
      a.client_address === last.client_address &&
      a.sender === last.sender &&
      a.sasl_username === last.sasl_username &&
      a.policy_context === last.policy_context;
    return same ? this.reply : undefined;
  }

  set(a: PolicyAttributes, now: number, reply: string): void {
    if (this.windowMs <= 0) return; // repeat_window 0: off
    this.last = a;
    this.at = now;
    this.reply = reply;
  }
}
