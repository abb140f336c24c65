import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Deadlines, settle, type Waiting } from '../src/deadlines.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A wait whose `late` holds an object only it refers to; the WeakRef tells whether that object is still kept. */
function holding(d: Deadlines, onLate: (o: object) => void): { w: Waiting; ref: WeakRef<object> } {
  const request = { attributes: new Array<string>(1000).fill('x') };
  return { w: d.add(() => onLate(request)), ref: new WeakRef(request) };
}

async function collected(ref: WeakRef<object>): Promise<boolean> {
  // A WeakRef's target is kept until the job that made it ends.
  await new Promise((r) => setImmediate(r));
  gc();
  return ref.deref() === undefined;
}

test('a wait not settled in time runs late() once; one settled in time never does', async () => {
  const d = new Deadlines(30);
  const ran: string[] = [];
  const a = d.add(() => ran.push('a'));
  const b = d.add(() => ran.push('b'));
  assert.equal(settle(b), true);
  await sleep(120);
  assert.deepEqual(ran, ['a']);
  assert.equal(settle(a), false, 'the deadline settled it');
  assert.equal(settle(b), false);
});

test('a settled wait lets go of what its late() holds at once, not when its deadline passes', async () => {
  const d = new Deadlines(300);
  const lateRan: object[] = [];
  const settled = holding(d, (o) => lateRan.push(o));
  const waiting = holding(d, (o) => lateRan.push(o));
  assert.equal(settle(settled.w), true);
  // Still queued until the deadline: the answered request must not stay alive with it (young-GC copies).
  assert.equal(await collected(settled.ref), true, 'the settled request was collected');
  assert.equal(await collected(waiting.ref), false, 'the waiting request is still held, for its late()');
  await sleep(400);
  assert.equal(lateRan.length, 1, 'only the unsettled wait ran late()');
});
