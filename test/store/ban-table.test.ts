import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { banCoverFor } from '../../src/engine/plan.js';
import type { BanRecord } from '../../src/engine/types.js';
import { BanTable } from '../../src/store/ban-table.js';

const ban = (subject: string, until = 1000): BanRecord => ({
  subject,
  since: 0,
  until,
  rule: 'r',
  reason: 'x',
  offence: 1,
  actor: 'test',
});
const cover = (ip: string) => banCoverFor(ip);

describe('ban table: the bans covering a client', () => {
  test('finds a ban on the address or on any enclosing network size, the longest-lasting first', () => {
    const t = new BanTable();
    assert.equal(t.covering(cover('192.0.2.10'), 0), undefined);
    t.set(ban('192.0.2.0/24', 500));
    t.set(ban('192.0.0.0/16', 900));
    assert.equal(t.covering(cover('192.0.2.10'), 0)?.subject, '192.0.0.0/16');
    assert.equal(t.covering(cover('192.0.3.1'), 0)?.subject, '192.0.0.0/16');
    assert.equal(t.covering(cover('192.1.0.1'), 0), undefined);
    t.set(ban('2001:db8:1:2::/64'));
    t.set(ban('2001:db8::7'));
    assert.equal(t.covering(cover('2001:db8:1:2::9'), 0)?.subject, '2001:db8:1:2::/64');
    assert.equal(t.covering(cover('2001:db8::7'), 0)?.subject, '2001:db8::7');
    assert.equal(t.covering(cover('2001:db8::8'), 0), undefined);
  });

  test('a lifted, replaced or cleared ban no longer covers anyone', () => {
    const t = new BanTable();
    t.set(ban('198.51.100.7'));
    t.set(ban('198.51.100.7', 2000)); // the same subject again: still one ban
    assert.equal(t.covering(cover('198.51.100.7'), 0)?.until, 2000);
    assert.equal(t.delete('198.51.100.7'), true);
    assert.equal(t.delete('198.51.100.7'), false);
    assert.equal(t.covering(cover('198.51.100.7'), 0), undefined);
    t.set(ban('198.51.100.7'));
    assert.ok(t.covering(cover('198.51.100.7'), 0), 'counted again after the delete');
    t.set(ban('198.51.100.0/24'));
    t.clear();
    assert.equal(t.covering(cover('198.51.100.7'), 0), undefined);
    assert.deepEqual([...t.values()], []);
    t.set(ban('198.51.100.0/24'));
    assert.equal(t.covering(cover('198.51.100.7'), 0)?.subject, '198.51.100.0/24', 'counts start again from zero');
  });

  test('an expired ban is dropped when it is met', () => {
    const t = new BanTable();
    t.set(ban('203.0.113.0/24', 100));
    t.set(ban('203.0.113.5', 300));
    assert.equal(t.covering(cover('203.0.113.5'), 200)?.subject, '203.0.113.5');
    assert.equal(t.get('203.0.113.0/24'), undefined, 'the expired network ban is gone');
    assert.equal(t.covering(cover('203.0.113.5'), 300), undefined);
    assert.deepEqual([...t.values()], []);
  });
});

describe('ban table: only the prefix lengths some ban has are looked up', () => {
  test('bans of odd lengths and of /0 cover every address inside them, and no other', () => {
    const t = new BanTable();
    t.set(ban('198.18.0.0/15'));
    t.set(ban('203.0.112.0/23'));
    t.set(ban('2001:db8:ff00::/40'));
    assert.deepEqual(t.lengths(false), [23, 15]);
    assert.deepEqual(t.lengths(true), [40]);
    assert.equal(t.covering(cover('198.19.255.255'), 0)?.subject, '198.18.0.0/15');
    assert.equal(t.covering(cover('198.20.0.0'), 0), undefined);
    assert.equal(t.covering(cover('198.17.255.255'), 0), undefined);
    assert.equal(t.covering(cover('203.0.113.5'), 0)?.subject, '203.0.112.0/23');
    assert.equal(t.covering(cover('203.0.114.0'), 0), undefined);
    assert.equal(t.covering(cover('2001:db8:ffff::1'), 0)?.subject, '2001:db8:ff00::/40');
    assert.equal(t.covering(cover('2001:db9::1'), 0), undefined);
    t.set(ban('0.0.0.0/0', 500));
    t.set(ban('::/0', 500));
    assert.equal(t.covering(cover('8.8.8.8'), 0)?.subject, '0.0.0.0/0');
    assert.equal(t.covering(cover('2a00::1'), 0)?.subject, '::/0');
    assert.equal(t.covering(cover('198.18.0.1'), 0)?.subject, '198.18.0.0/15', 'the longest-lasting one');
  });

  test('a length leaves the list with its last ban, lifted or expired', () => {
    const t = new BanTable();
    t.set(ban('10.1.0.0/17', 100));
    t.set(ban('10.2.0.0/17', 300));
    t.set(ban('10.3.0.0/17', 300));
    assert.deepEqual(t.lengths(false), [17]);
    t.delete('10.2.0.0/17');
    assert.deepEqual(t.lengths(false), [17]);
    assert.equal(t.covering(cover('10.1.0.1'), 200), undefined, 'expired, and dropped');
    assert.deepEqual(t.lengths(false), [17]);
    t.delete('10.3.0.0/17');
    assert.deepEqual(t.lengths(false), []);
    t.set(ban('10.3.0.0/17'));
    t.clear();
    assert.deepEqual(t.lengths(false), []);
  });
});
