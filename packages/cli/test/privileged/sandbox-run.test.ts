/**
 * The `hako sandbox run` contract, through the real CLI binary on a real host: exit codes, stdio,
 * cwd, workspace mirroring, limits, timeout, flag errors, environment, images, gc and doctor.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createTestHost } from '../../../sandbox/test/helpers/test-host.js';
import type { TestHost } from '../../../sandbox/test/helpers/test-host.js';
import { buildOciLayoutTar } from '../../../sandbox/test/helpers/oci-fixture.js';

let host: TestHost;
const tmpDirs: string[] = [];

function tmp(prefix: string): string {
  const d = mkdtempSync(join(tmpdir(), `hako-clitest-${prefix}-`));
  tmpDirs.push(d);
  return d;
}

before(() => {
  host = createTestHost();
});

after(async () => {
  await host.teardown();
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

const run = (args: string[], opts?: { input?: string; extraEnv?: Record<string, string> }) =>
  host.cli(['sandbox', 'run', ...args], opts);

test('the exit code of CMD passes through', async () => {
  const r = await run(['--', 'sh', '-c', 'exit 7']);
  assert.equal(r.code, 7, r.stderr);
  const ok = await run(['--', 'true']);
  assert.equal(ok.code, 0, ok.stderr);
});

test('stdin, stdout and stderr pass through, cwd is /workspace', async () => {
  const r = await run(['--', 'sh', '-c', 'tr a-z A-Z; echo to-stderr >&2; pwd'], {
    input: 'hello sandbox\n',
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'HELLO SANDBOX\n/workspace\n');
  assert.match(r.stderr, /^to-stderr$/m);
});

test('--workspace DIR: files are copied in and written files come back owned by a non-root uid', async () => {
  const ws = tmp('ws');
  writeFileSync(join(ws, 'input.txt'), 'from host\n');
  const r = await run([
    '--workspace',
    ws,
    '--',
    'sh',
    '-c',
    'cat input.txt; echo from sandbox > out.txt; mkdir sub; echo x > sub/y',
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'from host\n');
  assert.equal(readFileSync(join(ws, 'out.txt'), 'utf8'), 'from sandbox\n');
  assert.equal(readFileSync(join(ws, 'sub/y'), 'utf8'), 'x\n');
  const st = statSync(join(ws, 'out.txt'));
  assert.notEqual(st.uid, 0, 'a file written in the sandbox must not be owned by root on the host');
  assert.notEqual(statSync(join(ws, 'sub')).uid, 0);
});

test('memory limit: exceeding --memory kills the sandbox with 137 and says why', async () => {
  const r = await run([
    '--memory',
    '64m',
    '--',
    'python3',
    '-c',
    'x = bytearray(256 * 1024 * 1024); print("survived")',
  ]);
  assert.equal(r.code, 137, r.stderr);
  assert.doesNotMatch(r.stdout, /survived/);
  assert.match(r.stderr, /^hako: sandbox killed: out of memory \(limit 64 MiB\)$/m);
});

test('--timeout kills a long command with 124 and says it timed out', async () => {
  const t0 = Date.now();
  const r = await run(['--timeout', '1s', '--', 'sleep', '10']);
  const elapsed = Date.now() - t0;
  assert.equal(r.code, 124, r.stderr);
  assert.match(r.stderr, /timed out/);
  assert.ok(elapsed < 8000, `timeout took ${elapsed} ms`);
});

test('bad flags exit 2 with usage', async () => {
  for (const args of [
    ['--no-such-flag', '--', 'true'],
    ['--memory', 'lots', '--', 'true'],
    ['--network', 'internet', '--', 'true'],
    ['--timeout', 'soon', '--', 'true'],
    ['--env', 'NOEQUALS', '--', 'true'],
    [],
  ]) {
    const r = await run(args);
    assert.equal(r.code, 2, `args ${JSON.stringify(args)}: code ${r.code} stderr ${r.stderr}`);
    assert.match(r.stderr, /usage: hako sandbox run/, `args ${JSON.stringify(args)}`);
  }
});

test('--env K=V is visible; the environment is only PATH, HOME, LANG and passed vars', async () => {
  const secret = `s3cr3t-${randomBytes(8).toString('hex')}`;
  const r = await run(['--env', 'FOO=bar baz', '--env', 'EMPTY=', '--', 'env', '-0'], {
    extraEnv: { SECRET: secret, AWS_SECRET_ACCESS_KEY: secret },
  });
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!r.stdout.includes(secret), 'launcher secret leaked into the sandbox');
  const vars = new Map(
    r.stdout
      .split('\0')
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as const),
  );
  assert.equal(vars.get('FOO'), 'bar baz');
  assert.equal(vars.get('EMPTY'), '');
  assert.equal(vars.get('LANG'), 'C.UTF-8');
  assert.ok(vars.get('PATH')?.includes('/usr/bin'));
  assert.ok(vars.get('HOME')?.startsWith('/'));
  // PWD is set by nothing we control only if the shell sets it; env(1) run directly does not.
  const allowed = new Set(['PATH', 'HOME', 'LANG', 'FOO', 'EMPTY', 'PWD']);
  const extra = [...vars.keys()].filter((k) => !allowed.has(k));
  assert.deepEqual(extra, [], `unexpected variables in the sandbox: ${extra.join(', ')}`);
  for (const k of ['SECRET', 'AWS_SECRET_ACCESS_KEY', 'HAKO_ENV', 'HAKO_STATE_DIR', 'CNI_SUBNET']) {
    assert.ok(!vars.has(k), `${k} leaked`);
  }
});

test('--image with an unknown name fails with IMAGE_NOT_FOUND', async () => {
  const r = await run(['--image', `nosuch-${randomBytes(3).toString('hex')}:1`, '--', 'true']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /IMAGE_NOT_FOUND/);
});

test('an imported OCI image runs as the root filesystem (busybox layer)', async () => {
  assert.ok(
    existsSync('/usr/bin/busybox'),
    '/usr/bin/busybox is missing: apt-get install -y busybox-static (scripts/setup installs it)',
  );
  const dir = tmp('img');
  const name = `bbtest${randomBytes(3).toString('hex')}:1`;
  const marker = `marker-${randomBytes(6).toString('hex')}`;
  const { tarPath } = await buildOciLayoutTar(dir, {
    layers: [
      [
        { path: 'bin', type: 'dir' },
        { path: 'bin/busybox', type: 'file', content: readFileSync('/usr/bin/busybox'), mode: 0o755 },
        { path: 'bin/sh', type: 'symlink', linkname: 'busybox' },
        { path: 'bin/cat', type: 'symlink', linkname: 'busybox' },
        { path: 'bin/ls', type: 'symlink', linkname: 'busybox' },
        { path: 'etc', type: 'dir' },
        { path: 'etc/marker', type: 'file', content: `${marker}\n` },
      ],
    ],
    config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] },
    refName: name,
  });
  const imp = await host.cli(['image', 'import', tarPath, '--name', name]);
  assert.equal(imp.code, 0, `image import: ${imp.stderr}`);
  try {
    const list = await host.cli(['image', 'list']);
    assert.equal(list.code, 0, list.stderr);
    assert.ok(list.stdout.includes(name.split(':')[0] ?? name), list.stdout);
    const r = await run([
      '--image',
      name,
      '--',
      '/bin/sh',
      '-c',
      'cat /etc/marker; ls /usr/bin/python3 2>&1 || echo no-host-usr; pwd',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines[0], marker, r.stdout);
    assert.ok(lines.includes('no-host-usr'), `the host's /usr leaked into an imported image: ${r.stdout}`);
    assert.equal(lines.at(-1), '/workspace');
  } finally {
    await host.cli(['image', 'rm', name]);
  }
});

test('every runtime usable on this host keeps the contract: exit code, OOM line, timeout, cleanup', async () => {
  const doctor = await host.cli(['doctor']);
  const usable = ['crun', 'runc'].filter((rt) =>
    new RegExp(`^OK\\s+runtime ${rt}\\b`, 'm').test(doctor.stdout),
  );
  assert.ok(usable.includes('runc'), `runc must be usable on every supported host:\n${doctor.stdout}`);
  for (const rt of usable) {
    const code = await run(['--runtime', rt, '--', 'sh', '-c', 'exit 5']);
    assert.equal(code.code, 5, `${rt}: ${code.stderr}`);
    const oom = await run([
      '--runtime',
      rt,
      '--memory',
      '48m',
      '--',
      'python3',
      '-c',
      'x = bytearray(200 * 2**20)',
    ]);
    assert.equal(oom.code, 137, `${rt}: ${oom.stderr}`);
    assert.match(oom.stderr, /^hako: sandbox killed: out of memory \(limit 48 MiB\)$/m, rt);
    // the host's cgroup tree (other sandboxes' cgroups) is not visible through /sys/fs/cgroup
    const tree = await run([
      '--runtime',
      rt,
      '--',
      'sh',
      '-c',
      'find /sys/fs/cgroup -maxdepth 3 -type d \\( -name "hako*" -o -name "libpod*" -o -name "system.slice" \\) 2>/dev/null; test -r /sys/fs/cgroup/memory/memory.limit_in_bytes && echo limit-readable',
    ]);
    assert.equal(tree.code, 0, `${rt}: ${tree.stderr}`);
    // control: the sandbox's own memory limit is readable
    assert.equal(tree.stdout, 'limit-readable\n', `${rt}: host cgroups visible: ${tree.stdout}`);
    const slow = await run(['--runtime', rt, '--timeout', '1s', '--', 'sh', '-c', 'sleep 30 & sleep 30']);
    assert.equal(slow.code, 124, `${rt}: ${slow.stderr}`);
  }
});

test('hako gc --dry-run and hako gc exit 0', async () => {
  const dry = await host.cli(['gc', '--dry-run']);
  assert.equal(dry.code, 0, dry.stderr);
  const gc = await host.cli(['gc']);
  assert.equal(gc.code, 0, gc.stderr);
});

test('hako doctor prints OK lines and exits 0 on this host', async () => {
  const r = await host.cli(['doctor']);
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout + r.stderr, /\bOK\b/i);
});

test('teardown leaves nothing behind', async () => {
  await host.teardown();
  assert.deepEqual(host.leftovers(), []);
});
