/*
 * logs/recognise — one log line (or journal entry) to what it says, by who
 * wrote it: Postfix, Dovecot or Roundcube. Pure.
 */
import { parseDovecot } from './dovecot.js';
import { parsePostfix } from './postfix.js';
import { parseRoundcube } from './roundcube.js';
import { splitHeader } from './syslog.js';
import type { Finding } from './types.js';

/** A message of `program` (a syslog tag or the journal's SYSLOG_IDENTIFIER; '' for Dovecot's own log file). */
export function recogniseMessage(program: string, message: string, trustForwarded: boolean): Finding | undefined {
  if (program.startsWith('postfix')) return parsePostfix(program, message);
  if (program === '' || program.startsWith('dovecot')) return parseDovecot(message);
  if (program.startsWith('roundcube')) return parseRoundcube(message, trustForwarded);
  return undefined;
}

/** A line of a `format: mail` file: syslog's mail log, Postfix's maillog_file, Dovecot's log_path. */
export function recogniseMailLine(line: string, trustForwarded = false): Finding | undefined {
  const h = splitHeader(line);
  return h === undefined ? undefined : recogniseMessage(h.program, h.message, trustForwarded);
}
