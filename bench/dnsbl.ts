/*
 * bench/dnsbl — the DNSBL phase of `npm run bench` (phase `dnsbl`): the
 * closed-loop Postfix workload of phase 1 against mailwarden with no DNSBL,
 * and with one zone served by rbldnsd on loopback, its cache warm and cold,
 * in turns, in the same run. The zone lists 10.0.0.0/20, 1 in 256 of the
 * workload's clients: most clients are listed nowhere, and the workload
 * brings each one back every few seconds, which a listed client would soon
 * pay for under the default policy's listed-* rules (the refusals' own cost
 * is bench/attack.ts's).
 *
 * Warm: a daemon that has already looked up every client of the workload
 * (primed by running it through), so every event reads the cache; the daemon
 * without DNSBL is run as long first. Cold: a fresh daemon and no warm-up, so each session's first
 * request (its CONNECT) waits for rbldnsd and the rest read the cache, until
 * the workload comes round again (the lookups column says how far it got:
 * one per client first seen). rbldnsd answers in about 0.1 ms; a real
 * resolver asking the Internet takes milliseconds, and a closed loop's
 * throughput falls with it, while the wait stays within half the budget.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { call } from '../src/admin/client.js';
import { startRbldnsd, zoneHead, type Rbldnsd } from '../test/dns/rbldnsd.js';
import { closedLoop, describe, type LoadResult, type Target } from './policy-client.js';
import { freePort, spawnMailwarden, stopProc, waitForListen, type Proc } from './procs.js';
import type { RedisPhaseContext } from './redis.js';

export interface DnsblPhaseContext extends RedisPhaseContext {
  rounds: number;
}

interface DnsStatus {
  postfix: { budgetMisses: number; errors: number };
  dnsbl: { lookups: number; cached: number; late: number; failed: number; overflow: number; listed: number };
}

interface Run {
  label: string;
  round: number;
  r: LoadResult;
  lookups: number;
  late: number;
}

const ZONE = 'bench.test';

async function startDaemon(
  dir: string,
  config: string | undefined,
): Promise<{ proc: Proc; sock: string; target: Target }> {
  mkdirSync(dir, { recursive: true });
  const target: Target = { kind: 'tcp', host: '127.0.0.1', port: await freePort() };
  const env: NodeJS.ProcessEnv = {};
  if (config !== undefined) {
    writeFileSync(join(dir, 'mailwarden.yaml'), config);
    env.MAILWARDEN_CONFIG = join(dir, 'mailwarden.yaml');
  }
  const { proc, sock, log } = await spawnMailwarden(dir, { postfix: describe(target) }, env);
  await waitForListen(proc, 'mailwarden', log, [target, { kind: 'unix', path: sock }], 20_000);
  return { proc, sock, target };
}

/** Phase `dnsbl`: returns the report lines. */
export async function phaseDnsbl(ctx: DnsblPhaseContext): Promise<string[]> {
  const { fmt } = ctx;
  const dir = join(ctx.root, 'dnsbl');
  mkdirSync(dir, { recursive: true });
  let bl: Rbldnsd;
  try {
    bl = await startRbldnsd({ zone: `${zoneHead(2100, 3600)}:127.0.0.2:Listed\n10.0.0.0/20\n` }, [
      `${ZONE}:ip4set:zone`,
    ]);
  } catch (err) {
    ctx.warnings.push(`dnsbl phase skipped: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
    return ['8. DNSBL: skipped, rbldnsd did not start (see warnings)', ''];
  }
  const config = `dns:\n  servers: [${bl.server}]\ndnsbl:\n  zones: [{zone: ${ZONE}}]\n`;
  const runs: Run[] = [];
  let off: Awaited<ReturnType<typeof startDaemon>> | undefined;
  let warm: Awaited<ReturnType<typeof startDaemon>> | undefined;
  const status = (sock: string): Promise<DnsStatus> => call<DnsStatus>(sock, 'GET', '/v1/status');
  const measure = async (
    label: string,
    round: number,
    d: { sock: string; target: Target },
    warmupMs: number,
  ): Promise<void> => {
    ctx.progress(`DNSBL ${label}, round ${round}: ${warmupMs / 1000} s warm-up + ${ctx.durationMs / 1000} s measured`);
    const before = await status(d.sock);
    const r = await closedLoop(d.target, ctx.w, warmupMs, ctx.durationMs);
    const after = await status(d.sock);
    if (r.invalid > 0) ctx.failures.push(`${label}: ${r.invalid} invalid replies, e.g. ${r.invalidSample ?? ''}`);
    if (r.errors.length > 0)
      ctx.failures.push(`${label}: ${r.errors.length} connection error(s), e.g. ${r.errors[0] ?? ''}`);
    if (after.postfix.errors > before.postfix.errors) ctx.failures.push(`${label}: mailwarden reported errors`);
    if (after.postfix.budgetMisses > before.postfix.budgetMisses)
      ctx.warnings.push(`${label}: ${after.postfix.budgetMisses - before.postfix.budgetMisses} budget misses`);
    const dnsbl = after.dnsbl ?? { lookups: 0, late: 0 };
    runs.push({
      label,
      round,
      r,
      lookups: dnsbl.lookups - (before.dnsbl?.lookups ?? 0),
      late: dnsbl.late - (before.dnsbl?.late ?? 0),
    });
  };
  try {
    off = await startDaemon(join(dir, 'off'), undefined);
    warm = await startDaemon(join(dir, 'warm'), config);
    // Each load starts the workload from its beginning: the priming run must be long enough to reach its end.
    // The daemon without DNSBL runs as long, so that both start the rounds with the same counters.
    ctx.progress(`DNSBL: priming the warm daemon's cache with the workload's ${fmt(ctx.w.distinctIps)} clients`);
    let primeMs = 2000;
    for (;;) {
      await closedLoop(warm.target, ctx.w, 0, primeMs);
      await closedLoop(off.target, ctx.w, 0, primeMs);
      if ((await status(warm.sock)).dnsbl.lookups >= ctx.w.distinctIps || primeMs >= 32_000) break;
      primeMs *= 2;
    }
    for (let round = 1; round <= ctx.rounds; round++) {
      await measure('off', round, off, ctx.warmupMs);
      await measure('on, cache warm', round, warm, ctx.warmupMs);
      const cold = await startDaemon(join(dir, `cold-${round}`), config);
      try {
        await measure('on, cache cold', round, cold, 0);
      } finally {
        await stopProc(cold.proc);
      }
    }
  } finally {
    if (off) await stopProc(off.proc);
    if (warm) await stopProc(warm.proc);
    await bl.stop();
  }
  const ratios = (label: string): number[] =>
    runs
      .filter((x) => x.label === label)
      .map((x) => x.r.rps / (runs.find((o) => o.label === 'off' && o.round === x.round)?.r.rps ?? Infinity));
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const ratioText = (label: string): string => {
    const xs = ratios(label);
    return `${fmt(median(xs), 2)}${xs.length > 1 ? ` (rounds: ${xs.map((x) => fmt(x, 2)).join(', ')})` : ''}`;
  };
  return [
    `8. DNSBL: one zone on rbldnsd (loopback), listing 10.0.0.0/20 (1 in 256 clients); default policy (its listed-* rules apply)`,
    '   same workload, client and TCP loopback as in 1.; warm: every client already looked up; cold: a fresh daemon, no warm-up',
    '   mode              round     req/s   p50 ms   p99 ms   max ms  non-DUNNO  lookups  late',
    ...runs.map(
      (x) =>
        `   ${x.label.padEnd(16)} ${String(x.round).padStart(6)} ${fmt(x.r.rps).padStart(9)} ${fmt(x.r.p50Ms, 3).padStart(8)} ${fmt(x.r.p99Ms, 3).padStart(8)} ${fmt(x.r.maxMs, 2).padStart(8)} ${fmt(x.r.other).padStart(10)} ${fmt(x.lookups).padStart(8)} ${fmt(x.late).padStart(5)}`,
    ),
    `   ratio on/off req/s: cache warm ${ratioText('on, cache warm')}; cache cold ${ratioText('on, cache cold')}`,
    '   (lookups: clients looked up during the run, one per client first seen; late: requests decided without the',
    '   answer because it was not back within half of postfix.budget)',
    '',
  ];
}
