/*
 * Fault suite: malformed Postfix and Dovecot requests, mutated from the
 * captured traffic, against a real daemon process, with a canary ban checked
 * in between: no crash, every canary refused, and the daemon still serves.
 * Prints its figures as test diagnostics.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { attempt } from '../helpers/dovecot.js';
import { prng } from '../helpers/prng.js';
import { capturedRequests, PolicyClient, request } from '../helpers/postfix.js';
import { CANARY, rssMb, size, tortured, type Tortured } from './torture.js';

/** A captured request, damaged one of many ways (the shapes a broken or hostile client sends). */
function mutate(text: string, rnd: () => number): string {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const lines = text.replace(/\n\n$/, '').split('\n');
  const i = Math.floor(rnd() * lines.length);
  switch (Math.floor(rnd() * 10)) {
    case 0: // flipped bytes
      return [...text].map((c) => (rnd() < 0.02 ? String.fromCharCode(Math.floor(rnd() * 256)) : c)).join('');
    case 1: // a line without '='
      lines[i] = (lines[i] ?? '').replace('=', '');
      break;
    case 2: // a huge value
      lines[i] = `${lines[i] ?? 'x='}${'A'.repeat(Math.floor(rnd() * 20_000))}`;
      break;
    case 3: // many unknown attributes
      for (let k = 0; k < Math.floor(rnd() * 400); k++) lines.push(`x${k}=${k}`);
      break;
    case 4: // control characters, CR, NUL
      lines[i] = `${lines[i] ?? ''}${pick(['\r', '\0', '\x1b[2J', '\u2028', '\uFEFF'])}`;
      break;
    case 5: // an address that is not one
      lines.push(`client_address=${pick(['999.1.1.1', '::ffff:300.1.1.1', '0x7f.1', '', '1'.repeat(300)])}`);
      break;
    case 6: // lines dropped
      return `${lines.filter(() => rnd() > 0.3).join('\n')}\n\n`;
    case 7: // a request cut short (ends a later one early)
      return `${lines.slice(0, i).join('\n')}\n`;
    case 8: // random unicode
      lines[i] = `${lines[i] ?? ''}${String.fromCodePoint(Math.floor(rnd() * 0x10ffff) & 0xd7ff)}`;
      break;
    default: // duplicated attributes with other values
      lines.push(...lines.slice(0, 5).map((l) => l.replace(/=.*/, `=${Math.floor(rnd() * 1e9)}`)));
  }
  return `${lines.join('\n')}\n\n`;
}

/** A Dovecot body, damaged: broken JSON, wrong types, odd fields, huge strings. */
function dovecotBody(rnd: () => number): string {
  const base: Record<string, unknown> = attempt(`203.0.113.${Math.floor(rnd() * 250)}`, 'fuzz@example.org', '0abc');
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const odd = [null, 1e308, -1, true, [], {}, 'x'.repeat(Math.floor(rnd() * 70_000)), '\u0000', '::ffff:1.2.3.4'];
  switch (Math.floor(rnd() * 6)) {
    case 0:
      return JSON.stringify(base).slice(0, Math.floor(rnd() * 80));
    case 1:
      base[pick(Object.keys(base))] = pick(odd);
      return JSON.stringify(base);
    case 2:
      return JSON.stringify(pick(odd));
    case 3:
      for (let k = 0; k < 200; k++) base[`f${k}`] = k;
      return JSON.stringify(base);
    case 4:
      return JSON.stringify({ ...base, remote: pick(['999.1.1.1', '', 'localhost', '2001:db8::/64']) });
    default:
      return '{"login":'.repeat(Math.floor(rnd() * 2000));
  }
}

void describe('fault suite: fuzzed requests with a canary ban', { timeout: 1_800_000 }, () => {
  let dir: string;
  let t: Tortured;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-fuzz-'));
    t = await tortured(join(dir, 'data'));
  });
  after(async () => {
    await t?.d.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  test('Postfix: malformed requests never crash the daemon or lift the canary ban', async (ctx) => {
    const n = size(2000, 250_000);
    const rnd = prng(11);
    const captured = capturedRequests().map((c) => c.text);
    const canary = await PolicyClient.open({ port: t.d.postfixPort });
    ctx.after(() => canary.close());
    let fuzz = await PolicyClient.open({ port: t.d.postfixPort });
    ctx.after(() => fuzz.close());
    let replies = 0;
    let closed = 0;
    let unanswered = 0;
    let canaries = 0;
    const started = Date.now();
    for (let i = 0; i < n; i++) {
      if (fuzz.closed) closed++;
      const text = mutate(captured[Math.floor(rnd() * captured.length)] as string, rnd);
      // A request cut short, or one the daemon dropped, gets no reply: a fresh connection then,
      // so that no later reply is taken for its answer.
      const answered = await Promise.race([
        fuzz.send(text),
        new Promise<string>((r) => setTimeout(() => r(''), text.endsWith('\n\n') ? 20 : 0)),
      ]);
      if (answered.startsWith('action=')) replies++;
      else {
        unanswered++;
        fuzz.close();
        fuzz = await PolicyClient.open({ port: t.d.postfixPort });
      }
      if (i % 100 === 0) {
        const a = await canary.send(request({ protocol_state: 'CONNECT', client_address: CANARY, instance: '' }));
        assert.match(a, /^action=554 5\.7\.1 Access denied: 192\.0\.2\.200 is blocked/, `after ${i} malformed requests`);
        canaries++;
      }
    }
    ctx.diagnostic(
      `postfix fuzz: ${n} malformed requests in ${((Date.now() - started) / 1000).toFixed(1)} s, ${replies} answered, ${unanswered} without an answer (cut short or dropped), ${closed} connections closed by the daemon, ${canaries} canaries refused, daemon RSS ${rssMb(t.d.proc.pid as number).toFixed(0)} MB`,
    );
    assert.match(await canary.send(request({ client_address: '198.51.100.1' })), /^action=/);
  });

  test('Dovecot: malformed requests never crash the daemon or lift the canary ban', async (ctx) => {
    const n = size(600, 20_000);
    const rnd = prng(12);
    const url = `http://127.0.0.1:${t.d.dovecotPort}/dovecot/policy`;
    const codes = new Map<number, number>();
    let canaries = 0;
    const started = Date.now();
    for (let i = 0; i < n; i++) {
      const command = rnd() < 0.9 ? (rnd() < 0.5 ? 'allow' : 'report') : 'x'.repeat(Math.floor(rnd() * 50));
      const r = await fetch(`${url}?command=${command}`, {
        method: 'POST',
        headers: { 'content-type': rnd() < 0.9 ? 'application/json' : 'text/plain' },
        body: dovecotBody(rnd),
      }).catch(() => undefined);
      const code = r?.status ?? 0;
      await r?.body?.cancel();
      codes.set(code, (codes.get(code) ?? 0) + 1);
      if (i % 50 === 0) {
        const c = await fetch(`${url}?command=allow`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(attempt(CANARY, 'alice@example.org', '0001')),
        });
        assert.equal(((await c.json()) as { status: number }).status, -1, `canary after ${i} malformed requests`);
        canaries++;
      }
    }
    ctx.diagnostic(
      `dovecot fuzz: ${n} malformed requests in ${((Date.now() - started) / 1000).toFixed(1)} s, HTTP codes ${JSON.stringify(Object.fromEntries(codes))}, ${canaries} canaries refused, daemon RSS ${rssMb(t.d.proc.pid as number).toFixed(0)} MB`,
    );
    assert.equal(codes.get(0) ?? 0, 0, 'no request left without an answer');
    assert.equal(codes.get(500) ?? 0, 0, 'no internal error');
  });
});
