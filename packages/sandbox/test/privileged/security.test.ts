/**
 * The security suite: real attacks, from inside real sandboxes made by the real `hako sandbox run`,
 * against every boundary in docs/security-model.md (CONVENTIONS §9). Each test asserts that the
 * attack fails with the specific error the boundary produces AND that the host is unchanged, and
 * carries a positive control (the same action where it is allowed, or the same attack run on the
 * host by an ordinary user without the sandbox) so that it would fail if the protection were gone.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { connect as netConnect } from 'node:net';
import { hostname as osHostname } from 'node:os';
import { join } from 'node:path';
import { createTestHost } from '../helpers/test-host.js';
import type { CliResult, TestHost } from '../helpers/test-host.js';
import { expectCmdFails, expectErrno, expectOk, parseProbes, py } from '../helpers/attack-probes.js';
import type { Probe } from '../helpers/attack-probes.js';
import {
  freeBytes,
  hostAddresses,
  httpTrap,
  linkLocal,
  runAsUser,
  runHost,
  sha256File,
  tcpTrap,
  udpTrap,
} from '../helpers/attack-host.js';
import type { Trap } from '../helpers/attack-host.js';

/** HAKO_SANDBOX_UID's default; the identity test asserts the sandbox really runs as this uid. */
const UID = 1000;
const tag = randomBytes(4).toString('hex').slice(0, 6);

let host: TestHost;
const cleanups: (() => unknown)[] = [];
const traps: Trap[] = [];
let loopTrap: Trap; // TCP on the host's 127.0.0.1
let anyTrap: Trap; // TCP on every host address, v4 and v6 (like sshd)
let gwTrap: Trap; // TCP on the bridge gateway address only
let httpAllowed: Trap; // HTTP on 127.0.0.1, on the allowlist
let httpUnlisted: Trap; // HTTP on 127.0.0.1, not on the allowlist
let httpGw: Trap; // HTTP on the gateway address, on the allowlist
let udp: Trap; // UDP on every host address (a DNS resolver, say)
const tokenAllowed = `allowed-${randomBytes(6).toString('hex')}`;
const tokenUnlisted = `unlisted-${randomBytes(6).toString('hex')}`;
const tokenGw = `gateway-${randomBytes(6).toString('hex')}`;
let hostIp4: string;
let hostIp6: string;
/** Every OCI runtime hako can pick on this host: each attack runs in a sandbox of each. */
const RUNTIMES = ['crun', 'runc'] as const;
type Runtime = (typeof RUNTIMES)[number];
const RUNTIME_BINARIES = ['/usr/bin/crun', '/usr/sbin/runc'];
let runtimeHashesBefore: string[];
/** The runtime of the test that is running (tests in a file run one at a time). */
let currentRuntime: Runtime | undefined;

/**
 * Registers an attack once per runtime (`[crun] …`, `[runc] …`): sandboxes made inside it pass
 * `--runtime`. Attacks on hako's own code (the proxy, workspace mirroring) use plain test().
 */
function attack(name: string, fn: () => Promise<void>): void {
  for (const rt of RUNTIMES) {
    test(`[${rt}] ${name}`, async () => {
      currentRuntime = rt;
      try {
        await fn();
      } finally {
        currentRuntime = undefined;
      }
    });
  }
}

// host objects the attacks aim at
const usrDir = `/usr/lib/hako-sec-${tag}`;
const usrMarker = join(usrDir, 'marker');
const etcMarker = `/etc/ssl/certs/hako-sec-${tag}.txt`;
const markerText = `marker-${randomBytes(8).toString('hex')}\n`;
const rootSecretPath = `/root/hako-secret-${tag}.txt`;
const varLibSecretDir = `/var/lib/hako-secret-${tag}`;
const varLibSecretPath = join(varLibSecretDir, 'secret');
const rootSecret = `root-secret-${randomBytes(12).toString('hex')}`;
const varLibSecret = `varlib-secret-${randomBytes(12).toString('hex')}`;
const copyTargetDir = `/var/tmp/hako-sec-target-${tag}`;
let suidPath: string; // a setuid-root `id` inside the test env's host image skeleton
const suidControlDir = `/var/tmp/hako-sec-suid-${tag}`; // the same binary where a host user can run it

function workspace(name: string): string {
  const d = mkdtempSync(`/var/tmp/hako-sec-ws-${tag}-${name}-`);
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

function sandbox(
  flags: readonly string[],
  argv: readonly string[],
  opts?: { extraEnv?: Record<string, string>; timeoutMs?: number },
): Promise<CliResult> {
  const rt = currentRuntime ? ['--runtime', currentRuntime] : [];
  return host.cli(['sandbox', 'run', ...rt, ...flags, '--', ...argv], opts);
}

/** Runs a probe script in a sandbox; the CLI must exit `code` (0 unless stated). */
async function probeRun(
  flags: readonly string[],
  body: string,
  opts: { code?: number; extraEnv?: Record<string, string> } = {},
): Promise<{ p: Map<string, Probe>; r: CliResult }> {
  const r = await sandbox(flags, py(body), { extraEnv: opts.extraEnv });
  assert.equal(r.code, opts.code ?? 0, `sandbox exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return { p: parseProbes(r.stdout), r };
}

/** A Python string literal. */
const q = (s: string): string => JSON.stringify(s);

/** A Python list of needles, hex-encoded so the probe's own command line does not contain them. */
const hexList = (items: readonly string[]): string =>
  `unhex(${JSON.stringify(items.map((i) => Buffer.from(i).toString('hex')))})`;

/** The mountinfo line that is visible at `dir` (the last one mounted there). */
function mountAt(mountinfo: unknown, dir: string): string {
  const lines = String(mountinfo)
    .split('\n')
    .filter((l) => l.split(' ')[4] === dir);
  const line = lines.at(-1);
  assert.ok(line, `no mount at ${dir}`);
  return line;
}

/** Whether a mountinfo line's per-mount options include `opt`. */
const mountHas = (line: string, opt: string): boolean => (line.split(' ')[5] ?? '').split(',').includes(opt);

function fileState(path: string): string {
  const st = lstatSync(path);
  return JSON.stringify({
    mode: st.mode,
    uid: st.uid,
    mtime: st.mtimeMs,
    data: st.isFile() ? readFileSync(path, 'utf8') : '',
  });
}

function hostConnect(ip: string, port: number, send = '', timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = netConnect({ host: ip, port });
    let data = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect ${ip}:${port} timed out`));
    }, timeoutMs);
    s.on('connect', () => {
      if (send) s.write(send);
    });
    s.on('data', (d) => (data += d.toString()));
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve(data);
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

before(async () => {
  host = createTestHost();
  for (const bin of RUNTIME_BINARIES) {
    assert.ok(
      existsSync(bin),
      `${bin} is missing: the suite attacks every runtime (scripts/setup installs them)`,
    );
  }
  runtimeHashesBefore = RUNTIME_BINARIES.map(sha256File);

  // plant the targets: files the sandbox user could modify if the mount were writable (owned by UID)
  mkdirSync(usrDir, { mode: 0o755 });
  cleanups.push(() => rmSync(usrDir, { recursive: true, force: true }));
  writeFileSync(usrMarker, markerText, { mode: 0o644 });
  chownSync(usrDir, UID, UID);
  chownSync(usrMarker, UID, UID);
  writeFileSync(etcMarker, markerText, { mode: 0o644 });
  cleanups.push(() => rmSync(etcMarker, { force: true }));
  chownSync(etcMarker, UID, UID);
  // secrets only root on the host can read
  writeFileSync(rootSecretPath, `${rootSecret}\n`, { mode: 0o600 });
  cleanups.push(() => rmSync(rootSecretPath, { force: true }));
  mkdirSync(varLibSecretDir, { mode: 0o700 });
  cleanups.push(() => rmSync(varLibSecretDir, { recursive: true, force: true }));
  writeFileSync(varLibSecretPath, `${varLibSecret}\n`, { mode: 0o600 });
  mkdirSync(copyTargetDir, { mode: 0o755 });
  cleanups.push(() => rmSync(copyTargetDir, { recursive: true, force: true }));

  // one egress run brings up the env's bridge, nftables policy and host image skeleton
  const warm = await sandbox(['--network', 'egress'], ['true']);
  assert.equal(warm.code, 0, `warm-up sandbox failed: ${warm.stderr}`);
  suidPath = join(host.stateDir, 'images/host-rootfs/hako-suid-id');
  copyFileSync('/usr/bin/id', suidPath);
  chownSync(suidPath, 0, 0);
  chmodSync(suidPath, 0o4755);
  mkdirSync(suidControlDir, { mode: 0o755 });
  cleanups.push(() => rmSync(suidControlDir, { recursive: true, force: true }));
  copyFileSync('/usr/bin/id', join(suidControlDir, 'id'));
  chmodSync(join(suidControlDir, 'id'), 0o4755);

  hostIp4 = hostAddresses(4, [host.bridge])[0] ?? '';
  hostIp6 = hostAddresses(6, [host.bridge])[0] ?? '';
  assert.ok(hostIp4, 'the host needs a non-loopback IPv4 address for the network attacks');
  loopTrap = await tcpTrap('127.0.0.1', 'host-loopback');
  anyTrap = await tcpTrap('::', 'host-any');
  gwTrap = await tcpTrap(host.gateway, 'host-gateway');
  httpAllowed = await httpTrap('127.0.0.1', tokenAllowed);
  httpUnlisted = await httpTrap('127.0.0.1', tokenUnlisted);
  httpGw = await httpTrap(host.gateway, tokenGw);
  udp = await udpTrap();
  traps.push(loopTrap, anyTrap, gwTrap, httpAllowed, httpUnlisted, httpGw, udp);
});

after(async () => {
  for (const t of traps) await t.close().catch(() => undefined);
  await host.teardown();
  for (const c of cleanups.reverse()) {
    try {
      await c();
    } catch {
      // keep cleaning
    }
  }
});

// ------------------------------------------------------------------------------------ identity

attack(
  'identity: uid 1000 (never 0), no capabilities, no_new_privs, seccomp filter, fresh namespaces',
  async () => {
    const { p } = await probeRun(
      [],
      String.raw`
emit({'name': 'status', 'ok': True, 'value': read_file('/proc/self/status')})
emit({'name': 'ns', 'ok': True, 'value': {n: os.readlink('/proc/self/ns/' + n) for n in ['pid', 'mnt', 'net', 'uts', 'ipc', 'cgroup', 'user']}})
probe('setuid0', lambda: os.setuid(0))
probe('setgid0', lambda: os.setgid(0))
probe('setgroups0', lambda: os.setgroups([0]))
`,
    );
    const status = String(p.get('status')?.value);
    assert.match(status, new RegExp(`^Uid:\\t${UID}\\t${UID}\\t${UID}\\t${UID}$`, 'm'), 'sandbox uid');
    assert.match(status, new RegExp(`^Gid:\\t${UID}\\t${UID}\\t${UID}\\t${UID}$`, 'm'), 'sandbox gid');
    assert.match(status, /^Groups:\s*$/m, 'no supplementary groups');
    for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) {
      assert.match(status, new RegExp(`^${set}:\\t0000000000000000$`, 'm'), `${set} must be empty`);
    }
    assert.match(status, /^NoNewPrivs:\t1$/m, 'no_new_privs must be set');
    assert.match(status, /^Seccomp:\t2$/m, 'a seccomp filter must be installed (mode 2)');
    expectErrno(p, 'setuid0', 'EPERM', 'becoming root');
    expectErrno(p, 'setgid0', 'EPERM', 'joining group 0');
    expectErrno(p, 'setgroups0', 'EPERM', 'setting supplementary groups');
    const ns = p.get('ns')?.value as Record<string, string>;
    for (const n of ['pid', 'mnt', 'net', 'uts', 'ipc', 'cgroup']) {
      assert.notEqual(ns[n], readlinkSync(`/proc/self/ns/${n}`), `the ${n} namespace must not be the host's`);
    }
  },
);

attack(
  'setuid-root binaries grant nothing (no_new_privs); su fails; writable mounts are nosuid',
  async () => {
    // control: for an ordinary host user the planted binary does elevate
    const control = await runAsUser(UID, join(suidControlDir, 'id'), []);
    assert.match(control.stdout, /euid=0\(root\)/, `control: setuid id on the host: ${control.stdout}`);
    const { p } = await probeRun(
      [],
      String.raw`
cmd('suid_id', ['/hako-suid-id'])
cmd('su', ['su', '-c', 'id', 'root'])
cmd('suid_copy', ['sh', '-c', 'cp /hako-suid-id /workspace/id2 && chmod 4755 /workspace/id2 && /workspace/id2'])
emit({'name': 'mountinfo', 'ok': True, 'value': read_file('/proc/self/mountinfo')})
`,
    );
    const suid = expectOk(p, 'suid_id', 'running the setuid binary');
    assert.match(String(suid), new RegExp(`uid=${UID}\\(`), String(suid));
    assert.doesNotMatch(
      String(suid),
      /euid=0/,
      `setuid-root gave euid 0 inside the sandbox: ${String(suid)}`,
    );
    const su = p.get('su');
    assert.ok(su && !su.ok && !/uid=0/.test(su.detail ?? ''), `su must fail: ${JSON.stringify(su)}`);
    assert.doesNotMatch(String(p.get('suid_copy')?.detail), /euid=0/, 'a setuid copy in /workspace elevated');
    for (const dir of ['/workspace', '/tmp', '/var/tmp', '/dev/shm', '/home/sandbox']) {
      const line = mountAt(p.get('mountinfo')?.value, dir);
      assert.ok(mountHas(line, 'nosuid'), `${dir} must be mounted nosuid: ${line}`);
    }
  },
);

// ------------------------------------------------------------------------------- filesystem

attack(
  '/usr and /etc are read-only: writes, deletes, renames fail with EROFS; the host files are intact',
  async () => {
    const usrBefore = fileState(usrMarker);
    const etcBefore = fileState(etcMarker);
    const { p } = await probeRun(
      [],
      String.raw`
import shutil
D = ${q(usrDir)}; M = ${q(usrMarker)}; E = ${q(etcMarker)}
probe('usr_visible', lambda: read_file(M))
probe('usr_write', lambda: write_file(M, b'pwned', 'r+b'))
probe('usr_append', lambda: write_file(M, b'pwned', 'ab'))
probe('usr_truncate', lambda: os.truncate(M, 0))
probe('usr_create', lambda: write_file(D + '/new'))
probe('usr_unlink', lambda: os.unlink(M))
probe('usr_rename', lambda: os.rename(M, D + '/moved'))
probe('usr_chmod', lambda: os.chmod(M, 0o4777))
probe('usr_utime', lambda: os.utime(M, (0, 0)))
probe('usr_rmtree', lambda: shutil.rmtree(D))
probe('usr_bin_create', lambda: write_file('/usr/bin/hako-evil-${tag}'))
probe('etc_visible', lambda: read_file(E))
probe('etc_write', lambda: write_file(E, b'pwned', 'r+b'))
probe('etc_unlink', lambda: os.unlink(E))
probe('etc_create', lambda: write_file('/etc/hako-evil-${tag}'))
probe('etc_passwd', lambda: write_file('/etc/passwd', b'x::0:0::/:/bin/sh\n', 'ab'))
probe('root_create', lambda: write_file('/hako-evil-${tag}'))
probe('bin_create', lambda: write_file('/bin/hako-evil-${tag}'))
cmd('rm_rf', ['rm', '-rf', D, E])
probe('ws_create', lambda: write_file('/workspace/ok'))
probe('ws_unlink', lambda: os.unlink('/workspace/ok'))
probe('tmp_create', lambda: write_file('/tmp/ok'))
`,
    );
    assert.equal(expectOk(p, 'usr_visible', 'the planted /usr file is visible'), markerText);
    assert.equal(expectOk(p, 'etc_visible', 'the planted /etc file is visible'), markerText);
    for (const n of [
      'usr_write',
      'usr_append',
      'usr_truncate',
      'usr_create',
      'usr_unlink',
      'usr_rename',
      'usr_chmod',
      'usr_utime',
      'usr_rmtree',
      'usr_bin_create',
      'etc_write',
      'etc_unlink',
      'etc_create',
      'root_create',
      'bin_create',
    ]) {
      expectErrno(p, n, 'EROFS', 'modifying a read-only system path');
    }
    // /etc/passwd is the curated root-owned copy: EACCES from permissions comes before EROFS
    expectErrno(p, 'etc_passwd', ['EROFS', 'EACCES'], 'appending a root user to /etc/passwd');
    expectCmdFails(p, 'rm_rf', /Read-only file system/, 'rm -rf of the planted host files');
    expectOk(p, 'ws_create', 'writing in /workspace');
    expectOk(p, 'ws_unlink', 'deleting in /workspace');
    expectOk(p, 'tmp_create', 'writing in /tmp');
    assert.equal(fileState(usrMarker), usrBefore, 'the host /usr file changed');
    assert.equal(fileState(etcMarker), etcBefore, 'the host /etc file changed');
    assert.deepEqual(readdirSync(usrDir), ['marker'], 'a file appeared in the host /usr directory');
    for (const f of [`/usr/bin/hako-evil-${tag}`, `/etc/hako-evil-${tag}`, `/hako-evil-${tag}`]) {
      assert.ok(!existsSync(f), `${f} appeared on the host`);
    }
  },
);

attack('remounting: mount, remount, umount, the new mount API, pivot_root and chroot all fail', async () => {
  // control: on the host an ordinary user can mount inside a user namespace of its own
  const control = await runAsUser(UID, 'unshare', [
    '-U',
    '-r',
    '-m',
    'sh',
    '-c',
    'mount -t tmpfs none /tmp && echo mounted-ok',
  ]);
  assert.match(
    control.stdout,
    /mounted-ok/,
    `control: mount in a user namespace on the host: ${control.stderr}`,
  );
  const { p } = await probeRun(
    [],
    String.raw`
MS_RDONLY, MS_REMOUNT, MS_BIND, MNT_DETACH = 1, 32, 4096, 2
os.makedirs('/tmp/m', exist_ok=True)
probe('remount_root_rw', lambda: sc('mount', None, b'/', None, MS_REMOUNT, None))
probe('remount_usr_rw', lambda: sc('mount', None, b'/usr', None, MS_REMOUNT | MS_BIND, None))
probe('mount_tmpfs', lambda: sc('mount', b'none', b'/tmp/m', b'tmpfs', 0, None))
probe('bind_over_usr', lambda: sc('mount', b'/workspace', b'/usr/lib', None, MS_BIND, None))
probe('mount_proc', lambda: sc('mount', b'proc', b'/tmp/m', b'proc', 0, None))
probe('mount_cgroup', lambda: sc('mount', b'cgroup', b'/tmp/m', b'cgroup', 0, b'memory'))
probe('umount_etc', lambda: sc('umount2', b'/etc', MNT_DETACH))
probe('umount_proc_sys', lambda: sc('umount2', b'/proc/sys', MNT_DETACH))
probe('umount_masked', lambda: sc('umount2', b'/sys/firmware', 0))
probe('fsopen', lambda: sc('fsopen', b'tmpfs', 0))
probe('open_tree', lambda: sc('open_tree', -100, b'/usr', 1))
probe('pivot_root', lambda: sc('pivot_root', b'/tmp', b'/tmp/m'))
probe('chroot', lambda: sc('chroot', b'/tmp'))
cmd('mount_remount', ['mount', '-o', 'remount,rw', '/'])
cmd('mount_tmpfs_cli', ['mount', '-t', 'tmpfs', 'none', '/tmp/m'])
emit({'name': 'mountinfo', 'ok': True, 'value': read_file('/proc/self/mountinfo')})
`,
  );
  for (const n of [
    'remount_root_rw',
    'remount_usr_rw',
    'mount_tmpfs',
    'bind_over_usr',
    'mount_proc',
    'mount_cgroup',
    'umount_etc',
    'umount_proc_sys',
    'umount_masked',
    'fsopen',
    'open_tree',
    'pivot_root',
    'chroot',
  ]) {
    expectErrno(p, n, 'EPERM', 'changing the mount table');
  }
  const denied = /superuser|only root|permission denied|not permitted/i;
  expectCmdFails(p, 'mount_remount', denied, 'mount -o remount,rw /');
  expectCmdFails(p, 'mount_tmpfs_cli', denied, 'mount -t tmpfs');
  const mountinfo = p.get('mountinfo')?.value;
  for (const dir of ['/', '/usr', '/etc', '/proc/sys', '/sys', '/sys/fs/cgroup']) {
    const line = mountAt(mountinfo, dir);
    assert.ok(mountHas(line, 'ro'), `${dir} must still be read-only: ${line}`);
  }
  assert.ok(!String(mountinfo).includes(' /tmp/m '), 'a mount appeared at /tmp/m');
});

attack('namespaces: unshare, nsenter, setns and clone with namespace flags fail', async () => {
  const control = await runAsUser(UID, 'unshare', ['-U', '-r', 'id', '-u']);
  assert.equal(control.stdout.trim(), '0', `control: unshare -U -r on the host: ${control.stderr}`);
  const { p } = await probeRun(
    [],
    String.raw`
cmd('unshare_user', ['unshare', '-U', '-r', 'id', '-u'])
cmd('unshare_mount', ['unshare', '-m', 'true'])
cmd('unshare_net', ['unshare', '-n', 'true'])
cmd('unshare_pid', ['unshare', '-p', '-f', 'true'])
cmd('unshare_cgroup', ['unshare', '-C', 'true'])
cmd('nsenter_mount', ['nsenter', '-t', '1', '-m', 'true'])
cmd('nsenter_net', ['nsenter', '-t', '1', '-n', 'true'])
def clone(flag):
    r = sc('clone', flag | 17, 0, 0, 0, 0)
    if r == 0: os._exit(0)
    os.waitpid(r, 0)
    return 'cloned'
for n, f in [('newuser', 0x10000000), ('newns', 0x20000), ('newnet', 0x40000000), ('newpid', 0x20000000), ('newcgroup', 0x02000000), ('newuts', 0x04000000)]:
    probe('clone_' + n, lambda f=f: clone(f))
probe('clone3', lambda: sc('clone3', None, 0))
probe('setns_pid1_mnt', lambda: sc('setns', os.open('/proc/1/ns/mnt', os.O_RDONLY), 0))
`,
  );
  for (const n of ['unshare_user', 'unshare_mount', 'unshare_net', 'unshare_pid', 'unshare_cgroup']) {
    expectCmdFails(p, n, /Operation not permitted/, 'unshare(1)');
  }
  expectCmdFails(p, 'nsenter_mount', /Operation not permitted/, 'nsenter(1)');
  expectCmdFails(p, 'nsenter_net', /Operation not permitted/, 'nsenter(1)');
  for (const n of ['newuser', 'newns', 'newnet', 'newpid', 'newcgroup', 'newuts']) {
    expectErrno(p, `clone_${n}`, 'EPERM', `clone(CLONE_${n.toUpperCase()})`);
  }
  expectErrno(p, 'clone3', 'ENOSYS', 'clone3 (flags the filter cannot see)');
  expectErrno(p, 'setns_pid1_mnt', 'EPERM', 'setns');
});

// ------------------------------------------------------------------------------------ seccomp

/**
 * Each call is harmless and, without the filter, works for an ordinary user (or fails with a
 * different errno): the host control run proves the sandbox's result comes from the sandbox.
 */
const SECCOMP_BODY = String.raw`
import fcntl, termios
probe('unshare0', lambda: sc('unshare', 0))
probe('setns_badfd', lambda: sc('setns', -1, 0))
probe('keyctl', lambda: sc('keyctl', 0, -3, 0))
probe('add_key', lambda: sc('add_key', b'user', b'hako-probe', b'v', 1, -2))
probe('request_key', lambda: sc('request_key', b'user', b'hako-nokey', None, 0))
probe('perf_event_open', lambda: sc('perf_event_open', None, 0, -1, -1, 0))
probe('bpf', lambda: sc('bpf', 0, None, 0))
probe('userfaultfd', lambda: os.close(sc('userfaultfd', 1 | os.O_CLOEXEC)))
params = ctypes.create_string_buffer(120)
probe('io_uring_setup', lambda: os.close(sc('io_uring_setup', 1, params)))
probe('kcmp', lambda: sc('kcmp', os.getpid(), os.getpid(), 1, 0, 0))
src = ctypes.create_string_buffer(b'hello', 8); dst = ctypes.create_string_buffer(8)
class IOV(ctypes.Structure): _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
liov = IOV(ctypes.addressof(dst), 5); riov = IOV(ctypes.addressof(src), 5)
probe('process_vm_readv', lambda: sc('process_vm_readv', os.getpid(), ctypes.byref(liov), 1, ctypes.byref(riov), 1, 0))
probe('pidfd_getfd', lambda: os.close(sc('pidfd_getfd', sc('pidfd_open', os.getpid(), 0), 0, 0)))
fh = ctypes.create_string_buffer(256); struct.pack_into('I', fh, 0, 128); mid = ctypes.c_int()
probe('name_to_handle_at', lambda: sc('name_to_handle_at', -100, b'/usr', fh, ctypes.byref(mid), 0))
probe('open_by_handle_at', lambda: sc('open_by_handle_at', -1, fh, 0))
probe('clock_settime_badclock', lambda: sc('clock_settime', 9999, None))
probe('quotactl', lambda: sc('quotactl', 0x800008, b'/dev/null', 0, None))
def mkfifo():
    path = '/tmp/hako-fifo-%d' % os.getpid()
    os.mkfifo(path); os.unlink(path)
    return 'made'
probe('mkfifo', mkfifo)
def clone_user():
    r = sc('clone', 0x10000000 | 17, 0, 0, 0, 0)
    if r == 0: os._exit(0)
    os.waitpid(r, 0)
    return 'cloned'
probe('clone_newuser', clone_user)
probe('clone3', lambda: sc('clone3', None, 0))
def ptrace_sibling():
    pid = os.fork()
    if pid == 0:
        try: time.sleep(5)
        finally: os._exit(0)
    try:
        sc('ptrace', 16, pid, 0, 0)
        os.waitpid(pid, 0)
        sc('ptrace', 17, pid, 0, 0)
        return 'attached'
    finally:
        os.kill(pid, 9); os.waitpid(pid, 0)
probe('ptrace_attach', ptrace_sibling)
def in_tty_session(fn):
    # fn(fd) runs in a child that has the pty as its controlling terminal, as a shell would
    m, s = os.openpty()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()
            fd = os.open(os.ttyname(s), os.O_RDWR)
            fn(fd)
            os.write(w, b'OK')
        except OSError as e:
            os.write(w, errno.errorcode.get(e.errno, 'EIO').encode())
        finally:
            os._exit(0)
    os.close(w); os.waitpid(pid, 0)
    res = os.read(r, 64).decode()
    os.close(r); os.close(m); os.close(s)
    if res != 'OK': raise OSError(getattr(errno, res, errno.EIO), res)
    return 'injected'
probe('tiocsti', lambda: in_tty_session(lambda fd: fcntl.ioctl(fd, termios.TIOCSTI, b'x')))
c = ctypes.c_char(b'x')
probe('tiocsti_highbits', lambda: in_tty_session(lambda fd: sc('ioctl', fd, (1 << 32) | termios.TIOCSTI, ctypes.byref(c))))
probe('vsock', lambda: socket.socket(40, socket.SOCK_STREAM).close())
probe('vsock_highbits', lambda: os.close(sc('socket', (1 << 32) | 40, 1, 0)))
probe('ia32_unshare0', lambda: int80(310, 0))
probe('ia32_setns_badfd', lambda: int80(346, 0xffffffff, 0))
probe('ia32_clone_newuser', lambda: int80(120, 0x10000000 | 17, 0, 0))
probe('ia32_socket_vsock', lambda: int80(359, 40, 1, 0))
probe('ia32_socketcall_vsock', lambda: int80(102, 1, low_addr(), 0, struct.pack('<III', 40, 1, 0)))
probe('ia32_tiocsti', lambda: in_tty_session(lambda fd: int80(54, fd, termios.TIOCSTI, low_addr(), b'x')))
probe('x32_unshare0', lambda: sc_raw(0x40000000 | 272, 0))
`;

/** Probe name → the sandbox's errno. The host control must NOT give that errno (except `*`). */
const SECCOMP_EXPECT: Record<string, string> = {
  unshare0: 'EPERM',
  setns_badfd: 'EPERM',
  keyctl: 'EPERM',
  add_key: 'EPERM',
  request_key: 'EPERM',
  perf_event_open: 'EPERM',
  bpf: 'EPERM',
  userfaultfd: 'EPERM',
  io_uring_setup: 'EPERM',
  kcmp: 'EPERM',
  process_vm_readv: 'EPERM',
  pidfd_getfd: 'EPERM',
  name_to_handle_at: 'EPERM',
  open_by_handle_at: 'EPERM',
  clock_settime_badclock: 'EPERM',
  quotactl: 'EPERM',
  mkfifo: 'EPERM',
  clone_newuser: 'EPERM',
  clone3: 'ENOSYS',
  ptrace_attach: 'EPERM',
  tiocsti: 'EPERM',
  tiocsti_highbits: 'EPERM',
  vsock: 'EAFNOSUPPORT',
  vsock_highbits: 'EAFNOSUPPORT',
  ia32_unshare0: 'EPERM',
  ia32_setns_badfd: 'EPERM',
  ia32_clone_newuser: 'EPERM',
  ia32_socket_vsock: 'EAFNOSUPPORT',
  ia32_socketcall_vsock: 'EAFNOSUPPORT',
  ia32_tiocsti: 'EPERM',
  x32_unshare0: 'EPERM',
};
/** Probes whose host control depends on host hardware or kernel config (vsock device, x32 ABI). */
const NO_HOST_CONTROL = new Set([
  'vsock',
  'vsock_highbits',
  'ia32_socket_vsock',
  'ia32_socketcall_vsock',
  'x32_unshare0',
]);

attack(
  'seccomp: kernel attack surface is EPERM, including via the ia32 ABI and 64-bit argument tricks',
  async () => {
    const [{ p }, control] = await Promise.all([
      probeRun([], SECCOMP_BODY),
      runAsUser(UID, '/usr/bin/python3', py(SECCOMP_BODY).slice(1)),
    ]);
    const hostP = parseProbes(control.stdout);
    for (const [name, errno] of Object.entries(SECCOMP_EXPECT)) {
      expectErrno(p, name, errno, 'a filtered system call');
      if (NO_HOST_CONTROL.has(name)) continue;
      const h = hostP.get(name);
      assert.ok(
        h && (h.ok || h.errno !== errno),
        `control [${name}]: without the sandbox the call must not give ${errno}, got ${JSON.stringify(h)} ` +
          `(stderr ${control.stderr})`,
      );
    }
  },
);

// ------------------------------------------------------------------------------- host secrets

attack(
  'host secrets: /etc/shadow, /root, /var/lib, the state and run dirs are not visible anywhere',
  async () => {
    const shadowLine = readFileSync('/etc/shadow', 'utf8').split('\n')[0] ?? '';
    const needles = [rootSecret, varLibSecret, `hako-secret-${tag}`, shadowLine];
    const paths = [
      '/etc/shadow',
      '/etc/gshadow',
      '/etc/sudoers',
      '/etc/ssh',
      '/etc/ssl/private',
      '/root',
      rootSecretPath,
      varLibSecretPath,
      varLibSecretDir,
      host.stateDir,
      join(host.stateDir, 'volume.img'),
      host.runDir,
      '/proc/1/root/root',
      '/var/lib/dpkg/status',
    ];
    const { p } = await probeRun(
      [],
      String.raw`
NEEDLES = ${hexList(needles)}
for path in ${JSON.stringify(paths)}:
    probe('read:' + path, lambda path=path: os.listdir(path) if os.path.isdir(path) else read_file(path))
write_file('/tmp/control-needle', b'sweep-control-${tag}')
emit({'name': 'sweep', 'ok': True, 'value': grep_tree(NEEDLES + ['sweep-control-${tag}'])})
`,
    );
    for (const path of paths) expectErrno(p, `read:${path}`, 'ENOENT', `reading host secret ${path}`);
    const found = p.get('sweep')?.value as string[];
    assert.deepEqual(
      found,
      ['/tmp/control-needle'],
      `host secrets found inside the sandbox: ${found.join(', ')}`,
    );
    assert.equal(readFileSync(rootSecretPath, 'utf8'), `${rootSecret}\n`, 'the planted secret changed');
  },
);

attack("the launcher's secrets: not in the environment, /proc/*/environ, cmdline or any file", async () => {
  const secrets = {
    SECRET: `launcher-${randomBytes(10).toString('hex')}`,
    AWS_SECRET_ACCESS_KEY: `aws-${randomBytes(10).toString('hex')}`,
    ANTHROPIC_API_KEY: `sk-ant-${randomBytes(10).toString('hex')}`,
  };
  const visible = `visible-${randomBytes(6).toString('hex')}`;
  const needles = [...Object.values(secrets), host.stateDir, host.runDir, host.hakoEnv];
  const { p } = await probeRun(
    ['--env', `VISIBLE=${visible}`],
    String.raw`
NEEDLES = ${hexList([...needles, visible])}
hits = {}
pids = [x for x in os.listdir('/proc') if x.isdigit()] + ['self', 'thread-self']
for pid in pids:
    for f in ['environ', 'cmdline']:
        try:
            data = open('/proc/%s/%s' % (pid, f), 'rb').read()
        except OSError:
            continue
        for n in NEEDLES:
            if n.encode() in data: hits.setdefault(n, []).append('/proc/%s/%s' % (pid, f))
emit({'name': 'proc_hits', 'ok': True, 'value': hits})
emit({'name': 'files', 'ok': True, 'value': grep_tree(NEEDLES[:3])})
emit({'name': 'env', 'ok': True, 'value': dict(os.environ)})
`,
    { extraEnv: secrets },
  );
  const hits = p.get('proc_hits')?.value as Record<string, string[]>;
  assert.ok(hits[visible]?.includes('/proc/1/environ'), `control: --env value not found in /proc/1/environ`);
  for (const n of needles)
    assert.equal(hits[n], undefined, `launcher value ${n} visible at ${hits[n]?.join(', ')}`);
  assert.deepEqual(p.get('files')?.value, [], 'launcher secrets found in files');
  const env = p.get('env')?.value as Record<string, string>;
  assert.deepEqual(Object.keys(env).sort(), ['HOME', 'LANG', 'PATH', 'VISIBLE'], 'unexpected environment');
});

// ---------------------------------------------------------------------------- host processes

attack(
  'host processes: invisible; kill -9, kill(-1) and pidfd_open of host pids leave them alive',
  async () => {
    const victims: ChildProcess[] = [
      spawn('sleep', ['600'], { stdio: 'ignore' }),
      spawn('sleep', ['601'], { stdio: 'ignore', uid: UID, gid: UID }), // same uid as the sandbox
    ];
    try {
      const pids = victims.map((v) => v.pid ?? 0);
      await sleep(100);
      for (const v of victims) assert.equal(v.exitCode, null, 'victim did not start');
      const { p } = await probeRun(
        [],
        String.raw`
import subprocess
procs = {}
for x in os.listdir('/proc'):
    if x.isdigit():
        try: procs[x] = read_file('/proc/%s/cmdline' % x).replace('\0', ' ')
        except OSError: pass
emit({'name': 'procs', 'ok': True, 'value': procs})
for hp in ${JSON.stringify(pids)}:
    probe('proc:%d' % hp, lambda hp=hp: os.listdir('/proc/%d' % hp))
    probe('kill:%d' % hp, lambda hp=hp: os.kill(hp, 9))
    probe('pidfd:%d' % hp, lambda hp=hp: sc('pidfd_open', hp, 0))
child = subprocess.Popen(['sleep', '100'])
probe('kill_own_child', lambda: (os.kill(child.pid, 9), child.wait())[1])
child2 = subprocess.Popen(['sleep', '100'])
probe('kill_all', lambda: os.kill(-1, 9))
probe('kill_all_reaped', lambda: child2.wait(timeout=5))
cmd('ps', ['ps', '-eo', 'pid,user,args'])
`,
      );
      const procs = p.get('procs')?.value as Record<string, string>;
      assert.ok(
        Object.keys(procs).length <= 3,
        `the sandbox sees processes that are not its own: ${JSON.stringify(procs)}`,
      );
      assert.ok(!Object.values(procs).some((c) => /sleep 60[01]/.test(c)), 'a host process is visible');
      for (const hp of pids) {
        expectErrno(p, `proc:${hp}`, 'ENOENT', `/proc/${hp} of a host process`);
        expectErrno(p, `kill:${hp}`, 'ESRCH', `kill -9 of host pid ${hp}`);
        expectErrno(p, `pidfd:${hp}`, 'ESRCH', `pidfd_open of host pid ${hp}`);
      }
      assert.equal(expectOk(p, 'kill_own_child', 'killing its own child'), -9);
      expectOk(p, 'kill_all', 'kill(-1, SIGKILL)');
      assert.equal(expectOk(p, 'kill_all_reaped', 'kill(-1) reaching its own children'), -9);
      const ps = String(expectOk(p, 'ps', 'ps -e'));
      assert.doesNotMatch(ps, /sleep 60[01]/, `ps shows a host process: ${ps}`);
      for (const v of victims) {
        assert.equal(v.exitCode, null, `host victim ${v.pid} died`);
        assert.equal(v.signalCode, null, `host victim ${v.pid} was signalled`);
        assert.doesNotThrow(() => process.kill(v.pid ?? 0, 0), `host victim ${v.pid} is gone`);
      }
    } finally {
      for (const v of victims) v.kill('SIGKILL');
    }
  },
);

// ------------------------------------------------------------------------- another sandbox

async function netnsIp(
  prefix: string,
  skip: ReadonlySet<string>,
  timeoutMs = 15_000,
): Promise<[string, string]> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const names = existsSync('/run/netns') ? readdirSync('/run/netns') : [];
    for (const n of names) {
      if (!n.startsWith(prefix) || skip.has(n)) continue;
      const r = await runHost('ip', ['-n', n, '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
      const m = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(r.stdout);
      if (m) return [n, m[1]!];
    }
    await sleep(100);
  }
  throw new Error(`no sandbox network namespace ${prefix}* appeared`);
}

attack(
  'another sandbox: its workspace, processes and listening port are out of reach of a concurrent one',
  async () => {
    const wsA = workspace('a');
    const wsB = workspace('b');
    const secretName = `ws-secret-${tag}.txt`;
    const secretA = `sandbox-a-secret-${randomBytes(12).toString('hex')}`;
    writeFileSync(join(wsA, secretName), `${secretA}\n`);
    const markA = `sandbox-a-marker-${tag}`;
    const portA = randomInt(3000, 9000);
    const prefix = `hako-${host.hakoEnv}-`;
    const existing = new Set(existsSync('/run/netns') ? readdirSync('/run/netns') : []);
    const runA = sandbox(
      ['--network', 'egress', '--workspace', wsA, '--disk', '256m', '--timeout', '90s'],
      py(String.raw`
MARK = ${q(markA)}
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('0.0.0.0', ${portA})); srv.listen(16); srv.settimeout(0.5)
peers = []
deadline = time.time() + 60
while time.time() < deadline:
    try:
        c, addr = srv.accept()
    except OSError:
        continue
    peers.append(addr[0])
    try:
        c.sendall(b'hako-a\n'); c.settimeout(2); data = c.recv(16)
    except OSError:
        data = b''
    c.close()
    if data.startswith(b'quit'): break
emit({'name': 'peers', 'ok': True, 'value': peers})
`),
    );
    let quitSent = false;
    try {
      const [nsA, ipA] = await netnsIp(prefix, existing);
      // control: A's server is up and reachable from the host
      let banner = '';
      for (let i = 0; i < 50 && !banner.includes('hako-a'); i++) {
        banner = await hostConnect(ipA, portA, 'ping').catch(() => '');
        if (!banner.includes('hako-a')) await sleep(100);
      }
      assert.match(banner, /hako-a/, `control: the host cannot reach sandbox A at ${ipA}:${portA}`);

      const { p } = await probeRun(
        ['--network', 'egress', '--workspace', wsB, '--disk', '256m'],
        String.raw`
A_IP, PA, GW, PROXY = ${q(ipA)}, ${portA}, ${q(host.gateway)}, ${host.proxyPort}
[MARK] = ${hexList([markA])}
seen = []
for x in os.listdir('/proc'):
    if x.isdigit():
        try:
            if MARK in read_file('/proc/%s/cmdline' % x): seen.append(x)
        except OSError: pass
emit({'name': 'a_processes', 'ok': True, 'value': seen})
emit({'name': 'sweep', 'ok': True, 'value': grep_tree(${hexList([secretName, secretA, nsA])})})
emit({'name': 'proc_roots', 'ok': True, 'value': sorted(set(os.readlink('/proc/%s/root' % x) for x in os.listdir('/proc') if x.isdigit()))})
probe('state_dir', lambda: os.listdir(${q(host.stateDir)}))
probe('workspace_store', lambda: os.listdir(${q(join(host.stateDir, 'workspaces'))}))
def proxy_connect(target):
    s = socket.create_connection((GW, PROXY), timeout=5)
    s.sendall(('CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' % (target, target)).encode())
    line = s.recv(64).decode(errors='replace').split('\r\n')[0]
    s.close()
    return line
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((GW, 9)); MY_IP = s.getsockname()[0]; s.close()
emit({'name': 'my_ip', 'ok': True, 'value': MY_IP})
parallel([
    ('connect_a', lambda: connect(A_IP, PA)),
    ('proxy_to_a', lambda: proxy_connect('%s:%d' % (A_IP, PA))),
    ('spoof_a_to_proxy', lambda: connect(GW, PROXY, source=A_IP, freebind=True)),
    ('proxy_control', lambda: connect(GW, PROXY)),
])
`,
      );
      assert.deepEqual(p.get('a_processes')?.value, [], "sandbox B sees sandbox A's processes");
      assert.deepEqual(p.get('sweep')?.value, [], "sandbox B found sandbox A's workspace");
      assert.deepEqual(p.get('proc_roots')?.value, ['/'], 'a process with another root is visible');
      expectErrno(p, 'state_dir', 'ENOENT', 'listing the hako state dir');
      expectErrno(p, 'workspace_store', 'ENOENT', 'listing the workspace store');
      expectErrno(p, 'connect_a', ['ETIMEDOUT', 'EHOSTUNREACH'], "connecting to sandbox A's port directly");
      assert.match(
        String(expectOk(p, 'proxy_to_a', 'CONNECT through the proxy')),
        / 403 /,
        'proxy to sandbox A',
      );
      // IP_FREEBIND lets the bind through, but without IP_TRANSPARENT (CAP_NET_ADMIN) no route takes a
      // foreign source address
      expectErrno(
        p,
        'spoof_a_to_proxy',
        ['ENETUNREACH', 'ETIMEDOUT', 'EADDRNOTAVAIL', 'EHOSTUNREACH'],
        "posing as A's address",
      );
      expectOk(p, 'proxy_control', 'connecting to the proxy port');
      const ipB = String(p.get('my_ip')?.value);

      await hostConnect(ipA, portA, 'quit');
      quitSent = true;
      const a = await runA;
      assert.equal(a.code, 0, `sandbox A: ${a.stderr}`);
      const peers = parseProbes(a.stdout).get('peers')?.value as string[];
      assert.ok(peers.length >= 2, `control: A saw the host's connections: ${JSON.stringify(peers)}`);
      assert.ok(!peers.includes(ipB), `sandbox B (${ipB}) reached sandbox A`);
      assert.ok(!readdirSync(wsB).includes(secretName), "A's secret appeared in B's workspace");
      assert.equal(readFileSync(join(wsA, secretName), 'utf8'), `${secretA}\n`, "A's workspace changed");
    } finally {
      if (!quitSent) {
        await hostConnect(
          (await netnsIp(prefix, existing, 1000).catch(() => ['', '']))[1],
          portA,
          'quit',
        ).catch(() => undefined);
      }
      await runA.catch(() => undefined);
    }
  },
);

// ---------------------------------------------------------------------------------- network

attack(
  'network none: host loopback and host addresses are unreachable; only its own loopback exists',
  async () => {
    const loopBefore = loopTrap.peers.length;
    const anyBefore = anyTrap.peers.length;
    const { p } = await probeRun(
      [],
      String.raw`
srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)
OWN = srv.getsockname()[1]
def own():
    s = socket.create_connection(('127.0.0.1', OWN), timeout=2); c, _ = srv.accept(); c.sendall(b'own\n'); c.close()
    data = s.recv(16); s.close(); return data.decode().strip()
probe('own_loopback', own)
parallel([
    ('host_loopback', lambda: connect('127.0.0.1', ${loopTrap.port})),
    ('host_ipv4', lambda: connect(${q(hostIp4)}, ${anyTrap.port})),
    ('gateway', lambda: connect(${q(host.gateway)}, ${anyTrap.port})),
    ('host_ipv6', lambda: connect((${q(hostIp6 || '::1')}, ${anyTrap.port}, 0, 0), 0, family=socket.AF_INET6)),
])
emit({'name': 'links', 'ok': True, 'value': sorted(os.listdir('/sys/class/net'))})
`,
    );
    assert.equal(expectOk(p, 'own_loopback', 'a server on its own loopback'), 'own');
    expectErrno(p, 'host_loopback', 'ECONNREFUSED', "the host's 127.0.0.1 service");
    expectErrno(p, 'host_ipv4', 'ENETUNREACH', `the host's address ${hostIp4}`);
    expectErrno(p, 'gateway', 'ENETUNREACH', 'the bridge gateway');
    expectErrno(
      p,
      'host_ipv6',
      hostIp6 ? ['ENETUNREACH', 'EADDRNOTAVAIL'] : 'ECONNREFUSED',
      'the host over IPv6',
    );
    assert.deepEqual(p.get('links')?.value, ['lo'], 'network none must have only loopback');
    // control: the host's own connection to the trap works
    assert.match(await hostConnect('127.0.0.1', loopTrap.port), /host-loopback/);
    assert.equal(loopTrap.peers.length, loopBefore + 1, 'the sandbox reached the host loopback service');
    assert.equal(anyTrap.peers.length, anyBefore, 'the sandbox reached a host service');
  },
);

function subnetPeers(t: Trap): string[] {
  const prefix = host.gateway.split('.').slice(0, 3).join('.') + '.';
  return t.peers.filter((a) => a.replace(/^::ffff:/, '').startsWith(prefix));
}

attack(
  'network egress: direct connections to the host, the gateway and beyond fail; raw sockets and address changes are refused',
  async () => {
    const gw6 = linkLocal(host.bridge) ?? 'fe80::1';
    const [a, b, c] = host.gateway.split('.');
    const { p } = await probeRun(
      ['--network', 'egress'],
      String.raw`
GW, PROXY = ${q(host.gateway)}, ${host.proxyPort}
def v6(addr, port):
    info = socket.getaddrinfo(addr, port, socket.AF_INET6, socket.SOCK_STREAM)[0][4]
    return connect(info, 0, family=socket.AF_INET6)
parallel([
    ('host_loopback', lambda: connect('127.0.0.1', ${loopTrap.port})),
    ('gateway_bound_port', lambda: connect(GW, ${gwTrap.port})),
    ('gateway_any_port', lambda: connect(GW, ${anyTrap.port})),
    ('gateway_ssh', lambda: connect(GW, 22)),
    ('host_ipv4', lambda: connect(${q(hostIp4)}, ${anyTrap.port})),
    ('host_ipv6', lambda: v6(${q(hostIp6 || '::1')}, ${anyTrap.port})),
    ('gateway_link_local', lambda: v6(${q(`${gw6}%eth0`)}, ${anyTrap.port})),
    ('proxy_control', lambda: connect(GW, PROXY)),
])
def sock(*a):
    s = socket.socket(*a); s.close(); return 'created'
def udp_send(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(3): s.sendto(b'exfil', (addr, port))
    s.close()
    return 'sent'
probe('udp_gateway', lambda: udp_send(GW, ${udp.port}))
probe('udp_host', lambda: udp_send(${q(hostIp4)}, ${udp.port}))
probe('af_packet', lambda: sock(socket.AF_PACKET, socket.SOCK_RAW, 0x0300))
probe('raw_icmp', lambda: sock(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
probe('raw_ipv6', lambda: sock(socket.AF_INET6, socket.SOCK_RAW, 58))
probe('ping_socket', lambda: sock(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP))
def bind(port):
    s = socket.socket(); s.bind(('0.0.0.0', port)); s.close(); return 'bound'
probe('bind_80', lambda: bind(80))
probe('bind_8080', lambda: bind(8080))
cmd('ip_addr_add', ['ip', 'addr', 'add', '${a}.${b}.${c}.77/24', 'dev', 'eth0'])
cmd('ip_addr_del', ['ip', 'addr', 'flush', 'dev', 'eth0'])
cmd('ip_link_mac', ['ip', 'link', 'set', 'eth0', 'address', '02:00:00:00:00:77'])
cmd('ip_link_down', ['ip', 'link', 'set', 'eth0', 'down'])
cmd('ip_route_add', ['ip', 'route', 'add', 'default', 'via', GW])
cmd('ip_neigh_add', ['ip', 'neigh', 'replace', GW, 'lladdr', '02:00:00:00:00:78', 'dev', 'eth0'])
cmd('ip_after', ['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0'])
cmd('route_after', ['ip', '-4', 'route'])
`,
    );
    expectErrno(p, 'host_loopback', 'ECONNREFUSED', "the host's 127.0.0.1 service (own loopback answers)");
    for (const n of ['gateway_bound_port', 'gateway_any_port', 'gateway_ssh']) {
      expectErrno(p, n, ['ETIMEDOUT', 'EHOSTUNREACH'], `a host port on the gateway other than the proxy`);
    }
    expectErrno(
      p,
      'host_ipv4',
      ['ENETUNREACH', 'ETIMEDOUT', 'EHOSTUNREACH'],
      `the host's address ${hostIp4}`,
    );
    expectErrno(
      p,
      'host_ipv6',
      ['ENETUNREACH', 'ETIMEDOUT', 'EHOSTUNREACH', 'EADDRNOTAVAIL', 'ECONNREFUSED'],
      'the host over IPv6',
    );
    expectErrno(
      p,
      'gateway_link_local',
      ['ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'EINVAL'],
      `the gateway's IPv6 link-local address ${gw6}`,
    );
    expectOk(p, 'proxy_control', 'the gateway answers on the proxy port');
    // sending UDP cannot fail visibly to the gateway (it is on-link); the host must simply not get it
    expectOk(p, 'udp_gateway', 'sending UDP to the gateway');
    expectErrno(p, 'udp_host', ['ENETUNREACH', 'EHOSTUNREACH'], `UDP to the host's address ${hostIp4}`);
    expectErrno(p, 'af_packet', 'EPERM', 'AF_PACKET raw socket (ARP spoofing)');
    expectErrno(p, 'raw_icmp', 'EPERM', 'raw IPv4 socket');
    expectErrno(p, 'raw_ipv6', 'EPERM', 'raw IPv6 socket');
    expectErrno(p, 'ping_socket', 'EACCES', 'unprivileged ICMP socket');
    expectErrno(p, 'bind_80', 'EACCES', 'binding a port below 1024');
    expectOk(p, 'bind_8080', 'binding a high port');
    for (const n of [
      'ip_addr_add',
      'ip_addr_del',
      'ip_link_mac',
      'ip_link_down',
      'ip_route_add',
      'ip_neigh_add',
    ]) {
      expectCmdFails(p, n, /Operation not permitted/, 'changing the interface, routes or neighbours');
    }
    assert.doesNotMatch(String(p.get('ip_after')?.value), /\.77\//, 'an address was added');
    assert.doesNotMatch(String(p.get('route_after')?.value), /default/, 'a default route was added');
    await sleep(200);
    for (const t of [gwTrap, anyTrap, loopTrap, udp]) {
      assert.deepEqual(
        subnetPeers(t),
        [],
        `a host service was reached from the sandbox subnet on port ${t.port}`,
      );
    }
  },
);

test('egress proxy: an --allow-ed 127.0.0.1:PORT and gateway:PORT answer 200; everything else is 403', async () => {
  const gw = host.gateway;
  const before = {
    unlisted: httpUnlisted.peers.length,
    allowed: httpAllowed.peers.length,
    gw: httpGw.peers.length,
  };
  const curl = (name: string, args: string[]): string =>
    `cmd(${q(name)}, ['curl', '-sS', '-m', '5', '-w', '\\n%{http_code}', ${args.map(q).join(', ')}])`;
  const { p, r } = await probeRun(
    [
      '--network',
      'egress',
      '--allow',
      `127.0.0.1:${httpAllowed.port}`,
      '--allow',
      `${gw}:${httpGw.port}`,
      '--allow',
      `localhost:${httpUnlisted.port}`,
    ],
    [
      curl('allowed_loopback', [`http://127.0.0.1:${httpAllowed.port}/`]),
      curl('allowed_gateway', [`http://${gw}:${httpGw.port}/`]),
      curl('tunnel_allowed', ['-p', `http://127.0.0.1:${httpAllowed.port}/`]),
      curl('unlisted_loopback', [`http://127.0.0.1:${httpUnlisted.port}/`]),
      curl('name_to_loopback', [`http://localhost:${httpUnlisted.port}/`]),
      curl('gateway_other_port', [`http://${gw}:${gwTrap.port}/`]),
      curl('host_address', [`http://${hostIp4}:${anyTrap.port}/`]),
      curl('tunnel_unlisted', ['-p', `http://127.0.0.1:${httpUnlisted.port}/`]),
      curl('tunnel_gateway_other', ['-p', `http://${gw}:${gwTrap.port}/`]),
      curl('bypass_proxy', ['--noproxy', '*', '-m', '2', `http://127.0.0.1:${httpAllowed.port}/`]),
      curl('unspecified_address', [`http://0.0.0.0:${httpUnlisted.port}/`]),
      curl('ipv6_loopback', [`http://[::1]:${httpUnlisted.port}/`]),
      curl('ipv4_mapped', [`http://[::ffff:127.0.0.1]:${httpUnlisted.port}/`]),
      curl('decimal_ip', [`http://2130706433:${httpUnlisted.port}/`]),
      // an origin-form request whose Host header names an unlisted destination
      String.raw`
def origin_form(host_header):
    s = socket.create_connection((${q(gw)}, ${host.proxyPort}), timeout=5)
    s.sendall(('GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' % host_header).encode())
    data = b''
    while True:
        chunk = s.recv(4096)
        if not chunk: break
        data += chunk
    s.close()
    return data.decode(errors='replace')
probe('origin_form_host', lambda: origin_form('127.0.0.1:${httpUnlisted.port}'))`,
    ].join('\n'),
  );
  const body = (n: string): string => String(p.get(n)?.detail ?? '');
  for (const [n, token] of [
    ['allowed_loopback', tokenAllowed],
    ['allowed_gateway', tokenGw],
    ['tunnel_allowed', tokenAllowed],
  ] as const) {
    expectOk(p, n, `an allowed destination through the proxy`);
    assert.match(body(n), new RegExp(`${token}\\s+200$`), `${n}: ${body(n)}`);
  }
  for (const n of [
    'unlisted_loopback',
    'name_to_loopback',
    'gateway_other_port',
    'host_address',
    'unspecified_address',
    'ipv6_loopback',
    'ipv4_mapped',
    'decimal_ip',
  ]) {
    assert.match(body(n), /\s403$/, `${n}: expected 403 from the proxy, got ${body(n)}`);
    assert.doesNotMatch(body(n), new RegExp(`${tokenUnlisted}|host-`), `${n}: the destination answered`);
  }
  for (const n of ['tunnel_unlisted', 'tunnel_gateway_other']) {
    expectCmdFails(p, n, /403/, 'a CONNECT tunnel to an unlisted destination');
  }
  const origin = String(expectOk(p, 'origin_form_host', 'talking to the proxy directly'));
  assert.match(origin, /^HTTP\/1\.1 4\d\d/, `an origin-form request must be refused: ${origin}`);
  assert.ok(!origin.includes(tokenUnlisted), 'the Host header steered the proxy to an unlisted destination');
  expectCmdFails(p, 'bypass_proxy', /Failed to connect|Couldn't connect|refused/i, 'going around the proxy');
  assert.equal(httpUnlisted.peers.length, before.unlisted, 'the unlisted server was reached');
  assert.ok(httpAllowed.peers.length >= before.allowed + 2, 'control: the allowed server saw the requests');
  assert.ok(httpGw.peers.length >= before.gw + 1, 'control: the gateway server saw the request');
  assert.deepEqual(subnetPeers(gwTrap), [], 'the gateway-bound service was reached');
  assert.ok((r.stderr.match(/egress denied/g) ?? []).length >= 10, `the proxy logs denials: ${r.stderr}`);
});

// ----------------------------------------------------------------------------------- limits

function cgroupFiles(name: string): string[] {
  const root = `/sys/fs/cgroup/pids/hako/${host.hakoEnv}`;
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((d) => d.startsWith(`hako-${host.hakoEnv}-`))
    .map((d) => join(root, d, name))
    .filter((f) => existsSync(f));
}

attack(
  'fork bomb: --pids 64 bounds it, fork fails with EAGAIN, the host stays responsive, the CLI returns',
  async () => {
    const { p } = await probeRun(
      ['--pids', '64'],
      String.raw`
kids, err = [], None
for i in range(1000):
    try:
        pid = os.fork()
    except OSError as e:
        err = errno.errorcode.get(e.errno); break
    if pid == 0:
        time.sleep(30); os._exit(0)
    kids.append(pid)
emit({'name': 'forks', 'ok': True, 'value': [len(kids), err]})
for k in kids: os.kill(k, 9)
for k in kids: os.waitpid(k, 0)
`,
    );
    const [forks, err] = p.get('forks')?.value as [number, string | null];
    assert.equal(err, 'EAGAIN', `fork must fail with EAGAIN at the limit (made ${forks} children)`);
    assert.ok(forks < 64 && forks > 32, `children made before the limit: ${forks}`);

    // the classic shell bomb, killed by --timeout. bash, not dash: dash exits (2) when its own
    // fork fails, so under load the top-level shell could end the bomb before the timeout; bash
    // reports the failed fork and goes on to the busy loop.
    const t0 = Date.now();
    const bomb = sandbox(
      ['--pids', '64', '--timeout', '5s'],
      ['bash', '-c', 'b() { b | b & }; b; while :; do :; done'],
    );
    let maxPids = 0;
    let worstLatency = 0;
    let done = false;
    void bomb.finally(() => (done = true));
    while (!done) {
      // pids.peak (kernel 6.1+) keeps the high-water mark between samples; the bomb's bursts are
      // shorter than the sampling interval, so pids.current alone can miss them
      const peaks = cgroupFiles('pids.peak');
      for (const f of peaks.length > 0 ? peaks : cgroupFiles('pids.current')) {
        maxPids = Math.max(maxPids, Number(readFileSync(f, 'utf8').trim()) || 0);
      }
      const s = Date.now();
      const r = await runHost('true', []);
      assert.equal(r.code, 0, 'the host could not start a process during the bomb');
      worstLatency = Math.max(worstLatency, Date.now() - s);
      await sleep(200);
    }
    const r = await bomb;
    const elapsed = Date.now() - t0;
    assert.equal(r.code, 124, `the bomb must end by --timeout (124): ${r.stderr}`);
    assert.ok(elapsed < 30_000, `the CLI took ${elapsed} ms to return`);
    assert.ok(maxPids > 32 && maxPids <= 64, `pids.current peaked at ${maxPids} (limit 64)`);
    assert.ok(worstLatency < 3000, `the host took ${worstLatency} ms to start a process during the bomb`);
  },
);

attack(
  'memory bomb: killed at --memory with exit 137 and the OOM line; tmpfs cannot be used to get around it',
  async () => {
    const r = await sandbox(
      ['--memory', '64m'],
      py(String.raw`
chunks = []
for i in range(128):
    chunks.append(bytearray(b'\x01') * (8 << 20))
    print('allocated %d MiB' % ((i + 1) * 8), flush=True)
print('survived', flush=True)
`),
    );
    assert.equal(r.code, 137, `exit ${r.code}: ${r.stderr}`);
    assert.match(r.stderr, /^hako: sandbox killed: out of memory \(limit 64 MiB\)$/m);
    assert.doesNotMatch(r.stdout, /survived/);
    const last = Number(/allocated (\d+) MiB\s*$/.exec(r.stdout)?.[1] ?? 0);
    assert.ok(last <= 64, `the sandbox held ${last} MiB with a 64 MiB limit`);

    // tmpfs pages are charged to the sandbox: a /dev/shm larger than --memory does not add memory
    const t = await sandbox(
      ['--memory', '64m', '--tmp', '512m'],
      py(String.raw`
n, err = fill('/dev/shm/fill', limit=400 << 20)
print('filled %d %s' % (n, err), flush=True)
`),
    );
    const filled = /filled (\d+) (\S+)/.exec(t.stdout);
    if (t.code === 137) {
      assert.match(t.stderr, /out of memory \(limit 64 MiB\)/, t.stderr);
    } else {
      assert.ok(filled, `tmpfs fill: exit ${t.code} ${t.stdout} ${t.stderr}`);
      assert.notEqual(filled[2], 'None', 'writing 400 MiB to /dev/shm succeeded with --memory 64m');
      assert.ok(Number(filled[1]) <= 72 << 20, `/dev/shm took ${filled[1]} bytes with --memory 64m`);
    }
  },
);

attack(
  'disk: /workspace stops at --disk with ENOSPC (bytes and inodes); /tmp, /var/tmp, /dev/shm, HOME stop at --tmp',
  async () => {
    const freeBefore = freeBytes('/var/tmp');
    let minFree = freeBefore;
    let done = false;
    const run = probeRun(
      ['--disk', '16m', '--tmp', '8m', '--memory', '256m'],
      String.raw`
n = 0; err = None
os.mkdir('/workspace/many')
try:
    while n < 200000:
        open('/workspace/many/%d' % n, 'w').close(); n += 1
except OSError as e:
    err = errno.errorcode.get(e.errno)
emit({'name': 'inodes', 'ok': True, 'value': [n, err]})
import shutil; shutil.rmtree('/workspace/many')
emit({'name': 'workspace', 'ok': True, 'value': fill('/workspace/fill', limit=768 << 20)})
for d in ['/tmp', '/var/tmp', '/dev/shm', '/home/sandbox']:
    emit({'name': d, 'ok': True, 'value': fill(d + '/fill', limit=256 << 20)})
time.sleep(1.5)
`,
    );
    void run.finally(() => (done = true));
    while (!done) {
      minFree = Math.min(minFree, freeBytes('/var/tmp'));
      await sleep(100);
    }
    const { p } = await run;
    const [inodes, inodeErr] = p.get('inodes')?.value as [number, string];
    assert.equal(inodeErr, 'ENOSPC', `creating files in /workspace stopped with ${inodeErr} after ${inodes}`);
    assert.ok(inodes < 200_000, `${inodes} files fit in a 16 MiB workspace`);
    const [ws, wsErr] = p.get('workspace')?.value as [number, string];
    assert.equal(wsErr, 'ENOSPC', `filling /workspace stopped with ${wsErr} after ${ws} bytes`);
    assert.ok(ws <= 16 << 20 && ws >= 8 << 20, `/workspace took ${ws} bytes with --disk 16m`);
    for (const d of ['/tmp', '/var/tmp', '/dev/shm', '/home/sandbox']) {
      const [n, e] = p.get(d)?.value as [number, string];
      assert.equal(e, 'ENOSPC', `filling ${d} stopped with ${e} after ${n} bytes`);
      assert.ok(n <= 8 << 20 && n >= 4 << 20, `${d} took ${n} bytes with --tmp 8m`);
    }
    const used = freeBefore - minFree;
    assert.ok(used < 256 << 20, `the host disk lost ${used} bytes while the sandbox was full`);
  },
);

// ------------------------------------------------------------------------ devices and kernel

attack(
  'raw devices: no disk, memory or kernel log devices; mknod fails; the device cgroup allows only the basics',
  async () => {
    assert.ok(readdirSync('/sys/firmware').length > 0, 'control: the host has /sys/firmware entries');
    const { p } = await probeRun(
      [],
      String.raw`
import stat
emit({'name': 'dev', 'ok': True, 'value': sorted(os.listdir('/dev'))})
for d in ['/dev/vda', '/dev/sda', '/dev/nvme0n1', '/dev/mem', '/dev/kmem', '/dev/port', '/dev/kmsg', '/dev/loop0', '/dev/loop-control', '/dev/net/tun', '/dev/fuse', '/dev/vsock', '/dev/kvm']:
    probe('open:' + d, lambda d=d: os.close(os.open(d, os.O_RDWR)))
probe('mknod_mem', lambda: os.mknod('/tmp/mem', 0o600 | stat.S_IFCHR, os.makedev(1, 1)))
probe('mknod_disk', lambda: os.mknod('/workspace/vda', 0o600 | stat.S_IFBLK, os.makedev(254, 0)))
probe('mknod_in_dev', lambda: os.mknod('/dev/hako-mem', 0o600 | stat.S_IFCHR, os.makedev(1, 1)))
probe('proc_kmsg', lambda: read_file('/proc/kmsg', 64))
probe('proc_kcore', lambda: read_file('/proc/kcore', 4096))
probe('sysrq_trigger', lambda: write_file('/proc/sysrq-trigger', b'h'))
probe('sys_firmware', lambda: os.listdir('/sys/firmware'))
probe('timer_list', lambda: read_file('/proc/timer_list'))
probe('proc_keys', lambda: read_file('/proc/keys'))
probe('sys_kernel_debug', lambda: os.listdir('/sys/kernel/debug'))
probe('devices_list', lambda: read_file('/sys/fs/cgroup/devices/devices.list'))
cmd('dmesg', ['dmesg'])
probe('dev_null', lambda: write_file('/dev/null'))
probe('dev_urandom', lambda: len(open('/dev/urandom', 'rb').read(16)))
`,
    );
    // crun adds `core` (a symlink to /proc/kcore, which is masked); runc does not
    const devAllowed = [
      'core',
      'fd',
      'full',
      'mqueue',
      'null',
      'ptmx',
      'pts',
      'random',
      'shm',
      'stderr',
      'stdin',
      'stdout',
      'tty',
      'urandom',
      'zero',
    ];
    const dev = p.get('dev')?.value as string[];
    assert.deepEqual(
      dev.filter((e) => !devAllowed.includes(e)),
      [],
      `unexpected /dev entries: ${dev.join(' ')}`,
    );
    for (const e of ['null', 'zero', 'urandom', 'pts', 'shm'])
      assert.ok(dev.includes(e), `/dev/${e} is missing`);
    for (const d of [
      'vda',
      'sda',
      'nvme0n1',
      'mem',
      'kmem',
      'port',
      'kmsg',
      'loop0',
      'loop-control',
      'net/tun',
      'fuse',
      'vsock',
      'kvm',
    ]) {
      expectErrno(p, `open:/dev/${d}`, 'ENOENT', `opening /dev/${d}`);
    }
    expectErrno(p, 'mknod_mem', 'EPERM', 'mknod of /dev/mem (1:1)');
    expectErrno(p, 'mknod_disk', 'EPERM', 'mknod of the host disk (254:0)');
    expectErrno(p, 'mknod_in_dev', ['EPERM', 'EACCES'], 'mknod in /dev');
    expectErrno(p, 'proc_kmsg', ['EACCES', 'EPERM'], 'reading the kernel log via /proc/kmsg');
    const kcore = p.get('proc_kcore');
    assert.ok(
      (kcore && !kcore.ok && ['ENOENT', 'EACCES', 'EPERM'].includes(kcore.errno ?? '')) ||
        kcore?.value === '',
      `/proc/kcore must be absent or masked: ${JSON.stringify(kcore)}`,
    );
    expectErrno(p, 'sysrq_trigger', ['ENOENT', 'EROFS', 'EACCES'], 'writing /proc/sysrq-trigger');
    assert.deepEqual(
      expectOk(p, 'sys_firmware', '/sys/firmware is listable'),
      [],
      '/sys/firmware must be masked',
    );
    assert.equal(
      expectOk(p, 'timer_list', 'reading /proc/timer_list'),
      '',
      '/proc/timer_list must be masked',
    );
    assert.equal(expectOk(p, 'proc_keys', 'reading /proc/keys'), '', '/proc/keys must be masked');
    assert.deepEqual(
      expectOk(p, 'sys_kernel_debug', 'listing /sys/kernel/debug'),
      [],
      'debugfs must be masked',
    );
    // 10:200 (/dev/net/tun) is on every runc/crun list; its node is absent (ENOENT above), mknod is
    // EPERM and using it needs CAP_NET_ADMIN
    const allowed = new Set([
      'c 1:3',
      'c 1:5',
      'c 1:7',
      'c 1:8',
      'c 1:9',
      'c 5:0',
      'c 5:1',
      'c 5:2',
      'c 136:*',
      'c 10:200',
    ]);
    for (const line of String(expectOk(p, 'devices_list', 'reading devices.list'))
      .trim()
      .split('\n')) {
      const [type, nums, access] = line.split(' ');
      if (access === 'm') continue; // mknod only: needs CAP_MKNOD, which no sandbox process has
      assert.ok(allowed.has(`${type} ${nums}`), `the device cgroup allows ${line}`);
    }
    expectCmdFails(p, 'dmesg', /Operation not permitted/, 'dmesg (syslog)');
    expectOk(p, 'dev_null', 'writing /dev/null');
    assert.equal(expectOk(p, 'dev_urandom', 'reading /dev/urandom'), 16);
  },
);

attack(
  'kernel knobs: /proc/sys, sysfs and cgroup files are read-only; hostname and clock cannot be set',
  async () => {
    const procKnobs = [
      '/proc/sys/kernel/core_pattern',
      '/proc/sys/kernel/modprobe',
      '/proc/sys/kernel/hostname',
      '/proc/sys/vm/drop_caches',
      '/proc/sys/net/ipv4/ip_forward',
      '/proc/sys/net/ipv4/ip_unprivileged_port_start',
      '/proc/sys/fs/suid_dumpable',
    ].filter((f) => existsSync(f));
    assert.ok(
      procKnobs.length >= 5,
      `this kernel lacks the sysctls the test writes: ${procKnobs.join(', ')}`,
    );
    const knobs = [
      ...procKnobs,
      '/sys/kernel/mm/transparent_hugepage/enabled',
      '/sys/fs/cgroup/pids/pids.max',
      '/sys/fs/cgroup/memory/memory.limit_in_bytes',
      '/sys/fs/cgroup/memory/cgroup.procs',
      '/sys/fs/cgroup/memory/notify_on_release',
    ];
    const hostValues = procKnobs
      .filter((f) => !f.endsWith('drop_caches'))
      .map((f) => [f, readFileSync(f, 'utf8')] as const);
    const hostName = osHostname();
    const wall0 = Date.now();
    const mono0 = performance.now();
    const { p } = await probeRun(
      [],
      String.raw`
for k in ${JSON.stringify(knobs)}:
    probe('write:' + k, lambda k=k: write_file(k, b'|/tmp/pwn %p\n' if 'core_pattern' in k else b'0\n'))
probe('mkdir_cgroup', lambda: os.mkdir('/sys/fs/cgroup/memory/escape'))
probe('cgroup_tmpfs', lambda: write_file('/sys/fs/cgroup/hako-evil'))
probe('binfmt_register', lambda: write_file('/proc/sys/fs/binfmt_misc/register', b':x:E::x::/tmp/x:'))
before = read_file('/proc/sys/kernel/hostname').strip()
cmd('hostname', ['hostname', 'pwned-${tag}'])
probe('sethostname', lambda: sc('sethostname', b'pwned', 5))
probe('hostname_after', lambda: read_file('/proc/sys/kernel/hostname').strip() == before)
cmd('date_set', ['date', '-s', '@%d' % int(time.time())])
ts = struct.pack('qq', int(time.time()), 0)
probe('clock_settime', lambda: sc('clock_settime', 0, ts))
probe('settimeofday', lambda: sc('settimeofday', struct.pack('qq', int(time.time()), 0), None))
probe('adjtimex', lambda: sc('adjtimex', ctypes.create_string_buffer(512)))
probe('oom_score_adj_lower', lambda: write_file('/proc/self/oom_score_adj', b'-1000'))
probe('oom_score_adj_raise', lambda: write_file('/proc/self/oom_score_adj', b'1000'))
emit({'name': 'mountinfo', 'ok': True, 'value': read_file('/proc/self/mountinfo')})
`,
    );
    for (const k of knobs) expectErrno(p, `write:${k}`, ['EROFS', 'EACCES'], `writing ${k}`);
    expectErrno(p, 'mkdir_cgroup', ['EROFS', 'EACCES'], 'creating a cgroup');
    expectErrno(p, 'cgroup_tmpfs', ['EROFS', 'EACCES'], 'writing into /sys/fs/cgroup');
    expectErrno(p, 'binfmt_register', ['ENOENT', 'EROFS', 'EACCES'], 'registering a binfmt_misc handler');
    expectCmdFails(p, 'hostname', /not permitted|must be root/i, 'hostname(1)');
    expectErrno(p, 'sethostname', 'EPERM', 'sethostname');
    assert.equal(expectOk(p, 'hostname_after', 'reading the hostname back'), true, 'the hostname changed');
    expectCmdFails(p, 'date_set', /not permitted/i, 'date -s');
    expectErrno(p, 'clock_settime', 'EPERM', 'clock_settime(CLOCK_REALTIME)');
    expectErrno(p, 'settimeofday', 'EPERM', 'settimeofday');
    expectErrno(p, 'adjtimex', 'EPERM', 'adjtimex');
    expectErrno(p, 'oom_score_adj_lower', 'EACCES', 'lowering oom_score_adj below the sandbox default');
    expectOk(p, 'oom_score_adj_raise', 'raising its own oom_score_adj');
    for (const dir of [
      '/proc/sys',
      '/sys',
      '/sys/fs/cgroup',
      '/sys/fs/cgroup/memory',
      '/sys/fs/cgroup/pids',
    ]) {
      const line = mountAt(p.get('mountinfo')?.value, dir);
      assert.ok(mountHas(line, 'ro'), `${dir} must be read-only: ${line}`);
    }
    for (const [f, v] of hostValues) assert.equal(readFileSync(f, 'utf8'), v, `host ${f} changed`);
    assert.equal(osHostname(), hostName, 'the host hostname changed');
    const drift = Date.now() - wall0 - (performance.now() - mono0);
    assert.ok(Math.abs(drift) < 2000, `the host clock jumped by ${drift} ms`);
  },
);

attack(
  'package installs: system site-packages, /usr/local and dpkg are read-only; pip --user goes to HOME',
  async () => {
    const distBefore = readdirSync('/usr/lib/python3/dist-packages').length;
    const dpkgBefore = sha256File('/var/lib/dpkg/status');
    const { p } = await probeRun(
      [],
      String.raw`
import zipfile, glob
whl = '/workspace/hakoevil-1.0-py3-none-any.whl'
with zipfile.ZipFile(whl, 'w') as z:
    z.writestr('hakoevil/__init__.py', 'PWNED = True\n')
    z.writestr('hakoevil-1.0.dist-info/METADATA', 'Metadata-Version: 2.1\nName: hakoevil\nVersion: 1.0\n')
    z.writestr('hakoevil-1.0.dist-info/WHEEL', 'Wheel-Version: 1.0\nGenerator: hako\nRoot-Is-Purelib: true\nTag: py3-none-any\n')
    z.writestr('hakoevil-1.0.dist-info/RECORD', '')
PIP = ['python3', '-m', 'pip', 'install', '--no-index', '--no-deps', '--disable-pip-version-check', '--break-system-packages']
cmd('pip_system', PIP + ['--target', '/usr/lib/python3/dist-packages', whl])
cmd('pip_prefix', PIP + ['--prefix', '/usr/local', whl])
cmd('pip_user', PIP + ['--user', whl])
cmd('import_user', ['python3', '-c', 'import hakoevil; print(hakoevil.__file__)'])
site = glob.glob('/usr/local/lib/python3*/dist-packages')[0]
probe('pth_system', lambda: write_file('/usr/lib/python3/dist-packages/hakoevil.pth', b'import os\n'))
probe('pth_local', lambda: write_file(site + '/hakoevil.pth', b'import os\n'))
probe('usr_local_bin', lambda: write_file('/usr/local/bin/hakoevil'))
cmd('apt_get', ['apt-get', 'install', '-y', '--no-download', 'hakoevil'])
cmd('dpkg', ['dpkg', '-i', whl])
probe('dpkg_status', lambda: write_file('/var/lib/dpkg/status', b'', 'ab'))
`,
    );
    expectCmdFails(
      p,
      'pip_system',
      /Read-only file system|Permission denied/,
      'pip install into system site-packages',
    );
    expectCmdFails(
      p,
      'pip_prefix',
      /Read-only file system|Permission denied/,
      'pip install --prefix /usr/local',
    );
    expectOk(p, 'pip_user', 'pip install --user');
    assert.match(
      String(expectOk(p, 'import_user', 'importing the user install')),
      /^\/home\/sandbox\/\.local\//,
    );
    expectErrno(p, 'pth_system', 'EROFS', 'a .pth file in system dist-packages');
    expectErrno(p, 'pth_local', 'EROFS', 'a .pth file in /usr/local dist-packages');
    expectErrno(p, 'usr_local_bin', 'EROFS', 'a program in /usr/local/bin');
    expectCmdFails(p, 'apt_get', /Permission denied|are you root|Read-only/i, 'apt-get install');
    expectCmdFails(p, 'dpkg', /superuser|Read-only|Permission denied/i, 'dpkg -i');
    expectErrno(p, 'dpkg_status', ['ENOENT', 'EROFS'], "writing dpkg's database");
    assert.equal(
      readdirSync('/usr/lib/python3/dist-packages').length,
      distBefore,
      'system dist-packages changed',
    );
    assert.ok(
      !existsSync('/usr/lib/python3/dist-packages/hakoevil'),
      'the package landed in system dist-packages',
    );
    assert.equal(sha256File('/var/lib/dpkg/status'), dpkgBefore, "the host's dpkg database changed");
  },
);

// -------------------------------------------------------------------------- workspace mirroring

test('workspace copy-back: symlinks, swapped directories, setuid bits and hard links never reach host files', async () => {
  const ws = workspace('links');
  symlinkSync('/etc/shadow', join(ws, 'shadow-link'));
  symlinkSync(rootSecretPath, join(ws, 'secret-link'));
  const shadowBefore = sha256File('/etc/shadow');
  const first = await probeRun(
    ['--workspace', ws],
    String.raw`
probe('read_shadow_link', lambda: read_file('/workspace/shadow-link'))
probe('read_secret_link', lambda: read_file('/workspace/secret-link'))
os.symlink('/etc/shadow', '/workspace/evil')
os.symlink(${q(copyTargetDir)}, '/workspace/esc')
os.symlink('../../../..', '/workspace/up')
probe('hardlink_host_file', lambda: os.link('/etc/passwd', '/workspace/pw'))
probe('hardlink_usr', lambda: os.link('/usr/bin/su', '/workspace/su'))
write_file('/workspace/a', b'a'); probe('hardlink_inside', lambda: os.link('/workspace/a', '/workspace/b'))
cmd('setuid_copy', ['sh', '-c', 'cp /usr/bin/id /workspace/suid && chmod 6755 /workspace/suid && mkdir /workspace/sgid && chmod 2777 /workspace/sgid && stat -c %a /workspace/suid'])
probe('fifo', lambda: os.mkfifo('/workspace/fifo'))
`,
  );
  expectErrno(first.p, 'read_shadow_link', 'ENOENT', 'following a host-made symlink to /etc/shadow');
  expectErrno(first.p, 'read_secret_link', 'ENOENT', 'following a host-made symlink to a root secret');
  expectErrno(first.p, 'hardlink_host_file', 'EXDEV', 'hard-linking /etc/passwd into the workspace');
  expectErrno(first.p, 'hardlink_usr', 'EXDEV', 'hard-linking /usr/bin/su into the workspace');
  expectOk(first.p, 'hardlink_inside', 'a hard link inside the workspace');
  assert.equal(String(expectOk(first.p, 'setuid_copy', 'setting setuid in the workspace')).trim(), '6755');
  expectErrno(first.p, 'fifo', 'EPERM', 'a FIFO in the workspace');

  const evil = lstatSync(join(ws, 'evil'));
  assert.ok(evil.isSymbolicLink(), 'the symlink came back as something else');
  assert.equal(readlinkSync(join(ws, 'evil')), '/etc/shadow');
  assert.ok(lstatSync(join(ws, 'esc')).isSymbolicLink(), 'esc came back as something else');
  const suid = statSync(join(ws, 'suid'));
  assert.equal(suid.mode & 0o6000, 0, `setuid/setgid came back to the host: ${suid.mode.toString(8)}`);
  assert.equal(suid.uid, UID, 'a sandbox file came back owned by another uid');
  assert.equal(statSync(join(ws, 'sgid')).mode & 0o2000, 0, 'a setgid directory came back');
  assert.ok(!existsSync(join(ws, 'fifo')), 'a FIFO came back');
  for (const f of readdirSync(ws)) {
    const st = lstatSync(join(ws, f));
    if (st.isFile())
      assert.ok(!readFileSync(join(ws, f), 'utf8').includes(rootSecret), `${f} holds a host secret`);
  }

  // second run: swap the symlink for a directory and write through the old name
  const second = await probeRun(
    ['--workspace', ws],
    String.raw`
probe('write_through_esc', lambda: write_file('/workspace/esc/through'))
os.unlink('/workspace/esc'); os.mkdir('/workspace/esc'); write_file('/workspace/esc/pwned', b'pwned')
os.unlink('/workspace/evil'); os.mkdir('/workspace/evil'); write_file('/workspace/evil/x', b'pwned')
probe('write_through_up', lambda: write_file('/workspace/up/hako-up-${tag}'))
`,
  );
  expectErrno(second.p, 'write_through_esc', 'ENOENT', 'writing through a symlink to a host directory');
  expectErrno(second.p, 'write_through_up', ['EROFS', 'EACCES'], 'writing through a symlink to /');
  assert.deepEqual(
    readdirSync(copyTargetDir),
    [],
    'the copy-back wrote into the host directory the symlink named',
  );
  assert.equal(sha256File('/etc/shadow'), shadowBefore, '/etc/shadow changed');
  assert.ok(lstatSync(join(ws, 'esc')).isDirectory(), 'control: the directory came back');
  assert.equal(readFileSync(join(ws, 'esc/pwned'), 'utf8'), 'pwned');
  assert.ok(!existsSync(`/hako-up-${tag}`), 'a file appeared at the host root');
});

test('workspace copy-back: sparse files and hard links cannot multiply the --disk limit on the host disk', async () => {
  const ws = workspace('amplify');
  const { p } = await probeRun(
    ['--disk', '16m', '--workspace', ws],
    String.raw`
with open('/workspace/sparse', 'wb') as f:
    f.truncate(512 << 20)
write_file('/workspace/data', os.urandom(4 << 20))
for i in range(16): os.link('/workspace/data', '/workspace/link%d' % i)
st = os.statvfs('/workspace')
emit({'name': 'used', 'ok': True, 'value': (st.f_blocks - st.f_bfree) * st.f_frsize})
`,
  );
  const used = p.get('used')?.value as number;
  assert.ok(used <= 8 << 20, `control: the files take ${used} bytes inside the sandbox`);
  assert.equal(statSync(join(ws, 'sparse')).size, 512 << 20, 'control: the sparse file came back');
  assert.equal(readdirSync(ws).length, 18, 'control: every file came back');
  const du = await runHost('du', ['-s', '-B1', ws]);
  const allocated = Number(du.stdout.split(/\s/)[0]);
  assert.ok(
    allocated <= 32 << 20,
    `a 16 MiB workspace took ${allocated} bytes of host disk on copy-back ` +
      '(sparse files materialised and hard links copied: rsync needs --sparse, --hard-links and a size cap)',
  );
});

test('workspace copy-back: sparse files far beyond --disk are refused (QUOTA_EXCEEDED), the host dir untouched', async () => {
  const ws = workspace('sparsecap');
  writeFileSync(join(ws, 'keep.txt'), 'before\n');
  // 2 x 200 MiB of holes in a 4 MiB workspace: over 64x the limit, reading them back is unbounded work
  const r = await sandbox(
    ['--disk', '4m', '--workspace', ws],
    [
      'python3',
      '-c',
      "[open('/workspace/s%d' % i, 'wb').truncate(200 << 20) for i in range(2)]; open('/workspace/keep.txt', 'w').write('after')",
    ],
  );
  assert.equal(r.code, 125, r.stderr);
  assert.match(
    r.stderr,
    /^hako: \[QUOTA_EXCEEDED\] the workspace's files add up to \d+ bytes \(sparse files\)/m,
  );
  assert.deepEqual(readdirSync(ws), ['keep.txt'], 'nothing of the refused workspace may reach the host');
  assert.equal(readFileSync(join(ws, 'keep.txt'), 'utf8'), 'before\n');
  // control: the same holes within 64x the limit come back (sparse, see the test above)
  const ok = await sandbox(
    ['--disk', '16m', '--workspace', ws],
    ['python3', '-c', "open('/workspace/s0', 'wb').truncate(200 << 20)"],
  );
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(statSync(join(ws, 's0')).size, 200 << 20);
});

// ------------------------------------------------------------------------------ runtime escape

attack(
  '/proc/self/exe and the runtime: not writable, no runtime process or leaked host fd is visible',
  async () => {
    const { p } = await probeRun(
      [],
      String.raw`
probe('self_exe_write', lambda: os.close(os.open('/proc/self/exe', os.O_WRONLY)))
probe('init_exe_write', lambda: os.close(os.open('/proc/1/exe', os.O_WRONLY)))
probe('self_exe_trunc', lambda: os.close(os.open('/proc/self/exe', os.O_WRONLY | os.O_TRUNC)))
exes, fds = {}, {}
for x in os.listdir('/proc'):
    if not x.isdigit(): continue
    try: exes[x] = os.readlink('/proc/%s/exe' % x)
    except OSError as e: exes[x] = 'error:' + str(e.errno)
    try: fds[x] = {fd: os.readlink('/proc/%s/fd/%s' % (x, fd)) for fd in os.listdir('/proc/%s/fd' % x)}
    except OSError: pass
emit({'name': 'exes', 'ok': True, 'value': exes})
emit({'name': 'fds', 'ok': True, 'value': fds})
emit({'name': 'cwd', 'ok': True, 'value': os.readlink('/proc/1/cwd')})
`,
    );
    for (const n of ['self_exe_write', 'init_exe_write', 'self_exe_trunc']) {
      expectErrno(p, n, ['ETXTBSY', 'EROFS', 'EACCES'], 'opening the running binary for writing');
    }
    const exes = p.get('exes')?.value as Record<string, string>;
    for (const [pid, exe] of Object.entries(exes)) {
      assert.match(exe, /^\/usr\//, `process ${pid} runs ${exe}`);
      assert.doesNotMatch(exe, /runc|crun|memfd/, `a runtime process is visible: ${pid} ${exe}`);
    }
    const fds = p.get('fds')?.value as Record<string, Record<string, string>>;
    for (const [pid, links] of Object.entries(fds)) {
      for (const [fd, target] of Object.entries(links)) {
        assert.ok(
          /^(socket|pipe|anon_inode):/.test(target) || /^\/(dev|proc)\//.test(target),
          `process ${pid} holds fd ${fd} -> ${target} (a leaked host file descriptor?)`,
        );
      }
    }
    assert.equal(p.get('cwd')?.value, '/workspace');
    assert.deepEqual(RUNTIME_BINARIES.map(sha256File), runtimeHashesBefore, 'a host runtime binary changed');
  },
);

test('teardown leaves nothing behind', async () => {
  await host.teardown();
  assert.deepEqual(host.leftovers(), []);
});
