// The PostgreSQL connection pool behind every repository: one `query` shape for the pool and for
// a transaction, errors turned into AppError DATABASE_FAILED (the original pg error kept as the
// cause so repositories can translate constraint violations into their own codes).
import pg from 'pg';
import type { PoolClient, QueryResultRow } from 'pg';
import { AppError, isAppError } from '@hako/core';
import type { Logger } from '@hako/core';

/** SQLSTATE codes hako reacts to (https://www.postgresql.org/docs/current/errcodes-appendix.html). */
export const PG_ERROR = {
  UNIQUE_VIOLATION: '23505',
  FOREIGN_KEY_VIOLATION: '23503',
  CHECK_VIOLATION: '23514',
  SERIALIZATION_FAILURE: '40001',
  DEADLOCK_DETECTED: '40P01',
} as const;

export interface DbResult<T> {
  rows: T[];
  /** Rows returned, or rows inserted/updated/deleted for a statement without RETURNING. */
  rowCount: number;
}

export type IsolationLevel = 'read committed' | 'repeatable read' | 'serializable';

/** What repositories need: the pool and an open transaction both have it. */
export interface Queryable {
  /**
   * Runs one statement with `$1..$n` parameters. Without parameters the text may hold several
   * statements (migrations). Throws AppError DATABASE_FAILED; the pg error is its `cause`.
   */
  query<T extends QueryResultRow = QueryResultRow>(
    sql: string,
    params?: readonly unknown[],
  ): Promise<DbResult<T>>;
  /**
   * Runs `fn` in a transaction: BEGIN, COMMIT when `fn` resolves, ROLLBACK when it throws (the
   * error is rethrown). On the pool, a serialization failure or deadlock retries `fn` once from
   * the start, so `fn` must only touch the database. Inside a transaction this opens a savepoint
   * instead (rolled back to on throw; `isolation` is ignored there).
   */
  transaction<T>(fn: (tx: Queryable) => Promise<T>, options?: { isolation?: IsolationLevel }): Promise<T>;
}

export interface Database extends Queryable {
  /** Ends every connection; waits for queries in flight. Further calls fail. Idempotent. */
  close(): Promise<void>;
}

export interface DatabaseOptions {
  /** postgres://user:password@host:port/database (never logged: it may hold a password). */
  url: string;
  logger: Logger;
  /** Connections at most (default 10). */
  max?: number;
  /** How long to wait for a free connection or a new one (default 10 s). */
  connectionTimeoutMs?: number;
  /** How long an idle connection stays open (default 30 s). */
  idleTimeoutMs?: number;
  /** Shown in pg_stat_activity (default hako-api). */
  applicationName?: string;
}

interface SqlStateError {
  code: string;
  severity: string;
  constraint?: string;
}

/**
 * The server's error behind `err` (itself, or the cause of an AppError from `query`). Duck-typed
 * (a 5-character SQLSTATE and a severity) so an embedded engine's errors answer the same.
 */
function serverError(err: unknown): SqlStateError | undefined {
  const e: unknown = isAppError(err) ? err.cause : err;
  if (typeof e !== 'object' || e === null) return undefined;
  const { code, severity } = e as Partial<SqlStateError>;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code) || typeof severity !== 'string')
    return undefined;
  return e as SqlStateError;
}

/** The SQLSTATE of a server error, directly or as the cause of an AppError from `query`. */
export function pgErrorCode(err: unknown): string | undefined {
  return serverError(err)?.code;
}

/** The constraint a server error names, directly or as the cause of an AppError from `query`. */
export function pgConstraint(err: unknown): string | undefined {
  return serverError(err)?.constraint;
}

/** Whether `err` is a unique violation (of `constraint`, when given). */
export function isUniqueViolation(err: unknown, constraint?: string): boolean {
  return (
    pgErrorCode(err) === PG_ERROR.UNIQUE_VIOLATION &&
    (constraint === undefined || pgConstraint(err) === constraint)
  );
}

/** host:port/database of a connection URL, without user or password, for messages. */
export function describeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || '5432'}${u.pathname}`;
  } catch {
    return '(unparsable DATABASE_URL)';
  }
}

function firstLine(sql: string): string {
  const line = sql.trim().split('\n', 1)[0] ?? '';
  return line.length > 80 ? `${line.slice(0, 77)}...` : line;
}

function toDatabaseError(err: unknown, where: string, sql?: string): AppError {
  if (isAppError(err)) return err;
  const stmt = sql === undefined ? '' : ` (${firstLine(sql)})`;
  if (err instanceof pg.DatabaseError) {
    return new AppError(
      'DATABASE_FAILED',
      `PostgreSQL at ${where} refused a statement${stmt}: [${err.code}] ${err.message}`,
      {
        cause: err,
      },
    );
  }
  const msg = err instanceof Error ? err.message : String(err);
  return new AppError(
    'DATABASE_FAILED',
    `PostgreSQL at ${where} failed${stmt}: ${msg}; check that the server runs and DATABASE_URL is right`,
    { cause: err },
  );
}

async function runQuery<T extends QueryResultRow>(
  client: pg.Pool | PoolClient,
  where: string,
  sql: string,
  params: readonly unknown[] | undefined,
): Promise<DbResult<T>> {
  try {
    const res = await client.query<T>(sql, params === undefined ? undefined : [...params]);
    // A multi-statement text answers an array of results; the last one is what callers want.
    const answered: unknown = res;
    const last = (Array.isArray(answered) ? answered.at(-1) : answered) as pg.QueryResult<T> | undefined;
    return { rows: last?.rows ?? [], rowCount: last?.rowCount ?? 0 };
  } catch (err) {
    throw toDatabaseError(err, where, sql);
  }
}

/** Runs one statement on the connection a transaction holds. */
export type StatementRunner = <T extends QueryResultRow = QueryResultRow>(
  sql: string,
  params?: readonly unknown[],
) => Promise<DbResult<T>>;

/**
 * A transaction on one connection (a pooled client, or PGlite's only one): its statements go
 * through `run`; a nested transaction() is a savepoint. Unusable once `ended` is set by its owner.
 */
export class ConnectionTransaction implements Queryable {
  private savepoints = 0;
  ended = false;

  constructor(private readonly run: StatementRunner) {}

  query<T extends QueryResultRow = QueryResultRow>(
    sql: string,
    params?: readonly unknown[],
  ): Promise<DbResult<T>> {
    if (this.ended) {
      return Promise.reject(
        new AppError('INTERNAL', 'A query ran on a transaction that already ended; use the database instead'),
      );
    }
    return this.run<T>(sql, params);
  }

  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    const name = `hako_sp_${++this.savepoints}`;
    await this.query(`SAVEPOINT ${name}`);
    try {
      const out = await fn(this);
      await this.query(`RELEASE SAVEPOINT ${name}`);
      return out;
    } catch (err) {
      try {
        await this.query(`ROLLBACK TO SAVEPOINT ${name}`);
      } catch {
        // The connection or the transaction failed too; the outer transaction rolls back, and
        // `err` says why.
      }
      throw err;
    }
  }
}

class PgDatabase implements Database {
  private readonly pool: pg.Pool;
  private readonly where: string;
  private closed = false;

  constructor(private readonly options: DatabaseOptions) {
    this.where = describeUrl(options.url);
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: options.max ?? 10,
      connectionTimeoutMillis: options.connectionTimeoutMs ?? 10_000,
      idleTimeoutMillis: options.idleTimeoutMs ?? 30_000,
      application_name: options.applicationName ?? 'hako-api',
    });
    // An idle connection that dies (server restart) emits here; without a listener it would crash
    // the process. The pool drops it and opens a new one when needed.
    this.pool.on('error', (err) => {
      options.logger.warn({ err: err.message, database: this.where }, 'idle PostgreSQL connection failed');
    });
  }

  private checkOpen(): void {
    if (this.closed) throw new AppError('DATABASE_FAILED', `The database pool for ${this.where} is closed`);
  }

  async query<T extends QueryResultRow = QueryResultRow>(
    sql: string,
    params?: readonly unknown[],
  ): Promise<DbResult<T>> {
    this.checkOpen();
    return runQuery<T>(this.pool, this.where, sql, params);
  }

  async transaction<T>(
    fn: (tx: Queryable) => Promise<T>,
    options: { isolation?: IsolationLevel } = {},
  ): Promise<T> {
    this.checkOpen();
    try {
      return await this.attempt(fn, options.isolation);
    } catch (err) {
      const code = pgErrorCode(err);
      if (code !== PG_ERROR.SERIALIZATION_FAILURE && code !== PG_ERROR.DEADLOCK_DETECTED) throw err;
      this.options.logger.debug({ sqlState: code }, 'transaction conflicted; retrying once');
      return await this.attempt(fn, options.isolation);
    }
  }

  private async attempt<T>(
    fn: (tx: Queryable) => Promise<T>,
    isolation: IsolationLevel | undefined,
  ): Promise<T> {
    let client: PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw toDatabaseError(err, this.where);
    }
    const tx = new ConnectionTransaction((sql, params) => runQuery(client, this.where, sql, params));
    let broken: Error | undefined;
    try {
      try {
        await tx.query(isolation ? `BEGIN ISOLATION LEVEL ${isolation.toUpperCase()}` : 'BEGIN');
      } catch (err) {
        broken = err instanceof Error ? err : new Error(String(err));
        throw err;
      }
      let out: T;
      try {
        out = await fn(tx);
      } catch (err) {
        try {
          await tx.query('ROLLBACK');
        } catch (rollbackErr) {
          // The connection is unusable (server gone); it must not go back to the pool.
          broken = rollbackErr instanceof Error ? rollbackErr : new Error(String(rollbackErr));
          this.options.logger.warn({ err: broken.message }, 'ROLLBACK failed; dropping the connection');
        }
        throw err;
      }
      try {
        await tx.query('COMMIT');
      } catch (err) {
        broken = err instanceof Error ? err : new Error(String(err));
        throw err;
      }
      return out;
    } finally {
      tx.ended = true;
      client.release(broken);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}

/** Opens a pool for `url`. No connection is made until the first query. */
export function createDatabase(options: DatabaseOptions): Database {
  return new PgDatabase(options);
}
