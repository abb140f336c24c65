/*
 * heap — the V8 setting the daemon runs with.
 *
 * Allocation-site pretenuring off. V8 starts allocating an object literal's
 * objects straight in the old generation once most of them survive a
 * young-generation GC. In cluster mode a request's objects live for its Redis
 * round trip (milliseconds); while the young generation is still small and
 * collected often (the first seconds), they survive, some of the request
 * path's sites get pretenured, and from then on objects that die within
 * milliseconds are left to the old generation's GC. Whether it happens depends
 * on the first seconds' timing: the same daemon under the same load came up
 * fast or slow by start. Measured (4 s loads on Redis, 5 starts each): GC
 * pauses 285–303 ms with pretenuring in 4 of 5 starts, 73–80 ms without, p99
 * 5.9–6.7 ms against 3.4–3.6, daemon CPU per request 26–29 µs against 22–24.
 * The embedded store decides synchronously and is unaffected either way.
 * Set at run time rather than on node's command line, so that every way of
 * starting the daemon has it: V8 reads the flag at each young-generation GC,
 * and test/heap.test.ts checks that no site is pretenured after it.
 */
import { setFlagsFromString } from 'node:v8';

/** Called once, as the daemon starts, before it takes requests. */
export function tuneHeap(): void {
  setFlagsFromString('--no-allocation-site-pretenuring');
}
