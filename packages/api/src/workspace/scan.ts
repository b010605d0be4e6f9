/**
 * Sync-back, first half: reads a sandbox's whole /workspace through hakod's ReadFiles as a tar
 * stream and spools it locally. Every regular file is hashed; one whose content the manifest
 * already has is dropped at once, a created or modified one is written to the run's spool
 * directory under its hash. Symlinks, hard links, devices, FIFOs and invalid names are skipped
 * and reported (a link's target is never read: the tar only names it). When the stream is
 * complete the diff against the manifest is written as pending.json; nothing reaches the object
 * store here.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { errorFromStatus } from '@hako/agentd';
import type { AgentClient } from '@hako/proto';
import tarStream from 'tar-stream';
import type { Header } from 'tar-stream';
import { diffWorkspace, isUnchanged } from './diff.js';
import type { Manifest, ManifestEntry, WorkspaceDiff } from './diff.js';
import { workspacePrefix } from './paths.js';
import { OBJECTS_DIR, createRunDir, removeRunDir, syncDir, writePending } from './spool.js';
import type { PendingSync } from './spool.js';
import { classifyTarEntry } from './tar-entries.js';
import type { SkippedEntry } from './tar-entries.js';

const execFileAsync = promisify(execFile);

export interface ScanLimits {
  /** Largest single file, in bytes. */
  readonly maxFileBytes: number;
  /** Largest sum of file sizes, in bytes. */
  readonly maxTotalBytes: number;
  /** Most tar entries (files, directories, links). */
  readonly maxEntries: number;
}

/** hakod's own defaults are 64 MiB per file and 256 MiB per transfer; these only bound a hostile stream. */
export const DEFAULT_SCAN_LIMITS: ScanLimits = {
  maxFileBytes: 1024 ** 3,
  maxTotalBytes: 4 * 1024 ** 3,
  maxEntries: 200_000,
};

/** Files up to this size are hashed in memory and only written to disk when they changed. */
const IN_MEMORY_BYTES = 1024 * 1024;

export interface ScanRequest {
  readonly client: AgentClient;
  readonly ownerId: string;
  readonly sandboxId: string;
  readonly tenantId: string;
  readonly conversationId: string;
  readonly runId: string;
  /** What the object store holds for the workspace now (workspace_objects). */
  readonly manifest: Manifest;
  readonly spoolDir: string;
  readonly limits?: Partial<ScanLimits> | undefined;
  /** Milliseconds the ReadFiles call may take; default none. */
  readonly timeoutMs?: number | undefined;
  readonly logger: Logger;
}

export interface ScanResult {
  /** The spool directory holding the pending work; undefined when there was nothing to do (removed). */
  readonly dir: string | undefined;
  readonly pending: PendingSync | undefined;
  readonly diff: WorkspaceDiff;
  /** Every regular file found: path -> content. */
  readonly current: ReadonlyMap<string, ManifestEntry>;
  readonly skipped: readonly SkippedEntry[];
  readonly files: number;
  readonly bytes: number;
}

function tooLarge(message: string): AppError {
  return new AppError('FILE_TOO_LARGE', message);
}

/** Flushes the file system holding `dir` (syncfs through coreutils' `sync -f`); per-file fsync when that fails. */
async function flushSpool(dir: string, files: readonly string[]): Promise<void> {
  try {
    await execFileAsync('sync', ['-f', dir]);
  } catch {
    for (const f of files) {
      const fh = await open(f, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
  }
  await syncDir(join(dir, OBJECTS_DIR));
}

/** Writes `data` as objects/{sha256} unless it is already there. */
async function writeObject(objectsDir: string, sha256: string, data: Buffer): Promise<string> {
  const path = join(objectsDir, sha256);
  try {
    const fh = await open(path, 'wx', 0o600);
    try {
      await fh.writeFile(data);
    } finally {
      await fh.close();
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return path;
}

type Entry = AsyncIterable<Buffer> & { header: Header };

async function drain(entry: AsyncIterable<Buffer>): Promise<void> {
  for await (const chunk of entry) void chunk;
}

/**
 * Streams the tar of ReadFiles into `extract` with backpressure; a failed call destroys it with
 * hakod's error (as an AppError).
 */
function pumpReadFiles(
  req: ScanRequest,
  extract: tarStream.Extract,
): { cancel(): void; done: Promise<void> } {
  const call = req.client.readFiles(
    { ownerId: req.ownerId, sandboxId: req.sandboxId, paths: [] },
    req.timeoutMs === undefined ? {} : { deadline: Date.now() + req.timeoutMs },
  );
  const done = (async (): Promise<void> => {
    try {
      for await (const m of call as AsyncIterable<{ chunk: Buffer }>) {
        if (extract.destroyed) return;
        if (!extract.write(m.chunk)) {
          await new Promise<void>((resolve) => {
            const go = (): void => {
              extract.off('drain', go);
              extract.off('close', go);
              resolve();
            };
            extract.on('drain', go);
            extract.on('close', go);
          });
        }
      }
      extract.end(undefined);
    } catch (err) {
      const e =
        typeof (err as { code?: unknown } | null)?.code === 'number'
          ? errorFromStatus(err as Parameters<typeof errorFromStatus>[0])
          : new AppError('AGENT_UNAVAILABLE', `reading the workspace failed: ${(err as Error).message}`, {
              cause: err,
            });
      extract.destroy(e);
      throw e;
    }
  })();
  done.catch(() => undefined);
  return { cancel: () => call.cancel(), done };
}

/**
 * Reads the sandbox's workspace and spools what changed against `manifest` under
 * `{spoolDir}/{conversationId}/{runId}/`. When nothing changed, the directory is removed again and
 * `dir`/`pending` are undefined. On any error (hakod, limits, local disk) the directory is
 * removed and the error thrown: nothing was sent anywhere and the sandbox still holds the files.
 * When it resolves with `pending`, the directory is complete, flushed to disk and still locked by
 * this process (the caller applies it or unlocks it).
 *
 * FILE_TOO_LARGE when a file, the total or the entry count passes `limits`.
 */
export async function scanToSpool(req: ScanRequest): Promise<ScanResult> {
  const limits = { ...DEFAULT_SCAN_LIMITS, ...req.limits };
  const prefix = workspacePrefix(req.tenantId, req.conversationId);
  const prefixBytes = Buffer.byteLength(prefix, 'utf8');
  const createdAt = new Date().toISOString();
  let dir: string;
  try {
    dir = await createRunDir(req.spoolDir, req.conversationId, req.runId);
  } catch (err) {
    if (err instanceof AppError) throw err;
    throw new AppError(
      'INTERNAL',
      `cannot create the sync spool under ${req.spoolDir} (${(err as Error).message}); check that HAKO_SPOOL_DIR is a writable local directory`,
      { cause: err },
    );
  }
  const objectsDir = join(dir, OBJECTS_DIR);
  const current = new Map<string, ManifestEntry>();
  const skipped: SkippedEntry[] = [];
  const written: string[] = [];
  let entries = 0;
  let bytes = 0;
  let partSeq = 0;

  const extract = tarStream.extract();
  extract.on('error', () => undefined); // seen by the iterator below
  const source = pumpReadFiles(req, extract);
  try {
    for await (const entry of extract as unknown as AsyncIterable<Entry>) {
      if (++entries > limits.maxEntries) {
        throw tooLarge(`the workspace has more than ${limits.maxEntries} entries; sync-back refuses it`);
      }
      const c = classifyTarEntry(entry.header, prefixBytes);
      if (c.kind !== 'file') {
        await drain(entry);
        if (c.kind === 'skipped') skipped.push(c.skipped);
        continue;
      }
      if (c.size > limits.maxFileBytes) {
        throw tooLarge(
          `"${c.path}" is ${c.size} bytes, over the ${limits.maxFileBytes}-byte sync limit for one file`,
        );
      }
      bytes += c.size;
      if (bytes > limits.maxTotalBytes) {
        throw tooLarge(
          `the workspace holds over ${limits.maxTotalBytes} bytes of files; sync-back refuses it`,
        );
      }
      const hash = createHash('sha256');
      let size = 0;
      if (c.size <= IN_MEMORY_BYTES) {
        const parts: Buffer[] = [];
        for await (const chunk of entry) {
          hash.update(chunk);
          parts.push(chunk);
          size += chunk.length;
        }
        const content = { sha256: hash.digest('hex'), size };
        current.set(c.path, content);
        if (!isUnchanged(req.manifest, c.path, content)) {
          written.push(await writeObject(objectsDir, content.sha256, Buffer.concat(parts)));
        }
        continue;
      }
      const part = join(objectsDir, `.part-${++partSeq}-${randomBytes(3).toString('hex')}`);
      const fh = await open(part, 'wx', 0o600);
      try {
        for await (const chunk of entry) {
          hash.update(chunk);
          size += chunk.length;
          let off = 0;
          while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
        }
      } finally {
        await fh.close();
      }
      const content = { sha256: hash.digest('hex'), size };
      current.set(c.path, content);
      if (isUnchanged(req.manifest, c.path, content)) {
        await unlink(part);
      } else {
        const target = join(objectsDir, content.sha256);
        await rename(part, target);
        written.push(target);
      }
    }
    await source.done;
  } catch (err) {
    source.cancel();
    if (!extract.destroyed) extract.destroy();
    await removeRunDir(dir);
    if (err instanceof AppError) throw err;
    // the extractor fails with its own message when hakod's stream broke: prefer hakod's error
    const fromSource = await source.done.then(
      () => undefined,
      (e: unknown) => e,
    );
    if (fromSource instanceof AppError) throw fromSource;
    throw new AppError('INTERNAL', `spooling the workspace failed: ${(err as Error).message}`, {
      cause: err,
    });
  }

  const diff = diffWorkspace(current, req.manifest);
  const base = { diff, current, skipped, files: current.size, bytes };
  if (diff.uploads.length === 0 && diff.deletes.length === 0) {
    await removeRunDir(dir);
    return { dir: undefined, pending: undefined, ...base };
  }
  const pending: PendingSync = {
    version: 1,
    tenantId: req.tenantId,
    conversationId: req.conversationId,
    runId: req.runId,
    prefix,
    createdAt,
    uploads: diff.uploads,
    deletes: diff.deletes,
    changes: diff.changes,
    attempts: 0,
  };
  try {
    if (written.length > 0) await flushSpool(dir, written);
    await writePending(dir, pending);
  } catch (err) {
    await removeRunDir(dir);
    throw new AppError('INTERNAL', `writing the sync spool ${dir} failed: ${(err as Error).message}`, {
      cause: err,
    });
  }
  req.logger.debug(
    {
      conversationId: req.conversationId,
      runId: req.runId,
      uploads: diff.uploads.length,
      deletes: diff.deletes.length,
    },
    'workspace changes spooled',
  );
  return { dir, pending, ...base };
}
