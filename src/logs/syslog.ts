/*
 * logs/syslog — the program and message of a log line, whatever wrote it:
 *
 *   Nov 27 23:26:14 mx postfix/submission/smtpd[11358]: warning: …   (syslog, Postfix's maillog_file)
 *   2026-11-27T23:26:14.123456+00:00 mx dovecot[812]: imap-login: …  (rsyslog's RFC 3339 timestamps)
 *   2026-11-27 23:29:14 auth: Info: passwd-file(…): Password mismatch (Dovecot's own log_path file)
 *   Nov 27 23:29:14 auth: Info: …                                    (the same, default log_timestamp)
 *
 * The timestamp is not read: an event is dated when it is read (logs/events.ts).
 * Pure, and cheap on the lines that matter to nobody (most of a mail log).
 */

export interface Header {
  /** `postfix/submission/smtpd`, `dovecot`, `roundcube`; '' for a line of Dovecot's own log file, which names no program. */
  program: string;
  message: string;
}

const SPACE = 32;

/** Index of the first non-space at or after `i`. */
function skipSpaces(line: string, i: number): number {
  while (line.charCodeAt(i) === SPACE) i++;
  return i;
}

/** Index just past the token starting at `i` (up to the next space or the end). */
function tokenEnd(line: string, i: number): number {
  const sp = line.indexOf(' ', i);
  return sp < 0 ? line.length : sp;
}

/** Where the text after the timestamp starts, or -1 when the line does not start with one. */
function afterTimestamp(line: string): number {
  const c = line.charCodeAt(0);
  let tokens: number;
  if (c >= 65 && c <= 90)
    tokens = 3; // Nov 27 23:26:14
  else if (c >= 48 && c <= 57)
    tokens = line.charCodeAt(10) === 84 ? 1 : 2; // 2026-11-27T23:26:14… | 2026-11-27 23:26:14
  else return -1;
  let i = 0;
  for (let t = 0; t < tokens; t++) {
    i = skipSpaces(line, tokenEnd(line, skipSpaces(line, i)));
    if (i >= line.length) return -1;
  }
  return i;
}

/** The token `name[pid]:` or `name:` whose colon is at `colon` → name, or undefined when it is no program tag. */
function programOf(line: string, start: number, colon: number): string | undefined {
  const bracket = line.indexOf('[', start);
  if (bracket < 0 || bracket > colon) return line.slice(start, colon);
  return line.charCodeAt(colon - 1) === 93 ? line.slice(start, bracket) : undefined; // ]
}

export function splitHeader(line: string): Header | undefined {
  const i = afterTimestamp(line);
  if (i < 0) return undefined;
  const end = tokenEnd(line, i);
  if (line.charCodeAt(end - 1) === 58) {
    // No host: Dovecot's own file (`auth: Info: …`), or a syslog line without one (`postfix/smtpd[7]: …`).
    const program = line.charCodeAt(end - 2) === 93 ? programOf(line, i, end - 1) : undefined;
    return program === undefined
      ? { program: '', message: line.slice(i) }
      : { program, message: line.slice(skipSpaces(line, end)) };
  }
  const tag = skipSpaces(line, end);
  const tagEnd = tokenEnd(line, tag);
  if (line.charCodeAt(tagEnd - 1) !== 58) return undefined;
  const program = programOf(line, tag, tagEnd - 1);
  return program === undefined ? undefined : { program, message: line.slice(skipSpaces(line, tagEnd)) };
}
