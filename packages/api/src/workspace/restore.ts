/**
 * Restore: a conversation's workspace objects (`workspaces/{tenant}/{conversation}/`) into a
 * sandbox's /workspace before a run. Objects are listed, downloaded with bounded concurrency (and
 * a bounded number of bytes ahead), packed in key order into a tar stream and written through
 * hakod's WriteFiles, as few calls as hakod's limits allow (one for any ordinary workspace).
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { AppError, silentLogger } from '@hako/core';
import type { Logger } from '@hako/core';
import { writeFilesTar } from '@hako/agentd';
import type { AgentClient } from '@hako/proto';
import tarStream from 'tar-stream';
import type { Pack } from 'tar-stream';
import type { ObjectStore } from '../types.js';
import type { Manifest } from './diff.js';
import { syncPathProblem, workspacePrefix } from './paths.js';
import { DEFAULT_RETRY_POLICY, withRetry } from './retry.js';
import type { RetryPolicy } from './retry.js';
import { shownPath } from './tar-entries.js';
import type { SkippedEntry } from './tar-entries.js';

export interface RestoreBatchLimits {
  /** Tar bytes per WriteFiles call (hakod refuses more than AGENT_MAX_TRANSFER_BYTES, 256 MiB by default). */
  readonly maxBytes: number;
  /** Files per WriteFiles call (hakod refuses more than 100 000 entries). */
  readonly maxEntries: number;
}

export const DEFAULT_RESTORE_BATCH: RestoreBatchLimits = { maxBytes: 128 * 1024 ** 2, maxEntries: 50_000 };
export const DEFAULT_RESTORE_CONCURRENCY = 32;
/** Objects up to this size are downloaded ahead into memory; larger ones are streamed in turn. */
const PREFETCH_MAX_OBJECT = 8 * 1024 ** 2;
/** Bytes downloaded ahead of the tar writer. */
const PREFETCH_BUDGET = 64 * 1024 ** 2;
/** Tar bytes packed but not yet taken by the WriteFiles call. */
const PACK_AHEAD = 8 * 1024 ** 2;
const FILE_MODE = 0o644;

export interface RestoreRequest {
  readonly store: ObjectStore;
  readonly client: AgentClient;
  /** hakod owner (the tenant id) and the conversation's sandbox. */
  readonly ownerId: string;
  readonly sandboxId: string;
  readonly tenantId: string;
  readonly conversationId: string;
  /**
   * The sync manifest (workspace_objects). Optional: when given, restored content is compared
   * with it and the differences are reported as `drift` (the store is restored as it is).
   */
  readonly manifest?: Manifest | undefined;
  /** Downloads at once; default 32. */
  readonly concurrency?: number | undefined;
  readonly batch?: Partial<RestoreBatchLimits> | undefined;
  readonly retry?: RetryPolicy | undefined;
  /** Milliseconds one WriteFiles call may take; default none. */
  readonly timeoutMs?: number | undefined;
  readonly logger?: Logger | undefined;
}

export interface RestoreDrift {
  /** In the manifest, not in the store. */
  readonly missing: number;
  /** In the store, not in the manifest. */
  readonly extra: number;
  /** In both with a different size or hash. */
  readonly mismatched: number;
  /** Up to 20 of the paths concerned. */
  readonly examples: readonly string[];
}

export interface RestoreResult {
  readonly files: number;
  readonly bytes: number;
  readonly durationMs: number;
  /** WriteFiles calls made. */
  readonly writeCalls: number;
  /** Objects not restored: names that are not valid workspace paths, objects gone meanwhile. */
  readonly skipped: readonly SkippedEntry[];
  /** Only when a manifest was given. */
  readonly drift: RestoreDrift | undefined;
}

interface Item {
  readonly path: string;
  readonly key: string;
  readonly size: number;
}

/** The tar bytes one file takes: header, padded body, and room for a PAX header for a long name. */
export function tarEntryBytes(path: string, size: number): number {
  const longName = Buffer.byteLength(path, 'utf8') > 100 || /[^\x20-\x7e]/.test(path);
  return 512 + Math.ceil(size / 512) * 512 + (longName ? 1536 : 0);
}

/** Splits items (in order) into batches within `limits` (1024 bytes reserved for the tar end). */
export function planBatches<T extends { path: string; size: number }>(
  items: readonly T[],
  limits: RestoreBatchLimits,
): T[][] {
  const batches: T[][] = [];
  let cur: T[] = [];
  let bytes = 1024;
  for (const it of items) {
    const b = tarEntryBytes(it.path, it.size);
    if (cur.length > 0 && (cur.length >= limits.maxEntries || bytes + b > limits.maxBytes)) {
      batches.push(cur);
      cur = [];
      bytes = 1024;
    }
    cur.push(it);
    bytes += b;
  }
  if (cur.length > 0) batches.push(cur);
  return batches;
}

/** Counts tar bytes the WriteFiles call took, so the packer stays at most PACK_AHEAD ahead. */
class PackGate {
  produced = 0;
  consumed = 0;
  failed: unknown;
  private waiter: (() => void) | undefined;
  private rejectFailure: (err: unknown) => void = () => undefined;
  /** Rejects when the WriteFiles call failed: every wait of the packer races it. */
  private readonly failure = new Promise<never>((_, reject) => {
    this.rejectFailure = reject;
  });

  constructor() {
    this.failure.catch(() => undefined);
  }

  fail(err: unknown): void {
    this.failed ??= err;
    this.rejectFailure(err);
    this.wake();
  }

  /** `p`, unless the WriteFiles call fails first. */
  guard<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.failure]);
  }

  wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  async room(): Promise<void> {
    while (this.failed === undefined && this.produced - this.consumed > PACK_AHEAD) {
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
    if (this.failed !== undefined) throw this.failed as Error;
  }
}

function waitDrain(sink: { once(ev: 'drain' | 'close', fn: () => void): unknown }): Promise<void> {
  return new Promise((resolve) => {
    sink.once('drain', resolve);
    sink.once('close', resolve);
  });
}

/** Lists the conversation's objects and answers those to restore (in key order) and the skipped. */
async function listItems(
  store: ObjectStore,
  prefix: string,
): Promise<{ items: Item[]; skipped: SkippedEntry[] }> {
  const items: Item[] = [];
  const skipped: SkippedEntry[] = [];
  const prefixBytes = Buffer.byteLength(prefix, 'utf8');
  for await (const o of store.list(prefix)) {
    const path = o.key.slice(prefix.length);
    if (path === '' || path.endsWith('/')) continue; // a "directory" marker some tools create
    const problem = syncPathProblem(path, prefixBytes);
    if (problem !== undefined) {
      skipped.push({ path: shownPath(path), reason: problem });
      continue;
    }
    items.push({ path, key: o.key, size: o.size });
  }
  return { items, skipped };
}

/**
 * Restores the conversation's workspace into the sandbox's /workspace: every object under
 * `workspaces/{tenantId}/{conversationId}/` becomes a file (mode 0644, owned by the sandbox user;
 * hakod creates the directories). Files already in the sandbox with the same names are replaced;
 * others are left alone. An empty prefix makes no WriteFiles call.
 *
 * Errors: STORAGE_FAILED when the store keeps failing (after `retry`), hakod's own codes from
 * WriteFiles (QUOTA_EXCEEDED when the sandbox's disk is too small, FILE_TOO_LARGE over hakod's
 * per-file limit, SANDBOX_NOT_FOUND). A failed restore may leave part of the files written.
 */
export async function restoreWorkspace(req: RestoreRequest): Promise<RestoreResult> {
  const started = performance.now();
  const logger = req.logger ?? silentLogger();
  const retry = req.retry ?? DEFAULT_RETRY_POLICY;
  const concurrency = Math.max(1, req.concurrency ?? DEFAULT_RESTORE_CONCURRENCY);
  const limits = { ...DEFAULT_RESTORE_BATCH, ...req.batch };
  const prefix = workspacePrefix(req.tenantId, req.conversationId);
  const onRetry = (err: unknown, attempt: number, delayMs: number): void =>
    logger.warn(
      { err: (err as Error).message, attempt, delayMs, prefix },
      'object store call failed; retrying',
    );

  const { items, skipped } = await withRetry(() => listItems(req.store, prefix), { policy: retry, onRetry });
  const restoredHash = new Map<string, { sha256: string; size: number }>();
  let files = 0;
  let bytes = 0;
  let writeCalls = 0;

  // Prefetch window over `items`: [consumer index, next) are being downloaded.
  const downloads = new Map<number, Promise<Buffer | undefined>>();
  let next = 0;
  let aheadBytes = 0;
  const fetchBuffer = (it: Item): Promise<Buffer | undefined> =>
    withRetry(() => req.store.get(it.key), { policy: retry, onRetry }).catch((err: unknown) => {
      if (err instanceof AppError && err.code === 'OBJECT_NOT_FOUND') return undefined;
      throw err;
    });
  const prefetch = (from: number): void => {
    while (next < items.length && next - from < concurrency) {
      const it = items[next] as Item;
      if (it.size > PREFETCH_MAX_OBJECT) {
        if (next > from) break; // streamed when its turn comes; nothing passes it
        next++;
        continue;
      }
      if (next > from && aheadBytes + it.size > PREFETCH_BUDGET) break;
      const p = fetchBuffer(it);
      p.catch(() => undefined); // awaited in turn
      downloads.set(next, p);
      aheadBytes += it.size;
      next++;
    }
  };

  const addEntry = async (pack: Pack, gate: PackGate, idx: number, it: Item): Promise<void> => {
    prefetch(idx);
    const pending = downloads.get(idx);
    let size: number;
    const hash = req.manifest === undefined ? undefined : createHash('sha256');
    if (pending !== undefined) {
      downloads.delete(idx);
      const body = await gate.guard(pending);
      aheadBytes -= it.size;
      if (body === undefined) {
        skipped.push({ path: shownPath(it.path), reason: 'vanished' });
        return;
      }
      hash?.update(body);
      size = body.length;
      await gate.guard(
        new Promise<void>((resolve, reject) => {
          pack.entry({ name: it.path, size, mode: FILE_MODE }, body, (err) =>
            err ? reject(err) : resolve(),
          );
        }),
      );
      gate.produced += tarEntryBytes(it.path, size);
    } else {
      let stream: Readable;
      try {
        stream = await withRetry(() => req.store.getStream(it.key), { policy: retry, onRetry });
      } catch (err) {
        if (err instanceof AppError && err.code === 'OBJECT_NOT_FOUND') {
          skipped.push({ path: shownPath(it.path), reason: 'vanished' });
          return;
        }
        throw err;
      }
      size = 0;
      let entryError: unknown;
      const done = new Promise<void>((resolve, reject) => {
        const sink = pack.entry({ name: it.path, size: it.size, mode: FILE_MODE }, (err) =>
          err ? reject(err) : resolve(),
        );
        void (async (): Promise<void> => {
          try {
            for await (const chunk of stream as AsyncIterable<Buffer>) {
              hash?.update(chunk);
              size += chunk.length;
              if (size > it.size) throw new Error('the object grew since it was listed');
              if (!sink.write(chunk)) await waitDrain(sink);
            }
            sink.end(undefined);
          } catch (err) {
            entryError = err;
            stream.destroy();
            sink.destroy(err as Error);
          }
        })();
      });
      try {
        await gate.guard(done);
      } catch (err) {
        if (gate.failed !== undefined) throw gate.failed as Error;
        throw new AppError(
          'STORAGE_FAILED',
          `downloading "${it.key}" for the restore failed (${((entryError ?? err) as Error).message}); the object may have changed meanwhile — retry the restore`,
          { cause: entryError ?? err },
        );
      }
      gate.produced += tarEntryBytes(it.path, size);
    }
    files++;
    bytes += size;
    if (hash !== undefined) restoredHash.set(it.path, { sha256: hash.digest('hex'), size });
    await gate.room();
  };

  let idx = 0;
  for (const batch of planBatches(items, limits)) {
    const pack = tarStream.pack();
    const gate = new PackGate();
    const body = Readable.from(
      (async function* (): AsyncGenerator<Buffer> {
        for await (const chunk of pack as AsyncIterable<Buffer>) {
          gate.consumed += chunk.length;
          gate.wake();
          yield chunk;
        }
      })(),
    );
    writeCalls++;
    const call = writeFilesTar(
      req.client,
      { ownerId: req.ownerId, sandboxId: req.sandboxId, destDir: '' },
      body,
      req.timeoutMs === undefined ? undefined : { timeoutMs: req.timeoutMs },
    );
    call.catch((err: unknown) => gate.fail(err));
    try {
      for (const it of batch) await addEntry(pack, gate, idx++, it);
      pack.finalize();
    } catch (err) {
      pack.destroy(err as Error);
      body.destroy();
      // hakod's answer explains more than the packer's "destroyed" when the call failed first
      throw (gate.failed ?? err) as Error;
    }
    await call;
  }

  let drift: RestoreDrift | undefined;
  if (req.manifest !== undefined) drift = compareWithManifest(req.manifest, items, restoredHash);
  const durationMs = Math.round(performance.now() - started);
  if (drift !== undefined && drift.missing + drift.extra + drift.mismatched > 0) {
    logger.warn({ prefix, ...drift }, 'the restored workspace differs from the sync manifest');
  }
  if (skipped.length > 0) logger.warn({ prefix, skipped: skipped.slice(0, 20) }, 'objects not restored');
  return { files, bytes, durationMs, writeCalls, skipped, drift };
}

function compareWithManifest(
  manifest: Manifest,
  items: readonly Item[],
  restored: ReadonlyMap<string, { sha256: string; size: number }>,
): RestoreDrift {
  const examples: string[] = [];
  const note = (p: string): void => {
    if (examples.length < 20) examples.push(p);
  };
  let missing = 0;
  let extra = 0;
  let mismatched = 0;
  const listed = new Set(items.map((i) => i.path));
  for (const path of manifest.keys()) {
    if (!listed.has(path) || !restored.has(path)) {
      missing++;
      note(path);
    }
  }
  for (const [path, got] of restored) {
    const want = manifest.get(path);
    if (want === undefined) {
      extra++;
      note(path);
    } else if (want.sha256 !== got.sha256 || want.size !== got.size) {
      mismatched++;
      note(path);
    }
  }
  return { missing, extra, mismatched, examples };
}
