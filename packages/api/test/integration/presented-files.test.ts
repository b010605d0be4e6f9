// File versions and presented files against a real PostgreSQL (HAKO_TEST_DATABASE=pglite runs
// the same on the embedded one): the version history written by file registration, presenting
// marks in a transaction, the listings through the HTTP routes, tenant isolation, and the
// migration's backfill of files registered before it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { silentLogger } from '@hako/core';
import type { FastifyInstance } from 'fastify';
import { buildApp, createAppRepos } from '../../src/app.js';
import type { AppRepos } from '../../src/app.js';
import { MemoryLockManager } from '../../src/coord/memory-lock.js';
import { MemoryRateLimiter } from '../../src/coord/memory-rate-limiter.js';
import { loadMigrations, migrate } from '../../src/db/migrate.js';
import { DEFAULT_TENANT_SETTINGS } from '../../src/http/tenant-settings.js';
import { ApiKeyRepository } from '../../src/repositories/api-keys.js';
import { FileRepository } from '../../src/repositories/files.js';
import { RunRepository } from '../../src/repositories/runs.js';
import type { ObjectStore } from '../../src/types.js';
import { startPostgresFixture } from '../helpers/db.js';
import type { PostgresFixture, TestDatabase } from '../helpers/db.js';

let pg: PostgresFixture | undefined;
const closers: (() => Promise<unknown> | void)[] = [];

before(async () => {
  pg = await startPostgresFixture();
});

after(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await pg?.stop();
});

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const file = (path: string, content: string, source: 'ai_created' | 'user_upload', runId?: string) => ({
  path,
  size: content.length,
  sha256: sha(content),
  mimeType: 'text/markdown',
  source,
  ...(runId === undefined ? {} : { runId }),
});

/** The routes never touch the object store. */
const noStore: ObjectStore = {
  put: () => Promise.reject(new Error('unused')),
  get: () => Promise.reject(new Error('unused')),
  getStream: () => Promise.reject(new Error('unused')),
  list: () => ({
    [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(new Error('unused')) }),
  }),
  delete: () => Promise.reject(new Error('unused')),
  deletePrefix: () => Promise.reject(new Error('unused')),
};

async function setup(): Promise<{
  db: TestDatabase;
  repos: AppRepos;
  app: FastifyInstance;
  tenantId: string;
  key: string;
  conversationId: string;
  run: () => Promise<string>;
}> {
  const db = await pg!.migrated();
  const repos = createAppRepos(db.db);
  const locks = new MemoryLockManager();
  const limiter = new MemoryRateLimiter();
  closers.push(
    () => locks.close(),
    () => limiter.close(),
  );
  const app = await buildApp({
    logger: silentLogger(),
    adminToken: `admin-${randomBytes(12).toString('hex')}`,
    repos,
    rateLimiter: limiter,
    locks,
    store: noStore,
  });
  closers.push(() => app.close());
  const tenant = await repos.tenants.create({ name: 'acme', settings: DEFAULT_TENANT_SETTINGS });
  const { key } = await new ApiKeyRepository(db.db).create(tenant.id);
  const conv = await repos.conversations.create(tenant.id, {});
  const runs = new RunRepository(db.db);
  // one run at a time per conversation: each new run ends the previous one
  let last: string | undefined;
  const run = async (): Promise<string> => {
    if (last !== undefined)
      await runs.finish(tenant.id, last, { status: 'completed' }, { type: 'done', data: {} });
    last = (await runs.start({ tenantId: tenant.id, conversationId: conv.id, prompt: 'p' })).id;
    return last;
  };
  return { db, repos, app, tenantId: tenant.id, key, conversationId: conv.id, run };
}

test('each new content is a version with its run; unchanged content is none; history outlives a delete', async () => {
  const { repos, tenantId, conversationId: c, run, db } = await setup();
  const r1 = await run();
  await new FileRepository(db.db).upsertMany(tenantId, c, [file('report.md', 'v1', 'ai_created', r1)]);
  await repos.files.upsert(tenantId, c, file('report.md', 'v1', 'user_upload')); // same content
  const r2 = await run();
  const f2 = await repos.files.upsert(tenantId, c, file('report.md', 'v2!', 'ai_created', r2));
  assert.equal(f2.version, 2);
  assert.equal(f2.source, 'ai_modified');
  let versions = await repos.presentedFiles.listVersions(tenantId, c, 'report.md');
  assert.deepEqual(
    versions.map((v) => [v.version, v.source, v.runId, v.size, v.sha256, v.current]),
    [
      [1, 'ai_created', r1, 2, sha('v1'), false],
      [2, 'ai_modified', r2, 3, sha('v2!'), true],
    ],
  );
  // An upload (no run).
  const f3 = await repos.files.upsert(tenantId, c, file('report.md', 'v3', 'user_upload'));
  assert.equal(f3.version, 3);
  versions = await repos.presentedFiles.listVersions(tenantId, c, 'report.md');
  assert.equal(versions.at(-1)?.runId, null);

  // Deleted: the history stays, nothing current; created again: it goes on at version 4.
  assert.equal(await repos.files.delete(tenantId, c, 'report.md'), true);
  versions = await repos.presentedFiles.listVersions(tenantId, c, 'report.md');
  assert.deepEqual(
    versions.map((v) => [v.version, v.current]),
    [
      [1, false],
      [2, false],
      [3, false],
    ],
  );
  const again = await repos.files.upsert(tenantId, c, file('report.md', 'v4', 'ai_created', await run()));
  assert.equal(again.version, 4);
  assert.equal(again.source, 'ai_created');
  assert.deepEqual(await repos.presentedFiles.listVersions(tenantId, c, 'never.md'), []);
  assert.deepEqual(await repos.presentedFiles.listVersions(tenantId, c, '.hako/x'), []);
});

test('marking presents registered files with their version and reports the rest as missing', async () => {
  const { repos, tenantId, conversationId: c, run, db } = await setup();
  const r1 = await run();
  await new FileRepository(db.db).upsertMany(tenantId, c, [
    file('report.md', 'v1', 'ai_created', r1),
    file('data/chart.csv', 'a,b', 'ai_created', r1),
  ]);
  const m1 = await db.db.transaction((tx) =>
    createAppRepos(tx).presentedFiles.mark(tenantId, c, r1, [
      { path: 'report.md', description: 'The report' },
      { path: 'data/chart.csv' },
      { path: 'missing.md' },
      { path: '.hako/claude/x' },
    ]),
  );
  assert.deepEqual(m1, {
    presented: ['data/chart.csv', 'report.md'],
    missing: ['.hako/claude/x', 'missing.md'],
  });
  let list = await repos.presentedFiles.list(tenantId, c);
  assert.deepEqual(
    list.map((p) => [p.path, p.version, p.presentedVersion, p.description, p.runId]),
    [
      ['data/chart.csv', 1, 1, null, r1],
      ['report.md', 1, 1, 'The report', r1],
    ],
  );

  // Changed and presented again without a description: version 2, the description kept.
  const r2 = await run();
  await repos.files.upsert(tenantId, c, file('report.md', 'v2', 'ai_created', r2));
  list = await repos.presentedFiles.list(tenantId, c);
  assert.deepEqual(
    list.filter((p) => p.path === 'report.md').map((p) => [p.version, p.presentedVersion]),
    [[2, 1]],
    'the listing shows the current version before it is presented again',
  );
  await repos.presentedFiles.mark(tenantId, c, r2, [{ path: 'report.md' }]);
  const report = (await repos.presentedFiles.list(tenantId, c)).find((p) => p.path === 'report.md');
  assert.deepEqual(
    [report?.version, report?.presentedVersion, report?.description, report?.runId],
    [2, 2, 'The report', r2],
  );

  // Deleting the file removes its presentation.
  await repos.files.delete(tenantId, c, 'data/chart.csv');
  assert.deepEqual(
    (await repos.presentedFiles.list(tenantId, c)).map((p) => p.path),
    ['report.md'],
  );
  assert.deepEqual(await repos.presentedFiles.mark(tenantId, c, r2, []), { presented: [], missing: [] });
});

test('the routes list presented files and versions, tenant-scoped', async () => {
  const { repos, app, tenantId, key, conversationId: c, run, db } = await setup();
  const r1 = await run();
  await repos.files.upsert(tenantId, c, file('out/report.md', '# r', 'ai_created', r1));
  await repos.presentedFiles.mark(tenantId, c, r1, [{ path: 'out/report.md', description: 'R' }]);
  const auth = { authorization: `Bearer ${key}` };

  const p = await app.inject({ method: 'GET', url: `/v1/conversations/${c}/files/presented`, headers: auth });
  assert.equal(p.statusCode, 200, p.body);
  const [entry] = p.json<{ files: Record<string, unknown>[] }>().files;
  assert.deepEqual(
    { ...entry, presented_at: typeof entry?.presented_at },
    {
      path: 'out/report.md',
      version: 1,
      presented_version: 1,
      size: 3,
      sha256: sha('# r'),
      mime_type: 'text/markdown',
      description: 'R',
      presented_at: 'string',
      run_id: r1,
    },
  );

  const v = await app.inject({
    method: 'GET',
    url: `/v1/conversations/${c}/file-versions/out/report.md`,
    headers: auth,
  });
  assert.equal(v.statusCode, 200, v.body);
  const body = v.json<{ path: string; versions: Record<string, unknown>[] }>();
  assert.equal(body.path, 'out/report.md');
  assert.deepEqual(
    body.versions.map((x) => [x.version, x.source, x.run_id, x.current]),
    [[1, 'ai_created', r1, true]],
  );
  const encoded = await app.inject({
    method: 'GET',
    url: `/v1/conversations/${c}/file-versions/out%2Freport.md`,
    headers: auth,
  });
  assert.equal(encoded.statusCode, 200, encoded.body);

  const missing = await app.inject({
    method: 'GET',
    url: `/v1/conversations/${c}/file-versions/nope.md`,
    headers: auth,
  });
  assert.equal(missing.statusCode, 404);
  assert.equal(missing.json<{ code: string }>().code, 'FILE_NOT_FOUND');
  const reserved = await app.inject({
    method: 'GET',
    url: `/v1/conversations/${c}/file-versions/.hako/claude/x`,
    headers: auth,
  });
  assert.equal(reserved.json<{ code: string }>().code, 'FILE_PATH_INVALID');

  // Another tenant: the same 404 as a missing conversation, on both routes.
  const other = await repos.tenants.create({ name: 'other', settings: DEFAULT_TENANT_SETTINGS });
  const otherKey = (await new ApiKeyRepository(db.db).create(other.id)).key;
  for (const url of [
    `/v1/conversations/${c}/files/presented`,
    `/v1/conversations/${c}/file-versions/out/report.md`,
  ]) {
    const r = await app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${otherKey}` } });
    assert.equal(r.statusCode, 404, r.body);
    assert.equal(r.json<{ code: string }>().code, 'CONVERSATION_NOT_FOUND');
  }
  const none = await app.inject({ method: 'GET', url: `/v1/conversations/${c}/files/presented` });
  assert.equal(none.statusCode, 401);
});

test('the migration records the current version of files registered before it', async () => {
  const db = await pg!.empty();
  const all = await loadMigrations();
  await migrate(db.db, { logger: silentLogger(), migrations: all.filter((m) => m.version === 1) });
  const tenantId = crypto.randomUUID();
  const conversationId = crypto.randomUUID();
  await db.db.query("INSERT INTO tenants (id, name) VALUES ($1, 'old')", [tenantId]);
  await db.db.query('INSERT INTO conversations (id, tenant_id) VALUES ($1, $2)', [conversationId, tenantId]);
  await db.db.query(
    `INSERT INTO conversation_files (conversation_id, path, size, sha256, mime_type, version, source)
     VALUES ($1, 'old.txt', 3, $2, 'text/plain', 3, 'ai_modified')`,
    [conversationId, sha('old')],
  );
  await migrate(db.db, { logger: silentLogger(), migrations: all });
  const repos = createAppRepos(db.db);
  const versions = await repos.presentedFiles.listVersions(tenantId, conversationId, 'old.txt');
  assert.deepEqual(
    versions.map((v) => [v.version, v.source, v.runId, v.current]),
    [[3, 'ai_modified', null, true]],
  );
  const next = await repos.files.upsert(tenantId, conversationId, file('old.txt', 'new', 'ai_created'));
  assert.equal(next.version, 4);
});
