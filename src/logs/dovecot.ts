/*
 * logs/dovecot — what a Dovecot 2.3 log message says (docs/LOGS.md lists
 * each line): the login process's lines (`imap-login: Login: …`, `… (auth
 * failed, 3 attempts in 18 secs): user=<…>, rip=…, session=<…>`), always
 * written, and the auth process's per-attempt lines (`passwd-file(user,ip,
 * <session>): Password mismatch`), written with auth_verbose = yes.
 *
 * The user name comes first in both and is the client's to choose, so the
 * address is read after it: the last `rip=` of a login line, the last field
 * of an auth line's `(…)`. Pure; `message` starts at the process name
 * (`imap-login: Info: …`, or `imap-login: …` through syslog).
 */
import { canonicalIp } from '../engine/address.js';
import { SKIP, type Finding } from './types.js';

const AUTH_FAILED = /\(auth failed, (\d+) attempts?(?: in (\d+) secs?)?\)/;
// driver(user,address[,<session>]): reason — the user is everything up to the last comma before the address.
const AUTH_LINE =
  /\b[a-z][\w-]*\(([^()]*),([0-9A-Fa-f.:]+)(?:,<([^<>]*)>)?\): (?:Password mismatch|unknown user|pam_authenticate\(\) failed|Invalid credentials)/;
/** A guessing client makes at most this many attempts count from one line (Dovecot itself closes far sooner). */
const MAX_ATTEMPTS = 100;

/** Dovecot's protocol names, as its auth policy requests carry them (`%s`). */
function protocolOf(service: string): string {
  return service === 'managesieve' ? 'sieve' : service;
}

/** The login session: after the last `session=<`, up to `>`. */
function sessionOf(message: string): string | undefined {
  const at = message.lastIndexOf('session=<');
  const end = at < 0 ? -1 : message.indexOf('>', at + 9);
  return end < 0 ? undefined : message.slice(at + 9, end);
}

/** The login process's address: after the last ` rip=`, up to the comma. */
function ripOf(message: string): string | undefined {
  const at = message.lastIndexOf(' rip=');
  if (at < 0) return undefined;
  const end = message.indexOf(',', at);
  return canonicalIp(message.slice(at + 5, end < 0 ? undefined : end));
}

/** The user of a login line: from `user=<` up to the `>` before the address (it may hold `>` itself). */
function loginUser(message: string): string | undefined {
  const start = message.indexOf('user=<');
  const rip = message.lastIndexOf(' rip=');
  if (start < 0 || rip < start) return undefined;
  const end = message.lastIndexOf('>,', rip);
  const user = end > start ? message.slice(start + 6, end).toLowerCase() : '';
  return user || undefined;
}

function loginLine(service: string, rest: string): Finding | undefined {
  const ok = rest.startsWith('Login: ');
  // Only before the user name, which is the client's: `(auth failed, 1 attempts in 2 secs): user=<…>`.
  const reasonEnd = rest.indexOf(': user=<');
  const failed = ok ? null : AUTH_FAILED.exec(reasonEnd < 0 ? rest : rest.slice(0, reasonEnd));
  if (!ok && !failed) return rest.includes('(no auth attempts') ? SKIP : undefined;
  const ip = ripOf(rest);
  if (ip === undefined) return undefined;
  return {
    kind: 'login',
    ok,
    ip,
    user: loginUser(rest),
    protocol: protocolOf(service),
    context: '',
    session: sessionOf(rest),
    attempts: failed ? Math.min(MAX_ATTEMPTS, Number(failed[1])) : 1,
    summary: true,
    spanMs: failed?.[2] === undefined ? 0 : Number(failed[2]) * 1000,
  };
}

function authLine(rest: string): Finding | undefined {
  const m = AUTH_LINE.exec(rest);
  if (!m) return rest.includes('policy server refusal') ? SKIP : undefined;
  const ip = canonicalIp(m[2] as string);
  if (ip === undefined) return undefined;
  // No session: an SMTP server's SASL request (Postfix), whose own line counts the attempt.
  if (m[3] === undefined) return SKIP;
  return {
    kind: 'login',
    ok: false,
    ip,
    user: (m[1] as string).toLowerCase() || undefined,
    protocol: 'dovecot',
    context: '',
    session: m[3],
    attempts: 1,
    summary: false,
    spanMs: 0,
  };
}

export function parseDovecot(message: string): Finding | undefined {
  const colon = message.indexOf(': ');
  if (colon < 0) return undefined;
  const process = message.slice(0, colon);
  let rest = message.slice(colon + 2);
  if (rest.startsWith('Info: ')) rest = rest.slice(6);
  if (process.endsWith('-login')) return loginLine(process.slice(0, -6), rest);
  if (process.startsWith('auth')) return authLine(rest);
  return undefined;
}
