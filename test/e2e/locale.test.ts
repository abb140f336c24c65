/*
 * End to end, issue 13: `locale: ja` against a real Postfix and Dovecot, with
 * the bytes read off the socket as a mail client gets them. IMAP and POP3
 * refusals are Japanese UTF-8, exactly as mailwarden wrote them; SMTP replies
 * (Postfix's own, and a SASL refusal Dovecot hands to Postfix) stay English
 * ASCII, because Postfix would send UTF-8 raw to a client that never asked for
 * SMTPUTF8, or blank it (docs/PROTOCOL.md, section 5). The ban's end is shown
 * in the server's local time (TZ=Asia/Tokyo here). An administrator's own
 * message in Japanese shows what Postfix does with UTF-8 either way. config.ts
 * has the small guessing limits: refused after 3 different wrong passwords,
 * banned at the next different one.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli, startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { imapLogin } from './clients.js';
import { GUESSING_CONFIG } from './config.js';
import { MAIL_USERS, startMailStackFor, stopMailStackFor, type MailStack } from './stack.js';

const { alice, bob } = MAIL_USERS;

// An administrator's own message, a plain Japanese string: sent as written, into SMTP replies too.
const NOTE = '接続が多すぎます。';
const NOTE_RULE = `
  - name: second-connect
    on: [connect]
    key: ip
    count: events
    limit: 1
    window: 1h
    then: { action: reject, message: ${NOTE} }
`;
const TIMEOUT_MS = 20_000;

/** A connection read as bytes: each line is returned as received, CRLF included, never decoded. */
class RawLines {
  private buf = Buffer.alloc(0);
  private ended = false;
  private wake: (() => void) | undefined;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (b: Buffer) => {
      this.buf = Buffer.concat([this.buf, b]);
      this.wake?.();
    });
    const end = (): void => {
      this.ended = true;
      this.wake?.();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', end);
  }

  static open(port: number, localAddress: string): Promise<RawLines> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, localAddress });
      s.once('connect', () => resolve(new RawLines(s)));
      s.once('error', reject);
    });
  }

  /** The next line, bytes as sent. */
  async line(): Promise<Buffer> {
    const deadline = Date.now() + TIMEOUT_MS;
    for (;;) {
      const i = this.buf.indexOf('\r\n');
      if (i >= 0) {
        const line = this.buf.subarray(0, i + 2);
        this.buf = this.buf.subarray(i + 2);
        return line;
      }
      if (this.ended) throw new Error(`connection closed; left unread: ${JSON.stringify(this.buf.toString('latin1'))}`);
      if (Date.now() > deadline) throw new Error('no complete line in time');
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 200);
      });
      this.wake = undefined;
    }
  }

  /** The next line that starts with `prefix` (lines before it are skipped). */
  async lineStarting(prefix: string): Promise<Buffer> {
    for (;;) {
      const l = await this.line();
      if (l.subarray(0, prefix.length).toString('latin1') === prefix) return l;
    }
  }

  send(command: string): void {
    this.socket.write(`${command}\r\n`);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Runs `body` on a fresh raw connection and always closes it. */
async function raw<T>(port: number, ip: string, body: (c: RawLines) => Promise<T>): Promise<T> {
  const c = await RawLines.open(port, ip);
  try {
    return await body(c);
  } finally {
    c.close();
  }
}

const bytes = (text: string): Buffer => Buffer.from(text, 'utf8');
const isAscii = (b: Buffer): boolean => b.every((x) => (x >= 0x20 && x < 0x7f) || x === 0x0d || x === 0x0a);

/** A ban's end as a person in Japan reads it (JST is UTC+9 all year), rounded up to the minute. */
function jst(iso: string): string {
  const t = new Date(Math.ceil(Date.parse(iso) / 60_000) * 60_000 + 9 * 3_600_000);
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${t.getUTCFullYear()}年${t.getUTCMonth() + 1}月${t.getUTCDate()}日 ${two(t.getUTCHours())}:${two(t.getUTCMinutes())} JST`;
}

describe('e2e: locale ja, as the mail client reads it', { timeout: 300_000 }, () => {
  let dir: string;
  let mw: DaemonProcess;
  let stack: MailStack;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-e2e-locale-'));
    writeFileSync(join(dir, 'mailwarden.yaml'), `locale: ja\n${GUESSING_CONFIG}${NOTE_RULE}`);
    mw = await startDaemonProcess(join(dir, 'data'), {
      MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml'),
      TZ: 'Asia/Tokyo',
    });
    stack = await startMailStackFor(mw, { authPenalty: false });
  });
  after(() => stopMailStackFor(stack, mw, dir));

  /** IMAP LOGIN on a new connection: the tagged answer's bytes. */
  const imapAnswer = (ip: string, user: string, password: string): Promise<Buffer> =>
    raw(stack.ports.imap, ip, async (c) => {
      await c.lineStarting('* OK');
      c.send(`a1 LOGIN "${user}" "${password}"`);
      const answer = await c.lineStarting('a1 ');
      c.send('a2 LOGOUT');
      return answer;
    });

  test('IMAP guessing: refused, then banned, in Japanese; the banned client at SMTP in English ASCII', async () => {
    const ip = '127.0.70.1';
    for (const pw of ['123456', 'password', 'letmein']) {
      assert.equal(
        (await imapLogin({ port: stack.ports.imap, localAddress: ip, user: alice.user, password: pw })).ok,
        false,
      );
    }
    // The 4th different password is refused before it is checked: what the client reads, byte for byte.
    assert.deepEqual(
      await imapAnswer(ip, alice.user, 'qwerty'),
      bytes('a1 NO [ALERT] このIPアドレスからのログインの失敗が多すぎます。しばらくしてから再度お試しください。\r\n'),
    );
    // A 5th different one after the refusal bans the address.
    await imapAnswer(ip, alice.user, 'dragon');
    const check = await runCli(['bans', 'check', ip, '--json'], mw.env);
    const ban = (JSON.parse(check.stdout) as { bans: Array<{ subject: string; until: string; rule: string }> }).bans[0];
    assert.ok(ban && ban.rule === 'auth-guess-ban', check.stdout + check.stderr);

    // Now even the right password is refused, in the server's local time.
    const refused = await imapAnswer(ip, alice.user, alice.password);
    assert.deepEqual(
      refused,
      bytes(
        `a1 NO [ALERT] 接続元「${ip}」からのアクセスは${jst(ban.until)}まで制限されています（ルール：auth-guess-ban）。\r\n`,
      ),
      refused.toString('utf8'),
    );
    const pop = await raw(stack.ports.pop3, ip, async (c) => {
      await c.lineStarting('+OK');
      c.send(`USER ${bob.user}`);
      await c.lineStarting('+OK');
      c.send(`PASS ${bob.password}`);
      return c.line();
    });
    assert.deepEqual(pop, bytes(`-ERR [AUTH] ${refused.subarray('a1 NO [ALERT] '.length).toString('utf8')}`));

    // SMTP: the greeting is the refusal, English and ASCII only.
    const greeting = await raw(stack.ports.smtp, ip, (c) => c.line());
    assert.deepEqual(
      greeting,
      bytes(
        `554 5.7.1 <unknown[${ip}]>: Client host rejected: Access denied: ${ip} is blocked until ${ban.until} (rule auth-guess-ban)\r\n`,
      ),
      greeting.toString('utf8'),
    );
    assert.ok(isAscii(greeting));
  });

  test('SMTP AUTH guessing through Dovecot SASL: the 535 refusal stays English ASCII', async () => {
    const ip = '127.0.71.1';
    const answers = await raw(stack.ports.submission, ip, async (c) => {
      await c.lineStarting('220 ');
      c.send('EHLO client.mailprobe.test');
      await c.lineStarting('250 ');
      const out: Buffer[] = [];
      for (const pw of ['123456', 'password', 'letmein', 'qwerty']) {
        c.send(`AUTH PLAIN ${Buffer.from(`\0${bob.user}\0${pw}`).toString('base64')}`);
        out.push(await c.lineStarting('5'));
      }
      c.send('QUIT');
      return out;
    });
    assert.deepEqual(
      answers[3],
      bytes('535 5.7.8 Error: authentication failed: Too many failed logins from your address; try again later\r\n'),
      answers.map((a) => a.toString('utf8')).join(''),
    );
    assert.ok(answers.every(isAscii));
    // The same source over IMAP is told in Japanese.
    assert.deepEqual(
      await imapAnswer(ip, bob.user, 'dragon'),
      bytes('a1 NO [ALERT] このIPアドレスからのログインの失敗が多すぎます。しばらくしてから再度お試しください。\r\n'),
    );
  });

  test("the administrator's plain Japanese message reaches SMTP raw, and is blanked with smtputf8_enable = no", async () => {
    const ip = '127.0.72.1';
    const greeting = (): Promise<Buffer> => raw(stack.ports.smtp, ip, (c) => c.line());
    assert.equal((await greeting()).subarray(0, 4).toString(), '220 ');
    const prefix = `554 5.7.1 <unknown[${ip}]>: Client host rejected: `;
    // Postfix's default (compatibility_level 3.6): the UTF-8 goes out before EHLO, to a client that never asked.
    assert.deepEqual(await greeting(), bytes(`${prefix}${NOTE}\r\n`));
    await stack.reloadPostfix({ smtputf8_enable: 'no' });
    // Without SMTPUTF8, Postfix makes every byte of it a space.
    assert.deepEqual(await greeting(), bytes(`${prefix}${' '.repeat(bytes(NOTE).length)}\r\n`));
  });
});
