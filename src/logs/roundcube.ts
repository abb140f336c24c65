/*
 * logs/roundcube — Roundcube's failed (and successful) logins:
 *
 *   errors.log:     [27-Nov-2026 23:26:09 +0000]: <sess> IMAP Error: Login failed for USER against HOST from ADDR. SERVER TEXT in FILE on line N (POST /?_task=login&_action=login)
 *   userlogins.log: [27-Nov-2026 23:26:09 +0000]: <sess> Failed login for USER from ADDR in session ID (error: 0)
 *                   [27-Nov-2026 23:26:09 +0000]: <sess> Successful login for USER (ID: 1) from ADDR in session ID
 *
 * (or the same after a syslog header, log_driver = syslog). ADDR is the web
 * server's REMOTE_ADDR, followed by `(X-Real-IP: a,X-Forwarded-For: b, c)`
 * when the request had those headers. USER is whatever the client typed, so
 * it may itself hold ` from 192.0.2.1`: a line with more than one ` from `
 * and an address is ambiguous and skipped (no real account is named so, and
 * the client it would frame is not counted). Pure.
 */
import { canonicalIp } from '../engine/address.js';
import { SKIP, type Finding } from './types.js';

const MARKERS = [
  { text: 'Login failed for ', ok: false },
  { text: 'FAILED login for ', ok: false },
  { text: 'Failed login for ', ok: false },
  { text: 'Successful login for ', ok: true },
] as const;
// A request line cannot hold a space, so ` in FILE on line N (METHOD URI)` is Roundcube's own.
const TRAILER = / in \S+ on line \d+ \(\S+ \S+\)$/;

/** ` from ` at `at`: the client it names, with `trustForwarded` the X-Real-IP, else the last X-Forwarded-For address. */
function clientAt(body: string, at: number, trustForwarded: boolean): string | undefined {
  let end = at + 6;
  while (end < body.length && /[0-9A-Fa-f.:]/.test(body[end] as string)) end++;
  const direct = canonicalIp(body.slice(at + 6, end).replace(/\.$/, ''));
  if (!trustForwarded || direct === undefined || body[end] !== '(') return direct;
  const headers = body.slice(end + 1, body.indexOf(')', end));
  const real = /X-Real-IP: ([^,\s]+)/.exec(headers)?.[1];
  const forwarded = /X-Forwarded-For: (.*)$/.exec(headers)?.[1]?.split(',').pop()?.trim();
  return canonicalIp(real ?? forwarded ?? '') ?? direct;
}

export function parseRoundcube(line: string, trustForwarded: boolean): Finding | undefined {
  for (const { text, ok } of MARKERS) {
    const at = line.indexOf(text);
    if (at < 0) continue;
    const body = line.slice(at + text.length).replace(TRAILER, '');
    let found: { at: number; ip: string } | undefined;
    for (let from = body.indexOf(' from '); from >= 0; from = body.indexOf(' from ', from + 6)) {
      const ip = clientAt(body, from, trustForwarded);
      if (ip === undefined) continue;
      if (found) return SKIP;
      found = { at: from, ip };
    }
    if (!found) return undefined;
    let user = body.slice(0, found.at);
    const against = user.lastIndexOf(' against ');
    if (against >= 0) user = user.slice(0, against);
    if (ok) user = user.replace(/ \(ID: \d+\)$/, '');
    return {
      kind: 'login',
      ok,
      ip: found.ip,
      user: user.trim().toLowerCase() || undefined,
      protocol: 'webmail',
      context: '',
      session: undefined,
      attempts: 1,
      summary: false,
      spanMs: 0,
    };
  }
  return undefined;
}
