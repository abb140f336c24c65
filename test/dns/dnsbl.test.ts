/*
 * DNSBL-aware limits end to end in-process: a real DNSBL server (rbldnsd on
 * loopback), the real Postfix policy server on TCP, the real engine and
 * store. A listed client hits the stricter limit and the reply names the
 * zone and its answer code; an unlisted one does not; IPv6 clients are looked
 * up by nibbles; weights add up against the threshold and a rule may name
 * its zones; a refusal (127.255.255.x) lists no one; the lookup starts at the
 * client's first event and later stages read the cache; and a resolver that
 * never answers costs no Postfix answer its budget.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DnsService } from '../../src/dns/service.js';
import { explain } from '../../src/explain.js';
import { captureLogger, startHarness, type Harness } from '../helpers/harness.js';
import { connectRequest, PolicyClient, portOf, request } from '../helpers/postfix.js';
import { blackHole, startRbldnsd, zoneHead, type Rbldnsd } from './rbldnsd.js';

/** A harness whose Postfix server attaches DNSBL answers (the daemon's wiring, dns/service.ts). */
async function dnsblHarness(yaml: string): Promise<{ h: Harness; dns: DnsService; client: PolicyClient }> {
  // The server is made before the decider whose policy the lookups read: it finds the service here.
  const late: { dns?: DnsService } = {};
  const h = await startHarness({ yaml, postfix: { listing: (e) => late.dns?.dnsbl.attach(e) } });
  const dns = (late.dns = new DnsService(h.settings, {
    policy: () => h.decider.policy,
    alert: () => undefined,
    logger: captureLogger(h.logs),
    now: Date.now,
  }));
  const client = await PolicyClient.open({ port: portOf(h.bound[0] as string) });
  return { h, dns, client };
}

let n = 0;
/** A RCPT request from `ip`, each to a new recipient (an identical one would be a repeat). */
const rcpt = (ip: string): string => request({ client_address: ip, recipient: `user${n++}@mailprobe.test` });

async function rcpts(c: PolicyClient, ip: string, count: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < count; i++) out.push(await c.send(rcpt(ip)));
  return out;
}

void describe('DNSBL-aware limits against rbldnsd', () => {
  let bl: Rbldnsd;
  let t: Awaited<ReturnType<typeof dnsblHarness>>;
  before(async () => {
    bl = await startRbldnsd(
      {
        bl4: `${zoneHead(300, 60)}:127.0.0.4:Listed: see https://bl.test/$\n198.51.100.7\n198.51.100.11\n`,
        bl6: `${zoneHead(300, 60)}:127.0.0.3:IPv6 $ listed\n2001:db8:1:2\n`,
        pbl: `${zoneHead(300, 60)}:127.0.0.10:Dynamic range\n198.51.100.9\n`,
        refuse: `${zoneHead(300, 60)}:127.255.255.254:Query refused\n198.51.100.10\n`,
      },
      ['bl.test:ip4set:bl4', 'bl.test:ip6tset:bl6', 'pbl.test:ip4set:pbl', 'refuse.test:ip4set:refuse'],
    );
    t = await dnsblHarness(
      [
        // A long budget (a second of wait for DNS): these tests are about listings, and share a busy machine.
        'postfix: {budget: 2s}',
        'dns:',
        `  servers: [${bl.server}]`,
        '  timeout: 1s',
        'dnsbl:',
        '  zones:',
        '    - {zone: bl.test, weight: 2, codes: [127.0.0.2-127.0.0.9]}',
        '    - {zone: pbl.test, weight: 1, codes: [127.0.0.10-127.0.0.11]}',
        '    - {zone: refuse.test, weight: 5}',
        '  threshold: 2',
        'rules:',
        '  - name: listed-recipients-per-ip',
        '    limit: 3',
        '  - name: pbl-recipients',
        '    on: [recipient]',
        '    when: {listed: [pbl.test]}',
        '    key: ip',
        '    count: recipients',
        '    limit: 5',
        '    window: 1h',
      ].join('\n'),
    );
  });
  after(async () => {
    t?.client.close();
    t?.dns.stop();
    await t?.h.close();
    await bl?.stop();
  });

  void test('a listed client hits the stricter limit, and the reply names the zone and its code', async () => {
    const replies = await rcpts(t.client, '198.51.100.7', 4);
    assert.deepEqual(replies.slice(0, 3), ['action=DUNNO', 'action=DUNNO', 'action=DUNNO']);
    assert.equal(
      replies[3],
      'action=450 4.7.1 Too many recipients from 198.51.100.7 (limit 3 per 1h, rule listed-recipients-per-ip); try again later. Listed in bl.test (127.0.0.4)',
    );
    // explain shows it from the audit trail: the rule, the zone and the code.
    const e = await explain('198.51.100.7', t.h.decider.policy, t.h.store, t.h.clock.now);
    const row = e.audit.find((a) => a.rule === 'listed-recipients-per-ip');
    assert.match(row?.reason ?? '', /Listed in bl\.test \(127\.0\.0\.4\)$/);
    assert.equal(e.counters.find((c) => c.rule === 'listed-recipients-per-ip')?.count, 3);
  });

  void test('an unlisted client is held to the ordinary limits only', async () => {
    assert.deepEqual(await rcpts(t.client, '198.51.100.8', 6), Array<string>(6).fill('action=DUNNO'));
  });

  void test('an IPv6 client is looked up by nibbles and limited the same way', async () => {
    const replies = await rcpts(t.client, '2001:db8:1:2::7', 4);
    assert.deepEqual(replies.slice(0, 3), Array<string>(3).fill('action=DUNNO'));
    assert.match(
      replies[3] ?? '',
      /^action=450 4\.7\.1 .*rule listed-recipients-per-ip\); .*Listed in bl\.test \(127\.0\.0\.3\)$/,
    );
    assert.deepEqual(await rcpts(t.client, '2001:db8:1:3::7', 4), Array<string>(4).fill('action=DUNNO'));
  });

  void test('weights add up against the threshold; a rule may name its own zones', async () => {
    // pbl.test weighs 1, under the threshold of 2: not "listed", but pbl-recipients names the zone itself.
    const replies = await rcpts(t.client, '198.51.100.9', 6);
    assert.deepEqual(replies.slice(0, 5), Array<string>(5).fill('action=DUNNO'));
    assert.match(replies[5] ?? '', /rule pbl-recipients\); try again later\. Listed in pbl\.test \(127\.0\.0\.10\)$/);
  });

  void test('a zone that refuses the query (127.255.255.254) lists no one, and says so in the log', async () => {
    const refused = t.dns.dnsbl.stats.refused;
    assert.deepEqual(await rcpts(t.client, '198.51.100.10', 5), Array<string>(5).fill('action=DUNNO'));
    assert.equal(t.dns.dnsbl.stats.refused, refused + 1);
    assert.ok(
      t.h.logs.some((l) =>
        String(l.msg).startsWith('dnsbl: refuse.test refused our query: query refused (127.255.255.254'),
      ),
    );
  });

  void test('the lookup starts at the first event (CONNECT); the later stages read the cache', async () => {
    const { lookups, cached } = t.dns.dnsbl.stats;
    assert.equal(await t.client.send(connectRequest('198.51.100.11')), 'action=DUNNO');
    assert.deepEqual(await rcpts(t.client, '198.51.100.11', 3), Array<string>(3).fill('action=DUNNO'));
    assert.match(await t.client.send(rcpt('198.51.100.11')), /Listed in bl\.test \(127\.0\.0\.4\)$/);
    assert.equal(t.dns.dnsbl.stats.lookups, lookups + 1);
    assert.equal(t.dns.dnsbl.stats.cached, cached + 4);
    assert.equal(t.dns.dnsbl.stats.late, 0);
    const status = t.dns.status();
    assert.deepEqual(status.dnsbl.zones, ['bl.test', 'pbl.test', 'refuse.test']);
    assert.equal(status.dns.servers[0], bl.server);
  });
});

void describe('DNSBL: a resolver that never answers', () => {
  let hole: Awaited<ReturnType<typeof blackHole>>;
  let t: Awaited<ReturnType<typeof dnsblHarness>>;
  before(async () => {
    hole = await blackHole();
    // Each try waits 10 s: a Postfix answer that waited for DNS would take 20 s, past this suite's timeout.
    t = await dnsblHarness(
      [
        'dns:',
        `  servers: [${hole.server}]`,
        '  timeout: 10s',
        'dnsbl:',
        '  zones: [{zone: bl.test}]',
        'rules:',
        '  - name: listed-recipients-per-ip',
        '    limit: 1',
      ].join('\n'),
    );
  });
  after(async () => {
    t?.client.close();
    t?.dns.stop();
    await t?.h.close();
    await hole?.close();
  });

  void test(
    'every answer is DUNNO within its budget: decided without the listing, and counted',
    { timeout: 5000 },
    async () => {
      const replies = [await t.client.send(connectRequest('198.51.100.20'))];
      for (const ip of ['198.51.100.20', '198.51.100.21', '2001:db8:9::1'])
        replies.push(...(await rcpts(t.client, ip, 3)));
      assert.deepEqual(replies, Array<string>(10).fill('action=DUNNO'));
      assert.equal(t.h.server.stats.budgetMisses, 0);
      // Each event that waited was decided without the answer; the lookups themselves are still out.
      assert.equal(t.dns.dnsbl.stats.late, 10);
      assert.equal(t.dns.dnsbl.stats.lookups, 3);
      assert.equal(hole.queries(), 3);
    },
  );
});
