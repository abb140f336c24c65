/*
 * doctor/check-probe — which ports a live probe visits (from the configs
 * read), and what its observations mean. Pure: doctor/probe.ts does the
 * talking.
 */
import { contains, parseSubject } from '../engine/address.js';
import { networksIn } from './check-mailwarden.js';
import { DEFAULT_RELAY, servicePort, setMain, smtpdServices, tlsMode } from './check-postfix.js';
import type { DovecotConfig } from './dovecot.js';
import type { PostfixConfig } from './postfix.js';
import type { Finding } from './report.js';

export interface ProbeTarget {
  /** Where the port comes from, e.g. `Postfix service submission`, `Dovecot imap-login imaps`. */
  label: string;
  server: 'postfix' | 'dovecot';
  protocol: 'smtp' | 'imap' | 'pop3';
  port: number;
  /** TLS from the first byte (smtps, imaps, pop3s), not STARTTLS. */
  implicitTls: boolean;
  /** SMTP: try a foreign recipient (never any DATA). */
  relay: boolean;
}

export interface ProbeResult {
  target: ProbeTarget;
  /** host:port probed. */
  address: string;
  /** The address the probe connected from. */
  source?: string;
  /** Not reached, or the server did not speak its protocol. */
  error?: string;
  /** Plain ports: whether STARTTLS (POP3: STLS) is offered. */
  starttls?: boolean;
  /** What is offered for logging in before TLS: SMTP AUTH mechanisms, IMAP AUTH= and LOGIN, POP3 SASL and USER. */
  authInClear?: string[];
  /** The TLS negotiated, or why it failed. */
  tls?: { protocol: string } | { error: string };
  /** The protocol a client offering only TLS 1.0 and 1.1 got; undefined when the server refused it. */
  oldTls?: string;
  /** SMTP: the answer to a foreign recipient, or to MAIL when that was refused already. */
  relay?: { command: 'MAIL' | 'RCPT'; reply: string };
}

/** The recipient of the relay test: example.com is reserved (RFC 2606), and no DATA is ever sent. */
export const RELAY_TEST_RECIPIENT = 'mailwarden-doctor-relay-test@example.com';

const DOVECOT_LOGINS = [
  { protocol: 'imap', service: 'imap-login', speaks: 'imap' },
  { protocol: 'pop3', service: 'pop3-login', speaks: 'pop3' },
  { protocol: 'submission', service: 'submission-login', speaks: 'smtp' },
] as const;

export function probeTargets(pf: PostfixConfig | undefined, dv: DovecotConfig | undefined): ProbeTarget[] {
  const out: ProbeTarget[] = [];
  if (pf) {
    const smtpd = smtpdServices(pf).filter((s) => s.type === 'inet');
    // postscreen answers port 25 and hands clients to the smtpd `pass` service.
    const screens = pf.services.filter((s) => s.type === 'inet' && s.command === 'postscreen');
    for (const svc of [...smtpd, ...screens]) {
      const port = servicePort(svc.name);
      if (port === undefined) continue;
      const implicitTls = svc.command === 'smtpd' && tlsMode(pf, svc) === 'wrapper';
      out.push({
        label: `Postfix service ${svc.name}`,
        server: 'postfix',
        protocol: 'smtp',
        port,
        implicitTls,
        relay: true,
      });
    }
  }
  if (dv) {
    const enabled = (dv.root.settings.get('protocols') ?? '').split(/\s+/);
    for (const l of DOVECOT_LOGINS) {
      if (!enabled.includes(l.protocol)) continue;
      const svc = dv.root.sections.find((s) => s.type === 'service' && s.name === l.service);
      for (const listener of svc?.sections.filter((s) => s.type === 'inet_listener') ?? []) {
        const port = Number(listener.settings.get('port') ?? 0);
        if (!(port > 0)) continue;
        out.push({
          label: `Dovecot ${l.service} ${listener.name}`,
          server: 'dovecot',
          protocol: l.speaks,
          port,
          implicitTls: listener.settings.get('ssl') === 'yes',
          relay: false,
        });
      }
    }
  }
  return out;
}

export interface ProbeContext {
  /** Postfix's mynetworks: a relay allowed from there says nothing about strangers. */
  mynetworks: string;
  /** --postfix-config, for the fix lines. */
  dir: string | undefined;
}

export function probeFindings(results: readonly ProbeResult[], ctx: ProbeContext): Finding[] {
  const out: Finding[] = [];
  const trusted = networksIn(ctx.mynetworks);
  const set = (...pairs: Array<[string, string]>): string => setMain(ctx.dir, pairs);
  for (const r of results) {
    const t = r.target;
    // master.cf often names a service by its address already.
    const at = t.label.endsWith(r.address) ? t.label : `${t.label} (${r.address})`;
    const pf = t.server === 'postfix';
    if (r.error !== undefined) {
      out.push({
        id: 'probe.unreachable',
        severity: 'warning',
        area: 'tls',
        message: `${at}: ${r.error}. The configuration says it listens there; nothing was checked on it.`,
        fix: null,
      });
      continue;
    }
    if (!t.implicitTls && r.starttls === false) {
      out.push({
        id: 'probe.starttls-missing',
        severity: 'warning',
        area: 'tls',
        message: `${at} offers no ${t.protocol === 'pop3' ? 'STLS' : 'STARTTLS'}: everything on it, mail and logins, crosses the network in clear.`,
        fix: pf ? set(['smtpd_tls_security_level', 'may']) : 'ssl = required',
      });
    }
    if (r.authInClear?.length) {
      out.push({
        id: 'probe.auth-before-tls',
        severity: 'error',
        area: 'tls',
        message: `${at} offers ${r.authInClear.join(', ')} before TLS: a client may send its password in clear.`,
        fix: pf ? set(['smtpd_tls_auth_only', 'yes']) : 'ssl = required',
      });
    }
    if (r.tls !== undefined && 'error' in r.tls) {
      out.push({
        id: 'probe.tls-failed',
        severity: 'error',
        area: 'tls',
        message: `${at}: the TLS handshake failed (${r.tls.error}); clients that insist on TLS cannot log in or deliver. The tls.cert-* findings, and the server's log, tell why.`,
        fix: null,
      });
    }
    if (r.oldTls !== undefined) {
      out.push({
        id: 'probe.old-tls',
        severity: 'error',
        area: 'tls',
        message: `${at} accepted ${r.oldTls}, older than TLS 1.2 and broken: an attacker on the path can push clients down to it.`,
        fix: pf
          ? set(['smtpd_tls_protocols', '>=TLSv1.2'], ['smtpd_tls_mandatory_protocols', '>=TLSv1.2'])
          : 'ssl_min_protocol = TLSv1.2',
      });
    }
    if (r.relay === undefined) continue;
    const source = parseSubject(r.source ?? '');
    const fromMynetworks = source !== undefined && trusted.some((n) => contains(n, source));
    const accepted = r.relay.command === 'RCPT' && r.relay.reply.startsWith('2');
    if (accepted && !fromMynetworks) {
      out.push({
        id: 'probe.open-relay',
        severity: 'error',
        area: 'relay',
        message: `${at} accepted RCPT TO:<${RELAY_TEST_RECIPIENT}> from ${r.source ?? '?'}, without authentication ("${r.relay.reply}"): an open relay. (The probe sent RSET; no message was sent.)`,
        fix: set(['smtpd_relay_restrictions', DEFAULT_RELAY]),
      });
    } else if (accepted || r.relay.command === 'MAIL') {
      out.push({
        id: 'probe.relay-inconclusive',
        severity: 'info',
        area: 'relay',
        message: accepted
          ? `${at} accepted a foreign recipient from ${r.source ?? '?'}, which is in mynetworks: that says nothing about strangers. Probe from an address outside mynetworks to tell.`
          : `${at} refused MAIL FROM:<> ("${r.relay.reply}"), so the relay test could not run.`,
        fix: null,
      });
    }
  }
  return out;
}
