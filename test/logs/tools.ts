/*
 * The system tools the log follower's tests and benchmark run: journalctl,
 * systemd-journal-remote (Debian package systemd-journal-remote) and
 * fail2ban-regex (fail2ban), installed by scripts/install-system-deps.sh.
 * On a developer's machine a missing one skips what needs it, with the
 * reason; in CI (CI=true) it fails, so a broken image is never green.
 */
import { accessSync, constants } from 'node:fs';

export const TOOLS = {
  journalctl: { paths: ['/usr/bin/journalctl', '/bin/journalctl'], pkg: 'systemd' },
  'systemd-journal-remote': {
    paths: ['/usr/lib/systemd/systemd-journal-remote', '/lib/systemd/systemd-journal-remote'],
    pkg: 'systemd-journal-remote',
  },
  'fail2ban-regex': { paths: ['/usr/bin/fail2ban-regex'], pkg: 'fail2ban' },
} as const;

export type Tool = keyof typeof TOOLS;

/** The tool's path; undefined with `why` filled in when it is missing outside CI; throws in CI. */
export function findTool(name: Tool, why: string[] = []): string | undefined {
  const t = TOOLS[name];
  for (const p of t.paths) {
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  const message = `${name} is missing (Debian package ${t.pkg}): run scripts/install-system-deps.sh`;
  if (process.env.CI === 'true') throw new Error(message);
  why.push(message);
  return undefined;
}
