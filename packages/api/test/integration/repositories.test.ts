// The repositories against a real PostgreSQL: one private server for the file, a fresh migrated
// database per test.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { AppError } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import type { Database } from '../../src/db/pool.js';
import { ApiKeyRepository, hashApiKey } from '../../src/repositories/api-keys.js';
import { ConversationRepository } from '../../src/repositories/conversations.js';
import { EventRepository } from '../../src/repositories/events.js';
import { FileRepository } from '../../src/repositories/files.js';
import type { FileRecord } from '../../src/repositories/files.js';
import { RunRepository } from '../../src/repositories/runs.js';
import { TenantRepository } from '../../src/repositories/tenants.js';
import { WorkspaceObjectRepository } from '../../src/repositories/workspace-objects.js';
import type { Tenant, TenantSettings } from '../../src/types.js';
import { startPostgresFixture } from '../helpers/db.js';
import type { PostgresFixture } from '../helpers/db.js';

let pg: PostgresFixture;

before(async () => {
  pg = await startPostgresFixture();
});
after(async () => {
  await pg?.stop();
});

const SETTINGS: TenantSettings = {
  limits: {
    cpus: 1,
    memoryBytes: 512 * 1024 * 1024,
    pids: 256,
    diskBytes: 1024 * 1024 * 1024,
    requestsPerMinute: 60,
    concurrentRuns: 2,
    maxTurns: 20,
  },
  allowedTools: ['Bash', 'Read', 'Write'],
  disallowedTools: ['WebFetch'],
  egressAllow: ['pypi.org:443'],
  systemPrompt: 'Be brief.',
  maxContextTokens: 150_000,
};

function sha(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function file(path: string, content: string, source: FileRecord['source'] = 'user_upload'): FileRecord {
  return { path, size: Buffer.byteLength(content), sha256: sha(content), mimeType: 'text/plain', source };
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof AppError, `expected AppError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

interface World {
  db: Database;
  tenants: TenantRepository;
  keys: ApiKeyRepository;
  conversations: ConversationRepository;
  runs: RunRepository;
  events: EventRepository;
  files: FileRepository;
  objects: WorkspaceObjectRepository;
  a: Tenant;
  b: Tenant;
}

async function world(db?: Database): Promise<World> {
  const d = db ?? (await pg.migrated()).db;
  const tenants = new TenantRepository(d);
  return {
    db: d,
    tenants,
    keys: new ApiKeyRepository(d),
    conversations: new ConversationRepository(d),
    runs: new RunRepository(d),
    events: new EventRepository(d),
    files: new FileRepository(d),
    objects: new WorkspaceObjectRepository(d),
    a: await tenants.create({ name: 'tenant a', settings: SETTINGS }),
    b: await tenants.create({ name: 'tenant b', settings: SETTINGS }),
  };
}

test('tenants: create answers the stored tenant; get finds it; unknown and malformed ids are undefined', async () => {
  const w = await world();
  assert.match(w.a.id, /^[0-9a-f-]{36}$/);
  assert.equal(w.a.name, 'tenant a');
  assert.deepEqual(w.a.settings, SETTINGS);
  assert.ok(!Number.isNaN(Date.parse(w.a.createdAt)));
  assert.deepEqual(await w.tenants.get(w.a.id), w.a);
  assert.equal(await w.tenants.get(randomUUID()), undefined);
  assert.equal(await w.tenants.get('not-a-uuid'), undefined);
  await rejectsWith(w.tenants.create({ name: '', settings: SETTINGS }), 'INVALID_ARGUMENT');
});

test('api keys: the plain key is shown once and stored only as its sha256; authenticate accepts it and refuses wrong, malformed and revoked keys', async () => {
  const w = await world();
  const created = await w.keys.create(w.a.id);
  assert.match(created.key, /^hk_[A-Za-z0-9_-]{43}$/);
  assert.equal(Buffer.from(created.key.slice(3), 'base64url').length, 32);
  assert.equal(created.prefix, created.key.slice(3, 11));
  assert.equal(created.tenantId, w.a.id);

  const rows = await w.db.query<Record<string, unknown>>('SELECT * FROM api_keys');
  assert.equal(rows.rowCount, 1);
  assert.equal(rows.rows[0]?.hash, hashApiKey(created.key));
  assert.equal(rows.rows[0]?.hash, sha(created.key));
  assert.ok(
    !JSON.stringify(rows.rows).includes(created.key.slice(11)),
    'no column holds the secret part of the key',
  );

  assert.deepEqual(await w.keys.authenticate(created.key), { tenantId: w.a.id, keyId: created.id });

  // Same prefix, different rest: found by prefix, refused by the hash.
  const last = created.key.at(-1) === 'A' ? 'B' : 'A';
  assert.equal(await w.keys.authenticate(created.key.slice(0, -1) + last), undefined);
  assert.equal(await w.keys.authenticate(`hk_${'x'.repeat(43)}`), undefined);
  assert.equal(await w.keys.authenticate(created.key + 'x'), undefined);
  assert.equal(await w.keys.authenticate(''), undefined);
  assert.equal(await w.keys.authenticate(created.key.slice(3)), undefined);

  // A second key of another tenant authenticates as that tenant.
  const other = await w.keys.create(w.b.id);
  assert.deepEqual(await w.keys.authenticate(other.key), { tenantId: w.b.id, keyId: other.id });

  // Revoking: only by its own tenant; afterwards refused; a second revoke is false.
  assert.equal(await w.keys.revoke(w.b.id, created.id), false);
  assert.deepEqual(await w.keys.authenticate(created.key), { tenantId: w.a.id, keyId: created.id });
  assert.equal(await w.keys.revoke(w.a.id, created.id), true);
  assert.equal(await w.keys.authenticate(created.key), undefined);
  assert.equal(await w.keys.revoke(w.a.id, created.id), false);
  assert.deepEqual(await w.keys.authenticate(other.key), { tenantId: w.b.id, keyId: other.id });

  const listed = await w.keys.list(w.a.id);
  assert.equal(listed.length, 1);
  assert.equal(listed[0]?.id, created.id);
  assert.ok(listed[0]?.revokedAt);
  assert.ok(!('hash' in (listed[0] ?? {})));

  await rejectsWith(w.keys.create(randomUUID()), 'TENANT_NOT_FOUND');
  await rejectsWith(w.keys.create('nope'), 'TENANT_NOT_FOUND');
});

test('conversations: create, get, list and updates are scoped to the tenant', async () => {
  const w = await world();
  const c1 = await w.conversations.create(w.a.id, { title: 'first' });
  assert.equal(c1.tenantId, w.a.id);
  assert.equal(c1.title, 'first');
  assert.equal(c1.workspaceEnabled, true);
  assert.equal(c1.sessionId, null);
  assert.equal(c1.contextTokens, 0);
  assert.equal(c1.status, 'idle');
  const c2 = await w.conversations.create(w.a.id, { workspaceEnabled: false });
  assert.equal(c2.workspaceEnabled, false);
  assert.equal(c2.title, null);
  const cb = await w.conversations.create(w.b.id);

  assert.deepEqual(await w.conversations.get(w.a.id, c1.id), c1);
  await rejectsWith(w.conversations.get(w.b.id, c1.id), 'CONVERSATION_NOT_FOUND');
  await rejectsWith(w.conversations.get(w.a.id, 'x'), 'CONVERSATION_NOT_FOUND');
  assert.equal(await w.conversations.find(w.b.id, c1.id), undefined);
  await rejectsWith(w.conversations.create(randomUUID()), 'TENANT_NOT_FOUND');

  const listA = await w.conversations.list(w.a.id);
  assert.deepEqual(new Set(listA.map((c) => c.id)), new Set([c1.id, c2.id]));
  assert.deepEqual(
    (await w.conversations.list(w.b.id)).map((c) => c.id),
    [cb.id],
  );
  // Pages: newest first, `before` continues.
  for (let i = 0; i < 3; i++) await w.conversations.create(w.a.id, { title: `more ${i}` });
  const all = await w.conversations.list(w.a.id);
  assert.equal(all.length, 5);
  const page1 = await w.conversations.list(w.a.id, { limit: 2 });
  const page2 = await w.conversations.list(w.a.id, { limit: 2, before: page1.at(-1)?.id });
  const page3 = await w.conversations.list(w.a.id, { limit: 2, before: page2.at(-1)?.id });
  assert.deepEqual(
    [...page1, ...page2, ...page3].map((c) => c.id),
    all.map((c) => c.id),
  );
  await rejectsWith(w.conversations.list(w.b.id, { before: c1.id }), 'CONVERSATION_NOT_FOUND');

  // Updates by another tenant are not found and change nothing.
  await rejectsWith(w.conversations.setTitle(w.b.id, c1.id, 'stolen'), 'CONVERSATION_NOT_FOUND');
  await rejectsWith(w.conversations.setSession(w.b.id, c1.id, 'sess', 5), 'CONVERSATION_NOT_FOUND');
  await rejectsWith(
    w.conversations.setSandbox(w.b.id, c1.id, { node: 'n', sandboxId: 's' }),
    'CONVERSATION_NOT_FOUND',
  );
  assert.deepEqual(await w.conversations.get(w.a.id, c1.id), c1);

  await w.conversations.setTitle(w.a.id, c1.id, 'renamed');
  await w.conversations.setSession(w.a.id, c1.id, 'session-1', 1234);
  const updated = await w.conversations.get(w.a.id, c1.id);
  assert.equal(updated.title, 'renamed');
  assert.equal(updated.sessionId, 'session-1');
  assert.equal(updated.contextTokens, 1234);
  assert.ok(updated.updatedAt > c1.updatedAt);
  await rejectsWith(w.conversations.setSession(w.a.id, c1.id, 's', -1), 'INVALID_ARGUMENT');

  // Sandbox assignment: set, read, compare-and-clear.
  assert.equal(await w.conversations.getSandbox(w.a.id, c1.id), undefined);
  await w.conversations.setSandbox(w.a.id, c1.id, { node: 'node-1', sandboxId: 'sb-1' });
  assert.deepEqual(await w.conversations.getSandbox(w.a.id, c1.id), { node: 'node-1', sandboxId: 'sb-1' });
  await rejectsWith(w.conversations.getSandbox(w.b.id, c1.id), 'CONVERSATION_NOT_FOUND');
  const swept = await w.conversations.listSandboxes('node-1');
  assert.deepEqual(
    swept.map((s) => [s.tenantId, s.conversationId, s.sandboxId, s.running]),
    [[w.a.id, c1.id, 'sb-1', false]],
  );
  assert.deepEqual(await w.conversations.listSandboxes('node-2'), []);
  assert.equal(await w.conversations.clearSandbox(w.a.id, c1.id, 'sb-old'), false);
  assert.equal(await w.conversations.clearSandbox(w.b.id, c1.id, 'sb-1'), false);
  assert.equal(await w.conversations.clearSandbox(w.a.id, c1.id, 'sb-1'), true);
  assert.equal(await w.conversations.getSandbox(w.a.id, c1.id), undefined);
});

test('runs: one running run per conversation; finish stores the outcome and the final event in one transaction', async () => {
  const w = await world();
  const conv = await w.conversations.create(w.a.id);
  const run = await w.runs.start({
    tenantId: w.a.id,
    conversationId: conv.id,
    prompt: 'hello',
    lockToken: 'tok-1',
  });
  assert.equal(run.status, 'running');
  assert.equal(run.prompt, 'hello');
  assert.equal(run.lockToken, 'tok-1');
  assert.equal(run.endedAt, null);
  assert.equal((await w.conversations.get(w.a.id, conv.id)).status, 'running');

  await rejectsWith(
    w.runs.start({ tenantId: w.a.id, conversationId: conv.id, prompt: 'again' }),
    'CONVERSATION_LOCKED',
  );
  await rejectsWith(
    w.runs.start({ tenantId: w.b.id, conversationId: conv.id, prompt: 'x' }),
    'CONVERSATION_NOT_FOUND',
  );
  await rejectsWith(w.runs.get(w.b.id, run.id), 'RUN_NOT_FOUND');

  await w.events.append(w.a.id, conv.id, run.id, { type: 'init', data: { session_id: 's1' } });

  // A final event the database refuses (data must be an object) rolls the whole finish back.
  await rejectsWith(
    w.runs.finish(
      w.a.id,
      run.id,
      { status: 'completed' },
      {
        type: 'done',
        data: ['not', 'an', 'object'] as unknown as Record<string, unknown>,
      },
    ),
    'DATABASE_FAILED',
  );
  assert.equal((await w.runs.get(w.a.id, run.id)).status, 'running', 'run untouched');
  assert.equal(await w.events.lastSeq(w.a.id, conv.id), 1, 'no event and no seq used');

  await rejectsWith(
    w.runs.finish(w.b.id, run.id, { status: 'failed' }, { type: 'done', data: {} }),
    'RUN_NOT_FOUND',
  );

  const usage = { inputTokens: 10, outputTokens: 20, cacheCreationInputTokens: 3, cacheReadInputTokens: 4 };
  const done = await w.runs.finish(
    w.a.id,
    run.id,
    { status: 'completed', usage, costUsd: 0.0123, turnCount: 2, sessionId: 'sess-9', contextTokens: 777 },
    { type: 'done', data: { status: 'completed' }, sdkMessage: { type: 'result', subtype: 'success' } },
  );
  assert.ok(done);
  assert.equal(done.seq, 2);
  assert.equal(done.type, 'done');
  assert.deepEqual(done.sdkMessage, { type: 'result', subtype: 'success' });
  const ended = await w.runs.get(w.a.id, run.id);
  assert.equal(ended.status, 'completed');
  assert.deepEqual(ended.usage, usage);
  assert.equal(ended.costUsd, 0.0123);
  assert.equal(ended.turnCount, 2);
  assert.ok(ended.durationMs !== null && ended.durationMs >= 0, 'duration measured by the database');
  assert.ok(ended.endedAt);
  const conv2 = await w.conversations.get(w.a.id, conv.id);
  assert.equal(conv2.sessionId, 'sess-9');
  assert.equal(conv2.contextTokens, 777);
  assert.equal(conv2.status, 'idle');

  // Finishing again (a reaper racing the run) changes nothing.
  assert.equal(
    await w.runs.finish(w.a.id, run.id, { status: 'failed', errorCode: 'X' }, { type: 'done', data: {} }),
    undefined,
  );
  assert.equal((await w.runs.get(w.a.id, run.id)).status, 'completed');
  assert.equal(await w.events.lastSeq(w.a.id, conv.id), 2);

  // The next run may start.
  const next = await w.runs.start({ tenantId: w.a.id, conversationId: conv.id, prompt: 'again' });
  assert.notEqual(next.id, run.id);
});

test('runs: findStaleRunning finds old running runs across tenants; the reaper finishes one with error + done', async () => {
  const w = await world();
  const ca = await w.conversations.create(w.a.id);
  const cb = await w.conversations.create(w.b.id);
  const cc = await w.conversations.create(w.b.id);
  const ra = await w.runs.start({ tenantId: w.a.id, conversationId: ca.id, prompt: 'p', lockToken: 'la' });
  const rb = await w.runs.start({ tenantId: w.b.id, conversationId: cb.id, prompt: 'p', lockToken: 'lb' });
  const fresh = await w.runs.start({ tenantId: w.b.id, conversationId: cc.id, prompt: 'p' });
  await w.db.query("UPDATE runs SET started_at = now() - interval '20 minutes' WHERE id = $1", [ra.id]);
  await w.db.query("UPDATE runs SET started_at = now() - interval '15 minutes' WHERE id = $1", [rb.id]);

  const stale = await w.runs.findStaleRunning(10 * 60_000);
  assert.deepEqual(
    stale.map((s) => [s.id, s.tenantId, s.conversationId, s.lockToken]),
    [
      [ra.id, w.a.id, ca.id, 'la'],
      [rb.id, w.b.id, cb.id, 'lb'],
    ],
  );
  assert.equal(await w.runs.countRunning(w.b.id), 2);

  const last = await w.runs.finish(w.a.id, ra.id, { status: 'failed', errorCode: 'RUN_ABANDONED' }, [
    { type: 'error', data: { code: 'RUN_ABANDONED' } },
    { type: 'done', data: { status: 'failed' } },
  ]);
  assert.equal(last?.seq, 2);
  const evs = await w.events.listAfter(w.a.id, ca.id, 0);
  assert.deepEqual(
    evs.map((e) => [e.seq, e.type]),
    [
      [1, 'error'],
      [2, 'done'],
    ],
  );
  const reaped = await w.runs.get(w.a.id, ra.id);
  assert.equal(reaped.errorCode, 'RUN_ABANDONED');
  assert.ok((reaped.durationMs ?? 0) >= 20 * 60_000 - 1000, 'duration from started_at');
  assert.deepEqual(
    (await w.runs.findStaleRunning(10 * 60_000)).map((s) => s.id),
    [rb.id],
  );
  assert.ok((await w.runs.findStaleRunning(0)).some((s) => s.id === fresh.id));
});

test('events: 50 concurrent appends from two pools get seq 1..50 with no gaps or duplicates', async () => {
  const target = await pg.migrated();
  const w = await world(target.db);
  const poolA = target.openPool(5);
  const poolB = target.openPool(5);
  const conv = await w.conversations.create(w.a.id);
  const other = await w.conversations.create(w.a.id);
  const run = await w.runs.start({ tenantId: w.a.id, conversationId: conv.id, prompt: 'p' });
  const otherRun = await w.runs.start({ tenantId: w.a.id, conversationId: other.id, prompt: 'p' });
  const logA = new EventRepository(poolA);
  const logB = new EventRepository(poolB);

  const appended = await Promise.all(
    Array.from({ length: 50 }, (_, i) =>
      (i % 2 === 0 ? logA : logB).append(w.a.id, conv.id, run.id, { type: 'assistant', data: { i } }),
    ),
  );
  // Interleaved appends to another conversation have their own sequence.
  await Promise.all([
    logA.append(w.a.id, other.id, otherRun.id, { type: 'init', data: {} }),
    logB.append(w.a.id, other.id, otherRun.id, { type: 'done', data: {} }),
  ]);

  assert.deepEqual(
    appended.map((e) => e.seq).sort((x, y) => x - y),
    Array.from({ length: 50 }, (_, i) => i + 1),
  );
  const stored = await w.events.listAfter(w.a.id, conv.id, 0, 1000);
  assert.deepEqual(
    stored.map((e) => e.seq),
    Array.from({ length: 50 }, (_, i) => i + 1),
  );
  assert.deepEqual(new Set(stored.map((e) => e.data.i)), new Set(Array.from({ length: 50 }, (_, i) => i)));
  // Each answer is the row stored under its seq.
  for (const a of appended) assert.deepEqual(stored[a.seq - 1], a);
  assert.deepEqual(
    (await w.events.listAfter(w.a.id, other.id)).map((e) => e.seq),
    [1, 2],
  );
  assert.equal(await w.events.lastSeq(w.a.id, conv.id), 50);
});

test('events: listAfter pages, stores what jsonb would refuse, keeps the SDK message, and is tenant-scoped', async () => {
  const w = await world();
  const conv = await w.conversations.create(w.a.id);
  const run = await w.runs.start({ tenantId: w.a.id, conversationId: conv.id, prompt: 'p' });
  const first = await w.events.append(w.a.id, conv.id, run.id, {
    type: 'tool_result',
    data: { id: 't1', output: 'a\u0000b\uD800c', is_error: false },
    sdkMessage: { type: 'user', message: { content: [{ type: 'tool_result' }] } },
  });
  assert.equal(first.seq, 1);
  assert.equal(first.data.output, 'a\uFFFDb\uFFFDc');
  assert.equal(first.conversationId, conv.id);
  assert.equal(first.runId, run.id);
  assert.ok(!Number.isNaN(Date.parse(first.timestamp)));
  const ping = await w.events.append(w.a.id, conv.id, run.id, { type: 'ping', data: {} });
  assert.equal(ping.sdkMessage, undefined);
  for (let i = 0; i < 5; i++)
    await w.events.append(w.a.id, conv.id, run.id, { type: 'progress', data: { i } });

  assert.deepEqual(
    (await w.events.listAfter(w.a.id, conv.id, 0)).map((e) => e.seq),
    [1, 2, 3, 4, 5, 6, 7],
  );
  assert.deepEqual(
    (await w.events.listAfter(w.a.id, conv.id, 2, 3)).map((e) => e.seq),
    [3, 4, 5],
  );
  assert.deepEqual(await w.events.listAfter(w.a.id, conv.id, 7), []);
  const replayed = await w.events.listAfter(w.a.id, conv.id, 0, 1);
  assert.deepEqual(replayed[0], first);

  // Tenant B can neither read nor write A's log.
  await rejectsWith(w.events.listAfter(w.b.id, conv.id, 0), 'CONVERSATION_NOT_FOUND');
  await rejectsWith(w.events.lastSeq(w.b.id, conv.id), 'CONVERSATION_NOT_FOUND');
  await rejectsWith(
    w.events.append(w.b.id, conv.id, run.id, { type: 'assistant', data: { text: 'injected' } }),
    'CONVERSATION_NOT_FOUND',
  );
  await rejectsWith(w.events.listAfter(w.a.id, 'not-a-uuid', 0), 'CONVERSATION_NOT_FOUND');

  // A run of another conversation cannot log here; an unknown type is refused before SQL.
  const conv2 = await w.conversations.create(w.a.id);
  const run2 = await w.runs.start({ tenantId: w.a.id, conversationId: conv2.id, prompt: 'p' });
  await rejectsWith(
    w.events.append(w.a.id, conv.id, run2.id, { type: 'assistant', data: {} }),
    'RUN_NOT_FOUND',
  );
  await rejectsWith(
    w.events.append(w.a.id, conv.id, run.id, { type: 'bogus' as 'assistant', data: {} }),
    'INVALID_ARGUMENT',
  );
  assert.equal(await w.events.lastSeq(w.a.id, conv.id), 7, 'refused appends used no seq');
});

test('files: versions bump only when the hash changes; list/get/delete are tenant-scoped; .hako/ is never registered', async () => {
  const w = await world();
  const conv = await w.conversations.create(w.a.id);
  const v1 = await w.files.upsert(w.a.id, conv.id, file('src/a.txt', 'one', 'ai_created'));
  assert.equal(v1.version, 1);
  assert.equal(v1.source, 'ai_created');
  assert.equal(v1.size, 3);
  assert.equal(v1.sha256, sha('one'));

  const same = await w.files.upsert(w.a.id, conv.id, {
    ...file('src/a.txt', 'one', 'user_upload'),
    mimeType: 'x/y',
  });
  assert.deepEqual(same, v1, 'same content: nothing changes');

  const v2 = await w.files.upsert(w.a.id, conv.id, file('src/a.txt', 'two!', 'ai_created'));
  assert.equal(v2.version, 2);
  assert.equal(v2.source, 'ai_modified', 'the agent re-creating an existing path modified it');
  assert.equal(v2.size, 4);
  assert.equal(v2.createdAt, v1.createdAt);
  assert.ok(v2.updatedAt >= v1.updatedAt);
  const v3 = await w.files.upsert(w.a.id, conv.id, file('src/a.txt', 'three', 'user_upload'));
  assert.equal(v3.version, 3);
  assert.equal(v3.source, 'user_upload');

  const batch = await w.files.upsertMany(w.a.id, conv.id, [
    file('z.md', 'z'),
    file('b.bin', 'b1'),
    file('b.bin', 'b2'),
    file('src/a.txt', 'three', 'ai_modified'),
  ]);
  assert.deepEqual(
    batch.map((f) => [f.path, f.version, f.sha256]),
    [
      ['b.bin', 1, sha('b2')],
      ['src/a.txt', 3, sha('three')],
      ['z.md', 1, sha('z')],
    ],
  );
  assert.deepEqual(
    (await w.files.list(w.a.id, conv.id)).map((f) => f.path),
    ['b.bin', 'src/a.txt', 'z.md'],
  );
  assert.deepEqual(await w.files.get(w.a.id, conv.id, 'src/a.txt'), v3);
  assert.equal(await w.files.get(w.a.id, conv.id, 'missing'), undefined);
  assert.equal(await w.files.get(w.a.id, conv.id, 'a\u0000b'), undefined);

  // A path that is refused leaves the whole batch out.
  for (const bad of [
    '.hako/claude/settings.json',
    '.hako',
    '/etc/passwd',
    '../x',
    'a//b',
    'a/./b',
    '',
    'nul\u0000',
  ]) {
    await rejectsWith(
      w.files.upsertMany(w.a.id, conv.id, [file('ok.txt', 'ok'), file(bad, 'x')]),
      'FILE_PATH_INVALID',
    );
  }
  assert.equal(await w.files.get(w.a.id, conv.id, 'ok.txt'), undefined);
  await rejectsWith(
    w.files.upsert(w.a.id, conv.id, { ...file('h.txt', 'h'), sha256: 'ABC' }),
    'INVALID_ARGUMENT',
  );

  // Tenant B sees none of it and cannot change it.
  await rejectsWith(w.files.list(w.b.id, conv.id), 'CONVERSATION_NOT_FOUND');
  await rejectsWith(w.files.get(w.b.id, conv.id, 'src/a.txt'), 'CONVERSATION_NOT_FOUND');
  await rejectsWith(w.files.delete(w.b.id, conv.id, 'src/a.txt'), 'CONVERSATION_NOT_FOUND');
  await rejectsWith(w.files.upsert(w.b.id, conv.id, file('evil.txt', 'x')), 'CONVERSATION_NOT_FOUND');
  assert.equal((await w.files.list(w.a.id, conv.id)).length, 3);

  assert.equal(await w.files.delete(w.a.id, conv.id, 'z.md'), true);
  assert.equal(await w.files.delete(w.a.id, conv.id, 'z.md'), false);
  assert.deepEqual(
    (await w.files.list(w.a.id, conv.id)).map((f) => f.path),
    ['b.bin', 'src/a.txt'],
  );
});

test('workspace objects: applyChanges upserts and deletes in one transaction; getAll answers the manifest; tenant-scoped', async () => {
  const w = await world();
  const conv = await w.conversations.create(w.a.id);
  assert.deepEqual(await w.objects.getAll(w.a.id, conv.id), new Map());

  const many = Array.from({ length: 1000 }, (_, i) => ({
    path: `d/${i}.txt`,
    sha256: sha(String(i)),
    size: i,
  }));
  await w.objects.applyChanges(
    w.a.id,
    conv.id,
    [...many, { path: '.hako/claude/state.json', sha256: sha('s'), size: 1 }],
    [],
  );
  const all = await w.objects.getAll(w.a.id, conv.id);
  assert.equal(all.size, 1001);
  assert.deepEqual(all.get('d/7.txt'), { sha256: sha('7'), size: 7 });
  assert.deepEqual(
    all.get('.hako/claude/state.json'),
    { sha256: sha('s'), size: 1 },
    '.hako/ is part of the manifest',
  );

  await w.objects.applyChanges(
    w.a.id,
    conv.id,
    [
      { path: 'd/1.txt', sha256: sha('changed'), size: 7 },
      { path: 'd/2.txt', sha256: sha('both'), size: 4 },
    ],
    ['d/0.txt', 'd/2.txt', 'never-there'],
  );
  const after2 = await w.objects.getAll(w.a.id, conv.id);
  assert.equal(after2.size, 999);
  assert.equal(after2.has('d/0.txt'), false);
  assert.equal(after2.has('d/2.txt'), false, 'a path both upserted and deleted ends up deleted');
  assert.deepEqual(after2.get('d/1.txt'), { sha256: sha('changed'), size: 7 });

  // One bad entry: nothing of the batch is applied, the deletes included.
  await rejectsWith(
    w.objects.applyChanges(
      w.a.id,
      conv.id,
      [
        { path: 'new.txt', sha256: sha('n'), size: 1 },
        { path: 'x', sha256: 'bad', size: 1 },
      ],
      ['d/3.txt'],
    ),
    'INVALID_ARGUMENT',
  );
  // A failure inside the database rolls back the deletes done before it in the transaction.
  await rejectsWith(
    w.db.transaction(async (tx) => {
      await new WorkspaceObjectRepository(tx).applyChanges(w.a.id, conv.id, [], ['d/4.txt']);
      assert.equal((await new WorkspaceObjectRepository(tx).getAll(w.a.id, conv.id)).has('d/4.txt'), false);
      await tx.query('SELECT 1/0');
    }),
    'DATABASE_FAILED',
  );
  const after3 = await w.objects.getAll(w.a.id, conv.id);
  assert.equal(after3.has('d/4.txt'), true, 'the delete inside the failed transaction was rolled back');
  assert.equal(after3.has('new.txt'), false);

  await rejectsWith(w.objects.getAll(w.b.id, conv.id), 'CONVERSATION_NOT_FOUND');
  await rejectsWith(w.objects.applyChanges(w.b.id, conv.id, [], ['d/5.txt']), 'CONVERSATION_NOT_FOUND');
  assert.equal((await w.objects.getAll(w.a.id, conv.id)).has('d/5.txt'), true);
});

test('a transaction over several repositories leaves nothing behind when it throws', async () => {
  const w = await world();
  const before = await w.db.query<{ n: string }>(
    'SELECT (SELECT count(*) FROM conversations) + (SELECT count(*) FROM runs) + (SELECT count(*) FROM conversation_events) + (SELECT count(*) FROM conversation_files) + (SELECT count(*) FROM workspace_objects) AS n',
  );
  assert.equal(before.rows[0]?.n, '0');
  let convId = '';
  await assert.rejects(
    w.db.transaction(async (tx) => {
      const conv = await new ConversationRepository(tx).create(w.a.id, { title: 'doomed' });
      convId = conv.id;
      const run = await new RunRepository(tx).start({
        tenantId: w.a.id,
        conversationId: conv.id,
        prompt: 'p',
      });
      await new EventRepository(tx).append(w.a.id, conv.id, run.id, { type: 'init', data: {} });
      await new FileRepository(tx).upsert(w.a.id, conv.id, file('a.txt', 'a'));
      await new WorkspaceObjectRepository(tx).applyChanges(
        w.a.id,
        conv.id,
        [{ path: 'a.txt', sha256: sha('a'), size: 1 }],
        [],
      );
      await new RunRepository(tx).finish(w.a.id, run.id, { status: 'completed' }, { type: 'done', data: {} });
      throw new Error('crash before commit');
    }),
    /crash before commit/,
  );
  assert.ok(convId);
  assert.equal(await w.conversations.find(w.a.id, convId), undefined);
  const afterCount = await w.db.query<{ n: string }>(
    'SELECT (SELECT count(*) FROM conversations) + (SELECT count(*) FROM runs) + (SELECT count(*) FROM conversation_events) + (SELECT count(*) FROM conversation_files) + (SELECT count(*) FROM workspace_objects) AS n',
  );
  assert.equal(afterCount.rows[0]?.n, '0');
});
