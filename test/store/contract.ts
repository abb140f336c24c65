/*
 * The store contract: what every backend must do, through the public async
 * interface only (await store.apply(...)). Run against MemoryStore
 * (contract-memory.test.ts) and RedisStore (contract-redis.test.ts).
 *
 * Time: every store is given the same simulated clock. MemoryStore takes it
 * as its `now`; RedisStore runs with `time: 'caller'` so its scripts use the
 * `now` passed in instead of Redis TIME. Window edges are then exact for
 * both; contract-redis.test.ts checks the server-clock path separately.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decide, type ApplyResult } from '../../src/engine/decide.js';
import { plan, type Plan } from '../../src/engine/plan.js';
import type { Policy } from '../../src/engine/policy.js';
import type { BanEffect, Decision, Effect, MailEvent, SuspendEffect } from '../../src/engine/types.js';
import { DISTINCT_CAP, usualAdd, usualRate, type Usual } from '../../src/store/counting.js';
import type { CommitResult, Store } from '../../src/store/types.js';
import { guessingContract } from './contract-guessing.js';
import { bitsOf, block, fromBig, holds, inside, justOutside, randomAddress, type Block } from '../helpers/cidr.js';
import { prng } from '../helpers/prng.js';
import {
  allowed,
  DAY,
  HOUR,
  makeEvent,
  MINUTE,
  peekCounts,
  rulesPolicy,
  SECOND,
  T0,
  type Outcome,
} from '../helpers/policy.js';

export interface MakeOptions {
  lookbackMs: number;
  /** The simulated clock (ms). */
  now: () => number;
}

/** Builds a fresh, empty store; `close` is called at the end of each test. */
export type MakeStore = (opts: MakeOptions) => Promise<Store> | Store;

/** The whole decision path on any store: plan → await apply → decide (→ commit, recordHits). */
export class AsyncHarness {
  now = T0;

  constructor(
    readonly policy: Policy,
    readonly store: Store,
  ) {}

  advance(ms: number): this {
    this.now += ms;
    return this;
  }

  async run(over: Partial<MailEvent> = {}): Promise<Outcome> {
    const event = makeEvent({ time: this.now, ...over });
    const p = plan(event, this.policy);
    const result = await this.store.apply(p, this.now);
    return { event, plan: p, result, decision: decide(event, this.policy, p, result) };
  }

  async handle(over: Partial<MailEvent> = {}): Promise<Outcome & { committed: CommitResult }> {
    const out = await this.run(over);
    const committed = await this.store.commit(out.decision.effects, this.now, 'mailwarden');
    await this.store.recordHits(out.event, out.decision.hits, this.now);
    return { ...out, committed };
  }

  async runMany(n: number, over: Partial<MailEvent> = {}): Promise<Decision[]> {
    const out: Decision[] = [];
    for (let i = 0; i < n; i++) out.push((await this.run(over)).decision);
    return out;
  }

  peek(over: Partial<MailEvent> = {}): Promise<Record<string, number>> {
    return peekCounts(this.store, this.policy, this.now, over);
  }
}

export const banEffect = (policy: Policy, subject: string, over: Partial<BanEffect> = {}): BanEffect => ({
  type: 'ban',
  subject,
  rule: 'manual',
  reason: 'by hand',
  evidence: {},
  escalation: policy.escalation,
  ...over,
});

const suspendEffect = (user: string, durationMs: number, over: Partial<SuspendEffect> = {}): SuspendEffect => ({
  type: 'suspend',
  user,
  rule: 'manual',
  reason: 'by hand',
  durationMs,
  evidence: { n: 1 },
  ...over,
});

export function storeContract(name: string, make: MakeStore): void {
  /** A store on a policy, with the harness's clock; closed after the test body. */
  async function withStore(policy: Policy, body: (h: AsyncHarness) => Promise<void>): Promise<void> {
    const clock = { h: undefined as AsyncHarness | undefined };
    const store = await make({ lookbackMs: policy.escalation.lookbackMs, now: () => clock.h?.now ?? T0 });
    const h = new AsyncHarness(policy, store);
    clock.h = h;
    try {
      await body(h);
    } finally {
      await store.close();
    }
  }

  void describe(`store contract: ${name}`, () => {
    guessingContract(withStore);
    void describe('rate limits (GCRA)', () => {
      const policy = rulesPolicy('  - {name: conn, on: [connect], key: ip, count: events, limit: 3, window: 1m}');

      void test('a burst of exactly the limit passes, the next is refused with count limit+1', () =>
        withStore(policy, async (h) => {
          const outs = [];
          for (let i = 0; i < 4; i++) outs.push(await h.run());
          assert.deepEqual(
            outs.map((o) => o.result.counters),
            [
              [{ count: 1, exceeded: false }],
              [{ count: 2, exceeded: false }],
              [{ count: 3, exceeded: false }],
              [{ count: 4, exceeded: true }],
            ],
          );
          assert.deepEqual(
            outs.map((o) => o.decision.action),
            ['allow', 'allow', 'allow', 'tempfail'],
          );
          assert.equal(outs[3]?.decision.rule, 'conn');
          assert.deepEqual(await h.peek(), { 'conn|192.0.2.10': 3 });
          assert.equal(outs[0]?.result.ban, undefined);
          assert.equal(outs[0]?.result.suspension, undefined);
        }));

      void test('window edge: one interval (20 s) later exactly one more fits; no fixed window resets', () =>
        withStore(policy, async (h) => {
          assert.equal(allowed(await h.runMany(5)), 3);
          h.advance(20 * SECOND - 1);
          assert.equal((await h.run()).decision.action, 'tempfail', 'one ms before the interval');
          h.advance(1);
          assert.deepEqual(
            (await h.runMany(2)).map((d) => d.action),
            ['allow', 'tempfail'],
          );
          // a full window after the last charge the counter is empty again
          h.advance(MINUTE);
          assert.deepEqual(await h.peek(), { 'conn|192.0.2.10': 0 });
          assert.equal(allowed(await h.runMany(4)), 3);
        }));

      void test('float tolerance: 7 per second at epoch-ms times passes all 7, refuses the 8th', () =>
        withStore(
          rulesPolicy('  - {name: fast, on: [connect], key: ip, count: events, limit: 7, window: 1s}'),
          async (h) => {
            h.advance(123);
            const d = await h.runMany(8);
            assert.deepEqual(
              d.map((x) => x.action),
              [...Array<string>(7).fill('allow'), 'tempfail'],
            );
          },
        ));

      void test('cost: recipients count by recipient_count; bytes by size', () =>
        withStore(
          rulesPolicy(
            [
              '  - {name: rcpt, on: [message], key: user, count: recipients, limit: 10, window: 1h}',
              '  - {name: bytes, on: [message], key: user, count: bytes, limit: 1000, window: 1h}',
            ].join('\n'),
          ),
          async (h) => {
            const msg = { kind: 'message' as const, user: 'u@example.org', recipients: 4, size: 300 };
            assert.deepEqual((await h.run(msg)).result.counters, [
              { count: 4, exceeded: false },
              { count: 300, exceeded: false },
            ]);
            assert.deepEqual((await h.run(msg)).result.counters, [
              { count: 8, exceeded: false },
              { count: 600, exceeded: false },
            ]);
            const third = await h.run(msg);
            assert.deepEqual(third.result.counters, [
              { count: 12, exceeded: true },
              { count: 900, exceeded: false },
            ]);
            assert.equal(third.decision.action, 'tempfail');
            // refused: neither counter was charged
            assert.deepEqual(await h.peek(msg), { 'rcpt|u@example.org': 8, 'bytes|u@example.org': 600 });
          },
        ));
    });

    void describe('charging modes', () => {
      void test('if-pass: a refused event charges none of the enforcing counters (the other limits are not used up)', () =>
        withStore(
          rulesPolicy(
            [
              '  - {name: per-ip, on: [connect], key: ip, count: events, limit: 2, window: 1h}',
              '  - {name: per-net, on: [connect], key: network, count: events, limit: 100, window: 1h}',
            ].join('\n'),
          ),
          async (h) => {
            assert.equal(allowed(await h.runMany(10)), 2);
            assert.deepEqual(await h.peek(), { 'per-ip|192.0.2.10': 2, 'per-net|192.0.2.0/24': 2 });
          },
        ));

      void test('if-conform: an observe-mode rule counts while within its limit and never refuses', () =>
        withStore(
          rulesPolicy('  - {name: watch, mode: observe, on: [connect], key: ip, count: events, limit: 2, window: 1h}'),
          async (h) => {
            const outs = [];
            for (let i = 0; i < 5; i++) outs.push(await h.run());
            assert.deepEqual(
              outs.map((o) => o.decision.action),
              Array<string>(5).fill('allow'),
            );
            assert.deepEqual(
              outs.map((o) => o.result.counters[0]?.count),
              [1, 2, 3, 3, 3],
            );
            assert.equal(outs[4]?.decision.hits[0]?.observe, true);
            assert.deepEqual(await h.peek(), { 'watch|192.0.2.10': 2 });
          },
        ));

      void test('if-conform: an allowlisted source is counted but never limited', () =>
        withStore(
          rulesPolicy(
            '  - {name: conn, on: [connect], key: ip, count: events, limit: 2, window: 1h}',
            'allowlist: {networks: [192.0.2.0/24]}',
          ),
          async (h) => {
            assert.equal(allowed(await h.runMany(4)), 4);
            assert.deepEqual(await h.peek(), { 'conn|192.0.2.10': 2 });
          },
        ));

      void test('always: a fact (a login result) is charged over the limit too; never: a check only reads', () =>
        withStore(
          rulesPolicy(
            '  - {name: fails, on: [auth-result], check_on: [auth-attempt], when: {success: false}, key: ip, count: failures, limit: 2, window: 1h, then: reject}',
          ),
          async (h) => {
            const fail = { kind: 'auth-result' as const, success: false, protocol: 'imap' };
            const attempt = { kind: 'auth-attempt' as const, protocol: 'imap' };
            for (let i = 0; i < 5; i++) await h.run(fail);
            assert.deepEqual(await h.peek(fail), { 'fails|192.0.2.10': 5 });
            for (let i = 0; i < 3; i++) assert.equal((await h.run(attempt)).decision.action, 'reject');
            assert.deepEqual(await h.peek(fail), { 'fails|192.0.2.10': 5 });
          },
        ));

      void test('a check on a fresh subject passes and charges nothing', () =>
        withStore(
          rulesPolicy(
            '  - {name: fails, on: [auth-result], check_on: [auth-attempt], when: {success: false}, key: ip, count: failures, limit: 1, window: 1h, then: reject}',
          ),
          async (h) => {
            const attempt = { kind: 'auth-attempt' as const, protocol: 'imap' };
            assert.deepEqual((await h.run(attempt)).result.counters, [{ count: 1, exceeded: false }]);
            assert.deepEqual((await h.run(attempt)).result.counters, [{ count: 1, exceeded: false }]);
          },
        ));
    });

    void describe('distinct counts', () => {
      const guess = rulesPolicy(
        "  - {name: sp, on: [auth-result], key: ip, count: 'distinct:pwhash', limit: 3, window: 10m}",
      );
      // No user: the known-good op (plan.knownGood) stays out of these plans.
      const fail = (pwhash: string): Partial<MailEvent> => ({
        kind: 'auth-result',
        success: false,
        pwhash,
        protocol: 'imap',
      });

      void test('a member seen again does not count twice; seen is reported', () =>
        withStore(guess, async (h) => {
          assert.deepEqual((await h.run(fail('a'))).result.counters, [{ count: 1, exceeded: false, seen: false }]);
          assert.deepEqual((await h.run(fail('a'))).result.counters, [{ count: 1, exceeded: false, seen: true }]);
          assert.deepEqual((await h.run(fail('b'))).result.counters, [{ count: 2, exceeded: false, seen: false }]);
          await h.run(fail('c'));
          const d = await h.run(fail('d'));
          assert.deepEqual(d.result.counters, [{ count: 4, exceeded: true, seen: false }]);
          assert.equal(d.decision.action, 'tempfail');
          assert.deepEqual(await h.peek(fail('x')), { 'sp|192.0.2.10': 4 }, 'a login result is always charged');
        }));

      void test('members expire individually at the end of the window', () =>
        withStore(guess, async (h) => {
          await h.run(fail('a'));
          h.advance(5 * MINUTE);
          await h.run(fail('b'));
          await h.run(fail('c'));
          assert.equal((await h.run(fail('d'))).decision.action, 'tempfail');
          h.advance(5 * MINUTE); // 'a' is now exactly one window old
          assert.deepEqual(await h.peek(fail('x')), { 'sp|192.0.2.10': 3 });
          assert.equal((await h.run(fail('d'))).decision.action, 'allow');
          assert.equal((await h.run(fail('e'))).decision.action, 'tempfail');
        }));

      void test(`the cap: past ${DISTINCT_CAP} members the count means "at least"`, () =>
        withStore(
          rulesPolicy(
            "  - {name: sp, mode: observe, on: [auth-result], key: ip, count: 'distinct:pwhash', limit: 10, window: 1h}",
          ),
          async (h) => {
            let last = 0;
            for (let i = 0; i < DISTINCT_CAP + 20; i++)
              last = (await h.run(fail(`h${i}`))).result.counters[0]?.count ?? -1;
            assert.equal(last, DISTINCT_CAP + 1);
            assert.deepEqual(Object.values(await h.peek(fail('x'))), [DISTINCT_CAP]);
          },
        ));

      void test('known-good sources: a successful login records its network; a failure only checks', () =>
        withStore(
          rulesPolicy('  - {name: conn, on: [connect], key: ip, count: events, limit: 5, window: 1m}'),
          async (h) => {
            const ok = {
              kind: 'auth-result' as const,
              success: true,
              protocol: 'imap',
              user: 'k@example.org',
              ip: '198.51.100.7',
            };
            const bad = { ...ok, success: false, ip: '203.0.113.9' };
            const knownGood = (o: { plan: Plan; result: ApplyResult }): unknown =>
              o.result.counters[o.plan.knownGood ?? -1];
            assert.deepEqual(knownGood(await h.run(bad)), { count: 1, exceeded: false, seen: false });
            await h.run(ok);
            assert.deepEqual(knownGood(await h.run(ok)), { count: 1, exceeded: false, seen: true });
            assert.deepEqual(knownGood(await h.run(bad)), { count: 2, exceeded: false, seen: false });
          },
        ));

      void test('a rule whose count kind changes starts its counters afresh', () =>
        withStore(
          rulesPolicy('  - {name: r, on: [auth-result], key: ip, count: events, limit: 5, window: 1h}'),
          async (h) => {
            const asSet = rulesPolicy(
              "  - {name: r, on: [auth-result], key: ip, count: 'distinct:pwhash', limit: 5, window: 1h}",
            );
            const ev = makeEvent({ kind: 'auth-result', success: false, pwhash: 'p1', time: h.now });
            for (let i = 0; i < 3; i++) await h.store.apply(plan(ev, h.policy), h.now);
            assert.deepEqual((await h.store.apply(plan(ev, asSet), h.now)).counters, [
              { count: 1, exceeded: false, seen: false },
            ]);
            assert.deepEqual(await h.store.peek(plan(ev, asSet).counters, h.now), [1]);
            assert.deepEqual((await h.store.apply(plan(ev, h.policy), h.now)).counters, [
              { count: 1, exceeded: false },
            ]);
          },
        ));
    });

    void describe('read op (detectors)', () => {
      const policy = rulesPolicy(
        [
          "  - {name: guess, on: [auth-result], when: {success: false}, key: ip, count: 'distinct:pwhash', limit: 100, window: 1h}",
          '  - {name: cracked, on: [auth-result], when: {success: true}, key: ip, uses: guess, limit: 3, then: {action: reject, ban: ip}}',
          '  - {name: conns, on: [connect], key: ip, count: events, limit: 10, window: 1m}',
          '  - {name: busy, on: [connect], key: ip, uses: conns, limit: 4, then: {action: allow}}',
        ].join('\n'),
      );
      const att = (success: boolean, pwhash: string): Partial<MailEvent> => ({
        kind: 'auth-result',
        success,
        pwhash,
        protocol: 'imap',
        user: 'v@example.org',
      });

      void test("a detector reads another rule's distinct count without charging it; fires at count ≥ limit", () =>
        withStore(policy, async (h) => {
          await h.run(att(false, 'a'));
          await h.run(att(false, 'b'));
          const early = await h.run(att(true, 'good'));
          assert.deepEqual(early.result.counters.slice(0, 1), [{ count: 2, exceeded: false }]);
          await h.run(att(false, 'c'));
          const late = await h.handle(att(true, 'good'));
          assert.deepEqual(late.result.counters.slice(0, 1), [{ count: 3, exceeded: true }]);
          assert.deepEqual([late.decision.action, late.decision.rule], ['reject', 'cracked']);
          assert.deepEqual(
            late.committed.bans.map((b) => b.subject),
            ['192.0.2.10'],
          );
          assert.deepEqual(await h.peek(att(false, 'z')), { 'guess|192.0.2.10': 3, 'known-good|v@example.org': 1 });
        }));

      void test("a detector reads another rule's rate count as it was before this event, and never blocks its charge", () =>
        withStore(policy, async (h) => {
          const counts = [];
          for (let i = 0; i < 6; i++) counts.push((await h.run()).result.counters.map((c) => [c.count, c.exceeded]));
          assert.deepEqual(counts, [
            [
              [1, false],
              [0, false],
            ],
            [
              [2, false],
              [1, false],
            ],
            [
              [3, false],
              [2, false],
            ],
            [
              [4, false],
              [3, false],
            ],
            [
              [5, false],
              [4, true],
            ],
            [
              [6, false],
              [5, true],
            ],
          ]);
          assert.deepEqual(await h.peek(), { 'conns|192.0.2.10': 6, 'busy|192.0.2.10': 6 });
        }));
    });

    void describe('usual rate (ewma op)', () => {
      const policy = rulesPolicy(
        '  - {name: burst, on: [message], when: {authenticated: true}, key: user, count: recipients, window: 1h, baseline: {factor: 10, floor: 50, half_life: 7d}, then: {action: hold, notify: true}}',
      );
      const sent = (n: number): Partial<MailEvent> => ({ kind: 'message', user: 'e@example.org', recipients: n });

      void test('recent and usual rates follow counting.ts usualAdd/usualRate (to 1e-9)', () =>
        withStore(policy, async (h) => {
          const tauRecent = HOUR;
          const tauUsual = (7 * DAY) / Math.LN2;
          let recent: Usual | undefined;
          let usual: Usual | undefined;
          for (const [gap, n] of [
            [0, 5],
            [10 * MINUTE, 3],
            [2 * HOUR, 7],
            [3 * DAY, 1],
            [30 * SECOND, 4],
          ] as const) {
            h.advance(gap);
            const out = await h.run(sent(n));
            const wantRecent = usualRate(recent, h.now, tauRecent) * HOUR + n;
            const wantUsual = usualRate(usual, h.now, tauUsual) * HOUR;
            const [r, u] = out.result.counters;
            assert.ok(
              Math.abs((r?.count ?? NaN) - wantRecent) <= 1e-9 * Math.max(1, wantRecent),
              `recent ${r?.count} vs ${wantRecent}`,
            );
            assert.ok(
              Math.abs((u?.count ?? NaN) - wantUsual) <= 1e-9 * Math.max(1, wantUsual),
              `usual ${u?.count} vs ${wantUsual}`,
            );
            assert.equal(r?.exceeded, false);
            assert.equal(out.decision.action, 'allow');
            recent = usualAdd(recent, h.now, tauRecent, n);
            usual = usualAdd(usual, h.now, tauUsual, n);
          }
          const p = await h.peek(sent(1));
          assert.ok(Math.abs((p['burst|e@example.org'] ?? NaN) - usualRate(recent, h.now, tauRecent) * HOUR) < 1e-9);
          assert.ok(
            Math.abs((p['burst|e@example.org|usual'] ?? NaN) - usualRate(usual, h.now, tauUsual) * HOUR) < 1e-9,
          );
        }));

      void test('a burst far above the floor is held; the store charges it anyway (only decide knows the baseline limit)', () =>
        withStore(policy, async (h) => {
          assert.equal((await h.run(sent(40))).decision.action, 'allow');
          const held = await h.run(sent(20));
          assert.equal(held.decision.action, 'hold');
          assert.equal(held.decision.hits[0]?.limit, 50);
          const p = await h.peek(sent(1));
          assert.ok(Math.abs((p['burst|e@example.org'] ?? 0) - 60) < 1e-6, JSON.stringify(p));
        }));
    });

    void describe('bans', () => {
      const policy = rulesPolicy(
        '  - {name: conn, on: [connect], key: ip, count: events, limit: 3, window: 1m, then: {action: reject, ban: ip}}',
        'bans: {duration: 1h, factor: 4, max: 1d, lookback: 7d}',
      );

      void test('a rule bans; the ban refuses every protocol; one offence is one ban; the audit row has the evidence', () =>
        withStore(policy, async (h) => {
          await h.runMany(3);
          const out = await h.handle();
          assert.deepEqual(out.committed.bans, [
            {
              subject: '192.0.2.10',
              since: T0,
              until: T0 + HOUR,
              rule: 'conn',
              reason: out.decision.reason,
              offence: 1,
              actor: 'mailwarden',
            },
          ]);
          // A second request of the same attack fires the rule again before the ban is seen: no second ban.
          assert.deepEqual((await h.store.commit(out.decision.effects, h.now, 'mailwarden')).bans, []);
          h.advance(MINUTE);
          for (const over of [{}, { kind: 'auth-attempt' as const, protocol: 'imap', user: 'x@example.org' }]) {
            const d = await h.run(over);
            assert.deepEqual([d.decision.action, d.decision.rule], ['reject', 'ban']);
            assert.equal(d.result.ban?.subject, '192.0.2.10');
          }
          assert.deepEqual(
            (await h.store.listBans(h.now)).map((b) => [b.subject, b.until, b.offence]),
            [['192.0.2.10', T0 + HOUR, 1]],
          );
          const rows = await h.store.auditFor(['192.0.2.10'], 10);
          const ban = rows.find((r) => r.kind === 'ban');
          assert.ok(ban, JSON.stringify(rows));
          assert.equal(ban.evidence.offence, 1);
          assert.equal(ban.evidence.until, T0 + HOUR);
          assert.equal(ban.evidence.count, 4);
          assert.equal(ban.evidence.ip, '192.0.2.10');
          assert.equal(ban.actor, 'mailwarden');
          assert.equal(ban.time, T0);
        }));

      void test('escalation: the next offence within the look-back is 4× longer; capped at max; forgotten after it', () =>
        withStore(policy, async (h) => {
          const e = banEffect(policy, '198.51.100.1', { durationMs: undefined });
          const lengths: number[] = [];
          for (let i = 0; i < 4; i++) {
            const [b] = (await h.store.commit([e], h.now, 'mailwarden')).bans;
            assert.equal(b?.offence, i + 1);
            lengths.push((b?.until ?? 0) - h.now);
            h.now = b?.until ?? h.now;
          }
          assert.deepEqual(lengths, [HOUR, 4 * HOUR, 16 * HOUR, DAY]);
          h.advance(8 * DAY);
          const [fresh] = (await h.store.commit([e], h.now, 'mailwarden')).bans;
          assert.deepEqual([fresh?.offence, (fresh?.until ?? 0) - h.now], [1, HOUR]);
        }));

      void test('the longest-lasting ban covering the client is returned; a network ban covers its addresses', () =>
        withStore(policy, async (h) => {
          await h.store.commit(
            [
              banEffect(policy, '192.0.2.10', { durationMs: HOUR }),
              banEffect(policy, '192.0.2.0/24', { durationMs: 3 * HOUR }),
            ],
            h.now,
            'cli',
          );
          assert.equal((await h.run()).result.ban?.subject, '192.0.2.0/24');
          assert.equal((await h.run({ ip: '192.0.2.77' })).result.ban?.subject, '192.0.2.0/24');
          assert.equal((await h.run({ ip: '192.0.3.1' })).result.ban, undefined);
          h.advance(2 * HOUR);
          assert.equal((await h.run()).result.ban?.subject, '192.0.2.0/24');
          h.advance(HOUR);
          assert.equal((await h.run()).result.ban, undefined, 'expired at until');
          assert.deepEqual(await h.store.listBans(h.now), []);
        }));

      void test('a manual ban with a length replaces the running one; unban lifts it and is audited', () =>
        withStore(policy, async (h) => {
          await h.store.commit([banEffect(policy, '203.0.113.0/24', { durationMs: HOUR })], h.now, 'cli');
          h.advance(MINUTE);
          const [again] = (
            await h.store.commit([banEffect(policy, '203.0.113.0/24', { durationMs: 2 * HOUR })], h.now, 'api:ops')
          ).bans;
          assert.deepEqual(
            [again?.since, again?.until, again?.offence, again?.actor],
            [T0 + MINUTE, T0 + MINUTE + 2 * HOUR, 2, 'api:ops'],
          );
          const gone = await h.store.unban('203.0.113.0/24', 'cli', h.now, 'lifted');
          assert.equal(gone?.subject, '203.0.113.0/24');
          assert.equal(await h.store.unban('203.0.113.0/24', 'cli', h.now, 'again'), undefined);
          assert.equal((await h.run({ ip: '203.0.113.5' })).decision.action, 'allow');
          assert.deepEqual(await h.store.listBans(h.now), []);
          const rows = await h.store.auditFor(['203.0.113.0/24'], 10);
          assert.deepEqual(
            rows.map((r) => r.kind),
            ['unban', 'ban', 'ban'],
          );
          assert.equal(rows[0]?.reason, 'lifted');
          assert.equal((rows[0]?.evidence.was as { until: number }).until, T0 + MINUTE + 2 * HOUR);
        }));

      void test('listBans: active only, newest first', () =>
        withStore(policy, async (h) => {
          await h.store.commit([banEffect(policy, '198.51.100.1', { durationMs: HOUR })], h.now, 'cli');
          h.advance(MINUTE);
          await h.store.commit([banEffect(policy, '198.51.100.2', { durationMs: 10 * MINUTE })], h.now, 'cli');
          h.advance(MINUTE);
          await h.store.commit([banEffect(policy, '198.51.100.3', { durationMs: HOUR })], h.now, 'cli');
          assert.deepEqual(
            (await h.store.listBans(h.now)).map((b) => b.subject),
            ['198.51.100.3', '198.51.100.2', '198.51.100.1'],
          );
          h.advance(9 * MINUTE);
          assert.deepEqual(
            (await h.store.listBans(h.now)).map((b) => b.subject),
            ['198.51.100.3', '198.51.100.1'],
          );
        }));

      void test('IPv6: the third banned /64 inside one /48 bans the /48; a lifted /64 no longer counts', () => {
        const v6 = rulesPolicy(
          '  - {name: conn, on: [connect], key: ip, count: events, limit: 1, window: 1m, then: {action: reject, ban: network}}',
          'bans: {duration: 1h, factor: 4, max: 1d, lookback: 7d, ipv6_aggregate: {prefix: 48, threshold: 3}}',
        );
        return withStore(v6, async (h) => {
          const attack = async (ip: string): Promise<string[]> => {
            await h.run({ ip });
            const out = await h.handle({ ip });
            return out.committed.bans.map((b) => b.subject);
          };
          assert.deepEqual(await attack('2001:db8:1:1::5'), ['2001:db8:1:1::/64']);
          assert.deepEqual(await attack('2001:db8:1:2::5'), ['2001:db8:1:2::/64']);
          await h.store.unban('2001:db8:1:2::/64', 'cli', h.now, 'mistake');
          assert.deepEqual(await attack('2001:db8:1:3::5'), ['2001:db8:1:3::/64']);
          h.advance(MINUTE);
          const out = await attack('2001:db8:1:4::5');
          assert.deepEqual(out, ['2001:db8:1:4::/64', '2001:db8:1::/48']);
          const rows = await h.store.auditFor(['2001:db8:1::/48'], 5);
          assert.equal(rows[0]?.reason, '3 banned networks inside 2001:db8:1::/48 (threshold 3)');
          assert.deepEqual([...(rows[0]?.evidence.networks as string[])].sort(), [
            '2001:db8:1:1::/64',
            '2001:db8:1:3::/64',
            '2001:db8:1:4::/64',
          ]);
          assert.equal(rows[0]?.evidence.trigger, '2001:db8:1:4::/64');
          assert.equal((await h.run({ ip: '2001:db8:1:ffff::1' })).result.ban?.subject, '2001:db8:1::/48');
        });
      });

      void describe('a ban of any prefix length', () => {
        // No allowlist, so that a random block may hold any address; no counter on connect.
        const any = rulesPolicy(
          '  - {name: helos, on: [helo], key: ip, count: events, limit: 1000, window: 1m}',
          'allowlist: {networks: []}',
        );
        const banOf = async (h: AsyncHarness, n: bigint, v6: boolean): Promise<string | undefined> =>
          (await h.run({ ip: fromBig(n, v6) })).result.ban?.subject;

        void test('covers every address inside it and none just outside, for every length 1–32 and 1–128', () =>
          withStore(any, async (h) => {
            const rand = prng(2026);
            for (const v6 of [false, true]) {
              for (let len = 1; len <= bitsOf(v6); len++) {
                const b = block(randomAddress(rand, v6), len, v6);
                await h.store.commit([banEffect(any, b.text, { durationMs: HOUR })], h.now, 'cli');
                for (const n of [b.first, b.last, inside(rand, b)])
                  assert.equal(await banOf(h, n, v6), b.text, `${fromBig(n, v6)} inside ${b.text}`);
                for (const n of justOutside(b))
                  assert.equal(await banOf(h, n, v6), undefined, `${fromBig(n, v6)} outside ${b.text}`);
                assert.ok(await h.store.unban(b.text, 'cli', h.now, 'next length'));
                assert.equal(await banOf(h, b.first, v6), undefined, `${b.text} lifted`);
              }
            }
          }));

        void test('bans of every length in force at once: an address is banned exactly when one holds it', () =>
          withStore(any, async (h) => {
            const rand = prng(7);
            const blocks: Block[] = [];
            for (const v6 of [false, true])
              for (let len = 1; len <= bitsOf(v6); len++) blocks.push(block(randomAddress(rand, v6), len, v6));
            for (const b of blocks)
              await h.store.commit([banEffect(any, b.text, { durationMs: HOUR + b.len })], h.now, 'cli');
            assert.equal((await h.store.listBans(h.now)).length, blocks.length);
            for (const b of blocks) {
              for (const n of [inside(rand, b), ...justOutside(b), randomAddress(rand, b.v6)]) {
                const holding = blocks.filter((o) => o.v6 === b.v6 && holds(o, n));
                // The longest-lasting ban holding it: here the longest prefix.
                const want = holding.sort((x, y) => y.len - x.len)[0]?.text;
                assert.equal(await banOf(h, n, b.v6), want, fromBig(n, b.v6));
              }
            }
          }));

        void test('/0 refuses every address of its family, and ends like any other ban', () =>
          withStore(any, async (h) => {
            await h.store.commit([banEffect(any, '0.0.0.0/0', { durationMs: HOUR })], h.now, 'cli');
            assert.equal((await h.run({ ip: '8.8.8.8' })).decision.action, 'reject');
            assert.equal((await h.run({ ip: '255.255.255.255' })).result.ban?.subject, '0.0.0.0/0');
            assert.equal((await h.run({ ip: '2001:db8::1' })).result.ban, undefined);
            await h.store.commit([banEffect(any, '::/0', { durationMs: 2 * HOUR })], h.now, 'cli');
            assert.equal((await h.run({ ip: '2001:db8::1' })).result.ban?.subject, '::/0');
            h.advance(HOUR);
            assert.equal((await h.run({ ip: '8.8.8.8' })).result.ban, undefined);
            assert.equal((await h.run({ ip: '2a00::1' })).result.ban?.subject, '::/0');
          }));
      });

      void test('a trusted network is never checked for bans', () =>
        withStore(
          rulesPolicy(
            '  - {name: conn, on: [connect], key: ip, count: events, limit: 3, window: 1m}',
            'allowlist: {networks: [192.0.2.0/24]}',
          ),
          async (h) => {
            await h.store.commit([banEffect(h.policy, '192.0.2.0/24', { durationMs: HOUR })], h.now, 'cli');
            assert.equal((await h.run()).decision.action, 'allow');
          },
        ));
    });

    void describe('suspensions', () => {
      const policy = rulesPolicy(
        '  - {name: msgs, on: [message], when: {authenticated: true}, key: user, count: messages, limit: 100, window: 1h}',
      );
      const msg = { kind: 'message' as const, user: 's@example.org', recipients: 1 };

      void test('a suspension refuses sending (not logins by default); it extends, never shortens; resume lifts it', () =>
        withStore(policy, async (h) => {
          const [s] = (await h.store.commit([suspendEffect('s@example.org', HOUR)], h.now, 'cli')).suspensions;
          assert.deepEqual(s, {
            user: 's@example.org',
            since: T0,
            until: T0 + HOUR,
            rule: 'manual',
            reason: 'by hand',
            actor: 'cli',
          });
          const d = await h.run(msg);
          assert.deepEqual([d.decision.action, d.decision.rule], ['reject', 'suspension']);
          assert.deepEqual(d.result.suspension, s);
          assert.deepEqual(await h.peek(msg), { 'msgs|s@example.org': 0 }, 'a refused message is not counted');
          assert.equal(
            (await h.run({ kind: 'auth-attempt', user: 's@example.org', protocol: 'imap' })).decision.action,
            'allow',
          );
          h.advance(MINUTE);
          const [shorter] = (
            await h.store.commit([suspendEffect('s@example.org', 10 * MINUTE, { rule: 'other' })], h.now, 'cli')
          ).suspensions;
          assert.deepEqual([shorter?.since, shorter?.until, shorter?.rule], [T0, T0 + HOUR, 'other']);
          const [longer] = (await h.store.commit([suspendEffect('s@example.org', 2 * HOUR)], h.now, 'cli')).suspensions;
          assert.deepEqual([longer?.since, longer?.until], [T0, T0 + MINUTE + 2 * HOUR]);
          assert.deepEqual(
            (await h.store.listSuspensions(h.now)).map((x) => [x.user, x.until]),
            [['s@example.org', T0 + MINUTE + 2 * HOUR]],
          );
          const gone = await h.store.resume('s@example.org', 'cli', h.now, 'ok');
          assert.equal(gone?.user, 's@example.org');
          assert.equal(await h.store.resume('s@example.org', 'cli', h.now, 'ok'), undefined);
          assert.equal((await h.run(msg)).decision.action, 'allow');
          assert.deepEqual(await h.store.listSuspensions(h.now), []);
          const rows = await h.store.auditFor(['s@example.org'], 10);
          assert.deepEqual(
            rows.map((r) => r.kind),
            ['resume', 'suspend', 'suspend', 'suspend'],
          );
          assert.deepEqual(rows[3]?.evidence, { n: 1, until: T0 + HOUR });
        }));

      void test('a suspension ends at its until; block_login refuses logins too', () =>
        withStore(
          rulesPolicy(
            '  - {name: x, on: [connect], key: ip, count: events, limit: 9, window: 1m}',
            'suspensions: {block_login: true}',
          ),
          async (h) => {
            await h.store.commit([suspendEffect('s@example.org', HOUR)], h.now, 'cli');
            assert.equal(
              (await h.run({ kind: 'auth-attempt', user: 's@example.org', protocol: 'imap' })).decision.rule,
              'suspension',
            );
            h.advance(HOUR);
            assert.equal((await h.run(msg)).decision.action, 'allow');
            assert.deepEqual(await h.store.listSuspensions(h.now), []);
          },
        ));

      void test('a rule suspends the user and bans the source in one commit', () =>
        withStore(
          rulesPolicy(
            '  - {name: flood, on: [message], when: {authenticated: true}, key: user, count: messages, limit: 1, window: 1h, then: {action: reject, ban: ip, suspend: 1d, notify: true}}',
          ),
          async (h) => {
            await h.run(msg);
            const out = await h.handle(msg);
            assert.deepEqual(
              out.decision.effects.map((e: Effect) => e.type),
              ['ban', 'suspend', 'notify'],
            );
            assert.deepEqual(
              out.committed.bans.map((b) => b.subject),
              ['192.0.2.10'],
            );
            assert.deepEqual(
              out.committed.suspensions.map((s) => [s.user, s.until]),
              [['s@example.org', T0 + DAY]],
            );
          },
        ));
    });

    void describe('audit trail', () => {
      void test('hits are audited once per rule and subject per minute; newest first; limited', () =>
        withStore(
          rulesPolicy('  - {name: watch, mode: observe, on: [connect], key: ip, count: events, limit: 1, window: 1m}'),
          async (h) => {
            for (let i = 0; i < 3; i++) {
              await h.handle();
              await h.handle();
              await h.handle();
              h.advance(MINUTE);
            }
            const rows = await h.store.auditFor(['192.0.2.10'], 2);
            assert.deepEqual(
              rows.map((r) => [r.kind, r.time, r.rule, r.subject, r.actor]),
              [
                ['observe', T0 + 2 * MINUTE, 'watch', '192.0.2.10', 'mailwarden'],
                ['observe', T0 + MINUTE, 'watch', '192.0.2.10', 'mailwarden'],
              ],
            );
            assert.ok((rows[0]?.id ?? 0) > (rows[1]?.id ?? 0));
            assert.deepEqual(rows[0]?.evidence, {
              event: 'connect',
              protocol: 'smtp',
              ip: '192.0.2.10',
              count: 2,
              limit: 1,
              action: 'tempfail',
            });
            assert.equal((await h.store.auditFor(['192.0.2.10'], 10)).length, 3);
            assert.deepEqual(await h.store.auditFor([], 10), []);
            assert.deepEqual(await h.store.auditFor(['203.0.113.1'], 10), []);
          },
        ));

      void test('rows of several subjects come back merged, newest first', () =>
        withStore(
          rulesPolicy('  - {name: x, on: [connect], key: ip, count: events, limit: 9, window: 1m}'),
          async (h) => {
            const p = h.policy;
            await h.store.commit([banEffect(p, '198.51.100.1', { durationMs: HOUR })], h.now, 'cli');
            h.advance(SECOND);
            await h.store.commit([suspendEffect('m@example.org', HOUR)], h.now, 'cli');
            h.advance(SECOND);
            await h.store.commit([banEffect(p, '198.51.100.2', { durationMs: HOUR })], h.now, 'cli');
            const rows = await h.store.auditFor(['198.51.100.1', 'm@example.org', '198.51.100.2', '198.51.100.1'], 10);
            assert.deepEqual(
              rows.map((r) => r.subject),
              ['198.51.100.2', 'm@example.org', '198.51.100.1'],
            );
            assert.deepEqual(
              (await h.store.auditFor(['198.51.100.1', 'm@example.org', '198.51.100.2'], 2)).map((r) => r.subject),
              ['198.51.100.2', 'm@example.org'],
            );
          },
        ));
      void test('auditSearch: every subject newest first from a time on, or one subject; total and pages', () =>
        withStore(
          rulesPolicy('  - {name: x, on: [connect], key: ip, count: events, limit: 9, window: 1m}'),
          async (h) => {
            const p = h.policy;
            const start = h.now;
            await h.store.commit([banEffect(p, '198.51.100.1', { durationMs: HOUR })], h.now, 'cli');
            h.advance(SECOND);
            await h.store.commit([suspendEffect('m@example.org', HOUR)], h.now, 'cli');
            h.advance(SECOND);
            await h.store.commit([banEffect(p, '198.51.100.2', { durationMs: HOUR })], h.now, 'cli');
            await h.store.unban('198.51.100.1', 'cli', h.now, 'lifted');
            const all = await h.store.auditSearch({ since: 0, limit: 10, offset: 0 });
            assert.equal(all.total, 4);
            assert.deepEqual(
              all.items.map((r) => [r.kind, r.subject]),
              [
                ['unban', '198.51.100.1'],
                ['ban', '198.51.100.2'],
                ['suspend', 'm@example.org'],
                ['ban', '198.51.100.1'],
              ],
            );
            const recent = await h.store.auditSearch({ since: start + SECOND, limit: 10, offset: 0 });
            assert.deepEqual(
              [recent.total, recent.items.map((r) => r.subject)],
              [3, ['198.51.100.1', '198.51.100.2', 'm@example.org']],
            );
            const one = await h.store.auditSearch({ since: 0, subject: '198.51.100.1', limit: 10, offset: 0 });
            assert.deepEqual(
              [one.total, one.items.map((r) => r.kind)],
              [2, ['unban', 'ban']],
            );
            const page = await h.store.auditSearch({ since: 0, limit: 2, offset: 1 });
            assert.deepEqual(
              [page.total, page.items.map((r) => r.subject)],
              [4, ['198.51.100.2', 'm@example.org']],
            );
            const none = await h.store.auditSearch({ since: h.now + 1, limit: 10, offset: 0 });
            assert.deepEqual([none.total, none.items], [0, []]);
          },
        ));
    });

    void describe('peek', () => {
      void test('peek reads every kind of counter and charges nothing', () =>
        withStore(
          rulesPolicy(
            [
              '  - {name: conn, on: [connect], key: ip, count: events, limit: 10, window: 1h}',
              "  - {name: sp, on: [auth-result], key: ip, count: 'distinct:pwhash', limit: 5, window: 1h}",
            ].join('\n'),
          ),
          async (h) => {
            await h.runMany(7);
            for (const p of ['p1', 'p2', 'p3', 'p2']) await h.run({ kind: 'auth-result', success: false, pwhash: p });
            for (let i = 0; i < 3; i++) {
              assert.deepEqual(await h.peek(), { 'conn|192.0.2.10': 7 });
              assert.deepEqual(await h.peek({ kind: 'auth-result', success: false, pwhash: 'x' }), {
                'sp|192.0.2.10': 3,
              });
            }
            assert.deepEqual(await h.store.peek([], h.now), []);
            h.advance(HOUR);
            assert.deepEqual(await h.peek(), { 'conn|192.0.2.10': 0 });
            assert.deepEqual(await h.peek({ kind: 'auth-result', success: false, pwhash: 'x' }), {
              'sp|192.0.2.10': 0,
            });
          },
        ));
    });

    void test('stats name the backend and report their numbers', () =>
      withStore(
        rulesPolicy('  - {name: x, on: [connect], key: ip, count: events, limit: 9, window: 1m}'),
        async (h) => {
          await h.run();
          const s = h.store.stats(h.now);
          assert.equal(typeof s.backend, 'string');
          assert.equal(s.backend, h.store.backend);
          for (const k of ['counterKeys', 'evictions', 'activeBans', 'activeSuspensions'] as const)
            assert.equal(typeof s[k], 'number');
        },
      ));
  });
}
