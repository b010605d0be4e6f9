import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SandboxRecordStore } from '../../src/sandbox-registry.js';
import type { SandboxRecord } from '../../src/sandbox-registry.js';

const record = (over: Partial<SandboxRecord> = {}): SandboxRecord => ({
  version: 1,
  id: 'abc123def456',
  ownerId: '',
  image: 'host',
  imageDigest: '',
  labels: {},
  limits: { cpus: 1, memoryBytes: 1, pids: 1, diskBytes: 1, tmpBytes: 1 },
  network: 'none',
  egressAllow: [],
  upstreams: [],
  env: {},
  ip: undefined,
  prefixLength: undefined,
  gateway: undefined,
  hostVeth: undefined,
  createdAtMs: 0,
  expiresAtMs: 0,
  idleTimeoutMs: 0,
  fromPool: true,
  poolProfile: 'p',
  ...over,
});

test('writes of one record land in call order, never racing on a shared temporary file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'hako-records-'));
  try {
    const store = new SandboxRecordStore(dir);
    await store.init();
    // the warm pool's write and a claim's write of the same sandbox, issued back to back
    const writes = Array.from({ length: 50 }, (_, i) => store.put(record({ ownerId: `owner-${i}` })));
    await Promise.all(writes);
    const onDisk = JSON.parse(await readFile(join(dir, 'abc123def456.json'), 'utf8')) as SandboxRecord;
    assert.equal(onDisk.ownerId, 'owner-49', 'the last call wins');
    assert.deepEqual(await readdir(dir), ['abc123def456.json'], 'no temporary file is left');
    await Promise.all([store.put(record({ ownerId: 'x' })), store.remove('abc123def456')]);
    assert.deepEqual(await readdir(dir), [], 'a remove after a put removes it');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('list() leaves a fresh temporary file (a write in flight) and removes a stale one', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'hako-records-'));
  try {
    const store = new SandboxRecordStore(dir);
    await store.init();
    await store.put(record());
    await writeFile(join(dir, '.fresh.1.1.tmp'), '{');
    await writeFile(join(dir, '.stale.1.2.tmp'), '{');
    const old = new Date(Date.now() - 120_000);
    await utimes(join(dir, '.stale.1.2.tmp'), old, old);
    const { records, broken } = await store.list();
    assert.deepEqual(
      records.map((r) => r.id),
      ['abc123def456'],
    );
    assert.deepEqual(broken, []);
    assert.deepEqual((await readdir(dir)).sort(), ['.fresh.1.1.tmp', 'abc123def456.json']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
