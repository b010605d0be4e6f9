// The embedded PostgreSQL: PGlite (PostgreSQL compiled to WASM, running inside this process) behind
// the same Database interface as pool.ts, so every repository and migrate() run on it unchanged.
// Used when DATABASE_URL is unset (`hako up` on one machine).
//
// PGlite is one connection in one process, which shapes everything here:
// - a lock file (`hako.lock` in the data directory, holding the owner's pid) refuses a second
//   process; a lock whose process is gone (crash, kill -9) is taken over;
// - a FIFO queue hands the connection out: a transaction holds it from BEGIN to COMMIT/ROLLBACK,
//   so queries of other requests wait instead of landing inside someone else's transaction;
// - values come back as pg answers them (int8 as text, timestamptz as Date, jsonb parsed) and
//   errors carry the SQLSTATE, so pool.ts's pgErrorCode/isUniqueViolation work on them.
import { AsyncLocalStorage } from 'node:async_hooks';
import { chmod, link, mkdir, readFile, rmdir, stat, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { PGlite, types } from '@electric-sql/pglite';
import type { Results } from '@electric-sql/pglite';
import type { QueryResultRow } from 'pg';
import { AppError, isAppError } from '@hako/core';
import type { Logger } from '@hako/core';
import type { Database, DbResult, IsolationLevel, Queryable } from './pool.js';
import { ConnectionTransaction } from './pool.js';

/** The lock file's name inside the data directory. */
export const PGLITE_LOCK_FILE = 'hako.lock';

/** How long a query waits for the connection while a transaction holds it (default of waitTimeoutMs). */
export const DEFAULT_PGLITE_WAIT_TIMEOUT_MS = 30_000;

export interface PgliteDatabaseOptions {
  /**
   * The database directory (PostgreSQL's data directory). Created with mode 0700 (and its missing
   * parents) when absent; an existing one open to group or others is made 0700. A new directory
   * is initialized on first open (initdb, several seconds); later opens resume it.
   */
  dataDir: string;
  logger: Logger;
  /**
   * How long a query or transaction waits for the single connection while other transactions
   * hold it before failing with DATABASE_FAILED (default 30 s; 0 waits forever).
   */
  waitTimeoutMs?: number;
}

/** What the lock file records about the process holding the directory. */
export interface PgliteLockOwner {
  pid: number;
  host: string;
  /** Start time of the process (field 22 of /proc/<pid>/stat), so a reused pid is told apart. */
  startTime?: string;
  /** When it opened the directory (ISO-8601). */
  openedAt: string;
}

// ---------------------------------------------------------------------------------------------
// The lock file

/** Start time of `pid` in clock ticks since boot (Linux /proc), or undefined where unavailable. */
async function procStartTime(pid: number): Promise<string | undefined> {
  try {
    const text = await readFile(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid ..." where comm may hold spaces and parentheses: count after the last ')'.
    return text.slice(text.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

function parseOwner(raw: string): PgliteLockOwner | undefined {
  try {
    const v = JSON.parse(raw) as Partial<PgliteLockOwner>;
    if (typeof v.pid !== 'number' || !Number.isSafeInteger(v.pid) || v.pid <= 0) return undefined;
    if (typeof v.host !== 'string' || typeof v.openedAt !== 'string') return undefined;
    return {
      pid: v.pid,
      host: v.host,
      openedAt: v.openedAt,
      ...(typeof v.startTime === 'string' ? { startTime: v.startTime } : {}),
    };
  } catch {
    return undefined;
  }
}

/** Whether the lock's owner still runs. Another host's lock cannot be checked and counts as live. */
async function ownerAlive(owner: PgliteLockOwner): Promise<boolean> {
  if (owner.host !== hostname()) return true;
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (owner.startTime !== undefined) {
    const now = await procStartTime(owner.pid);
    if (now !== undefined && now !== owner.startTime) return false; // the pid was reused
  }
  return true;
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function inUse(dataDir: string, file: string, owner: PgliteLockOwner): AppError {
  const who =
    owner.pid === process.pid && owner.host === hostname()
      ? `this process (pid ${owner.pid}) already has it open`
      : `it is in use by process ${owner.pid}${owner.host === hostname() ? '' : ` on host ${owner.host}`} ` +
        `(opened ${owner.openedAt})`;
  return new AppError(
    'CONFIG_INVALID',
    `The embedded database in ${dataDir} cannot be opened: ${who}. The embedded PostgreSQL (PGlite) serves ` +
      'one process; stop the other one (e.g. the other `hako up`), give this one another HAKO_HOME, or set ' +
      `DATABASE_URL to a PostgreSQL server. If that process no longer exists, remove ${file}.`,
    { details: { dataDir, pid: owner.pid, host: owner.host } },
  );
}

/**
 * Removes the stale lock `file` if it still holds `staleText`. Only one process at a time may do
 * this (the `.takeover` directory is the guard), so two processes that both found the same stale
 * lock cannot remove each other's new one.
 */
async function removeStaleLock(file: string, staleText: string): Promise<void> {
  const guard = `${file}.takeover`;
  try {
    await mkdir(guard, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    // Another process is taking over; a guard older than 10 s was left by one that crashed.
    const st = await stat(guard).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > 10_000) await rmdir(guard).catch(() => undefined);
    await sleep(20);
    return;
  }
  try {
    if ((await readText(file)) === staleText) await unlink(file);
  } finally {
    await rmdir(guard).catch(() => undefined);
  }
}

interface HeldLock {
  readonly file: string;
  release(): Promise<void>;
}

/**
 * Takes the data directory's lock: created atomically (written to a temporary file, then
 * hard-linked into place, so nobody ever reads it half-written). CONFIG_INVALID when a live
 * process holds it; a lock of a dead process is taken over (and logged).
 */
async function acquireLock(dataDir: string, logger: Logger): Promise<HeldLock> {
  const file = path.join(dataDir, PGLITE_LOCK_FILE);
  const startTime = await procStartTime(process.pid);
  const owner: PgliteLockOwner = {
    pid: process.pid,
    host: hostname(),
    ...(startTime === undefined ? {} : { startTime }),
    openedAt: new Date().toISOString(),
  };
  const text = `${JSON.stringify(owner)}\n`;
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2, 10)}`;
  const failed = (err: unknown): AppError =>
    new AppError(
      'DATABASE_FAILED',
      `Cannot take the lock file ${file} of the embedded database: ${(err as Error).message}; check that the directory is writable`,
      { cause: err },
    );
  try {
    await writeFile(tmp, text, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    throw failed(err);
  }
  try {
    for (let attempt = 0; attempt < 50; attempt++) {
      try {
        await link(tmp, file);
        return {
          file,
          release: async () => {
            // Only our own lock: never a lock someone else took over (after a wrongly stale guess).
            if ((await readText(file)) === text) await unlink(file);
            else logger.warn({ file }, 'the embedded database lock file was replaced; left as it is');
          },
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw failed(err);
      }
      const current = await readText(file);
      if (current === undefined) continue; // removed meanwhile: try again
      const holder = parseOwner(current);
      if (holder && (await ownerAlive(holder))) throw inUse(dataDir, file, holder);
      logger.warn(
        { file, holder: holder ?? current.slice(0, 200) },
        'taking over the lock of the embedded database from a process that no longer runs',
      );
      await removeStaleLock(file, current);
    }
    throw failed(new Error('other processes kept taking it over'));
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/** Creates `dataDir` (0700) or checks that it is a directory, and makes it private. */
async function prepareDataDir(dataDir: string, logger: Logger): Promise<boolean> {
  try {
    const existing = await stat(dataDir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (existing && !existing.isDirectory()) throw new Error('it exists and is not a directory');
    if (!existing) await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const st = await stat(dataDir);
    if ((st.mode & 0o077) !== 0) {
      await chmod(dataDir, 0o700);
      logger.warn(
        { dataDir, mode: (st.mode & 0o777).toString(8) },
        'the embedded database directory was open to other users; made it 0700',
      );
    }
    return (await readText(path.join(dataDir, 'PG_VERSION'))) === undefined;
  } catch (err) {
    throw new AppError(
      'CONFIG_INVALID',
      `Cannot use ${dataDir} as the embedded database directory: ${(err as Error).message}; ` +
        'set HAKO_HOME to a directory this user can write, or set DATABASE_URL',
      { cause: err },
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Queries

function firstLine(sql: string): string {
  const line = sql.trim().split('\n', 1)[0] ?? '';
  return line.length > 80 ? `${line.slice(0, 77)}...` : line;
}

/** Whether `err` is a server error (PGlite's DatabaseError: a SQLSTATE and a severity). */
function isServerError(err: unknown): err is Error & { code: string; severity: string } {
  if (!(err instanceof Error)) return false;
  const { code, severity } = err as Error & { code?: unknown; severity?: unknown };
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && typeof severity === 'string';
}

function toDatabaseError(err: unknown, where: string, sql?: string): AppError {
  if (isAppError(err)) return err;
  const stmt = sql === undefined ? '' : ` (${firstLine(sql)})`;
  if (isServerError(err)) {
    // PGlite attaches the statement's parameters; they may hold user data, and causes get logged.
    const e = err as Error & { params?: unknown; queryOptions?: unknown };
    delete e.params;
    delete e.queryOptions;
    return new AppError(
      'DATABASE_FAILED',
      `The embedded PostgreSQL in ${where} refused a statement${stmt}: [${err.code}] ${err.message}`,
      { cause: err },
    );
  }
  const msg = err instanceof Error ? err.message : String(err);
  return new AppError('DATABASE_FAILED', `The embedded PostgreSQL in ${where} failed${stmt}: ${msg}`, {
    cause: err,
  });
}

/** A parameter as pg would send it: undefined is NULL, a plain object is its JSON. */
function toParam(value: unknown): unknown {
  if (value === undefined) return null;
  if (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    !(value instanceof Date) &&
    !ArrayBuffer.isView(value) &&
    !(value instanceof ArrayBuffer)
  ) {
    return JSON.stringify(value);
  }
  return value;
}

function rowCount(res: Results | undefined): number {
  if (!res) return 0;
  return typeof res.rowCount === 'number' ? res.rowCount : res.rows.length;
}

/**
 * One statement with parameters (extended protocol), or, without parameters, a text of any
 * number of statements (simple protocol, like pg) answering the last one's result.
 */
async function runOn<T extends QueryResultRow>(
  pg: PGlite,
  where: string,
  sql: string,
  params: readonly unknown[] | undefined,
): Promise<DbResult<T>> {
  try {
    if (params === undefined) {
      const last = (await pg.exec(sql)).at(-1);
      return { rows: (last?.rows ?? []) as T[], rowCount: rowCount(last) };
    }
    const res = await pg.query<T>(sql, params.map(toParam));
    return { rows: res.rows, rowCount: rowCount(res) };
  } catch (err) {
    throw toDatabaseError(err, where, sql);
  }
}

/** A FIFO of holders of the one connection; a waiter gives up after its timeout. */
class ConnectionQueue {
  private tail: Promise<void> = Promise.resolve();

  run<T>(fn: () => Promise<T>, waitMs: number, timedOut: () => Error): Promise<T> {
    const previous = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((resolve) => {
      release = resolve;
    });
    return new Promise<T>((resolve, reject) => {
      let gaveUp = false;
      const timer =
        waitMs > 0
          ? setTimeout(() => {
              gaveUp = true;
              reject(timedOut());
            }, waitMs)
          : undefined;
      void previous.then(async () => {
        clearTimeout(timer);
        if (gaveUp) {
          release();
          return;
        }
        try {
          resolve(await fn());
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        } finally {
          release();
        }
      });
    });
  }
}

class PgliteDatabase implements Database {
  private readonly queue = new ConnectionQueue();
  /** The transaction whose callback is running, for code reached from it. */
  private readonly current = new AsyncLocalStorage<ConnectionTransaction>();
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly pg: PGlite,
    private readonly where: string,
    private readonly lock: HeldLock,
    private readonly logger: Logger,
    private readonly waitTimeoutMs: number,
  ) {}

  private checkUsable(): void {
    if (this.closed)
      throw new AppError('DATABASE_FAILED', `The embedded database in ${this.where} is closed`);
    const tx = this.current.getStore();
    if (tx !== undefined && !tx.ended) {
      // With one connection this would wait for the transaction, which waits for this: forever.
      throw new AppError(
        'INTERNAL',
        'A query on the database ran inside one of its own transactions; the embedded PostgreSQL has one ' +
          'connection, so it would wait for that transaction forever. Use the transaction (tx) instead.',
      );
    }
  }

  private hold<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(fn, this.waitTimeoutMs, () => {
      this.logger.warn({ dataDir: this.where, waitMs: this.waitTimeoutMs }, 'embedded database busy');
      return new AppError(
        'DATABASE_FAILED',
        `Waited ${this.waitTimeoutMs} ms for the embedded database in ${this.where}: its single connection ` +
          'was held by transactions all that time; retry, or use PostgreSQL (DATABASE_URL) for this load',
      );
    });
  }

  async query<T extends QueryResultRow = QueryResultRow>(
    sql: string,
    params?: readonly unknown[],
  ): Promise<DbResult<T>> {
    this.checkUsable();
    return this.hold(() => runOn<T>(this.pg, this.where, sql, params));
  }

  /**
   * Holds the connection from BEGIN to COMMIT/ROLLBACK: other queries and transactions wait.
   * No retry on serialization failures: with one connection no transaction can conflict.
   * A transaction that caught an error of its own statement and still returned is rolled back by
   * PostgreSQL at COMMIT; that is reported as DATABASE_FAILED rather than as success.
   */
  async transaction<T>(
    fn: (tx: Queryable) => Promise<T>,
    options: { isolation?: IsolationLevel } = {},
  ): Promise<T> {
    this.checkUsable();
    return this.hold(async () => {
      const tx = new ConnectionTransaction((sql, params) => runOn(this.pg, this.where, sql, params));
      try {
        return await this.current.run(tx, async () => {
          const isolation = options.isolation;
          await tx.query(isolation ? `BEGIN ISOLATION LEVEL ${isolation.toUpperCase()}` : 'BEGIN');
          let out: T;
          try {
            out = await fn(tx);
          } catch (err) {
            await tx.query('ROLLBACK').catch((rollbackErr: unknown) => {
              this.logger.warn({ err: (rollbackErr as Error).message }, 'ROLLBACK failed');
            });
            throw err;
          }
          let commit: Results;
          try {
            commit = await this.pg.query('COMMIT');
          } catch (err) {
            throw toDatabaseError(err, this.where, 'COMMIT');
          }
          if (commit.command === 'ROLLBACK') {
            throw new AppError(
              'DATABASE_FAILED',
              `The embedded PostgreSQL in ${this.where} rolled the transaction back at COMMIT: a statement in ` +
                'it had failed (and the error was caught inside it); nothing of it was stored',
            );
          }
          return out;
        });
      } finally {
        tx.ended = true;
        // Never hand the connection on inside a transaction (a failed ROLLBACK, a stray BEGIN).
        if (!this.pg.closed && this.pg.isInTransaction()) {
          await this.pg.query('ROLLBACK').catch((err: unknown) => {
            this.logger.warn({ err: (err as Error).message }, 'ROLLBACK of a leftover transaction failed');
          });
        }
      }
    });
  }

  /** Waits for the queries and transactions already started or queued, then closes and unlocks. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true;
      await this.queue.run(
        () => Promise.resolve(),
        0,
        () => new Error('unreachable'),
      );
      try {
        await this.pg.close();
      } catch (err) {
        throw toDatabaseError(err, this.where);
      } finally {
        await this.lock.release().catch((err: unknown) => {
          this.logger.warn(
            { err: (err as Error).message, file: this.lock.file },
            'could not remove the lock file',
          );
        });
      }
      this.logger.debug({ dataDir: this.where }, 'embedded PostgreSQL closed');
    })();
    return this.closing;
  }
}

/**
 * Opens the embedded PostgreSQL in `dataDir` (see PgliteDatabaseOptions), initializing it when
 * new. The answer is a Database like createDatabase()'s: run migrate() on it before use.
 * CONFIG_INVALID when the directory cannot be used or another live process has it open;
 * DATABASE_FAILED when PGlite fails to start (the lock is released again).
 */
export async function createPgliteDatabase(options: PgliteDatabaseOptions): Promise<Database> {
  const dataDir = path.resolve(options.dataDir);
  const { logger } = options;
  const fresh = await prepareDataDir(dataDir, logger);
  const lock = await acquireLock(dataDir, logger);
  const started = Date.now();
  let pg: PGlite | undefined;
  try {
    // int8 as text, as pg answers it (repositories convert with num()); the rest of PGlite's
    // defaults already match pg: timestamptz as Date, numeric as text, json/jsonb parsed.
    pg = new PGlite(dataDir, { parsers: { [types.INT8]: (x: string) => x } });
    await pg.waitReady;
  } catch (err) {
    if (pg && !pg.closed) await pg.close().catch(() => undefined);
    await lock.release().catch(() => undefined);
    throw new AppError(
      'DATABASE_FAILED',
      `Starting the embedded PostgreSQL (PGlite) in ${dataDir} failed: ${(err as Error).message}. ` +
        (fresh
          ? 'Check free disk space and that the directory is writable.'
          : 'If the directory was written by another PostgreSQL or PGlite version, or its first start was ' +
            'interrupted, move it away and start again (a new empty database is created).'),
      { cause: err },
    );
  }
  logger.info(
    { dataDir, ms: Date.now() - started, created: fresh },
    fresh ? 'embedded PostgreSQL (PGlite) initialized' : 'embedded PostgreSQL (PGlite) opened',
  );
  return new PgliteDatabase(
    pg,
    dataDir,
    lock,
    logger,
    options.waitTimeoutMs ?? DEFAULT_PGLITE_WAIT_TIMEOUT_MS,
  );
}
