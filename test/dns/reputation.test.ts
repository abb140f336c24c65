/*
 * The watch on our own addresses and domains, against a real DNSBL server
 * (rbldnsd on loopback) and a real alert channel (mail to an smtp-server
 * sink, as the notifier tests do): one alert when a listing appears, with
 * the zone, the code and the TXT reason, none while it stays, one when it
 * clears; a domain in a DBL-style zone; a zone that refuses the query is no
 * listing, and neither is it a clearing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { SMTPServer } from 'smtp-server';
import { Notifier } from '../../src/actions/notify.js';
import { loadSettingsFromText } from '../../src/config/load.js';
import { Resolver } from '../../src/dns/resolver.js';
import { ReputationMonitor, reputationLines } from '../../src/dns/reputation.js';
import { freePort } from '../helpers/daemon.js';
import { captureLogger } from '../helpers/harness.js';
import { startRbldnsd, zoneHead, type Rbldnsd } from './rbldnsd.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(20);
  }
}

// TTL and negative TTL of one second: a delisting is seen by the next check a second later.
const IP_ZONE = `${zoneHead(1, 1)}:127.0.0.2:Listed for spam, see https://ip.test/$\n`;

void describe('reputation: our own addresses and domains on blocklists', () => {
  let bl: Rbldnsd;
  let smtp: SMTPServer;
  const mails: string[] = [];
  let monitor: ReputationMonitor;
  let resolver: Resolver;
  let notifier: Notifier;
  const logs: Array<Record<string, unknown>> = [];

  before(async () => {
    bl = await startRbldnsd(
      {
        ip: `${IP_ZONE}198.51.100.25\n`,
        dbl: `${zoneHead(1, 1)}:127.0.1.2:Domain $ is a spam domain\nbad.example\n`,
        refuse: `${zoneHead(1, 1)}:127.255.255.254:Query refused\n198.51.100.25\n`,
      },
      ['ip.test:ip4set:ip', 'dbl.test:dnset:dbl', 'refuse.test:ip4set:refuse'],
    );
    smtp = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      logger: false,
      onData(stream, _session, cb) {
        let data = '';
        stream.on('data', (c: Buffer) => (data += c.toString()));
        stream.on('end', () => {
          mails.push(data.replace(/=\r?\n/g, ''));
          cb();
        });
      },
    });
    const smtpPort = await freePort();
    await new Promise<void>((r) => smtp.listen(smtpPort, '127.0.0.1', r));
    const s = loadSettingsFromText(
      [
        'dns:',
        `  servers: [${bl.server}]`,
        'reputation:',
        '  addresses: [198.51.100.25, "2001:db8::25"]',
        '  domains: [example.org, Bad.Example]',
        '  zones:',
        '    - {zone: ip.test}',
        '    - {zone: dbl.test, type: domain, codes: [127.0.1.2-127.0.1.99]}',
        '    - {zone: refuse.test}',
        '  interval: 15m',
        'alerts:',
        `  email: {relay: "127.0.0.1:${smtpPort}", to: [postmaster@example.org]}`,
      ].join('\n'),
      'test.yaml',
    );
    const logger = captureLogger(logs);
    notifier = new Notifier(s.alerts, logger, 'mx1');
    resolver = new Resolver({ ...s.dns });
    monitor = new ReputationMonitor({
      settings: s.reputation,
      resolver,
      alert: (e, time) => notifier.notify(e, time, { bans: [], suspensions: [] }),
      logger,
      now: Date.now,
    });
  });
  after(async () => {
    monitor?.stop();
    resolver?.close();
    notifier?.close();
    await new Promise<void>((r) => (smtp ? smtp.close(r) : r()));
    await bl?.stop();
  });

  void test('a listing appearing alerts once, with the zone, the code and the reason; it is shown as listed', async () => {
    await monitor.checkNow();
    await waitFor(() => mails.length === 2);
    const address = mails.find((m) => m.includes('Subject: [mailwarden] reputation-listed: 198.51.100.25 in ip.test'));
    assert.ok(address, mails.join('\n----\n'));
    assert.match(
      address,
      /Reason: {2}198\.51\.100\.25 is listed in ip\.test \(127\.0\.0\.2: Listed for spam, see https:\/\/ip\.test\/198\.51\.100\.25\); mail from this address may be refused by other mail servers/,
    );
    assert.match(address, /zone: ip\.test/);
    const domain = mails.find((m) => m.includes('reputation-listed: bad.example in dbl.test'));
    assert.match(
      domain ?? '',
      /bad\.example is listed in dbl\.test \(127\.0\.1\.2: Domain bad\.example is a spam domain\)/,
    );

    const v = monitor.view();
    assert.equal(v.listed, 2);
    const state = (subject: string, zone: string): string | undefined =>
      v.checks.find((c) => c.subject === subject && c.zone === zone)?.state;
    assert.equal(state('198.51.100.25', 'ip.test'), 'listed');
    assert.equal(state('2001:db8::25', 'ip.test'), 'clear');
    assert.equal(state('example.org', 'dbl.test'), 'clear');
    assert.equal(state('bad.example', 'dbl.test'), 'listed');
    // Spamhaus's refusal code is no listing: the check stays unknown and says why.
    const refused = v.checks.find((c) => c.subject === '198.51.100.25' && c.zone === 'refuse.test');
    assert.equal(refused?.state, 'unknown');
    assert.match(
      refused?.problem ?? '',
      /^query refused \(127\.255\.255\.254: a query through a public or open resolver/,
    );
    const lines = reputationLines(v);
    assert.match(lines[1] ?? '', /^ {2}LISTED +198\.51\.100\.25 +ip\.test +127\.0\.0\.2 since \S+: Listed for spam/);
  });

  void test('a listing that stays does not alert again', async () => {
    await sleep(1100);
    await monitor.checkNow();
    await sleep(300);
    assert.equal(mails.length, 2);
  });

  void test('a listing that clears alerts once; the next checks are quiet', async () => {
    await bl.rewrite('ip', IP_ZONE);
    await sleep(1100); // the listing's TTL
    await monitor.checkNow();
    await waitFor(() => mails.length === 3);
    assert.match(mails[2] ?? '', /Subject: \[mailwarden\] reputation-cleared: 198\.51\.100\.25 in ip\.test/);
    assert.match(mails[2] ?? '', /Reason: {2}198\.51\.100\.25 is no longer listed in ip\.test/);
    await sleep(1100);
    await monitor.checkNow();
    await sleep(300);
    assert.equal(mails.length, 3);
    assert.equal(monitor.view().listed, 1);
    assert.ok(logs.some((l) => l.msg === '198.51.100.25 is no longer listed in ip.test'));
  });
});
