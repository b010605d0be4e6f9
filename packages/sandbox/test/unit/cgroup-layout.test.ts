import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '@hako/core';
import {
  crunUsable,
  detectCgroupLayout,
  limitValues,
  runtimeCgroupsPath,
  sandboxCgroupRel,
  v1MountFor,
  assertCgroupName,
} from '../../src/cgroup-layout.js';

// A Debian 11 / systemd hybrid host: v1 controllers, named systemd hierarchy, cgroup2 at unified.
const HYBRID = `
21 26 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 21 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
33 25 0:30 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,cpuset,clone_children
34 25 0:31 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,freezer
35 25 0:32 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,net_cls,net_prio
`;

// Pure v1 (no cgroup2 mount), one hierarchy with a release agent, and a duplicate bind mount of the
// memory hierarchy's sub-cgroup elsewhere (must be ignored in favour of the root mount).
const PURE_V1 = `
24 22 0:21 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 24 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
41 24 0:34 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
42 24 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
43 24 0:36 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
44 24 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
90 1 0:34 /docker/abc /var/lib/some\\040dir/memory rw,relatime - cgroup cgroup rw,memory
`;

// Pure v2: cgroup2 at /sys/fs/cgroup, no v1 hierarchy.
const PURE_V2 = `
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
26 22 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`;

function files(map: Record<string, string>): (path: string) => string {
  return (p) => {
    const v = map[p];
    if (v === undefined) throw Object.assign(new Error(`ENOENT: ${p}`), { code: 'ENOENT' });
    return v;
  };
}

test('hybrid layout: v1 mounts, named hierarchy, unified path and its controllers', async () => {
  const layout = await detectCgroupLayout(HYBRID, files({ '/sys/fs/cgroup/unified/cgroup.controllers': '' }));
  assert.equal(layout.mode, 'hybrid');
  assert.equal(layout.unifiedPath, '/sys/fs/cgroup/unified');
  assert.deepEqual(layout.unifiedControllers, []);
  assert.deepEqual(
    layout.v1Mounts.map((m) => [m.path, m.controllers.join(',')]),
    [
      ['/sys/fs/cgroup/systemd', 'name=systemd'],
      ['/sys/fs/cgroup/cpu,cpuacct', 'cpu,cpuacct'],
      ['/sys/fs/cgroup/memory', 'memory'],
      ['/sys/fs/cgroup/pids', 'pids'],
      ['/sys/fs/cgroup/cpuset', 'cpuset'],
      ['/sys/fs/cgroup/freezer', 'freezer'],
      ['/sys/fs/cgroup/net_cls,net_prio', 'net_cls,net_prio'],
    ],
  );
  assert.equal(v1MountFor(layout, 'cpuacct')?.path, '/sys/fs/cgroup/cpu,cpuacct');
  assert.equal(v1MountFor(layout, 'hugetlb'), undefined);
  assert.deepEqual(crunUsable(layout), { ok: true });
});

test('hybrid layout with hugetlb left on the unified hierarchy: crun is not usable, fix mounts it as v1', async () => {
  const layout = await detectCgroupLayout(
    HYBRID,
    files({ '/sys/fs/cgroup/unified/cgroup.controllers': 'hugetlb\n' }),
  );
  assert.deepEqual(layout.unifiedControllers, ['hugetlb']);
  const r = crunUsable(layout);
  assert.equal(r.ok, false);
  assert.match(r.reason ?? '', /hugetlb/);
  assert.match(r.reason ?? '', /drop all controllers from cgroupv2/);
  assert.match(
    r.fix ?? '',
    /mkdir -p \/sys\/fs\/cgroup\/hugetlb && mount -t cgroup -o hugetlb cgroup \/sys\/fs\/cgroup\/hugetlb/,
  );
});

test('fix lists every controller found on the unified hierarchy', async () => {
  const layout = await detectCgroupLayout(
    HYBRID,
    files({ '/sys/fs/cgroup/unified/cgroup.controllers': 'hugetlb misc' }),
  );
  const r = crunUsable(layout);
  assert.equal(r.ok, false);
  assert.match(r.fix ?? '', /-o hugetlb cgroup \/sys\/fs\/cgroup\/hugetlb/);
  assert.match(r.fix ?? '', /-o misc cgroup \/sys\/fs\/cgroup\/misc/);
});

test('pure v1: no unified hierarchy, options that are not controllers dropped, duplicate mounts folded', async () => {
  let reads = 0;
  const layout = await detectCgroupLayout(PURE_V1, () => {
    reads++;
    return '';
  });
  assert.equal(layout.mode, 'v1');
  assert.equal(layout.unifiedPath, undefined);
  assert.deepEqual(layout.unifiedControllers, []);
  assert.equal(reads, 0, 'no cgroup.controllers to read without a cgroup2 mount');
  const systemd = layout.v1Mounts.find((m) => m.path === '/sys/fs/cgroup/systemd');
  assert.deepEqual(systemd?.controllers, ['name=systemd']);
  const memory = layout.v1Mounts.filter((m) => m.controllers.includes('memory'));
  assert.deepEqual(memory, [{ controllers: ['memory'], path: '/sys/fs/cgroup/memory' }]);
  assert.equal(layout.v1Mounts.length, 5);
  assert.deepEqual(crunUsable(layout), { ok: true });
});

test('a v1 hierarchy mounted only from a sub-cgroup is kept, with its escaped path decoded', async () => {
  const only = PURE_V1.split('\n')
    .filter((l) => l.startsWith('90 '))
    .join('\n');
  const layout = await detectCgroupLayout(only, () => '');
  assert.deepEqual(layout.v1Mounts, [{ controllers: ['memory'], path: '/var/lib/some dir/memory' }]);
});

test('pure v2: controllers read from the cgroup2 root', async () => {
  const layout = await detectCgroupLayout(
    PURE_V2,
    files({ '/sys/fs/cgroup/cgroup.controllers': 'cpuset cpu io memory hugetlb pids rdma misc\n' }),
  );
  assert.equal(layout.mode, 'v2');
  assert.equal(layout.unifiedPath, '/sys/fs/cgroup');
  assert.deepEqual(layout.v1Mounts, []);
  assert.deepEqual(layout.unifiedControllers, [
    'cpuset',
    'cpu',
    'io',
    'memory',
    'hugetlb',
    'pids',
    'rdma',
    'misc',
  ]);
  assert.deepEqual(crunUsable(layout), { ok: true });
});

test('v2 with only a named v1 hierarchy (old systemd in a container) is still v2', async () => {
  const text = `${PURE_V2}\n50 26 0:40 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n`;
  const layout = await detectCgroupLayout(
    text,
    files({ '/sys/fs/cgroup/cgroup.controllers': 'memory pids cpu' }),
  );
  assert.equal(layout.mode, 'v2');
  assert.deepEqual(layout.v1Mounts, [{ controllers: ['name=systemd'], path: '/sys/fs/cgroup/systemd' }]);
});

test('no cgroup filesystem at all fails with HOST_PREREQUISITE_MISSING', async () => {
  await assert.rejects(
    detectCgroupLayout('22 1 0:21 / /sys rw - sysfs sysfs rw\n', () => ''),
    (e: unknown) => e instanceof AppError && e.code === 'HOST_PREREQUISITE_MISSING',
  );
});

test('an unreadable cgroup.controllers fails loudly, a missing one reads as no controllers', async () => {
  await assert.rejects(
    detectCgroupLayout(PURE_V2, () => {
      throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
    }),
    (e: unknown) => e instanceof AppError && e.code === 'CGROUP_FAILED' && /EACCES/.test(e.message),
  );
  const layout = await detectCgroupLayout(PURE_V2, files({}));
  assert.deepEqual(layout.unifiedControllers, []);
});

test('sandbox cgroup names: parent hako/{env}/{name}, runtime child /hako/{env}/{name}/ctr', () => {
  assert.equal(sandboxCgroupRel('dev', 'hako-dev-abc123def456'), 'hako/dev/hako-dev-abc123def456');
  assert.equal(runtimeCgroupsPath('dev', 'hako-dev-abc123def456'), '/hako/dev/hako-dev-abc123def456/ctr');
  for (const bad of ['..', '.', 'a/b', '', '-x', 'x'.repeat(129)]) {
    assert.throws(
      () => assertCgroupName(bad),
      (e: unknown) => e instanceof AppError && e.code === 'INVALID_ARGUMENT',
    );
  }
});

test('limit values: cpus to a CFS quota, bad limits rejected', () => {
  assert.deepEqual(limitValues({ memoryBytes: 64 * 1024 * 1024, pids: 16, cpus: 0.5 }), {
    memoryBytes: 67108864,
    pids: 16,
    cpuQuotaUs: 50000,
  });
  assert.equal(limitValues({ memoryBytes: 1, pids: 1, cpus: 2 }).cpuQuotaUs, 200000);
  for (const bad of [
    { memoryBytes: 0, pids: 1, cpus: 1 },
    { memoryBytes: 1.5, pids: 1, cpus: 1 },
    { memoryBytes: 1, pids: 0, cpus: 1 },
    { memoryBytes: 1, pids: 1, cpus: 0 },
    { memoryBytes: 1, pids: 1, cpus: 0.001 },
    { memoryBytes: 1, pids: 1, cpus: Number.NaN },
  ]) {
    assert.throws(
      () => limitValues(bad),
      (e: unknown) => e instanceof AppError && e.code === 'INVALID_ARGUMENT',
    );
  }
});
