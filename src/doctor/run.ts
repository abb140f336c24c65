/*
 * doctor/run — runs postconf and doveconf: arguments only (execFile, no
 * shell), the C locale, and the sbin directories on the path, where Debian
 * puts postconf but a non-root PATH often does not reach.
 */
import { execFile } from 'node:child_process';

/** A configuration that could not be read; `missing`: the tool itself is not installed. */
export class ReadError extends Error {
  constructor(
    message: string,
    readonly missing: boolean,
  ) {
    super(message);
  }
}

const PATH_TAIL = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export function runTool(cmd: string, args: readonly string[]): Promise<string> {
  const env = { ...process.env, PATH: `${process.env.PATH ?? ''}:${PATH_TAIL}`, LANG: 'C', LC_ALL: 'C' };
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env, timeout: 30_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      if ((err as NodeJS.ErrnoException).code === 'ENOENT')
        return reject(new ReadError(`${cmd} is not installed`, true));
      // The fatal line comes last, after any warnings.
      const last = (stderr.trim().split('\n').pop() || err.message).replace(`${cmd}: `, '');
      reject(new ReadError(`${cmd} ${args.join(' ')}: ${last}`, false));
    });
  });
}
