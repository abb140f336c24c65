/*
 * Fault suite: `kill -9` at a random moment while bans are being made, round
 * after round on one data directory. Every ban the API acknowledged (201)
 * before the kill, and every ban a rule made and answered, must be in force
 * after the restart. Prints its figures as test diagnostics.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { attempt } from '../helpers/dovecot.js';
import { prng } from '../helpers/prng.js';
import { PolicyClient, request } from '../helpers/postfix.js';
import { allBans, CANARY, size, tortured, type Tortured } from './torture.js';

void describe('fault suite: kill -9 while banning', { timeout: 1_800_000 }, () => {
  let dir: string;
  let t: Tortured | undefined;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'mw-kill9-'));
  });
  after(async () => {
    await t?.d.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  test('every acknowledged ban survives kill -9, every round', async (ctx) => {
    const rounds = size(3, 25);
    const rnd = prng(9);
    const acked = new Set<string>([CANARY]);
    let made = 0;
    let lostInFlight = 0;
    for (let round = 0; round < rounds; round++) {
      t = await tortured(join(dir, 'data'), t?.d);
      const live = t;
      // Everything acknowledged so far is in force after the restart.
      const listed = await allBans(live);
      const missing = [...acked].filter((s) => !listed.has(s));
      assert.deepEqual(missing, [], `round ${round}: acknowledged bans lost`);
      const c = await PolicyClient.open({ port: live.d.postfixPort });
      assert.match(
        await c.send(request({ protocol_state: 'CONNECT', client_address: CANARY, instance: '' })),
        /^action=554 /,
      );
      c.close();
      // Bans through the API and through a rule (a Dovecot guesser going on after refusals), then a kill at a random moment.
      const killAt = Date.now() + 50 + Math.floor(rnd() * 400);
      const guesser = `203.0.${round}.${1 + Math.floor(rnd() * 250)}`;
      let g = 0;
      while (Date.now() < killAt) {
        const subject = `198.${18 + (round % 2)}.${Math.floor(rnd() * 256)}.${Math.floor(rnd() * 256)}`;
        const r = await live
          .api('/v1/bans', { method: 'POST', body: JSON.stringify({ subject, duration: '1d' }) })
          .catch(() => undefined);
        if (r?.status === 201) {
          acked.add(subject);
          made++;
        }
        await r?.body?.cancel();
        const body = attempt(guesser, 'victim@example.org', (0xa00 + g++).toString(16));
        const a = await fetch(`http://127.0.0.1:${live.d.dovecotPort}/dovecot/policy?command=allow`, {
          method: 'POST',
          body: JSON.stringify(body),
        })
          .then((x) => x.json() as Promise<{ status: number; msg: string }>)
          .catch(() => undefined);
        // Refused by the ban a rule made (and answered): that ban must survive too.
        if (a && /Access denied: .* is blocked/.test(a.msg)) acked.add(guesser);
        await fetch(`http://127.0.0.1:${live.d.dovecotPort}/dovecot/policy?command=report`, {
          method: 'POST',
          body: JSON.stringify({ ...body, success: false, policy_reject: (a?.status ?? 0) < 0 }),
        }).catch(() => lostInFlight++);
      }
      await live.d.kill('SIGKILL');
    }
    t = await tortured(join(dir, 'data'), t?.d);
    const listed = await allBans(t);
    assert.deepEqual(
      [...acked].filter((s) => !listed.has(s)),
      [],
    );
    ctx.diagnostic(
      `kill -9: ${rounds} rounds, ${made} bans acknowledged by the API plus the rule bans, ${acked.size} checked after every restart, 0 lost; ${lostInFlight} requests cut by the kills`,
    );
  });
});
