// /health, /health/live, /health/ready and /healthz against real dependencies: a private
// PostgreSQL, Redis and S3 (testkit) and hakod node pools (a stand-in client that answers
// GetNodeInfo, or real gRPC clients aimed at a closed port). Ready is 200 with everything up;
// each dependency made unavailable in turn (its server stopped, or a closed port) answers 503
// NOT_READY naming it; a hung dependency (a TCP server that accepts and never answers) answers
// within the check's deadline. The last tests run startApi's own wiring.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { silentLogger } from '@hako/core';
import { createAgentClient } from '@hako/agentd';
import { startRedis, startS3 } from '@hako/testkit';
import type { RedisService, S3Service } from '@hako/testkit';
import type { AgentClient, GetNodeInfoResponse } from '@hako/proto';
import type { FastifyInstance } from 'fastify';
import { buildApp, createAppRepos } from '../../src/app.js';
import { MemoryLockManager } from '../../src/coord/memory-lock.js';
import { MemoryRateLimiter } from '../../src/coord/memory-rate-limiter.js';
import { createDatabase } from '../../src/db/pool.js';
import type { Database } from '../../src/db/pool.js';
import { databaseCheck, nodesCheck, redisCheck, s3Check } from '../../src/http/health-checks.js';
import type { HealthCheck } from '../../src/http/health-checks.js';
import { NodePool } from '../../src/nodes/node-pool.js';
import type { NodeEndpoint } from '../../src/nodes/node-pool.js';
import { registerHealthRoutes } from '../../src/routes/health.js';
import { startApi } from '../../src/server.js';
import { S3ObjectStore } from '../../src/storage/s3-object-store.js';
import { startPostgresFixture } from '../helpers/db.js';
import type { PostgresFixture } from '../helpers/db.js';
import { parseExposition } from '../helpers/prometheus.js';

const ADMIN = `admin-${randomBytes(12).toString('hex')}`;
const logger = silentLogger();

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

/** A TCP server that accepts connections and never answers; counts them. */
async function hungServer(): Promise<{ port: number; connections: () => number }> {
  const sockets = new Set<Socket>();
  let count = 0;
  const server: Server = createServer((s) => {
    count++;
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closers.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });
  const port = (server.address() as { port: number }).port;
  return { port, connections: () => count };
}

/** A loopback port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  await new Promise((r) => server.close(r));
  return port;
}

function s3Store(service: { endpoint: string; bucket: string; region: string }): S3ObjectStore {
  const store = new S3ObjectStore({
    bucket: service.bucket,
    endpoint: service.endpoint,
    region: service.region,
    credentials: { accessKeyId: s3!.accessKeyId, secretAccessKey: s3!.secretAccessKey },
    maxAttempts: 1,
    connectionTimeoutMs: 1_000,
  });
  closers.push(() => store.close());
  return store;
}

function info(sandboxes: number): GetNodeInfoResponse {
  return {
    version: '0.1.0',
    hostname: 'h',
    runtime: 'crun',
    cgroupVersion: 1,
    cpus: 2,
    memoryBytes: 2 ** 32,
    sandboxes,
    sandboxesWarm: 0,
    maxSandboxes: 20,
    images: 0,
    cniSubnet: '10.200.0.0/24',
    env: 'test',
  };
}

/** A stand-in hakod client whose GetNodeInfo answers at once. */
function answeringClient(): AgentClient {
  return {
    makeUnaryRequest(
      _path: string,
      _ser: unknown,
      _de: unknown,
      _req: unknown,
      _md: unknown,
      _opts: unknown,
      cb: (err: Error | null, res?: unknown) => void,
    ) {
      setImmediate(() => cb(null, info(3)));
      return {};
    },
    close() {},
  } as unknown as AgentClient;
}

/** A pool of `up` answering nodes and `down` real gRPC clients aimed at closed ports. */
async function nodePool(up: string[], down: string[]): Promise<NodePool> {
  const endpoints: NodeEndpoint[] = [];
  for (const name of up) endpoints.push({ name, address: '127.0.0.1:1' });
  for (const name of down)
    endpoints.push({ name, address: `127.0.0.1:${await closedPort()}`, insecure: true });
  const fake = new Set(up);
  const pool = new NodePool({
    nodes: endpoints,
    logger,
    pollIntervalMs: 60_000,
    callTimeoutMs: 500,
    createClient: (n: NodeEndpoint) =>
      fake.has(n.name) ? answeringClient() : createAgentClient({ address: n.address, insecure: true }),
  });
  closers.push(() => pool.close());
  await pool.start();
  return pool;
}

interface Deps {
  db?: Database;
  redis?: Redis | 'in-process';
  store?: S3ObjectStore;
  pool?: NodePool;
  timeoutMs?: number;
  shuttingDown?: () => boolean;
}

async function redisClient(url: string): Promise<Redis> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: true });
  closers.push(() => redis.disconnect());
  await redis.connect();
  return redis;
}

/** An app with the four real checks; what `deps` leaves out is the shared healthy service. */
async function app(deps: Deps = {}): Promise<FastifyInstance> {
  const database = deps.db ?? (await pg!.migrated()).db;
  const redis = deps.redis ?? (await redisClient(redisService!.url));
  const store = deps.store ?? s3Store(s3!);
  const pool = deps.pool ?? (await nodePool(['node-a'], []));
  const checks: { database: HealthCheck } & Record<string, HealthCheck> = {
    database: databaseCheck(database, 'postgresql'),
    redis: redisCheck(redis === 'in-process' ? undefined : redis),
    s3: s3Check(store.sdkClient, store.bucket),
    nodes: nodesCheck(pool),
  };
  const a = await buildApp({
    logger,
    adminToken: ADMIN,
    repos: createAppRepos(database),
    rateLimiter: new MemoryRateLimiter(),
    locks: new MemoryLockManager(),
    store,
    routes: [
      (x) =>
        registerHealthRoutes(x, {
          checks,
          timeoutMs: deps.timeoutMs ?? 2_000,
          shuttingDown: deps.shuttingDown,
          version: '9.9.9',
        }),
    ],
  });
  closers.push(() => a.close());
  return a;
}

interface CheckBody {
  status: string;
  latency_ms: number;
  error?: string;
  [k: string]: unknown;
}
interface HealthBody {
  status: string | number;
  code?: string;
  detail?: string;
  failed?: string[];
  checks: Record<string, CheckBody>;
  [k: string]: unknown;
}

async function get(
  a: FastifyInstance,
  url: string,
): Promise<{ status: number; body: HealthBody; raw: string; type: string }> {
  const r = await a.inject({ method: 'GET', url });
  return {
    status: r.statusCode,
    body: r.json<HealthBody>(),
    raw: r.body,
    type: String(r.headers['content-type']),
  };
}

function assertNotReady(r: Awaited<ReturnType<typeof get>>, failed: string[], why: RegExp): void {
  assert.equal(r.status, 503, r.raw);
  assert.match(r.type, /^application\/problem\+json/);
  assert.equal(r.body.code, 'NOT_READY', r.raw);
  assert.deepEqual(r.body.failed, failed, r.raw);
  for (const name of ['database', 'redis', 's3', 'nodes']) {
    const c = r.body.checks[name]!;
    assert.equal(c.status, failed.includes(name) ? 'fail' : 'ok', `${name}: ${r.raw}`);
    assert.equal(typeof c.latency_ms, 'number');
  }
  for (const name of failed) assert.match(r.body.checks[name]!.error ?? '', why, r.raw);
  for (const name of failed) assert.ok(r.body.detail?.includes(name), `the detail names ${name}`);
}

test('everything up: ready, live and health answer 200 with every check, and show no secret', async () => {
  const a = await app();
  const ready = await get(a, '/health/ready');
  assert.equal(ready.status, 200, ready.raw);
  assert.equal(ready.body.status, 'ready');
  assert.deepEqual(Object.keys(ready.body.checks), ['database', 'redis', 's3', 'nodes']);
  for (const [name, c] of Object.entries(ready.body.checks)) {
    assert.equal(c.status, 'ok', name);
    assert.ok(Number.isInteger(c.latency_ms) && c.latency_ms >= 0, name);
  }
  assert.equal(ready.body.checks.redis!.mode, 'redis');
  assert.equal(ready.body.checks.s3!.bucket, s3!.bucket);
  assert.equal(ready.body.checks.nodes!.healthy, 1);
  const health = await get(a, '/health');
  assert.equal(health.status, 200);
  assert.equal(health.body.status, 'ok');
  assert.equal(health.body.version, '9.9.9');
  assert.equal(typeof health.body.uptime_seconds, 'number');
  const live = await get(a, '/health/live');
  assert.equal(live.status, 200);
  assert.equal(live.body.status, 'ok');
  assert.equal((await get(a, '/healthz')).status, 200);
  for (const text of [ready.raw, health.raw]) {
    assert.ok(!text.includes(s3!.secretAccessKey), 'no S3 secret');
    assert.ok(!text.includes(s3!.accessKeyId), 'no S3 key id');
    assert.ok(!text.includes(s3!.endpoint), 'no endpoint URL');
  }
});

test('Redis stopped: not ready, naming redis; in-process coordination counts as ready and says so', async () => {
  const own = await startRedis();
  try {
    const redis = await redisClient(own.url);
    const a = await app({ redis });
    assert.equal((await get(a, '/health/ready')).status, 200);
    await own.stop();
    assertNotReady(await get(a, '/health/ready'), ['redis'], /Redis|ECONNREFUSED|closed|connect/i);
    assertNotReady(await get(a, '/health'), ['redis'], /./);
    // Liveness does not depend on Redis.
    assert.equal((await get(a, '/health/live')).status, 200);
  } finally {
    await own.stop();
  }
  const inProcess = await app({ redis: 'in-process' });
  const r = await get(inProcess, '/health/ready');
  assert.equal(r.status, 200, r.raw);
  assert.equal(r.body.checks.redis!.mode, 'in-process');
  assert.match(String(r.body.checks.redis!.detail), /REDIS_URL is unset/);
});

test('S3 stopped: not ready, naming s3', async () => {
  const own = await startS3();
  try {
    const a = await app({ store: s3Store(own) });
    assert.equal((await get(a, '/health/ready')).status, 200);
    await own.stop();
    const r = await get(a, '/health/ready');
    assertNotReady(r, ['s3'], /ECONNREFUSED|connect|socket|fetch/i);
  } finally {
    await own.stop();
  }
});

test('the database on a closed port: not ready, naming database; /healthz answers 503 DATABASE_FAILED', async () => {
  const db = createDatabase({ url: `postgres://hako@127.0.0.1:${await closedPort()}/none`, logger, max: 2 });
  closers.push(() => db.close());
  const a = await app({ db });
  assertNotReady(await get(a, '/health/ready'), ['database'], /ECONNREFUSED|connect/i);
  const z = await get(a, '/healthz');
  assert.equal(z.status, 503);
  assert.equal(z.body.code, 'DATABASE_FAILED');
});

test('no healthy hakod node: not ready, naming nodes; one of two down is degraded but ready', async () => {
  const none = await app({ pool: await nodePool([], ['node-x']) });
  const r = await get(none, '/health/ready');
  assertNotReady(r, ['nodes'], /no healthy hakod node .*node-x/);
  assert.deepEqual(
    (r.body.checks.nodes!.nodes as { name: string; healthy: boolean }[]).map((n) => [n.name, n.healthy]),
    [['node-x', false]],
  );
  assert.ok(!r.raw.includes('127.0.0.1:'), 'node addresses are not shown');

  const half = await app({ pool: await nodePool(['node-a'], ['node-b']) });
  const ready = await get(half, '/health/ready');
  assert.equal(ready.status, 200, ready.raw);
  const health = await get(half, '/health');
  assert.equal(health.status, 200);
  assert.equal(health.body.status, 'degraded');
  assert.equal(health.body.checks.nodes!.healthy, 1);
  assert.equal(health.body.checks.nodes!.total, 2);
});

test('hung dependencies answer within the deadline, and probes never pile up on them', async () => {
  const pgHung = await hungServer();
  const s3Hung = await hungServer();
  const redisHung = await hungServer();
  const db = createDatabase({ url: `postgres://hako@127.0.0.1:${pgHung.port}/none`, logger, max: 5 });
  closers.push(() => db.close().catch(() => undefined));
  const redis = new Redis(`redis://127.0.0.1:${redisHung.port}`, {
    maxRetriesPerRequest: 1,
    lazyConnect: true,
  });
  redis.connect().catch(() => undefined);
  closers.push(() => redis.disconnect());
  const store = s3Store({ endpoint: `http://127.0.0.1:${s3Hung.port}`, bucket: 'hung', region: 'us-east-1' });
  const timeoutMs = 400;
  const a = await app({ db, redis, store, timeoutMs });

  const started = Date.now();
  const probes = await Promise.all([1, 2, 3].map(() => get(a, '/health/ready')));
  const took = Date.now() - started;
  assert.ok(
    took < timeoutMs + 1_500,
    `three concurrent probes took ${took} ms with a ${timeoutMs} ms deadline`,
  );
  for (const r of probes) {
    assertNotReady(r, ['database', 'redis', 's3'], /timed out|not connected/);
    assert.match(r.body.checks.database!.error!, /timed out/);
    assert.match(r.body.checks.s3!.error!, /timed out/);
    assert.ok(r.body.checks.database!.latency_ms >= timeoutMs - 5);
  }
  // One query in flight for three probes: the hung database saw one connection.
  assert.equal(pgHung.connections(), 1);
  // The next probe still answers within the deadline (and still shares the hung query).
  const t2 = Date.now();
  assertNotReady(await get(a, '/health/ready'), ['database', 'redis', 's3'], /./);
  assert.ok(Date.now() - t2 < timeoutMs + 1_000);
  assert.equal(pgHung.connections(), 1);
  // /healthz is bounded by the same deadline.
  const t3 = Date.now();
  assert.equal((await get(a, '/healthz')).status, 503);
  assert.ok(Date.now() - t3 < timeoutMs + 1_000);
  // Liveness never waits on a dependency.
  assert.equal((await get(a, '/health/live')).status, 200);
});

test('shutting down: live and ready answer 503 SHUTTING_DOWN', async () => {
  let stopping = false;
  const a = await app({ shuttingDown: () => stopping });
  assert.equal((await get(a, '/health/live')).status, 200);
  stopping = true;
  for (const url of ['/health/live', '/health/ready', '/health']) {
    const r = await get(a, url);
    assert.equal(r.status, 503, url);
    assert.equal(r.body.code, 'SHUTTING_DOWN', url);
    assert.match(r.type, /^application\/problem\+json/);
  }
});

const metricsToken = `metrics-${randomBytes(12).toString('hex')}`;

/** startApi's env on the shared services, with a node that is not there. */
async function apiEnv(): Promise<Record<string, string>> {
  const db = await pg!.migrated();
  const spool = await mkdtemp(join(tmpdir(), 'hako-health-spool-'));
  closers.push(() => rm(spool, { recursive: true, force: true }));
  return {
    HAKO_API_LISTEN: '127.0.0.1:0',
    HAKO_ADMIN_TOKEN: ADMIN,
    HAKO_METRICS_TOKEN: metricsToken,
    HAKO_HEALTH_TIMEOUT: '1500ms',
    DATABASE_URL: db.url,
    S3_ENDPOINT: s3!.endpoint,
    S3_REGION: s3!.region,
    S3_BUCKET: s3!.bucket,
    S3_ACCESS_KEY_ID: s3!.accessKeyId,
    S3_SECRET_ACCESS_KEY: s3!.secretAccessKey,
    HAKO_NODES: `gone=127.0.0.1:${await closedPort()}`,
    HAKO_SPOOL_DIR: spool,
    HAKO_ENV: `h${randomBytes(3).toString('hex')}`,
  };
}

test('startApi wires the checks and /metrics: a missing node is the one failed check', async () => {
  const env = await apiEnv();
  for (const coordination of ['redis', 'in-process'] as const) {
    const api = await startApi(coordination === 'redis' ? { ...env, REDIS_URL: redisService!.url } : env, {
      logger,
    });
    try {
      const r = await fetch(`${api.url}/health/ready`);
      const body = (await r.json()) as HealthBody;
      assert.equal(r.status, 503, JSON.stringify(body));
      assert.deepEqual(body.failed, ['nodes']);
      assert.equal(body.checks.redis!.mode, coordination);
      assert.equal(body.checks.database!.engine, 'postgresql');
      assert.equal((await fetch(`${api.url}/health/live`)).status, 200);
      assert.equal((await fetch(`${api.url}/healthz`)).status, 200);
      assert.equal((await fetch(`${api.url}/metrics`)).status, 401);
      const m = await fetch(`${api.url}/metrics`, { headers: { authorization: `Bearer ${metricsToken}` } });
      assert.equal(m.status, 200);
      const exp = parseExposition(await m.text());
      assert.equal(exp.value('hako_api_nodes'), 1);
      assert.equal(exp.value('hako_api_nodes_healthy'), 0);
      assert.equal(exp.value('hako_api_node_healthy', { node: 'gone' }), 0);
      assert.equal(
        exp.value('hako_api_http_requests_total', { method: 'GET', route: '/health/ready', status: '503' }),
        1,
      );
      assert.equal(exp.value('hako_api_errors_total', { source: 'http', code: 'NOT_READY' }), 1);
    } finally {
      await api.close();
    }
  }
});

test('startApi: during HAKO_SHUTDOWN_DELAY the probes answer 503 SHUTTING_DOWN and requests are still served', async () => {
  const api = await startApi({ ...(await apiEnv()), HAKO_SHUTDOWN_DELAY: '1500ms' }, { logger });
  let closed = false;
  const closing = api.close().then(() => {
    closed = true;
  });
  try {
    for (const path of ['/health/live', '/health/ready', '/health']) {
      const r = await fetch(`${api.url}${path}`);
      assert.equal(r.status, 503, path);
      assert.equal(((await r.json()) as { code: string }).code, 'SHUTTING_DOWN', path);
    }
    assert.equal((await fetch(`${api.url}/openapi.json`)).status, 200, 'still serving');
    assert.equal(closed, false, 'the delay holds the close');
  } finally {
    await closing;
  }
  await assert.rejects(fetch(`${api.url}/health/live`), 'the listener is closed after the delay');
});
