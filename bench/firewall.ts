/*
 * bench/firewall — phase `firewall` of `npm run bench`: the kernel firewall
 * (src/actions/firewall.ts) with a real nft, in a scratch network namespace
 * made here (test/helpers/netns.ts, without any interface: no packet is sent).
 *
 *   1. A whole load of 100,000 bans (95,000 IPv4 addresses, 5,000 IPv6 /64s;
 *      MAILWARDEN_BENCH_FIREWALL_BANS): from the Firewall's constructor to the
 *      kernel holding them (pieces computed, script written, nft run), against
 *      the floor: `nft -f` of a hand-written script of the same elements.
 *   2. A change with those 100,000 loaded: batches of 1 and of 100 new bans,
 *      from `change()` to the kernel holding them (the 20 ms batching window
 *      included) and the nft run alone, against fail2ban's nftables action:
 *      one `nft add element` process per ban.
 *
 * Turns as in run.ts (A B A B A B), medians reported. Needs root, ip and nft:
 * without them the phase is reported as skipped.
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { pino } from 'pino';
import { BATCH_MS, Firewall, FIREWALL_DEFAULTS } from '../src/actions/firewall.js';
import { nftCommand, removeScript, setFor, type NftCommand } from '../src/actions/firewall-nft.js';
import type { BanRecord } from '../src/engine/types.js';
import { createNetns, netnsMissing, NFT } from '../test/helpers/netns.js';
import { ipv4 } from './requests.js';

export interface FirewallPhaseContext {
  warnings: string[];
  progress: (msg: string) => void;
  fmt: (n: number, d?: number) => string;
}

const BANS = Number(process.env.MAILWARDEN_BENCH_FIREWALL_BANS ?? 100_000);
const ROUNDS = Math.max(1, Number(process.env.MAILWARDEN_BENCH_ROUNDS ?? 3));
const SINGLE_CHANGES = 20;
const BATCHES = 5;
const BATCH = 100;
const HOUR = 3_600_000;
const FLOOR = 'mwfloor';

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

function bansOf(n: number, now: number): BanRecord[] {
  const v6 = Math.floor(n / 20);
  return Array.from({ length: n }, (_, i) => ({
    subject: i < n - v6 ? ipv4(i) : `2001:db8:${(i >>> 16).toString(16)}:${(i & 0xffff).toString(16)}::/64`,
    since: now,
    // Ends spread over a day, as real bans' are.
    until: now + HOUR + ((i * 7919) % 86_400) * 1000,
    rule: 'bench',
    reason: 'bench',
    offence: 1,
    actor: 'bench',
  }));
}

/**
 * The same elements in the same kinds of sets (the IPv4 addresses in a hash set, the IPv6
 * networks in an interval set), written the plainest way nft takes them: nft's own cost.
 */
function handWritten(table: string, bans: readonly BanRecord[], now: number): string {
  const line = (b: BanRecord): string => `${b.subject} timeout ${Math.ceil((b.until - now) / 1000)}s`;
  const v4 = bans.filter((b) => !b.subject.includes(':')).map(line);
  const v6 = bans.filter((b) => b.subject.includes(':')).map(line);
  return (
    `${removeScript(table)}table inet ${table} {\n` +
    `set a { type ipv4_addr; flags timeout; elements = { ${v4.join(', ')} } }\n` +
    `set b { type ipv6_addr; flags interval, timeout; elements = { ${v6.join(', ')} } }\n}\n`
  );
}

/** nft, timing each run that changes the table (not the periodic check that the table is there). */
function timed(nft: NftCommand, runs: number[]): NftCommand {
  return async (args, input) => {
    const t = performance.now();
    await nft(args, input);
    if (input !== undefined) runs.push(performance.now() - t);
  };
}

export async function phaseFirewall(ctx: FirewallPhaseContext): Promise<string[]> {
  const missing = netnsMissing();
  if (missing) {
    ctx.warnings.push(`firewall phase skipped: ${missing}`);
    return [];
  }
  const { fmt, progress } = ctx;
  const ns = createNetns('mw-bench', { veth: false });
  try {
    const nft = nftCommand([...ns.prefix, NFT]);
    const settings = { ...FIREWALL_DEFAULTS, backend: 'nftables' as const, table: 'mwbench' };
    const logger = pino({ level: 'silent' });
    const loads: number[] = [];
    /** The longest the event loop (the daemon's decisions) waited during each load. */
    const stalls: number[] = [];
    const floors: number[] = [];
    let elements = 0;
    let fw: Firewall | undefined;
    const runs: number[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      progress(`firewall: whole load of ${fmt(BANS)} bans, round ${round}`);
      const now = Date.now();
      const bans = bansOf(BANS, now);
      const floorScript = handWritten(FLOOR, bans, now);
      let t = performance.now();
      await nft(['-f', '-'], floorScript);
      floors.push(performance.now() - t);
      await fw?.close();
      t = performance.now();
      const delay = monitorEventLoopDelay({ resolution: 1 });
      fw = new Firewall(settings, bans, { logger, now: Date.now, allowed: () => [], nft: timed(nft, runs) });
      // From here: the constructor reads the ban list, as the daemon does before it listens.
      delay.enable();
      await fw.settled();
      loads.push(performance.now() - t);
      delay.disable();
      stalls.push(delay.max / 1e6);
      const st = fw.status();
      if (st.state !== 'ok') throw new Error(`firewall load failed: ${st.lastError ?? st.state}`);
      elements = st.elements;
    }
    // nft reads every interval set of the namespace before any change: the floor's must not be there.
    await nft(['-f', '-'], removeScript(FLOOR));
    const live = fw as Firewall;

    let next = BANS;
    const newBan = (): BanRecord => {
      const now = Date.now();
      // 172.16/12: apart from the loaded bans (10/8), so each is one element more.
      const i = next++;
      return {
        subject: `172.${16 + ((i >>> 16) & 15)}.${(i >>> 8) & 255}.${i & 255}`,
        since: now,
        until: now + HOUR,
        rule: 'bench',
        reason: 'bench',
        offence: 1,
        actor: 'bench',
      };
    };
    const batch = async (size: number): Promise<{ ms: number; nftMs: number }> => {
      runs.length = 0;
      const t = performance.now();
      for (let i = 0; i < size; i++) live.change({ kind: 'set', rec: newBan() });
      await live.settled();
      if (runs.length !== 1) throw new Error(`a batch of ${size} took ${runs.length} nft runs`);
      return { ms: performance.now() - t, nftMs: runs[0] as number };
    };
    /** fail2ban's nftables action: `nft add element` once per ban. */
    const perBan = async (size: number): Promise<number> => {
      const t = performance.now();
      for (let i = 0; i < size; i++)
        await nft([
          'add',
          'element',
          'inet',
          settings.table,
          setFor(false, false),
          `{ ${newBan().subject} timeout 3600s }`,
        ]);
      return performance.now() - t;
    };
    progress(`firewall: changes with ${fmt(BANS)} bans loaded`);
    const one = { mw: [] as number[], nft: [] as number[], base: [] as number[] };
    const hundred = { mw: [] as number[], nft: [] as number[], base: [] as number[] };
    for (let i = 0; i < SINGLE_CHANGES; i++) {
      const r = await batch(1);
      one.mw.push(r.ms);
      one.nft.push(r.nftMs);
      one.base.push(await perBan(1));
    }
    for (let i = 0; i < BATCHES; i++) {
      const r = await batch(BATCH);
      hundred.mw.push(r.ms);
      hundred.nft.push(r.nftMs);
      hundred.base.push(await perBan(BATCH));
    }
    await live.close();

    const load = median(loads);
    const floor = median(floors);
    const row = (label: string, s: { mw: number[]; nft: number[]; base: number[] }, n: number): string =>
      `   batch of ${label}: ${fmt(median(s.mw), 1)} ms (nft run ${fmt(median(s.nft), 1)} ms; ${fmt(median(s.mw) / n, 2)} ms per ban);` +
      ` one nft add element per ban: ${fmt(median(s.base), 1)} ms (${fmt(median(s.base) / n, 2)} ms per ban);` +
      ` ratio mailwarden/per-ban ${fmt(median(s.mw) / median(s.base), 2)}`;
    return [
      `6. Kernel firewall (nftables, in a scratch network namespace; ${ROUNDS} rounds in turns, medians)`,
      `   whole load of ${fmt(BANS)} bans (${fmt(elements)} elements): ${fmt(load / 1000, 2)} s` +
        ` (rounds ${loads.map((x) => fmt(x / 1000, 2)).join(', ')});` +
        ` the same elements by a hand-written nft -f: ${fmt(floor / 1000, 2)} s; ratio mailwarden/hand-written ${fmt(load / floor, 2)}`,
      `   longest wait of the event loop (decisions) during a load: ${fmt(median(stalls), 0)} ms (the ban list is read before, as the daemon does before it listens)`,
      row('1', one, 1),
      row(String(BATCH), hundred, BATCH),
      `   (a batch is timed from change() to the kernel holding it, the ${BATCH_MS} ms batching window included;`,
      `   every nft here runs through ip netns exec, mailwarden's and the baselines' alike)`,
      '',
    ];
  } finally {
    ns.remove();
  }
}
