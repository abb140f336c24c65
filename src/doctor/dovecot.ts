/*
 * doctor/dovecot — reads a Dovecot configuration through `doveconf -P`: every
 * setting in force, defaults included (ssl, disable_plaintext_auth and the
 * auth_policy_* switches are on or off by default), with the values doveconf
 * otherwise hides, because auth_policy_hash_nonce must be looked at to tell
 * a placeholder. Secrets read here are never printed.
 */
import { runTool } from './run.js';

export interface DovecotSection {
  /** `service`, `inet_listener`, `protocol`, `remote`, …; '' for the top level. */
  type: string;
  /** `imap-login`, `imap`, `10.0.0.0/8`, …; '' when the section has none. */
  name: string;
  settings: Map<string, string>;
  sections: DovecotSection[];
}

export interface DovecotConfig {
  /** The file doveconf read (from its first line). */
  file: string;
  root: DovecotSection;
}

const section = (type: string, name: string): DovecotSection => ({
  type,
  name,
  settings: new Map(),
  sections: [],
});

export function parseDoveconf(text: string): DovecotConfig {
  const root = section('', '');
  const stack = [root];
  let file = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    // doveconf's first line: `# 2.3.19.1 (9b53102964): /etc/dovecot/dovecot.conf`.
    const head = /^# \d[\w.]* \([^)]*\): (.*)$/.exec(line);
    if (head && !file) file = head[1] as string;
    if (line === '' || line.startsWith('#')) continue;
    const top = stack[stack.length - 1] as DovecotSection;
    const setting = /^([\w/-]+) =(?: (.*))?$/.exec(line);
    if (setting) top.settings.set(setting[1] as string, (setting[2] ?? '').trim());
    else if (line === '}') {
      if (stack.length > 1) stack.pop();
    } else if (line.endsWith('{')) {
      const [type = '', ...rest] = line.slice(0, -1).trim().split(/\s+/);
      const s = section(type, rest.join(' '));
      top.sections.push(s);
      stack.push(s);
    }
  }
  return { file, root };
}

export async function readDovecot(file: string | undefined): Promise<DovecotConfig> {
  return parseDoveconf(await runTool('doveconf', [...(file === undefined ? [] : ['-c', file]), '-P']));
}
