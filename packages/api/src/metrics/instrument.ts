/**
 * Where ApiMetrics gets its numbers, without touching the code it measures: decorators of the
 * execute flow's RunStore and of the LockManager (server.ts wraps the real ones), and Fastify
 * hooks for HTTP requests and problem answers (app.ts adds them before any route).
 */
import { isAppError } from '@hako/core';
import type { FastifyInstance } from 'fastify';
import type { RunStore } from '../execute/execute-run.js';
import { PROBLEM_CONTENT_TYPE } from '../http/problem.js';
import type { HeldLock, LockManager } from '../types.js';
import type { ApiMetrics } from './api-metrics.js';

/**
 * `store` counting runs: in flight from startRun until finishRun settles; at finishRun the final
 * status, duration, tokens, cost and error code. A finishRun that fails still counts the run, as
 * failed (the reaper marks it so), with the code of the failure.
 */
export function instrumentRunStore(store: RunStore, metrics: ApiMetrics): RunStore {
  return {
    startRun: async (input) => {
      const id = await store.startRun(input);
      metrics.runStarted();
      return id;
    },
    append: (tenantId, conversationId, runId, ev) => store.append(tenantId, conversationId, runId, ev),
    finishRun: async (input) => {
      const counted = {
        durationMs: input.durationMs,
        usage: input.summary?.usage,
        costUsd: input.summary?.costUsd,
      };
      try {
        const stored = await store.finishRun(input);
        // The stored done event's cost: priced from the model's registry prices when it has them
        // (the summary holds what Claude Code reported), so the counter sums what usage reports.
        const doneCost = stored.data.cost_usd;
        metrics.runEnded({
          ...counted,
          ...(typeof doneCost === 'number' ? { costUsd: doneCost } : {}),
          status: input.status,
          errorCode: input.errorCode,
        });
        return stored;
      } catch (err) {
        metrics.runEnded({
          ...counted,
          status: 'failed',
          errorCode: isAppError(err) ? err.code : 'INTERNAL',
        });
        throw err;
      } finally {
        metrics.runSettled();
      }
    },
  };
}

/**
 * `locks` counting the conversation locks this process holds: one more at each acquire, one less
 * when the holder releases it or a renewal finds it lost (once per lock, whatever comes first).
 */
export function instrumentLocks(locks: LockManager, metrics: ApiMetrics): LockManager {
  return {
    acquire: async (key, ttlMs) => {
      const held = await locks.acquire(key, ttlMs);
      metrics.lockAttempted(held !== undefined);
      return held === undefined ? undefined : countedLock(held, metrics);
    },
    isHeld: (key) => locks.isHeld(key),
  };
}

function countedLock(held: HeldLock, metrics: ApiMetrics): HeldLock {
  let gone = false;
  const markGone = (): void => {
    if (gone) return;
    gone = true;
    metrics.lockGone();
  };
  return {
    key: held.key,
    token: held.token,
    renew: async () => {
      const still = await held.renew();
      if (!still) markGone();
      return still;
    },
    release: async () => {
      try {
        return await held.release();
      } finally {
        // Released, already lost, or unreachable (its TTL ends it): this process holds it no more.
        markGone();
      }
    },
  };
}

/** The `route` label of unmatched URLs (one series for every 404 of an unknown path). */
export const UNMATCHED_ROUTE = 'unmatched';

/**
 * Counts every answered request by method, route template and status with its duration, and
 * every problem+json answer's `code` (call on the root instance, before the routes).
 */
export function registerHttpMetrics(app: FastifyInstance, metrics: ApiMetrics): void {
  app.addHook('onSend', async (_req, reply, payload) => {
    const type = reply.getHeader('content-type');
    if (typeof payload === 'string' && typeof type === 'string' && type.startsWith(PROBLEM_CONTENT_TYPE)) {
      metrics.countError('http', problemCode(payload));
    }
    return payload;
  });
  app.addHook('onResponse', async (req, reply) => {
    const route = req.is404 ? UNMATCHED_ROUTE : (req.routeOptions.url ?? UNMATCHED_ROUTE);
    const status = reply.raw.statusCode;
    metrics.httpAnswered(req.method, route, status, reply.elapsedTime / 1000);
  });
}

function problemCode(payload: string): string {
  try {
    const code = (JSON.parse(payload) as { code?: unknown }).code;
    return typeof code === 'string' ? code : 'OTHER';
  } catch {
    return 'OTHER';
  }
}
