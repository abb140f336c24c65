/*
 * Real Postfix and Dovecot configurations for the doctor tests, written to a
 * temp dir and read back through postconf and doveconf: a locked-down pair,
 * wired to mailwarden exactly as docs/INTEGRATION.md says, and the changes
 * that break it one way each. Certificates are made with openssl: a good
 * one, an expired one, one that expires in 10 days, and a 1024-bit one.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { POLICY_HOOKS } from '../helpers/dovecot.js';

export const POLICY = 'check_policy_service inet:127.0.0.1:10031';

/** main.cf of a locked-down server (parameters; '' removes one). */
export const GOOD_MAIN: Record<string, string> = {
  compatibility_level: '3.6',
  myhostname: 'mx.example.org',
  mydestination: 'example.org, localhost',
  inet_interfaces: 'loopback-only',
  mynetworks: '127.0.0.0/8 [::1]/128',
  smtpd_tls_security_level: 'may',
  smtpd_tls_auth_only: 'yes',
  smtpd_tls_protocols: '>=TLSv1.2',
  smtpd_tls_mandatory_protocols: '>=TLSv1.2',
  smtpd_sasl_auth_enable: 'yes',
  smtpd_sasl_type: 'dovecot',
  smtpd_sasl_path: 'private/auth',
  smtpd_delay_reject: 'no',
  smtpd_client_restrictions: POLICY,
  smtpd_sender_restrictions: POLICY,
  smtpd_recipient_restrictions: POLICY,
  smtpd_end_of_data_restrictions: POLICY,
  smtpd_relay_restrictions: 'permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination',
  smtpd_policy_service_default_action: 'DUNNO',
  smtpd_policy_service_timeout: '5s',
};

export const SUBMISSION = `submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_policy_service_policy_context=submission`;

/** master.cf: the MX, submission on 587 and 465, and a content filter's return port (skipped by the checks). */
export function masterCf(submission = SUBMISSION): string {
  return `smtp      inet  n       -       y       -       -       smtpd
${submission}
submissions inet n      -       y       -       -       smtpd
  -o syslog_name=postfix/submissions
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_policy_service_policy_context=submission
127.0.0.1:10025 inet n  -       n       -       -       smtpd
  -o content_filter=
  -o smtpd_client_restrictions=
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
pickup    unix  n       -       y       60      1       pickup
cleanup   unix  n       -       y       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
`;
}

/** dovecot.conf top-level settings of a locked-down server ('' removes one). */
export const GOOD_DOVECOT: Record<string, string> = {
  protocols: 'imap pop3',
  listen: '127.0.0.1',
  ssl: 'required',
  ssl_min_protocol: 'TLSv1.2',
  disable_plaintext_auth: 'yes',
  auth_mechanisms: 'plain login',
  auth_policy_server_url: 'http://127.0.0.1:10032/dovecot/policy',
  auth_policy_hash_nonce: '5f0c2a9e7d41b8836e2f9a17c4d0b3e6a8f1c2d4',
  ...POLICY_HOOKS,
  login_trusted_networks: '192.0.2.10',
};

export const DOVECOT_SERVICES = `service imap-login {
  inet_listener imap {
    port = 143
  }
  inet_listener imaps {
    port = 993
    ssl = yes
  }
}
`;

export interface Certs {
  good: { cert: string; key: string };
  expired: string;
  expiring: string;
  weak: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Self-signed certificates; the expired one is signed with `openssl ca`, which takes any dates. */
export function makeCerts(dir: string): Certs {
  mkdirSync(dir, { recursive: true });
  const subject = (name: string): string[] => ['-subj', `/CN=${name}.example.org`, '-keyout', `${name}.key`];
  const selfSigned = (name: string, key: string[], days: number): void =>
    openssl(['req', '-x509', ...key, '-nodes', '-days', String(days), ...subject(name), '-out', `${name}.pem`], dir);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
  selfSigned('good', ec, 365);
  selfSigned('expiring', ec, 10);
  selfSigned('weak', ['-newkey', 'rsa:1024'], 365);
  openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', ...subject('expired'), '-out', 'expired.csr'], dir);
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial'), '01\n');
  writeFileSync(
    join(dir, 'ca.cnf'),
    '[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n',
  );
  const dates = ['-startdate', '20200101000000Z', '-enddate', '20200201000000Z'];
  const ca = ['ca', '-batch', '-config', 'ca.cnf', '-selfsign', '-keyfile', 'expired.key', '-notext'];
  openssl([...ca, ...dates, '-in', 'expired.csr', '-out', 'expired.pem'], dir);
  return {
    good: { cert: join(dir, 'good.pem'), key: join(dir, 'good.key') },
    expired: join(dir, 'expired.pem'),
    expiring: join(dir, 'expiring.pem'),
    weak: join(dir, 'weak.pem'),
  };
}

const lines = (settings: Record<string, string>): string =>
  Object.entries(settings)
    .filter(([, v]) => v !== '')
    .map(([k, v]) => `${k} = ${v}`)
    .join('\n');

/** A Postfix configuration directory (main.cf, master.cf). */
export function writePostfix(dir: string, main: Record<string, string>, master = masterCf()): string {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'main.cf'), `${lines(main)}\n`);
  writeFileSync(join(dir, 'master.cf'), master);
  // postconf waits (up to 2 s) for a file changed within the last second to settle.
  const settled = new Date(Date.now() - 10_000);
  for (const f of ['main.cf', 'master.cf']) utimesSync(join(dir, f), settled, settled);
  return dir;
}

/** A dovecot.conf; `extra` is appended as it is (sections). */
export function writeDovecot(file: string, settings: Record<string, string>, extra = DOVECOT_SERVICES): string {
  writeFileSync(file, `${lines(settings)}\n${extra}`);
  return file;
}
