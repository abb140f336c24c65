/*
 * test/daemon/logs — what `mailwarden serve` tells the operator, through the
 * real CLI in a child process: the start line (dashboard URL, token file),
 * log.format: pretty, and an address in use as one line with exit code 1.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { freePort, runCli, startDaemonProcess } from '../helpers/daemon.js';
import { REPO } from '../helpers/postfix.js';

const tmp = mkdtempSync(join(tmpdir(), 'mailwarden-logs-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function holdPort(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}

describe('the start line', () => {
  test('names the dashboard URL and the token file (JSON lines when stdout is not a terminal)', async () => {
    const data = join(tmp, 'json');
    const d = await startDaemonProcess(data);
    try {
      const line = d
        .output()
        .split('\n')
        .find((l) => l.includes('"mailwarden started"'));
      const started = JSON.parse(line ?? '{}') as Record<string, unknown>;
      assert.equal(started.dashboard, `http://127.0.0.1:${d.adminPort}/`);
      assert.equal(started.tokenFile, join(data, 'admin.token'));
    } finally {
      await d.kill('SIGTERM');
    }
  });

  test('log.format: pretty writes `time LEVEL message key=value` lines', async () => {
    const dir = join(tmp, 'pretty');
    const data = join(dir, 'data');
    const config = join(tmp, 'pretty.yaml');
    writeFileSync(config, 'log:\n  format: pretty\n');
    const [postfix, dovecot, admin] = [await freePort(), await freePort(), await freePort()];
    const proc = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'src', 'main.ts'), 'serve'], {
      cwd: REPO,
      env: {
        ...process.env,
        MAILWARDEN_CONFIG: config,
        MAILWARDEN_DATA: data,
        MAILWARDEN_POSTFIX_LISTEN: `127.0.0.1:${postfix}`,
        MAILWARDEN_DOVECOT_LISTEN: `127.0.0.1:${dovecot}`,
        MAILWARDEN_ADMIN_LISTEN: `127.0.0.1:${admin}`,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
    proc.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    try {
      const deadline = Date.now() + 20_000;
      while (!out.includes(' mailwarden started ') && proc.exitCode === null && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      const started = out.split('\n').find((l) => l.includes(' mailwarden started '));
      assert.ok(started, out);
      const time = String.raw`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`;
      const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
      assert.match(
        started,
        new RegExp(
          `^${time} INFO  mailwarden started dashboard=http://127\\.0\\.0\\.1:${admin}/ tokenFile=${esc(join(data, 'admin.token'))} version=\\S+ config=${esc(config)} `,
        ),
      );
      assert.match(started, new RegExp(` postfix=127\\.0\\.0\\.1:${postfix} `));
      assert.doesNotMatch(out, /^\{/m, 'no JSON line');
    } finally {
      // Not its exit code: main.ts sets its signal handlers just after the start line, so a signal at once may
      // end it by the default action.
      proc.kill('SIGTERM');
      await exited;
    }
  });
});

describe('an address already in use', () => {
  for (const [what, key, env] of [
    ['Postfix policy', 'listen.postfix', 'MAILWARDEN_POSTFIX_LISTEN'],
    ['Dovecot auth policy', 'listen.dovecot', 'MAILWARDEN_DOVECOT_LISTEN'],
    ['admin API and dashboard', 'listen.admin', 'MAILWARDEN_ADMIN_LISTEN'],
  ] as const) {
    test(`${key}: one line on stderr, exit code 1, no stack trace`, async () => {
      const taken = await freePort();
      const holder = await holdPort(taken);
      try {
        const r = await runCli(['serve'], {
          MAILWARDEN_DATA: join(tmp, `in-use-${key}`),
          MAILWARDEN_POSTFIX_LISTEN: `127.0.0.1:${await freePort()}`,
          MAILWARDEN_DOVECOT_LISTEN: `127.0.0.1:${await freePort()}`,
          MAILWARDEN_ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
          [env]: `127.0.0.1:${taken}`,
        });
        assert.equal(r.code, 1, r.stderr);
        assert.equal(
          r.stderr,
          `mailwarden: cannot listen on 127.0.0.1:${taken} (${what}): address already in use; stop the other process or set ${key}\n`,
        );
        assert.doesNotMatch(r.stdout, /EADDRINUSE|\n\s+at /, 'nothing else about it on stdout either');
      } finally {
        await new Promise((resolve) => holder.close(resolve));
      }
    });
  }
});
