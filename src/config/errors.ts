/*
 * config/errors — configuration errors with a stable code and a place.
 *
 * Every error names `file:line:col` (or the environment variable or flag it
 * came from), what is wrong, and how to fix it. Codes are listed in
 * docs/CONFIG.md and never change meaning.
 */

export type ConfigErrorCode =
  | 'MW_CONFIG_READ' // the file cannot be read
  | 'MW_CONFIG_SYNTAX' // not valid YAML
  | 'MW_CONFIG_UNKNOWN_KEY' // a key mailwarden does not know (often a typo)
  | 'MW_CONFIG_INVALID' // a value of the wrong type or out of range
  | 'MW_CONFIG_RULE' // a rule that is incomplete or contradicts itself
  | 'MW_CONFIG_ENV'; // an environment variable or flag with a bad value

export interface ConfigProblem {
  code: ConfigErrorCode;
  /** `file:line:col`, or the variable/flag name. */
  where: string;
  message: string;
}

export class ConfigError extends Error {
  readonly problems: ConfigProblem[];

  constructor(problems: ConfigProblem[]) {
    const sorted = byPlace(problems);
    super(sorted.map(formatProblem).join('\n'));
    this.name = 'ConfigError';
    this.problems = sorted;
  }
}

export function formatProblem(p: ConfigProblem): string {
  return `${p.where}: ${p.message} [${p.code}]`;
}

const PLACE = /:(\d+):(\d+)$/;

/**
 * Problems in the order of the file (line, then column), so that an administrator can work down it.
 * Problems without a line (a variable, a flag, a built-in rule) keep their order, after the rest.
 */
export function byPlace(problems: readonly ConfigProblem[]): ConfigProblem[] {
  const key = (p: ConfigProblem): [number, number] => {
    const m = PLACE.exec(p.where);
    return m ? [Number(m[1]), Number(m[2])] : [Infinity, Infinity];
  };
  return [...problems].sort((a, b) => {
    const [la, ca] = key(a);
    const [lb, cb] = key(b);
    return la === lb ? (la === Infinity ? 0 : ca - cb) : la - lb;
  });
}

/**
 * The allowed word closest to `word`, if it is close enough to be a typo: at most one edit for a word of
 * up to 4 characters, two for longer ones (a swap of two neighbours is one edit). Case is ignored.
 */
export function suggest(word: string, allowed: readonly string[]): string | undefined {
  const w = word.toLowerCase();
  const most = w.length <= 4 ? 1 : 2;
  let best: string | undefined;
  let bestDistance = most + 1;
  for (const a of allowed) {
    const d = editDistance(w, a.toLowerCase());
    if (d < bestDistance) {
      best = a;
      bestDistance = d;
    }
  }
  return best;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours. */
export function editDistance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    const row: number[] = [i];
    for (let j = 1; j <= b.length; j++) {
      if (i === 0) {
        row.push(j);
        continue;
      }
      const prev = rows[i - 1] as number[];
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        d = Math.min(d, ((rows[i - 2] as number[])[j - 2] as number) + 1);
      row.push(d);
    }
    rows.push(row);
  }
  return (rows[a.length] as number[])[b.length] as number;
}
