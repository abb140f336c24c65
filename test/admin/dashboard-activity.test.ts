/*
 * The dashboard's live feed (admin/activity): a Dovecot login attempt is one
 * row, whether its allow was refused or delayed, also with several attempts
 * of one client at once; a report makes a row of its own only when its
 * attempt made none. Repeats of one source by one rule within FEED_INTERVAL_MS
 * are one row, and their count comes in a row of its own when the interval
 * ends; the top lists count every one. The real attack through the Dovecot
 * endpoint is in dashboard.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Activity, FEED_INTERVAL_MS, type FeedItem } from '../../src/admin/activity.js';
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

test('delayed attempts, two at once from one client: one row with their count, none for their reports', () => {
  const { activity, rows } = feed();
  activity.record(login('auth-attempt', T0), decision('delay'));
  activity.record(login('auth-attempt', T0 + 1), decision('delay'));
  activity.record(login('auth-result', T0 + 3001), decision('delay'));
  activity.record(login('auth-result', T0 + 3002), decision('delay'));
  assert.equal(rows.length, 1);
  // the next attempt's report is its own again: its attempt was let through
  activity.record(login('auth-attempt', T0 + 4000), decision('allow'));
  activity.record(login('auth-result', T0 + 4001), decision('reject', 'auth-guess-ban'));
  activity.sweep(T0 + 1 + FEED_INTERVAL_MS);
  assert.deepEqual(
    rows.map((r) => [r.rule, r.count]),
    [
      ['auth-guess-delay', 1],
      ['auth-guess-ban', 1],
      ['auth-guess-delay', 1],
    ],
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

test('a flood from one source: a row per rule and interval with the count since the last, the top lists exact', () => {
  const { activity, rows } = feed();
  const smtp = (time: number, ip = '198.51.100.7'): MailEvent => ({
    kind: 'connect',
    time,
    ip,
    protocol: 'smtp',
    context: '',
    recipients: 0,
    size: 0,
  });
  // 100 refusals a second for 25 s, by the ban
  for (let i = 0; i < 2500; i++) activity.record(smtp(T0 + i * 10), decision('reject', 'ban'));
  // another source and another rule are rows of their own
  activity.record(smtp(T0 + 50, '198.51.100.8'), decision('reject', 'ban'));
  activity.record(smtp(T0 + 60), decision('tempfail', 'smtp-connections-per-ip'));
  activity.sweep(T0 + 40_000);
  const mine = rows.filter((r) => r.ip === '198.51.100.7' && r.rule === 'ban');
  assert.deepEqual(
    mine.map((r) => [r.time - T0, r.count]),
    [
      [0, 1],
      [10_000, 1000],
      [20_000, 1000],
      [24_990, 499],
    ],
    'the first at once, then one per interval counting the refusals since the row before',
  );
  assert.equal(
    mine.reduce((n, r) => n + (r.count ?? 0), 0),
    2500,
  );
  assert.deepEqual(
    rows.filter((r) => r.ip !== '198.51.100.7' || r.rule !== 'ban').map((r) => [r.ip, r.rule, r.count]),
    [
      ['198.51.100.8', 'ban', 1],
      ['198.51.100.7', 'smtp-connections-per-ip', 1],
    ],
  );
  assert.deepEqual(activity.top(T0 + 40_000).ips, [
    { subject: '198.51.100.7', count: 2501 },
    { subject: '198.51.100.8', count: 1 },
  ]);
  assert.equal(
    activity.timeline(T0 + 40_000).series['decisions.reject']?.reduce((a, b) => a + b, 0),
    2501,
  );
});
