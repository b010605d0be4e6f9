// GET /metrics against the real stack: a private PostgreSQL (the real RunStore of server.ts on a
// migrated database), Redis (the real lock manager and run slots) and S3. Executes go through the
// real HTTP route and the real execute flow; only the sandbox, workspace and agent ports are
// stand-ins (the agent answers with fixed usage numbers, or blocks, fails, or waits for a cancel).
// The counters must move with what happened, and every line must be valid exposition format.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { AppError, silentLogger } from '@hako/core';
import { startRedis, startS3 } from '@hako/testkit';
import type { RedisService, S3Service } from '@hako/testkit';
import type { FastifyInstance } from 'fastify';
import { buildApp, createAppRepos } from '../../src/app.js';
import { RedisLockManager } from '../../src/coord/redis-lock.js';
import { RedisRateLimiter } from '../../src/coord/redis-rate-limiter.js';
import { RedisConcurrencyLimiter } from '../../src/coord/redis-concurrency.js';
import type { AgentPort, AgentSummary, ExecuteDeps } from '../../src/execute/execute-run.js';
import { tenantIdOf } from '../../src/http/auth.js';
import { ApiMetrics } from '../../src/metrics/api-metrics.js';
import { instrumentLocks, instrumentRunStore } from '../../src/metrics/instrument.js';
import { EventRepository } from '../../src/repositories/events.js';
import { registerExecuteRoutes } from '../../src/routes/execute.js';
import { runStore } from '../../src/server.js';
import { S3ObjectStore } from '../../src/storage/s3-object-store.js';
import { startPostgresFixture } from '../helpers/db.js';
import type { PostgresFixture } from '../helpers/db.js';
import { parseExposition } from '../helpers/prometheus.js';
import type { Exposition } from '../helpers/prometheus.js';

const ADMIN = `admin-${randomBytes(12).toString('hex')}`;
const METRICS_TOKEN = `metrics-${randomBytes(12).toString('hex')}`;
const prefix = `hako:m${randomBytes(3).toString('hex')}`;

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

const USAGE = {
  inputTokens: 1200,
  outputTokens: 340,
  cacheCreationInputTokens: 50,
  cacheReadInputTokens: 7,
};

/** The stand-in agent: `block` waits for release() (or the cancel), `fail` fails, else answers. */
function scriptedAgent(): { port: AgentPort; release: () => void; started: () => number } {
  let open: (() => void) | undefined;
  let gate = new Promise<void>((r) => (open = r));
  let runs = 0;
  const port: AgentPort = {
    run: async ({ prompt, signal, onEvent }): Promise<AgentSummary> => {
      runs++;
      await onEvent({ type: 'assistant', data: { text: `on it: ${prompt}` } });
      if (prompt === 'fail') throw new AppError('AGENT_FAILED', 'the stand-in agent failed on purpose');
      if (prompt === 'block' || prompt === 'wait-for-cancel') {
        await new Promise<void>((resolve, reject) => {
          // The client may already be gone (the flow checks only between its steps).
          if (signal.aborted) reject(signal.reason as Error);
          signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
          if (prompt === 'block') void gate.then(resolve);
        });
      }
      return {
        status: 'completed',
        result: 'done',
        isError: false,
        usage: USAGE,
        costUsd: 0.0125,
        turnCount: 2,
        sessionId: null,
        contextTokens: 1257,
      };
    },
  };
  return {
    port,
    release: () => {
      open?.();
      gate = new Promise<void>((r) => (open = r));
    },
    started: () => runs,
  };
}

interface Harness {
  app: FastifyInstance;
  url: string;
  metrics: ApiMetrics;
  agent: ReturnType<typeof scriptedAgent>;
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
  const metrics = new ApiMetrics({
    nodes: () => [
      { name: 'node-a', healthy: true },
      { name: 'node-b', healthy: false },
    ],
  });
  const locks = instrumentLocks(new RedisLockManager({ redis, prefix }), metrics);
  const agent = scriptedAgent();
  const execute: ExecuteDeps = {
    locks,
    slots: new RedisConcurrencyLimiter({ redis, prefix }),
    runs: instrumentRunStore(runStore(db.db, silentLogger()), metrics),
    sandboxes: { ensure: () => Promise.resolve({ node: 'node-a', sandboxId: 'sb-1', created: false }) },
    workspace: {
      restore: () => Promise.resolve({ files: 0, bytes: 0 }),
      syncBack: () => Promise.resolve({ uploaded: 0, deleted: 0, unchanged: 0, changes: [], complete: true }),
    },
    agent: agent.port,
    logger: silentLogger(),
    lockTtlMs: 30_000,
    pingIntervalMs: 60_000,
    runTimeoutMs: 60_000,
  };
  const repos = createAppRepos(db.db);
  const app = await buildApp({
    logger: silentLogger(),
    adminToken: ADMIN,
    metricsToken: METRICS_TOKEN,
    metrics,
    repos,
    rateLimiter: new RedisRateLimiter({ redis, prefix }),
    locks,
    store,
    routes: [
      (a) =>
        registerExecuteRoutes(a, {
          execute,
          tenantOf: tenantIdOf,
          loadContext: async (tenantId, id) => {
            const tenant = await repos.tenants.get(tenantId);
            if (!tenant) throw new Error('no tenant');
            return { tenant, conversation: await repos.conversations.get(tenantId, id) };
          },
          listEvents: (tenantId, id, after, limit) =>
            new EventRepository(db.db).listAfter(tenantId, id, after, limit),
          followIntervalMs: 100,
          maxPromptChars: 10_000,
        }),
    ],
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  closers.push(() => app.close());
  const { port } = app.server.address() as AddressInfo;
  return { app, url: `http://127.0.0.1:${port}`, metrics, agent };
}

const admin = { authorization: `Bearer ${ADMIN}` };
const bearer = (key: string): Record<string, string> => ({ authorization: `Bearer ${key}` });

async function tenantWithConversation(
  app: FastifyInstance,
): Promise<{ id: string; key: string; conv: string }> {
  const t = await app.inject({ method: 'POST', url: '/v1/tenants', headers: admin, payload: { name: 'm' } });
  assert.equal(t.statusCode, 201, t.body);
  const id = t.json<{ id: string }>().id;
  const k = await app.inject({ method: 'POST', url: `/v1/tenants/${id}/api-keys`, headers: admin });
  const key = k.json<{ key: string }>().key;
  const c = await app.inject({ method: 'POST', url: '/v1/conversations', headers: bearer(key) });
  assert.equal(c.statusCode, 201, c.body);
  return { id, key, conv: c.json<{ id: string }>().id };
}

async function scrape(url: string, token = METRICS_TOKEN): Promise<{ text: string; exp: Exposition }> {
  const r = await fetch(`${url}/metrics`, { headers: bearer(token) });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await r.text();
  return { text, exp: parseExposition(text) };
}

/** Scrapes until `ok` holds (the run's end is stored after the stream's last byte). */
async function until(url: string, ok: (e: Exposition) => boolean, what: string): Promise<Exposition> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const { exp } = await scrape(url);
    if (ok(exp)) return exp;
    if (Date.now() > deadline) assert.fail(`metrics never showed ${what}`);
    await sleep(50);
  }
}

function execute(url: string, key: string, conv: string, prompt: string, signal?: AbortSignal) {
  return fetch(`${url}/v1/conversations/${conv}/execute`, {
    method: 'POST',
    headers: { ...bearer(key), 'content-type': 'application/json' },
    body: JSON.stringify({ prompt }),
    signal,
  });
}

test('/metrics takes the metrics token or the admin token, and the metrics token opens nothing else', async () => {
  const { app, url } = await harness();
  const { id, key } = await tenantWithConversation(app);
  for (const [headers, what] of [
    [{}, 'no token'],
    [bearer(key), 'a tenant API key'],
    [bearer(`${METRICS_TOKEN}x`), 'a wrong token'],
  ] as const) {
    const r = await fetch(`${url}/metrics`, { headers });
    assert.equal(r.status, 401, what);
    assert.equal(((await r.json()) as { code: string }).code, 'UNAUTHENTICATED', what);
  }
  assert.equal((await fetch(`${url}/metrics`, { headers: admin })).status, 200, 'the admin token');
  assert.equal((await fetch(`${url}/metrics`, { headers: bearer(METRICS_TOKEN) })).status, 200);
  // The metrics token is no admin token and no API key.
  const t = await fetch(`${url}/v1/tenants/${id}`, { headers: bearer(METRICS_TOKEN) });
  assert.equal(t.status, 401);
  const c = await fetch(`${url}/v1/conversations`, { headers: bearer(METRICS_TOKEN) });
  assert.equal(c.status, 401);
});

test('runs move the run, token, cost, lock, in-flight, error and HTTP metrics; every line is valid', async () => {
  const { app, url, agent } = await harness();
  const { key, conv, id: tenantId } = await tenantWithConversation(app);
  const before = (await scrape(url)).exp;
  for (const status of ['completed', 'failed', 'cancelled'])
    assert.equal(before.value('hako_api_runs_total', { status }), 0, `${status} starts at 0`);
  assert.equal(before.value('hako_api_runs_in_flight'), 0);
  assert.equal(before.value('hako_api_conversation_locks_held'), 0);
  assert.equal(before.value('hako_api_nodes_healthy'), 1);
  assert.equal(before.value('hako_api_nodes'), 2);
  assert.equal(before.value('hako_api_node_healthy', { node: 'node-b' }), 0);
  assert.ok(before.types.get('process_cpu_user_seconds_total') === 'counter', 'process metrics');
  assert.ok(before.types.has('nodejs_eventloop_lag_seconds'), 'event loop metrics');

  // A run in flight holds the conversation lock; a second execute is refused with 409.
  const first = await execute(url, key, conv, 'block');
  assert.equal(first.status, 200);
  const during = await until(url, (e) => e.value('hako_api_runs_in_flight') === 1, 'a run in flight');
  assert.equal(during.value('hako_api_conversation_locks_held'), 1);
  const second = await execute(url, key, conv, 'again');
  assert.equal(second.status, 409);
  assert.equal(((await second.json()) as { code: string }).code, 'CONVERSATION_LOCKED');
  agent.release();
  const stream = await first.text();
  assert.match(stream, /event: done/);

  const done = await until(
    url,
    (e) => e.value('hako_api_runs_total', { status: 'completed' }) === 1,
    'the run',
  );
  assert.equal(done.value('hako_api_runs_in_flight'), 0);
  assert.equal(done.value('hako_api_conversation_locks_held'), 0);
  assert.equal(done.value('hako_api_tokens_total', { kind: 'input' }), 1200);
  assert.equal(done.value('hako_api_tokens_total', { kind: 'output' }), 340);
  assert.equal(done.value('hako_api_tokens_total', { kind: 'cache_creation' }), 50);
  assert.equal(done.value('hako_api_tokens_total', { kind: 'cache_read' }), 7);
  assert.equal(done.value('hako_api_cost_usd_total'), 0.0125);
  assert.equal(done.value('hako_api_run_duration_seconds_count', { status: 'completed' }), 1);
  assert.ok(done.value('hako_api_run_duration_seconds_sum', { status: 'completed' })! > 0);
  assert.equal(done.value('hako_api_errors_total', { source: 'http', code: 'CONVERSATION_LOCKED' }), 1);
  assert.equal(done.value('hako_api_conversation_lock_acquisitions_total', { result: 'busy' }), 1);
  assert.equal(done.value('hako_api_conversation_lock_acquisitions_total', { result: 'acquired' }), 1);
  const route = '/v1/conversations/:id/execute';
  assert.equal(done.value('hako_api_http_requests_total', { method: 'POST', route, status: '200' }), 1);
  assert.equal(done.value('hako_api_http_requests_total', { method: 'POST', route, status: '409' }), 1);
  assert.equal(done.value('hako_api_http_request_duration_seconds_count', { method: 'POST', route }), 2);

  // A failed run counts its error code; a cancelled one (the client went away) too.
  const failed = await execute(url, key, conv, 'fail');
  assert.match(await failed.text(), /"status":"failed"/);
  const abort = new AbortController();
  const cancelled = await execute(url, key, conv, 'wait-for-cancel', abort.signal);
  assert.equal(cancelled.status, 200);
  await until(url, (e) => e.value('hako_api_runs_in_flight') === 1, 'the cancellable run');
  abort.abort();
  const end = await until(
    url,
    (e) => e.value('hako_api_runs_total', { status: 'cancelled' }) === 1,
    'the cancelled run',
  );
  assert.equal(end.value('hako_api_runs_total', { status: 'failed' }), 1);
  assert.equal(end.value('hako_api_errors_total', { source: 'run', code: 'AGENT_FAILED' }), 1);
  assert.equal(end.value('hako_api_errors_total', { source: 'run', code: 'RUN_CANCELLED' }), 1);
  assert.equal(end.value('hako_api_runs_in_flight'), 0);
  assert.equal(end.value('hako_api_conversation_locks_held'), 0);
  assert.equal(agent.started(), 3);

  // Unknown paths are one `unmatched` series with their 404 code; ids never become labels.
  const nope = await fetch(`${url}/nope/${conv}`);
  assert.equal(nope.status, 404);
  const { text, exp } = await scrape(url);
  assert.equal(
    exp.value('hako_api_http_requests_total', { method: 'GET', route: 'unmatched', status: '404' }),
    1,
  );
  assert.equal(exp.value('hako_api_errors_total', { source: 'http', code: 'ROUTE_NOT_FOUND' }), 1);
  for (const secret of [conv, tenantId, key, METRICS_TOKEN, ADMIN]) {
    assert.ok(!text.includes(secret), `the exposition never shows ${secret.slice(0, 8)}…`);
  }
});

test('two apps in one process keep their own registries', async () => {
  const a = await harness();
  const b = await harness();
  for (let i = 0; i < 3; i++) assert.equal((await fetch(`${a.url}/openapi.json`)).status, 200);
  const labels = { method: 'GET', route: '/openapi.json', status: '200' };
  assert.equal((await scrape(a.url)).exp.value('hako_api_http_requests_total', labels), 3);
  assert.equal((await scrape(b.url)).exp.value('hako_api_http_requests_total', labels), undefined);
  assert.notEqual(a.metrics.registry, b.metrics.registry);
});
