/*
 * dns/resolver — the DNS client mailwarden asks its blocklist questions with:
 * A and TXT queries over UDP (dns-packet) to the servers of the `dns` key, or
 * of /etc/resolv.conf.
 *
 * Why not node:dns: its Resolver (c-ares) gives a TTL for A records but none
 * for a name that does not exist, and most DNSBL answers are exactly that.
 * RFC 2308 caches those for the SOA's minimum (or the SOA record's own TTL,
 * if lower); only the raw answer's authority section has it.
 *
 * Bounded: answers (positive, negative, and failures for a short while, so a
 * dead resolver is not asked again for every client) are kept until their
 * TTL ends, at most `cacheEntries` of them; identical questions in flight are
 * asked once; at most `maxInFlight` are out at a time, and a question past
 * that is answered "busy" at once instead of queueing.
 *
 * Questions go out with random ids on a socket per server, on a port the
 * kernel picked at random and replaced every few hundred questions; only an
 * answer from the server asked, with a pending id and its question, is read:
 * a spoofed listing would need to guess both port and id in time.
 */
import { randomInt } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import packet, { type StringAnswer, type TxtAnswer } from 'dns-packet';
import { canonicalIp, isIPv6 } from '../engine/address.js';
import { TtlCache } from './cache.js';

export interface DnsServer {
  host: string;
  port: number;
}

/** The `dns` key: where questions go, how long a try waits, and the bounds. */
export type DnsSettings = Omit<ResolverOptions, 'now'>;

export interface ResolverOptions {
  servers: readonly DnsServer[];
  /** How long one try waits for its server. */
  timeoutMs: number;
  cacheEntries: number;
  maxInFlight: number;
  now?: () => number;
}

/**
 * An answer, kept until `expires` (ms since the epoch). `records`: the A addresses or TXT strings; empty
 * when the name does not exist (NXDOMAIN) or has none of the type asked (NODATA): "not listed".
 */
export type DnsAnswer =
  { ok: true; records: readonly string[]; expires: number } | { ok: false; error: string; expires: number };

export interface ResolverStats {
  /** Questions sent (cache misses). */
  queries: number;
  /** Questions answered from the cache. */
  cached: number;
  /** Questions that got no usable answer: timeout, SERVFAIL, REFUSED, a broken packet. */
  failed: number;
  /** Questions answered "busy" because `maxInFlight` were out. */
  overflow: number;
}

/** How long a failure is remembered (a dead resolver is not asked again for every client meanwhile). */
const FAILURE_TTL_S = 30;
/** A negative answer without an SOA (RFC 2308 says: do not cache; one minute keeps a busy name off the wire). */
const NEGATIVE_TTL_S = 60;
/** No answer is kept longer than a day, whatever its TTL. */
const MAX_TTL_S = 86_400;
const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];

/** `127.0.0.1`, `127.0.0.1:5353`, `::1`, `[::1]:5353`: an IP address and a port (53 when none is given). */
export function parseServer(s: string): DnsServer | undefined {
  const t = s.trim();
  const bracket = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(t);
  const plain = /^([^:]+):(\d{1,5})$/.exec(t);
  const [host, port] = bracket ? [bracket[1], bracket[2]] : plain ? [plain[1], plain[2]] : [t, undefined];
  const ip = canonicalIp(host ?? '');
  const p = port === undefined ? 53 : Number(port);
  return ip === undefined || p < 1 || p > 65535 ? undefined : { host: ip, port: p };
}

/** The `nameserver` lines of resolv.conf, as glibc reads them (127.0.0.1 when there is none). */
export function systemServers(file = '/etc/resolv.conf'): DnsServer[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    // no file: glibc's default below
  }
  const out: DnsServer[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    const server = m ? parseServer(m[1] as string) : undefined;
    if (server) out.push(server);
  }
  return out.length ? out : [{ host: '127.0.0.1', port: 53 }];
}

export function describeServer(s: DnsServer): string {
  return isIPv6(s.host) ? `[${s.host}]:${s.port}` : `${s.host}:${s.port}`;
}

export class Resolver {
  readonly stats: ResolverStats = { queries: 0, cached: 0, failed: 0, overflow: 0 };
  private readonly cache: TtlCache<DnsAnswer>;
  private readonly flying = new Map<string, Promise<DnsAnswer>>();
  /** Per server, the socket questions go out on. */
  private readonly channels = new Map<string, Channel>();
  private readonly now: () => number;
  private closed = false;

  constructor(private readonly o: ResolverOptions) {
    this.cache = new TtlCache(o.cacheEntries);
    this.now = o.now ?? Date.now;
  }

  get cacheEntries(): number {
    return this.cache.size;
  }

  get inFlight(): number {
    return this.flying.size;
  }

  query(name: string, type: 'A' | 'TXT'): Promise<DnsAnswer> {
    const key = `${type} ${name.toLowerCase()}`;
    const now = this.now();
    const hit = this.cache.get(key, now);
    if (hit !== undefined) {
      this.stats.cached++;
      return Promise.resolve(hit);
    }
    const flying = this.flying.get(key);
    if (flying !== undefined) return flying;
    if (this.flying.size >= this.o.maxInFlight || this.closed) {
      this.stats.overflow++;
      return Promise.resolve({ ok: false, error: this.closed ? 'closed' : 'busy', expires: 0 });
    }
    this.stats.queries++;
    const asked = this.ask(name, type).then((a) => {
      this.flying.delete(key);
      if (!a.ok) this.stats.failed++;
      if (a.expires > this.now()) this.cache.set(key, a, a.expires);
      return a;
    });
    this.flying.set(key, asked);
    return asked;
  }

  /** Stops: the questions in flight are answered "closed" and nothing new is sent. */
  close(): void {
    this.closed = true;
    for (const c of this.channels.values()) c.retire(true);
  }

  /** One question, each server in turn, at least twice in all; never rejects. */
  private ask(name: string, type: 'A' | 'TXT'): Promise<DnsAnswer> {
    const servers = this.o.servers;
    const tries = Math.max(2, servers.length);
    const query = { type, name: name.toLowerCase() };
    return new Promise((resolve) => {
      const attempt = (n: number): void => {
        // Stopped: nothing was learnt, nothing to keep.
        if (this.closed) return resolve({ ok: false, error: 'closed', expires: 0 });
        if (n >= tries) return resolve(this.failure(`no answer within ${tries} × ${this.o.timeoutMs} ms`));
        const channel = this.channelFor(servers[n % servers.length] as DnsServer);
        const timer = setTimeout(() => channel.forget(id), this.o.timeoutMs);
        const id = channel.send(query, (res) => {
          clearTimeout(timer);
          if (res === undefined) attempt(n + 1);
          else resolve(this.answerOf(res, type));
        });
      };
      attempt(0);
    });
  }

  /** The server's channel, a fresh one once it has carried its share of questions. */
  private channelFor(server: DnsServer): Channel {
    const key = describeServer(server);
    let c = this.channels.get(key);
    if (c === undefined || c.worn) {
      c?.retire();
      c = new Channel(server, () => this.channels.get(key) === c && this.channels.delete(key));
      this.channels.set(key, c);
    }
    return c;
  }

  private answerOf(res: ReturnType<typeof packet.decode>, type: 'A' | 'TXT'): DnsAnswer {
    const rcode = (res.flags ?? 0) & 15;
    if (rcode !== 0 && rcode !== 3) return this.failure(RCODES[rcode] ?? `rcode ${rcode}`);
    const records =
      rcode === 3 ? [] : (res.answers ?? []).filter((a): a is StringAnswer | TxtAnswer => a.type === type);
    if (records.length === 0) {
      // RFC 2308: a negative answer lasts the lower of the SOA record's TTL and its minimum field.
      const soa = (res.authorities ?? []).find((a) => a.type === 'SOA');
      const ttl = soa ? Math.min(soa.ttl ?? NEGATIVE_TTL_S, soa.data.minimum ?? NEGATIVE_TTL_S) : NEGATIVE_TTL_S;
      return { ok: true, records: [], expires: this.expiry(ttl) };
    }
    const ttl = Math.min(...records.map((a) => a.ttl ?? 0));
    return { ok: true, records: records.map(textOf), expires: this.expiry(ttl) };
  }

  private failure(error: string): DnsAnswer {
    return { ok: false, error, expires: this.expiry(FAILURE_TTL_S) };
  }

  /** A TTL of 0 is kept a second: every event of a client must not ask again. */
  private expiry(ttlSeconds: number): number {
    return this.now() + Math.min(MAX_TTL_S, Math.max(1, ttlSeconds)) * 1000;
  }
}

/** A question and, once it is over, what came back (undefined: no answer: timeout, error, stopped). */
type Waiting = (res: ReturnType<typeof packet.decode> | undefined) => void;

/** Questions one socket carries before a fresh one (on a new random port) takes over. */
const SOCKET_QUESTIONS = 500;

/**
 * One UDP socket to one server, on a port the kernel picked at random, for many questions (as c-ares
 * does; a socket per question cost twice the CPU), each with a random id; after SOCKET_QUESTIONS the
 * next socket takes over, and this one closes once its last question is over. Only a reply from the
 * server, with a pending id and that id's question, is read: a forged listing must guess both the port
 * and the id, within the time the question is out.
 */
class Channel {
  private readonly socket: Socket;
  private readonly pending = new Map<number, { q: { type: string; name: string }; done: Waiting }>();
  private sent = 0;
  private retired = false;
  private shut = false;

  constructor(
    private readonly server: DnsServer,
    private readonly gone: () => void,
  ) {
    this.socket = createSocket(isIPv6(server.host) ? 'udp6' : 'udp4');
    // An idle channel keeps no process alive; a question out has its timer for that.
    this.socket.unref();
    this.socket.on('message', (msg, from) => this.read(msg, from.address, from.port));
    // A socket that fails takes its questions with it; they go to the next try.
    this.socket.on('error', () => this.retire(true));
  }

  get worn(): boolean {
    return this.retired || this.sent >= SOCKET_QUESTIONS;
  }

  /** Sends a question; `done` is called once, with the reply or undefined. Returns its id. */
  send(q: { type: 'A' | 'TXT'; name: string }, done: Waiting): number {
    let id = randomInt(65_536);
    while (this.pending.has(id)) id = randomInt(65_536);
    this.pending.set(id, { q, done });
    this.sent++;
    const packetOut = packet.encode({
      type: 'query',
      id,
      flags: packet.RECURSION_DESIRED,
      questions: [{ type: q.type, name: q.name, class: 'IN' }],
    });
    this.socket.send(packetOut, this.server.port, this.server.host, (err) => {
      if (err) this.forget(id);
    });
    return id;
  }

  /** The question is over without a reply (its try timed out, or the send failed). */
  forget(id: number): void {
    const p = this.pending.get(id);
    if (p === undefined) return;
    this.pending.delete(id);
    p.done(undefined);
    this.closeIfIdle();
  }

  /** No new questions; with `now`, the pending ones end at once (unanswered). */
  retire(now = false): void {
    this.retired = true;
    if (now) for (const id of [...this.pending.keys()]) this.forget(id);
    this.closeIfIdle();
  }

  private closeIfIdle(): void {
    if (!this.retired || this.pending.size > 0 || this.shut) return;
    this.shut = true;
    this.gone();
    this.socket.close();
  }

  private read(msg: Buffer, address: string, port: number): void {
    if (address !== this.server.host || port !== this.server.port) return;
    let res: ReturnType<typeof packet.decode>;
    try {
      res = packet.decode(msg);
    } catch {
      return; // not a DNS packet: the real reply may still come
    }
    const p = res.id === undefined ? undefined : this.pending.get(res.id);
    const q = res.questions?.[0];
    if (p === undefined || !res.flag_qr || q?.type !== p.q.type || q.name.toLowerCase() !== p.q.name) return;
    this.pending.delete(res.id as number);
    p.done(res);
    this.closeIfIdle();
  }
}

/** An A record's address, or a TXT record's strings joined (RFC 7208 3.3: they are one text). */
function textOf(a: StringAnswer | TxtAnswer): string {
  if (a.type !== 'TXT') return a.data;
  const parts = Array.isArray(a.data) ? a.data : [a.data];
  return parts.map((p) => (typeof p === 'string' ? p : p.toString('utf8'))).join('');
}
