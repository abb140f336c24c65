/*
 * The DNS side of a real `mailwarden serve` (child process), against a real
 * DNSBL server (rbldnsd on loopback) and a real webhook receiver: a listed
 * Postfix client meets the stricter limit; the reputation watch alerts at
 * start for our listed address; /v1/status, /metrics and `mailwarden
 * reputation` show it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli, startDaemonProcess, type DaemonProcess } from '../helpers/daemon.js';
import { PolicyClient, request } from '../helpers/postfix.js';
import { startRbldnsd, zoneHead, type Rbldnsd } from './rbldnsd.js';

void describe('mailwarden serve with DNSBL zones and a reputation watch', () => {
  let dir: string;
  let bl: Rbldnsd;
  let http: Server;
  const hooks: Array<{ rule: string; subject: string; reason: string }> = [];
  let d: DaemonProcess;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'mw-dns-daemon-'));
    bl = await startRbldnsd(
      { ip: `${zoneHead(300, 60)}:127.0.0.2:Listed, see https://ip.test/$\n198.51.100.7\n198.51.100.25\n` },
      ['ip.test:ip4set:ip'],
    );
    http = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        hooks.push(JSON.parse(body) as { rule: string; subject: string; reason: string });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    writeFileSync(
      join(dir, 'mailwarden.yaml'),
      [
        'dns:',
        `  servers: [${bl.server}]`,
        'dnsbl:',
        '  zones: [{zone: ip.test}]',
        'reputation:',
        '  addresses: [198.51.100.25]',
        '  zones: [{zone: ip.test}]',
        'alerts:',
        '  email: {to: []}',
        `  webhook: {url: "http://127.0.0.1:${(http.address() as AddressInfo).port}/hook"}`,
        'rules:',
        '  - name: listed-recipients-per-ip',
        '    limit: 1',
      ].join('\n'),
    );
    d = await startDaemonProcess(join(dir, 'data'), { MAILWARDEN_CONFIG: join(dir, 'mailwarden.yaml') });
  });
  after(async () => {
    await d?.kill('SIGTERM');
    await new Promise<void>((r) => (http ? http.close(() => r()) : r()));
    await bl?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  void test('a listed client meets the stricter limit; the reply names the zone and the code', async () => {
    const c = await PolicyClient.open({ port: d.postfixPort });
    try {
      const rcpt = (i: number): string =>
        request({ client_address: '198.51.100.7', recipient: `u${i}@mailprobe.test` });
      assert.equal(await c.send(rcpt(1)), 'action=DUNNO');
      assert.match(
        await c.send(rcpt(2)),
        /^action=450 4\.7\.1 .*rule listed-recipients-per-ip\).*Listed in ip\.test \(127\.0\.0\.2\)$/,
      );
    } finally {
      c.close();
    }
  });

  void test('our listed address: one alert, the status, the metric and `mailwarden reputation`', async () => {
    const end = Date.now() + 10_000;
    while (!hooks.some((h) => h.rule === 'reputation-listed') && Date.now() < end)
      await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(
      hooks.map((h) => [h.rule, h.subject]),
      [['reputation-listed', '198.51.100.25 in ip.test']],
    );
    assert.match(
      hooks[0]?.reason ?? '',
      /^198\.51\.100\.25 is listed in ip\.test \(127\.0\.0\.2: Listed, see https:\/\/ip\.test\/198\.51\.100\.25\)/,
    );

    const cli = await runCli(['reputation'], d.env);
    assert.equal(cli.code, 1, cli.stderr);
    assert.match(cli.stdout, /^reputation: checked every 15m, last \S+; 1 listing\(s\)$/m);
    assert.match(cli.stdout, /^ {2}LISTED +198\.51\.100\.25 +ip\.test +127\.0\.0\.2 since /m);

    const status = JSON.parse((await runCli(['status', '--json'], d.env)).stdout) as {
      reputation: { listed: number; checks: Array<{ state: string; since: string }> };
      dnsbl: { zones: string[]; lookups: number; late: number };
    };
    assert.equal(status.reputation.listed, 1);
    // --json writes times as ISO-8601.
    assert.match(status.reputation.checks[0]?.since ?? '', /^\d{4}-\d\d-\d\dT/);
    assert.deepEqual(status.dnsbl.zones, ['ip.test']);
    assert.equal(status.dnsbl.lookups, 1);

    const token = readFileSync(join(dir, 'data', 'admin.token'), 'utf8').trim();
    const res = await fetch(`http://127.0.0.1:${d.adminPort}/metrics`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const scrape = await res.text();
    assert.match(scrape, /^mailwarden_listed\{zone="ip\.test",subject="198\.51\.100\.25"\} 1$/m);
    assert.match(scrape, /^mailwarden_dnsbl_lookups_total 1$/m);
    assert.match(scrape, /^mailwarden_dnsbl_late_total 0$/m);
  });
});
