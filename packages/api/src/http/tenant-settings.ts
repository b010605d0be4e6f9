/**
 * Tenant settings on the wire (snake_case JSON, every field optional with a default) and their
 * mapping to TenantSettings (camelCase, complete). One zod schema is the truth: the JSON Schema of
 * the routes (Fastify validation and OpenAPI) is derived from it, and the route parses the body
 * with it again to apply defaults and map the names.
 */
import { z } from 'zod/v4';
import { AppError } from '@hako/core';
import type { TenantSettings } from '../types.js';

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;

/** The defaults of a tenant created without settings. */
export const DEFAULT_TENANT_SETTINGS: TenantSettings = {
  limits: {
    cpus: 1,
    memoryBytes: GIB,
    pids: 256,
    diskBytes: GIB,
    requestsPerMinute: 60,
    concurrentRuns: 4,
    maxTurns: 50,
  },
  allowedTools: [],
  disallowedTools: [],
  egressAllow: [],
  maxContextTokens: 200_000,
};

const d = DEFAULT_TENANT_SETTINGS;

const toolName = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces');

/** hakod's egress allowlist entry: `host:port`, `*.domain:port`, `[v6]:port`; port may be `*`. */
const egressEntry = z
  .string()
  .max(300)
  .regex(
    /^((\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):([0-9]{1,5}|\*)$/,
    'host:port (host name, *.domain, IPv4 or [IPv6]; port 1-65535 or *)',
  );

const limitsWire = z
  .object({
    cpus: z
      .number()
      .positive()
      .max(64)
      .default(d.limits.cpus)
      .describe('CPUs of the sandbox (fractions allowed).'),
    memory_bytes: z
      .number()
      .int()
      .min(64 * MIB)
      .max(1024 * GIB)
      .default(d.limits.memoryBytes)
      .describe('Memory limit of the sandbox, bytes.'),
    pids: z
      .number()
      .int()
      .min(16)
      .max(65_536)
      .default(d.limits.pids)
      .describe('Most processes in the sandbox.'),
    disk_bytes: z
      .number()
      .int()
      .min(16 * MIB)
      .max(16 * 1024 * GIB)
      .default(d.limits.diskBytes)
      .describe('Disk quota of /workspace, bytes.'),
    requests_per_minute: z
      .number()
      .int()
      .min(1)
      .max(1_000_000)
      .default(d.limits.requestsPerMinute)
      .describe('Requests per minute per API key (429 RATE_LIMITED past it).'),
    concurrent_runs: z
      .number()
      .int()
      .min(1)
      .max(10_000)
      .default(d.limits.concurrentRuns)
      .describe('Executes running at once per tenant (429 CONCURRENCY_LIMITED past it).'),
    max_turns: z.number().int().min(1).max(10_000).default(d.limits.maxTurns).describe('Turns per execute.'),
  })
  .strict();

/** The settings object of `POST /v1/tenants` (wire names); every field has a default. */
export const tenantSettingsWireSchema = z
  .object({
    limits: limitsWire.prefault({}).describe('Sandbox and request limits.'),
    allowed_tools: z
      .array(toolName)
      .max(500)
      .default([])
      .describe('Tools the agent may use without asking; empty means the SDK default.'),
    disallowed_tools: z.array(toolName).max(500).default([]).describe('Tools the agent may never use.'),
    egress_allow: z
      .array(egressEntry)
      .max(256)
      .default([])
      .describe(
        "The sandbox's egress allowlist (hakod's format); the Anthropic API is always reachable through hakod.",
      ),
    system_prompt: z.string().max(100_000).optional().describe('Appended to the agent system prompt.'),
    max_context_tokens: z
      .number()
      .int()
      .min(1_000)
      .max(10_000_000)
      .default(d.maxContextTokens)
      .describe('An execute is refused (422 CONTEXT_LIMIT_EXCEEDED) once a conversation holds this many.'),
    model: z
      .string()
      .min(1)
      .max(200)
      .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces')
      .optional()
      .describe(
        "The tenant's default model: a registered, active model id (GET /v1/models; else 422 MODEL_UNKNOWN or 409 MODEL_DISABLED); PUT /v1/tenants/{id}/model changes it. Unset: HAKO_DEFAULT_MODEL.",
      ),
  })
  .strict();

export type TenantSettingsWireInput = z.input<typeof tenantSettingsWireSchema>;
export type TenantSettingsWire = z.output<typeof tenantSettingsWireSchema>;

/**
 * Parses wire settings (undefined = all defaults) into TenantSettings. INVALID_ARGUMENT names the
 * first bad field (`settings.limits.cpus`) in `details.field`.
 */
export function parseTenantSettings(input: unknown): TenantSettings {
  if (typeof input === 'object' && input !== null && 'mcp_servers' in input) {
    throw new AppError(
      'INVALID_ARGUMENT',
      'settings.mcp_servers: MCP servers live in the registry now; register them with POST /v1/mcp-servers (tenant API key)',
      { details: { field: 'settings.mcp_servers' } },
    );
  }
  const r = tenantSettingsWireSchema.safeParse(input ?? {});
  if (!r.success) {
    const issue = r.error.issues[0];
    const field = ['settings', ...(issue?.path ?? []).map(String)].join('.');
    throw new AppError('INVALID_ARGUMENT', `${field}: ${issue?.message ?? 'invalid'}`, {
      details: { field },
    });
  }
  const w = r.data;
  const out: TenantSettings = {
    limits: {
      cpus: w.limits.cpus,
      memoryBytes: w.limits.memory_bytes,
      pids: w.limits.pids,
      diskBytes: w.limits.disk_bytes,
      requestsPerMinute: w.limits.requests_per_minute,
      concurrentRuns: w.limits.concurrent_runs,
      maxTurns: w.limits.max_turns,
    },
    allowedTools: w.allowed_tools,
    disallowedTools: w.disallowed_tools,
    egressAllow: w.egress_allow,
    maxContextTokens: w.max_context_tokens,
  };
  if (w.system_prompt !== undefined) out.systemPrompt = w.system_prompt;
  if (w.model !== undefined) out.model = w.model;
  return out;
}

/** TenantSettings in wire names (the answer of `GET /v1/tenants/{id}`). */
export function tenantSettingsToWire(s: TenantSettings): TenantSettingsWire {
  const out: TenantSettingsWire = {
    limits: {
      cpus: s.limits.cpus,
      memory_bytes: s.limits.memoryBytes,
      pids: s.limits.pids,
      disk_bytes: s.limits.diskBytes,
      requests_per_minute: s.limits.requestsPerMinute,
      concurrent_runs: s.limits.concurrentRuns,
      max_turns: s.limits.maxTurns,
    },
    allowed_tools: [...s.allowedTools],
    disallowed_tools: [...s.disallowedTools],
    egress_allow: [...s.egressAllow],
    max_context_tokens: s.maxContextTokens,
  };
  if (s.systemPrompt !== undefined) out.system_prompt = s.systemPrompt;
  if (s.model !== undefined) out.model = s.model;
  return out;
}

type JsonSchema = Record<string, unknown>;

/** Drops `$schema` (Fastify's ajv speaks draft-07; the keywords used here mean the same there). */
function withoutMeta(schema: JsonSchema): JsonSchema {
  const { $schema: _meta, ...rest } = schema;
  return rest;
}

/** JSON Schema of the settings as a request accepts them (every field optional). */
export function tenantSettingsInputJsonSchema(): JsonSchema {
  return withoutMeta(z.toJSONSchema(tenantSettingsWireSchema, { io: 'input' }));
}

/** JSON Schema of the settings as an answer carries them (defaults filled in). */
export function tenantSettingsOutputJsonSchema(): JsonSchema {
  return withoutMeta(z.toJSONSchema(tenantSettingsWireSchema, { io: 'output' }));
}
