import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { AppError, silentLogger } from '@hako/core';
import { applyLayer, ensureDirInRoot, entryPathComponents } from '../../src/layer-unpack.js';
import { buildLayerTar } from '../helpers/oci-fixture.js';
import type { FixtureEntry } from '../helpers/oci-fixture.js';

const logger = silentLogger();

/**
 * A temp base with `rootfs/` (where layers go) and `outside/` (host files a layer must never
 * touch): outside/secret, outside/target, and an empty outside/dir.
 */
async function withBase(
  fn: (b: { base: string; root: string; outside: string }) => Promise<void>,
): Promise<void> {
  const base = await mkdtemp(join(tmpdir(), 'hako-layer-'));
  try {
    const root = join(base, 'rootfs');
    const outside = join(base, 'outside');
    await mkdir(root);
    await mkdir(join(outside, 'dir'), { recursive: true });
    await writeFile(join(outside, 'secret'), 'host secret\n');
    await writeFile(join(outside, 'target'), 'host target\n');
    await fn({ base, root, outside });
  } finally {
    await rm(base, { recursive: true, force: true });
  }
}

async function apply(root: string, entries: FixtureEntry[]): Promise<void> {
  await applyLayer(root, Readable.from([await buildLayerTar(entries)]), { logger, label: 'test' });
}

/** The outside directory is exactly as withBase() made it. */
async function assertOutsideUnchanged(outside: string): Promise<void> {
  assert.deepEqual((await readdir(outside)).sort(), ['dir', 'secret', 'target']);
  assert.deepEqual(await readdir(join(outside, 'dir')), []);
  assert.equal(await readFile(join(outside, 'secret'), 'utf8'), 'host secret\n');
  assert.equal(await readFile(join(outside, 'target'), 'utf8'), 'host target\n');
  assert.equal((await stat(join(outside, 'secret'))).nlink, 1);
  assert.equal((await stat(join(outside, 'target'))).nlink, 1);
}

async function assertInvalid(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof AppError, `expected AppError, got ${String(err)}`);
    assert.equal(err.code, 'IMAGE_INVALID');
    assert.match(err.message, re);
    return true;
  });
}

async function listTree(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(dir)).sort()) {
    const rel = prefix ? `${prefix}/${name}` : name;
    const st = await lstat(join(dir, name));
    out.push(st.isDirectory() ? `${rel}/` : rel);
    if (st.isDirectory()) out.push(...(await listTree(join(dir, name), rel)));
  }
  return out;
}

test('entryPathComponents normalises and rejects escapes', () => {
  assert.deepEqual(entryPathComponents('./usr//bin/./ls'), ['usr', 'bin', 'ls']);
  assert.deepEqual(entryPathComponents('./'), []);
  assert.throws(() => entryPathComponents('../etc/passwd'), /escape/);
  assert.throws(() => entryPathComponents('usr/../../etc'), /escape/);
  assert.throws(() => entryPathComponents('/etc/passwd'), /absolute/);
  assert.throws(() => entryPathComponents('a\0b'), /NUL/);
});

test('files, dirs, symlinks and hardlinks keep content, mode (incl. setuid), owner and mtime', async () => {
  await withBase(async ({ root }) => {
    const mtime = new Date('2021-05-06T07:08:09Z');
    await apply(root, [
      { path: 'usr/', type: 'dir', mode: 0o755 },
      { path: 'usr/bin/', type: 'dir', mode: 0o750, uid: 12, gid: 34, mtime },
      { path: 'usr/bin/tool', type: 'file', content: 'tool\n', mode: 0o4755, uid: 1234, gid: 2345, mtime },
      { path: 'usr/bin/tool-alias', type: 'hardlink', linkname: 'usr/bin/tool' },
      { path: 'usr/bin/sh', type: 'symlink', linkname: '/usr/bin/tool', uid: 7, gid: 8 },
      { path: 'implicit/parent/file', type: 'file', content: 'x' },
    ]);
    const tool = await stat(join(root, 'usr/bin/tool'));
    assert.equal(tool.mode & 0o7777, 0o4755, 'setuid bit kept');
    assert.equal(tool.uid, 1234);
    assert.equal(tool.gid, 2345);
    assert.equal(tool.mtime.getTime(), mtime.getTime());
    assert.equal(tool.nlink, 2, 'hardlink shares the inode');
    assert.equal((await stat(join(root, 'usr/bin/tool-alias'))).ino, tool.ino);
    assert.equal(await readlink(join(root, 'usr/bin/sh')), '/usr/bin/tool');
    const sh = await lstat(join(root, 'usr/bin/sh'));
    assert.equal(sh.uid, 7);
    assert.equal(sh.gid, 8);
    const bin = await stat(join(root, 'usr/bin'));
    assert.equal(bin.mode & 0o7777, 0o750);
    assert.equal(bin.uid, 12);
    assert.equal(bin.mtime.getTime(), mtime.getTime(), 'dir mtime set after its children were written');
    assert.equal(await readFile(join(root, 'implicit/parent/file'), 'utf8'), 'x');
  });
});

test('whiteouts delete lower-layer files and directories and are not materialised', async () => {
  await withBase(async ({ root }) => {
    await apply(root, [
      { path: 'a/', type: 'dir' },
      { path: 'a/x', type: 'file', content: 'x' },
      { path: 'a/y', type: 'file', content: 'y' },
      { path: 'b/', type: 'dir' },
      { path: 'b/deep/z', type: 'file', content: 'z' },
      { path: 'c', type: 'file', content: 'c' },
      { path: 'link', type: 'symlink', linkname: 'a' },
    ]);
    await apply(root, [
      { path: 'a/.wh.x', type: 'file' },
      { path: '.wh.b', type: 'file' },
      { path: '.wh.c', type: 'file' },
      { path: '.wh.link', type: 'file' },
      { path: '.wh.never-existed', type: 'file' },
      { path: 'c2', type: 'file', content: 'new' },
    ]);
    assert.deepEqual(await listTree(root), ['a/', 'a/y', 'c2']);
  });
});

test("an opaque directory hides everything lower layers put in it, but keeps this layer's entries", async () => {
  await withBase(async ({ root }) => {
    await apply(root, [
      { path: 'd/1', type: 'file', content: '1' },
      { path: 'd/sub/2', type: 'file', content: '2' },
      { path: 'd/keepdir/old', type: 'file', content: 'old' },
      { path: 'e/untouched', type: 'file', content: 'e' },
    ]);
    // the opaque marker comes after some of the layer's own entries: those must survive
    await apply(root, [
      { path: 'd/', type: 'dir' },
      { path: 'd/new', type: 'file', content: 'new' },
      { path: 'd/keepdir/fresh', type: 'file', content: 'fresh' },
      { path: 'd/.wh..wh..opq', type: 'file' },
      { path: 'd/later', type: 'file', content: 'later' },
    ]);
    assert.deepEqual(await listTree(root), [
      'd/',
      'd/keepdir/',
      'd/keepdir/fresh',
      'd/later',
      'd/new',
      'e/',
      'e/untouched',
    ]);
  });
});

test('a whiteout of a directory this layer re-created removes only the lower content', async () => {
  await withBase(async ({ root }) => {
    await apply(root, [{ path: 'w/old', type: 'file', content: 'old' }]);
    await apply(root, [
      { path: 'w/mine', type: 'file', content: 'mine' },
      { path: '.wh.w', type: 'file' },
    ]);
    assert.deepEqual(await listTree(root), ['w/', 'w/mine']);
  });
});

test('"../" entries are rejected and nothing outside the root changes', async () => {
  await withBase(async ({ root, outside }) => {
    await assertInvalid(apply(root, [{ path: '../outside/pwned', type: 'file', content: 'x' }]), /escape/);
    await assertInvalid(
      apply(root, [{ path: 'ok/../../outside/secret', type: 'file', content: 'x' }]),
      /escape/,
    );
    await assertInvalid(apply(root, [{ path: '../outside/.wh.secret', type: 'file' }]), /escape/);
    await assertInvalid(apply(root, [{ path: '../outside/dir/.wh..wh..opq', type: 'file' }]), /escape/);
    await assertOutsideUnchanged(outside);
  });
});

test('absolute entry paths are rejected', async () => {
  await withBase(async ({ root, outside }) => {
    await assertInvalid(
      apply(root, [{ path: join(outside, 'pwned'), type: 'file', content: 'x' }]),
      /absolute/,
    );
    await assertInvalid(
      apply(root, [{ path: join(outside, 'dir') + '/', type: 'dir', mode: 0o777 }]),
      /absolute/,
    );
    await assertOutsideUnchanged(outside);
    assert.equal((await stat(join(outside, 'dir'))).mode & 0o777, 0o755);
  });
});

test('a symlink created earlier is never written, deleted or linked through', async () => {
  await withBase(async ({ root, outside }) => {
    // same layer: symlink then write through it
    await assertInvalid(
      apply(root, [
        { path: 'evil', type: 'symlink', linkname: outside },
        { path: 'evil/pwned', type: 'file', content: 'x' },
      ]),
      /symlink/,
    );
    // lower layer symlink (relative, climbing out), upper layer writes, whiteouts and opaque through it
    await rm(root, { recursive: true });
    await mkdir(root);
    await apply(root, [{ path: 'up', type: 'symlink', linkname: '../outside' }]);
    await assertInvalid(
      apply(root, [{ path: 'up/secret', type: 'file', content: 'overwritten' }]),
      /symlink/,
    );
    await assertInvalid(apply(root, [{ path: 'up/.wh.secret', type: 'file' }]), /symlink/);
    await assertInvalid(apply(root, [{ path: 'up/.wh..wh..opq', type: 'file' }]), /symlink/);
    await assertInvalid(apply(root, [{ path: 'up/dir/new/', type: 'dir' }]), /symlink/);
    await assertOutsideUnchanged(outside);
  });
});

test('an entry replaces a symlink at its own path instead of following it', async () => {
  await withBase(async ({ root, outside }) => {
    await apply(root, [
      { path: 'file', type: 'symlink', linkname: join(outside, 'target') },
      { path: 'dirlink', type: 'symlink', linkname: join(outside, 'dir') },
    ]);
    await apply(root, [
      { path: 'file', type: 'file', content: 'inside', mode: 0o600 },
      { path: 'dirlink/', type: 'dir', mode: 0o700 },
      { path: 'dirlink/child', type: 'file', content: 'child' },
    ]);
    assert.ok((await lstat(join(root, 'file'))).isFile());
    assert.equal(await readFile(join(root, 'file'), 'utf8'), 'inside');
    assert.ok((await lstat(join(root, 'dirlink'))).isDirectory());
    assert.equal(await readFile(join(root, 'dirlink/child'), 'utf8'), 'child');
    await assertOutsideUnchanged(outside);
  });
});

test('hardlinks out of the root are rejected', async () => {
  await withBase(async ({ root, outside }) => {
    await assertInvalid(
      apply(root, [{ path: 'hl', type: 'hardlink', linkname: '../outside/secret' }]),
      /escape/,
    );
    await assertInvalid(
      apply(root, [{ path: 'hl', type: 'hardlink', linkname: join(outside, 'secret') }]),
      /absolute/,
    );
    await assertInvalid(
      apply(root, [
        { path: 'out', type: 'symlink', linkname: outside },
        { path: 'hl', type: 'hardlink', linkname: 'out/secret' },
      ]),
      /symlink/,
    );
    await assertInvalid(
      apply(root, [{ path: 'hl2', type: 'hardlink', linkname: 'missing' }]),
      /does not exist/,
    );
    await assertOutsideUnchanged(outside);
    assert.equal(await lstat(join(root, 'hl')).catch(() => undefined), undefined);
  });
});

test('a hardlink to a symlink links the symlink itself, not what it points at', async () => {
  await withBase(async ({ root, outside }) => {
    await apply(root, [
      { path: 'sl', type: 'symlink', linkname: join(outside, 'secret') },
      { path: 'hl', type: 'hardlink', linkname: 'sl' },
    ]);
    assert.ok((await lstat(join(root, 'hl'))).isSymbolicLink());
    await assertOutsideUnchanged(outside);
  });
});

test('device nodes and FIFOs are skipped, and hardlinks to them too', async () => {
  await withBase(async ({ root }) => {
    const result = await applyLayer(
      root,
      Readable.from([
        await buildLayerTar([
          { path: 'dev/null', type: 'char-device' },
          { path: 'fifo', type: 'fifo' },
          { path: 'null2', type: 'hardlink', linkname: 'dev/null' },
          { path: 'real', type: 'file', content: 'r' },
        ]),
      ]),
      { logger },
    );
    assert.equal(result.skipped, 3);
    assert.equal(result.applied, 1);
    assert.deepEqual(await listTree(root), ['real']);
  });
});

test('malformed and truncated tars are IMAGE_INVALID', async () => {
  await withBase(async ({ root }) => {
    await assertInvalid(applyLayer(root, Readable.from([Buffer.alloc(1024, 0x41)]), { logger }), /tar/);
    const good = await buildLayerTar([{ path: 'big', type: 'file', content: Buffer.alloc(4096, 1) }]);
    await assertInvalid(applyLayer(root, Readable.from([good.subarray(0, 1500)]), { logger }), /.+/);
    // gzip data handed over as if it were a tar
    await assertInvalid(applyLayer(root, Readable.from([gzipSync(good)]), { logger }), /tar/);
  });
});

test('ensureDirInRoot creates mount points but never through a symlink', async () => {
  await withBase(async ({ root, outside }) => {
    await apply(root, [{ path: 'var', type: 'symlink', linkname: outside }]);
    assert.equal(await ensureDirInRoot(root, 'var/tmp', 0o1777), false);
    assert.equal(await ensureDirInRoot(root, 'work/space', 0o755), true);
    assert.ok((await lstat(join(root, 'work/space'))).isDirectory());
    assert.equal(await ensureDirInRoot(root, 'tmp', 0o1777), true);
    assert.equal((await stat(join(root, 'tmp'))).mode & 0o7777, 0o1777);
    await assertOutsideUnchanged(outside);
  });
});
