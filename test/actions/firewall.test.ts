/*
 * The firewall against a real kernel, in a network namespace made here
 * (test/helpers/netns.ts): a veth pair between the root namespace (the client)
 * and the namespace, where real TCP listeners on mail port numbers and the
 * real daemon (`mailwarden serve`, run with `ip netns exec`) live, so its nft
 * loads its table into the namespace's kernel, as it would on a mail server.
 * After `mailwarden bans add` the client's SYNs go unanswered (connect times
 * out), after `bans remove` it connects again; networks, a restart, and nft
 * failing then working are checked the same way. Needs root, ip and nft:
 * skipped without them on a dev machine, failed in CI.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Firewall, FIREWALL_DEFAULTS, type FirewallStatus } from '../../src/actions/firewall.js';
import { nftCommand } from '../../src/actions/firewall-nft.js';
import { call } from '../../src/admin/client.js';
import type { BanRecord } from '../../src/engine/types.js';
import { runCli, startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { captureLogger } from '../helpers/harness.js';
import {
  connects,
  createNetns,
  listenInside,
  netnsTestOptions,
  NFT,
  setElements,
  type Netns,
} from '../helpers/netns.js';

const SMTP = 25;
const SUBMISSION = 587;
/** Not in firewall.ports: a banned client still reaches it. */
const OTHER = 8025;
const TABLE = 'mwtest';

const options = netnsTestOptions();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, read: () => Promise<T>, ok: (v: T) => boolean, ms = 20_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await read();
    if (ok(v)) return v;
    if (Date.now() > until) throw new Error(`${what}: still ${JSON.stringify(v)} after ${ms / 1000} s`);
    await sleep(100);
  }
}

describe('firewall: the kernel takes what the Firewall writes', options, () => {
  let ns: Netns;
  before(() => {
    ns = createNetns('mw-fwk', { veth: false });
  });
  after(() => ns?.remove());

  test('addresses and networks, nested, lifted, replaced; an allowlisted network cut out', async () => {
    const now = Date.now();
    const ban = (subject: string, ms: number): BanRecord => ({
      subject,
      since: now,
      until: now + ms,
      rule: 'test',
      reason: 'test',
      offence: 1,
      actor: 'cli',
    });
    const fw = new Firewall(
      { ...FIREWALL_DEFAULTS, backend: 'nftables', table: 'mwunit' },
      [ban('2001:db8:1::/48', 60_000)],
      {
        logger: captureLogger([]),
        now: Date.now,
        allowed: () => ['2001:db8:1:5::/64'],
        nft: nftCommand([...ns.prefix, NFT]),
      },
    );
    const kernel = (set: string): string[] => setElements(ns, 'mwunit', set);
    try {
      await fw.settled();
      assert.equal(fw.status().state, 'ok', fw.status().lastError ?? '');
      assert.deepEqual(kernel('net_v6'), [
        '2001:db8:1:6::-2001:db8:1:ffff:ffff:ffff:ffff:ffff',
        '2001:db8:1::-2001:db8:1:4:ffff:ffff:ffff:ffff',
      ]);
      // An address, then its /24, then the /24 lifted: the address stays.
      fw.change({ kind: 'set', rec: ban('203.0.113.7', 7_200_000) });
      await fw.settled();
      fw.change({ kind: 'set', rec: ban('203.0.113.0/24', 3_600_000) });
      await fw.settled();
      assert.deepEqual([kernel('addr_v4'), kernel('net_v4')], [['203.0.113.7'], ['203.0.113.0/24']]);
      fw.change({ kind: 'delete', subject: '203.0.113.0/24' });
      await fw.settled();
      assert.deepEqual([kernel('addr_v4'), kernel('net_v4')], [['203.0.113.7'], []]);
      // A /25 inside a /24 banned for less: adjacent pieces; the /24 lifted leaves the /25.
      fw.change({ kind: 'set', rec: ban('198.51.100.0/25', 7_200_000) });
      fw.change({ kind: 'set', rec: ban('198.51.100.0/24', 3_600_000) });
      await fw.settled();
      assert.deepEqual(kernel('net_v4'), ['198.51.100.0/25', '198.51.100.128/25']);
      fw.change({ kind: 'delete', subject: '198.51.100.0/24' });
      await fw.settled();
      assert.deepEqual(kernel('net_v4'), ['198.51.100.0/25']);
      // Banned again for longer than the /25, the /24 replaces both pieces in one transaction.
      fw.change({ kind: 'set', rec: ban('198.51.100.0/24', 10_800_000) });
      await fw.settled();
      assert.deepEqual(kernel('net_v4'), ['198.51.100.0/24']);
      // Cluster mode's full copy: one whole load; a 3650d ban goes in (clamped to what every kernel takes).
      fw.change({ kind: 'replace', bans: [ban('192.0.2.128/25', 60_000), ban('198.18.0.9', 3650 * 86_400_000)] });
      await fw.settled();
      assert.equal(fw.status().errors, 0, fw.status().lastError ?? '');
      assert.deepEqual(
        [kernel('addr_v4'), kernel('net_v4'), kernel('net_v6')],
        [['198.18.0.9'], ['192.0.2.128/25'], []],
      );
    } finally {
      await fw.close();
    }
  });
});

describe('firewall: real connections to a daemon in a network namespace', options, () => {
  let ns: Netns;
  let listeners: ChildProcess | undefined;
  let daemon: DaemonProcess | undefined;
  let dir: string;
  let sock: string;
  let flag: string;
  let withFirewall: string;
  let without: string;
  const env = (config: string): Record<string, string> => ({ MAILWARDEN_CONFIG: config, MAILWARDEN_DATA: dir });
  const start = async (config: string): Promise<void> => {
    daemon = await startDaemonProcess(dir, env(config), undefined, ns.prefix);
  };
  const stop = async (): Promise<void> => {
    await daemon?.kill('SIGTERM');
    daemon = undefined;
  };
  const firewall = async (): Promise<FirewallStatus> =>
    (await call<{ firewall: FirewallStatus }>(sock, 'GET', '/v1/status')).firewall;
  /** The kernel holds every ban made (nothing left to run, the last run worked). */
  const applied = (): Promise<FirewallStatus> =>
    waitFor('the firewall to apply the bans', firewall, (f) => f.state === 'ok' && f.pending === 0);
  const banApi = (subject: string, duration = '1h'): Promise<BanRecord> =>
    call<BanRecord>(sock, 'POST', '/v1/bans', { subject, duration, reason: 'firewall test' });
  const unbanApi = (subject: string): Promise<unknown> =>
    call(sock, 'DELETE', `/v1/bans/${encodeURIComponent(subject)}`);

  before(async () => {
    ns = createNetns('mw-fw', { veth: true });
    listeners = await listenInside(ns, [SMTP, SUBMISSION, OTHER]);
    dir = mkdtempSync(join(tmpdir(), 'mw-firewall-'));
    sock = join(dir, 'admin.sock');
    flag = join(dir, 'nft-broken');
    // nft, except while the flag file exists: then it fails as a missing permission would.
    const wrapper = join(dir, 'nft');
    writeFileSync(
      wrapper,
      `#!/bin/sh\nif [ -e '${flag}' ]; then echo 'nft: Operation not permitted (test)' >&2; exit 1; fi\nexec ${NFT} "$@"\n`,
    );
    chmodSync(wrapper, 0o755);
    withFirewall = join(dir, 'firewall.yaml');
    writeFileSync(
      withFirewall,
      `firewall:\n  backend: nftables\n  table: ${TABLE}\n  ports: [${SMTP}, ${SUBMISSION}]\n  nft: ${wrapper}\n`,
    );
    without = join(dir, 'plain.yaml');
    writeFileSync(without, 'log:\n  level: info\n');
    await start(withFirewall);
    await applied();
  });

  after(async () => {
    await daemon?.kill('SIGKILL');
    listeners?.kill('SIGKILL');
    ns?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('unbanned, the client reaches every port over IPv4 and IPv6', async () => {
    assert.equal(await connects(ns.v4.inside, SMTP), true);
    assert.equal(await connects(ns.v6.inside, SUBMISSION), true);
  });

  test('bans add: its SYNs to the mail ports are dropped (other ports answer); bans remove: it connects again', async () => {
    const add = await runCli(
      ['bans', 'add', ns.v4.root, '--duration', '1h', '--reason', 'firewall test'],
      env(withFirewall),
    );
    assert.equal(add.code, 0, add.stderr);
    await applied();
    assert.deepEqual(setElements(ns, TABLE, 'addr_v4'), [ns.v4.root]);
    assert.equal(await connects(ns.v4.inside, SMTP), false, 'dropped on 25');
    assert.equal(await connects(ns.v4.inside, SUBMISSION), false, 'dropped on 587');
    assert.equal(await connects(ns.v4.inside, OTHER), true, 'a port not in firewall.ports answers');
    assert.equal(await connects(ns.v6.inside, SMTP), true, 'its IPv6 address is not banned');
    const rm = await runCli(['bans', 'remove', ns.v4.root], env(withFirewall));
    assert.equal(rm.code, 0, rm.stderr);
    await applied();
    assert.equal(await connects(ns.v4.inside, SMTP), true);
  });

  test("networks: an IPv4 /24 and an IPv6 /48, less the host's own address inside them", async () => {
    const v4 = ns.v4.root.split('.').slice(0, 3).join('.');
    const v6 = ns.v6.root.split('::')[0] as string;
    const v4net = `${v4}.0/24`;
    const v6net = `${v6}::/48`;
    await banApi(v4net);
    await banApi(v6net);
    await applied();
    // The namespace's own end (.2, ::2) is inside both: never dropped.
    assert.deepEqual(setElements(ns, TABLE, 'net_v4'), [`${v4}.0/31`, `${v4}.3-${v4}.255`]);
    assert.deepEqual(setElements(ns, TABLE, 'net_v6'), [`${v6}::/127`, `${v6}::3-${v6}:ffff:ffff:ffff:ffff:ffff`]);
    assert.equal(await connects(ns.v4.inside, SMTP), false);
    assert.equal(await connects(ns.v6.inside, SMTP), false);
    await unbanApi(v4net);
    await unbanApi(v6net);
    await applied();
    assert.equal(await connects(ns.v4.inside, SMTP), true);
    assert.equal(await connects(ns.v6.inside, SMTP), true);
  });

  test('an address, then its /24, then the /24 lifted: the address is still dropped', async () => {
    const v4net = `${ns.v4.root.split('.').slice(0, 3).join('.')}.0/24`;
    await banApi(ns.v4.root, '2h');
    await banApi(v4net, '1h');
    await applied();
    await unbanApi(v4net);
    await applied();
    assert.deepEqual(setElements(ns, TABLE, 'addr_v4'), [ns.v4.root]);
    assert.equal(await connects(ns.v4.inside, SMTP), false);
    await unbanApi(ns.v4.root);
    await applied();
    assert.equal(await connects(ns.v4.inside, SMTP), true);
  });

  test('a restart reconciles: a ban lifted and one made while the firewall was not running', async () => {
    await banApi(ns.v4.root);
    await applied();
    await stop();
    // The table outlives the daemon: what it held stays dropped.
    assert.equal(await connects(ns.v4.inside, SMTP), false);
    // Meanwhile a mailwarden without the firewall changes the bans; and a stray element appears.
    await start(without);
    await unbanApi(ns.v4.root);
    await banApi(ns.v6.root);
    await stop();
    ns.nft(['add', 'element', 'inet', TABLE, 'addr_v4', '{ 198.51.100.77 timeout 1h }']);
    await start(withFirewall);
    await applied();
    assert.deepEqual(setElements(ns, TABLE, 'addr_v4'), []);
    assert.deepEqual(setElements(ns, TABLE, 'addr_v6'), [ns.v6.root]);
    assert.equal(await connects(ns.v4.inside, SMTP), true);
    assert.equal(await connects(ns.v6.inside, SMTP), false);
    await unbanApi(ns.v6.root);
    await applied();
  });

  test('nft failing: degraded in status and metrics, decisions go on; a ban made meanwhile is applied once nft works', async () => {
    writeFileSync(flag, '');
    const reload = await runCli(['reload'], env(withFirewall));
    assert.equal(reload.code, 0, reload.stderr);
    const down = await waitFor('degraded', firewall, (f) => f.state === 'degraded');
    assert.match(down.lastError ?? '', /Operation not permitted \(test\)/);
    await banApi(ns.v4.root);
    // Refused inline (the store has it), not dropped (the kernel does not).
    const check = await call<{ bans: BanRecord[] }>(sock, 'GET', `/v1/bans/check/${ns.v4.root}`);
    assert.equal(check.bans.length, 1);
    assert.equal(await connects(ns.v4.inside, SMTP), true);
    const status = await runCli(['status'], env(withFirewall));
    assert.match(
      status.stdout,
      /DEGRADED:\n(?:.*\n)*\s+firewall: nft fails since \S+ \(.*Operation not permitted \(test\)\)/,
    );
    const metrics = await call<string>(sock, 'GET', '/metrics');
    assert.match(metrics, /^mailwarden_firewall_degraded 1$/m);
    assert.match(metrics, /^mailwarden_firewall_errors_total [1-9]\d*$/m);
    unlinkSync(flag);
    // The next retry (backoff 1 s, 2 s, 4 s, …) loads the whole table, with the ban made meanwhile.
    await waitFor('recovered', firewall, (f) => f.state === 'ok', 40_000);
    assert.deepEqual(setElements(ns, TABLE, 'addr_v4'), [ns.v4.root]);
    assert.equal(await connects(ns.v4.inside, SMTP), false);
    assert.match(await call<string>(sock, 'GET', '/metrics'), /^mailwarden_firewall_degraded 0$/m);
    await unbanApi(ns.v4.root);
    await applied();
    assert.equal(await connects(ns.v4.inside, SMTP), true);
  });

  test('firewall script prints what the daemon loads', async () => {
    // Not the client's address: the CLI runs in the root namespace, where that one is the host's own.
    const other = `${ns.v6.root.split('::')[0] as string}::99`;
    await banApi(other);
    const r = await runCli(['firewall', 'script'], env(withFirewall));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^add table inet ${TABLE}\\n`));
    assert.match(r.stdout, new RegExp(`\\t${other} timeout \\d+s\\n`));
    // nft itself accepts it (-c: checked, not applied).
    ns.nft(['-c', '-f', '-'], r.stdout);
    await unbanApi(other);
  });
});
