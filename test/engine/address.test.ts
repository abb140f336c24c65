import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isIP } from 'node:net';
import {
  canonicalIp,
  contains,
  isDottedQuad,
  isIPv6,
  NetworkSet,
  networkOf,
  overlaps,
  parseSubject,
  type ParsedSubject,
  v6Groups,
  v6NetworkOf,
} from '../../src/engine/address.js';
import ipaddr from 'ipaddr.js';
import { bitsOf, block, randomAddress, type Block } from '../helpers/cidr.js';
import { prng } from '../helpers/prng.js';

void describe('canonicalIp', () => {
  void test('keeps a valid IPv4 address as it is and trims whitespace', () => {
    assert.equal(canonicalIp('192.0.2.1'), '192.0.2.1');
    assert.equal(canonicalIp('0.0.0.0'), '0.0.0.0');
    assert.equal(canonicalIp('255.255.255.255'), '255.255.255.255');
    assert.equal(canonicalIp('  198.51.100.7\t'), '198.51.100.7');
  });

  void test('rejects shorthand, hex, octal-looking, out-of-range and non-addresses', () => {
    for (const bad of [
      '127.1',
      '0x7f.0.0.1',
      '0x7f000001',
      '2130706433',
      '01.2.3.4',
      '1.2.3.256',
      '1.2.3',
      '1.2.3.4.5',
      '1.2.3.-4',
      '1.2.3.4/24',
      'foo',
      'localhost',
      '',
      '   ',
      '[]',
      '[1.2.3.4',
      'gggg::1',
      '2001:db8::1::2',
      '1:2:3:4:5:6:7:8:9',
      '::ffff:1.2.3.256',
    ]) {
      assert.equal(canonicalIp(bad), undefined, `should reject ${JSON.stringify(bad)}`);
    }
  });

  void test('the allocation-free IPv4 check accepts exactly what node:net isIP accepts as IPv4', () => {
    const rnd = prng(7);
    const alphabet = '0123456789.....12 x:';
    let accepted = 0;
    const samples = [
      '0.0.0.0',
      '255.255.255.255',
      '00.1.2.3',
      '1.2.3.04',
      '1.2.3.',
      '.1.2.3',
      '1..2.3',
      '256.1.1.1',
      '1.2.3.4 ',
    ];
    for (let i = 0; i < 200_000; i++) {
      const len = 7 + Math.floor(rnd() * 9);
      let s = '';
      for (let k = 0; k < len; k++) s += alphabet[Math.floor(rnd() * alphabet.length)];
      samples.push(s);
    }
    for (const s of samples) {
      assert.equal(isDottedQuad(s), isIP(s) === 4, JSON.stringify(s));
      if (isDottedQuad(s)) accepted++;
    }
    assert.ok(accepted > 100, `the sample must hold valid addresses too (${accepted})`);
  });

  void test('unmaps IPv4-mapped IPv6 addresses in every spelling', () => {
    assert.equal(canonicalIp('::ffff:192.0.2.1'), '192.0.2.1');
    assert.equal(canonicalIp('::FFFF:192.0.2.1'), '192.0.2.1');
    assert.equal(canonicalIp('::ffff:c000:201'), '192.0.2.1');
    assert.equal(canonicalIp('0:0:0:0:0:ffff:c000:0201'), '192.0.2.1');
    assert.equal(canonicalIp('[::ffff:192.0.2.1]'), '192.0.2.1');
  });

  void test('prints IPv6 in RFC 5952 form (lower case, no leading zeros, longest zero run compressed)', () => {
    assert.equal(canonicalIp('2001:DB8:0:0:0:0:0:1'), '2001:db8::1');
    assert.equal(canonicalIp('2001:0db8:0000:0000:0000:ff00:0042:8329'), '2001:db8::ff00:42:8329');
    // Two equal runs: the first is compressed.
    assert.equal(canonicalIp('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1');
    // The longer run wins even when it comes second.
    assert.equal(canonicalIp('2001:0:0:1:0:0:0:1'), '2001:0:0:1::1');
    // A single zero group is not compressed.
    assert.equal(canonicalIp('2001:db8:0:1:1:1:1:1'), '2001:db8:0:1:1:1:1:1');
    assert.equal(canonicalIp('0:0:0:0:0:0:0:1'), '::1');
    assert.equal(canonicalIp('0:0:0:0:0:0:0:0'), '::');
    assert.equal(canonicalIp('2001:db8:0:0:1:0:0:0'), '2001:db8:0:0:1::');
  });

  void test('strips brackets and the IPv6: tag used in logs', () => {
    assert.equal(canonicalIp('[2001:db8::1]'), '2001:db8::1');
    assert.equal(canonicalIp('IPv6:2001:DB8::1'), '2001:db8::1');
    assert.equal(canonicalIp('[IPv6:2001:db8::1]'), '2001:db8::1');
    assert.equal(canonicalIp('[192.0.2.1]'), '192.0.2.1');
  });

  void test('is idempotent: one host, one key', () => {
    for (const raw of ['2001:DB8:0:0:0:0:0:1', '::ffff:192.0.2.1', '[IPv6:2001:db8:0:0:1:0:0:1]', '203.0.113.9']) {
      const once = canonicalIp(raw) as string;
      assert.equal(canonicalIp(once), once);
    }
  });

  void test('isIPv6 tells the families apart on canonical text', () => {
    assert.equal(isIPv6('2001:db8::1'), true);
    assert.equal(isIPv6('192.0.2.1'), false);
  });
});

void describe('networkOf', () => {
  void test('IPv4 /32, /24, /16, /8, /0', () => {
    assert.equal(networkOf('192.0.2.77', 32), '192.0.2.77/32');
    assert.equal(networkOf('192.0.2.77', 24), '192.0.2.0/24');
    assert.equal(networkOf('192.0.2.77', 16), '192.0.0.0/16');
    assert.equal(networkOf('192.0.2.77', 8), '192.0.0.0/8');
    assert.equal(networkOf('255.255.255.255', 16), '255.255.0.0/16');
    assert.equal(networkOf('255.255.255.255', 8), '255.0.0.0/8');
    assert.equal(networkOf('10.20.30.40', 0), '0.0.0.0/0');
  });

  void test('IPv4 prefixes that do not fall on an octet', () => {
    assert.equal(networkOf('10.1.47.3', 20), '10.1.32.0/20');
    assert.equal(networkOf('192.0.2.200', 27), '192.0.2.192/27');
    assert.equal(networkOf('203.0.113.255', 31), '203.0.113.254/31');
    assert.equal(networkOf('128.0.0.1', 1), '128.0.0.0/1');
  });

  void test('IPv6 /128, /64, /56, /48 and odd lengths', () => {
    const ip = '2001:db8:1:2:3:4:5:6';
    assert.equal(networkOf(ip, 128), '2001:db8:1:2:3:4:5:6/128');
    assert.equal(networkOf(ip, 64), '2001:db8:1:2::/64');
    assert.equal(networkOf('2001:db8:1:2ff::1', 56), '2001:db8:1:200::/56');
    assert.equal(networkOf(ip, 48), '2001:db8:1::/48');
    assert.equal(networkOf('2001:db8:1:2ff::1', 60), '2001:db8:1:2f0::/60');
    assert.equal(networkOf('2001:db8:ffff:ffff::1', 33), '2001:db8:8000::/33');
    assert.equal(networkOf('2001:db8::1', 0), '::/0');
  });

  void test('every address of a network maps to the same CIDR, and neighbours do not', () => {
    assert.equal(networkOf('192.0.2.0', 24), networkOf('192.0.2.255', 24));
    assert.notEqual(networkOf('192.0.2.255', 24), networkOf('192.0.3.0', 24));
    assert.equal(networkOf('2001:db8:1:2::', 64), networkOf('2001:db8:1:2:ffff:ffff:ffff:ffff', 64));
    assert.notEqual(networkOf('2001:db8:1:2:ffff:ffff:ffff:ffff', 64), networkOf('2001:db8:1:3::', 64));
  });
});

void describe('parseSubject', () => {
  void test('single addresses, canonicalised', () => {
    assert.deepEqual(parseSubject('192.0.2.7'), { kind: 'ip', text: '192.0.2.7', prefix: 32, v6: false });
    assert.deepEqual(parseSubject(' 2001:DB8::7 '), { kind: 'ip', text: '2001:db8::7', prefix: 128, v6: true });
    assert.deepEqual(parseSubject('::ffff:192.0.2.7'), { kind: 'ip', text: '192.0.2.7', prefix: 32, v6: false });
  });

  void test('networks with host bits cleared', () => {
    assert.deepEqual(parseSubject('10.1.2.3/24'), { kind: 'network', text: '10.1.2.0/24', prefix: 24, v6: false });
    assert.deepEqual(parseSubject('10.1.2.3/8'), { kind: 'network', text: '10.0.0.0/8', prefix: 8, v6: false });
    assert.deepEqual(parseSubject('0.0.0.0/0'), { kind: 'network', text: '0.0.0.0/0', prefix: 0, v6: false });
    assert.deepEqual(parseSubject('2001:db8:1:2:3::/48'), {
      kind: 'network',
      text: '2001:db8:1::/48',
      prefix: 48,
      v6: true,
    });
    assert.deepEqual(parseSubject('2001:DB8:1:2::9/64'), {
      kind: 'network',
      text: '2001:db8:1:2::/64',
      prefix: 64,
      v6: true,
    });
  });

  void test('/32 and /128 are plain addresses', () => {
    assert.deepEqual(parseSubject('192.0.2.9/32'), { kind: 'ip', text: '192.0.2.9', prefix: 32, v6: false });
    assert.deepEqual(parseSubject('2001:db8::9/128'), { kind: 'ip', text: '2001:db8::9', prefix: 128, v6: true });
  });

  void test('rejects bad addresses and bad prefix lengths', () => {
    for (const bad of [
      '192.0.2.0/33',
      '2001:db8::/129',
      '192.0.2.0/',
      '192.0.2.0/abc',
      '192.0.2.0/-1',
      '192.0.2.0/2 4',
      '127.1/8',
      'foo/24',
      '/24',
      'foo',
      '',
    ]) {
      assert.equal(parseSubject(bad), undefined, `should reject ${JSON.stringify(bad)}`);
    }
  });
});

void describe('NetworkSet', () => {
  void test('IPv4 networks include their first and last address and nothing beyond', () => {
    const set = new NetworkSet(['192.0.2.0/24', '10.0.0.0/8']);
    assert.equal(set.size, 2);
    assert.equal(set.has('192.0.2.0'), true);
    assert.equal(set.has('192.0.2.255'), true);
    assert.equal(set.has('192.0.1.255'), false);
    assert.equal(set.has('192.0.3.0'), false);
    assert.equal(set.has('10.255.255.255'), true);
    assert.equal(set.has('11.0.0.0'), false);
    assert.equal(set.has('9.255.255.255'), false);
  });

  void test('single addresses match only themselves', () => {
    const set = new NetworkSet(['127.0.0.1', '::1', '198.51.100.7/32']);
    assert.equal(set.has('127.0.0.1'), true);
    assert.equal(set.has('127.0.0.2'), false);
    assert.equal(set.has('::1'), true);
    assert.equal(set.has('::2'), false);
    assert.equal(set.has('198.51.100.7'), true);
    assert.equal(set.has('198.51.100.6'), false);
  });

  void test('networks given with host bits set are normalised', () => {
    const set = new NetworkSet(['192.0.2.77/28']);
    assert.equal(set.has('192.0.2.64'), true);
    assert.equal(set.has('192.0.2.79'), true);
    assert.equal(set.has('192.0.2.80'), false);
    assert.equal(set.has('192.0.2.63'), false);
  });

  void test('high-bit IPv4 networks (sign bit in 32-bit arithmetic)', () => {
    const set = new NetworkSet(['203.0.113.128/25', '255.255.255.255']);
    assert.equal(set.has('203.0.113.128'), true);
    assert.equal(set.has('203.0.113.255'), true);
    assert.equal(set.has('203.0.113.127'), false);
    assert.equal(set.has('255.255.255.255'), true);
    assert.equal(set.has('255.255.255.254'), false);
  });

  void test('IPv6 networks, and no cross-family matches', () => {
    const set = new NetworkSet(['2001:db8:1::/48']);
    assert.equal(set.has('2001:db8:1::'), true);
    assert.equal(set.has('2001:db8:1:ffff:ffff:ffff:ffff:ffff'), true);
    assert.equal(set.has('2001:db8:2::1'), false);
    assert.equal(set.has('192.0.2.1'), false);
    const v4 = new NetworkSet(['0.0.0.0/0']);
    assert.equal(v4.has('203.0.113.1'), true);
    assert.equal(v4.has('2001:db8::1'), false);
  });

  void test('an empty set holds nothing; a bad entry is refused', () => {
    const empty = new NetworkSet([]);
    assert.equal(empty.size, 0);
    assert.equal(empty.has('192.0.2.1'), false);
    assert.equal(empty.has('2001:db8::1'), false);
    assert.throws(() => new NetworkSet(['192.0.2.0/24', 'not-a-net']), /not an IP address or network: not-a-net/);
    assert.throws(() => new NetworkSet(['192.0.2.0/33']), /not an IP address or network/);
  });
});

void describe('contains and overlaps: range containment, both ways', () => {
  const p = (s: string): ParsedSubject => {
    const r = parseSubject(s);
    assert.ok(r, s);
    return r;
  };

  void test('a network holds its addresses and smaller networks; an address holds only itself', () => {
    assert.equal(contains(p('127.0.0.0/8'), p('127.0.0.1')), true);
    assert.equal(contains(p('127.0.0.1'), p('127.0.0.0/8')), false);
    assert.equal(overlaps(p('127.0.0.0/8'), p('127.0.0.1')), true);
    assert.equal(overlaps(p('127.0.0.1'), p('127.0.0.0/8')), true);
    assert.equal(contains(p('198.18.0.0/15'), p('198.19.255.255')), true);
    assert.equal(overlaps(p('198.18.0.0/15'), p('198.20.0.0/16')), false);
    assert.equal(contains(p('192.0.2.7'), p('192.0.2.7')), true);
    assert.equal(overlaps(p('192.0.2.7'), p('192.0.2.8')), false);
    assert.equal(contains(p('0.0.0.0/0'), p('255.255.255.255')), true);
    assert.equal(contains(p('128.0.0.0/1'), p('127.255.255.255')), false, 'the sign bit');
    assert.equal(contains(p('::/0'), p('2001:db8::1')), true);
    assert.equal(contains(p('2001:db8::/32'), p('2001:db8:ffff::/48')), true);
    assert.equal(overlaps(p('2001:db8::/32'), p('2001:db9::/32')), false);
    assert.equal(overlaps(p('0.0.0.0/0'), p('::1')), false, 'no cross-family overlap');
    assert.equal(contains(p('::/0'), p('127.0.0.1')), false);
  });

  void test('agree with address arithmetic on random pairs of every length', () => {
    const rand = prng(12);
    const subject = (b: Block): ParsedSubject => p(b.text);
    for (let i = 0; i < 4000; i++) {
      const v6 = rand() < 0.5;
      const bits = bitsOf(v6);
      const a = block(randomAddress(rand, v6), Math.floor(rand() * (bits + 1)), v6);
      // Often a neighbour of a, so that nesting is common, not one chance in billions.
      const near = a.first ^ (1n << BigInt(Math.floor(rand() * bits)));
      const b = block(rand() < 0.8 ? near : randomAddress(rand, v6), Math.floor(rand() * (bits + 1)), v6);
      const holds = a.first <= b.first && b.last <= a.last;
      const shares = a.first <= b.last && b.first <= a.last;
      assert.equal(contains(subject(a), subject(b)), holds, `${a.text} holds ${b.text}`);
      assert.equal(overlaps(subject(a), subject(b)), shares, `${a.text} overlaps ${b.text}`);
      assert.equal(overlaps(subject(b), subject(a)), shares);
    }
  });

  void test('NetworkSet.overlapping names the allowlist entry a network holds or sits in', () => {
    const set = new NetworkSet(['127.0.0.1', '::1', '10.20.0.0/16']);
    assert.equal(set.overlapping(p('127.0.0.0/8'))?.text, '127.0.0.1');
    assert.equal(set.overlapping(p('10.20.30.0/24'))?.text, '10.20.0.0/16');
    assert.equal(set.overlapping(p('10.0.0.0/8'))?.text, '10.20.0.0/16');
    assert.equal(set.overlapping(p('::/0'))?.text, '::1');
    assert.equal(set.overlapping(p('10.21.0.0/16')), undefined);
    assert.equal(set.overlapping(p('128.0.0.0/1')), undefined);
  });
});

void describe('IPv6 networks printed without a round trip through the parser', () => {
  void test('v6NetworkOf is exactly what ipaddr.js prints (RFC 5952), for every prefix of zero-heavy addresses', () => {
    const rand = prng(5);
    for (let i = 0; i < 3000; i++) {
      // Mostly zero groups, so that runs of every length and position, and ties, are common.
      const parts = Array.from({ length: 8 }, () => (rand() < 0.55 ? 0 : Math.floor(rand() * 65536)));
      const ip = ipaddr.IPv6.parse(parts.map((p) => p.toString(16)).join(':'));
      const text = ip.toRFC5952String();
      const len = Math.floor(rand() * 129);
      const bytes = ip.toByteArray();
      for (let b = 0; b < 16; b++) {
        const left = len - b * 8;
        if (left <= 0) bytes[b] = 0;
        else if (left < 8) bytes[b] = (bytes[b] as number) & (0xff << (8 - left));
      }
      const want = `${(ipaddr.fromByteArray(bytes) as ipaddr.IPv6).toRFC5952String()}/${len}`;
      assert.equal(v6NetworkOf(v6Groups(text), len), want, `${text}/${len}`);
      assert.equal(networkOf(text, len), want);
    }
  });
});
