/*
 * The doctor's pure parts, without postconf or doveconf: parsing what they
 * print, the protocol arithmetic, the report and its exit codes, which ports
 * a probe visits and what its observations mean. Also: docs/DOCTOR.md lists
 * exactly the finding ids the code can give.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { probeFindings, probeTargets, type ProbeResult } from '../../src/doctor/check-probe.js';
import { oldestPostfixProtocol } from '../../src/doctor/check-postfix.js';
import { parseDoveconf } from '../../src/doctor/dovecot.js';
import { parseParams, parseRestrictions, parseServices, type PostfixConfig } from '../../src/doctor/postfix.js';
import { formatText, makeReport, mergeByPlace, type Finding } from '../../src/doctor/report.js';
import { REPO } from '../helpers/postfix.js';

// As `postconf -M` and `postconf -P -x` print them.
const MASTER = `smtp       inet  n       -       y       -       1       postscreen
smtpd      pass  -       -       y       -       -       smtpd
127.0.0.1:2587 inet n    -       n       -       -       smtpd -o syslog_name=postfix/submission -o smtpd_sasl_auth_enable=yes
submissions inet n       -       y       -       -       smtpd -o smtpd_tls_wrappermode=yes
pickup     unix  n       -       y       60      1       pickup
`;
const SERVICE_PARAMS = `127.0.0.1:2587/inet/syslog_name = postfix/submission
127.0.0.1:2587/inet/smtpd_sasl_auth_enable = yes
submissions/inet/smtpd_tls_wrappermode = yes
`;

describe('doctor: parsing postconf and doveconf', () => {
  test('main.cf parameters and master.cf services with their overrides', () => {
    const main = parseParams('smtpd_delay_reject = no\nrelayhost =\nsmtpd_banner = $myhostname ESMTP\n');
    assert.deepEqual(
      [...main],
      [
        ['smtpd_delay_reject', 'no'],
        ['relayhost', ''],
        ['smtpd_banner', '$myhostname ESMTP'],
      ],
    );
    const services = parseServices(MASTER, SERVICE_PARAMS);
    assert.deepEqual(
      services.map((s) => [s.name, s.type, s.command, Object.fromEntries(s.params)]),
      [
        ['smtp', 'inet', 'postscreen', {}],
        ['smtpd', 'pass', 'smtpd', {}],
        ['127.0.0.1:2587', 'inet', 'smtpd', { syslog_name: 'postfix/submission', smtpd_sasl_auth_enable: 'yes' }],
        ['submissions', 'inet', 'smtpd', { smtpd_tls_wrappermode: 'yes' }],
        ['pickup', 'unix', 'pickup', {}],
      ],
    );
  });

  test('restriction lists: commas, white space, and the { … } form', () => {
    const rs = parseRestrictions(
      'permit_mynetworks,permit_sasl_authenticated  check_policy_service inet:127.0.0.1:10031, ' +
        'check_policy_service { unix:private/policy, timeout=10s, default_action=451 4.3.5 Try later }, reject_unauth_destination',
    );
    assert.deepEqual(
      rs.map((r) => [r.name, r.target, r.attrs && Object.fromEntries(r.attrs)]),
      [
        ['permit_mynetworks', undefined, undefined],
        ['permit_sasl_authenticated', undefined, undefined],
        ['check_policy_service', 'inet:127.0.0.1:10031', undefined],
        ['check_policy_service', 'unix:private/policy', { timeout: '10s', default_action: '451 4.3.5 Try later' }],
        ['reject_unauth_destination', undefined, undefined],
      ],
    );
    assert.equal(
      rs[3]?.text,
      'check_policy_service { unix:private/policy, timeout=10s, default_action=451 4.3.5 Try later }',
    );
    assert.deepEqual(parseRestrictions(''), []);
  });

  test('doveconf: the file from its first line, sections nested, empty values kept', () => {
    const dv = parseDoveconf(`# 2.3.19.1 (9b53102964): /etc/dovecot/dovecot.conf
# Pigeonhole version 0.5.19 (4eae2f79)
auth_policy_server_api_header = 
ssl = required
service imap-login {
  inet_listener imaps {
    port = 993
    ssl = yes
  }
}
protocol imap {
  disable_plaintext_auth = no
}
`);
    assert.equal(dv.file, '/etc/dovecot/dovecot.conf');
    assert.equal(dv.root.settings.get('auth_policy_server_api_header'), '');
    assert.equal(dv.root.settings.get('ssl'), 'required');
    const login = dv.root.sections.find((s) => s.type === 'service' && s.name === 'imap-login');
    assert.equal(login?.sections[0]?.name, 'imaps');
    assert.equal(login?.sections[0]?.settings.get('port'), '993');
    assert.equal(dv.root.sections[1]?.settings.get('disable_plaintext_auth'), 'no');
  });

  test('the oldest TLS protocol a Postfix *_tls_protocols value allows', () => {
    const cases: Array<[string, string | undefined]> = [
      ['>=TLSv1.2', 'TLSv1.2'],
      ['>=TLSv1', 'TLSv1'],
      ['!SSLv2, !SSLv3, !TLSv1, !TLSv1.1', 'TLSv1.2'],
      ['!SSLv2, !SSLv3', 'TLSv1'],
      ['TLSv1.2, TLSv1.3', 'TLSv1.2'],
      ['>=TLSv1.2, <=TLSv1.2', 'TLSv1.2'],
      ['', 'SSLv3'],
    ];
    for (const [value, oldest] of cases) assert.equal(oldestPostfixProtocol(value), oldest, value);
  });
});

const finding = (id: string, severity: Finding['severity'], message = id): Finding => ({
  id,
  severity,
  area: 'tls',
  message,
  fix: null,
});
const CHECKED = { postfix: '/etc/postfix', dovecot: null, mailwarden: null, probe: null };

describe('doctor: the report', () => {
  test('worst first, in the order found; exit 0, 1, or 2 when a configuration could not be read', () => {
    const fs = [finding('a', 'info'), finding('b', 'warning'), finding('c', 'error'), finding('d', 'warning')];
    const r = makeReport(fs, CHECKED, false);
    assert.deepEqual(
      r.findings.map((f) => f.id),
      ['c', 'b', 'd', 'a'],
    );
    assert.deepEqual(
      { ...r.summary, checked: undefined },
      { errors: 1, warnings: 2, info: 1, exitCode: 1, checked: undefined },
    );
    assert.equal(makeReport([finding('b', 'warning')], CHECKED, false).summary.exitCode, 0);
    assert.equal(makeReport([], CHECKED, true).summary.exitCode, 2);
    const text = formatText(makeReport([{ ...finding('x.y', 'error', 'two\nlines'), fix: 'a\nb' }], CHECKED, false));
    assert.match(text, /^mailwarden doctor: Postfix \/etc\/postfix, Dovecot \(not checked\),/);
    assert.match(text, /\nERROR {3}x\.y {2}\[tls\]\n {2}two\n {2}lines\n {2}fix:\n {4}a\n {4}b\n/);
    assert.match(text, /1 error\(s\), 0 warning\(s\), 0 note\(s\): not locked down\n$/);
  });

  test('the same finding for several places is one finding that names them', () => {
    const merged = mergeByPlace(
      [
        { place: 'smtp', finding: finding('p', 'error', 'm') },
        { place: 'submission', finding: finding('q', 'error', 'm') },
        { place: 'submissions', finding: finding('p', 'error', 'm') },
      ],
      (ps) => `services ${ps.join(', ')}`,
    );
    assert.deepEqual(
      merged.map((f) => `${f.id} ${f.message}`),
      ['p services smtp, submissions: m', 'q services submission: m'],
    );
  });
});

describe('doctor: probes, without a network', () => {
  const pf: PostfixConfig = {
    dir: '/etc/postfix',
    main: parseParams('smtpd_tls_wrappermode = no\nsmtpd_tls_security_level = may\n'),
    services: parseServices(MASTER, SERVICE_PARAMS),
  };
  const dv = parseDoveconf(`protocols = imap pop3
service imap-login {
  inet_listener imap {
    port = 143
    ssl = no
  }
  inet_listener imaps {
    port = 993
    ssl = yes
  }
}
service pop3-login {
  inet_listener pop3s {
    port = 0
    ssl = yes
  }
}
service submission-login {
  inet_listener submission {
    port = 587
  }
}
`);

  test('the ports the configs name: postscreen, not its smtpd; implicit TLS; only enabled Dovecot protocols', () => {
    assert.deepEqual(
      probeTargets(pf, dv).map(
        (t) => `${t.label} ${t.protocol}:${t.port}${t.implicitTls ? ' tls' : ''}${t.relay ? ' relay' : ''}`,
      ),
      [
        'Postfix service 127.0.0.1:2587 smtp:2587 relay',
        'Postfix service submissions smtp:465 tls relay',
        'Postfix service smtp smtp:25 relay',
        'Dovecot imap-login imap imap:143',
        'Dovecot imap-login imaps imap:993 tls',
      ],
    );
  });

  test('a foreign recipient accepted: an open relay, unless the probe came from mynetworks', () => {
    const [target] = probeTargets(pf, undefined);
    const accepted = (source: string): ProbeResult => ({
      target: target!,
      address: '127.0.0.1:2587',
      source,
      starttls: true,
      authInClear: [],
      tls: { protocol: 'TLSv1.3' },
      relay: { command: 'RCPT', reply: '250 2.1.5 Ok' },
    });
    const ids = (r: ProbeResult, mynetworks: string): string[] =>
      probeFindings([r], { mynetworks, dir: undefined }).map((f) => f.id);
    assert.deepEqual(ids(accepted('127.0.0.2'), '127.0.0.1/32 [::1]/128'), ['probe.open-relay']);
    assert.deepEqual(ids(accepted('127.0.0.2'), 'hash:/etc/postfix/network_table, 127.0.0.0/8'), [
      'probe.relay-inconclusive',
    ]);
    assert.deepEqual(
      ids({ ...accepted('127.0.0.2'), relay: { command: 'RCPT', reply: '554 5.7.1 Relay access denied' } }, ''),
      [],
    );
    assert.deepEqual(
      ids(
        {
          ...accepted('127.0.0.2'),
          relay: { command: 'MAIL', reply: '530 5.7.0 Must issue a STARTTLS command first' },
        },
        '',
      ),
      ['probe.relay-inconclusive'],
    );
  });
});

test('docs/DOCTOR.md lists exactly the finding ids the doctor can give', () => {
  const dir = join(REPO, 'src', 'doctor');
  const source = readdirSync(dir)
    .map((f) => readFileSync(join(dir, f), 'utf8'))
    .join('\n');
  const inCode = new Set(
    [...source.matchAll(/'((?:postfix|dovecot|tls|probe|mailwarden|doctor)\.[a-z0-9-]+)'/g)].map((m) => m[1]),
  );
  const doc = readFileSync(join(REPO, 'docs', 'DOCTOR.md'), 'utf8');
  const inDocs = new Set(
    [...doc.matchAll(/^\| `((?:postfix|dovecot|tls|probe|mailwarden|doctor)\.[a-z0-9-]+)` \|/gm)].map((m) => m[1]),
  );
  assert.deepEqual([...inDocs].sort(), [...inCode].sort());
});
