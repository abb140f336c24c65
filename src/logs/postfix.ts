/*
 * logs/postfix — what a Postfix 3.x log message says (docs/LOGS.md lists each
 * line). The client address is always the one Postfix puts in brackets right
 * after `from` or `warning:`, never one from text a client chose (a SASL user
 * name, a HELO, a recipient), so no client can have another address counted.
 * Pure; `program` is the syslog tag (`postfix/submission/smtpd`).
 */
import { canonicalIp } from '../engine/address.js';
import { SKIP, type AbuseKind, type Finding } from './types.js';

// `host[address]` or `host[address]:port` (smtpd_client_port_logging); a host name never holds a bracket.
const CLIENT = String.raw`[^\s[]*\[([^\]]+)\](?::\d+)?`;
const SASL_FAILED = new RegExp(String.raw`^warning: ${CLIENT}: SASL [\w-]+ authentication failed: ?(.*)$`);
const SASL_OK = new RegExp(String.raw`^\w+: client=${CLIENT}, sasl_method=[^,]*, sasl_username=([^,]*)`);
const REJECT = new RegExp(String.raw`^\w+: reject: \w+ from ${CLIENT}: \d{3} [\d.]+ (.*)$`);
const LOST_AFTER_AUTH = new RegExp(String.raw`^lost connection after AUTH from ${CLIENT}`);
const TOO_MANY_ERRORS = new RegExp(String.raw`^too many errors after \S+ from ${CLIENT}`);
const PREGREET = /^PREGREET \d+ after \S+ from \[([^\]]+)\]:\d+/;
const DNSBL_RANK = /^DNSBL rank \d+ for \[([^\]]+)\]:\d+/;
const USER_FIELD = ', sasl_username=';

/** `postfix/submission/smtpd` → `submission`; `postfix/smtpd` → ''. */
function contextOf(program: string): string {
  const first = program.indexOf('/');
  const last = program.lastIndexOf('/');
  return first < last ? program.slice(first + 1, last) : '';
}

function userOf(raw: string | undefined): string | undefined {
  const u = raw?.trim().toLowerCase();
  return u && u !== '(unavailable)' ? u : undefined;
}

function login(ok: boolean, ip: string, user: string | undefined, program: string): Finding {
  return {
    kind: 'login',
    ok,
    ip,
    user,
    protocol: 'smtp',
    context: contextOf(program),
    session: undefined,
    attempts: 1,
    summary: false,
    spanMs: 0,
  };
}

function abuse(kind: AbuseKind, rawIp: string | undefined, program: string): Finding | undefined {
  const ip = rawIp === undefined ? undefined : canonicalIp(rawIp);
  return ip === undefined ? undefined : { kind, ip, context: contextOf(program) };
}

/** A SASL failure: the reason is the server's text, the user name (`, sasl_username=`) comes last. */
function saslFailure(m: RegExpExecArray, program: string): Finding | undefined {
  const ip = canonicalIp(m[1] as string);
  if (ip === undefined) return undefined;
  const rest = m[2] as string;
  const at = rest.indexOf(USER_FIELD);
  const reason = at < 0 ? rest : rest.slice(0, at);
  // Postfix could not reach its SASL server, or the client named a mechanism not offered: no password was tried.
  if (reason.startsWith('Connection lost to authentication server') || reason.startsWith('Invalid authentication'))
    return SKIP;
  return login(false, ip, userOf(at < 0 ? undefined : rest.slice(at + USER_FIELD.length)), program);
}

export function parsePostfix(program: string, message: string): Finding | undefined {
  const c = message.charCodeAt(0);
  if (program.endsWith('/postscreen')) {
    if (c === 80) return abuse('pregreet', PREGREET.exec(message)?.[1], program); // P
    if (c === 68) return abuse('blocklisted', DNSBL_RANK.exec(message)?.[1], program); // D
    // Its rejects follow a PREGREET or DNSBL line of the same connection, which counted it.
    return message.includes(': reject: ') ? SKIP : undefined;
  }
  if (c === 119) {
    // w
    const m = message.includes(' authentication failed') ? SASL_FAILED.exec(message) : null;
    return m ? saslFailure(m, program) : undefined;
  }
  if (c === 108) return abuse('lost-after-auth', LOST_AFTER_AUTH.exec(message)?.[1], program); // l
  if (c === 116) return abuse('smtp-errors', TOO_MANY_ERRORS.exec(message)?.[1], program); // t
  if (message.includes(': reject: ')) {
    const m = REJECT.exec(message);
    if (!m) return undefined;
    const text = m[2] as string;
    if (text.includes(': Relay access denied;')) return abuse('relay-denied', m[1], program);
    if (text.startsWith('Service unavailable; Client host [') && text.includes('] blocked using '))
      return abuse('blocklisted', m[1], program);
    return undefined;
  }
  if (message.includes(', sasl_username=')) {
    const m = SASL_OK.exec(message);
    const ip = m ? canonicalIp(m[1] as string) : undefined;
    return ip === undefined ? undefined : login(true, ip, userOf(m?.[2]), program);
  }
  return undefined;
}
