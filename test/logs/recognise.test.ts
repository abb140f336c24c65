/*
 * The line parsers against real lines: every line of the captured Postfix 3.7
 * and Dovecot 2.3 logs (test/fixtures/protocol/logs.txt), the same lines as
 * syslog writes them on Debian (`dovecot: imap-login: …`, no level), and the
 * other lines docs/LOGS.md lists (Cyrus SASL, postscreen, RBL, Roundcube).
 * A client's own text (a SASL user name, a Dovecot login name, a Roundcube
 * user name) never decides which address is counted.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { recogniseMailLine, recogniseMessage } from '../../src/logs/recognise.js';
import { parseRoundcube } from '../../src/logs/roundcube.js';
import { splitHeader } from '../../src/logs/syslog.js';
import type { Finding } from '../../src/logs/types.js';
import { REPO } from '../helpers/postfix.js';

/** A finding in one short string: `fail smtp 192.0.2.7 alice x1 [submission]`, `pregreet 192.0.2.7`, `skip`, or undefined. */
function brief(f: Finding | undefined): string | undefined {
  if (f === undefined) return undefined;
  if (f.kind === 'skip') return 'skip';
  if (f.kind !== 'login') return `${f.kind} ${f.ip}${f.context ? ` [${f.context}]` : ''}`;
  const extra = [
    f.context ? `[${f.context}]` : '',
    f.session ? `<${f.session}>` : '',
    f.spanMs ? `${f.spanMs / 1000}s` : '',
  ]
    .filter(Boolean)
    .join(' ');
  return `${f.ok ? 'ok' : 'fail'} ${f.protocol} ${f.ip} ${f.user ?? '-'} x${f.attempts}${extra ? ` ${extra}` : ''}`;
}

const mail = (line: string): string | undefined => brief(recogniseMailLine(line));

const CAPTURED = readFileSync(join(REPO, 'test', 'fixtures', 'protocol', 'logs.txt'), 'utf8')
  .split('\n')
  .filter((l) => l !== '' && !l.startsWith('#') && !l.startsWith('====='));

describe('logs: the captured Postfix 3.7 and Dovecot 2.3 logs', () => {
  test('every line is read without an error, and what each kind adds up to is known', () => {
    const tally = new Map<string, number>();
    for (const line of CAPTURED) {
      const b = mail(line)?.split(' ').slice(0, 2).join(' ') ?? 'unknown';
      tally.set(b, (tally.get(b) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries([...tally].sort()), {
      'fail dovecot': 16,
      'fail imap': 11,
      'fail pop3': 4,
      'fail smtp': 16,
      'lost-after-auth 127.0.0.1': 1,
      'ok imap': 16,
      'ok pop3': 4,
      'ok smtp': 5,
      'relay-denied 127.0.0.1': 1,
      'relay-denied 127.0.0.24': 1,
      skip: 24,
      unknown: CAPTURED.length - 99,
    });
  });

  test('Postfix SASL failures through Dovecot SASL, with the user, the service and the address', () => {
    assert.equal(
      mail(
        'Nov 27 23:26:14 mx postfix/submission/smtpd[11358]: warning: localhost[127.0.0.1]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=alice@mailprobe.test',
      ),
      'fail smtp 127.0.0.1 alice@mailprobe.test x1 [submission]',
    );
    assert.equal(
      mail(
        'Nov 27 23:26:53 mx postfix/smtpd[11506]: warning: localhost[127.0.0.1]: SASL LOGIN authentication failed: (reason unavailable), sasl_username=alice@mailprobe.test',
      ),
      'fail smtp 127.0.0.1 alice@mailprobe.test x1',
    );
    // Refused by the hook: a failure like any other here; logs/echo.ts drops it when the hook reported it.
    assert.equal(
      mail(
        'Nov 27 23:29:31 mx postfix/submission/smtpd[12680]: warning: unknown[127.0.0.28]: SASL PLAIN authentication failed: Blocked by mailprobe policy, sasl_username=alice@mailprobe.test',
      ),
      'fail smtp 127.0.0.28 alice@mailprobe.test x1 [submission]',
    );
    // Postfix gave up on Dovecot: no password was tried.
    assert.equal(
      mail(
        'Nov 27 23:26:43 mx postfix/submission/smtpd[11358]: warning: localhost[127.0.0.1]: SASL LOGIN authentication failed: Connection lost to authentication server, sasl_username=(unavailable)',
      ),
      'skip',
    );
  });

  test('a successful SASL login (the client= line of an accepted message)', () => {
    assert.equal(
      mail(
        'Nov 27 23:29:03 mx postfix/submission/smtpd[12680]: 1DD4D160010: client=unknown[127.0.0.22], sasl_method=PLAIN, sasl_username=alice@mailprobe.test',
      ),
      'ok smtp 127.0.0.22 alice@mailprobe.test x1 [submission]',
    );
    assert.equal(
      mail('Nov 27 23:29:01 mx postfix/smtpd[12670]: 82B4E16000E: client=unknown[127.0.0.21]'),
      undefined,
      'no SASL: not a login',
    );
  });

  test('relay access denied and lost connection after AUTH', () => {
    assert.equal(
      mail(
        'Nov 27 23:29:06 mx postfix/smtpd[12670]: NOQUEUE: reject: RCPT from unknown[127.0.0.24]: 554 5.7.1 <victim@example.net>: Relay access denied; from=<spammer@example.org> to=<victim@example.net> proto=ESMTP helo=<client.mailprobe.test>',
      ),
      'relay-denied 127.0.0.24',
    );
    assert.equal(
      mail('Nov 27 23:32:43 mx postfix/submission/smtpd[14913]: lost connection after AUTH from localhost[127.0.0.1]'),
      'lost-after-auth 127.0.0.1 [submission]',
    );
    // Other rejects (the hooks' own, a policy's) are no abuse of their own.
    assert.equal(
      mail(
        'Nov 27 23:27:12 mx postfix/submission/smtpd[11358]: NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 554 5.7.1 <victim@example.net>: Recipient address rejected: Access denied; from=<spammer@example.org> to=<victim@example.net> proto=ESMTP helo=<client.mailprobe.test>',
      ),
      undefined,
    );
  });

  test("Dovecot's auth process: each checked password at once, with the session; SMTP AUTH's left to Postfix's line", () => {
    assert.equal(
      mail(
        '2026-11-27 23:29:14 auth: Info: passwd-file(alice@mailprobe.test,127.0.0.22,<4JybbUphiZh/AAAW>): Password mismatch',
      ),
      'fail dovecot 127.0.0.22 alice@mailprobe.test x1 <4JybbUphiZh/AAAW>',
    );
    assert.equal(
      mail(
        '2026-11-27 23:27:34 auth: Info: passwd-file(mallory@mailprobe.test,127.0.0.1,<HpVmZ0ph9OR/AAAB>): unknown user',
      ),
      'fail dovecot 127.0.0.1 mallory@mailprobe.test x1 <HpVmZ0ph9OR/AAAB>',
    );
    assert.equal(
      mail('2026-11-27 23:26:12 auth: Info: passwd-file(alice@mailprobe.test,127.0.0.1): Password mismatch'),
      'skip',
    );
    assert.equal(
      mail(
        '2026-11-27 23:29:20 auth: Info: policy(alice@mailprobe.test,127.0.0.25,<pqn3bUphuZl/AAAZ>): Authentication failure due to policy server refusal: Blocked by mailprobe policy',
      ),
      'skip',
    );
  });

  test("Dovecot's login process: successes and the failed attempts of a connection, with their span", () => {
    assert.equal(
      mail(
        '2026-11-27 23:31:59 imap-login: Info: Disconnected: Connection closed (auth failed, 3 attempts in 18 secs): user=<alice@mailprobe.test>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, secured, session=<4BRddkphTIR/AAAB>',
      ),
      'fail imap 127.0.0.1 alice@mailprobe.test x3 <4BRddkphTIR/AAAB> 18s',
    );
    assert.equal(
      mail(
        '2026-11-27 23:27:49 pop3-login: Info: Disconnected: Aborted login by logging out (auth failed, 1 attempts in 2 secs): user=<bob@mailprobe.test>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, secured, session=<7OliaEph6sd/AAAB>',
      ),
      'fail pop3 127.0.0.1 bob@mailprobe.test x1 <7OliaEph6sd/AAAB> 2s',
    );
    assert.equal(
      mail(
        '2026-11-27 23:27:23 imap-login: Info: Login: user=<bob@mailprobe.test>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=11637, TLS, session=<0qrFZkphkMl/AAAB>',
      ),
      'ok imap 127.0.0.1 bob@mailprobe.test x1 <0qrFZkphkMl/AAAB>',
    );
    assert.equal(
      mail(
        '2026-11-27 23:32:45 pop3-login: Info: Disconnected: Aborted login by logging out (no auth attempts in 0 secs): user=<>, rip=127.0.0.1, lip=127.0.0.1, secured, session=<ZQEzekphbKZ/AAAB>',
      ),
      'skip',
    );
  });
});

describe('logs: the same programs through syslog, and the other lines docs/LOGS.md lists', () => {
  test('Dovecot through syslog (Debian mail.log): no level, `dovecot:` or `dovecot[pid]:` as the program', () => {
    assert.equal(
      mail(
        'Nov 27 23:29:16 mx dovecot: imap-login: Disconnected: Aborted login by logging out (auth failed, 1 attempts in 2 secs): user=<alice@example.org>, method=PLAIN, rip=198.51.100.7, lip=192.0.2.1, TLS, session=<4JybbUphiZh/AAAW>',
      ),
      'fail imap 198.51.100.7 alice@example.org x1 <4JybbUphiZh/AAAW> 2s',
    );
    assert.equal(
      mail(
        'Nov 27 23:29:14 mx dovecot[812]: auth: passwd-file(alice@example.org,198.51.100.7,<4JybbUphiZh/AAAW>): Password mismatch',
      ),
      'fail dovecot 198.51.100.7 alice@example.org x1 <4JybbUphiZh/AAAW>',
    );
    assert.equal(
      mail(
        '2026-11-27T23:29:16.123456+00:00 mx dovecot[812]: managesieve-login: Disconnected (auth failed, 2 attempts in 9 secs): user=<bob>, method=PLAIN, rip=2001:db8::7, lip=2001:db8::1, session=<x1>',
      ),
      'fail sieve 2001:db8::7 bob x2 <x1> 9s',
    );
    // An auth worker (sql, ldap) and PAM.
    assert.equal(
      mail(
        'Nov 27 23:29:14 mx dovecot: auth-worker(4242): conn unix:auth-worker (pid=4240,uid=115): auth-worker<3>: sql(carol@example.org,203.0.113.9,<Qr8s+rwnLAC1Q4aR>): Password mismatch',
      ),
      'fail dovecot 203.0.113.9 carol@example.org x1 <Qr8s+rwnLAC1Q4aR>',
    );
    assert.equal(
      mail(
        'Nov 27 23:29:14 mx dovecot: auth-worker(4242): pam(dave,203.0.113.9,<abc>): pam_authenticate() failed: Authentication failure (password mismatch?)',
      ),
      'fail dovecot 203.0.113.9 dave x1 <abc>',
    );
    // Dovecot 2.4 words it differently; Dovecot's submission service.
    assert.equal(
      mail(
        'Nov 27 23:29:16 mx dovecot: imap-login: Login aborted: Connection closed (auth failed, 1 attempts in 2 secs) (auth_failed): user=<alice>, method=PLAIN, rip=198.51.100.8, lip=192.0.2.1, session=<s24>',
      ),
      'fail imap 198.51.100.8 alice x1 <s24> 2s',
    );
    assert.equal(
      mail(
        'Aug 15 06:02:39 mx dovecot[3571]: submission-login: Disconnected: Aborted login by logging out (auth failed, 1 attempts in 2 secs): user=<business>, method=LOGIN, rip=198.51.100.9, lip=192.0.2.1, TLS, session=<xPPIsz/mR/KNYgoY>',
      ),
      'fail submission 198.51.100.9 business x1 <xPPIsz/mR/KNYgoY> 2s',
    );
  });

  test('Cyrus SASL (saslauthd): the failure reasons it gives, with and without a user name; a client port', () => {
    assert.equal(
      mail(
        'Mar 10 13:33:30 mx postfix/smtpd[3937]: warning: host.example.net[198.51.100.10]: SASL LOGIN authentication failed: authentication failure',
      ),
      'fail smtp 198.51.100.10 - x1',
    );
    assert.equal(
      mail(
        'Sep  6 00:44:56 mx postfix/submission/smtpd[11538]: warning: unknown[198.51.100.11]: SASL LOGIN authentication failed: UGFzc3dvcmQ6',
      ),
      'fail smtp 198.51.100.11 - x1 [submission]',
    );
    assert.equal(
      mail(
        'Aug  4 16:47:52 mx postfix/smtpd[31152]: warning: unknown[198.51.100.12]:55729: SASL LOGIN authentication failed: authentication failure, sasl_username=Admin',
      ),
      'fail smtp 198.51.100.12 admin x1',
    );
    assert.equal(
      mail(
        'Nov  4 09:11:01 mx postfix-out/smtps/smtpd[27133]: warning: unknown[2001:db8::12]: SASL PLAIN authentication failed: ',
      ),
      'fail smtp 2001:db8::12 - x1 [smtps]',
    );
    assert.equal(
      mail(
        'Jan 14 16:18:16 mx postfix/smtpd[14933]: warning: host[198.51.100.13]: SASL CRAM-MD5 authentication failed: Invalid authentication mechanism',
      ),
      'skip',
    );
  });

  test('postscreen PREGREET and DNSBL; smtpd RBL rejects; too many errors', () => {
    assert.equal(
      mail(
        'Nov 27 23:40:01 mx postfix/postscreen[1148]: PREGREET 11 after 0.21 from [198.51.100.20]:60591: EHLO bot\\r\\n',
      ),
      'pregreet 198.51.100.20',
    );
    assert.equal(
      mail('Nov 27 23:40:02 mx postfix/postscreen[1148]: DNSBL rank 6 for [198.51.100.21]:49012'),
      'blocklisted 198.51.100.21',
    );
    // Its reject of the same connection follows the DNSBL line, which counted it.
    assert.equal(
      mail(
        'Nov 27 23:40:03 mx postfix/postscreen[1148]: NOQUEUE: reject: RCPT from [198.51.100.21]:49012: 550 5.7.1 Service unavailable; client [198.51.100.21] blocked using zen.spamhaus.org; from=<a@example.com>, to=<b@example.org>, proto=ESMTP, helo=<x>',
      ),
      'skip',
    );
    assert.equal(
      mail('Nov 27 23:40:04 mx postfix/postscreen[1148]: CONNECT from [198.51.100.22]:41000 to [192.0.2.1]:25'),
      undefined,
    );
    assert.equal(
      mail(
        'Dec 30 18:19:15 mx postfix/smtpd[1574]: NOQUEUE: reject: RCPT from badguy.example.com[198.51.100.23]: 554 5.7.1 Service unavailable; Client host [198.51.100.23] blocked using bl.example.org; https://bl.example.org/q?ip=198.51.100.23; from=<s@example.com> to=<g@example.org> proto=ESMTP helo=<badguy.example.com>',
      ),
      'blocklisted 198.51.100.23',
    );
    assert.equal(
      mail('Jun  3 06:25:43 mx postfix/smtpd[29306]: too many errors after RCPT from example.com[198.51.100.24]'),
      'smtp-errors 198.51.100.24',
    );
  });

  test('Roundcube: errors.log and userlogins.log, with a syslog header too; X-Forwarded-For only when trusted', () => {
    const rc = (line: string, trust = false) => brief(parseRoundcube(line, trust));
    assert.equal(
      rc(
        '[27-Nov-2026 23:26:09 +0000]: <4f2c9a1b> IMAP Error: Login failed for Alice@Example.org against localhost from 203.0.113.5. AUTHENTICATE PLAIN: Authentication failed. in /usr/share/roundcube/program/lib/Roundcube/rcube_imap.php on line 211 (POST /?_task=login&_action=login)',
      ),
      'fail webmail 203.0.113.5 alice@example.org x1',
    );
    assert.equal(
      rc(
        '[10-May-2015 13:02:52 -0400]: <4z506z6r> Failed login for sampleuser from 203.0.113.6 in session 4z506z6rvddstv6k7jz08hxo27 (error: 0)',
      ),
      'fail webmail 203.0.113.6 sampleuser x1',
    );
    assert.equal(
      rc(
        '[10-May-2015 13:02:53 -0400]: <4z506z6r> Successful login for sampleuser (ID: 7) from 203.0.113.6 in session 4z506z6rvddstv6k7jz08hxo27',
      ),
      'ok webmail 203.0.113.6 sampleuser x1',
    );
    const proxied =
      '[17-Jan-2016 11:09:06 +0200]: <j2pncet8> IMAP Error: Login failed for user@example.com from 127.0.0.1(X-Real-IP: 203.0.113.7,X-Forwarded-For: 203.0.113.8). AUTHENTICATE PLAIN: Authentication failed. in /usr/share/roundcubemail/program/lib/Roundcube/rcube_imap.php on line 197 (POST /?_task=login&_action=login)';
    assert.equal(rc(proxied), 'fail webmail 127.0.0.1 user@example.com x1');
    assert.equal(rc(proxied, true), 'fail webmail 203.0.113.7 user@example.com x1');
    assert.equal(
      rc(proxied.replace('X-Real-IP: 203.0.113.7,', ''), true),
      'fail webmail 203.0.113.8 user@example.com x1',
      'without X-Real-IP: the last X-Forwarded-For address',
    );
    assert.equal(
      brief(
        recogniseMailLine(
          'May 19 06:07:48 server roundcube[21296]: <crk9n97i> IMAP Error: Login failed for test from 203.0.113.9. AUTHENTICATE PLAIN: Authentication failed. in /usr/share/php5/Roundcube/rcube_imap.php on line 193 (POST /mail/?_task=login&_action=login)',
        ),
      ),
      'fail webmail 203.0.113.9 test x1',
    );
  });
});

describe("logs: a client's own text never names the address counted", () => {
  test('a SASL user name holding another address', () => {
    assert.equal(
      mail(
        'Nov 27 23:26:14 mx postfix/smtpd[1]: warning: unknown[198.51.100.30]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=x unknown[192.0.2.99]: SASL PLAIN authentication failed',
      ),
      'fail smtp 198.51.100.30 x unknown[192.0.2.99]: sasl plain authentication failed x1',
    );
  });

  test('a Dovecot login name holding `rip=`, `(auth failed, 99 attempts`, or a comma and an address', () => {
    assert.equal(
      mail(
        'Nov 27 23:29:16 mx dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<a>, method=PLAIN, rip=192.0.2.99, session=<y>, method=PLAIN, rip=198.51.100.31, lip=192.0.2.1, session=<s1>',
      ),
      'fail imap 198.51.100.31 a>, method=plain, rip=192.0.2.99, session=<y x1 <s1> 2s',
    );
    assert.equal(
      mail(
        'Nov 27 23:29:16 mx dovecot: imap-login: Disconnected (no auth attempts in 0 secs): user=<(auth failed, 99 attempts in 1 secs)>, rip=198.51.100.32, lip=192.0.2.1, session=<s2>',
      ),
      'skip',
    );
    assert.equal(
      mail('Nov 27 23:29:14 mx dovecot: auth: passwd-file(x,192.0.2.99,198.51.100.33,<s3>): Password mismatch'),
      'fail dovecot 198.51.100.33 x,192.0.2.99 x1 <s3>',
    );
  });

  test('a Roundcube user name holding ` from <address>` makes the line ambiguous: skipped, nobody counted', () => {
    const rc = (line: string) => brief(parseRoundcube(line, false));
    assert.equal(
      rc('Jul 11 03:06:37 h roundcube: IMAP Error: Login failed for admin from 192.0.2.99 from 203.0.113.10'),
      'skip',
    );
    assert.equal(
      rc(
        'Jul 11 03:06:37 h roundcube: IMAP Error: Login failed for admin from 192.0.2.99. from 203.0.113.10. AUTHENTICATE PLAIN: A0002 NO Login failed. in /usr/share/roundcube/program/include/rcube_imap.php on line 205 (POST /wmail/?_task=login&_action=login)',
      ),
      'skip',
    );
    // ` from ` without an address after it is only text.
    assert.equal(
      rc(
        '[27-Nov-2026 23:26:09 +0000]: IMAP Error: Login failed for mail from home against localhost from 203.0.113.11. AUTHENTICATE PLAIN: Authentication failed.',
      ),
      'fail webmail 203.0.113.11 mail from home x1',
    );
  });
});

describe('logs: headers, and lines that are not what they seem', () => {
  test('the program and message of each header form', () => {
    assert.deepEqual(splitHeader('Nov  7 03:04:05 mx postfix/smtpd[1]: hello'), {
      program: 'postfix/smtpd',
      message: 'hello',
    });
    assert.deepEqual(splitHeader('2026-11-27T23:26:14.123456+00:00 mx dovecot: imap-login: x'), {
      program: 'dovecot',
      message: 'imap-login: x',
    });
    assert.deepEqual(splitHeader('2026-11-27 23:29:14 auth: Info: x'), { program: '', message: 'auth: Info: x' });
    assert.deepEqual(splitHeader('Nov 27 23:29:14 imap-login: Info: x'), {
      program: '',
      message: 'imap-login: Info: x',
    });
    assert.deepEqual(splitHeader('Nov 27 23:29:14 postfix/smtpd[7]: x'), { program: 'postfix/smtpd', message: 'x' });
    for (const bad of ['', 'garbage', 'Nov 27', '12345', 'Nov 27 23:29:14 mx no-colon-here', '[x]: y'])
      assert.equal(splitHeader(bad), undefined, bad);
  });

  test('random bytes and cut lines are unknown, never an error', () => {
    let seed = 7;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const pieces = [
      ...CAPTURED.slice(0, 200),
      'warning: ',
      '[',
      ']',
      ' from ',
      'rip=',
      'session=<',
      '(auth failed, ',
      ': reject: ',
    ];
    for (let i = 0; i < 20_000; i++) {
      const base = pieces[Math.floor(rand() * pieces.length)] as string;
      const cut = base.slice(0, Math.floor(rand() * base.length));
      const noise = String.fromCharCode(
        ...Array.from({ length: Math.floor(rand() * 20) }, () => Math.floor(rand() * 0x3000)),
      );
      const line = rand() < 0.5 ? cut + noise : noise + cut;
      recogniseMailLine(line);
      parseRoundcube(line, true);
      recogniseMessage('postfix/smtpd', line, false);
      recogniseMessage('dovecot', line, false);
    }
  });
});
