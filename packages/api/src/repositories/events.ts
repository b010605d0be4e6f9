// The conversation event log behind SSE and its replay. seq is assigned from a per-conversation
// counter (conversations.last_event_seq) incremented in the same statement that inserts the
// event: the row lock makes concurrent appends (any number of processes) queue up, and a failed
// insert rolls the increment back, so seqs are 1, 2, 3... without gaps or duplicates.
import { AppError } from '@hako/core';
import type { Queryable } from '../db/pool.js';
import { PG_ERROR, pgErrorCode } from '../db/pool.js';
import type { AgentEvent, EventType, StoredEvent } from '../types.js';
import { EVENT_TYPES } from '../types.js';
import { conversationNotFound, isUuid, iso, num, toJsonb } from './common.js';
import { ToolLogRepository } from './tool-logs.js';

interface EventRow {
  conversation_id: string;
  seq: string | number;
  run_id: string;
  type: EventType;
  data: Record<string, unknown>;
  sdk_message: unknown;
  created_at: Date;
}

function toEvent(r: EventRow): StoredEvent {
  const ev: StoredEvent = {
    conversationId: r.conversation_id,
    runId: r.run_id,
    seq: num(r.seq),
    timestamp: iso(r.created_at),
    type: r.type,
    data: r.data,
  };
  if (r.sdk_message !== null && r.sdk_message !== undefined) ev.sdkMessage = r.sdk_message;
  return ev;
}

function runNotFound(runId: string): AppError {
  return new AppError('RUN_NOT_FOUND', `Run ${runId.slice(0, 64)} does not exist in this conversation`);
}

export class EventRepository {
  constructor(private readonly db: Queryable) {}

  /**
   * Stores `event` as the conversation's next event and answers it with its seq and timestamp.
   * CONVERSATION_NOT_FOUND when the conversation is not `tenantId`'s, RUN_NOT_FOUND when the run
   * is not the conversation's, INVALID_ARGUMENT for an unknown type. Inside a transaction the
   * conversation's counter stays locked until it ends (appends of other runs wait). A tool_call
   * or tool_result event also writes the tool-call log (tool-logs.ts), in one transaction.
   */
  async append(
    tenantId: string,
    conversationId: string,
    runId: string,
    event: AgentEvent,
  ): Promise<StoredEvent> {
    if (!isUuid(tenantId) || !isUuid(conversationId)) throw conversationNotFound(conversationId);
    if (!isUuid(runId)) throw runNotFound(runId);
    if (!(EVENT_TYPES as readonly string[]).includes(event.type)) {
      throw new AppError('INVALID_ARGUMENT', `Unknown event type ${String(event.type).slice(0, 40)}`);
    }
    if (event.type === 'tool_call' || event.type === 'tool_result') {
      // The tool-call log is written with the event: both or neither.
      return this.db.transaction(async (tx) => {
        const stored = await new EventRepository(tx).insert(tenantId, conversationId, runId, event);
        await new ToolLogRepository(tx).recordEvent(tenantId, stored);
        return stored;
      });
    }
    return this.insert(tenantId, conversationId, runId, event);
  }

  private async insert(
    tenantId: string,
    conversationId: string,
    runId: string,
    event: AgentEvent,
  ): Promise<StoredEvent> {
    try {
      const res = await this.db.query<EventRow>(
        `WITH c AS (
           UPDATE conversations SET last_event_seq = last_event_seq + 1
           WHERE id = $1 AND tenant_id = $2
           RETURNING id, last_event_seq
         )
         INSERT INTO conversation_events (conversation_id, seq, run_id, type, data, sdk_message)
         SELECT c.id, c.last_event_seq, $3, $4, $5::jsonb, $6::jsonb FROM c
         RETURNING conversation_id, seq, run_id, type, data, sdk_message, created_at`,
        [conversationId, tenantId, runId, event.type, toJsonb(event.data), toJsonb(event.sdkMessage)],
      );
      const row = res.rows[0];
      if (!row) throw conversationNotFound(conversationId);
      return toEvent(row);
    } catch (err) {
      if (pgErrorCode(err) === PG_ERROR.FOREIGN_KEY_VIOLATION) throw runNotFound(runId);
      throw err;
    }
  }

  /**
   * Events with seq > `afterSeq` (0 for all), in seq order, at most `limit` (default 1000, at
   * most 10000). CONVERSATION_NOT_FOUND when the conversation is not `tenantId`'s; an empty
   * array when nothing is newer.
   */
  async listAfter(
    tenantId: string,
    conversationId: string,
    afterSeq = 0,
    limit = 1000,
  ): Promise<StoredEvent[]> {
    if (!isUuid(tenantId) || !isUuid(conversationId)) throw conversationNotFound(conversationId);
    const max = Math.min(Math.max(Math.trunc(limit), 1), 10_000);
    const after = Math.max(Math.trunc(afterSeq), 0);
    // One query answers both "not this tenant's" (no row) and "nothing newer" (one row of nulls).
    const res = await this.db.query<EventRow & { cid: string }>(
      `SELECT c.id AS cid, e.conversation_id, e.seq, e.run_id, e.type, e.data, e.sdk_message, e.created_at
       FROM conversations c
       LEFT JOIN LATERAL (
         SELECT * FROM conversation_events ev
         WHERE ev.conversation_id = c.id AND ev.seq > $3
         ORDER BY ev.seq LIMIT $4
       ) e ON true
       WHERE c.id = $1 AND c.tenant_id = $2
       ORDER BY e.seq`,
      [conversationId, tenantId, after, max],
    );
    if (res.rows.length === 0) throw conversationNotFound(conversationId);
    return res.rows.filter((r) => r.seq !== null).map(toEvent);
  }

  /** The seq of the conversation's last event (0 before the first); CONVERSATION_NOT_FOUND when not the tenant's. */
  async lastSeq(tenantId: string, conversationId: string): Promise<number> {
    if (!isUuid(tenantId) || !isUuid(conversationId)) throw conversationNotFound(conversationId);
    const res = await this.db.query<{ last_event_seq: string | number }>(
      'SELECT last_event_seq FROM conversations WHERE id = $1 AND tenant_id = $2',
      [conversationId, tenantId],
    );
    const row = res.rows[0];
    if (!row) throw conversationNotFound(conversationId);
    return num(row.last_event_seq);
  }
}
