/*
 * doctor — `mailwarden doctor`: is this mail server locked down, and is it
 * wired to us? Reads the Postfix, Dovecot and mailwarden configurations,
 * checks the certificates they name, optionally probes the live ports, and
 * prints a report (docs/DOCTOR.md). Exit code: 0 nothing worse than a
 * warning, 1 an error found, 2 a configuration could not be read (or the
 * probe host was refused).
 */
import { randomBytes } from 'node:crypto';
import type { Settings } from '../config/compile.js';
import { ConfigError } from '../config/errors.js';
import { loadSettings, type Overrides } from '../config/load.js';
import { isLoopback } from '../listen.js';
import { checkCertificates, loadCertificate } from './certs.js';
import { checkDovecot, dovecotCertRefs } from './check-dovecot.js';
import { checkMailwarden } from './check-mailwarden.js';
import { checkPostfix, postfixCertRefs } from './check-postfix.js';
import { probeFindings, probeTargets } from './check-probe.js';
import { readDovecot } from './dovecot.js';
import { readPostfix } from './postfix.js';
import { probe } from './probe.js';
import { formatJson, formatText, makeReport, type Finding } from './report.js';
import { ReadError } from './run.js';

/** Notes for a system without Postfix or Dovecot installed (no configuration was named). */
const SKIPPED = { postfix: 'doctor.postfix-skipped', dovecot: 'doctor.dovecot-skipped' } as const;

export interface DoctorOptions {
  postfixConfig?: string | undefined;
  dovecotConfig?: string | undefined;
  probe?: string | undefined;
  probeRemote?: boolean | undefined;
  json?: boolean | undefined;
  /** Our config file (--config, MAILWARDEN_CONFIG), undefined for the built-in defaults. */
  configFile: string | undefined;
  overrides: Overrides;
}

/** Runs the checks and prints the report; the exit code. */
export async function runDoctor(
  o: DoctorOptions,
  out: NodeJS.WritableStream = process.stdout,
  err: NodeJS.WritableStream = process.stderr,
): Promise<0 | 1 | 2> {
  // Probing sends SMTP commands: only to this machine, unless the administrator says otherwise.
  if (o.probe !== undefined && !o.probeRemote && !isLoopback(o.probe)) {
    err.write(
      `mailwarden doctor: --probe ${o.probe} is not this machine's loopback; probe a server you run with --probe-remote\n`,
    );
    return 2;
  }
  const findings: Finding[] = [];
  let unreadable = false;
  const failed = (what: string, e: Error): void => {
    unreadable = true;
    findings.push({
      id: 'doctor.config-unreadable',
      severity: 'error',
      area: 'doctor',
      message: `${what}: ${e.message}`,
      fix: null,
    });
  };
  /** A config given on the command line must be read; the system's is skipped when the tool is not installed. */
  const read = async <T>(
    name: 'postfix' | 'dovecot',
    given: string | undefined,
    r: (g: string | undefined) => Promise<T>,
  ) => {
    try {
      return await r(given);
    } catch (e) {
      if (!(e instanceof ReadError)) throw e;
      if (e.missing && given === undefined) {
        findings.push({
          id: SKIPPED[name],
          severity: 'info',
          area: 'doctor',
          message: `${e.message}: ${name} was not checked.`,
          fix: null,
        });
      } else failed(`the ${name} configuration`, e);
      return undefined;
    }
  };

  let settings: Settings | undefined;
  try {
    settings = loadSettings(o.configFile, o.overrides);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    failed('the mailwarden configuration', e);
  }
  const pf = await read('postfix', o.postfixConfig, readPostfix);
  const dv = await read('dovecot', o.dovecotConfig, readDovecot);
  if (pf) findings.push(...checkPostfix(pf, { settings, dir: o.postfixConfig }));
  if (dv) findings.push(...checkDovecot(dv, { settings, nonce: randomBytes(24).toString('hex') }));
  const certs = [...(pf ? postfixCertRefs(pf) : []), ...(dv ? dovecotCertRefs(dv) : [])];
  findings.push(...checkCertificates(certs.map(loadCertificate), Date.now()));
  // localhost may resolve to ::1, where the probe cannot come from another address (doctor/probe.ts).
  const host = o.probe === 'localhost' ? '127.0.0.1' : o.probe;
  if (host !== undefined) {
    const targets = probeTargets(pf, dv);
    if (targets.length === 0) {
      findings.push({
        id: 'probe.no-targets',
        severity: 'info',
        area: 'doctor',
        message: 'The configurations read name no SMTP, IMAP or POP3 port to probe.',
        fix: null,
      });
    }
    const results = await probe(host, targets);
    findings.push(...probeFindings(results, { mynetworks: pf?.main.get('mynetworks') ?? '', dir: o.postfixConfig }));
  }
  if (settings) findings.push(...checkMailwarden(settings));

  const report = makeReport(
    findings,
    {
      postfix: pf?.dir ?? null,
      dovecot: dv?.file ?? null,
      mailwarden: settings ? (settings.file ?? '(built-in defaults)') : null,
      probe: host ?? null,
    },
    unreadable,
  );
  out.write(o.json ? formatJson(report) : formatText(report));
  return report.summary.exitCode;
}
