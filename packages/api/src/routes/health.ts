/**
 * Probes, without auth (load balancers, Kubernetes, `hako up` poll them); they show no secrets:
 * - `GET /health/live`: the process serves requests (200), 503 SHUTTING_DOWN once it stops.
 * - `GET /health/ready`: 200 only when every dependency check passes (database, Redis or in-process
 *   coordination, S3, at least one healthy hakod node); else 503 NOT_READY naming the failed checks.
 * - `GET /health`: the same checks with the overall status (`ok`, or `degraded` when some hakod
 *   nodes are down but one serves), uptime and version, for people and dashboards.
 * - `GET /healthz`: kept from the first version: 200 when the database answers, else 503
 *   DATABASE_FAILED.
 * Each check has its own deadline (http/health-checks.ts): a hung dependency answers "timed out".
 */
import { AppError } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { HealthChecker } from '../http/health-checks.js';
import type { CheckResult, HealthCheck } from '../http/health-checks.js';
import { PROBLEM_CONTENT_TYPE, problemFromAppError } from '../http/problem.js';

export interface HealthDeps {
  /** The dependency checks by name, in the order shown; `database` also backs `/healthz`. */
  readonly checks: { readonly database: HealthCheck } & Readonly<Record<string, HealthCheck>>;
  /** Deadline of each check (default 2 s). */
  readonly timeoutMs?: number | undefined;
  /** True once the process began shutting down (live and ready then answer 503). */
  readonly shuttingDown?: (() => boolean) | undefined;
  /** The API version shown by `/health`. */
  readonly version?: string | undefined;
}

export const DEFAULT_HEALTH_TIMEOUT_MS = 2_000;

const checkSchema = {
  type: 'object',
  required: ['status', 'latency_ms'],
  additionalProperties: true,
  properties: {
    status: { type: 'string', enum: ['ok', 'fail'] },
    latency_ms: { type: 'integer', description: 'How long the check took (its deadline when it timed out).' },
    error: { type: 'string', description: 'Why it failed.' },
  },
} as const;

const checksSchema = {
  type: 'object',
  description:
    'One entry per check: `database`, `redis` (`mode` redis or in-process), `s3`, `nodes` (healthy and total nodes, each by name with its load).',
  additionalProperties: checkSchema,
} as const;

const EXAMPLE_CHECKS = {
  database: { status: 'ok', latency_ms: 2, engine: 'postgresql' },
  redis: { status: 'ok', latency_ms: 1, mode: 'redis' },
  s3: { status: 'ok', latency_ms: 6, bucket: 'hako-workspaces' },
  nodes: {
    status: 'ok',
    latency_ms: 0,
    healthy: 1,
    total: 2,
    nodes: [
      { name: 'node-a', healthy: true, sandboxes: 3, max_sandboxes: 50 },
      { name: 'node-b', healthy: false, error: '[AGENT_UNAVAILABLE] hakod did not answer in time' },
    ],
  },
};

export function registerHealthRoutes(app: FastifyInstance, deps: HealthDeps): void {
  const timeoutMs = deps.timeoutMs ?? DEFAULT_HEALTH_TIMEOUT_MS;
  const checker = new HealthChecker(deps.checks, timeoutMs);
  const started = Date.now();
  const shuttingDown = (): boolean => deps.shuttingDown?.() ?? false;
  const uptime = (): number => Math.floor((Date.now() - started) / 1000);

  const unready = (
    req: FastifyRequest,
    reply: FastifyReply,
    checks: Record<string, CheckResult> | undefined,
  ): FastifyReply => {
    if (shuttingDown()) {
      return problem(req, reply, 'SHUTTING_DOWN', 'the API process is shutting down', {
        ...(checks === undefined ? {} : { checks }),
      });
    }
    const failed = Object.entries(checks ?? {})
      .filter(([, c]) => c.status !== 'ok')
      .map(([name]) => name);
    const why = failed.map((n) => `${n} (${checks?.[n]?.error ?? 'failed'})`).join('; ');
    return problem(req, reply, 'NOT_READY', `not ready: ${why}`, { failed, checks });
  };

  app.get(
    '/health/live',
    {
      config: {
        auth: 'none',
        docs: {
          errors: ['SHUTTING_DOWN'],
          example: { response: { status: 200, body: { status: 'ok', uptime_seconds: 3600 } } },
        },
      },
      schema: {
        summary: 'Liveness: 200 while the process serves requests, 503 once it is shutting down',
        description: 'Checks no dependency: a failing database makes the process unready, not dead.',
        tags: ['health'],
        response: {
          200: {
            type: 'object',
            required: ['status', 'uptime_seconds'],
            properties: {
              status: { type: 'string', enum: ['ok'] },
              uptime_seconds: { type: 'integer' },
            },
          },
        },
      },
    },
    async (req, reply) => {
      reply.header('cache-control', 'no-store');
      if (shuttingDown()) return unready(req, reply, undefined);
      return { status: 'ok' as const, uptime_seconds: uptime() };
    },
  );

  app.get(
    '/health/ready',
    {
      config: {
        auth: 'none',
        docs: {
          errors: ['NOT_READY', 'SHUTTING_DOWN'],
          example: { response: { status: 200, body: { status: 'ready', checks: EXAMPLE_CHECKS } } },
        },
      },
      schema: {
        summary:
          'Readiness: 200 when the database, Redis (or in-process coordination), S3 and a hakod node answer',
        description:
          'Every check runs at once, each with its own deadline (HAKO_HEALTH_TIMEOUT), so the answer never waits longer than one deadline. 503 NOT_READY names the failed checks.',
        tags: ['health'],
        response: {
          200: {
            type: 'object',
            required: ['status', 'checks'],
            properties: { status: { type: 'string', enum: ['ready'] }, checks: checksSchema },
          },
        },
      },
    },
    async (req, reply) => {
      reply.header('cache-control', 'no-store');
      if (shuttingDown()) return unready(req, reply, undefined);
      const checks = await checker.run();
      if (Object.values(checks).some((c) => c.status !== 'ok') || shuttingDown()) {
        return unready(req, reply, checks);
      }
      return { status: 'ready' as const, checks };
    },
  );

  app.get(
    '/health',
    {
      config: {
        auth: 'none',
        docs: {
          errors: ['NOT_READY', 'SHUTTING_DOWN'],
          example: {
            response: {
              status: 200,
              body: {
                status: 'degraded',
                uptime_seconds: 3600,
                checks: EXAMPLE_CHECKS,
              },
            },
          },
        },
      },
      schema: {
        summary: 'Overall health and every check: ok, degraded (some hakod nodes down) or 503',
        tags: ['health'],
        response: {
          200: {
            type: 'object',
            required: ['status', 'uptime_seconds', 'checks'],
            properties: {
              status: {
                type: 'string',
                enum: ['ok', 'degraded'],
                description: '`degraded`: ready, but some configured hakod nodes are unhealthy.',
              },
              version: { type: 'string' },
              uptime_seconds: { type: 'integer' },
              checks: checksSchema,
            },
          },
        },
      },
    },
    async (req, reply) => {
      reply.header('cache-control', 'no-store');
      const checks = await checker.run();
      if (Object.values(checks).some((c) => c.status !== 'ok') || shuttingDown()) {
        return unready(req, reply, checks);
      }
      const nodes = checks.nodes;
      const degraded =
        nodes !== undefined &&
        typeof nodes.healthy === 'number' &&
        typeof nodes.total === 'number' &&
        nodes.healthy < nodes.total;
      return {
        status: degraded ? ('degraded' as const) : ('ok' as const),
        ...(deps.version === undefined ? {} : { version: deps.version }),
        uptime_seconds: uptime(),
        checks,
      };
    },
  );

  app.get(
    '/healthz',
    {
      config: {
        auth: 'none',
        docs: { errors: ['DATABASE_FAILED'], example: { response: { status: 200, body: { status: 'ok' } } } },
      },
      schema: {
        summary:
          'Liveness and readiness in one (the first version): 200 when the API and its database answer',
        description: 'Prefer /health/live and /health/ready, which check every dependency.',
        tags: ['health'],
        response: {
          200: {
            type: 'object',
            required: ['status'],
            properties: { status: { type: 'string', enum: ['ok'] } },
          },
        },
      },
    },
    async () => {
      const { database } = await checker.run(['database']);
      if (database?.status !== 'ok') {
        throw new AppError('DATABASE_FAILED', `the database check failed: ${database?.error ?? 'no answer'}`);
      }
      return { status: 'ok' as const };
    },
  );
}

/**
 * A 503 problem whose detail and extensions are shown (unlike other 5xx): probes exist to say what
 * failed, and the checks' messages are redacted.
 */
function problem(
  req: FastifyRequest,
  reply: FastifyReply,
  code: ErrorCode,
  detail: string,
  extensions: Record<string, unknown>,
): FastifyReply {
  const path = req.url.split('?')[0] ?? req.url;
  const { problem: p } = problemFromAppError(new AppError(code, detail), { instance: path });
  req.log.info({ code, detail }, 'health probe answered 503');
  return reply
    .code(p.status)
    .type(PROBLEM_CONTENT_TYPE)
    .send(JSON.stringify({ ...p, detail, ...extensions }));
}
