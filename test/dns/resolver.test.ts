/*
 * The DNS client against a real DNSBL server (rbldnsd on loopback): A and TXT
 * answers kept for their TTL, names that do not exist for the SOA's minimum
 * (RFC 2308), IPv6 nibble names, one query for identical questions in
 * flight, the in-flight bound, a server that never answers, sockets that
 * change port as they wear out, and a reply with the wrong id that is not
 * believed.
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { after, before, describe, test } from 'node:test';
import packet from 'dns-packet';
import { Resolver, type DnsServer } from '../../src/dns/resolver.js';
import { reverseName } from '../../src/dns/zones.js';
import { blackHole, startRbldnsd, zoneHead, type Rbldnsd } from './rbldnsd.js';

const local = (port: number): DnsServer[] => [{ host: '127.0.0.1', port }];

void describe('dns/resolver against rbldnsd', () => {
  let bl: Rbldnsd;
  before(async () => {
    bl = await startRbldnsd(
      {
        ip4: `${zoneHead(300, 120)}:127.0.0.4:Listed: see https://bl.test/$\n198.51.100.7\n`,
        ip6: `${zoneHead(300, 120)}:127.0.0.3:IPv6 $ listed\n2001:db8:1:2\n`,
      },
      ['bl.test:ip4set:ip4', 'bl.test:ip6tset:ip6'],
    );
  });
  after(async () => {
    await bl?.stop();
  });

  void test('a listing is kept for its TTL, a name that does not exist for the SOA minimum', async () => {
    const clock = { now: 1_000_000 };
    const r = new Resolver({
      servers: local(bl.port),
      timeoutMs: 1000,
      cacheEntries: 100,
      maxInFlight: 10,
      now: () => clock.now,
    });
    const listed = await r.query(reverseName('198.51.100.7', 'bl.test'), 'A');
    assert.deepEqual(listed, { ok: true, records: ['127.0.0.4'], expires: clock.now + 300_000 });
    const txt = await r.query(reverseName('198.51.100.7', 'bl.test'), 'TXT');
    assert.deepEqual(txt.ok && txt.records, ['Listed: see https://bl.test/198.51.100.7']);
    const clean = await r.query(reverseName('198.51.100.8', 'bl.test'), 'A');
    assert.deepEqual(clean, { ok: true, records: [], expires: clock.now + 120_000 });
    assert.equal(r.stats.queries, 3);
    // Asked again within the TTL: from the cache; after it: from the server.
    clock.now += 119_000;
    await r.query(reverseName('198.51.100.8', 'bl.test'), 'A');
    assert.deepEqual([r.stats.queries, r.stats.cached], [3, 1]);
    clock.now += 2000;
    await r.query(reverseName('198.51.100.8', 'bl.test'), 'A');
    await r.query(reverseName('198.51.100.7', 'bl.test'), 'A');
    assert.deepEqual([r.stats.queries, r.stats.cached], [4, 2]);
  });

  void test('IPv6 clients are asked about as nibbles; identical questions in flight are asked once', async () => {
    const r = new Resolver({ servers: local(bl.port), timeoutMs: 1000, cacheEntries: 100, maxInFlight: 10 });
    const name = reverseName('2001:db8:1:2::7', 'bl.test');
    const [a, b] = await Promise.all([r.query(name, 'A'), r.query(name.toUpperCase(), 'A')]);
    assert.deepEqual(a.ok && a.records, ['127.0.0.3']);
    assert.equal(a, b);
    assert.equal(r.stats.queries, 1);
    const other = await r.query(reverseName('2001:db8:1:3::7', 'bl.test'), 'A');
    assert.deepEqual(other.ok && other.records, []);
  });

  void test('past max_in_flight a question is answered "busy" at once, and that answer is not kept', async () => {
    const hole = await blackHole();
    try {
      const [host, port] = hole.server.split(':') as [string, string];
      const r = new Resolver({
        servers: [{ host, port: Number(port) }],
        timeoutMs: 5000,
        cacheEntries: 100,
        maxInFlight: 2,
      });
      const flying = [r.query('1.bl.test', 'A'), r.query('2.bl.test', 'A')];
      const busy = await r.query('3.bl.test', 'A');
      assert.deepEqual(busy, { ok: false, error: 'busy', expires: 0 });
      assert.equal(r.stats.overflow, 1);
      // Stopping answers the two in flight at once ("closed"), and keeps nothing.
      r.close();
      for (const a of await Promise.all(flying)) assert.deepEqual(a, { ok: false, error: 'closed', expires: 0 });
      assert.equal(r.cacheEntries, 0);
    } finally {
      await hole.close();
    }
  });

  void test('a server that never answers: tried twice, then a failure kept a short while (not asked again)', async () => {
    const hole = await blackHole();
    try {
      const [host, port] = hole.server.split(':') as [string, string];
      const r = new Resolver({
        servers: [{ host, port: Number(port) }],
        timeoutMs: 50,
        cacheEntries: 100,
        maxInFlight: 10,
      });
      const a = await r.query('7.100.51.198.bl.test', 'A');
      assert.equal(a.ok, false);
      assert.match(a.ok ? '' : a.error, /no answer within 2 × 50 ms/);
      assert.equal(hole.queries(), 2);
      const again = await r.query('7.100.51.198.bl.test', 'A');
      assert.equal(again, a);
      assert.equal(hole.queries(), 2);
      assert.equal(r.stats.failed, 1);
    } finally {
      await hole.close();
    }
  });

  void test('questions share a socket per server, replaced by one on a new port every 500 questions', async () => {
    const ports = new Set<number>();
    const s = createSocket('udp4');
    s.on('message', (msg, from) => {
      ports.add(from.port);
      const q = packet.decode(msg);
      s.send(
        packet.encode({ type: 'response', id: q.id ?? 0, flags: 3, questions: q.questions, answers: [] }),
        from.port,
        from.address,
      );
    });
    await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', () => resolve()));
    try {
      const r = new Resolver({ servers: local(s.address().port), timeoutMs: 1000, cacheEntries: 10, maxInFlight: 50 });
      for (let i = 0; i < 1200; i += 50)
        await Promise.all(Array.from({ length: 50 }, (_, k) => r.query(`${i + k}.bl.test`, 'A')));
      assert.equal(r.stats.queries, 1200);
      assert.equal(ports.size, 3);
    } finally {
      s.close();
    }
  });

  void test('a reply with another id is not believed; the matching one is', async () => {
    // A server that first sends a forged listing (wrong id), then the true answer: the name does not exist.
    const s = createSocket('udp4');
    s.on('message', (msg, from) => {
      const q = packet.decode(msg);
      const reply = (id: number, answers: packet.Answer[], rcode: number): Buffer =>
        packet.encode({
          type: 'response',
          id,
          flags: packet.RECURSION_AVAILABLE | rcode,
          questions: q.questions,
          answers,
        });
      const name = q.questions?.[0]?.name ?? '';
      s.send(
        reply(((q.id ?? 0) + 1) % 65_536, [{ type: 'A', name, ttl: 60, data: '127.0.0.2' }], 0),
        from.port,
        from.address,
      );
      setTimeout(() => s.send(reply(q.id ?? 0, [], 3), from.port, from.address), 20);
    });
    await new Promise<void>((resolve) => s.bind(0, '127.0.0.1', () => resolve()));
    try {
      const r = new Resolver({ servers: local(s.address().port), timeoutMs: 1000, cacheEntries: 100, maxInFlight: 10 });
      const a = await r.query('7.100.51.198.bl.test', 'A');
      assert.equal(a.ok, true);
      assert.deepEqual(a.ok && a.records, []);
    } finally {
      s.close();
    }
  });
});
