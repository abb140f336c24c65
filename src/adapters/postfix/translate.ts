/*
 * adapters/postfix/translate — Postfix policy request ⇄ engine vocabulary.
 * Holds no policy: it only says what a request means (which event, which
 * client, which user) and how a Decision is spoken back as a Postfix action.
 *
 * Facts from Postfix 3.7 (docs/PROTOCOL.md): `sasl_username` is
 * set from MAIL on after a successful AUTH; `recipient_count` is filled only at
 * DATA and END-OF-MESSAGE; `instance` identifies one mail transaction.
 */
import { canonicalIp } from '../../engine/address.js';
import { replyLine } from '../../engine/messages.js';
import type { Action, Decision, EventKind, MailEvent } from '../../engine/types.js';
import type { PolicyAttributes } from './parse.js';

// A Map: indexing an object with a received string would look the string up in V8's string table first.
const STATES = new Map<string, EventKind>([
  ['CONNECT', 'connect'],
  ['EHLO', 'helo'],
  ['HELO', 'helo'],
  ['MAIL', 'mail'],
  ['RCPT', 'recipient'],
  ['DATA', 'data'],
  ['END-OF-MESSAGE', 'message'],
  ['VRFY', 'vrfy'],
  ['ETRN', 'etrn'],
]);

export type Translation = { ok: true; event: MailEvent } | { ok: false; problem: string };

function int(v: string | undefined): number {
  const n = v === undefined ? 0 : Number.parseInt(v, 10);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

export function toEvent(a: PolicyAttributes, now: number): Translation {
  if (a.request !== 'smtpd_access_policy')
    return { ok: false, problem: `unsupported request ${JSON.stringify(a.request ?? '')}` };
  const kind = STATES.get(a.protocol_state ?? '');
  if (kind === undefined)
    return { ok: false, problem: `unknown protocol_state ${JSON.stringify(a.protocol_state ?? '')}` };
  const ip = canonicalIp(a.client_address ?? '');
  if (ip === undefined)
    return { ok: false, problem: `invalid client_address ${JSON.stringify(a.client_address ?? '')}` };
  const user = a.sasl_username ? a.sasl_username.trim().toLowerCase() : '';
  const count = int(a.recipient_count);
  return {
    ok: true,
    event: {
      kind,
      time: now,
      ip,
      protocol: 'smtp',
      context: a.policy_context ?? '',
      user: user || undefined,
      sender: a.sender === undefined ? undefined : a.sender.toLowerCase(),
      recipient: a.recipient ? a.recipient.toLowerCase() : undefined,
      recipients: kind === 'recipient' ? 1 : kind === 'data' || kind === 'message' ? count : 0,
      size: kind === 'message' ? int(a.size) : 0,
      // Set by the DNSBL lookup (dns/dnsbl.ts); here so every Postfix event has one shape.
      listed: undefined,
    },
  };
}

// An SMTP reply line is at most 512 octets with its CRLF (RFC 5321 4.5.3.1.5), and Postfix sends a longer one
// as it is (measured). Before this text it puts `554 5.7.1 <recipient>: Recipient address rejected: `, up to
// 300 octets with the longest address; this leaves the rest.
const SMTP_TEXT_OCTETS = 200;

/** Text safe inside one SMTP reply line. */
function smtpText(reason: string): string {
  return replyLine(reason, SMTP_TEXT_OCTETS) || 'Policy rejection';
}

/** The `action=` value for a Decision (DESIGN.md: DUNNO / DEFER_IF_PERMIT / 450 / REJECT / HOLD). */
export function toAction(d: Decision): string {
  switch (d.action) {
    case 'allow':
      return 'DUNNO';
    // Postfix cannot tarpit without holding an smtpd process; a delay becomes a soft, deferrable refusal.
    case 'delay':
      return `DEFER_IF_PERMIT ${smtpText(d.reason)}`;
    case 'tempfail':
      return `450 4.7.1 ${smtpText(d.reason)}`;
    case 'reject':
      return `554 5.7.1 ${smtpText(d.reason)}`;
    case 'hold':
      return `HOLD ${smtpText(d.reason)}`;
  }
}

// Replies made, by action and reason: under attack most refusals repeat a few reasons (a ban's, a rule's
// own message), and a reply's text is cleaned and cut on the way (replyLine). Bounded: cleared when full.
const REPLIES: Record<Exclude<Action, 'allow'>, Map<string, string>> = {
  delay: new Map(),
  tempfail: new Map(),
  reject: new Map(),
  hold: new Map(),
};
const REPLIES_MAX = 1024;

/** The whole policy reply (`action=…` and the blank line that ends it); a refusal's is made once per reason. */
export function policyReply(d: Decision): string {
  if (d.action === 'allow') return 'action=DUNNO\n\n';
  const made = REPLIES[d.action];
  let text = made.get(d.reason);
  if (text === undefined) {
    if (made.size >= REPLIES_MAX) made.clear();
    text = `action=${toAction(d)}\n\n`;
    made.set(d.reason, text);
  }
  return text;
}
