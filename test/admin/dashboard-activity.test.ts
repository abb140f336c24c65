/*
 * The dashboard's live feed (admin/activity): a Dovecot login attempt is one
 * row, whether its allow was refused or delayed, also with several attempts
 * of one client at once; a report makes a row of its own only when its
 * attempt made none. The real attack through the Dovecot endpoint is in
 * dashboard.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Activity, type FeedItem } from '../../src/admin/activity.js';
import type { Action, Decision, MailEvent } from '../../src/engine/types.js';

const T0 = Date.parse('2026-12-03T05:00:00Z');

function feed(): { activity: Activity; rows: FeedItem[] } {
  const activity = new Activity(T0, () => ({ ipv4Prefix: 24, ipv6Prefix: 64 }));
  const rows: FeedItem[] = [];
  activity.subscribe((item) => rows.push(item));
  return { activity, rows };
}

const decision = (action: Action, rule = action === 'allow' ? '' : 'auth-guess-delay'): Decision => ({
  action,
  delaySeconds: action === 'delay' ? 3 : 0,
  rule,
  reason: rule,
  hits: [],
  effects: [],
});

const login = (kind: 'auth-attempt' | 'auth-result', time: number, extra: Partial<MailEvent> = {}): MailEvent => ({
  kind,
  time,
  ip: '203.0.113.5',
  protocol: 'imap',
  context: '',
  user: 'alice@example.org',
  recipients: 0,
  size: 0,
  ...(kind === 'auth-result' ? { success: false, refused: false } : {}),
  ...extra,
});

test('a refused attempt and its report (policy_reject) are one row', () => {
  const { activity, rows } = feed();
  activity.record(login('auth-attempt', T0), decision('reject', 'auth-guess-refuse'));
  activity.record(login('auth-result', T0 + 5, { refused: true }), decision('reject', 'auth-guess-ban'));
  assert.deepEqual(
    rows.map((r) => [r.kind, r.action, r.rule, r.protocol]),
    [['decision', 'reject', 'auth-guess-refuse', 'imap']],
  );
});

test('delayed attempts, two at once from one client: one row each, none for their reports', () => {
  const { activity, rows } = feed();
  activity.record(login('auth-attempt', T0), decision('delay'));
  activity.record(login('auth-attempt', T0 + 1), decision('delay'));
  activity.record(login('auth-result', T0 + 3001), decision('delay'));
  activity.record(login('auth-result', T0 + 3002), decision('delay'));
  assert.equal(rows.length, 2);
  // the next attempt's report is its own again: its attempt was let through
  activity.record(login('auth-attempt', T0 + 4000), decision('allow'));
  activity.record(login('auth-result', T0 + 4001), decision('reject', 'auth-guess-ban'));
  assert.deepEqual(
    rows.map((r) => r.rule),
    ['auth-guess-delay', 'auth-guess-delay', 'auth-guess-ban'],
  );
});

test('a successful report ends its delayed attempt’s wait; a report long after its attempt stands alone', () => {
  const { activity, rows } = feed();
  activity.record(login('auth-attempt', T0), decision('delay'));
  activity.record(login('auth-result', T0 + 3000, { success: true }), decision('allow'));
  activity.record(login('auth-result', T0 + 4000), decision('reject', 'auth-guess-ban'));
  assert.equal(rows.length, 2, 'the later report is not taken for the delayed attempt');
  activity.record(login('auth-attempt', T0 + 10_000), decision('delay'));
  activity.record(login('auth-result', T0 + 10_000 + 600_000), decision('reject', 'auth-guess-ban'));
  assert.equal(rows.length, 4);
});

test('each attempt counts once in the top offenders', () => {
  const { activity } = feed();
  activity.record(login('auth-attempt', T0), decision('reject', 'auth-guess-refuse'));
  activity.record(login('auth-result', T0 + 1, { refused: true }), decision('reject', 'ban'));
  activity.record(login('auth-attempt', T0 + 2), decision('allow'));
  activity.record(login('auth-result', T0 + 3), decision('allow'));
  assert.deepEqual(activity.top(T0 + 10).ips, [{ subject: '203.0.113.5', count: 2 }]);
});
