/*
 * A real Postfix 3.7 + Dovecot 2.3 on loopback, wired to given mailwarden
 * endpoints, for end-to-end tests. Everything lives in a fresh temp dir:
 * Postfix config dir, queue_directory and data_directory, Dovecot config,
 * base_dir and state_dir, logs, Maildirs and a throw-away TLS cert. Nothing
 * under /etc/postfix, /var/spool/postfix, /etc/dovecot or /run/dovecot is read
 * or written, so several stacks (and the machine's own mail system) can run
 * side by side.
 *
 * Needs root (Postfix and Dovecot drop privileges themselves) and the Debian
 * packages postfix, dovecot-core, dovecot-imapd, dovecot-pop3d, openssl
 * (scripts/install-system-deps.sh). A missing binary is an error, never a skip.
 *
 * How it runs:
 * - Postfix: `postfix -c <dir>/postfix start`. As root, -c needs no
 *   alternate_config_directories entry (that check applies to non-root
 *   callers only). postfix-script creates the queue and data directories with
 *   the right owners (post-install create-missing); stop is SIGTERM to the
 *   master PID from <queue>/pid/master.pid.
 * - Dovecot: `dovecot -c <dir>/dovecot/dovecot.conf` with its own base_dir,
 *   state_dir and instance_name; stop is SIGTERM to <base_dir>/master.pid.
 * - Postfix SASL talks to Dovecot's auth service over TCP (inet listener), so
 *   no socket under the Postfix queue and no permissions are involved.
 * - Mail for alice/bob/carol/admin (postmaster, root -> admin) is delivered by
 *   Postfix local(8), through aliases, into the Maildir that Dovecot serves:
 *   <dir>/mail/<user>@mailprobe.test/Maildir/ (owner vmail). readMailbox()
 *   reads it back.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  accessSync,
  chmodSync,
  chownSync,
  closeSync,
  constants as fsConstants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import type { DaemonProcess } from '../helpers/daemon.js';
import { POLICY_HOOKS } from '../helpers/dovecot.js';

export const MAIL_DOMAIN = 'mailprobe.test';

/** The Dovecot users (passwd-file, {PLAIN}); Postfix accepts mail for all of them. */
export const MAIL_USERS = {
  alice: { user: 'alice@mailprobe.test', password: 'AlicePass1' },
  bob: { user: 'bob@mailprobe.test', password: 'BobPass2' },
  carol: { user: 'carol@mailprobe.test', password: 'CarolPass3' },
  admin: { user: 'admin@mailprobe.test', password: 'AdminPass4' },
} as const;

/** Same nonce as the captures in test/fixtures/protocol, so pwhash values match docs/PROTOCOL.md. */
export const DEFAULT_NONCE = 'mailprobe-nonce-0123456789';

/** A mailbox of the stack: the login (user@mailprobe.test) and its {PLAIN} password. */
export interface MailUser {
  user: string;
  password: string;
}

/**
 * The `pwhash` Dovecot sends for this login and password (docs/PROTOCOL.md,
 * section 2): the first 12 bits of sha256(nonce || user || NUL || password),
 * as 4 lower-case hex digits. With 12 bits two passwords collide now and then;
 * tests that count different passwords pick ones whose pwhash differs.
 */
export function pwhash(user: string, password: string, nonce = DEFAULT_NONCE): string {
  const h = createHash('sha256').update(`${nonce}${user}\0${password}`, 'utf8').digest();
  return (((h[0]! << 8) | h[1]!) >> 4).toString(16).padStart(4, '0');
}

/** One `Password mismatch` line of the Dovecot log: a password Dovecot really checked, and found wrong. */
export interface PasswordCheck {
  user: string;
  ip: string;
  /** The login session (IMAP/POP3); '' for SMTP AUTH through Postfix, which has none. */
  session: string;
}

/**
 * Every `Password mismatch` line in a Dovecot log (auth_verbose = yes), e.g.
 * `auth: Info: passwd-file(alice@mailprobe.test,127.0.0.22,<4JybbUphiZh/AAAW>): Password mismatch`
 * (IMAP, POP3) or `passwd-file(alice@mailprobe.test,127.0.0.1): Password mismatch` (SMTP AUTH).
 * A password refused by the policy server before the check leaves no such line.
 */
export function passwordChecks(dovecotLog: string): PasswordCheck[] {
  const out: PasswordCheck[] = [];
  for (const m of dovecotLog.matchAll(/passwd-file\(([^,()]*),([^,()]*)(?:,<([^>]*)>)?\): Password mismatch/g)) {
    out.push({ user: m[1]!, ip: m[2]!, session: m[3] ?? '' });
  }
  return out;
}

export interface MailStackOptions {
  /** check_policy_service target, e.g. 'inet:127.0.0.1:10031' or 'unix:/path/to/socket'. */
  postfixPolicy: string;
  /** auth_policy_server_url, e.g. 'http://127.0.0.1:10032/dovecot/policy' (Dovecot appends ?command=...). */
  dovecotPolicyUrl: string;
  /** auth_policy_server_api_header, e.g. 'X-Mailwarden-Key: s3cret'. */
  dovecotPolicyHeader?: string;
  /** auth_policy_hash_nonce (default DEFAULT_NONCE). */
  nonce?: string;
  /**
   * What happens to mail for non-local domains (only authenticated clients may
   * relay). 'error' (default): default_transport = error:..., so Postfix
   * itself refuses such a RCPT with 550 5.1.1 (after the policy server saw
   * it), and a message with only remote recipients never reaches
   * END-OF-MESSAGE. 'discard': it is accepted (250) and silently dropped at
   * delivery, so outbound flow (spam from a stolen account) can be tested
   * through END-OF-MESSAGE. Either way nothing leaves the machine.
   */
  outbound?: 'error' | 'discard';
  /** Extra/overriding main.cf parameters (applied last). */
  postfixMainCf?: Record<string, string>;
  /** Extra/overriding dovecot.conf top-level settings (applied last). */
  dovecotSettings?: Record<string, string>;
  /** Start-up timeout for each daemon, ms (default 20000). */
  startTimeoutMs?: number;
  /** More mailboxes besides MAIL_USERS (same domain), e.g. so each scenario of a file attacks an account of its own. */
  extraUsers?: readonly MailUser[];
  /**
   * Dovecot's own per-address failure penalty (anvil; 2, 4, 8, up to 15 s
   * before each new attempt). On by default, as shipped. docs/INTEGRATION.md
   * explains why an installation with mailwarden may turn it off.
   */
  authPenalty?: boolean;
}

export interface MailStackPorts {
  /** MX-like smtpd (port-25 role): unauthenticated inbound, AUTH offered. */
  smtp: number;
  /** Submission smtpd: policy_context=submission, AUTH. */
  submission: number;
  imap: number;
  pop3: number;
  /** Dovecot auth service (Postfix SASL), TCP. */
  sasl: number;
}

export interface MailStack {
  dir: string;
  ports: MailStackPorts;
  /** Master PIDs (for "nothing left behind" checks). */
  pids: { postfix: number; dovecot: number };
  /** PIDs of every live process of this instance (both masters and all their children). */
  processes(): number[];
  /** Whole Postfix log (maillog_file), '' if not yet written. */
  postfixLog(): string;
  /** Whole Dovecot log (log_path), '' if not yet written. */
  dovecotLog(): string;
  /**
   * The `Password mismatch` lines of the Dovecot log (passwordChecks()), once
   * the log has stopped growing for `quietMs` (Dovecot's log process writes a
   * moment after the client got its answer), at most `timeoutMs`.
   */
  settledPasswordChecks(quietMs?: number, timeoutMs?: number): Promise<PasswordCheck[]>;
  /**
   * Messages delivered to a local user, oldest first (raw RFC 5322 text, with
   * the Return-Path/Delivered-To/Received headers local(8) adds). `user` is
   * 'admin' or 'admin@mailprobe.test'.
   */
  readMailbox(user: string): string[];
  /** Polls readMailbox(user) until it holds at least `count` messages; returns them (throws on timeout). */
  waitForMail(user: string, count?: number, timeoutMs?: number): Promise<string[]>;
  /**
   * `postconf -e` the given main.cf parameters (if any), then reload Postfix
   * (SIGHUP to master) and wait until every smtpd that existed before has
   * exited. Idle smtpd processes exit at once; one that serves an open SMTP
   * session exits when that session ends (throws after 15 s).
   */
  reloadPostfix(mainCf?: Record<string, string>): Promise<void>;
  /**
   * Rewrites dovecot.conf with these top-level settings changed (e.g.
   * { auth_policy_server_url: 'http://127.0.0.1:1/x' } or
   * { auth_policy_reject_on_fail: 'yes' }), reloads Dovecot (SIGHUP) and then
   * Postfix, because smtpd's open SASL connection would otherwise keep talking
   * to the old auth process with the old settings. Ports stay the same.
   */
  reloadDovecot(settings?: Record<string, string>): Promise<void>;
  /**
   * Makes every smtpd drop its persistent policy connection (smtpd keeps one
   * per process for up to 1000 s): a Postfix reload, waiting for the old
   * smtpd processes to be gone. New sessions connect afresh.
   */
  restartPostfixPolicyConnections(): Promise<void>;
  /** Stops Dovecot and Postfix (by PID), waits until all their processes are gone, removes the dir. Idempotent. */
  stop(): Promise<void>;
}

const PROC_WAIT_MS = 15_000;

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], timeoutMs = 30_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, env: cleanEnv() }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr: stderr + (err && code === -1 ? `\n${err.message}` : '') });
    });
  });
}

/**
 * Runs a command that leaves a daemon behind (`dovecot`, `postfix start`).
 * The daemon inherits stdout/stderr, so waiting for pipes to close would wait
 * for the daemon: output goes to a file and only the command's exit counts.
 */
function runStarter(cmd: string, args: string[], outFile: string, timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve) => {
    const fd = openSync(outFile, 'a');
    let done = false;
    const finish = (code: number | null, extra = '') => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ code, stdout: '', stderr: readText(outFile) + extra });
    };
    const child = spawn(cmd, args, { env: cleanEnv(), stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const timer = setTimeout(() => {
      if (child.pid) signal(child.pid, 'SIGKILL');
      finish(-1, `\n${cmd} ${args.join(' ')}: no exit after ${timeoutMs} ms`);
    }, timeoutMs);
    child.once('error', (e) => finish(-1, `\n${e.message}`));
    child.once('exit', (code, sig) => finish(code, sig ? `\nkilled by ${sig}` : ''));
  });
}

function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    LANG: 'C',
    LC_ALL: 'C',
  };
  if (process.env.TZ) env.TZ = process.env.TZ;
  return env;
}

function which(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  for (const d of dirs) {
    if (!d) continue;
    const p = join(d, name);
    try {
      accessSync(p, fsConstants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

function requireBinary(name: string, pkg: string): string {
  const p = which(name);
  if (!p) {
    throw new Error(
      `e2e mail stack: '${name}' not found (Debian package ${pkg}). Install the system packages with ` +
        '`bash scripts/install-system-deps.sh` (as root).',
    );
  }
  return p;
}

/** Distinct free loopback ports: all bound at once (so they differ), then released. */
async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < n; i++) {
      const s = createServer();
      servers.push(s);
      ports.push(
        await new Promise<number>((resolve, reject) => {
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => {
            const a = s.address();
            resolve(typeof a === 'object' && a ? a.port : 0);
          });
        }),
      );
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

/** Ports in LISTEN state on 127.0.0.1 or 0.0.0.0, from /proc/net/tcp (no connection is made). */
function listeningPorts(): Set<number> {
  const out = new Set<number>();
  let text = '';
  try {
    text = readFileSync('/proc/net/tcp', 'utf8');
  } catch {
    return out;
  }
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || f[3] !== '0A') continue;
    const [addr, port] = (f[1] ?? '').split(':');
    if (addr !== '0100007F' && addr !== '00000000') continue;
    out.add(parseInt(port ?? '0', 16));
  }
  return out;
}

interface ProcInfo {
  pid: number;
  ppid: number;
  state: string;
  comm: string;
}

function procInfo(pid: number): ProcInfo | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const open = stat.indexOf('(');
  const close = stat.lastIndexOf(')');
  const rest = stat.slice(close + 2).split(' ');
  return { pid, comm: stat.slice(open + 1, close), state: rest[0] ?? '?', ppid: Number(rest[1]) };
}

function allProcs(): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const p = procInfo(Number(name));
    if (p) out.push(p);
  }
  return out;
}

/** The process and all its descendants (alive ones). */
function processTree(root: number): ProcInfo[] {
  const procs = allProcs();
  const byParent = new Map<number, ProcInfo[]>();
  for (const p of procs) {
    const list = byParent.get(p.ppid) ?? [];
    list.push(p);
    byParent.set(p.ppid, list);
  }
  const rootInfo = procs.find((p) => p.pid === root);
  if (!rootInfo) return [];
  const out: ProcInfo[] = [rootInfo];
  for (let i = 0; i < out.length; i++) {
    for (const c of byParent.get(out[i]!.pid) ?? []) out.push(c);
  }
  return out.filter((p) => p.state !== 'Z' && p.state !== 'X');
}

/** Live processes started for this instance (see stop()); matched on exact argv/env entries. */
function instanceProcesses(dovecotConf: string, postfixConfDir: string): number[] {
  const out: number[] = [];
  for (const p of allProcs()) {
    if (p.state === 'Z' || p.state === 'X') continue;
    try {
      const argv = readFileSync(`/proc/${p.pid}/cmdline`, 'utf8').split('\0');
      const i = argv.indexOf('-c');
      if (i >= 0 && argv[i + 1] === dovecotConf) {
        out.push(p.pid);
        continue;
      }
      const env = readFileSync(`/proc/${p.pid}/environ`, 'utf8').split('\0');
      if (env.includes(`MAIL_CONFIG=${postfixConfDir}`)) out.push(p.pid);
    } catch {
      /* gone, or not ours to read */
    }
  }
  return out;
}

/** Alive = exists and is not a zombie (PID 1 here does not always reap re-parented daemons). */
function alive(pid: number): boolean {
  const p = procInfo(pid);
  return p !== undefined && p.state !== 'Z' && p.state !== 'X';
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitGone(pids: number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let left = pids.filter(alive);
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(50);
    left = left.filter(alive);
  }
  return left;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

function readPid(file: string): number | undefined {
  try {
    const n = parseInt(readFileSync(file, 'utf8').trim(), 10);
    return Number.isFinite(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

async function waitPidFile(file: string, timeoutMs: number): Promise<number | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pid = readPid(file);
    if (pid && alive(pid)) return pid;
    if (Date.now() > deadline) return undefined;
    await sleep(25);
  }
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function tail(text: string, lines = 40): string {
  return text.split('\n').slice(-lines).join('\n');
}

let vmailPromise: Promise<{ uid: number; gid: number }> | undefined;

/** The vmail user (created as for the captures in test/fixtures/protocol, idempotently and race-tolerant). */
function ensureVmail(): Promise<{ uid: number; gid: number }> {
  vmailPromise ??= (async () => {
    const lookup = async () => {
      const r = await run('getent', ['passwd', 'vmail']);
      if (r.code !== 0) return undefined;
      const f = r.stdout.trim().split(':');
      return { uid: Number(f[2]), gid: Number(f[3]) };
    };
    const found = await lookup();
    if (found) return found;
    const uid5000Free = (await run('getent', ['passwd', '5000'])).code !== 0;
    const args = ['--system', '--user-group', '--home-dir', '/nonexistent', '--no-create-home'];
    args.push('--shell', '/usr/sbin/nologin');
    if (uid5000Free) args.push('--uid', '5000');
    const r = await run('useradd', [...args, 'vmail']);
    // Another test process may have created it in the meantime: look again either way.
    const again = await lookup();
    if (!again) throw new Error(`e2e mail stack: cannot create user vmail: ${r.stderr}`);
    return again;
  })();
  return vmailPromise;
}

async function groupId(name: string): Promise<number | undefined> {
  const r = await run('getent', ['group', name]);
  if (r.code !== 0) return undefined;
  return Number(r.stdout.trim().split(':')[2]);
}

function mainCf(
  dir: string,
  ports: MailStackPorts,
  opts: MailStackOptions,
  vmail: string,
  tls: boolean,
): Record<string, string> {
  const policy = `check_policy_service ${opts.postfixPolicy}`;
  const outbound =
    opts.outbound === 'discard'
      ? 'discard:outbound mail disabled in the mailwarden e2e stack'
      : 'error:outbound mail disabled in the mailwarden e2e stack';
  const cf: Record<string, string> = {
    compatibility_level: '3.6',
    queue_directory: join(dir, 'postfix-queue'),
    data_directory: join(dir, 'postfix-data'),
    myhostname: 'mx.mailprobe.test',
    mydomain: MAIL_DOMAIN,
    myorigin: '$mydomain',
    mydestination: 'mailprobe.test, localhost',
    inet_interfaces: '127.0.0.1',
    inet_protocols: 'ipv4',
    mynetworks: '127.0.0.1/32',
    relayhost: '',
    default_transport: outbound,
    relay_transport: outbound,
    alias_maps: `texthash:${join(dir, 'postfix', 'aliases')}`,
    alias_database: `texthash:${join(dir, 'postfix', 'aliases')}`,
    // Only the aliases are local recipients (not the machine's passwd users), and
    // nothing is ever written outside the temp dir (/var/mail, ~/.forward).
    local_recipient_maps: '$alias_maps',
    mail_spool_directory: join(dir, 'spool'),
    forward_path: '',
    // local(8) writes into the Maildirs as this user (the alias map is root-owned).
    default_privs: vmail,
    biff: 'no',
    append_dot_mydomain: 'no',
    readme_directory: 'no',
    smtpd_banner: '$myhostname ESMTP $mail_name (mailwarden e2e)',
    maillog_file: join(dir, 'log', 'postfix.log'),
    maillog_file_prefixes: dir,
    // SASL through Dovecot, over TCP.
    smtpd_sasl_auth_enable: 'yes',
    smtpd_sasl_type: 'dovecot',
    smtpd_sasl_path: `inet:127.0.0.1:${ports.sasl}`,
    smtpd_sasl_security_options: 'noanonymous',
    smtpd_sasl_authenticated_header: 'no',
    broken_sasl_auth_clients: 'no',
    // Policy delegation exactly as docs/INTEGRATION.md tells administrators.
    smtpd_delay_reject: 'no',
    smtpd_client_restrictions: policy,
    smtpd_sender_restrictions: policy,
    smtpd_recipient_restrictions: policy,
    smtpd_end_of_data_restrictions: policy,
    smtpd_policy_service_default_action: 'DUNNO',
    smtpd_policy_service_timeout: '5s',
    smtpd_relay_restrictions: 'permit_sasl_authenticated, reject_unauth_destination',
  };
  if (tls) {
    Object.assign(cf, {
      smtpd_tls_cert_file: join(dir, 'tls', 'cert.pem'),
      smtpd_tls_key_file: join(dir, 'tls', 'key.pem'),
      smtpd_tls_security_level: 'may',
      smtpd_tls_loglevel: '1',
    });
  }
  return { ...cf, ...(opts.postfixMainCf ?? {}) };
}

function masterCf(ports: MailStackPorts): string {
  return `# mailwarden e2e: every service chroot n, loopback listeners only.
127.0.0.1:${ports.smtp} inet n - n - - smtpd
127.0.0.1:${ports.submission} inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_policy_service_policy_context=submission
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;
}

function dovecotConf(
  dir: string,
  ports: MailStackPorts,
  opts: MailStackOptions,
  vmail: { uid: number; gid: number },
  tls: boolean,
  instance: string,
): string {
  const log = join(dir, 'log', 'dovecot.log');
  const users = join(dir, 'dovecot', 'users');
  const settings: Record<string, string> = {
    protocols: 'imap pop3',
    listen: '127.0.0.1',
    base_dir: join(dir, 'dovecot-run'),
    state_dir: join(dir, 'dovecot-state'),
    instance_name: instance,
    log_path: log,
    info_log_path: log,
    debug_log_path: log,
    log_timestamp: '"%Y-%m-%d %H:%M:%S "',
    auth_verbose: 'yes',
    auth_debug: 'no',
    ssl: tls ? 'yes' : 'no',
    disable_plaintext_auth: 'no',
    auth_mechanisms: 'plain login',
    mail_location: `maildir:${join(dir, 'mail')}/%u/Maildir`,
    first_valid_uid: String(Math.min(vmail.uid, 500)),
    auth_policy_server_url: opts.dovecotPolicyUrl,
    auth_policy_hash_nonce: opts.nonce ?? DEFAULT_NONCE,
    ...POLICY_HOOKS,
    auth_policy_server_timeout_msecs: '2000',
  };
  if (tls) {
    settings.ssl_cert = `<${join(dir, 'tls', 'cert.pem')}`;
    settings.ssl_key = `<${join(dir, 'tls', 'key.pem')}`;
  }
  if (opts.dovecotPolicyHeader) settings.auth_policy_server_api_header = opts.dovecotPolicyHeader;
  Object.assign(settings, opts.dovecotSettings ?? {});
  const top = Object.entries(settings)
    .map(([k, v]) => `${k} = ${v}`)
    .join('\n');
  return `# mailwarden e2e: self-contained Dovecot 2.3 config, loopback only.
${top}

passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${users}
}
userdb {
  driver = passwd-file
  args = username_format=%u ${users}
  default_fields = uid=${vmail.uid} gid=${vmail.gid} home=${join(dir, 'mail')}/%u
}

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = ${ports.imap}
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = ${ports.pop3}
  }
  inet_listener pop3s {
    port = 0
  }
}
${opts.authPenalty === false ? ANVIL_PENALTY_OFF : ''}service auth {
  # Postfix SASL: smtpd_sasl_type = dovecot, smtpd_sasl_path = inet:127.0.0.1:${ports.sasl}
  inet_listener postfix-sasl {
    address = 127.0.0.1
    port = ${ports.sasl}
  }
  unix_listener auth-userdb {
    mode = 0600
  }
}
`;
}

/** Dovecot's documented way to turn the auth penalty off (docs/INTEGRATION.md). */
const ANVIL_PENALTY_OFF = `service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
`;

function aliasesFile(dir: string, users: readonly MailUser[]): string {
  const lines = ['# texthash: "name whitespace destination"'];
  for (const u of users) {
    const local = u.user.split('@')[0]!;
    lines.push(`${local} ${join(dir, 'mail', u.user, 'Maildir')}/`);
  }
  lines.push('postmaster admin', 'root admin', 'mailer-daemon admin', 'abuse admin');
  return lines.join('\n') + '\n';
}

async function makeCert(dir: string): Promise<boolean> {
  const openssl = which('openssl');
  if (!openssl) return false;
  const r = await run(openssl, [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=mx.mailprobe.test',
    '-keyout',
    join(dir, 'tls', 'key.pem'),
    '-out',
    join(dir, 'tls', 'cert.pem'),
  ]);
  if (r.code !== 0) return false;
  chmodSync(join(dir, 'tls', 'key.pem'), 0o600);
  return true;
}

class StartError extends Error {
  constructor(
    message: string,
    readonly portClash: boolean,
  ) {
    super(message);
  }
}

/**
 * Starts Postfix and Dovecot for one test file. Retries (new dir, new ports)
 * when a port picked as free was taken by someone else in the meantime.
 */
export async function startMailStack(opts: MailStackOptions): Promise<MailStack> {
  if (process.getuid?.() !== 0)
    throw new Error('e2e mail stack: must run as root (Postfix and Dovecot drop privileges themselves)');
  const bins = {
    postfix: requireBinary('postfix', 'postfix'),
    postconf: requireBinary('postconf', 'postfix'),
    dovecot: requireBinary('dovecot', 'dovecot-core'),
  };
  for (const [mod, pkg] of [
    ['/usr/lib/dovecot/imap', 'dovecot-imapd'],
    ['/usr/lib/dovecot/pop3', 'dovecot-pop3d'],
  ] as const) {
    if (!existsSync(mod))
      throw new Error(`e2e mail stack: ${mod} missing (Debian package ${pkg}); run scripts/install-system-deps.sh`);
  }
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(opts, bins);
    } catch (e) {
      lastErr = e;
      if (!(e instanceof StartError && e.portClash)) throw e;
    }
  }
  throw lastErr;
}

/** startMailStack wired to a mailwarden's policy listeners on loopback, as docs/INTEGRATION.md says. */
export function startMailStackFor(
  mw: Pick<DaemonProcess, 'postfixPort' | 'dovecotPort'>,
  opts: Omit<MailStackOptions, 'postfixPolicy' | 'dovecotPolicyUrl'> = {},
): Promise<MailStack> {
  return startMailStack({
    postfixPolicy: `inet:127.0.0.1:${mw.postfixPort}`,
    dovecotPolicyUrl: `http://127.0.0.1:${mw.dovecotPort}/dovecot/policy`,
    ...opts,
  });
}

/**
 * An e2e file's teardown: the stack, then mailwarden, then the file's temp dir. Either may be
 * undefined when `before` failed half-way; what was started is still stopped.
 */
export async function stopMailStackFor(
  stack: MailStack | undefined,
  mw: DaemonProcess | undefined,
  dir: string,
): Promise<void> {
  await stack?.stop();
  await mw?.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}

async function startOnce(
  opts: MailStackOptions,
  bins: { postfix: string; postconf: string; dovecot: string },
): Promise<MailStack> {
  const startTimeout = opts.startTimeoutMs ?? 20_000;
  const t0 = Date.now();
  const step = (what: string) => {
    if (process.env.MAILWARDEN_E2E_DEBUG) process.stderr.write(`[e2e stack] +${Date.now() - t0} ms ${what}\n`);
  };
  const vmail = await ensureVmail();
  const dovecotGid = await groupId('dovecot');

  const dir = mkdtempSync(join(process.env.MAILWARDEN_E2E_TMP ?? '/tmp', 'mailwarden-e2e-'));
  // Dovecot's auth process (user dovecot) and the mail processes (vmail) must traverse it.
  chmodSync(dir, 0o755);
  const [smtp, submission, imap, pop3, sasl] = await freePorts(5);
  const ports: MailStackPorts = { smtp: smtp!, submission: submission!, imap: imap!, pop3: pop3!, sasl: sasl! };
  const pfConf = join(dir, 'postfix');
  const dvConf = join(dir, 'dovecot', 'dovecot.conf');
  const postfixLogFile = join(dir, 'log', 'postfix.log');
  const dovecotLogFile = join(dir, 'log', 'dovecot.log');
  const postfixPidFile = join(dir, 'postfix-queue', 'pid', 'master.pid');
  const dovecotPidFile = join(dir, 'dovecot-run', 'master.pid');
  const instance = `mailwarden-e2e-${randomBytes(4).toString('hex')}`;
  const users: MailUser[] = [...Object.values(MAIL_USERS), ...(opts.extraUsers ?? [])];

  for (const d of ['postfix', 'postfix-queue', 'dovecot', 'log', 'tls', 'mail']) mkdirSync(join(dir, d));
  // postfix-data is created by postfix-script (post-install create-missing) with owner postfix.
  chownSync(join(dir, 'mail'), vmail.uid, vmail.gid);
  chmodSync(join(dir, 'mail'), 0o700);
  for (const u of users) {
    const home = join(dir, 'mail', u.user);
    mkdirSync(home);
    chownSync(home, vmail.uid, vmail.gid);
    chmodSync(home, 0o700);
  }
  const tls = await makeCert(dir);

  const cf = mainCf(dir, ports, opts, 'vmail', tls);
  writeFileSync(
    join(pfConf, 'main.cf'),
    '# mailwarden e2e (generated)\n' +
      Object.entries(cf)
        .map(([k, v]) => `${k} = ${v}`)
        .join('\n') +
      '\n',
  );
  writeFileSync(join(pfConf, 'master.cf'), masterCf(ports));
  writeFileSync(join(pfConf, 'aliases'), aliasesFile(dir, users), { mode: 0o644 });

  let dovecotSettings: Record<string, string> = { ...(opts.dovecotSettings ?? {}) };
  const writeDovecotConf = () =>
    writeFileSync(dvConf, dovecotConf(dir, ports, { ...opts, dovecotSettings }, vmail, tls, instance));
  writeDovecotConf();
  const usersFile = join(dir, 'dovecot', 'users');
  writeFileSync(usersFile, users.map((u) => `${u.user}:{PLAIN}${u.password}::::::`).join('\n') + '\n', { mode: 0o640 });
  if (dovecotGid !== undefined) chownSync(usersFile, 0, dovecotGid);
  else chmodSync(usersFile, 0o644);

  let postfixPid = 0;
  let dovecotPid = 0;
  let stopped = false;

  const postfixLog = () => readText(postfixLogFile);
  const dovecotLog = () => readText(dovecotLogFile);

  const stopAll = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // The masters by their PID files, by the PIDs seen at start, and (for a
    // start that failed half-way) by what identifies this instance: the
    // Dovecot master's command line names our config, the Postfix master's
    // environment holds MAIL_CONFIG=<our config dir>.
    const roots = new Set<number>();
    for (const pid of [readPid(postfixPidFile), readPid(dovecotPidFile), postfixPid, dovecotPid]) {
      if (pid && alive(pid)) roots.add(pid);
    }
    for (const pid of instanceProcesses(dvConf, pfConf)) roots.add(pid);
    const tree = [...new Set([...roots].flatMap((r) => processTree(r).map((p) => p.pid)))];
    for (const r of roots) signal(r, 'SIGTERM');
    let left = await waitGone(tree, PROC_WAIT_MS);
    if (left.length > 0) {
      for (const p of left) signal(p, 'SIGKILL');
      left = await waitGone(left, 5_000);
    }
    // Stragglers that became orphans (e.g. a local(8) still delivering) were in `tree` already.
    rmSync(dir, { recursive: true, force: true });
    if (left.length > 0) throw new Error(`e2e mail stack: processes still alive after SIGKILL: ${left.join(' ')}`);
  };

  const fail = async (what: string, detail: string): Promise<never> => {
    const msg =
      `e2e mail stack: ${what}\n${detail}\n--- postfix log (tail) ---\n${tail(postfixLog())}` +
      `\n--- dovecot log (tail) ---\n${tail(dovecotLog())}`;
    const clash = /address already in use/i.test(msg);
    await stopAll().catch(() => undefined);
    throw new StartError(msg, clash);
  };

  // Syntax checks first: clear errors instead of a daemon that dies later.
  step('config written');
  const dcheck = await run(bins.dovecot, ['-c', dvConf, '-n']);
  if (dcheck.code !== 0) await fail('dovecot config check failed', dcheck.stderr);

  // Dovecot first: Postfix's SASL client connects to it.
  step('dovecot config ok');
  const ds = await runStarter(bins.dovecot, ['-c', dvConf], join(dir, 'log', 'dovecot-start.out'), startTimeout);
  if (ds.code !== 0) await fail(`dovecot -c ${dvConf} exited ${ds.code}`, ds.stdout + ds.stderr);
  // The starter exits right after forking; the daemon writes master.pid a moment later.
  step('dovecot starter exited');
  dovecotPid = (await waitPidFile(dovecotPidFile, startTimeout)) ?? 0;
  if (!dovecotPid) await fail('dovecot wrote no master.pid', ds.stderr);

  step('dovecot master up');
  const ps = await runStarter(
    bins.postfix,
    ['-c', pfConf, 'start'],
    join(dir, 'log', 'postfix-start.out'),
    startTimeout,
  );
  step('postfix start exited');
  postfixPid = (ps.code === 0 ? await waitPidFile(postfixPidFile, startTimeout) : readPid(postfixPidFile)) ?? 0;
  if (ps.code !== 0) await fail(`postfix -c ${pfConf} start exited ${ps.code}`, ps.stdout + ps.stderr);
  if (!postfixPid) await fail('postfix wrote no master.pid', ps.stderr);

  step('postfix master up');
  const want = [ports.smtp, ports.submission, ports.imap, ports.pop3, ports.sasl];
  const deadline = Date.now() + startTimeout;
  for (;;) {
    const l = listeningPorts();
    const missing = want.filter((p) => !l.has(p));
    if (missing.length === 0) break;
    if (!alive(postfixPid)) await fail('the Postfix master exited during start-up', '');
    if (!alive(dovecotPid)) await fail('the Dovecot master exited during start-up', '');
    if (Date.now() > deadline) await fail(`ports not listening after ${startTimeout} ms: ${missing.join(' ')}`, '');
    await sleep(50);
  }

  step('listening');
  const mailDir = (user: string) => join(dir, 'mail', user.includes('@') ? user : `${user}@${MAIL_DOMAIN}`, 'Maildir');
  const readMailbox = (user: string): string[] => {
    const files: Array<{ path: string; mtime: number; name: string }> = [];
    for (const sub of ['new', 'cur']) {
      const d = join(mailDir(user), sub);
      let names: string[] = [];
      try {
        names = readdirSync(d);
      } catch {
        continue;
      }
      for (const name of names) {
        const path = join(d, name);
        try {
          files.push({ path, name, mtime: statSync(path).mtimeMs });
        } catch {
          /* moved between new/ and cur/ */
        }
      }
    }
    files.sort((a, b) => a.mtime - b.mtime || a.name.localeCompare(b.name));
    return files.map((f) => readText(f.path));
  };

  const reloadPostfix = async (changes?: Record<string, string>): Promise<void> => {
    if (changes && Object.keys(changes).length > 0) {
      const r = await run(bins.postconf, ['-c', pfConf, '-e', ...Object.entries(changes).map(([k, v]) => `${k}=${v}`)]);
      if (r.code !== 0) throw new Error(`postconf -e failed: ${r.stderr}`);
    }
    const smtpds = processTree(postfixPid)
      .filter((p) => p.comm === 'smtpd')
      .map((p) => p.pid);
    signal(postfixPid, 'SIGHUP');
    const left = await waitGone(smtpds, PROC_WAIT_MS);
    if (left.length > 0) throw new Error(`postfix reload: smtpd processes still serving sessions: ${left.join(' ')}`);
  };

  const reloadDovecot = async (changes: Record<string, string> = {}): Promise<void> => {
    const previous = dovecotSettings;
    dovecotSettings = { ...dovecotSettings, ...changes };
    writeDovecotConf();
    const check = await run(bins.dovecot, ['-c', dvConf, '-n']);
    if (check.code !== 0) {
      dovecotSettings = previous;
      writeDovecotConf();
      throw new Error(`dovecot config check failed after ${JSON.stringify(changes)}: ${check.stderr}`);
    }
    const marker = 'SIGHUP received - reloading configuration';
    const seen = dovecotLog().split(marker).length;
    signal(dovecotPid, 'SIGHUP');
    const deadline = Date.now() + PROC_WAIT_MS;
    while (dovecotLog().split(marker).length === seen) {
      if (Date.now() > deadline) throw new Error('dovecot reload: no reload line in the log');
      await sleep(25);
    }
    // Postfix's smtpd keeps its SASL connection to the old auth process, which
    // keeps the old settings (docs/PROTOCOL.md, pitfall 3): reload Postfix as well.
    await reloadPostfix();
  };

  return {
    dir,
    ports,
    pids: { postfix: postfixPid, dovecot: dovecotPid },
    processes: () => [...new Set([postfixPid, dovecotPid].flatMap((r) => processTree(r).map((p) => p.pid)))],
    postfixLog,
    dovecotLog,
    async settledPasswordChecks(quietMs = 500, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      let last = dovecotLog().length;
      let since = Date.now();
      while (Date.now() - since < quietMs && Date.now() < deadline) {
        await sleep(100);
        const now = dovecotLog().length;
        if (now !== last) {
          last = now;
          since = Date.now();
        }
      }
      return passwordChecks(dovecotLog());
    },
    readMailbox,
    async waitForMail(user, count = 1, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const msgs = readMailbox(user);
        if (msgs.length >= count) return msgs;
        if (Date.now() > deadline) {
          throw new Error(
            `no mail for ${user} after ${timeoutMs} ms (have ${msgs.length}, want ${count})\n${tail(postfixLog())}`,
          );
        }
        await sleep(100);
      }
    },
    reloadPostfix,
    reloadDovecot,
    restartPostfixPolicyConnections: () => reloadPostfix(),
    stop: stopAll,
  };
}
