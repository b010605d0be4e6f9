// The admin model registry (global, not per tenant): id (what the SDK gets as `model`), display
// name, provider, prices in USD per million tokens (exact decimals, all four or none) and status.
// chooseRunModel() decides the model of a run: the conversation's, else the tenant default, else
// the configured default, refusing unknown (MODEL_UNKNOWN) and disabled (MODEL_DISABLED) ones.
import { AppError } from '@hako/core';
import type { Queryable } from '../db/pool.js';
import { isUniqueViolation } from '../db/pool.js';
import type { Model, ModelPrices, ModelProvider, ModelStatus } from '../types.js';
import { isUuid, iso } from './common.js';

interface ModelRow {
  id: string;
  display_name: string;
  provider: ModelProvider;
  input_price: string | null;
  output_price: string | null;
  cache_creation_price: string | null;
  cache_read_price: string | null;
  status: ModelStatus;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = `id, display_name, provider, input_price::text, output_price::text,
  cache_creation_price::text, cache_read_price::text, status, created_at, updated_at`;

/** The registry's id rule (also the route's pattern): no `/`, so it fits a path segment. */
export const MODEL_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$';
const MODEL_ID_RE = new RegExp(MODEL_ID_PATTERN);

function toModel(r: ModelRow): Model {
  const prices: ModelPrices | null =
    r.input_price === null ||
    r.output_price === null ||
    r.cache_creation_price === null ||
    r.cache_read_price === null
      ? null
      : {
          input: r.input_price,
          output: r.output_price,
          cacheCreation: r.cache_creation_price,
          cacheRead: r.cache_read_price,
        };
  return {
    id: r.id,
    displayName: r.display_name,
    provider: r.provider,
    prices,
    status: r.status,
    createdAt: iso(r.created_at),
    updatedAt: iso(r.updated_at),
  };
}

export function modelNotFound(id: string): AppError {
  return new AppError(
    'MODEL_NOT_FOUND',
    `model ${id.slice(0, 200)} is not registered (GET /v1/models lists them)`,
  );
}

/**
 * A price (USD per million tokens) as exact decimal text: a finite number from 0 to 100000 with at
 * most 6 decimals. INVALID_ARGUMENT names `field` otherwise.
 */
export function priceText(value: number, field: string): string {
  if (!Number.isFinite(value) || value < 0 || value > 100_000) {
    throw new AppError(
      'INVALID_ARGUMENT',
      `${field} must be a number from 0 to 100000 (USD per million tokens)`,
      {
        details: { field },
      },
    );
  }
  const text = value.toFixed(6);
  if (Number(text) !== value) {
    throw new AppError('INVALID_ARGUMENT', `${field} has more than 6 decimals`, { details: { field } });
  }
  return text;
}

export class ModelRepository {
  constructor(private readonly db: Queryable) {}

  /** Registers a model. MODEL_EXISTS when the id is taken, INVALID_ARGUMENT for a malformed id. */
  async create(input: {
    id: string;
    displayName: string;
    provider: ModelProvider;
    prices: ModelPrices | null;
    status?: ModelStatus;
  }): Promise<Model> {
    if (!MODEL_ID_RE.test(input.id)) {
      throw new AppError(
        'INVALID_ARGUMENT',
        `model id ${input.id.slice(0, 200)} does not match ${MODEL_ID_PATTERN}`,
      );
    }
    const p = input.prices;
    try {
      const res = await this.db.query<ModelRow>(
        `INSERT INTO models (id, display_name, provider, input_price, output_price, cache_creation_price,
           cache_read_price, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ${COLUMNS}`,
        [
          input.id,
          input.displayName,
          input.provider,
          p?.input ?? null,
          p?.output ?? null,
          p?.cacheCreation ?? null,
          p?.cacheRead ?? null,
          input.status ?? 'active',
        ],
      );
      return toModel(res.rows[0] as ModelRow);
    } catch (err) {
      if (isUniqueViolation(err)) {
        throw new AppError('MODEL_EXISTS', `model ${input.id} is already registered; PATCH it instead`);
      }
      throw err;
    }
  }

  /** The model, or undefined when none has that id. */
  async find(id: string): Promise<Model | undefined> {
    if (!MODEL_ID_RE.test(id)) return undefined;
    const res = await this.db.query<ModelRow>(`SELECT ${COLUMNS} FROM models WHERE id = $1`, [id]);
    const row = res.rows[0];
    return row ? toModel(row) : undefined;
  }

  /** The model; MODEL_NOT_FOUND when none has that id. */
  async get(id: string): Promise<Model> {
    const m = await this.find(id);
    if (!m) throw modelNotFound(id);
    return m;
  }

  /** Every model (only those with `status` when given), by id. */
  async list(options: { status?: ModelStatus } = {}): Promise<Model[]> {
    const res = await this.db.query<ModelRow>(
      `SELECT ${COLUMNS} FROM models WHERE ($1::text IS NULL OR status = $1) ORDER BY id`,
      [options.status ?? null],
    );
    return res.rows.map(toModel);
  }

  /**
   * Changes the display name and/or the prices (null makes the model unpriced); fields left
   * undefined stay. MODEL_NOT_FOUND when none has that id.
   */
  async update(id: string, patch: { displayName?: string; prices?: ModelPrices | null }): Promise<Model> {
    if (!MODEL_ID_RE.test(id)) throw modelNotFound(id);
    const setPrices = patch.prices !== undefined;
    const p = patch.prices ?? null;
    const res = await this.db.query<ModelRow>(
      `UPDATE models SET display_name = COALESCE($2, display_name),
         input_price = CASE WHEN $3 THEN $4::numeric ELSE input_price END,
         output_price = CASE WHEN $3 THEN $5::numeric ELSE output_price END,
         cache_creation_price = CASE WHEN $3 THEN $6::numeric ELSE cache_creation_price END,
         cache_read_price = CASE WHEN $3 THEN $7::numeric ELSE cache_read_price END,
         updated_at = now()
       WHERE id = $1 RETURNING ${COLUMNS}`,
      [
        id,
        patch.displayName ?? null,
        setPrices,
        p?.input ?? null,
        p?.output ?? null,
        p?.cacheCreation ?? null,
        p?.cacheRead ?? null,
      ],
    );
    const row = res.rows[0];
    if (!row) throw modelNotFound(id);
    return toModel(row);
  }

  /** Activates or disables a model. MODEL_NOT_FOUND when none has that id. */
  async setStatus(id: string, status: ModelStatus): Promise<Model> {
    if (!MODEL_ID_RE.test(id)) throw modelNotFound(id);
    const res = await this.db.query<ModelRow>(
      `UPDATE models SET status = $2, updated_at = now() WHERE id = $1 RETURNING ${COLUMNS}`,
      [id, status],
    );
    const row = res.rows[0];
    if (!row) throw modelNotFound(id);
    return toModel(row);
  }

  /**
   * Sets (or with null removes) the tenant's default model, its settings' `model`. False when
   * there is no such tenant. The caller checks the model first (requireUsable).
   */
  async setTenantDefault(tenantId: string, modelId: string | null): Promise<boolean> {
    if (!isUuid(tenantId)) return false;
    const res = await this.db.query(
      `UPDATE tenants SET settings = CASE WHEN $2::text IS NULL THEN settings - 'model'
         ELSE jsonb_set(settings, '{model}', to_jsonb($2::text)) END
       WHERE id = $1`,
      [tenantId, modelId],
    );
    return res.rowCount > 0;
  }

  /**
   * The registered, active model `id`, for a request that names it (`what` says where:
   * "model_id", "the tenant's default model"). MODEL_UNKNOWN (422) when it is not registered,
   * MODEL_DISABLED (409) when it is disabled.
   */
  async requireUsable(id: string, what: string): Promise<Model> {
    const m = await this.find(id);
    if (!m) {
      throw new AppError(
        'MODEL_UNKNOWN',
        `${what} ${id.slice(0, 200)} is not a registered model; GET /v1/models lists the active ones`,
        { details: { modelId: id.slice(0, 200) } },
      );
    }
    if (m.status !== 'active') {
      throw new AppError(
        'MODEL_DISABLED',
        `${what} ${id} is disabled; pick an active model (GET /v1/models)`,
        { details: { modelId: id } },
      );
    }
    return m;
  }
}

/**
 * The model a run uses: the conversation's pick, else the tenant's default, else the configured
 * default (HAKO_DEFAULT_MODEL), else none (Claude Code's own default; undefined). The
 * conversation's and the tenant's must be registered and active (MODEL_UNKNOWN, MODEL_DISABLED);
 * the configured default must be active when it is registered, and may be unregistered (an
 * operator's choice, unpriced).
 */
export async function chooseRunModel(
  models: Pick<ModelRepository, 'find' | 'requireUsable'>,
  input: { conversationModel?: string | null; tenantModel?: string; configuredDefault?: string },
): Promise<string | undefined> {
  return (await chooseRunModelWithProvider(models, input))?.id;
}

/** A run's model and the upstream it runs through (the registry's provider). */
export interface RunModel {
  readonly id: string;
  /** `bedrock`: the run's sandbox gets hakod's bedrock upstream; else the anthropic one. */
  readonly provider: ModelProvider;
}

/**
 * chooseRunModel with the chosen model's provider. An unregistered configured default runs on
 * `anthropic` (the registry is where a model is declared to be Bedrock's).
 */
export async function chooseRunModelWithProvider(
  models: Pick<ModelRepository, 'find' | 'requireUsable'>,
  input: { conversationModel?: string | null; tenantModel?: string; configuredDefault?: string },
): Promise<RunModel | undefined> {
  if (input.conversationModel !== undefined && input.conversationModel !== null) {
    const m = await models.requireUsable(input.conversationModel, "the conversation's model");
    return { id: m.id, provider: m.provider };
  }
  if (input.tenantModel !== undefined) {
    const m = await models.requireUsable(input.tenantModel, "the tenant's default model");
    return { id: m.id, provider: m.provider };
  }
  if (input.configuredDefault === undefined) return undefined;
  const m = await models.find(input.configuredDefault);
  if (m && m.status !== 'active') {
    throw new AppError(
      'MODEL_DISABLED',
      `the server's default model ${m.id} (HAKO_DEFAULT_MODEL) is disabled; pick an active model for the conversation (PATCH /v1/conversations/{id} model_id)`,
      { details: { modelId: m.id } },
    );
  }
  return { id: input.configuredDefault, provider: m?.provider ?? 'anthropic' };
}
