/**
 * Moves a conversation's workspace between the object store and its sandbox: restore() before a
 * run, syncBack() after it, resumePending() for whatever the store refused earlier.
 *
 * The database stays outside: restore and syncBack take the sync manifest (workspace_objects) as
 * a Map and syncBack answers the changes; the caller registers conversation_files (only changes
 * with `register`, i.e. not under .hako/) and applies the manifest in one transaction, whether the
 * upload completed or still waits in the spool (the manifest states what the store WILL hold).
 *
 * Ordering: one conversation's spooled runs reach the store in the order they were scanned (each
 * diff assumes the previous one landed), serialized per conversation in this process and by a lock
 * file per spool directory across processes sharing the spool. restore() first finishes any
 * pending run of its conversation, so a sandbox never starts from a store that lags the manifest.
 * The spool is local to this machine: API replicas on other machines do not see it.
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import type { AgentClient } from '@hako/proto';
import type { ObjectStore } from '../types.js';
import type { FileChange, Manifest } from './diff.js';
import { restoreWorkspace } from './restore.js';
import type { RestoreBatchLimits, RestoreResult } from './restore.js';
import { DEFAULT_RETRY_POLICY } from './retry.js';
import type { RetryPolicy } from './retry.js';
import { scanToSpool } from './scan.js';
import type { ScanLimits } from './scan.js';
import {
  PENDING_FILE,
  applyPending,
  listSpool,
  readPending,
  removeIfAbandoned,
  removeRunDir,
  tryLock,
  unlock,
  writePending,
} from './spool.js';
import type { PendingSync, SpoolEntry } from './spool.js';
import type { SkippedEntry } from './tar-entries.js';

export interface WorkspaceSyncOptions {
  readonly store: ObjectStore;
  /** Local directory for changes on their way to the store (HAKO_SPOOL_DIR); kept across restarts. */
  readonly spoolDir: string;
  readonly logger: Logger;
  /** Retries of each store call. Default 5 attempts, 200 ms doubling to at most 5 s, full jitter. */
  readonly retry?: RetryPolicy | undefined;
  /** Downloads at once during restore; default 32. */
  readonly restoreConcurrency?: number | undefined;
  /** Uploads at once during sync-back; default 8. */
  readonly uploadConcurrency?: number | undefined;
  /** Bytes of uploads in memory at once; default 64 MiB. */
  readonly uploadInflightBytes?: number | undefined;
  readonly restoreBatch?: Partial<RestoreBatchLimits> | undefined;
  readonly scanLimits?: Partial<ScanLimits> | undefined;
  /** Milliseconds one ReadFiles or WriteFiles call may take; default 10 minutes. */
  readonly transferTimeoutMs?: number | undefined;
  /** How long restore waits for another process that is applying this conversation's spool; default 30 s. */
  readonly pendingWaitMs?: number | undefined;
}

/** Where the conversation's sandbox is, on one hakod. */
export interface SandboxRef {
  readonly client: AgentClient;
  /** hakod's owner id: the tenant id. */
  readonly ownerId: string;
  readonly sandboxId: string;
}

export interface RestoreInput extends SandboxRef {
  readonly tenantId: string;
  readonly conversationId: string;
  /** The sync manifest; when given, differences from what the store holds are reported. */
  readonly manifest?: Manifest | undefined;
}

export interface SyncBackInput extends SandboxRef {
  readonly tenantId: string;
  readonly conversationId: string;
  readonly runId: string;
  /** The sync manifest (workspace_objects) before this run. */
  readonly manifest: Manifest;
}

export interface SyncBackResult {
  readonly uploaded: number;
  readonly deleted: number;
  readonly unchanged: number;
  /** Every change (created, modified, deleted), sorted by path, `.hako/` included (register: false). */
  readonly changes: readonly FileChange[];
  /** True when the store has every change; false when they wait in the spool for resumePending. */
  readonly complete: boolean;
  /** Entries not synced: symlinks, devices, FIFOs, hard links, invalid or over-long names. */
  readonly skipped: readonly SkippedEntry[];
  /** Regular files in the workspace and their total size. */
  readonly files: number;
  readonly bytes: number;
  readonly durationMs: number;
  /** Why the store has not got everything yet (when complete is false). */
  readonly error?: string | undefined;
}

export interface ResumeReport {
  /** Runs whose changes reached the store in this pass. */
  readonly completed: readonly { conversationId: string; runId: string; changes: readonly FileChange[] }[];
  /** Runs still waiting (store failing, or held by another process). */
  readonly waiting: readonly { conversationId: string; runId: string; error?: string | undefined }[];
  /** Abandoned partial spool directories removed (their scan never finished). */
  readonly removed: number;
}

interface FinishOutcome {
  completed: { conversationId: string; runId: string; changes: readonly FileChange[] }[];
  waiting: { conversationId: string; runId: string; error?: string | undefined }[];
  removed: number;
}

function messageOf(err: unknown): string {
  return err instanceof AppError
    ? `[${err.code}] ${err.message}`
    : err instanceof Error
      ? err.message
      : String(err);
}

export class WorkspaceSync {
  private readonly store: ObjectStore;
  private readonly spoolDir: string;
  private readonly logger: Logger;
  private readonly retry: RetryPolicy;
  /** Per conversation: the tail of the chain of spool work in this instance. */
  private readonly chains = new Map<string, Promise<unknown>>();
  /** Spool directories this instance holds the lock of (scanned, not yet applied). */
  private readonly held = new Set<string>();

  constructor(private readonly opts: WorkspaceSyncOptions) {
    this.store = opts.store;
    this.spoolDir = opts.spoolDir;
    this.logger = opts.logger;
    this.retry = opts.retry ?? DEFAULT_RETRY_POLICY;
  }

  /** Runs `fn` after every earlier spool work of `conversationId` in this instance. */
  private serialized<T>(conversationId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.chains.get(conversationId) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.chains.set(conversationId, tail);
    void tail.then(() => {
      if (this.chains.get(conversationId) === tail) this.chains.delete(conversationId);
    });
    return run;
  }

  /**
   * Restores the conversation's workspace into the sandbox (S3 → /workspace). Call it once the
   * sandbox runs and before the agent starts. First finishes this conversation's spooled runs;
   * STORAGE_FAILED when some still cannot reach the store (the sandbox would start from stale
   * files). See restoreWorkspace for the rest.
   */
  async restore(input: RestoreInput): Promise<RestoreResult> {
    const deadline = Date.now() + (this.opts.pendingWaitMs ?? 30_000);
    for (;;) {
      const out = await this.serialized(input.conversationId, () =>
        this.finishConversation(input.conversationId),
      );
      if (out.waiting.length === 0) break;
      const held = out.waiting.find((w) => w.error === undefined);
      if (held === undefined || Date.now() >= deadline) {
        throw new AppError(
          'STORAGE_FAILED',
          `the conversation's earlier workspace changes (run ${out.waiting[0]?.runId}) are still waiting to reach the object store${out.waiting[0]?.error === undefined ? ' (another process is uploading them)' : `: ${out.waiting[0].error}`}; try again once S3 answers`,
        );
      }
      await new Promise((r) => setTimeout(r, 250)); // another process is applying it now
    }
    return restoreWorkspace({
      store: this.store,
      client: input.client,
      ownerId: input.ownerId,
      sandboxId: input.sandboxId,
      tenantId: input.tenantId,
      conversationId: input.conversationId,
      manifest: input.manifest,
      concurrency: this.opts.restoreConcurrency,
      batch: this.opts.restoreBatch,
      retry: this.retry,
      timeoutMs: this.opts.transferTimeoutMs ?? 600_000,
      logger: this.logger,
    });
  }

  /**
   * Syncs the sandbox's /workspace back (after a run; the agent must have stopped): reads it as a
   * tar, spools the created and modified regular files locally, then uploads exactly those and
   * deletes the objects of files that are gone, with retries. The spool is removed once every
   * call succeeded; when the store keeps failing it is kept, `complete` is false, and
   * resumePending() finishes it later. Errors reading the sandbox (hakod's codes, FILE_TOO_LARGE
   * over the scan limits) are thrown and leave no spool: the files are still in the sandbox.
   */
  async syncBack(input: SyncBackInput): Promise<SyncBackResult> {
    const started = performance.now();
    const scan = await scanToSpool({
      client: input.client,
      ownerId: input.ownerId,
      sandboxId: input.sandboxId,
      tenantId: input.tenantId,
      conversationId: input.conversationId,
      runId: input.runId,
      manifest: input.manifest,
      spoolDir: this.spoolDir,
      limits: this.opts.scanLimits,
      timeoutMs: this.opts.transferTimeoutMs ?? 600_000,
      logger: this.logger,
    });
    const base = {
      uploaded: scan.diff.uploads.length,
      deleted: scan.diff.deletes.length,
      unchanged: scan.diff.unchanged,
      changes: scan.diff.changes,
      skipped: scan.skipped,
      files: scan.files,
      bytes: scan.bytes,
    };
    if (scan.skipped.length > 0) {
      this.logger.info(
        {
          conversationId: input.conversationId,
          runId: input.runId,
          skipped: scan.skipped.slice(0, 20),
          count: scan.skipped.length,
        },
        'workspace entries not synced (links, devices, FIFOs, invalid names)',
      );
    }
    let complete = true;
    let error: string | undefined;
    if (scan.dir !== undefined) {
      const dir = scan.dir;
      this.held.add(dir);
      const out = await this.serialized(input.conversationId, () =>
        this.finishConversation(input.conversationId),
      );
      // applied (here, or by a resume pass that ran first) exactly when its pending.json is gone
      const applied = await access(join(dir, PENDING_FILE)).then(
        () => false,
        () => true,
      );
      if (!applied) {
        const mine = out.waiting.find((w) => w.runId === input.runId);
        complete = false;
        error = mine?.error ?? out.waiting[0]?.error ?? 'an earlier run of the conversation is still waiting';
        this.logger.warn(
          { conversationId: input.conversationId, runId: input.runId, dir, error },
          'workspace changes kept in the spool; they will be retried',
        );
      }
      if (this.held.delete(dir)) await unlock(dir).catch(() => undefined);
    }
    return { ...base, complete, error, durationMs: Math.round(performance.now() - started) };
  }

  /**
   * Applies every spooled run of every conversation that is not held by a live process, oldest
   * first per conversation, and removes abandoned partial spools. Call it at start-up and then
   * periodically (startResumeLoop). Never throws for a store failure: those runs stay waiting.
   */
  async resumePending(): Promise<ResumeReport> {
    const { runs, building } = await listSpool(this.spoolDir);
    let removed = 0;
    for (const dir of building) if (await removeIfAbandoned(dir)) removed++;
    const convs = [...new Set(runs.map((r) => r.conversationId))];
    const completed: FinishOutcome['completed'] = [];
    const waiting: FinishOutcome['waiting'] = [];
    for (const conv of convs) {
      const out = await this.serialized(conv, () => this.finishConversation(conv));
      completed.push(...out.completed);
      waiting.push(...out.waiting);
      removed += out.removed;
    }
    if (completed.length > 0 || waiting.length > 0) {
      this.logger.info(
        { completed: completed.length, waiting: waiting.length, removed },
        'pending workspace syncs resumed',
      );
    }
    return { completed, waiting, removed };
  }

  /**
   * Calls resumePending() every `intervalMs` (never two at once; the timer does not keep the
   * process alive). `onReport` sees each pass's report. stop() waits for a pass in progress.
   */
  startResumeLoop(intervalMs: number, onReport?: (r: ResumeReport) => void): { stop(): Promise<void> } {
    let running: Promise<void> | undefined;
    const timer = setInterval(() => {
      if (running !== undefined) return;
      running = this.resumePending()
        .then(
          (r) => onReport?.(r),
          (err: unknown) =>
            this.logger.error({ err: messageOf(err) }, 'resuming pending workspace syncs failed'),
        )
        .finally(() => {
          running = undefined;
        });
    }, intervalMs);
    timer.unref();
    return {
      stop: async () => {
        clearInterval(timer);
        await running;
      },
    };
  }

  /**
   * Applies the conversation's spooled runs in scan order, stopping at the first one that cannot
   * be applied now (held by another process, or the store still failing), since later runs depend
   * on it. Run inside serialized(conversationId).
   */
  private async finishConversation(conversationId: string): Promise<FinishOutcome> {
    const out: FinishOutcome = { completed: [], waiting: [], removed: 0 };
    const { runs } = await listSpool(this.spoolDir);
    const mine = runs.filter((r) => r.conversationId === conversationId);
    const ready: { entry: SpoolEntry; pending: PendingSync }[] = [];
    for (const entry of mine) {
      let pending: PendingSync | undefined;
      try {
        pending = await readPending(entry.dir);
      } catch (err) {
        out.waiting.push({ conversationId, runId: entry.runId, error: messageOf(err) });
        return out; // unreadable: an operator must look; later runs must not overtake it
      }
      if (pending === undefined) {
        // no pending.json: a scan in progress elsewhere, or one that died
        if (await this.abandoned(entry.dir)) {
          await removeRunDir(entry.dir);
          out.removed++;
        }
        continue;
      }
      ready.push({ entry, pending });
    }
    ready.sort((a, b) =>
      a.pending.createdAt < b.pending.createdAt ? -1 : a.pending.createdAt > b.pending.createdAt ? 1 : 0,
    );
    for (let i = 0; i < ready.length; i++) {
      const { entry, pending } = ready[i] as (typeof ready)[number];
      const mineHeld = this.held.has(entry.dir);
      if (!mineHeld && !(await tryLock(entry.dir))) {
        for (const r of ready.slice(i)) out.waiting.push({ conversationId, runId: r.entry.runId });
        return out;
      }
      try {
        await applyPending(entry.dir, pending, {
          store: this.store,
          retry: this.retry,
          logger: this.logger,
          concurrency: this.opts.uploadConcurrency ?? 8,
          maxInflightBytes: this.opts.uploadInflightBytes ?? 64 * 1024 ** 2,
        });
      } catch (err) {
        const error = messageOf(err);
        await writePending(entry.dir, { ...pending, attempts: pending.attempts + 1, lastError: error }).catch(
          () => undefined,
        );
        if (!mineHeld) await unlock(entry.dir).catch(() => undefined);
        out.waiting.push({ conversationId, runId: entry.runId, error });
        for (const r of ready.slice(i + 1)) out.waiting.push({ conversationId, runId: r.entry.runId });
        return out;
      }
      this.held.delete(entry.dir);
      await removeRunDir(entry.dir);
      out.completed.push({ conversationId, runId: entry.runId, changes: pending.changes });
    }
    return out;
  }

  /**
   * Drops every spooled run of the conversation without applying it (the conversation is being
   * deleted: its objects are about to go). CONVERSATION_LOCKED when another live process holds
   * one of its spool directories (applying it now); nothing is dropped then.
   */
  async discardConversation(conversationId: string): Promise<number> {
    return this.serialized(conversationId, async () => {
      const { runs, building } = await listSpool(this.spoolDir);
      const dirs = [
        ...runs.filter((r) => r.conversationId === conversationId).map((r) => r.dir),
        ...building.filter((d) => d.startsWith(join(this.spoolDir, conversationId, '.'))),
      ];
      const taken: string[] = [];
      try {
        for (const dir of dirs) {
          if (this.held.has(dir) || !(await tryLock(dir))) {
            throw new AppError(
              'CONVERSATION_LOCKED',
              `the conversation's workspace changes (${dir}) are being uploaded by another process; retry in a moment`,
            );
          }
          taken.push(dir);
        }
      } catch (err) {
        for (const dir of taken) await unlock(dir).catch(() => undefined);
        throw err;
      }
      for (const dir of taken) await removeRunDir(dir);
      if (taken.length > 0) {
        this.logger.info({ conversationId, runs: taken.length }, 'spooled workspace changes discarded');
      }
      return taken.length;
    });
  }

  /** A run directory without pending.json whose scanner is gone (stale lock, or no lock for a long time). */
  private async abandoned(dir: string): Promise<boolean> {
    if (this.held.has(dir)) return false;
    if (await tryLock(dir)) return true; // its lock was stale (or missing): nobody scans it
    return false;
  }
}
