// Runs: one execute of a conversation, from start (status running) to its outcome. A
// conversation has at most one running run (a unique index), finishing a run and storing its
// final event are one transaction, and the reaper finds runs whose API process died.
import { randomUUID } from 'node:crypto';
import { AppError } from '@hako/core';
import type { Queryable } from '../db/pool.js';
import { isUniqueViolation } from '../db/pool.js';
import type { AgentEvent, Executor, StoredEvent, Usage } from '../types.js';
import { conversationNotFound, isUuid, iso, isoOrNull, num, numOrNull, toJsonb } from './common.js';
import { EventRepository } from './events.js';
import { UsageRepository } from './usage.js';

export type RunStatus = 'running' | 'completed' | 'failed' | 'cancelled';
export type FinalRunStatus = Exclude<RunStatus, 'running'>;

export interface Run {
  id: string;
  conversationId: string;
  tenantId: string;
  status: RunStatus;
  prompt: string;
  usage: Usage | null;
  costUsd: number | null;
  turnCount: number | null;
  durationMs: number | null;
  /** An ERROR_CODES key (or the SDK's error subtype) when the run failed. */
  errorCode: string | null;
  startedAt: string;
  endedAt: string | null;
  /** The Redis conversation-lock token the run held. */
  lockToken: string | null;
  /** The model the run used (null: none configured, Claude Code's default). */
  modelId: string | null;
  /** Who ran it (the execute request's executor). */
  executor: Executor | null;
}

export interface RunOutcome {
  status: FinalRunStatus;
  usage?: Usage;
  costUsd?: number;
  turnCount?: number;
  /** Default: the time since the run started, measured by the database. */
  durationMs?: number;
  errorCode?: string;
  /** When given, the conversation's session (and context tokens) are updated in the same transaction. */
  sessionId?: string;
  contextTokens?: number;
}

/** A run still marked running that started before the reaper's cut-off (all tenants). */
export interface StaleRun {
  id: string;
  tenantId: string;
  conversationId: string;
  lockToken: string | null;
  startedAt: string;
}

interface RunRow {
  id: string;
  conversation_id: string;
  tenant_id: string;
  status: RunStatus;
  prompt: string;
  usage: Usage | null;
  cost_usd: string | number | null;
  turn_count: number | null;
  duration_ms: string | number | null;
  error_code: string | null;
  started_at: Date;
  ended_at: Date | null;
  lock_token: string | null;
  model_id: string | null;
  executor_user_id: string | null;
  executor_name: string | null;
  executor_email: string | null;
}

const COLUMNS = `id, conversation_id, tenant_id, status, prompt, usage, cost_usd, turn_count, duration_ms,
  error_code, started_at, ended_at, lock_token, model_id, executor_user_id, executor_name, executor_email`;

const ZERO_USAGE: Usage = {
  inputTokens: 0,
  outputTokens: 0,
  cacheCreationInputTokens: 0,
  cacheReadInputTokens: 0,
};

/**
 * The run's cost from its model's prices (USD per million tokens, numeric: exact, rounded to 8
 * places once), or null when the model is unregistered or unpriced. Tokens are $9..$12.
 */
const PRICED_COST = `(SELECT round(($9::numeric * m.input_price + $10::numeric * m.output_price
    + $11::numeric * m.cache_creation_price + $12::numeric * m.cache_read_price) / 1000000, 8)
  FROM models m WHERE m.id = runs.model_id AND m.input_price IS NOT NULL)`;

function toRun(r: RunRow): Run {
  return {
    id: r.id,
    conversationId: r.conversation_id,
    tenantId: r.tenant_id,
    status: r.status,
    prompt: r.prompt,
    usage: r.usage,
    costUsd: numOrNull(r.cost_usd),
    turnCount: r.turn_count,
    durationMs: numOrNull(r.duration_ms),
    errorCode: r.error_code,
    startedAt: iso(r.started_at),
    endedAt: isoOrNull(r.ended_at),
    lockToken: r.lock_token,
    modelId: r.model_id ?? null,
    executor:
      r.executor_user_id === null || r.executor_user_id === undefined
        ? null
        : {
            userId: r.executor_user_id,
            ...(r.executor_name === null ? {} : { name: r.executor_name }),
            ...(r.executor_email === null ? {} : { email: r.executor_email }),
          },
  };
}

function runNotFound(runId: string): AppError {
  return new AppError('RUN_NOT_FOUND', `Run ${runId.slice(0, 64)} does not exist for this tenant`);
}

function checkCount(name: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) {
    throw new AppError('INVALID_ARGUMENT', `${name} must be a non-negative integer, not ${v}`);
  }
}

export class RunRepository {
  constructor(private readonly db: Queryable) {}

  /**
   * Starts a run (status running). CONVERSATION_NOT_FOUND when the conversation is not
   * `tenantId`'s; CONVERSATION_LOCKED when the conversation already has a running run (also one
   * whose API died and that the reaper has not finished yet).
   */
  async start(input: {
    tenantId: string;
    conversationId: string;
    prompt: string;
    lockToken?: string;
    /** The model chosen for the run (chooseRunModel); undefined: none. */
    modelId?: string | undefined;
    executor?: Executor | undefined;
  }): Promise<Run> {
    const { tenantId, conversationId } = input;
    if (!isUuid(tenantId) || !isUuid(conversationId)) throw conversationNotFound(conversationId);
    const e = input.executor;
    try {
      const res = await this.db.query<RunRow>(
        `INSERT INTO runs (id, conversation_id, tenant_id, prompt, lock_token, model_id, executor_user_id,
           executor_name, executor_email)
         SELECT $1, c.id, c.tenant_id, $4, $5, $6, $7, $8, $9 FROM conversations c WHERE c.id = $2 AND c.tenant_id = $3
         RETURNING ${COLUMNS}`,
        [
          randomUUID(),
          conversationId,
          tenantId,
          input.prompt,
          input.lockToken ?? null,
          input.modelId ?? null,
          e?.userId ?? null,
          e?.name ?? null,
          e?.email ?? null,
        ],
      );
      const row = res.rows[0];
      if (!row) throw conversationNotFound(conversationId);
      return toRun(row);
    } catch (err) {
      if (isUniqueViolation(err, 'runs_one_running_idx')) {
        throw new AppError(
          'CONVERSATION_LOCKED',
          `Conversation ${conversationId} has a run in progress; wait for its done event and retry`,
        );
      }
      throw err;
    }
  }

  /** The run; RUN_NOT_FOUND when it is not `tenantId`'s. */
  async get(tenantId: string, runId: string): Promise<Run> {
    if (!isUuid(tenantId) || !isUuid(runId)) throw runNotFound(runId);
    const res = await this.db.query<RunRow>(`SELECT ${COLUMNS} FROM runs WHERE id = $1 AND tenant_id = $2`, [
      runId,
      tenantId,
    ]);
    const row = res.rows[0];
    if (!row) throw runNotFound(runId);
    return toRun(row);
  }

  /**
   * Ends a running run with `outcome` and appends `finalEvents` in order (normally one `done`;
   * a reaper may add an `error` before it) and the run's usage record (usage.ts) in one
   * transaction: either all of it is stored or nothing. The run's cost is computed here, in SQL
   * numeric, from its model's prices and the outcome's tokens, rounded to 8 places once; when the
   * model is unregistered or unpriced it is `outcome.costUsd` (Claude Code's own figure) rounded
   * the same way. The final `done` event's `cost_usd` is replaced by that cost, so done events,
   * runs and usage records agree exactly. Answers the last stored event, or undefined when
   * the run had already ended (a reaper and the run's own API both finishing it: the first one
   * wins, the second changes nothing). RUN_NOT_FOUND when the run is not `tenantId`'s.
   */
  async finish(
    tenantId: string,
    runId: string,
    outcome: RunOutcome,
    finalEvents: AgentEvent | readonly AgentEvent[],
  ): Promise<StoredEvent | undefined> {
    const events: readonly AgentEvent[] = Array.isArray(finalEvents)
      ? finalEvents
      : [finalEvents as AgentEvent];
    if (events.length === 0)
      throw new AppError('INVALID_ARGUMENT', 'A finished run needs at least one final event');
    if (!isUuid(tenantId) || !isUuid(runId)) throw runNotFound(runId);
    checkCount('turnCount', outcome.turnCount);
    checkCount('durationMs', outcome.durationMs);
    checkCount('contextTokens', outcome.contextTokens);
    if (outcome.costUsd !== undefined && !(Number.isFinite(outcome.costUsd) && outcome.costUsd >= 0)) {
      throw new AppError('INVALID_ARGUMENT', `costUsd must be a non-negative number, not ${outcome.costUsd}`);
    }
    const usage = outcome.usage ?? ZERO_USAGE;
    for (const [k, v] of Object.entries(usage)) checkCount(`usage.${k}`, v as number);
    return this.db.transaction(async (tx) => {
      const res = await tx.query<{ conversation_id: string; cost_usd: string; priced: boolean }>(
        `UPDATE runs SET status = $3, usage = $4::jsonb, cost_usd = COALESCE(${PRICED_COST}, round($5::numeric, 8)),
           turn_count = $6,
           duration_ms = COALESCE($7, (extract(epoch FROM clock_timestamp() - started_at) * 1000)::bigint),
           error_code = $8, ended_at = clock_timestamp()
         WHERE id = $1 AND tenant_id = $2 AND status = 'running'
         RETURNING conversation_id, cost_usd::text AS cost_usd, ${PRICED_COST} IS NOT NULL AS priced`,
        [
          runId,
          tenantId,
          outcome.status,
          toJsonb(outcome.usage),
          outcome.costUsd ?? 0,
          outcome.turnCount ?? null,
          outcome.durationMs ?? null,
          outcome.errorCode ?? null,
          usage.inputTokens,
          usage.outputTokens,
          usage.cacheCreationInputTokens,
          usage.cacheReadInputTokens,
        ],
      );
      const row = res.rows[0];
      if (!row) {
        await new RunRepository(tx).get(tenantId, runId); // RUN_NOT_FOUND, or it already ended
        return undefined;
      }
      // Only a well-formed done event (an object) gets the cost; anything else is stored as given.
      const lastDone = events.findLastIndex((ev) => ev.type === 'done' && !Array.isArray(ev.data));
      const final = events.map((ev, i) =>
        i === lastDone ? { ...ev, data: { ...ev.data, cost_usd: Number(row.cost_usd) } } : ev,
      );
      const log = new EventRepository(tx);
      let stored: StoredEvent | undefined;
      for (const ev of final) stored = await log.append(tenantId, row.conversation_id, runId, ev);
      await new UsageRepository(tx).recordRun(
        tenantId,
        runId,
        usage,
        row.priced ? 'model_prices' : 'reported',
      );
      if (outcome.sessionId !== undefined || outcome.contextTokens !== undefined) {
        await tx.query(
          `UPDATE conversations SET session_id = COALESCE($3, session_id),
             context_tokens = COALESCE($4, context_tokens), updated_at = now()
           WHERE id = $1 AND tenant_id = $2`,
          [row.conversation_id, tenantId, outcome.sessionId ?? null, outcome.contextTokens ?? null],
        );
      }
      return stored;
    });
  }

  /**
   * Runs still marked running that started more than `olderThanMs` ago, oldest first, across
   * tenants: candidates for the reaper, which checks each one's lock token before finishing it.
   */
  async findStaleRunning(olderThanMs: number, limit = 100): Promise<StaleRun[]> {
    const res = await this.db.query<RunRow>(
      `SELECT id, tenant_id, conversation_id, lock_token, started_at FROM runs
       WHERE status = 'running' AND started_at < now() - $1 * interval '1 millisecond'
       ORDER BY started_at LIMIT $2`,
      [Math.max(olderThanMs, 0), Math.max(Math.trunc(limit), 1)],
    );
    return res.rows.map((r) => ({
      id: r.id,
      tenantId: r.tenant_id,
      conversationId: r.conversation_id,
      lockToken: r.lock_token,
      startedAt: iso(r.started_at),
    }));
  }

  /** How many runs of `tenantId` are marked running (for a reconciliation check; the live limit is in Redis). */
  async countRunning(tenantId: string): Promise<number> {
    if (!isUuid(tenantId)) return 0;
    const res = await this.db.query<{ n: string }>(
      "SELECT count(*) AS n FROM runs WHERE tenant_id = $1 AND status = 'running'",
      [tenantId],
    );
    return num(res.rows[0]?.n ?? 0);
  }
}
