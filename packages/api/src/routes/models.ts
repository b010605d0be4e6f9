/**
 * The model registry (global; the admin token manages it) and a tenant's default model. A tenant
 * key lists the active models and reads any one; the admin sees all. Prices are USD per million
 * tokens (JSON numbers, at most 6 decimals; all four or `null` for an unpriced model).
 */
import { AppError } from '@hako/core';
import type { FastifyInstance } from 'fastify';
import type { Model, ModelPrices, ModelProvider, ModelStatus, Tenant } from '../types.js';
import type { ModelRepository } from '../repositories/models.js';
import { MODEL_ID_PATTERN, priceText } from '../repositories/models.js';

export interface ModelRouteDeps {
  models: Pick<ModelRepository, 'create' | 'get' | 'list' | 'update' | 'setStatus' | 'requireUsable'>;
  getTenant: (id: string) => Promise<Tenant | undefined>;
  /** Sets (or with null clears) the tenant's default model in its settings. */
  setTenantModel: (tenantId: string, modelId: string | null) => Promise<void>;
}

const EXAMPLE_TIME = '2025-01-01T12:00:00.000Z';
const EXAMPLE_TENANT = '3f1c2a9e-8b7d-4c6e-9a5f-1e2d3c4b5a69';

const modelIdSchema = {
  type: 'string',
  pattern: MODEL_ID_PATTERN,
  description: 'The id the SDK gets as `model` (e.g. `claude-sonnet-4-5`; for bedrock its model id).',
} as const;

const pricesSchema = {
  type: ['object', 'null'],
  required: ['input', 'output', 'cache_creation', 'cache_read'],
  additionalProperties: false,
  description:
    "USD per million tokens (at most 6 decimals). null: unpriced, a run's cost is then Claude Code's own figure.",
  properties: {
    input: { type: 'number', minimum: 0, maximum: 100000 },
    output: { type: 'number', minimum: 0, maximum: 100000 },
    cache_creation: { type: 'number', minimum: 0, maximum: 100000 },
    cache_read: { type: 'number', minimum: 0, maximum: 100000 },
  },
} as const;

const modelSchema = {
  type: 'object',
  required: ['id', 'display_name', 'provider', 'prices', 'status', 'created_at', 'updated_at'],
  properties: {
    id: { type: 'string' },
    display_name: { type: 'string' },
    provider: { type: 'string', enum: ['anthropic', 'bedrock'] },
    prices: pricesSchema,
    status: { type: 'string', enum: ['active', 'disabled'] },
    created_at: { type: 'string', format: 'date-time' },
    updated_at: { type: 'string', format: 'date-time' },
  },
} as const;

const idParams = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: { id: { ...modelIdSchema, description: 'The model id.' } },
} as const;

interface PricesWire {
  input: number;
  output: number;
  cache_creation: number;
  cache_read: number;
}

function pricesFromWire(p: PricesWire | null | undefined): ModelPrices | null {
  if (p === null || p === undefined) return null;
  return {
    input: priceText(p.input, 'body.prices.input'),
    output: priceText(p.output, 'body.prices.output'),
    cacheCreation: priceText(p.cache_creation, 'body.prices.cache_creation'),
    cacheRead: priceText(p.cache_read, 'body.prices.cache_read'),
  };
}

export function modelToWire(m: Model): Record<string, unknown> {
  return {
    id: m.id,
    display_name: m.displayName,
    provider: m.provider,
    prices:
      m.prices === null
        ? null
        : {
            input: Number(m.prices.input),
            output: Number(m.prices.output),
            cache_creation: Number(m.prices.cacheCreation),
            cache_read: Number(m.prices.cacheRead),
          },
    status: m.status,
    created_at: m.createdAt,
    updated_at: m.updatedAt,
  };
}

const exampleModel = {
  id: 'claude-sonnet-4-5',
  display_name: 'Claude Sonnet 4.5',
  provider: 'anthropic',
  prices: { input: 3, output: 15, cache_creation: 3.75, cache_read: 0.3 },
  status: 'active',
  created_at: EXAMPLE_TIME,
  updated_at: EXAMPLE_TIME,
};

export function registerModelRoutes(app: FastifyInstance, deps: ModelRouteDeps): void {
  app.post<{
    Body: {
      id: string;
      display_name: string;
      provider: ModelProvider;
      prices?: PricesWire | null;
      status?: ModelStatus;
    };
  }>(
    '/v1/models',
    {
      schema: {
        summary: 'Register a model',
        tags: ['models'],
        body: {
          type: 'object',
          required: ['id', 'display_name', 'provider'],
          additionalProperties: false,
          properties: {
            id: modelIdSchema,
            display_name: { type: 'string', minLength: 1, maxLength: 200, pattern: '\\S' },
            provider: { type: 'string', enum: ['anthropic', 'bedrock'] },
            prices: pricesSchema,
            status: { type: 'string', enum: ['active', 'disabled'], default: 'active' },
          },
        },
        response: { 201: modelSchema },
      },
      config: {
        auth: 'admin',
        docs: {
          errors: ['MODEL_EXISTS'],
          example: {
            body: {
              id: 'claude-sonnet-4-5',
              display_name: 'Claude Sonnet 4.5',
              provider: 'anthropic',
              prices: exampleModel.prices,
            },
            response: { status: 201, body: exampleModel },
          },
        },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const model = await deps.models.create({
        id: b.id,
        displayName: b.display_name.trim(),
        provider: b.provider,
        prices: pricesFromWire(b.prices),
        status: b.status ?? 'active',
      });
      req.log.info({ modelId: model.id }, 'model registered');
      return reply.code(201).send(modelToWire(model));
    },
  );

  app.get(
    '/v1/models',
    {
      schema: {
        summary: 'List the models (a tenant key: the active ones; the admin token: all)',
        tags: ['models'],
        response: {
          200: {
            type: 'object',
            required: ['models'],
            properties: { models: { type: 'array', items: modelSchema } },
          },
        },
      },
      config: {
        auth: 'admin_or_tenant',
        docs: { example: { response: { status: 200, body: { models: [exampleModel] } } } },
      },
    },
    async (req) => {
      const admin = req.tenant === undefined;
      const list = await deps.models.list(admin ? {} : { status: 'active' });
      return { models: list.map(modelToWire) };
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/models/:id',
    {
      schema: {
        summary: 'Read a model',
        tags: ['models'],
        params: idParams,
        response: { 200: modelSchema },
      },
      config: {
        auth: 'admin_or_tenant',
        docs: {
          errors: ['MODEL_NOT_FOUND'],
          example: { params: { id: 'claude-sonnet-4-5' }, response: { status: 200, body: exampleModel } },
        },
      },
    },
    async (req) => modelToWire(await deps.models.get(req.params.id)),
  );

  app.patch<{ Params: { id: string }; Body: { display_name?: string; prices?: PricesWire | null } }>(
    '/v1/models/:id',
    {
      schema: {
        summary: "Change a model's display name or prices",
        description:
          'Fields left out stay. New prices apply to runs that end from now on; usage already recorded keeps its cost.',
        tags: ['models'],
        params: idParams,
        body: {
          type: 'object',
          additionalProperties: false,
          minProperties: 1,
          properties: {
            display_name: { type: 'string', minLength: 1, maxLength: 200, pattern: '\\S' },
            prices: pricesSchema,
          },
        },
        response: { 200: modelSchema },
      },
      config: {
        auth: 'admin',
        docs: {
          errors: ['MODEL_NOT_FOUND'],
          example: {
            params: { id: 'claude-sonnet-4-5' },
            body: { prices: { input: 3, output: 15, cache_creation: 3.75, cache_read: 0.3 } },
            response: { status: 200, body: exampleModel },
          },
        },
      },
    },
    async (req) => {
      const patch: { displayName?: string; prices?: ModelPrices | null } = {};
      if (req.body.display_name !== undefined) patch.displayName = req.body.display_name.trim();
      if (req.body.prices !== undefined) patch.prices = pricesFromWire(req.body.prices);
      const model = await deps.models.update(req.params.id, patch);
      req.log.info({ modelId: model.id }, 'model changed');
      return modelToWire(model);
    },
  );

  app.patch<{ Params: { id: string }; Body: { status: ModelStatus } }>(
    '/v1/models/:id/status',
    {
      schema: {
        summary: 'Activate or disable a model',
        description:
          'A disabled model is refused (409 MODEL_DISABLED) when a conversation or tenant picks it and when an execute would use it; runs already going finish.',
        tags: ['models'],
        params: idParams,
        body: {
          type: 'object',
          required: ['status'],
          additionalProperties: false,
          properties: { status: { type: 'string', enum: ['active', 'disabled'] } },
        },
        response: { 200: modelSchema },
      },
      config: {
        auth: 'admin',
        docs: {
          errors: ['MODEL_NOT_FOUND'],
          example: {
            params: { id: 'claude-sonnet-4-5' },
            body: { status: 'disabled' },
            response: { status: 200, body: { ...exampleModel, status: 'disabled' } },
          },
        },
      },
    },
    async (req) => {
      const model = await deps.models.setStatus(req.params.id, req.body.status);
      req.log.info({ modelId: model.id, status: model.status }, 'model status changed');
      return modelToWire(model);
    },
  );

  app.put<{ Params: { id: string }; Body: { model_id: string | null } }>(
    '/v1/tenants/:id/model',
    {
      schema: {
        summary: "Set a tenant's default model",
        description:
          "The model of the tenant's conversations that pick none (stored as the tenant's `settings.model`). null clears it: runs then use HAKO_DEFAULT_MODEL.",
        tags: ['admin'],
        params: {
          type: 'object',
          required: ['id'],
          additionalProperties: false,
          properties: { id: { type: 'string', format: 'uuid', description: 'The tenant id.' } },
        },
        body: {
          type: 'object',
          required: ['model_id'],
          additionalProperties: false,
          properties: {
            model_id: {
              type: ['string', 'null'],
              maxLength: 200,
              description: 'A registered, active model.',
            },
          },
        },
        response: {
          200: {
            type: 'object',
            required: ['tenant_id', 'model_id'],
            properties: {
              tenant_id: { type: 'string', format: 'uuid' },
              model_id: { type: ['string', 'null'] },
            },
          },
        },
      },
      config: {
        auth: 'admin',
        docs: {
          errors: ['TENANT_NOT_FOUND', 'MODEL_UNKNOWN', 'MODEL_DISABLED'],
          example: {
            params: { id: EXAMPLE_TENANT },
            body: { model_id: 'claude-sonnet-4-5' },
            response: { status: 200, body: { tenant_id: EXAMPLE_TENANT, model_id: 'claude-sonnet-4-5' } },
          },
        },
      },
    },
    async (req) => {
      const tenant = await deps.getTenant(req.params.id);
      if (!tenant) throw new AppError('TENANT_NOT_FOUND', `tenant ${req.params.id} does not exist`);
      const modelId = req.body.model_id;
      if (modelId !== null) await deps.models.requireUsable(modelId, 'model_id');
      await deps.setTenantModel(tenant.id, modelId);
      req.log.info({ tenantId: tenant.id, modelId }, "tenant's default model set");
      return { tenant_id: tenant.id, model_id: modelId };
    },
  );
}
