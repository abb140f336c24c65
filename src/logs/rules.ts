/*
 * logs/rules — the built-in rules for what only the log follower tells, in
 * force when `logs:` names a source (config/compile.ts appends them to the
 * built-in rules; a rule of the file with the same name is merged over one,
 * as with any built-in rule). The other built-in rules see the log's login
 * results too: spraying (distinct users) and one account attacked from many
 * networks count them like the hooks' reports.
 */
import type { RawConfig } from '../config/schema.js';

export const LOG_RULES: NonNullable<RawConfig['rules']> = [
  {
    name: 'auth-failures-ban',
    description:
      "Failed logins without a password fingerprint, as the logs tell them (SMTP AUTH through Cyrus SASL, Dovecot without its policy hook, webmail): a source failing this often is banned on every protocol. The hooks' reports carry a fingerprint and are counted by distinct password instead, so a device retrying one stale password is not banned for them; a source the user logged in from before is spared.",
    on: ['auth-result'],
    when: { success: false, pwhash: false, shared: false },
    key: 'ip',
    except_known_good: true,
    count: 'failures',
    limit: 10,
    window: '1h',
    then: { action: 'reject', ban: 'ip' },
  },
  {
    name: 'smtp-abuse-ban',
    description:
      'What Postfix refuses or drops on its own, again and again: a client that talks before its turn (postscreen PREGREET), is on a DNS blocklist, tries to relay, makes too many errors, or hangs up right after AUTH is banned on every protocol.',
    on: ['pregreet', 'blocklisted', 'relay-denied', 'smtp-errors', 'lost-after-auth'],
    when: { shared: false },
    key: 'ip',
    count: 'events',
    limit: 5,
    window: '1h',
    then: { action: 'reject', ban: 'ip' },
  },
];
