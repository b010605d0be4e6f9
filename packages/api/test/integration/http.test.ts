// The HTTP app against the real stack: a private PostgreSQL (migrated, a fresh database per
// app), a private S3-compatible server (s3rver), and a private Redis for locks and rate limits.
// Requests go through `inject` and, where the raw bytes of the request line matter (paths with
// `..` that a client library would normalize, chunked uploads), through a real socket.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { silentLogger } from '@hako/core';
import { startRedis, startS3 } from '@hako/testkit';
import type { RedisService, S3Service } from '@hako/testkit';
import type { FastifyInstance } from 'fastify';
import { buildApp, createAppRepos } from '../../src/app.js';
import type { HttpLimits } from '../../src/app.js';
import { RedisLockManager } from '../../src/coord/redis-lock.js';
import { RedisRateLimiter } from '../../src/coord/redis-rate-limiter.js';
import { conversationLockKey } from '../../src/execute/execute-run.js';
import { S3ObjectStore } from '../../src/storage/s3-object-store.js';
import type { ObjectStore } from '../../src/types.js';
import { startPostgresFixture } from '../helpers/db.js';
import type { PostgresFixture, TestDatabase } from '../helpers/db.js';

const ADMIN = `admin-${randomBytes(12).toString('hex')}`;
const prefix = `hako:t${randomBytes(3).toString('hex')}`;

let pg: PostgresFixture | undefined;
let s3: S3Service | undefined;
let redisService: RedisService | undefined;
const closers: (() => Promise<unknown> | void)[] = [];

before(async () => {
  pg = await startPostgresFixture();
  s3 = await startS3();
  redisService = await startRedis();
});

after(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await redisService?.stop();
  await s3?.stop();
  await pg?.stop();
});

function objectStore(service: S3Service): S3ObjectStore {
  const store = new S3ObjectStore({
    bucket: service.bucket,
    endpoint: service.endpoint,
    region: service.region,
    credentials: { accessKeyId: service.accessKeyId, secretAccessKey: service.secretAccessKey },
    maxAttempts: 1,
    connectionTimeoutMs: 1_000,
  });
  closers.push(() => store.close());
  return store;
}

interface Harness {
  app: FastifyInstance;
  db: TestDatabase;
  store: ObjectStore;
  locks: RedisLockManager;
  url: string;
}

/** A fresh database and app (listening on loopback) for one test. */
async function harness(opts: { limits?: Partial<HttpLimits>; s3?: S3Service } = {}): Promise<Harness> {
  const db = await pg!.migrated();
  const redis = new Redis(redisService!.url, { maxRetriesPerRequest: 1 });
  closers.push(() => redis.disconnect());
  const service = opts.s3 ?? s3!;
  const store = objectStore(service);
  const locks = new RedisLockManager({ redis, prefix });
  const app = await buildApp({
    logger: silentLogger(),
    adminToken: ADMIN,
    repos: createAppRepos(db.db),
    rateLimiter: new RedisRateLimiter({ redis, prefix }),
    locks,
    store,
    limits: opts.limits,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  closers.push(() => app.close());
  const { port } = app.server.address() as AddressInfo;
  return { app, db, store, locks, url: `http://127.0.0.1:${port}` };
}

const admin = { authorization: `Bearer ${ADMIN}` };
const bearer = (key: string): Record<string, string> => ({ authorization: `Bearer ${key}` });

async function createTenant(
  app: FastifyInstance,
  settings: unknown = {},
): Promise<{ id: string; key: string; keyId: string }> {
  const t = await app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: admin,
    payload: { name: 'acme', settings },
  });
  assert.equal(t.statusCode, 201, t.body);
  const id = t.json<{ id: string }>().id;
  const k = await app.inject({ method: 'POST', url: `/v1/tenants/${id}/api-keys`, headers: admin });
  assert.equal(k.statusCode, 201, k.body);
  const body = k.json<{ id: string; key: string }>();
  return { id, key: body.key, keyId: body.id };
}

async function createConversation(app: FastifyInstance, key: string, body?: unknown): Promise<string> {
  const r = await app.inject({
    method: 'POST',
    url: '/v1/conversations',
    headers: bearer(key),
    ...(body === undefined ? {} : { payload: body as Record<string, unknown> }),
  });
  assert.equal(r.statusCode, 201, r.body);
  return r.json<{ id: string }>().id;
}

/** A raw HTTP request: the path goes on the wire exactly as given. */
function raw(
  url: string,
  opts: { method: string; path: string; headers?: Record<string, string>; body?: Buffer | Buffer[] },
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpRequest(
      { host: u.hostname, port: u.port, method: opts.method, path: opts.path, headers: opts.headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (Array.isArray(opts.body)) {
      for (const b of opts.body) req.write(b);
      req.end();
    } else req.end(opts.body);
  });
}

function problemOf(body: string | Buffer): {
  code: string;
  status: number;
  detail: string;
  [k: string]: unknown;
} {
  return JSON.parse(body.toString()) as { code: string; status: number; detail: string };
}

const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

async function objectKeys(store: ObjectStore, pfx: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of store.list(pfx)) keys.push(o.key);
  return keys;
}

test('admin routes take the admin token only, in constant-time comparison, answering 401 problems', async () => {
  const { app } = await harness();
  const cases: [Record<string, string>, string][] = [
    [{}, 'no header'],
    [{ authorization: `Bearer ${ADMIN}x` }, 'longer token'],
    [{ authorization: `Bearer ${ADMIN.slice(0, -1)}` }, 'shorter token'],
    [{ authorization: `Basic ${Buffer.from(`admin:${ADMIN}`).toString('base64')}` }, 'basic auth'],
    [{ authorization: ADMIN }, 'no scheme'],
  ];
  for (const [headers, what] of cases) {
    const r = await app.inject({ method: 'POST', url: '/v1/tenants', headers, payload: { name: 'x' } });
    assert.equal(r.statusCode, 401, what);
    assert.match(String(r.headers['content-type']), /^application\/problem\+json/, what);
    assert.equal(r.headers['www-authenticate'], 'Bearer realm="hako"', what);
    assert.equal(problemOf(r.body).code, 'UNAUTHENTICATED', what);
  }
  // A tenant key is not an admin token.
  const { key, id } = await createTenant(app);
  const r = await app.inject({ method: 'GET', url: `/v1/tenants/${id}`, headers: bearer(key) });
  assert.equal(r.statusCode, 401);
  // And the admin token is not a tenant key.
  const c = await app.inject({ method: 'POST', url: '/v1/conversations', headers: admin });
  assert.equal(c.statusCode, 401);
  assert.equal(problemOf(c.body).code, 'UNAUTHENTICATED');
  // Lowercase scheme works.
  const ok = await app.inject({
    method: 'GET',
    url: `/v1/tenants/${id}`,
    headers: { authorization: `bearer ${ADMIN}` },
  });
  assert.equal(ok.statusCode, 200);
});

test('a tenant is created with validated settings and their defaults, stored in PostgreSQL', async () => {
  const { app, db } = await harness();
  const r = await app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: admin,
    payload: {
      name: '  acme  ',
      settings: { limits: { cpus: 2, requests_per_minute: 120 }, egress_allow: ['pypi.org:443'] },
    },
  });
  assert.equal(r.statusCode, 201, r.body);
  const body = r.json<{ id: string; name: string; settings: { limits: Record<string, number> } }>();
  assert.equal(body.name, 'acme');
  assert.deepEqual(body.settings.limits, {
    cpus: 2,
    memory_bytes: 1024 ** 3,
    pids: 256,
    disk_bytes: 1024 ** 3,
    requests_per_minute: 120,
    concurrent_runs: 4,
    max_turns: 50,
  });
  const row = await db.db.query<{
    name: string;
    settings: { limits: Record<string, number>; egressAllow: string[] };
  }>('SELECT name, settings FROM tenants WHERE id = $1', [body.id]);
  assert.equal(row.rows[0]?.name, 'acme');
  assert.equal(row.rows[0]?.settings.limits.requestsPerMinute, 120);
  assert.equal(row.rows[0]?.settings.limits.maxTurns, 50);
  assert.deepEqual(row.rows[0]?.settings.egressAllow, ['pypi.org:443']);

  const got = await app.inject({ method: 'GET', url: `/v1/tenants/${body.id}`, headers: admin });
  assert.equal(got.statusCode, 200);
  assert.deepEqual(got.json(), body);

  const missing = await app.inject({
    method: 'GET',
    url: `/v1/tenants/${crypto.randomUUID()}`,
    headers: admin,
  });
  assert.equal(missing.statusCode, 404);
  assert.equal(problemOf(missing.body).code, 'TENANT_NOT_FOUND');

  for (const [settings, field] of [
    [{ limits: { cpus: -1 } }, 'body.settings.limits.cpus'],
    [{ limits: { requestsPerMinute: 5 } }, 'body.settings.limits.requestsPerMinute'],
    [{ egress_allow: ['no-port'] }, 'body.settings.egress_allow.0'],
  ] as const) {
    const bad = await app.inject({
      method: 'POST',
      url: '/v1/tenants',
      headers: admin,
      payload: { name: 'x', settings },
    });
    assert.equal(bad.statusCode, 400, JSON.stringify(settings));
    const p = problemOf(bad.body);
    assert.equal(p.code, 'INVALID_ARGUMENT');
    assert.equal(p.field, field);
  }
  const count = await db.db.query<{ n: string }>('SELECT count(*) AS n FROM tenants');
  assert.equal(Number(count.rows[0]?.n), 1, 'refused tenants were not created');
});

test('an API key is shown once, stored hashed, works, and stops working when revoked', async () => {
  const { app, db } = await harness();
  const { id, key, keyId } = await createTenant(app);
  assert.match(key, /^hk_[A-Za-z0-9_-]{43}$/);

  const stored = await db.db.query<Record<string, unknown>>('SELECT * FROM api_keys WHERE id = $1', [keyId]);
  assert.equal(stored.rows[0]?.hash, sha256(key));
  assert.ok(!JSON.stringify(stored.rows).includes(key), 'the plain key is not stored');

  const list = await app.inject({ method: 'GET', url: `/v1/tenants/${id}/api-keys`, headers: admin });
  assert.equal(list.statusCode, 200);
  assert.ok(!list.body.includes(key), 'the key is never shown again');
  assert.deepEqual(
    list
      .json<{ api_keys: { id: string; prefix: string; revoked_at: null }[] }>()
      .api_keys.map((k) => [k.id, k.prefix]),
    [[keyId, key.slice(3, 11)]],
  );

  const conv = await createConversation(app, key);
  const read = await app.inject({ method: 'GET', url: `/v1/conversations/${conv}`, headers: bearer(key) });
  assert.equal(read.statusCode, 200);
  assert.equal(read.json<{ workspace_enabled: boolean }>().workspace_enabled, true);

  for (const wrong of [`hk_${'A'.repeat(43)}`, `${key.slice(0, -1)}x`, 'not-a-key', `${key} extra`]) {
    const r = await app.inject({ method: 'GET', url: `/v1/conversations/${conv}`, headers: bearer(wrong) });
    assert.equal(r.statusCode, 401, wrong);
    assert.equal(problemOf(r.body).code, 'UNAUTHENTICATED');
    assert.equal(r.headers['www-authenticate'], 'Bearer realm="hako"');
  }

  const revoke = await app.inject({
    method: 'DELETE',
    url: `/v1/tenants/${id}/api-keys/${keyId}`,
    headers: admin,
  });
  assert.equal(revoke.statusCode, 204);
  const after = await app.inject({ method: 'GET', url: `/v1/conversations/${conv}`, headers: bearer(key) });
  assert.equal(after.statusCode, 401);
  const again = await app.inject({
    method: 'DELETE',
    url: `/v1/tenants/${id}/api-keys/${keyId}`,
    headers: admin,
  });
  assert.equal(again.statusCode, 404);
  assert.equal(problemOf(again.body).code, 'API_KEY_NOT_FOUND');
});

test('conversations: defaults, unknown fields refused, another tenant answers 404 on every route', async () => {
  const { app, store, url } = await harness();
  const a = await createTenant(app);
  const b = await createTenant(app);
  const conv = await createConversation(app, a.key, { title: 'mine' });
  const noWorkspace = await createConversation(app, a.key, { workspace_enabled: false });
  const got = await app.inject({
    method: 'GET',
    url: `/v1/conversations/${noWorkspace}`,
    headers: bearer(a.key),
  });
  assert.equal(got.json<{ workspace_enabled: boolean }>().workspace_enabled, false);

  const typo = await app.inject({
    method: 'POST',
    url: '/v1/conversations',
    headers: bearer(a.key),
    payload: { workspaceEnabled: false },
  });
  assert.equal(typo.statusCode, 400);
  assert.equal(problemOf(typo.body).field, 'body.workspaceEnabled');

  const up = await app.inject({
    method: 'POST',
    url: `/v1/conversations/${conv}/files?path=secret.txt`,
    headers: { ...bearer(a.key), 'content-type': 'text/plain' },
    payload: 'tenant A only',
  });
  assert.equal(up.statusCode, 201, up.body);

  const asB = bearer(b.key);
  const attempts = [
    { method: 'GET' as const, url: `/v1/conversations/${conv}` },
    { method: 'GET' as const, url: `/v1/conversations/${conv}/files` },
    { method: 'GET' as const, url: `/v1/conversations/${conv}/files/secret.txt` },
    { method: 'DELETE' as const, url: `/v1/conversations/${conv}/files/secret.txt` },
  ];
  for (const at of attempts) {
    const r = await app.inject({ ...at, headers: asB });
    assert.equal(r.statusCode, 404, `${at.method} ${at.url}`);
    assert.equal(problemOf(r.body).code, 'CONVERSATION_NOT_FOUND');
  }
  const r = await raw(url, {
    method: 'POST',
    path: `/v1/conversations/${conv}/files?path=planted.txt`,
    headers: { ...asB, 'content-type': 'text/plain' },
    body: Buffer.from('from B'),
  });
  assert.equal(r.status, 404);
  assert.deepEqual(await objectKeys(store, `workspaces/${a.id}/${conv}/`), [
    `workspaces/${a.id}/${conv}/secret.txt`,
  ]);
  assert.deepEqual(await objectKeys(store, `workspaces/${b.id}/`), []);

  const disabled = await app.inject({
    method: 'POST',
    url: `/v1/conversations/${noWorkspace}/files?path=a.txt`,
    headers: { ...bearer(a.key), 'content-type': 'text/plain' },
    payload: 'x',
  });
  assert.equal(disabled.statusCode, 409);
  assert.equal(problemOf(disabled.body).code, 'WORKSPACE_DISABLED');
});

test('files: upload, list, download and delete round trip through S3, the registry and the manifest', async () => {
  const { app, db, store } = await harness();
  const t = await createTenant(app);
  const conv = await createConversation(app, t.key);
  const auth = bearer(t.key);
  const binary = randomBytes(1024 * 1024 + 17);
  const text = 'héllo wörld\n';

  const up1 = await app.inject({
    method: 'POST',
    url: `/v1/conversations/${conv}/files?path=${encodeURIComponent('data/blob.bin')}`,
    headers: { ...auth, 'content-type': 'application/octet-stream' },
    payload: binary,
  });
  assert.equal(up1.statusCode, 201, up1.body);
  assert.deepEqual(
    (({ path, size, sha256: h, mime_type, version, source }) => ({
      path,
      size,
      h,
      mime_type,
      version,
      source,
    }))(up1.json<Record<string, unknown>>()),
    {
      path: 'data/blob.bin',
      size: binary.length,
      h: sha256(binary),
      mime_type: 'application/octet-stream',
      version: 1,
      source: 'user_upload',
    },
  );
  const up2 = await app.inject({
    method: 'POST',
    url: `/v1/conversations/${conv}/files?path=notes/ünï.txt`,
    headers: { ...auth, 'content-type': 'Text/Plain; Charset=UTF-8' },
    payload: text,
  });
  assert.equal(up2.statusCode, 201, up2.body);
  assert.equal(up2.json<{ mime_type: string }>().mime_type, 'text/plain; charset=utf-8');

  // The object store holds the bytes at the documented key.
  assert.deepEqual(await store.get(`workspaces/${t.id}/${conv}/data/blob.bin`), binary);
  assert.equal((await store.get(`workspaces/${t.id}/${conv}/notes/ünï.txt`)).toString(), text);
  // The registry and the sync manifest both have them.
  const files = await db.db.query<{ path: string; sha256: string; source: string; size: string }>(
    'SELECT path, sha256, source, size FROM conversation_files WHERE conversation_id = $1 ORDER BY path',
    [conv],
  );
  assert.deepEqual(
    files.rows.map((r) => [r.path, r.sha256, r.source, Number(r.size)]),
    [
      ['data/blob.bin', sha256(binary), 'user_upload', binary.length],
      ['notes/ünï.txt', sha256(text), 'user_upload', Buffer.byteLength(text)],
    ],
  );
  const manifest = await db.db.query<{ path: string; sha256: string }>(
    'SELECT path, sha256 FROM workspace_objects WHERE conversation_id = $1 ORDER BY path',
    [conv],
  );
  assert.deepEqual(
    manifest.rows.map((r) => [r.path, r.sha256]),
    [
      ['data/blob.bin', sha256(binary)],
      ['notes/ünï.txt', sha256(text)],
    ],
  );

  const list = await app.inject({ method: 'GET', url: `/v1/conversations/${conv}/files`, headers: auth });
  assert.equal(list.statusCode, 200);
  assert.deepEqual(
    list.json<{ files: { path: string }[] }>().files.map((f) => f.path),
    ['data/blob.bin', 'notes/ünï.txt'],
  );

  const down = await app.inject({
    method: 'GET',
    url: `/v1/conversations/${conv}/files/data/blob.bin`,
    headers: auth,
  });
  assert.equal(down.statusCode, 200);
  assert.ok(down.rawPayload.equals(binary), 'downloaded bytes equal the upload');
  assert.equal(down.headers['content-type'], 'application/octet-stream');
  assert.equal(down.headers['content-length'], String(binary.length));
  assert.equal(down.headers.etag, `"${sha256(binary)}"`);
  assert.equal(down.headers['x-content-type-options'], 'nosniff');
  assert.match(String(down.headers['content-disposition']), /^attachment; filename="blob\.bin"/);

  const downText = await app.inject({
    method: 'GET',
    url: `/v1/conversations/${conv}/files/${encodeURIComponent('notes/ünï.txt')}`,
    headers: auth,
  });
  assert.equal(downText.statusCode, 200);
  assert.equal(downText.body, text);
  assert.equal(downText.headers['content-type'], 'text/plain; charset=utf-8');

  const cached = await app.inject({
    method: 'GET',
    url: `/v1/conversations/${conv}/files/data/blob.bin`,
    headers: { ...auth, 'if-none-match': `"${sha256(binary)}"` },
  });
  assert.equal(cached.statusCode, 304);
  assert.equal(cached.rawPayload.length, 0);

  // The same path again with new content: a new version, still the user's.
  const changed = Buffer.from('changed');
  const up3 = await app.inject({
    method: 'POST',
    url: `/v1/conversations/${conv}/files?path=data/blob.bin`,
    headers: auth,
    payload: changed,
  });
  assert.equal(up3.statusCode, 201, up3.body);
  assert.equal(up3.json<{ version: number }>().version, 2);
  assert.deepEqual(await store.get(`workspaces/${t.id}/${conv}/data/blob.bin`), changed);

  const del = await app.inject({
    method: 'DELETE',
    url: `/v1/conversations/${conv}/files/data/blob.bin`,
    headers: auth,
  });
  assert.equal(del.statusCode, 204);
  assert.deepEqual(await objectKeys(store, `workspaces/${t.id}/${conv}/`), [
    `workspaces/${t.id}/${conv}/notes/ünï.txt`,
  ]);
  const left = await db.db.query<{ path: string }>(
    `SELECT path FROM conversation_files WHERE conversation_id = $1
     UNION ALL SELECT path FROM workspace_objects WHERE conversation_id = $1`,
    [conv],
  );
  assert.deepEqual(
    left.rows.map((r) => r.path),
    ['notes/ünï.txt', 'notes/ünï.txt'],
  );
  const gone = await app.inject({
    method: 'GET',
    url: `/v1/conversations/${conv}/files/data/blob.bin`,
    headers: auth,
  });
  assert.equal(gone.statusCode, 404);
  assert.equal(problemOf(gone.body).code, 'FILE_NOT_FOUND');
  const delAgain = await app.inject({
    method: 'DELETE',
    url: `/v1/conversations/${conv}/files/data/blob.bin`,
    headers: auth,
  });
  assert.equal(delAgain.statusCode, 404);
  assert.equal(problemOf(delAgain.body).code, 'FILE_NOT_FOUND');

  // An empty file is a file.
  const empty = await app.inject({
    method: 'POST',
    url: `/v1/conversations/${conv}/files?path=empty`,
    headers: auth,
  });
  assert.equal(empty.statusCode, 201, empty.body);
  const emptyDown = await app.inject({
    method: 'GET',
    url: `/v1/conversations/${conv}/files/empty`,
    headers: auth,
  });
  assert.equal(emptyDown.statusCode, 200);
  assert.equal(emptyDown.rawPayload.length, 0);
});

test('every bad path is refused with 400 FILE_PATH_INVALID and stores nothing', async () => {
  const { app, store, url } = await harness();
  const t = await createTenant(app);
  const conv = await createConversation(app, t.key);
  const auth = bearer(t.key);
  const uploads: [string, string][] = [
    ['', 'empty'],
    ['/etc/passwd', 'absolute'],
    ['../other/x.txt', 'dot_segment'],
    ['a/../../x', 'dot_segment'],
    ['./a', 'dot_segment'],
    ['a//b', 'empty_segment'],
    ['dir/', 'empty_segment'],
    ['a\0b', 'control_character'],
    ['a\nb', 'control_character'],
    ['a\\b', 'backslash'],
    ['.hako/claude/.credentials.json', 'reserved'],
    ['.hako', 'reserved'],
    ['x'.repeat(256), 'segment_too_long'],
    [Array.from({ length: 33 }, () => 'd').join('/'), 'too_deep'],
  ];
  for (const [path, reason] of uploads) {
    const r = await raw(url, {
      method: 'POST',
      path: `/v1/conversations/${conv}/files?path=${encodeURIComponent(path)}`,
      headers: { ...auth, 'content-type': 'text/plain' },
      body: Buffer.from('x'),
    });
    assert.equal(r.status, 400, JSON.stringify(path));
    const p = problemOf(r.body);
    assert.equal(p.code, 'FILE_PATH_INVALID', JSON.stringify(path));
    assert.equal(p.reason, reason, JSON.stringify(path));
  }
  const noPath = await app.inject({
    method: 'POST',
    url: `/v1/conversations/${conv}/files`,
    headers: auth,
    payload: 'x',
  });
  assert.equal(noPath.statusCode, 400);
  assert.equal(problemOf(noPath.body).field, 'querystring.path');

  // Download and delete paths exactly as they go on the wire (no client normalization).
  const wire: [string, string][] = [
    ['../secret', 'dot_segment'],
    ['a/../../../etc/passwd', 'dot_segment'],
    ['%2e%2e/secret', 'dot_segment'],
    ['a/%2E%2E/b', 'dot_segment'],
    ['..%2f..%2fx', 'dot_segment'],
    ['a%00b', 'control_character'],
    ['%2Fetc%2Fpasswd', 'absolute'],
    ['a%5Cb', 'backslash'],
    ['.hako/claude/settings.json', 'reserved'],
    ['.hako%2Fclaude', 'reserved'],
    ['a//b', 'empty_segment'],
    ['', 'empty'],
  ];
  for (const method of ['GET', 'DELETE']) {
    for (const [p, reason] of wire) {
      const r = await raw(url, { method, path: `/v1/conversations/${conv}/files/${p}`, headers: auth });
      assert.equal(r.status, 400, `${method} ${p}`);
      const problem = problemOf(r.body);
      assert.equal(problem.code, 'FILE_PATH_INVALID', `${method} ${p}`);
      assert.equal(problem.reason, reason, `${method} ${p}`);
    }
  }
  assert.deepEqual(await objectKeys(store, `workspaces/${t.id}/`), []);
});

test('uploads over the limit of their media type answer 413 FILE_TOO_LARGE, declared or streamed', async () => {
  const { app, store, url } = await harness({
    limits: { upload: { byType: { 'text/*': 1000, 'image/*': 2000 }, defaultBytes: 4000 } },
  });
  const t = await createTenant(app);
  const conv = await createConversation(app, t.key);
  const auth = bearer(t.key);
  const send = (path: string, contentType: string | undefined, size: number) =>
    app.inject({
      method: 'POST',
      url: `/v1/conversations/${conv}/files?path=${path}`,
      headers: { ...auth, ...(contentType ? { 'content-type': contentType } : {}) },
      payload: Buffer.alloc(size, 0x61),
    });
  for (const [ct, limit] of [
    ['text/plain', 1000],
    ['text/csv; charset=utf-8', 1000],
    ['image/png', 2000],
    ['application/pdf', 4000],
    [undefined, 4000],
  ] as const) {
    const okR = await send(`ok-${limit}-${ct ?? 'none'}`.replace(/[^a-z0-9-]/g, '_'), ct, limit);
    assert.equal(okR.statusCode, 201, `${ct} at the limit: ${okR.body}`);
    const big = await send('too-big', ct, limit + 1);
    assert.equal(big.statusCode, 413, `${ct} over the limit`);
    const p = problemOf(big.body);
    assert.equal(p.code, 'FILE_TOO_LARGE');
    assert.equal(p.limit, limit);
  }
  // Chunked, without Content-Length: cut off while streaming.
  const chunked = await raw(url, {
    method: 'POST',
    path: `/v1/conversations/${conv}/files?path=chunked.txt`,
    headers: { ...auth, 'content-type': 'text/plain', 'transfer-encoding': 'chunked' },
    body: [Buffer.alloc(600, 0x61), Buffer.alloc(600, 0x62)],
  });
  assert.equal(chunked.status, 413);
  assert.equal(problemOf(chunked.body).code, 'FILE_TOO_LARGE');
  const keys = await objectKeys(store, `workspaces/${t.id}/${conv}/`);
  assert.ok(!keys.some((k) => k.endsWith('too-big') || k.endsWith('chunked.txt')), keys.join(','));

  // The default limits: text/* stops at 10 MiB.
  const { app: app2 } = await harness();
  const t2 = await createTenant(app2);
  const conv2 = await createConversation(app2, t2.key);
  const big = await app2.inject({
    method: 'POST',
    url: `/v1/conversations/${conv2}/files?path=big.txt`,
    headers: { ...bearer(t2.key), 'content-type': 'text/plain' },
    payload: Buffer.alloc(10 * 1024 * 1024 + 1, 0x61),
  });
  assert.equal(big.statusCode, 413);
  assert.equal(problemOf(big.body).code, 'FILE_TOO_LARGE');
});

test('a run holding the conversation lock refuses uploads and deletes with 409 CONVERSATION_LOCKED', async () => {
  const { app, locks, store } = await harness({ limits: { fileLockWaitMs: 2_000 } });
  const t = await createTenant(app);
  const conv = await createConversation(app, t.key);
  const auth = bearer(t.key);
  const put = () =>
    app.inject({
      method: 'POST',
      url: `/v1/conversations/${conv}/files?path=a.txt`,
      headers: { ...auth, 'content-type': 'text/plain' },
      payload: 'a',
    });
  assert.equal((await put()).statusCode, 201);
  const run = await locks.acquire(conversationLockKey(conv), 60_000);
  assert.ok(run);
  try {
    const r = await put();
    assert.equal(r.statusCode, 409);
    assert.equal(problemOf(r.body).code, 'CONVERSATION_LOCKED');
    const d = await app.inject({
      method: 'DELETE',
      url: `/v1/conversations/${conv}/files/a.txt`,
      headers: auth,
    });
    assert.equal(d.statusCode, 409);
    assert.equal((await store.get(`workspaces/${t.id}/${conv}/a.txt`)).toString(), 'a', 'nothing changed');
  } finally {
    await run.release();
  }
  assert.equal((await put()).statusCode, 201);
  // Parallel uploads wait for each other's short hold rather than fail.
  const results = await Promise.all(
    Array.from({ length: 5 }, (_, i) =>
      app.inject({
        method: 'POST',
        url: `/v1/conversations/${conv}/files?path=p${i}.txt`,
        headers: { ...auth, 'content-type': 'text/plain' },
        payload: `p${i}`,
      }),
    ),
  );
  assert.deepEqual(
    results.map((r) => r.statusCode),
    [201, 201, 201, 201, 201],
  );
  assert.equal(await locks.isHeld(conversationLockKey(conv)), false, 'uploads release the lock');
});

test('requests past the tenant limit per API key answer 429 RATE_LIMITED with Retry-After', async () => {
  const { app } = await harness();
  const t = await createTenant(app, { limits: { requests_per_minute: 3 } });
  const second = await app.inject({ method: 'POST', url: `/v1/tenants/${t.id}/api-keys`, headers: admin });
  const key2 = second.json<{ key: string }>().key;
  const conv = await createConversation(app, t.key); // request 1
  const get = (key: string) =>
    app.inject({ method: 'GET', url: `/v1/conversations/${conv}`, headers: bearer(key) });
  const r2 = await get(t.key);
  assert.equal(r2.statusCode, 200);
  assert.equal(r2.headers['x-ratelimit-limit'], '3');
  assert.equal(r2.headers['x-ratelimit-remaining'], '1');
  assert.equal((await get(t.key)).statusCode, 200);
  const limited = await get(t.key);
  assert.equal(limited.statusCode, 429);
  const p = problemOf(limited.body);
  assert.equal(p.code, 'RATE_LIMITED');
  const retry = Number(limited.headers['retry-after']);
  assert.ok(
    Number.isInteger(retry) && retry >= 1 && retry <= 60,
    `Retry-After ${String(limited.headers['retry-after'])}`,
  );
  // Counted per key: the tenant's other key still has its own budget.
  assert.equal((await get(key2)).statusCode, 200);
  // Admin routes are not rate limited by tenant keys.
  assert.equal(
    (await app.inject({ method: 'GET', url: `/v1/tenants/${t.id}`, headers: admin })).statusCode,
    200,
  );
});

test('/openapi.json needs no auth and describes every route the app serves', async () => {
  const { app } = await harness();
  const r = await app.inject({ method: 'GET', url: '/openapi.json' });
  assert.equal(r.statusCode, 200);
  assert.match(String(r.headers['content-type']), /^application\/json/);
  const doc = r.json<{ openapi: string; paths: Record<string, Record<string, unknown>> }>();
  assert.equal(doc.openapi, '3.1.0');
  const served = app
    .printRoutes({ commonPrefix: false })
    .split('\n')
    .filter((l) => l.includes('('));
  assert.ok(served.length > 0);
  const documented = Object.entries(doc.paths).flatMap(([p, item]) =>
    Object.keys(item).map((m) => `${m.toUpperCase()} ${p}`),
  );
  for (const want of [
    'POST /v1/tenants',
    'GET /v1/tenants/{id}',
    'POST /v1/tenants/{id}/api-keys',
    'POST /v1/conversations',
    'GET /v1/conversations/{id}',
    'POST /v1/conversations/{id}/files',
    'GET /v1/conversations/{id}/files',
    'GET /v1/conversations/{id}/files/{path}',
    'DELETE /v1/conversations/{id}/files/{path}',
    'GET /openapi.json',
  ]) {
    assert.ok(documented.includes(want), `${want} is missing`);
  }
  const unknown = await app.inject({ method: 'GET', url: '/v1/nothing-here' });
  assert.equal(unknown.statusCode, 404);
  assert.equal(problemOf(unknown.body).code, 'ROUTE_NOT_FOUND');
});

test('a failing dependency answers a 5xx problem that names only the log reference', async () => {
  const own = await startS3();
  try {
    const { app } = await harness({ s3: own });
    const t = await createTenant(app);
    const conv = await createConversation(app, t.key);
    await own.stop();
    const r = await app.inject({
      method: 'POST',
      url: `/v1/conversations/${conv}/files?path=a.txt`,
      headers: { ...bearer(t.key), 'content-type': 'text/plain' },
      payload: 'a',
    });
    assert.ok(r.statusCode >= 500, `${r.statusCode} ${r.body}`);
    const p = problemOf(r.body);
    assert.equal(p.detail, `the error was logged as ref ${String(r.headers['x-request-id'])}`);
    assert.doesNotMatch(r.body, /127\.0\.0\.1|ECONNREFUSED|connect/i);
  } finally {
    await own.stop();
  }
});
