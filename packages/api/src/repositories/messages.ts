// A conversation's message history, derived from what is stored: each run's prompt (runs.prompt)
// and the agent's messages rebuilt from its events (assistant, thinking, tool_call, tool_result),
// oldest first, in Messages API content blocks. Nothing is stored twice.
//
// Order and pagination: every message has a position. A run's prompt sits just before the run's
// first event (position 2·seq − 1); a message made of events sits at its last event (2·seq).
// Events of one kind, role and sub-agent in a row make one message (an assistant message holds
// its text, thinking and tool_use blocks; a tool message holds the tool results that follow), as
// the Messages API groups them. A page ends only between two messages, and its cursor is the
// position of its last message: the next page is every message after it.
import { AppError } from '@hako/core';
import type { Queryable } from '../db/pool.js';
import { conversationNotFound, isUuid, iso, num } from './common.js';

/** A Messages API content block (tool_result carries the tool's output as text). */
export type MessageBlock =
  | { type: 'text'; text: string }
  | { type: 'thinking'; thinking: string }
  | { type: 'redacted_thinking' }
  | { type: 'tool_use'; id: string; name: string; input: unknown }
  | { type: 'tool_result'; tool_use_id: string; content: string; is_error: boolean; truncated?: boolean };

export interface Message {
  /** `{run_id}:prompt` for a prompt, `{run_id}:{seq of its first event}` otherwise. */
  id: string;
  runId: string;
  /** user: the prompt of an execute; assistant: the model's output; tool: tool results. */
  role: 'user' | 'assistant' | 'tool';
  content: MessageBlock[];
  /** The Task/Agent tool call whose sub-agent produced the message; null on the main thread. */
  parentToolUseId: string | null;
  createdAt: string;
}

export interface MessagePage {
  messages: Message[];
  /** Where the next page starts; undefined on the last page. */
  nextCursor: string | undefined;
}

const CURSOR_PREFIX = 'm1.';
/** Events read per query while building a page. */
const EVENT_BATCH = 500;

export function encodeMessageCursor(position: number): string {
  return `${CURSOR_PREFIX}${position.toString(36)}`;
}

/** The position in a message cursor; CURSOR_INVALID when it is not one this module made. */
export function decodeMessageCursor(cursor: string): number {
  const body = cursor.startsWith(CURSOR_PREFIX) ? cursor.slice(CURSOR_PREFIX.length) : '';
  const position = /^[0-9a-z]{1,12}$/.test(body) ? parseInt(body, 36) : NaN;
  if (!Number.isSafeInteger(position) || position < 1) {
    throw new AppError(
      'CURSOR_INVALID',
      'cursor is not a next_cursor this API answered; pass next_cursor exactly as it came, or leave it out for the first page',
    );
  }
  return position;
}

interface RunRow {
  id: string;
  prompt: string;
  started_at: Date;
  first_seq: string | number | null;
}

interface EventRow {
  seq: string | number;
  run_id: string;
  type: 'assistant' | 'thinking' | 'tool_call' | 'tool_result';
  data: Record<string, unknown>;
  created_at: Date;
}

interface Prompt {
  position: number;
  message: Message;
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

/** The block an event stands for, and the role of the message it belongs in. */
function blockOf(ev: EventRow): { role: 'assistant' | 'tool'; block: MessageBlock } {
  const d = ev.data;
  switch (ev.type) {
    case 'assistant':
      return { role: 'assistant', block: { type: 'text', text: str(d.text) } };
    case 'thinking':
      return {
        role: 'assistant',
        block:
          d.redacted === true ? { type: 'redacted_thinking' } : { type: 'thinking', thinking: str(d.text) },
      };
    case 'tool_call':
      return {
        role: 'assistant',
        block: { type: 'tool_use', id: str(d.id), name: str(d.name), input: d.input ?? {} },
      };
    case 'tool_result':
      return {
        role: 'tool',
        block: {
          type: 'tool_result',
          tool_use_id: str(d.id),
          content: str(d.output),
          is_error: d.is_error === true,
          ...(d.truncated === true ? { truncated: true } : {}),
        },
      };
  }
}

export class MessageRepository {
  constructor(private readonly db: Queryable) {}

  /**
   * The conversation's messages after `cursor` (a previous page's nextCursor; the first page
   * without), oldest first, at most `limit` (default 100, at most 500). CONVERSATION_NOT_FOUND
   * when it is not the tenant's; CURSOR_INVALID for a cursor this class did not make.
   */
  async list(
    tenantId: string,
    conversationId: string,
    options: { limit?: number; cursor?: string } = {},
  ): Promise<MessagePage> {
    const limit = Math.min(Math.max(Math.trunc(options.limit ?? 100), 1), 500);
    const after = options.cursor === undefined ? 0 : decodeMessageCursor(options.cursor);
    if (!isUuid(tenantId) || !isUuid(conversationId)) throw conversationNotFound(conversationId);
    const conv = await this.db.query<{ last_event_seq: string | number }>(
      `SELECT last_event_seq FROM conversations
       WHERE id = $1 AND tenant_id = $2 AND deleting_at IS NULL`,
      [conversationId, tenantId],
    );
    const convRow = conv.rows[0];
    if (!convRow) throw conversationNotFound(conversationId);
    const afterSeq = Math.floor(after / 2);
    // The prompts still to show: runs whose first event is past the cursor, or that have none yet
    // (a run that just started: it goes last).
    const runs = await this.db.query<RunRow>(
      `SELECT r.id, r.prompt, r.started_at,
         (SELECT min(e.seq) FROM conversation_events e
          WHERE e.conversation_id = r.conversation_id AND e.run_id = r.id) AS first_seq
       FROM runs r WHERE r.conversation_id = $1 AND r.tenant_id = $2`,
      [conversationId, tenantId],
    );
    const pendingSeq = num(convRow.last_event_seq) + 1;
    const prompts: Prompt[] = runs.rows
      .map((r) => {
        const seq = r.first_seq === null ? pendingSeq : num(r.first_seq);
        return {
          position: 2 * seq - 1,
          message: {
            id: `${r.id}:prompt`,
            runId: r.id,
            role: 'user' as const,
            content: [{ type: 'text' as const, text: r.prompt }],
            parentToolUseId: null,
            createdAt: iso(r.started_at),
          },
        };
      })
      .filter((p) => p.position > after)
      .sort((a, b) => a.position - b.position);

    const out: { position: number; message: Message }[] = [];
    let open: { position: number; message: Message } | undefined;
    let nextPrompt = 0;
    const close = (): void => {
      if (open !== undefined) out.push(open);
      open = undefined;
    };
    const promptsUpTo = (position: number): void => {
      while (nextPrompt < prompts.length && (prompts[nextPrompt] as Prompt).position < position) {
        close();
        out.push(prompts[nextPrompt] as Prompt);
        nextPrompt++;
      }
    };

    let seqCursor = afterSeq;
    for (;;) {
      if (out.length > limit) break;
      const batch = await this.db.query<EventRow>(
        `SELECT seq, run_id, type, data, created_at FROM conversation_events
         WHERE conversation_id = $1 AND seq > $2
           AND type IN ('assistant', 'thinking', 'tool_call', 'tool_result')
         ORDER BY seq LIMIT $3`,
        [conversationId, seqCursor, EVENT_BATCH],
      );
      for (const ev of batch.rows) {
        const seq = num(ev.seq);
        const position = 2 * seq;
        promptsUpTo(position);
        if (out.length > limit) break;
        const { role, block } = blockOf(ev);
        const parent = str(ev.data.parent_tool_use_id) || null;
        const m = open?.message;
        if (m !== undefined && m.role === role && m.runId === ev.run_id && m.parentToolUseId === parent) {
          m.content.push(block);
          (open as { position: number }).position = position;
        } else {
          close();
          if (out.length > limit) break;
          open = {
            position,
            message: {
              id: `${ev.run_id}:${seq}`,
              runId: ev.run_id,
              role,
              content: [block],
              parentToolUseId: parent,
              createdAt: iso(ev.created_at),
            },
          };
        }
        seqCursor = seq;
      }
      if (batch.rows.length < EVENT_BATCH) break;
    }
    if (out.length <= limit) {
      close();
      promptsUpTo(Number.POSITIVE_INFINITY);
    }
    const page = out.slice(0, limit);
    const last = page.at(-1);
    return {
      messages: page.map((p) => p.message),
      nextCursor: out.length > limit && last !== undefined ? encodeMessageCursor(last.position) : undefined,
    };
  }
}
