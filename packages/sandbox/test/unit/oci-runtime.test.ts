import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { pino } from 'pino';
import { AppError } from '@hako/core';
import { OciCliRuntime } from '../../src/oci-runtime.js';

const logger = pino({ level: 'silent' });

/** A runtime that joins the sandbox cgroups, driving the fake binary in `dir`. */
function joining(name: 'crun' | 'runsc', dir: string): OciCliRuntime {
  return new OciCliRuntime({ name, binary: fakeRuntime(dir), root: '/r', logger, joinCgroups: true });
}

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'hako-rt-'));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A fake runtime binary that records its argv and the files its pid was written to. */
function fakeRuntime(dir: string): string {
  const bin = join(dir, 'crun');
  writeFileSync(bin, `#!/bin/sh\nprintf '%s\\n' "$$" "$@" > ${join(dir, 'argv')}\n`);
  chmodSync(bin, 0o755);
  return bin;
}

test('crun without cgroup management joins the given cgroup.procs files before it runs', () =>
  withTmp(async (dir) => {
    const rt = joining('crun', dir);
    assert.equal(rt.keepsContainerAfterRun, false);
    const procs = [join(dir, 'memory.procs'), join(dir, 'pids procs with space')];
    const child = rt.run('c1', '/bundle', 'ignore', procs);
    const [code] = (await once(child, 'exit')) as [number];
    assert.equal(code, 0);
    const argv = readFileSync(join(dir, 'argv'), 'utf8').trim().split('\n');
    const pid = argv[0];
    assert.deepEqual(argv.slice(1), [
      '--root',
      '/r',
      '--cgroup-manager=disabled',
      'run',
      '--bundle',
      '/bundle',
      'c1',
    ]);
    for (const p of procs)
      assert.equal(readFileSync(p, 'utf8').trim(), pid, `${p} must hold the runtime's pid`);
    assert.throws(
      () => rt.run('c2', '/bundle', 'ignore', []),
      (e: unknown) => e instanceof AppError && e.code === 'INVALID_ARGUMENT',
    );
    await assert.rejects(
      rt.kill('c1', 'TERM', true),
      (e: unknown) => e instanceof AppError && e.code === 'INVALID_ARGUMENT',
    );
  }));

test('a cgroup.procs write that fails stops the launch with 125 before the runtime runs', () =>
  withTmp(async (dir) => {
    const rt = joining('crun', dir);
    const child = rt.run('c1', '/bundle', 'ignore', [join(dir, 'no/such/dir/cgroup.procs')]);
    const [code] = (await once(child, 'exit')) as [number];
    assert.equal(code, 125);
    assert.throws(() => readFileSync(join(dir, 'argv')), /ENOENT/);
  }));

test('runc keeps its container after run and manages its own cgroups; it cannot join', () => {
  const rt = new OciCliRuntime({ name: 'runc', root: '/r', logger });
  assert.equal(rt.keepsContainerAfterRun, true);
  assert.throws(
    () => new OciCliRuntime({ name: 'runc', root: '/r', logger, joinCgroups: true }),
    (e: unknown) => e instanceof AppError && e.code === 'INVALID_ARGUMENT',
  );
});

test('runsc on v1: cgroups ignored and joined; --network follows whether the spec joins a netns', () =>
  withTmp(async (dir) => {
    const rt = joining('runsc', dir);
    assert.equal(rt.keepsContainerAfterRun, false);
    const procs = [join(dir, 'memory.procs')];
    for (const [netns, mode] of [
      [undefined, 'none'],
      ['/run/netns/hako-x', 'sandbox'],
    ] as const) {
      const bundle = join(dir, `b-${mode}`);
      mkdirSync(bundle);
      const ns = netns ? { type: 'network', path: netns } : { type: 'network' };
      writeFileSync(
        join(bundle, 'config.json'),
        JSON.stringify({ linux: { namespaces: [{ type: 'pid' }, ns] } }),
      );
      const child = rt.run('c1', bundle, 'ignore', procs);
      const [code] = (await once(child, 'exit')) as [number];
      assert.equal(code, 0);
      const argv = readFileSync(join(dir, 'argv'), 'utf8').trim().split('\n').slice(1);
      assert.deepEqual(argv, [
        '--root',
        '/r',
        '--ignore-cgroups',
        '--network',
        mode,
        'run',
        '--bundle',
        bundle,
        'c1',
      ]);
    }
  }));
