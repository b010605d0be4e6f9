// S3ObjectStore against a real S3-compatible server (s3rver via @hako/testkit): the ObjectStore
// contract (put/get/getStream, list across pages in key order, delete, deletePrefix in batches of
// 1000, not found), Content-MD5 integrity, and STORAGE_FAILED once the server is gone.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { startS3 } from '@hako/testkit';
import type { S3Service } from '@hako/testkit';
import { HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { S3ObjectStore } from '../../src/storage/s3-object-store.js';
import type { S3ObjectStoreOptions } from '../../src/storage/s3-object-store.js';

let s3: S3Service | undefined;
const stores: S3ObjectStore[] = [];
const run = `t${randomBytes(3).toString('hex')}`;

function storeFor(svc: S3Service, over: Partial<S3ObjectStoreOptions> = {}): S3ObjectStore {
  const store = new S3ObjectStore({
    bucket: svc.bucket,
    endpoint: svc.endpoint,
    region: svc.region,
    credentials: { accessKeyId: svc.accessKeyId, secretAccessKey: svc.secretAccessKey },
    ...over,
  });
  stores.push(store);
  return store;
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const v of it) out.push(v);
  return out;
}

before(async () => {
  s3 = await startS3();
});

after(async () => {
  for (const s of stores) s.close();
  await s3?.stop();
});

test('put, get, getStream and delete round-trip bytes; missing keys are OBJECT_NOT_FOUND (404); deleting a missing key is fine', async () => {
  const store = storeFor(s3!);
  const key = `${run}/rt/a b/ü.bin`;
  const body = randomBytes(200_000);
  const sha = createHash('sha256').update(body).digest('hex');
  await store.put(key, body, { contentType: 'application/octet-stream', sha256: sha });
  assert.deepEqual(await store.get(key), body);
  const chunks: Buffer[] = [];
  for await (const c of await store.getStream(key)) chunks.push(c as Buffer);
  assert.deepEqual(Buffer.concat(chunks), body);

  // the sha256 travels as object metadata, the content type as given
  const raw = new S3Client({
    region: s3!.region,
    endpoint: s3!.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: s3!.accessKeyId, secretAccessKey: s3!.secretAccessKey },
  });
  try {
    const head = await raw.send(new HeadObjectCommand({ Bucket: s3!.bucket, Key: key }));
    assert.equal(head.Metadata?.sha256, sha);
    assert.equal(head.ContentType, 'application/octet-stream');
    assert.equal(head.ContentLength, body.length);
  } finally {
    raw.destroy();
  }

  // replacing keeps one object with the new content; an empty body is an empty object
  await store.put(key, Buffer.from('v2'));
  assert.equal((await store.get(key)).toString(), 'v2');
  await store.put(`${run}/rt/empty`, Buffer.alloc(0));
  assert.equal((await store.get(`${run}/rt/empty`)).length, 0);

  await store.delete(key);
  // One call at a time: a second rejection made up front would go unhandled until the first
  // assertion finished, and the test runner fails a test on that.
  for (const call of [() => store.get(key), () => store.getStream(key)]) {
    await assert.rejects(call(), (e: { code?: string; httpStatus?: number; message?: string }) => {
      assert.equal(e.code, 'OBJECT_NOT_FOUND');
      assert.equal(e.httpStatus, 404);
      assert.match(e.message ?? '', /ü\.bin/);
      return true;
    });
  }
  await store.delete(key); // again: not an error
  await store.delete(`${run}/never-existed`);
});

test('list walks every page in S3 key order with sizes and etags, only under the prefix', async () => {
  const store = storeFor(s3!, { listPageSize: 3 });
  const prefix = `${run}/list/`;
  // '-' and '.' sort before '/', so 'a-b/…' and 'a.txt' come before 'a/…' in S3 order
  const names = ['a/1', 'a/2', 'a-b/1', 'a.txt', 'b', 'c/d/e/f', 'z', 'é', 'A'];
  const want = names
    .map((n) => `${prefix}${n}`)
    .sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
  await Promise.all(names.map((n, i) => store.put(`${prefix}${n}`, Buffer.alloc(i + 1, 1))));
  await store.put(`${run}/listother/x`, Buffer.from('x')); // shares the text "list" but not the prefix
  const got = await collect(store.list(prefix));
  assert.deepEqual(
    got.map((o) => o.key),
    want,
  );
  for (const o of got) {
    const i = names.indexOf(o.key.slice(prefix.length));
    assert.equal(o.size, i + 1, o.key);
    assert.match(o.etag ?? '', /^[0-9a-f]{32}$/, 'etag without quotes');
    assert.equal(
      o.etag,
      createHash('md5')
        .update(Buffer.alloc(i + 1, 1))
        .digest('hex'),
    );
  }
  assert.deepEqual(await collect(store.list(`${run}/nothing-here/`)), []);
});

test('deletePrefix removes more than one DeleteObjects batch (1000) and nothing outside the prefix', async () => {
  const store = storeFor(s3!);
  const prefix = `${run}/many/`;
  const n = 1203;
  const keys = Array.from({ length: n }, (_, i) => `${prefix}d${i % 7}/f${i}`);
  for (let i = 0; i < keys.length; i += 64) {
    await Promise.all(keys.slice(i, i + 64).map((k) => store.put(k, Buffer.from(k))));
  }
  await store.put(`${run}/many-keep`, Buffer.from('keep'));
  await store.put(`${run}/keep/x`, Buffer.from('keep'));
  assert.equal((await collect(store.list(prefix))).length, n);
  assert.equal(await store.deletePrefix(prefix), n);
  assert.deepEqual(await collect(store.list(prefix)), []);
  assert.equal((await store.get(`${run}/many-keep`)).toString(), 'keep');
  assert.equal((await store.get(`${run}/keep/x`)).toString(), 'keep');
  assert.equal(await store.deletePrefix(prefix), 0);
  await assert.rejects(store.deletePrefix(''), { code: 'INVALID_ARGUMENT' });
});

test('an unreachable server is STORAGE_FAILED (503) on every call, with the key and what to check', async () => {
  const own = await startS3();
  const store = storeFor(own, { maxAttempts: 1, connectionTimeoutMs: 1000 });
  await store.put(`${run}/x`, Buffer.from('x'));
  await own.stop();
  const calls: [string, () => Promise<unknown>][] = [
    ['put', () => store.put(`${run}/x`, Buffer.from('y'))],
    ['get', () => store.get(`${run}/x`)],
    ['getStream', () => store.getStream(`${run}/x`)],
    ['list', () => collect(store.list(`${run}/`))],
    ['delete', () => store.delete(`${run}/x`)],
    ['deletePrefix', () => store.deletePrefix(`${run}/`)],
  ];
  for (const [what, call] of calls) {
    await assert.rejects(call(), (e: { code?: string; httpStatus?: number; message?: string }) => {
      assert.equal(e.code, 'STORAGE_FAILED', what);
      assert.equal(e.httpStatus, 503);
      assert.match(e.message ?? '', new RegExp(`${run}/`), what);
      assert.match(e.message ?? '', /S3 server is up/);
      return true;
    });
  }
});

test('the bucket must exist: a wrong bucket is STORAGE_FAILED, not OBJECT_NOT_FOUND', async () => {
  const store = storeFor(s3!, { bucket: `nobucket-${run}` });
  await assert.rejects(store.put('k', Buffer.from('x')), { code: 'STORAGE_FAILED' });
  await assert.rejects(store.get('k'), { code: 'STORAGE_FAILED' });
  await assert.rejects(collect(store.list('')), { code: 'STORAGE_FAILED' });
});
