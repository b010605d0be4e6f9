/**
 * Egress sandboxes on a real host: identities with their network attached are kept ready once
 * egress is asked for and a create takes one; a destroyed sandbox's network is released in the
 * background (its proxy policy at once); GC never touches what the host keeps or is releasing;
 * an identity removed under the host is not handed out; close() leaves nothing.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig, sandboxHostConfigSchema, silentLogger } from '@hako/core';
import { buildSandboxHost } from '../../src/host-factory.js';
import { EGRESS_POOL_DEFAULT } from '../../src/sandbox-host.js';
import type { BuiltSandboxHost } from '../../src/host-factory.js';
import type { SandboxOptions } from '../../src/sandbox.js';
import { createTestHost, sh } from '../helpers/test-host.js';

const MiB = 1024 * 1024;
const th = createTestHost();
const config = parseConfig(sandboxHostConfigSchema, th.env);
const prefix = `hako-${th.hakoEnv}-`;
let built: BuiltSandboxHost | undefined;

after(async () => {
  await built?.close().catch(() => undefined);
  await th.teardown();
  assert.deepEqual(th.leftovers(), [], 'nothing of the test env is left');
});

function netnsOfEnv(): string[] {
  return existsSync('/run/netns')
    ? readdirSync('/run/netns')
        .filter((n) => n.startsWith(prefix))
        .sort()
    : [];
}

const egress: SandboxOptions = {
  image: 'host',
  limits: { memoryBytes: 256 * MiB, pids: 128, cpus: 1, diskBytes: 64 * MiB, tmpBytes: 16 * MiB },
  network: 'egress',
  allow: ['example.com:443'],
  env: {},
  labels: {},
  workspaceDir: undefined,
};

test('a host without an egress pool (hako sandbox run) keeps no identity ready', async () => {
  const b = await buildSandboxHost(config, silentLogger());
  try {
    await b.host.init();
    const sb = await b.host.prepare(egress, ['true']);
    assert.equal((await b.host.runPrepared(sb, { stdio: 'ignore' })).exitCode, 0);
    await b.host.settled();
    assert.deepEqual(netnsOfEnv(), [], 'its own netns was released and none was made ahead');
  } finally {
    await b.close();
  }
});

test('egress identities: kept ready, taken by creates, released in the background, never collected', async () => {
  built = await buildSandboxHost(config, silentLogger(), { egressPool: EGRESS_POOL_DEFAULT });
  const { host } = built;
  await host.init();
  assert.deepEqual(netnsOfEnv(), [], 'nothing is attached before egress is asked for');

  // the first egress sandbox attaches its own network; afterwards two identities are kept ready
  const first = await host.prepare(egress, ['true']);
  const r1 = await host.runPrepared(first, { stdio: 'ignore' });
  assert.equal(r1.exitCode, 0);
  await host.settled();
  const ready = netnsOfEnv();
  assert.equal(ready.length, 2, `two identities ready: ${ready.join(', ')}`);
  assert.ok(!ready.includes(first.name), "the destroyed sandbox's netns is released");
  for (const n of ready) assert.ok(existsSync(join(config.HAKO_RUN_DIR, th.hakoEnv, n, 'owner.json')));

  // GC (dry run or not) leaves what the host keeps ready alone
  const report = await host.gc({ dryRun: false });
  assert.deepEqual(report.removed, []);
  assert.deepEqual(netnsOfEnv(), ready);

  // a create takes a ready identity: its id, its address, its policy set now
  const sb = await host.prepare(egress, ['true']);
  assert.ok(ready.includes(sb.name), `${sb.name} is one of the ready identities`);
  assert.ok(sb.network?.ip, 'it has its address');
  const r2 = await host.runPrepared(sb, { stdio: 'ignore' });
  assert.equal(r2.exitCode, 0);
  // released in the background: the netns may still be there, but GC leaves it to the host
  const during = await host.gc({ dryRun: true });
  assert.ok(!during.removed.some((x) => x.name === sb.name), 'a release in progress is not collected');
  await host.settled();
  const after2 = netnsOfEnv();
  assert.ok(!after2.includes(sb.name), 'its network was released');
  assert.equal(after2.length, 2, 'and the pool refilled');

  // identities removed under the host (another process's GC) are not handed out: the create
  // attaches its own network, and what is left of them is released
  for (const gone of after2) sh('ip', ['netns', 'delete', gone]);
  const sb3 = await host.prepare(egress, ['true']);
  assert.ok(!after2.includes(sb3.name), 'a removed identity is not handed out');
  assert.equal((await host.runPrepared(sb3, { stdio: 'ignore' })).exitCode, 0);
  await host.settled();
  for (const gone of after2) {
    assert.ok(!existsSync(join(config.HAKO_RUN_DIR, th.hakoEnv, gone)), `the bundle of ${gone} went`);
  }
  assert.equal(netnsOfEnv().length, 2, 'the pool refilled with new identities');

  // close() releases the ready identities: nothing of the env's network is left
  await built.close();
  built = undefined;
  assert.deepEqual(netnsOfEnv(), []);
  const leases = join(config.HAKO_STATE_DIR, 'cni', 'ipam', `hako-${th.hakoEnv}`);
  const held = existsSync(leases) ? readdirSync(leases).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f)) : [];
  assert.deepEqual(held, [], 'no address stays leased');
});
