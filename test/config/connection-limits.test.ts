import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { describeSettings } from '../../src/config/compile.js';
import { ConfigError } from '../../src/config/errors.js';
import { loadSettingsFromText } from '../../src/config/load.js';

describe('connection cap settings', () => {
  test('defaults: the per-peer cap is half the listener cap; check-config shows them', () => {
    const s = loadSettingsFromText('postfix:\n  max_connections: 100\n', 't.yaml');
    assert.deepEqual(s.postfix.limits, { maxConnections: 100, maxConnectionsPerPeer: 50 });
    const shown = describeSettings(s) as { postfix: Record<string, unknown>; dovecot: Record<string, unknown> };
    assert.equal(shown.postfix.max_connections_per_peer, 50);
    assert.equal(shown.dovecot.request_timeout, '10s');
    assert.equal(shown.dovecot.max_body, 65_536);
  });

  test('a per-peer cap over the listener cap, or a headers timeout over the request timeout, is refused where it is', () => {
    assert.throws(
      () => loadSettingsFromText('postfix:\n  max_connections: 10\n  max_connections_per_peer: 20\n', 't.yaml'),
      (e: unknown) =>
        e instanceof ConfigError && /t\.yaml:3:\d+.*max_connections_per_peer \(20\) must not exceed/.test(e.message),
    );
    assert.throws(
      () => loadSettingsFromText('dovecot:\n  headers_timeout: 20s\n', 't.yaml'),
      (e: unknown) => e instanceof ConfigError && /headers_timeout \(20s\) must not exceed.*\(10s\)/.test(e.message),
    );
    assert.throws(() => loadSettingsFromText('dovecot:\n  max_body: 10\n', 't.yaml'), ConfigError);
  });
});
