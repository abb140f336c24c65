/*
 * engine/messages — the words of every refusal a mail user can be shown, in
 * English and Japanese (`locale`), and which replies may carry Japanese.
 *
 * Measured with real Postfix 3.7 and Dovecot 2.3 (docs/PROTOCOL.md, section 5):
 * - IMAP `NO [ALERT] msg` and POP3 `-ERR [AUTH] msg`: Dovecot passes the
 *   policy's UTF-8 byte for byte, so these speak the configured locale.
 * - SMTP (Postfix policy replies, and Dovecot's msg inside Postfix's 535 for
 *   SMTP AUTH): Postfix sends UTF-8 raw to clients that never asked for
 *   SMTPUTF8 (smtputf8_enable = yes), or blanks every byte of it (= no). So
 *   SMTP replies stay English and ASCII whatever the locale.
 *
 * A mail user reads these texts; the administrator's records (audit trail,
 * bans, suspensions, alerts) keep the English ones (engine/decide.ts).
 */
import type { CountKind } from './policy.js';
import type { Listing } from './types.js';

export const LOCALES = ['en', 'ja'] as const;
export type Locale = (typeof LOCALES)[number];

/** A rule's own message: one text for every locale (as the administrator wrote it), or one per locale. */
export type LocalText = string | Readonly<Record<Locale, string>>;

/** A rule message in one language ('' when the rule has none). */
export function textIn(text: LocalText, locale: Locale): string {
  return typeof text === 'string' ? text : text[locale];
}

// Only these carry UTF-8 to the client intact (measured, see above); any other protocol gets English.
const LOCALIZED_PROTOCOLS: ReadonlySet<string> = new Set(['imap', 'pop3']);

/** The language of a reply to an event of this protocol. */
export function replyLocale(locale: Locale, protocol: string): Locale {
  return LOCALIZED_PROTOCOLS.has(protocol) ? locale : 'en';
}

/** A rule over its limit, as a generated reason tells it. */
export interface Overrun {
  count: CountKind;
  subject: string;
  limit: number;
  windowMs: number;
  rule: string;
}

export interface Catalogue {
  /** The built-in rules' own messages (config/defaults.ts). */
  addressGuessing: string;
  accountGuessingFromAddress: string;
  accountUnderAttack: string;
  accountGuessCap: string;
  /** A rule without a message of its own that refuses; `later`: the refusal is temporary. */
  tooMany: (o: Overrun, later: boolean) => string;
  /** A baseline rule: far above the subject's own usual rate. */
  unusualRate: (o: Overrun) => string;
  /** An `allow` rule: nothing refused, only reported. */
  unusualActivity: (o: Overrun) => string;
  banned: (subject: string, until: number, rule: string) => string;
  /** `login`: refused at login, else only from sending. */
  suspended: (user: string, rule: string, login: boolean) => string;
  /** Added to the reason of a rule that acts on a DNSBL listing: the zones and what they answered. */
  listedIn: (zones: Listing['zones']) => string;
}

/** The built-in rules' messages, both languages (a rule's `then.message`). */
export type BuiltInMessage =
  'addressGuessing' | 'accountGuessingFromAddress' | 'accountUnderAttack' | 'accountGuessCap';

export function builtInMessage(key: BuiltInMessage): Record<Locale, string> {
  return { en: MESSAGES.en[key], ja: MESSAGES.ja[key] };
}

/** A duration as the config writes it: `250ms`, `90s`, `15m`, `1h`, `2w`. */
export function formatDuration(ms: number): string {
  return durationIn(ms, 'en');
}

/** An ISO time that cannot throw: Date's toISOString() throws a RangeError for a time it cannot print. */
export function isoTime(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? `an unreadable time (${String(ms)})` : d.toISOString();
}

// The units of a duration, longest first, and how each language writes them.
const UNITS: ReadonlyArray<{ ms: number; en: string; ja: string }> = [
  { ms: 604_800_000, en: 'w', ja: '週間' },
  { ms: 86_400_000, en: 'd', ja: '日' },
  { ms: 3_600_000, en: 'h', ja: '時間' },
  { ms: 60_000, en: 'm', ja: '分' },
  { ms: 1000, en: 's', ja: '秒' },
];

/** A duration in its largest whole unit: `15m`, `1h` (en), `15分`, `1時間` (ja). */
function durationIn(ms: number, locale: Locale): string {
  for (const u of UNITS) if (ms >= u.ms && ms % u.ms === 0) return `${ms / u.ms}${u[locale]}`;
  if (ms === 0) return locale === 'en' ? '0s' : '0秒';
  return `${ms}${locale === 'en' ? 'ms' : 'ミリ秒'}`;
}

const EN_NOUN: Record<CountKind, string> = {
  events: 'requests',
  recipients: 'recipients',
  messages: 'messages',
  bytes: 'bytes',
  failures: 'failed logins',
  'distinct:pwhash': 'different passwords',
  'distinct:ip': 'different addresses',
  'distinct:network': 'different networks',
  'distinct:user': 'different logins',
  'distinct:recipient_domain': 'different recipient domains',
};

const en: Catalogue = {
  addressGuessing: 'Too many failed logins from your address; try again later',
  accountGuessingFromAddress: 'Too many failed logins for this account from your address; try again later',
  accountUnderAttack:
    'Login temporarily refused from this network; use a device you have used before or contact your administrator',
  accountGuessCap:
    'Too many failed logins for this account today; log in from a device or network you have used before, or ask your mail administrator',
  tooMany: (o, later) =>
    `Too many ${EN_NOUN[o.count]} from ${o.subject} (limit ${o.limit} per ${formatDuration(o.windowMs)}, rule ${o.rule})${later ? '; try again later' : ''}`,
  unusualRate: (o) =>
    `Unusual sending: ${EN_NOUN[o.count]} from ${o.subject} far above its usual rate (over ${o.limit} per ${formatDuration(o.windowMs)}, rule ${o.rule})`,
  unusualActivity: (o) =>
    `Unusual activity: ${EN_NOUN[o.count]} from ${o.subject} (over ${o.limit} per ${formatDuration(o.windowMs)}, rule ${o.rule})`,
  banned: (subject, until, rule) => `Access denied: ${subject} is blocked until ${isoTime(until)} (rule ${rule})`,
  suspended: (user, rule, login) =>
    `Account ${user} is suspended${login ? '' : ' from sending'} (rule ${rule}); contact your mail administrator`,
  listedIn: (zones) => `. Listed in ${zones.map((z) => `${z.zone} (${z.codes.join(', ')})`).join(', ')}`,
};

// What is counted, and the counter word that goes with a number of it (3回, 100通).
const JA_NOUN: Record<CountKind, readonly [string, string]> = {
  events: ['リクエスト', '件'],
  recipients: ['宛先', '件'],
  messages: ['送信メール', '通'],
  bytes: ['送信データ量', 'バイト'],
  failures: ['ログインの失敗', '回'],
  'distinct:pwhash': ['異なるパスワードでの試行', '種類'],
  'distinct:ip': ['異なるIPアドレスからの接続', '件'],
  'distinct:network': ['異なるネットワークからの接続', '件'],
  'distinct:user': ['異なるアカウントでの試行', '件'],
  'distinct:recipient_domain': ['異なる宛先ドメイン', '件'],
};

const jaAmount = (o: Overrun): string => `${durationIn(o.windowMs, 'ja')}あたり${o.limit}${JA_NOUN[o.count][1]}`;

const LATER_JA = 'しばらくしてから再度お試しください。';

const ja: Catalogue = {
  addressGuessing: `このIPアドレスからのログインの失敗が多すぎます。${LATER_JA}`,
  accountGuessingFromAddress: `このIPアドレスから、このアカウントへのログインの失敗が多すぎます。${LATER_JA}`,
  accountUnderAttack:
    'このネットワークからのログインを一時的に制限しています。以前にご利用になった端末からログインするか、メール管理者にお問い合わせください。',
  accountGuessCap:
    '本日、このアカウントへのログインの失敗が多すぎます。以前にご利用になった端末またはネットワークからログインするか、メール管理者にお問い合わせください。',
  tooMany: (o, later) =>
    `${JA_NOUN[o.count][0]}が多すぎます（対象：${o.subject}、上限：${jaAmount(o)}、ルール：${o.rule}）。${later ? LATER_JA : ''}`,
  unusualRate: (o) =>
    `${JA_NOUN[o.count][0]}が通常より大幅に多くなっています（対象：${o.subject}、${jaAmount(o)}超、ルール：${o.rule}）。`,
  unusualActivity: (o) =>
    `通常と異なる利用を検知しました：${JA_NOUN[o.count][0]}が${jaAmount(o)}を超えています（対象：${o.subject}、ルール：${o.rule}）。`,
  banned: (subject, until, rule) =>
    `接続元「${subject}」からのアクセスは${localTime(until)}まで制限されています（ルール：${rule}）。`,
  suspended: (user, rule, login) =>
    `アカウント「${user}」は${login ? '利用停止中です' : 'メールの送信が停止されています'}（ルール：${rule}）。メール管理者にお問い合わせください。`,
  listedIn: (zones) => `（DNSBL掲載：${zones.map((z) => `${z.zone} ${z.codes.join('、')}`).join('、')}）`,
};

export const MESSAGES: Readonly<Record<Locale, Catalogue>> = { en, ja };

let clock: { tz: string | undefined; format: Intl.DateTimeFormat } | undefined;

/**
 * The end of a ban as a person in Japan reads it: the server's local time (2026年12月3日 14:05 JST), to the
 * minute, rounded up so that it is never earlier than the real end. The formatter is made again only when
 * TZ changes (node applies a new process.env.TZ at once).
 */
function localTime(ms: number): string {
  const minute = Math.ceil(ms / 60_000) * 60_000;
  if (Number.isNaN(new Date(minute).getTime())) return isoTime(ms);
  const tz = process.env.TZ;
  if (clock === undefined || clock.tz !== tz) {
    const format = new Intl.DateTimeFormat('ja-JP', {
      year: 'numeric',
      month: 'long',
      day: 'numeric',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
      timeZoneName: 'short',
    });
    clock = { tz, format };
  }
  return clock.format.format(minute);
}

// C0 and C1 controls and the Unicode line and paragraph separators: anything a client might break a line at.
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\x00-\x1f\x7f-\x9f\u2028\u2029]+/g;

/**
 * A reply's text on one line: every run of control characters (CR and LF above all, which would end the
 * reply early) becomes one space, and the text is cut to at most `maxBytes` of UTF-8 at a character boundary.
 */
export function replyLine(text: string, maxBytes: number): string {
  const line = text.replace(CONTROLS, ' ');
  if (line.length * 3 <= maxBytes) return line;
  let bytes = 0;
  let end = 0;
  for (const ch of line) {
    const cp = ch.codePointAt(0) as number;
    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (bytes > maxBytes) break;
    end += ch.length;
  }
  return line.slice(0, end);
}
