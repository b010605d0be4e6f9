/**
 * The tenant's MCP server registry (bearer API key) and each conversation's choice of servers.
 *
 * A server is a stdio command Claude Code runs inside the conversation's sandbox, or a remote
 * streamable-HTTP server reached through hakod's egress proxy (its host:port must be on the
 * tenant's egress allowlist). Its tools are `mcp__{name}__{tool}`. `enabled` is the tenant default;
 * a conversation may override it (PUT), or go back to the default (DELETE). env values and header
 * values are write-only: answers name them, never show them. Another tenant's server is
 * MCP_SERVER_NOT_FOUND, like a missing one.
 */
import { AppError } from '@hako/core';
import type { FastifyInstance } from 'fastify';
import { tenantIdOf, tenantOf } from '../http/auth.js';
import type { McpServerInput, McpServerRepository } from '../repositories/mcp-servers.js';
import { checkMcpEgress, checkMcpServerName, checkMcpTransport } from '../mcp/mcp-server-definition.js';
import { effectiveMcpServers } from '../mcp/effective-set.js';
import type { McpServerState } from '../mcp/effective-set.js';
import type { ConversationMcpServer, McpServer, McpServerTransport } from '../types.js';
import { EXAMPLE_CONVERSATION_ID, conversationParams } from './conversations.js';

/** What the MCP server routes need from the repositories. */
export interface McpServerRouteDeps {
  /** MCP_SERVER_EXISTS when the name is taken. */
  createMcpServer: (tenantId: string, input: McpServerInput) => Promise<McpServer>;
  listMcpServers: (tenantId: string) => Promise<McpServer[]>;
  /** MCP_SERVER_NOT_FOUND when it is not one of the tenant's. */
  getMcpServer: (tenantId: string, id: string) => Promise<McpServer>;
  /** Replaces the definition with what `change` makes of the current one (atomically). */
  updateMcpServer: (
    tenantId: string,
    id: string,
    change: (current: McpServer) => McpServerInput,
  ) => Promise<McpServer>;
  /** False when it is not one of the tenant's. */
  deleteMcpServer: (tenantId: string, id: string) => Promise<boolean>;
  /** CONVERSATION_NOT_FOUND when the conversation is not the tenant's. */
  listConversationMcpServers: (tenantId: string, conversationId: string) => Promise<ConversationMcpServer[]>;
  setConversationMcpServer: (
    tenantId: string,
    conversationId: string,
    serverId: string,
    enabled: boolean,
  ) => Promise<ConversationMcpServer>;
  /** Drops the override; answers the server as the conversation now sees it. */
  clearConversationMcpServer: (
    tenantId: string,
    conversationId: string,
    serverId: string,
  ) => Promise<ConversationMcpServer>;
}

const EXAMPLE_SERVER_ID = '5d2c8e4a-1f3b-4a6d-9c7e-8b0a1d2e3f4a';
const EXAMPLE_HTTP_SERVER_ID = '7e4a1c9b-3d5f-4b2a-8e6c-0f1a2b3c4d5e';
const EXAMPLE_TIME = '2025-01-01T12:00:00.000Z';

const uuid = { type: 'string', format: 'uuid' } as const;
const serverParams = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: { id: { ...uuid, description: 'The MCP server id.' } },
} as const;
const conversationServerParams = {
  type: 'object',
  required: ['id', 'serverId'],
  additionalProperties: false,
  properties: {
    id: conversationParams.properties.id,
    serverId: { ...uuid, description: 'The MCP server id.' },
  },
} as const;

const stringMap = (description: string, nullable: boolean): Record<string, unknown> => ({
  type: 'object',
  description,
  additionalProperties: nullable ? { type: ['string', 'null'] } : { type: 'string' },
});

const nameField = {
  type: 'string',
  description:
    '1 to 64 letters, digits, `_` or `-`, unique per tenant regardless of case (`hako` is reserved). The tools are `mcp__{name}__{tool}`.',
} as const;
const enabledField = {
  type: 'boolean',
  description: 'The tenant default: whether conversations get this server unless they choose otherwise.',
} as const;
const commandField = {
  type: 'string',
  description:
    'stdio: the program Claude Code starts inside the sandbox (e.g. `node`, `/workspace/server.py`).',
} as const;
const argsField = {
  type: 'array',
  items: { type: 'string' },
  description: 'stdio: its arguments (at most 256).',
} as const;
const urlField = {
  type: 'string',
  description:
    "http: the server's streamable-HTTP endpoint (`http://` or `https://`, no credentials). Its host:port must be on the tenant's egress allowlist.",
} as const;

const createBodySchema = {
  type: 'object',
  required: ['name', 'type'],
  additionalProperties: false,
  properties: {
    name: nameField,
    type: {
      type: 'string',
      enum: ['stdio', 'http'],
      description:
        '`stdio`: a command run inside the sandbox. `http`: a remote server, through the egress proxy.',
    },
    enabled: { ...enabledField, default: true },
    command: commandField,
    args: argsField,
    env: stringMap('stdio: its environment (write-only: answers show the names only).', false),
    url: urlField,
    headers: stringMap(
      'http: headers sent with every request, e.g. Authorization (write-only: answers show the names only).',
      false,
    ),
  },
} as const;

const patchBodySchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    name: nameField,
    type: {
      type: 'string',
      enum: ['stdio', 'http'],
      description: 'Cannot change; accepted when it is the same.',
    },
    enabled: enabledField,
    command: commandField,
    args: { ...argsField, description: 'stdio: replaces the arguments.' },
    env: stringMap('stdio: merged into the environment: a string sets a variable, null removes it.', true),
    url: urlField,
    headers: stringMap('http: merged into the headers: a string sets a header, null removes it.', true),
  },
} as const;

const serverSchema = {
  type: 'object',
  required: ['id', 'name', 'type', 'enabled', 'created_at', 'updated_at'],
  properties: {
    id: uuid,
    name: { type: 'string' },
    type: { type: 'string', enum: ['stdio', 'http'] },
    enabled: { type: 'boolean', description: 'The tenant default.' },
    command: { type: 'string', description: 'stdio only.' },
    args: { type: 'array', items: { type: 'string' }, description: 'stdio only.' },
    env_names: {
      type: 'array',
      items: { type: 'string' },
      description: 'stdio only: the names of its environment variables (values are never shown).',
    },
    url: { type: 'string', description: 'http only.' },
    header_names: {
      type: 'array',
      items: { type: 'string' },
      description: 'http only: the names of its headers (values are never shown).',
    },
    created_at: { type: 'string', format: 'date-time' },
    updated_at: { type: 'string', format: 'date-time' },
  },
} as const;

const stateSchema = {
  type: 'object',
  required: ['id', 'name', 'type', 'enabled', 'tenant_enabled', 'conversation_enabled', 'reason', 'detail'],
  properties: {
    id: uuid,
    name: { type: 'string' },
    type: { type: 'string', enum: ['stdio', 'http'] },
    enabled: { type: 'boolean', description: "Whether this conversation's runs get the server." },
    tenant_enabled: { type: 'boolean', description: 'The tenant default.' },
    conversation_enabled: {
      type: ['boolean', 'null'],
      description: "The conversation's override; null when the tenant default applies.",
    },
    reason: {
      type: 'string',
      enum: ['tenant_default', 'conversation_override', 'egress_denied'],
      description:
        '`egress_denied`: chosen, but the egress allowlist no longer covers the remote server, so runs skip it.',
    },
    detail: { type: 'string', description: 'The reason in words.' },
  },
} as const;

export function mcpServerToWire(s: McpServer): Record<string, unknown> {
  const base = { id: s.id, name: s.name, type: s.type, enabled: s.enabled };
  const times = { created_at: s.createdAt, updated_at: s.updatedAt };
  return s.type === 'stdio'
    ? { ...base, command: s.command, args: [...s.args], env_names: Object.keys(s.env).sort(), ...times }
    : { ...base, url: s.url, header_names: Object.keys(s.headers).sort(), ...times };
}

function stateToWire(s: McpServerState): Record<string, unknown> {
  return {
    id: s.server.id,
    name: s.server.name,
    type: s.server.type,
    enabled: s.enabled,
    tenant_enabled: s.server.enabled,
    conversation_enabled: s.override,
    reason: s.reason,
    detail: s.detail,
  };
}

interface CreateBody {
  name: string;
  type: 'stdio' | 'http';
  enabled?: boolean;
  command?: string;
  args?: string[];
  env?: Record<string, string>;
  url?: string;
  headers?: Record<string, string>;
}

interface PatchBody {
  name?: string;
  type?: 'stdio' | 'http';
  enabled?: boolean;
  command?: string;
  args?: string[];
  env?: Record<string, string | null>;
  url?: string;
  headers?: Record<string, string | null>;
}

function invalid(field: string, message: string): AppError {
  return new AppError('MCP_SERVER_INVALID', `${field}: ${message}`, { details: { field } });
}

/** Fields of the other transport are an error (never silently dropped). */
function refuseForeignFields(type: 'stdio' | 'http', body: PatchBody): void {
  const foreign = type === 'stdio' ? (['url', 'headers'] as const) : (['command', 'args', 'env'] as const);
  for (const f of foreign) {
    if (body[f] !== undefined) throw invalid(f, `not a field of a ${type} server`);
  }
}

function transportOfCreate(body: CreateBody): McpServerTransport {
  refuseForeignFields(body.type, body);
  if (body.type === 'stdio') {
    if (body.command === undefined) throw invalid('command', 'a stdio server needs a command');
    return checkMcpTransport({
      type: 'stdio',
      command: body.command,
      args: body.args ?? [],
      env: body.env ?? {},
    });
  }
  if (body.url === undefined) throw invalid('url', 'an http server needs a url');
  return checkMcpTransport({ type: 'http', url: body.url, headers: body.headers ?? {} });
}

/** `patch` merged into `base`: a string sets, null removes. */
function merged(
  base: Record<string, string>,
  patch: Record<string, string | null> | undefined,
): Record<string, string> {
  const out = { ...base };
  for (const [k, v] of Object.entries(patch ?? {})) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}

/** The server after a PATCH (validated); MCP_SERVER_EGRESS_DENIED for a new URL the allowlist does not cover. */
function applyPatch(current: McpServer, body: PatchBody, egressAllow: readonly string[]): McpServerInput {
  if (body.type !== undefined && body.type !== current.type) {
    throw invalid(
      'type',
      `cannot change from ${current.type} to ${body.type}; delete the server and register it again`,
    );
  }
  refuseForeignFields(current.type, body);
  const name = body.name ?? current.name;
  if (body.name !== undefined) checkMcpServerName(name);
  const enabled = body.enabled ?? current.enabled;
  if (current.type === 'stdio') {
    const t = checkMcpTransport({
      type: 'stdio',
      command: body.command ?? current.command,
      args: body.args ?? current.args,
      env: merged(current.env, body.env),
    });
    return { name, enabled, ...t };
  }
  const t = checkMcpTransport({
    type: 'http',
    url: body.url ?? current.url,
    headers: merged(current.headers, body.headers),
  });
  if (body.url !== undefined) checkMcpEgress(t, egressAllow);
  return { name, enabled, ...t };
}

const exampleStdio = {
  id: EXAMPLE_SERVER_ID,
  name: 'github',
  type: 'stdio',
  enabled: true,
  command: 'node',
  args: ['/workspace/tools/github-mcp.js'],
  env_names: ['GITHUB_TOKEN'],
  created_at: EXAMPLE_TIME,
  updated_at: EXAMPLE_TIME,
};
const exampleHttp = {
  id: EXAMPLE_HTTP_SERVER_ID,
  name: 'docs',
  type: 'http',
  enabled: false,
  url: 'https://mcp.example.com/mcp',
  header_names: ['Authorization'],
  created_at: EXAMPLE_TIME,
  updated_at: EXAMPLE_TIME,
};

export function registerMcpServerRoutes(app: FastifyInstance, deps: McpServerRouteDeps): void {
  app.post<{ Body: CreateBody }>(
    '/v1/mcp-servers',
    {
      schema: {
        summary: 'Register an MCP server',
        description:
          "A `stdio` server (command, args, env) is started by Claude Code inside the conversation's sandbox. An `http` server (url, headers) is a remote streamable-HTTP server the sandbox reaches only through hakod's egress proxy: its host:port must be on the tenant's egress allowlist (`settings.egress_allow`), else MCP_SERVER_EGRESS_DENIED. env and header values are write-only.",
        tags: ['mcp-servers'],
        body: createBodySchema,
        response: { 201: serverSchema },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['MCP_SERVER_INVALID', 'MCP_SERVER_EXISTS', 'MCP_SERVER_EGRESS_DENIED'],
          example: {
            body: {
              name: 'github',
              type: 'stdio',
              command: 'node',
              args: ['/workspace/tools/github-mcp.js'],
              env: { GITHUB_TOKEN: 'ghp_example' },
            },
            response: { status: 201, body: exampleStdio },
          },
        },
      },
    },
    async (req, reply) => {
      const tenant = tenantOf(req);
      const body = req.body;
      checkMcpServerName(body.name);
      const transport = transportOfCreate(body);
      checkMcpEgress(transport, tenant.settings.egressAllow);
      const server = await deps.createMcpServer(tenant.id, {
        name: body.name,
        enabled: body.enabled ?? true,
        ...transport,
      });
      req.log.info(
        { tenantId: tenant.id, mcpServerId: server.id, type: server.type },
        'MCP server registered',
      );
      return reply.code(201).send(mcpServerToWire(server));
    },
  );

  app.get(
    '/v1/mcp-servers',
    {
      schema: {
        summary: "List the tenant's MCP servers, by name",
        tags: ['mcp-servers'],
        response: {
          200: {
            type: 'object',
            required: ['mcp_servers'],
            properties: { mcp_servers: { type: 'array', items: serverSchema } },
          },
        },
      },
      config: {
        auth: 'tenant',
        docs: { example: { response: { status: 200, body: { mcp_servers: [exampleHttp, exampleStdio] } } } },
      },
    },
    async (req) => ({ mcp_servers: (await deps.listMcpServers(tenantIdOf(req))).map(mcpServerToWire) }),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/mcp-servers/:id',
    {
      schema: {
        summary: 'Read an MCP server',
        tags: ['mcp-servers'],
        params: serverParams,
        response: { 200: serverSchema },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['MCP_SERVER_NOT_FOUND'],
          example: { params: { id: EXAMPLE_SERVER_ID }, response: { status: 200, body: exampleStdio } },
        },
      },
    },
    async (req) => mcpServerToWire(await deps.getMcpServer(tenantIdOf(req), req.params.id)),
  );

  app.patch<{ Params: { id: string }; Body: PatchBody }>(
    '/v1/mcp-servers/:id',
    {
      schema: {
        summary: 'Change an MCP server',
        description:
          'Fields left out keep their value; `env` and `headers` are merged (a string sets, null removes), so write-only values need not be sent again. The type cannot change. A new `url` must be on the egress allowlist.',
        tags: ['mcp-servers'],
        params: serverParams,
        body: patchBodySchema,
        response: { 200: serverSchema },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: [
            'MCP_SERVER_NOT_FOUND',
            'MCP_SERVER_INVALID',
            'MCP_SERVER_EXISTS',
            'MCP_SERVER_EGRESS_DENIED',
          ],
          example: {
            params: { id: EXAMPLE_SERVER_ID },
            body: { enabled: false, env: { GITHUB_TOKEN: 'ghp_rotated', OLD_VAR: null } },
            response: { status: 200, body: { ...exampleStdio, enabled: false } },
          },
        },
      },
    },
    async (req) => {
      const tenant = tenantOf(req);
      const server = await deps.updateMcpServer(tenant.id, req.params.id, (current) =>
        applyPatch(current, req.body, tenant.settings.egressAllow),
      );
      req.log.info({ tenantId: tenant.id, mcpServerId: server.id }, 'MCP server changed');
      return mcpServerToWire(server);
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/v1/mcp-servers/:id',
    {
      schema: {
        summary: 'Remove an MCP server (and every conversation override of it)',
        tags: ['mcp-servers'],
        params: serverParams,
        response: { 204: { type: 'null', description: 'Removed.' } },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['MCP_SERVER_NOT_FOUND'],
          example: { params: { id: EXAMPLE_SERVER_ID }, response: { status: 204 } },
        },
      },
    },
    async (req, reply) => {
      const tenantId = tenantIdOf(req);
      if (!(await deps.deleteMcpServer(tenantId, req.params.id))) {
        throw new AppError(
          'MCP_SERVER_NOT_FOUND',
          `MCP server ${req.params.id} does not exist for this tenant`,
        );
      }
      req.log.info({ tenantId, mcpServerId: req.params.id }, 'MCP server removed');
      return reply.code(204).send();
    },
  );

  const stateExample = {
    id: EXAMPLE_SERVER_ID,
    name: 'github',
    type: 'stdio',
    enabled: false,
    tenant_enabled: true,
    conversation_enabled: false,
    reason: 'conversation_override',
    detail: 'disabled for this conversation (the tenant default is enabled)',
  };

  app.get<{ Params: { id: string } }>(
    '/v1/conversations/:id/mcp-servers',
    {
      schema: {
        summary: "The conversation's MCP servers: which ones its runs get, and why",
        description:
          "Every server of the tenant with its effective state: the conversation's override when it has one, else the tenant default; a remote server whose host:port the egress allowlist no longer covers is off (`egress_denied`). A run gets exactly the enabled ones.",
        tags: ['mcp-servers'],
        params: conversationParams,
        response: {
          200: {
            type: 'object',
            required: ['mcp_servers'],
            properties: { mcp_servers: { type: 'array', items: stateSchema } },
          },
        },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['CONVERSATION_NOT_FOUND'],
          example: {
            params: { id: EXAMPLE_CONVERSATION_ID },
            response: {
              status: 200,
              body: {
                mcp_servers: [
                  {
                    id: EXAMPLE_HTTP_SERVER_ID,
                    name: 'docs',
                    type: 'http',
                    enabled: false,
                    tenant_enabled: false,
                    conversation_enabled: null,
                    reason: 'tenant_default',
                    detail: 'disabled by the tenant default',
                  },
                  stateExample,
                ],
              },
            },
          },
        },
      },
    },
    async (req) => {
      const tenant = tenantOf(req);
      const list = await deps.listConversationMcpServers(tenant.id, req.params.id);
      return { mcp_servers: effectiveMcpServers(list, tenant.settings.egressAllow).map(stateToWire) };
    },
  );

  const one = (s: ConversationMcpServer, egressAllow: readonly string[]): Record<string, unknown> => {
    const [state] = effectiveMcpServers([s], egressAllow);
    return stateToWire(state as McpServerState);
  };

  app.put<{ Params: { id: string; serverId: string }; Body: { enabled: boolean } }>(
    '/v1/conversations/:id/mcp-servers/:serverId',
    {
      schema: {
        summary: 'Turn an MCP server on or off for this conversation (overrides the tenant default)',
        tags: ['mcp-servers'],
        params: conversationServerParams,
        body: {
          type: 'object',
          required: ['enabled'],
          additionalProperties: false,
          properties: {
            enabled: { type: 'boolean', description: "Whether this conversation's runs get the server." },
          },
        },
        response: { 200: stateSchema },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['CONVERSATION_NOT_FOUND', 'MCP_SERVER_NOT_FOUND'],
          example: {
            params: { id: EXAMPLE_CONVERSATION_ID, serverId: EXAMPLE_SERVER_ID },
            body: { enabled: false },
            response: { status: 200, body: stateExample },
          },
        },
      },
    },
    async (req) => {
      const tenant = tenantOf(req);
      const s = await deps.setConversationMcpServer(
        tenant.id,
        req.params.id,
        req.params.serverId,
        req.body.enabled,
      );
      return one(s, tenant.settings.egressAllow);
    },
  );

  app.delete<{ Params: { id: string; serverId: string } }>(
    '/v1/conversations/:id/mcp-servers/:serverId',
    {
      schema: {
        summary: "Drop this conversation's choice for an MCP server (back to the tenant default)",
        description:
          'Answers the server as the conversation now sees it; dropping a choice that was never made is not an error.',
        tags: ['mcp-servers'],
        params: conversationServerParams,
        response: { 200: stateSchema },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['CONVERSATION_NOT_FOUND', 'MCP_SERVER_NOT_FOUND'],
          example: {
            params: { id: EXAMPLE_CONVERSATION_ID, serverId: EXAMPLE_SERVER_ID },
            response: {
              status: 200,
              body: {
                ...stateExample,
                enabled: true,
                conversation_enabled: null,
                reason: 'tenant_default',
                detail: 'enabled by the tenant default',
              },
            },
          },
        },
      },
    },
    async (req) => {
      const tenant = tenantOf(req);
      const s = await deps.clearConversationMcpServer(tenant.id, req.params.id, req.params.serverId);
      return one(s, tenant.settings.egressAllow);
    },
  );
}

/** The route deps on the repository (app.ts wires it). */
export function mcpServerRouteDeps(
  repo: Pick<
    McpServerRepository,
    'create' | 'list' | 'get' | 'update' | 'delete' | 'listForConversation' | 'setOverride' | 'clearOverride'
  >,
): McpServerRouteDeps {
  return {
    createMcpServer: (tenantId, input) => repo.create(tenantId, input),
    listMcpServers: (tenantId) => repo.list(tenantId),
    getMcpServer: (tenantId, id) => repo.get(tenantId, id),
    updateMcpServer: (tenantId, id, change) => repo.update(tenantId, id, change),
    deleteMcpServer: (tenantId, id) => repo.delete(tenantId, id),
    listConversationMcpServers: (tenantId, conversationId) =>
      repo.listForConversation(tenantId, conversationId),
    setConversationMcpServer: (tenantId, conversationId, serverId, enabled) =>
      repo.setOverride(tenantId, conversationId, serverId, enabled),
    clearConversationMcpServer: async (tenantId, conversationId, serverId) => {
      await repo.clearOverride(tenantId, conversationId, serverId);
      return { server: await repo.get(tenantId, serverId), override: null };
    },
  };
}
