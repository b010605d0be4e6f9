import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { buildOciSpec, MASKED_PATHS, READONLY_PATHS, sandboxBinds } from '../../src/oci-spec.js';
import { DENIED_SYSCALLS, buildSeccompProfile } from '../../src/seccomp-profile.js';
import { renderEtcFiles, HOST_ETC_BINDS } from '../../src/etc-files.js';

const base = {
  args: ['/usr/bin/true'],
  env: ['PATH=/usr/bin', 'HOME=/home/sandbox', 'LANG=C.UTF-8'],
  cwd: '/workspace',
  uid: 1000,
  gid: 1000,
  hostname: 'abc123def456',
  rootfs: '/var/lib/hako/images/host-rootfs',
  etcDir: '/run/hako/dev/x/etc',
  hostEtcBinds: HOST_ETC_BINDS,
  imageBinds: [{ destination: '/usr', source: '/usr' }],
  workspaceDir: '/var/lib/hako/data/dev/hako-dev-abc',
  home: '/home/sandbox',
  tmpBytes: 64 * 1024 * 1024,
  netnsPath: undefined,
  cgroupsPath: '/hako/dev/hako-dev-abc/ctr',
  annotations: { 'hako.created-by': 'hakod' },
};

test('process runs as the sandbox uid with no capabilities and no new privileges', () => {
  const spec = buildOciSpec(base);
  const p = spec.process as {
    user: { uid: number; gid: number; additionalGids: number[] };
    capabilities: Record<string, string[]>;
    noNewPrivileges: boolean;
    env: string[];
  };
  assert.deepEqual(p.user, { uid: 1000, gid: 1000, additionalGids: [] });
  for (const set of ['bounding', 'effective', 'inheritable', 'permitted', 'ambient']) {
    assert.deepEqual(p.capabilities[set], [], set);
  }
  assert.equal(p.noNewPrivileges, true);
  assert.deepEqual(p.env, base.env, 'the environment is exactly what was passed');
});

test('rootfs is read-only and every namespace but user is new', () => {
  const spec = buildOciSpec(base);
  assert.equal(spec.root.readonly, true);
  const types = spec.linux.namespaces.map((n) => n.type).sort();
  assert.deepEqual(types, ['cgroup', 'ipc', 'mount', 'network', 'pid', 'uts']);
  assert.equal(spec.linux.namespaces.find((n) => n.type === 'network')?.path, undefined);
  const withNet = buildOciSpec({ ...base, netnsPath: '/run/netns/hako-dev-x' });
  assert.equal(withNet.linux.namespaces.find((n) => n.type === 'network')?.path, '/run/netns/hako-dev-x');
});

test('mounts: /workspace rw nosuid nodev, /usr and /etc read-only, sized tmpfs for every other writable path', () => {
  const spec = buildOciSpec(base);
  const m = (d: string) => spec.mounts.find((x) => x.destination === d);
  assert.deepEqual(m('/workspace')?.options, ['bind', 'rw', 'nosuid', 'nodev']);
  assert.equal(m('/workspace')?.source, base.workspaceDir);
  assert.ok(m('/usr')?.options.includes('ro'));
  assert.ok(m('/etc')?.options.includes('ro'));
  assert.equal(m('/etc')?.source, base.etcDir);
  for (const d of ['/tmp', '/var/tmp', '/dev/shm', '/home/sandbox']) {
    const t = m(d);
    assert.equal(t?.type, 'tmpfs', d);
    assert.ok(t?.options.includes(`size=${base.tmpBytes}`), `${d} has a size`);
    assert.ok(t?.options.includes('nosuid') && t.options.includes('nodev'), `${d} nosuid,nodev`);
  }
  assert.ok(m('/sys')?.options.includes('ro'));
  assert.ok(m('/sys/fs/cgroup')?.options.includes('ro'));
  for (const rel of HOST_ETC_BINDS) assert.ok(m(`/etc/${rel}`)?.options.includes('ro'), rel);
  // nothing secret from the host's /etc
  for (const mount of spec.mounts) {
    assert.ok(!/shadow|ssl\/private|ssh|sudoers|passwd|credentials/.test(mount.source), mount.source);
  }
});

test('extra binds (the Claude Code binary, skills) come after /workspace: read-only, nosuid, nodev', () => {
  // the host-wide bind is read-only even when configured otherwise
  const binds = sandboxBinds(
    [{ destination: '/opt/hako/bin/claude', source: '/srv/node_modules/claude', readonly: false }],
    [{ destination: '/skills/t1', source: '/var/lib/hako/skills/t1', readonly: true }],
  );
  assert.deepEqual(
    binds.map((b) => [b.destination, b.readonly]),
    [
      ['/opt/hako/bin/claude', true],
      ['/skills/t1', true],
    ],
  );
  const spec = buildOciSpec({ ...base, extraBinds: binds });
  const dests = spec.mounts.map((x) => x.destination);
  const claude = spec.mounts.find((x) => x.destination === '/opt/hako/bin/claude');
  assert.deepEqual(claude, {
    destination: '/opt/hako/bin/claude',
    type: 'bind',
    source: '/srv/node_modules/claude',
    options: ['rbind', 'ro', 'nosuid', 'nodev'],
  });
  assert.ok(
    dests.indexOf('/opt/hako/bin/claude') > dests.indexOf('/workspace'),
    'mounted over /workspace, not under',
  );
  assert.ok(spec.mounts.find((x) => x.destination === '/skills/t1')?.options.includes('ro'));
  assert.equal(
    buildOciSpec(base).mounts.some((x) => x.destination === '/opt/hako/bin/claude'),
    false,
  );
});

test('masked and read-only paths match runc defaults', () => {
  const spec = buildOciSpec(base);
  for (const p of ['/proc/kcore', '/proc/keys', '/proc/timer_list', '/sys/firmware']) {
    assert.ok(spec.linux.maskedPaths.includes(p), p);
  }
  assert.deepEqual(spec.linux.maskedPaths, [...MASKED_PATHS]);
  assert.deepEqual(spec.linux.readonlyPaths, [...READONLY_PATHS]);
  assert.ok(spec.linux.readonlyPaths.includes('/proc/sys'));
});

test('device cgroup denies everything but the standard character devices', () => {
  const spec = buildOciSpec(base);
  const devices = spec.linux.resources.devices as { allow: boolean; type?: string; major?: number }[];
  assert.deepEqual(devices[0], { allow: false, access: 'rwm' });
  assert.ok(devices.slice(1).every((d) => d.allow && d.type === 'c'));
  assert.ok(!devices.some((d) => d.type === 'b'), 'no block devices');
});

test('seccomp denies the issue list and namespace-creating clone flags', () => {
  const profile = buildSeccompProfile();
  const denied = profile.syscalls.find((r) => r.errnoRet === 1 && !r.args)?.names ?? [];
  for (const name of [
    'mount',
    'umount',
    'umount2',
    'unshare',
    'setns',
    'ptrace',
    'kexec_load',
    'kexec_file_load',
    'bpf',
    'perf_event_open',
    'keyctl',
    'add_key',
    'userfaultfd',
    'open_by_handle_at',
    'init_module',
    'finit_module',
  ]) {
    assert.ok(denied.includes(name), name);
  }
  const cloneRules = profile.syscalls.filter((r) => r.names.includes('clone'));
  const flags = cloneRules.map((r) => r.args?.[0]?.value);
  assert.ok(flags.includes(0x10000000), 'CLONE_NEWUSER');
  assert.ok(flags.includes(0x40000000), 'CLONE_NEWNET');
  assert.ok(profile.syscalls.some((r) => r.names.includes('clone3') && r.errnoRet === 38));
  assert.ok(
    profile.syscalls.some(
      (r) =>
        r.names.includes('ioctl') &&
        r.args?.[0]?.index === 1 &&
        r.args[0].op === 'SCMP_CMP_MASKED_EQ' &&
        r.args[0].value === 0xffffffff &&
        r.args[0].valueTwo === 0x5412,
    ),
    'TIOCSTI is denied on the low 32 bits of the request (a high bit set must not slip past)',
  );
});

test('every denied syscall is documented in docs/security-model.md', () => {
  const doc = readFileSync(new URL('../../../../docs/security-model.md', import.meta.url), 'utf8');
  for (const name of [...DENIED_SYSCALLS, 'clone3', 'TIOCSTI', 'AF_VSOCK']) {
    assert.ok(doc.includes(`\`${name}\``), `docs/security-model.md names \`${name}\``);
  }
});

test('curated /etc: sandbox user, no host secrets, resolver empty', () => {
  const files = renderEtcFiles({
    hostname: 'h1',
    uid: 1234,
    gid: 1234,
    home: '/home/sandbox',
    ip: '10.0.0.5',
  });
  assert.match(files.passwd ?? '', /^sandbox:x:1234:1234:.*:\/home\/sandbox:/m);
  assert.ok(!('shadow' in files));
  assert.match(files.hosts ?? '', /10\.0\.0\.5\th1/);
  assert.doesNotMatch(files['resolv.conf'] ?? '', /nameserver/);
  assert.equal(files.hostname, 'h1\n');
});
