import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { peerKey } from '../src/adapters/caps.js';
import { loadSettings, loadSettingsFromText } from '../src/config/load.js';
import { ADMIN_MAX_CONNECTIONS, exposureWarnings, FD_RESERVE, fitConnectionCaps, openFileLimit } from '../src/listen.js';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
`;

describe('open-file limit and connection caps', () => {
  test('the soft limit is read from /proc/self/limits; unknown where there is none', () => {
    assert.equal(
      openFileLimit(() => LIMITS),
      1024,
    );
    assert.equal(
      openFileLimit(() => LIMITS.replace('1024    ', 'unlimited')),
      Infinity,
    );
    assert.equal(
      openFileLimit(() => {
        throw new Error('ENOENT');
      }),
      undefined,
    );
    const mine = openFileLimit();
    assert.ok(mine === undefined || mine >= 256, `this process: ${mine}`);
  });

  test('caps that fit stay as configured', () => {
    const s = loadSettings(undefined);
    const fit = fitConnectionCaps(s, 524_288);
    assert.equal(fit.lowered, false);
    assert.deepEqual(fit.postfix, { maxConnections: 4096, maxConnectionsPerPeer: 2048 });
    assert.deepEqual(fit.dovecot, { maxConnections: 1024, maxConnectionsPerPeer: 512 });
    assert.equal(fitConnectionCaps(s, undefined).lowered, false, 'an unknown limit is taken as configured');
  });

  test('under a low limit every listener full at once still leaves the reserve and the admin share free', () => {
    const s = loadSettingsFromText('listen:\n  postfix: [127.0.0.1:10031, /run/mw/policy.sock]\n', 't.yaml');
    for (const limit of [1024, 4096, 600]) {
      const fit = fitConnectionCaps(s, limit);
      assert.equal(fit.lowered, true);
      const held = fit.postfix.maxConnections * 2 + fit.dovecot.maxConnections;
      assert.ok(held <= limit - FD_RESERVE - ADMIN_MAX_CONNECTIONS, `${limit}: ${held} held`);
      assert.ok(fit.postfix.maxConnectionsPerPeer < fit.postfix.maxConnections, 'one peer still cannot take all');
      assert.ok(fit.dovecot.maxConnections >= 1);
    }
  });
});

describe('peers are counted by address, IPv6 by /64', () => {
  test('one IPv6 host walking through its /64 is one peer; IPv4-mapped addresses are IPv4', () => {
    assert.equal(peerKey('2001:db8:1:2::1'), peerKey('2001:db8:1:2:ffff::9'));
    assert.notEqual(peerKey('2001:db8:1:2::1'), peerKey('2001:db8:1:3::1'));
    assert.equal(peerKey('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(peerKey('192.0.2.7'), '192.0.2.7');
  });
});

describe('listeners reachable from the network are warned about, with the fix', () => {
  test('loopback and unix sockets: no warning; anything else: one per listener, naming the key', () => {
    const quiet = loadSettingsFromText(
      'listen:\n  postfix: [127.0.0.1:10040, /run/mailwarden/policy.sock]\n  dovecot: ["[::1]:10041"]\n  admin: [localhost:10042]\n',
      'q.yaml',
    );
    assert.deepEqual(exposureWarnings(quiet), []);
    const open = loadSettingsFromText(
      'listen:\n  postfix: [0.0.0.0:10040, 127.0.0.1:10050]\n  dovecot: ["[::]:10041"]\n  admin: [192.0.2.5:10042]\n',
      'o.yaml',
    );
    const w = exposureWarnings(open);
    assert.equal(w.length, 3);
    assert.match(w[0] ?? '', /^listen\.postfix 0\.0\.0\.0:10040 is reachable .*no authentication.*127\.0\.0\.1 or a unix socket/);
    assert.match(w[1] ?? '', /^listen\.dovecot \[::\]:10041 .*set dovecot\.api_header/);
    assert.match(w[2] ?? '', /^listen\.admin 192\.0\.2\.5:10042 .*token crosses it in clear.*SSH tunnel or a TLS reverse proxy/);
    const secret = loadSettingsFromText(
      'listen:\n  dovecot: [0.0.0.0:10041]\ndovecot:\n  api_header: "X-Policy: s3cret-value-here"\n',
      's.yaml',
    );
    assert.match(exposureWarnings(secret)[0] ?? '', /api_header is set, but it crosses the network in clear/);
  });
});
