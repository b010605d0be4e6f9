/**
 * Disk quotas against the real kernel: a sandbox user filling its workspace gets ENOSPC at the
 * limit, the host's disk does not grow past it, other workspaces are unaffected, inode floods are
 * bounded, and remove() and the test's own teardown leave no mount or loop device behind.
 *
 * The per-sandbox image engine (LoopQuotaManager) runs everywhere. XFS project quotas run where
 * the kernel supports them; on a kernel built without CONFIG_XFS_QUOTA the test asserts that
 * XfsQuotaManager refuses cleanly (QUOTA_UNAVAILABLE, nothing mounted or created) and that the
 * factory picks the image engine instead.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, statSync, utimesSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AppError, silentLogger } from '@hako/core';
import { newSandboxId, resourceName } from '../../src/names.js';
import { readMountInfo } from '../../src/mount-info.js';
import { LoopQuotaManager } from '../../src/quota-loop.js';
import {
  XfsQuotaManager,
  detectXfsQuotaSupport,
  inodeLimitFor,
  projectIdCandidates,
} from '../../src/quota-xfs.js';
import type { QuotaManagerOptions } from '../../src/quota-xfs.js';
import { chooseQuotaEngine, createQuotaManager } from '../../src/quota.js';
import type { QuotaManager } from '../../src/types.js';

const execFileP = promisify(execFile);
const MiB = 1024 * 1024;
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function rand(n: number): string {
  let s = '';
  while (s.length < n)
    s += randomBytes(8)
      .toString('hex')
      .replace(/[^a-z0-9]/g, '');
  return s.slice(0, n);
}

function newOptions(): QuotaManagerOptions {
  return {
    env: `t${rand(6)}`,
    stateDir: `/var/tmp/hako-test-${rand(10)}`,
    volumeBytes: 300 * MiB,
    logger: silentLogger(),
  };
}

async function sh(cmd: string, args: string[]): Promise<string> {
  const { stdout } = await execFileP(cmd, args, { env: { PATH, LC_ALL: 'C' } });
  return stdout;
}

/**
 * Runs a node script as uid:gid with its cwd in `dir` (entered before the uid switch, as a sandbox
 * gets its workspace by a bind mount: the root-only parents of `dir` stay closed to it). The script
 * prints one JSON line.
 */
async function runAs(
  uid: number,
  gid: number,
  dir: string,
  script: string,
  arg: string,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script, arg], {
      uid,
      gid,
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      try {
        resolve({ ...(JSON.parse(out.trim()) as Record<string, unknown>), exitCode: code });
      } catch {
        reject(new Error(`child exited ${String(code)}: ${out} ${err}`));
      }
    });
  });
}

/** Writes up to `n` MiB into `dir/file`, reporting how far it got and the errno that stopped it. */
const WRITE_SCRIPT = `
const fs = require('node:fs');
const [file, mib] = process.argv[1].split('|');
const buf = Buffer.alloc(1024 * 1024, 120);
let written = 0, code = null, message = null;
try {
  const fd = fs.openSync(file, 'w');
  try {
    for (let i = 0; i < Number(mib); i++) {
      let off = 0;
      while (off < buf.length) off += fs.writeSync(fd, buf, off);
      written += buf.length;
    }
    fs.fsyncSync(fd);
  } finally { fs.closeSync(fd); }
} catch (e) { code = e.code; message = e.message; }
console.log(JSON.stringify({ written, code, message }));
`;

/** Creates empty files until something fails (or `max`), reporting the count and the errno. */
const INODE_SCRIPT = `
const fs = require('node:fs');
const max = process.argv[1];
let created = 0, code = null, message = null;
try {
  for (; created < Number(max); created++) fs.closeSync(fs.openSync('f' + created, 'wx'));
} catch (e) { code = e.code; message = e.message; }
console.log(JSON.stringify({ created, code, message }));
`;

/** Mounts under `root`, deepest first. */
async function mountsUnder(root: string): Promise<string[]> {
  return (await readMountInfo())
    .map((m) => m.mountPoint)
    .filter((p) => p === root || p.startsWith(`${root}/`))
    .sort((a, b) => b.length - a.length);
}

async function imagesUnder(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    const entries = await readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.endsWith('.img') || e.name.endsWith('.img.tmp')) out.push(p);
    }
  };
  await walk(root);
  return out;
}

/** Workspace images only: not the spare volumes the image engine keeps ready in `.pool/`. */
async function workspaceImagesUnder(root: string): Promise<string[]> {
  return (await imagesUnder(root)).filter((p) => !p.includes('/.pool/'));
}

async function loopDevicesFor(image: string): Promise<string[]> {
  const out = await sh('losetup', ['-j', image]);
  return out
    .split('\n')
    .map((l) => l.split(':')[0]?.trim() ?? '')
    .filter((d) => d !== '');
}

/**
 * Tears down everything under a test state dir: unmounts, detaches loop devices, deletes it.
 * Returns the images seen, so callers can assert no loop device refers to them afterwards.
 */
async function teardown(stateDir: string): Promise<string[]> {
  const errors: string[] = [];
  for (const m of await mountsUnder(stateDir)) {
    await sh('umount', [m]).catch(async (e: Error) => {
      errors.push(`umount ${m}: ${e.message}`);
      await sh('umount', ['-l', m]).catch(() => undefined);
    });
  }
  const images = await imagesUnder(stateDir);
  for (const img of images) {
    for (const dev of await loopDevicesFor(img).catch(() => [])) {
      await sh('losetup', ['-d', dev]).catch((e: Error) => errors.push(`losetup -d ${dev}: ${e.message}`));
    }
  }
  await rm(stateDir, { recursive: true, force: true });
  if (errors.length > 0) throw new Error(`teardown: ${errors.join('; ')}`);
  return images;
}

async function assertNothingLeft(stateDir: string, images: readonly string[]): Promise<void> {
  assert.deepEqual(await mountsUnder(stateDir), [], 'nothing may stay mounted under the test state dir');
  for (const img of images)
    assert.deepEqual(await loopDevicesFor(img), [], `no loop device may refer to ${img}`);
  assert.equal(existsSync(stateDir), false, 'the test state dir must be gone');
}

/** Bytes of host disk allocated to files under `root` (st_blocks, so sparse files count what they hold). */
async function allocatedUnder(root: string): Promise<number> {
  await sh('sync', []);
  const mounts = await mountsUnder(root);
  let total = 0;
  const walk = async (d: string): Promise<void> => {
    const entries = await readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) {
        // a mounted workspace or volume is another filesystem: its blocks live in its image file
        if (!mounts.includes(p)) await walk(p);
      } else if (e.isFile()) {
        total += (await stat(p)).blocks * 512;
      }
    }
  };
  await walk(root);
  return total;
}

async function hostFreeBytes(): Promise<number> {
  await sh('sync', []);
  const s = await statfs('/');
  return s.bfree * s.bsize;
}

function newName(env: string): string {
  return resourceName(env, newSandboxId());
}

const UID = 2_000_000 + Math.floor(Math.random() * 100_000);
const GID = UID;

/**
 * The behaviour every engine must have. `engineChecks` adds what is specific to one engine (what
 * is mounted after init(), what remove() frees).
 */
async function quotaBehaviour(
  mgr: QuotaManager,
  opts: QuotaManagerOptions,
  engineChecks: {
    afterInit: () => Promise<void>;
    afterRemove: (name: string, dir: string) => Promise<void>;
  },
): Promise<void> {
  await mgr.init();
  await engineChecks.afterInit();
  const t0 = performance.now();
  await mgr.init();
  const initAgainMs = performance.now() - t0;
  assert.ok(initAgainMs < 100, `init() when ready should be fast, took ${initAgainMs.toFixed(1)} ms`);

  // --- a 20 MiB workspace: filling it stops at the limit with ENOSPC
  const full = newName(opts.env);
  const fullDir = await mgr.create(full, 20 * MiB, UID, GID);
  const st = await stat(fullDir);
  assert.equal(st.uid, UID);
  assert.equal(st.gid, GID);
  assert.equal(st.mode & 0o777, 0o700);
  assert.deepEqual(await mgr.list(), [full]);

  const freeBefore = await hostFreeBytes();
  const allocatedBefore = await allocatedUnder(opts.stateDir);
  const r = await runAs(UID, GID, fullDir, WRITE_SCRIPT, 'big|50');
  assert.equal(
    r.code,
    'ENOSPC',
    `writing 50 MiB into a 20 MiB workspace must fail with ENOSPC: ${JSON.stringify(r)}`,
  );
  assert.match(String(r.message), /no space left on device/i);
  const written = Number(r.written);
  assert.ok(written <= 20 * MiB, `wrote ${written} bytes, more than the 20 MiB limit`);
  assert.ok(written >= 15 * MiB, `wrote only ${written} bytes before ENOSPC; the limit should allow ~20 MiB`);

  const u = await mgr.usage(full);
  assert.ok(Math.abs(u.limitBytes - 20 * MiB) <= 0.03 * 20 * MiB, `limit ${u.limitBytes} should be ~20 MiB`);
  assert.ok(u.usedBytes >= 15 * MiB && u.usedBytes <= 21 * MiB, `used ${u.usedBytes} should be ~20 MiB`);

  // What the write cost the host: exactly, the blocks allocated under the state dir; and df of /
  // (other processes write too, so with a tolerance well below the 50 MiB attempted).
  const allocated = (await allocatedUnder(opts.stateDir)) - allocatedBefore;
  assert.ok(
    allocated >= 15 * MiB && allocated <= 22 * MiB,
    `the state dir grew by ${allocated} bytes on the host; the ~20 MiB written must land there, no more`,
  );
  const grown = freeBefore - (await hostFreeBytes());
  assert.ok(
    grown < 45 * MiB,
    `host / lost ${grown} bytes; the quota should hold it near 20 MiB, not the 50 attempted`,
  );

  // --- another workspace is unaffected by the full one
  const other = newName(opts.env);
  const otherDir = await mgr.create(other, 20 * MiB, UID, GID);
  const r2 = await runAs(UID, GID, otherDir, WRITE_SCRIPT, 'data|5');
  assert.equal(r2.code, null, `a second workspace must still accept writes: ${JSON.stringify(r2)}`);
  assert.equal(r2.written, 5 * MiB);
  const u2 = await mgr.usage(other);
  assert.ok(u2.usedBytes >= 5 * MiB && u2.usedBytes < 7 * MiB, `second workspace used ${u2.usedBytes}`);

  // --- an inode flood is bounded
  const flood = newName(opts.env);
  const floodBytes = 8 * MiB;
  const floodDir = await mgr.create(flood, floodBytes, UID, GID);
  const limit = inodeLimitFor(floodBytes);
  const r3 = await runAs(UID, GID, floodDir, INODE_SCRIPT, String(limit * 4));
  assert.equal(
    r3.code,
    'ENOSPC',
    `creating ${limit * 4} files must stop at the inode limit: ${JSON.stringify(r3)}`,
  );
  assert.ok(Number(r3.created) <= limit, `created ${String(r3.created)} files, over the limit of ${limit}`);
  assert.ok(Number(r3.created) >= limit * 0.9, `created only ${String(r3.created)} of ${limit} files`);

  assert.deepEqual(await mgr.list(), [full, other, flood].sort());

  // --- remove deletes the directory and frees what the engine allocated; twice is fine
  for (const [name, dir] of [
    [full, fullDir],
    [other, otherDir],
    [flood, floodDir],
  ] as const) {
    await mgr.remove(name);
    assert.equal(existsSync(dir), false, `${dir} must be gone after remove()`);
    await engineChecks.afterRemove(name, dir);
    await mgr.remove(name);
  }
  assert.deepEqual(await mgr.list(), []);
  await assert.rejects(
    mgr.usage(full),
    (e: unknown) => e instanceof AppError && e.code === 'SANDBOX_NOT_FOUND',
  );

  // --- bad names are refused before anything touches the disk
  await assert.rejects(
    mgr.create('../../etc', MiB, UID, GID),
    (e: unknown) => e instanceof AppError && e.code === 'INVALID_ARGUMENT',
  );
  await assert.rejects(
    mgr.create(`hako-other-${newSandboxId()}`, MiB, UID, GID),
    (e: unknown) => e instanceof AppError && e.code === 'INVALID_ARGUMENT',
  );

  // --- concurrent creates get distinct, working workspaces
  const many = Array.from({ length: 6 }, () => newName(opts.env));
  const dirs = await Promise.all(many.map((n) => mgr.create(n, 4 * MiB, UID, GID)));
  assert.equal(new Set(dirs).size, many.length);
  assert.deepEqual(await mgr.list(), [...many].sort());
  await Promise.all(many.map((n) => mgr.remove(n)));
  assert.deepEqual(await mgr.list(), []);

  // --- the hot path: create()+remove() (256 MiB: the volume is 300 MiB)
  const rounds = 10;
  let createMs = 0;
  let removeMs = 0;
  for (let i = 0; i < rounds; i++) {
    const n = newName(opts.env);
    const a = performance.now();
    await mgr.create(n, 256 * MiB, UID, GID);
    const b = performance.now();
    await mgr.remove(n);
    createMs += b - a;
    removeMs += performance.now() - b;
  }
  console.log(
    `# ${mgr.constructor.name}: create() ${(createMs / rounds).toFixed(1)} ms, remove() ${(removeMs / rounds).toFixed(1)} ms (mean of ${rounds}, 256 MiB limit)`,
  );
}

test('per-sandbox image engine: limits, isolation, inode bound, clean removal', async () => {
  const opts = newOptions();
  const mgr = new LoopQuotaManager(opts);
  let images: string[] = [];
  try {
    await quotaBehaviour(mgr, opts, {
      afterInit: async () => {
        assert.deepEqual(await mountsUnder(opts.stateDir), [], 'init() mounts nothing for the image engine');
      },
      afterRemove: async (name, dir) => {
        // remove() takes the volume away at once; unmounting and deleting it is background work
        const volume = join(opts.stateDir, 'workspaces', opts.env, name);
        assert.equal(existsSync(volume), false, 'the volume directory must be gone from the name');
        assert.equal((await mountsUnder(opts.stateDir)).includes(dir), false, `${dir} must be unmounted`);
        await mgr.close();
        const trash = join(opts.stateDir, 'workspaces', opts.env, '.trash');
        assert.deepEqual(await readdir(trash), [], 'recycling empties the trash');
        assert.deepEqual(
          (await mountsUnder(opts.stateDir)).filter((m) => m.includes('/.trash/')),
          [],
          'nothing in the trash stays mounted',
        );
        assert.deepEqual(
          (await workspaceImagesUnder(opts.stateDir)).filter((p) => p.includes(name)),
          [],
          'the image file must be deleted',
        );
      },
    });

    // The volume size bounds the sum of all limits; a refused create leaves nothing behind.
    const big = newName(opts.env);
    await assert.rejects(
      mgr.create(big, 400 * MiB, UID, GID),
      (e: unknown) => e instanceof AppError && e.code === 'QUOTA_EXCEEDED',
    );
    assert.deepEqual(await mgr.list(), []);
    await mgr.close();
    assert.deepEqual(await workspaceImagesUnder(opts.stateDir), []);

    // A stale image (e.g. after a reboot: not mounted) is listed and removed.
    const stale = newName(opts.env);
    await mgr.create(stale, 4 * MiB, UID, GID);
    await sh('umount', [mgr.pathFor(stale)]);
    assert.deepEqual(await mgr.list(), [stale]);
    await mgr.remove(stale);
    assert.deepEqual(await mgr.list(), []);
    await mgr.close();
    assert.deepEqual(await workspaceImagesUnder(opts.stateDir), []);

    // `hako gc` drops the spares: nothing of the env stays mounted
    assert.ok((await mgr.drainSpares(true)) > 0, 'spares were kept ready');
    assert.ok((await mgr.drainSpares()) > 0);
    assert.deepEqual(await mountsUnder(opts.stateDir), [], 'no spare or trashed volume stays mounted');
    assert.deepEqual(await imagesUnder(opts.stateDir), [], 'no image file is left');
  } finally {
    images = await teardown(opts.stateDir);
  }
  await assertNothingLeft(opts.stateDir, images);
});

test('XFS project quotas: enforced where the kernel supports them, refused cleanly where not', async () => {
  const opts = newOptions();
  const mgr = new XfsQuotaManager(opts);
  const support = await detectXfsQuotaSupport();
  let images: string[] = [];
  try {
    if (support.supported === false) {
      await assert.rejects(mgr.init(), (e: unknown) => {
        assert.ok(e instanceof AppError);
        assert.equal(e.code, 'QUOTA_UNAVAILABLE');
        assert.match(e.message, /CONFIG_XFS_QUOTA/);
        return true;
      });
      assert.deepEqual(await mountsUnder(opts.stateDir), []);
      assert.equal(existsSync(mgr.imagePath), false, 'no volume image is made when quotas cannot work');
      assert.equal((await chooseQuotaEngine()).engine, 'loop');
      const chosen = await createQuotaManager(opts);
      assert.ok(chosen instanceof LoopQuotaManager, 'the factory must pick the image engine on this kernel');
      console.log(`# XFS project quotas unavailable here (${support.detail}); asserted the clean refusal`);
      return;
    }
    await quotaBehaviour(mgr, opts, {
      afterInit: async () => {
        const mounts = (await readMountInfo()).filter((m) => m.mountPoint === mgr.mountPoint);
        assert.equal(mounts.length, 1, 'the volume is mounted once');
        assert.equal(mounts[0]?.fsType, 'xfs');
        assert.ok(mounts[0]?.superOptions.includes('prjquota'), 'mounted with enforced project quotas');
        assert.ok(mounts[0]?.mountOptions.includes('nodev') && mounts[0].mountOptions.includes('nosuid'));
      },
      afterRemove: async (name) => {
        const key = `${opts.env}/${name}`;
        for (const id of projectIdCandidates(key)) {
          const claim = await readFile(join(mgr.mountPoint, '.projects', String(id)), 'utf8').catch(() => '');
          assert.notEqual(claim.trim(), key, `project id ${id} must be freed`);
        }
      },
    });

    // After an unmount (a reboot), init() mounts the existing volume again and keeps its data.
    await mkdir(join(mgr.mountPoint, 'keep'));
    await sh('umount', [mgr.mountPoint]);
    await mgr.init();
    assert.equal(existsSync(join(mgr.mountPoint, 'keep')), true, 'init() must remount, not reformat');
  } finally {
    images = await teardown(opts.stateDir);
  }
  await assertNothingLeft(opts.stateDir, images);
});

test('per-sandbox image engine: mounted spares are claimed once, empty, enforced, and race-safe', async () => {
  const opts = newOptions();
  const mgr = new LoopQuotaManager(opts);
  const envDir = join(opts.stateDir, 'workspaces', opts.env);
  const poolDir = join(envDir, '.pool');
  const sparesOfKind = async (bytes: number): Promise<Map<number, string>> => {
    const m = new Map<number, string>();
    for (const f of await readdir(poolDir).catch(() => [] as string[])) {
      if (f.startsWith(`${bytes}-${UID}-${GID}-`) && !f.endsWith('.tmp'))
        m.set(statSync(join(poolDir, f)).ino, f);
    }
    return m;
  };
  let images: string[] = [];
  try {
    const first = newName(opts.env);
    const firstDir = await mgr.create(first, 8 * MiB, UID, GID);
    await writeFile(join(firstDir, 'secret.txt'), 'from the first sandbox\n');
    await mgr.close(); // the refill it asked for is done
    const spares = await sparesOfKind(8 * MiB);
    assert.equal(spares.size, 2, 'two spares of the asked-for kind');
    assert.equal((await readdir(poolDir)).filter((f) => f.endsWith('.tmp')).length, 0);
    const mounted = (await readMountInfo()).map((m) => m.mountPoint);
    for (const f of spares.values())
      assert.ok(mounted.includes(join(poolDir, f, 'fs')), `spare ${f} is mounted`);
    await mgr.remove(first);

    // the next create claims one of them by rename: the same directory, gone from the pool
    const second = newName(opts.env);
    const dir = await mgr.create(second, 8 * MiB, UID, GID);
    assert.equal(dir, join(envDir, second, 'fs'));
    assert.ok(spares.has(statSync(join(envDir, second)).ino), 'the volume must be a claimed spare');
    assert.ok(
      (await readMountInfo()).some((m) => m.mountPoint === dir),
      'its mount moved with it',
    );
    assert.deepEqual(await readdir(dir), [], 'a claimed spare is an empty filesystem');
    const st = statSync(dir);
    assert.equal(st.uid, UID);
    assert.equal(st.mode & 0o777, 0o700);
    // the limit holds on a spare exactly as on a freshly made volume
    await assert.rejects(writeFile(join(dir, 'big'), Buffer.alloc(9 * MiB, 1)), /ENOSPC/);
    await mgr.close();
    assert.ok(
      !(await sparesOfKind(8 * MiB)).has(statSync(join(envDir, second)).ino),
      'a claimed spare is never offered again',
    );
    // a name that has a volume is refused, and the spare it would have taken stays in the pool
    const before = (await sparesOfKind(8 * MiB)).size;
    await assert.rejects(
      mgr.create(second, 8 * MiB, UID, GID),
      (e: unknown) => e instanceof AppError && e.code === 'SANDBOX_ALREADY_EXISTS',
    );
    assert.equal((await sparesOfKind(8 * MiB)).size, before);

    // concurrent creates never share a spare (two are ready: the third builds its own)
    const names = [newName(opts.env), newName(opts.env), newName(opts.env)];
    const dirs = await Promise.all(names.map((n) => mgr.create(n, 8 * MiB, UID, GID)));
    const inodes = names.map((n) => statSync(join(envDir, n)).ino);
    assert.equal(new Set(inodes).size, 3);
    assert.equal(new Set(dirs).size, 3);
    for (const n of [second, ...names]) await mgr.remove(n);
    await mgr.close();

    // a half-built spare left by a dead process is recycled by the next init()
    const stale = join(poolDir, `${8 * MiB}-${UID}-${GID}-deadbeef.tmp`);
    await mkdir(join(stale, 'fs'), { recursive: true });
    await writeFile(join(stale, 'disk.img'), '');
    const old = new Date(Date.now() - 5 * 60_000);
    utimesSync(stale, old, old);
    const next = new LoopQuotaManager(opts);
    await next.init();
    await next.close();
    assert.equal(existsSync(stale), false);
    assert.deepEqual(await readdir(join(envDir, '.trash')), []);
    assert.deepEqual(await mgr.list(), []);
  } finally {
    await mgr.close().catch(() => undefined);
    images = await teardown(opts.stateDir);
  }
  await assertNothingLeft(opts.stateDir, images);
});
