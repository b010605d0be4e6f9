import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppError, silentLogger } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import { LocalImageStore, ensureImage } from '../../src/image-store.js';
import type { ImageRef, ImageStore, PullOptions } from '../../src/types.js';

const PULLABLE = '127.0.0.1:5999/test/img:1';

const IMAGE: ImageRef = {
  name: PULLABLE,
  digest: `sha256:${'d'.repeat(64)}`,
  rootfs: '/nonexistent/rootfs',
  config: { env: [], entrypoint: [], cmd: [], workingDir: undefined, user: undefined },
  binds: [],
};

/** A store whose get() throws `getError` (or returns IMAGE when undefined) and records pulls. */
function fakeStore(getError?: Error): {
  store: Pick<ImageStore, 'get' | 'pull'>;
  gets: string[];
  pulls: { ref: string; opts: PullOptions | undefined }[];
} {
  const gets: string[] = [];
  const pulls: { ref: string; opts: PullOptions | undefined }[] = [];
  return {
    gets,
    pulls,
    store: {
      get(ref: string): Promise<ImageRef> {
        gets.push(ref);
        return getError === undefined ? Promise.resolve(IMAGE) : Promise.reject(getError);
      },
      pull(ref: string, opts?: PullOptions): Promise<ImageRef> {
        pulls.push({ ref, opts });
        return Promise.resolve({ ...IMAGE, name: ref });
      },
    },
  };
}

test('ensureImage: a stored image is returned without pulling', async () => {
  const f = fakeStore();
  assert.equal(await ensureImage(f.store, PULLABLE), IMAGE);
  assert.deepEqual(f.gets, [PULLABLE]);
  assert.equal(f.pulls.length, 0);
});

test('ensureImage: IMAGE_NOT_FOUND for a registry reference pulls it, passing the options through', async () => {
  const f = fakeStore(new AppError('IMAGE_NOT_FOUND', 'no image'));
  const opts: PullOptions = { auth: { username: 'u', password: 'p' } };
  const got = await ensureImage(f.store, PULLABLE, opts);
  assert.equal(got.name, PULLABLE);
  assert.equal(f.pulls.length, 1);
  assert.equal(f.pulls[0]?.ref, PULLABLE);
  assert.equal(f.pulls[0]?.opts, opts);
});

test('ensureImage: IMAGE_NOT_FOUND for a local name (no registry host) is rethrown, never pulled', async () => {
  for (const ref of ['my-image:1', 'alpine', 'host', `sha256:${'e'.repeat(64)}`]) {
    const notFound = new AppError('IMAGE_NOT_FOUND', `no image named ${ref}`);
    const f = fakeStore(notFound);
    await assert.rejects(ensureImage(f.store, ref), (err: unknown) => err === notFound);
    assert.equal(f.pulls.length, 0, ref);
  }
});

test('ensureImage: store errors other than IMAGE_NOT_FOUND are rethrown at once with their code, no blind pull', async () => {
  const codes: ErrorCode[] = [
    'IMAGE_STORE_PERMISSION',
    'IMAGE_STORE_CORRUPT',
    'IMAGE_STORE_IO',
    'INVALID_ARGUMENT',
    'IMAGE_INVALID',
  ];
  for (const code of codes) {
    const err = new AppError(code, `store says ${code}`);
    const f = fakeStore(err);
    await assert.rejects(ensureImage(f.store, PULLABLE), (e: unknown) => {
      assert.equal(e, err, 'the very same error');
      return true;
    });
    assert.equal(f.pulls.length, 0, `${code} must not trigger a pull`);
  }
  const raw = Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
  const f = fakeStore(raw);
  await assert.rejects(ensureImage(f.store, PULLABLE), (e: unknown) => e === raw);
  assert.equal(f.pulls.length, 0);
});

test('ensureImage: a failing pull propagates its own error', async () => {
  const f = fakeStore(new AppError('IMAGE_NOT_FOUND', 'no image'));
  const pullErr = new AppError('REGISTRY_AUTH_FAILED', 'refused');
  f.store.pull = () => Promise.reject(pullErr);
  await assert.rejects(ensureImage(f.store, PULLABLE), (e: unknown) => e === pullErr);
});

test('LocalImageStore.pull refuses `host` and malformed references before touching the disk or network', async () => {
  const base = await mkdtemp(join(tmpdir(), 'hako-pull-unit-'));
  try {
    const root = join(base, 'images');
    const store = new LocalImageStore({ root, logger: silentLogger() });
    for (const ref of ['host', 'Not A Ref', '127.0.0.1:5000/img@sha512:00', '127.0.0.1:5000/img:bad+tag']) {
      await assert.rejects(store.pull(ref), (err: unknown) => {
        assert.ok(err instanceof AppError);
        assert.equal(err.code, 'INVALID_ARGUMENT', `${ref}: ${err.message}`);
        return true;
      });
    }
    assert.deepEqual(await readdir(base), [], 'nothing created');
  } finally {
    await rm(base, { recursive: true, force: true });
  }
});
