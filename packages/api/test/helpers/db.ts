// A PostgreSQL fixture for one test file: one private server (testkit's startPostgres), the
// package's migrations applied once into a template database, and a fresh database per test
// cloned from it (CREATE DATABASE ... TEMPLATE: milliseconds, and tests never see each other's
// rows). stop() closes every pool it handed out and stops the server, even after failures.
// HAKO_TEST_DATABASE=pglite (or `engine: 'pglite'`) gives the same fixture on the embedded
// PostgreSQL instead: each database a copy of a migrated PGlite data directory.
import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { QueryResultRow } from 'pg';
import { silentLogger } from '@hako/core';
import type { Logger } from '@hako/core';
import { startPostgres } from '@hako/testkit';
import type { PostgresService } from '@hako/testkit';
import { createDatabase } from '../../src/db/pool.js';
import type { Database, DbResult, IsolationLevel, Queryable } from '../../src/db/pool.js';
import { migrate } from '../../src/db/migrate.js';
import { createPgliteDatabase } from '../../src/db/pglite.js';

/** The engine behind a fixture. */
export type TestEngine = 'postgres' | 'pglite';

export interface TestDatabase {
  /** The database's name (unique on the server). */
  readonly name: string;
  /** Its connection URL (on PGlite `pglite:<data directory>`, nothing to connect to). */
  readonly url: string;
  /** A pool on it (closed by the fixture's stop()). */
  readonly db: Database;
  /**
   * Another independent pool on the same database, as a second API process would have. On PGlite
   * (one process, one connection) the same database again; its close() does nothing.
   */
  openPool(max?: number): Database;
}

export interface PostgresFixture {
  readonly engine: TestEngine;
  /** The private server (undefined on PGlite). */
  readonly server: PostgresService | undefined;
  /** A new database with every migration applied. */
  migrated(): Promise<TestDatabase>;
  /** A new empty database (no schema_migrations), for migration tests. */
  empty(): Promise<TestDatabase>;
  /** Closes every pool, then stops the server and removes its files. Idempotent. */
  stop(): Promise<void>;
}

const TEMPLATE = 'hako_migrated_template';

function dbUrl(serverUrl: string, name: string): string {
  const u = new URL(serverUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

/**
 * Starts the server and prepares the migrated template. Call in `before`, stop in `after`.
 * `engine` defaults to HAKO_TEST_DATABASE (`pglite` or, when unset, `postgres`).
 */
export async function startPostgresFixture(
  options: { logger?: Logger; engine?: TestEngine } = {},
): Promise<PostgresFixture> {
  const logger = options.logger ?? silentLogger();
  const engine = options.engine ?? (process.env.HAKO_TEST_DATABASE === 'pglite' ? 'pglite' : 'postgres');
  if (engine === 'pglite') return startPgliteFixture(logger);
  const server = await startPostgres();
  const pools: Database[] = [];
  const open = (url: string, max?: number): Database => {
    const db = createDatabase({ url, logger, ...(max === undefined ? {} : { max }) });
    pools.push(db);
    return db;
  };
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      const results = await Promise.allSettled(pools.map((p) => p.close()));
      await server.stop();
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    })());

  try {
    const admin = open(server.url, 2);
    const version = await admin.query<{ v: string }>('SHOW server_version_num');
    const strategy = Number(version.rows[0]?.v ?? 0) >= 150000 ? ' STRATEGY FILE_COPY' : '';
    await admin.query(`CREATE DATABASE ${TEMPLATE}`);
    const tmpl = createDatabase({ url: dbUrl(server.url, TEMPLATE), logger, max: 1 });
    try {
      await migrate(tmpl, { logger });
    } finally {
      // CREATE DATABASE ... TEMPLATE refuses while anyone is connected to the template.
      await tmpl.close();
    }

    const create = async (template: string | undefined): Promise<TestDatabase> => {
      const name = `t_${randomBytes(5).toString('hex')}`;
      await admin.query(`CREATE DATABASE ${name}${template ? ` TEMPLATE ${template}${strategy}` : ''}`);
      const url = dbUrl(server.url, name);
      return { name, url, db: open(url), openPool: (max) => open(url, max) };
    };
    return {
      engine,
      server,
      migrated: () => create(TEMPLATE),
      empty: () => create(undefined),
      stop,
    };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}

/** `db` once more, for openPool() on PGlite: the same connection, and close() leaves it open. */
function sharedHandle(db: Database): Database {
  return {
    query<T extends QueryResultRow = QueryResultRow>(
      sql: string,
      params?: readonly unknown[],
    ): Promise<DbResult<T>> {
      return db.query<T>(sql, params);
    },
    transaction<T>(fn: (tx: Queryable) => Promise<T>, opts?: { isolation?: IsolationLevel }): Promise<T> {
      return db.transaction(fn, opts);
    },
    close: () => Promise.resolve(),
  };
}

/**
 * The fixture on PGlite: one initdb and one migrate into template directories, then each
 * database a copy of a template (a fresh process-private database per test, like the server's
 * CREATE DATABASE ... TEMPLATE). stop() closes them and removes every directory.
 */
async function startPgliteFixture(logger: Logger): Promise<PostgresFixture> {
  const root = await mkdtemp(join(tmpdir(), 'hako-pglite-test-'));
  const dbs: Database[] = [];
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      const results = await Promise.allSettled(dbs.map((d) => d.close()));
      await rm(root, { recursive: true, force: true });
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    })());
  try {
    const emptyTemplate = join(root, 'template-empty');
    const migratedTemplate = join(root, 'template-migrated');
    await (await createPgliteDatabase({ dataDir: emptyTemplate, logger })).close();
    await cp(emptyTemplate, migratedTemplate, { recursive: true });
    const tmpl = await createPgliteDatabase({ dataDir: migratedTemplate, logger });
    try {
      await migrate(tmpl, { logger });
    } finally {
      await tmpl.close();
    }
    const create = async (template: string): Promise<TestDatabase> => {
      const name = `t_${randomBytes(5).toString('hex')}`;
      const dataDir = join(root, name);
      await cp(template, dataDir, { recursive: true });
      const db = await createPgliteDatabase({ dataDir, logger });
      dbs.push(db);
      const shared = sharedHandle(db);
      return { name, url: `pglite:${dataDir}`, db, openPool: () => shared };
    };
    return {
      engine: 'pglite',
      server: undefined,
      migrated: () => create(migratedTemplate),
      empty: () => create(emptyTemplate),
      stop,
    };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}

/** Every table the package migrations create (and schema_migrations), in name order. */
export const SCHEMA_TABLES: readonly string[] = [
  'api_keys',
  'conversation_events',
  'conversation_file_versions',
  'conversation_files',
  'conversation_mcp_servers',
  'conversations',
  'mcp_servers',
  'models',
  'presented_files',
  'runs',
  'schema_migrations',
  'skills',
  'tenants',
  'tool_calls',
  'usage_records',
  'workspace_objects',
];
