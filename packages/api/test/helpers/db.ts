// A PostgreSQL fixture for one test file: one private server (testkit's startPostgres), the
// package's migrations applied once into a template database, and a fresh database per test
// cloned from it (CREATE DATABASE ... TEMPLATE: milliseconds, and tests never see each other's
// rows). stop() closes every pool it handed out and stops the server, even after failures.
import { randomBytes } from 'node:crypto';
import { silentLogger } from '@hako/core';
import type { Logger } from '@hako/core';
import { startPostgres } from '@hako/testkit';
import type { PostgresService } from '@hako/testkit';
import { createDatabase } from '../../src/db/pool.js';
import type { Database } from '../../src/db/pool.js';
import { migrate } from '../../src/db/migrate.js';

export interface TestDatabase {
  /** The database's name (unique on the server). */
  readonly name: string;
  /** Its connection URL. */
  readonly url: string;
  /** A pool on it (closed by the fixture's stop()). */
  readonly db: Database;
  /** Another independent pool on the same database, as a second API process would have. */
  openPool(max?: number): Database;
}

export interface PostgresFixture {
  readonly server: PostgresService;
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

/** Starts the server and prepares the migrated template. Call in `before`, stop in `after`. */
export async function startPostgresFixture(options: { logger?: Logger } = {}): Promise<PostgresFixture> {
  const logger = options.logger ?? silentLogger();
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
