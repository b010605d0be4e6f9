/**
 * `GET /healthz`: 200 once the API can serve (its database answers), else 503 DATABASE_FAILED. No
 * auth: load balancers and `hako up` poll it.
 */
import type { FastifyInstance } from 'fastify';

export interface HealthDeps {
  /** Throws when the database cannot answer. */
  readonly checkDatabase: () => Promise<void>;
}

export function registerHealthRoutes(app: FastifyInstance, deps: HealthDeps): void {
  app.get(
    '/healthz',
    {
      config: {
        auth: 'none',
        docs: { errors: ['DATABASE_FAILED'], example: { response: { status: 200, body: { status: 'ok' } } } },
      },
      schema: {
        summary: 'Liveness and readiness: 200 when the API and its database answer',
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
      // A failing database answers 503 DATABASE_FAILED (problem+json) through the error handler.
      await deps.checkDatabase();
      return { status: 'ok' as const };
    },
  );
}
