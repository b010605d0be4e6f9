/**
 * Conversations of the caller's tenant (bearer API key): create, list and read. Another tenant's
 * conversation is CONVERSATION_NOT_FOUND, exactly like one that does not exist.
 */
import type { FastifyInstance } from 'fastify';
import type { Conversation } from '../types.js';
import { tenantIdOf, tenantOf } from '../http/auth.js';

/** What the conversation routes need from the repositories. */
export interface ConversationRouteDeps {
  createConversation: (
    tenantId: string,
    input: { title?: string | null; workspaceEnabled?: boolean; modelId?: string | null },
  ) => Promise<Conversation>;
  /** Sets the conversation's model (null: the tenant default); MODEL_UNKNOWN, MODEL_DISABLED. */
  setConversationModel: (tenantId: string, id: string, modelId: string | null) => Promise<Conversation>;
  /** CONVERSATION_NOT_FOUND when it is not one of the tenant's. */
  getConversation: (tenantId: string, id: string) => Promise<Conversation>;
  /** Newest first; `before` continues after that conversation (CONVERSATION_NOT_FOUND if not the tenant's). */
  listConversations: (
    tenantId: string,
    options: { limit?: number; before?: string },
  ) => Promise<Conversation[]>;
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
    'model_id',
    'created_at',
    'updated_at',
  ],
  properties: {
    id: { type: 'string', format: 'uuid' },
    title: { type: ['string', 'null'] },
    workspace_enabled: { type: 'boolean' },
    session_id: { type: ['string', 'null'], description: 'The agent session a next execute resumes.' },
    context_tokens: { type: 'integer', description: 'Context tokens in use after the last run.' },
    context_limit: { type: 'integer', description: "The tenant's max_context_tokens." },
    status: { type: 'string', enum: ['idle', 'running'] },
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
  model_id: null,
  created_at: EXAMPLE_TIME,
  updated_at: EXAMPLE_TIME,
};

const modelIdField = {
  type: ['string', 'null'],
  maxLength: 200,
  description:
    "A registered, active model for this conversation's runs (GET /v1/models); null or absent: the tenant's default.",
} as const;

export function registerConversationRoutes(app: FastifyInstance, deps: ConversationRouteDeps): void {
  app.post<{
    Body: { title?: string | null; workspace_enabled?: boolean; model_id?: string | null } | undefined;
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
            title: { type: ['string', 'null'], maxLength: 500 },
            workspace_enabled: {
              type: 'boolean',
              default: true,
              description:
                'Give the agent a persistent /workspace (synced to S3); false runs it in the read-only skills directory.',
            },
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
            body: { title: 'Quarterly report' },
            response: { status: 201, body: exampleConversation },
          },
        },
      },
    },
    async (req, reply) => {
      const tenant = tenantOf(req);
      const body = req.body ?? {};
      const input: { title?: string | null; workspaceEnabled?: boolean; modelId?: string | null } = {};
      if (body.title !== undefined) input.title = body.title;
      if (body.workspace_enabled !== undefined) input.workspaceEnabled = body.workspace_enabled;
      if (body.model_id !== undefined) input.modelId = body.model_id;
      const conv = await deps.createConversation(tenant.id, input);
      req.log.info({ tenantId: tenant.id, conversationId: conv.id }, 'conversation created');
      return reply.code(201).send(conversationToWire(conv, tenant.settings.maxContextTokens));
    },
  );

  app.get<{ Querystring: { limit?: number; before?: string } }>(
    '/v1/conversations',
    {
      schema: {
        summary: "List the tenant's conversations, newest first",
        tags: ['conversations'],
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            limit: { type: 'integer', minimum: 1, maximum: 500, default: 50, description: 'Page size.' },
            before: {
              type: 'string',
              format: 'uuid',
              description: 'The last id of the previous page: the next page starts after it.',
            },
          },
        },
        response: {
          200: {
            type: 'object',
            required: ['conversations'],
            properties: { conversations: { type: 'array', items: conversationSchema } },
          },
        },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['CONVERSATION_NOT_FOUND'],
          example: {
            query: { limit: '20' },
            response: { status: 200, body: { conversations: [exampleConversation] } },
          },
        },
      },
    },
    async (req) => {
      const tenant = tenantOf(req);
      const options: { limit?: number; before?: string } = {};
      if (req.query.limit !== undefined) options.limit = req.query.limit;
      if (req.query.before !== undefined) options.before = req.query.before;
      const list = await deps.listConversations(tenant.id, options);
      return { conversations: list.map((c) => conversationToWire(c, tenant.settings.maxContextTokens)) };
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

  app.patch<{ Params: { id: string }; Body: { model_id: string | null } }>(
    '/v1/conversations/:id',
    {
      schema: {
        summary: 'Change a conversation (its model)',
        description: 'The next execute uses the new model; a run going on keeps its own.',
        tags: ['conversations'],
        params: conversationParams,
        body: {
          type: 'object',
          additionalProperties: false,
          minProperties: 1,
          properties: { model_id: modelIdField },
        },
        response: { 200: conversationSchema },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['CONVERSATION_NOT_FOUND', 'MODEL_UNKNOWN', 'MODEL_DISABLED'],
          example: {
            params: { id: EXAMPLE_CONVERSATION_ID },
            body: { model_id: 'claude-sonnet-4-5' },
            response: { status: 200, body: { ...exampleConversation, model_id: 'claude-sonnet-4-5' } },
          },
        },
      },
    },
    async (req) => {
      const tenant = tenantOf(req);
      let conv = await deps.getConversation(tenant.id, req.params.id);
      if (req.body.model_id !== undefined) {
        conv = await deps.setConversationModel(tenant.id, req.params.id, req.body.model_id);
        req.log.info({ conversationId: conv.id, modelId: conv.modelId }, "conversation's model set");
      }
      return conversationToWire(conv, tenant.settings.maxContextTokens);
    },
  );
}
