/**
 * What a route declares besides its JSON schemas: who may call it (`config.auth`, enforced by the
 * auth hook) and what its documentation needs (`config.docs`: error codes, examples, a non-JSON
 * body). The OpenAPI generator reads both, so the document cannot disagree with the enforcement.
 */
import type { ErrorCode } from '@hako/core';

/**
 * `admin`: bearer HAKO_ADMIN_TOKEN. `tenant`: bearer API key, sets request.tenantId, rate limited.
 * `admin_or_tenant`: either (request.tenant is undefined for the admin). `metrics`: bearer
 * HAKO_METRICS_TOKEN or the admin token (Prometheus scrapes `/metrics`). `none`: anyone (health,
 * the OpenAPI document). A route that declares nothing is `tenant`.
 */
export type AuthMode = 'admin' | 'tenant' | 'admin_or_tenant' | 'metrics' | 'none';

export interface RouteExample {
  /** Path parameters, substituted into the path of the example. */
  params?: Record<string, string>;
  query?: Record<string, string>;
  /** A JSON body, or raw text for a non-JSON body. */
  body?: unknown;
  contentType?: string;
  response: {
    status: number;
    /** A JSON body, raw text, or undefined for none. */
    body?: unknown;
    contentType?: string;
    headers?: Record<string, string>;
  };
}

export interface RouteDocs {
  /** Codes this route answers itself (auth, rate-limit and validation codes are added for it). */
  errors?: readonly ErrorCode[];
  /** A request body that is not JSON: the media types it takes and what it is. */
  rawBody?: { mediaTypes: readonly string[]; description: string };
  /**
   * The route also takes multipart/form-data: what it is and its parts (a JSON part is described
   * by the route's body schema).
   */
  multipart?: {
    description: string;
    parts: Record<string, { contentType: string; description: string }>;
  };
  /** The JSON body may be left out (it defaults to `{}`). */
  bodyOptional?: boolean;
  example?: RouteExample;
}

declare module 'fastify' {
  interface FastifySchema {
    summary?: string;
    description?: string;
    tags?: readonly string[];
    /** Leave the route out of the OpenAPI document. */
    hide?: boolean;
  }
  interface FastifyContextConfig {
    auth?: AuthMode;
    docs?: RouteDocs;
  }
}
