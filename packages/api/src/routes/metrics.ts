/**
 * `GET /metrics`: Prometheus text exposition of this process's ApiMetrics registry. Auth `metrics`:
 * bearer HAKO_METRICS_TOKEN (give Prometheus this one; it opens nothing else) or the admin token.
 */
import type { FastifyInstance } from 'fastify';
import type { ApiMetrics } from '../metrics/api-metrics.js';

const EXAMPLE = [
  '# HELP hako_api_runs_total Executes that ended, by final status (completed, failed, cancelled).',
  '# TYPE hako_api_runs_total counter',
  'hako_api_runs_total{status="completed"} 42',
  'hako_api_runs_total{status="failed"} 1',
  'hako_api_runs_total{status="cancelled"} 3',
  '# HELP hako_api_conversation_locks_held Conversation locks this process holds now (executes, and uploads or deletes briefly).',
  '# TYPE hako_api_conversation_locks_held gauge',
  'hako_api_conversation_locks_held 2',
  '# HELP hako_api_tokens_total Model tokens used by ended executes, by kind (input, output, cache_creation, cache_read).',
  '# TYPE hako_api_tokens_total counter',
  'hako_api_tokens_total{kind="input"} 63840',
  '…',
].join('\n');

export function registerMetricsRoutes(app: FastifyInstance, deps: { metrics: ApiMetrics }): void {
  app.get(
    '/metrics',
    {
      config: {
        auth: 'metrics',
        docs: {
          example: { response: { status: 200, contentType: 'text/plain', body: EXAMPLE } },
        },
      },
      schema: {
        summary: "This process's metrics in the Prometheus text format",
        description:
          'Runs by status, run durations, tokens by kind, cost, errors by code, conversation locks held, runs in flight, HTTP requests by route and status with durations, hakod nodes healthy, and the process metrics (CPU, memory, event loop, GC). Each API process answers for itself: scrape every process. No tenant or conversation ids appear.',
        tags: ['health'],
        response: {
          200: {
            description: 'Prometheus text exposition format 0.0.4.',
            content: { 'text/plain': { schema: { type: 'string' } } },
          },
        },
      },
    },
    async (_req, reply) => {
      const text = await deps.metrics.metricsText();
      return reply.header('cache-control', 'no-store').type(deps.metrics.contentType).send(text);
    },
  );
}
