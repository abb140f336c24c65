/*
 * actions/firewall-nft — the nft scripts the firewall runs, as pure text, and
 * the one function that runs nft: spawned with arguments only, the script on
 * its stdin, never through a shell. Every element printed here was made from
 * numbers by actions/firewall-ranges.ts (a ban's subject was parsed and
 * validated on its way in), and the table name and ports are checked by the
 * config schema: nothing from a request reaches this text.
 *
 * mailwarden's table (`inet <table>`, its own: no other table is ever named):
 *
 *   set addr_v4, addr_v6   banned addresses: hash sets, flags timeout
 *   set net_v4, net_v6     banned networks: flags interval, timeout
 *   chain input            hook input: new connections from any of them to
 *                          the mail ports (or any port: `ports: all`) dropped
 *
 * Why two kinds: nft (1.0) reads every element of a table's interval sets
 * before any change, so one change costs time in proportion to them (seconds
 * for 100,000; bench/firewall.ts); a hash set's elements are not read. Most
 * bans are of single addresses, so they go where a change costs the same at
 * any size. An address and a network holding it, each in its own set, never
 * overlap, and each runs out on its own.
 *
 * A whole load is one transaction (`add table; delete table; table {...}`):
 * the kernel swaps the old table for the new at once, never without one.
 */
import { spawn } from 'node:child_process';

export interface NftTable {
  table: string;
  /** The destination ports whose new connections are dropped, or every port. */
  ports: readonly number[] | 'all';
}

export interface NftSet {
  name: string;
  v6: boolean;
  /** Networks as ranges (flags interval), or single addresses. */
  interval: boolean;
}

/** The table's sets, in the order they are written. */
export const SETS: readonly NftSet[] = [
  { name: 'addr_v4', v6: false, interval: false },
  { name: 'net_v4', v6: false, interval: true },
  { name: 'addr_v6', v6: true, interval: false },
  { name: 'net_v6', v6: true, interval: true },
];

/** The set an address (network false) or a network piece goes in. */
export function setFor(v6: boolean, network: boolean): string {
  return (SETS.find((s) => s.v6 === v6 && s.interval === network) as NftSet).name;
}

/** One set element: an address, a CIDR or a range, dropped until `end` (epoch ms). */
export interface NftElement {
  set: string;
  text: string;
  end: number;
}

export const CHAIN = 'input';

/**
 * The longest timeout given to the kernel. Kernels before 4.20 keep at most about 23 days (a
 * newer one takes ten years); a ban that lasts longer is given this much and given it again by
 * the next whole load (actions/firewall.ts loads the table again well before it runs out).
 */
export const MAX_TIMEOUT_MS = 20 * 86_400_000;

/** `timeout <s>s` for an element that ends at `end`, clamped and rounded up; undefined once it ended. */
export function timeoutOf(end: number, now: number): string | undefined {
  const ms = Math.min(end, now + MAX_TIMEOUT_MS) - now;
  return ms > 0 ? `timeout ${Math.ceil(ms / 1000)}s` : undefined;
}

/** `{ a, b }` one item a line, indented `depth` tabs (the closing brace one less). */
function elementList(items: readonly string[], depth = 2): string {
  const tabs = '\t'.repeat(depth);
  return `{\n${tabs}${items.join(`,\n${tabs}`)}\n${tabs.slice(1)}}`;
}

/** Elements as nft writes them, `<element> timeout <s>s`; those already over are left out. */
function withTimeouts(els: readonly NftElement[], now: number): string[] {
  return els.flatMap((e) => {
    const timeout = timeoutOf(e.end, now);
    return timeout === undefined ? [] : [`${e.text} ${timeout}`];
  });
}

/** Items per set, in SETS order. */
function bySet<T extends { set: string }>(items: readonly T[]): Array<[NftSet, T[]]> {
  return SETS.map((set) => [set, items.filter((i) => i.set === set.name)]);
}

/** Removes a table if it is there (adding an empty one first makes the delete unable to fail). */
export function removeScript(table: string): string {
  return `add table inet ${table}\ndelete table inet ${table}\n`;
}

/**
 * The whole table with these elements, replacing whatever table of that name is there, in one
 * transaction; `drop` is a table mailwarden used before (renamed in the config), removed in it too.
 */
export function tableScript(t: NftTable, elements: readonly NftElement[], now: number, drop?: string): string {
  const match = t.ports === 'all' ? '' : `tcp dport { ${t.ports.join(', ')} } `;
  const sets = bySet(elements).map(([set, els]) => {
    const items = withTimeouts(els, now);
    const body = items.length > 0 ? `\n\t\telements = ${elementList(items, 3)}` : '';
    const flags = set.interval ? 'interval, timeout' : 'timeout';
    return `\tset ${set.name} {\n\t\ttype ${set.v6 ? 'ipv6_addr' : 'ipv4_addr'}\n\t\tflags ${flags}${body}\n\t}\n`;
  });
  const rules = SETS.map(
    (set) => `\t\t${match}ct state new ${set.v6 ? 'ip6' : 'ip'} saddr @${set.name} counter drop\n`,
  );
  return [
    removeScript(t.table),
    drop !== undefined && drop !== t.table ? removeScript(drop) : '',
    `table inet ${t.table} {\n`,
    ...sets,
    `\tchain ${CHAIN} {\n`,
    '\t\ttype filter hook input priority filter - 10; policy accept;\n',
    ...rules,
    '\t}\n}\n',
  ].join('');
}

/**
 * Removes `deletes` and adds `adds`, in one transaction. Removals come first, so an element
 * replaced by an overlapping one (a network by its pieces) never overlaps it. Every element
 * removed must be in the kernel (deleting one that is not fails the whole transaction): the
 * caller leaves out those that may have run out (actions/firewall.ts).
 */
export function changeScript(
  table: string,
  deletes: ReadonlyArray<Omit<NftElement, 'end'>>,
  adds: readonly NftElement[],
  now: number,
): string {
  const lines: string[] = [];
  for (const [set, els] of bySet(deletes))
    if (els.length > 0) lines.push(`delete element inet ${table} ${set.name} ${elementList(els.map((e) => e.text))}`);
  for (const [set, els] of bySet(adds)) {
    const items = withTimeouts(els, now);
    if (items.length > 0) lines.push(`add element inet ${table} ${set.name} ${elementList(items)}`);
  }
  return lines.length > 0 ? `${lines.join('\n')}\n` : '';
}

/** Runs nft with these arguments (and this script on stdin); rejects with nft's own words. */
export type NftCommand = (args: readonly string[], input?: string) => Promise<void>;

/** The longest one nft run may take (a load of 100,000 elements takes a few seconds). */
const RUN_TIMEOUT_MS = 120_000;
const MAX_ERROR_TEXT = 400;

/** nft as `argv` says: the program and any arguments before nft's own (e.g. `ip netns exec <ns> nft`). */
export function nftCommand(argv: readonly string[]): NftCommand {
  const [program, ...lead] = argv;
  if (program === undefined) throw new Error('nftCommand: no program');
  return (args, input) =>
    new Promise<void>((resolve, reject) => {
      const child = spawn(program, [...lead, ...args], {
        stdio: [input === undefined ? 'ignore' : 'pipe', 'ignore', 'pipe'],
      });
      let stderr = '';
      let done = false;
      const finish = (err?: Error): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        finish(new Error(`${program} did not finish within ${RUN_TIMEOUT_MS / 1000} s`));
      }, RUN_TIMEOUT_MS);
      child.stderr?.on('data', (c: Buffer) => {
        if (stderr.length < MAX_ERROR_TEXT) stderr += c.toString();
      });
      child.on('error', (err) => finish(new Error(`cannot run ${program}: ${err.message}`)));
      child.on('close', (code, signal) => {
        if (code === 0) return finish();
        const said = stderr.replace(/\s+/g, ' ').trim().slice(0, MAX_ERROR_TEXT);
        finish(
          new Error(`${program} ${args.join(' ')} failed (${signal ?? `exit ${code}`})${said ? `: ${said}` : ''}`),
        );
      });
      // nft may stop reading early (a syntax error, no permission): its exit status says why, not EPIPE.
      child.stdin?.on('error', () => undefined);
      child.stdin?.end(input);
    });
}
