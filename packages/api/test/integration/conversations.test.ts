// Conversations over HTTP against the real stack (private PostgreSQL, Redis and S3): list filters
// and cursor pages, PATCH, archive and unarchive, delete (S3, rows, spool, a retry after a
// failure midway), the message history rebuilt from stored runs and events, and the title rule.
// hakod is not here: sandbox release is recorded by a stand-in (the privileged e2e test has the
// real one).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { silentLogger } from '@hako/core';
import { startRedis, startS3 } from '@hako/testkit';
import type { RedisService, S3Service } from '@hako/testkit';
import type { FastifyInstance } from 'fastify';
import { buildApp, createAppRepos } from '../../src/app.js';
import type { ConversationResources } from '../../src/conversations/conversation-lifecycle.js';
import { RedisLockManager } from '../../src/coord/redis-lock.js';
import { RedisRateLimiter } from '../../src/coord/redis-rate-limiter.js';
import { conversationLockKey } from '../../src/execute/execute-run.js';
import { ConversationRepository } from '../../src/repositories/conversations.js';
import { EventRepository } from '../../src/repositories/events.js';
import { RunRepository } from '../../src/repositories/runs.js';
import { S3ObjectStore } from '../../src/storage/s3-object-store.js';
import type { AgentEvent, ObjectStore } from '../../src/types.js';
import { createRunDir, unlock, writePending, OBJECTS_DIR } from '../../src/workspace/spool.js';
import { WorkspaceSync } from '../../src/workspace/workspace-sync.js';
import { startPostgresFixture } from '../helpers/db.js';
import type { PostgresFixture, TestDatabase } from '../helpers/db.js';

const ADMIN = `admin-${randomBytes(12).toString('hex')}`;
const prefix = `hako:t${randomBytes(3).toString('hex')}`;

let pg: PostgresFixture | undefined;
let s3: S3Service | undefined;
let redisService: RedisService | undefined;
let tmp = '';
const closers: (() => Promise<unknown> | void)[] = [];

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'hako-conv-test-'));
  pg = await startPostgresFixture();
  s3 = await startS3();
  redisService = await startRedis();
});

after(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await redisService?.stop();
  await s3?.stop();
  await pg?.stop();
  await rm(tmp, { recursive: true, force: true });
});

interface Harness {
  app: FastifyInstance;
  db: TestDatabase;
  store: ObjectStore;
  locks: RedisLockManager;
  sync: WorkspaceSync;
  spoolDir: string;
  /** Conversations whose sandboxes were released, in order. */
  released: string[];
  /** Make the next releaseSandboxes calls fail (a hakod that does not answer). */
  failRelease: { times: number };
}

async function harness(): Promise<Harness> {
  const db = await pg!.migrated();
  const redis = new Redis(redisService!.url, { maxRetriesPerRequest: 1 });
  closers.push(() => redis.disconnect());
  const store = new S3ObjectStore({
    bucket: s3!.bucket,
    endpoint: s3!.endpoint,
    region: s3!.region,
    credentials: { accessKeyId: s3!.accessKeyId, secretAccessKey: s3!.secretAccessKey },
    maxAttempts: 1,
  });
  closers.push(() => store.close());
  const locks = new RedisLockManager({ redis, prefix });
  const spoolDir = join(tmp, `spool-${randomBytes(4).toString('hex')}`);
  const sync = new WorkspaceSync({ store, spoolDir, logger: silentLogger() });
  const released: string[] = [];
  const failRelease = { times: 0 };
  const resources: ConversationResources = {
    releaseSandboxes: (_tenantId, conversationId) => {
      if (failRelease.times > 0) {
        failRelease.times--;
        return Promise.reject(new Error('hakod did not answer'));
      }
      released.push(conversationId);
      return Promise.resolve();
    },
    discardSpool: async (conversationId) => {
      await sync.discardConversation(conversationId);
    },
  };
  const app = await buildApp({
    logger: silentLogger(),
    adminToken: ADMIN,
    repos: createAppRepos(db.db),
    rateLimiter: new RedisRateLimiter({ redis, prefix }),
    locks,
    store,
    conversationResources: resources,
    limits: { fileLockWaitMs: 200 },
  });
  closers.push(() => app.close());
  return { app, db, store, locks, sync, spoolDir, released, failRelease };
}

const admin = { authorization: `Bearer ${ADMIN}` };
const bearer = (key: string): Record<string, string> => ({ authorization: `Bearer ${key}` });

async function createTenant(app: FastifyInstance): Promise<{ id: string; key: string }> {
  const t = await app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: admin,
    payload: { name: 'acme' },
  });
  assert.equal(t.statusCode, 201, t.body);
  const id = t.json<{ id: string }>().id;
  const k = await app.inject({ method: 'POST', url: `/v1/tenants/${id}/api-keys`, headers: admin });
  assert.equal(k.statusCode, 201, k.body);
  return { id, key: k.json<{ key: string }>().key };
}

type Wire = Record<string, unknown> & { id: string };

async function create(app: FastifyInstance, key: string, body: Record<string, unknown> = {}): Promise<Wire> {
  const r = await app.inject({
    method: 'POST',
    url: '/v1/conversations',
    headers: bearer(key),
    payload: body,
  });
  assert.equal(r.statusCode, 201, r.body);
  return r.json<Wire>();
}

async function list(
  app: FastifyInstance,
  key: string,
  query: Record<string, string>,
): Promise<{ status: number; conversations: Wire[]; next: string | null; code?: string }> {
  const r = await app.inject({ method: 'GET', url: '/v1/conversations', headers: bearer(key), query });
  const body = r.json<{ conversations?: Wire[]; next_cursor?: string | null; code?: string }>();
  return {
    status: r.statusCode,
    conversations: body.conversations ?? [],
    next: body.next_cursor ?? null,
    code: body.code,
  };
}

async function call(
  app: FastifyInstance,
  key: string,
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
  url: string,
  payload?: Record<string, unknown>,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await app.inject({
    method,
    url,
    headers: bearer(key),
    ...(payload === undefined ? {} : { payload }),
  });
  return { status: r.statusCode, body: r.body === '' ? {} : r.json<Record<string, unknown>>() };
}

async function objectKeys(store: ObjectStore, pfx: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of store.list(pfx)) keys.push(o.key);
  return keys;
}

async function rowCounts(db: TestDatabase, conversationId: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const table of [
    'conversations',
    'runs',
    'conversation_events',
    'conversation_files',
    'workspace_objects',
  ]) {
    const col = table === 'conversations' ? 'id' : 'conversation_id';
    const r = await db.db.query<{ n: string }>(`SELECT count(*) AS n FROM ${table} WHERE ${col} = $1`, [
      conversationId,
    ]);
    out[table] = Number(r.rows[0]?.n ?? 0);
  }
  return out;
}

test('paging through 120 conversations with next_cursor answers each exactly once, newest first', async () => {
  const { app, db } = await harness();
  const { id: tenantId, key } = await createTenant(app);
  const other = await createTenant(app);
  await create(app, other.key, { title: 'not yours' });
  // Created through the repository: 120 requests would pass the key's rate limit.
  const repo = new ConversationRepository(db.db);
  const ids: string[] = [];
  for (let i = 0; i < 120; i++) ids.push((await repo.create(tenantId, { title: `c${i}` })).id);
  // Some share one created_at to the microsecond: the id breaks the tie.
  await db.db.query(
    `UPDATE conversations SET created_at = '2025-06-01T00:00:00.123456Z' WHERE id = ANY($1::uuid[])`,
    [ids.slice(40, 70)],
  );
  const seen: Wire[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const page = await list(app, key, { limit: '7', ...(cursor === null ? {} : { cursor }) });
    assert.equal(page.status, 200);
    assert.ok(page.conversations.length <= 7);
    seen.push(...page.conversations);
    cursor = page.next;
    pages++;
  } while (cursor !== null && pages < 100);
  assert.equal(pages, Math.ceil(120 / 7));
  assert.equal(seen.length, 120);
  assert.equal(new Set(seen.map((c) => c.id)).size, 120);
  assert.deepEqual(new Set(seen.map((c) => c.id)), new Set(ids));
  const expected = await db.db.query<{ id: string }>(
    'SELECT id FROM conversations WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC',
    [tenantId],
  );
  assert.deepEqual(
    seen.map((c) => c.id),
    expected.rows.map((r) => r.id),
  );
  // The older `before` still pages the same way.
  const firstTwo = await list(app, key, { limit: '2' });
  const viaBefore = await list(app, key, { limit: '2', before: firstTwo.conversations[1]!.id });
  assert.deepEqual(
    viaBefore.conversations.map((c) => c.id),
    expected.rows.slice(2, 4).map((r) => r.id),
  );
  // Cursors that this API did not make, and cursor with before, are refused with a clear code.
  for (const bad of [
    'nonsense',
    'c1.AAAA',
    `c1.${Buffer.from(`2025|${randomUUID()}`).toString('base64url')}`,
  ]) {
    const r = await list(app, key, { cursor: bad });
    assert.equal(r.status, 400, bad);
    assert.equal(r.code, 'CURSOR_INVALID', bad);
  }
  const both = await list(app, key, { cursor: firstTwo.next!, before: ids[0]! });
  assert.equal(both.status, 400);
  assert.equal(both.code, 'INVALID_ARGUMENT');
});

test('the list filters by status, user_id, title text and creation time', async () => {
  const { app, db } = await harness();
  const { key } = await createTenant(app);
  const a = await create(app, key, { title: 'Quarterly REPORT 2025', user_id: 'alice' });
  const b = await create(app, key, { title: 'holiday plans', user_id: 'bob' });
  const c = await create(app, key, { title: '100%_done', user_id: 'alice' });
  const d = await create(app, key, {});
  assert.equal(a.user_id, 'alice');
  assert.equal(d.user_id, null);
  assert.equal(a.archived, false);
  await db.db.query(`UPDATE conversations SET created_at = '2024-01-15T00:00:00Z' WHERE id = $1`, [b.id]);
  const archived = await call(app, key, 'POST', `/v1/conversations/${c.id}/archive`);
  assert.equal(archived.status, 200);

  const ids = async (q: Record<string, string>): Promise<string[]> => {
    const r = await list(app, key, q);
    assert.equal(r.status, 200, JSON.stringify(r));
    return r.conversations.map((x) => x.id).sort();
  };
  assert.deepEqual(await ids({}), [a.id, b.id, d.id].sort(), 'active by default');
  assert.deepEqual(await ids({ status: 'archived' }), [c.id]);
  assert.deepEqual(await ids({ status: 'all' }), [a.id, b.id, c.id, d.id].sort());
  assert.deepEqual(await ids({ status: 'all', user_id: 'alice' }), [a.id, c.id].sort());
  assert.deepEqual(await ids({ user_id: 'alice' }), [a.id]);
  assert.deepEqual(await ids({ q: 'report' }), [a.id], 'case-insensitive');
  assert.deepEqual(await ids({ status: 'all', q: '%_' }), [c.id], 'wildcards are literal');
  assert.deepEqual(await ids({ q: '_' }), [], 'an underscore is not a wildcard');
  assert.deepEqual(await ids({ created_before: '2025-01-01T00:00:00Z' }), [b.id]);
  assert.deepEqual(await ids({ created_after: '2025-01-01T00:00:00Z' }), [a.id, d.id].sort());
  assert.deepEqual(
    await ids({ created_after: '2024-01-15T00:00:00Z', created_before: '2024-01-15T00:00:00.001Z' }),
    [b.id],
    'created_after is inclusive, created_before exclusive',
  );
  const bad = await list(app, key, { status: 'deleted' });
  assert.equal(bad.status, 400);
  assert.equal(bad.code, 'INVALID_ARGUMENT');
  const badTime = await list(app, key, { created_after: 'yesterday' });
  assert.equal(badTime.status, 400);
  assert.equal(badTime.code, 'INVALID_ARGUMENT');
});

test('PATCH changes the title and user_id, validates them, and refuses workspace_enabled', async () => {
  const { app, db } = await harness();
  const { key } = await createTenant(app);
  const other = await createTenant(app);
  const c = await create(app, key, { user_id: 'alice' });
  const r = await call(app, key, 'PATCH', `/v1/conversations/${c.id}`, { title: 'Renamed' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.title, 'Renamed');
  assert.equal(r.body.user_id, 'alice', 'a field not given stays');
  const row = await db.db.query<{ title: string; user_id: string }>(
    'SELECT title, user_id FROM conversations WHERE id = $1',
    [c.id],
  );
  assert.deepEqual(row.rows[0], { title: 'Renamed', user_id: 'alice' });
  const u = await call(app, key, 'PATCH', `/v1/conversations/${c.id}`, { user_id: 'bob', title: null });
  assert.equal(u.status, 200);
  assert.equal(u.body.user_id, 'bob');
  assert.equal(u.body.title, null);

  const immutable = await call(app, key, 'PATCH', `/v1/conversations/${c.id}`, { workspace_enabled: false });
  assert.equal(immutable.status, 400);
  assert.equal(immutable.body.code, 'FIELD_IMMUTABLE');
  assert.match(String(immutable.body.detail), /workspace_enabled is fixed/);
  const still = await db.db.query<{ w: boolean }>(
    'SELECT workspace_enabled AS w FROM conversations WHERE id = $1',
    [c.id],
  );
  assert.equal(still.rows[0]?.w, true);

  for (const [body, field] of [
    [{}, 'empty'],
    [{ title: '   ' }, 'blank title'],
    [{ title: 'x'.repeat(501) }, 'long title'],
    [{ user_id: '' }, 'empty user_id'],
    [{ session_id: 'x' }, 'unknown field'],
  ] as const) {
    const bad = await call(app, key, 'PATCH', `/v1/conversations/${c.id}`, body);
    assert.equal(bad.status, 400, field);
    assert.equal(bad.body.code, 'INVALID_ARGUMENT', field);
  }
  const foreign = await call(app, other.key, 'PATCH', `/v1/conversations/${c.id}`, { title: 'mine' });
  assert.equal(foreign.status, 404);
  assert.equal(foreign.body.code, 'CONVERSATION_NOT_FOUND');
  const unchanged = await db.db.query<{ title: string | null }>(
    'SELECT title FROM conversations WHERE id = $1',
    [c.id],
  );
  assert.equal(unchanged.rows[0]?.title, null);
});

test('a title from the first exchange never replaces one set by PATCH', async () => {
  const { app, db } = await harness();
  const { id: tenantId, key } = await createTenant(app);
  const repo = new ConversationRepository(db.db);
  const fresh = await create(app, key);
  assert.equal(await repo.setTitleIfUnset(tenantId, fresh.id, 'From the prompt'), true);
  assert.equal((await repo.get(tenantId, fresh.id)).title, 'From the prompt');
  assert.equal(await repo.setTitleIfUnset(tenantId, fresh.id, 'A later run'), false);
  const patched = await create(app, key);
  // The run began while the title was null; the user renamed it before the run ended.
  await call(app, key, 'PATCH', `/v1/conversations/${patched.id}`, { title: 'Mine' });
  assert.equal(await repo.setTitleIfUnset(tenantId, patched.id, 'From the prompt'), false);
  assert.equal((await call(app, key, 'GET', `/v1/conversations/${patched.id}`)).body.title, 'Mine');
});

test('archive keeps the data, hides the conversation, refuses runs and uploads, and releases the sandbox', async () => {
  const h = await harness();
  const { app, db, locks, store } = h;
  const { id: tenantId, key } = await createTenant(app);
  const c = await create(app, key, { title: 'to archive' });
  const up = await app.inject({
    method: 'POST',
    url: `/v1/conversations/${c.id}/files?path=a.txt`,
    headers: { ...bearer(key), 'content-type': 'text/plain' },
    payload: 'kept',
  });
  assert.equal(up.statusCode, 201, up.body);

  // A run holds the lock: archive is refused, nothing changes.
  const held = await locks.acquire(conversationLockKey(c.id), 30_000);
  assert.ok(held);
  const refused = await call(app, key, 'POST', `/v1/conversations/${c.id}/archive`);
  assert.equal(refused.status, 409);
  assert.equal(refused.body.code, 'CONVERSATION_LOCKED');
  await held.release();
  assert.equal((await call(app, key, 'GET', `/v1/conversations/${c.id}`)).body.archived, false);
  // only the upload released the (live) sandbox, so the next run restores the workspace from S3
  assert.deepEqual(h.released, [c.id]);
  h.released.length = 0;

  const a = await call(app, key, 'POST', `/v1/conversations/${c.id}/archive`);
  assert.equal(a.status, 200);
  assert.equal(a.body.archived, true);
  assert.equal(typeof a.body.archived_at, 'string');
  assert.deepEqual(h.released, [c.id], 'the sandbox was released');
  const again = await call(app, key, 'POST', `/v1/conversations/${c.id}/archive`);
  assert.equal(again.body.archived_at, a.body.archived_at, 'archiving twice keeps the first time');
  assert.equal((await list(app, key, {})).conversations.length, 0);

  // Its data is all there: the file in S3 and registered, readable.
  assert.deepEqual(await objectKeys(store, `workspaces/${tenantId}/${c.id}/`), [
    `workspaces/${tenantId}/${c.id}/a.txt`,
  ]);
  const get = await app.inject({
    method: 'GET',
    url: `/v1/conversations/${c.id}/files/a.txt`,
    headers: bearer(key),
  });
  assert.equal(get.statusCode, 200);
  assert.equal(get.body, 'kept');

  const up2 = await app.inject({
    method: 'POST',
    url: `/v1/conversations/${c.id}/files?path=b.txt`,
    headers: { ...bearer(key), 'content-type': 'text/plain' },
    payload: 'refused',
  });
  assert.equal(up2.statusCode, 409);
  assert.equal(up2.json<{ code: string }>().code, 'CONVERSATION_ARCHIVED');
  const del = await app.inject({
    method: 'DELETE',
    url: `/v1/conversations/${c.id}/files/a.txt`,
    headers: bearer(key),
  });
  assert.equal(del.statusCode, 409);
  assert.equal(del.json<{ code: string }>().code, 'CONVERSATION_ARCHIVED');
  assert.deepEqual(await objectKeys(store, `workspaces/${tenantId}/${c.id}/`), [
    `workspaces/${tenantId}/${c.id}/a.txt`,
  ]);
  // A run is refused where it starts (under the lock): server.ts's RunStore.startRun.
  await assert.rejects(new ConversationRepository(db.db).assertWritable(tenantId, c.id), {
    code: 'CONVERSATION_ARCHIVED',
  });

  const u = await call(app, key, 'POST', `/v1/conversations/${c.id}/unarchive`);
  assert.equal(u.status, 200);
  assert.equal(u.body.archived, false);
  assert.equal(u.body.archived_at, null);
  assert.equal((await new ConversationRepository(db.db).assertWritable(tenantId, c.id)).id, c.id);
  const up3 = await app.inject({
    method: 'POST',
    url: `/v1/conversations/${c.id}/files?path=b.txt`,
    headers: { ...bearer(key), 'content-type': 'text/plain' },
    payload: 'accepted',
  });
  assert.equal(up3.statusCode, 201, up3.body);
});

/** A spooled sync-back of `conversationId` that S3 has not got yet (its upload kept failing). */
async function spoolPending(
  h: Harness,
  tenantId: string,
  conversationId: string,
  path: string,
): Promise<void> {
  const runId = randomUUID();
  const dir = await createRunDir(h.spoolDir, conversationId, runId);
  const body = Buffer.from('spooled content');
  const sha = createHash('sha256').update(body).digest('hex');
  await writeFile(join(dir, OBJECTS_DIR, sha), body);
  await writePending(dir, {
    version: 1,
    tenantId,
    conversationId,
    runId,
    prefix: `workspaces/${tenantId}/${conversationId}/`,
    createdAt: new Date().toISOString(),
    uploads: [{ path, sha256: sha, size: body.length }],
    deletes: [],
    changes: [],
    attempts: 1,
  });
  await unlock(dir);
}

test('DELETE removes the S3 workspace, the spool and every row; another conversation is untouched', async () => {
  const h = await harness();
  const { app, db, store, locks } = h;
  const { id: tenantId, key } = await createTenant(app);
  const other = await createTenant(app);
  const doomed = await create(app, key, { title: 'doomed' });
  const kept = await create(app, key, { title: 'kept' });
  for (const conv of [doomed, kept]) {
    for (const path of ['a.txt', 'dir/b.txt']) {
      const r = await app.inject({
        method: 'POST',
        url: `/v1/conversations/${conv.id}/files?path=${encodeURIComponent(path)}`,
        headers: { ...bearer(key), 'content-type': 'text/plain' },
        payload: `${conv.id} ${path}`,
      });
      assert.equal(r.statusCode, 201, r.body);
    }
    await seedRun(db, tenantId, conv.id, 'hello', [{ type: 'assistant', data: { text: 'hi' } }]);
  }
  await spoolPending(h, tenantId, doomed.id, 'late.txt');
  await spoolPending(h, tenantId, kept.id, 'late.txt');

  // Another tenant cannot delete it; a run in progress blocks the delete.
  const foreign = await call(app, other.key, 'DELETE', `/v1/conversations/${doomed.id}`);
  assert.equal(foreign.status, 404);
  assert.equal(foreign.body.code, 'CONVERSATION_NOT_FOUND');
  const held = await locks.acquire(conversationLockKey(doomed.id), 30_000);
  assert.ok(held);
  const locked = await call(app, key, 'DELETE', `/v1/conversations/${doomed.id}`);
  assert.equal(locked.status, 409);
  assert.equal(locked.body.code, 'CONVERSATION_LOCKED');
  await held.release();
  assert.equal((await rowCounts(db, doomed.id)).conversations, 1);

  h.released.length = 0; // uploads above released the live sandboxes too
  const d = await call(app, key, 'DELETE', `/v1/conversations/${doomed.id}`);
  assert.equal(d.status, 204, JSON.stringify(d.body));
  assert.deepEqual(h.released, [doomed.id]);
  assert.deepEqual(await objectKeys(store, `workspaces/${tenantId}/${doomed.id}/`), []);
  assert.deepEqual(await rowCounts(db, doomed.id), {
    conversations: 0,
    runs: 0,
    conversation_events: 0,
    conversation_files: 0,
    workspace_objects: 0,
  });
  assert.equal(existsSync(join(h.spoolDir, doomed.id)), false, 'its spool is gone');
  // The spool's pending upload never lands (a resume pass finds nothing of it).
  await h.sync.resumePending();
  assert.deepEqual(await objectKeys(store, `workspaces/${tenantId}/${doomed.id}/`), []);
  const gone = await call(app, key, 'GET', `/v1/conversations/${doomed.id}`);
  assert.equal(gone.status, 404);
  assert.equal(gone.body.code, 'CONVERSATION_NOT_FOUND');
  const twice = await call(app, key, 'DELETE', `/v1/conversations/${doomed.id}`);
  assert.equal(twice.status, 404);

  // The other conversation: objects (and its spooled upload, applied by the resume pass), rows.
  assert.deepEqual((await objectKeys(store, `workspaces/${tenantId}/${kept.id}/`)).sort(), [
    `workspaces/${tenantId}/${kept.id}/a.txt`,
    `workspaces/${tenantId}/${kept.id}/dir/b.txt`,
    `workspaces/${tenantId}/${kept.id}/late.txt`,
  ]);
  const keptRows = await rowCounts(db, kept.id);
  assert.equal(keptRows.conversations, 1);
  assert.equal(keptRows.runs, 1);
  assert.equal(keptRows.conversation_files, 2);
  assert.equal(
    (await call(app, key, 'GET', `/v1/conversations/${kept.id}/messages`)).body.messages instanceof Array,
    true,
  );
});

test('a DELETE that fails midway hides the conversation and the next DELETE finishes it', async () => {
  const h = await harness();
  const { app, db, store } = h;
  const { id: tenantId, key } = await createTenant(app);
  const c = await create(app, key);
  const up = await app.inject({
    method: 'POST',
    url: `/v1/conversations/${c.id}/files?path=a.txt`,
    headers: { ...bearer(key), 'content-type': 'text/plain' },
    payload: 'x',
  });
  assert.equal(up.statusCode, 201);
  h.failRelease.times = 1;
  const failed = await call(app, key, 'DELETE', `/v1/conversations/${c.id}`);
  assert.equal(failed.status, 500);
  // Nothing is half gone: rows and objects are all there, but the conversation is not served.
  assert.equal((await rowCounts(db, c.id)).conversation_files, 1);
  assert.equal((await objectKeys(store, `workspaces/${tenantId}/${c.id}/`)).length, 1);
  assert.equal((await call(app, key, 'GET', `/v1/conversations/${c.id}`)).status, 404);
  assert.equal((await list(app, key, { status: 'all' })).conversations.length, 0);
  const upload = await app.inject({
    method: 'POST',
    url: `/v1/conversations/${c.id}/files?path=b.txt`,
    headers: { ...bearer(key), 'content-type': 'text/plain' },
    payload: 'x',
  });
  assert.equal(upload.statusCode, 404);
  const retry = await call(app, key, 'DELETE', `/v1/conversations/${c.id}`);
  assert.equal(retry.status, 204);
  assert.equal((await rowCounts(db, c.id)).conversations, 0);
  assert.deepEqual(await objectKeys(store, `workspaces/${tenantId}/${c.id}/`), []);
});

/** A finished run with `events` stored as the agent's run would store them. */
async function seedRun(
  db: TestDatabase,
  tenantId: string,
  conversationId: string,
  prompt: string,
  events: AgentEvent[],
): Promise<string> {
  const runs = new RunRepository(db.db);
  const log = new EventRepository(db.db);
  const run = await runs.start({ tenantId, conversationId, prompt });
  await log.append(tenantId, conversationId, run.id, { type: 'progress', data: { step: 'sandbox' } });
  for (const ev of events) await log.append(tenantId, conversationId, run.id, ev);
  await runs.finish(
    tenantId,
    run.id,
    { status: 'completed' },
    { type: 'done', data: { status: 'completed' } },
  );
  return run.id;
}

test('messages: prompts and the agent messages in order, grouped as the Messages API does, paged', async () => {
  const { app, db } = await harness();
  const { id: tenantId, key } = await createTenant(app);
  const other = await createTenant(app);
  const c = await create(app, key);
  const run1 = await seedRun(db, tenantId, c.id, 'first prompt', [
    { type: 'init', data: { session_id: 's' } },
    { type: 'thinking', data: { text: 'let me see' } },
    { type: 'assistant', data: { text: 'I will list' } },
    { type: 'tool_call', data: { id: 'toolu_1', name: 'Bash', input: { command: 'ls' } } },
    { type: 'tool_call', data: { id: 'toolu_2', name: 'Task', input: { description: 'sub' } } },
    { type: 'context_status', data: { tokens_used: 10, limit: 100 } },
    { type: 'tool_result', data: { id: 'toolu_1', output: 'a.txt\n', is_error: false } },
    { type: 'assistant', data: { text: 'sub says hi', parent_tool_use_id: 'toolu_2' } },
    { type: 'tool_result', data: { id: 'toolu_2', output: 'sub done', is_error: true, truncated: true } },
    { type: 'assistant', data: { text: 'all done' } },
  ]);
  const run2 = await seedRun(db, tenantId, c.id, 'second prompt', [
    { type: 'assistant', data: { text: 'again' } },
  ]);
  // A run that just started has only its prompt.
  const run3 = (
    await new RunRepository(db.db).start({ tenantId, conversationId: c.id, prompt: 'third prompt' })
  ).id;

  const all = await call(app, key, 'GET', `/v1/conversations/${c.id}/messages`);
  assert.equal(all.status, 200);
  assert.equal(all.body.next_cursor, null);
  const msgs = all.body.messages as Record<string, unknown>[];
  const brief = msgs.map((m) => [m.run_id, m.role, m.parent_tool_use_id, m.content]);
  assert.deepEqual(brief, [
    [run1, 'user', null, [{ type: 'text', text: 'first prompt' }]],
    [
      run1,
      'assistant',
      null,
      [
        { type: 'thinking', thinking: 'let me see' },
        { type: 'text', text: 'I will list' },
        { type: 'tool_use', id: 'toolu_1', name: 'Bash', input: { command: 'ls' } },
        { type: 'tool_use', id: 'toolu_2', name: 'Task', input: { description: 'sub' } },
      ],
    ],
    [
      run1,
      'tool',
      null,
      [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'a.txt\n', is_error: false }],
    ],
    [run1, 'assistant', 'toolu_2', [{ type: 'text', text: 'sub says hi' }]],
    [
      run1,
      'tool',
      null,
      [{ type: 'tool_result', tool_use_id: 'toolu_2', content: 'sub done', is_error: true, truncated: true }],
    ],
    [run1, 'assistant', null, [{ type: 'text', text: 'all done' }]],
    [run2, 'user', null, [{ type: 'text', text: 'second prompt' }]],
    [run2, 'assistant', null, [{ type: 'text', text: 'again' }]],
    [run3, 'user', null, [{ type: 'text', text: 'third prompt' }]],
  ]);
  assert.equal(msgs[0]!.id, `${run1}:prompt`);
  assert.ok(msgs.every((m) => typeof m.created_at === 'string'));
  assert.equal(new Set(msgs.map((m) => m.id)).size, msgs.length);

  // Every page size pages through the same messages, each once.
  for (const limit of [1, 2, 3, 4, 8, 9]) {
    const paged: Record<string, unknown>[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r = await call(
        app,
        key,
        'GET',
        `/v1/conversations/${c.id}/messages?limit=${limit}${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`,
      );
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const page = r.body.messages as Record<string, unknown>[];
      assert.ok(page.length <= limit);
      paged.push(...page);
      cursor = r.body.next_cursor as string | null;
      pages++;
    } while (cursor !== null && pages < 50);
    assert.deepEqual(paged, msgs, `limit ${limit}`);
    assert.equal(pages, Math.ceil(msgs.length / limit), `limit ${limit}`);
  }

  const foreign = await call(app, other.key, 'GET', `/v1/conversations/${c.id}/messages`);
  assert.equal(foreign.status, 404);
  assert.equal(foreign.body.code, 'CONVERSATION_NOT_FOUND');
  const bad = await call(app, key, 'GET', `/v1/conversations/${c.id}/messages?cursor=zzz`);
  assert.equal(bad.status, 400);
  assert.equal(bad.body.code, 'CURSOR_INVALID');
  const empty = await call(app, key, 'GET', `/v1/conversations/${(await create(app, key)).id}/messages`);
  assert.deepEqual(empty.body, { messages: [], next_cursor: null });
});
