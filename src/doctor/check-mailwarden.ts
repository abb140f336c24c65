/*
 * doctor/check-mailwarden — our own configuration (the Settings that
 * `mailwarden serve` would run), and where Postfix and Dovecot must point to
 * reach this daemon's listeners.
 */
import type { Settings } from '../config/compile.js';
import { DEFAULT_LISTEN } from '../config/defaults.js';
import type { ListenTarget } from '../config/schema.js';
import { DOVECOT_PATH } from '../adapters/dovecot/server.js';
import { parseSubject, type ParsedSubject } from '../engine/address.js';
import { exposureWarnings, isLoopback } from '../listen.js';
import type { Finding } from './report.js';

/** Allowlisted networks wider than these exempt whole providers from every limit and ban. */
const WIDEST_ALLOWLIST = { v4: 16, v6: 48 };

const WILDCARD = new Set(['0.0.0.0', '::', '*']);

/** How a client on this machine reaches a TCP listener: one on every address is reached on loopback. */
const reachable = (t: { host: string; port: number }): string => {
  const host = WILDCARD.has(t.host) ? '127.0.0.1' : t.host;
  return `${host.includes(':') ? `[${host}]` : host}:${t.port}`;
};

/** The check_policy_service target of this daemon's first Postfix listener (`inet:127.0.0.1:10031`). */
export function postfixTarget(s: Settings): string | undefined {
  const t = s.listen.postfix[0];
  if (t === undefined) return undefined;
  return t.kind === 'unix' ? `unix:${t.path}` : `inet:${reachable(t)}`;
}

/** The auth_policy_server_url of this daemon's first TCP Dovecot listener (Dovecot speaks HTTP over TCP only). */
export function dovecotUrl(s: Settings): string | undefined {
  const t = s.listen.dovecot.find((x) => x.kind === 'tcp');
  return t === undefined ? undefined : `http://${reachable(t)}${DOVECOT_PATH}`;
}

/** Whether a TCP address a mail server connects to is one of `ours`. */
export function isOurTcp(ours: readonly ListenTarget[], host: string, port: number): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return ours.some(
    (t) =>
      t.kind === 'tcp' &&
      t.port === port &&
      (WILDCARD.has(t.host) || t.host.toLowerCase() === h || (h === 'localhost' && isLoopback(t.host))),
  );
}

/** The IP networks of a Postfix mynetworks or Dovecot login_trusted_networks value (`[::1]/128` too); maps and names are skipped. */
export function networksIn(value: string): ParsedSubject[] {
  return value
    .split(/[\s,]+/)
    .map((e) => parseSubject(e.replace(/^\[([^\]]*)\]/, '$1')))
    .filter((p) => p !== undefined);
}

const listFix = (key: string, items: readonly string[]): string =>
  `${key}: [${items.map((i) => JSON.stringify(i)).join(', ')}]`;

export function checkMailwarden(s: Settings): Finding[] {
  const out: Finding[] = [];
  for (const w of exposureWarnings(s)) {
    const key = (/^listen\.(postfix|dovecot|admin) /.exec(w)?.[1] ?? 'admin') as keyof typeof DEFAULT_LISTEN;
    out.push({
      id: 'mailwarden.listener-exposed',
      severity: 'warning',
      area: 'mailwarden',
      message: w,
      fix: `listen:\n  ${listFix(key, DEFAULT_LISTEN[key])}`,
    });
  }
  const notifying = s.policy.rules.filter((r) => r.then.notify).map((r) => r.name);
  if (notifying.length && s.alerts.email.to.length === 0 && !s.alerts.webhook.url) {
    out.push({
      id: 'mailwarden.alerts-no-channel',
      severity: 'warning',
      area: 'mailwarden',
      message: `Rules ${notifying.join(', ')} alert the administrator (a cracked or spamming account), but alerts go nowhere: alerts.email.to is empty and alerts.webhook.url is unset. A stolen account would be suspended without anyone hearing of it.`,
      fix: 'alerts:\n  email: { to: ["postmaster@example.org"] }   # or webhook: { url: "https://…" }',
    });
  }
  const observe = s.policy.rules.filter((r) => r.mode === 'observe').map((r) => r.name);
  if (observe.length) {
    out.push({
      id: 'mailwarden.observe-rules',
      severity: 'warning',
      area: 'mailwarden',
      message: `Rules ${observe.join(', ')} are in observe mode: they count and log what they would do, and never act. Observe mode is for rolling a rule out; left on, the rule protects nothing.`,
      fix: observe.map((n) => `mode: enforce   # in the rule named ${n} (or delete its mode line)`).join('\n'),
    });
  }
  const wide = s.allowlist.networks.filter((n) => {
    const p = parseSubject(n);
    return p !== undefined && p.prefix < (p.v6 ? WIDEST_ALLOWLIST.v6 : WIDEST_ALLOWLIST.v4);
  });
  if (wide.length) {
    const kept = s.allowlist.networks.filter((n) => !wide.includes(n));
    out.push({
      id: 'mailwarden.allowlist-wide',
      severity: 'warning',
      area: 'mailwarden',
      message: `allowlist.networks holds ${wide.join(', ')}, wider than IPv4 /${WIDEST_ALLOWLIST.v4} or IPv6 /${WIDEST_ALLOWLIST.v6}: every address in it is exempt from every limit and ban, a whole provider's customers among them. Allowlist your own offices and servers, one by one.`,
      fix: `allowlist:\n  ${listFix('networks', kept)}`,
    });
  }
  return out;
}
