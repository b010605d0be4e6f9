/**
 * `GET /v1/conversations/{id}/tool-logs`: every tool call the agent made in the conversation, in
 * call order, from the stored tool_call and tool_result events (sub-agent calls carry their
 * parent's tool_use id).
 */
import type { FastifyInstance } from 'fastify';
import { AppError } from '@hako/core';
import { tenantIdOf } from '../http/auth.js';
import type { ToolCallLog } from '../types.js';
import type { ToolLogRepository } from '../repositories/tool-logs.js';
import { TOOL_OUTPUT_SUMMARY_BYTES } from '../repositories/tool-logs.js';
import { pagedResponseSchema } from '../http/pagination.js';

export interface ToolLogRouteDeps {
  toolLogs: Pick<ToolLogRepository, 'list'>;
}

const EXAMPLE_CONVERSATION = '0b6f3d2e-5a4c-4e8b-9f1a-2c3d4e5f6a7b';
const EXAMPLE_RUN = '5d1c9e2a-3b4f-4a6d-8e7f-0a1b2c3d4e5f';

const toolLogSchema = {
  type: 'object',
  required: [
    'tool_use_id',
    'run_id',
    'seq',
    'name',
    'input',
    'parent_tool_use_id',
    'output_summary',
    'output_truncated',
    'is_error',
    'started_at',
    'ended_at',
    'duration_ms',
  ],
  properties: {
    tool_use_id: { type: 'string' },
    run_id: { type: 'string', format: 'uuid' },
    seq: { type: 'integer', description: 'The seq of the tool_call event.' },
    name: { type: 'string' },
    input: {
      description:
        'The tool input as the model sent it; over 16 KiB of JSON: `{truncated: true, json_bytes, preview}` (the tool_call event has it whole).',
    },
    parent_tool_use_id: {
      type: ['string', 'null'],
      description: 'The sub-agent (Task/Agent) call this call was made inside; null on the main thread.',
    },
    output_summary: {
      type: ['string', 'null'],
      description: `The first ${TOOL_OUTPUT_SUMMARY_BYTES} bytes of the output; null while (or if) no result came.`,
    },
    output_truncated: { type: 'boolean' },
    is_error: { type: ['boolean', 'null'] },
    started_at: { type: 'string', format: 'date-time' },
    ended_at: {
      type: ['string', 'null'],
      format: 'date-time',
      description: 'null: the call has no result (still running, or its run ended first).',
    },
    duration_ms: { type: ['integer', 'null'] },
  },
} as const;

export function toolLogToWire(t: ToolCallLog): Record<string, unknown> {
  return {
    tool_use_id: t.toolUseId,
    run_id: t.runId,
    seq: t.seq,
    name: t.name,
    input: t.input,
    parent_tool_use_id: t.parentToolUseId,
    output_summary: t.outputSummary,
    output_truncated: t.outputTruncated,
    is_error: t.isError,
    started_at: t.startedAt,
    ended_at: t.endedAt,
    duration_ms: t.durationMs,
  };
}

export function registerToolLogRoutes(app: FastifyInstance, deps: ToolLogRouteDeps): void {
  app.get<{ Params: { id: string }; Querystring: { run_id?: string; limit?: number; cursor?: string } }>(
    '/v1/conversations/:id/tool-logs',
    {
      schema: {
        summary: "The conversation's tool calls, in call order",
        description: "Page with `cursor` = the previous answer's `next_cursor`.",
        tags: ['conversations'],
        params: {
          type: 'object',
          required: ['id'],
          additionalProperties: false,
          properties: { id: { type: 'string', format: 'uuid', description: 'The conversation id.' } },
        },
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            run_id: { type: 'string', format: 'uuid', description: "Only this run's calls." },
            limit: { type: 'integer', minimum: 1, maximum: 500, default: 100, description: 'Page size.' },
            cursor: {
              type: 'string',
              pattern: '^[0-9]{1,18}$',
              description: 'The `next_cursor` of the previous page.',
            },
          },
        },
        response: {
          200: pagedResponseSchema('tool_logs', toolLogSchema),
        },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['CONVERSATION_NOT_FOUND'],
          example: {
            params: { id: EXAMPLE_CONVERSATION },
            query: { limit: '1' },
            response: {
              status: 200,
              body: {
                tool_logs: [
                  {
                    tool_use_id: 'toolu_01',
                    run_id: EXAMPLE_RUN,
                    seq: 7,
                    name: 'Bash',
                    input: { command: 'python3 hello.py' },
                    parent_tool_use_id: null,
                    output_summary: 'hello\n',
                    output_truncated: false,
                    is_error: false,
                    started_at: '2025-01-01T12:00:01.000Z',
                    ended_at: '2025-01-01T12:00:01.250Z',
                    duration_ms: 250,
                  },
                ],
                next_cursor: '7',
              },
            },
          },
        },
      },
    },
    async (req) => {
      const q = req.query;
      const limit = q.limit ?? 100;
      const afterSeq = q.cursor === undefined ? 0 : Number(q.cursor);
      if (!Number.isSafeInteger(afterSeq)) {
        throw new AppError('INVALID_ARGUMENT', 'querystring.cursor is not a next_cursor of this list', {
          details: { field: 'querystring.cursor' },
        });
      }
      const list = await deps.toolLogs.list(tenantIdOf(req), req.params.id, {
        ...(q.run_id === undefined ? {} : { runId: q.run_id }),
        afterSeq,
        limit,
      });
      return {
        tool_logs: list.map(toolLogToWire),
        next_cursor: list.length === limit ? String(list.at(-1)?.seq) : null,
      };
    },
  );
}
