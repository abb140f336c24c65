/*
 * doctor/check-postfix — pure checks over a Postfix configuration read by
 * doctor/postfix.ts: TLS before AUTH, no open relay, and the policy hooks
 * mailwarden needs (docs/INTEGRATION.md has the lines these fixes give).
 *
 * Every smtpd service (master.cf `inet` or `pass`) is checked with what it
 * really runs: its `-o` overrides over main.cf. A service that takes mail
 * back from a content filter (`-o content_filter=` empty) is skipped: it is
 * meant to trust its one client. The same finding for several services is
 * reported once, naming them all.
 */
import { resolve } from 'node:path';
import type { Settings } from '../config/compile.js';
import { tooBroad } from '../engine/address.js';
import type { EventKind } from '../engine/types.js';
import type { CertRef } from './certs.js';
import { isOurTcp, networksIn, postfixTarget } from './check-mailwarden.js';
import { param, parseRestrictions, type PostfixConfig, type PostfixService, type Restriction } from './postfix.js';
import { mergeByPlace, type Finding } from './report.js';

/** Ports of the service names master.cf uses for SMTP (numbers are taken as they are). */
const SERVICE_PORTS: Readonly<Record<string, number>> = {
  smtp: 25,
  submission: 587,
  submissions: 465,
  smtps: 465,
};

/** The TCP port of a master.cf service name (`smtp`, `2525`, `127.0.0.1:2587`), if known. */
export function servicePort(name: string): number | undefined {
  const tail = name.slice(name.lastIndexOf(':') + 1);
  return /^\d+$/.test(tail) ? Number(tail) : SERVICE_PORTS[tail];
}

/** Protocols from oldest to newest; OpenSSL 3 has no SSLv2 at all. */
const TLS_PROTOCOLS = ['SSLv3', 'TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'] as const;
const MODERN = TLS_PROTOCOLS.indexOf('TLSv1.2');

/** The oldest protocol a Postfix `*_tls_protocols` value allows (`>=TLSv1.2`, `!SSLv3, !TLSv1`, `TLSv1.2 TLSv1.3`). */
export function oldestPostfixProtocol(value: string): string | undefined {
  let allowed: string[] = [...TLS_PROTOCOLS];
  const listed: string[] = [];
  for (const t of value.split(/[\s,:]+/).filter(Boolean)) {
    const at = (p: string): number => TLS_PROTOCOLS.indexOf(p as (typeof TLS_PROTOCOLS)[number]);
    if (t.startsWith('>=')) allowed = allowed.filter((p) => at(p) >= at(t.slice(2)));
    else if (t.startsWith('<=')) allowed = allowed.filter((p) => at(p) <= at(t.slice(2)));
    else if (t.startsWith('!')) allowed = allowed.filter((p) => p !== t.slice(1));
    else listed.push(t);
  }
  return (listed.length ? allowed.filter((p) => listed.includes(p)) : allowed)[0];
}

export const allowsOldTls = (oldest: string | undefined): boolean =>
  oldest !== undefined && TLS_PROTOCOLS.indexOf(oldest as (typeof TLS_PROTOCOLS)[number]) < MODERN;

export interface PostfixContext {
  /** Our configuration; undefined when it could not be read (the hook checks are skipped). */
  settings: Settings | undefined;
  /** The directory given with --postfix-config, repeated as `postconf -c DIR` in every fix. */
  dir: string | undefined;
}

const word = (s: string): string => (/^[\w./:@=-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

const postconf = (dir: string | undefined): string => (dir === undefined ? 'postconf' : `postconf -c ${word(dir)}`);

/** The fix line that sets main.cf parameters: `postconf [-c DIR] -e 'name = value' …`. */
export const setMain = (dir: string | undefined, pairs: ReadonlyArray<readonly [string, string]>): string =>
  `${postconf(dir)} -e ${pairs.map(([k, v]) => word(`${k} = ${v}`)).join(' ')}`;

const setService = (dir: string | undefined, svc: PostfixService, name: string, value: string): string =>
  `${postconf(dir)} -P ${word(`${svc.name}/${svc.type}/${name}=${value}`)}`;

/** Sets a parameter where the service takes it from: its own `-o` override, else main.cf. */
const setFor = (dir: string | undefined, svc: PostfixService, name: string, value: string): string =>
  svc.params.has(name) ? setService(dir, svc, name, value) : setMain(dir, [[name, value]]);

/** The smtpd services that face clients. */
export function smtpdServices(pf: PostfixConfig): PostfixService[] {
  return pf.services.filter(
    (s) => s.command === 'smtpd' && (s.type === 'inet' || s.type === 'pass') && s.params.get('content_filter') !== '',
  );
}

/** TLS as a service runs it: `wrapper` (TLS from the first byte), `encrypt` (STARTTLS required), `may`, `none`. */
export function tlsMode(pf: PostfixConfig, svc: PostfixService): 'wrapper' | 'encrypt' | 'may' | 'none' {
  if (param(pf, svc, 'smtpd_tls_wrappermode') === 'yes') return 'wrapper';
  const level = param(pf, svc, 'smtpd_tls_security_level');
  if (level === 'encrypt' || (level === '' && param(pf, svc, 'smtpd_enforce_tls') === 'yes')) return 'encrypt';
  if (level === 'may' || (level === '' && param(pf, svc, 'smtpd_use_tls') === 'yes')) return 'may';
  return 'none';
}

/** A port where users submit mail (587, 465), where a rule's `when.context` needs `policy_context`. */
function isSubmission(pf: PostfixConfig, svc: PostfixService): boolean {
  const port = servicePort(svc.name);
  return (
    port === 587 || port === 465 || /submission/.test(param(pf, svc, 'syslog_name')) || tlsMode(pf, svc) === 'wrapper'
  );
}

const auths = (pf: PostfixConfig, svc: PostfixService): boolean => param(pf, svc, 'smtpd_sasl_auth_enable') === 'yes';

/** The files of the certificates a service would serve. */
function certFiles(pf: PostfixConfig, svc: PostfixService): CertRef[] {
  const chain = param(pf, svc, 'smtpd_tls_chain_files');
  if (chain) return [{ setting: 'Postfix smtpd_tls_chain_files', files: chain.split(/[\s,]+/).filter(Boolean) }];
  return ['smtpd_tls_cert_file', 'smtpd_tls_eccert_file', 'smtpd_tls_dcert_file']
    .filter((n) => param(pf, svc, n))
    .map((n) => ({ setting: `Postfix ${n}`, files: [param(pf, svc, n)] }));
}

/** Every certificate the TLS-enabled smtpd services name, once each. */
export function postfixCertRefs(pf: PostfixConfig): CertRef[] {
  const seen = new Map<string, CertRef>();
  for (const svc of smtpdServices(pf)) {
    if (tlsMode(pf, svc) === 'none') continue;
    for (const ref of certFiles(pf, svc)) seen.set(`${ref.setting}\0${ref.files.join('\0')}`, ref);
  }
  return [...seen.values()];
}

/** Runs a check on every smtpd service; one finding per distinct problem, naming every service that has it. */
function perService(pf: PostfixConfig, check: (svc: PostfixService) => Finding[]): Finding[] {
  const items = smtpdServices(pf).flatMap((svc) =>
    check(svc).map((finding) => ({ place: svc.type === 'inet' ? svc.name : `${svc.name}/${svc.type}`, finding })),
  );
  return mergeByPlace(items, (names) => `${names.length > 1 ? 'smtpd services' : 'smtpd service'} ${names.join(', ')}`);
}

function tlsFindings(pf: PostfixConfig, svc: PostfixService, dir: string | undefined): Finding[] {
  const out: Finding[] = [];
  const mode = tlsMode(pf, svc);
  const host = pf.main.get('myhostname') || 'mx.example.org';
  const certLines: Array<[string, string]> = [
    ['smtpd_tls_cert_file', `/etc/letsencrypt/live/${host}/fullchain.pem`],
    ['smtpd_tls_key_file', `/etc/letsencrypt/live/${host}/privkey.pem`],
  ];
  const authOnly = param(pf, svc, 'smtpd_tls_auth_only') === 'yes';
  if (auths(pf, svc) && mode === 'none' && authOnly) {
    out.push({
      id: 'postfix.auth-unavailable',
      severity: 'warning',
      area: 'tls',
      message:
        'SMTP AUTH is enabled, but TLS is off and smtpd_tls_auth_only = yes, so AUTH is never offered: nobody can log in to send here, and nothing on this port is encrypted.',
      fix: `${setMain(dir, [...certLines, ['smtpd_tls_security_level', 'may']])}\n# with the paths of your certificate`,
    });
  } else if (auths(pf, svc) && mode === 'none') {
    out.push({
      id: 'postfix.auth-without-tls',
      severity: 'error',
      area: 'tls',
      message:
        'SMTP AUTH is offered and TLS is off: every password crosses the network in clear, for anyone on the path to read and reuse.',
      fix: `${setMain(dir, [...certLines, ['smtpd_tls_security_level', 'may'], ['smtpd_tls_auth_only', 'yes']])}\n# with the paths of your certificate`,
    });
  } else if (auths(pf, svc) && mode === 'may' && !authOnly) {
    out.push({
      id: 'postfix.auth-before-tls',
      severity: 'error',
      area: 'tls',
      message:
        'SMTP AUTH is offered before STARTTLS (smtpd_tls_security_level = may, smtpd_tls_auth_only = no): a client may send its password in clear, and an attacker on the path can strip STARTTLS to make it.',
      fix: isSubmission(pf, svc)
        ? setService(dir, svc, 'smtpd_tls_security_level', 'encrypt')
        : setFor(dir, svc, 'smtpd_tls_auth_only', 'yes'),
    });
  }
  if (mode === 'none') return out;
  const name = mode === 'encrypt' ? 'smtpd_tls_mandatory_protocols' : 'smtpd_tls_protocols';
  const oldest = oldestPostfixProtocol(param(pf, svc, name));
  if (allowsOldTls(oldest)) {
    out.push({
      id: 'postfix.tls-protocols',
      severity: 'warning',
      area: 'tls',
      message: `${name} = ${param(pf, svc, name) || '(empty)'} allows ${oldest}, older than TLS 1.2 and broken. OpenSSL's own security level may refuse it anyway; --probe tells.`,
      fix: setFor(dir, svc, name, '>=TLSv1.2'),
    });
  }
  if (certFiles(pf, svc).length === 0) {
    out.push({
      id: 'tls.cert-missing',
      severity: 'error',
      area: 'tls',
      message:
        'TLS is on, but no certificate is configured: Postfix disables STARTTLS (and a wrapper-mode port fails every connection).',
      fix: `${setMain(dir, certLines)}\n# with the paths of your certificate`,
    });
  }
  return out;
}

const RELAY_GUARDS = new Set([
  'reject_unauth_destination',
  'defer_unauth_destination',
  'reject',
  'defer',
  'defer_if_permit',
]);
export const DEFAULT_RELAY = 'permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination';

/** Whether a list refuses a stranger's mail to a foreign domain, or which permit lets everyone through first. */
function relayGuard(list: readonly Restriction[], broadMynetworks: boolean): { guarded: boolean; opener?: string } {
  for (const r of list) {
    if (RELAY_GUARDS.has(r.name)) return { guarded: true };
    if (
      r.name === 'permit' ||
      r.name === 'permit_tls_all_clientcerts' ||
      (r.name === 'permit_mynetworks' && broadMynetworks)
    )
      return { guarded: false, opener: r.name };
  }
  return { guarded: false };
}

function relayFindings(pf: PostfixConfig, svc: PostfixService, dir: string | undefined): Finding[] {
  const broad = networksIn(pf.main.get('mynetworks') ?? '').flatMap((n) => tooBroad(n) ?? []);
  const lists = ['smtpd_relay_restrictions', 'smtpd_recipient_restrictions'].map((name) => ({
    name,
    value: param(pf, svc, name),
    guard: relayGuard(parseRestrictions(param(pf, svc, name)), broad.length > 0),
  }));
  if (lists.some((l) => l.guard.guarded)) return [];
  const openers = lists.flatMap((l) => l.guard.opener ?? []);
  // Postfix's own safety net: with no guard before a bare permit (after which it ignores the list), smtpd exits.
  const working = (rs: Restriction[]): boolean => {
    const stop = rs.findIndex((r) => RELAY_GUARDS.has(r.name) || r.name === 'permit');
    return stop >= 0 && (rs[stop] as Restriction).name !== 'permit';
  };
  const noGuard = lists.every((l) => !working(parseRestrictions(l.value)));
  const fixes = [
    ...(openers.every((o) => o === 'permit_mynetworks') && openers.length
      ? []
      : [setFor(dir, svc, 'smtpd_relay_restrictions', DEFAULT_RELAY)]),
    ...(broad.length ? [setMain(dir, [['mynetworks', '127.0.0.0/8 [::1]/128']])] : []),
  ];
  return [
    {
      id: 'postfix.open-relay',
      severity: 'error',
      area: 'relay',
      message:
        `Open relay: ${lists.map((l) => `${l.name} = ${l.value || '(empty)'}`).join('; ')}. Neither list refuses mail to a foreign domain ` +
        `(reject_unauth_destination or defer_unauth_destination)${openers.length ? ` before ${openers.join(', ')} lets it through` : ''}` +
        `${broad.length ? `, and mynetworks trusts ${broad.join('; ')}` : ''}. ` +
        (noGuard
          ? 'Postfix refuses to run such a configuration: smtpd exits at every connection, and this port takes no mail at all.'
          : 'Spammers find an open relay within hours, and the server lands on every blocklist.'),
      fix: fixes.join('\n'),
    },
  ];
}

/** Which restriction list each kind of event is asked from. */
const STAGE_LIST: Readonly<Partial<Record<EventKind, string>>> = {
  connect: 'smtpd_client_restrictions',
  helo: 'smtpd_helo_restrictions',
  mail: 'smtpd_sender_restrictions',
  recipient: 'smtpd_recipient_restrictions',
  vrfy: 'smtpd_recipient_restrictions',
  data: 'smtpd_data_restrictions',
  message: 'smtpd_end_of_data_restrictions',
  etrn: 'smtpd_etrn_restrictions',
};

/** The restriction lists that must ask mailwarden, each with what needs it. */
function neededLists(s: Settings): Map<string, string[]> {
  const out = new Map<string, string[]>([
    ['smtpd_client_restrictions', ['bans (a banned client is refused at CONNECT, before the banner)']],
    ['smtpd_sender_restrictions', ['suspensions (a suspended user is refused at MAIL FROM)']],
  ]);
  for (const r of s.policy.rules) {
    for (const kind of new Set([...r.on, ...r.checkOn])) {
      const list = STAGE_LIST[kind];
      if (list !== undefined) out.set(list, [...(out.get(list) ?? []), `rule ${r.name}`]);
    }
  }
  return out;
}

/** The rules that count events Postfix does not ask about under smtpd_delay_reject = yes. */
const hiddenByDelayReject = (s: Settings): string[] =>
  s.policy.rules
    .filter((r) => [...r.on, ...r.checkOn].some((k) => ['connect', 'helo', 'mail'].includes(k)))
    .map((r) => r.name);

function pointsAtUs(pf: PostfixConfig, s: Settings, target: string): boolean {
  if (target.startsWith('unix:')) {
    // Postfix takes a relative path from its queue directory (unix:private/mailwarden).
    const path = resolve(pf.main.get('queue_directory') ?? '/var/spool/postfix', target.slice(5));
    return s.listen.postfix.some((t) => t.kind === 'unix' && resolve(t.path) === path);
  }
  const m = /^(?:inet:)?(.+):(\d+)$/.exec(target);
  return m !== null && isOurTcp(s.listen.postfix, m[1] as string, Number(m[2]));
}

/** Postfix time values: a number with an optional unit (s by default). */
function seconds(v: string): number {
  const m = /^(\d+)([smhdw]?)$/.exec(v.trim());
  if (!m) return NaN;
  return Number(m[1]) * ({ '': 1, s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 }[m[2] as string] ?? 1);
}

const POLICY_TIMEOUT_MAX_S = 10;

function hookFindings(pf: PostfixConfig, svc: PostfixService, s: Settings, dir: string | undefined): Finding[] {
  const ours = postfixTarget(s);
  if (ours === undefined) return [];
  const ourHook = `check_policy_service ${ours}`;
  const out: Finding[] = [];
  const found: Array<{ list: string; hook: Restriction }> = [];
  for (const [list, why] of neededLists(s)) {
    // A check in smtpd_relay_restrictions is asked at RCPT just the same.
    const candidates = list === 'smtpd_recipient_restrictions' ? [list, 'smtpd_relay_restrictions'] : [list];
    const parsed = candidates.map((name) => ({ name, rs: parseRestrictions(param(pf, svc, name)) }));
    const hit = parsed
      .map(({ name, rs }) => ({
        name,
        rs,
        at: rs.findIndex((r) => r.name === 'check_policy_service' && pointsAtUs(pf, s, r.target ?? '')),
      }))
      .find((p) => p.at >= 0);
    const value = param(pf, svc, list);
    if (hit === undefined) {
      const elsewhere = (parsed[0]?.rs ?? []).filter((r) => r.name === 'check_policy_service').map((r) => r.target);
      out.push({
        id: elsewhere.length ? 'postfix.hook-elsewhere' : 'postfix.hook-missing',
        severity: 'error',
        area: 'hooks',
        message:
          `${list} does not ask mailwarden (${ours})${elsewhere.length ? `: its check_policy_service goes to ${elsewhere.join(', ')}` : ''}. ` +
          `Needed for ${why.join(', ')}: without it they are never enforced.`,
        fix: setFor(dir, svc, list, value ? `${ourHook}, ${value}` : ourHook),
      });
      continue;
    }
    const hook = hit.rs[hit.at] as Restriction;
    found.push({ list: hit.name, hook });
    const permits = hit.rs.slice(0, hit.at).filter((r) => r.name.startsWith('permit'));
    if (permits.length) {
      out.push({
        id: 'postfix.hook-after-permit',
        severity: 'warning',
        area: 'hooks',
        message: `${hit.name} has ${permits.map((r) => r.name).join(', ')} before check_policy_service ${hook.target ?? ''}: the clients a permit lets through are never counted or refused at this stage.`,
        fix: setFor(dir, svc, hit.name, [hook, ...hit.rs.filter((r) => r !== hook)].map((r) => r.text).join(', ')),
      });
    }
  }
  if (found.length === 0) return out;
  const brace = found.find((f) => (f.hook.attrs?.get('default_action') ?? 'DUNNO').toUpperCase() !== 'DUNNO');
  const action = brace?.hook.attrs?.get('default_action') ?? param(pf, svc, 'smtpd_policy_service_default_action');
  if (action.toUpperCase() !== 'DUNNO') {
    out.push({
      id: 'postfix.policy-default-action',
      severity: 'warning',
      area: 'hooks',
      message: `When mailwarden is stopped, restarting or unreachable, Postfix answers "${action}" at every stage that asks it: with a 4xx action no mail gets in or out until it is back (fail closed). DUNNO lets mail flow unchecked instead, as docs/INTEGRATION.md recommends.`,
      fix: brace
        ? setFor(
            dir,
            svc,
            brace.list,
            param(pf, svc, brace.list).replace(/default_action\s*=[^,}]*?(\s*[,}])/, 'default_action=DUNNO$1'),
          )
        : setFor(dir, svc, 'smtpd_policy_service_default_action', 'DUNNO'),
    });
  }
  const timeout = param(pf, svc, 'smtpd_policy_service_timeout');
  if (seconds(timeout) > POLICY_TIMEOUT_MAX_S) {
    out.push({
      id: 'postfix.policy-timeout',
      severity: 'info',
      area: 'hooks',
      message: `smtpd_policy_service_timeout = ${timeout}: a hung daemon holds each smtpd that long per request before the default action applies. mailwarden answers within its 100 ms budget, so a few seconds bound only a dead connection.`,
      fix: setFor(dir, svc, 'smtpd_policy_service_timeout', '5s'),
    });
  }
  if (param(pf, svc, 'smtpd_delay_reject') === 'yes') {
    const hidden = hiddenByDelayReject(s);
    out.push({
      id: 'postfix.delay-reject',
      severity: hidden.length ? 'warning' : 'info',
      area: 'hooks',
      message:
        'smtpd_delay_reject = yes: Postfix runs the client, helo and sender restrictions only at RCPT, so mailwarden never sees CONNECT, EHLO or MAIL FROM' +
        `${hidden.length ? ` (rules ${hidden.join(', ')} count nothing)` : ''}, a banned client still gets the banner and is refused only at RCPT, and every RCPT is asked once per list (answered from the repeat cache).`,
      fix: setFor(dir, svc, 'smtpd_delay_reject', 'no'),
    });
  }
  if (isSubmission(pf, svc) && auths(pf, svc) && !param(pf, svc, 'smtpd_policy_service_policy_context')) {
    const byContext = s.policy.rules.filter((r) => r.when.context?.length).map((r) => r.name);
    out.push({
      id: 'postfix.policy-context-missing',
      severity: byContext.length ? 'warning' : 'info',
      area: 'hooks',
      message:
        'This submission port sends no policy_context, so mailwarden cannot tell it from the MX port' +
        `${byContext.length ? `: rules ${byContext.join(', ')} (when.context) never match here` : '; a rule with when: { context: [submission] } would never match'}.`,
      fix: setService(dir, svc, 'smtpd_policy_service_policy_context', 'submission'),
    });
  }
  return out;
}

export function checkPostfix(pf: PostfixConfig, ctx: PostfixContext): Finding[] {
  const s = ctx.settings;
  return [
    ...perService(pf, (svc) => tlsFindings(pf, svc, ctx.dir)),
    ...perService(pf, (svc) => relayFindings(pf, svc, ctx.dir)),
    ...(s === undefined ? [] : perService(pf, (svc) => hookFindings(pf, svc, s, ctx.dir))),
  ];
}
