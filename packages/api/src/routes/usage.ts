/**
 * The tenant's usage and cost (tenant key): one record per ended run, sums by day, model or user,
 * and a period's cost report. Costs are computed and summed by PostgreSQL in exact decimals
 * (numeric, 8 places) and sent as JSON numbers with at most 8 decimals: the cost of a run is the
 * `cost_usd` of its `done` event, and every sum here equals the exact decimal sum of those.
 */
import { AppError } from '@hako/core';
import type { FastifyInstance } from 'fastify';
import { tenantIdOf } from '../http/auth.js';
import type { UsageRecord } from '../types.js';
import type { UsageFilter, UsageGroupBy, UsageRepository, UsageTotals } from '../repositories/usage.js';
import { pagedResponseSchema } from '../http/pagination.js';

export interface UsageRouteDeps {
  usage: Pick<UsageRepository, 'list' | 'summary' | 'costReport'>;
}

const EXAMPLE_TIME = '2025-01-01T12:00:00.000Z';
const EXAMPLE_RUN = '5d1c9e2a-3b4f-4a6d-8e7f-0a1b2c3d4e5f';
const EXAMPLE_CONVERSATION = '0b6f3d2e-5a4c-4e8b-9f1a-2c3d4e5f6a7b';

const COST_NOTE =
  'USD, exact to 8 decimals (a JSON number with at most 8 decimals; sum it with decimal arithmetic).';

const timeParam = {
  type: 'string',
  maxLength: 40,
} as const;

const periodProps = {
  from: {
    ...timeParam,
    description: 'Runs that ended at or after this time: `YYYY-MM-DD` (UTC midnight) or an RFC 3339 time.',
  },
  to: { ...timeParam, description: 'Runs that ended before this time (same formats as from).' },
} as const;

const totalsProps = {
  runs: { type: 'integer' },
  input_tokens: { type: 'integer' },
  output_tokens: { type: 'integer' },
  cache_creation_input_tokens: { type: 'integer' },
  cache_read_input_tokens: { type: 'integer' },
  total_tokens: { type: 'integer' },
  cost_usd: { type: 'number', description: COST_NOTE },
} as const;
const totalsRequired = Object.keys(totalsProps);
const totalsSchema = { type: 'object', required: totalsRequired, properties: totalsProps } as const;

const recordSchema = {
  type: 'object',
  required: [
    'run_id',
    'conversation_id',
    'model_id',
    'executor',
    'status',
    'input_tokens',
    'output_tokens',
    'cache_creation_input_tokens',
    'cache_read_input_tokens',
    'total_tokens',
    'cost_usd',
    'cost_source',
    'duration_ms',
    'turn_count',
    'started_at',
    'ended_at',
  ],
  properties: {
    run_id: { type: 'string', format: 'uuid' },
    conversation_id: { type: 'string', format: 'uuid' },
    model_id: { type: ['string', 'null'], description: 'null: no model was configured (Claude Code chose).' },
    executor: {
      type: ['object', 'null'],
      description: "The execute's executor.",
      properties: {
        user_id: { type: 'string' },
        name: { type: 'string' },
        email: { type: 'string' },
      },
    },
    status: { type: 'string', enum: ['completed', 'failed', 'cancelled'] },
    input_tokens: { type: 'integer' },
    output_tokens: { type: 'integer' },
    cache_creation_input_tokens: { type: 'integer' },
    cache_read_input_tokens: { type: 'integer' },
    total_tokens: { type: 'integer' },
    cost_usd: { type: 'number', description: COST_NOTE },
    cost_source: {
      type: 'string',
      enum: ['model_prices', 'reported'],
      description:
        "`model_prices`: the tokens priced with the model's registry prices; `reported`: the model is unregistered or unpriced, so Claude Code's own figure.",
    },
    duration_ms: { type: 'integer' },
    turn_count: { type: 'integer' },
    started_at: { type: 'string', format: 'date-time' },
    ended_at: { type: 'string', format: 'date-time' },
  },
} as const;

const DATE_RE = /^\d{4}-\d{2}-\d{2}$/;
const TIME_RE = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})$/;

/** A from/to parameter as an ISO timestamp; INVALID_ARGUMENT when it is neither format. */
export function parseTime(value: string | undefined, field: string): string | undefined {
  if (value === undefined) return undefined;
  const text = DATE_RE.test(value) ? `${value}T00:00:00Z` : value;
  const ms = DATE_RE.test(value) || TIME_RE.test(value) ? Date.parse(text) : NaN;
  if (!Number.isFinite(ms)) {
    throw new AppError(
      'INVALID_ARGUMENT',
      `querystring.${field} must be YYYY-MM-DD or an RFC 3339 time such as 2025-01-31T00:00:00Z`,
      { details: { field: `querystring.${field}` } },
    );
  }
  return new Date(ms).toISOString();
}

function period(q: { from?: string; to?: string }): { from?: string; to?: string } {
  const out: { from?: string; to?: string } = {};
  const from = parseTime(q.from, 'from');
  const to = parseTime(q.to, 'to');
  if (from !== undefined) out.from = from;
  if (to !== undefined) out.to = to;
  return out;
}

function totalsToWire(t: UsageTotals): Record<string, unknown> {
  return {
    runs: t.runs,
    input_tokens: t.inputTokens,
    output_tokens: t.outputTokens,
    cache_creation_input_tokens: t.cacheCreationInputTokens,
    cache_read_input_tokens: t.cacheReadInputTokens,
    total_tokens: t.totalTokens,
    cost_usd: Number(t.costUsd),
  };
}

export function usageToWire(r: UsageRecord): Record<string, unknown> {
  return {
    run_id: r.runId,
    conversation_id: r.conversationId,
    model_id: r.modelId,
    executor:
      r.executor === null
        ? null
        : {
            user_id: r.executor.userId,
            ...(r.executor.name === undefined ? {} : { name: r.executor.name }),
            ...(r.executor.email === undefined ? {} : { email: r.executor.email }),
          },
    status: r.status,
    input_tokens: r.inputTokens,
    output_tokens: r.outputTokens,
    cache_creation_input_tokens: r.cacheCreationInputTokens,
    cache_read_input_tokens: r.cacheReadInputTokens,
    total_tokens: r.totalTokens,
    cost_usd: Number(r.costUsd),
    cost_source: r.costSource,
    duration_ms: r.durationMs,
    turn_count: r.turnCount,
    started_at: r.startedAt,
    ended_at: r.endedAt,
  };
}

const exampleTotals = {
  runs: 2,
  input_tokens: 3040,
  output_tokens: 192,
  cache_creation_input_tokens: 0,
  cache_read_input_tokens: 0,
  total_tokens: 3232,
  cost_usd: 0.012,
};

export function registerUsageRoutes(app: FastifyInstance, deps: UsageRouteDeps): void {
  app.get<{
    Querystring: {
      from?: string;
      to?: string;
      conversation_id?: string;
      user_id?: string;
      model_id?: string;
      limit?: number;
      cursor?: string;
    };
  }>(
    '/v1/usage',
    {
      schema: {
        summary: "The tenant's usage records, one per ended run, newest first",
        description:
          "Every run (completed, failed or cancelled) has one record, written with its done event: the record's cost_usd is the done event's. Page with `cursor` = the previous answer's `next_cursor`.",
        tags: ['usage'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ...periodProps,
            conversation_id: { type: 'string', format: 'uuid', description: 'Only this conversation.' },
            user_id: {
              type: 'string',
              minLength: 1,
              maxLength: 200,
              description: "Only this executor's runs.",
            },
            model_id: {
              type: 'string',
              minLength: 1,
              maxLength: 200,
              description: 'Only runs of this model.',
            },
            limit: { type: 'integer', minimum: 1, maximum: 500, default: 50, description: 'Page size.' },
            cursor: {
              type: 'string',
              maxLength: 100,
              description: 'The `next_cursor` of the previous page.',
            },
          },
        },
        response: {
          200: pagedResponseSchema('usage', recordSchema),
        },
      },
      config: {
        auth: 'tenant',
        docs: {
          example: {
            query: { from: '2025-01-01', user_id: 'u-42', limit: '1' },
            response: {
              status: 200,
              body: {
                usage: [
                  {
                    run_id: EXAMPLE_RUN,
                    conversation_id: EXAMPLE_CONVERSATION,
                    model_id: 'claude-sonnet-4-5',
                    executor: { user_id: 'u-42', name: 'Ada', email: 'ada@example.com' },
                    status: 'completed',
                    input_tokens: 1520,
                    output_tokens: 96,
                    cache_creation_input_tokens: 0,
                    cache_read_input_tokens: 0,
                    total_tokens: 1616,
                    cost_usd: 0.006,
                    cost_source: 'model_prices',
                    duration_ms: 2410,
                    turn_count: 2,
                    started_at: EXAMPLE_TIME,
                    ended_at: '2025-01-01T12:00:02.410Z',
                  },
                ],
                next_cursor: EXAMPLE_RUN,
              },
            },
          },
        },
      },
    },
    async (req) => {
      const q = req.query;
      const filter: UsageFilter = period(q);
      if (q.conversation_id !== undefined) filter.conversationId = q.conversation_id;
      if (q.user_id !== undefined) filter.userId = q.user_id;
      if (q.model_id !== undefined) filter.modelId = q.model_id;
      const limit = q.limit ?? 50;
      const page: { limit: number; cursor?: string } = { limit };
      if (q.cursor !== undefined) page.cursor = q.cursor;
      const list = await deps.usage.list(tenantIdOf(req), filter, page);
      return {
        usage: list.map(usageToWire),
        next_cursor: list.length === limit ? (list.at(-1)?.runId ?? null) : null,
      };
    },
  );

  app.get<{ Querystring: { group_by: UsageGroupBy; from?: string; to?: string } }>(
    '/v1/usage/summary',
    {
      schema: {
        summary: 'Tokens, cost and runs per day, model or user',
        description:
          '`day` groups by the UTC date a run ended (`YYYY-MM-DD`); `model` by model id; `user` by executor user id. A null key collects runs without one. `totals` covers every group.',
        tags: ['usage'],
        querystring: {
          type: 'object',
          required: ['group_by'],
          additionalProperties: false,
          properties: {
            group_by: { type: 'string', enum: ['day', 'model', 'user'] },
            ...periodProps,
          },
        },
        response: {
          200: {
            type: 'object',
            required: ['group_by', 'groups', 'totals'],
            properties: {
              group_by: { type: 'string' },
              from: { type: 'string', format: 'date-time' },
              to: { type: 'string', format: 'date-time' },
              groups: {
                type: 'array',
                items: {
                  type: 'object',
                  required: ['key', ...totalsRequired],
                  properties: { key: { type: ['string', 'null'] }, ...totalsProps },
                },
              },
              totals: totalsSchema,
            },
          },
        },
      },
      config: {
        auth: 'tenant',
        docs: {
          example: {
            query: { group_by: 'user', from: '2025-01-01', to: '2025-02-01' },
            response: {
              status: 200,
              body: {
                group_by: 'user',
                from: '2025-01-01T00:00:00.000Z',
                to: '2025-02-01T00:00:00.000Z',
                groups: [{ key: 'u-42', ...exampleTotals }],
                totals: exampleTotals,
              },
            },
          },
        },
      },
    },
    async (req) => {
      const p = period(req.query);
      const { groups, totals } = await deps.usage.summary(tenantIdOf(req), req.query.group_by, p);
      return {
        group_by: req.query.group_by,
        ...p,
        groups: groups.map((g) => ({ key: g.key, ...totalsToWire(g) })),
        totals: totalsToWire(totals),
      };
    },
  );

  app.get<{ Querystring: { from?: string; to?: string } }>(
    '/v1/usage/cost-report',
    {
      schema: {
        summary: "The period's cost: totals and per model",
        tags: ['usage'],
        querystring: { type: 'object', additionalProperties: false, properties: { ...periodProps } },
        response: {
          200: {
            type: 'object',
            required: ['currency', 'totals', 'by_model'],
            properties: {
              currency: { type: 'string', enum: ['USD'] },
              from: { type: 'string', format: 'date-time' },
              to: { type: 'string', format: 'date-time' },
              totals: totalsSchema,
              by_model: {
                type: 'array',
                items: {
                  type: 'object',
                  required: ['model_id', 'display_name', ...totalsRequired],
                  properties: {
                    model_id: { type: ['string', 'null'] },
                    display_name: { type: ['string', 'null'], description: 'null when unregistered.' },
                    ...totalsProps,
                  },
                },
              },
            },
          },
        },
      },
      config: {
        auth: 'tenant',
        docs: {
          example: {
            query: { from: '2025-01-01', to: '2025-02-01' },
            response: {
              status: 200,
              body: {
                currency: 'USD',
                from: '2025-01-01T00:00:00.000Z',
                to: '2025-02-01T00:00:00.000Z',
                totals: exampleTotals,
                by_model: [
                  { model_id: 'claude-sonnet-4-5', display_name: 'Claude Sonnet 4.5', ...exampleTotals },
                ],
              },
            },
          },
        },
      },
    },
    async (req) => {
      const p = period(req.query);
      const r = await deps.usage.costReport(tenantIdOf(req), p);
      return {
        currency: 'USD',
        ...p,
        totals: totalsToWire(r.totals),
        by_model: r.byModel.map((m) => ({
          model_id: m.modelId,
          display_name: m.displayName,
          ...totalsToWire(m),
        })),
      };
    },
  );
}
