import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ts from 'typescript';

// The child runs plain JavaScript: with tsx's loader in the process, V8 makes no pretenuring decision at all.
const dir = mkdtempSync(join(tmpdir(), 'mw-heap-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const HEAP = join(dir, 'heap.mjs');
writeFileSync(
  HEAP,
  ts.transpileModule(readFileSync(new URL('../src/heap.ts', import.meta.url), 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  }).outputText,
);

/** V8's pretenuring decisions in a child that keeps every object of one site alive (as in-flight requests are). */
function decisions(tune: boolean): string[] {
  const code = `import { tuneHeap } from ${JSON.stringify(HEAP)};
if (${String(tune)}) tuneHeap();
function make(i) { return { i, text: 'request ' + i, attributes: [i] }; }
const kept = [];
for (let i = 0; i < 2_000_000; i++) kept.push(make(i));
console.log('kept', kept.length);`;
  const out = execFileSync(
    process.execPath,
    ['--trace-pretenuring', '--trace-pretenuring-statistics', '--input-type=module', '-e', code],
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
  );
  assert.match(out, /kept 2000000/);
  return out.split('\n').filter((l) => /=> tenure/.test(l));
}

test('without tuneHeap V8 pretenures a site whose objects survive; with it, never', () => {
  assert.ok(decisions(false).length > 0, 'the workload makes V8 pretenure (so the check below can fail)');
  assert.deepEqual(decisions(true), []);
});
