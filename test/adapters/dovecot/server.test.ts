import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { attempt } from '../../helpers/dovecot.js';
import { banForAnHour, startHarness, type Harness } from '../../helpers/harness.js';
import { PolicyClient, portOf, PROTOCOL_DIR, request } from '../../helpers/postfix.js';

interface Captured {
  url: string;
  headers: Record<string, string>;
  body: string;
  json: Record<string, unknown> | null;
  marker: string;
}

function capturedDovecot(): Captured[] {
  const out: Captured[] = [];
  let marker = '';
  for (const line of readFileSync(join(PROTOCOL_DIR, 'dovecot-policy-requests.jsonl'), 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const d = JSON.parse(line) as {
      marker?: string;
      url?: string;
      headers?: Record<string, string>;
      body?: string;
      json?: Record<string, unknown> | null;
    };
    if (d.marker !== undefined) marker = d.marker;
    else
      out.push({
        url: d.url as string,
        headers: d.headers ?? {},
        body: d.body as string,
        json: d.json ?? null,
        marker,
      });
  }
  return out;
}

type Reply = { http: number; body: { status?: unknown; msg?: unknown; error?: string } };

async function post(h: Harness, command: string, body: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  const r = await fetch(`${h.dovecotUrl}?command=${command}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { http: r.status, body: (await r.json()) as Reply['body'] };
}

/** One whole failed login as Dovecot reports it: allow, then report success:false. */
async function failLogin(h: Harness, ip: string, login: string, pwhash: string, protocol = 'imap'): Promise<Reply> {
  const a = await post(h, 'allow', attempt(ip, login, pwhash, protocol));
  const rejected = typeof a.body.status === 'number' && a.body.status < 0;
  await post(h, 'report', { ...attempt(ip, login, pwhash, protocol), success: false, policy_reject: rejected });
  return a;
}

async function goodLogin(h: Harness, ip: string, login: string, pwhash: string, protocol = 'imap'): Promise<Reply> {
  const a = await post(h, 'allow', attempt(ip, login, pwhash, protocol));
  if (a.body.status !== 0 && !(typeof a.body.status === 'number' && a.body.status > 0)) {
    await post(h, 'report', { ...attempt(ip, login, pwhash, protocol), success: false, policy_reject: true });
    return a;
  }
  const after = await post(h, 'allow', attempt(ip, login, pwhash, protocol));
  await post(h, 'report', { ...attempt(ip, login, pwhash, protocol), success: true, policy_reject: false });
  return after;
}

describe('Dovecot auth policy endpoint: captured Dovecot 2.3 traffic', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  test('every captured request is answered 200 with a numeric status, as Dovecot requires', async () => {
    const reqs = capturedDovecot().filter((r) => r.json !== null);
    assert.ok(reqs.length > 150, `captures: ${reqs.length}`);
    for (const r of reqs) {
      const command = /command=(allow|report)/.exec(r.url)?.[1] as string;
      const res = await post(h, command, r.body, { 'user-agent': r.headers['user-agent'] ?? '' });
      assert.equal(res.http, 200, `${r.marker}: ${r.body}`);
      assert.equal(typeof res.body.status, 'number', r.marker);
      assert.equal(typeof res.body.msg, 'string', r.marker);
    }
    assert.equal(h.dovecot.stats.badRequests, 0);
  });

  test('the captured hydra runs, replayed from a non-allowlisted address, are tarpitted by their 4th guess', async () => {
    // hydra ran from 127.0.0.1 (allowlisted by default), so replay it from other addresses.
    // (different networks: the IMAP run ends with a successful login, which makes its network known-good for alice)
    for (const [marker, ip] of [
      ['hydra-imap-5-passwords', '192.0.2.44'],
      ['hydra-smtp-5-passwords', '198.51.100.45'],
    ] as const) {
      const statuses: number[] = [];
      for (const r of capturedDovecot().filter((c) => c.marker === marker && c.json)) {
        const command = /command=(allow|report)/.exec(r.url)?.[1] as string;
        const res = await post(h, command, { ...r.json, remote: ip });
        if (command === 'allow') statuses.push(res.body.status as number);
      }
      // 4 wrong passwords, then the right one: the first three are free, from the 4th distinct one on, 3 s each
      assert.deepEqual(statuses, [0, 0, 0, 3, 3, 3], marker);
    }
  });

  test('SMTP delays are capped below the 10 s after which Postfix drops SASL', async (t) => {
    const slow = await startHarness({
      yaml: 'rules:\n  - name: auth-guess-delay\n    then: { action: delay, delay: 8s }\n',
    });
    t.after(() => slow.close());
    for (let i = 0; i < 3; i++) await failLogin(slow, '192.0.2.60', 'alice@mailprobe.test', `0b0${i}`, 'smtp');
    assert.equal(
      (await post(slow, 'allow', attempt('192.0.2.60', 'alice@mailprobe.test', '0b09', 'smtp'))).body.status,
      5,
    );
    assert.equal(
      (await post(slow, 'allow', attempt('192.0.2.60', 'alice@mailprobe.test', '0b09', 'imap'))).body.status,
      8,
    );
  });

  test('a report with policy_reject is no guess: its password was never checked', async () => {
    const ip = '192.0.2.61';
    for (let i = 0; i < 3; i++)
      await post(h, 'report', { ...attempt(ip, 'bob@mailprobe.test', `0c1${i}`), success: false, policy_reject: true });
    // Three checked failures would make the 4th attempt wait (auth-guess-delay); three refused ones do not.
    assert.equal((await post(h, 'allow', attempt(ip, 'bob@mailprobe.test', '0c19'))).body.status, 0);
    for (let i = 0; i < 3; i++) await failLogin(h, '192.0.2.62', 'bob@mailprobe.test', `0c2${i}`);
    assert.equal((await post(h, 'allow', attempt('192.0.2.62', 'bob@mailprobe.test', '0c29'))).body.status, 3);
  });

  test('pwhash is never logged', () => {
    assert.ok(h.logs.length > 0);
    const hashes = new Set(capturedDovecot().map((r) => r.json?.pwhash as string | undefined));
    const leaks = h.logs.filter(
      (l) => 'pwhash' in l || Object.values(l).some((v) => typeof v === 'string' && hashes.has(v)),
    );
    assert.equal(leaks.length, 0, JSON.stringify(leaks.slice(0, 2)));
  });
});

describe('Dovecot auth policy endpoint: the password-guessing policy', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  test('distinct passwords from one source: delay, then refuse, then a ban on every protocol', async (t) => {
    const ip = '203.0.113.9';
    const replies: unknown[] = [];
    for (let i = 0; i < 12; i++)
      replies.push((await failLogin(h, ip, 'alice@mailprobe.test', `0a${i.toString(16).padStart(2, '0')}`)).body);
    const statuses = replies.map((r) => (r as { status: number }).status);
    assert.deepEqual(statuses.slice(0, 3), [0, 0, 0], 'the first guesses are just checked');
    assert.ok(
      statuses.slice(3, 6).every((s) => s === 3),
      `then tarpitted 3 s: ${statuses.join(',')}`,
    );
    assert.ok(
      statuses.slice(6).every((s) => s === -1),
      `then refused: ${statuses.join(',')}`,
    );
    assert.match(String((replies[6] as { msg: string }).msg), /Too many failed logins/);
    const bans = await h.store.listBans(h.clock.now);
    assert.ok(
      bans.some((b) => b.subject === ip && b.rule === 'auth-guess-ban'),
      JSON.stringify(bans),
    );
    // the right password from the banned address is refused too, with the ban reply
    const good = await post(h, 'allow', attempt(ip, 'alice@mailprobe.test', '04a1'));
    assert.equal(good.body.status, -1);
    assert.match(String(good.body.msg), /Access denied: 203\.0\.113\.9 is blocked/);
    // cross-protocol: the Postfix side refuses the same address at CONNECT
    const c = await PolicyClient.open({ port: portOf(h.bound[0] as string) });
    t.after(() => c.close());
    assert.match(
      await c.send(request({ protocol_state: 'CONNECT', client_address: ip, instance: '' })),
      /^action=554 5\.7\.1 Access denied/,
    );
  });

  test('one stale password retried 50 times is one failure: never delayed, refused or banned', async () => {
    for (let i = 0; i < 50; i++) {
      const r = await failLogin(h, '198.51.100.20', 'bob@mailprobe.test', '0777');
      assert.equal(r.body.status, 0, `retry ${i}`);
    }
    assert.ok(!(await h.store.listBans(h.clock.now)).some((b) => b.subject.startsWith('198.51.100.')));
  });

  test('password spraying (one source, many logins) is banned', async () => {
    const ip = '203.0.113.77';
    for (let i = 0; i < 6; i++) await failLogin(h, ip, `user${i}@mailprobe.test`, '0123');
    const ban = (await h.store.listBans(h.clock.now)).find((b) => b.subject === ip);
    assert.equal(ban?.rule, 'auth-spray-ban');
  });

  test('an account under distributed attack: unknown sources refused, the known-good source keeps working', async () => {
    const user = 'carol@mailprobe.test';
    assert.equal((await goodLogin(h, '192.0.2.50', user, '0c01')).body.status, 0, 'carol logs in from home');
    for (let n = 1; n <= 6; n++) await failLogin(h, `100.64.${n}.9`, user, `0d0${n}`);
    const attacker = await post(h, 'allow', attempt('100.64.99.9', user, '0d99'));
    assert.equal(attacker.body.status, -1, JSON.stringify(attacker.body));
    assert.match(String(attacker.body.msg), /refused from this network/);
    const carol = await goodLogin(h, '192.0.2.51', user, '0c01');
    assert.equal(carol.body.status, 0, 'the same /24 as her earlier login is known-good');
    const other = await goodLogin(h, '100.64.200.1', 'dave@mailprobe.test', '0e01');
    assert.equal(other.body.status, 0, 'other accounts are not affected');
  });
});

describe('Dovecot auth policy endpoint: the after-auth check (an identical allow)', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  test('the allow repeated in the same session gets the same answer without deciding again', async () => {
    const body = attempt('192.0.2.140', 'erin@mailprobe.test', '0c1a');
    const decided = (): number => h.dovecot.stats.allows - h.dovecot.stats.repeats;
    const first = await post(h, 'allow', body);
    assert.deepEqual(first.body, { status: 0, msg: '' });
    assert.equal(decided(), 1);
    const again = await post(h, 'allow', body);
    assert.deepEqual(again.body, first.body);
    assert.equal(h.dovecot.stats.repeats, 1);
    assert.equal(decided(), 1, 'answered from the first one');
    // the session's report ends the attempt: the next identical allow (a new attempt) is decided again
    await post(h, 'report', { ...body, success: true, policy_reject: false });
    await post(h, 'allow', body);
    assert.equal(decided(), 2);
    // another password in the session, another session: not repeats
    await post(h, 'allow', { ...body, pwhash: '0c1b' });
    await post(h, 'allow', { ...body, session_id: 'BBBBBBBBBBBBBBBB' });
    assert.equal(decided(), 4);
    // Postfix's SASL requests carry no session id: two SMTP logins never share an answer
    const smtp = { ...body, protocol: 'smtp', session_id: '' };
    await post(h, 'allow', smtp);
    await post(h, 'allow', smtp);
    assert.equal(decided(), 6);
    // once the window has passed the same allow is decided again
    await post(h, 'allow', body);
    assert.equal(h.dovecot.stats.repeats, 1);
    h.clock.now += h.settings.dovecot.repeatWindowMs;
    await post(h, 'allow', body);
    assert.equal(h.dovecot.stats.repeats, 1);
    assert.equal(decided(), 8);
  });

  test('a ban made between two logins holds for the second one, whatever was answered before', async () => {
    const body = attempt('192.0.2.141', 'gina@mailprobe.test', '0c2a');
    assert.equal((await post(h, 'allow', body)).body.status, 0);
    await post(h, 'report', { ...body, success: true, policy_reject: false });
    await banForAnHour(h, '192.0.2.141');
    const next = await post(h, 'allow', body);
    assert.equal(next.body.status, -1, JSON.stringify(next.body));
  });

  test('a refusal is repeated as a refusal', async () => {
    const ip = '203.0.113.140';
    for (let i = 0; i < 7; i++) await failLogin(h, ip, 'frank@mailprobe.test', (0x0d00 + i).toString(16));
    const body = attempt(ip, 'frank@mailprobe.test', '0e00');
    const refused = await post(h, 'allow', body);
    assert.equal(refused.body.status, -1);
    const repeats = h.dovecot.stats.repeats;
    assert.deepEqual((await post(h, 'allow', body)).body, refused.body);
    assert.equal(h.dovecot.stats.repeats, repeats + 1);
  });
});

describe('Dovecot auth policy endpoint: bad input and trust', () => {
  test('broken requests get a 400 with a clear message, never a crash', async (t) => {
    const h = await startHarness();
    t.after(() => h.close());
    const cases: Array<[string, unknown, RegExp]> = [
      ['allow', '{"login": "x",', /JSON/i],
      ['allow', '[1,2]', /JSON object/],
      ['allow', { login: 'alice' }, /missing "remote"/],
      ['allow', { remote: 'not-an-ip', login: 'a' }, /not an IP address/],
      ['allow', { remote: '192.0.2.1', pwhash: 'zz<script>' }, /not a hex string/],
      ['report', { remote: '192.0.2.1', login: 'a' }, /"success"/],
      ['bogus', { remote: '192.0.2.1' }, /command must be allow or report/],
    ];
    for (const [command, body, msg] of cases) {
      const r = await post(h, command, body);
      assert.equal(r.http, 400, JSON.stringify(body));
      assert.match(String(r.body.error), msg);
    }
    assert.equal(
      (await post(h, 'allow', { remote: '192.0.2.1', login: 'a', pwhash: '0001', extra: { nested: true } })).body
        .status,
      0,
    );
    assert.ok(h.dovecot.stats.badRequests >= 7);
  });

  test('with dovecot.api_header set, requests without the exact header get a bare 401', async (t) => {
    const h = await startHarness({ yaml: 'dovecot:\n  api_header: "Authorization: Bearer s3cret"\n' });
    t.after(() => h.close());
    const body = attempt('192.0.2.1', 'alice@mailprobe.test', '0001');
    assert.equal((await post(h, 'allow', body)).http, 401);
    assert.equal((await post(h, 'allow', body, { authorization: 'Bearer wrong' })).http, 401);
    const ok = await post(h, 'allow', body, { authorization: 'Bearer s3cret' });
    assert.deepEqual([ok.http, ok.body.status], [200, 0]);
    assert.equal(h.dovecot.stats.unauthorized, 2);
  });

  test('a decision slower than the budget is answered status 0 (Dovecot would fail open anyway)', async (t) => {
    const h = await startHarness({ budget: '50', evaluate: () => () => new Promise(() => undefined) });
    t.after(() => h.close());
    const r = await post(h, 'allow', attempt('192.0.2.1', 'alice@mailprobe.test', '0001'));
    assert.deepEqual(r.body, { status: 0, msg: '' });
    assert.equal(h.dovecot.stats.budgetMisses, 1);
  });
});
