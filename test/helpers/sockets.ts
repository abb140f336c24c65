/*
 * Test helpers for abuse tests on raw sockets: waiting for a server to stop
 * consuming, and counting what finally arrives.
 */
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** Resolves with `read()` once it has not changed for `quietMs` (e.g. a server that stopped reading). */
export async function settled(read: () => number | Promise<number>, quietMs = 250): Promise<number> {
  let last = await read();
  for (;;) {
    await sleep(quietMs);
    const now = await read();
    if (now === last) return now;
    last = now;
  }
}

/** Resumes `s` and resolves once `marker` has arrived `n` times (a marker cut between two reads included). */
export function arrivals(s: Socket, marker: string, n: number): Promise<void> {
  let seen = 0;
  let tail = '';
  return new Promise((resolve) => {
    s.on('data', (d: Buffer) => {
      const text = tail + d.toString('latin1');
      for (let i = text.indexOf(marker); i >= 0; i = text.indexOf(marker, i + marker.length)) seen++;
      tail = text.slice(-(marker.length - 1));
      if (seen >= n) resolve();
    });
    s.resume();
  });
}
