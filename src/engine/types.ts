/*
 * engine/types — the protocol-free vocabulary of mailwarden.
 *
 * Adapters turn what a mail server tells us into an Event; the engine turns an
 * Event plus the store's answers into a Decision. Nothing here knows about
 * sockets, SQLite or Redis. Times are milliseconds since the epoch, passed in.
 */

/**
 * What happened. `message` is an accepted message (END-OF-MESSAGE); `data` is the DATA command.
 * The last five are what Postfix refused or dropped on its own, read from its log (logs/postfix.ts).
 */
export type EventKind =
  | 'connect'
  | 'helo'
  | 'mail'
  | 'recipient'
  | 'data'
  | 'message'
  | 'vrfy'
  | 'etrn'
  | 'auth-attempt'
  | 'auth-result'
  | 'pregreet'
  | 'blocklisted'
  | 'relay-denied'
  | 'smtp-errors'
  | 'lost-after-auth';

export const EVENT_KINDS: readonly EventKind[] = [
  'connect',
  'helo',
  'mail',
  'recipient',
  'data',
  'message',
  'vrfy',
  'etrn',
  'auth-attempt',
  'auth-result',
  'pregreet',
  'blocklisted',
  'relay-denied',
  'smtp-errors',
  'lost-after-auth',
];

export interface MailEvent {
  kind: EventKind;
  /** ms since epoch; the adapter stamps it from the injected clock. */
  time: number;
  /** Canonical client address (IPv4-mapped IPv6 already unmapped). */
  ip: string;
  /** `smtp`, `imap`, `pop3`, … */
  protocol: string;
  /** Postfix `policy_context` (e.g. `submission`), empty when unset. */
  context: string;
  /** Authenticated user, case-folded; undefined when not authenticated. */
  user?: string | undefined;
  /** Envelope sender, lower-cased; '' for the null sender. */
  sender?: string | undefined;
  recipient?: string | undefined;
  /** Recipients this event stands for (1 per RCPT; recipient_count at DATA/END-OF-MESSAGE). */
  recipients: number;
  /** Message size in bytes (END-OF-MESSAGE), else 0. */
  size: number;
  /** Password fingerprint (Dovecot pwhash), never the password; a login result read from a log has none. */
  pwhash?: string | undefined;
  /** For auth-result: the password was checked and right, and the login was let in. */
  success?: boolean | undefined;
  /**
   * For auth-result: the login was refused by policy (Dovecot's `policy_reject`), so its
   * password was never checked, or was right but the login was refused anyway. Not a guess.
   */
  refused?: boolean | undefined;
  /**
   * What DNS blocklists say of the client, when one lists it (Postfix events; dns/dnsbl.ts fills it in
   * from its cache, never the engine). Undefined: listed nowhere, or the answer was not back in time.
   */
  listed?: Listing | undefined;
}

/** The zones that list a client, the codes they answered, and the sum of their weights (`dnsbl.zones`). */
export interface Listing {
  score: number;
  zones: ReadonlyArray<{ zone: string; codes: readonly string[]; weight: number }>;
}

/**
 * The longest any duration may be (a ban, a suspension, a window, a timeout): 10 years. Times
 * stay far inside what Date can print (±8.64e15 ms), so a ban can always be shown and enforced.
 */
export const MAX_DURATION_MS = 3650 * 86_400_000;
export const MAX_DURATION_TEXT = '3650d';

export type Action = 'allow' | 'delay' | 'tempfail' | 'reject' | 'hold';

/** Severity order: a stronger action wins when several rules fire. */
export const ACTION_RANK: Record<Action, number> = { allow: 0, delay: 1, hold: 2, tempfail: 3, reject: 4 };

/** `user_ip` and `user_network`: one account from one address (network), e.g. a guessing run against it. */
export type SubjectKind = 'ip' | 'network' | 'user' | 'sender' | 'sender_domain' | 'user_ip' | 'user_network';

/** Ban scope: the client address itself, or its network (IPv4 /24, IPv6 /64 by default). */
export type BanScope = 'ip' | 'network';

export interface BanRecord {
  /** The banned address or CIDR, e.g. `192.0.2.7` or `2001:db8:1:2::/64`. */
  subject: string;
  since: number;
  until: number;
  rule: string;
  reason: string;
  /** How many bans this subject earned within the look-back period, this one included. */
  offence: number;
  actor: string;
}

export interface SuspensionRecord {
  user: string;
  since: number;
  until: number;
  rule: string;
  reason: string;
  actor: string;
}

export interface BanEffect {
  type: 'ban';
  subject: string;
  rule: string;
  reason: string;
  evidence: Record<string, unknown>;
  escalation: Escalation;
  /** Fixed length instead of escalation (manual bans). */
  durationMs?: number | undefined;
  /** IPv6: also ban `prefix` once bans cover `threshold` distinct networks (`member`s) inside it. */
  aggregate?: { prefix: string; member: string; threshold: number } | undefined;
}

export interface SuspendEffect {
  type: 'suspend';
  user: string;
  rule: string;
  reason: string;
  durationMs: number;
  evidence: Record<string, unknown>;
}

/** Tell the administrator (the daemon's notifier sends it; cooldown per rule and subject). */
export interface NotifyEffect {
  type: 'notify';
  rule: string;
  subject: string;
  user?: string | undefined;
  ip: string;
  action: Action;
  reason: string;
  evidence: Record<string, unknown>;
}

export type Effect = BanEffect | SuspendEffect | NotifyEffect;

/** Ban length: base × factor^(earlier offences within lookback), capped at max. */
export interface Escalation {
  baseMs: number;
  factor: number;
  maxMs: number;
  lookbackMs: number;
}

/** A rule that fired; in observe mode it is reported but does not act. */
export interface RuleHit {
  rule: string;
  subject: string;
  count: number;
  limit: number;
  action: Action;
  observe: boolean;
  reason: string;
}

export interface Decision {
  action: Action;
  /** Seconds, for `delay`. */
  delaySeconds: number;
  /** Name of the rule (or `ban`, `suspension`) that made the decision; '' for allow. */
  rule: string;
  /** Human-readable reason, safe to show to the SMTP/IMAP client. */
  reason: string;
  /** Every rule that fired, observe-mode ones included. */
  hits: RuleHit[];
  effects: Effect[];
}

export const ALLOW: Readonly<Decision> = Object.freeze({
  action: 'allow',
  delaySeconds: 0,
  rule: '',
  reason: '',
  hits: [],
  effects: [],
});
