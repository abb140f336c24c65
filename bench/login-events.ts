/*
 * bench/login-events — the Dovecot login workload of the in-process login
 * benchmarks (bench/logins.ts on the embedded store, bench/redis-logins.ts on
 * Redis): login i comes from its own address and account, one in ten fails.
 */
import type { MailEvent } from '../src/engine/types.js';

const addr = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

/** Login i's attempt (`auth-attempt`) or result (`auth-result`, with `success`). */
export function loginEvent(i: number, kind: MailEvent['kind'], now: number, success?: boolean): MailEvent {
  return {
    kind,
    time: now,
    ip: addr(i),
    protocol: i % 3 === 0 ? 'pop3' : 'imap',
    context: '',
    user: `${i % 10 === 0 ? 'typo' : 'user'}${i}@example.org`,
    recipients: 0,
    size: 0,
    pwhash: (i % 4096).toString(16).padStart(4, '0'),
    success,
  };
}

/** Whether login i succeeds (nine in ten). */
export const loginSucceeds = (i: number): boolean => i % 10 !== 0;
