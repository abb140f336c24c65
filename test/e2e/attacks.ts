/*
 * e2e/attacks — password guessing as real attackers do it, for the e2e tests
 * (guessing-parallel.test.ts, cluster.test.ts): many connections at once, the
 * passwords handed to whichever is free, going on after every refusal and
 * reopening what the server closed; and how each attempt ended, as the client
 * saw it.
 */
import assert from 'node:assert/strict';
import {
  imapSession,
  smtpSession,
  type ImapSession,
  type LoginResult,
  type SmtpReply,
  type SmtpSession,
} from './clients.js';
import { MAIL_DOMAIN, pwhash, type MailUser } from './stack.js';

export const mailbox = (name: string, password: string): MailUser => ({ user: `${name}@${MAIL_DOMAIN}`, password });

/** `n` wrong passwords for `user` whose pwhash values differ from each other and from the right password's. */
export function wrongPasswords(u: MailUser, n: number, tag: string): string[] {
  const seen = new Set([pwhash(u.user, u.password)]);
  const out: string[] = [];
  for (let i = 0; out.length < n && i < n * 20; i++) {
    const pw = `${tag}-${i}-Summer${2000 + i}!`;
    const h = pwhash(u.user, pw);
    if (seen.has(h)) continue;
    seen.add(h);
    out.push(pw);
  }
  assert.equal(out.length, n, 'enough passwords with distinct pwhash');
  return out;
}

/**
 * What became of one attempt, as the client saw it. `failed`: the password was
 * checked and was wrong; `refused`: mailwarden refused it (an IMAP [ALERT] /
 * an SMTP 535 with mailwarden's reason / a 554 greeting for a banned address);
 * `ok`: logged in.
 */
export type Outcome = 'ok' | 'failed' | 'refused' | 'closed' | 'error' | 'other';
export interface Attempt {
  outcome: Outcome;
  line: string;
  ms: number;
}

export function imapOutcome(r: LoginResult): Outcome {
  if (r.ok) return 'ok';
  if (/^a\d+ NO \[ALERT\] /.test(r.line)) return 'refused';
  if (/^a\d+ NO \[AUTHENTICATIONFAILED\]/.test(r.line)) return 'failed';
  if (r.line === '(connection closed)') return 'closed';
  return 'other';
}

export function smtpOutcome(r: SmtpReply): Outcome {
  if (r.code === 235) return 'ok';
  if (r.code === 535) return /authentication failed: \(reason unavailable\)/.test(r.text) ? 'failed' : 'refused';
  if (r.code === 0) return 'closed';
  return 'other';
}

export function tally(attempts: readonly Attempt[]): Record<Outcome, number> {
  const t: Record<Outcome, number> = { ok: 0, failed: 0, refused: 0, closed: 0, error: 0, other: 0 };
  for (const a of attempts) t[a.outcome] += 1;
  return t;
}

/** The distinct answers with how often each came, for failure messages. */
export function answers(attempts: readonly Attempt[]): string {
  const by = new Map<string, number>();
  for (const a of attempts) {
    const key = `${a.outcome}: ${a.line
      .replace(/^a\d+ /, '')
      .replace(/until \S+/, 'until …')
      .slice(0, 160)}`;
    by.set(key, (by.get(key) ?? 0) + 1);
  }
  return [...by].map(([k, n]) => `  ${n} × ${k}`).join('\n');
}

export interface Guessing {
  /** Source address. */
  ip: string;
  user: string;
  /** Tried in this order, each once, by whichever connection is free. */
  passwords: readonly string[];
  /** Parallel connections. */
  connections: number;
  /** The whole run stops after this long, even with passwords left. */
  budgetMs: number;
}

/** A connection that can try one password at a time. */
export interface Door {
  open(): Promise<{ ready: boolean; line: string }>;
  attempt(password: string): Promise<Attempt>;
  /** The server closed it (or it was never opened). */
  closed(): boolean;
  close(): Promise<void>;
}

/**
 * The attacker: `connections` connections at once, the passwords handed out
 * one by one to whichever connection is free; after a refusal it goes on
 * with the next password, and a connection the server closed is opened again
 * (at most 4 times the passwords' count in all). A greeting that refuses the
 * address (a banned SMTP client) uses up one password as a refused attempt.
 */
export async function guess(g: Guessing, door: () => Door): Promise<Attempt[]> {
  const queue = [...g.passwords];
  const attempts: Attempt[] = [];
  const until = Date.now() + g.budgetMs;
  let opens = 0;
  const worker = async (): Promise<void> => {
    let d: Door | undefined;
    try {
      while (queue.length > 0 && Date.now() < until) {
        if (!d || d.closed()) {
          await d?.close();
          d = undefined;
          if (++opens > 4 * g.passwords.length) return;
          const c = door();
          const o = await c.open().catch((e: unknown) => ({ ready: false, line: `connect: ${String(e)}` }));
          if (!o.ready) {
            await c.close();
            const password = queue.shift();
            if (password === undefined) return;
            attempts.push({ outcome: /^554 /.test(o.line) ? 'refused' : 'other', line: o.line, ms: 0 });
            continue;
          }
          d = c;
        }
        const password = queue.shift();
        if (password === undefined) return;
        const c = d;
        try {
          const a = await c.attempt(password);
          attempts.push(a);
          if (a.outcome === 'ok') {
            d = undefined;
            await c.close();
          }
        } catch (e) {
          attempts.push({ outcome: 'error', line: String(e).split('\n')[0] ?? '', ms: 0 });
          d = undefined;
          await c.close();
        }
      }
    } finally {
      await d?.close();
    }
  };
  await Promise.all(Array.from({ length: g.connections }, worker));
  return attempts;
}

export function imapDoor(port: number, ip: string, user: string): () => Door {
  return () => {
    let s: ImapSession | undefined;
    return {
      async open() {
        s = await imapSession({ port, localAddress: ip, timeoutMs: 15_000 });
        return { ready: s.greeting.startsWith('* OK'), line: s.greeting };
      },
      async attempt(password) {
        const r = await s!.login(user, password);
        return { outcome: imapOutcome(r), line: r.line, ms: r.ms };
      },
      closed: () => !s || s.isClosed,
      close: async () => {
        await s?.logout();
      },
    };
  };
}

export function smtpDoor(port: number, ip: string, user: string): () => Door {
  return () => {
    let s: SmtpSession | undefined;
    let gone = false;
    return {
      async open() {
        s = await smtpSession({ port, localAddress: ip, timeoutMs: 15_000 });
        return { ready: s.greeting.code === 220 && s.ehloReply?.code === 250, line: s.greeting.text };
      },
      async attempt(password) {
        const t0 = performance.now();
        const r = await s!.authPlain(user, password);
        if (r.code === 0 || r.code === 421) gone = true;
        return { outcome: smtpOutcome(r), line: r.text, ms: performance.now() - t0 };
      },
      closed: () => !s || gone,
      close: async () => {
        await s?.quit();
      },
    };
  };
}
