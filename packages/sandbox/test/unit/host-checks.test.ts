import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CgroupLayout } from '../../src/cgroup-layout.js';
import {
  evaluateHostChecks,
  favorDynmodsCheck,
  firstLine,
  parseSeccompStatus,
  parseVersion,
} from '../../src/host-checks.js';
import type { CommandResult, HostCheck, HostFacts } from '../../src/host-checks.js';
import { parseMountInfo } from '../../src/mount-info.js';

const OPTS = { stateDir: '/var/lib/hako', pluginDirs: ['/usr/lib/cni', '/opt/cni/bin'] };

const ok = (output: string): CommandResult => ({ ok: true, output });
const notFound: CommandResult = { ok: false, error: 'spawn x ENOENT', notFound: true };

const V2: CgroupLayout = {
  mode: 'v2',
  v1Mounts: [],
  unifiedPath: '/sys/fs/cgroup',
  unifiedControllers: ['cpu', 'memory', 'pids', 'io'],
};
const V1_CONTROLLERS = ['cpu', 'cpuacct', 'cpuset', 'memory', 'devices', 'freezer', 'blkio', 'pids'];
function hybrid(unifiedControllers: string[], v1 = V1_CONTROLLERS): CgroupLayout {
  return {
    mode: 'hybrid',
    v1Mounts: [
      ...v1.map((c) => ({ controllers: [c], path: `/sys/fs/cgroup/${c}` })),
      { controllers: ['name=systemd'], path: '/sys/fs/cgroup/systemd' },
    ],
    unifiedPath: '/sys/fs/cgroup/unified',
    unifiedControllers,
  };
}

const PRJ_MOUNT = parseMountInfo(
  '99 27 7:0 / /var/lib/hako/data rw,nosuid,nodev,relatime - xfs /dev/loop0 rw,attr2,inode64,logbufs=8,logbsize=32k,prjquota\n',
)[0];

/** A healthy cgroup v2 host with XFS quotas and the volume mounted. */
function healthy(over: Partial<HostFacts> = {}): HostFacts {
  return {
    uid: 0,
    runtimes: {
      crun: ok(
        'crun version 1.8.1\ncommit: f8a096be060b22ccd3d5f3ebe44108517fbf6c30\nspec: 1.0.0\n+SYSTEMD +SELINUX',
      ),
      runc: ok('runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8'),
      runsc: notFound,
    },
    cgroupLayout: V2,
    cniPlugins: {
      bridge: '/usr/lib/cni/bridge',
      'host-local': '/usr/lib/cni/host-local',
      loopback: '/usr/lib/cni/loopback',
    },
    nftVersion: ok('nftables v1.0.6 (Lester Gooch #5)\n'),
    nftListTables: ok('table inet filter\n'),
    ipVersion: ok('ip utility, iproute2-6.1.0, libbpf 1.1.0\n'),
    tools: { 'mkfs.xfs': true, xfs_quota: true, 'mkfs.ext4': true, mount: true, losetup: true, rsync: true },
    loopControl: true,
    xfsQuota: { supported: true, detail: 'XFS quota support is loaded' },
    quotaMount: PRJ_MOUNT,
    cgroup2Mount: undefined,
    namespaces: { pid: true, net: true, mnt: true, ipc: true, uts: true, cgroup: true, user: true },
    procStatus:
      'Name:\tnode\nSeccomp:\t0\nSeccomp_filters:\t0\nSpeculation_Store_Bypass:\tthread vulnerable\n',
    ...over,
  };
}

function byName(checks: HostCheck[], name: string): HostCheck {
  const c = checks.find((x) => x.name === name);
  assert.ok(c, `no check named ${name}: ${checks.map((x) => x.name).join(', ')}`);
  return c;
}

function failingRequired(checks: HostCheck[]): string[] {
  return checks.filter((c) => c.required && !c.ok).map((c) => c.name);
}

test('version lines of the tools hako runs parse to their version numbers', () => {
  assert.equal(parseVersion('crun version 1.8.1\ncommit: abc'), '1.8.1');
  assert.equal(parseVersion('runc version 1.1.5+ds1\ncommit: 1.1.5'), '1.1.5');
  assert.equal(parseVersion('runsc version release-20231009.0\nspec: 1.1.0-rc.1'), '20231009.0');
  assert.equal(parseVersion('nftables v1.0.6 (Lester Gooch #5)'), '1.0.6');
  assert.equal(parseVersion('ip utility, iproute2-6.1.0, libbpf 1.1.0'), '6.1.0');
  assert.equal(parseVersion('something odd'), 'something odd');
  assert.equal(firstLine('\n\n  first  \nsecond'), 'first');
});

test('seccomp support is read from the Seccomp lines of /proc/self/status', () => {
  assert.deepEqual(parseSeccompStatus('Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t3\n'), {
    supported: true,
    filters: true,
    mode: 2,
  });
  assert.deepEqual(parseSeccompStatus('Seccomp:\t0\n'), { supported: true, filters: false, mode: 0 });
  assert.equal(parseSeccompStatus('Name:\tx\nState:\tR\n').supported, false);
});

test('a healthy cgroup v2 host passes every required check', () => {
  const checks = evaluateHostChecks(healthy(), OPTS);
  assert.deepEqual(failingRequired(checks), []);
  assert.equal(byName(checks, 'runtime crun').ok, true);
  assert.match(byName(checks, 'runtime crun').detail, /crun 1\.8\.1/);
  assert.match(byName(checks, 'oci runtime').detail, /auto picks crun/);
  assert.equal(byName(checks, 'cgroup freezer').ok, true);
  assert.match(byName(checks, 'quota volume').detail, /prjquota/);
  assert.equal(byName(checks, 'quota engine').detail.startsWith('XFS project quotas'), true);
  // runsc is optional: absent, with a fix, but not required
  const runsc = byName(checks, 'runtime runsc');
  assert.equal(runsc.ok, false);
  assert.equal(runsc.required, false);
  assert.match(runsc.fix ?? '', /gvisor/i);
});

test('crun on a hybrid layout with unified controllers is unusable; runc carries the runtime requirement', () => {
  const checks = evaluateHostChecks(healthy({ cgroupLayout: hybrid(['hugetlb']) }), OPTS);
  const crun = byName(checks, 'runtime crun');
  assert.equal(crun.ok, false);
  assert.match(crun.detail, /hybrid/);
  assert.match(crun.fix ?? '', /mount -t cgroup -o hugetlb cgroup \/sys\/fs\/cgroup\/hugetlb/);
  assert.equal(byName(checks, 'runtime runc').ok, true);
  assert.match(byName(checks, 'oci runtime').detail, /auto picks runc/);
  assert.deepEqual(failingRequired(checks), []);
  assert.match(
    byName(checks, 'cgroup layout').detail,
    /^hybrid: .*cgroup2 at \/sys\/fs\/cgroup\/unified \(controllers hugetlb\)/,
  );
  // a hybrid layout with an empty unified hierarchy suits crun
  assert.equal(
    byName(evaluateHostChecks(healthy({ cgroupLayout: hybrid([]) }), OPTS), 'runtime crun').ok,
    true,
  );
});

test('no usable runtime fails the required runtime check with the install command', () => {
  const checks = evaluateHostChecks(
    healthy({ runtimes: { crun: notFound, runc: notFound, runsc: notFound } }),
    OPTS,
  );
  assert.deepEqual(failingRequired(checks), ['oci runtime']);
  assert.equal(byName(checks, 'runtime crun').detail, 'not installed');
  assert.match(
    byName(checks, 'runtime crun').fix ?? '',
    /^apt-get install -y --no-install-recommends crun\b/,
  );
  assert.match(byName(checks, 'oci runtime').fix ?? '', /apt-get install -y --no-install-recommends runc/);
  const broken = evaluateHostChecks(
    healthy({
      runtimes: {
        crun: { ok: false, error: 'permission denied', notFound: false },
        runc: notFound,
        runsc: notFound,
      },
    }),
    OPTS,
  );
  assert.match(byName(broken, 'runtime crun').detail, /`crun --version` failed: permission denied/);
});

test('missing CNI plugins, controllers and tools each name their fix', () => {
  const checks = evaluateHostChecks(
    healthy({
      cgroupLayout: hybrid(
        [],
        V1_CONTROLLERS.filter((c) => c !== 'freezer' && c !== 'pids'),
      ),
      cniPlugins: { bridge: '/usr/lib/cni/bridge', 'host-local': undefined, loopback: undefined },
      nftVersion: notFound,
      nftListTables: notFound,
      ipVersion: notFound,
      tools: {
        'mkfs.xfs': false,
        xfs_quota: true,
        'mkfs.ext4': true,
        mount: true,
        losetup: true,
        rsync: false,
      },
      loopControl: false,
    }),
    OPTS,
  );
  assert.deepEqual(failingRequired(checks).sort(), [
    'cgroup freezer',
    'cgroup pids',
    'cni host-local',
    'cni loopback',
    'iproute2',
    'loop devices',
    'nftables',
    'rsync',
    'xfsprogs',
  ]);
  assert.match(byName(checks, 'cni loopback').detail, /\/usr\/lib\/cni:\/opt\/cni\/bin/);
  assert.match(byName(checks, 'cni loopback').fix ?? '', /containernetworking-plugins/);
  assert.equal(
    byName(checks, 'cgroup freezer').fix,
    'mkdir -p /sys/fs/cgroup/freezer && mount -t cgroup -o freezer cgroup /sys/fs/cgroup/freezer',
  );
  assert.match(byName(checks, 'nftables').fix ?? '', /install -y --no-install-recommends nftables/);
  assert.match(byName(checks, 'iproute2').fix ?? '', /iproute2/);
  assert.match(byName(checks, 'rsync').fix ?? '', /rsync/);
  assert.match(byName(checks, 'xfsprogs').detail, /mkfs\.xfs/);
  assert.equal(byName(checks, 'loop devices').fix, 'modprobe loop');
  for (const c of checks) if (!c.ok) assert.ok(c.fix, `failing check ${c.name} must carry a fix`);
});

test('nft that cannot list tables fails with a fix', () => {
  const asRoot = evaluateHostChecks(
    healthy({ nftListTables: { ok: false, error: 'Operation not permitted', notFound: false } }),
    OPTS,
  );
  assert.equal(byName(asRoot, 'nftables').ok, false);
  assert.match(byName(asRoot, 'nftables').detail, /nftables v1\.0\.6.*Operation not permitted/);
  assert.equal(byName(asRoot, 'nftables').fix, 'load nf_tables: modprobe nf_tables');
  const notRoot = evaluateHostChecks(
    healthy({ uid: 1000, nftListTables: { ok: false, error: 'Operation not permitted', notFound: false } }),
    OPTS,
  );
  assert.equal(byName(notRoot, 'nftables').fix, 'run as root');
  assert.equal(byName(notRoot, 'root').ok, false);
  assert.match(byName(notRoot, 'root').detail, /uid 1000/);
});

test('cgroup v2 without a controller and an undetectable layout fail', () => {
  const v2 = evaluateHostChecks(
    healthy({ cgroupLayout: { ...V2, unifiedControllers: ['cpu', 'memory'] } }),
    OPTS,
  );
  assert.deepEqual(failingRequired(v2), ['cgroup pids']);
  const none = evaluateHostChecks(
    healthy({ cgroupLayout: { error: 'no cgroup filesystem is mounted' } }),
    OPTS,
  );
  assert.equal(byName(none, 'cgroup layout').ok, false);
  assert.match(byName(none, 'cgroup layout').fix ?? '', /mount -t cgroup2/);
  assert.match(byName(none, 'runtime runc').detail, /cgroup layout unknown/);
  assert.ok(failingRequired(none).includes('oci runtime'));
});

test('the quota volume: optional before first use, wrong when mounted without prjquota', () => {
  const absent = evaluateHostChecks(healthy({ quotaMount: undefined }), OPTS);
  const vol = byName(absent, 'quota volume');
  assert.equal(vol.ok, false);
  assert.equal(vol.required, false);
  assert.match(vol.detail, /\/var\/lib\/hako\/data is not mounted/);
  assert.equal(vol.fix, 'hako doctor --fix (or: bash scripts/setup)');
  assert.deepEqual(failingRequired(absent), []);

  const plain = parseMountInfo(
    '99 27 7:0 / /var/lib/hako/data rw,relatime - xfs /dev/loop0 rw,attr2,noquota\n',
  )[0];
  const wrong = byName(evaluateHostChecks(healthy({ quotaMount: plain }), OPTS), 'quota volume');
  assert.equal(wrong.ok, false);
  assert.match(wrong.detail, /without enforced project quotas/);
  assert.equal(wrong.fix, 'umount /var/lib/hako/data && bash scripts/setup');
});

test('a kernel without XFS quota support uses per-sandbox images: ext4 tools become required, xfsprogs not', () => {
  const checks = evaluateHostChecks(
    healthy({
      xfsQuota: {
        supported: false,
        detail: 'this kernel was built without XFS quota support (CONFIG_XFS_QUOTA is not set)',
      },
      quotaMount: undefined,
      tools: {
        'mkfs.xfs': false,
        xfs_quota: false,
        'mkfs.ext4': false,
        mount: true,
        losetup: true,
        rsync: true,
      },
    }),
    OPTS,
  );
  assert.match(byName(checks, 'quota engine').detail, /one ext4 image per sandbox.*CONFIG_XFS_QUOTA/);
  assert.equal(byName(checks, 'quota volume').ok, true);
  assert.equal(byName(checks, 'xfsprogs').required, false);
  assert.equal(byName(checks, 'e2fsprogs').required, true);
  assert.deepEqual(failingRequired(checks), ['e2fsprogs']);
  assert.match(byName(checks, 'e2fsprogs').fix ?? '', /e2fsprogs/);
});

test('namespaces and seccomp: user namespaces are optional, the rest required', () => {
  const checks = evaluateHostChecks(
    healthy({
      namespaces: { pid: true, net: false, mnt: true, ipc: true, uts: true, cgroup: true, user: false },
      procStatus: 'Name:\tnode\nState:\tR\n',
    }),
    OPTS,
  );
  assert.deepEqual(failingRequired(checks).sort(), ['namespace net', 'seccomp']);
  assert.equal(byName(checks, 'namespace user').required, false);
  assert.equal(byName(checks, 'namespace net').fix, 'boot a kernel built with CONFIG_NET_NS=y');
  assert.match(byName(checks, 'seccomp').fix ?? '', /CONFIG_SECCOMP_FILTER/);
  const unreadable = evaluateHostChecks(healthy({ procStatus: undefined }), OPTS);
  assert.match(byName(unreadable, 'seccomp').detail, /unreadable/);
});

test('check names are unique and stable', () => {
  const names = evaluateHostChecks(healthy(), OPTS).map((c) => c.name);
  assert.equal(new Set(names).size, names.length);
  for (const n of [
    'root',
    'oci runtime',
    'cni bridge',
    'cgroup memory',
    'nftables',
    'iproute2',
    'xfsprogs',
    'loop devices',
    'quota volume',
    'namespace pid',
    'seccomp',
  ]) {
    assert.ok(names.includes(n), `missing check ${n}`);
  }
});

test('favordynmods on the cgroup2 mount is reported, optional, with the remount that sets it', () => {
  const base = {
    mountId: 30,
    root: '/',
    mountPoint: '/sys/fs/cgroup/unified',
    fsType: 'cgroup2',
    source: 'cgroup2',
    superOptions: ['rw'],
  };
  const off = favorDynmodsCheck({ ...base, mountOptions: ['rw', 'relatime'] });
  assert.equal(off.ok, false);
  assert.equal(off.required, false);
  assert.equal(off.fix, 'mount -o remount,favordynmods /sys/fs/cgroup/unified (kernel 6.0 or later)');
  const on = favorDynmodsCheck({ ...base, mountOptions: ['rw', 'relatime', 'favordynmods'] });
  assert.equal(on.ok, true);
  const checks = evaluateHostChecks(healthy({ cgroup2Mount: { ...base, mountOptions: ['rw'] } }), OPTS);
  assert.equal(byName(checks, 'cgroup favordynmods').ok, false);
});
