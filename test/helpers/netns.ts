/*
 * A network namespace of the test's own, for the firewall tests and bench:
 * `<tag>-<pid>`, optionally with a veth pair to the root namespace (IPv4
 * 10.250.<n>.1 in root, .2 inside; IPv6 fd00:fa:<n>::1 and ::2). Traffic
 * only ever goes between the two ends of that pair, and nft runs inside the
 * namespace (`ip netns exec`), so the host's own ruleset is never touched.
 * remove() deletes the namespace, and with it its veth pair and every nft
 * table in it; call it in an `after` hook.
 *
 * Needs root, ip (iproute2) and nft (nftables): scripts/install-system-deps.sh
 * installs them. Without them the tests skip on a dev machine and fail in CI.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect } from 'node:net';

export const IP = process.env.MAILWARDEN_IP ?? '/usr/sbin/ip';
export const NFT = process.env.MAILWARDEN_NFT ?? '/usr/sbin/nft';

/** Why namespaces cannot be made here, or false when they can. */
export function netnsMissing(): string | false {
  for (const [bin, pkg] of [
    [IP, 'iproute2'],
    [NFT, 'nftables'],
  ] as const) {
    if (!existsSync(bin)) return `${bin} is missing: run scripts/install-system-deps.sh (Debian package ${pkg})`;
  }
  if (process.getuid?.() !== 0) return 'network namespaces and nft need root';
  return false;
}

const inCi = (process.env.CI ?? '') !== '' && process.env.CI !== 'false';

/** `{ skip }` for describe(): the reason on a dev machine; in CI a missing prerequisite throws (fails). */
export function netnsTestOptions(): { skip: string | false } {
  const missing = netnsMissing();
  if (missing && inCi) throw new Error(`${missing} (CI must run the firewall tests)`);
  return { skip: missing };
}

export interface Netns {
  name: string;
  /** Runs a command inside the namespace: this prefix, then the command. */
  prefix: string[];
  /** The root end's and the namespace end's addresses (with a veth pair). */
  v4: { root: string; inside: string };
  v6: { root: string; inside: string };
  /** Runs nft inside the namespace; its stdout. */
  nft(args: string[], input?: string): string;
  remove(): void;
}

function run(args: string[], input?: string): string {
  return execFileSync(args[0] as string, args.slice(1), { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

export function createNetns(tag: string, opts: { veth: boolean }): Netns {
  const name = `${tag}-${process.pid}`;
  const n = (process.pid % 254) + 1;
  const prefix = [IP, 'netns', 'exec', name];
  // A namespace left by a killed run of the same pid would make `add` fail.
  if (
    run([IP, 'netns', 'list'])
      .split('\n')
      .some((l) => l.split(' ')[0] === name)
  )
    run([IP, 'netns', 'del', name]);
  run([IP, 'netns', 'add', name]);
  const ns: Netns = {
    name,
    prefix,
    v4: { root: `10.250.${n}.1`, inside: `10.250.${n}.2` },
    v6: { root: `fd00:fa:${n}::1`, inside: `fd00:fa:${n}::2` },
    nft: (args, input) => run([...prefix, NFT, ...args], input),
    remove: () => {
      try {
        run([IP, 'netns', 'del', name]);
      } catch {
        // already gone
      }
    },
  };
  try {
    run([...prefix, IP, 'link', 'set', 'lo', 'up']);
    if (opts.veth) {
      // Interface names are at most 15 characters; a pid has at most 7 digits.
      const outside = `mwfw${process.pid}r`;
      const inside = `mwfw${process.pid}n`;
      run([IP, 'link', 'add', outside, 'type', 'veth', 'peer', 'name', inside, 'netns', name]);
      run([IP, 'addr', 'add', `${ns.v4.root}/24`, 'dev', outside]);
      run([IP, '-6', 'addr', 'add', `${ns.v6.root}/64`, 'dev', outside, 'nodad']);
      run([IP, 'link', 'set', outside, 'up']);
      run([...prefix, IP, 'addr', 'add', `${ns.v4.inside}/24`, 'dev', inside]);
      run([...prefix, IP, '-6', 'addr', 'add', `${ns.v6.inside}/64`, 'dev', inside, 'nodad']);
      run([...prefix, IP, 'link', 'set', inside, 'up']);
    }
  } catch (err) {
    ns.remove();
    throw err;
  }
  return ns;
}

/** TCP listeners inside the namespace, on every address, answering each connection by closing it. */
export async function listenInside(ns: Netns, ports: number[]): Promise<ChildProcess> {
  const script = `
    const net = require('node:net');
    let left = ${ports.length};
    for (const port of ${JSON.stringify(ports)}) {
      net.createServer((s) => s.end()).listen({ port, host: '::' }, () => { if (--left === 0) console.log('ready'); });
    }`;
  const proc = spawn(ns.prefix[0] as string, [...ns.prefix.slice(1), process.execPath, '-e', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`listeners did not start: ${out}`)), 10_000);
    proc.stdout?.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('ready')) {
        clearTimeout(t);
        resolve();
      }
    });
    proc.stderr?.on('data', (c: Buffer) => (out += c.toString()));
    proc.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`listeners exited with ${code}: ${out}`));
    });
  });
  return proc;
}

/** Connects from the root namespace: true when the connection opens, false when the SYN goes unanswered. */
export function connects(host: string, port: number, timeoutMs = 1500): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, timeout: timeoutMs });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('timeout', () => {
      s.destroy();
      resolve(false);
    });
    // A refusal (RST) or an unreachable network is not what a drop looks like: the test must say so.
    s.once('error', reject);
  });
}

/** The elements of one of the table's sets as nft prints them: `a.b.c.d`, `net/len`, `lo-hi`. */
export function setElements(ns: Netns, table: string, set: string): string[] {
  // Elements with a timeout are printed as { elem: { val, timeout, expires } }.
  type Val = string | { range?: [string, string]; prefix?: { addr: string; len: number } };
  const out = JSON.parse(ns.nft(['-j', 'list', 'set', 'inet', table, set])) as {
    nftables: Array<{ set?: { elem?: Array<{ elem: { val: Val } }> } }>;
  };
  const elems = out.nftables.find((x) => x.set)?.set?.elem ?? [];
  return elems
    .map(({ elem: { val } }) => {
      if (typeof val === 'string') return val;
      if (val.range) return `${val.range[0]}-${val.range[1]}`;
      if (val.prefix) return `${val.prefix.addr}/${val.prefix.len}`;
      return JSON.stringify(val);
    })
    .sort();
}
