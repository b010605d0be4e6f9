/**
 * Conversations of the caller's tenant (bearer API key): create, list (filters, cursor pages),
 * read, update, archive and unarchive, delete. Another tenant's conversation is
 * CONVERSATION_NOT_FOUND, exactly like one that does not exist.
 */
import { AppError } from '@hako/core';
import type { FastifyInstance } from 'fastify';
import type { Conversation } from '../types.js';
import { tenantIdOf, tenantOf } from '../http/auth.js';
import type {
  ConversationListOptions,
  ConversationPage,
  ConversationUpdate,
} from '../repositories/conversations.js';
import { pagedResponseSchema } from '../http/pagination.js';

/** What the conversation routes need from the repositories and the lifecycle (archive, delete). */
export interface ConversationRouteDeps {
  createConversation: (
    tenantId: string,
    input: {
      title?: string | null;
      workspaceEnabled?: boolean;
      userId?: string | null;
      modelId?: string | null;
    },
  ) => Promise<Conversation>;
  /** Sets the conversation's model (null: the tenant default); MODEL_UNKNOWN, MODEL_DISABLED. */
  setConversationModel: (tenantId: string, id: string, modelId: string | null) => Promise<Conversation>;
  /** CONVERSATION_NOT_FOUND when it is not one of the tenant's. */
  getConversation: (tenantId: string, id: string) => Promise<Conversation>;
  /** Newest first, filtered, one page (ConversationRepository.listPage). */
  listConversations: (tenantId: string, options: ConversationListOptions) => Promise<ConversationPage>;
  updateConversation: (tenantId: string, id: string, change: ConversationUpdate) => Promise<Conversation>;
  /** Archives it and releases its sandboxes; CONVERSATION_LOCKED during a run. */
  archiveConversation: (tenantId: string, id: string) => Promise<Conversation>;
  unarchiveConversation: (tenantId: string, id: string) => Promise<Conversation>;
  /** Deletes it with its sandboxes, S3 workspace and rows; CONVERSATION_LOCKED during a run. */
  deleteConversation: (tenantId: string, id: string) => Promise<void>;
}

export const EXAMPLE_CONVERSATION_ID = '0b6f3d2e-5a4c-4e8b-9f1a-2c3d4e5f6a7b';
const EXAMPLE_TIME = '2025-01-01T12:00:00.000Z';

/** Path parameters of routes under `/v1/conversations/{id}`. */
export const conversationParams = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: { id: { type: 'string', format: 'uuid', description: 'The conversation id.' } },
} as const;

export const conversationSchema = {
  type: 'object',
  required: [
    'id',
    'title',
    'workspace_enabled',
    'session_id',
    'context_tokens',
    'context_limit',
    'status',
    'user_id',
    'archived',
    'archived_at',
    'model_id',
    'created_at',
    'updated_at',
  ],
  properties: {
    id: { type: 'string', format: 'uuid' },
    title: {
      type: ['string', 'null'],
      description: 'Set from the first prompt by the first execute unless given (at create or by PATCH).',
    },
    workspace_enabled: { type: 'boolean' },
    session_id: { type: ['string', 'null'], description: 'The agent session a next execute resumes.' },
    context_tokens: { type: 'integer', description: 'Context tokens in use after the last run.' },
    context_limit: { type: 'integer', description: "The tenant's max_context_tokens." },
    status: { type: 'string', enum: ['idle', 'running'], description: 'running while an execute runs.' },
    user_id: {
      type: ['string', 'null'],
      description: "The calling application's user the conversation belongs to.",
    },
    archived: {
      type: 'boolean',
      description: 'An archived conversation keeps its data but refuses executes and uploads.',
    },
    archived_at: { type: ['string', 'null'], format: 'date-time' },
    model_id: {
      type: ['string', 'null'],
      description: "The model it picked (GET /v1/models); null: the tenant's default model.",
    },
    created_at: { type: 'string', format: 'date-time' },
    updated_at: { type: 'string', format: 'date-time' },
  },
} as const;

export function conversationToWire(c: Conversation, contextLimit: number): Record<string, unknown> {
  return {
    id: c.id,
    title: c.title,
    workspace_enabled: c.workspaceEnabled,
    session_id: c.sessionId,
    context_tokens: c.contextTokens,
    context_limit: contextLimit,
    status: c.status,
    user_id: c.userId,
    archived: c.archivedAt !== null,
    archived_at: c.archivedAt,
    model_id: c.modelId ?? null,
    created_at: c.createdAt,
    updated_at: c.updatedAt,
  };
}

const exampleConversation = {
  id: EXAMPLE_CONVERSATION_ID,
  title: 'Quarterly report',
  workspace_enabled: true,
  session_id: null,
  context_tokens: 0,
  context_limit: 200000,
  status: 'idle',
  user_id: 'user-42',
  archived: false,
  archived_at: null,
  model_id: null,
  created_at: EXAMPLE_TIME,
  updated_at: EXAMPLE_TIME,
};

const EXAMPLE_CURSOR =
  'c1.MjAyNS0wMS0wMVQxMjowMDowMC4wMDAwMDBafDBiNmYzZDJlLTVhNGMtNGU4Yi05ZjFhLTJjM2Q0ZTVmNmE3Yg';

/** CONVERSATION_ARCHIVED for an archived conversation (uploads and file deletes call it holding the lock). */
export function assertNotArchived(conv: Pick<Conversation, 'id' | 'archivedAt'>): void {
  if (conv.archivedAt !== null) {
    throw new AppError(
      'CONVERSATION_ARCHIVED',
      `Conversation ${conv.id} is archived; unarchive it (POST /v1/conversations/${conv.id}/unarchive) to change its files or run it`,
    );
  }
}

const userIdSchema = {
  type: 'string',
  minLength: 1,
  maxLength: 200,
  description: "The calling application's user the conversation belongs to (1 to 200 characters).",
} as const;

interface ListQuery {
  limit?: number;
  cursor?: string;
  before?: string;
  status?: 'active' | 'archived' | 'all';
  user_id?: string;
  q?: string;
  created_after?: string;
  created_before?: string;
}

interface UpdateBody {
  model_id?: string | null;
  title?: string | null;
  user_id?: string | null;
  workspace_enabled?: unknown;
}

const modelIdField = {
  type: ['string', 'null'],
  maxLength: 200,
  description:
    "A registered, active model for this conversation's runs (GET /v1/models); null or absent: the tenant's default.",
} as const;

export function registerConversationRoutes(app: FastifyInstance, deps: ConversationRouteDeps): void {
  app.post<{
    Body:
      | {
          title?: string | null;
          workspace_enabled?: boolean;
          user_id?: string | null;
          model_id?: string | null;
        }
      | undefined;
  }>(
    '/v1/conversations',
    {
      schema: {
        summary: 'Create a conversation',
        tags: ['conversations'],
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            title: {
              type: ['string', 'null'],
              maxLength: 500,
              description: 'Left out or null: the first execute sets it from its prompt.',
            },
            workspace_enabled: {
              type: 'boolean',
              default: true,
              description:
                'Give the agent a persistent /workspace (synced to S3); false runs it in the read-only skills directory. Fixed at creation.',
            },
            user_id: { ...userIdSchema, type: ['string', 'null'] },
            model_id: modelIdField,
          },
        },
        response: { 201: conversationSchema },
      },
      // An empty POST is a conversation with every default.
      preValidation: (req, _reply, done) => {
        req.body ??= {};
        done();
      },
      config: {
        auth: 'tenant',
        docs: {
          bodyOptional: true,
          errors: ['MODEL_UNKNOWN', 'MODEL_DISABLED'],
          example: {
            body: { title: 'Quarterly report', user_id: 'user-42' },
            response: { status: 201, body: exampleConversation },
          },
        },
      },
    },
    async (req, reply) => {
      const tenant = tenantOf(req);
      const body = req.body ?? {};
      const input: {
        title?: string | null;
        workspaceEnabled?: boolean;
        userId?: string | null;
        modelId?: string | null;
      } = {};
      if (body.title !== undefined) input.title = body.title;
      if (body.workspace_enabled !== undefined) input.workspaceEnabled = body.workspace_enabled;
      if (body.user_id !== undefined) input.userId = body.user_id;
      if (body.model_id !== undefined) input.modelId = body.model_id;
      const conv = await deps.createConversation(tenant.id, input);
      req.log.info({ tenantId: tenant.id, conversationId: conv.id }, 'conversation created');
      return reply.code(201).send(conversationToWire(conv, tenant.settings.maxContextTokens));
    },
  );

  app.get<{ Querystring: ListQuery }>(
    '/v1/conversations',
    {
      schema: {
        summary: "List the tenant's conversations, newest first, a page at a time",
        description:
          'Ordered by created_at then id, both descending (a stable order: paging with next_cursor answers every conversation once). Filters combine with AND.',
        tags: ['conversations'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            limit: { type: 'integer', minimum: 1, maximum: 500, default: 50, description: 'Page size.' },
            cursor: {
              type: 'string',
              minLength: 1,
              maxLength: 200,
              description: "The previous page's next_cursor: the next page starts after it.",
            },
            before: {
              type: 'string',
              format: 'uuid',
              description:
                'Older form of cursor: the last id of the previous page (CONVERSATION_NOT_FOUND once it is deleted). Not with cursor.',
            },
            status: {
              type: 'string',
              enum: ['active', 'archived', 'all'],
              default: 'active',
              description: 'active: not archived (the default); archived; or all.',
            },
            user_id: { ...userIdSchema, description: 'Only the conversations of this application user.' },
            q: {
              type: 'string',
              minLength: 1,
              maxLength: 200,
              description: 'Only conversations whose title contains this text (case-insensitive).',
            },
            created_after: {
              type: 'string',
              format: 'date-time',
              description: 'Only conversations created at or after this time.',
            },
            created_before: {
              type: 'string',
              format: 'date-time',
              description: 'Only conversations created before this time.',
            },
          },
        },
        response: {
          200: pagedResponseSchema('conversations', conversationSchema),
        },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['CONVERSATION_NOT_FOUND', 'CURSOR_INVALID'],
          example: {
            query: { limit: '20', status: 'active', user_id: 'user-42', q: 'report' },
            response: {
              status: 200,
              body: { conversations: [exampleConversation], next_cursor: EXAMPLE_CURSOR },
            },
          },
        },
      },
    },
    async (req) => {
      const tenant = tenantOf(req);
      const q = req.query;
      const options: ConversationListOptions = {};
      if (q.limit !== undefined) options.limit = q.limit;
      if (q.cursor !== undefined) options.cursor = q.cursor;
      if (q.before !== undefined) options.before = q.before;
      if (q.status !== undefined) options.status = q.status;
      if (q.user_id !== undefined) options.userId = q.user_id;
      if (q.q !== undefined) options.q = q.q;
      if (q.created_after !== undefined) options.createdAfter = q.created_after;
      if (q.created_before !== undefined) options.createdBefore = q.created_before;
      const page = await deps.listConversations(tenant.id, options);
      return {
        conversations: page.conversations.map((c) => conversationToWire(c, tenant.settings.maxContextTokens)),
        next_cursor: page.nextCursor ?? null,
      };
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/conversations/:id',
    {
      schema: {
        summary: 'Read a conversation',
        tags: ['conversations'],
        params: conversationParams,
        response: { 200: conversationSchema },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['CONVERSATION_NOT_FOUND'],
          example: {
            params: { id: EXAMPLE_CONVERSATION_ID },
            response: { status: 200, body: exampleConversation },
          },
        },
      },
    },
    async (req) => {
      const conv = await deps.getConversation(tenantIdOf(req), req.params.id);
      return conversationToWire(conv, tenantOf(req).settings.maxContextTokens);
    },
  );

  app.patch<{ Params: { id: string }; Body: UpdateBody }>(
    '/v1/conversations/:id',
    {
      schema: {
        summary: "Change a conversation's title, user_id or model",
        description:
          'Only the fields given change. A title set here is never replaced by a later execute; null clears it (the next execute titles the conversation from its prompt). workspace_enabled is fixed at creation (FIELD_IMMUTABLE). Archived conversations can be renamed too. A new model_id applies from the next execute; a run going on keeps its own.',
        tags: ['conversations'],
        params: conversationParams,
        body: {
          type: 'object',
          additionalProperties: false,
          minProperties: 1,
          properties: {
            title: {
              type: ['string', 'null'],
              minLength: 1,
              maxLength: 500,
              pattern: '\\S',
              description: 'The new title (not blank), or null to clear it.',
            },
            user_id: { ...userIdSchema, type: ['string', 'null'] },
            model_id: modelIdField,
            workspace_enabled: {
              description: 'Refused with FIELD_IMMUTABLE: create another conversation instead.',
            },
          },
        },
        response: { 200: conversationSchema },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['CONVERSATION_NOT_FOUND', 'FIELD_IMMUTABLE', 'MODEL_UNKNOWN', 'MODEL_DISABLED'],
          example: {
            params: { id: EXAMPLE_CONVERSATION_ID },
            body: { title: 'Q3 report, final' },
            response: { status: 200, body: { ...exampleConversation, title: 'Q3 report, final' } },
          },
        },
      },
    },
    async (req) => {
      const tenant = tenantOf(req);
      const body = req.body;
      if (body.workspace_enabled !== undefined) {
        throw new AppError(
          'FIELD_IMMUTABLE',
          'workspace_enabled is fixed when a conversation is created; create a new conversation with the workspace setting you need',
          { details: { field: 'body.workspace_enabled' } },
        );
      }
      const change: ConversationUpdate = {};
      if (body.title !== undefined) change.title = body.title;
      if (body.user_id !== undefined) change.userId = body.user_id;
      if (body.model_id !== undefined) {
        await deps.setConversationModel(tenant.id, req.params.id, body.model_id);
      }
      const conv = await deps.updateConversation(tenant.id, req.params.id, change);
      req.log.info(
        { tenantId: tenant.id, conversationId: conv.id, fields: Object.keys(body) },
        'conversation updated',
      );
      return conversationToWire(conv, tenant.settings.maxContextTokens);
    },
  );

  for (const action of ['archive', 'unarchive'] as const) {
    const archive = action === 'archive';
    app.post<{ Params: { id: string } }>(
      `/v1/conversations/:id/${action}`,
      {
        schema: {
          summary: archive
            ? 'Archive a conversation: keep its data, hide it from the default list, refuse executes and uploads'
            : 'Unarchive a conversation: it takes executes and uploads again',
          description: archive
            ? 'Its sandbox is released (the workspace stays in S3 and comes back on the next execute after unarchive). Refused with CONVERSATION_LOCKED while a run is in progress. Archiving an archived conversation answers it unchanged.'
            : 'Unarchiving an active conversation answers it unchanged.',
          tags: ['conversations'],
          params: conversationParams,
          response: { 200: conversationSchema },
        },
        config: {
          auth: 'tenant',
          docs: {
            errors: archive ? ['CONVERSATION_NOT_FOUND', 'CONVERSATION_LOCKED'] : ['CONVERSATION_NOT_FOUND'],
            example: {
              params: { id: EXAMPLE_CONVERSATION_ID },
              response: {
                status: 200,
                body: archive
                  ? { ...exampleConversation, archived: true, archived_at: EXAMPLE_TIME }
                  : exampleConversation,
              },
            },
          },
        },
      },
      async (req) => {
        const tenant = tenantOf(req);
        const conv = archive
          ? await deps.archiveConversation(tenant.id, req.params.id)
          : await deps.unarchiveConversation(tenant.id, req.params.id);
        return conversationToWire(conv, tenant.settings.maxContextTokens);
      },
    );
  }

  app.delete<{ Params: { id: string } }>(
    '/v1/conversations/:id',
    {
      schema: {
        summary: 'Delete a conversation with its sandbox, workspace files (S3), runs, events and files',
        description:
          'Refused with CONVERSATION_LOCKED while a run is in progress. Once a delete began the conversation answers CONVERSATION_NOT_FOUND to everything else; if the delete fails midway (5xx), DELETE again finishes it.',
        tags: ['conversations'],
        params: conversationParams,
        response: { 204: { description: 'Deleted' } },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['CONVERSATION_NOT_FOUND', 'CONVERSATION_LOCKED'],
          example: { params: { id: EXAMPLE_CONVERSATION_ID }, response: { status: 204 } },
        },
      },
    },
    async (req, reply) => {
      await deps.deleteConversation(tenantIdOf(req), req.params.id);
      return reply.code(204).send();
    },
  );
}
