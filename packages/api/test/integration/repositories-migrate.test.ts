// Migrations and the pool against a real PostgreSQL (testkit's private server).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AppError, silentLogger } from '@hako/core';
import { createDatabase, pgErrorCode } from '../../src/db/pool.js';
import type { Queryable } from '../../src/db/pool.js';
import { loadMigrations, migrate } from '../../src/db/migrate.js';
import { SCHEMA_TABLES, startPostgresFixture } from '../helpers/db.js';
import type { PostgresFixture } from '../helpers/db.js';

const logger = silentLogger();
let pg: PostgresFixture;

before(async () => {
  pg = await startPostgresFixture();
});
after(async () => {
  await pg?.stop();
});

async function tempMigrations(
  files: Record<string, string>,
): Promise<{ dir: string; done: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'hako-mig-'));
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
  return { dir, done: () => rm(dir, { recursive: true, force: true }) };
}

async function tables(q: Queryable): Promise<string[]> {
  const res = await q.query<{ t: string }>(
    "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
  );
  return res.rows.map((r) => r.t);
}

async function recorded(q: Queryable): Promise<{ version: number; name: string; checksum: string }[]> {
  const res = await q.query<{ version: number; name: string; checksum: string }>(
    'SELECT version, name, checksum FROM schema_migrations ORDER BY version',
  );
  return res.rows;
}

test('the package migrations apply to an empty database, are recorded with their sha256, and a second run is a no-op', async () => {
  const { db } = await pg.empty();
  const files = await loadMigrations();
  const first = await migrate(db, { logger });
  assert.deepEqual(
    first.applied.map((m) => m.version),
    files.map((m) => m.version),
  );
  assert.equal(first.version, files.at(-1)?.version);
  assert.deepEqual(await tables(db), SCHEMA_TABLES);
  assert.deepEqual(
    await recorded(db),
    files.map((m) => ({ version: m.version, name: m.name, checksum: m.checksum })),
  );
  const appliedAt = await db.query<{ applied_at: Date }>('SELECT applied_at FROM schema_migrations');
  assert.ok(appliedAt.rows.every((r) => r.applied_at instanceof Date));

  const second = await migrate(db, { logger });
  assert.deepEqual(second.applied, []);
  assert.equal(second.version, first.version);
  assert.equal((await recorded(db)).length, files.length);
});

test('the schema enforces its CHECK constraints and cascades from conversations', async () => {
  const { db } = await pg.migrated();
  const t = '11111111-1111-4111-8111-111111111111';
  const c = '22222222-2222-4222-8222-222222222222';
  const r = '33333333-3333-4333-8333-333333333333';
  await db.query("INSERT INTO tenants (id, name) VALUES ($1, 'a')", [t]);
  await db.query('INSERT INTO conversations (id, tenant_id) VALUES ($1, $2)', [c, t]);
  await db.query("INSERT INTO runs (id, conversation_id, tenant_id, prompt) VALUES ($1, $2, $3, 'p')", [
    r,
    c,
    t,
  ]);
  const checkFails = async (sql: string, params: unknown[]): Promise<void> => {
    await assert.rejects(db.query(sql, params), (err: unknown) => {
      assert.equal(pgErrorCode(err), '23514', String(err));
      return true;
    });
  };
  await checkFails("UPDATE runs SET status = 'bogus' WHERE id = $1", [r]);
  await checkFails("UPDATE runs SET status = 'completed' WHERE id = $1", [r]); // ended_at missing
  await checkFails(
    "INSERT INTO conversation_events (conversation_id, seq, run_id, type, data) VALUES ($1, 1, $2, 'nope', '{}')",
    [c, r],
  );
  await checkFails(
    "INSERT INTO conversation_files (conversation_id, path, size, sha256, mime_type, source) VALUES ($1, '.hako/claude/x', 1, repeat('a', 64), 'text/plain', 'user_upload')",
    [c],
  );
  await checkFails(
    "INSERT INTO conversation_files (conversation_id, path, size, sha256, mime_type, source) VALUES ($1, 'a', 1, repeat('a', 64), 'text/plain', 'robot')",
    [c],
  );
  // A run's tenant must be its conversation's.
  const other = '44444444-4444-4444-8444-444444444444';
  await db.query("INSERT INTO tenants (id, name) VALUES ($1, 'b')", [other]);
  await assert.rejects(
    db.query(
      "INSERT INTO runs (id, conversation_id, tenant_id, prompt, status, ended_at) VALUES (gen_random_uuid(), $1, $2, 'p', 'failed', now())",
      [c, other],
    ),
    (err: unknown) => pgErrorCode(err) === '23503',
  );

  await db.query(
    "INSERT INTO conversation_events (conversation_id, seq, run_id, type, data) VALUES ($1, 1, $2, 'init', '{}')",
    [c, r],
  );
  await db.query(
    "INSERT INTO conversation_files (conversation_id, path, size, sha256, mime_type, source) VALUES ($1, 'a.txt', 1, repeat('a', 64), 'text/plain', 'user_upload')",
    [c],
  );
  await db.query(
    "INSERT INTO workspace_objects (conversation_id, path, sha256, size) VALUES ($1, 'a.txt', repeat('a', 64), 1)",
    [c],
  );
  await db.query('DELETE FROM conversations WHERE id = $1', [c]);
  for (const table of ['runs', 'conversation_events', 'conversation_files', 'workspace_objects']) {
    const n = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`);
    assert.equal(n.rows[0]?.n, '0', `${table} emptied by the cascade`);
  }
});

test('four migrators starting at once apply each migration exactly once', async () => {
  // A slow first migration makes the migrators overlap; without the advisory lock they would all
  // see nothing applied and the second CREATE TABLE would fail.
  const m = await tempMigrations({
    '0001_slow.sql': 'SELECT pg_sleep(0.4); CREATE TABLE a (id int PRIMARY KEY);',
    '0002_b.sql': 'CREATE TABLE b (id int PRIMARY KEY); INSERT INTO a VALUES (1);',
    '0003_c.sql': 'ALTER TABLE b ADD COLUMN note text;',
  });
  try {
    const target = await pg.empty();
    const pools = [target.openPool(2), target.openPool(2), target.openPool(2), target.openPool(2)];
    const results = await Promise.all(pools.map((p) => migrate(p, { logger, dir: m.dir })));
    const applied = results.flatMap((r) => r.applied.map((x) => x.version)).sort();
    assert.deepEqual(applied, [1, 2, 3], 'every migration applied once in total');
    assert.ok(results.every((r) => r.version === 3));
    assert.deepEqual(
      (await recorded(target.db)).map((r) => r.version),
      [1, 2, 3],
    );
    const a = await target.db.query<{ n: string }>('SELECT count(*) AS n FROM a');
    assert.equal(a.rows[0]?.n, '1', '0002 ran once');
  } finally {
    await m.done();
  }
});

test('a changed applied file is refused with MIGRATION_CHECKSUM_MISMATCH and nothing after it runs', async () => {
  const m = await tempMigrations({ '0001_a.sql': 'CREATE TABLE a (id int);' });
  try {
    const { db } = await pg.empty();
    await migrate(db, { logger, dir: m.dir });
    await writeFile(path.join(m.dir, '0001_a.sql'), 'CREATE TABLE a (id bigint);');
    await writeFile(path.join(m.dir, '0002_b.sql'), 'CREATE TABLE b (id int);');
    await assert.rejects(migrate(db, { logger, dir: m.dir }), (err: unknown) => {
      assert.ok(err instanceof AppError);
      assert.equal(err.code, 'MIGRATION_CHECKSUM_MISMATCH');
      assert.match(err.message, /0001_a\.sql was changed after it was applied/);
      return true;
    });
    assert.deepEqual(await tables(db), ['a', 'schema_migrations']);
  } finally {
    await m.done();
  }
});

test('a failing migration rolls back whole and is not recorded; the ones before it stay', async () => {
  const m = await tempMigrations({
    '0001_a.sql': 'CREATE TABLE a (id int);',
    '0002_broken.sql': 'CREATE TABLE half (id int);\nSELECT * FROM does_not_exist;',
  });
  try {
    const { db } = await pg.empty();
    await assert.rejects(migrate(db, { logger, dir: m.dir }), (err: unknown) => {
      assert.ok(err instanceof AppError);
      assert.equal(err.code, 'DATABASE_FAILED');
      assert.match(err.message, /Migration 0002_broken\.sql failed and was rolled back: .*does_not_exist/);
      assert.equal(pgErrorCode(err), '42P01');
      return true;
    });
    assert.deepEqual(await tables(db), ['a', 'schema_migrations']);
    assert.deepEqual(
      (await recorded(db)).map((r) => r.version),
      [1],
    );
  } finally {
    await m.done();
  }
});

test('a file numbered below the newest applied migration is refused (CONFIG_INVALID)', async () => {
  const m = await tempMigrations({ '0001_a.sql': 'SELECT 1;', '0003_c.sql': 'SELECT 3;' });
  try {
    const { db } = await pg.empty();
    await migrate(db, { logger, dir: m.dir });
    await writeFile(path.join(m.dir, '0002_b.sql'), 'SELECT 2;');
    await assert.rejects(migrate(db, { logger, dir: m.dir }), (err: unknown) => {
      assert.ok(err instanceof AppError);
      assert.equal(err.code, 'CONFIG_INVALID');
      assert.match(err.message, /0002_b\.sql is not applied but version 3 is/);
      return true;
    });
  } finally {
    await m.done();
  }
});

test('pool: errors are DATABASE_FAILED with the pg error as cause; transactions roll back on throw; savepoints nest', async () => {
  const { db } = await pg.migrated();
  await assert.rejects(db.query('SELECT * FROM nowhere'), (err: unknown) => {
    assert.ok(err instanceof AppError);
    assert.equal(err.code, 'DATABASE_FAILED');
    assert.equal(err.httpStatus, 503);
    assert.equal(pgErrorCode(err), '42P01');
    return true;
  });

  await db.query('CREATE TABLE t (id int PRIMARY KEY)');
  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.query('INSERT INTO t VALUES (1)');
      await tx.query('INSERT INTO t VALUES (2)');
      throw new Error('boom');
    }),
    /boom/,
  );
  assert.equal((await db.query('SELECT * FROM t')).rowCount, 0, 'rolled back');

  let escaped: Queryable | undefined;
  const out = await db.transaction(async (tx) => {
    escaped = tx;
    await tx.query('INSERT INTO t VALUES (1)');
    await assert.rejects(
      tx.transaction(async (inner) => {
        await inner.query('INSERT INTO t VALUES (2)');
        throw new Error('inner');
      }),
      /inner/,
    );
    await tx.transaction(async (inner) => inner.query('INSERT INTO t VALUES (3)'));
    return 'ok';
  });
  assert.equal(out, 'ok');
  const ids = await db.query<{ id: number }>('SELECT id FROM t ORDER BY id');
  assert.deepEqual(
    ids.rows.map((r) => r.id),
    [1, 3],
  );
  await assert.rejects(escaped!.query('SELECT 1'), { code: 'INTERNAL' });
});

test('pool: a serialization failure retries the transaction once and both writers succeed', async () => {
  const { db } = await pg.migrated();
  await db.query('CREATE TABLE doctors (name text PRIMARY KEY, on_call boolean NOT NULL)');
  await db.query("INSERT INTO doctors VALUES ('alice', true), ('bob', true)");
  let attempts = 0;
  let arrived = 0;
  let release!: () => void;
  const bothRead = new Promise<void>((resolve) => (release = resolve));
  // Write skew: each takes a different doctor off call after checking that two are on call.
  const offCall = (name: string): Promise<number> =>
    db.transaction(
      async (tx) => {
        attempts++;
        const res = await tx.query<{ n: string }>('SELECT count(*) AS n FROM doctors WHERE on_call');
        if (++arrived === 2) release();
        await bothRead;
        if (Number(res.rows[0]?.n) < 2) return 0;
        await tx.query('UPDATE doctors SET on_call = false WHERE name = $1', [name]);
        return 1;
      },
      { isolation: 'serializable' },
    );
  const changed = await Promise.all([offCall('alice'), offCall('bob')]);
  assert.equal(attempts, 3, 'one of the two was retried once');
  assert.deepEqual(changed.sort(), [0, 1], 'the retry saw the other commit and changed nothing');
  const onCall = await db.query('SELECT 1 FROM doctors WHERE on_call');
  assert.equal(onCall.rowCount, 1);
});

test('pool: an unreachable server and a closed pool are DATABASE_FAILED without the password in the message', async () => {
  const db = createDatabase({
    url: 'postgres://hako:s3cret@127.0.0.1:1/hako',
    logger,
    connectionTimeoutMs: 2000,
  });
  try {
    await assert.rejects(db.query('SELECT 1'), (err: unknown) => {
      assert.ok(err instanceof AppError);
      assert.equal(err.code, 'DATABASE_FAILED');
      assert.match(err.message, /127\.0\.0\.1:1\/hako/);
      assert.doesNotMatch(err.message, /s3cret/);
      return true;
    });
    await assert.rejects(
      db.transaction(() => Promise.resolve(1)),
      { code: 'DATABASE_FAILED' },
    );
  } finally {
    await db.close();
  }
  await assert.rejects(db.query('SELECT 1'), { code: 'DATABASE_FAILED', message: /closed/ });
});
