/**
 * Authentication and per-key rate limiting, from each route's `config.auth` (route-config.ts):
 * `admin` routes take the bearer HAKO_ADMIN_TOKEN (compared in constant time), `tenant` routes a
 * tenant's bearer API key (which sets request.tenantId, request.apiKeyId and request.tenant and
 * counts against the tenant's requests per minute), `none` routes anyone. A route that declares
 * nothing is a tenant route, so forgetting the declaration never opens a route. Runs in onRequest,
 * before the body is read: an unauthenticated upload is refused without receiving it.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { AppError } from '@hako/core';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { RateLimiter, Tenant } from '../types.js';
import type { AuthMode } from './route-config.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** The caller's tenant on a tenant route ('' elsewhere); prefer tenantIdOf(). */
    tenantId: string;
    /** The id of the API key the caller used ('' on non-tenant routes). */
    apiKeyId: string;
    /** The caller's tenant (settings included) on a tenant route. */
    tenant: Tenant | undefined;
  }
}

/** What authentication needs from the repositories and the coordination layer. */
export interface AuthDeps {
  adminToken: string;
  /** HAKO_METRICS_TOKEN: what `metrics` routes take besides the admin token (nothing else takes it). */
  metricsToken?: string | undefined;
  /** The tenant and key of a presented API key; undefined when unknown, revoked or malformed. */
  authenticateApiKey: (key: string) => Promise<{ tenantId: string; keyId: string } | undefined>;
  getTenant: (tenantId: string) => Promise<Tenant | undefined>;
  rateLimiter: RateLimiter;
}

/** The rate-limit window: requests per minute. */
export const RATE_WINDOW_MS = 60_000;

/** The bearer token of an Authorization header, or undefined when there is none. */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return m ? m[1] : undefined;
}

/** Compares two secrets in time independent of where they differ (and of their lengths). */
export function safeEqual(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a, 'utf8').digest();
  const hb = createHash('sha256').update(b, 'utf8').digest();
  return timingSafeEqual(ha, hb);
}

function unauthenticated(message: string): AppError {
  return new AppError('UNAUTHENTICATED', message);
}

/** The rate-limit key of an API key. */
export function apiKeyRateKey(apiKeyId: string): string {
  return `rate:api-key:${apiKeyId}`;
}

/** The caller's tenant id; INTERNAL when called on a route that is not a tenant route. */
export function tenantIdOf(request: FastifyRequest): string {
  if (request.tenantId === '') {
    throw new AppError(
      'INTERNAL',
      `route ${request.routeOptions.url ?? request.url} read the tenant without tenant auth`,
    );
  }
  return request.tenantId;
}

/** The caller's tenant (settings included); INTERNAL on a route that is not a tenant route. */
export function tenantOf(request: FastifyRequest): Tenant {
  if (request.tenant === undefined) {
    throw new AppError(
      'INTERNAL',
      `route ${request.routeOptions.url ?? request.url} read the tenant without tenant auth`,
    );
  }
  return request.tenant;
}

async function authenticateTenant(
  deps: AuthDeps,
  request: FastifyRequest,
  reply: FastifyReply,
): Promise<void> {
  const token = bearerToken(request.headers.authorization);
  if (token === undefined) {
    throw unauthenticated('send a tenant API key as "Authorization: Bearer hk_..."');
  }
  const key = await deps.authenticateApiKey(token);
  if (!key) throw unauthenticated('the API key is unknown or revoked');
  const tenant = await deps.getTenant(key.tenantId);
  if (!tenant) throw unauthenticated('the API key belongs to no tenant');
  const limit = tenant.settings.limits.requestsPerMinute;
  const decision = await deps.rateLimiter.hit(apiKeyRateKey(key.keyId), limit, RATE_WINDOW_MS);
  reply.header('x-ratelimit-limit', String(limit));
  reply.header('x-ratelimit-remaining', String(Math.max(0, decision.remaining)));
  if (!decision.allowed) {
    const retryAfterSeconds = Math.max(1, Math.ceil(decision.retryAfterMs / 1000));
    throw new AppError(
      'RATE_LIMITED',
      `this API key may send ${limit} requests per minute; retry in ${retryAfterSeconds} s`,
      { details: { retryAfterSeconds, limit } },
    );
  }
  request.tenantId = key.tenantId;
  request.apiKeyId = key.keyId;
  request.tenant = tenant;
}

/** Decorates requests and adds the auth hook to `app` (call on the root, before the routes). */
export function registerAuth(app: FastifyInstance, deps: AuthDeps): void {
  if (deps.adminToken.length < 16) {
    throw new AppError('CONFIG_INVALID', 'the admin token needs at least 16 characters (HAKO_ADMIN_TOKEN)');
  }
  app.decorateRequest('tenantId', '');
  app.decorateRequest('apiKeyId', '');
  app.decorateRequest('tenant', undefined);
  app.addHook('onRequest', async (request, reply) => {
    // Unknown routes have no config: the not-found handler answers them.
    if (request.is404) return;
    const mode: AuthMode = request.routeOptions.config.auth ?? 'tenant';
    switch (mode) {
      case 'none':
        return;
      case 'admin': {
        const token = bearerToken(request.headers.authorization);
        if (token === undefined)
          throw unauthenticated('send the admin token as "Authorization: Bearer <HAKO_ADMIN_TOKEN>"');
        if (!safeEqual(token, deps.adminToken)) throw unauthenticated('the admin token is wrong');
        return;
      }
      case 'tenant':
        await authenticateTenant(deps, request, reply);
        return;
      case 'admin_or_tenant': {
        // The admin token, else a tenant API key (its errors are the tenant route's).
        const token = bearerToken(request.headers.authorization);
        if (token !== undefined && safeEqual(token, deps.adminToken)) return;
        await authenticateTenant(deps, request, reply);
        return;
      }
      case 'metrics': {
        const token = bearerToken(request.headers.authorization);
        if (token === undefined)
          throw unauthenticated(
            'send HAKO_METRICS_TOKEN (or the admin token) as "Authorization: Bearer ..."',
          );
        const metricsOk = deps.metricsToken !== undefined && safeEqual(token, deps.metricsToken);
        if (!metricsOk && !safeEqual(token, deps.adminToken))
          throw unauthenticated('the metrics token is wrong');
        return;
      }
    }
  });
}
