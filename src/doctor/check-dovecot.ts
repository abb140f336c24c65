/*
 * doctor/check-dovecot — pure checks over a Dovecot configuration read by
 * doctor/dovecot.ts: logins only over TLS, and the auth policy wired to this
 * daemon as docs/INTEGRATION.md shows.
 *
 * Dovecot 2.4 renamed some settings (disable_plaintext_auth became
 * auth_allow_cleartext, ssl_cert ssl_server_cert_file); the names in force
 * are told by which one doveconf prints. Only 2.3 is tested here.
 *
 * TLS settings may differ per `protocol`, `local`, `remote` or `local_name`
 * section; each such section is checked with its values over the top
 * level's, and a finding names the sections that have it.
 */
import { DOVECOT_PATH } from '../adapters/dovecot/server.js';
import type { Settings } from '../config/compile.js';
import { tooBroad } from '../engine/address.js';
import type { CertRef } from './certs.js';
import { allowsOldTls } from './check-postfix.js';
import { dovecotUrl, isOurTcp, networksIn } from './check-mailwarden.js';
import type { DovecotConfig, DovecotSection } from './dovecot.js';
import { mergeByPlace, type Finding } from './report.js';

const FILTERS = new Set(['protocol', 'local', 'remote', 'local_name']);

/** Mechanisms that send the password itself; the others run a challenge that can be attacked offline when sniffed. */
const PLAINTEXT_MECHANISMS = new Set(['plain', 'login', 'external', 'oauthbearer', 'xoauth2', 'anonymous']);

/** The placeholder of docs/INTEGRATION.md and the like. */
const PLACEHOLDER = /[<>]|random string|change.?me|example|placeholder|secret|xxx|todo/i;
const NONCE_MIN_LENGTH = 16;

/** What the adapter needs in every request (adapters/dovecot/translate.ts). */
const NEEDED_ATTRIBUTES = ['login', 'pwhash', 'remote'];
const RECOMMENDED_ATTRIBUTES =
  'login=%{requested_username} pwhash=%{hashed_password} remote=%{rip} device_id=%{client_id} protocol=%s session_id=%{session}';

interface Scope {
  /** '' for the top level, else e.g. `protocol imap`. */
  where: string;
  get(key: string): string;
}

/** The top level, and every filter section that sets one of `keys`, reading through to the enclosing level. */
function scopes(root: DovecotSection, keys: readonly string[]): Scope[] {
  const out: Scope[] = [];
  const walk = (sec: DovecotSection, where: string, parent: ((k: string) => string) | undefined): void => {
    const get = (k: string): string => sec.settings.get(k) ?? parent?.(k) ?? '';
    if (parent === undefined || keys.some((k) => sec.settings.has(k))) out.push({ where, get });
    for (const child of sec.sections) {
      if (FILTERS.has(child.type)) walk(child, `${where} ${child.type} ${child.name}`.trim(), get);
    }
  };
  walk(root, '', undefined);
  return out;
}

const place = (where: string): string => (where === '' ? 'top level' : `${where} { }`);

/** The names of the settings this Dovecot version uses. */
function names(dv: DovecotConfig): { v24: boolean; cleartext: string; cert: string } {
  const v24 = dv.root.settings.has('auth_allow_cleartext');
  return {
    v24,
    cleartext: v24 ? 'auth_allow_cleartext' : 'disable_plaintext_auth',
    cert: v24 ? 'ssl_server_cert_file' : 'ssl_cert',
  };
}

const certLines = (v24: boolean): string =>
  v24
    ? 'ssl_server_cert_file = /path/to/fullchain.pem\nssl_server_key_file = /path/to/privkey.pem'
    : 'ssl_cert = </path/to/fullchain.pem\nssl_key = </path/to/privkey.pem';

function scopeTlsFindings(sc: Scope, n: ReturnType<typeof names>): Finding[] {
  const out: Finding[] = [];
  const ssl = sc.get('ssl');
  const cleartext = n.v24 ? sc.get(n.cleartext) === 'yes' : sc.get(n.cleartext) === 'no';
  if (ssl === 'no') {
    out.push({
      id: 'dovecot.ssl-off',
      severity: 'error',
      area: 'tls',
      message: 'ssl = no: IMAP and POP3 run without TLS, and every login crosses the network in clear.',
      fix: `ssl = required\n${certLines(n.v24)}   # the paths of your certificate`,
    });
    return out;
  }
  if (sc.get(n.cert) === '') {
    out.push({
      id: 'tls.cert-missing',
      severity: 'error',
      area: 'tls',
      message: `ssl = ${ssl} but ${n.cert} is empty: Dovecot has no certificate to offer, and TLS fails.`,
      fix: `${certLines(n.v24)}   # the paths of your certificate`,
    });
  }
  if (cleartext && ssl !== 'required') {
    out.push({
      id: 'dovecot.plaintext-auth',
      severity: 'error',
      area: 'tls',
      message: `${n.cleartext} = ${sc.get(n.cleartext)} with ssl = ${ssl}: Dovecot takes passwords in clear before STARTTLS, for anyone on the path to read.`,
      fix: `${n.v24 ? 'auth_allow_cleartext = no' : 'disable_plaintext_auth = yes'}\nssl = required`,
    });
  }
  if (ssl === 'yes' && !cleartext) {
    const challenge = sc
      .get('auth_mechanisms')
      .split(/\s+/)
      .filter((m) => m && !PLAINTEXT_MECHANISMS.has(m.toLowerCase()));
    out.push({
      id: 'dovecot.ssl-not-required',
      severity: challenge.length ? 'warning' : 'info',
      area: 'tls',
      message:
        `ssl = yes: passwords in clear are refused before TLS (${n.cleartext}), but ` +
        (challenge.length
          ? `${challenge.join(', ')} still authenticate without TLS, and a sniffed exchange can be cracked offline.`
          : 'a client may still begin without TLS; ssl = required refuses any authentication before it.'),
      fix: 'ssl = required',
    });
  }
  const min = sc.get('ssl_min_protocol');
  if (allowsOldTls(min === 'ANY' ? 'SSLv3' : min)) {
    out.push({
      id: 'dovecot.tls-protocols',
      severity: 'warning',
      area: 'tls',
      message: `ssl_min_protocol = ${min} allows protocols older than TLS 1.2, which are broken.`,
      fix: 'ssl_min_protocol = TLSv1.2',
    });
  }
  return out;
}

function tlsFindings(dv: DovecotConfig): Finding[] {
  const n = names(dv);
  const items = scopes(dv.root, ['ssl', n.cleartext, 'ssl_min_protocol', 'auth_mechanisms']).flatMap((sc) =>
    scopeTlsFindings(sc, n).map((finding) => ({ place: place(sc.where), finding })),
  );
  return mergeByPlace(items, (ps) => `dovecot.conf ${ps.join(', ')}`);
}

/** The certificates Dovecot serves: the top level's and any section's (local_name gives one per host name). */
export function dovecotCertRefs(dv: DovecotConfig): CertRef[] {
  const n = names(dv);
  if (scopes(dv.root, ['ssl']).every((sc) => sc.get('ssl') === 'no')) return [];
  const out: CertRef[] = [];
  const walk = (sec: DovecotSection): void => {
    const v = sec.settings.get(n.cert);
    if (v) {
      // 2.3 reads a file given as `<path`; a value without `<` is the PEM text itself.
      const file = n.v24 ? v : v.startsWith('<') ? v.slice(1).trim() : undefined;
      out.push({
        setting: `Dovecot ${n.cert}`,
        files: file === undefined ? [] : [file],
        inline: file === undefined ? v : undefined,
      });
    }
    sec.sections.filter((c) => FILTERS.has(c.type)).forEach(walk);
  };
  walk(dv.root);
  return out;
}

export interface DovecotContext {
  /** Our configuration; undefined when it could not be read (the hook checks are skipped). */
  settings: Settings | undefined;
  /** A fresh random nonce, offered in the fix when the configured one will not do. */
  nonce: string;
}

function hookFindings(dv: DovecotConfig, s: Settings, nonce: string): Finding[] {
  const get = (k: string): string => dv.root.settings.get(k) ?? '';
  const out: Finding[] = [];
  const hook = (id: string, severity: Finding['severity'], message: string, fix: string | null): void => {
    out.push({ id, severity, area: 'hooks', message, fix });
  };
  const ours = dovecotUrl(s);
  const urlFix =
    ours === undefined
      ? 'auth_policy_server_url = http://127.0.0.1:10032/dovecot/policy\n# and in mailwarden.yaml, a TCP listener (Dovecot speaks HTTP over TCP only):\n# listen: { dovecot: ["127.0.0.1:10032"] }'
      : `auth_policy_server_url = ${ours}`;
  const rotate = `auth_policy_hash_nonce = ${nonce}`;
  const current = get('auth_policy_hash_nonce');
  const weak = PLACEHOLDER.test(current) || current.length < NONCE_MIN_LENGTH;
  const url = get('auth_policy_server_url');
  if (url === '') {
    hook(
      'dovecot.policy-missing',
      'error',
      'auth_policy_server_url is not set: Dovecot never asks mailwarden, so password guessing on IMAP, POP3 and SMTP AUTH is neither counted nor refused, and bans do not stop logins.',
      // Once the URL is set, Dovecot refuses to start without a nonce.
      weak ? `${urlFix}\n${rotate}` : urlFix,
    );
  } else if (!pointsAtUs(url, s)) {
    hook(
      'dovecot.policy-elsewhere',
      'error',
      `auth_policy_server_url = ${url} is not mailwarden's Dovecot listener (${ours ?? 'none over TCP'}): logins are checked and counted elsewhere, or, when nothing answers there, not at all (Dovecot fails open).`,
      urlFix,
    );
  }
  // An empty one with the URL set never gets here: doveconf refuses it (doctor.config-unreadable).
  if (url !== '' && weak) {
    hook(
      'dovecot.nonce-placeholder',
      'error',
      `auth_policy_hash_nonce looks like a placeholder or is shorter than ${NONCE_MIN_LENGTH} characters (its value is not shown). It salts the password fingerprints mailwarden keeps; someone who knows it can match them against a list of passwords. A new one resets the counts of different passwords once.`,
      rotate,
    );
  }
  const attrs = dv.root.settings.has('auth_policy_request_attributes')
    ? get('auth_policy_request_attributes')
        .split(/\s+/)
        .map((kv) => kv.slice(0, kv.indexOf('=')))
    : [...(dv.root.sections.find((x) => x.type === 'auth_policy_request_attributes')?.settings.keys() ?? [])];
  const missing = NEEDED_ATTRIBUTES.filter((a) => !attrs.includes(a));
  if (missing.length) {
    hook(
      'dovecot.policy-attributes',
      'error',
      `auth_policy_request_attributes lacks ${missing.join(', ')}: mailwarden refuses such requests (400), Dovecot fails open, and no login is checked or counted.`,
      `auth_policy_request_attributes = ${RECOMMENDED_ATTRIBUTES}`,
    );
  }
  const off = (k: string): boolean => get(k) === 'no';
  if (off('auth_policy_check_before_auth')) {
    hook(
      'dovecot.check-before-auth-off',
      'error',
      'auth_policy_check_before_auth = no: Dovecot checks every password before asking mailwarden, so a source refused for guessing, or banned, still gets its passwords checked.',
      'auth_policy_check_before_auth = yes',
    );
  }
  if (off('auth_policy_check_after_auth')) {
    hook(
      'dovecot.check-after-auth-off',
      'warning',
      'auth_policy_check_after_auth = no: a login with the right password is not asked about again, so one that should be refused once the password is known to be right (a suspended user with suspensions.block_login) gets in.',
      'auth_policy_check_after_auth = yes',
    );
  }
  if (off('auth_policy_report_after_auth')) {
    hook(
      'dovecot.report-off',
      'error',
      'auth_policy_report_after_auth = no: Dovecot never reports how a login ended, and every guessing and compromise rule counts reports: none of them ever fires.',
      'auth_policy_report_after_auth = yes',
    );
  }
  if (get('auth_policy_reject_on_fail') === 'yes') {
    hook(
      'dovecot.reject-on-fail',
      'warning',
      'auth_policy_reject_on_fail = yes: when mailwarden is stopped, restarting or slower than auth_policy_server_timeout_msecs, every login fails (fail closed). With no, users keep logging in, unchecked, while it is away.',
      'auth_policy_reject_on_fail = no',
    );
  }
  const want = s.dovecot.apiHeader;
  if (want !== undefined) {
    const h = get('auth_policy_server_api_header');
    const colon = h.indexOf(':');
    // Dovecot sends a value without a colon as X-API-Key (docs/PROTOCOL.md).
    const [name, value] =
      colon < 0 ? ['x-api-key', h] : [h.slice(0, colon).trim().toLowerCase(), h.slice(colon + 1).trim()];
    if (h === '' || name !== want.name || value !== want.value) {
      hook(
        'dovecot.api-header-mismatch',
        'error',
        `mailwarden requires the header ${want.name} (dovecot.api_header), and Dovecot ${h === '' ? 'sends no auth_policy_server_api_header' : 'sends another header or value'}: every request is refused with 401, Dovecot fails open, and no login is checked or counted.`,
        `auth_policy_server_api_header = ${want.name}: <the value of dovecot.api_header in mailwarden.yaml>`,
      );
    }
  }
  return out;
}

function pointsAtUs(url: string, s: Settings): boolean {
  try {
    const u = new URL(url);
    const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
    return u.protocol === 'http:' && u.pathname === DOVECOT_PATH && isOurTcp(s.listen.dovecot, u.hostname, port);
  } catch {
    return false;
  }
}

function trustFindings(dv: DovecotConfig): Finding[] {
  const value = dv.root.settings.get('login_trusted_networks') ?? '';
  const nets = networksIn(value);
  const wide = nets.flatMap((p) => tooBroad(p) ?? []);
  if (wide.length === 0) return [];
  const kept = nets.filter((p) => tooBroad(p) === undefined).map((p) => p.text);
  return [
    {
      id: 'dovecot.trusted-networks-wide',
      severity: 'error',
      area: 'hooks',
      message: `login_trusted_networks = ${value}: ${wide.join('; ')}. Dovecot treats clients from there as secured (passwords in clear without TLS) and believes the client address they forward, so anyone there can log in in clear and claim another address to escape bans. List only your own proxies and webmail hosts.`,
      fix: `login_trusted_networks = ${kept.join(' ')}`.trimEnd(),
    },
  ];
}

export function checkDovecot(dv: DovecotConfig, ctx: DovecotContext): Finding[] {
  return [
    ...tlsFindings(dv),
    ...trustFindings(dv),
    ...(ctx.settings === undefined ? [] : hookFindings(dv, ctx.settings, ctx.nonce)),
  ];
}
