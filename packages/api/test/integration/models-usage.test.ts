/* eslint-disable @typescript-eslint/require-await -- the agent, sandbox and workspace ports are scripted in memory */
// Models, usage and cost, and tool logs against a real PostgreSQL (a fresh migrated database per
// test) through the HTTP app. Runs are seeded through the real execute flow and the real RunStore
// (server.ts runStore: the same transaction as production), with the agent, sandbox and workspace
// ports scripted in memory; the sums the usage endpoints answer are checked against the done
// events with exact decimal arithmetic.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { AppError, silentLogger } from '@hako/core';
import { startS3 } from '@hako/testkit';
import type { S3Service } from '@hako/testkit';
import type { FastifyInstance } from 'fastify';
import { buildApp, createAppRepos } from '../../src/app.js';
import type { AppRepos } from '../../src/app.js';
import { MemoryLockManager } from '../../src/coord/memory-lock.js';
import { MemoryRateLimiter } from '../../src/coord/memory-rate-limiter.js';
import { MemoryConcurrencyLimiter } from '../../src/coord/memory-concurrency.js';
import { beginExecute, conversationLockKey } from '../../src/execute/execute-run.js';
import type { AgentPort, ExecuteDeps } from '../../src/execute/execute-run.js';
import {
  ModelRepository,
  chooseRunModel,
  chooseRunModelWithProvider,
} from '../../src/repositories/models.js';
import { RunRepository } from '../../src/repositories/runs.js';
import { loggedInput, outputSummary } from '../../src/repositories/tool-logs.js';
import { runStore } from '../../src/server.js';
import { S3ObjectStore } from '../../src/storage/s3-object-store.js';
import type { Executor, StoredEvent, Usage } from '../../src/types.js';
import { startPostgresFixture } from '../helpers/db.js';
import type { PostgresFixture, TestDatabase } from '../helpers/db.js';
import { SONNET_MODEL, cost8, expectedCost8 } from '../helpers/models.js';

const ADMIN = `admin-${randomBytes(12).toString('hex')}`;
let pg: PostgresFixture | undefined;
let s3: S3Service | undefined;
const closers: (() => Promise<unknown> | void)[] = [];

before(async () => {
  pg = await startPostgresFixture();
  s3 = await startS3();
});

after(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await s3?.stop();
  await pg?.stop();
});

interface Harness {
  app: FastifyInstance;
  db: TestDatabase;
  repos: AppRepos;
  locks: MemoryLockManager;
}

async function harness(): Promise<Harness> {
  const db = await pg!.migrated();
  const service = s3!;
  const store = new S3ObjectStore({
    bucket: service.bucket,
    endpoint: service.endpoint,
    region: service.region,
    credentials: { accessKeyId: service.accessKeyId, secretAccessKey: service.secretAccessKey },
    maxAttempts: 1,
  });
  closers.push(() => store.close());
  const locks = new MemoryLockManager();
  const rateLimiter = new MemoryRateLimiter();
  closers.push(() => locks.close());
  closers.push(() => rateLimiter.close());
  const repos = createAppRepos(db.db);
  const app = await buildApp({ logger: silentLogger(), adminToken: ADMIN, repos, rateLimiter, locks, store });
  closers.push(() => app.close());
  return { app, db, repos, locks };
}

const admin = { authorization: `Bearer ${ADMIN}` };
const bearer = (key: string): Record<string, string> => ({ authorization: `Bearer ${key}` });

async function call(
  app: FastifyInstance,
  headers: Record<string, string>,
  method: 'GET' | 'POST' | 'PATCH' | 'PUT',
  url: string,
  payload?: unknown,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await app.inject({
    method,
    url,
    headers,
    ...(payload === undefined ? {} : { payload: payload as Record<string, unknown> }),
  });
  return { status: r.statusCode, body: r.json<Record<string, unknown>>() };
}

async function createTenant(
  app: FastifyInstance,
  settings: unknown = {},
): Promise<{ id: string; key: string }> {
  const t = await call(app, admin, 'POST', '/v1/tenants', { name: 'acme', settings });
  assert.equal(t.status, 201, JSON.stringify(t.body));
  const id = String(t.body.id);
  const k = await call(app, admin, 'POST', `/v1/tenants/${id}/api-keys`);
  assert.equal(k.status, 201);
  return { id, key: String(k.body.key) };
}

const SONNET = SONNET_MODEL;
// Prices with 6 decimals, so the exact cost has more than 8 decimals and must be rounded once.
const ODD = {
  id: 'us.anthropic.claude-haiku-4-5-v1:0',
  display_name: 'Haiku on Bedrock',
  provider: 'bedrock',
  prices: { input: 0.812345, output: 4.000007, cache_creation: 1.000003, cache_read: 0.080001 },
};

test('the model registry: admin writes, tenants read the active models, clear codes', async () => {
  const { app } = await harness();
  const created = await call(app, admin, 'POST', '/v1/models', SONNET);
  assert.equal(created.status, 201, JSON.stringify(created.body));
  assert.deepEqual(
    { ...created.body, created_at: undefined, updated_at: undefined },
    { ...SONNET, status: 'active', created_at: undefined, updated_at: undefined },
  );
  assert.equal((await call(app, admin, 'POST', '/v1/models', SONNET)).body.code, 'MODEL_EXISTS');
  const badPrice = await call(app, admin, 'POST', '/v1/models', {
    ...ODD,
    prices: { ...ODD.prices, input: 0.1234567 },
  });
  assert.equal(badPrice.status, 400);
  assert.equal(badPrice.body.code, 'INVALID_ARGUMENT');
  assert.match(String(badPrice.body.detail), /prices\.input has more than 6 decimals/);
  const badProvider = await call(app, admin, 'POST', '/v1/models', { ...ODD, provider: 'openai' });
  assert.equal(badProvider.status, 400);
  const unpriced = await call(app, admin, 'POST', '/v1/models', {
    id: 'claude-unpriced',
    display_name: 'Unpriced',
    provider: 'anthropic',
  });
  assert.equal(unpriced.status, 201);
  assert.equal(unpriced.body.prices, null);
  assert.equal((await call(app, admin, 'POST', '/v1/models', ODD)).status, 201);

  const t = await createTenant(app);
  // A tenant key may not write the registry.
  const forbidden = await call(app, bearer(t.key), 'POST', '/v1/models', { ...SONNET, id: 'x-1' });
  assert.equal(forbidden.status, 401);
  assert.equal(
    (await call(app, bearer(t.key), 'PATCH', `/v1/models/${SONNET.id}/status`, { status: 'disabled' }))
      .status,
    401,
  );

  const disabled = await call(app, admin, 'PATCH', `/v1/models/${ODD.id}/status`, { status: 'disabled' });
  assert.equal(disabled.status, 200);
  assert.equal(disabled.body.status, 'disabled');
  const ids = (r: { body: Record<string, unknown> }): string[] =>
    (r.body.models as { id: string }[]).map((m) => m.id);
  assert.deepEqual(
    ids(await call(app, admin, 'GET', '/v1/models')),
    [SONNET.id, 'claude-unpriced', ODD.id].sort(),
  );
  assert.deepEqual(
    ids(await call(app, bearer(t.key), 'GET', '/v1/models')),
    [SONNET.id, 'claude-unpriced'].sort(),
  );
  assert.equal((await call(app, {}, 'GET', '/v1/models')).status, 401);
  assert.equal((await call(app, bearer('hk_nope'), 'GET', '/v1/models')).status, 401);

  const one = await call(app, bearer(t.key), 'GET', `/v1/models/${encodeURIComponent(ODD.id)}`);
  assert.equal(one.status, 200);
  assert.equal(one.body.status, 'disabled');
  const missing = await call(app, admin, 'GET', '/v1/models/claude-nope');
  assert.equal(missing.status, 404);
  assert.equal(missing.body.code, 'MODEL_NOT_FOUND');

  const patched = await call(app, admin, 'PATCH', `/v1/models/${SONNET.id}`, {
    display_name: 'Sonnet',
    prices: { input: 2.5, output: 10, cache_creation: 3, cache_read: 0.25 },
  });
  assert.equal(patched.status, 200);
  assert.equal(patched.body.display_name, 'Sonnet');
  assert.deepEqual(patched.body.prices, { input: 2.5, output: 10, cache_creation: 3, cache_read: 0.25 });
  const cleared = await call(app, admin, 'PATCH', `/v1/models/${SONNET.id}`, { prices: null });
  assert.equal(cleared.body.prices, null);
  assert.equal(cleared.body.display_name, 'Sonnet');
  assert.equal(
    (await call(app, admin, 'PATCH', '/v1/models/claude-nope', { prices: null })).body.code,
    'MODEL_NOT_FOUND',
  );
  assert.equal(
    (await call(app, admin, 'PATCH', '/v1/models/claude-nope/status', { status: 'active' })).status,
    404,
  );
});

test('tenant default and conversation models are validated against the registry', async () => {
  const { app, repos } = await harness();
  await call(app, admin, 'POST', '/v1/models', SONNET);
  await call(app, admin, 'POST', '/v1/models', { ...ODD, status: 'disabled' });

  const unknownDefault = await call(app, admin, 'POST', '/v1/tenants', {
    name: 'x',
    settings: { model: 'nope-1' },
  });
  assert.equal(unknownDefault.status, 422);
  assert.equal(unknownDefault.body.code, 'MODEL_UNKNOWN');
  const disabledDefault = await call(app, admin, 'POST', '/v1/tenants', {
    name: 'x',
    settings: { model: ODD.id },
  });
  assert.equal(disabledDefault.status, 409);
  assert.equal(disabledDefault.body.code, 'MODEL_DISABLED');

  const t = await createTenant(app);
  assert.equal(
    (await call(app, admin, 'PUT', `/v1/tenants/${t.id}/model`, { model_id: 'nope-1' })).status,
    422,
  );
  assert.equal(
    (await call(app, admin, 'PUT', `/v1/tenants/${t.id}/model`, { model_id: ODD.id })).status,
    409,
  );
  const set = await call(app, admin, 'PUT', `/v1/tenants/${t.id}/model`, { model_id: SONNET.id });
  assert.equal(set.status, 200);
  assert.deepEqual(set.body, { tenant_id: t.id, model_id: SONNET.id });
  const tenant = await call(app, admin, 'GET', `/v1/tenants/${t.id}`);
  assert.equal((tenant.body.settings as Record<string, unknown>).model, SONNET.id);
  const missingTenant = await call(app, admin, 'PUT', `/v1/tenants/${randomUUID()}/model`, {
    model_id: null,
  });
  assert.equal(missingTenant.body.code, 'TENANT_NOT_FOUND');

  const k = bearer(t.key);
  const c422 = await call(app, k, 'POST', '/v1/conversations', { model_id: 'nope-1' });
  assert.equal(c422.status, 422);
  assert.equal(c422.body.code, 'MODEL_UNKNOWN');
  assert.equal(
    (await call(app, k, 'POST', '/v1/conversations', { model_id: ODD.id })).body.code,
    'MODEL_DISABLED',
  );
  const plain = await call(app, k, 'POST', '/v1/conversations', {});
  assert.equal(plain.body.model_id, null);
  const conv = await call(app, k, 'POST', '/v1/conversations', { model_id: SONNET.id });
  assert.equal(conv.status, 201);
  assert.equal(conv.body.model_id, SONNET.id);
  const id = String(conv.body.id);
  assert.equal((await call(app, k, 'PATCH', `/v1/conversations/${id}`, { model_id: ODD.id })).status, 409);
  const back = await call(app, k, 'PATCH', `/v1/conversations/${id}`, { model_id: null });
  assert.equal(back.status, 200);
  assert.equal(back.body.model_id, null);
  assert.equal((await call(app, k, 'GET', `/v1/conversations/${id}`)).body.model_id, null);
  // Another tenant's conversation is not found, whatever the model.
  const other = await createTenant(app);
  const foreign = await call(app, bearer(other.key), 'PATCH', `/v1/conversations/${id}`, {
    model_id: SONNET.id,
  });
  assert.equal(foreign.status, 404);
  assert.equal(foreign.body.code, 'CONVERSATION_NOT_FOUND');

  // The run's model: conversation's, else the tenant default, else the configured default.
  const models = repos.models;
  assert.equal(
    await chooseRunModel(models, {
      conversationModel: SONNET.id,
      tenantModel: 'nope-1',
      configuredDefault: 'x',
    }),
    SONNET.id,
  );
  assert.equal(await chooseRunModel(models, { conversationModel: null, tenantModel: SONNET.id }), SONNET.id);
  assert.equal(
    await chooseRunModel(models, { configuredDefault: 'claude-not-registered' }),
    'claude-not-registered',
  );
  assert.equal(await chooseRunModel(models, {}), undefined);
  await assert.rejects(chooseRunModel(models, { tenantModel: 'nope-1' }), { code: 'MODEL_UNKNOWN' });
  await assert.rejects(chooseRunModel(models, { conversationModel: ODD.id }), { code: 'MODEL_DISABLED' });
  await assert.rejects(chooseRunModel(models, { configuredDefault: ODD.id }), { code: 'MODEL_DISABLED' });
  // The provider comes along: it picks the run's upstream; an unregistered default is anthropic's.
  assert.deepEqual(await chooseRunModelWithProvider(models, { tenantModel: SONNET.id }), {
    id: SONNET.id,
    provider: 'anthropic',
  });
  assert.deepEqual(await chooseRunModelWithProvider(models, { configuredDefault: 'claude-not-registered' }), {
    id: 'claude-not-registered',
    provider: 'anthropic',
  });
  await assert.rejects(chooseRunModelWithProvider(models, { conversationModel: ODD.id }), {
    code: 'MODEL_DISABLED',
  });
});

interface SeedRun {
  prompt: string;
  executor?: Executor;
  usage: Usage;
  reportedCost: number;
  fail?: boolean;
  tools?: { id: string; name: string; output: string; isError?: boolean; parent?: string }[];
}

/** Runs one execute through the real flow and RunStore; answers the stored events. */
async function seedRun(
  h: Harness,
  tenantId: string,
  conversationId: string,
  run: SeedRun,
): Promise<{ events: StoredEvent[]; model: string | undefined }> {
  const repos = h.repos;
  const tenant = (await repos.tenants.get(tenantId))!;
  const conversation = await repos.conversations.get(tenantId, conversationId);
  let seenModel: string | undefined = 'unset';
  const agent: AgentPort['run'] = async ({ onEvent, model }) => {
    seenModel = model;
    await onEvent({ type: 'init', data: { session_id: 's', model } });
    for (const t of run.tools ?? []) {
      const parent = t.parent === undefined ? {} : { parent_tool_use_id: t.parent };
      await onEvent({
        type: 'tool_call',
        data: { id: t.id, name: t.name, input: { command: t.name }, ...parent },
      });
    }
    for (const t of [...(run.tools ?? [])].reverse()) {
      const parent = t.parent === undefined ? {} : { parent_tool_use_id: t.parent };
      await onEvent({
        type: 'tool_result',
        data: { id: t.id, output: t.output, is_error: t.isError === true, ...parent },
      });
    }
    if (run.fail) throw new AppError('AGENT_FAILED', 'scripted failure');
    return {
      status: 'completed',
      result: 'ok',
      isError: false,
      usage: run.usage,
      costUsd: run.reportedCost,
      turnCount: 2,
      sessionId: 's',
      contextTokens: 10,
    };
  };
  const slots = new MemoryConcurrencyLimiter();
  closers.push(() => slots.close());
  const deps: ExecuteDeps = {
    locks: h.locks,
    slots,
    logger: silentLogger(),
    lockTtlMs: 60_000,
    pingIntervalMs: 60_000,
    runTimeoutMs: 60_000,
    runs: runStore(h.db.db, silentLogger()),
    sandboxes: { ensure: async () => ({ node: 'n1', sandboxId: 'sb1', created: false }) },
    workspace: {
      restore: async () => ({ files: 0, bytes: 0 }),
      syncBack: async () => ({ uploaded: 0, deleted: 0, unchanged: 0, changes: [], complete: true }),
    },
    agent: { run: agent },
    models: {
      choose: (t, c) =>
        chooseRunModelWithProvider(repos.models, {
          conversationModel: c.modelId,
          tenantModel: t.settings.model,
        }),
    },
  };
  const events: StoredEvent[] = [];
  const handle = await beginExecute(deps, {
    tenant,
    conversation,
    prompt: run.prompt,
    executor: run.executor,
  });
  await handle.run({ onEvent: async (ev) => void events.push(ev) });
  return { events, model: seenModel };
}

test('each run writes one usage record with the done event; the usage endpoints reconcile exactly', async () => {
  const h = await harness();
  const { app } = h;
  await call(app, admin, 'POST', '/v1/models', SONNET);
  await call(app, admin, 'POST', '/v1/models', ODD);
  await call(app, admin, 'POST', '/v1/models', {
    id: 'claude-unpriced',
    display_name: 'U',
    provider: 'anthropic',
  });
  const t = await createTenant(app, { model: SONNET.id });
  const k = bearer(t.key);
  const c1 = String((await call(app, k, 'POST', '/v1/conversations', {})).body.id);
  const c2 = String((await call(app, k, 'POST', '/v1/conversations', { model_id: ODD.id })).body.id);
  const c3 = String(
    (await call(app, k, 'POST', '/v1/conversations', { model_id: 'claude-unpriced' })).body.id,
  );
  const ada: Executor = { userId: 'u-ada', name: 'Ada', email: 'ada@example.com' };
  const bob: Executor = { userId: 'u-bob' };

  const u = (i: number, o: number, cc: number, cr: number): Usage => ({
    inputTokens: i,
    outputTokens: o,
    cacheCreationInputTokens: cc,
    cacheReadInputTokens: cr,
  });
  const runs: { conv: string; run: SeedRun; prices: typeof SONNET.prices | null; model: string }[] = [
    {
      conv: c1,
      model: SONNET.id,
      prices: SONNET.prices,
      run: {
        prompt: 'one',
        executor: ada,
        usage: u(1234, 567, 89, 10),
        reportedCost: 0.5,
        tools: [
          { id: 'toolu_task', name: 'Task', output: 'sub-agent done' },
          { id: 'toolu_sub_bash', name: 'Bash', output: 'é'.repeat(1500), parent: 'toolu_task' },
        ],
      },
    },
    {
      conv: c2,
      model: ODD.id,
      prices: ODD.prices,
      run: { prompt: 'two', executor: bob, usage: u(777_777, 33_333, 12_345, 999_999), reportedCost: 9 },
    },
    {
      conv: c2,
      model: ODD.id,
      prices: ODD.prices,
      run: {
        prompt: 'three',
        executor: ada,
        usage: u(1, 3, 7, 11),
        reportedCost: 0,
        tools: [{ id: 'toolu_x', name: 'Bash', output: 'boom', isError: true }],
      },
    },
    // Unpriced: the cost is Claude Code's figure rounded to 8 places.
    {
      conv: c3,
      model: 'claude-unpriced',
      prices: null,
      run: { prompt: 'four', usage: u(5, 5, 0, 0), reportedCost: 0.123456789 },
    },
    // A failed run still has a record (zero tokens, zero cost).
    {
      conv: c1,
      model: SONNET.id,
      prices: SONNET.prices,
      run: { prompt: 'five', executor: bob, usage: u(0, 0, 0, 0), reportedCost: 0, fail: true },
    },
  ];
  const dones: Record<string, unknown>[] = [];
  const runIds: string[] = [];
  for (const r of runs) {
    const { events, model } = await seedRun(h, t.id, r.conv, r.run);
    assert.equal(model, r.model, 'the agent port got the chosen model');
    const done = events.at(-1)!;
    assert.equal(done.type, 'done');
    dones.push(done.data);
    runIds.push(done.runId);
    const want = r.prices === null ? 12345679n : r.run.fail ? 0n : expectedCost8(r.prices, r.run.usage);
    assert.equal(cost8(done.data.cost_usd), want, `cost of run ${r.run.prompt}`);
    const stored = await new RunRepository(h.db.db).get(t.id, done.runId);
    assert.equal(stored.modelId, r.model);
    assert.deepEqual(stored.executor, r.run.executor ?? null);
    assert.equal(stored.costUsd, done.data.cost_usd);
  }
  assert.equal(dones[4]!.status, 'failed');

  // GET /v1/usage: newest first, one per run, the done events' numbers.
  const all = await call(app, k, 'GET', '/v1/usage');
  assert.equal(all.status, 200);
  const records = all.body.usage as Record<string, unknown>[];
  assert.deepEqual(
    records.map((r) => r.run_id),
    [...runIds].reverse(),
  );
  for (const rec of records) {
    const i = runIds.indexOf(String(rec.run_id));
    const d = dones[i]!;
    const du = d.usage as Record<string, number>;
    assert.equal(rec.cost_usd, d.cost_usd);
    assert.equal(rec.input_tokens, du.input_tokens);
    assert.equal(rec.output_tokens, du.output_tokens);
    assert.equal(rec.cache_creation_input_tokens, du.cache_creation_input_tokens);
    assert.equal(rec.cache_read_input_tokens, du.cache_read_input_tokens);
    assert.equal(
      rec.total_tokens,
      du.input_tokens! + du.output_tokens! + du.cache_creation_input_tokens! + du.cache_read_input_tokens!,
    );
    assert.equal(rec.status, d.status);
    assert.equal(rec.duration_ms, d.duration_ms);
    assert.equal(rec.model_id, runs[i]!.model);
    assert.equal(rec.cost_source, runs[i]!.prices === null ? 'reported' : 'model_prices');
  }
  assert.deepEqual(records.at(-1)!.executor, { user_id: 'u-ada', name: 'Ada', email: 'ada@example.com' });
  assert.equal(records.find((r) => r.run_id === runIds[3])!.executor, null);

  // Pagination and filters.
  const p1 = await call(app, k, 'GET', '/v1/usage?limit=2');
  const p2 = await call(app, k, 'GET', `/v1/usage?limit=2&cursor=${String(p1.body.next_cursor)}`);
  const p3 = await call(app, k, 'GET', `/v1/usage?limit=2&cursor=${String(p2.body.next_cursor)}`);
  assert.deepEqual(
    [
      ...(p1.body.usage as { run_id: string }[]),
      ...(p2.body.usage as { run_id: string }[]),
      ...(p3.body.usage as { run_id: string }[]),
    ].map((r) => r.run_id),
    [...runIds].reverse(),
  );
  assert.equal(p3.body.next_cursor, null);
  assert.equal((await call(app, k, 'GET', '/v1/usage?cursor=nope')).body.code, 'INVALID_ARGUMENT');
  const byUser = await call(app, k, 'GET', '/v1/usage?user_id=u-ada');
  assert.deepEqual(
    (byUser.body.usage as { run_id: string }[]).map((r) => r.run_id),
    [runIds[2], runIds[0]],
  );
  const byModel = await call(app, k, 'GET', `/v1/usage?model_id=${encodeURIComponent(ODD.id)}`);
  assert.equal((byModel.body.usage as unknown[]).length, 2);
  const byConv = await call(app, k, 'GET', `/v1/usage?conversation_id=${c1}`);
  assert.deepEqual(
    (byConv.body.usage as { run_id: string }[]).map((r) => r.run_id),
    [runIds[4], runIds[0]],
  );
  const future = await call(app, k, 'GET', '/v1/usage?from=2999-01-01');
  assert.deepEqual(future.body.usage, []);
  const past = await call(app, k, 'GET', '/v1/usage?to=2000-01-01T00:00:00Z');
  assert.deepEqual(past.body.usage, []);
  assert.equal((await call(app, k, 'GET', '/v1/usage?from=yesterday')).body.code, 'INVALID_ARGUMENT');

  // Sums: exact decimal sums of the done events.
  const sum = (idx: number[]): bigint => idx.reduce((a, i) => a + cost8(dones[i]!.cost_usd), 0n);
  const total = sum([0, 1, 2, 3, 4]);
  const tokens = (idx: number[], kind: string): number =>
    idx.reduce((a, i) => a + (dones[i]!.usage as Record<string, number>)[kind]!, 0);
  const byModelSum = await call(app, k, 'GET', '/v1/usage/summary?group_by=model');
  assert.equal(byModelSum.status, 200);
  const groups = byModelSum.body.groups as Record<string, unknown>[];
  const g = (key: string): Record<string, unknown> => groups.find((x) => x.key === key)!;
  assert.equal(cost8(g(SONNET.id).cost_usd), sum([0, 4]));
  assert.equal(g(SONNET.id).runs, 2);
  assert.equal(cost8(g(ODD.id).cost_usd), sum([1, 2]));
  assert.equal(g(ODD.id).input_tokens, tokens([1, 2], 'input_tokens'));
  assert.equal(g(ODD.id).cache_read_input_tokens, tokens([1, 2], 'cache_read_input_tokens'));
  assert.equal(cost8(g('claude-unpriced').cost_usd), sum([3]));
  const totals = byModelSum.body.totals as Record<string, unknown>;
  assert.equal(cost8(totals.cost_usd), total);
  assert.equal(totals.runs, 5);
  assert.equal(totals.output_tokens, tokens([0, 1, 2, 3, 4], 'output_tokens'));

  const byUserSum = await call(app, k, 'GET', '/v1/usage/summary?group_by=user');
  const ug = byUserSum.body.groups as Record<string, unknown>[];
  assert.deepEqual(
    ug.map((x) => [x.key, x.runs]),
    [
      ['u-ada', 2],
      ['u-bob', 2],
      [null, 1],
    ],
  );
  assert.equal(cost8(ug[0]!.cost_usd), sum([0, 2]));
  assert.equal(cost8(ug[1]!.cost_usd), sum([1, 4]));
  const today = new Date().toISOString().slice(0, 10);
  const byDay = await call(app, k, 'GET', `/v1/usage/summary?group_by=day&from=${today}`);
  assert.deepEqual(
    (byDay.body.groups as Record<string, unknown>[]).map((x) => [x.key, x.runs]),
    [[today, 5]],
  );
  assert.equal(byDay.body.from, `${today}T00:00:00.000Z`);
  assert.equal((await call(app, k, 'GET', '/v1/usage/summary?group_by=week')).status, 400);

  const report = await call(app, k, 'GET', '/v1/usage/cost-report');
  assert.equal(report.status, 200);
  assert.equal(report.body.currency, 'USD');
  assert.equal(cost8((report.body.totals as Record<string, unknown>).cost_usd), total);
  const rm = report.body.by_model as Record<string, unknown>[];
  assert.deepEqual(
    rm.map((m) => [m.model_id, m.display_name, m.runs]),
    [
      [SONNET.id, SONNET.display_name, 2],
      ['claude-unpriced', 'U', 1],
      [ODD.id, ODD.display_name, 2],
    ],
  );
  assert.equal(
    rm.reduce((a, m) => a + cost8(m.cost_usd), 0n),
    total,
  );

  // Database: the run rows and the records agree exactly (numeric, no float on the way).
  const db = await h.db.db.query<{ runs: string; records: string }>(
    `SELECT (SELECT sum(cost_usd)::text FROM runs WHERE tenant_id = $1) AS runs,
            (SELECT sum(cost_usd)::text FROM usage_records WHERE tenant_id = $1) AS records`,
    [t.id],
  );
  assert.equal(db.rows[0]!.runs, db.rows[0]!.records);
  assert.equal(BigInt(db.rows[0]!.records.replace('.', '')), total);

  // Another tenant sees nothing of it.
  const other = await createTenant(app);
  const ok = bearer(other.key);
  assert.deepEqual((await call(app, ok, 'GET', '/v1/usage')).body.usage, []);
  assert.equal(
    ((await call(app, ok, 'GET', '/v1/usage/cost-report')).body.totals as Record<string, unknown>).runs,
    0,
  );
  assert.equal((await call(app, ok, 'GET', `/v1/conversations/${c1}/tool-logs`)).status, 404);

  // A model disabled after the conversation picked it is refused before anything is held.
  await call(app, admin, 'PATCH', `/v1/models/${encodeURIComponent(ODD.id)}/status`, { status: 'disabled' });
  await assert.rejects(
    seedRun(h, t.id, c2, { prompt: 'six', usage: u(1, 1, 0, 0), reportedCost: 0 }),
    (err: unknown) => err instanceof AppError && err.code === 'MODEL_DISABLED',
  );
  assert.equal(await h.locks.isHeld(conversationLockKey(c2)), false);
  assert.equal(
    (await call(app, k, 'GET', `/v1/usage?conversation_id=${c2}`)).body.usage instanceof Array,
    true,
  );
  assert.equal(
    ((await call(app, k, 'GET', `/v1/usage?conversation_id=${c2}`)).body.usage as unknown[]).length,
    2,
  );

  // Tool logs: every call, with its sub-agent parent, output summary and error flag.
  const logs = await call(app, k, 'GET', `/v1/conversations/${c1}/tool-logs`);
  assert.equal(logs.status, 200);
  const tl = logs.body.tool_logs as Record<string, unknown>[];
  assert.deepEqual(
    tl.map((x) => [x.tool_use_id, x.name, x.parent_tool_use_id, x.is_error, x.run_id]),
    [
      ['toolu_task', 'Task', null, false, runIds[0]],
      ['toolu_sub_bash', 'Bash', 'toolu_task', false, runIds[0]],
    ],
  );
  const sub = tl[1]!;
  assert.equal(sub.output_truncated, true);
  assert.equal(sub.output_summary, 'é'.repeat(1024), '2 KiB of two-byte characters, never split');
  assert.deepEqual(sub.input, { command: 'Bash' });
  assert.ok(typeof sub.duration_ms === 'number' && sub.duration_ms >= 0);
  assert.ok(Date.parse(String(sub.ended_at)) >= Date.parse(String(sub.started_at)));
  assert.equal(tl[0]!.output_summary, 'sub-agent done');
  const c2logs = await call(app, k, 'GET', `/v1/conversations/${c2}/tool-logs?run_id=${runIds[2]}`);
  const x = (c2logs.body.tool_logs as Record<string, unknown>[])[0]!;
  assert.equal(x.is_error, true);
  assert.equal(x.output_summary, 'boom');
  assert.deepEqual(
    (await call(app, k, 'GET', `/v1/conversations/${c2}/tool-logs?run_id=${runIds[1]}`)).body.tool_logs,
    [],
  );
  const page1 = await call(app, k, 'GET', `/v1/conversations/${c1}/tool-logs?limit=1`);
  assert.equal((page1.body.tool_logs as unknown[]).length, 1);
  const page2 = await call(
    app,
    k,
    'GET',
    `/v1/conversations/${c1}/tool-logs?limit=1&cursor=${String(page1.body.next_cursor)}`,
  );
  assert.equal((page2.body.tool_logs as Record<string, unknown>[])[0]!.tool_use_id, 'toolu_sub_bash');
});

test('loggedInput keeps inputs up to 16 KiB of JSON whole and previews bigger ones', () => {
  assert.deepEqual(loggedInput({ command: 'ls' }), { command: 'ls' });
  assert.deepEqual(loggedInput(undefined), {});
  const big = { file_path: 'a.txt', content: 'x'.repeat(20_000) };
  const logged = loggedInput(big) as { truncated: boolean; json_bytes: number; preview: string };
  assert.equal(logged.truncated, true);
  assert.equal(logged.json_bytes, JSON.stringify(big).length);
  assert.equal(logged.preview, JSON.stringify(big).slice(0, 2048));
});

test('outputSummary keeps the first 2 KiB without splitting a character', () => {
  assert.deepEqual(outputSummary('abc'), { summary: 'abc', truncated: false });
  assert.deepEqual(outputSummary('a'.repeat(2048)), { summary: 'a'.repeat(2048), truncated: false });
  assert.deepEqual(outputSummary(`a${'€'.repeat(1000)}`), {
    summary: `a${'€'.repeat(682)}`,
    truncated: true,
  });
});

test('the reaper path (RunRepository.finish without usage) still writes a zero-cost usage record', async () => {
  const h = await harness();
  await call(h.app, admin, 'POST', '/v1/models', SONNET);
  const t = await createTenant(h.app);
  const conv = await h.repos.conversations.create(t.id, { modelId: SONNET.id });
  const runs = new RunRepository(h.db.db);
  const run = await runs.start({ tenantId: t.id, conversationId: conv.id, prompt: 'p', modelId: SONNET.id });
  const done = await runs.finish(t.id, run.id, { status: 'failed', errorCode: 'RUN_ABANDONED' }, [
    { type: 'error', data: { code: 'RUN_ABANDONED' } },
    { type: 'done', data: { status: 'failed', cost_usd: 0 } },
  ]);
  assert.equal(done?.data.cost_usd, 0);
  const rec = await call(h.app, bearer(t.key), 'GET', '/v1/usage');
  const r = (rec.body.usage as Record<string, unknown>[])[0]!;
  assert.equal(r.run_id, run.id);
  assert.equal(r.status, 'failed');
  assert.equal(r.total_tokens, 0);
  assert.equal(r.cost_usd, 0);
  // Finishing again changes nothing and writes no second record.
  assert.equal(
    await runs.finish(t.id, run.id, { status: 'completed' }, { type: 'done', data: {} }),
    undefined,
  );
  assert.equal(((await call(h.app, bearer(t.key), 'GET', '/v1/usage')).body.usage as unknown[]).length, 1);
  // The models repository alone: the tenant default is stored in the settings.
  assert.equal(await new ModelRepository(h.db.db).setTenantDefault(t.id, SONNET.id), true);
  assert.equal((await h.repos.tenants.get(t.id))?.settings.model, SONNET.id);
});
