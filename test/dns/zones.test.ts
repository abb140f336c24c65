/*
 * The pieces of a DNSBL question without any I/O: reversed names (IPv4, and
 * IPv6 as 32 nibbles), answer codes and ranges, refusals that are never a
 * listing, DNS names as the config writes them, servers as dns.servers does.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseServer, systemServers } from '../../src/dns/resolver.js';
import {
  ANY_CODE,
  describeCodes,
  dnsName,
  listingCodes,
  parseCodes,
  refusal,
  reverseName,
} from '../../src/dns/zones.js';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

void describe('dns/zones', () => {
  void test('an IPv4 client is asked about reversed, an IPv6 one as 32 nibbles (RFC 5782)', () => {
    assert.equal(reverseName('198.51.100.7', 'zen.spamhaus.org'), '7.100.51.198.zen.spamhaus.org');
    // RFC 5782's own example: 2001:db8:1:2:3:4:567:89ab
    assert.equal(
      reverseName('2001:db8:1:2:3:4:567:89ab', 'bl.test'),
      'b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test',
    );
    assert.equal(reverseName('::1', 'bl.test'), `1.${'0.'.repeat(31)}bl.test`);
  });

  void test('answer codes: one, a range, a CIDR; nonsense is refused', () => {
    assert.deepEqual(parseCodes('127.0.0.2'), [0x7f000002, 0x7f000002]);
    assert.deepEqual(parseCodes('127.0.0.2-127.0.0.11'), [0x7f000002, 0x7f00000b]);
    assert.deepEqual(parseCodes('127.0.1.0/24'), [0x7f000100, 0x7f0001ff]);
    for (const bad of ['127.0.0.11-127.0.0.2', '127.0.0', 'x', '127.0.0.0/33', '::1', '127.0.0.1-'])
      assert.equal(parseCodes(bad), undefined, bad);
    assert.deepEqual(
      describeCodes([
        [0x7f000002, 0x7f00000b],
        [0x7f000004, 0x7f000004],
      ]),
      ['127.0.0.2-127.0.0.11', '127.0.0.4'],
    );
  });

  void test('only codes in 127/8 list, never a refusal (127.255.255.x), and only those the entry counts', () => {
    const zen = [parseCodes('127.0.0.2-127.0.0.11') as [number, number]];
    assert.deepEqual(listingCodes(['127.0.0.4', '127.0.0.10'], zen), ['127.0.0.4', '127.0.0.10']);
    assert.deepEqual(listingCodes(['127.0.0.12'], zen), []);
    // A resolver that rewrites NXDOMAIN to a search page, and Spamhaus refusing a public resolver.
    assert.deepEqual(listingCodes(['92.242.140.21'], ANY_CODE), []);
    assert.deepEqual(listingCodes(['127.255.255.254'], ANY_CODE), []);
    assert.deepEqual(listingCodes(['127.255.255.254'], [[0, 0xffffffff]]), []);
    assert.match(refusal('127.255.255.254') ?? '', /query refused \(127\.255\.255\.254: a query through a public/);
    assert.match(refusal('127.255.255.255') ?? '', /excessive number of queries/);
    assert.equal(refusal('127.0.0.2'), undefined);
  });

  void test('DNS names as the config writes them; DNS servers with and without a port', () => {
    assert.equal(dnsName('Zen.Spamhaus.ORG.'), 'zen.spamhaus.org');
    for (const bad of ['localhost', 'a..b', '-x.org', 'x y.org', `${'a'.repeat(64)}.org`])
      assert.equal(dnsName(bad), undefined);
    assert.deepEqual(parseServer('127.0.0.1'), { host: '127.0.0.1', port: 53 });
    assert.deepEqual(parseServer('127.0.0.1:5353'), { host: '127.0.0.1', port: 5353 });
    assert.deepEqual(parseServer('[::1]:53'), { host: '::1', port: 53 });
    assert.deepEqual(parseServer('2001:db8::53'), { host: '2001:db8::53', port: 53 });
    for (const bad of ['dns.example', '127.0.0.1:0', '127.0.0.1:99999', '[::1]x'])
      assert.equal(parseServer(bad), undefined, bad);
  });

  void test("the default servers are resolv.conf's nameservers, 127.0.0.1 without any", () => {
    const dir = mkdtempSync(join(tmpdir(), 'mw-resolv-'));
    const file = join(dir, 'resolv.conf');
    writeFileSync(
      file,
      '# comment\nsearch example.org\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions timeout:1\n',
    );
    assert.deepEqual(systemServers(file), [
      { host: '192.0.2.53', port: 53 },
      { host: '2001:db8::53', port: 53 },
    ]);
    assert.deepEqual(systemServers(join(dir, 'missing')), [{ host: '127.0.0.1', port: 53 }]);
  });
});
