/*
 * bench/policy-client — the load generator: one process, many persistent
 * connections to a Postfix policy service, like the smtpd processes of a busy
 * Postfix.
 *
 * Two modes share one engine:
 *   closedLoop  each connection sends one request, waits for the answer, sends
 *               the next (exactly what Postfix does), for a warm-up then a
 *               measured duration; latency is recorded per request.
 *   fill        as fast as possible: each connection keeps `depth` requests in
 *               flight (a policy server must answer pipelined requests in
 *               order, mailwarden does), until a count is sent. Used to load a
 *               million client addresses quickly; not a latency measurement.
 *
 * Hot path: requests are pre-built Buffers (closed loop) or one string
 * concatenation (fill); replies are found by scanning for "\n\n" in the raw
 * bytes; latencies go into a 1 µs histogram. A reply that does not start with
 * `action=` is counted as invalid (the caller fails the run on it).
 */
import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Workload } from './requests.js';

export type Target = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export function describe(t: Target): string {
  return t.kind === 'tcp' ? `${t.host}:${t.port}` : t.path;
}

export interface LoadResult {
  /** Replies received inside the measured window. */
  measured: number;
  seconds: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** All replies, warm-up included. */
  replies: number;
  dunno: number;
  /** Valid replies other than `action=DUNNO`. */
  other: number;
  otherSamples: Map<string, number>;
  invalid: number;
  invalidSample: string | undefined;
  errors: string[];
}

const NLNL = Buffer.from('\n\n');
const ACTION = Buffer.from('action=');
const DUNNO = Buffer.from('action=DUNNO\n\n');
const HIST_US = 1_000_000;

interface Conn {
  id: number;
  sock: Socket;
  leftover: Buffer | null;
  sentAt: Float64Array;
  head: number;
  tail: number;
  inflight: number;
  stopped: boolean;
  finished: boolean;
}

interface EngineOptions {
  target: Target;
  connections: number;
  depth: number;
  warmupMs: number;
  /** Measured duration; Infinity to run until the source is exhausted. */
  durationMs: number;
  /** Next request for a connection, or null when it has nothing more to send. */
  next: (conn: number) => Buffer | string | null;
  /** Give up (and report an error) after this long. */
  timeoutMs: number;
}

function open(t: Target): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = t.kind === 'tcp' ? connect({ host: t.host, port: t.port }) : connect({ path: t.path });
    s.once('connect', () => {
      s.off('error', reject);
      s.setNoDelay(true);
      resolve(s);
    });
    s.once('error', reject);
  });
}

async function run(o: EngineOptions): Promise<LoadResult> {
  const socks = await Promise.all(Array.from({ length: o.connections }, () => open(o.target)));
  const hist = new Uint32Array(HIST_US + 1);
  const res: LoadResult = {
    measured: 0,
    seconds: 0,
    rps: 0,
    p50Ms: 0,
    p99Ms: 0,
    maxMs: 0,
    replies: 0,
    dunno: 0,
    other: 0,
    otherSamples: new Map(),
    invalid: 0,
    invalidSample: undefined,
    errors: [],
  };
  let maxUs = 0;
  let latencies = 0;
  const t0 = performance.now();
  const measureStart = t0 + o.warmupMs;
  const end = measureStart + o.durationMs;
  let remaining = o.connections;

  return new Promise<LoadResult>((resolve) => {
    let settled = false;
    const finishAll = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(guard);
      const stop = Math.min(performance.now(), end);
      res.seconds = Math.max(0.001, (stop - Math.max(t0, measureStart)) / 1000);
      res.rps = res.measured / res.seconds;
      res.maxMs = maxUs / 1000;
      const pct = (q: number): number => {
        if (latencies === 0) return 0;
        const want = Math.ceil(q * latencies);
        let acc = 0;
        for (let i = 0; i <= HIST_US; i++) {
          acc += hist[i] as number;
          if (acc >= want) return i / 1000;
        }
        return HIST_US / 1000;
      };
      res.p50Ms = pct(0.5);
      res.p99Ms = pct(0.99);
      for (const s of socks) s.destroy();
      resolve(res);
    };
    const guard = setTimeout(() => {
      res.errors.push(`stalled: not finished after ${Math.round(o.timeoutMs / 1000)} s`);
      finishAll();
    }, o.timeoutMs);

    const conns: Conn[] = socks.map((sock, id) => ({
      id,
      sock,
      leftover: null,
      sentAt: new Float64Array(o.depth),
      head: 0,
      tail: 0,
      inflight: 0,
      stopped: false,
      finished: false,
    }));

    const done = (c: Conn): void => {
      if (c.finished) return;
      c.finished = true;
      c.sock.end();
      if (--remaining === 0) finishAll();
    };

    /** Tops the connection up to `depth` requests in flight, in one write. */
    const pump = (c: Conn): void => {
      if (c.stopped) {
        if (c.inflight === 0) done(c);
        return;
      }
      const now = performance.now();
      if (now >= end) {
        c.stopped = true;
        if (c.inflight === 0) done(c);
        return;
      }
      let batch: Buffer | string | undefined;
      let parts: Array<Buffer | string> | undefined;
      while (c.inflight < o.depth) {
        const req = o.next(c.id);
        if (req === null) {
          c.stopped = true;
          break;
        }
        c.sentAt[c.tail] = now;
        c.tail = (c.tail + 1) % o.depth;
        c.inflight++;
        if (batch === undefined) batch = req;
        else (parts ??= [batch]).push(req);
      }
      if (parts) c.sock.write(typeof parts[0] === 'string' ? parts.join('') : Buffer.concat(parts as Buffer[]));
      else if (batch !== undefined) c.sock.write(batch);
      else if (c.inflight === 0) done(c);
    };

    const reply = (c: Conn, buf: Buffer, s: number, e: number, now: number): void => {
      res.replies++;
      if (c.inflight === 0) {
        res.invalid++;
        res.invalidSample ??= `unsolicited reply ${JSON.stringify(buf.toString('latin1', s, Math.min(e, s + 80)))}`;
        return;
      }
      const sent = c.sentAt[c.head] as number;
      c.head = (c.head + 1) % o.depth;
      c.inflight--;
      if (e - s === DUNNO.length && buf.compare(DUNNO, 0, DUNNO.length, s, e) === 0) res.dunno++;
      else if (e - s > ACTION.length && buf.compare(ACTION, 0, ACTION.length, s, s + ACTION.length) === 0) {
        res.other++;
        const text = buf.toString('latin1', s + ACTION.length, Math.min(e - 2, s + 120));
        if (res.otherSamples.has(text) || res.otherSamples.size < 8)
          res.otherSamples.set(text, (res.otherSamples.get(text) ?? 0) + 1);
      } else {
        res.invalid++;
        res.invalidSample ??= JSON.stringify(buf.toString('latin1', s, Math.min(e, s + 80)));
      }
      if (now >= measureStart && now <= end) {
        res.measured++;
        if (sent >= measureStart) {
          const us = Math.round((now - sent) * 1000);
          if (us > maxUs) maxUs = us;
          hist[us < HIST_US ? us : HIST_US]!++;
          latencies++;
        }
      }
    };

    for (const c of conns) {
      c.sock.on('data', (chunk: Buffer) => {
        const now = performance.now();
        const buf = c.leftover ? Buffer.concat([c.leftover, chunk]) : chunk;
        let start = 0;
        for (;;) {
          const k = buf.indexOf(NLNL, start);
          if (k < 0) break;
          reply(c, buf, start, k + 2, now);
          start = k + 2;
        }
        c.leftover = start < buf.length ? Buffer.from(buf.subarray(start)) : null;
        if (c.leftover && c.leftover.length > 65_536) {
          res.errors.push(`connection ${c.id}: over 64 KiB without a complete reply`);
          c.sock.destroy();
          return;
        }
        pump(c);
      });
      c.sock.on('error', (err) => {
        if (!c.finished) res.errors.push(`connection ${c.id}: ${err.message}`);
      });
      c.sock.on('close', () => {
        if (!c.finished) {
          if (!(c.stopped && c.inflight === 0))
            res.errors.push(`connection ${c.id} closed by the server with ${c.inflight} request(s) unanswered`);
          c.stopped = true;
          done(c);
        }
      });
    }
    for (const c of conns) pump(c);
  });
}

/** Postfix-like load: one request in flight per connection, warm-up then a measured duration. */
export function closedLoop(target: Target, w: Workload, warmupMs: number, durationMs: number): Promise<LoadResult> {
  const state = w.perConn.map(() => ({ idx: 0, cycle: 0 }));
  return run({
    target,
    connections: w.perConn.length,
    depth: 1,
    warmupMs,
    durationMs,
    timeoutMs: warmupMs + durationMs + 30_000,
    next: (id) => {
      const c = w.perConn[id]!;
      const st = state[id]!;
      const i = st.idx;
      const req = c.reqs[i]!;
      // A new client_port per session and cycle: every request differs from its previous round.
      let p = 10_000 + ((st.cycle * 7919 + (c.sessions[i] as number)) % 55_000);
      const off = c.portOffsets[i] as number;
      for (let k = 4; k >= 0; k--) {
        req[off + k] = 48 + (p % 10);
        p = Math.floor(p / 10);
      }
      if (++st.idx === c.reqs.length) {
        st.idx = 0;
        st.cycle++;
      }
      return req;
    },
  });
}

/** Sends `count` requests made by `make(i)`, `depth` in flight per connection, as fast as the server answers. */
export function fill(
  target: Target,
  connections: number,
  depth: number,
  count: number,
  make: (i: number) => string,
  timeoutMs: number,
): Promise<LoadResult> {
  let i = 0;
  return run({
    target,
    connections,
    depth,
    warmupMs: 0,
    durationMs: Infinity,
    timeoutMs,
    next: () => (i < count ? make(i++) : null),
  });
}
