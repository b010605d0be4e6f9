// The tool-call log: EventRepository.append records each tool_call event as a started call and
// completes it with its tool_result event (output summary, is_error, duration), in the same
// transaction as the event. Calls made inside a sub-agent keep its tool_use id as their parent.
import { AppError } from '@hako/core';
import type { Queryable } from '../db/pool.js';
import type { StoredEvent, ToolCallLog } from '../types.js';
import { assertConversation, isUuid, iso, isoOrNull, num, numOrNull, toJsonb } from './common.js';

/** How much of a tool's output the log keeps (UTF-8 bytes). */
export const TOOL_OUTPUT_SUMMARY_BYTES = 2048;

/** The largest tool input (JSON text, bytes) the log keeps whole; the event keeps all of it. */
export const TOOL_INPUT_MAX_BYTES = 16 * 1024;

/**
 * The input as the log keeps it: whole up to TOOL_INPUT_MAX_BYTES of JSON, else
 * `{truncated: true, json_bytes, preview}` (the first 2 KiB of its JSON text).
 */
export function loggedInput(input: unknown): unknown {
  const json = JSON.stringify(input ?? {});
  const bytes = Buffer.byteLength(json, 'utf8');
  if (bytes <= TOOL_INPUT_MAX_BYTES) return input ?? {};
  return { truncated: true, json_bytes: bytes, preview: outputSummary(json).summary };
}

/** The first `max` UTF-8 bytes of `text`, never splitting a character. */
export function outputSummary(
  text: string,
  max = TOOL_OUTPUT_SUMMARY_BYTES,
): { summary: string; truncated: boolean } {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= max) return { summary: text, truncated: false };
  let end = max;
  // Back up to the start of a character (continuation bytes are 10xxxxxx).
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  return { summary: bytes.subarray(0, end).toString('utf8'), truncated: true };
}

interface ToolRow {
  run_id: string;
  conversation_id: string;
  tool_use_id: string;
  call_seq: string | number;
  name: string;
  input: unknown;
  parent_tool_use_id: string | null;
  output_summary: string | null;
  output_truncated: boolean;
  is_error: boolean | null;
  started_at: Date;
  ended_at: Date | null;
  duration_ms: string | number | null;
}

function toLog(r: ToolRow): ToolCallLog {
  return {
    runId: r.run_id,
    conversationId: r.conversation_id,
    toolUseId: r.tool_use_id,
    seq: num(r.call_seq),
    name: r.name,
    input: r.input,
    parentToolUseId: r.parent_tool_use_id,
    outputSummary: r.output_summary,
    outputTruncated: r.output_truncated,
    isError: r.is_error,
    startedAt: iso(r.started_at),
    endedAt: isoOrNull(r.ended_at),
    durationMs: numOrNull(r.duration_ms),
  };
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

export class ToolLogRepository {
  constructor(private readonly db: Queryable) {}

  /**
   * Records what a stored event says about a tool call: a tool_call starts one, a tool_result
   * completes the run's call with that id. Other events, and events without a tool_use id, change
   * nothing. A second tool_call with an id the run already logged is ignored.
   */
  async recordEvent(tenantId: string, ev: StoredEvent): Promise<void> {
    const id = str(ev.data.id);
    if (id === undefined) return;
    if (ev.type === 'tool_call') {
      await this.db.query(
        `INSERT INTO tool_calls (run_id, tool_use_id, conversation_id, tenant_id, call_seq, name, input,
           parent_tool_use_id, started_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9::timestamptz)
         ON CONFLICT (run_id, tool_use_id) DO NOTHING`,
        [
          ev.runId,
          id.slice(0, 200),
          ev.conversationId,
          tenantId,
          ev.seq,
          str(ev.data.name) ?? '',
          toJsonb(loggedInput(ev.data.input)),
          str(ev.data.parent_tool_use_id) ?? null,
          ev.timestamp,
        ],
      );
    } else if (ev.type === 'tool_result') {
      const output = typeof ev.data.output === 'string' ? ev.data.output : '';
      const { summary, truncated } = outputSummary(output);
      await this.db.query(
        `UPDATE tool_calls SET output_summary = $3, output_truncated = $4, is_error = $5,
           ended_at = $6::timestamptz,
           duration_ms = GREATEST(0, (extract(epoch FROM $6::timestamptz - started_at) * 1000)::bigint)
         WHERE run_id = $1 AND tool_use_id = $2 AND ended_at IS NULL`,
        [
          ev.runId,
          id.slice(0, 200),
          summary.replace(/\0/g, '\uFFFD'),
          truncated || ev.data.truncated === true,
          ev.data.is_error === true,
          ev.timestamp,
        ],
      );
    }
  }

  /**
   * The conversation's tool calls in call order (only run `runId`'s when given), at most `limit`
   * (1-500), after the call whose event seq is `afterSeq`. CONVERSATION_NOT_FOUND when the
   * conversation is not `tenantId`'s.
   */
  async list(
    tenantId: string,
    conversationId: string,
    options: { runId?: string; afterSeq?: number; limit?: number } = {},
  ): Promise<ToolCallLog[]> {
    await assertConversation(this.db, tenantId, conversationId);
    if (options.runId !== undefined && !isUuid(options.runId)) {
      throw new AppError(
        'RUN_NOT_FOUND',
        `Run ${options.runId.slice(0, 64)} does not exist in this conversation`,
      );
    }
    const limit = Math.min(Math.max(Math.trunc(options.limit ?? 100), 1), 500);
    const res = await this.db.query<ToolRow>(
      `SELECT run_id, conversation_id, tool_use_id, call_seq, name, input, parent_tool_use_id, output_summary,
         output_truncated, is_error, started_at, ended_at, duration_ms
       FROM tool_calls
       WHERE conversation_id = $1 AND tenant_id = $2 AND ($3::uuid IS NULL OR run_id = $3) AND call_seq > $4
       ORDER BY call_seq LIMIT $5`,
      [
        conversationId,
        tenantId,
        options.runId ?? null,
        Math.max(Math.trunc(options.afterSeq ?? 0), 0),
        limit,
      ],
    );
    return res.rows.map(toLog);
  }
}
