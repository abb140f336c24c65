/*
 * `mailwarden doctor --probe` against a real Postfix and Dovecot on loopback
 * (test/e2e/stack.ts), wired to a real mailwarden daemon: the configs and the
 * live ports, as shipped by the e2e stack (AUTH offered before TLS), locked
 * down, and broken one way at a time (an open relay, TLS 1.1 accepted, no
 * STARTTLS). The probe comes from 127.0.0.2, never authenticates and never
 * sends a message. Whatever happens, the after hook stops the stack and the
 * daemon.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { probeFindings, type ProbeTarget } from '../../src/doctor/check-probe.js';
import { runDoctor } from '../../src/doctor/index.js';
import { probe } from '../../src/doctor/probe.js';
import type { Finding, Report } from '../../src/doctor/report.js';
import { runCli, startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { startMailStack, type MailStack } from '../e2e/stack.js';

const ids = (fs: readonly Finding[], prefix = ''): string[] =>
  fs
    .filter((f) => f.id.startsWith(prefix))
    .map((f) => f.id)
    .sort();

describe('doctor: live probes of a real Postfix and Dovecot', { timeout: 300_000 }, () => {
  let dir: string;
  let mw: DaemonProcess | undefined;
  let stack: MailStack | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-doctor-probe-'));
    // The probes of every scenario come from one address; none of them must be refused for it.
    writeFileSync(join(dir, 'mailwarden.yaml'), 'rules:\n  - name: smtp-connections-per-ip\n    limit: 1000\n');
    mw = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') });
    stack = await startMailStack({
      postfixPolicy: `inet:127.0.0.1:${mw.postfixPort}`,
      dovecotPolicyUrl: `http://127.0.0.1:${mw.dovecotPort}/dovecot/policy`,
      // A foreign recipient accepted is kept (then dropped by RSET), not refused by an error transport.
      outbound: 'discard',
    });
  });
  after(async () => {
    const stopped = await Promise.allSettled([stack?.stop(), mw?.kill('SIGTERM')]);
    rmSync(dir, { recursive: true, force: true });
    for (const s of stopped) if (s.status === 'rejected') throw s.reason;
  });

  const configs = (): string[] => [
    '--postfix-config',
    join(stack!.dir, 'postfix'),
    '--dovecot-config',
    join(stack!.dir, 'dovecot', 'dovecot.conf'),
  ];

  /** The doctor in this process, with the daemon's listeners, probing 127.0.0.1. */
  async function doctor(): Promise<{ code: number; findings: Finding[] }> {
    let text = '';
    const out = new Writable({
      write(chunk: Buffer, _enc, cb) {
        text += chunk.toString();
        cb();
      },
    });
    const listen = (port: number) => ({ value: `127.0.0.1:${port}`, from: 'test' });
    const code = await runDoctor(
      {
        postfixConfig: join(stack!.dir, 'postfix'),
        dovecotConfig: join(stack!.dir, 'dovecot', 'dovecot.conf'),
        probe: '127.0.0.1',
        json: true,
        configFile: join(dir, 'mailwarden.yaml'),
        overrides: {
          postfixListen: listen(mw!.postfixPort),
          dovecotListen: listen(mw!.dovecotPort),
          adminListen: listen(mw!.adminPort),
        },
      },
      out,
      out,
    );
    return { code, findings: (JSON.parse(text) as Report).findings };
  }

  test('as the e2e stack ships: AUTH offered before TLS, seen in the configs and on every port; the hooks are right', async () => {
    const r = await runCli(['doctor', ...configs(), '--probe', '127.0.0.1', '--json'], mw!.env);
    assert.equal(r.code, 1, r.stderr);
    const report = JSON.parse(r.stdout) as Report;
    const fs = report.findings;
    assert.equal(report.summary.checked.probe, '127.0.0.1');
    assert.deepEqual(ids(fs, 'postfix.auth-'), ['postfix.auth-before-tls', 'postfix.auth-before-tls']);
    assert.deepEqual(ids(fs, 'dovecot.plaintext-auth'), ['dovecot.plaintext-auth']);
    const clear = fs.filter((f) => f.id === 'probe.auth-before-tls').map((f) => f.message);
    assert.equal(clear.length, 4, JSON.stringify(fs, null, 2));
    assert.ok(
      clear.some((m) => m.startsWith(`Postfix service 127.0.0.1:${stack!.ports.smtp} offers AUTH PLAIN LOGIN`)),
    );
    assert.ok(clear.some((m) => m.startsWith(`Postfix service 127.0.0.1:${stack!.ports.submission} offers AUTH`)));
    assert.ok(
      clear.some((m) => m.startsWith(`Dovecot imap-login imap (127.0.0.1:${stack!.ports.imap}) offers AUTH=PLAIN`)),
    );
    assert.ok(
      clear.some((m) => m.startsWith(`Dovecot pop3-login pop3 (127.0.0.1:${stack!.ports.pop3}) offers SASL PLAIN`)),
    );
    // Wired as docs/INTEGRATION.md says, to this daemon: nothing about hooks, relay, STARTTLS or failures.
    assert.deepEqual(
      fs.filter((f) => f.area === 'hooks' || f.area === 'relay' || f.area === 'doctor'),
      [],
    );
    assert.deepEqual(
      ids(fs, 'probe.').filter((id) => !['probe.auth-before-tls', 'probe.old-tls'].includes(id)),
      [],
    );
  });

  test('locked down: nothing but the test certificate that expires in 2 days, exit 0', async () => {
    await stack!.reloadPostfix({
      smtpd_tls_auth_only: 'yes',
      smtpd_tls_protocols: '>=TLSv1.2',
      smtpd_tls_mandatory_protocols: '>=TLSv1.2',
    });
    await stack!.reloadDovecot({ ssl: 'required', disable_plaintext_auth: 'yes' });
    const { code, findings } = await doctor();
    assert.deepEqual(ids(findings), ['tls.cert-expiring', 'tls.cert-expiring'], JSON.stringify(findings, null, 2));
    assert.equal(code, 0);
  });

  test('an open relay found by a foreign RCPT, then reset (no message sent); one for mynetworks is inconclusive', async () => {
    // An access map that lets the probe's address relay: invisible to the restriction check, not to the probe.
    // (With no guard before a bare permit, Postfix's smtpd would not even start.)
    await stack!.reloadPostfix({
      smtpd_relay_restrictions: 'check_client_access inline:{127.0.0.2=OK}, reject_unauth_destination',
    });
    const open = await doctor();
    const relay = open.findings.filter((f) => f.id === 'probe.open-relay');
    assert.equal(relay.length, 2, `${JSON.stringify(open.findings, null, 2)}\n${stack!.postfixLog().slice(-3000)}`);
    assert.match(
      relay[0]?.message ?? '',
      /accepted RCPT TO:<mailwarden-doctor-relay-test@example\.com> from 127\.0\.0\.2/,
    );
    assert.equal(open.code, 1);
    assert.doesNotMatch(stack!.postfixLog(), /status=sent/);

    // Relaying for mynetworks, and the probe inside it: it cannot tell.
    await stack!.reloadPostfix({
      smtpd_relay_restrictions: 'permit_mynetworks, reject_unauth_destination',
      mynetworks: '127.0.0.0/8',
    });
    const mine = await doctor();
    assert.deepEqual(ids(mine.findings, 'probe.relay'), ['probe.relay-inconclusive', 'probe.relay-inconclusive']);
    assert.deepEqual(ids(mine.findings, 'postfix.open-relay'), []);
    assert.deepEqual(ids(mine.findings, 'probe.open-relay'), []);
    assert.equal(mine.code, 0);

    await stack!.reloadPostfix({
      smtpd_relay_restrictions: 'permit_sasl_authenticated, reject_unauth_destination',
      mynetworks: '127.0.0.1/32',
    });
  });

  test('TLS 1.1 accepted: found in the configs and on every port', async () => {
    await stack!.reloadPostfix({
      smtpd_tls_protocols: '>=TLSv1',
      smtpd_tls_ciphers: 'low',
      tls_low_cipherlist: 'ALL:@SECLEVEL=0',
    });
    await stack!.reloadDovecot({ ssl_min_protocol: 'TLSv1', ssl_cipher_list: 'ALL:@SECLEVEL=0' });
    const { findings } = await doctor();
    assert.deepEqual(ids(findings, 'probe.old-tls').length, 4, JSON.stringify(findings, null, 2));
    assert.match(findings.find((f) => f.id === 'probe.old-tls')?.message ?? '', /accepted TLSv1(\.1)?,/);
    assert.deepEqual(ids(findings, 'postfix.tls-protocols'), ['postfix.tls-protocols']);
    assert.deepEqual(ids(findings, 'dovecot.tls-protocols'), ['dovecot.tls-protocols']);

    await stack!.reloadPostfix({ smtpd_tls_protocols: '>=TLSv1.2', smtpd_tls_ciphers: 'medium' });
    await stack!.reloadDovecot({
      ssl_min_protocol: 'TLSv1.2',
      ssl_cipher_list: 'ALL:!kRSA:!SRP:!kDHd:!DSS:!aNULL:!eNULL:!EXPORT:!DES:!3DES:!MD5:!PSK:!RC4:!ADH:!LOW@STRENGTH',
    });
    assert.deepEqual(ids((await doctor()).findings, 'probe.'), []);
  });

  test('no TLS at all: STARTTLS missing on every port, and Postfix offering AUTH in clear', async () => {
    await stack!.reloadPostfix({ smtpd_tls_security_level: 'none', smtpd_tls_auth_only: 'no' });
    await stack!.reloadDovecot({ ssl: 'no' });
    const { findings } = await doctor();
    assert.equal(ids(findings, 'probe.starttls-missing').length, 4, JSON.stringify(findings, null, 2));
    assert.deepEqual(ids(findings, 'probe.auth-before-tls'), ['probe.auth-before-tls', 'probe.auth-before-tls']);
    assert.deepEqual(ids(findings, 'postfix.auth-without-tls'), ['postfix.auth-without-tls']);
    assert.deepEqual(ids(findings, 'dovecot.ssl-off'), ['dovecot.ssl-off']);
  });

  test('a port that fails the TLS handshake, and one where nothing listens', async () => {
    const closed = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const a = s.address();
        s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
      });
    });
    const target = (port: number, implicitTls: boolean): ProbeTarget => ({
      label: 'test',
      server: 'postfix',
      protocol: 'smtp',
      port,
      implicitTls,
      relay: false,
    });
    // Plain SMTP where TLS was expected: the server's banner is no TLS handshake.
    const results = await probe('127.0.0.1', [target(stack!.ports.smtp, true), target(closed, false)]);
    const fs = probeFindings(results, { mynetworks: '', dir: undefined });
    assert.deepEqual(ids(fs), ['probe.tls-failed', 'probe.unreachable']);
    assert.match(fs.find((f) => f.id === 'probe.unreachable')?.message ?? '', /ECONNREFUSED/);
  });
});
