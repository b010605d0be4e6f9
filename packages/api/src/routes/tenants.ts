/**
 * The admin API (bearer HAKO_ADMIN_TOKEN): tenants and their API keys. A key is answered in plain
 * text once, when it is created; only its hash is stored.
 */
import { AppError } from '@hako/core';
import type { FastifyInstance } from 'fastify';
import type { Tenant } from '../types.js';
import {
  DEFAULT_TENANT_SETTINGS,
  parseTenantSettings,
  tenantSettingsInputJsonSchema,
  tenantSettingsOutputJsonSchema,
  tenantSettingsToWire,
} from '../http/tenant-settings.js';
import type { TenantSettings } from '../types.js';

/** What the tenant routes need from the repositories. */
export interface TenantRouteDeps {
  createTenant: (input: { name: string; settings: TenantSettings }) => Promise<Tenant>;
  getTenant: (id: string) => Promise<Tenant | undefined>;
  createApiKey: (tenantId: string) => Promise<{ id: string; key: string; prefix: string; createdAt: string }>;
  listApiKeys: (
    tenantId: string,
  ) => Promise<{ id: string; prefix: string; createdAt: string; revokedAt: string | null }[]>;
  revokeApiKey: (tenantId: string, keyId: string) => Promise<boolean>;
}

const EXAMPLE_TENANT = '3f1c2a9e-8b7d-4c6e-9a5f-1e2d3c4b5a69';
const EXAMPLE_KEY_ID = '6a0e9c1b-2d3f-4e5a-8b7c-9d0e1f2a3b4c';
const EXAMPLE_TIME = '2025-01-01T12:00:00.000Z';

const uuid = { type: 'string', format: 'uuid' } as const;
const tenantParams = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: { id: { ...uuid, description: 'The tenant id.' } },
} as const;

function tenantSchema(): Record<string, unknown> {
  return {
    type: 'object',
    required: ['id', 'name', 'settings', 'created_at'],
    properties: {
      id: uuid,
      name: { type: 'string' },
      settings: tenantSettingsOutputJsonSchema(),
      created_at: { type: 'string', format: 'date-time' },
    },
  };
}

const apiKeyInfoSchema = {
  type: 'object',
  required: ['id', 'prefix', 'created_at', 'revoked_at'],
  properties: {
    id: uuid,
    prefix: {
      type: 'string',
      description: 'The 8 characters after `hk_`: tells keys apart in logs and lists.',
    },
    created_at: { type: 'string', format: 'date-time' },
    revoked_at: { type: ['string', 'null'], format: 'date-time' },
  },
} as const;

function tenantToWire(t: Tenant): Record<string, unknown> {
  return { id: t.id, name: t.name, settings: tenantSettingsToWire(t.settings), created_at: t.createdAt };
}

function tenantNotFound(id: string): AppError {
  return new AppError('TENANT_NOT_FOUND', `tenant ${id} does not exist`);
}

export function registerTenantRoutes(app: FastifyInstance, deps: TenantRouteDeps): void {
  const exampleSettings = tenantSettingsToWire({
    ...DEFAULT_TENANT_SETTINGS,
    limits: { ...DEFAULT_TENANT_SETTINGS.limits, requestsPerMinute: 120 },
    egressAllow: ['pypi.org:443'],
  });

  app.post<{ Body: { name: string; settings?: unknown } }>(
    '/v1/tenants',
    {
      schema: {
        summary: 'Create a tenant',
        description:
          'Settings are optional field by field: anything left out takes its default (1 CPU, 1 GiB memory and disk, 256 pids, 60 requests per minute, 4 concurrent runs, 50 turns, 200000 context tokens).',
        tags: ['admin'],
        body: {
          type: 'object',
          required: ['name'],
          additionalProperties: false,
          properties: {
            name: {
              type: 'string',
              minLength: 1,
              maxLength: 200,
              pattern: '\\S',
              description: 'Shown to admins; need not be unique.',
            },
            settings: tenantSettingsInputJsonSchema(),
          },
        },
        response: { 201: tenantSchema() },
      },
      config: {
        auth: 'admin',
        docs: {
          errors: ['MODEL_UNKNOWN', 'MODEL_DISABLED'],
          example: {
            body: {
              name: 'acme',
              settings: { limits: { requests_per_minute: 120 }, egress_allow: ['pypi.org:443'] },
            },
            response: {
              status: 201,
              body: { id: EXAMPLE_TENANT, name: 'acme', settings: exampleSettings, created_at: EXAMPLE_TIME },
            },
          },
        },
      },
    },
    async (req, reply) => {
      const settings = parseTenantSettings(req.body.settings);
      const tenant = await deps.createTenant({ name: req.body.name.trim(), settings });
      req.log.info({ tenantId: tenant.id }, 'tenant created');
      return reply.code(201).send(tenantToWire(tenant));
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/tenants/:id',
    {
      schema: {
        summary: 'Read a tenant and its settings',
        tags: ['admin'],
        params: tenantParams,
        response: { 200: tenantSchema() },
      },
      config: {
        auth: 'admin',
        docs: {
          errors: ['TENANT_NOT_FOUND'],
          example: {
            params: { id: EXAMPLE_TENANT },
            response: {
              status: 200,
              body: { id: EXAMPLE_TENANT, name: 'acme', settings: exampleSettings, created_at: EXAMPLE_TIME },
            },
          },
        },
      },
    },
    async (req) => {
      const tenant = await deps.getTenant(req.params.id);
      if (!tenant) throw tenantNotFound(req.params.id);
      return tenantToWire(tenant);
    },
  );

  app.post<{ Params: { id: string } }>(
    '/v1/tenants/:id/api-keys',
    {
      schema: {
        summary: 'Create an API key for a tenant (the key is shown once)',
        description: 'The answer is the only place the key appears: hako stores its sha256 only.',
        tags: ['admin'],
        params: tenantParams,
        response: {
          201: {
            type: 'object',
            required: ['id', 'key', 'prefix', 'created_at'],
            properties: {
              id: uuid,
              key: {
                type: 'string',
                description: 'The API key: `hk_` and 43 base64url characters. Shown once.',
              },
              prefix: apiKeyInfoSchema.properties.prefix,
              created_at: { type: 'string', format: 'date-time' },
            },
          },
        },
      },
      config: {
        auth: 'admin',
        docs: {
          errors: ['TENANT_NOT_FOUND'],
          example: {
            params: { id: EXAMPLE_TENANT },
            response: {
              status: 201,
              body: {
                id: EXAMPLE_KEY_ID,
                key: 'hk_Qm9vdHN0cmFwS2V5RXhhbXBsZU9ubHlOb3RBUmVhbEt',
                prefix: 'Qm9vdHN0',
                created_at: EXAMPLE_TIME,
              },
            },
          },
        },
      },
    },
    async (req, reply) => {
      const created = await deps.createApiKey(req.params.id);
      req.log.info({ tenantId: req.params.id, keyId: created.id, prefix: created.prefix }, 'API key created');
      return reply
        .code(201)
        .header('cache-control', 'no-store')
        .send({ id: created.id, key: created.key, prefix: created.prefix, created_at: created.createdAt });
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/tenants/:id/api-keys',
    {
      schema: {
        summary: "List a tenant's API keys (never the keys themselves)",
        tags: ['admin'],
        params: tenantParams,
        response: {
          200: {
            type: 'object',
            required: ['api_keys'],
            properties: { api_keys: { type: 'array', items: apiKeyInfoSchema } },
          },
        },
      },
      config: {
        auth: 'admin',
        docs: {
          errors: ['TENANT_NOT_FOUND'],
          example: {
            params: { id: EXAMPLE_TENANT },
            response: {
              status: 200,
              body: {
                api_keys: [
                  { id: EXAMPLE_KEY_ID, prefix: 'Qm9vdHN0', created_at: EXAMPLE_TIME, revoked_at: null },
                ],
              },
            },
          },
        },
      },
    },
    async (req) => {
      if (!(await deps.getTenant(req.params.id))) throw tenantNotFound(req.params.id);
      const keys = await deps.listApiKeys(req.params.id);
      return {
        api_keys: keys.map((k) => ({
          id: k.id,
          prefix: k.prefix,
          created_at: k.createdAt,
          revoked_at: k.revokedAt,
        })),
      };
    },
  );

  app.delete<{ Params: { id: string; keyId: string } }>(
    '/v1/tenants/:id/api-keys/:keyId',
    {
      schema: {
        summary: 'Revoke an API key (requests with it answer 401 from now on)',
        tags: ['admin'],
        params: {
          type: 'object',
          required: ['id', 'keyId'],
          additionalProperties: false,
          properties: { id: tenantParams.properties.id, keyId: { ...uuid, description: 'The key id.' } },
        },
        response: { 204: { description: 'Revoked' } },
      },
      config: {
        auth: 'admin',
        docs: {
          errors: ['TENANT_NOT_FOUND', 'API_KEY_NOT_FOUND'],
          example: { params: { id: EXAMPLE_TENANT, keyId: EXAMPLE_KEY_ID }, response: { status: 204 } },
        },
      },
    },
    async (req, reply) => {
      if (!(await deps.getTenant(req.params.id))) throw tenantNotFound(req.params.id);
      const revoked = await deps.revokeApiKey(req.params.id, req.params.keyId);
      if (!revoked) {
        throw new AppError(
          'API_KEY_NOT_FOUND',
          `API key ${req.params.keyId} is not an active key of this tenant`,
        );
      }
      req.log.info({ tenantId: req.params.id, keyId: req.params.keyId }, 'API key revoked');
      return reply.code(204).send();
    },
  );
}
