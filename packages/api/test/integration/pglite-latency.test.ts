// Measurements of the embedded PostgreSQL (PGlite) against the real one, reported as test
// diagnostics: open time (first, with initdb and migrations; then a reopen), and the latency of a
// plain single-row INSERT and of an event append (the API's hottest write) through the same
// Database interface, one statement at a time. The assertions check that every write landed.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { silentLogger } from '@hako/core';
import { createPgliteDatabase } from '../../src/db/pglite.js';
import type { Database } from '../../src/db/pool.js';
import { migrate } from '../../src/db/migrate.js';
import { ConversationRepository } from '../../src/repositories/conversations.js';
import { EventRepository } from '../../src/repositories/events.js';
import { RunRepository } from '../../src/repositories/runs.js';
import { TenantRepository } from '../../src/repositories/tenants.js';
import type { TenantSettings } from '../../src/types.js';
import { startPostgresFixture } from '../helpers/db.js';
import type { PostgresFixture } from '../helpers/db.js';

const logger = silentLogger();
const ROUNDS = 300;
let pg: PostgresFixture;
let dir: string;
const dbs: Database[] = [];

before(async () => {
  pg = await startPostgresFixture({ engine: 'postgres' });
  dir = await mkdtemp(path.join(tmpdir(), 'hako-pglite-latency-'));
});
after(async () => {
  for (const d of dbs) await d.close().catch(() => undefined);
  await pg?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Stats {
  meanMs: number;
  p50Ms: number;
  p95Ms: number;
}

async function timeEach(n: number, fn: (i: number) => Promise<unknown>): Promise<Stats> {
  for (let i = 0; i < 20; i++) await fn(-1 - i); // warm-up (statement caches, JIT)
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await fn(i);
    ms.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  ms.sort((a, b) => a - b);
  const at = (q: number): number => ms[Math.min(ms.length - 1, Math.floor(q * ms.length))] ?? NaN;
  return { meanMs: ms.reduce((s, x) => s + x, 0) / n, p50Ms: at(0.5), p95Ms: at(0.95) };
}

const fmt = (s: Stats): string =>
  `mean ${s.meanMs.toFixed(3)} ms, p50 ${s.p50Ms.toFixed(3)} ms, p95 ${s.p95Ms.toFixed(3)} ms`;

async function measure(db: Database): Promise<{ insert: Stats; append: Stats }> {
  await db.query('CREATE TABLE bench_items (id integer PRIMARY KEY, v text NOT NULL)');
  const insert = await timeEach(ROUNDS, (i) =>
    db.query('INSERT INTO bench_items (id, v) VALUES ($1, $2)', [i, `value ${i}`]),
  );
  const count = await db.query<{ n: string }>('SELECT count(*) AS n FROM bench_items');
  assert.equal(count.rows[0]?.n, String(ROUNDS + 20));

  const tenant = await new TenantRepository(db).create({ name: 'bench', settings: {} as TenantSettings });
  const conv = await new ConversationRepository(db).create(tenant.id);
  const run = await new RunRepository(db).start({
    tenantId: tenant.id,
    conversationId: conv.id,
    prompt: 'p',
  });
  const events = new EventRepository(db);
  const append = await timeEach(ROUNDS, (i) =>
    events.append(tenant.id, conv.id, run.id, { type: 'assistant', data: { i, id: randomUUID() } }),
  );
  assert.equal(await events.lastSeq(tenant.id, conv.id), ROUNDS + 20);
  return { insert, append };
}

test('open time and per-statement latency: PGlite against PostgreSQL', async (t) => {
  const dataDir = path.join(dir, 'pgdata');
  let started = Date.now();
  const first = await createPgliteDatabase({ dataDir, logger });
  const initMs = Date.now() - started;
  started = Date.now();
  const applied = await migrate(first, { logger });
  const migrateMs = Date.now() - started;
  assert.ok(applied.applied.length > 0);
  await first.close();

  started = Date.now();
  const lite = await createPgliteDatabase({ dataDir, logger });
  dbs.push(lite);
  const reopenMs = Date.now() - started;
  started = Date.now();
  assert.deepEqual((await migrate(lite, { logger })).applied, []);
  const remigrateMs = Date.now() - started;

  const real = (await pg.migrated()).db;
  const onLite = await measure(lite);
  const onReal = await measure(real);

  t.diagnostic(`PGlite first open (initdb) ${initMs} ms + migrations ${migrateMs} ms`);
  t.diagnostic(`PGlite reopen ${reopenMs} ms + migrate (no-op) ${remigrateMs} ms`);
  t.diagnostic(`single-row INSERT: PGlite ${fmt(onLite.insert)}; PostgreSQL ${fmt(onReal.insert)}`);
  t.diagnostic(`event append:      PGlite ${fmt(onLite.append)}; PostgreSQL ${fmt(onReal.append)}`);
});
