import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import type { ListObjectsV2CommandOutput } from '@aws-sdk/client-s3';
import { Redis } from 'ioredis';
import pg from 'pg';
import { S3_CLIENT_COMPAT, findPostgresBinDir, startPostgres, startRedis, startS3 } from '../../src/index.js';
import type { S3Service } from '../../src/index.js';

/** Resolves true when something accepts TCP connections on 127.0.0.1:port. */
function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const value = await fn();
  return [value, Math.round(performance.now() - t0)];
}

function s3Client(s3: S3Service): S3Client {
  return new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    ...S3_CLIENT_COMPAT,
  });
}

function uidOf(pid: number): Promise<number> {
  return readFile(`/proc/${pid}/status`, 'utf8').then((s) => Number(/^Uid:\s+(\d+)/m.exec(s)?.[1]));
}

test('startPostgres: a private server on loopback with a hako database; stop closes the port and removes the dir', async (t) => {
  const [db, ms] = await timed(() => startPostgres());
  t.diagnostic(`PostgreSQL started in ${ms} ms`);
  const client = new pg.Client({ connectionString: db.url });
  try {
    assert.match(db.url, /^postgres:\/\/postgres@127\.0\.0\.1:\d+\/hako$/);
    assert.ok(existsSync(join(db.dir, 'data', 'PG_VERSION')), 'the data directory is inside dir');
    assert.ok(existsSync(join(db.dir, 'run', `.s.PGSQL.${db.port}`)), 'the unix socket is inside dir');

    await client.connect();
    const settings = await client.query<{ db: string; listen: string; fsync: string; pid: number }>(
      "SELECT current_database() AS db, current_setting('listen_addresses') AS listen, current_setting('fsync') AS fsync, pg_backend_pid() AS pid",
    );
    assert.deepEqual(
      { db: settings.rows[0]?.db, listen: settings.rows[0]?.listen, fsync: settings.rows[0]?.fsync },
      { db: 'hako', listen: '127.0.0.1', fsync: 'off' },
    );
    if (process.getuid?.() === 0) {
      const postgresUid = (await stat(join(db.dir, 'data'))).uid;
      assert.notEqual(postgresUid, 0, 'the data directory belongs to the postgres user, not root');
      assert.equal(
        await uidOf(settings.rows[0]?.pid ?? 0),
        postgresUid,
        'the server runs as the postgres user',
      );
    }

    await client.query('CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL, meta jsonb NOT NULL)');
    await client.query('INSERT INTO notes (body, meta) VALUES ($1, $2), ($3, $4)', [
      'héllo wörld ✓',
      { n: 1 },
      'second',
      { n: 2, tags: ['a'] },
    ]);
    const { rows } = await client.query<{ body: string; meta: unknown }>(
      'SELECT body, meta FROM notes ORDER BY id',
    );
    assert.deepEqual(rows, [
      { body: 'héllo wörld ✓', meta: { n: 1 } },
      { body: 'second', meta: { n: 2, tags: ['a'] } },
    ]);
  } finally {
    await client.end().catch(() => undefined);
    const [, stopMs] = await timed(() => db.stop());
    t.diagnostic(`PostgreSQL stopped in ${stopMs} ms`);
  }
  assert.equal(await portOpen(db.port), false, 'nothing listens on the port after stop');
  assert.equal(existsSync(db.dir), false, 'the temporary directory is gone');
  await db.stop(); // idempotent
});

test('startPostgres: two servers at once are independent', async () => {
  const [a, b] = await Promise.all([startPostgres(), startPostgres()]);
  try {
    assert.notEqual(a.port, b.port);
    const ca = new pg.Client({ connectionString: a.url });
    const cb = new pg.Client({ connectionString: b.url });
    try {
      await Promise.all([ca.connect(), cb.connect()]);
      await ca.query('CREATE TABLE only_in_a (x int)');
      const found = await cb.query("SELECT 1 FROM pg_tables WHERE tablename = 'only_in_a'");
      assert.equal(found.rowCount, 0);
    } finally {
      await Promise.all([ca.end(), cb.end()]);
    }
  } finally {
    await Promise.all([a.stop(), b.stop()]);
  }
});

test('startPostgres: a server that fails to start leaves nothing behind and says why', async () => {
  // A bin dir whose initdb is the real one and whose postgres fails at once: the failure comes
  // after the temporary directory, the data directory and the server process were made.
  const realBin = await findPostgresBinDir();
  const fakeBin = await mkdtemp(join(tmpdir(), 'hako-test-bin-'));
  const ownTmp = await mkdtemp(join(tmpdir(), 'hako-test-tmp-'));
  const savedTmp = process.env.TMPDIR;
  try {
    await symlink(join(realBin, 'initdb'), join(fakeBin, 'initdb'));
    await writeFile(join(fakeBin, 'postgres'), '#!/bin/sh\necho "FATAL:  planted failure" >&2\nexit 1\n');
    await chmod(fakeBin, 0o755);
    await chmod(join(fakeBin, 'postgres'), 0o755);
    await chmod(ownTmp, 0o777); // initdb runs as postgres; mkdtemp made the dir 0700 root
    process.env.TMPDIR = ownTmp; // os.tmpdir() reads it: the service's directory lands in ownTmp
    await assert.rejects(startPostgres({ binDir: fakeBin }), (err: Error) => {
      assert.match(err.message, /planted failure/);
      assert.match(err.message, /exited with code 1/);
      return true;
    });
    assert.deepEqual(await readdir(ownTmp), [], 'the failed start removed its directory');
  } finally {
    if (savedTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = savedTmp;
    await rm(fakeBin, { recursive: true, force: true });
    await rm(ownTmp, { recursive: true, force: true });
  }
});

test('startRedis: SET/GET/EVAL on a private server without persistence; stop closes the port and removes the dir', async (t) => {
  const [redis, ms] = await timed(() => startRedis());
  t.diagnostic(`Redis started in ${ms} ms`);
  const client = new Redis(redis.url, { lazyConnect: true });
  try {
    assert.match(redis.url, /^redis:\/\/127\.0\.0\.1:\d+$/);
    await client.connect();
    assert.equal(await client.set('lock:c1', 'token-a', 'PX', 60_000, 'NX'), 'OK');
    assert.equal(await client.set('lock:c1', 'token-b', 'PX', 60_000, 'NX'), null, 'NX refuses a held key');
    assert.equal(await client.get('lock:c1'), 'token-a');
    const release =
      "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
    assert.equal(await client.eval(release, 1, 'lock:c1', 'token-b'), 0, 'a wrong token releases nothing');
    assert.equal(await client.eval(release, 1, 'lock:c1', 'token-a'), 1);
    assert.equal(await client.exists('lock:c1'), 0);

    assert.deepEqual(await client.config('GET', 'save'), ['save', '']);
    assert.deepEqual(await client.config('GET', 'appendonly'), ['appendonly', 'no']);
    assert.deepEqual(await client.config('GET', 'bind'), ['bind', '127.0.0.1']);
    assert.deepEqual(await client.config('GET', 'dir'), ['dir', redis.dir]);
  } finally {
    client.disconnect();
    const [, stopMs] = await timed(() => redis.stop());
    t.diagnostic(`Redis stopped in ${stopMs} ms`);
  }
  assert.equal(await portOpen(redis.port), false, 'nothing listens on the port after stop');
  assert.equal(existsSync(redis.dir), false, 'the temporary directory is gone');
  await redis.stop(); // idempotent
});

test('startS3: a real S3 API through @aws-sdk/client-s3 with S3_CLIENT_COMPAT; stop closes the port and removes the dir', async (t) => {
  const [s3, ms] = await timed(() => startS3());
  t.diagnostic(`S3 server started in ${ms} ms`);
  const client = s3Client(s3);
  const Bucket = s3.bucket;
  try {
    assert.match(s3.endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);

    // A key with spaces and non-ASCII characters, through Put, Head, Get.
    const odd = 'workspaces/t1/c1/dir with spaces/ünïcødé 文件 ✓.txt';
    const body = Buffer.from('héllo from hako\n');
    await client.send(new PutObjectCommand({ Bucket, Key: odd, Body: body, ContentType: 'text/plain' }));
    const head = await client.send(new HeadObjectCommand({ Bucket, Key: odd }));
    assert.equal(head.ContentLength, body.length);
    assert.equal(head.ContentType, 'text/plain');
    const got = await client.send(new GetObjectCommand({ Bucket, Key: odd }));
    assert.deepEqual(Buffer.from(await got.Body!.transformToByteArray()), body);
    assert.ok(
      existsSync(join(s3.dir, Bucket, 'workspaces/t1/c1/dir with spaces')),
      'objects are stored in the data dir',
    );

    // A stream body is stored byte for byte (without WHEN_REQUIRED the SDK sends aws-chunked
    // framing that s3rver would store inside the object).
    const streamed = Buffer.from('streamed body '.repeat(1000));
    await client.send(
      new PutObjectCommand({
        Bucket,
        Key: 'streamed.bin',
        Body: Readable.from([streamed]),
        ContentLength: streamed.length,
      }),
    );
    const gotStreamed = await client.send(new GetObjectCommand({ Bucket, Key: 'streamed.bin' }));
    assert.deepEqual(Buffer.from(await gotStreamed.Body!.transformToByteArray()), streamed);

    // ListObjectsV2 over several pages (continuation tokens), with a prefix.
    const keys = Array.from({ length: 23 }, (_, i) => `list/k${String(i).padStart(3, '0')} é`);
    await Promise.all(keys.map((Key) => client.send(new PutObjectCommand({ Bucket, Key, Body: Key }))));
    const listed: string[] = [];
    let pages = 0;
    let token: string | undefined;
    do {
      const page: ListObjectsV2CommandOutput = await client.send(
        new ListObjectsV2Command({ Bucket, Prefix: 'list/', MaxKeys: 5, ContinuationToken: token }),
      );
      pages++;
      listed.push(...(page.Contents ?? []).map((o) => o.Key ?? ''));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
      if (page.IsTruncated) assert.ok(token, 'a truncated page carries a continuation token');
    } while (token !== undefined);
    assert.equal(pages, 5);
    assert.deepEqual(listed, keys);

    // Delimiter listing sees the folder as a common prefix.
    const top = await client.send(new ListObjectsV2Command({ Bucket, Delimiter: '/' }));
    assert.deepEqual(
      (top.CommonPrefixes ?? []).map((p) => p.Prefix),
      ['list/', 'workspaces/'],
    );
    assert.deepEqual(
      (top.Contents ?? []).map((o) => o.Key),
      ['streamed.bin'],
    );

    // DeleteObject and DeleteObjects (the latter needs a checksum: the SDK sends one even with WHEN_REQUIRED).
    await client.send(new DeleteObjectCommand({ Bucket, Key: odd }));
    await assert.rejects(client.send(new HeadObjectCommand({ Bucket, Key: odd })), { name: 'NotFound' });
    await assert.rejects(client.send(new GetObjectCommand({ Bucket, Key: odd })), { name: 'NoSuchKey' });
    const deleted = await client.send(
      new DeleteObjectsCommand({ Bucket, Delete: { Objects: keys.map((Key) => ({ Key })) } }),
    );
    assert.equal(deleted.Deleted?.length, keys.length);
    assert.equal(deleted.Errors, undefined);
    const after = await client.send(new ListObjectsV2Command({ Bucket }));
    assert.deepEqual(
      (after.Contents ?? []).map((o) => o.Key),
      ['streamed.bin'],
    );
  } finally {
    client.destroy();
    await s3.stop();
  }
  assert.equal(await portOpen(s3.port), false, 'nothing listens on the port after stop');
  assert.equal(existsSync(s3.dir), false, 'the temporary directory is gone');
  await s3.stop(); // idempotent
});

test('startS3: listings follow S3 key order across pages, roll up nested folders, and keys cannot leave the data dir', async () => {
  const s3 = await startS3();
  const client = s3Client(s3);
  const Bucket = s3.bucket;
  try {
    // S3 orders keys by UTF-8 bytes: '-' and '.' before '/', U+FF01 before U+1F600. Unpatched
    // s3rver walked folders depth first and lost 'a-b/1' and 'a.txt' at page boundaries.
    const keys = ['a/1', 'a/2', 'a.txt', 'a-b/1', 'b', 'deep/x/y/z', 'folder/', '\u{1F600}', '\uFF01'];
    for (const Key of keys) await client.send(new PutObjectCommand({ Bucket, Key, Body: Key }));
    const s3Order = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));

    for (const MaxKeys of [1, 2, 4, 1000]) {
      const listed: string[] = [];
      let token: string | undefined;
      do {
        const page: ListObjectsV2CommandOutput = await client.send(
          new ListObjectsV2Command({ Bucket, MaxKeys, ContinuationToken: token }),
        );
        listed.push(...(page.Contents ?? []).map((o) => o.Key ?? ''));
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token !== undefined);
      assert.deepEqual(listed, s3Order, `MaxKeys ${MaxKeys}`);
    }

    // Delimiter: every folder is a common prefix (unpatched s3rver missed 'deep/'), each on one page.
    const prefixes: string[] = [];
    const contents: string[] = [];
    let token: string | undefined;
    do {
      const page: ListObjectsV2CommandOutput = await client.send(
        new ListObjectsV2Command({ Bucket, Delimiter: '/', MaxKeys: 1, ContinuationToken: token }),
      );
      prefixes.push(...(page.CommonPrefixes ?? []).map((p) => p.Prefix ?? ''));
      contents.push(...(page.Contents ?? []).map((o) => o.Key ?? ''));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    assert.deepEqual(prefixes, ['a-b/', 'a/', 'deep/', 'folder/']);
    assert.deepEqual(contents, ['a.txt', 'b', '\uFF01', '\u{1F600}']);
    const nested = await client.send(new ListObjectsV2Command({ Bucket, Prefix: 'deep/x/', Delimiter: '/' }));
    assert.deepEqual(
      (nested.CommonPrefixes ?? []).map((p) => p.Prefix),
      ['deep/x/y/'],
    );

    // Keys are file paths in this server: '..' segments are refused instead of escaping the dir.
    const outside = `../../escape-${process.pid}`;
    await assert.rejects(client.send(new PutObjectCommand({ Bucket, Key: `x/${outside}`, Body: 'x' })), {
      name: 'InvalidArgument',
    });
    assert.equal(existsSync(join(s3.dir, '..', `escape-${process.pid}._S3rver_object`)), false);
  } finally {
    client.destroy();
    await s3.stop();
  }
});

test('startS3: a listing of more than 1000 keys pages at 1000', async () => {
  const s3 = await startS3();
  const client = s3Client(s3);
  const Bucket = s3.bucket;
  try {
    const keys = Array.from({ length: 1003 }, (_, i) => `many/${String(i).padStart(4, '0')}`);
    for (let i = 0; i < keys.length; i += 50) {
      await Promise.all(
        keys.slice(i, i + 50).map((Key) => client.send(new PutObjectCommand({ Bucket, Key, Body: 'x' }))),
      );
    }
    const first = await client.send(new ListObjectsV2Command({ Bucket }));
    assert.equal(first.Contents?.length, 1000);
    assert.equal(first.IsTruncated, true);
    const second = await client.send(
      new ListObjectsV2Command({ Bucket, ContinuationToken: first.NextContinuationToken }),
    );
    assert.equal(second.IsTruncated, false);
    assert.deepEqual(
      [...(first.Contents ?? []), ...(second.Contents ?? [])].map((o) => o.Key),
      keys,
    );
  } finally {
    client.destroy();
    await s3.stop();
  }
});

test('startS3: DeleteObjects of many keys in shared folders never fails, and the folders go', async () => {
  const s3 = await startS3();
  const client = s3Client(s3);
  const Bucket = s3.bucket;
  try {
    // s3rver deleted a multi-delete's objects concurrently, each removing its folder when it looked
    // empty: one of them found the folder gone (InternalError), and so did every retry
    for (let round = 0; round < 40; round++) {
      const keys = ['a.txt', 'dir/sub/b.txt', 'dir/c.txt', 'dir/sub/d.txt', 'dir/sub/e.txt']
        .concat(Array.from({ length: 8 }, (_, i) => `dir/f${i}.txt`))
        .map((k) => `ws/${round}/${k}`);
      await Promise.all(keys.map((Key) => client.send(new PutObjectCommand({ Bucket, Key, Body: Key }))));
      const r = await client.send(
        new DeleteObjectsCommand({ Bucket, Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true } }),
      );
      assert.deepEqual(r.Errors ?? [], [], `round ${round}`);
      const left = await client.send(new ListObjectsV2Command({ Bucket, Prefix: `ws/${round}/` }));
      assert.equal(left.KeyCount, 0);
    }
    assert.deepEqual(await readdir(join(s3.dir, Bucket)).catch(() => []), [], 'empty folders are removed');
  } finally {
    client.destroy();
    await s3.stop();
  }
});

test('startS3: with a given dir the objects survive a restart, and the dir is kept', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'hako-test-s3-'));
  try {
    const first = await startS3({ dir, bucket: 'persist' });
    const c1 = s3Client(first);
    try {
      await c1.send(new PutObjectCommand({ Bucket: 'persist', Key: 'a/b c.txt', Body: 'kept' }));
    } finally {
      c1.destroy();
      await first.stop();
    }
    assert.equal(await portOpen(first.port), false);
    assert.ok(existsSync(join(dir, 'persist')), 'a caller-given dir is kept at stop');

    const second = await startS3({ dir, bucket: 'persist' });
    const c2 = s3Client(second);
    try {
      const got = await c2.send(new GetObjectCommand({ Bucket: 'persist', Key: 'a/b c.txt' }));
      assert.equal(await got.Body!.transformToString(), 'kept');
    } finally {
      c2.destroy();
      await second.stop();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
