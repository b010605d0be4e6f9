/**
 * hako-api's configuration, parsed from an env record (tests pass their own). Docs are generated
 * from `apiConfigSchema` (docs/configuration.md). The variable names of the system hako replaces
 * stay where it had them (DATABASE_URL, REDIS_URL).
 */
import { z } from 'zod';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { AppError, configIssue, envFields, parseConfig, parseDuration } from '@hako/core';
import type { EnvRecord } from '@hako/core';
import type { NodeEndpoint } from './nodes/node-pool.js';

/** Parses `name=host:port,name2=unix:/run/hako/hakod.sock`; a bare address is named by itself. */
export function parseNodes(value: string): NodeEndpoint[] {
  const out: NodeEndpoint[] = [];
  const names = new Set<string>();
  for (const raw of value.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const eq = item.indexOf('=');
    const name = eq > 0 ? item.slice(0, eq) : item;
    const address = eq > 0 ? item.slice(eq + 1) : item;
    if (!/^[A-Za-z0-9._:/[\]-]{1,200}$/.test(name)) throw new Error(`node name "${name}" is not valid`);
    if (!/^(unix:\/\S+|\[[0-9A-Fa-f:.]+\]:\d{1,5}|[A-Za-z0-9.-]+:\d{1,5})$/.test(address)) {
      throw new Error(`node "${name}": "${address}" is not host:port, [v6]:port or unix:/path`);
    }
    if (names.has(name)) throw new Error(`node "${name}" is listed twice`);
    names.add(name);
    out.push({ name, address });
  }
  return out;
}

const listen = z
  .string()
  .regex(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'host:port')
  .refine((v) => Number(v.slice(v.lastIndexOf(':') + 1)) <= 65535, 'port over 65535');

/** Every variable hako-api reads (the docs are generated from this). */
export const apiConfigSchema = z.object({
  HAKO_ENV: z
    .string()
    .regex(/^[a-z0-9]{1,12}$/, 'lowercase letters and digits, at most 12')
    .default('dev')
    .describe('Environment name; Redis keys are prefixed `hako:{env}:` so environments never share locks.'),
  HAKO_API_LISTEN: listen
    .default('127.0.0.1:8080')
    .describe('Where the HTTP API listens (`host:port`; port 0 picks a free port).'),
  HAKO_ADMIN_TOKEN: z
    .string()
    .min(16, 'at least 16 characters')
    .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces')
    .describe('Bearer token of the admin API (`/v1/tenants`); compared in constant time. Required.'),
  HAKO_METRICS_TOKEN: envFields
    .optionalString(
      z
        .string()
        .min(16, 'at least 16 characters')
        .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces'),
    )
    .describe(
      'Bearer token Prometheus sends to scrape `GET /metrics`; it opens nothing else. The admin token is accepted there too; unset, only the admin token reads the metrics (they are never open).',
    ),
  HAKO_SHUTDOWN_DELAY: envFields
    .optionalString()
    .transform((v, ctx) => {
      if (v === undefined) return 0;
      try {
        const ms = parseDuration(v);
        return ms <= 300_000 ? ms : configIssue(ctx, new Error(`"${v}" is over 5m`));
      } catch (e) {
        return configIssue(ctx, e);
      }
    })
    .describe(
      'On SIGTERM, how long the process keeps serving with `/health/live` and `/health/ready` answering 503 SHUTTING_DOWN (so load balancers stop sending it work) before it stops taking requests (at most 5m). Unset: it stops at once.',
    ),
  HAKO_HEALTH_TIMEOUT: envFields
    .duration()
    .refine((ms) => ms >= 50 && ms <= 60_000, 'between 50ms and 60s')
    .default('2s')
    .describe(
      'Deadline of each dependency check of `/health` and `/health/ready` (database, Redis, S3, nodes): a hung dependency fails its check after this long instead of hanging the probe.',
    ),
  DATABASE_URL: envFields
    .optionalString(z.string().regex(/^postgres(ql)?:\/\//, 'a postgres:// URL'))
    .describe(
      'PostgreSQL connection URL. Migrations run at start-up (serialized across API processes). Unset: an embedded PostgreSQL (PGlite) in `${HAKO_HOME}/pgdata`, for one API process.',
    ),
  DATABASE_POOL_MAX: z.coerce
    .number()
    .int()
    .min(1)
    .max(1000)
    .default(10)
    .describe('Most PostgreSQL connections per API process.'),
  REDIS_URL: envFields
    .optionalString(z.string().regex(/^rediss?:\/\//, 'a redis:// or rediss:// URL'))
    .describe(
      'Redis URL: conversation locks, rate limits and run slots shared by every API process. Unset: in-process locks and limits, correct only for a single API process (refused when HAKO_API_PROCESSES is over 1).',
    ),
  HAKO_API_PROCESSES: z.coerce
    .number()
    .int()
    .min(1)
    .max(10_000)
    .default(1)
    .describe(
      'How many API processes this deployment runs; over 1 requires REDIS_URL and DATABASE_URL (the in-process and embedded engines serve one process).',
    ),
  HAKO_HOME: z
    .string()
    .default('~/.hako')
    .describe("Home of the embedded engines (`pgdata`); `~` is the user's home directory."),
  S3_ENDPOINT: envFields
    .optionalString(z.string().url())
    .describe('S3 endpoint URL (an S3-compatible server); unset means AWS S3 for S3_REGION.'),
  S3_REGION: z
    .string()
    .default('us-east-1')
    .describe('S3 region (any value for most S3-compatible servers).'),
  S3_BUCKET: z.string().min(3).describe('Bucket holding `workspaces/{tenant}/{conversation}/`. Required.'),
  S3_ACCESS_KEY_ID: envFields.optionalString().describe('S3 access key; unset uses the AWS default chain.'),
  S3_SECRET_ACCESS_KEY: envFields.optionalString().describe('S3 secret key (with S3_ACCESS_KEY_ID).'),
  S3_FORCE_PATH_STYLE: envFields
    .flag('1')
    .describe('Address buckets as `endpoint/bucket` rather than `bucket.endpoint` (S3-compatible servers).'),
  HAKO_NODES: z
    .string()
    .default('local=127.0.0.1:7443')
    .superRefine((v, ctx) => {
      try {
        parseNodes(v);
      } catch (e) {
        configIssue(ctx, e);
      }
    })
    .describe(
      'hakod endpoints, comma-separated `name=host:port` (or `name=unix:/path`); a new sandbox goes to the least-loaded healthy one.',
    ),
  HAKO_NODE_TLS_DIR: envFields
    .optionalString()
    .describe(
      'Directory with ca.pem, client.pem and client-key.pem (`hako certs init`) for mTLS to hakod. Unset: plaintext, which hakod accepts only on loopback or a unix socket.',
    ),
  HAKO_NODE_AUTH_TOKEN: envFields
    .optionalString()
    .describe("Bearer token sent to hakod on every call (hakod's AGENT_AUTH_TOKEN)."),
  HAKO_NODE_POLL_INTERVAL: envFields
    .duration()
    .default('5s')
    .describe('How often each node is asked for its load and health.'),
  HAKO_SPOOL_DIR: z
    .string()
    .default('/var/lib/hako/api-spool')
    .describe(
      "Local directory where a finished run's workspace waits until S3 has every changed file; kept across restarts and retried, so no file is lost.",
    ),
  HAKO_LOCK_TTL: envFields
    .duration()
    .default('600s')
    .describe("TTL of a conversation lock (renewed while the run lives; a crashed API's lock expires)."),
  HAKO_PING_INTERVAL: envFields
    .duration()
    .default('10s')
    .describe('Interval of SSE `ping` events on a live execute stream.'),
  HAKO_SANDBOX_IDLE_TIMEOUT: envFields
    .duration()
    .default('15m')
    .describe("A conversation's sandbox is destroyed by hakod after this long without a call."),
  HAKO_DEFAULT_MODEL: envFields
    .optionalString()
    .describe(
      "Model of runs whose conversation and tenant pick none (the model registry's id; may be unregistered, then unpriced: a run costs what Claude Code reports). Refused if registered and disabled. Unset leaves Claude Code's default.",
    ),
  HAKO_AGENT_TIMEOUT: envFields
    .duration()
    .default('30m')
    .describe('Longest one execute may run before it is cancelled.'),
  HAKO_LOG_LEVEL: z
    .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
    .default('info')
    .describe('Log level (pino).'),
});

export type ApiConfig = z.infer<typeof apiConfigSchema> & { readonly nodes: NodeEndpoint[] };

/** Parses hako-api's configuration; CONFIG_INVALID names every bad variable. */
export function loadApiConfig(env: EnvRecord): ApiConfig {
  const c = parseConfig(apiConfigSchema, env);
  if (c.HAKO_API_PROCESSES > 1) {
    const missing = [
      c.REDIS_URL === undefined ? 'REDIS_URL' : '',
      c.DATABASE_URL === undefined ? 'DATABASE_URL' : '',
    ]
      .filter((v) => v !== '')
      .join(' and ');
    if (missing !== '') {
      throw new AppError(
        'CONFIG_INVALID',
        `invalid configuration: HAKO_API_PROCESSES is ${c.HAKO_API_PROCESSES} but ${missing} is unset: the in-process locks and the embedded database serve one process only; set ${missing}`,
      );
    }
  }
  return { ...c, HAKO_HOME: expandHome(c.HAKO_HOME, env), nodes: parseNodes(c.HAKO_NODES) };
}

/** `~` or `~/x` with the user's home (HOME, else the OS's); other paths as they are. */
export function expandHome(path: string, env: EnvRecord): string {
  if (path !== '~' && !path.startsWith('~/')) return path;
  return join(env.HOME ?? homedir(), path.slice(1));
}
