/*
 * The journal through the real journalctl, on a real journal file written by
 * systemd-journal-remote from export-format input (no journald needed):
 * from the end on first start, each new entry once, the cursor kept across a
 * restart (entries written while stopped are read, none twice), a cursor
 * journalctl refuses dropped with a warning, units filtered by journalctl.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import type { Decision, MailEvent } from '../../src/engine/types.js';
import { ALLOW } from '../../src/engine/types.js';
import type { Positions } from '../../src/logs/file.js';
import { LogFollowers } from '../../src/logs/followers.js';
import { JournalFollower, type JournalFollowerOptions } from '../../src/logs/journal.js';
import { captureLogger } from '../helpers/harness.js';
import { MapPositions } from './positions.js';
import { findTool } from './tools.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const why: string[] = [];
const journalctl = findTool('journalctl', why);
const remote = findTool('systemd-journal-remote', why);
const skip = why.length > 0 ? why.join('; ') : false;

interface Entry {
  identifier: string;
  message: string;
  unit?: string;
}

describe('logs: the journal through journalctl', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-journal-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let files = 0;
  let monotonic = 0;

  /** Appends entries to a journal file, as journald would have: export format into systemd-journal-remote. */
  function write(journal: string, entries: Entry[]): void {
    const input = join(dir, `in${++files}.export`);
    writeFileSync(
      input,
      entries
        .map((e) =>
          [
            `__REALTIME_TIMESTAMP=${Date.now() * 1000}`,
            `__MONOTONIC_TIMESTAMP=${++monotonic}`,
            '_BOOT_ID=0123456789abcdef0123456789abcdef',
            `SYSLOG_IDENTIFIER=${e.identifier}`,
            `_SYSTEMD_UNIT=${e.unit ?? 'postfix@-.service'}`,
            `MESSAGE=${e.message}`,
            '',
            '',
          ].join('\n'),
        )
        .join(''),
    );
    execFileSync(remote as string, [`--output=${journal}`, input], { stdio: 'pipe' });
  }

  const sasl = (ip: string): Entry => ({
    identifier: 'postfix/submission/smtpd',
    message: `warning: unknown[${ip}]: SASL LOGIN authentication failed: authentication failure, sasl_username=alice`,
  });

  /** A follower of `journal` (not started) that collects each entry into `seen` as `identifier: message`. */
  const journalFollower = (
    journal: string,
    positions: Positions,
    seen: string[],
    warn: JournalFollowerOptions['warn'],
  ): JournalFollower =>
    new JournalFollower({
      command: journalctl as string,
      units: [],
      args: [`--file=${journal}`],
      key: 'log:journal',
      positions,
      onEntry: (identifier, message) => seen.push(`${identifier}: ${message}`),
      settled: () => Promise.resolve(),
      warn,
    });

  /** A follower of `journal`, collecting messages; markers are written until one arrives, so journalctl is surely up. */
  async function follow(journal: string, positions: Positions, warnings: string[] = []) {
    const seen: string[] = [];
    const f = journalFollower(journal, positions, seen, (kind, fields) =>
      warnings.push(`${kind} ${JSON.stringify(fields)}`),
    );
    f.start();
    for (let i = 0; !seen.some((s) => s.startsWith('marker')); i++) {
      if (i > 50) throw new Error(`journalctl never followed: ${warnings.join('\n')}`);
      write(journal, [{ identifier: 'marker', message: String(i) }]);
      await sleep(200);
    }
    await sleep(300);
    // From the end: what the journal held before the start is not read.
    assert.deepEqual(
      seen.filter((x) => !x.startsWith('marker')),
      [],
    );
    seen.length = 0;
    return { f, seen };
  }

  async function until(what: string, cond: () => boolean): Promise<void> {
    for (let i = 0; !cond(); i++) {
      if (i > 100) throw new Error(`timed out waiting for ${what}`);
      await sleep(50);
    }
  }

  test('from the end; each new entry once; the cursor kept across a restart', async () => {
    const journal = join(dir, 'a.journal');
    write(journal, [sasl('198.51.100.1'), sasl('198.51.100.2')]);
    const positions = new MapPositions();
    let { f, seen } = await follow(journal, positions);
    write(journal, [
      sasl('198.51.100.3'),
      { identifier: 'dovecot', message: 'imap-login: Login: user=<bob>, rip=198.51.100.4, lip=192.0.2.1' },
    ]);
    await until('2 entries', () => seen.length === 2);
    assert.deepEqual(seen, [
      'postfix/submission/smtpd: warning: unknown[198.51.100.3]: SASL LOGIN authentication failed: authentication failure, sasl_username=alice',
      'dovecot: imap-login: Login: user=<bob>, rip=198.51.100.4, lip=192.0.2.1',
    ]);
    await f.stop();
    const cursor = positions.map.get('log:journal');
    assert.match(cursor ?? '', /^s=[0-9a-f]+;i=[0-9a-f]+;/, 'the cursor of the last entry is saved');

    write(journal, [sasl('198.51.100.5')]);
    seen = [];
    f = journalFollower(journal, positions, seen, () => undefined);
    assert.ok(f.argv().includes(`--after-cursor=${cursor ?? ''}`));
    f.start();
    await until('the entry written while stopped', () => seen.length >= 1);
    await sleep(500);
    assert.equal(seen.length, 1, `only the entry written while stopped: ${seen.join(' | ')}`);
    assert.match(seen[0] ?? '', /198\.51\.100\.5/);
    await f.stop();
  });

  test('a cursor journalctl refuses: a warning, then from the end', async () => {
    const journal = join(dir, 'b.journal');
    write(journal, [sasl('198.51.100.10')]);
    const positions = new MapPositions();
    positions.setMeta('log:journal', 's=0;i=0;nonsense');
    const warnings: string[] = [];
    const { f, seen } = await follow(journal, positions, warnings);
    assert.ok(
      warnings.some((w) => w.includes('nonsense')),
      warnings.join('\n'),
    );
    write(journal, [sasl('198.51.100.11')]);
    await until('the new entry', () => seen.length === 1);
    await f.stop();
  });

  test('LogFollowers: journal entries of the units named become engine events', async () => {
    const journal = join(dir, 'c.journal');
    write(journal, [sasl('198.51.100.20')]);
    const events: MailEvent[] = [];
    const logs = new LogFollowers({
      evaluate: (e): Decision => {
        events.push(e);
        return ALLOW;
      },
      positions: new MapPositions(),
      logger: captureLogger([]),
      now: Date.now,
      hooks: false,
    });
    await logs.follow([
      {
        kind: 'journal',
        units: ['postfix@-.service'],
        command: journalctl as string,
        args: [`--file=${journal}`],
        trustForwarded: false,
      },
    ]);
    // journalctl starts in the background: write until it is following.
    for (let i = 0; events.length === 0; i++) {
      if (i > 50) throw new Error('no event');
      write(journal, [sasl('198.51.100.21'), { ...sasl('198.51.100.22'), unit: 'other.service' }]);
      await sleep(200);
    }
    await sleep(300);
    assert.ok(events.every((e) => e.ip === '198.51.100.21' && e.kind === 'auth-result' && e.success === false));
    const st = logs.status().sources[0];
    assert.equal(st?.source, 'journal postfix@-.service --file=' + journal);
    assert.equal(st?.events, events.length);
    await logs.stop();
  });
});
