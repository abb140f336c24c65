/*
 * config/load — reads a YAML config, validates it, and reports every problem
 * at its place (`file:line:col`). Environment variables and flags override the
 * file; they are validated with the same rules and named when wrong.
 *
 * Trusts nothing in the file. Reports all problems at once, not the first.
 */
import { readFileSync } from 'node:fs';
import { isMap, isNode, isPair, isScalar, LineCounter, parseDocument, visit, type Alias, type Document } from 'yaml';
import type { z } from 'zod';
import { LOCALES } from '../engine/messages.js';
import { compileSettings, type Settings } from './compile.js';
import { ConfigError, suggest, type ConfigProblem } from './errors.js';
import { configSchema, isRedisUrl, parseListen, type ParsedConfig } from './schema.js';

/** Values from the environment or command-line flags; `from` names the source for errors. */
export interface Override {
  value: string;
  from: string;
}

export interface Overrides {
  dataDir?: Override | undefined;
  postfixListen?: Override | undefined;
  dovecotListen?: Override | undefined;
  adminListen?: Override | undefined;
  /** `memory`, or a Redis URL: the shared store (MAILWARDEN_STORE). */
  store?: Override | undefined;
  /** This node's name (MAILWARDEN_NODE). */
  node?: Override | undefined;
  /** The language of what mail users are told (MAILWARDEN_LOCALE). */
  locale?: Override | undefined;
}

export type Locate = (path: ReadonlyArray<PropertyKey>, key?: string) => string;

/** A variable's value with its name, or undefined when it is unset or empty. */
function fromEnv(env: NodeJS.ProcessEnv, name: string): Override | undefined {
  const value = env[name];
  return value ? { value, from: name } : undefined;
}

/** Env variables that may override the config (flags take precedence over them). */
export function overridesFromEnv(env: NodeJS.ProcessEnv): Overrides {
  return {
    dataDir: fromEnv(env, 'MAILWARDEN_DATA'),
    postfixListen: fromEnv(env, 'MAILWARDEN_POSTFIX_LISTEN'),
    dovecotListen: fromEnv(env, 'MAILWARDEN_DOVECOT_LISTEN'),
    adminListen: fromEnv(env, 'MAILWARDEN_ADMIN_LISTEN'),
  };
}

/**
 * The store and node variables (MAILWARDEN_STORE, MAILWARDEN_NODE). loadSettings reads them, and
 * MAILWARDEN_LOCALE, from the process environment itself when the caller passes none, so every entry
 * point sees them.
 */
export function storeOverridesFromEnv(env: NodeJS.ProcessEnv): Pick<Overrides, 'store' | 'node'> {
  return { store: fromEnv(env, 'MAILWARDEN_STORE'), node: fromEnv(env, 'MAILWARDEN_NODE') };
}

export function loadSettings(file: string | undefined, overrides: Overrides = {}): Settings {
  if (file === undefined) return finish(undefined, {}, () => '(built-in defaults)', overrides);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new ConfigError([{ code: 'MW_CONFIG_READ', where: file, message: `cannot read the config file: ${reason}` }]);
  }
  return loadSettingsFromText(text, file, overrides);
}

export function loadSettingsFromText(text: string, file: string, overrides: Overrides = {}): Settings {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number): string => {
    const p = lc.linePos(offset);
    return `${file}:${p.line}:${p.col}`;
  };
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => ({
        code: 'MW_CONFIG_SYNTAX',
        where: at(e.pos[0]),
        message: `YAML syntax: ${firstLine(e.message)}`,
      })),
    );
  }
  let raw: unknown;
  try {
    raw = doc.toJS() ?? {};
  } catch (err) {
    // An alias to an undefined anchor (or an alias bomb) fails only here, not in doc.errors.
    const alias = firstAlias(doc);
    throw new ConfigError([
      {
        code: 'MW_CONFIG_SYNTAX',
        where: at(alias?.range?.[0] ?? 0),
        message: `YAML: ${firstLine((err as Error).message)}`,
      },
    ]);
  }
  const locate: Locate = (path, key) => at(offsetOf(doc, path, key));
  const parsed = configSchema.safeParse(raw, { reportInput: true });
  if (!parsed.success) throw new ConfigError(parsed.error.issues.flatMap((i) => problemsOf(i, [], locate)));
  return finish(file, parsed.data, locate, overrides);
}

function finish(file: string | undefined, cfg: ParsedConfig, locate: Locate, given: Overrides): Settings {
  const env = storeOverridesFromEnv(process.env);
  const overrides: Overrides = {
    ...given,
    store: given.store ?? env.store,
    node: given.node ?? env.node,
    locale: given.locale ?? fromEnv(process.env, 'MAILWARDEN_LOCALE'),
  };
  const problems: ConfigProblem[] = [];
  const st = overrides.store;
  if (st && st.value !== 'memory' && !isRedisUrl(st.value)) {
    problems.push({
      code: 'MW_CONFIG_ENV',
      where: st.from,
      message: `${JSON.stringify(st.value)} is not a store; write memory, or a Redis URL such as redis://127.0.0.1:6379/0`,
    });
  }
  const nd = overrides.node;
  if (nd && !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(nd.value)) {
    problems.push({
      code: 'MW_CONFIG_ENV',
      where: nd.from,
      message: `${JSON.stringify(nd.value)} is not a node name; use 1-64 characters of A-Z, a-z, 0-9, _ . -`,
    });
  }
  const lc = overrides.locale;
  if (lc && !(LOCALES as readonly string[]).includes(lc.value)) {
    const near = suggest(lc.value, LOCALES);
    problems.push({
      code: 'MW_CONFIG_ENV',
      where: lc.from,
      message: `${JSON.stringify(lc.value)} is not a locale; write en or ja${near === undefined ? '' : ` (did you mean ${JSON.stringify(near)}?)`}`,
    });
  }
  for (const o of [overrides.postfixListen, overrides.dovecotListen, overrides.adminListen]) {
    if (!o) continue;
    for (const part of o.value.split(',')) {
      if (parseListen(part) === undefined) {
        problems.push({
          code: 'MW_CONFIG_ENV',
          where: o.from,
          message: `${JSON.stringify(part)} is not a listen address; write host:port (127.0.0.1:10031, [::1]:10031) or an absolute unix socket path`,
        });
      }
    }
  }
  if (problems.length) throw new ConfigError(problems);
  return compileSettings(file, cfg, locate, overrides);
}

type Issue = z.core.$ZodIssue;

function problemsOf(issue: Issue, prefix: PropertyKey[], locate: Locate): ConfigProblem[] {
  const path = [...prefix, ...issue.path];
  const name = path.length ? path.join('.') : 'the config';
  if (issue.code === 'unrecognized_keys') {
    const allowed = keysAt(configSchema, path);
    return issue.keys.map((k) => ({
      code: 'MW_CONFIG_UNKNOWN_KEY',
      where: locate(path, k),
      message: `unknown key ${JSON.stringify(k)} in ${name}; ${unknownKeyHint(k, allowed)}`,
    }));
  }
  if (issue.code === 'invalid_union') {
    // Report the branch that matches the value's type (e.g. the enum for a string), not "Invalid input".
    // A branch with no type/value mismatch at its root matched the value's shape (e.g. the object form of
    // `then`), so its deeper issues are the real ones; otherwise prefer a branch of the right type.
    const rootMiss = (b: Issue[], codes: string[]): boolean =>
      b.some((i) => i.path.length === 0 && codes.includes(i.code));
    const branch =
      issue.errors.find((b) => !rootMiss(b, ['invalid_type', 'invalid_value'])) ??
      issue.errors.find((b) => !rootMiss(b, ['invalid_type'])) ??
      issue.errors[0] ??
      [];
    return branch.flatMap((i) => problemsOf(i, path, locate));
  }
  if (issue.code === 'invalid_key') {
    // Reported at the key itself, which is what is wrong (e.g. an empty address in rules.N.overrides).
    const key = String(path[path.length - 1]);
    const parent = path.slice(0, -1);
    return issue.issues.map((i) => ({
      code: 'MW_CONFIG_INVALID',
      where: locate(parent, key),
      message: `${parent.join('.') || 'the config'}: the key ${JSON.stringify(key)} ${plainWords(i)}`,
    }));
  }
  return [{ code: 'MW_CONFIG_INVALID', where: locate(path), message: `${name}: ${plainWords(issue)}` }];
}

function unknownKeyHint(key: string, allowed: string[]): string {
  const near = suggest(key, allowed);
  if (near !== undefined) return `did you mean ${JSON.stringify(near)}?`;
  // A short list helps more than a pointer to the docs; the top level has too many keys for one line.
  if (allowed.length > 0 && allowed.length <= 8)
    return `the keys here are ${allowed.map((a) => JSON.stringify(a)).join(', ')}`;
  return 'remove it or check its spelling (docs/CONFIG.md lists every key)';
}

/** What a validation issue means, in the words an administrator would use instead of the validator's. */
function plainWords(issue: Issue): string {
  const input: unknown = issue.input;
  // A message the schema wrote itself (e.g. the webhook secret's) already says it plainly.
  if (issue.code !== 'custom' && !/^(Too (small|big)|Invalid)/.test(issue.message)) return issue.message;
  switch (issue.code) {
    case 'invalid_value': {
      const choices = issue.values.map((v) => JSON.stringify(v)).join(', ');
      if (typeof input !== 'string' && typeof input !== 'number' && typeof input !== 'boolean')
        return `must be one of ${choices}`;
      const near = typeof input === 'string' ? suggest(input, issue.values.map(String)) : undefined;
      const hint = near === undefined ? '' : `; did you mean ${JSON.stringify(near)}?`;
      return `${JSON.stringify(input)} is not one of ${choices}${hint}`;
    }
    case 'invalid_type':
      return `must be ${typeName(issue.expected)}, not ${valueName(input)}`;
    case 'too_small':
    case 'too_big': {
      const small = issue.code === 'too_small';
      const n = Number(small ? issue.minimum : issue.maximum);
      if (issue.origin === 'number' || issue.origin === 'int' || issue.origin === 'bigint') {
        if (small) return issue.inclusive ? `must be at least ${n}` : `must be greater than ${n}`;
        return issue.inclusive ? `must be at most ${n}` : `must be less than ${n}`;
      }
      if (issue.origin === 'string') {
        if (small && n === 1) return 'must not be empty';
        return `must be ${small ? 'at least' : 'at most'} ${n} characters long`;
      }
      if (issue.origin === 'array') {
        if (small && n === 1) return 'must not be an empty list';
        return `must have ${small ? 'at least' : 'at most'} ${n} entries`;
      }
      return issue.message;
    }
    case 'not_multiple_of':
      return `must be a multiple of ${String(issue.divisor)}`;
    case 'invalid_format':
      return 'is not written the expected way';
    default:
      return issue.message;
  }
}

function typeName(expected: string): string {
  const names: Record<string, string> = {
    number: 'a number',
    int: 'a whole number',
    string: 'text',
    boolean: 'true or false',
    array: 'a list',
    object: 'a mapping of keys to values',
  };
  return names[expected] ?? article(expected);
}

function valueName(v: unknown): string {
  if (v === null || v === undefined) return 'empty';
  if (typeof v === 'string') return 'text';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return 'a list';
  return 'a mapping';
}

function article(t: string): string {
  return /^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`;
}

interface SchemaDef {
  type: string;
  shape?: Record<string, unknown>;
  innerType?: unknown;
  element?: unknown;
  options?: unknown[];
  in?: unknown;
  valueType?: unknown;
}

/** The keys the schema allows in the mapping at `path` (rules.0.then → action, delay, …), for suggestions. */
export function keysAt(schema: unknown, path: ReadonlyArray<PropertyKey>): string[] {
  const d = (schema as { _zod?: { def?: SchemaDef } } | undefined)?._zod?.def;
  if (d === undefined) return [];
  const [head, ...rest] = path;
  switch (d.type) {
    case 'optional':
    case 'nullable':
    case 'default':
    case 'readonly':
      return keysAt(d.innerType, path);
    case 'pipe':
      return keysAt(d.in, path);
    case 'union':
      return [...new Set((d.options ?? []).flatMap((o) => keysAt(o, path)))];
    case 'object':
      return head === undefined ? Object.keys(d.shape ?? {}) : keysAt(d.shape?.[String(head)], rest);
    case 'array':
      return head === undefined ? [] : keysAt(d.element, rest);
    case 'record':
      return head === undefined ? [] : keysAt(d.valueType, rest);
    default:
      return [];
  }
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}

/** Source offset of the value at `path` (or of `key` inside it), falling back to the nearest ancestor. */
function offsetOf(doc: Document, path: ReadonlyArray<PropertyKey>, key?: string): number {
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n) as unknown[], true);
    if (!isNode(node)) continue;
    if (key !== undefined && n === path.length && isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === key);
      if (pair && isScalar(pair.key) && pair.key.range) return pair.key.range[0];
    }
    if (node.range) return node.range[0];
  }
  return 0;
}

/** The first alias that does not resolve, else the first alias (for errors raised while resolving them). */
function firstAlias(doc: Document): Alias | undefined {
  let first: Alias | undefined;
  let broken: Alias | undefined;
  visit(doc, {
    Alias(_, node) {
      first ??= node;
      if (node.resolve(doc) === undefined) {
        broken = node;
        return visit.BREAK;
      }
      return undefined;
    },
  });
  return broken ?? first;
}
