/**
 * `GET /v1/conversations/{id}/messages`: the conversation's message history (the seed's
 * messages_log), oldest first, a page at a time. Built from the stored runs and events
 * (repositories/messages.ts): each execute's prompt as a user message, then the agent's messages
 * in Messages API content blocks.
 */
import type { FastifyInstance } from 'fastify';
import { tenantIdOf } from '../http/auth.js';
import type { Message, MessagePage } from '../repositories/messages.js';
import { EXAMPLE_CONVERSATION_ID, conversationParams } from './conversations.js';
import { pagedResponseSchema } from '../http/pagination.js';

export interface MessageRouteDeps {
  /** CONVERSATION_NOT_FOUND when not the tenant's; CURSOR_INVALID for a cursor it did not make. */
  listMessages: (
    tenantId: string,
    conversationId: string,
    options: { limit?: number; cursor?: string },
  ) => Promise<MessagePage>;
}

const blockSchema = {
  type: 'object',
  required: ['type'],
  description:
    'A Messages API content block: text {text}; thinking {thinking}; redacted_thinking; tool_use {id, name, input}; tool_result {tool_use_id, content (the output as text, at most 32 KiB), is_error, truncated?}.',
  properties: {
    type: { type: 'string', enum: ['text', 'thinking', 'redacted_thinking', 'tool_use', 'tool_result'] },
    text: { type: 'string' },
    thinking: { type: 'string' },
    id: { type: 'string' },
    name: { type: 'string' },
    input: {},
    tool_use_id: { type: 'string' },
    content: { type: 'string' },
    is_error: { type: 'boolean' },
    truncated: { type: 'boolean' },
  },
} as const;

const messageSchema = {
  type: 'object',
  required: ['id', 'run_id', 'role', 'content', 'parent_tool_use_id', 'created_at'],
  properties: {
    id: { type: 'string', description: '`{run_id}:prompt`, or `{run_id}:{seq of its first event}`.' },
    run_id: { type: 'string', format: 'uuid', description: 'The execute it belongs to.' },
    role: {
      type: 'string',
      enum: ['user', 'assistant', 'tool'],
      description:
        "user: the execute's prompt; assistant: the model's text, thinking and tool calls; tool: the results of those calls (the Messages API sends them in a user message).",
    },
    content: { type: 'array', items: blockSchema },
    parent_tool_use_id: {
      type: ['string', 'null'],
      description: 'The Task/Agent tool call whose sub-agent wrote it; null on the main thread.',
    },
    created_at: { type: 'string', format: 'date-time' },
  },
} as const;

function messageToWire(m: Message): Record<string, unknown> {
  return {
    id: m.id,
    run_id: m.runId,
    role: m.role,
    content: m.content,
    parent_tool_use_id: m.parentToolUseId,
    created_at: m.createdAt,
  };
}

const EXAMPLE_RUN = '7c0e8f0a-2b1d-4c3e-9f5a-6b7c8d9e0f1a';

const EXAMPLE_MESSAGES = [
  {
    id: `${EXAMPLE_RUN}:prompt`,
    run_id: EXAMPLE_RUN,
    role: 'user',
    content: [{ type: 'text', text: 'Write hello.py that prints hello, and run it' }],
    parent_tool_use_id: null,
    created_at: '2025-01-01T12:00:00.000Z',
  },
  {
    id: `${EXAMPLE_RUN}:7`,
    run_id: EXAMPLE_RUN,
    role: 'assistant',
    content: [
      { type: 'text', text: 'I will write it and run it.' },
      { type: 'tool_use', id: 'toolu_01', name: 'Bash', input: { command: 'python3 hello.py' } },
    ],
    parent_tool_use_id: null,
    created_at: '2025-01-01T12:00:02.000Z',
  },
  {
    id: `${EXAMPLE_RUN}:9`,
    run_id: EXAMPLE_RUN,
    role: 'tool',
    content: [{ type: 'tool_result', tool_use_id: 'toolu_01', content: 'hello\n', is_error: false }],
    parent_tool_use_id: null,
    created_at: '2025-01-01T12:00:03.000Z',
  },
  {
    id: `${EXAMPLE_RUN}:11`,
    run_id: EXAMPLE_RUN,
    role: 'assistant',
    content: [{ type: 'text', text: 'hello.py prints hello.' }],
    parent_tool_use_id: null,
    created_at: '2025-01-01T12:00:04.000Z',
  },
];

export function registerMessageRoutes(app: FastifyInstance, deps: MessageRouteDeps): void {
  app.get<{ Params: { id: string }; Querystring: { limit?: number; cursor?: string } }>(
    '/v1/conversations/:id/messages',
    {
      schema: {
        summary: "The conversation's message history, oldest first, a page at a time",
        description:
          "Each execute's prompt (role user) followed by what the agent wrote (role assistant: text, thinking and tool_use blocks) and the tool results it got (role tool: tool_result blocks), in the order they happened; sub-agents' messages carry parent_tool_use_id. Consecutive blocks of one role make one message, as in the Messages API. Derived from the stored events: a run in progress shows what it has stored so far.",
        tags: ['conversations'],
        params: conversationParams,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            limit: { type: 'integer', minimum: 1, maximum: 500, default: 100, description: 'Page size.' },
            cursor: {
              type: 'string',
              minLength: 1,
              maxLength: 100,
              description: "The previous page's next_cursor: the next page starts after it.",
            },
          },
        },
        response: {
          200: pagedResponseSchema('messages', messageSchema),
        },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['CONVERSATION_NOT_FOUND', 'CURSOR_INVALID'],
          example: {
            params: { id: EXAMPLE_CONVERSATION_ID },
            query: { limit: '4' },
            response: { status: 200, body: { messages: EXAMPLE_MESSAGES, next_cursor: 'm1.m' } },
          },
        },
      },
    },
    async (req) => {
      const options: { limit?: number; cursor?: string } = {};
      if (req.query.limit !== undefined) options.limit = req.query.limit;
      if (req.query.cursor !== undefined) options.cursor = req.query.cursor;
      const page = await deps.listMessages(tenantIdOf(req), req.params.id, options);
      return { messages: page.messages.map(messageToWire), next_cursor: page.nextCursor ?? null };
    },
  );
}
