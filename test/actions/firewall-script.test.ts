/*
 * The firewall without a kernel: the address arithmetic (actions/firewall-ranges.ts),
 * the nft scripts (actions/firewall-nft.ts), and the Firewall's queue, batching,
 * failure and retry against a fake nft that records what it was given. What the
 * kernel does with these scripts is test/actions/firewall.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, mock, test } from 'node:test';
import {
  blockOf,
  coverage,
  regions,
  spanText,
  subtract,
  union,
  BanBlocks,
  type Span,
} from '../../src/actions/firewall-ranges.js';
import { changeScript, MAX_TIMEOUT_MS, tableScript, timeoutOf } from '../../src/actions/firewall-nft.js';
import { Firewall, FIREWALL_DEFAULTS, loadScript, type FirewallSettings } from '../../src/actions/firewall.js';
import { ConfigError } from '../../src/config/errors.js';
import { loadSettingsFromText } from '../../src/config/load.js';
import { parseSubject } from '../../src/engine/address.js';
import type { BanRecord } from '../../src/engine/types.js';
import { captureLogger } from '../helpers/harness.js';

const NOW = Date.parse('2026-11-27T12:00:00Z');
const HOUR = 3_600_000;

const block = (s: string) => blockOf(parseSubject(s) as NonNullable<ReturnType<typeof parseSubject>>);
const ban = (subject: string, ms = HOUR): BanRecord => ({
  subject,
  since: NOW,
  until: NOW + ms,
  rule: 'test',
  reason: 'test',
  offence: 1,
  actor: 'cli',
});
/** The pieces as `text@end-offset-in-hours`, for short assertions. */
const texts = (pieces: ReadonlyArray<Span & { end: number }>, v6 = false): string[] =>
  pieces.map((p) => `${spanText(p, v6)}@${(p.end - NOW) / HOUR}`);

describe('firewall config', () => {
  test('off by default; on with the defaults of the other keys', () => {
    assert.deepEqual(loadSettingsFromText('log:\n  level: info\n', 't.yaml').firewall, FIREWALL_DEFAULTS);
    const s = loadSettingsFromText('firewall:\n  backend: nftables\n  ports: all\n', 't.yaml');
    assert.deepEqual(s.firewall, { ...FIREWALL_DEFAULTS, backend: 'nftables', ports: 'all' });
  });

  test('what would reach an nft script is checked: the table name and the ports', () => {
    for (const [yaml, message] of [
      ['table: "mw; flush ruleset"', /firewall\.table: a table name is 1-32 characters/],
      ['ports: [25, 25]', /firewall\.ports: a port is listed twice/],
      ['ports: [0]', /firewall\.ports/],
      ['ports: []', /firewall\.ports/],
      ['backend: iptables', /firewall\.backend/],
    ] as const) {
      assert.throws(
        () => loadSettingsFromText(`firewall:\n  ${yaml}\n`, 't.yaml'),
        (err: unknown) => err instanceof ConfigError && message.test(err.message),
        yaml,
      );
    }
  });
});

describe('firewall ranges', () => {
  test('an address, a network and a range are written as nft reads them', () => {
    assert.equal(spanText(block('203.0.113.7'), false), '203.0.113.7');
    assert.equal(spanText(block('203.0.113.0/24'), false), '203.0.113.0/24');
    assert.equal(spanText(block('2001:db8:1::/48'), true), '2001:db8:1::/48');
    assert.equal(spanText(block('::/0'), true), '::/0');
    const b = block('203.0.113.0/24');
    assert.equal(spanText({ lo: b.lo, hi: b.lo + 6n }, false), '203.0.113.0-203.0.113.6');
    const v6 = block('2001:db8::/64');
    assert.equal(spanText({ lo: v6.lo + 8n, hi: v6.hi }, true), '2001:db8::8-2001:db8::ffff:ffff:ffff:ffff');
  });

  test('an address inside a ban that ends sooner keeps its own end; the network the rest', () => {
    const net = { ...block('203.0.113.0/24'), end: NOW + HOUR };
    const inner = { ...block('203.0.113.7'), end: NOW + 2 * HOUR };
    assert.deepEqual(texts(coverage([net, inner])), [
      '203.0.113.0-203.0.113.6@1',
      '203.0.113.7@2',
      '203.0.113.8-203.0.113.255@1',
    ]);
    // Ending sooner than the network, the address adds nothing: one element.
    assert.deepEqual(texts(coverage([{ ...net, end: NOW + 3 * HOUR }, inner])), ['203.0.113.0/24@3']);
  });

  test('allowlisted addresses are cut out of a banned network', () => {
    const pieces = coverage([{ ...block('198.51.100.0/24'), end: NOW + HOUR }]);
    const holes = union([block('198.51.100.128/25'), block('198.51.100.10'), block('198.51.100.200')]);
    assert.deepEqual(texts(subtract(pieces, holes)), ['198.51.100.0-198.51.100.9@1', '198.51.100.11-198.51.100.127@1']);
    assert.deepEqual(subtract(pieces, union([block('198.51.0.0/16')])), []);
  });

  test('nested and touching allowlist entries become one span', () => {
    const u = union([block('10.0.0.0/25'), block('10.0.0.128/25'), block('10.0.0.7'), block('10.0.2.0/24')]);
    assert.deepEqual(
      u.map((s) => spanText(s, false)),
      ['10.0.0.0/24', '10.0.2.0/24'],
    );
  });

  test('regions: one per top-level network, networks whose ban ended leave nothing', () => {
    const blocks = new BanBlocks();
    blocks.load([
      ban('10.0.0.0/16'),
      ban('10.0.5.0/24', 2 * HOUR),
      ban('10.1.0.0/24'),
      ban('10.2.0.0/24', -1),
      ban('10.0.0.9'),
    ]);
    const endOf = (s: string): number | undefined => {
      const u = blocks.until(s);
      return u !== undefined && u > NOW ? u : undefined;
    };
    const r = regions(blocks.networks(false), endOf, []);
    assert.deepEqual(
      r.map((x) => [x.top, texts(x.pieces)]),
      [
        ['10.0.0.0/16', ['10.0.0.0-10.0.4.255@1', '10.0.5.0/24@2', '10.0.6.0-10.0.255.255@1']],
        ['10.1.0.0/24', ['10.1.0.0/24@1']],
        ['10.2.0.0/24', []],
      ],
    );
    assert.equal(blocks.holder(block('10.0.5.0/24'))?.subject, '10.0.0.0/16');
    assert.equal(blocks.holder(block('10.0.0.0/16')), undefined);
    assert.deepEqual(
      blocks.inside(block('10.0.0.0/8'), false).map((b) => b.subject),
      ['10.0.0.0/16', '10.0.5.0/24', '10.1.0.0/24', '10.2.0.0/24'],
    );
    assert.deepEqual(
      [...blocks.addresses()].map((b) => b.subject),
      ['10.0.0.9'],
    );
    blocks.prune(NOW);
    assert.equal(blocks.networks(false).length, 3);
    assert.equal(blocks.until('10.2.0.0/24'), undefined);
  });

  test('a subject that is not canonical is refused', () => {
    const blocks = new BanBlocks();
    assert.equal(blocks.set(ban('10.0.0.1/24')), false);
    assert.equal(blocks.set(ban('not an address')), false);
    assert.deepEqual(blocks.load([ban('::ffff:10.0.0.1'), ban('10.0.0.2')]), ['::ffff:10.0.0.1']);
  });
});

describe('nft scripts', () => {
  const t = { table: 'mailwarden', ports: [25, 587] };

  test('a whole load replaces only its own table, in one transaction', () => {
    const s = tableScript(
      t,
      [
        { set: 'addr_v4', text: '203.0.113.7', end: NOW + HOUR },
        { set: 'net_v6', text: '2001:db8::/48', end: NOW + 1 },
      ],
      NOW,
    );
    assert.match(s, /^add table inet mailwarden\ndelete table inet mailwarden\ntable inet mailwarden \{/);
    const tables = [...s.matchAll(/\b(?:table|element) inet (\S+)/g)].map((m) => m[1]);
    assert.deepEqual([...new Set(tables)], ['mailwarden']);
    assert.match(
      s,
      /set addr_v4 \{\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t\telements = \{\n\t\t\t203\.0\.113\.7 timeout 3600s\n/,
    );
    assert.match(s, /set net_v6 \{\n\t\ttype ipv6_addr\n\t\tflags interval, timeout\n/);
    // Rounded up to whole seconds: 1 ms left is 1 s.
    assert.match(s, /2001:db8::\/48 timeout 1s/);
    for (const [set, ip] of [
      ['addr_v4', 'ip'],
      ['net_v4', 'ip'],
      ['addr_v6', 'ip6'],
      ['net_v6', 'ip6'],
    ])
      assert.ok(s.includes(`\t\ttcp dport { 25, 587 } ct state new ${ip} saddr @${set} counter drop\n`), set);
  });

  test('whole-address mode drops every port; a renamed table goes in the same transaction', () => {
    const s = tableScript({ table: 'mw2', ports: 'all' }, [], NOW, 'mailwarden');
    assert.match(s, /\t\tct state new ip saddr @addr_v4 counter drop/);
    assert.doesNotMatch(s, /dport/);
    assert.match(s, /add table inet mailwarden\ndelete table inet mailwarden\n/);
    assert.doesNotMatch(s, /elements/);
  });

  test('timeouts: the remaining time, clamped to what every kernel takes; none once over', () => {
    assert.equal(timeoutOf(NOW + 90_500, NOW), 'timeout 91s');
    assert.equal(timeoutOf(NOW + 3650 * 86_400_000, NOW), `timeout ${MAX_TIMEOUT_MS / 1000}s`);
    assert.equal(timeoutOf(NOW, NOW), undefined);
  });

  test('a change removes, then adds (a network replaced by pieces overlapping it)', () => {
    const s = changeScript(
      'mailwarden',
      [
        { set: 'net_v4', text: '203.0.113.0/24' },
        { set: 'addr_v6', text: 'fd00::7' },
      ],
      [{ set: 'net_v4', text: '203.0.113.0/25', end: NOW + HOUR }],
      NOW,
    );
    const lines = s.replace(/\n\t+/g, ' ').trim().split('\n');
    assert.deepEqual(lines, [
      'delete element inet mailwarden net_v4 { 203.0.113.0/24 }',
      'delete element inet mailwarden addr_v6 { fd00::7 }',
      'add element inet mailwarden net_v4 { 203.0.113.0/25 timeout 3600s }',
    ]);
    assert.equal(changeScript('mailwarden', [], [{ set: 'addr_v4', text: '10.0.0.1', end: NOW }], NOW), '');
  });

  test('loadScript leaves out loopback and allowlisted sources', async () => {
    const s = await loadScript(
      t,
      [ban('127.0.0.1'), ban('::1'), ban('198.18.1.0/24'), ban('198.51.100.1')],
      ['198.18.1.0/25'],
      NOW,
    );
    assert.match(s, /198\.18\.1\.128\/25 timeout 3600s/);
    assert.match(s, /198\.51\.100\.1 timeout 3600s/);
    assert.doesNotMatch(s, /127\.0\.0\.1|::1 /);
  });
});

/** A fake nft: records each run; fails while `failing` says so. */
function fakeNft() {
  const runs: Array<{ args: readonly string[]; input: string }> = [];
  const fake = {
    runs,
    failing: undefined as ((args: readonly string[], input: string) => boolean) | undefined,
    nft: async (args: readonly string[], input?: string): Promise<void> => {
      await new Promise((r) => setImmediate(r));
      runs.push({ args, input: input ?? '' });
      if (fake.failing?.(args, input ?? '')) throw new Error('nft: Operation not permitted');
    },
    /** The element lines of the runs since `from`, without timeouts' numbers. */
    lines(from = 0): string[] {
      return runs
        .slice(from)
        .flatMap((r) => r.input.replace(/\n\t+/g, ' ').split('\n'))
        .filter((l) => l.includes('element'));
    },
  };
  return fake;
}

function firewall(bans: BanRecord[], opts: { allowed?: string[]; settings?: Partial<FirewallSettings> } = {}) {
  const fake = fakeNft();
  const logs: Array<Record<string, unknown>> = [];
  const clock = { now: NOW };
  const settings = { ...FIREWALL_DEFAULTS, backend: 'nftables' as const, ...opts.settings };
  const fw = new Firewall(settings, bans, {
    logger: captureLogger(logs),
    now: () => clock.now,
    allowed: () => opts.allowed ?? [],
    nft: fake.nft,
    retryMs: [10, 40],
  });
  return { fw, fake, logs, clock };
}

describe('Firewall (fake nft)', () => {
  test('starts with one whole load of the bans in force', async () => {
    const { fw, fake } = firewall([ban('203.0.113.7'), ban('2001:db8:1::/48'), ban('192.0.2.1', -1)]);
    await fw.settled();
    assert.equal(fake.runs.length, 1);
    assert.deepEqual(fake.runs[0]?.args, ['-f', '-']);
    assert.match(fake.runs[0]?.input ?? '', /203\.0\.113\.7 timeout 3600s/);
    assert.match(fake.runs[0]?.input ?? '', /2001:db8:1::\/48 timeout 3600s/);
    assert.doesNotMatch(fake.runs[0]?.input ?? '', /192\.0\.2\.1/);
    assert.deepEqual(
      { state: fw.status().state, elements: fw.status().elements, errors: fw.status().errors },
      { state: 'ok', elements: 2, errors: 0 },
    );
    await fw.close();
  });

  test('a whole load lets decisions in; the bans changed meanwhile go in the next run', async () => {
    const many = Array.from({ length: 6000 }, (_, i) => ban(`10.1.${i >> 8}.${i & 255}`));
    const { fw, fake } = firewall(many);
    // The load started (its timer fired first) and waits between two slices of addresses.
    await new Promise((r) => setTimeout(r, 1));
    assert.equal(fake.runs.length, 0);
    fw.change({ kind: 'delete', subject: '10.1.0.0' });
    fw.change({ kind: 'set', rec: ban('198.51.100.1') });
    fw.change({ kind: 'set', rec: ban('198.51.100.0/24') });
    await fw.settled();
    assert.equal(fake.runs.length, 2);
    assert.match(fake.runs[0]?.input ?? '', /\t10\.1\.0\.0 timeout/);
    assert.deepEqual(
      fake.lines(1).filter((l) => !l.includes('198.51.100.1 ')),
      [
        'delete element inet mailwarden addr_v4 { 10.1.0.0 }',
        'add element inet mailwarden net_v4 { 198.51.100.0/24 timeout 3600s }',
      ],
    );
    // Banned after the load passed its place or before: in the kernel once, by the load or the next run.
    const sent = fake.runs.map((r) => r.input).join('\n');
    assert.equal(sent.match(/198\.51\.100\.1 timeout/g)?.length, 1);
    assert.equal(fw.status().elements, 6001);
    await fw.close();
  });

  test('a storm of 100 bans is one nft run', async () => {
    const { fw, fake } = firewall([]);
    await fw.settled();
    for (let i = 0; i < 100; i++) fw.change({ kind: 'set', rec: ban(`198.51.100.${i}`) });
    await fw.settled();
    assert.equal(fake.runs.length, 2);
    assert.equal((fake.runs[1]?.input.match(/timeout 3600s/g) ?? []).length, 100);
    assert.equal(fw.status().elements, 100);
    await fw.close();
  });

  test('an address, then its /24, then the /24 lifted: the address is still dropped', async () => {
    const { fw, fake } = firewall([]);
    await fw.settled();
    fw.change({ kind: 'set', rec: ban('203.0.113.7', 2 * HOUR) });
    fw.change({ kind: 'set', rec: ban('203.0.113.0/24') });
    await fw.settled();
    assert.deepEqual(fake.lines(1), [
      'add element inet mailwarden addr_v4 { 203.0.113.7 timeout 7200s }',
      'add element inet mailwarden net_v4 { 203.0.113.0/24 timeout 3600s }',
    ]);
    fw.change({ kind: 'delete', subject: '203.0.113.0/24' });
    await fw.settled();
    assert.deepEqual(fake.lines(2), ['delete element inet mailwarden net_v4 { 203.0.113.0/24 }']);
    assert.equal(fw.status().elements, 1);
    await fw.close();
  });

  test('a network inside a network: each keeps its own end, as disjoint pieces', async () => {
    const { fw, fake } = firewall([ban('2001:db8:1:2::/64', 2 * HOUR)]);
    await fw.settled();
    fw.change({ kind: 'set', rec: ban('2001:db8:1::/48') });
    await fw.settled();
    assert.deepEqual(fake.lines(1), [
      'add element inet mailwarden net_v6 { 2001:db8:1::/63 timeout 3600s, 2001:db8:1:3::-2001:db8:1:ffff:ffff:ffff:ffff:ffff timeout 3600s }',
    ]);
    // Banned for longer than the /64, the /48 takes its place; lifted, it gives it back.
    fw.change({ kind: 'set', rec: ban('2001:db8:1::/48', 3 * HOUR) });
    await fw.settled();
    assert.deepEqual(fake.lines(2), [
      'delete element inet mailwarden net_v6 { 2001:db8:1::/63, 2001:db8:1:2::/64, 2001:db8:1:3::-2001:db8:1:ffff:ffff:ffff:ffff:ffff }',
      'add element inet mailwarden net_v6 { 2001:db8:1::/48 timeout 10800s }',
    ]);
    fw.change({ kind: 'delete', subject: '2001:db8:1::/48' });
    await fw.settled();
    assert.deepEqual(fake.lines(3), [
      'delete element inet mailwarden net_v6 { 2001:db8:1::/48 }',
      'add element inet mailwarden net_v6 { 2001:db8:1:2::/64 timeout 7200s }',
    ]);
    await fw.close();
  });

  test('an element the kernel may have let run out is never deleted (that would fail the run)', async () => {
    const { fw, fake, clock } = firewall([ban('203.0.113.7'), ban('203.0.113.8')]);
    await fw.settled();
    // Ran out a minute ago: surely gone from the kernel, so banned again it is only added.
    clock.now = NOW + HOUR + 60_000;
    fw.change({ kind: 'set', rec: { ...ban('203.0.113.7'), until: clock.now + HOUR } });
    await fw.settled();
    assert.deepEqual(fake.lines(1), ['add element inet mailwarden addr_v4 { 203.0.113.7 timeout 3600s }']);
    // Ran out 2.9 s ago: perhaps still there for a moment. The change waits until it surely is not.
    clock.now = NOW + HOUR + 2900;
    fw.change({ kind: 'set', rec: { ...ban('203.0.113.8'), until: clock.now + HOUR } });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(fake.runs.length, 2, 'held');
    assert.equal(fw.status().pending, 1);
    clock.now += 200;
    await fw.settled();
    assert.deepEqual(fake.lines(2), ['add element inet mailwarden addr_v4 { 203.0.113.8 timeout 3600s }']);
    await fw.close();
  });

  test('allowlisted, loopback and badly written subjects never reach nft; an allowlist change reloads', async () => {
    const allowed = ['198.18.0.10'];
    const { fw, fake, logs } = firewall([], { allowed });
    await fw.settled();
    fw.change({ kind: 'set', rec: ban('198.18.0.10') });
    fw.change({ kind: 'set', rec: ban('127.0.0.2') });
    fw.change({ kind: 'set', rec: ban('198.18.0.1; flush ruleset') });
    await fw.settled();
    assert.equal(fake.runs.length, 1, 'nothing to change');
    assert.ok(logs.some((l) => l.subject === '198.18.0.1; flush ruleset'));
    fw.change({ kind: 'set', rec: ban('198.18.0.0/24') });
    await fw.settled();
    assert.match(
      fake.lines(1)[0] ?? '',
      /\{ 198\.18\.0\.0-198\.18\.0\.9 timeout 3600s, 198\.18\.0\.11-198\.18\.0\.255 timeout 3600s \}/,
    );
    allowed.length = 0;
    fw.allowChanged();
    await fw.settled();
    assert.match(fake.runs[2]?.input ?? '', /^add table inet mailwarden\ndelete table/);
    assert.match(fake.runs[2]?.input ?? '', /198\.18\.0\.0\/24 timeout 3600s/);
    await fw.close();
  });

  test('nft failing: degraded, retried with backoff, and a ban made meanwhile is loaded once it works', async () => {
    const { fw, fake, logs } = firewall([ban('203.0.113.7')]);
    fake.failing = () => true;
    await fw.settled();
    assert.equal(fw.status().state, 'degraded');
    assert.equal(fw.status().lastError, 'nft: Operation not permitted');
    fw.change({ kind: 'set', rec: ban('198.51.100.9') });
    await new Promise((r) => setTimeout(r, 80));
    const failed = fw.status().errors;
    assert.ok(failed >= 3, `retried: ${failed} failures`);
    assert.equal(fake.runs.length, failed, 'one run per retry, none per ban');
    fake.failing = undefined;
    await new Promise((r) => setTimeout(r, 60));
    await fw.settled();
    const st = fw.status();
    assert.equal(st.state, 'ok');
    assert.equal(st.elements, 2);
    assert.match(fake.runs.at(-1)?.input ?? '', /198\.51\.100\.9 timeout 3600s/);
    assert.ok(logs.some((l) => l.msg === 'firewall recovered: the kernel drops the banned sources again'));
    assert.ok(logs.some((l) => typeof l.msg === 'string' && l.msg.startsWith('firewall degraded')));
    await fw.close();
  });

  test('a change nft refuses becomes a whole load', async () => {
    const { fw, fake } = firewall([]);
    await fw.settled();
    fake.failing = (_args, input) => input.startsWith('add element');
    fw.change({ kind: 'set', rec: ban('203.0.113.7') });
    await fw.settled();
    assert.equal(fake.runs.length, 3);
    assert.match(fake.runs[2]?.input ?? '', /^add table inet mailwarden\n/);
    assert.deepEqual(
      { state: fw.status().state, elements: fw.status().elements, errors: fw.status().errors },
      {
        state: 'ok',
        elements: 1,
        errors: 1,
      },
    );
    await fw.close();
  });

  test('a table that vanished (nft flush ruleset) is noticed by the minute check and loaded again', async () => {
    mock.timers.enable({ apis: ['setInterval'] });
    try {
      const { fw, fake } = firewall([ban('203.0.113.7')]);
      await fw.settled();
      mock.timers.tick(60_000);
      await fw.settled();
      assert.deepEqual(fake.runs[1]?.args, ['list', 'chain', 'inet', 'mailwarden', 'input']);
      assert.equal(fake.runs.length, 2, 'there: nothing to do');
      fake.failing = (args) => args[0] === 'list';
      mock.timers.tick(60_000);
      await fw.settled();
      assert.equal(fake.runs.length, 4);
      assert.match(fake.runs[3]?.input ?? '', /^add table inet mailwarden\n(?:.*\n)*\t\t\t203\.0\.113\.7 timeout/);
      await fw.close();
    } finally {
      mock.timers.reset();
    }
  });

  test('cluster mode: a replaced mirror is one whole load', async () => {
    const { fw, fake } = firewall([ban('203.0.113.7')]);
    await fw.settled();
    fw.change({ kind: 'replace', bans: [ban('198.51.100.1'), ban('198.51.100.2')] });
    await fw.settled();
    assert.equal(fake.runs.length, 2);
    assert.match(fake.runs[1]?.input ?? '', /198\.51\.100\.1 timeout/);
    assert.doesNotMatch(fake.runs[1]?.input ?? '', /203\.0\.113\.7/);
    await fw.close();
  });

  test('reload: a renamed table replaces the old one; turned off, the table is removed', async () => {
    const { fw, fake } = firewall([ban('203.0.113.7')]);
    await fw.settled();
    fw.reload({ ...FIREWALL_DEFAULTS, backend: 'nftables', table: 'mw2', ports: 'all' });
    await fw.settled();
    assert.match(
      fake.runs[1]?.input ?? '',
      /^add table inet mw2\ndelete table inet mw2\nadd table inet mailwarden\ndelete table inet mailwarden\ntable inet mw2 \{/,
    );
    fw.reload({ ...FIREWALL_DEFAULTS, table: 'mw2' });
    await fw.settled();
    assert.equal(fake.runs[2]?.input, 'add table inet mw2\ndelete table inet mw2\n');
    assert.equal(fw.status().state, 'off');
    fw.change({ kind: 'set', rec: ban('198.51.100.1') });
    await fw.settled();
    assert.equal(fake.runs.length, 3, 'off: nft is not run');
    await fw.close();
  });
});
