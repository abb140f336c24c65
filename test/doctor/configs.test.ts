/*
 * `mailwarden doctor` over real configurations: each case writes a Postfix
 * directory and a dovecot.conf, has the real postconf and doveconf read them
 * (runDoctor, as the command does), and lists exactly the findings it must
 * give. The locked-down pair gives none; every other case changes it in one
 * way. Outside CI a machine without postconf/doveconf/openssl skips; in CI
 * (CI=true) that is a failure.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, describe, test } from 'node:test';
import { runDoctor, type DoctorOptions } from '../../src/doctor/index.js';
import type { Finding, Report } from '../../src/doctor/report.js';
import { runCli } from '../helpers/daemon.js';
import {
  DOVECOT_SERVICES,
  GOOD_DOVECOT,
  GOOD_MAIN,
  makeCerts,
  masterCf,
  POLICY,
  SUBMISSION,
  writeDovecot,
  writePostfix,
  type Certs,
} from './fixtures.js';

const TOOLS = ['postconf', 'doveconf', 'openssl'];
const missing = TOOLS.filter((t) => {
  try {
    execFileSync('sh', ['-c', `command -v ${t} || test -x /usr/sbin/${t}`], { stdio: 'ignore' });
    return false;
  } catch {
    return true;
  }
});
if (missing.length && process.env.CI === 'true') {
  throw new Error(`doctor tests: ${missing.join(', ')} not installed (run scripts/install-system-deps.sh)`);
}

interface Case {
  name: string;
  /** Every finding id the case must give, with its severity, and nothing else. */
  expect: Array<[string, Finding['severity']]>;
  main?: Record<string, string>;
  master?: string;
  dovecot?: Record<string, string>;
  dovecotExtra?: string;
  /** mailwarden.yaml; built-in defaults without it. */
  yaml?: string;
  /** More to check on the findings. */
  also?: (findings: Finding[]) => void;
}

const byId = (fs: Finding[], id: string): Finding => {
  const f = fs.find((x) => x.id === id);
  assert.ok(f, `no ${id} in ${JSON.stringify(fs, null, 2)}`);
  return f;
};

describe(
  'doctor: real Postfix and Dovecot configurations',
  { skip: missing.length > 0 && `${missing.join(', ')} not installed` },
  () => {
    // Made now, not in before(): the cases below name the certificates.
    const dir = mkdtempSync(join(tmpdir(), 'mw-doctor-'));
    const certs: Certs = makeCerts(join(dir, 'certs'));
    let n = 0;
    after(() => rmSync(dir, { recursive: true, force: true }));

    const goodMain = (): Record<string, string> => ({
      ...GOOD_MAIN,
      smtpd_tls_cert_file: certs.good.cert,
      smtpd_tls_key_file: certs.good.key,
    });
    const goodDovecot = (): Record<string, string> => ({
      ...GOOD_DOVECOT,
      ssl_cert: `<${certs.good.cert}`,
      ssl_key: `<${certs.good.key}`,
    });

    async function doctor(c: Omit<Case, 'name' | 'expect'>, extra: Partial<DoctorOptions> = {}) {
      const d = join(dir, `case-${++n}`);
      mkdirSync(d);
      const postfixConfig = writePostfix(join(d, 'postfix'), { ...goodMain(), ...c.main }, c.master);
      const dovecotConfig = writeDovecot(join(d, 'dovecot.conf'), { ...goodDovecot(), ...c.dovecot }, c.dovecotExtra);
      let configFile: string | undefined;
      if (c.yaml !== undefined) writeFileSync((configFile = join(d, 'mailwarden.yaml')), c.yaml);
      let text = '';
      const out = new Writable({
        write(chunk: Buffer, _enc, cb) {
          text += chunk.toString();
          cb();
        },
      });
      const code = await runDoctor(
        { postfixConfig, dovecotConfig, json: true, configFile, overrides: {}, ...extra },
        out,
        out,
      );
      return { code, report: JSON.parse(text) as Report, postfixConfig };
    }

    test('a locked-down server wired as docs/INTEGRATION.md says: no finding, exit 0', async () => {
      const { code, report } = await doctor({});
      assert.deepEqual(report.findings, []);
      assert.equal(code, 0);
      assert.equal(report.summary.exitCode, 0);
      assert.equal(report.summary.checked.mailwarden, '(built-in defaults)');
    });

    const cases: Case[] = [
      // --- TLS, Postfix ---
      {
        name: 'AUTH on a port without TLS',
        main: { smtpd_tls_security_level: 'none', smtpd_tls_auth_only: 'no' },
        expect: [['postfix.auth-without-tls', 'error']],
        also: (fs) => assert.match(byId(fs, 'postfix.auth-without-tls').message, /^smtpd service smtp: /),
      },
      {
        name: 'AUTH never offered: no TLS, and AUTH only after TLS',
        main: { smtpd_tls_security_level: 'none' },
        expect: [['postfix.auth-unavailable', 'warning']],
      },
      {
        name: 'AUTH before STARTTLS on the MX port',
        main: { smtpd_tls_auth_only: 'no' },
        expect: [['postfix.auth-before-tls', 'error']],
        also: (fs) => assert.match(byId(fs, 'postfix.auth-before-tls').fix ?? '', /-e 'smtpd_tls_auth_only = yes'$/),
      },
      {
        name: 'a submission port that does not require TLS',
        main: { smtpd_tls_auth_only: 'no' },
        master: masterCf(SUBMISSION.replace('encrypt', 'may')),
        expect: [
          ['postfix.auth-before-tls', 'error'],
          ['postfix.auth-before-tls', 'error'],
        ],
        also: (fs) =>
          assert.ok(
            fs.some((f) => f.fix?.endsWith('-P submission/inet/smtpd_tls_security_level=encrypt')),
            JSON.stringify(fs),
          ),
      },
      {
        name: 'TLS 1.0 and 1.1 allowed',
        main: { smtpd_tls_protocols: '!SSLv2, !SSLv3' },
        expect: [['postfix.tls-protocols', 'warning']],
      },
      {
        name: 'TLS on, no certificate',
        main: { smtpd_tls_cert_file: '', smtpd_tls_key_file: '' },
        expect: [['tls.cert-missing', 'error']],
      },
      // --- relay ---
      {
        name: 'a permit for every client certificate before the relay check',
        main: {
          smtpd_relay_restrictions: 'permit_sasl_authenticated, permit_tls_all_clientcerts, reject_unauth_destination',
        },
        expect: [['postfix.open-relay', 'error']],
        also: (fs) => {
          const f = byId(fs, 'postfix.open-relay');
          assert.match(f.message, /before permit_tls_all_clientcerts lets it through\. Spammers/);
          assert.match(
            f.fix ?? '',
            /'smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination'$/,
          );
        },
      },
      {
        name: 'no guard before a bare permit (Postfix refuses to run it)',
        main: { smtpd_relay_restrictions: 'permit_sasl_authenticated, permit, reject_unauth_destination' },
        expect: [['postfix.open-relay', 'error']],
        also: (fs) =>
          assert.match(byId(fs, 'postfix.open-relay').message, /Postfix refuses to run such a configuration/),
      },
      {
        name: 'mynetworks trusting the world',
        main: { mynetworks: '0.0.0.0/0' },
        expect: [['postfix.open-relay', 'error']],
        also: (fs) =>
          assert.match(byId(fs, 'postfix.open-relay').fix ?? '', /'mynetworks = 127\.0\.0\.0\/8 \[::1\]\/128'$/),
      },
      // --- hooks, Postfix ---
      {
        name: 'no hook at END-OF-MESSAGE',
        main: { smtpd_end_of_data_restrictions: '' },
        expect: [['postfix.hook-missing', 'error']],
        also: (fs) => {
          const f = byId(fs, 'postfix.hook-missing');
          assert.match(f.message, /rule user-messages-per-hour/);
          assert.match(
            f.fix ?? '',
            /-e 'smtpd_end_of_data_restrictions = check_policy_service inet:127\.0\.0\.1:10031'$/,
          );
        },
      },
      {
        name: 'the CONNECT hook pointing at another policy service',
        main: { smtpd_client_restrictions: 'check_policy_service inet:127.0.0.1:10040' },
        expect: [['postfix.hook-elsewhere', 'error']],
      },
      {
        name: 'a submission service that overrides the client restrictions',
        master: masterCf(`${SUBMISSION}\n  -o smtpd_client_restrictions=permit_sasl_authenticated,reject`),
        expect: [['postfix.hook-missing', 'error']],
        also: (fs) => {
          const f = byId(fs, 'postfix.hook-missing');
          assert.match(f.message, /^smtpd service submission: /);
          assert.match(
            f.fix ?? '',
            /-P 'submission\/inet\/smtpd_client_restrictions=check_policy_service inet:127\.0\.0\.1:10031, permit_sasl_authenticated,reject'$/,
          );
        },
      },
      {
        name: 'a permit before the hook',
        main: { smtpd_recipient_restrictions: `permit_mynetworks, ${POLICY}` },
        expect: [['postfix.hook-after-permit', 'warning']],
        also: (fs) =>
          assert.match(
            byId(fs, 'postfix.hook-after-permit').fix ?? '',
            /= check_policy_service inet:127\.0\.0\.1:10031, permit_mynetworks'$/,
          ),
      },
      {
        name: "Postfix's default action (451 when mailwarden is down)",
        main: { smtpd_policy_service_default_action: '' },
        expect: [['postfix.policy-default-action', 'warning']],
      },
      {
        name: 'a 4xx default action in the check_policy_service { } form',
        main: {
          smtpd_client_restrictions:
            'check_policy_service { inet:127.0.0.1:10031, default_action=451 4.3.5 Try later }',
        },
        expect: [['postfix.policy-default-action', 'warning']],
        also: (fs) => assert.match(byId(fs, 'postfix.policy-default-action').fix ?? '', /default_action=DUNNO }'$/),
      },
      {
        name: "Postfix's default policy timeout (100 s)",
        main: { smtpd_policy_service_timeout: '' },
        expect: [['postfix.policy-timeout', 'info']],
      },
      {
        name: 'smtpd_delay_reject = yes',
        main: { smtpd_delay_reject: 'yes' },
        expect: [['postfix.delay-reject', 'warning']],
        also: (fs) => assert.match(byId(fs, 'postfix.delay-reject').message, /smtp-connections-per-ip/),
      },
      {
        name: 'a submission port without policy_context',
        master: masterCf(SUBMISSION.replace('\n  -o smtpd_policy_service_policy_context=submission', '')),
        expect: [['postfix.policy-context-missing', 'info']],
      },
      {
        name: 'a submission port without policy_context, and a rule that needs it',
        master: masterCf(SUBMISSION.replace('\n  -o smtpd_policy_service_policy_context=submission', '')),
        yaml: 'rules:\n  - name: user-messages-per-hour\n    when: { authenticated: true, context: [submission] }\n',
        expect: [['postfix.policy-context-missing', 'warning']],
      },
      // --- TLS, Dovecot ---
      { name: 'ssl = no', dovecot: { ssl: 'no' }, expect: [['dovecot.ssl-off', 'error']] },
      {
        name: 'passwords in clear before STARTTLS',
        dovecot: { ssl: 'yes', disable_plaintext_auth: 'no' },
        expect: [['dovecot.plaintext-auth', 'error']],
      },
      {
        name: 'passwords in clear for IMAP only',
        dovecot: { ssl: 'yes' },
        dovecotExtra: `${DOVECOT_SERVICES}protocol imap {\n  disable_plaintext_auth = no\n}\n`,
        expect: [
          ['dovecot.ssl-not-required', 'info'],
          ['dovecot.plaintext-auth', 'error'],
        ],
        also: (fs) => assert.match(byId(fs, 'dovecot.plaintext-auth').message, /^dovecot\.conf protocol imap \{ \}: /),
      },
      { name: 'ssl = yes', dovecot: { ssl: 'yes' }, expect: [['dovecot.ssl-not-required', 'info']] },
      {
        name: 'ssl = yes with a challenge mechanism',
        dovecot: { ssl: 'yes', auth_mechanisms: 'plain login cram-md5' },
        expect: [['dovecot.ssl-not-required', 'warning']],
      },
      {
        name: 'TLS 1.0 allowed',
        dovecot: { ssl_min_protocol: 'TLSv1' },
        expect: [['dovecot.tls-protocols', 'warning']],
      },
      {
        name: 'Dovecot without a certificate',
        dovecot: { ssl_cert: '', ssl_key: '' },
        expect: [['tls.cert-missing', 'error']],
      },
      // --- hooks, Dovecot ---
      {
        name: 'no auth policy',
        dovecot: { auth_policy_server_url: '' },
        expect: [['dovecot.policy-missing', 'error']],
      },
      {
        name: 'the auth policy elsewhere',
        dovecot: { auth_policy_server_url: 'http://127.0.0.1:10041/policy' },
        expect: [['dovecot.policy-elsewhere', 'error']],
        also: (fs) =>
          assert.equal(
            byId(fs, 'dovecot.policy-elsewhere').fix,
            'auth_policy_server_url = http://127.0.0.1:10032/dovecot/policy',
          ),
      },
      {
        name: 'no auth policy and no nonce: the fix sets both (Dovecot refuses the URL without one)',
        dovecot: { auth_policy_server_url: '', auth_policy_hash_nonce: '' },
        expect: [['dovecot.policy-missing', 'error']],
        also: (fs) =>
          assert.match(
            byId(fs, 'dovecot.policy-missing').fix ?? '',
            /^auth_policy_server_url = http:\/\/127\.0\.0\.1:10032\/dovecot\/policy\nauth_policy_hash_nonce = [0-9a-f]{48}$/,
          ),
      },
      {
        name: "the docs' placeholder nonce",
        dovecot: { auth_policy_hash_nonce: '<a long random string>' },
        expect: [['dovecot.nonce-placeholder', 'error']],
        also: (fs) => {
          const f = byId(fs, 'dovecot.nonce-placeholder');
          assert.doesNotMatch(f.message, /random string/, 'the nonce is never printed');
          assert.match(f.fix ?? '', /^auth_policy_hash_nonce = [0-9a-f]{48}$/);
        },
      },
      {
        name: 'request attributes without the client address',
        dovecot: { auth_policy_request_attributes: 'login=%{requested_username} pwhash=%{hashed_password}' },
        expect: [['dovecot.policy-attributes', 'error']],
      },
      {
        name: 'no check before auth',
        dovecot: { auth_policy_check_before_auth: 'no' },
        expect: [['dovecot.check-before-auth-off', 'error']],
      },
      {
        name: 'no check after auth',
        dovecot: { auth_policy_check_after_auth: 'no' },
        expect: [['dovecot.check-after-auth-off', 'warning']],
      },
      {
        name: 'no report',
        dovecot: { auth_policy_report_after_auth: 'no' },
        expect: [['dovecot.report-off', 'error']],
      },
      {
        name: 'fail closed',
        dovecot: { auth_policy_reject_on_fail: 'yes' },
        expect: [['dovecot.reject-on-fail', 'warning']],
      },
      {
        name: 'a shared secret Dovecot does not send',
        yaml: 'dovecot:\n  api_header: "X-Mailwarden-Key: 9d1c8e4b2a7f"\n',
        expect: [['dovecot.api-header-mismatch', 'error']],
        also: (fs) => assert.doesNotMatch(JSON.stringify(fs), /9d1c8e4b2a7f/, 'the secret is never printed'),
      },
      {
        name: 'trusted networks: the world',
        dovecot: { login_trusted_networks: '192.0.2.10 0.0.0.0/0' },
        expect: [['dovecot.trusted-networks-wide', 'error']],
        also: (fs) =>
          assert.equal(byId(fs, 'dovecot.trusted-networks-wide').fix, 'login_trusted_networks = 192.0.2.10'),
      },
      // --- certificates ---
      {
        name: 'an expired certificate (Postfix)',
        main: { smtpd_tls_cert_file: certs.expired },
        expect: [['tls.cert-expired', 'error']],
      },
      {
        name: 'a certificate that expires in 10 days (Dovecot)',
        dovecot: { ssl_cert: `<${certs.expiring}` },
        expect: [['tls.cert-expiring', 'warning']],
        also: (fs) => assert.match(byId(fs, 'tls.cert-expiring').message, /in (9|10) day\(s\)/),
      },
      {
        name: 'a 1024-bit RSA key',
        main: { smtpd_tls_cert_file: certs.weak },
        expect: [['tls.cert-weak-key', 'error']],
        also: (fs) => assert.match(byId(fs, 'tls.cert-weak-key').message, /RSA 1024 bits/),
      },
      {
        name: 'a certificate file that is not there',
        dovecot: { ssl_cert: '</nonexistent/mailwarden-doctor.pem' },
        expect: [['tls.cert-unreadable', 'error']],
      },
      {
        name: 'key and certificate in one chain file: the certificate is found',
        main: {
          smtpd_tls_cert_file: '',
          smtpd_tls_key_file: '',
          smtpd_tls_chain_files: `${certs.good.key}, ${certs.good.cert}`,
        },
        expect: [],
      },
      // --- our own config ---
      {
        name: 'listeners reachable from the network',
        yaml: 'listen:\n  postfix: 0.0.0.0:10031\n  admin: 0.0.0.0:10033\n',
        expect: [
          ['mailwarden.listener-exposed', 'warning'],
          ['mailwarden.listener-exposed', 'warning'],
        ],
      },
      {
        name: 'alerts with no channel',
        yaml: 'alerts:\n  email: { to: [] }\n',
        expect: [['mailwarden.alerts-no-channel', 'warning']],
      },
      {
        name: 'a rule left in observe mode',
        yaml: 'rules:\n  - name: auth-guess-refuse\n    mode: observe\n',
        expect: [['mailwarden.observe-rules', 'warning']],
      },
      {
        name: 'an allowlisted /8',
        yaml: 'allowlist:\n  networks: [127.0.0.1, 10.0.0.0/8]\n',
        expect: [['mailwarden.allowlist-wide', 'warning']],
        also: (fs) => assert.equal(byId(fs, 'mailwarden.allowlist-wide').fix, 'allowlist:\n  networks: ["127.0.0.1"]'),
      },
    ];

    for (const c of cases) {
      test(`${c.name}: ${c.expect.map(([id]) => id).join(', ') || 'no finding'}`, async () => {
        const { code, report } = await doctor(c);
        const got = report.findings.map((f) => [f.id, f.severity]).sort();
        assert.deepEqual(got, [...c.expect].sort(), JSON.stringify(report.findings, null, 2));
        assert.equal(code, c.expect.some(([, s]) => s === 'error') ? 1 : 0);
        c.also?.(report.findings);
      });
    }

    test('probing with nothing to probe: a note, and no connection', async () => {
      const { report } = await doctor(
        { master: 'pickup unix n - y 60 1 pickup\n', dovecot: { protocols: 'none' } },
        { probe: '127.0.0.1' },
      );
      assert.deepEqual(
        report.findings.map((f) => f.id),
        ['probe.no-targets'],
      );
      assert.equal(report.summary.checked.probe, '127.0.0.1');
    });

    test('a configuration doveconf refuses (the URL without a nonce): exit 2, its error quoted, the rest checked', async () => {
      const { code, report } = await doctor({
        dovecot: { auth_policy_hash_nonce: '' },
        main: { smtpd_delay_reject: 'yes' },
      });
      assert.equal(code, 2);
      assert.deepEqual(
        report.findings.map((f) => f.id),
        ['doctor.config-unreadable', 'postfix.delay-reject'],
      );
      assert.match(report.findings[0]?.message ?? '', /auth_policy_hash_nonce must be set when policy server is used/);
      assert.equal(report.summary.checked.dovecot, null);
    });

    test('the command: text and JSON, exit 0, 1 and 2', async () => {
      const { postfixConfig } = await doctor({});
      const dovecotConfig = join(dir, `case-${n}`, 'dovecot.conf');
      const ok = await runCli(['doctor', '--postfix-config', postfixConfig, '--dovecot-config', dovecotConfig]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, /^mailwarden doctor: Postfix .*postfix, Dovecot .*dovecot\.conf/);
      assert.match(ok.stdout, /0 error\(s\), 0 warning\(s\), 0 note\(s\): nothing worse than a warning\n$/);

      writeFileSync(join(postfixConfig, 'main.cf'), 'smtpd_tls_security_level = none\nsmtpd_sasl_auth_enable = yes\n');
      const bad = await runCli([
        'doctor',
        '--postfix-config',
        postfixConfig,
        '--dovecot-config',
        dovecotConfig,
        '--json',
      ]);
      assert.equal(bad.code, 1, bad.stderr);
      const report = JSON.parse(bad.stdout) as Report;
      assert.equal(report.format, 1);
      assert.deepEqual(Object.keys(report.findings[0] ?? {}), ['id', 'severity', 'area', 'message', 'fix']);
      assert.deepEqual(Object.keys(report.summary), ['errors', 'warnings', 'info', 'exitCode', 'checked']);
      assert.equal(report.summary.exitCode, 1);

      const unreadable = await runCli([
        'doctor',
        '--postfix-config',
        join(dir, 'nonexistent'),
        '--dovecot-config',
        dovecotConfig,
        '--json',
      ]);
      assert.equal(unreadable.code, 2, unreadable.stderr);
      const r2 = JSON.parse(unreadable.stdout) as Report;
      assert.equal(r2.findings[0]?.id, 'doctor.config-unreadable');
      assert.match(r2.findings[0]?.message ?? '', /(main|master)\.cf: No such file or directory/);
      assert.equal(r2.summary.checked.postfix, null);

      const remote = await runCli(['doctor', '--postfix-config', postfixConfig, '--probe', '192.0.2.1']);
      assert.equal(remote.code, 2);
      assert.equal(remote.stdout, '');
      assert.match(remote.stderr, /--probe 192\.0\.2\.1 is not this machine's loopback; .*--probe-remote/);
    });
  },
);
