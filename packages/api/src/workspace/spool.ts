/**
 * The local spool of workspace changes on their way to the object store. One directory per run:
 *
 *   {spoolDir}/{conversationId}/{runId}/
 *     lock            {"pid","host","since"}: the process working on it (O_EXCL; stale when that
 *                     process is gone from this host)
 *     objects/{sha256} the content of every created or modified file, fsynced
 *     pending.json    what is left to do (uploads, deletes), written last and atomically
 *
 * A directory without pending.json is a scan in progress (or one a crash cut short: removed once
 * its lock is stale, the sandbox still has the files). A directory with pending.json is applied
 * by applyPending(): every upload and delete, retried with backoff; the directory is removed only
 * after all of them succeeded, so no file is lost while the store is down. Runs of one
 * conversation are applied in the order they were scanned, since each one's diff assumes the
 * previous ones reached the store.
 */
import { createHash, randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { mkdir, open, readdir, readFile, rename, rm, rmdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { AppError, processAlive } from '@hako/core';
import type { Logger } from '@hako/core';
import type { ObjectStore } from '../types.js';
import type { FileChange, ManifestEntry } from './diff.js';
import { isSafeId } from './paths.js';
import { withRetry } from './retry.js';
import type { RetryPolicy } from './retry.js';

export const PENDING_FILE = 'pending.json';
export const LOCK_FILE = 'lock';
export const OBJECTS_DIR = 'objects';
const PENDING_VERSION = 1;
/** A hidden in-progress directory without a lock this old is abandoned. */
const ABANDONED_AFTER_MS = 10 * 60_000;

/** What a spool directory still has to do, as written in pending.json. */
export interface PendingSync {
  readonly version: 1;
  readonly tenantId: string;
  readonly conversationId: string;
  readonly runId: string;
  /** The object key prefix, `workspaces/{tenant}/{conversation}/`. */
  readonly prefix: string;
  /** When the workspace was scanned (ISO 8601); orders one conversation's runs. */
  readonly createdAt: string;
  readonly uploads: readonly (ManifestEntry & { readonly path: string })[];
  readonly deletes: readonly string[];
  /** The changes the sync answered, for whoever finishes it. */
  readonly changes: readonly FileChange[];
  /** Failed application rounds so far. */
  readonly attempts: number;
  readonly lastError?: string | undefined;
}

export interface LockInfo {
  readonly pid: number;
  readonly host: string;
  readonly since: string;
}

function errnoOf(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** `{spoolDir}/{conversationId}/{runId}`; INVALID_ARGUMENT for ids that are not one safe name. */
export function runSpoolDir(spoolDir: string, conversationId: string, runId: string): string {
  if (!isSafeId(conversationId) || !isSafeId(runId)) {
    throw new AppError(
      'INVALID_ARGUMENT',
      `conversation id and run id must be 1..128 of [A-Za-z0-9._-] to name a spool directory (got ${JSON.stringify(conversationId.slice(0, 80))}, ${JSON.stringify(runId.slice(0, 80))})`,
    );
  }
  return join(spoolDir, conversationId, runId);
}

/** Writes `data` to `path` atomically (temporary file, fsync, rename, fsync of the directory). */
export async function writeFileDurable(dir: string, name: string, data: string | Buffer): Promise<void> {
  const tmp = join(dir, `.${name}.${randomBytes(4).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, join(dir, name));
  await syncDir(dir);
}

/** fsyncs a directory so the names just created in it survive a crash. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Whether the lock's holder is gone: a process of this host that no longer exists. */
export function isStaleLock(info: LockInfo | undefined): boolean {
  if (info === undefined) return true; // unreadable or half-written: its writer died mid-write
  return info.host === hostname() && !processAlive(info.pid);
}

async function readLock(dir: string): Promise<LockInfo | undefined> {
  try {
    const v = JSON.parse(await readFile(join(dir, LOCK_FILE), 'utf8')) as Partial<LockInfo>;
    if (typeof v.pid !== 'number' || typeof v.host !== 'string') return undefined;
    return { pid: v.pid, host: v.host, since: String(v.since ?? '') };
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') throw err;
    return undefined;
  }
}

function lockContent(): string {
  const info: LockInfo = { pid: process.pid, host: hostname(), since: new Date().toISOString() };
  return JSON.stringify(info);
}

/**
 * Takes the spool directory's lock: true when taken, false when a live process holds it. A stale
 * lock (its process is gone) is moved aside and taken over; if two processes take over the same
 * stale lock at the same instant both may proceed, which only repeats idempotent uploads.
 */
export async function tryLock(dir: string): Promise<boolean> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(join(dir, LOCK_FILE), 'wx', 0o600);
      try {
        await fh.writeFile(lockContent());
      } finally {
        await fh.close();
      }
      return true;
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST') throw err;
    }
    let info: LockInfo | undefined;
    try {
      info = await readLock(dir);
    } catch {
      continue; // released meanwhile
    }
    if (!isStaleLock(info)) return false;
    const aside = join(dir, `.${LOCK_FILE}.stale-${randomBytes(4).toString('hex')}`);
    try {
      await rename(join(dir, LOCK_FILE), aside);
      await unlink(aside);
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw err;
    }
  }
  return false;
}

/** Releases the lock this process holds on `dir` (nothing when it is gone). */
export async function unlock(dir: string): Promise<void> {
  await unlink(join(dir, LOCK_FILE)).catch((err: unknown) => {
    if (errnoOf(err) !== 'ENOENT') throw err;
  });
}

/**
 * Creates `{spoolDir}/{conversationId}/{runId}` with `objects/` and this process's lock in it,
 * atomically (built under a hidden name, then renamed), so a scan of the spool never sees it
 * unlocked. INVALID_ARGUMENT when that run already has a spool directory.
 */
export async function createRunDir(spoolDir: string, conversationId: string, runId: string): Promise<string> {
  const dir = runSpoolDir(spoolDir, conversationId, runId);
  const convDir = join(spoolDir, conversationId);
  const building = join(convDir, `.${runId}.new-${randomBytes(4).toString('hex')}`);
  for (let attempt = 0; ; attempt++) {
    await mkdir(convDir, { recursive: true, mode: 0o700 });
    try {
      await mkdir(building, { mode: 0o700 });
      break;
    } catch (err) {
      // another process removed the (empty) conversation directory in between: make it again
      if (errnoOf(err) !== 'ENOENT' || attempt >= 2) throw err;
    }
  }
  try {
    await mkdir(join(building, OBJECTS_DIR), { mode: 0o700 });
    await writeFileDurable(building, LOCK_FILE, lockContent());
    await rename(building, dir);
  } catch (err) {
    await rm(building, { recursive: true, force: true });
    if (errnoOf(err) === 'ENOTEMPTY' || errnoOf(err) === 'EEXIST') {
      throw new AppError(
        'INVALID_ARGUMENT',
        `run ${runId} already has a spool directory ${dir}; sync a run once`,
      );
    }
    throw err;
  }
  await syncDir(convDir);
  return dir;
}

/** Removes a finished run's directory, and its conversation's directory when that is empty. */
export async function removeRunDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await rmdir(join(dir, '..')).catch(() => undefined); // ENOTEMPTY: other runs wait there
}

export async function readPending(dir: string): Promise<PendingSync | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, PENDING_FILE), 'utf8');
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return undefined;
    throw err;
  }
  const v = JSON.parse(text) as PendingSync;
  if (v.version !== PENDING_VERSION || !Array.isArray(v.uploads) || !Array.isArray(v.deletes)) {
    throw new AppError(
      'INTERNAL',
      `${join(dir, PENDING_FILE)} is not a version ${PENDING_VERSION} pending sync; it was left in place for an operator`,
    );
  }
  return v;
}

export async function writePending(dir: string, pending: PendingSync): Promise<void> {
  await writeFileDurable(dir, PENDING_FILE, `${JSON.stringify(pending)}\n`);
}

/** A store that can delete many keys in one request (S3ObjectStore.deleteBatch). */
interface BatchDeleter {
  deleteBatch(keys: readonly string[]): Promise<void>;
}

function canDeleteBatch(store: ObjectStore): store is ObjectStore & BatchDeleter {
  return typeof (store as Partial<BatchDeleter>).deleteBatch === 'function';
}

export interface ApplyOptions {
  readonly store: ObjectStore;
  readonly retry: RetryPolicy;
  readonly logger: Logger;
  /** Uploads at once. */
  readonly concurrency: number;
  /** Bytes of uploads held in memory at once (one larger file still goes alone). */
  readonly maxInflightBytes: number;
}

/** Runs `fn` over `items` with at most `limit` at once and `budget` weight in flight; first error wins. */
async function forEachLimited<T>(
  items: readonly T[],
  limit: number,
  budget: number,
  weight: (item: T) => number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let inflight = 0;
  let used = 0;
  let failed: { err: unknown } | undefined;
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      while (failed === undefined && next < items.length && inflight < limit) {
        const item = items[next] as T;
        const w = weight(item);
        if (inflight > 0 && used + w > budget) break;
        next++;
        inflight++;
        used += w;
        fn(item).then(
          () => {
            inflight--;
            used -= w;
            pump();
          },
          (err: unknown) => {
            inflight--;
            used -= w;
            failed ??= { err };
            pump();
          },
        );
      }
      if (inflight === 0 && (failed !== undefined || next >= items.length)) resolve();
    };
    pump();
  });
  if (failed !== undefined) throw failed.err;
}

/**
 * Applies a pending sync to the store: every upload (content read from objects/ and checked
 * against its hash) and every delete, each retried per `retry`. Resolves when all succeeded;
 * rejects with the first error that retries did not fix. Touches nothing on disk.
 */
export async function applyPending(dir: string, pending: PendingSync, opts: ApplyOptions): Promise<void> {
  const { store, logger } = opts;
  const onRetry = (err: unknown, attempt: number, delayMs: number): void =>
    logger.warn(
      { err: messageOf(err), attempt, delayMs, conversationId: pending.conversationId, runId: pending.runId },
      'object store call failed; retrying',
    );
  await forEachLimited(
    pending.uploads,
    Math.max(1, opts.concurrency),
    opts.maxInflightBytes,
    (u) => u.size,
    async (u) => {
      const body = await readFile(join(dir, OBJECTS_DIR, u.sha256));
      const sha = createHash('sha256').update(body).digest('hex');
      if (sha !== u.sha256 || body.length !== u.size) {
        throw new AppError(
          'INTERNAL',
          `spooled content of "${u.path}" in ${dir} does not match its hash (disk damage?); the spool was kept for an operator`,
        );
      }
      await withRetry(() => store.put(`${pending.prefix}${u.path}`, body, { sha256: u.sha256 }), {
        policy: opts.retry,
        onRetry,
      });
    },
  );
  const keys = pending.deletes.map((p) => `${pending.prefix}${p}`);
  if (canDeleteBatch(store)) {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      await withRetry(() => store.deleteBatch(batch), { policy: opts.retry, onRetry });
    }
  } else {
    await forEachLimited(
      keys,
      Math.max(1, opts.concurrency),
      Number.POSITIVE_INFINITY,
      () => 0,
      (k) => withRetry(() => store.delete(k), { policy: opts.retry, onRetry }),
    );
  }
}

/** One run directory found in the spool. */
export interface SpoolEntry {
  readonly conversationId: string;
  readonly runId: string;
  readonly dir: string;
}

/** Every `{conversation}/{run}` directory in the spool (hidden in-progress names excluded). */
export async function listSpool(spoolDir: string): Promise<{ runs: SpoolEntry[]; building: string[] }> {
  const runs: SpoolEntry[] = [];
  const building: string[] = [];
  let convs: string[];
  try {
    convs = await readdir(spoolDir);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return { runs, building };
    throw err;
  }
  for (const conversationId of convs) {
    if (!isSafeId(conversationId)) continue;
    let names: string[];
    try {
      names = await readdir(join(spoolDir, conversationId));
    } catch (err) {
      if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') continue;
      throw err;
    }
    for (const runId of names) {
      const dir = join(spoolDir, conversationId, runId);
      if (runId.startsWith('.')) {
        if (runId.includes('.new-')) building.push(dir);
        continue;
      }
      if (isSafeId(runId)) runs.push({ conversationId, runId, dir });
    }
  }
  return { runs, building };
}

/** Removes a hidden in-progress directory whose creator is gone. */
export async function removeIfAbandoned(dir: string): Promise<boolean> {
  let info: LockInfo | undefined;
  try {
    info = await readLock(dir);
  } catch {
    // no lock: its creator died before writing it, or is writing it this instant
    const st = await stat(dir).catch(() => undefined);
    if (st === undefined || Date.now() - st.mtimeMs < ABANDONED_AFTER_MS) return false;
    await rm(dir, { recursive: true, force: true });
    return true;
  }
  if (!isStaleLock(info)) return false;
  await rm(dir, { recursive: true, force: true });
  return true;
}
