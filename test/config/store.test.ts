/*
 * The cluster-mode keys of the config: `node` and the shared store
 * (`store.backend/url/prefix/timeout/sentinels/sentinel_master/cluster`), the
 * MAILWARDEN_STORE and MAILWARDEN_NODE variables, and their errors (with
 * file:line:col like every other key).
 */
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { describe, test } from 'node:test';
import { describeSettings, type Settings } from '../../src/config/compile.js';
import { ConfigError } from '../../src/config/errors.js';
import { loadSettingsFromText, storeOverridesFromEnv, type Overrides } from '../../src/config/load.js';

const yaml = (...lines: string[]): string => lines.join('\n') + '\n';
// The process environment must not leak into these tests: pass the store and node overrides explicitly.
const none: Overrides = { store: undefined, node: undefined };
const load = (text: string, o: Overrides = {}): Settings => loadSettingsFromText(text, 'mw.yaml', { ...none, ...o });
const problems = (text: string, o: Overrides = {}): string[] => {
  try {
    load(text, o);
  } catch (err) {
    if (err instanceof ConfigError) return err.message.split('\n');
    throw err;
  }
  return [];
};

void describe('config: node and the shared store', () => {
  void test('defaults: the embedded store; the node is named after the host', () => {
    const s = load('');
    assert.equal(s.redis, undefined);
    assert.equal(s.node, hostname());
    assert.deepEqual(s.store, { maxKeys: 2_000_000, snapshotMs: 60_000 });
    const d = describeSettings(s);
    assert.equal(d.node, hostname());
    assert.deepEqual(d.store, { max_keys: 2_000_000, snapshot_interval: '1m' });
  });

  void test('store.backend: redis with every key', () => {
    const s = load(
      yaml(
        'node: mx1.example.org',
        'store:',
        '  backend: redis',
        '  url: "redis://mw:s3cret@10.0.0.5:6380/2"',
        '  prefix: mail.example',
        '  timeout: 40ms',
      ),
    );
    assert.equal(s.node, 'mx1.example.org');
    assert.deepEqual(s.redis, {
      url: 'redis://mw:s3cret@10.0.0.5:6380/2',
      prefix: 'mail.example',
      timeoutMs: 40,
      sentinels: undefined,
      sentinelMaster: 'mymaster',
      cluster: undefined,
    });
    const d = describeSettings(s).store as Record<string, unknown>;
    assert.equal(d.url, 'redis://mw:(set)@10.0.0.5:6380/2', 'the password is never printed');
    assert.deepEqual([d.backend, d.prefix, d.timeout], ['redis', 'mail.example', '40ms']);
  });

  void test('defaults of the redis backend; sentinels and cluster nodes', () => {
    const plain = load(yaml('store:', '  backend: redis'));
    assert.deepEqual(
      [plain.redis?.url, plain.redis?.prefix, plain.redis?.timeoutMs],
      ['redis://127.0.0.1:6379/0', 'mailwarden', 50],
    );
    const sent = load(
      yaml(
        'store:',
        '  backend: redis',
        '  sentinels: [10.0.0.1:26379, "[2001:db8::2]:26379"]',
        '  sentinel_master: mail',
      ),
    );
    assert.deepEqual(sent.redis?.sentinels, [
      { host: '10.0.0.1', port: 26379 },
      { host: '2001:db8::2', port: 26379 },
    ]);
    assert.equal(sent.redis?.sentinelMaster, 'mail');
    assert.deepEqual((describeSettings(sent).store as Record<string, unknown>).sentinels, [
      '10.0.0.1:26379',
      '[2001:db8::2]:26379',
    ]);
    const cl = load(yaml('store:', '  backend: redis', '  cluster:', '    - 10.0.0.1:7000', '    - 10.0.0.2:7000'));
    assert.deepEqual(cl.redis?.cluster, [
      { host: '10.0.0.1', port: 7000 },
      { host: '10.0.0.2', port: 7000 },
    ]);
  });

  void test('MAILWARDEN_STORE: a URL turns the shared store on (one server); memory turns it off', () => {
    const env = storeOverridesFromEnv({ MAILWARDEN_STORE: 'redis://127.0.0.1:7777/1', MAILWARDEN_NODE: 'edge-2' });
    const s = load(yaml('store:', '  prefix: mw2', '  cluster: [10.0.0.1:7000]'), env);
    assert.deepEqual(
      [s.redis?.url, s.redis?.prefix, s.redis?.cluster, s.node],
      ['redis://127.0.0.1:7777/1', 'mw2', undefined, 'edge-2'],
    );
    const off = load(yaml('store:', '  backend: redis'), storeOverridesFromEnv({ MAILWARDEN_STORE: 'memory' }));
    assert.equal(off.redis, undefined);
    assert.deepEqual(storeOverridesFromEnv({ MAILWARDEN_STORE: '', MAILWARDEN_NODE: '' }), {
      store: undefined,
      node: undefined,
    });
  });

  void test('errors are reported at their place, with stable codes', () => {
    assert.deepEqual(
      problems(
        yaml(
          'node: "mx 1"',
          'store:',
          '  backend: valkey',
          '  url: http://x',
          '  prefix: "{mw}"',
          '  sentinels: [nohost]',
          '  timeout: 0',
        ),
      ),
      [
        'mw.yaml:1:7: node: node names are 1-64 characters of A-Z, a-z, 0-9, _ . - (e.g. mx1) [MW_CONFIG_INVALID]',
        'mw.yaml:3:12: store.backend: "valkey" is not one of "memory", "redis" [MW_CONFIG_INVALID]',
        'mw.yaml:4:8: store.url: not a Redis URL; write redis://host:6379/0 (rediss:// for TLS; redis://:password@host:6379/0 with a password) [MW_CONFIG_INVALID]',
        'mw.yaml:5:11: store.prefix: a prefix is 1-64 characters of A-Z, a-z, 0-9, _ . : - (no braces: mailwarden adds the hash tag) [MW_CONFIG_INVALID]',
        'mw.yaml:6:15: store.sentinels.0: write host:port, e.g. 10.0.0.5:6379 or [2001:db8::5]:6379 [MW_CONFIG_INVALID]',
        'mw.yaml:7:12: store.timeout: must be longer than 0 [MW_CONFIG_INVALID]',
      ],
    );
    assert.deepEqual(
      problems(yaml('store:', '  backend: redis', '  cluster: [10.0.0.1:7000]', '  sentinels: [10.0.0.2:26379]')),
      [
        'mw.yaml:3:12: store.sentinels and store.cluster exclude each other; name either the Sentinels of one master or the nodes of one Cluster [MW_CONFIG_INVALID]',
      ],
    );
    assert.deepEqual(
      problems('', storeOverridesFromEnv({ MAILWARDEN_STORE: 'redis:/nohost', MAILWARDEN_NODE: 'a b' })),
      [
        'MAILWARDEN_STORE: "redis:/nohost" is not a store; write memory, or a Redis URL such as redis://127.0.0.1:6379/0 [MW_CONFIG_ENV]',
        'MAILWARDEN_NODE: "a b" is not a node name; use 1-64 characters of A-Z, a-z, 0-9, _ . - [MW_CONFIG_ENV]',
      ],
    );
  });
});
