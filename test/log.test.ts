import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { ThrottledLog } from '../src/log.js';
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
