/*
 * logs/events — what a line says, as events of the engine (engine/types.ts).
 *
 * A login result read from a log carries no password fingerprint (`pwhash`),
 * so it counts as a failure (rules counting `failures`, `distinct:user`,
 * `distinct:network`), never as a distinct password. It is dated when read.
 *
 * One Dovecot connection can be told twice: by its auth process, at once for
 * each attempt (auth_verbose = yes), and by its login process when it ends
 * (`auth failed, 3 attempts`). Attempts are counted from the first, and the
 * second adds only those the first did not tell (all of them when
 * auth_verbose is off), matched by the login session.
 */
import { Memo } from '../engine/memo.js';
import type { MailEvent } from '../engine/types.js';
import type { Finding } from './types.js';

/** Sessions whose attempts are waiting for their login process's line; enough for every connection open at once. */
const SESSIONS = 100_000;

/** An event, and for a login result how long before the line its attempt was made (ms). */
export type EventSink = (event: MailEvent, spanMs: number) => void;

export class LogEvents {
  /** Login session → attempts counted from its auth process's lines. */
  private readonly counted = new Memo<string, number>(SESSIONS);

  /** Passes the events `f` stands for to `sink`; returns how many. */
  emit(f: Finding, time: number, sink: EventSink): number {
    if (f.kind === 'skip') return 0;
    // Object literals, not spreads: this runs for every line that says something (spreads cost 30× more here).
    if (f.kind !== 'login') {
      sink({ kind: f.kind, time, ip: f.ip, protocol: 'smtp', context: f.context, recipients: 0, size: 0 }, 0);
      return 1;
    }
    let n = f.ok ? 1 : f.attempts;
    if (f.session !== undefined) {
      const before = this.counted.get(f.session) ?? 0;
      if (f.summary) {
        this.counted.delete(f.session);
        if (!f.ok) n = Math.max(0, n - before);
      } else {
        this.counted.set(f.session, before + n);
      }
    }
    for (let i = 0; i < n; i++) {
      sink(
        {
          kind: 'auth-result',
          time,
          ip: f.ip,
          protocol: f.protocol,
          context: f.context,
          user: f.user,
          recipients: 0,
          size: 0,
          success: f.ok,
          refused: false,
        },
        f.spanMs,
      );
    }
    return n;
  }
}
