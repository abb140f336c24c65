import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { logFormat, prettyLine, ThrottledLog } from '../src/log.js';
import { captureLogger } from './helpers/harness.js';

describe('ThrottledLog: warnings rate-limited per kind', () => {
  test('a flood of one kind writes its burst, then one "N suppressed" line when the interval ends', async () => {
    const logs: Array<Record<string, unknown>> = [];
    const log = new ThrottledLog(captureLogger(logs), { burst: 3, intervalMs: 100 });
    for (let i = 0; i < 10_000; i++) log.warn('framing', { peer: `p${i}` }, 'closing connection');
    log.error('decision-failed', {}, 'decision failed');
    assert.equal(logs.length, 4, 'three of the flood and the other kind, at once');
    assert.deepEqual(
      logs.map((l) => l.kind),
      ['framing', 'framing', 'framing', 'decision-failed'],
    );
    await sleep(200);
    const summary = logs.slice(4);
    assert.equal(summary.length, 1, 'one summary line, for the kind that had lines suppressed');
    assert.equal(summary[0]?.kind, 'framing');
    assert.equal(summary[0]?.suppressed, 9_997);
    assert.equal(summary[0]?.level, 40, 'at the level of the lines it stands for');
    assert.match(String(summary[0]?.msg), /^9997 more "framing" lines suppressed/);
    assert.equal(log.suppressedTotal, 9_997);

    // A new interval starts with the next line: the burst is available again.
    log.warn('framing', {}, 'closing connection');
    assert.equal(logs.length, 6);
    log.flush();
    assert.equal(logs.length, 6, 'nothing was suppressed in this interval: no summary');
  });

  test('flush() writes what is pending at once (at shutdown), at the error level for errors', () => {
    const logs: Array<Record<string, unknown>> = [];
    const log = new ThrottledLog(captureLogger(logs), { burst: 1, intervalMs: 60_000 });
    for (let i = 0; i < 5; i++) log.error('decision-failed', {}, 'decision failed');
    log.flush();
    assert.equal(logs.length, 2);
    assert.equal(logs[1]?.suppressed, 4);
    assert.equal(logs[1]?.level, 50);
  });
});

describe('log.format: pretty lines', () => {
  const line = (o: Record<string, unknown>): string =>
    prettyLine(JSON.stringify({ level: 30, time: Date.UTC(2026, 11, 3, 0, 20, 29, 123), name: 'mailwarden', ...o }));

  test('time, level, message, then key=value; quoted only when needed', () => {
    assert.equal(
      line({
        msg: 'mailwarden started',
        dashboard: 'http://127.0.0.1:10033/',
        tokenFile: '/var/lib/mailwarden/admin.token',
        postfix: ['127.0.0.1:10031', '/run/mw.sock'],
        admin: [],
        rules: 23,
        config: '(built-in defaults)',
        node: null,
      }),
      '2026-12-03T00:20:29.123Z INFO  mailwarden started dashboard=http://127.0.0.1:10033/ ' +
        'tokenFile=/var/lib/mailwarden/admin.token postfix=127.0.0.1:10031,/run/mw.sock admin=[] rules=23 ' +
        'config="(built-in defaults)" node=null\n',
    );
  });

  test('levels by name; an error by its message, its stack indented below', () => {
    assert.equal(line({ level: 40, msg: 'slow' }), '2026-12-03T00:20:29.123Z WARN  slow\n');
    const err = {
      type: 'Error',
      message: 'disk full',
      stack: 'Error: disk full\n    at a (x.ts:1:1)\n    at b (y.ts:2:2)',
    };
    assert.equal(
      line({ level: 50, msg: 'counter snapshot failed', err }),
      '2026-12-03T00:20:29.123Z ERROR counter snapshot failed err="disk full"\n    at a (x.ts:1:1)\n    at b (y.ts:2:2)\n',
    );
    assert.equal(prettyLine('not json'), 'not json\n');
  });

  test('the default: pretty at a terminal, JSON anywhere else; log.format wins', () => {
    assert.equal(logFormat(undefined, true), 'pretty');
    assert.equal(logFormat(undefined, false), 'json');
    assert.equal(logFormat('json', true), 'json');
    assert.equal(logFormat('pretty', false), 'pretty');
  });
});
