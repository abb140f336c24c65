/*
 * doctor/postfix — reads a Postfix configuration the way Postfix itself sees
 * it, through postconf, and parses what it prints:
 * - `postconf -x`: every main.cf parameter in force, defaults included (they
 *   decide: smtpd_delay_reject, the policy default action, the relay
 *   restrictions of the compatibility level) and `$name`s expanded;
 * - `postconf -M`: the master.cf services;
 * - `postconf -Px`: their `-o` overrides, expanded.
 */
import { runTool } from './run.js';

export interface PostfixService {
  /** As in master.cf: `smtp`, `submission`, `127.0.0.1:2525`. */
  name: string;
  /** `inet`, `unix`, `pass`, … */
  type: string;
  /** The program: `smtpd`, `postscreen`, … */
  command: string;
  /** Its `-o name=value` overrides. */
  params: ReadonlyMap<string, string>;
}

export interface PostfixConfig {
  /** The configuration directory (`config_directory`). */
  dir: string;
  main: ReadonlyMap<string, string>;
  services: PostfixService[];
}

/** `name = value` lines, as postconf prints them. */
export function parseParams(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const eq = line.indexOf(' =');
    if (eq <= 0) continue;
    out.set(line.slice(0, eq), line.slice(eq + 2).trim());
  }
  return out;
}

/** Services from `postconf -M` and their overrides from `postconf -P` (`service/type/name = value`). */
export function parseServices(master: string, serviceParams: string): PostfixService[] {
  const params = new Map<string, Map<string, string>>();
  for (const [key, value] of parseParams(serviceParams)) {
    const name = key.lastIndexOf('/');
    const type = key.lastIndexOf('/', name - 1);
    if (type <= 0) continue;
    const service = key.slice(0, name);
    const map = params.get(service) ?? new Map<string, string>();
    map.set(key.slice(name + 1), value);
    params.set(service, map);
  }
  const out: PostfixService[] = [];
  for (const line of master.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || line.startsWith(' ')) continue;
    const [name, type] = f as [string, string];
    out.push({ name, type, command: f[7] as string, params: params.get(`${name}/${type}`) ?? new Map() });
  }
  return out;
}

export async function readPostfix(dir: string | undefined): Promise<PostfixConfig> {
  const c = dir === undefined ? [] : ['-c', dir];
  const [main, master, serviceParams] = await Promise.all([
    runTool('postconf', [...c, '-x']),
    runTool('postconf', [...c, '-M']),
    runTool('postconf', [...c, '-P', '-x']),
  ]);
  const params = parseParams(main);
  return {
    dir: params.get('config_directory') ?? dir ?? '/etc/postfix',
    main: params,
    services: parseServices(master, serviceParams),
  };
}

/** A parameter as one service sees it: its `-o` override, else main.cf's value. */
export function param(pf: PostfixConfig, svc: PostfixService, name: string): string {
  return svc.params.get(name) ?? pf.main.get(name) ?? '';
}

/** One entry of a restriction list; `check_policy_service` carries its target and `{ … }` attributes. */
export interface Restriction {
  name: string;
  /** The entry as written (with its target), for rewriting a list. */
  text: string;
  target?: string;
  attrs?: ReadonlyMap<string, string>;
}

/** Splits at commas and white space, keeping a `{ … }` group (Postfix 3.0 syntax) as one token. */
function tokens(value: string): string[] {
  const out: string[] = [];
  let cur = '';
  let depth = 0;
  for (const ch of value) {
    if (ch === '{') depth++;
    if (ch === '}') depth = Math.max(0, depth - 1);
    if (depth === 0 && (ch === ',' || /\s/.test(ch)) && ch !== '}') {
      if (cur) out.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (cur) out.push(cur);
  return out;
}

export function parseRestrictions(value: string): Restriction[] {
  const ts = tokens(value);
  const out: Restriction[] = [];
  for (let i = 0; i < ts.length; i++) {
    const name = ts[i] as string;
    if (name !== 'check_policy_service' || i + 1 >= ts.length) {
      out.push({ name, text: name });
      continue;
    }
    const arg = ts[++i] as string;
    const text = `${name} ${arg}`;
    if (!arg.startsWith('{')) {
      out.push({ name, text, target: arg });
      continue;
    }
    const attrs = new Map<string, string>();
    let target = '';
    for (const part of arg.slice(1, -1).split(',')) {
      const p = part.trim();
      const eq = p.indexOf('=');
      if (eq < 0) target ||= p;
      else attrs.set(p.slice(0, eq).trim(), p.slice(eq + 1).trim());
    }
    out.push({ name, text, target, attrs });
  }
  return out;
}
