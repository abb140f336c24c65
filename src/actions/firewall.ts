/*
 * actions/firewall — bans enforced in the kernel too (`firewall.backend:
 * nftables`): new connections from a banned address or network to the mail
 * ports are dropped before Postfix or Dovecot spend a process, a TLS
 * handshake or a login on them. The inline answers stay: they explain a
 * refusal, and they are what still works when the firewall does not.
 *
 * What it copies: the node's local MemoryStore's bans, told of every change
 * (`onBanChange`): rules' and people's bans, and in cluster mode the shared
 * bans it mirrors, so each node loads the cluster's bans into its own kernel.
 * Expiry is the kernel's (each element has its ban's remaining time).
 *
 * How: banned addresses are elements of hash sets; banned networks become
 * disjoint pieces of interval sets (actions/firewall-ranges.ts: a network and
 * one inside it each keep their own end), and an address and a network holding
 * it, in different sets, each keep theirs too. Allowlisted addresses, loopback
 * and this host's own addresses are left out or cut out. A whole load (at start,
 * on reload, when the allowlist changes, after a failure, and every
 * REFRESH_MS) replaces the table in one `nft -f` transaction; in between, the
 * changes of a burst are batched (BATCH_MS) into one nft run that touches
 * only the elements that changed, and only one nft runs at a time: a ban
 * storm costs a few nft runs, not one per ban.
 *
 * When nft is missing, not permitted or fails, decisions go on inline; the
 * firewall is `degraded` (status, metrics, `mailwarden status`), says so in a
 * throttled log line, and retries a whole load with backoff, which brings in
 * every ban made meanwhile. A table that vanished (`nft flush ruleset`, an
 * nftables.service restart) is noticed within CHECK_MS and loaded again.
 */
import { networkInterfaces } from 'node:os';
import type { Logger } from 'pino';
import { parseSubject } from '../engine/address.js';
import type { BanRecord } from '../engine/types.js';
import { ThrottledLog } from '../log.js';
import type { BanChange } from '../store/memory.js';
import {
  addressValue,
  BanBlocks,
  blockOf,
  covered,
  regions,
  spanText,
  union,
  type Block,
  type Span,
} from './firewall-ranges.js';
import {
  CHAIN,
  changeScript,
  nftCommand,
  removeScript,
  setFor,
  tableScript,
  type NftCommand,
  type NftElement,
  type NftTable,
} from './firewall-nft.js';

export interface FirewallSettings {
  backend: 'none' | 'nftables';
  /** The nftables table mailwarden owns: `inet <table>`. */
  table: string;
  /** Destination ports dropped for banned sources; `all`: every port (whole-address mode). */
  ports: readonly number[] | 'all';
  /** The nft program, a path or a name found in PATH; run with arguments, never through a shell. */
  nft: string;
}

export const FIREWALL_DEFAULTS: FirewallSettings = {
  backend: 'none',
  table: 'mailwarden',
  ports: [25, 465, 587, 143, 993, 110, 995],
  nft: 'nft',
};

export interface FirewallStatus {
  backend: FirewallSettings['backend'];
  table: string;
  ports: readonly number[] | 'all';
  /** `off`: backend none; `starting`: the first load has not finished; `degraded`: nft fails. */
  state: 'off' | 'starting' | 'ok' | 'degraded';
  /** Elements the kernel holds as far as the last nft run that worked says. */
  elements: number;
  /** Element changes not yet in the kernel: waiting for the next nft run, or in the one running. */
  pending: number;
  /** nft runs that failed since start. */
  errors: number;
  lastError: string | null;
  /** Degraded since (epoch ms). */
  since: number | null;
  /** The last whole load that worked: when, how long it took, how many elements. */
  lastLoad: { time: number; ms: number; elements: number } | null;
}

export interface FirewallOptions {
  logger: Logger;
  now: () => number;
  /** The allowlisted networks in force: the config file's and the runtime ones. */
  allowed: () => readonly string[];
  /** How nft is run; default: `settings.nft`. The bench runs it in a network namespace, tests fake it. */
  nft?: NftCommand | undefined;
  /** The first retry after a failure, doubled up to the second. */
  retryMs?: readonly [number, number] | undefined;
}

/** How long the changes of a burst are gathered into one nft run. */
export const BATCH_MS = 20;
/** How often the table is checked for (and loaded again if it is gone). */
const CHECK_MS = 60_000;
/** A whole load this often re-arms timeouts clamped to MAX_TIMEOUT_MS (20 days) and drops bans that ended. */
const REFRESH_MS = 10 * 86_400_000;
const RETRY_MS: readonly [number, number] = [1000, 60_000];
/**
 * The kernel's copy of an element ends up to a second after its ban (timeouts are whole seconds,
 * rounded up) plus the time the run took: this long after its end it is surely gone, and one with
 * more than SURE_MS left cannot run out before a run commits. Deleting an element the kernel no
 * longer has fails the whole transaction, so one in between is never deleted: a change touching
 * it waits until it is surely gone.
 */
const GONE_MS = 3000;
const SURE_MS = 5000;
/** Banned addresses gone through between two turns of the event loop in a whole load (a few ms' worth). */
const SLICE = 5000;

/** Sources never dropped: loopback and this host's own addresses (it talks to itself through them). */
export function ownNetworks(): string[] {
  const out = ['127.0.0.0/8', '::1'];
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) out.push(a.address);
  return out;
}

/** The addresses never put in a set, per family, disjoint and in order; what does not parse is left out. */
function holesOf(networks: readonly string[]): [Span[], Span[]] {
  const blocks = networks.flatMap((n) => {
    const p = parseSubject(n);
    return p ? [blockOf(p)] : [];
  });
  return [union(blocks.filter((b) => !b.v6)), union(blocks.filter((b) => b.v6))];
}

/** The elements of each region of networks (its top-level network → its pieces). */
type Regions = Map<string, NftElement[]>;

/** An element's key: one text can be in two sets (an address, and a network piece of one address). */
const keyOf = (e: { set: string; text: string }): string => `${e.set} ${e.text}`;

/** The regions among `networks` (in order, nested or apart), their bans' ends, minus `holes`. */
function regionsOf(
  blocks: BanBlocks,
  networks: readonly Block[],
  v6: boolean,
  holes: readonly Span[],
  now: number,
): Regions {
  const endOf = (s: string): number | undefined => {
    const until = blocks.until(s);
    return until !== undefined && until > now ? until : undefined;
  };
  const out: Regions = new Map();
  const set = setFor(v6, true);
  for (const r of regions(networks, endOf, holes))
    if (r.pieces.length > 0)
      out.set(
        r.top,
        r.pieces.map((p) => ({ set, text: spanText(p, v6), end: p.end })),
      );
  return out;
}

/** A banned address's element, if it is to be in the kernel: in force and not allowlisted. */
function addressElement(
  subject: string,
  until: number | undefined,
  holes: [Span[], Span[]],
  now: number,
): NftElement | undefined {
  if (until === undefined || until <= now) return undefined;
  // Canonical already (BanBlocks took only those): no second parse.
  const v6 = subject.includes(':');
  if (covered(holes[v6 ? 1 : 0], addressValue(subject, v6))) return undefined;
  return { set: setFor(v6, false), text: subject, end: until };
}

/** The regions of every banned network, for a whole load. */
function networkRegions(blocks: BanBlocks, holes: [Span[], Span[]], now: number): Regions {
  const out: Regions = new Map();
  for (const v6 of [false, true])
    for (const [top, els] of regionsOf(blocks, blocks.networks(v6), v6, holes[v6 ? 1 : 0], now)) out.set(top, els);
  return out;
}

/**
 * Adds every banned address's element to `out`, in slices, letting decisions in between (a
 * change meanwhile is queued as usual and applied by the next run).
 */
async function addAddresses(out: NftElement[], blocks: BanBlocks, holes: [Span[], Span[]], now: number): Promise<void> {
  let n = 0;
  for (const rec of blocks.addresses()) {
    const e = addressElement(rec.subject, rec.until, holes, now);
    if (e) out.push(e);
    if (++n % SLICE === 0) await new Promise((resolve) => setImmediate(resolve));
  }
}

/** The script of a whole load of these bans (`mailwarden firewall script`: what the daemon would run). */
export async function loadScript(
  table: NftTable,
  bans: Iterable<BanRecord>,
  allowed: readonly string[],
  now: number,
): Promise<string> {
  const blocks = new BanBlocks();
  blocks.load(bans);
  const holes = holesOf([...allowed, ...ownNetworks()]);
  const elements = [...networkRegions(blocks, holes, now).values()].flat();
  await addAddresses(elements, blocks, holes, now);
  return tableScript(table, elements, now);
}

export class Firewall {
  private settings: FirewallSettings;
  private readonly o: FirewallOptions;
  private nft: NftCommand;
  private readonly blocks = new BanBlocks();
  /** The pieces each region of networks wants in the kernel; changes wait in `pending`. */
  private regions: Regions = new Map();
  /** What the kernel holds, as of the last nft run that worked, by keyOf. */
  private committed = new Map<string, NftElement>();
  /** Elements to change at the next run, by keyOf: the end wanted, or null to remove. */
  private pending = new Map<string, Omit<NftElement, 'end'> & { end: number | null }>();
  /** Element changes in the nft run under way. */
  private inFlight = 0;
  private holes: [Span[], Span[]] = [[], []];
  /** The next run loads the whole table (at start, after a failure, a reload, an allowlist change). */
  private full: boolean;
  /** The next run checks that the table is still there. */
  private verify = false;
  /** A table to remove: the old one after a rename (in the next load), or this one when turned off. */
  private drop: string | undefined;
  private running = false;
  /** Changes wait until then for an element in the kernel to run out (GONE_MS). */
  private holdUntil = 0;
  private timer: NodeJS.Timeout | undefined;
  /** `timer` is the retry after a failure: nothing runs before it. */
  private retrying = false;
  private retryMs = 0;
  private readonly ticker: NodeJS.Timeout;
  private lastFull = 0;
  private waiters: Array<() => void> = [];
  private closed = false;
  private readonly log: ThrottledLog;
  private readonly st: Omit<FirewallStatus, 'backend' | 'table' | 'ports' | 'elements' | 'pending'>;

  constructor(settings: FirewallSettings, bans: Iterable<BanRecord>, o: FirewallOptions) {
    this.settings = settings;
    this.o = o;
    this.nft = o.nft ?? nftCommand([settings.nft]);
    this.log = new ThrottledLog(o.logger);
    this.reportBad(this.blocks.load(bans));
    this.full = settings.backend !== 'none';
    this.st = {
      state: settings.backend === 'none' ? 'off' : 'starting',
      errors: 0,
      lastError: null,
      since: null,
      lastLoad: null,
    };
    this.ticker = setInterval(() => this.tick(), CHECK_MS);
    this.ticker.unref();
    this.schedule(0);
  }

  /** A change to the bans in force (MemoryStore.onBanChange): never throws, the store's caller is deciding. */
  change(c: BanChange): void {
    try {
      if (c.kind === 'replace') {
        this.reportBad(this.blocks.load(c.bans));
        this.loadAll();
        return;
      }
      // Off, or a whole load is due anyway (it reads the bans then): only the bans need to be current.
      if (this.settings.backend === 'none' || this.full) {
        this.apply(c);
        return;
      }
      this.changeBan(c);
      this.schedule(BATCH_MS);
    } catch (err) {
      this.log.error(
        'firewall-change',
        { err },
        'firewall: a ban change could not be applied; loading the whole table',
      );
      this.loadAll();
    }
  }

  /** The allowlist in force changed: what it holds must leave the sets, what it let go must come back. */
  allowChanged(): void {
    this.loadAll();
  }

  /** New settings (SIGHUP, `mailwarden reload`): loaded at once, the old table removed if renamed or turned off. */
  reload(next: FirewallSettings): void {
    const prev = this.settings;
    this.settings = next;
    if (this.o.nft === undefined && next.nft !== prev.nft) this.nft = nftCommand([next.nft]);
    const wasOn = prev.backend !== 'none';
    if (wasOn && (next.backend === 'none' || prev.table !== next.table)) this.drop = prev.table;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.retrying = false;
    this.retryMs = 0;
    this.pending.clear();
    if (next.backend !== 'none' && this.st.state === 'off') this.st.state = 'starting';
    this.full = next.backend !== 'none';
    this.schedule(0);
  }

  status(): FirewallStatus {
    const { backend, table, ports } = this.settings;
    const pending = this.pending.size + this.inFlight;
    return { backend, table, ports, ...this.st, elements: this.committed.size, pending };
  }

  /** Resolves once nothing is left to run (or the firewall waits to retry after a failure). */
  settled(): Promise<void> {
    if (this.quiet()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Stops (the table stays: the bans in it stay enforced until they end, and the next start reconciles it). */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    clearInterval(this.ticker);
    if (this.running) await new Promise<void>((resolve) => this.waiters.push(resolve));
    this.log.flush();
  }

  /** A whole load, soon (when on). */
  private loadAll(): void {
    if (this.settings.backend === 'none') return;
    this.full = true;
    this.pending.clear();
    this.schedule(BATCH_MS);
  }

  private reportBad(subjects: readonly string[]): void {
    for (const subject of subjects)
      this.log.warn(
        'firewall-subject',
        { subject },
        'firewall: a ban whose subject is not a canonical address or network is left out of the kernel',
      );
  }

  /** Queues what one ban's change does to the kernel: its address's element, or its region's pieces. */
  private changeBan(c: Exclude<BanChange, { kind: 'replace' }>): void {
    const subject = c.kind === 'set' ? c.rec.subject : c.subject;
    const p = parseSubject(subject);
    if (p === undefined || p.text !== subject) {
      if (c.kind === 'set') this.reportBad([subject]);
      return;
    }
    const now = this.o.now();
    const before: NftElement[] = [];
    const after: NftElement[] = [];
    if (p.kind === 'ip') {
      const was = addressElement(subject, this.blocks.until(subject), this.holes, now);
      if (was) before.push(was);
      this.apply(c);
      const is = addressElement(subject, this.blocks.until(subject), this.holes, now);
      if (is) after.push(is);
    } else {
      // The region: the widest network holding this one, or itself; its pieces before and after.
      const b = blockOf(p);
      const span = this.blocks.holder(b) ?? b;
      for (const inner of this.blocks.inside(span, b.v6)) {
        before.push(...(this.regions.get(inner.subject) ?? []));
        this.regions.delete(inner.subject);
      }
      this.apply(c);
      const inside = this.blocks.inside(span, b.v6);
      for (const [top, els] of regionsOf(this.blocks, inside, b.v6, this.holes[b.v6 ? 1 : 0], now)) {
        this.regions.set(top, els);
        after.push(...els);
      }
    }
    const had = new Map(before.map((e) => [keyOf(e), e.end]));
    const has = new Set(after.map(keyOf));
    for (const e of before) if (!has.has(keyOf(e))) this.pending.set(keyOf(e), { ...e, end: null });
    for (const e of after) if (had.get(keyOf(e)) !== e.end) this.pending.set(keyOf(e), e);
  }

  private apply(c: Exclude<BanChange, { kind: 'replace' }>): void {
    if (c.kind === 'delete') this.blocks.delete(c.subject);
    else if (!this.blocks.set(c.rec)) this.reportBad([c.rec.subject]);
  }

  private schedule(ms: number): void {
    if (this.closed || this.timer !== undefined) return;
    this.timer = setTimeout(() => void this.pump(), ms);
  }

  private quiet(): boolean {
    if (this.running) return false;
    if (this.retrying || this.closed) return true;
    return this.timer === undefined && !this.full && !this.verify && this.pending.size === 0 && this.drop === undefined;
  }

  /** Runs what is due, one nft at a time, until nothing is (or a failure waits for its retry). */
  private async pump(): Promise<void> {
    this.timer = undefined;
    if (this.running || this.closed) return;
    this.running = true;
    try {
      while (!this.closed && !this.retrying) {
        if (this.settings.backend === 'none') {
          await this.off();
          break;
        }
        if (this.full) await this.load();
        else if (this.pending.size > 0) {
          const wait = this.holdUntil - this.o.now();
          if (wait > 0) {
            this.schedule(wait);
            break;
          }
          await this.flush();
        } else if (this.verify) await this.check();
        else break;
      }
    } finally {
      this.running = false;
      if (this.quiet()) for (const w of this.waiters.splice(0)) w();
    }
  }

  /** One transaction that makes the table exactly the bans in force. */
  private async load(): Promise<void> {
    this.full = false;
    this.verify = false;
    this.pending.clear();
    const started = this.o.now();
    this.holes = holesOf([...this.o.allowed(), ...ownNetworks()]);
    this.blocks.prune(started);
    // In place before the first slice: a network's change meanwhile recomputes its region against these.
    this.regions = networkRegions(this.blocks, this.holes, started);
    const elements = [...this.regions.values()].flat();
    await addAddresses(elements, this.blocks, this.holes, started);
    const drop = this.drop;
    const script = tableScript(this.settings, elements, started, drop);
    try {
      await this.nft(['-f', '-'], script);
    } catch (err) {
      this.fail(err);
      return;
    }
    if (this.drop === drop) this.drop = undefined;
    this.committed = new Map(elements.map((e) => [keyOf(e), e]));
    this.lastFull = started;
    const ms = this.o.now() - started;
    this.st.lastLoad = { time: started, ms, elements: elements.length };
    const fields = { table: `inet ${this.settings.table}`, elements: elements.length, ms };
    if (this.st.state === 'degraded') {
      this.o.logger.info(
        { ...fields, degradedSince: new Date(this.st.since ?? started).toISOString() },
        'firewall recovered: the kernel drops the banned sources again',
      );
    } else this.o.logger.info(fields, 'firewall: table loaded');
    this.st.state = 'ok';
    this.st.since = null;
    this.retryMs = 0;
  }

  /** The changes gathered since the last run, in one transaction; a failure makes a whole load due. */
  private async flush(): Promise<void> {
    const batch = this.pending;
    this.pending = new Map();
    const now = this.o.now();
    const changed: string[] = [];
    const deletes: NftElement[] = [];
    const adds: NftElement[] = [];
    let hold = 0;
    for (const [key, want] of batch) {
      const have = this.committed.get(key);
      if (want.end === (have?.end ?? null)) continue;
      changed.push(key);
      // Ran out long enough ago: the kernel dropped it on its own. About to run out: wait until it has.
      if (have !== undefined && have.end > now - GONE_MS) {
        if (have.end > now + SURE_MS) deletes.push(have);
        else hold = Math.max(hold, have.end + GONE_MS);
      }
      if (want.end !== null && want.end > now) adds.push({ ...want, end: want.end });
    }
    if (hold > 0) {
      // Put back under what came since (newer wins), and run when the element is surely gone.
      for (const [key, want] of batch) if (!this.pending.has(key)) this.pending.set(key, want);
      this.holdUntil = hold;
      return;
    }
    const script = changeScript(this.settings.table, deletes, adds, now);
    this.inFlight = changed.length;
    try {
      if (script !== '') await this.nft(['-f', '-'], script);
    } catch (err) {
      this.st.errors++;
      this.st.lastError = message(err);
      this.log.warn(
        'firewall-change',
        { table: `inet ${this.settings.table}`, error: this.st.lastError },
        'firewall: nft refused a change; loading the whole table instead',
      );
      this.full = true;
      return;
    } finally {
      this.inFlight = 0;
    }
    for (const key of changed) this.committed.delete(key);
    for (const a of adds) this.committed.set(keyOf(a), a);
    this.o.logger.debug({ removed: deletes.length, added: adds.length }, 'firewall: elements changed');
  }

  /** Is the table still there? Someone may have flushed the ruleset (an nftables.service restart does). */
  private async check(): Promise<void> {
    this.verify = false;
    try {
      await this.nft(['list', 'chain', 'inet', this.settings.table, CHAIN]);
    } catch (err) {
      this.o.logger.warn(
        { table: `inet ${this.settings.table}`, error: message(err) },
        'firewall: the table is gone or unreadable (was the ruleset flushed?); loading it again',
      );
      this.full = true;
    }
  }

  /** Turned off by a reload: the table removed (once), nothing kept. */
  private async off(): Promise<void> {
    const table = this.drop;
    this.drop = undefined;
    this.st.state = 'off';
    this.st.since = null;
    this.committed.clear();
    this.regions.clear();
    this.pending.clear();
    if (table === undefined) return;
    try {
      await this.nft(['-f', '-'], removeScript(table));
      this.o.logger.info({ table: `inet ${table}` }, 'firewall: off; table removed');
    } catch (err) {
      this.o.logger.error(
        { table: `inet ${table}`, error: message(err) },
        'firewall: off, but its table could not be removed',
      );
    }
  }

  /** Degraded: said (throttled), counted, and a whole load retried after a backoff. */
  private fail(err: unknown): void {
    // Turned off meanwhile: the pump removes the table next, nothing to retry.
    if (this.settings.backend === 'none') return;
    const now = this.o.now();
    this.st.errors++;
    this.st.lastError = message(err);
    if (this.st.state !== 'degraded') this.st.since = now;
    this.st.state = 'degraded';
    this.full = true;
    const [first, most] = this.o.retryMs ?? RETRY_MS;
    this.retryMs = this.retryMs === 0 ? first : Math.min(most, this.retryMs * 2);
    this.log.error(
      'firewall',
      { table: `inet ${this.settings.table}`, error: this.st.lastError, retryInSeconds: this.retryMs / 1000 },
      'firewall degraded: nft failed; bans are still refused inline, the kernel does not drop them until it works',
    );
    clearTimeout(this.timer);
    this.retrying = true;
    this.timer = setTimeout(() => {
      this.retrying = false;
      void this.pump();
    }, this.retryMs);
  }

  private tick(): void {
    if (this.settings.backend === 'none' || this.st.state !== 'ok') return;
    if (this.o.now() - this.lastFull >= REFRESH_MS) this.full = true;
    else this.verify = true;
    this.schedule(0);
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
