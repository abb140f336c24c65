/*
 * The web dashboard in a real browser (Debian's chromium through
 * playwright-core) against a real daemon (child process) after a real brute
 * force on its Dovecot endpoint: sign-in (a wrong token is refused), the
 * overview (ban count, live charts, top offenders), the ban list (search,
 * add with duration and reason, force only once the API asks for it, Unban),
 * suspend and resume (Users page and Explain), Unban from Explain, the
 * runtime allowlist, one Events row per login attempt, readable times, a
 * phone's 390×844 screen on every page, and the whole of it in Japanese from
 * a daemon whose config says `locale: ja`. Every action is checked against
 * the API afterwards. Screenshots: test-results/dashboard-*.png.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { attempt } from '../helpers/dovecot.js';
import { PolicyClient, REPO, request } from '../helpers/postfix.js';

const CHROMIUM = '/usr/bin/chromium';
const IP = '203.0.113.99';
const RESULTS = join(REPO, 'test-results');
const PHONE = { width: 390, height: 844 };
const TABS = ['overview', 'bans', 'users', 'allowlist', 'explain', 'events'];

interface Ban {
  subject: string;
  rule: string;
  reason: string;
  since: number;
  until: number;
}
interface List<T> {
  total: number;
  items: T[];
}
interface Suspension {
  user: string;
  reason: string;
  until: number;
}
interface AllowItem {
  subject: string;
  kind: string;
  source: string;
  reason: string;
  until: number | null;
}
interface Timeline {
  step: number;
  start: number;
  series: Record<string, number[]>;
}

const shot = (page: Page, name: string): Promise<Buffer> =>
  page.screenshot({ path: join(RESULTS, `dashboard-${name}.png`), fullPage: true });

/** A daemon of its own, a config file (allowlist, locale) and the API as its token opens it. */
class Daemon {
  private constructor(
    readonly d: DaemonProcess,
    readonly dir: string,
    readonly token: string,
  ) {}

  static async start(config: string): Promise<Daemon> {
    const dir = mkdtempSync(join(tmpdir(), 'mw-dashboard-'));
    writeFileSync(join(dir, 'mailwarden.yaml'), config);
    const d = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') });
    return new Daemon(d, dir, readFileSync(join(dir, 'data', 'admin.token'), 'utf8').trim());
  }

  get base(): string {
    return `http://127.0.0.1:${this.d.adminPort}`;
  }

  async api<T>(path: string, init: RequestInit = {}, want = 200): Promise<T> {
    const r = await fetch(`${this.base}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
    });
    const text = await r.text();
    assert.equal(r.status, want, `${path}: ${r.status} ${text}`);
    return JSON.parse(text) as T;
  }

  async bans(): Promise<Ban[]> {
    return (await this.api<List<Ban>>('/v1/bans?limit=1000')).items;
  }

  private dovecot(command: string, body: object): Promise<Response> {
    return fetch(`http://127.0.0.1:${this.d.dovecotPort}/dovecot/policy?command=${command}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  }

  /**
   * Distinct wrong passwords from `ip`, each an allow then its report as Dovecot sends them,
   * until rule auth-guess-ban bans it. Returns how many attempts were refused or delayed at allow.
   */
  async bruteForce(ip: string, user: string): Promise<number> {
    let stopped = 0;
    for (let i = 0; i < 30; i++) {
      const body = attempt(ip, user, `5e${i.toString(16).padStart(2, '0')}`);
      const allow = (await (await this.dovecot('allow', body)).json()) as { status: number };
      if (allow.status !== 0) stopped++;
      await this.dovecot('report', { ...body, success: false, policy_reject: allow.status < 0 });
      if (i >= 8 && (await this.bans()).some((b) => b.subject === ip)) return stopped;
    }
    assert.fail(`${ip} was not banned by the brute force`);
  }

  async stop(): Promise<void> {
    await this.d.kill('SIGTERM');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Uncaught page errors and CSP violations: a strict CSP that blocks our own code shows up here. */
function watch(page: Page, problems: string[]): void {
  page.setDefaultTimeout(10_000);
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to|Failed to resolve module/i.test(m.text()))
      problems.push(m.text());
  });
}

async function signIn(page: Page, daemon: Daemon): Promise<void> {
  await page.goto(`${daemon.base}/`);
  await page.fill('#token', daemon.token);
  await page.click('button[type=submit]');
  await page.locator('.top-bar').waitFor();
}

/** A moment as the API sent it (epoch ms 2020–2033, or ISO-8601) anywhere in the page's text. */
async function rawTimes(page: Page): Promise<string[]> {
  const text = await page.locator('body').innerText();
  return text.match(/\b1[5-9]\d{11}\b|\d{4}-\d\d-\d\dT\d\d:\d\d/g) ?? [];
}

/**
 * Every page on a phone: each nav item visible, inside the screen and clickable; the page no wider
 * than the screen; no raw time. Screenshots dashboard-mobile[-ja]-<page>.png.
 */
async function phoneTour(browser: Browser, daemon: Daemon, prefix: string, explainSubject: string): Promise<void> {
  const ctx = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 1 });
  const page = await ctx.newPage();
  const problems: string[] = [];
  watch(page, problems);
  await signIn(page, daemon);
  for (const tab of TABS) {
    const link = page.locator(`nav a[data-tab="${tab}"]`);
    assert.ok(await link.isVisible(), `${tab}: nav item visible`);
    const box = await link.boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= PHONE.width, `${tab}: nav item inside the screen`);
    await link.click();
    await page.locator(`nav a[data-tab="${tab}"].active`).waitFor();
    if (tab === 'explain') {
      await page.fill('input[name=subject]', explainSubject);
      await page.locator('form.toolbar button[type=submit]').click();
      await page.locator('table.audit tbody tr').first().waitFor();
    }
    if (tab === 'overview') await page.locator('[data-chart="decisions"] canvas').waitFor();
    if (tab === 'bans') await page.locator('#ban-table').waitFor();
    if (tab === 'users') await page.locator('#user-table').waitFor();
    if (tab === 'allowlist') await page.locator('#allow-table').waitFor();
    if (tab === 'events') await page.locator('table.events tbody tr').first().waitFor();
    const width = await page.evaluate<number>('document.documentElement.scrollWidth');
    assert.ok(width <= PHONE.width, `${tab}: the page is ${width} px wide on a ${PHONE.width} px screen`);
    assert.deepEqual(await rawTimes(page), [], `${tab}: times shown as the API sent them`);
    await page.screenshot({ path: join(RESULTS, `dashboard-${prefix}-${tab}.png`), fullPage: true });
  }
  // a form on a phone: every field inside the screen
  await page.locator('nav a[data-tab="bans"]').click();
  await page.getByRole('button', { name: /^(Add a ban|BANを追加)$/ }).click();
  for (const input of await page.locator('#ban-form input').all()) {
    const box = await input.boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= PHONE.width, 'a form field outside the screen');
  }
  await page.screenshot({ path: join(RESULTS, `dashboard-${prefix}-ban-form.png`), fullPage: true });
  assert.deepEqual(problems, []);
  await ctx.close();
}

let browser: Browser;

before(async () => {
  assert.ok(
    existsSync(CHROMIUM),
    `${CHROMIUM} is missing: this test needs Debian's chromium package. Install it with scripts/install-system-deps.sh (apt-get install chromium).`,
  );
  mkdirSync(RESULTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
});

describe('web dashboard in chromium', () => {
  let daemon: Daemon | undefined;
  let page: Page;
  /** Dovecot attempts refused or delayed at allow during the brute force: each is one Events row. */
  let stopped = 0;
  const pageProblems: string[] = [];
  const dm = (): Daemon => daemon as Daemon;

  before(async () => {
    daemon = await Daemon.start(
      'allowlist:\n  networks: [127.0.0.1, "::1", 192.0.2.200]\n  users: [monitor@example.org]\n',
    );

    // Some ordinary Postfix traffic, for the decisions chart.
    const c = await PolicyClient.open({ port: dm().d.postfixPort });
    for (let i = 0; i < 20; i++)
      await c.send(request({ protocol_state: 'CONNECT', client_address: `198.51.100.${i + 1}`, instance: '' }));
    c.close();

    stopped = await dm().bruteForce(IP, 'alice@example.org');

    page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
    watch(page, pageProblems);
  });

  after(async () => {
    await page?.close();
    await daemon?.stop();
  });

  test('the page and its assets are public, from this origin only, under a strict CSP', async () => {
    const pageRes = await fetch(`${dm().base}/`);
    assert.equal(pageRes.status, 200);
    assert.match(pageRes.headers.get('content-type') ?? '', /^text\/html/);
    assert.equal(pageRes.headers.get('cache-control'), 'no-cache');
    const csp = pageRes.headers.get('content-security-policy') ?? '';
    for (const part of [
      "default-src 'self'",
      "connect-src 'self'",
      "img-src 'self' data:",
      "style-src 'self' 'unsafe-inline'",
    ]) {
      assert.ok(csp.includes(part), `CSP lacks ${part}: ${csp}`);
    }
    assert.doesNotMatch(csp, /https?:|\*/, 'no other origin is allowed');
    const htmlText = await pageRes.text();
    assert.doesNotMatch(htmlText, /(src|href)="https?:/, 'no CDN');
    const types: Record<string, RegExp> = {
      'app.js': /^text\/javascript/,
      'i18n.js': /^text\/javascript/,
      'app.css': /^text\/css/,
      'preact.mjs': /^text\/javascript/,
      'preact-hooks.mjs': /^text\/javascript/,
      'htm.mjs': /^text\/javascript/,
      'uplot.mjs': /^text\/javascript/,
      'uplot.css': /^text\/css/,
    };
    for (const [name, type] of Object.entries(types)) {
      const r = await fetch(`${dm().base}/assets/${name}`);
      assert.equal(r.status, 200, name);
      assert.match(r.headers.get('content-type') ?? '', type, name);
      assert.equal(r.headers.get('cache-control'), 'no-cache', name);
    }
    assert.equal((await fetch(`${dm().base}/assets/..%2Fapi.ts`)).status, 404);
    assert.equal((await fetch(`${dm().base}/assets/nothing.js`)).status, 404);
  });

  test('a wrong token is refused with a clear message on the sign-in form', async () => {
    const ctx = await browser.newContext();
    const p = await ctx.newPage();
    await p.goto(`${dm().base}/`);
    await p.fill('#token', 'not-the-token');
    await p.click('button[type=submit]');
    const err = p.locator('#signin-error');
    await err.waitFor();
    assert.match(await err.innerText(), /not accepted \(401 Unauthorized\)/);
    await shot(p, 'signin');
    assert.equal(await p.locator('.top-bar').count(), 0, 'still signed out');
    // a saved token the daemon no longer takes: the first 401 signs out and says why
    // (browser-side code as strings: this program is compiled without the DOM types)
    await p.evaluate("sessionStorage.setItem('mailwarden.token', 'a-stale-token')");
    await p.reload();
    await p.locator('#signin-error', { hasText: 'refused the saved token (401 Unauthorized)' }).waitFor();
    assert.equal(
      await p.evaluate<string | null>("sessionStorage.getItem('mailwarden.token')"),
      null,
      'the stale token is forgotten',
    );
    await ctx.close();
  });

  test('overview: the ban count, charts with points, top offenders', async () => {
    await signIn(page, dm());
    await page.locator('[data-stat="activeBans"]', { hasText: /^1$/ }).waitFor();

    // the timeline has points, and the page draws them: three uPlot canvases, the decisions and failed-login charts non-zero
    const tl = await dm().api<Timeline>('/v1/timeline');
    assert.equal(tl.step, 10);
    assert.ok(
      (tl.series['auth_failures.imap'] ?? []).some((v) => v > 0),
      'failed IMAP logins in the timeline',
    );
    assert.ok(
      Object.keys(tl.series)
        .filter((k) => k.startsWith('decisions.'))
        .some((k) => tl.series[k]?.some((v) => v > 0)),
    );
    await page.locator('[data-chart="decisions"] canvas').waitFor();
    assert.equal(await page.locator('.chart canvas').count(), 3);
    await page.waitForFunction(
      "['decisions', 'auth_failures'].every((c) => Number(document.querySelector(`[data-chart=\"${c}\"]`)?.getAttribute('data-nonzero')) > 0)",
    );
    // the canvas really has ink on it (not an empty frame)
    const inked = await page.evaluate<number>(`(() => {
      const cv = document.querySelector('[data-chart="auth_failures"] canvas');
      const px = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
      let n = 0;
      for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
      return n;
    })()`);
    assert.ok(inked > 500, `chart pixels drawn: ${inked}`);

    await page.locator('[data-top="ips"] li', { hasText: IP }).waitFor();
    await page.locator('[data-top="users"] li', { hasText: 'alice@example.org' }).waitFor();

    await shot(page, 'overview');
    assert.deepEqual(pageProblems, []);
  });

  test('events: a Dovecot login attempt counts once (allow and report are one), repeats in one row with their count', async () => {
    await page.click('nav a[href="#/events"]');
    await page.locator('tr[data-kind="ban"]', { hasText: IP }).waitFor();
    const rows = page.locator('tr[data-kind="decision"]', { hasText: IP });
    assert.ok(stopped > 3, `attempts refused or delayed at allow: ${stopped}`);
    assert.ok((await rows.filter({ hasText: /reject/ }).count()) > 0, 'the refusals are there');
    assert.ok((await rows.filter({ hasText: /delay/ }).count()) > 0, 'the delays are there');
    assert.match(await rows.first().innerText(), /dovecot · imap/);
    // A rule's repeats within 10 s are one row at once, and a row "×N" when the source has been quiet for 10 s:
    // every attempt refused or delayed is counted once, none of their reports.
    const counted = async (): Promise<number> =>
      (await rows.allInnerTexts()).reduce(
        (n, text) => n + Number(/×([\d,]+)/.exec(text)?.[1]?.replace(/,/g, '') ?? 1),
        0,
      );
    const until = Date.now() + 30_000;
    while ((await counted()) < stopped && Date.now() < until) await new Promise((r) => setTimeout(r, 250));
    assert.equal(await counted(), stopped, 'the rows count every attempt refused or delayed once');
    assert.ok((await rows.count()) < stopped, 'repeats share a row');
  });

  test('ban list: search, Unban asks first (Cancel keeps it), then gone from the API; the live feed shows it', async () => {
    await page.locator('.dot.link-live').waitFor(); // the event stream is connected before the unban
    await page.click('nav a[href="#/bans"]');
    await page.fill('input[aria-label="Search bans"]', IP);
    const row = page.locator(`tr[data-subject="${IP}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /auth-guess-ban/);
    await shot(page, 'bans');

    await row.getByRole('button', { name: 'Unban' }).click();
    assert.match(
      await row.locator('.confirm .question').innerText(),
      new RegExp(`^Unban ${IP.replaceAll('.', '\\.')}\\?`),
    );
    await row.getByRole('button', { name: 'Cancel' }).click();
    assert.ok(
      (await dm().bans()).some((b) => b.subject === IP),
      'Cancel unbans nothing',
    );

    await row.getByRole('button', { name: 'Unban' }).click();
    await row.getByRole('button', { name: 'Yes, unban' }).click();
    await page.locator('.notice', { hasText: `${IP} is unbanned.` }).waitFor();
    await row.waitFor({ state: 'detached' });
    assert.ok(!(await dm().bans()).some((b) => b.subject === IP));

    await page.click('nav a[href="#/events"]');
    await page.locator('tr[data-kind="unban"]', { hasText: IP }).waitFor();
    await shot(page, 'events');
    assert.deepEqual(pageProblems, []);
  });

  test('add a ban: duration and reason; a bad duration and a /4 are refused in the API’s words, force offered only then', async () => {
    await page.click('nav a[href="#/bans"]');
    await page.fill('input[aria-label="Search bans"]', '');
    const form = page.locator('#ban-form');
    const open = async (): Promise<void> => {
      if (!(await form.isVisible())) await page.getByRole('button', { name: 'Add a ban' }).click();
    };

    await open();
    await form.locator('input[name=subject]').fill('198.51.100.0/24');
    await form.locator('input[name=duration]').fill('2x');
    await form.locator('button[type=submit]').click();
    await form.locator('[data-refusal]', { hasText: /400: duration "2x" is not a duration/ }).waitFor();
    assert.equal(await form.locator('input[name=force]').count(), 0, 'no force for a bad duration');

    const before = Date.now();
    await form.locator('input[name=duration]').fill('2h');
    await form.locator('input[name=reason]').fill('dashboard test: scanning');
    await form.locator('button[type=submit]').click();
    await page
      .locator('.notice', {
        hasText: /^198\.51\.100\.0\/24 is banned until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(in (1h 59m|2h 00m)\)/,
      })
      .waitFor();
    await page.locator('tr[data-subject="198.51.100.0/24"]', { hasText: 'dashboard test: scanning' }).waitFor();
    const made = (await dm().bans()).find((b) => b.subject === '198.51.100.0/24');
    assert.ok(made, 'the ban is in the API');
    assert.equal(made.reason, 'dashboard test: scanning');
    assert.equal(made.rule, 'manual');
    assert.ok(Math.abs(made.until - before - 7_200_000) < 60_000, `until ${made.until}`);

    await open();
    await form.locator('input[name=subject]').fill('16.0.0.0/4');
    await form.locator('button[type=submit]').click();
    await form.locator('[data-refusal]', { hasText: /400: .*needs force/ }).waitFor();
    const force = form.locator('input[name=force]');
    await force.waitFor();
    assert.equal(await force.isChecked(), false, 'force is offered, not chosen');
    await shot(page, 'ban-force');
    assert.ok(!(await dm().bans()).some((b) => b.subject === '16.0.0.0/4'), 'refused: not banned');
    await force.check();
    await form.locator('button[type=submit]').click();
    await page.locator('.notice', { hasText: /^16\.0\.0\.0\/4 is banned until/ }).waitFor();
    assert.ok(
      (await dm().bans()).some((b) => b.subject === '16.0.0.0/4'),
      'forced: banned',
    );
    await form.waitFor({ state: 'detached' });
    assert.deepEqual(pageProblems, []);
  });

  test('users: suspend from the Users page (duration, reason), resume (confirmed); both in the API', async () => {
    await page.click('nav a[href="#/users"]');
    for (const user of ['bob@example.org', 'dave@example.org']) {
      await page.getByRole('button', { name: 'Suspend a user' }).click();
      const form = page.locator('#suspend-form');
      await form.locator('input[name=user]').fill(user);
      await form.locator('input[name=duration]').fill('3h');
      await form.locator('input[name=reason]').fill('dashboard test: spam run');
      await form.locator('button[type=submit]').click();
      await page.locator('.notice', { hasText: `${user} is suspended until` }).waitFor();
      await page.locator(`tr[data-user="${user}"]`).waitFor();
    }
    const users = (await dm().api<List<Suspension>>('/v1/users')).items;
    const bob = users.find((u) => u.user === 'bob@example.org');
    assert.ok(bob && bob.reason === 'dashboard test: spam run', JSON.stringify(users));
    assert.ok(Math.abs(bob.until - Date.now() - 3 * 3_600_000) < 60_000);
    await shot(page, 'users');

    const row = page.locator('tr[data-user="bob@example.org"]');
    await row.getByRole('button', { name: 'Resume' }).click();
    await row.getByRole('button', { name: 'Yes, resume' }).click();
    await page.locator('.notice', { hasText: 'bob@example.org can send again.' }).waitFor();
    await row.waitFor({ state: 'detached' });
    const left = (await dm().api<List<Suspension>>('/v1/users')).items.map((u) => u.user);
    assert.deepEqual(left, ['dave@example.org'], 'bob resumed, dave still suspended');
  });

  test('explain of a user: suspend there, then resume there', async () => {
    const user = 'carol@example.org';
    await page.goto(`${dm().base}/#/explain/${encodeURIComponent(user)}`);
    await page.getByRole('button', { name: `Suspend ${user}` }).click();
    const form = page.locator('#suspend-form');
    assert.equal(await form.locator('input[name=user]').count(), 0, 'the user is the one explained');
    await form.locator('input[name=duration]').fill('45m');
    await form.locator('button[type=submit]').click();
    const line = page.locator(`.summary li[data-suspended="${user}"]`);
    await line.waitFor();
    assert.ok((await dm().api<List<Suspension>>('/v1/users')).items.some((u) => u.user === user));
    await shot(page, 'explain-user');
    await line.getByRole('button', { name: 'Resume' }).click();
    await line.getByRole('button', { name: 'Yes, resume' }).click();
    await line.waitFor({ state: 'detached' });
    await page.locator('.summary li', { hasText: `${user} is not banned, suspended` }).waitFor();
    assert.ok(!(await dm().api<List<Suspension>>('/v1/users')).items.some((u) => u.user === user));
  });

  test('explain of an address: ban its network there (force, for it holds an allowlisted address), then Unban each ban listed', async () => {
    const net = '192.0.2.0/24';
    const ip = '192.0.2.55';
    await page.goto(`${dm().base}/#/explain/${encodeURIComponent(net)}`);
    await page.getByRole('button', { name: `Ban ${net}` }).click();
    const form = page.locator('#ban-form');
    await form.locator('input[name=duration]').fill('1d');
    await form.locator('button[type=submit]').click();
    await form.locator('[data-refusal]', { hasText: /409: .*holds the allowlisted 192\.0\.2\.200/ }).waitFor();
    await form.locator('input[name=force]').check();
    await form.locator('button[type=submit]').click();
    await page.locator(`.summary li[data-ban="${net}"]`).waitFor();
    await dm().api(`/v1/bans`, { method: 'POST', body: JSON.stringify({ subject: ip, duration: '1h' }) }, 201);

    await page.goto(`${dm().base}/#/explain/${encodeURIComponent(ip)}`);
    const lines = page.locator('.summary li[data-ban]');
    await page.locator(`.summary li[data-ban="${ip}"]`).waitFor();
    assert.equal(await lines.count(), 2, 'the address and the network that holds it');
    // the ban's end as a local date-time with how far ahead
    assert.match(await lines.first().innerText(), /until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d in \d+/);
    await shot(page, 'explain-bans');
    for (const subject of [ip, net]) {
      const line = page.locator(`.summary li[data-ban="${subject}"]`);
      await line.getByRole('button', { name: 'Unban' }).click();
      await line.getByRole('button', { name: 'Yes, unban' }).click();
      await line.waitFor({ state: 'detached' });
      assert.ok(!(await dm().bans()).some((b) => b.subject === subject), `${subject} unbanned`);
    }
    assert.deepEqual(pageProblems, []);
  });

  test('explain: counters and the audit trail, evidence times as local date-times', async () => {
    await page.goto(`${dm().base}/#/explain/${encodeURIComponent(IP)}`);
    await page.locator('table.counters tbody tr').first().waitFor();
    const audit = page.locator('table.audit tbody');
    await audit.locator('.badge-unban').waitFor();
    const ban = audit.locator('tr', { has: page.locator('.badge-ban') }).first();
    assert.match(await ban.locator('.evidence').innerText(), /until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d/);
    // the unban's evidence holds the lifted ban: its times too
    assert.match(
      await audit.locator('tr', { has: page.locator('.badge-unban') }).innerText(),
      /until=\d{4}-\d\d-\d\d \d\d:\d\d/,
    );
    assert.deepEqual(await rawTimes(page), []);
    await shot(page, 'explain');
    // the form explains another subject
    await page.fill('input[name=subject]', 'alice@example.org');
    await page.click('form.toolbar button[type=submit]');
    await page.locator('.explanation h3', { hasText: 'alice@example.org' }).waitFor();
    assert.deepEqual(pageProblems, []);
  });

  test('allowlist: the config’s entries shown but not removable; add one with reason and duration; remove it (confirmed)', async () => {
    await page.click('nav a[href="#/allowlist"]');
    const cfg = page.locator('tr[data-subject="192.0.2.200"][data-source="config"]');
    await cfg.waitFor();
    assert.equal(await cfg.getByRole('button').count(), 0, 'a config entry has no Remove');
    assert.match(await cfg.innerText(), /in the config file/);
    await page.locator('tr[data-subject="monitor@example.org"][data-source="config"]').waitFor();

    await page.getByRole('button', { name: 'Add to the allowlist' }).click();
    const form = page.locator('#allow-form');
    await form.locator('input[name=subject]').fill('198.18.7.0/28');
    await form.locator('input[name=reason]').fill('partner relay');
    await form.locator('input[name=duration]').fill('1d');
    await form.locator('button[type=submit]').click();
    await page.locator('.notice', { hasText: '198.18.7.0/28 is allowlisted.' }).waitFor();
    const row = page.locator('tr[data-subject="198.18.7.0/28"][data-source="runtime"]');
    await row.waitFor();
    const listed = (await dm().api<List<AllowItem>>('/v1/allowlist')).items.find((a) => a.subject === '198.18.7.0/28');
    assert.ok(listed, 'in the API');
    assert.equal(listed.source, 'runtime');
    assert.equal(listed.reason, 'partner relay');
    assert.ok(listed.until !== null && Math.abs(listed.until - Date.now() - 86_400_000) < 60_000);

    // what the config file already has: the API's conflict, in its words
    await page.getByRole('button', { name: 'Add to the allowlist' }).click();
    await form.locator('input[name=subject]').fill('192.0.2.200');
    await form.locator('button[type=submit]').click();
    await form
      .locator('[data-refusal]', { hasText: /^Refused: 409: 192\.0\.2\.200 is already allowlisted by the config file/ })
      .waitFor();
    await form.getByRole('button', { name: 'Cancel' }).click();

    await dm().api('/v1/allowlist', { method: 'POST', body: JSON.stringify({ subject: 'ops@example.org' }) }, 201);
    await page.reload();
    await page.locator('tr[data-subject="ops@example.org"]').waitFor();
    await shot(page, 'allowlist');
    await row.getByRole('button', { name: 'Remove' }).click();
    await row.getByRole('button', { name: 'Yes, remove' }).click();
    await page.locator('.notice', { hasText: '198.18.7.0/28 is no longer allowlisted.' }).waitFor();
    await row.waitFor({ state: 'detached' });
    assert.ok(!(await dm().api<List<AllowItem>>('/v1/allowlist')).items.some((a) => a.subject === '198.18.7.0/28'));
    assert.deepEqual(pageProblems, []);
  });

  test('a phone (390×844): every page in reach, nothing wider than the screen', async () => {
    await phoneTour(browser, dm(), 'mobile', IP);
  });
});

describe('web dashboard in Japanese (config locale: ja)', () => {
  let daemon: Daemon | undefined;
  const dm = (): Daemon => daemon as Daemon;
  const JA_IP = '203.0.113.77';

  before(async () => {
    daemon = await Daemon.start('locale: ja\n');
    await dm().bruteForce(JA_IP, 'taro@example.jp');
    await dm().api(
      '/v1/users/hanako%40example.jp/suspend',
      { method: 'POST', body: JSON.stringify({ duration: '2h' }) },
      201,
    );
    await dm().api(
      '/v1/allowlist',
      { method: 'POST', body: JSON.stringify({ subject: '198.18.0.0/24', reason: '取引先' }) },
      201,
    );
  });

  after(async () => {
    await daemon?.stop();
  });

  test('the daemon’s locale chooses Japanese: labels, dates as 2026/12/03 14:05, relative times', async () => {
    const status = await dm().api<{ locale?: string }>('/v1/status');
    assert.equal(status.locale, 'ja');
    const page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
    const problems: string[] = [];
    watch(page, problems);
    await signIn(page, dm());
    await page.locator('nav a[data-tab="overview"]', { hasText: '概要' }).waitFor();
    assert.equal(await page.locator('html').getAttribute('lang'), 'ja');
    const nav = await page.locator('nav').innerText();
    for (const label of ['概要', 'BAN', 'ユーザー', '許可リスト', '調査', 'イベント'])
      assert.ok(nav.includes(label), `${label} in ${nav}`);
    await page.locator('[data-stat="activeBans"]', { hasText: /^1$/ }).waitFor();
    assert.match(await page.locator('.overview').innerText(), /有効なBAN/);
    await shot(page, 'ja-overview');

    await page.click('nav a[data-tab="bans"]');
    const row = page.locator(`tr[data-subject="${JA_IP}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /\d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d/);
    assert.match(await row.innerText(), /\d+分\d+秒後|\d+分\d+秒前|\d+時間\d+分後/);
    await row.getByRole('button', { name: 'BAN解除' }).waitFor();
    await page.getByRole('button', { name: 'BANを追加' }).click();
    await page.locator('#ban-form', { hasText: '期間' }).waitFor();
    await shot(page, 'ja-bans');

    await page.goto(`${dm().base}/#/explain/${encodeURIComponent(JA_IP)}`);
    await page.locator(`.summary li[data-ban="${JA_IP}"]`, { hasText: 'BAN中' }).waitFor();
    await page
      .locator('table.audit .evidence', { hasText: /until \d{4}\/\d\d\/\d\d/ })
      .first()
      .waitFor();
    assert.deepEqual(await rawTimes(page), []);
    await shot(page, 'ja-explain');

    await page.click('nav a[data-tab="events"]');
    await page.locator('h2', { hasText: 'ライブイベント' }).waitFor();
    await page.locator('tr[data-kind="decision"] .badge-reject', { hasText: '拒否' }).first().waitFor();
    await shot(page, 'ja-events');
    assert.deepEqual(problems, []);
    await page.close();
  });

  test('a phone (390×844) in Japanese: every page in reach, nothing wider than the screen', async () => {
    await phoneTour(browser, dm(), 'mobile-ja', JA_IP);
  });
});
