/*
 * config/defaults — the built-in policy, sized for an organisation of about
 * 10,000 mailboxes (docs/CONFIG.md explains each number). A config file
 * overrides any of it; a rule in the file with a default rule's name is
 * merged over that rule, so one limit can be tuned without copying the rest.
 */
import { builtInMessage } from '../engine/messages.js';
import type { RawConfig } from './schema.js';

export const DEFAULT_LISTEN = {
  postfix: ['127.0.0.1:10031'],
  dovecot: ['127.0.0.1:10032'],
  admin: ['127.0.0.1:10033'],
};

export const DEFAULTS = {
  data_dir: './data',
  locale: 'en',
  log: { level: 'info' },
  networks: { ipv4_prefix: 24, ipv6_prefix: 64 },
  // Webmail and local submission usually come from the host itself; 127.0.0.2-255 stay limitable.
  allowlist: { networks: ['127.0.0.1', '::1'], users: [] as string[] },
  bans: {
    duration: '1h',
    factor: 4,
    max: '30d',
    lookback: '30d',
    ipv6_aggregate: { enabled: true, prefix: 48, threshold: 3 },
  },
  suspensions: { duration: '1d', block_login: false },
  known_good: { window: '30d' },
  // Two people logging in from one address within a week: an office, a family, a campus, a carrier.
  shared_address: { users: 2, window: '7d' },
  // Dovecot gives up on its policy server after 2 s (auth_policy_server_timeout_msecs) and
  // Postfix drops its SASL conversation after 10 s, so SMTP delays stay well below that.
  // Connection caps are per listener (and per peer address, by default half of it); the daemon lowers them
  // to fit the open-file limit. Postfix holds one connection per smtpd process (default_process_limit 100).
  // Dovecot gives up after 2 s, so a request still arriving after 10 s is only holding a connection.
  dovecot: {
    budget: '500ms',
    max_delay: '15s',
    smtp_max_delay: '5s',
    repeat_window: '1s',
    max_connections: 1024,
    headers_timeout: '5s',
    request_timeout: '10s',
    max_body: 65_536,
  },
  postfix: {
    budget: '100ms',
    idle_timeout: '330s',
    max_line: 16384,
    max_attributes: 256,
    repeat_window: '10s',
    max_connections: 4096,
  },
  store: {
    max_keys: 2_000_000,
    snapshot_interval: '60s',
    backend: 'memory',
    url: 'redis://127.0.0.1:6379/0',
    prefix: 'mailwarden',
    // Postfix's own budget is 100 ms: past this, the decision is made from local memory instead.
    timeout: '50ms',
    sentinel_master: 'mymaster',
  },
  // Blocklists are asked only when zones are configured: a public resolver gets refused answers, and some
  // lists need a subscription (docs/CONFIG.md, `dnsbl`). `dns.servers` defaults to /etc/resolv.conf's.
  dns: { timeout: '300ms', cache_entries: 100_000, max_in_flight: 256 },
  dnsbl: { zones: [] as Array<{ zone: string; weight?: number; codes?: string[] }>, threshold: 1 },
  reputation: { interval: '15m' },
  alerts: {
    cooldown: '1h',
    queue_max: 1000,
    retries: 5,
    // The local postmaster through the local MTA: someone hears of an alert without any setup. `to: []` turns it off.
    email: { relay: '127.0.0.1:25', from: 'mailwarden@localhost', to: ['postmaster@localhost'] as string[] },
    webhook: { timeout: '5s' },
  },
} as const;

export const DEFAULT_RULES: NonNullable<RawConfig['rules']> = [
  // Password guessing (Dovecot: IMAP, POP3, and SMTP AUTH through Dovecot SASL). Failures are
  // counted by distinct password fingerprint, so a phone retrying one stale password is one
  // failure; the checks run before the password is even looked at, and an attempt in flight
  // counts at once (engine/plan.ts), so parallel connections get no more passwords checked.
  // Only passwords the server really checked are guesses: attempts refused by the policy are
  // counted apart, by the rule that bans sources going on after a refusal. Delay, refuse, ban.
  {
    name: 'auth-guess-delay',
    description: 'A source that failed with several different passwords is slowed down (tarpit).',
    on: ['auth-result'],
    check_on: ['auth-attempt'],
    when: { success: false, shared: false },
    key: 'ip',
    // Someone else's typos behind the same NAT address must not slow down users who logged in from there before.
    except_known_good: true,
    count: 'distinct:pwhash',
    limit: 3,
    window: '15m',
    then: { action: 'delay', delay: '3s' },
  },
  {
    name: 'auth-guess-refuse',
    description:
      'A source that keeps failing with different passwords is refused before the password check. At a shared address (an office) guessing is refused per account instead (auth-guess-user-ip-refuse).',
    on: ['auth-result'],
    check_on: ['auth-attempt'],
    when: { success: false, shared: false },
    key: 'ip',
    // Someone else's typos behind the same NAT address must not slow down users who logged in from there before.
    except_known_good: true,
    count: 'distinct:pwhash',
    limit: 6,
    window: '1h',
    then: { action: 'reject', message: builtInMessage('addressGuessing') },
  },
  {
    name: 'auth-guess-ban',
    description:
      'A source that goes on trying different passwords after it was refused is banned on every protocol (SMTP, IMAP, POP3). A device retrying one password is not.',
    on: ['auth-result'],
    when: { refused: true, shared: false },
    key: 'ip',
    count: 'distinct:pwhash',
    limit: 4,
    window: '1h',
    then: { action: 'reject', ban: 'ip' },
  },
  {
    name: 'auth-spray-ban',
    description: 'Password spraying: one source failing on many different logins is banned.',
    on: ['auth-result'],
    when: { success: false, shared: false },
    key: 'ip',
    count: 'distinct:user',
    limit: 5,
    window: '1h',
    then: { action: 'reject', ban: 'ip' },
  },
  {
    name: 'auth-spray-ban-shared',
    description:
      'The same at a shared address, where several people mistype: more logins, but spraying still ends in a ban. A user who then logs in is not counted.',
    on: ['auth-result'],
    when: { success: false, shared: true },
    key: 'ip',
    count: 'distinct:user',
    limit: 15,
    window: '1h',
    then: { action: 'reject', ban: 'ip' },
  },
  {
    name: 'auth-guess-network-ban',
    description:
      'Guessing spread over several addresses (3 or more) of one network (/24, /64) bans the network. One address never does, and failures at shared addresses do not count.',
    on: ['auth-result'],
    when: { success: false, shared: false },
    key: 'network',
    count: 'distinct:pwhash',
    limit: 50,
    min_addresses: 3,
    window: '1h',
    then: { action: 'reject', ban: 'network' },
  },
  {
    name: 'auth-guess-user-ip',
    description:
      'Different wrong passwords for one account from one address: slowed down. compromise-cracked reads this counter.',
    on: ['auth-result'],
    check_on: ['auth-attempt'],
    when: { success: false },
    key: 'user_ip',
    count: 'distinct:pwhash',
    limit: 4,
    window: '1h',
    then: { action: 'delay', delay: '2s' },
  },
  {
    name: 'auth-guess-user-ip-refuse',
    description:
      'Guessing one account from one address is refused, shared address or not: the other people there keep logging in.',
    on: ['auth-result'],
    check_on: ['auth-attempt'],
    when: { success: false },
    key: 'user_ip',
    count: 'distinct:pwhash',
    limit: 6,
    window: '1h',
    then: { action: 'reject', message: builtInMessage('accountGuessingFromAddress') },
  },
  {
    name: 'auth-guess-user-network',
    description: 'The same from the addresses of one network. compromise-cracked-network reads this counter.',
    on: ['auth-result'],
    check_on: ['auth-attempt'],
    when: { success: false },
    key: 'user_network',
    count: 'distinct:pwhash',
    limit: 6,
    window: '1h',
    then: { action: 'delay', delay: '2s' },
  },
  {
    name: 'auth-account-under-attack',
    description:
      'One login failing from many networks (a distributed attack on one account) is refused from every source the user has never logged in from; known-good sources keep working.',
    on: ['auth-result'],
    check_on: ['auth-attempt'],
    when: { success: false },
    key: 'user',
    count: 'distinct:network',
    limit: 5,
    window: '1h',
    except_known_good: true,
    then: { action: 'reject', message: builtInMessage('accountUnderAttack') },
  },
  {
    name: 'auth-account-guess-cap',
    description:
      'However many sources take part, at most 50 different passwords a day are checked for one account from sources its owner has never logged in from; known-good sources keep working.',
    on: ['auth-result'],
    check_on: ['auth-attempt'],
    when: { success: false },
    key: 'user',
    count: 'distinct:pwhash',
    limit: 50,
    window: '1d',
    except_known_good: true,
    then: { action: 'reject', message: builtInMessage('accountGuessCap') },
  },
  {
    name: 'smtp-connections-per-ip',
    description: 'SMTP connections a single client address may open per minute.',
    on: ['connect'],
    key: 'ip',
    count: 'events',
    limit: 60,
    window: '1m',
    then: 'tempfail',
  },
  {
    name: 'inbound-recipients-per-ip',
    description: 'Recipients an unauthenticated client address may name per hour (inbound mail to the MX).',
    on: ['recipient'],
    when: { authenticated: false },
    key: 'ip',
    count: 'recipients',
    limit: 500,
    window: '1h',
    then: 'tempfail',
  },
  {
    name: 'inbound-recipients-per-network',
    description:
      'Recipients the unauthenticated clients of one network (/24, /64) may name per hour together: spam spread over many addresses of one network stays under the per-address limit.',
    on: ['recipient'],
    when: { authenticated: false },
    key: 'network',
    count: 'recipients',
    limit: 2000,
    window: '1h',
    then: 'tempfail',
  },
  // Clients a DNS blocklist lists (`dnsbl`) get their own, stricter limits, per address and per network, as
  // postscreen's weighted sites do. Without dnsbl.zones no client is listed, and they never apply.
  {
    name: 'listed-connections-per-ip',
    description: 'SMTP connections a client listed in the DNSBLs may open per minute.',
    on: ['connect'],
    when: { listed: true },
    key: 'ip',
    count: 'events',
    limit: 10,
    window: '1m',
    then: 'tempfail',
  },
  {
    name: 'listed-recipients-per-ip',
    description: 'Recipients an unauthenticated client listed in the DNSBLs may name per hour.',
    on: ['recipient'],
    when: { authenticated: false, listed: true },
    key: 'ip',
    count: 'recipients',
    limit: 50,
    window: '1h',
    then: 'tempfail',
  },
  {
    name: 'listed-recipients-per-network',
    description: 'Recipients the listed unauthenticated clients of one network may name per hour together.',
    on: ['recipient'],
    when: { authenticated: false, listed: true },
    key: 'network',
    count: 'recipients',
    limit: 200,
    window: '1h',
    then: 'tempfail',
  },
  {
    name: 'listed-messages-per-ip',
    description: 'Messages an unauthenticated client listed in the DNSBLs may deliver per hour.',
    on: ['message'],
    when: { authenticated: false, listed: true },
    key: 'ip',
    count: 'messages',
    limit: 20,
    window: '1h',
    then: 'tempfail',
  },
  {
    name: 'listed-messages-per-network',
    description: 'Messages the listed unauthenticated clients of one network may deliver per hour together.',
    on: ['message'],
    when: { authenticated: false, listed: true },
    key: 'network',
    count: 'messages',
    limit: 60,
    window: '1h',
    then: 'tempfail',
  },
  {
    name: 'user-messages-per-hour',
    description: 'Messages an authenticated user may send per hour, counted once per accepted message.',
    on: ['message'],
    when: { authenticated: true },
    key: 'user',
    count: 'messages',
    limit: 100,
    window: '1h',
    then: 'tempfail',
  },
  {
    name: 'user-messages-per-day',
    description: 'Messages an authenticated user may send per day.',
    on: ['message'],
    when: { authenticated: true },
    key: 'user',
    count: 'messages',
    limit: 500,
    window: '1d',
    then: 'tempfail',
  },
  {
    name: 'user-recipients-per-hour',
    description: 'Recipients an authenticated user may send to per hour (all recipients of accepted messages).',
    on: ['message'],
    when: { authenticated: true },
    key: 'user',
    count: 'recipients',
    limit: 300,
    window: '1h',
    then: 'tempfail',
  },
  {
    name: 'user-recipients-per-day',
    description: 'Recipients an authenticated user may send to per day.',
    on: ['message'],
    when: { authenticated: true },
    key: 'user',
    count: 'recipients',
    limit: 1000,
    window: '1d',
    then: 'tempfail',
  },
  // Compromised accounts: a password will leak one day; notice it, stop the sending, tell the admin.
  {
    name: 'compromise-cracked',
    description:
      'A login that succeeds for an account right after 5 or more different wrong passwords for it from the same address: the password was guessed. Ban the address, suspend the user, alert. Other people behind the same NAT address do not count.',
    on: ['auth-result'],
    when: { success: true },
    key: 'user_ip',
    uses: 'auth-guess-user-ip',
    limit: 5,
    then: { action: 'reject', ban: 'ip', suspend: '1d', notify: true },
  },
  {
    name: 'compromise-cracked-network',
    description:
      'The same, for a guessing run against the account spread over the addresses of one network (8 or more). Bans the address the login came from, not the whole network.',
    on: ['auth-result'],
    when: { success: true },
    key: 'user_network',
    uses: 'auth-guess-user-network',
    limit: 8,
    then: { action: 'reject', ban: 'ip', suspend: '1d', notify: true },
  },
  {
    name: 'compromise-spread',
    description:
      'One user logging in from more networks within an hour than a person with a phone, a laptop and an office could (4 or more): alert.',
    on: ['auth-result'],
    when: { success: true },
    key: 'user',
    count: 'distinct:network',
    limit: 3,
    window: '1h',
    then: { action: 'allow', notify: true },
  },
  {
    name: 'compromise-burst',
    description:
      "A user sending to far more recipients per hour than usual (10× the user's own weekly-weighted rate, and at least 50): hold the message, suspend sending, alert.",
    on: ['message'],
    when: { authenticated: true },
    key: 'user',
    count: 'recipients',
    window: '1h',
    baseline: { factor: 10, floor: 50, half_life: '7d' },
    then: { action: 'hold', suspend: '1d', notify: true },
  },
];
