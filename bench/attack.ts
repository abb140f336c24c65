/*
 * bench/attack — the attack phase of `npm run bench` (phase `attack`): what
 * answering a source that is being refused costs, against the normal
 * workload, on one daemon (default policy, embedded store), in the same run.
 *
 *   (a) banned clients: the Postfix workload of phase 1 from other addresses,
 *       every one of them banned before the run (three /14 network bans cover
 *       three quarters of them, an address ban each the rest);
 *   (b) a guessing flood on the Dovecot endpoint: a botnet trying passwords
 *       on a few hundred accounts, half the logins from a pool of 2,000
 *       addresses (banned by the rules within a few guesses each), half from
 *       addresses seen once (refused by the account rules, not banned); the
 *       client answers each refusal as Dovecot does (a report with
 *       `policy_reject`);
 *   (c) authenticated senders over their limits: the phase-1 workload with
 *       every session authenticated as one of 100 accounts that send far more
 *       than their limits (the default policy suspends their sending within
 *       the first seconds: then their MAIL, RCPT and END-OF-MESSAGE requests
 *       are refused, their CONNECTs are not).
 *
 * Each is compared with its normal workload measured on the same daemon just
 * before it, in turns (normal, attack, normal, attack …): Postfix (a) and (c)
 * with phase 1's workload, Dovecot (b) with phase 4's logins (allow, allow,
 * report; one in ten fails), per request. Reported per round: requests/s, p99,
 * and the daemon's CPU per answered request (read from /proc: robust where
 * wall-clock rates drift); the ratio is the median round's.
 */
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { call } from '../src/admin/client.js';
import { buildLogins, openHttp, policyRequest, type HttpConn } from './dovecot.js';
import { closedLoop, describe, type LoadResult, type Target } from './policy-client.js';
import { cpuSeconds, freePort, profileArgs, spawnMailwarden, stopProc, waitForListen, type Proc } from './procs.js';
import { buildWorkload, loadTemplates, type Workload } from './requests.js';

export interface AttackPhaseContext {
  root: string;
  w: Workload;
  warmupMs: number;
  durationMs: number;
  rounds: number;
  connections: number;
  failures: string[];
  warnings: string[];
  progress: (msg: string) => void;
  fmt: (n: number, d?: number) => string;
}

/** What the issue asks of each attack, as a share of the normal workload's requests/s. */
const TARGETS = { banned: 0.8, flood: 0.7, senders: 0.8 } as const;
const P99_TARGET = 1.5;
const DOVECOT_PATH = '/dovecot/policy';

interface Sample {
  rps: number;
  p99: number;
  /** The daemon's CPU per answered request, in µs. */
  cpuUs: number;
  /** Answers that refused (Postfix: not DUNNO; Dovecot: status < 0), share of all. */
  refused: number;
}

/**
 * A copy of a workload whose requests differ only by bytes of equal length (offsets stay valid): other
 * client addresses, other accounts. Fresh Buffers, since closedLoop patches client ports in place.
 */
export function rewrite(w: Workload, edits: Array<[string, string]>): Workload {
  return {
    ...w,
    perConn: w.perConn.map((c) => ({
      ...c,
      reqs: c.reqs.map((b) => {
        let text = b.toString('latin1');
        for (const [from, to] of edits) text = text.split(from).join(to);
        return Buffer.from(text, 'latin1');
      }),
    })),
  };
}

function postfixSample(r: LoadResult, cpuS: number): Sample {
  const replies = r.dunno + r.other;
  return {
    rps: r.rps,
    p99: r.p99Ms,
    cpuUs: r.replies > 0 ? (cpuS * 1e6) / r.replies : 0,
    refused: replies > 0 ? r.other / replies : 0,
  };
}

// ---- Dovecot: a keep-alive HTTP client that answers a refusal as Dovecot does ----

const post = (command: string, body: object): Buffer => policyRequest(DOVECOT_PATH, command, body);

/** One login: its allow, then its report if the allow let it through, else the report Dovecot sends for a refusal. */
type Login = { allow: Buffer; then: Buffer[]; refusedReport: Buffer | undefined };

/** Phase 4's logins (bench/dovecot.ts): allow, allow, report (one in ten fails: allow, report). */
function normalLogins(n: number): Login[] {
  return buildLogins(DOVECOT_PATH, n).map(([allow, ...then]) => ({
    allow: allow as Buffer,
    then,
    refusedReport: undefined,
  }));
}

const POOL = 2000;
const TARGET_ACCOUNTS = 300;

/** The botnet's guesses: address i % 2 ? fresh : from the pool, on one of the target accounts, a new password each. */
function floodLogins(n: number): Login[] {
  const out: Login[] = [];
  for (let i = 0; i < n; i++) {
    // 13.0.0.0/8 is nobody else's in this run: the pool is 2,000 addresses over 8 /24s, the fresh ones spread wide.
    const a = i % 2 === 0 ? (i >> 1) % POOL : 0x100000 + (((i >> 1) * 2654435761) % 0xe00000);
    const base = {
      device_id: '',
      login: `target${(i * 7) % TARGET_ACCOUNTS}@example.org`,
      protocol: i % 3 === 0 ? 'pop3' : 'imap',
      pwhash: ((i * 40503) % 4096).toString(16).padStart(4, '0'),
      remote: `13.${(a >> 16) & 255}.${(a >> 8) & 255}.${a & 255}`,
      session_id: `f${i}`,
      tls: true,
    };
    out.push({
      allow: post('allow', base),
      then: [post('report', { ...base, success: false, policy_reject: false })],
      refusedReport: post('report', { ...base, success: false, policy_reject: true }),
    });
  }
  return out;
}

interface HttpLoad {
  rps: number;
  p99: number;
  requests: number;
  refused: number;
  non200: number;
}

/** `connections` keep-alive connections, one login after another each, for a warm-up then `ms`. */
async function httpLoad(
  port: number,
  logins: Login[],
  connections: number,
  warmupMs: number,
  ms: number,
): Promise<HttpLoad> {
  const conns = await Promise.all(Array.from({ length: connections }, () => openHttp(port)));
  const lat: number[] = [];
  let requests = 0;
  let all = 0;
  let refused = 0;
  let non200 = 0;
  const t0 = performance.now();
  const from = t0 + warmupMs;
  const stopAt = from + ms;
  let next = 0;
  const one = async (c: HttpConn, b: Buffer): Promise<{ status: number; body: string }> => {
    const s = performance.now();
    const res = await c.send(b);
    const e = performance.now();
    all++;
    if (res.status !== 200) non200++;
    if (s >= from && e <= stopAt) {
      lat.push(e - s);
      requests++;
    }
    return res;
  };
  await Promise.all(
    conns.map(async (c) => {
      while (performance.now() < stopAt) {
        const login = logins[next++ % logins.length] as Login;
        const first = await one(c, login.allow);
        if (first.body.includes('"status":-')) {
          refused++;
          if (login.refusedReport) await one(c, login.refusedReport);
          continue;
        }
        for (const r of login.then) await one(c, r);
      }
    }),
  );
  for (const c of conns) c.sock.destroy();
  lat.sort((a, b) => a - b);
  return {
    rps: requests / (ms / 1000),
    p99: lat[Math.min(lat.length - 1, Math.floor(0.99 * lat.length))] ?? NaN,
    requests: all,
    refused,
    non200,
  };
}

// ---- the phase ----

async function startDaemon(dir: string, pf: Target, dovecotPort: number): Promise<{ proc: Proc; sock: string }> {
  const { proc, sock, log } = await spawnMailwarden(
    dir,
    { postfix: describe(pf), dovecot: dovecotPort },
    {},
    profileArgs(),
  );
  const dovecot: Target = { kind: 'tcp', host: '127.0.0.1', port: dovecotPort };
  await waitForListen(proc, 'mailwarden', log, [pf, dovecot, { kind: 'unix', path: sock }], 20_000);
  return { proc, sock };
}

/** Bans every client of the banned workload (11.0.0.0/12): three /14 networks, and each address of the fourth. */
/** (a)'s workload: phase 1's, from addresses banAll() bans. */
export const bannedWorkload = (w: Workload): Workload => rewrite(w, [['client_address=10.', 'client_address=11.']]);

/** Bans every client of bannedWorkload(): three /14 networks, and each address outside them. */
export async function banAll(sock: string, w: Workload): Promise<number> {
  const subjects = ['11.0.0.0/14', '11.4.0.0/14', '11.8.0.0/14'];
  const singles = new Set<string>();
  for (const c of w.perConn)
    for (const b of c.reqs) {
      const ip = /client_address=(11\.\d+\.\d+\.\d+)/.exec(b.toString('latin1'))?.[1];
      if (ip !== undefined && Number(ip.split('.')[1]) >= 12) singles.add(ip);
    }
  subjects.push(...singles);
  let next = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < subjects.length) {
        const subject = subjects[next++] as string;
        await call(sock, 'POST', '/v1/bans', { subject, duration: '1d', reason: 'bench: attack phase' });
      }
    }),
  );
  return subjects.length;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

/** Phase `attack`: returns the report lines. */
export async function phaseAttack(ctx: AttackPhaseContext): Promise<string[]> {
  const { fmt } = ctx;
  const dir = join(ctx.root, 'attack');
  const pf: Target = { kind: 'tcp', host: '127.0.0.1', port: await freePort() };
  const dovecotPort = await freePort();
  ctx.progress('attack phase: starting mailwarden (default policy, embedded store)');
  const { proc, sock } = await startDaemon(dir, pf, dovecotPort);
  try {
    const banned = bannedWorkload(ctx.w);
    const t0 = performance.now();
    const bans = await banAll(sock, banned);
    ctx.progress(`attack phase: ${fmt(bans)} bans made in ${fmt((performance.now() - t0) / 1000, 1)} s`);
    const senders = rewrite(
      buildWorkload(loadTemplates(), {
        connections: ctx.connections,
        sessions: 20_000,
        authShare: 1,
        users: 100,
        seed: 20261128,
      }),
      [
        ['client_address=10.', 'client_address=12.'],
        ['sasl_username=user', 'sasl_username=bulk'],
        ['sender=user', 'sender=bulk'],
      ],
    );
    const normal = normalLogins(40_000);
    const flood = floodLogins(400_000);

    const runs: Record<'normal' | 'banned' | 'senders' | 'logins' | 'flood', Sample[]> = {
      normal: [],
      banned: [],
      senders: [],
      logins: [],
      flood: [],
    };
    const postfix = async (name: 'normal' | 'banned' | 'senders', w: Workload, round: number): Promise<void> => {
      ctx.progress(`attack phase, round ${round}: Postfix ${name}`);
      const cpu0 = cpuSeconds(proc.pid);
      const r = await closedLoop(pf, w, ctx.warmupMs, ctx.durationMs);
      const s = postfixSample(r, cpuSeconds(proc.pid) - cpu0);
      if (r.invalid > 0)
        ctx.failures.push(`attack ${name}: ${r.invalid} invalid replies, e.g. ${r.invalidSample ?? ''}`);
      if (r.errors.length > 0)
        ctx.failures.push(`attack ${name}: ${r.errors.length} connection error(s), e.g. ${r.errors[0] ?? ''}`);
      runs[name].push(s);
    };
    const dovecot = async (name: 'logins' | 'flood', logins: Login[], round: number): Promise<void> => {
      ctx.progress(`attack phase, round ${round}: Dovecot ${name}`);
      const cpu0 = cpuSeconds(proc.pid);
      const l = await httpLoad(dovecotPort, logins, ctx.connections, ctx.warmupMs, ctx.durationMs);
      const cpu = cpuSeconds(proc.pid) - cpu0;
      if (l.non200 > 0) ctx.failures.push(`attack ${name}: ${l.non200} Dovecot answers were not HTTP 200`);
      runs[name].push({
        rps: l.rps,
        p99: l.p99,
        cpuUs: l.requests > 0 ? (cpu * 1e6) / l.requests : 0,
        refused: l.requests > 0 ? l.refused / l.requests : 0,
      });
    };
    for (let round = 1; round <= ctx.rounds; round++) {
      await postfix('normal', ctx.w, round);
      await postfix('banned', banned, round);
      await postfix('senders', senders, round);
      await dovecot('logins', normal, round);
      await dovecot('flood', flood, round);
    }

    const row = (label: string, s: Sample, round: number): string =>
      `   ${label.padEnd(34)} ${String(round).padStart(5)} ${fmt(s.rps).padStart(9)} ${fmt(s.p99, 3).padStart(8)} ${fmt(s.cpuUs, 1).padStart(9)} ${fmt(100 * s.refused, 1).padStart(9)}`;
    const table: string[] = [];
    const labels = {
      normal: 'Postfix, normal workload',
      banned: '(a) Postfix, every client banned',
      senders: '(c) Postfix, senders over limits',
      logins: 'Dovecot, normal logins',
      flood: '(b) Dovecot, guessing flood',
    } as const;
    for (const k of ['normal', 'banned', 'senders', 'logins', 'flood'] as const)
      runs[k].forEach((s, i) => table.push(row(labels[k], s, i + 1)));
    const verdict = (name: string, attack: Sample[], base: Sample[], target: number): string => {
      const ratios = attack.map((s, i) => s.rps / (base[i]?.rps ?? NaN));
      const p99s = attack.map((s, i) => s.p99 / (base[i]?.p99 ?? NaN));
      const cpus = attack.map((s, i) => s.cpuUs / (base[i]?.cpuUs ?? NaN));
      const r = median(ratios);
      const p = median(p99s);
      return (
        `   ${name}: req/s ${fmt(r, 2)} of normal (rounds ${ratios.map((x) => fmt(x, 2)).join(', ')}; target ≥ ${target}${r >= target ? ', met' : ', NOT met'}),` +
        ` p99 ${fmt(p, 2)}× normal (target ≤ ${P99_TARGET}${p <= P99_TARGET ? ', met' : ', NOT met'}), CPU per request ${fmt(median(cpus), 2)}× normal`
      );
    };
    const st = await call<{
      store: { counterKeys: number; activeBans: number };
      postfix: { errors: number; budgetMisses: number };
    }>(sock, 'GET', '/v1/status');
    if (st.postfix.errors > 0) ctx.failures.push(`attack phase: mailwarden reported ${st.postfix.errors} errors`);
    if (st.postfix.budgetMisses > 0)
      ctx.warnings.push(`attack phase: ${st.postfix.budgetMisses} budget misses (answered DUNNO)`);
    return [
      `7. Under attack: refusing against allowing, one daemon (default policy, embedded store), ${ctx.connections} connections, closed loop`,
      `   (a) the phase-1 workload from 11.0.0.0/12, all banned beforehand (${fmt(bans)} bans: three /14 networks, the rest one address each);`,
      `   (b) Dovecot: guesses on ${TARGET_ACCOUNTS} accounts, half from ${fmt(POOL)} addresses the rules ban, half from addresses seen once (refused by the account rules);`,
      `   (c) the phase-1 workload with every session authenticated as one of 100 accounts far over their limits (suspended from sending by the rules).`,
      `   Each against its normal workload in turns on the same daemon: Postfix (a), (c) against phase 1's; Dovecot (b) against phase 4's logins, per request.`,
      '   workload                           round     req/s   p99 ms  CPU µs/req  refused %',
      ...table,
      verdict('(a) banned clients', runs.banned, runs.normal, TARGETS.banned),
      verdict('(b) guessing flood', runs.flood, runs.logins, TARGETS.flood),
      verdict('(c) senders over limits', runs.senders, runs.normal, TARGETS.senders),
      `   (CPU µs/req: the daemon's CPU time over the run, warm-up included, per answered request; bans in force after the run: ${fmt(st.store.activeBans)})`,
      '',
    ];
  } finally {
    await stopProc(proc);
  }
}
