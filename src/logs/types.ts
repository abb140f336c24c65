/*
 * logs/types — what the log follower is configured with (`logs:` in the
 * config, compiled by config/compile.ts) and what the line parsers find in a
 * line before logs/events.ts turns it into engine events.
 */

/** One `logs:` entry: a file to follow, or the systemd journal read through journalctl. */
export type LogSource = (
  | {
      kind: 'file';
      path: string;
      /** `mail`: syslog-style lines of Postfix and Dovecot, or Dovecot's own log_path file; `roundcube`: its errors or userlogins log. */
      format: 'mail' | 'roundcube';
    }
  | {
      kind: 'journal';
      /** `journalctl -u` for each; empty: every entry (Postfix, Dovecot and Roundcube are told apart by SYSLOG_IDENTIFIER). */
      units: string[];
      command: string;
      /** More journalctl arguments, e.g. `--file=/path/system.journal` or `--directory=…`. */
      args: string[];
    }
) & {
  /** Roundcube behind a reverse proxy: its client is the X-Real-IP (or last X-Forwarded-For) address it logs. */
  trustForwarded: boolean;
};

/** What Postfix refused or dropped on its own: each is an event kind of the engine (engine/types.ts). */
export type AbuseKind = 'pregreet' | 'blocklisted' | 'relay-denied' | 'smtp-errors' | 'lost-after-auth';

/** A login's result as a log line tells it. */
export interface LoginFinding {
  kind: 'login';
  ok: boolean;
  ip: string;
  /** Lower-cased; undefined when the line names none (Postfix's `sasl_username=(unavailable)`). */
  user: string | undefined;
  /** `smtp`, `imap`, `pop3`, `sieve`, `submission`, `webmail`; `dovecot` for Dovecot's auth process, which does not say. */
  protocol: string;
  /** The Postfix service (`submission` of `postfix/submission/smtpd`), as the policy_context of a hook's request. */
  context: string;
  /** Dovecot's login session: the auth process's lines and the login process's line of one connection share it. */
  session: string | undefined;
  /** Failed attempts the line stands for: 1, or the N of a Dovecot login process's `auth failed, N attempts`. */
  attempts: number;
  /** The line sums up its connection (a Dovecot login process's): attempts its session's auth lines counted are not counted again. */
  summary: boolean;
  /** How long before the line its attempts were made, ms (`in S secs`): a hook's reports of them are that old. */
  spanMs: number;
}

export interface AbuseFinding {
  kind: AbuseKind;
  ip: string;
  context: string;
}

/**
 * What one line says: a login result, something Postfix refused, or `SKIP` for a line that is
 * recognised and deliberately not counted (a policy refusal: the hook that refused it reported it;
 * Dovecot's auth line of an SMTP AUTH, which Postfix's own line counts). Unknown lines: undefined.
 */
export type Finding = LoginFinding | AbuseFinding | typeof SKIP;

export const SKIP = Object.freeze({ kind: 'skip' as const });
