import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, lstat, mkdtemp, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { AppError, silentLogger } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import { LocalImageStore, classifyStoreError } from '../../src/image-store.js';
import { HOST_MOUNT_POINTS } from '../../src/host-image.js';
import { buildLayerTar, buildOciLayoutTar } from '../helpers/oci-fixture.js';
import type { BuildOciLayoutOptions, FixtureEntry } from '../helpers/oci-fixture.js';

const logger = silentLogger();
const REPO_ROOT = join(fileURLToPath(import.meta.url), '../../../../..');

interface Ctx {
  base: string;
  root: string;
  store: LocalImageStore;
}

async function withStore(fn: (c: Ctx) => Promise<void>): Promise<void> {
  const base = await mkdtemp(join(tmpdir(), 'hako-images-'));
  try {
    const root = join(base, 'images');
    await fn({ base, root, store: new LocalImageStore({ root, logger }) });
  } finally {
    await rm(base, { recursive: true, force: true });
  }
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, re?: RegExp): Promise<AppError> {
  let caught: unknown;
  await assert.rejects(p, (err: unknown) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof AppError, `expected AppError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (re) assert.match(caught.message, re);
  return caught;
}

async function listTree(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(dir)).sort()) {
    const rel = prefix ? `${prefix}/${name}` : name;
    const st = await lstat(join(dir, name));
    out.push(
      st.isDirectory()
        ? `${rel}/`
        : st.isSymbolicLink()
          ? `${rel} -> ${await readlink(join(dir, name))}`
          : rel,
    );
    if (st.isDirectory()) out.push(...(await listTree(join(dir, name), rel)));
  }
  return out;
}

async function dirEntries(path: string): Promise<string[]> {
  try {
    return (await readdir(path)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Nothing committed: no refs, records, rootfs or blobs, and no staging left in tmp. */
async function assertStoreEmpty(root: string): Promise<void> {
  for (const d of ['refs', 'configs', 'rootfs', 'blobs/sha256', 'tmp']) {
    assert.deepEqual(await dirEntries(join(root, d)), [], `${d} should be empty`);
  }
}

const LOWER: FixtureEntry[] = [
  { path: 'bin/', type: 'dir' },
  { path: 'bin/hello', type: 'file', content: '#!/bin/sh\necho hi\n', mode: 0o755 },
  { path: 'etc/', type: 'dir' },
  { path: 'etc/os-release', type: 'file', content: 'ID=test\n' },
  { path: 'etc/secret', type: 'file', content: 'lower secret\n', mode: 0o600 },
  { path: 'opt/app/old1', type: 'file', content: '1' },
  { path: 'opt/app/old2/deep', type: 'file', content: '2' },
  { path: 'usr/share/doc/readme', type: 'file', content: 'doc' },
];
const UPPER: FixtureEntry[] = [
  { path: 'etc/.wh.secret', type: 'file' },
  { path: 'opt/app/', type: 'dir' },
  { path: 'opt/app/.wh..wh..opq', type: 'file' },
  { path: 'opt/app/new', type: 'file', content: 'new' },
  { path: 'usr/.wh.share', type: 'file' },
  { path: 'bin/hello2', type: 'hardlink', linkname: 'bin/hello' },
];
const EXPECTED_TREE = [
  'bin/',
  'bin/hello',
  'bin/hello2',
  'dev/',
  'etc/',
  'etc/os-release',
  'home/',
  'opt/',
  'opt/app/',
  'opt/app/new',
  'proc/',
  'sys/',
  'tmp/',
  'usr/',
  'var/',
  'var/tmp/',
  'workspace/',
];

function twoLayer(extra: Partial<BuildOciLayoutOptions> = {}): BuildOciLayoutOptions {
  return {
    layers: [LOWER, UPPER],
    config: {
      Env: ['PATH=/bin', 'A=1'],
      Entrypoint: ['/bin/hello'],
      Cmd: ['--x'],
      WorkingDir: '/opt/app',
      User: '1000:1000',
    },
    refName: 'test/two:1',
    ...extra,
  };
}

test('imports a two-layer image: whiteout, opaque dir, hardlink, config, mount points', async () => {
  await withStore(async ({ base, root, store }) => {
    const built = await buildOciLayoutTar(base, twoLayer());
    const ref = await store.importLayout(built.tarPath);
    assert.equal(ref.name, 'test/two:1');
    assert.equal(ref.digest, built.manifestDigest);
    assert.deepEqual(ref.binds, []);
    assert.deepEqual(ref.config, {
      env: ['PATH=/bin', 'A=1'],
      entrypoint: ['/bin/hello'],
      cmd: ['--x'],
      workingDir: '/opt/app',
      user: '1000:1000',
    });
    assert.equal(ref.rootfs, join(root, 'rootfs', built.manifestDigest.slice(7)));
    assert.deepEqual(await listTree(ref.rootfs), EXPECTED_TREE);
    assert.equal(await readFile(join(ref.rootfs, 'opt/app/new'), 'utf8'), 'new');
    assert.equal((await stat(join(ref.rootfs, 'bin/hello'))).mode & 0o777, 0o755);
    assert.equal(
      (await stat(join(ref.rootfs, 'bin/hello2'))).ino,
      (await stat(join(ref.rootfs, 'bin/hello'))).ino,
    );
    assert.equal((await stat(ref.rootfs)).mode & 0o777, 0o755, 'rootfs root traversable by the sandbox user');
    assert.equal((await stat(join(ref.rootfs, 'tmp'))).mode & 0o7777, 0o1777);
    assert.ok((await stat(`${ref.rootfs}.complete`)).isFile(), 'completion marker written');
    assert.deepEqual(await dirEntries(join(root, 'tmp')), [], 'staging removed');

    // blobs: manifest, config, two layers, all named by their digest
    const blobs = await dirEntries(join(root, 'blobs/sha256'));
    assert.deepEqual(
      blobs,
      [built.manifestDigest, built.configDigest, ...built.layerDigests].map((d) => d.slice(7)).sort(),
    );

    assert.deepEqual(await store.get('test/two:1'), ref);
    assert.deepEqual(await store.get(built.manifestDigest), ref, 'lookup by digest finds the name too');
    const all = await store.list();
    assert.deepEqual(
      all.map((r) => r.name),
      ['host', 'test/two:1'],
    );
  });
});

test('gzip Docker v2 layers inside an image index: picks the linux/amd64 manifest', async () => {
  await withStore(async ({ base, store }) => {
    const built = await buildOciLayoutTar(
      base,
      twoLayer({ gzip: true, docker: true, platformIndex: true, refName: undefined }),
    );
    const ref = await store.importLayout(built.tarPath, 'docker-style:latest');
    assert.equal(ref.digest, built.manifestDigest);
    assert.deepEqual(await listTree(ref.rootfs), EXPECTED_TREE);
  });
});

test('a corrupted blob is IMAGE_DIGEST_MISMATCH naming the digest, and nothing is left behind', async () => {
  await withStore(async ({ base, root, store }) => {
    for (const blob of [0, 1, 'config', 'manifest'] as const) {
      const built = await buildOciLayoutTar(
        base,
        twoLayer({ gzip: blob === 1, corrupt: { blob, how: 'content' } }),
      );
      const digest =
        blob === 'config'
          ? built.configDigest
          : blob === 'manifest'
            ? built.manifestDigest
            : (built.layerDigests[blob] ?? '');
      const err = await rejectsWith(store.importLayout(built.tarPath), 'IMAGE_DIGEST_MISMATCH');
      assert.ok(err.message.includes(digest), `message names ${digest}: ${err.message}`);
      await assertStoreEmpty(root);
    }
  });
});

test('a descriptor whose size disagrees with the blob is IMAGE_DIGEST_MISMATCH', async () => {
  await withStore(async ({ base, root, store }) => {
    for (const blob of [0, 'config'] as const) {
      const built = await buildOciLayoutTar(base, twoLayer({ corrupt: { blob, how: 'size' } }));
      const digest = blob === 'config' ? built.configDigest : (built.layerDigests[0] ?? '');
      await rejectsWith(store.importLayout(built.tarPath), 'IMAGE_DIGEST_MISMATCH', new RegExp(digest));
      await assertStoreEmpty(root);
    }
  });
});

test('invalid layouts are IMAGE_INVALID with a clear message and leave nothing behind', async () => {
  await withStore(async ({ base, root, store }) => {
    const zstd = await buildOciLayoutTar(
      base,
      twoLayer({ layerMediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' }),
    );
    await rejectsWith(store.importLayout(zstd.tarPath), 'IMAGE_INVALID', /zstd/);
    const missing = await buildOciLayoutTar(base, twoLayer({ corrupt: { blob: 1, how: 'missing' } }));
    await rejectsWith(store.importLayout(missing.tarPath), 'IMAGE_INVALID', /missing from the image layout/);
    const noLayout = await buildOciLayoutTar(base, twoLayer({ omitLayoutFile: true }));
    await rejectsWith(store.importLayout(noLayout.tarPath), 'IMAGE_INVALID', /oci-layout/);
    const unnamed = await buildOciLayoutTar(base, twoLayer({ refName: undefined }));
    await rejectsWith(store.importLayout(unnamed.tarPath), 'IMAGE_INVALID', /pass a name/);
    const hostile = await buildOciLayoutTar(base, {
      layers: [[{ path: '../../escape', type: 'file', content: 'x' }]],
      refName: 'hostile:1',
    });
    await rejectsWith(store.importLayout(hostile.tarPath), 'IMAGE_INVALID', /escape/);
    const notTar = join(base, 'not.tar');
    await writeFile(notTar, Buffer.alloc(2048, 0x5a));
    await rejectsWith(store.importLayout(notTar, 'x:1'), 'IMAGE_INVALID', /not a valid tar/);
    await rejectsWith(store.importLayout(join(base, 'nope.tar'), 'x:1'), 'INVALID_ARGUMENT');
    await rejectsWith(store.importLayout(unnamed.tarPath, 'host'), 'INVALID_ARGUMENT');
    await assertStoreEmpty(root);
    assert.equal(await lstat(join(base, 'escape')).catch(() => undefined), undefined);
    // the unnamed layout imports once given a name
    const ref = await store.importLayout(unnamed.tarPath, 'named:now');
    assert.equal(ref.name, 'named:now');
  });
});

test('get() of an unknown name or digest is IMAGE_NOT_FOUND, also on an empty store', async () => {
  await withStore(async ({ base, root, store }) => {
    await rejectsWith(store.get('nope:1'), 'IMAGE_NOT_FOUND', /nope:1/);
    await rejectsWith(store.get(`sha256:${'0'.repeat(64)}`), 'IMAGE_NOT_FOUND');
    await rejectsWith(store.remove('nope:1'), 'IMAGE_NOT_FOUND');
    await store.importLayout((await buildOciLayoutTar(base, twoLayer())).tarPath);
    await rejectsWith(store.get('nope:1'), 'IMAGE_NOT_FOUND');
    await rejectsWith(store.get(`sha256:${'0'.repeat(64)}`), 'IMAGE_NOT_FOUND');
    assert.ok((await stat(root)).isDirectory());
  });
});

test('a damaged store is IMAGE_STORE_CORRUPT, never IMAGE_NOT_FOUND', async () => {
  await withStore(async ({ base, root, store }) => {
    const built = await buildOciLayoutTar(base, twoLayer());
    await store.importLayout(built.tarPath);
    const hex = built.manifestDigest.slice(7);
    const refFile = join(root, 'refs', encodeURIComponent('test/two:1'));

    // a missing layer blob behind an existing ref
    const layerBlob = join(root, 'blobs/sha256', (built.layerDigests[0] ?? '').slice(7));
    const saved = await readFile(layerBlob);
    await rm(layerBlob);
    await rejectsWith(store.get('test/two:1'), 'IMAGE_STORE_CORRUPT', /missing/);
    await writeFile(layerBlob, saved);
    await store.get('test/two:1');

    // the record is not JSON
    const record = join(root, 'configs', `${hex}.json`);
    const savedRecord = await readFile(record);
    await writeFile(record, '{not json');
    await rejectsWith(store.get('test/two:1'), 'IMAGE_STORE_CORRUPT');
    await rejectsWith(store.list(), 'IMAGE_STORE_CORRUPT');
    await writeFile(record, savedRecord);

    // a ref to a digest the store has no record (or blob) of
    await writeFile(refFile, `sha256:${'1'.repeat(64)}\n`);
    await rejectsWith(store.get('test/two:1'), 'IMAGE_STORE_CORRUPT');
    // a ref that is not a digest
    await writeFile(refFile, 'garbage');
    await rejectsWith(store.get('test/two:1'), 'IMAGE_STORE_CORRUPT', /sha256/);
    await writeFile(refFile, `${built.manifestDigest}\n`);

    // the refs directory replaced by a file
    await rm(join(root, 'refs'), { recursive: true });
    await writeFile(join(root, 'refs'), 'oops');
    await rejectsWith(store.get('test/two:1'), 'IMAGE_STORE_CORRUPT');
    await rejectsWith(store.get('other:1'), 'IMAGE_STORE_CORRUPT');
    await rejectsWith(store.list(), 'IMAGE_STORE_CORRUPT');
  });
});

test('classifyStoreError maps errno codes', () => {
  const errno = (code: string): NodeJS.ErrnoException =>
    Object.assign(new Error(`${code}: x`), { code, syscall: 'open' });
  assert.equal(classifyStoreError(errno('ENOENT'), 'c', 'IMAGE_NOT_FOUND').code, 'IMAGE_NOT_FOUND');
  assert.equal(classifyStoreError(errno('ENOENT'), 'c').code, 'IMAGE_STORE_CORRUPT');
  assert.equal(classifyStoreError(errno('EACCES'), 'c', 'IMAGE_NOT_FOUND').code, 'IMAGE_STORE_PERMISSION');
  assert.equal(classifyStoreError(errno('EPERM'), 'c', 'IMAGE_NOT_FOUND').code, 'IMAGE_STORE_PERMISSION');
  assert.equal(classifyStoreError(errno('ENOTDIR'), 'c', 'IMAGE_NOT_FOUND').code, 'IMAGE_STORE_CORRUPT');
  assert.equal(classifyStoreError(errno('EIO'), 'c', 'IMAGE_NOT_FOUND').code, 'IMAGE_STORE_IO');
  assert.equal(classifyStoreError(errno('ENOSPC'), 'c', 'IMAGE_NOT_FOUND').code, 'IMAGE_STORE_IO');
  assert.equal(
    classifyStoreError(new SyntaxError('bad'), 'c', 'IMAGE_NOT_FOUND').code,
    'IMAGE_STORE_CORRUPT',
  );
  const app = new AppError('IMAGE_INVALID', 'x');
  assert.equal(classifyStoreError(app, 'c'), app);
});

test(
  'an unreadable store is IMAGE_STORE_PERMISSION for a process without access',
  { skip: process.getuid?.() !== 0 ? 'needs root to run a child as another uid' : false },
  async () => {
    await withStore(async ({ base, root, store }) => {
      await store.importLayout((await buildOciLayoutTar(base, twoLayer())).tarPath);
      await chmod(base, 0o755); // the child can reach <base>, but <base>/images stays 0700
      const script = join(base, 'probe.mts');
      await writeFile(
        script,
        [
          `import { LocalImageStore } from ${JSON.stringify(pathToFileURL(join(REPO_ROOT, 'packages/sandbox/src/image-store.ts')).href)};`,
          `import { silentLogger } from ${JSON.stringify(pathToFileURL(join(REPO_ROOT, 'packages/core/src/index.ts')).href)};`,
          `const store = new LocalImageStore({ root: ${JSON.stringify(root)}, logger: silentLogger() });`,
          `const out = [];`,
          `for (const ref of ['test/two:1', 'unknown:1']) {`,
          `  try { await store.get(ref); out.push('ok'); } catch (e) { out.push(e.code ?? String(e)); }`,
          `}`,
          `process.stdout.write(JSON.stringify(out));`,
        ].join('\n'),
      );
      await chmod(script, 0o644);
      // the child (uid 65534) loads hako's sources and tsx from the repository: it must be able to
      const readable = await new Promise<boolean>((resolve) => {
        execFile(
          '/bin/sh',
          ['-c', 'test -r "$1/node_modules/tsx/package.json"', 'sh', REPO_ROOT],
          { uid: 65534, gid: 65534 },
          (err) => resolve(!err),
        );
      });
      assert.ok(
        readable,
        `uid 65534 cannot read ${REPO_ROOT}/node_modules: this test needs the repository readable by ` +
          'other users (chmod o+rx on it and its parent directories)',
      );
      const stdout = await new Promise<string>((resolve, reject) => {
        execFile(
          process.execPath,
          ['--import', 'tsx', script],
          { cwd: REPO_ROOT, uid: 65534, gid: 65534, env: { ...process.env, HOME: '/tmp' } },
          (err, out, errOut) => (err ? reject(new Error(`${err.message}\n${errOut}`)) : resolve(out)),
        );
      });
      assert.deepEqual(JSON.parse(stdout), ['IMAGE_STORE_PERMISSION', 'IMAGE_STORE_PERMISSION']);
    });
  },
);

test('a rootfs without its completion marker is treated as absent and rebuilt by get()', async () => {
  await withStore(async ({ base, root, store }) => {
    const built = await buildOciLayoutTar(base, twoLayer({ gzip: true }));
    const ref = await store.importLayout(built.tarPath);
    // simulate a crash mid-unpack: marker gone, rootfs half there
    await rm(`${ref.rootfs}.complete`);
    await rm(join(ref.rootfs, 'opt'), { recursive: true });
    await writeFile(join(ref.rootfs, 'stray'), 'half-written');
    const again = await store.get('test/two:1');
    assert.equal(again.rootfs, ref.rootfs);
    assert.deepEqual(await listTree(again.rootfs), EXPECTED_TREE);
    assert.ok((await stat(`${ref.rootfs}.complete`)).isFile());

    // a tampered layer blob is caught on rebuild by its diff_id
    const layerBlob = join(root, 'blobs/sha256', (built.layerDigests[1] ?? '').slice(7));
    await writeFile(layerBlob, await buildLayerGz());
    await rm(`${ref.rootfs}.complete`);
    await rejectsWith(store.get('test/two:1'), 'IMAGE_STORE_CORRUPT', /uncompresses to/);
  });
});

async function buildLayerGz(): Promise<Buffer> {
  return gzipSync(await buildLayerTar([{ path: 'evil', type: 'file', content: 'swapped' }]));
}

test('re-importing the same image is idempotent and does not unpack again', async () => {
  await withStore(async ({ base, store }) => {
    const built = await buildOciLayoutTar(base, twoLayer());
    const first = await store.importLayout(built.tarPath);
    const before = await stat(first.rootfs);
    const marker = await stat(`${first.rootfs}.complete`);
    const second = await store.importLayout(built.tarPath);
    assert.deepEqual(second, first);
    assert.equal((await stat(first.rootfs)).ino, before.ino, 'same rootfs directory');
    assert.equal((await stat(`${first.rootfs}.complete`)).mtimeMs, marker.mtimeMs);
    assert.equal((await store.list()).length, 2);
    // the same image under a second name shares everything
    const alias = await store.importLayout(built.tarPath, 'alias:1');
    assert.equal(alias.rootfs, first.rootfs);
    assert.deepEqual(
      (await store.list()).map((r) => r.name),
      ['host', 'alias:1', 'test/two:1'],
    );
  });
});

test('remove() deletes the ref, then the rootfs, record and blobs no other image uses', async () => {
  await withStore(async ({ base, root, store }) => {
    const a = await buildOciLayoutTar(base, twoLayer({ refName: 'a:1' }));
    const b = await buildOciLayoutTar(base, {
      layers: [LOWER],
      config: { Cmd: ['/bin/hello'] },
      refName: 'b:1',
    });
    const refA = await store.importLayout(a.tarPath);
    const refB = await store.importLayout(b.tarPath);
    const shared = (a.layerDigests[0] ?? '').slice(7);
    assert.equal((b.layerDigests[0] ?? '').slice(7), shared, "fixture: b shares a's base layer");

    await rejectsWith(store.remove('host'), 'INVALID_ARGUMENT');
    await store.remove('a:1');
    await rejectsWith(store.get('a:1'), 'IMAGE_NOT_FOUND');
    await rejectsWith(store.remove('a:1'), 'IMAGE_NOT_FOUND');
    assert.equal(await lstat(refA.rootfs).catch(() => undefined), undefined, 'rootfs deleted');
    assert.equal(await lstat(`${refA.rootfs}.complete`).catch(() => undefined), undefined);
    const blobs = await dirEntries(join(root, 'blobs/sha256'));
    assert.ok(blobs.includes(shared), 'shared layer kept');
    for (const d of [a.manifestDigest, a.configDigest, a.layerDigests[1] ?? '']) {
      assert.ok(!blobs.includes(d.slice(7)), `${d} deleted`);
    }
    assert.deepEqual(await store.get('b:1'), refB);
    assert.ok(
      (await readFile(join(refB.rootfs, 'usr/share/doc/readme'), 'utf8')) === 'doc',
      'b keeps what a whited out',
    );
    assert.equal(await readFile(join(refB.rootfs, 'etc/secret'), 'utf8'), 'lower secret\n');

    // by digest: every name of the image goes
    await store.importLayout(b.tarPath, 'b-alias:1');
    await store.remove(b.manifestDigest);
    await rejectsWith(store.get('b:1'), 'IMAGE_NOT_FOUND');
    await rejectsWith(store.get('b-alias:1'), 'IMAGE_NOT_FOUND');
    await assertStoreEmpty(root);
    assert.deepEqual(
      (await store.list()).map((r) => r.name),
      ['host'],
    );
  });
});

test('remove() works on a ref whose record is corrupt', async () => {
  await withStore(async ({ base, root, store }) => {
    const built = await buildOciLayoutTar(base, twoLayer());
    await store.importLayout(built.tarPath);
    await writeFile(join(root, 'configs', `${built.manifestDigest.slice(7)}.json`), 'broken');
    await rejectsWith(store.get('test/two:1'), 'IMAGE_STORE_CORRUPT');
    await store.remove('test/two:1');
    await assertStoreEmpty(root);
  });
});

test('the host image: mount-point skeleton, usr-merge symlinks mirrored from the host, /usr bind', async () => {
  await withStore(async ({ base, root, store }) => {
    const ref = await store.get('host');
    assert.equal(ref.name, 'host');
    assert.equal(ref.digest, 'host');
    assert.equal(ref.rootfs, join(root, 'host-rootfs'));
    assert.deepEqual(ref.config.env, ['PATH=/usr/local/bin:/usr/bin:/bin']);
    assert.deepEqual(ref.config.entrypoint, []);
    assert.deepEqual(ref.binds[0], { destination: '/usr', source: '/usr' });
    for (const d of HOST_MOUNT_POINTS) {
      const st = await lstat(join(ref.rootfs, d));
      assert.ok(st.isDirectory(), `${d} is a directory`);
      assert.deepEqual(
        await readdir(join(ref.rootfs, d)).then((e) => e.filter((x) => !(d === 'var' && x === 'tmp'))),
        [],
        `${d} empty`,
      );
    }
    for (const name of ['bin', 'sbin', 'lib', 'lib64']) {
      const host = await lstat(join('/', name)).catch(() => undefined);
      const mine = await lstat(join(ref.rootfs, name)).catch(() => undefined);
      if (host?.isSymbolicLink()) {
        assert.ok(mine?.isSymbolicLink(), `${name} mirrored as a symlink`);
        const target = await readlink(join('/', name));
        assert.equal(await readlink(join(ref.rootfs, name)), target.replace(/^\//, ''));
      } else if (host?.isDirectory()) {
        assert.ok(mine?.isDirectory());
        assert.ok(ref.binds.some((bd) => bd.destination === `/${name}`));
      } else {
        assert.equal(mine, undefined);
      }
    }
    // idempotent, and repairs what was damaged
    await rm(join(ref.rootfs, 'workspace'), { recursive: true });
    const fresh = new LocalImageStore({ root, logger });
    assert.deepEqual(await fresh.get('host'), ref);
    assert.ok((await lstat(join(ref.rootfs, 'workspace'))).isDirectory());

    // a separate skeleton directory
    const hostDir = join(base, 'elsewhere', 'host');
    const other = new LocalImageStore({ root, hostRootfsDir: hostDir, logger });
    assert.equal((await other.get('host')).rootfs, hostDir);
    assert.ok((await lstat(join(hostDir, 'proc'))).isDirectory());
  });
});
