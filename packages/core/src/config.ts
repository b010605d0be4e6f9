import { z } from 'zod';
import { AppError } from './errors.js';

/** An environment record: tests pass their own, services pass process.env. */
export type EnvRecord = Readonly<Record<string, string | undefined>>;

/** Parses human byte sizes: 512m, 1g, 64MiB, 1048576. */
export function parseBytes(input: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$/i.exec(input);
  if (!m) throw new AppError('INVALID_ARGUMENT', `not a size: "${input}" (use e.g. 512m, 1g, 65536)`);
  const n = Number(m[1]);
  const unit = (m[2] ?? '').toLowerCase();
  const mult =
    unit === 'k' ? 1024 : unit === 'm' ? 1024 ** 2 : unit === 'g' ? 1024 ** 3 : unit === 't' ? 1024 ** 4 : 1;
  const bytes = Math.floor(n * mult);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new AppError('INVALID_ARGUMENT', `size out of range: "${input}"`);
  }
  return bytes;
}

/** Parses durations: 60s, 500ms, 2m, 1h, or plain seconds. */
export function parseDuration(input: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(input);
  if (!m) throw new AppError('INVALID_ARGUMENT', `not a duration: "${input}" (use e.g. 500ms, 60s, 2m)`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  const ms = unit === 'ms' ? n : unit === 's' ? n * 1000 : unit === 'm' ? n * 60_000 : n * 3_600_000;
  if (!Number.isFinite(ms) || ms <= 0)
    throw new AppError('INVALID_ARGUMENT', `duration out of range: "${input}"`);
  return Math.round(ms);
}

/** Adds `e`'s message as a custom issue (for transforms and refinements that call a parser). */
export function configIssue(ctx: z.RefinementCtx, e: unknown): typeof z.NEVER {
  ctx.addIssue({ code: z.ZodIssueCode.custom, message: e instanceof Error ? e.message : String(e) });
  return z.NEVER;
}

const bytesString = z.string().transform((v, ctx) => {
  try {
    return parseBytes(v);
  } catch (e) {
    return configIssue(ctx, e);
  }
});

/** Field builders for service config schemas: every variable is a string in the env record. */
export const envFields = {
  /** A size (`512m`, `1g`, `65536`) as bytes. */
  bytes: (): z.ZodEffects<z.ZodString, number, string> => bytesString,
  /** A duration (`60s`, `1h`, `500ms`) as milliseconds. */
  duration: (): z.ZodEffects<z.ZodString, number, string> =>
    z.string().transform((v, ctx) => {
      try {
        return parseDuration(v);
      } catch (e) {
        return configIssue(ctx, e);
      }
    }),
  /** `0`/`1`/`true`/`false` (empty = the default) as a boolean; `fallback` when unset. */
  flag: (fallback: '0' | '1' = '0') =>
    z
      .enum(['0', '1', 'true', 'false', ''])
      .default(fallback)
      .transform((v) => (v === '' ? fallback === '1' : v === '1' || v === 'true')),
  /** An optional string where empty means unset. */
  optionalString: (inner: z.ZodString = z.string()): z.ZodType<string | undefined, z.ZodTypeDef, unknown> =>
    z.preprocess((v) => (v === '' ? undefined : v), inner.optional()),
} as const;

/**
 * Host-level sandbox configuration, shared by `hako sandbox run` and hakod.
 * Variable names from the seed system are kept (CNI_SUBNET).
 */
export const sandboxHostConfigSchema = z.object({
  HAKO_ENV: z
    .string()
    .regex(/^[a-z0-9]{1,12}$/, 'lowercase letters and digits, at most 12')
    .default('dev')
    .describe(
      'Environment name; everything hako creates is named `hako-{env}-…` so environments never touch each other.',
    ),
  HAKO_STATE_DIR: z
    .string()
    .default('/var/lib/hako')
    .describe('Root-owned directory for sandbox state, bundles, the image store and the quota volume.'),
  HAKO_RUN_DIR: z
    .string()
    .default('/run/hako')
    .describe('Volatile per-boot directory (tmpfs) for sandbox bundles and runtime state.'),
  HAKO_RUNTIME: z
    .enum(['auto', 'crun', 'runc', 'runsc'])
    .default('auto')
    .describe(
      "OCI runtime. `auto` picks the first of crun, runc, runsc that works on this host's cgroup layout.",
    ),
  HAKO_SANDBOX_UID: z.coerce
    .number()
    .int()
    .min(1000)
    .max(2 ** 31 - 2)
    .default(1000)
    .describe('Uid (and gid) that sandboxed processes run as, inside and on the host; never 0.'),
  HAKO_QUOTA_VOLUME_SIZE: bytesString
    .default('20g')
    .describe(
      'Budget for all sandbox workspaces: the size of the sparse XFS project-quota volume, or, on kernels without XFS quota support, the cap on the sum of the per-sandbox workspace images.',
    ),
  HAKO_BRIDGE: z
    .string()
    .regex(/^[a-zA-Z0-9_-]{1,15}$/, 'a Linux interface name, at most 15 characters')
    .default('hako0')
    .describe('Name of the Linux bridge the CNI bridge plugin creates for sandboxes.'),
  CNI_SUBNET: z
    .string()
    .default('10.209.0.0/23')
    .describe(
      'Sandbox subnet (IPv4 CIDR). IPAM `subnet` is exactly this; the range and gateway must lie inside it.',
    ),
  CNI_RANGE_START: z
    .string()
    .optional()
    .describe('First address IPAM may lease; derived from CNI_SUBNET (network + 2) when unset.'),
  CNI_RANGE_END: z
    .string()
    .optional()
    .describe('Last address IPAM may lease; derived from CNI_SUBNET (broadcast - 1) when unset.'),
  CNI_GATEWAY: z
    .string()
    .optional()
    .describe('Bridge gateway address; derived from CNI_SUBNET (network + 1) when unset.'),
  CNI_PLUGIN_DIRS: z
    .string()
    .default('/usr/lib/cni:/opt/cni/bin')
    .describe('Colon-separated directories searched for CNI plugin binaries (the CNI_PATH).'),
  HAKO_PROXY_PORT: z.coerce
    .number()
    .int()
    .min(1)
    .max(65535)
    .default(3128)
    .describe('First TCP port of the egress proxy on the bridge gateway.'),
  HAKO_PROXY_PORT_COUNT: z.coerce
    .number()
    .int()
    .min(1)
    .max(1024)
    .default(32)
    .describe(
      'How many ports from HAKO_PROXY_PORT sandboxes may reach on the gateway (one per concurrent `hako sandbox run` process with egress; hakod uses the first).',
    ),
  HAKO_INIT_BINARY: z
    .string()
    .default('/usr/bin/catatonit')
    .describe(
      "Static init binary bind-mounted read-only into long-lived sandboxes (hakod's) as their pid 1; it only reaps orphans. Debian package catatonit.",
    ),
  HAKO_LOG_LEVEL: z
    .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
    .default('warn')
    .describe('Log level (pino).'),
});

export type SandboxHostConfig = z.infer<typeof sandboxHostConfigSchema>;

/** Parses a config schema from an env record, failing with CONFIG_INVALID naming every bad variable. */
export function parseConfig<S extends z.ZodTypeAny>(schema: S, env: EnvRecord): z.infer<S> {
  const result = schema.safeParse(env);
  if (!result.success) {
    const lines = result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new AppError('CONFIG_INVALID', `invalid configuration: ${lines.join('; ')}`, {
      details: { issues: lines },
    });
  }
  return result.data as z.infer<S>;
}

export interface ConfigFieldDoc {
  readonly name: string;
  readonly description: string;
  readonly defaultValue: string | undefined;
  readonly type: string;
  /** True when the variable may be left unset (optional or defaulted). */
  readonly optional: boolean;
}

/** Lists a config schema's variables with their descriptions and defaults, for the generated docs. */
export function describeConfig(schema: z.AnyZodObject): ConfigFieldDoc[] {
  return Object.entries(schema.shape as Record<string, z.ZodTypeAny>).map(([name, field]) => {
    let t: z.ZodTypeAny = field;
    let defaultValue: string | undefined;
    let optional = false;
    for (;;) {
      if (t instanceof z.ZodDefault) {
        defaultValue = String((t._def as { defaultValue: () => unknown }).defaultValue());
        t = t._def.innerType as z.ZodTypeAny;
      } else if (t instanceof z.ZodOptional) {
        optional = true;
        t = t._def.innerType as z.ZodTypeAny;
      } else if (t instanceof z.ZodEffects) {
        t = t._def.schema as z.ZodTypeAny;
      } else break;
    }
    const type =
      t instanceof z.ZodEnum
        ? (t.options as string[]).filter((o) => o !== '').join(' \\| ')
        : t instanceof z.ZodNumber
          ? 'integer'
          : 'string';
    return {
      name,
      description: field.description ?? '',
      defaultValue,
      type,
      optional: optional || defaultValue !== undefined,
    };
  });
}
