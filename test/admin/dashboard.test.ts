/*
 * The web dashboard in a real browser (Debian's chromium through
 * playwright-core) against a real daemon (child process) after a real brute
 * force on its Dovecot endpoint: sign-in (a wrong token is refused), the
 * overview (ban count, live charts, top offenders; screenshot in
 * test-results/), the ban list (search, Unban), explain and the live feed.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
const shot = (page: Page, name: string): Promise<Buffer> =>
  page.screenshot({ path: join(RESULTS, `dashboard-${name}.png`), fullPage: true });

interface BanList {
  total: number;
  items: Array<{ subject: string; rule: string }>;
}
interface Timeline {
  step: number;
  start: number;
  series: Record<string, number[]>;
}

describe('web dashboard in chromium', () => {
  let dir: string;
  let d: DaemonProcess | undefined;
  let token: string;
  let browser: Browser | undefined;
  let page: Page;
  /** Uncaught page errors and CSP violations: a strict CSP that blocks our own code shows up here. */
  const pageProblems: string[] = [];

  const base = (): string => `http://127.0.0.1:${d?.adminPort}`;
  const api = async <T>(path: string, init: RequestInit = {}, want = 200): Promise<T> => {
    const r = await fetch(`${base()}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${token}`, ...(init.headers ?? {}) },
    });
    assert.equal(r.status, want, `${path}: ${r.status}`);
    return (await r.json()) as T;
  };
  const dovecot = (command: string, body: object): Promise<Response> =>
    fetch(`http://127.0.0.1:${d?.dovecotPort}/dovecot/policy?command=${command}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  before(async () => {
    assert.ok(
      existsSync(CHROMIUM),
      `${CHROMIUM} is missing: this test needs Debian's chromium package. Install it with scripts/install-system-deps.sh (apt-get install chromium).`,
    );
    dir = mkdtempSync(join(tmpdir(), 'mw-dashboard-'));
    d = await startDaemonProcess(join(dir, 'data'));
    token = readFileSync(join(dir, 'data', 'admin.token'), 'utf8').trim();

    // Some ordinary Postfix traffic, for the decisions chart.
    const c = await PolicyClient.open({ port: d.postfixPort });
    for (let i = 0; i < 20; i++)
      await c.send(request({ protocol_state: 'CONNECT', client_address: `198.51.100.${i + 1}`, instance: '' }));
    c.close();

    // A brute force from one address: distinct wrong passwords until rule auth-guess-ban bans it.
    let banned = false;
    for (let i = 0; i < 30 && !banned; i++) {
      const body = attempt(IP, 'alice@example.org', `5e${i.toString(16).padStart(2, '0')}`);
      const allow = (await (await dovecot('allow', body)).json()) as { status: number };
      await dovecot('report', { ...body, success: false, policy_reject: allow.status < 0 });
      if (i >= 8) banned = (await api<BanList>(`/v1/bans?q=${IP}`)).items.some((b) => b.subject === IP);
    }
    assert.ok(banned, `${IP} was not banned by the brute force`);

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
    page = await browser.newPage({ viewport: { width: 1360, height: 1000 } });
    page.setDefaultTimeout(10_000);
    page.on('pageerror', (err) => pageProblems.push(`page error: ${err.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content Security Policy|Refused to|Failed to resolve module/i.test(m.text()))
        pageProblems.push(m.text());
    });
  });

  after(async () => {
    await browser?.close();
    await d?.kill('SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the page and its assets are public, from this origin only, under a strict CSP', async () => {
    const pageRes = await fetch(`${base()}/`);
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
      'app.css': /^text\/css/,
      'preact.mjs': /^text\/javascript/,
      'preact-hooks.mjs': /^text\/javascript/,
      'htm.mjs': /^text\/javascript/,
      'uplot.mjs': /^text\/javascript/,
      'uplot.css': /^text\/css/,
    };
    for (const [name, type] of Object.entries(types)) {
      const r = await fetch(`${base()}/assets/${name}`);
      assert.equal(r.status, 200, name);
      assert.match(r.headers.get('content-type') ?? '', type, name);
      assert.equal(r.headers.get('cache-control'), 'no-cache', name);
    }
    assert.equal((await fetch(`${base()}/assets/..%2Fapi.ts`)).status, 404);
    assert.equal((await fetch(`${base()}/assets/nothing.js`)).status, 404);
  });

  test('a wrong token is refused with a clear message on the sign-in form', async () => {
    const ctx = await (browser as Browser).newContext();
    const p = await ctx.newPage();
    await p.goto(`${base()}/`);
    await p.fill('#token', 'not-the-token');
    await p.click('button[type=submit]');
    const err = p.locator('#signin-error');
    await err.waitFor();
    assert.match(await err.innerText(), /not accepted \(401 Unauthorized\)/);
    mkdirSync(RESULTS, { recursive: true });
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
    await page.goto(`${base()}/`);
    await page.fill('#token', token);
    await page.click('button[type=submit]');
    await page.locator('[data-stat="activeBans"]', { hasText: /^1$/ }).waitFor();

    // the timeline has points, and the page draws them: three uPlot canvases, the decisions and failed-login charts non-zero
    const tl = await api<Timeline>('/v1/timeline');
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

  test('ban list: search, Unban (confirmed), gone from the API; the live feed shows it', async () => {
    await page.locator('.dot.link-live').waitFor(); // the event stream is connected before the unban
    await page.click('nav a[href="#/bans"]');
    await page.fill('input[aria-label="Search bans"]', IP);
    const row = page.locator(`tr[data-subject="${IP}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /auth-guess-ban/);
    await shot(page, 'bans');

    let asked = '';
    page.once('dialog', (dlg) => {
      asked = dlg.message();
      void dlg.accept();
    });
    await row.getByRole('button', { name: 'Unban' }).click();
    await page.locator('.notice', { hasText: `${IP} is unbanned.` }).waitFor();
    await row.waitFor({ state: 'detached' });
    assert.match(asked, new RegExp(`^Unban ${IP.replaceAll('.', '\\.')}\\?`));

    const bans = await api<BanList>('/v1/bans');
    assert.ok(!bans.items.some((b) => b.subject === IP), JSON.stringify(bans));

    await page.click('nav a[href="#/events"]');
    await page.locator('tr[data-kind="unban"]', { hasText: IP }).waitFor();
    await shot(page, 'events');
    assert.deepEqual(pageProblems, []);
  });

  test('suspended users: Resume (confirmed), gone from the API', async () => {
    const user = 'bob@example.org';
    const init = {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ duration: '1h', reason: 'dashboard test' }),
    };
    await api(`/v1/users/${encodeURIComponent(user)}/suspend`, init, 201);
    assert.ok((await api<{ items: Array<{ user: string }> }>('/v1/users')).items.some((u) => u.user === user));
    await page.click('nav a[href="#/users"]');
    const row = page.locator(`tr[data-user="${user}"]`);
    await row.waitFor();
    page.once('dialog', (dlg) => void dlg.accept());
    await row.getByRole('button', { name: 'Resume' }).click();
    await page.locator('.notice', { hasText: `${user} can send again.` }).waitFor();
    await row.waitFor({ state: 'detached' });
    assert.ok(!(await api<{ items: Array<{ user: string }> }>('/v1/users')).items.some((u) => u.user === user));
  });

  test('explain: summary lines, counters and the audit trail (ban, then unban)', async () => {
    await page.goto(`${base()}/#/explain/${encodeURIComponent(IP)}`);
    await page.locator('.summary li').first().waitFor();
    await page.locator('table.counters tbody tr').first().waitFor();
    const audit = page.locator('table.audit tbody');
    await audit.locator('.badge-unban').waitFor();
    await audit.locator('.badge-ban').first().waitFor();
    await shot(page, 'explain');
    // the form explains another subject
    await page.fill('input[name=subject]', 'alice@example.org');
    await page.click('form.toolbar button[type=submit]');
    await page.locator('.explanation h3', { hasText: 'alice@example.org' }).waitFor();
    assert.deepEqual(pageProblems, []);
  });
});
