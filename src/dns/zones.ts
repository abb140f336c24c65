/*
 * dns/zones — what a DNS blocklist query is made of, without any I/O: the
 * name to ask (an address reversed, IPv6 as 32 nibbles; a domain as it is),
 * the answer codes a zone's entry counts, and the codes that are no listing
 * at all.
 *
 * Spamhaus answers 127.255.255.252/254/255 when it refuses a query (a typo in
 * the zone, a query through a public resolver, too many queries): that is a
 * refusal, never a listing, whatever codes the configuration counts. Every
 * answer outside 127.0.0.0/8 is no listing either: it is a resolver that
 * rewrites NXDOMAIN (an ISP's search page), not a blocklist.
 */
import { canonicalIp, isIPv6, v6Groups } from '../engine/address.js';

/** An inclusive range of IPv4 answer codes, as 32-bit numbers. */
export type CodeRange = readonly [number, number];

/** What a zone answers for a listed entry by default: anything in 127.0.0.0/8 (but the refusals). */
export const ANY_CODE: readonly CodeRange[] = [[0x7f000000, 0x7fffffff]];

/** The name that asks `zone` about a client address: 7.100.51.198.zen.spamhaus.org, or 32 nibbles for IPv6. */
export function reverseName(ip: string, zone: string): string {
  if (!isIPv6(ip)) {
    const [a, b, c, d] = ip.split('.');
    return `${d}.${c}.${b}.${a}.${zone}`;
  }
  const nibbles: string[] = [];
  for (const g of v6Groups(ip)) for (let s = 12; s >= 0; s -= 4) nibbles.push(((g >> s) & 15).toString(16));
  return `${nibbles.reverse().join('.')}.${zone}`;
}

/** A dotted quad as a 32-bit number, or undefined. */
export function ipv4Number(s: string): number | undefined {
  const ip = canonicalIp(s.trim());
  if (ip === undefined || isIPv6(ip)) return undefined;
  return ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

/** `127.0.0.2`, `127.0.0.2-127.0.0.11` or `127.0.0.0/24` as a range; undefined when it is none of them. */
export function parseCodes(s: string): CodeRange | undefined {
  const dash = s.indexOf('-');
  if (dash >= 0) {
    const lo = ipv4Number(s.slice(0, dash));
    const hi = ipv4Number(s.slice(dash + 1));
    return lo === undefined || hi === undefined || lo > hi ? undefined : [lo, hi];
  }
  const slash = s.indexOf('/');
  if (slash < 0) {
    const n = ipv4Number(s);
    return n === undefined ? undefined : [n, n];
  }
  const base = ipv4Number(s.slice(0, slash));
  const bits = /^\d{1,2}$/.test(s.slice(slash + 1)) ? Number(s.slice(slash + 1)) : 33;
  if (base === undefined || bits > 32) return undefined;
  const size = 2 ** (32 - bits);
  const lo = base - (base % size);
  return [lo, lo + size - 1];
}

export function inCodes(codes: readonly CodeRange[], n: number): boolean {
  return codes.some(([lo, hi]) => n >= lo && n <= hi);
}

const REFUSALS: Record<number, string> = {
  252: 'a typing error in the zone name',
  254: 'a query through a public or open resolver, or one Spamhaus cannot attribute',
  255: 'an excessive number of queries',
};

/**
 * Why a zone refused to answer, for an answer code in 127.255.255.0/24 (Spamhaus's error codes, which
 * other lists copy), or undefined for any other code.
 */
export function refusal(code: string): string | undefined {
  if (!code.startsWith('127.255.255.')) return undefined;
  const why = REFUSALS[Number(code.slice(12))];
  return `query refused (${code}${why === undefined ? '' : `: ${why}`})`;
}

/** The answer codes an entry counts, of those a zone gave: in 127.0.0.0/8, not a refusal, in `codes`. */
export function listingCodes(answer: readonly string[], codes: readonly CodeRange[]): string[] {
  return answer.filter((a) => {
    const n = ipv4Number(a);
    return n !== undefined && n >>> 24 === 127 && refusal(a) === undefined && inCodes(codes, n);
  });
}

// Labels of letters, digits, '-' and '_' (zones such as _dmarc exist), at least two of them, 253 characters in all.
const NAME = /^(?=.{1,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** A DNS name as the config writes it (a zone, a domain), lower case, without a final dot; undefined if it is none. */
export function dnsName(s: string): string | undefined {
  const n = s.trim().toLowerCase().replace(/\.$/, '');
  return NAME.test(n) ? n : undefined;
}

/** A 32-bit number as a dotted quad. */
export function ipv4Text(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** Code ranges as the config writes them (check-config): `127.0.0.2`, `127.0.0.2-127.0.0.11`. */
export function describeCodes(codes: readonly CodeRange[]): string[] {
  return codes.map(([lo, hi]) => (lo === hi ? ipv4Text(lo) : `${ipv4Text(lo)}-${ipv4Text(hi)}`));
}
