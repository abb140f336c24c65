/*
 * test/torture — shared by the fault suite: how big a run is, and a daemon
 * with a canary ban that must be refused whatever else is thrown at it.
 *
 * `npm test` runs every torture file at a bounded size, so CI exercises it;
 * `npm run torture` sets MAILWARDEN_TORTURE=full for the long runs.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';

export const FULL = process.env.MAILWARDEN_TORTURE === 'full';

/** `small` in npm test, `full` in npm run torture. */
export function size(small: number, full: number): number {
  return FULL ? full : small;
}

/** The address banned before the torture starts: every answer about it must stay a refusal. */
export const CANARY = '192.0.2.200';

export interface Tortured {
  d: DaemonProcess;
  token: string;
  api(path: string, init?: RequestInit): Promise<Response>;
}

export function adminOf(d: DaemonProcess, dataDir: string): Tortured {
  const token = readFileSync(join(dataDir, 'admin.token'), 'utf8').trim();
  return {
    d,
    token,
    api: (path, init = {}) =>
      fetch(`http://127.0.0.1:${d.adminPort}${path}`, {
        ...init,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
      }),
  };
}

/** A daemon on `dataDir` (built-in policy, no network trusted) with the canary banned for a day. */
export async function tortured(dataDir: string, ports?: Parameters<typeof startDaemonProcess>[2]): Promise<Tortured> {
  const d = await startDaemonProcess(dataDir, { MAILWARDEN_CONFIG: '' }, ports);
  const t = adminOf(d, dataDir);
  const r = await t.api('/v1/bans', { method: 'POST', body: JSON.stringify({ subject: CANARY, duration: '1d' }) });
  if (r.status !== 201 && r.status !== 200) throw new Error(`canary ban refused: ${r.status} ${await r.text()}`);
  return t;
}

/** Every ban in force, page by page (the API answers at most 1,000 a page). */
export async function allBans(t: Tortured): Promise<Set<string>> {
  const out = new Set<string>();
  for (let offset = 0; ; offset += 1000) {
    const page = (await (await t.api(`/v1/bans?limit=1000&offset=${offset}`)).json()) as {
      total: number;
      items: Array<{ subject: string }>;
    };
    for (const b of page.items) out.add(b.subject);
    if (page.items.length === 0 || offset + page.items.length >= page.total) return out;
  }
}

/** Resident memory of a process, in MB (Linux /proc). */
export function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}
