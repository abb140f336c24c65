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
    super(problems.map(formatProblem).join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export function formatProblem(p: ConfigProblem): string {
  return `${p.where}: ${p.message} [${p.code}]`;
}
