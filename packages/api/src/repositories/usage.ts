// Usage records: one per ended run, written by RunRepository.finish in the transaction that stores
// the run's done event, so the records and the done events always agree. Costs are numeric(20, 8)
// in SQL and exact decimal text in TypeScript; sums are computed by PostgreSQL (never in floats).
import { AppError } from '@hako/core';
import type { Queryable } from '../db/pool.js';
import type { Usage, UsageRecord } from '../types.js';
import { isUuid, iso, num } from './common.js';

interface UsageRow {
  run_id: string;
  tenant_id: string;
  conversation_id: string;
  model_id: string | null;
  executor_user_id: string | null;
  executor_name: string | null;
  executor_email: string | null;
  status: UsageRecord['status'];
  input_tokens: string | number;
  output_tokens: string | number;
  cache_creation_input_tokens: string | number;
  cache_read_input_tokens: string | number;
  total_tokens: string | number;
  cost_usd: string;
  cost_source: UsageRecord['costSource'];
  duration_ms: string | number;
  turn_count: number;
  started_at: Date;
  ended_at: Date;
}

const COLUMNS = `run_id, tenant_id, conversation_id, model_id, executor_user_id, executor_name,
  executor_email, status, input_tokens, output_tokens, cache_creation_input_tokens,
  cache_read_input_tokens, total_tokens, cost_usd::text AS cost_usd, cost_source, duration_ms, turn_count,
  started_at, ended_at`;

function toRecord(r: UsageRow): UsageRecord {
  return {
    runId: r.run_id,
    tenantId: r.tenant_id,
    conversationId: r.conversation_id,
    modelId: r.model_id,
    executor:
      r.executor_user_id === null
        ? null
        : {
            userId: r.executor_user_id,
            ...(r.executor_name === null ? {} : { name: r.executor_name }),
            ...(r.executor_email === null ? {} : { email: r.executor_email }),
          },
    status: r.status,
    inputTokens: num(r.input_tokens),
    outputTokens: num(r.output_tokens),
    cacheCreationInputTokens: num(r.cache_creation_input_tokens),
    cacheReadInputTokens: num(r.cache_read_input_tokens),
    totalTokens: num(r.total_tokens),
    costUsd: r.cost_usd,
    costSource: r.cost_source,
    durationMs: num(r.duration_ms),
    turnCount: r.turn_count,
    startedAt: iso(r.started_at),
    endedAt: iso(r.ended_at),
  };
}

/** Token and cost totals of a group of usage records. */
export interface UsageTotals {
  runs: number;
  inputTokens: number;
  outputTokens: number;
  cacheCreationInputTokens: number;
  cacheReadInputTokens: number;
  totalTokens: number;
  /** Exact decimal text, 8 places. */
  costUsd: string;
}

interface TotalsRow {
  runs: string | number;
  input_tokens: string | null;
  output_tokens: string | null;
  cache_creation_input_tokens: string | null;
  cache_read_input_tokens: string | null;
  total_tokens: string | null;
  cost_usd: string | null;
}

const TOTALS = `count(*) AS runs, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
  sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
  sum(cache_read_input_tokens) AS cache_read_input_tokens, sum(total_tokens) AS total_tokens,
  sum(cost_usd)::text AS cost_usd`;

function toTotals(r: TotalsRow | undefined): UsageTotals {
  return {
    runs: num(r?.runs ?? 0),
    inputTokens: num(r?.input_tokens ?? 0),
    outputTokens: num(r?.output_tokens ?? 0),
    cacheCreationInputTokens: num(r?.cache_creation_input_tokens ?? 0),
    cacheReadInputTokens: num(r?.cache_read_input_tokens ?? 0),
    totalTokens: num(r?.total_tokens ?? 0),
    costUsd: r?.cost_usd ?? '0.00000000',
  };
}

export interface UsageFilter {
  /** Runs that ended at or after this time. */
  from?: string;
  /** Runs that ended before this time. */
  to?: string;
  conversationId?: string;
  userId?: string;
  modelId?: string;
}

export type UsageGroupBy = 'day' | 'model' | 'user';

const GROUP_KEY: Record<UsageGroupBy, string> = {
  day: "to_char(ended_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
  model: 'model_id',
  user: 'executor_user_id',
};

/** The WHERE clause of `filter` for tenant $1, its parameters starting at $2. */
function where(tenantId: string, filter: UsageFilter): { sql: string; params: unknown[] } {
  const params: unknown[] = [tenantId];
  const parts = ['tenant_id = $1'];
  const add = (cond: (i: number) => string, value: unknown): void => {
    params.push(value);
    parts.push(cond(params.length));
  };
  if (filter.from !== undefined) add((i) => `ended_at >= $${i}::timestamptz`, filter.from);
  if (filter.to !== undefined) add((i) => `ended_at < $${i}::timestamptz`, filter.to);
  if (filter.conversationId !== undefined) add((i) => `conversation_id = $${i}::uuid`, filter.conversationId);
  if (filter.userId !== undefined) add((i) => `executor_user_id = $${i}`, filter.userId);
  if (filter.modelId !== undefined) add((i) => `model_id = $${i}`, filter.modelId);
  return { sql: parts.join(' AND '), params };
}

export class UsageRepository {
  constructor(private readonly db: Queryable) {}

  /**
   * Writes the usage record of run `runId` from its row (which must have ended: status, cost_usd,
   * duration and ended_at set) and `usage`. Called by RunRepository.finish inside its transaction.
   */
  async recordRun(
    tenantId: string,
    runId: string,
    usage: Usage,
    costSource: UsageRecord['costSource'],
  ): Promise<void> {
    const total =
      usage.inputTokens + usage.outputTokens + usage.cacheCreationInputTokens + usage.cacheReadInputTokens;
    await this.db.query(
      `INSERT INTO usage_records (run_id, tenant_id, conversation_id, model_id, executor_user_id, executor_name,
         executor_email, status, input_tokens, output_tokens, cache_creation_input_tokens,
         cache_read_input_tokens, total_tokens, cost_usd, cost_source, duration_ms, turn_count, started_at,
         ended_at)
       SELECT r.id, r.tenant_id, r.conversation_id, r.model_id, r.executor_user_id, r.executor_name,
         r.executor_email, r.status, $3, $4, $5, $6, $7, r.cost_usd, $8, COALESCE(r.duration_ms, 0),
         COALESCE(r.turn_count, 0), r.started_at, r.ended_at
       FROM runs r WHERE r.id = $1 AND r.tenant_id = $2 AND r.status <> 'running'`,
      [
        runId,
        tenantId,
        usage.inputTokens,
        usage.outputTokens,
        usage.cacheCreationInputTokens,
        usage.cacheReadInputTokens,
        total,
        costSource,
      ],
    );
  }

  /** The record of one run, or undefined. */
  async get(tenantId: string, runId: string): Promise<UsageRecord | undefined> {
    if (!isUuid(tenantId) || !isUuid(runId)) return undefined;
    const res = await this.db.query<UsageRow>(
      `SELECT ${COLUMNS} FROM usage_records WHERE tenant_id = $1 AND run_id = $2`,
      [tenantId, runId],
    );
    const row = res.rows[0];
    return row ? toRecord(row) : undefined;
  }

  /**
   * The tenant's records matching `filter`, newest first (by end time), at most `limit` (1-500).
   * `cursor` (the last run id of the previous page) continues after it; INVALID_ARGUMENT when it
   * is not one of the tenant's records.
   */
  async list(
    tenantId: string,
    filter: UsageFilter,
    page: { limit?: number; cursor?: string } = {},
  ): Promise<UsageRecord[]> {
    if (!isUuid(tenantId)) return [];
    const limit = Math.min(Math.max(Math.trunc(page.limit ?? 50), 1), 500);
    const w = where(tenantId, filter);
    const params = [...w.params];
    let after = '';
    if (page.cursor !== undefined) {
      const c = isUuid(page.cursor)
        ? await this.db.query<{ ended_at: Date }>(
            'SELECT ended_at FROM usage_records WHERE tenant_id = $1 AND run_id = $2',
            [tenantId, page.cursor],
          )
        : undefined;
      if (!c || c.rows.length === 0) {
        throw new AppError('INVALID_ARGUMENT', 'cursor is not a next_cursor of this usage list', {
          details: { field: 'querystring.cursor' },
        });
      }
      params.push(page.cursor);
      const i = params.length;
      after = ` AND (ended_at, run_id) < (SELECT ended_at, run_id FROM usage_records WHERE run_id = $${i}::uuid)`;
    }
    params.push(limit);
    const res = await this.db.query<UsageRow>(
      `SELECT ${COLUMNS} FROM usage_records WHERE ${w.sql}${after}
       ORDER BY ended_at DESC, run_id DESC LIMIT $${params.length}`,
      params,
    );
    return res.rows.map(toRecord);
  }

  /** Totals per day (UTC, YYYY-MM-DD), model id or executor user id, in key order (null last). */
  async summary(
    tenantId: string,
    groupBy: UsageGroupBy,
    filter: Pick<UsageFilter, 'from' | 'to'>,
  ): Promise<{ groups: (UsageTotals & { key: string | null })[]; totals: UsageTotals }> {
    if (!isUuid(tenantId)) return { groups: [], totals: toTotals(undefined) };
    const w = where(tenantId, filter);
    const key = GROUP_KEY[groupBy];
    const res = await this.db.query<TotalsRow & { key: string | null }>(
      `SELECT ${key} AS key, ${TOTALS} FROM usage_records WHERE ${w.sql}
       GROUP BY 1 ORDER BY 1 NULLS LAST`,
      w.params,
    );
    const totals = await this.db.query<TotalsRow>(
      `SELECT ${TOTALS} FROM usage_records WHERE ${w.sql}`,
      w.params,
    );
    return {
      groups: res.rows.map((r) => ({ key: r.key, ...toTotals(r) })),
      totals: toTotals(totals.rows[0]),
    };
  }

  /** The period's totals and the same per model (with the model's display name when registered). */
  async costReport(
    tenantId: string,
    filter: Pick<UsageFilter, 'from' | 'to'>,
  ): Promise<{
    totals: UsageTotals;
    byModel: (UsageTotals & { modelId: string | null; displayName: string | null })[];
  }> {
    const { totals } = await this.summary(tenantId, 'day', filter);
    if (!isUuid(tenantId)) return { totals, byModel: [] };
    const w = where(tenantId, filter);
    // Unqualified names in w.sql and TOTALS are usage_records' own (models has none of them).
    const res = await this.db.query<TotalsRow & { key: string | null; display_name: string | null }>(
      `SELECT usage_records.model_id AS key, models.display_name, ${TOTALS}
       FROM usage_records LEFT JOIN models ON models.id = usage_records.model_id
       WHERE ${w.sql} GROUP BY usage_records.model_id, models.display_name ORDER BY 1 NULLS LAST`,
      w.params,
    );
    return {
      totals,
      byModel: res.rows.map((r) => ({ ...toTotals(r), modelId: r.key, displayName: r.display_name })),
    };
  }
}
