/*
 * engine/address — client addresses and the networks they belong to.
 *
 * Trusts nothing: every address an adapter hands us passes `canonicalIp`, which
 * is strict (node's `isIP`, so no `0x7f.1` or `127.1` shorthands), unmaps
 * IPv4-mapped IPv6, and prints IPv6 in RFC 5952 form so one host has one key.
 * Networks are CIDR strings (`192.0.2.0/24`, `2001:db8:1:2::/64`).
 *
 * Known limit: clients behind NAT or a carrier-grade NAT share one address and
 * one /24; that is why limits are per rule and allowlists exist.
 */
import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';

/** The canonical text of a valid IP address, or undefined for anything else. */
export function canonicalIp(raw: string): string | undefined {
  if (isDottedQuad(raw)) return raw; // nearly every request: no allocation, no regular expression
  let s = raw.trim();
  // Postfix sends IPv6 bare; log lines and admins may bracket it or add a zone.
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  if (s.toLowerCase().startsWith('ipv6:')) s = s.slice(5);
  // A zone (fe80::1%eth0) names the local interface, not the client: one host, one key.
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  const family = isIP(s);
  if (family === 0) return undefined;
  if (family === 4) return s;
  const addr = ipaddr.IPv6.parse(s);
  if (addr.isIPv4MappedAddress()) return addr.toIPv4Address().toString();
  return addr.toRFC5952String();
}

/** Exactly what node's isIP accepts as IPv4: four decimal parts 0-255, no leading zeros, nothing else. */
export function isDottedQuad(s: string): boolean {
  let dots = 0;
  let digits = 0;
  let value = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || ++dots > 3) return false;
      digits = 0;
      value = 0;
      continue;
    }
    if (c < 48 || c > 57 || (digits === 1 && value === 0)) return false;
    value = value * 10 + (c - 48);
    if (++digits > 3 || value > 255) return false;
  }
  return dots === 3 && digits > 0;
}

export function isIPv6(ip: string): boolean {
  return ip.includes(':');
}

const ZEROS = ['', '.0.0.0', '.0.0', '.0'];

/** The CIDR of the prefix-bit network holding a canonical IP (`ip/32` and `ip/128` included). */
export function networkOf(ip: string, prefix: number): string {
  if (!isIPv6(ip)) {
    if (prefix >= 32) return `${ip}/32`;
    // Octet boundaries (/24, /16, /8, the usual ones) by slicing: a canonical IPv4 has no leading zeros.
    if (prefix % 8 === 0 && prefix > 0) {
      let end = -1;
      for (let n = prefix / 8; n > 0; n--) end = ip.indexOf('.', end + 1);
      return `${ip.slice(0, end)}${ZEROS[prefix / 8] as string}/${prefix}`;
    }
    const n = ipv4ToInt(ip);
    const masked = prefix === 0 ? 0 : (n & (0xffffffff << (32 - prefix))) >>> 0;
    return `${masked >>> 24}.${(masked >>> 16) & 255}.${(masked >>> 8) & 255}.${masked & 255}/${prefix}`;
  }
  return v6NetworkOf(v6Groups(ip), prefix);
}

/** A canonical IPv6 address as its eight 16-bit groups (parse once, then take networks of any size). */
export function v6Groups(ip: string): readonly number[] {
  return ipaddr.IPv6.parse(ip).parts;
}

/** networkOf for IPv6 from the groups: masked and printed in RFC 5952 form without a parser's round trip. */
export function v6NetworkOf(groups: readonly number[], prefix: number): string {
  const g = new Array<number>(8);
  for (let i = 0; i < 8; i++) {
    const bits = prefix - i * 16;
    g[i] =
      bits <= 0 ? 0 : bits >= 16 ? (groups[i] as number) : (groups[i] as number) & (0xffff << (16 - bits)) & 0xffff;
  }
  // The longest run of two or more zero groups becomes '::', the first of equal runs (RFC 5952 4.2).
  let at = -1;
  let longest = 1;
  for (let i = 0, run = 0; i < 8; i++) {
    run = g[i] === 0 ? run + 1 : 0;
    if (run > longest) {
      longest = run;
      at = i - run + 1;
    }
  }
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (i === at) {
      out += '::';
      i += longest - 1;
      continue;
    }
    if (out !== '' && !out.endsWith(':')) out += ':';
    out += (g[i] as number).toString(16);
  }
  return `${out}/${prefix}`;
}

/** The network a client counts in: its IPv4 /v4 or IPv6 /v6 (the policy's `networks` sizes). */
export function clientNetwork(ip: string, sizes: { ipv4Prefix: number; ipv6Prefix: number }): string {
  return networkOf(ip, isIPv6(ip) ? sizes.ipv6Prefix : sizes.ipv4Prefix);
}

export interface ParsedSubject {
  /** `ip` for a single address, `network` for a CIDR. */
  kind: 'ip' | 'network';
  /** Canonical text: the address, or the CIDR with host bits cleared. */
  text: string;
  prefix: number;
  v6: boolean;
}

/**
 * An address or CIDR given by an administrator or config, canonicalised.
 * `10.1.2.3/24` becomes `10.1.2.0/24`; `/32` and `/128` become plain addresses.
 */
/** Shorter prefixes than these cover so much of the Internet that a ban or an allowlist entry needs `force`. */
export const NARROWEST_UNFORCED = { v4: 8, v6: 16 };

/** How much of the Internet a network wider than NARROWEST_UNFORCED covers, in words; undefined when narrower. */
export function tooBroad(s: ParsedSubject): string | undefined {
  const narrowest = s.v6 ? NARROWEST_UNFORCED.v6 : NARROWEST_UNFORCED.v4;
  if (s.prefix >= narrowest) return undefined;
  const size = s.v6 ? `2^${128 - s.prefix}` : String(2 ** (32 - s.prefix));
  return `${s.text} covers ${size} addresses, more than a /${narrowest} (${s.v6 ? 'IPv6' : 'IPv4'})`;
}

export function parseSubject(raw: string): ParsedSubject | undefined {
  const s = raw.trim();
  const slash = s.indexOf('/');
  if (slash < 0) {
    const ip = canonicalIp(s);
    return ip === undefined ? undefined : { kind: 'ip', text: ip, prefix: isIPv6(ip) ? 128 : 32, v6: isIPv6(ip) };
  }
  const ip = canonicalIp(s.slice(0, slash));
  const bits = s.slice(slash + 1);
  if (ip === undefined || !/^\d{1,3}$/.test(bits)) return undefined;
  const prefix = Number(bits);
  const v6 = isIPv6(ip);
  if (prefix > (v6 ? 128 : 32)) return undefined;
  if (prefix === (v6 ? 128 : 32)) return { kind: 'ip', text: ip, prefix, v6 };
  return { kind: 'network', text: networkOf(ip, prefix), prefix, v6 };
}

/** The first address of a parsed address or network. */
function baseOf(p: ParsedSubject): string {
  return p.kind === 'ip' ? p.text : p.text.slice(0, p.text.indexOf('/'));
}

/** The two agree on their first `bits` bits (same family). */
function samePrefix(a: ParsedSubject, b: ParsedSubject, bits: number): boolean {
  if (bits === 0) return true;
  if (a.v6) return ipaddr.IPv6.parse(baseOf(a)).match(ipaddr.IPv6.parse(baseOf(b)), bits);
  return (ipv4ToInt(baseOf(a)) ^ ipv4ToInt(baseOf(b))) >>> (32 - bits) === 0;
}

/** Every address of `inner` is in `outer` (an address is a network of one). */
export function contains(outer: ParsedSubject, inner: ParsedSubject): boolean {
  return outer.v6 === inner.v6 && outer.prefix <= inner.prefix && samePrefix(outer, inner, outer.prefix);
}

/** The two share at least one address. CIDR blocks are nested or apart, so then one contains the other. */
export function overlaps(a: ParsedSubject, b: ParsedSubject): boolean {
  return a.v6 === b.v6 && samePrefix(a, b, Math.min(a.prefix, b.prefix));
}

/** A compiled list of networks for fast membership tests. */
export class NetworkSet {
  private readonly v4: Array<[number, number]> = [];
  private readonly v6: Array<[ipaddr.IPv6, number]> = [];
  private readonly entries: ParsedSubject[] = [];

  constructor(cidrs: readonly string[]) {
    for (const c of cidrs) {
      const p = parseSubject(c);
      if (!p) throw new Error(`not an IP address or network: ${c}`);
      this.entries.push(p);
      const base = baseOf(p);
      if (p.v6) this.v6.push([ipaddr.IPv6.parse(base), p.prefix]);
      else this.v4.push([ipv4ToInt(base), p.prefix]);
    }
  }

  /** The first entry that shares an address with `p` (inside it, or holding it), if any. */
  overlapping(p: ParsedSubject): ParsedSubject | undefined {
    return this.entries.find((e) => overlaps(e, p));
  }

  get size(): number {
    return this.v4.length + this.v6.length;
  }

  has(ip: string): boolean {
    if (isIPv6(ip)) {
      if (this.v6.length === 0) return false;
      const a = ipaddr.IPv6.parse(ip);
      return this.v6.some(([net, bits]) => a.match(net, bits));
    }
    if (this.v4.length === 0) return false;
    const n = ipv4ToInt(ip);
    return this.v4.some(([net, bits]) => bits === 0 || (n ^ net) >>> (32 - bits) === 0);
  }
}

/** A canonical dotted quad as an unsigned 32-bit number, without allocating (it runs for every event). */
function ipv4ToInt(ip: string): number {
  let n = 0;
  let part = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 46) {
      n = (n << 8) | part;
      part = 0;
    } else part = part * 10 + (c - 48);
  }
  return ((n << 8) | part) >>> 0;
}
