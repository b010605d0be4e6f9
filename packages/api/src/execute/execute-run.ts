/**
 * The execute flow of one conversation, in the order of the system hako replaces:
 * 1. context limit, 2. conversation lock + run slot, 3-4. sandbox, workspace restore, the agent,
 * 5. workspace sync-back and file registration, 6. one final transaction and the lock released.
 *
 * beginExecute() does every check that can refuse the request (so the route can still answer
 * problem+json) and takes the lock; RunHandle.run() streams and always ends with a stored `done`
 * event, whatever fails, and always releases what it took. The parts it talks to are the narrow
 * ports below; server.ts adapts the real repositories, node pool, workspace sync and agent runner.
 */
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import type {
  AgentEvent,
  ConcurrencyLimiter,
  Conversation,
  Executor,
  HeldLock,
  LockManager,
  PresentMark,
  Slot,
  StoredEvent,
  Tenant,
  Usage,
} from '../types.js';
import type { FileChange } from '../workspace/diff.js';
import type { RunModel } from '../repositories/models.js';
import type { ModelProvider } from '../types.js';

/** Where the run's sandbox is: the node's client is the port's business, not the flow's. */
export interface SandboxTarget {
  readonly node: string;
  readonly sandboxId: string;
  readonly created: boolean;
}

export interface SyncResult {
  readonly uploaded: number;
  readonly deleted: number;
  readonly unchanged: number;
  readonly changes: readonly FileChange[];
  /** False when S3 kept failing: the spool holds the files and a background retry finishes. */
  readonly complete: boolean;
}

export interface AgentSummary {
  readonly status: 'completed' | 'failed';
  readonly result: string;
  readonly isError: boolean;
  readonly usage: Usage;
  readonly costUsd: number;
  readonly turnCount: number;
  readonly sessionId: string | null;
  /** Context tokens in use at the end (input + cache tokens of the last model call). */
  readonly contextTokens: number;
  /** Why the agent failed (status failed); the agent already stored its error event. */
  readonly errorCode?: string | undefined;
  /** Paths the agent marked with present_files; finishRun presents those the sync registered. */
  readonly presented?: readonly PresentMark[] | undefined;
}

export interface RunStore {
  /** Creates the run row (status running) and answers its id. */
  startRun(input: {
    tenantId: string;
    conversationId: string;
    prompt: string;
    lockToken: string;
    /** The model chosen for the run (ModelPort); undefined: none configured. */
    modelId?: string | undefined;
    /** Who ran it (stored with the run and its usage record). */
    executor?: Executor | undefined;
  }): Promise<string>;
  /** Stores one event (assigning its seq) and answers it. */
  append(tenantId: string, conversationId: string, runId: string, ev: AgentEvent): Promise<StoredEvent>;
  /**
   * One transaction: the file registrations and the manifest from the sync, the conversation's
   * session, context tokens and title, the run's final status and usage, its usage record, and
   * the `done` event. The stored done event's `cost_usd` is the run's computed cost (it may
   * differ from the one passed in: RunRepository.finish prices the tokens with the model's prices).
   */
  finishRun(input: {
    tenantId: string;
    conversationId: string;
    runId: string;
    status: 'completed' | 'failed' | 'cancelled';
    summary: AgentSummary | undefined;
    errorCode: string | undefined;
    durationMs: number;
    sync: SyncResult | undefined;
    title: string | undefined;
    done: AgentEvent;
  }): Promise<StoredEvent>;
}

export interface SandboxPort {
  /**
   * The conversation's live sandbox, or a new one with the tenant's limits and allowlist. `provider`
   * is the run's model provider: the sandbox must have that upstream (`bedrock` or `anthropic`); a
   * live sandbox with another one is replaced (the new one restores the workspace from S3).
   */
  ensure(
    tenant: Tenant,
    conversation: Conversation,
    opts?: { readonly provider: ModelProvider },
  ): Promise<SandboxTarget>;
}

export interface WorkspacePort {
  /** S3 → the sandbox's /workspace. */
  restore(
    target: SandboxTarget,
    tenant: Tenant,
    conversation: Conversation,
  ): Promise<{ files: number; bytes: number }>;
  /** The sandbox's /workspace → S3 (changed files only), spooled locally until S3 has them. */
  syncBack(
    target: SandboxTarget,
    tenant: Tenant,
    conversation: Conversation,
    runId: string,
  ): Promise<SyncResult>;
}

/** The tenant's skills (skills/skill-sync.ts): names for preferred_skills, and the sandbox's copy. */
export interface SkillsPort {
  /** The names of the tenant's skills. */
  names(tenantId: string): Promise<string[]>;
  /** Makes the sandbox's read-only /skills/{tenant} match the tenant's skills (skipped when it does). */
  sync(target: SandboxTarget, tenant: Tenant): Promise<{ changed: boolean; skills: number }>;
}

export interface AgentPort {
  /** Runs the agent in the sandbox; every mapped event goes to onEvent in order. */
  run(input: {
    target: SandboxTarget;
    tenant: Tenant;
    conversation: Conversation;
    prompt: string;
    /** The model the SDK gets (`model`); undefined: Claude Code's default. */
    model?: string | undefined;
    /** Skills the agent is told to prefer (checked to be the tenant's). */
    preferredSkills?: readonly string[] | undefined;
    signal: AbortSignal;
    onEvent: (ev: AgentEvent) => Promise<void>;
  }): Promise<AgentSummary>;
}

/** A file sent with the execute (multipart `files[]`), validated and read into memory. */
export interface Attachment {
  /** The workspace path (validated like an upload's). */
  readonly path: string;
  readonly data: Buffer;
  readonly sha256: string;
  /** The stored media type (`text/plain; charset=utf-8`). */
  readonly contentType: string;
}

export interface AttachmentPort {
  /**
   * Stores the attachments as the upload API does (S3, then `user_upload` in conversation_files
   * and the manifest, recording `runId`) and writes them into the sandbox's /workspace.
   */
  place(
    target: SandboxTarget,
    tenant: Tenant,
    conversation: Conversation,
    runId: string,
    files: readonly Attachment[],
  ): Promise<{ files: number; bytes: number }>;
}

export interface ModelPort {
  /**
   * The model of a run on `conversation`: its own pick, else the tenant default, else the
   * configured default; undefined when none is set. MODEL_UNKNOWN / MODEL_DISABLED refuse it.
   * Its provider chooses the sandbox's upstream.
   */
  choose(tenant: Tenant, conversation: Conversation): Promise<RunModel | undefined>;
}

export interface ExecuteDeps {
  readonly locks: LockManager;
  readonly slots: ConcurrencyLimiter;
  readonly runs: RunStore;
  readonly sandboxes: SandboxPort;
  readonly workspace: WorkspacePort;
  readonly agent: AgentPort;
  /** Places an execute's attachments before the agent starts (required for one that has some). */
  readonly attachments?: AttachmentPort | undefined;
  /** Chooses the run's model; without it runs get no model (Claude Code's default). */
  readonly models?: ModelPort | undefined;
  /** The tenant's skills; without it no skills reach sandboxes and preferred_skills is refused. */
  readonly skills?: SkillsPort | undefined;
  readonly logger: Logger;
  readonly lockTtlMs: number;
  readonly pingIntervalMs: number;
  readonly runTimeoutMs: number;
}

export interface ExecuteRequest {
  readonly tenant: Tenant;
  readonly conversation: Conversation;
  readonly prompt: string;
  /** Who ran it (recorded with the run; usage can be grouped by it). */
  readonly executor?: Executor | undefined;
  /** Skill names the agent should prefer for this execute (the tenant's uploaded skills). */
  readonly preferredSkills?: readonly string[] | undefined;
  /** Files to place in the workspace before the agent starts (the multipart execute). */
  readonly attachments?: readonly Attachment[] | undefined;
}

/** The lock key of a conversation (also read by the events route to know a run is live). */
export function conversationLockKey(conversationId: string): string {
  return `conversation:${conversationId}`;
}

/** A title from the first prompt: its first line, whitespace collapsed, at most 60 characters. */
export function titleFromPrompt(prompt: string): string {
  const line = prompt.trim().split('\n')[0]?.replace(/\s+/g, ' ').trim() ?? '';
  if (line.length <= 60) return line || 'Untitled';
  return `${line.slice(0, 59).trimEnd()}…`;
}

const ZERO_USAGE: Usage = {
  inputTokens: 0,
  outputTokens: 0,
  cacheCreationInputTokens: 0,
  cacheReadInputTokens: 0,
};

/**
 * Checks the preferred skills, the context limit and the model, takes the conversation lock and a
 * run slot of the tenant, and creates the run. Refusals: SKILL_UNKNOWN, CONTEXT_LIMIT_EXCEEDED,
 * MODEL_UNKNOWN, MODEL_DISABLED,
 * CONVERSATION_LOCKED, CONCURRENCY_LIMITED. Nothing is held when it throws.
 */
export async function beginExecute(deps: ExecuteDeps, req: ExecuteRequest): Promise<RunHandle> {
  const { tenant, conversation } = req;
  const preferred = req.preferredSkills ?? [];
  if (preferred.length > 0) {
    const known = new Set(deps.skills ? await deps.skills.names(tenant.id) : []);
    const missing = preferred.filter((n) => !known.has(n));
    if (missing.length > 0) {
      throw new AppError(
        'SKILL_UNKNOWN',
        `preferred_skills names ${missing.map((n) => JSON.stringify(n.slice(0, 64))).join(', ')}, which the tenant does not have; GET /v1/skills lists its skills`,
        { details: { missing } },
      );
    }
  }
  const limit = tenant.settings.maxContextTokens;
  if (conversation.contextTokens >= limit) {
    throw new AppError(
      'CONTEXT_LIMIT_EXCEEDED',
      `the conversation holds ${conversation.contextTokens} context tokens, at or over the tenant's limit of ${limit}; start a new conversation`,
      { details: { tokensUsed: conversation.contextTokens, limit } },
    );
  }
  const model = await deps.models?.choose(tenant, conversation);
  const lock = await deps.locks.acquire(conversationLockKey(conversation.id), deps.lockTtlMs);
  if (!lock) {
    throw new AppError(
      'CONVERSATION_LOCKED',
      'another execute is running on this conversation; wait for its done event',
    );
  }
  let slot: Slot | undefined;
  try {
    slot = await deps.slots.acquire(
      `tenant-runs:${tenant.id}`,
      tenant.settings.limits.concurrentRuns,
      deps.lockTtlMs,
    );
    if (!slot) {
      throw new AppError(
        'CONCURRENCY_LIMITED',
        `the tenant already runs ${tenant.settings.limits.concurrentRuns} executes at once; retry when one ends`,
        { details: { retryAfterSeconds: 5 } },
      );
    }
    const runId = await deps.runs.startRun({
      tenantId: tenant.id,
      conversationId: conversation.id,
      prompt: req.prompt,
      lockToken: lock.token,
      modelId: model?.id,
      executor: req.executor,
    });
    return new RunHandle(deps, req, runId, lock, slot, model?.id, model?.provider);
  } catch (err) {
    await slot?.release().catch(() => undefined);
    await lock.release().catch(() => undefined);
    throw err;
  }
}

/** Where a run's stored events go as they happen (the SSE response); may be gone mid-run. */
export interface RunSink {
  onEvent(ev: StoredEvent): Promise<void>;
}

export class RunHandle {
  private readonly abort = new AbortController();
  private cancelReason: 'client' | 'timeout' | 'lock_lost' | undefined;

  constructor(
    private readonly deps: ExecuteDeps,
    private readonly req: ExecuteRequest,
    readonly runId: string,
    private readonly lock: HeldLock,
    private readonly slot: Slot,
    /** The model chosen in beginExecute (undefined: Claude Code's default). */
    readonly model?: string | undefined,
    /** Its provider: which upstream the run's sandbox needs (undefined: anthropic). */
    readonly provider?: ModelProvider | undefined,
  ) {}

  /** Cancels the run (the client went away): the agent is killed, a cancelled done is stored. */
  cancel(reason: 'client' | 'timeout' | 'lock_lost' = 'client'): void {
    if (this.abort.signal.aborted) return;
    this.cancelReason = reason;
    this.abort.abort(new AppError('RUN_CANCELLED', `the run was cancelled (${reason})`));
  }

  /** Runs to the end and stores `done`; never throws. Releases the lock and the slot. */
  async run(sink: RunSink): Promise<StoredEvent | undefined> {
    const { deps, req } = this;
    const { tenant, conversation } = req;
    const started = Date.now();
    const log = deps.logger.child({ runId: this.runId, conversationId: conversation.id });
    // Events are stored and sent one at a time, in order, even when produced concurrently (ping).
    let chain: Promise<unknown> = Promise.resolve();
    let lastStoreError: unknown;
    const emit = (ev: AgentEvent): Promise<void> => {
      const next = chain.then(async () => {
        try {
          const stored = await deps.runs.append(tenant.id, conversation.id, this.runId, ev);
          await sink.onEvent(stored).catch(() => undefined);
        } catch (err) {
          lastStoreError = err;
          log.error({ err }, 'storing an event failed');
        }
      });
      chain = next;
      return next;
    };
    const renewEvery = Math.max(1000, Math.floor(deps.lockTtlMs / 3));
    const renew = setInterval(() => {
      void Promise.all([this.lock.renew(), this.slot.renew()]).then(
        ([held]) => {
          if (!held) {
            log.error('the conversation lock was lost; cancelling the run');
            this.cancel('lock_lost');
          }
        },
        (err: unknown) => log.warn({ err }, 'renewing the conversation lock failed; will retry'),
      );
    }, renewEvery);
    const ping = setInterval(() => void emit({ type: 'ping', data: {} }), deps.pingIntervalMs);
    const timeout = setTimeout(() => this.cancel('timeout'), deps.runTimeoutMs);
    renew.unref();
    ping.unref();
    timeout.unref();

    let summary: AgentSummary | undefined;
    let sync: SyncResult | undefined;
    let target: SandboxTarget | undefined;
    let failure: AppError | undefined;
    const title = conversation.title === null ? titleFromPrompt(req.prompt) : undefined;
    try {
      if (title !== undefined) await emit({ type: 'title', data: { title } });
      await emit({ type: 'progress', data: { step: 'sandbox', status: 'started' } });
      target = await deps.sandboxes.ensure(tenant, conversation, { provider: this.provider ?? 'anthropic' });
      await emit({
        type: 'progress',
        data: {
          step: 'sandbox',
          status: 'done',
          node: target.node,
          sandbox_id: target.sandboxId,
          created: target.created,
        },
      });
      this.throwIfAborted();
      if (deps.skills !== undefined) {
        await emit({ type: 'progress', data: { step: 'skills_sync', status: 'started' } });
        const r = await deps.skills.sync(target, tenant);
        await emit({
          type: 'progress',
          data: { step: 'skills_sync', status: 'done', changed: r.changed, skills: r.skills },
        });
      }
      this.throwIfAborted();
      // Without a workspace the agent works in the read-only /skills/{tenant}: nothing to restore.
      if (target.created && conversation.workspaceEnabled) {
        await emit({ type: 'progress', data: { step: 'workspace_restore', status: 'started' } });
        const r = await deps.workspace.restore(target, tenant, conversation);
        await emit({
          type: 'progress',
          data: { step: 'workspace_restore', status: 'done', files: r.files, bytes: r.bytes },
        });
      }
      this.throwIfAborted();
      const attachments = req.attachments ?? [];
      if (attachments.length > 0) {
        if (deps.attachments === undefined) throw new Error('execute attachments are not wired');
        await emit({ type: 'progress', data: { step: 'attachments', status: 'started' } });
        const r = await deps.attachments.place(target, tenant, conversation, this.runId, attachments);
        await emit({
          type: 'progress',
          data: { step: 'attachments', status: 'done', files: r.files, bytes: r.bytes },
        });
        this.throwIfAborted();
      }
      summary = await deps.agent.run({
        target,
        tenant,
        // Without a workspace the session's transcript lived in the old sandbox's HOME: a new
        // sandbox starts a new session rather than fail to resume one it cannot find.
        conversation:
          target.created && !conversation.workspaceEnabled
            ? { ...conversation, sessionId: null }
            : conversation,
        prompt: req.prompt,
        model: this.model,
        preferredSkills: req.preferredSkills,
        signal: this.abort.signal,
        onEvent: emit,
      });
    } catch (err) {
      failure = this.asAppError(err);
      if (failure.code !== 'RUN_CANCELLED') log.error({ err }, 'the run failed');
    } finally {
      clearInterval(ping);
      clearTimeout(timeout);
    }
    // The workspace goes back even after a failure or a cancel: what the agent wrote is kept.
    if (target !== undefined && conversation.workspaceEnabled) {
      try {
        await emit({ type: 'progress', data: { step: 'workspace_sync', status: 'started' } });
        sync = await deps.workspace.syncBack(target, tenant, conversation, this.runId);
        await emit({
          type: 'progress',
          data: {
            step: 'workspace_sync',
            status: sync.complete ? 'done' : 'pending',
            uploaded: sync.uploaded,
            deleted: sync.deleted,
            unchanged: sync.unchanged,
          },
        });
      } catch (err) {
        log.error({ err }, 'workspace sync-back failed');
        failure ??= this.asAppError(err);
      }
    }
    await chain;
    if (lastStoreError !== undefined && failure === undefined) failure = this.asAppError(lastStoreError);
    const cancelled = failure?.code === 'RUN_CANCELLED';
    const status: 'completed' | 'failed' | 'cancelled' = cancelled
      ? 'cancelled'
      : failure !== undefined || summary?.status === 'failed'
        ? 'failed'
        : 'completed';
    if (failure !== undefined) {
      await emit({
        type: 'error',
        data: {
          code: failure.code,
          message: publicMessage(failure),
          ...(cancelled ? { reason: this.cancelReason } : {}),
        },
      });
      await chain;
    }
    const durationMs = Date.now() - started;
    const usage = summary?.usage ?? ZERO_USAGE;
    const done: AgentEvent = {
      type: 'done',
      data: {
        status,
        result: summary?.result ?? '',
        is_error: status !== 'completed' || (summary?.isError ?? false),
        usage: {
          input_tokens: usage.inputTokens,
          output_tokens: usage.outputTokens,
          cache_creation_input_tokens: usage.cacheCreationInputTokens,
          cache_read_input_tokens: usage.cacheReadInputTokens,
        },
        cost_usd: summary?.costUsd ?? 0,
        turn_count: summary?.turnCount ?? 0,
        duration_ms: durationMs,
        session_id: summary?.sessionId ?? conversation.sessionId,
        ...((failure?.code ?? summary?.errorCode) !== undefined
          ? { error_code: failure?.code ?? summary?.errorCode }
          : {}),
      },
    };
    let stored: StoredEvent | undefined;
    try {
      stored = await deps.runs.finishRun({
        tenantId: tenant.id,
        conversationId: conversation.id,
        runId: this.runId,
        status,
        summary,
        errorCode: failure?.code ?? summary?.errorCode,
        durationMs,
        sync,
        title,
        done,
      });
      await sink.onEvent(stored).catch(() => undefined);
    } catch (err) {
      log.error({ err }, 'finishing the run failed; the reaper will mark it failed');
    } finally {
      clearInterval(renew);
      await this.slot.release().catch((err: unknown) => log.warn({ err }, 'releasing the run slot failed'));
      await this.lock.release().catch((err: unknown) => log.warn({ err }, 'releasing the lock failed'));
    }
    return stored;
  }

  private throwIfAborted(): void {
    if (this.abort.signal.aborted) throw this.abort.signal.reason;
  }

  private asAppError(err: unknown): AppError {
    if (this.abort.signal.aborted) return this.abort.signal.reason as AppError;
    if (err instanceof AppError) return err;
    return new AppError('INTERNAL', err instanceof Error ? err.message : String(err), { cause: err });
  }
}

/** What a client may read of an error: 5xx messages stay in the log. */
function publicMessage(err: AppError): string {
  return err.httpStatus >= 500 ? 'the run failed on the server; see the API log for the run id' : err.message;
}
