// The embedded PostgreSQL (PGlite) as a Database: directory and lock file, persistence across
// reopen and after a crash, the one-connection queue (transactions hold it; other queries wait),
// transactions and savepoints, errors and value shapes as pool.ts answers them, migrations.
// Every test works in its own temporary directory, removed afterwards.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, cp, mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { AppError, silentLogger } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import { createPgliteDatabase, PGLITE_LOCK_FILE } from '../../src/db/pglite.js';
import type { Database } from '../../src/db/pool.js';
import { isUniqueViolation, pgConstraint, pgErrorCode } from '../../src/db/pool.js';
import { loadMigrations, migrate } from '../../src/db/migrate.js';
import { SCHEMA_TABLES } from '../helpers/db.js';

const logger = silentLogger();
const dirs: string[] = [];
const open: Database[] = [];

after(async () => {
  for (const db of open.splice(0)) await db.close().catch(() => undefined);
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(path.join(tmpdir(), 'hako-pglite-'));
  dirs.push(d);
  return d;
}

async function openDb(dataDir: string, waitTimeoutMs?: number): Promise<Database> {
  const db = await createPgliteDatabase({ dataDir, logger, ...(waitTimeoutMs ? { waitTimeoutMs } : {}) });
  open.push(db);
  return db;
}

/** One initialized (empty) database directory per file; tests copy it instead of running initdb. */
let template: Promise<string> | undefined;
async function freshDir(): Promise<string> {
  template ??= (async () => {
    const dir = path.join(await tempDir(), 'template');
    await (await createPgliteDatabase({ dataDir: dir, logger })).close();
    return dir;
  })();
  const dir = path.join(await tempDir(), 'db');
  await cp(await template, dir, { recursive: true });
  return dir;
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<AppError> {
  let caught: AppError | undefined;
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof AppError, `expected AppError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    caught = err;
    return true;
  });
  return caught as AppError;
}

function settled(p: Promise<unknown>): { done: boolean } {
  const state = { done: false };
  p.then(
    () => (state.done = true),
    () => (state.done = true),
  );
  return state;
}

test('a new directory is created 0700 with its parents, initialized, migrated and recorded; the lock names this process', async (t) => {
  const dataDir = path.join(await tempDir(), 'home', 'pgdata');
  let started = Date.now();
  const db = await openDb(dataDir);
  const initMs = Date.now() - started;
  assert.equal((await stat(dataDir)).mode & 0o777, 0o700);
  assert.equal((await stat(path.dirname(dataDir))).mode & 0o777, 0o700);
  assert.ok((await readFile(path.join(dataDir, 'PG_VERSION'), 'utf8')).trim().length > 0);
  const lock = JSON.parse(await readFile(path.join(dataDir, PGLITE_LOCK_FILE), 'utf8')) as {
    pid: number;
    host: string;
  };
  assert.equal(lock.pid, process.pid);
  assert.equal(lock.host, hostname());

  started = Date.now();
  const files = await loadMigrations();
  const first = await migrate(db, { logger });
  const migrateMs = Date.now() - started;
  assert.deepEqual(
    first.applied.map((m) => m.version),
    files.map((m) => m.version),
  );
  const tables = await db.query<{ t: string }>(
    "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
  );
  assert.deepEqual(
    tables.rows.map((r) => r.t),
    SCHEMA_TABLES,
  );
  const recorded = await db.query<{ version: number; name: string; checksum: string; applied_at: Date }>(
    'SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version',
  );
  assert.deepEqual(
    recorded.rows.map((r) => ({ version: r.version, name: r.name, checksum: r.checksum })),
    files.map((m) => ({ version: m.version, name: m.name, checksum: m.checksum })),
  );
  assert.ok(recorded.rows.every((r) => r.applied_at instanceof Date));
  const second = await migrate(db, { logger });
  assert.deepEqual(second.applied, []);
  assert.equal(second.version, first.version);
  t.diagnostic(`first open (initdb) ${initMs} ms, migrations ${migrateMs} ms`);

  await db.close();
  await assert.rejects(stat(path.join(dataDir, PGLITE_LOCK_FILE)), { code: 'ENOENT' });
});

test('an existing directory open to others is made 0700; a file in the way is CONFIG_INVALID', async () => {
  const dataDir = await freshDir();
  await chmod(dataDir, 0o755);
  const db = await openDb(dataDir);
  assert.equal((await stat(dataDir)).mode & 0o777, 0o700);
  await db.close();

  const notDir = path.join(await tempDir(), 'file');
  await writeFile(notDir, 'x');
  await rejectsWith(
    createPgliteDatabase({ dataDir: notDir, logger }),
    'CONFIG_INVALID',
    /exists and is not a directory/,
  );
});

test('data survives close and reopen; close is idempotent; a closed database refuses work', async (t) => {
  const dataDir = await freshDir();
  const db = await openDb(dataDir);
  await migrate(db, { logger });
  await db.query(
    "INSERT INTO tenants (id, name, settings) VALUES ('11111111-1111-4111-8111-111111111111', 'kept', $1::jsonb)",
    [JSON.stringify({ a: [1, 2] })],
  );
  await db.transaction(async (tx) => {
    await tx.query("UPDATE tenants SET name = 'kept twice'");
  });
  await Promise.all([db.close(), db.close()]);
  await db.close();
  await rejectsWith(db.query('SELECT 1'), 'DATABASE_FAILED', /closed/);
  await rejectsWith(
    db.transaction(() => Promise.resolve()),
    'DATABASE_FAILED',
    /closed/,
  );

  const started = Date.now();
  const again = await openDb(dataDir);
  const reopenMs = Date.now() - started;
  const m = await migrate(again, { logger });
  assert.deepEqual(m.applied, [], 'the schema is still current');
  const rows = await again.query<{ name: string; settings: unknown }>('SELECT name, settings FROM tenants');
  assert.deepEqual(rows.rows, [{ name: 'kept twice', settings: { a: [1, 2] } }]);
  t.diagnostic(`reopen of an initialized directory ${reopenMs} ms`);
});

test('a second open while the directory is open is refused: by this process, by another live process (named), or by another host', async () => {
  const dataDir = await freshDir();
  const db = await openDb(dataDir);
  await rejectsWith(
    createPgliteDatabase({ dataDir, logger }),
    'CONFIG_INVALID',
    new RegExp(
      `${dataDir.replace(/[/.]/g, '\\$&')}.*this process \\(pid ${process.pid}\\) already has it open`,
    ),
  );
  assert.equal((await db.query<{ x: number }>('SELECT 1 AS x')).rows[0]?.x, 1, 'the first stays usable');
  await db.close();

  // A live process of this host (pid 1, with its real start time) and one of another host.
  const stat1 = await readFile('/proc/1/stat', 'utf8');
  const startTime = stat1.slice(stat1.lastIndexOf(')') + 2).split(' ')[19];
  const lockFile = path.join(dataDir, PGLITE_LOCK_FILE);
  await writeFile(
    lockFile,
    JSON.stringify({ pid: 1, host: hostname(), startTime, openedAt: '2024-01-01T00:00:00.000Z' }),
  );
  const err = await rejectsWith(
    createPgliteDatabase({ dataDir, logger }),
    'CONFIG_INVALID',
    /in use by process 1 /,
  );
  assert.deepEqual(err.details, { dataDir, pid: 1, host: hostname() });
  assert.ok(err.message.includes(lockFile), 'says which file to remove if the process is gone');
  await writeFile(
    lockFile,
    JSON.stringify({ pid: 999_999_999, host: 'elsewhere.example', openedAt: '2024-01-01T00:00:00.000Z' }),
  );
  await rejectsWith(
    createPgliteDatabase({ dataDir, logger }),
    'CONFIG_INVALID',
    /on host elsewhere\.example/,
  );
  assert.ok(
    (await readFile(lockFile, 'utf8')).includes('elsewhere.example'),
    'a refused open leaves the lock alone',
  );
});

test('a lock of a process that is gone is taken over: a dead pid, a reused pid, an unreadable lock', async () => {
  const dataDir = await freshDir();
  const lockFile = path.join(dataDir, PGLITE_LOCK_FILE);
  const stale = [
    { pid: 999_999_999, host: hostname(), openedAt: '2024-01-01T00:00:00.000Z' },
    // This process's pid, but another start time: the pid was reused by someone else.
    { pid: process.pid, host: hostname(), startTime: '1', openedAt: '2024-01-01T00:00:00.000Z' },
    'not json',
  ];
  for (const s of stale) {
    await writeFile(lockFile, typeof s === 'string' ? s : JSON.stringify(s));
    const db = await openDb(dataDir);
    const owner = JSON.parse(await readFile(lockFile, 'utf8')) as { pid: number; startTime?: string };
    assert.equal(owner.pid, process.pid);
    assert.notEqual(owner.startTime, '1');
    await db.close();
  }
  await assert.rejects(stat(lockFile), { code: 'ENOENT' });
});

const CHILD = `
const [pgliteUrl, coreUrl, dataDir] = process.argv.slice(2);
const { createPgliteDatabase } = await import(pgliteUrl);
const { silentLogger } = await import(coreUrl);
const db = await createPgliteDatabase({ dataDir, logger: silentLogger() });
await db.query("INSERT INTO items (v) VALUES ('committed')");
void db.transaction(async (tx) => {
  await tx.query("INSERT INTO items (v) VALUES ('uncommitted')");
  process.stdout.write('ready\\n');
  await new Promise(() => {});
});
setInterval(() => {}, 1000);
`;

test('another process holding the directory is named in the refusal; after it is killed (-9) the directory opens with its committed data only', async () => {
  const dataDir = await freshDir();
  const setup = await openDb(dataDir);
  await setup.query('CREATE TABLE items (v text)');
  await setup.close();

  const script = path.join(await tempDir(), 'child.mjs');
  await writeFile(script, CHILD);
  const here = path.dirname(fileURLToPath(import.meta.url));
  const pgliteUrl = new URL(`file://${path.resolve(here, '../../src/db/pglite.ts')}`).href;
  const coreUrl = new URL(`file://${path.resolve(here, '../../../core/src/index.ts')}`).href;
  const child = spawn(
    process.execPath,
    ['--conditions=source', '--import', 'tsx', script, pgliteUrl, coreUrl, dataDir],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const stderr: string[] = [];
  child.stderr.on('data', (d: Buffer) => stderr.push(d.toString()));
  try {
    let out = '';
    for await (const chunk of child.stdout) {
      out += String(chunk);
      if (out.includes('ready')) break;
    }
    assert.ok(out.includes('ready'), `the child opened the database: ${stderr.join('')}`);
    const err = await rejectsWith(
      createPgliteDatabase({ dataDir, logger }),
      'CONFIG_INVALID',
      new RegExp(`in use by process ${child.pid}`),
    );
    assert.equal(err.details?.pid, child.pid);
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  }

  const db = await openDb(dataDir);
  const rows = await db.query<{ v: string }>('SELECT v FROM items ORDER BY v');
  assert.deepEqual(
    rows.rows.map((r) => r.v),
    ['committed'],
  );
  const owner = JSON.parse(await readFile(path.join(dataDir, PGLITE_LOCK_FILE), 'utf8')) as { pid: number };
  assert.equal(owner.pid, process.pid);
});

test('20 concurrent transactions that read-modify-write a counter end at exactly 20', async () => {
  const db = await openDb(await freshDir());
  await db.query('CREATE TABLE counter (n integer NOT NULL); INSERT INTO counter VALUES (0)');
  const seen = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      db.transaction(async (tx) => {
        const n = (await tx.query<{ n: number }>('SELECT n FROM counter')).rows[0]?.n ?? -1;
        await sleep(i % 3); // give other callers every chance to interleave
        await tx.query('UPDATE counter SET n = $1', [n + 1]);
        return n;
      }),
    ),
  );
  assert.equal((await db.query<{ n: number }>('SELECT n FROM counter')).rows[0]?.n, 20);
  assert.deepEqual(
    [...seen].sort((a, b) => a - b),
    Array.from({ length: 20 }, (_, i) => i),
  );
});

test('a query on the database waits while a transaction holds the connection and never sees its uncommitted rows', async () => {
  const db = await openDb(await freshDir());
  await db.query('CREATE TABLE items (v text)');
  for (const outcome of ['rollback', 'commit'] as const) {
    await db.query('DELETE FROM items');
    let inserted!: () => void;
    const insertedP = new Promise<void>((r) => (inserted = r));
    let finish!: () => void;
    const gate = new Promise<void>((r) => (finish = r));
    const tx = db.transaction(async (q) => {
      await q.query("INSERT INTO items (v) VALUES ('in tx')");
      inserted();
      await gate;
      if (outcome === 'rollback') throw new Error('rolled back on purpose');
    });
    await insertedP;
    const count = db.query<{ n: string }>('SELECT count(*) AS n FROM items');
    const other = db.transaction((q) => q.query("INSERT INTO items (v) VALUES ('other')"));
    const countState = settled(count);
    const otherState = settled(other);
    await sleep(150);
    assert.equal(countState.done, false, 'the query waits for the transaction');
    assert.equal(otherState.done, false, 'so does another transaction');
    finish();
    if (outcome === 'rollback') await assert.rejects(tx, /rolled back on purpose/);
    else await tx;
    assert.equal((await count).rows[0]?.n, outcome === 'commit' ? '1' : '0');
    await other;
    assert.equal(
      (await db.query<{ n: string }>('SELECT count(*) AS n FROM items')).rows[0]?.n,
      outcome === 'commit' ? '2' : '1',
    );
  }
});

test('transactions: rollback on throw, savepoints roll back only their part, a swallowed error fails COMMIT, and the database inside its own transaction is refused', async () => {
  const db = await openDb(await freshDir());
  await db.query('CREATE TABLE items (v text PRIMARY KEY)');
  const values = async (): Promise<string[]> =>
    (await db.query<{ v: string }>('SELECT v FROM items ORDER BY v')).rows.map((r) => r.v);

  await assert.rejects(
    db.transaction(async (tx) => {
      await tx.query("INSERT INTO items VALUES ('a')");
      throw new Error('boom');
    }),
    /boom/,
  );
  assert.deepEqual(await values(), []);

  const out = await db.transaction(async (tx) => {
    await tx.query("INSERT INTO items VALUES ('outer')");
    await assert.rejects(
      tx.transaction(async (sp) => {
        await sp.query("INSERT INTO items VALUES ('inner')");
        await sp.query("INSERT INTO items VALUES ('outer')"); // unique violation
      }),
      (err: unknown) => isUniqueViolation(err, 'items_pkey'),
    );
    await tx.transaction(async (sp) => {
      await sp.query("INSERT INTO items VALUES ('kept')");
      await sp.transaction((sp2) => sp2.query("INSERT INTO items VALUES ('nested')"));
    });
    return 'done';
  });
  assert.equal(out, 'done');
  assert.deepEqual(await values(), ['kept', 'nested', 'outer']);

  // The error of a statement was caught inside: PostgreSQL rolls back at COMMIT; not a success.
  await rejectsWith(
    db.transaction(async (tx) => {
      await tx.query("INSERT INTO items VALUES ('lost')");
      await tx.query("INSERT INTO items VALUES ('outer')").catch(() => undefined);
    }),
    'DATABASE_FAILED',
    /rolled the transaction back at COMMIT/,
  );
  assert.deepEqual(await values(), ['kept', 'nested', 'outer']);

  // The database (not tx) used inside its own transaction would wait forever: refused at once.
  let handle: Parameters<Parameters<Database['transaction']>[0]>[0] | undefined;
  await rejectsWith(
    db.transaction(async (tx) => {
      handle = tx;
      await tx.query("INSERT INTO items VALUES ('x')");
      await db.query('SELECT 1');
    }),
    'INTERNAL',
    /inside one of its own transactions/,
  );
  await rejectsWith(
    db.transaction(() => db.transaction(() => Promise.resolve())),
    'INTERNAL',
    /inside one of its own transactions/,
  );
  assert.deepEqual(await values(), ['kept', 'nested', 'outer']);
  await rejectsWith(handle!.query('SELECT 1'), 'INTERNAL', /already ended/);

  // Isolation levels are accepted.
  const level = await db.transaction(
    (tx) => tx.query<{ l: string }>("SELECT current_setting('transaction_isolation') AS l"),
    {
      isolation: 'serializable',
    },
  );
  assert.equal(level.rows[0]?.l, 'serializable');
});

test('a waiter gives up with DATABASE_FAILED after waitTimeoutMs; the queue goes on', async () => {
  const db = await openDb(await freshDir(), 200);
  let finish!: () => void;
  const gate = new Promise<void>((r) => (finish = r));
  const long = db.transaction(async (tx) => {
    await tx.query('SELECT 1');
    await gate;
    return 'long done';
  });
  await sleep(20);
  await rejectsWith(db.query('SELECT 1'), 'DATABASE_FAILED', /Waited 200 ms/);
  finish();
  assert.equal(await long, 'long done');
  assert.equal((await db.query<{ x: number }>('SELECT 2 AS x')).rows[0]?.x, 2);
});

test('errors and values answer like pool.ts: SQLSTATE and constraint, DATABASE_FAILED naming the statement, int8 as text, Date, jsonb, arrays', async () => {
  const db = await openDb(await freshDir());
  await db.query(
    `CREATE TABLE t (id bigint PRIMARY KEY, u text CONSTRAINT t_u UNIQUE, j jsonb, n numeric(16, 8),
       at timestamptz NOT NULL DEFAULT now(), tags text[])`,
  );
  const ins = await db.query<Record<string, unknown>>(
    'INSERT INTO t (id, u, j, n, tags) VALUES ($1, $2, $3::jsonb, $4, $5) RETURNING *',
    [9_007_199_254_740_993n, 'a', JSON.stringify({ k: ['v', 1] }), 0.0123, ['x', 'y"z', null]],
  );
  assert.equal(ins.rowCount, 1);
  const row = ins.rows[0] ?? {};
  assert.equal(row.id, '9007199254740993', 'int8 as text, like pg');
  assert.deepEqual(row.j, { k: ['v', 1] });
  assert.equal(row.n, '0.01230000');
  assert.ok(row.at instanceof Date);
  assert.deepEqual(row.tags, ['x', 'y"z', null]);
  const agg = await db.query<{ c: string; ids: string[] }>(
    'SELECT count(*) AS c, array_agg(id) AS ids FROM t',
  );
  assert.deepEqual(agg.rows[0], { c: '1', ids: ['9007199254740993'] });

  // Parameters as the repositories pass them.
  await db.query('INSERT INTO t (id, u, j) VALUES ($1, $2, $3)', [2, 'b', { plain: 'object' }]);
  await db.query('INSERT INTO t (id, u) VALUES ($1, $2)', [3, undefined]);
  const some = await db.query<{ id: string }>('SELECT id FROM t WHERE u = ANY($1::text[]) ORDER BY id', [
    ['a', 'b', 'zzz'],
  ]);
  assert.deepEqual(
    some.rows.map((r) => r.id),
    ['2', '9007199254740993'],
  );
  assert.deepEqual((await db.query<{ j: unknown }>('SELECT j FROM t WHERE id = 2')).rows[0]?.j, {
    plain: 'object',
  });
  const un = await db.query<{ p: string; s: string }>(
    'SELECT * FROM unnest($1::text[], $2::bigint[]) AS u(p, s)',
    [
      ['p1', 'p2'],
      [1, 2],
    ],
  );
  assert.deepEqual(un.rows, [
    { p: 'p1', s: '1' },
    { p: 'p2', s: '2' },
  ]);
  const upd = await db.query('UPDATE t SET u = u WHERE id > 0');
  assert.equal(upd.rowCount, 3);
  // Without parameters a text of several statements answers the last one.
  const multi = await db.query<{ x: number }>('SELECT 1 AS y; SELECT 2 AS x');
  assert.deepEqual(multi.rows, [{ x: 2 }]);

  const err = await rejectsWith(
    db.query('INSERT INTO t (id, u) VALUES ($1, $2)', [4, 'a']),
    'DATABASE_FAILED',
    /refused a statement \(INSERT INTO t \(id, u\) VALUES \(\$1, \$2\)\): \[23505\]/,
  );
  assert.equal(pgErrorCode(err), '23505');
  assert.equal(pgConstraint(err), 't_u');
  assert.ok(isUniqueViolation(err));
  assert.ok(isUniqueViolation(err, 't_u'));
  assert.ok(!isUniqueViolation(err, 'other'));
  assert.ok(!('params' in (err.cause as object)), 'the cause carries no parameter values');
  const fk = await rejectsWith(db.query('SELECT 1/0'), 'DATABASE_FAILED', /\[22012\] division by zero/);
  assert.equal(pgErrorCode(fk), '22012');
  assert.equal(isUniqueViolation(fk), false);

  // migrate() serializes on this; it must exist and work in a transaction.
  const locked = await db.transaction((tx) =>
    tx.query<{ l: string }>('SELECT pg_advisory_xact_lock($1, $2)::text AS l', [0x68616b6f, 1]),
  );
  assert.equal(locked.rowCount, 1);
});

test('concurrent opens of one directory: exactly one wins', async () => {
  const dataDir = await freshDir();
  const results = await Promise.allSettled([
    createPgliteDatabase({ dataDir, logger }),
    createPgliteDatabase({ dataDir, logger }),
    createPgliteDatabase({ dataDir, logger }),
  ]);
  const won = results.filter((r): r is PromiseFulfilledResult<Database> => r.status === 'fulfilled');
  for (const w of won) open.push(w.value);
  assert.equal(won.length, 1);
  for (const r of results) {
    if (r.status === 'rejected') {
      assert.ok(r.reason instanceof AppError);
      assert.equal(r.reason.code, 'CONFIG_INVALID');
    }
  }
  await won[0]?.value.close();
});

test('the stale-lock takeover guard left by a crash is ignored once old', async () => {
  const dataDir = await freshDir();
  const lockFile = path.join(dataDir, PGLITE_LOCK_FILE);
  await writeFile(lockFile, JSON.stringify({ pid: 999_999_999, host: hostname(), openedAt: 'x' }));
  const guard = `${lockFile}.takeover`;
  await mkdir(guard);
  const old = new Date(Date.now() - 60_000);
  await utimes(guard, old, old);
  const db = await openDb(dataDir);
  await assert.rejects(stat(guard), { code: 'ENOENT' });
  await db.close();
});
