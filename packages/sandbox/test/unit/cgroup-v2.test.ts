// The v2 manager against a temp dir laid out like cgroupfs: the test plays the kernel by creating
// the interface files a real cgroup would have, then asserts exactly which files the manager
// writes and with what values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { AppError, silentLogger } from '@hako/core';
import { CgroupV2Manager } from '../../src/cgroup-v2.js';
import { createCgroupManager } from '../../src/cgroup-factory.js';
import { CgroupV1Manager } from '../../src/cgroup-v1.js';

const MiB = 1024 * 1024;
const LIMITS = { memoryBytes: 64 * MiB, pids: 16, cpus: 0.5 };

function randomEnv(): string {
  return `t${Math.random().toString(36).slice(2, 8).padEnd(6, '0')}`;
}

/** Interface files the kernel creates in a new cgroup whose parent enables `controllers`. */
function kernelFiles(
  controllers: readonly string[],
  opts: { swap?: boolean; peak?: boolean } = {},
): Record<string, string> {
  const f: Record<string, string> = {
    'cgroup.controllers': controllers.join(' '),
    'cgroup.subtree_control': '',
    'cgroup.procs': '',
    'cgroup.events': 'populated 0\nfrozen 0\n',
    'cgroup.freeze': '0',
  };
  if (controllers.includes('memory')) {
    f['memory.max'] = 'max';
    f['memory.current'] = '0';
    f['memory.events'] = 'low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n';
    if (opts.swap !== false) f['memory.swap.max'] = 'max';
    if (opts.peak !== false) f['memory.peak'] = '0';
  }
  if (controllers.includes('pids')) {
    f['pids.max'] = 'max';
    f['pids.current'] = '0';
    f['pids.events'] = 'max 0\n';
  }
  if (controllers.includes('cpu')) f['cpu.max'] = 'max 100000';
  f['cpu.stat'] = 'usage_usec 0\nuser_usec 0\nsystem_usec 0\n';
  return f;
}

async function makeCgroup(dir: string, files: Record<string, string>): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), content);
}

/** Every regular file under `dir` with its content, by relative path. */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.set(relative(dir, p), await readFile(p, 'utf8'));
    }
  };
  await walk(dir);
  return out;
}

function changed(before: Map<string, string>, after: Map<string, string>): Record<string, string> {
  const diff: Record<string, string> = {};
  for (const [k, v] of after) if (before.get(k) !== v) diff[k] = v;
  for (const k of before.keys()) if (!after.has(k)) diff[k] = '<deleted>';
  return diff;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

interface Fixture {
  root: string;
  env: string;
  name: string;
  mgr: CgroupV2Manager;
  parent: string;
}

/** A root with all controllers and, as the kernel would show them, the levels hako will create. */
async function fixture(
  opts: { swap?: boolean; peak?: boolean; rootEnabled?: string } = {},
): Promise<Fixture> {
  const root = await mkdtemp(join(tmpdir(), 'hako-cg2-'));
  const env = randomEnv();
  const name = `hako-${env}-abcdef123456`;
  await makeCgroup(root, {
    'cgroup.controllers': 'cpuset cpu io memory hugetlb pids rdma misc\n',
    'cgroup.subtree_control': opts.rootEnabled ?? '',
  });
  const enabled = ['cpu', 'memory', 'pids'];
  await makeCgroup(join(root, 'hako'), kernelFiles(enabled));
  await makeCgroup(join(root, 'hako', env), kernelFiles(enabled));
  await makeCgroup(join(root, 'hako', env, name), kernelFiles(enabled, opts));
  const mgr = new CgroupV2Manager({
    env,
    root,
    logger: silentLogger(),
    removeTimeoutMs: 100,
    freezeTimeoutMs: 200,
  });
  return { root, env, name, mgr, parent: join(root, 'hako', env, name) };
}

test('create writes exactly the controller enables and the limits', async () => {
  const f = await fixture();
  try {
    const before = await snapshot(f.root);
    const r = await f.mgr.create(f.name, LIMITS);
    // v2 runtimes manage the child themselves: nothing to join
    assert.deepEqual(r, { cgroupsPath: `/hako/${f.env}/${f.name}/ctr`, procsFiles: [], notJoined: [] });
    const p = `hako/${f.env}/${f.name}`;
    assert.deepEqual(changed(before, await snapshot(f.root)), {
      'cgroup.subtree_control': '+memory +pids +cpu',
      'hako/cgroup.subtree_control': '+memory +pids +cpu',
      [`hako/${f.env}/cgroup.subtree_control`]: '+memory +pids +cpu',
      [`${p}/cgroup.subtree_control`]: '+memory +pids +cpu',
      [`${p}/memory.max`]: '67108864',
      [`${p}/memory.swap.max`]: '0',
      [`${p}/pids.max`]: '16',
      [`${p}/cpu.max`]: '50000 100000',
    });
    assert.equal(await exists(join(f.parent, 'ctr')), false, 'the runtime creates ctr, not the manager');
  } finally {
    await rm(f.root, { recursive: true, force: true });
  }
});

test('create enables only what is missing and only controllers the level has', async () => {
  const f = await fixture({ rootEnabled: 'cpu memory pids io\n' });
  try {
    await writeFile(join(f.root, 'hako', 'cgroup.subtree_control'), 'memory');
    const before = await snapshot(f.root);
    await f.mgr.create(f.name, { memoryBytes: 512 * MiB, pids: 256, cpus: 2 });
    const diff = changed(before, await snapshot(f.root));
    assert.equal(diff['cgroup.subtree_control'], undefined, 'root already had them: not written');
    assert.equal(diff['hako/cgroup.subtree_control'], '+pids +cpu');
    assert.equal(diff[`hako/${f.env}/${f.name}/memory.max`], String(512 * MiB));
    assert.equal(diff[`hako/${f.env}/${f.name}/pids.max`], '256');
    assert.equal(diff[`hako/${f.env}/${f.name}/cpu.max`], '200000 100000');
  } finally {
    await rm(f.root, { recursive: true, force: true });
  }
});

test('without swap accounting memory.swap.max is not created', async () => {
  const f = await fixture({ swap: false });
  try {
    await f.mgr.create(f.name, LIMITS);
    assert.equal(await exists(join(f.parent, 'memory.swap.max')), false);
    assert.equal(await readFile(join(f.parent, 'memory.max'), 'utf8'), '67108864');
  } finally {
    await rm(f.root, { recursive: true, force: true });
  }
});

test('create refuses a root that lacks a needed controller and creates nothing', async () => {
  const root = await mkdtemp(join(tmpdir(), 'hako-cg2-'));
  try {
    await makeCgroup(root, { 'cgroup.controllers': 'cpu memory io', 'cgroup.subtree_control': '' });
    const mgr = new CgroupV2Manager({ env: randomEnv(), root, logger: silentLogger() });
    await assert.rejects(
      mgr.create('hako-x-abcdef123456', LIMITS),
      (e: unknown) =>
        e instanceof AppError && e.code === 'HOST_PREREQUISITE_MISSING' && /pids/.test(e.message),
    );
    assert.deepEqual((await readdir(root)).sort(), ['cgroup.controllers', 'cgroup.subtree_control']);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('create fails when the controllers do not reach the sandbox cgroup, and rolls the sandbox dir back', async () => {
  const root = await mkdtemp(join(tmpdir(), 'hako-cg2-'));
  try {
    // The root offers the controllers, but the new levels show none (as if enabling had no effect).
    await makeCgroup(root, { 'cgroup.controllers': 'cpu memory pids', 'cgroup.subtree_control': '' });
    const env = randomEnv();
    const mgr = new CgroupV2Manager({ env, root, logger: silentLogger() });
    await assert.rejects(
      mgr.create(`hako-${env}-abcdef123456`, LIMITS),
      (e: unknown) => e instanceof AppError && e.code === 'CGROUP_FAILED' && /did not reach/.test(e.message),
    );
    assert.deepEqual(await mgr.list(), []);
    assert.equal(await mgr.removeEnvRoot(), true);
    assert.equal(await exists(join(root, 'hako', env)), false);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('invalid names and limits are rejected before touching the filesystem', async () => {
  const f = await fixture();
  try {
    const before = await snapshot(f.root);
    await assert.rejects(
      f.mgr.create('../../etc', LIMITS),
      (e: unknown) => (e as AppError).code === 'INVALID_ARGUMENT',
    );
    await assert.rejects(
      f.mgr.create(f.name, { ...LIMITS, pids: 0 }),
      (e: unknown) => (e as AppError).code === 'INVALID_ARGUMENT',
    );
    assert.deepEqual(changed(before, await snapshot(f.root)), {});
    assert.throws(() => new CgroupV2Manager({ env: 'Bad/Env', logger: silentLogger() }));
  } finally {
    await rm(f.root, { recursive: true, force: true });
  }
});

test('stats reads the parent counters', async () => {
  const f = await fixture();
  try {
    await f.mgr.create(f.name, LIMITS);
    await writeFile(join(f.parent, 'memory.current'), '1234\n');
    await writeFile(join(f.parent, 'memory.peak'), '5678\n');
    await writeFile(
      join(f.parent, 'memory.events'),
      'low 0\nhigh 0\nmax 9\noom 3\noom_kill 2\noom_group_kill 0\n',
    );
    await writeFile(join(f.parent, 'pids.current'), '3\n');
    await writeFile(join(f.parent, 'pids.events'), 'max 7\n');
    await writeFile(join(f.parent, 'pids.events.local'), 'max 0\n');
    await writeFile(join(f.parent, 'cpu.stat'), 'usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n');
    assert.deepEqual(await f.mgr.stats(f.name), {
      memoryCurrentBytes: 1234,
      memoryPeakBytes: 5678,
      memoryLimitBytes: 64 * MiB,
      oomKills: 2,
      pidsCurrent: 3,
      pidsLimit: 16,
      pidsLimitHits: 7,
      cpuUsageNs: 1_500_000,
    });
  } finally {
    await rm(f.root, { recursive: true, force: true });
  }
});

test('stats on older kernels: no memory.peak, pids.events counted per cgroup (summed over the subtree)', async () => {
  const f = await fixture({ peak: false });
  try {
    await f.mgr.create(f.name, LIMITS);
    await writeFile(join(f.parent, 'memory.current'), '4096');
    await writeFile(join(f.parent, 'pids.events'), 'max 1\n');
    await makeCgroup(join(f.parent, 'ctr'), { 'pids.events': 'max 4\n' });
    const s = await f.mgr.stats(f.name);
    assert.equal(s.memoryPeakBytes, 4096);
    assert.equal(s.pidsLimitHits, 5);
  } finally {
    await rm(f.root, { recursive: true, force: true });
  }
});

test('stats of an unknown sandbox is SANDBOX_NOT_FOUND', async () => {
  const f = await fixture();
  try {
    await assert.rejects(
      f.mgr.stats('hako-x-nothere0000'),
      (e: unknown) => (e as AppError).code === 'SANDBOX_NOT_FOUND',
    );
  } finally {
    await rm(f.root, { recursive: true, force: true });
  }
});

test('setFrozen writes cgroup.freeze and waits for cgroup.events to report it', async () => {
  const f = await fixture();
  try {
    await f.mgr.create(f.name, LIMITS);
    const events = join(f.parent, 'cgroup.events');
    // The "kernel" reports the freeze a little later.
    const timer = setTimeout(() => void writeFile(events, 'populated 1\nfrozen 1\n'), 40);
    const t0 = Date.now();
    await f.mgr.setFrozen(f.name, true);
    clearTimeout(timer);
    assert.ok(Date.now() - t0 >= 30, 'returned only after cgroup.events said frozen 1');
    assert.equal(await readFile(join(f.parent, 'cgroup.freeze'), 'utf8'), '1');

    // Never reported as thawed: times out with CGROUP_FAILED.
    await assert.rejects(
      f.mgr.setFrozen(f.name, false),
      (e: unknown) => (e as AppError).code === 'CGROUP_FAILED',
    );
    assert.equal(await readFile(join(f.parent, 'cgroup.freeze'), 'utf8'), '0');
  } finally {
    await rm(f.root, { recursive: true, force: true });
  }
});

test('remove is a no-op for a missing cgroup and removes an empty tree children first', async () => {
  const root = await mkdtemp(join(tmpdir(), 'hako-cg2-'));
  try {
    const env = randomEnv();
    const name = `hako-${env}-abcdef123456`;
    const mgr = new CgroupV2Manager({ env, root, logger: silentLogger() });
    await mgr.remove(name);
    // Plain empty directories stand in for cgroups that hold no process.
    await mkdir(join(root, 'hako', env, name, 'ctr', 'sub'), { recursive: true });
    await mkdir(join(root, 'hako', env, 'hako-other-000000000000'), { recursive: true });
    assert.deepEqual(await mgr.list(), ['hako-other-000000000000', name].sort());
    await mgr.remove(name);
    assert.equal(await exists(join(root, 'hako', env, name)), false);
    assert.deepEqual(await mgr.list(), ['hako-other-000000000000']);
    assert.equal(await mgr.removeEnvRoot(), false, 'not empty: left in place');
    await mgr.remove('hako-other-000000000000');
    assert.equal(await mgr.removeEnvRoot(), true);
    assert.equal(await exists(join(root, 'hako', env)), false);
    assert.equal(await exists(join(root, 'hako')), true, 'the shared hako level stays');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('remove uses cgroup.kill when present and reports what it could not remove', async () => {
  const f = await fixture();
  try {
    await f.mgr.create(f.name, LIMITS);
    await writeFile(join(f.parent, 'cgroup.kill'), '');
    // A temp dir with files in it cannot be rmdir'ed: the error must name it, not be swallowed.
    await assert.rejects(
      f.mgr.remove(f.name),
      (e: unknown) => e instanceof AppError && e.code === 'CGROUP_FAILED' && e.message.includes(f.parent),
    );
    assert.equal(await readFile(join(f.parent, 'cgroup.kill'), 'utf8'), '1');
  } finally {
    await rm(f.root, { recursive: true, force: true });
  }
});

test('remove without cgroup.kill thaws, then SIGKILLs every pid of the tree', async () => {
  const f = await fixture();
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  try {
    await once(child, 'spawn');
    await f.mgr.create(f.name, LIMITS);
    await writeFile(join(f.parent, 'cgroup.freeze'), '1');
    await makeCgroup(join(f.parent, 'ctr'), { 'cgroup.procs': `${child.pid}\n` });
    const exited = once(child, 'exit');
    await assert.rejects(f.mgr.remove(f.name), (e: unknown) => (e as AppError).code === 'CGROUP_FAILED');
    const [code, signal] = (await exited) as [number | null, NodeJS.Signals | null];
    assert.equal(code, null);
    assert.equal(signal, 'SIGKILL');
    assert.equal(await readFile(join(f.parent, 'cgroup.freeze'), 'utf8'), '0', 'thawed before killing');
  } finally {
    child.kill('SIGKILL');
    await rm(f.root, { recursive: true, force: true });
  }
});

test('factory: v2 layout gets the v2 manager at the unified path; v1 and hybrid get the v1 manager', () => {
  const logger = silentLogger();
  const v2 = createCgroupManager(
    { mode: 'v2', v1Mounts: [], unifiedPath: '/x/cg', unifiedControllers: ['memory'] },
    { env: 'dev', logger },
  );
  assert.ok(v2 instanceof CgroupV2Manager);
  assert.equal(v2.version, 2);
  for (const mode of ['v1', 'hybrid'] as const) {
    const m = createCgroupManager(
      {
        mode,
        v1Mounts: [{ controllers: ['memory'], path: '/sys/fs/cgroup/memory' }],
        unifiedControllers: [],
      },
      { env: 'dev', logger },
    );
    assert.ok(m instanceof CgroupV1Manager);
    assert.equal(m.version, 1);
  }
});
