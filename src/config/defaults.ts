/*
 * config/defaults — the built-in policy, sized for an organisation of about
 * 10,000 mailboxes (docs/CONFIG.md explains each number). A config file
 * overrides any of it; a rule in the file with a default rule's name is
 * merged over that rule, so one limit can be tuned without copying the rest.
 */
import type { RawConfig } from './schema.js';

export const DEFAULT_LISTEN = {
  postfix: ['127.0.0.1:10031'],
  dovecot: ['127.0.0.1:10032'],
  admin: ['127.0.0.1:10033'],
};

export const DEFAULTS = {
  data_dir: './data',
  log: { level: 'info' },
  networks: { ipv4_prefix: 24, ipv6_prefix: 64 },
  // Webmail and local submission usually come from the host itself; 127.0.0.2-255 stay limitable.
  allowlist: { networks: ['127.0.0.1', '::1'], users: [] as string[] },
  bans: {
    duration: '1h',
    factor: 4,
    max: '30d',
    lookback: '7d',
    ipv6_aggregate: { enabled: true, prefix: 48, threshold: 3 },
  },
  suspensions: { duration: '1d' },
  postfix: { budget: '100ms', idle_timeout: '330s', max_line: 16384, max_attributes: 256, repeat_window: '10s' },
  store: { max_keys: 2_000_000, snapshot_interval: '60s' },
} as const;

export const DEFAULT_RULES: NonNullable<RawConfig['rules']> = [
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
];
