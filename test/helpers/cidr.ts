/*
 * Address arithmetic for tests, in BigInt and independent of src/engine/address.ts:
 * random blocks of any prefix length, their first and last address, and the
 * addresses just outside them. The oracle the ban and allowlist tests compare with.
 */
import ipaddr from 'ipaddr.js';

export interface Block {
  v6: boolean;
  len: number;
  first: bigint;
  last: bigint;
  /** `first/len`, or the plain address for /32 and /128. */
  text: string;
}

export const bitsOf = (v6: boolean): number => (v6 ? 128 : 32);

export function toBig(ip: string): bigint {
  let n = 0n;
  for (const b of ipaddr.parse(ip).toByteArray()) n = (n << 8n) | BigInt(b);
  return n;
}

export function fromBig(n: bigint, v6: boolean): string {
  const bytes: number[] = [];
  for (let i = bitsOf(v6) / 8 - 1; i >= 0; i--) bytes.push(Number((n >> BigInt(i * 8)) & 255n));
  const a = ipaddr.fromByteArray(bytes);
  return a.kind() === 'ipv6' ? (a as ipaddr.IPv6).toRFC5952String() : a.toString();
}

export function block(base: bigint, len: number, v6: boolean): Block {
  const host = (1n << BigInt(bitsOf(v6) - len)) - 1n;
  const first = base & ~host & ((1n << BigInt(bitsOf(v6))) - 1n);
  const last = first | host;
  const addr = fromBig(first, v6);
  return { v6, len, first, last, text: len === bitsOf(v6) ? addr : `${addr}/${len}` };
}

/** A uniformly random address of the family, as a number. */
export function randomAddress(rand: () => number, v6: boolean): bigint {
  let n = 0n;
  for (let i = 0; i < bitsOf(v6) / 32; i++) n = (n << 32n) | BigInt(Math.floor(rand() * 2 ** 32));
  return n;
}

/** A random address inside the block. */
export function inside(rand: () => number, b: Block): bigint {
  const span = b.last - b.first + 1n;
  return b.first + (randomAddress(rand, b.v6) % span);
}

/** The addresses right before and right after the block, where they exist. */
export function justOutside(b: Block): bigint[] {
  const out: bigint[] = [];
  if (b.first > 0n) out.push(b.first - 1n);
  if (b.last < (1n << BigInt(bitsOf(b.v6))) - 1n) out.push(b.last + 1n);
  return out;
}

export const holds = (b: Block, n: bigint): boolean => b.first <= n && n <= b.last;
