/*
 * doctor/report — what a check finds, and the report the command prints:
 * text for a person, or (`--json`) the documented, stable format of
 * docs/DOCTOR.md. Findings are listed worst first, in the order the checks
 * made them within one severity.
 */

export type Severity = 'error' | 'warning' | 'info';
export type Area = 'tls' | 'relay' | 'hooks' | 'mailwarden' | 'doctor';

export interface Finding {
  /** Stable id, e.g. `postfix.auth-before-tls`; one id may be reported for several places. */
  id: string;
  severity: Severity;
  area: Area;
  /** What is wrong, where, and what it means. */
  message: string;
  /** The exact line(s) that fix it (postconf, dovecot.conf or mailwarden.yaml), or null. */
  fix: string | null;
}

/** What was read or probed: a path or host, or null when that part was not checked. */
export interface Checked {
  postfix: string | null;
  dovecot: string | null;
  mailwarden: string | null;
  probe: string | null;
}

export interface Report {
  /** Bumped only when a field changes meaning or goes away. */
  format: 1;
  findings: Finding[];
  summary: { errors: number; warnings: number; info: number; exitCode: 0 | 1 | 2; checked: Checked };
}

/**
 * One finding per distinct problem: the same finding made for several places (Postfix services,
 * Dovecot sections) is reported once, its message prefixed with every place that has it.
 */
export function mergeByPlace(
  items: ReadonlyArray<{ place: string; finding: Finding }>,
  prefix: (places: string[]) => string,
): Finding[] {
  const groups = new Map<string, { f: Finding; places: string[] }>();
  for (const { place, finding: f } of items) {
    const key = `${f.id}\0${f.message}\0${f.fix}`;
    const g = groups.get(key);
    if (g) g.places.push(place);
    else groups.set(key, { f, places: [place] });
  }
  return [...groups.values()].map(({ f, places }) => ({ ...f, message: `${prefix(places)}: ${f.message}` }));
}

const RANK: Record<Severity, number> = { error: 0, warning: 1, info: 2 };

/** `unreadable`: some configuration could not be read at all, so the check is incomplete (exit 2). */
export function makeReport(findings: readonly Finding[], checked: Checked, unreadable: boolean): Report {
  const sorted = [...findings].sort((a, b) => RANK[a.severity] - RANK[b.severity]);
  const count = (s: Severity): number => sorted.filter((f) => f.severity === s).length;
  const errors = count('error');
  return {
    format: 1,
    findings: sorted,
    summary: {
      errors,
      warnings: count('warning'),
      info: count('info'),
      exitCode: unreadable ? 2 : errors > 0 ? 1 : 0,
      checked,
    },
  };
}

export function formatJson(r: Report): string {
  return `${JSON.stringify(r, null, 2)}\n`;
}

const indent = (text: string, by: string): string =>
  text
    .split('\n')
    .map((l) => by + l)
    .join('\n');

export function formatText(r: Report): string {
  const c = r.summary.checked;
  const what = [
    `Postfix ${c.postfix ?? '(not checked)'}`,
    `Dovecot ${c.dovecot ?? '(not checked)'}`,
    `mailwarden ${c.mailwarden ?? '(not checked)'}`,
    `probe ${c.probe ?? '(none; --probe 127.0.0.1 checks the live ports)'}`,
  ];
  const out = [`mailwarden doctor: ${what.join(', ')}`, ''];
  for (const f of r.findings) {
    out.push(`${f.severity.toUpperCase().padEnd(7)} ${f.id}  [${f.area}]`, indent(f.message, '  '));
    if (f.fix !== null) out.push('  fix:', indent(f.fix, '    '));
    out.push('');
  }
  const s = r.summary;
  const verdict =
    s.exitCode === 2
      ? 'incomplete: a configuration could not be read'
      : s.exitCode === 1
        ? 'not locked down'
        : 'nothing worse than a warning';
  out.push(`${s.errors} error(s), ${s.warnings} warning(s), ${s.info} note(s): ${verdict}`);
  return `${out.join('\n')}\n`;
}
