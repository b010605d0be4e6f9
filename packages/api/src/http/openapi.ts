/**
 * The OpenAPI 3.1 document of hako-api, built from the routes themselves: an onRoute hook records
 * every route's method, path, JSON schemas and `config` (auth, docs), and buildOpenApi() turns the
 * records into paths, parameters, request bodies, responses (problem+json errors included, with
 * their codes) and security requirements. Served at `GET /openapi.json`; docs/http-api.md is
 * rendered from it (scripts/gen-http-docs.ts).
 */
import { ERROR_CODES } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import type { FastifyInstance, RouteOptions } from 'fastify';
import { EVENT_TYPES } from '../types.js';
import type { AuthMode, RouteDocs } from './route-config.js';
import { PROBLEM_CONTENT_TYPE } from './problem.js';

type Json = Record<string, unknown>;

/** What the generator keeps of one route. */
export interface RecordedRoute {
  method: string;
  /** Fastify's path: `/v1/conversations/:id/files/*`. */
  url: string;
  schema: Json;
  auth: AuthMode;
  docs: RouteDocs;
}

/** The routes of an app as the onRoute hook saw them. */
export class RouteRecorder {
  readonly routes: RecordedRoute[] = [];

  /** Adds the onRoute hook; call on the root instance before any route is registered. */
  attach(app: FastifyInstance): void {
    app.addHook('onRoute', (route: RouteOptions) => this.record(route));
  }

  record(route: RouteOptions): void {
    const schema = (route.schema ?? {}) as Json;
    if (schema.hide === true) return;
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const config: { auth?: AuthMode; docs?: RouteDocs } = route.config ?? {};
    for (const m of methods) {
      const method = String(m).toUpperCase();
      // Fastify adds a HEAD route for every GET; it is the GET's business, not a route of its own.
      if (method === 'HEAD' || method === 'OPTIONS') continue;
      this.routes.push({
        method,
        url: route.url,
        schema,
        auth: config.auth ?? 'tenant',
        docs: config.docs ?? {},
      });
    }
  }
}

/** The name the OpenAPI document gives Fastify's wildcard parameter. */
export const WILDCARD_PARAM = 'path';

/** `/v1/x/:id/files/*` -> `/v1/x/{id}/files/{path}`. */
export function openApiPath(url: string): string {
  return url
    .split('/')
    .map((seg) => {
      if (seg === '*') return `{${WILDCARD_PARAM}}`;
      if (seg.startsWith(':')) return `{${seg.slice(1).replace(/\(.*\)$/, '')}}`;
      return seg;
    })
    .join('/');
}

const AUTH_CODES: Record<AuthMode, ErrorCode[]> = {
  admin: ['UNAUTHENTICATED'],
  tenant: ['UNAUTHENTICATED', 'RATE_LIMITED'],
  admin_or_tenant: ['UNAUTHENTICATED', 'RATE_LIMITED'],
  metrics: ['UNAUTHENTICATED'],
  none: [],
};

const SECURITY: Record<AuthMode, Json[]> = {
  admin: [{ adminToken: [] }],
  tenant: [{ apiKey: [] }],
  admin_or_tenant: [{ adminToken: [] }, { apiKey: [] }],
  metrics: [{ metricsToken: [] }, { adminToken: [] }],
  none: [],
};

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Query or path parameters from an object schema. */
function parameters(schema: unknown, where: 'path' | 'query'): Json[] {
  if (!isObject(schema) || !isObject(schema.properties)) return [];
  const required = new Set(Array.isArray(schema.required) ? (schema.required as string[]) : []);
  return Object.entries(schema.properties).map(([name, s]) => {
    const { description, ...rest } = isObject(s) ? s : {};
    const p: Json = {
      name: name === '*' ? WILDCARD_PARAM : name,
      in: where,
      required: where === 'path' ? true : required.has(name),
      schema: rest,
    };
    if (typeof description === 'string') p.description = description;
    return p;
  });
}

/** Path parameters named in the URL but without a schema (a string each). */
function undeclaredPathParams(url: string, declared: readonly Json[]): Json[] {
  const names = [...openApiPath(url).matchAll(/\{([^}]+)\}/g)].map((m) => m[1]!);
  const have = new Set(declared.map((p) => p.name));
  return names
    .filter((n) => !have.has(n))
    .map((n) => ({ name: n, in: 'path', required: true, schema: { type: 'string' } }));
}

function statusDescription(status: string): string {
  const texts: Record<string, string> = {
    '200': 'OK',
    '201': 'Created',
    '204': 'No content',
    '304': 'Not modified (If-None-Match matched the ETag)',
  };
  return texts[status] ?? 'Answer';
}

/** A response object from a Fastify response schema (plain JSON Schema or `{description, content}`). */
function responseObject(status: string, s: unknown, example: RouteDocs['example']): Json {
  const ex = example?.response;
  const exampleFor = (mediaType: string): Json =>
    ex &&
    String(ex.status) === status &&
    ex.body !== undefined &&
    (ex.contentType ?? 'application/json') === mediaType
      ? { example: ex.body }
      : {};
  if (isObject(s) && isObject(s.content)) {
    const content: Json = {};
    for (const [mt, v] of Object.entries(s.content)) {
      const media: Json = { ...(isObject(v) ? v : {}), ...exampleFor(mt) };
      if (mt === 'text/event-stream') {
        media['x-event-types'] = [...EVENT_TYPES];
        media['x-event-schema'] = { $ref: '#/components/schemas/StreamEvent' };
      }
      content[mt] = media;
    }
    const out: Json = {
      description: typeof s.description === 'string' ? s.description : statusDescription(status),
      content,
    };
    if (isObject(s.headers)) out.headers = s.headers;
    return out;
  }
  if (isObject(s) && Object.keys(s).length === 1 && typeof s.description === 'string') {
    return { description: s.description };
  }
  const { description, ...schema } = isObject(s) ? s : {};
  return {
    description: typeof description === 'string' ? description : statusDescription(status),
    content: { 'application/json': { schema, ...exampleFor('application/json') } },
  };
}

/** problem+json responses for `codes`, one per HTTP status, naming each code. */
function errorResponses(codes: readonly ErrorCode[]): Record<string, Json> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const c of new Set(codes)) {
    const st = ERROR_CODES[c].http;
    byStatus.set(st, [...(byStatus.get(st) ?? []), c]);
  }
  const out: Record<string, Json> = {};
  for (const [status, list] of [...byStatus.entries()].sort((a, b) => a[0] - b[0])) {
    const resp: Json = {
      description: list.map((c) => `\`${c}\`: ${ERROR_CODES[c].summary}`).join(' '),
      'x-error-codes': list,
      content: { [PROBLEM_CONTENT_TYPE]: { schema: { $ref: '#/components/schemas/Problem' } } },
    };
    if (list.includes('UNAUTHENTICATED')) {
      resp.headers = {
        'WWW-Authenticate': { schema: { type: 'string' }, description: 'Bearer realm="hako"' },
      };
    }
    if (list.includes('RATE_LIMITED') || list.includes('CONCURRENCY_LIMITED')) {
      resp.headers = {
        'Retry-After': { schema: { type: 'integer' }, description: 'Seconds to wait before retrying.' },
      };
    }
    out[String(status)] = resp;
  }
  return out;
}

function operationId(method: string, path: string): string {
  const words = path
    .replace(/\{([^}]+)\}/g, 'by-$1')
    .split(/[/_.-]+/)
    .filter((w) => w !== '' && w !== 'v1');
  return [method.toLowerCase(), ...words.map((w) => w[0]!.toUpperCase() + w.slice(1))].join('');
}

/** One operation of the document. */
function operation(r: RecordedRoute, path: string): Json {
  const s = r.schema;
  const params = [...parameters(s.params, 'path'), ...parameters(s.querystring, 'query')];
  params.push(...undeclaredPathParams(r.url, params));
  const op: Json = { operationId: operationId(r.method, path) };
  if (typeof s.summary === 'string') op.summary = s.summary;
  if (typeof s.description === 'string') op.description = s.description;
  if (Array.isArray(s.tags)) op.tags = s.tags;
  op.security = SECURITY[r.auth];
  op['x-auth'] = r.auth;
  if (params.length > 0) op.parameters = params;

  const ex = r.docs.example;
  if (r.docs.rawBody) {
    const content: Json = {};
    for (const mt of r.docs.rawBody.mediaTypes)
      content[mt] = { schema: { type: 'string', contentMediaType: mt } };
    op.requestBody = { required: true, description: r.docs.rawBody.description, content };
  } else if (s.body !== undefined) {
    const { description, ...schema } = isObject(s.body) ? s.body : {};
    const media: Json = { schema };
    if (ex?.body !== undefined) media.example = ex.body;
    const content: Json = { 'application/json': media };
    op.requestBody = {
      required: r.docs.bodyOptional !== true,
      content,
      ...(typeof description === 'string' ? { description } : {}),
    };
    const mp = r.docs.multipart;
    if (mp !== undefined) {
      const properties: Json = {};
      const encoding: Json = {};
      for (const [name, part] of Object.entries(mp.parts)) {
        const json = part.contentType === 'application/json';
        properties[name] = json
          ? { ...schema, description: part.description }
          : {
              type: 'array',
              items: { type: 'string', contentMediaType: part.contentType },
              description: part.description,
            };
        encoding[name] = { contentType: part.contentType };
      }
      content['multipart/form-data'] = {
        schema: { type: 'object', description: mp.description, properties },
        encoding,
      };
    }
  }

  const responses: Record<string, Json> = {};
  if (isObject(s.response)) {
    for (const [status, rs] of Object.entries(s.response)) responses[status] = responseObject(status, rs, ex);
  }
  const codes: ErrorCode[] = [...AUTH_CODES[r.auth]];
  if (s.body !== undefined || s.params !== undefined || s.querystring !== undefined)
    codes.push('INVALID_ARGUMENT');
  if (s.body !== undefined) codes.push('UNSUPPORTED_MEDIA_TYPE', 'PAYLOAD_TOO_LARGE');
  codes.push(...(r.docs.errors ?? []));
  for (const [status, resp] of Object.entries(errorResponses(codes))) responses[status] ??= resp;
  responses['5XX'] = {
    description:
      'A server-side failure (`INTERNAL`, `DATABASE_FAILED`, …); `detail` names only the log reference.',
    content: { [PROBLEM_CONTENT_TYPE]: { schema: { $ref: '#/components/schemas/Problem' } } },
  };
  op.responses = responses;
  if (ex) op['x-example'] = ex;
  return op;
}

const PROBLEM_SCHEMA: Json = {
  type: 'object',
  description:
    'RFC 9457 problem details. Extension members carry safe details (`field`, `reason`, `retryAfterSeconds`).',
  required: ['type', 'title', 'status', 'code', 'detail'],
  properties: {
    type: { type: 'string', description: '`urn:hako:error:{code}`' },
    title: { type: 'string', description: "The code's summary." },
    status: { type: 'integer' },
    code: { type: 'string', enum: Object.keys(ERROR_CODES) },
    detail: { type: 'string', description: 'What went wrong; for 5xx only "logged as ref …".' },
    instance: { type: 'string', description: 'The request path.' },
    field: {
      type: 'string',
      description: 'INVALID_ARGUMENT: the failing field (`body.settings.limits.cpus`).',
    },
    reason: { type: 'string', description: 'FILE_PATH_INVALID: why the path was refused.' },
    ref: { type: 'string', description: '5xx: the log reference (also the x-request-id header).' },
  },
};

const STREAM_EVENT_SCHEMA: Json = {
  type: 'object',
  description:
    'One Server-Sent Event: `id: {seq}`, `event: {type}`, `data: {json}`. The JSON holds the fields of its type plus these.',
  required: ['type', 'seq', 'timestamp', 'run_id'],
  properties: {
    type: { type: 'string', enum: [...EVENT_TYPES] },
    seq: {
      type: 'integer',
      description: 'Increasing per conversation; the SSE id (resume with Last-Event-ID).',
    },
    timestamp: { type: 'string', format: 'date-time' },
    run_id: { type: 'string', format: 'uuid' },
    sdk_message: {
      description: 'The Claude Agent SDK message the event came from (absent for progress, ping, error).',
    },
  },
};

export interface OpenApiOptions {
  title?: string;
  version?: string;
  description?: string;
}

/** The OpenAPI 3.1 document of `routes` (sorted by path, then method, so it is stable). */
export function buildOpenApi(routes: readonly RecordedRoute[], opts: OpenApiOptions = {}): Json {
  const order = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];
  const sorted = [...routes].sort((a, b) => {
    const pa = openApiPath(a.url);
    const pb = openApiPath(b.url);
    if (pa !== pb) return pa < pb ? -1 : 1;
    return order.indexOf(a.method) - order.indexOf(b.method);
  });
  const paths: Record<string, Json> = {};
  for (const r of sorted) {
    const p = openApiPath(r.url);
    paths[p] ??= {};
    paths[p][r.method.toLowerCase()] = operation(r, p);
  }
  return {
    openapi: '3.1.0',
    info: {
      title: opts.title ?? 'hako API',
      version: opts.version ?? '0.1.0',
      description:
        opts.description ??
        'Conversations executed by the Claude Agent SDK inside sandboxes. Errors are application/problem+json with a stable `code`.',
    },
    paths,
    components: {
      securitySchemes: {
        adminToken: {
          type: 'http',
          scheme: 'bearer',
          description: 'The admin token (HAKO_ADMIN_TOKEN): tenant and API key management.',
        },
        apiKey: {
          type: 'http',
          scheme: 'bearer',
          bearerFormat: 'hako API key',
          description: "A tenant's API key (POST /v1/tenants/{id}/api-keys); rate limited per key.",
        },
        metricsToken: {
          type: 'http',
          scheme: 'bearer',
          description:
            'HAKO_METRICS_TOKEN: reads `/metrics` and nothing else (the admin token reads it too).',
        },
      },
      schemas: { Problem: PROBLEM_SCHEMA, StreamEvent: STREAM_EVENT_SCHEMA },
    },
  };
}
