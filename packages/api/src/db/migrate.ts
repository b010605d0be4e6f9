// Versioned schema migrations: packages/api/migrations/NNNN_name.sql, applied in version order,
// each in its own transaction, recorded in schema_migrations with the file's sha256. Concurrent
// migrators (several API processes starting at once) are serialized by a transaction-scoped
// advisory lock, so exactly one applies each file and the others see it applied.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import type { Queryable } from './pool.js';

export interface Migration {
  version: number;
  name: string;
  /** The file's text, run as one multi-statement query (no BEGIN/COMMIT of its own, no CONCURRENTLY). */
  sql: string;
  /** sha256 of the file's bytes, lowercase hex. */
  checksum: string;
}

export interface MigrateResult {
  /** The migrations this call applied, in order (empty when the schema was current). */
  applied: Migration[];
  /** The highest applied version afterwards (0 when there are no migrations). */
  version: number;
}

/** Two int4 keys of pg_advisory_xact_lock: 'hako' and "migrations". Other locks use other pairs. */
const LOCK_KEYS = [0x68616b6f, 1] as const;
const FILE_RE = /^(\d{4})_([a-z0-9_]+)\.sql$/;

/**
 * packages/api/migrations, found from this module's own location: src/db/ under tsx and dist/db/
 * after a build are both two levels below the package.
 */
export function defaultMigrationsDir(): string {
  return fileURLToPath(new URL('../../migrations/', import.meta.url));
}

/**
 * Reads every NNNN_name.sql of `dir` in version order. CONFIG_INVALID for a .sql file whose name
 * does not fit, for two files with one version, or for an unreadable directory.
 */
export async function loadMigrations(dir: string = defaultMigrationsDir()): Promise<Migration[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    throw new AppError(
      'CONFIG_INVALID',
      `Cannot read the migrations directory ${dir}: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  const out: Migration[] = [];
  for (const file of names.filter((n) => n.endsWith('.sql')).sort()) {
    const m = FILE_RE.exec(file);
    if (!m) {
      throw new AppError(
        'CONFIG_INVALID',
        `Migration file ${path.join(dir, file)} is not named NNNN_lowercase_name.sql; rename it`,
      );
    }
    const version = Number(m[1]);
    if (version === 0) throw new AppError('CONFIG_INVALID', `Migration ${file}: versions start at 0001`);
    if (out.some((x) => x.version === version)) {
      throw new AppError(
        'CONFIG_INVALID',
        `Two migration files have version ${m[1]} in ${dir}; renumber one`,
      );
    }
    const bytes = await readFile(path.join(dir, file));
    out.push({
      version,
      name: m[2] ?? '',
      sql: bytes.toString('utf8'),
      checksum: createHash('sha256').update(bytes).digest('hex'),
    });
  }
  return out;
}

interface AppliedRow {
  version: number;
  name: string;
  checksum: string;
}

/**
 * Checks the applied migrations against the files: MIGRATION_CHECKSUM_MISMATCH when an applied
 * file changed, CONFIG_INVALID when a file older than the newest applied one was never applied.
 * Answers the migrations still to apply.
 */
function pending(files: readonly Migration[], applied: readonly AppliedRow[], logger: Logger): Migration[] {
  const byVersion = new Map(applied.map((r) => [r.version, r]));
  const newest = applied.reduce((max, r) => Math.max(max, r.version), 0);
  const todo: Migration[] = [];
  for (const f of files) {
    const row = byVersion.get(f.version);
    if (row) {
      if (row.checksum !== f.checksum) {
        throw new AppError(
          'MIGRATION_CHECKSUM_MISMATCH',
          `Migration ${String(f.version).padStart(4, '0')}_${f.name}.sql was changed after it was applied ` +
            `(sha256 ${f.checksum}, applied ${row.checksum}); restore the file and put the change in a new migration`,
          { details: { version: f.version, name: f.name } },
        );
      }
      continue;
    }
    if (f.version < newest) {
      throw new AppError(
        'CONFIG_INVALID',
        `Migration ${String(f.version).padStart(4, '0')}_${f.name}.sql is not applied but version ${newest} is; ` +
          'new migrations must have a higher version than every applied one',
      );
    }
    todo.push(f);
  }
  const known = new Set(files.map((f) => f.version));
  const unknown = applied.filter((r) => !known.has(r.version));
  if (unknown.length > 0) {
    // A newer release applied these; this (older) code can still run on the schema it knows.
    logger.warn(
      { versions: unknown.map((r) => r.version) },
      'database has migrations this build does not know',
    );
  }
  return todo;
}

async function lockAndRead(tx: Queryable): Promise<AppliedRow[]> {
  await tx.query('SELECT pg_advisory_xact_lock($1, $2)', LOCK_KEYS);
  await tx.query(
    `CREATE TABLE IF NOT EXISTS schema_migrations (
       version integer PRIMARY KEY,
       name text NOT NULL,
       checksum text NOT NULL,
       applied_at timestamptz NOT NULL DEFAULT now()
     )`,
  );
  const res = await tx.query<AppliedRow>(
    'SELECT version, name, checksum FROM schema_migrations ORDER BY version',
  );
  return res.rows.map((r) => ({ version: Number(r.version), name: r.name, checksum: r.checksum }));
}

/**
 * Brings the schema of `db` up to date with the files of `dir` (default: the package's
 * migrations). Each pending file runs in its own transaction that first takes the migration
 * advisory lock and re-reads schema_migrations, so a concurrent migrator waits and then skips
 * what the other applied. Safe to call on every start; a no-op when current.
 */
export async function migrate(
  db: Queryable,
  options: { logger: Logger; dir?: string; migrations?: readonly Migration[] },
): Promise<MigrateResult> {
  const files = options.migrations ?? (await loadMigrations(options.dir));
  const applied: Migration[] = [];
  for (;;) {
    const step = await db.transaction(async (tx) => {
      const rows = await lockAndRead(tx);
      const todo = pending(files, rows, options.logger);
      const next = todo[0];
      const version = rows.reduce((max, r) => Math.max(max, r.version), 0);
      if (!next) return { done: true as const, version };
      const started = Date.now();
      try {
        await tx.query(next.sql);
      } catch (err) {
        const file = `${String(next.version).padStart(4, '0')}_${next.name}.sql`;
        throw new AppError(
          'DATABASE_FAILED',
          `Migration ${file} failed and was rolled back: ${(err as Error).message}`,
          {
            cause: err instanceof AppError ? err.cause : err,
          },
        );
      }
      await tx.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [
        next.version,
        next.name,
        next.checksum,
      ]);
      options.logger.info(
        { version: next.version, name: next.name, ms: Date.now() - started },
        'applied database migration',
      );
      return { done: false as const, migration: next };
    });
    if (step.done) return { applied, version: step.version };
    applied.push(step.migration);
  }
}
