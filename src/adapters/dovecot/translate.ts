/*
 * adapters/dovecot/translate — Dovecot auth policy request ⇄ engine vocabulary.
 *
 * Facts from Dovecot 2.3.19 (docs/PROTOCOL.md, section 2):
 * - `command=allow` comes before the password is checked, and once more,
 *   byte-identical, after a successful check; only `report` says how the login
 *   ended. So an allow is a check (`auth-attempt`), never counted as an attempt;
 *   the report (`auth-result`) is what counts. The allow's password fingerprint
 *   is counted as in flight until its report (engine/plan.ts).
 * - A report with `policy_reject: true` is an attempt we refused: the passdb
 *   never saw it (`refused`), so it is not a guess.
 * - `login` is the user name after auth_username_format (lower-cased by
 *   default), in clear; unknown users arrive as typed.
 * - `pwhash` is 12 bits of sha256(nonce‖user‖NUL‖password): it tells "the same
 *   password again", never the password, and it is never logged.
 * - `status` must be a JSON number: 0 allow, N > 0 delay N seconds, < 0 refuse
 *   (`msg` reaches the client only on a refusal).
 * - Postfix gives up on Dovecot SASL after 10 s (454 4.7.0), so SMTP delays are
 *   capped lower than IMAP/POP3 delays.
 */
import { canonicalIp } from '../../engine/address.js';
import { replyLine } from '../../engine/messages.js';
import type { Decision, MailEvent } from '../../engine/types.js';

export type DovecotCommand = 'allow' | 'report';

export interface DovecotRequest {
  login?: unknown;
  remote?: unknown;
  protocol?: unknown;
  pwhash?: unknown;
  session_id?: unknown;
  device_id?: unknown;
  tls?: unknown;
  success?: unknown;
  policy_reject?: unknown;
  [extra: string]: unknown;
}

export type Translation = { ok: true; event: MailEvent } | { ok: false; problem: string };

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

export function toEvent(command: DovecotCommand, body: DovecotRequest, now: number): Translation {
  const remote = str(body.remote);
  if (remote === undefined)
    return {
      ok: false,
      problem: 'missing "remote" (the client address); add remote=%{rip} to auth_policy_request_attributes',
    };
  const ip = canonicalIp(remote);
  if (ip === undefined)
    return { ok: false, problem: `"remote" is not an IP address: ${JSON.stringify(remote.slice(0, 60))}` };
  const login = str(body.login)?.trim().toLowerCase();
  const pwhash = str(body.pwhash);
  if (pwhash !== undefined && !/^[0-9a-f]{0,128}$/i.test(pwhash))
    return { ok: false, problem: '"pwhash" is not a hex string' };
  if (command === 'report' && typeof body.success !== 'boolean') {
    return { ok: false, problem: 'a report needs "success": true or false' };
  }
  return {
    ok: true,
    event: {
      kind: command === 'allow' ? 'auth-attempt' : 'auth-result',
      time: now,
      ip,
      protocol: (str(body.protocol) ?? '').toLowerCase().slice(0, 32) || 'unknown',
      context: '',
      user: login || undefined,
      recipients: 0,
      size: 0,
      pwhash: pwhash ? pwhash.toLowerCase() : undefined,
      // A login refused by policy did not succeed, and its password was never a checked guess.
      success: command === 'report' ? body.success === true && body.policy_reject !== true : undefined,
      refused: command === 'report' ? body.policy_reject === true : undefined,
    },
  };
}

export interface DovecotReply {
  status: number;
  msg: string;
}

export const ALLOW_REPLY: DovecotReply = { status: 0, msg: '' };

// IMAP and POP3 carry the msg on a line of its own: room for 300 Japanese characters. For SMTP AUTH, Postfix
// puts it after `535 5.7.8 Error: authentication failed: ` in a reply line of at most 512 octets (RFC 5321).
const MSG_BYTES = 900;
const SMTP_MSG_BYTES = 512 - '535 5.7.8 Error: authentication failed: \r\n'.length;

// Replies made, shared and frozen: under attack most answers repeat a few refusals (a ban's, a rule's own
// message) and delays, and the server serializes each reply object once. Bounded: cleared when full.
const REFUSALS = { smtp: new Map<string, DovecotReply>(), other: new Map<string, DovecotReply>() };
const REFUSALS_MAX = 1024;
const DELAYS = new Map<number, DovecotReply>();

/** A Decision as Dovecot's `{status, msg}`; delays capped per protocol. */
export function toReply(
  d: Decision,
  protocol: string,
  caps: { maxDelayMs: number; smtpMaxDelayMs: number },
): DovecotReply {
  switch (d.action) {
    case 'allow':
    case 'hold':
      return ALLOW_REPLY;
    case 'delay': {
      const capMs = protocol === 'smtp' ? caps.smtpMaxDelayMs : caps.maxDelayMs;
      const status = Math.max(1, Math.min(d.delaySeconds, Math.floor(capMs / 1000)));
      let r = DELAYS.get(status);
      if (r === undefined) DELAYS.set(status, (r = Object.freeze({ status, msg: '' })));
      return r;
    }
    case 'tempfail':
    case 'reject': {
      const smtp = protocol === 'smtp';
      const made = smtp ? REFUSALS.smtp : REFUSALS.other;
      let r = made.get(d.reason);
      if (r === undefined) {
        if (made.size >= REFUSALS_MAX) made.clear();
        r = Object.freeze({ status: -1, msg: replyLine(d.reason, smtp ? SMTP_MSG_BYTES : MSG_BYTES) });
        made.set(d.reason, r);
      }
      return r;
    }
  }
}
