/**
 * Generates docs/http-api.md from hako-api's OpenAPI document (the same one `GET /openapi.json`
 * serves): every route with its method, path, auth, parameters, body fields, responses with their
 * error codes, and an example request and answer. `--check` fails when the file is stale (the unit
 * tier runs the same comparison, so CI fails on stale docs).
 *
 * The app is built with inert dependencies (nothing is called while only the document is read),
 * and the lead's execute/events routes are registered the way server.ts registers them.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { format, resolveConfig } from 'prettier';
import { ERROR_CODES, silentLogger } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import { buildApp } from '../packages/api/src/app.js';
import type { AppRepos } from '../packages/api/src/app.js';
import { tenantIdOf } from '../packages/api/src/http/auth.js';
import { registerExecuteRoutes } from '../packages/api/src/routes/execute.js';
import { registerHealthRoutes } from '../packages/api/src/routes/health.js';
import { ApiMetrics } from '../packages/api/src/metrics/api-metrics.js';
import type { ExecuteRouteDeps } from '../packages/api/src/routes/execute.js';
import { EVENT_TYPES } from '../packages/api/src/types.js';
import type { LockManager, ObjectStore, RateLimiter } from '../packages/api/src/types.js';

const target = fileURLToPath(new URL('../docs/http-api.md', import.meta.url));

type Json = Record<string, unknown>;

/** A dependency that must never be called while the document is read. */
function inert<T extends object>(name: string): T {
  return new Proxy({} as T, {
    get(_t, prop) {
      if (prop === 'then') return undefined;
      return () => {
        throw new Error(`${name}.${String(prop)} called while generating docs`);
      };
    },
  });
}

/** The OpenAPI document of the app as server.ts wires it. */
export async function loadOpenApi(): Promise<Json> {
  const executeDeps = {
    execute: inert('execute'),
    tenantOf: tenantIdOf,
    loadContext: inert<{ f: ExecuteRouteDeps['loadContext'] }>('loadContext').f,
    listEvents: inert<{ f: ExecuteRouteDeps['listEvents'] }>('listEvents').f,
    followIntervalMs: 1000,
    maxPromptChars: 100_000,
  } as unknown as ExecuteRouteDeps;
  const app = await buildApp({
    logger: silentLogger(),
    adminToken: 'docs-generator-admin-token',
    repos: inert<AppRepos>('repos'),
    rateLimiter: inert<RateLimiter>('rateLimiter'),
    locks: inert<LockManager>('locks'),
    store: inert<ObjectStore>('store'),
    metrics: new ApiMetrics({ defaultMetrics: false }),
    routes: [
      (a) =>
        registerHealthRoutes(a, {
          checks: { database: () => Promise.reject(new Error('not called')) },
        }),
      (a) => registerExecuteRoutes(a, executeDeps),
    ],
  });
  try {
    await app.ready();
    return app.openapi();
  } finally {
    await app.close();
  }
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n+/g, ' ');
}

/** A short type of a schema: `string (uuid)`, `integer 1..1000`, `string[]`, `"a" \| "b"`. */
function typeOf(s: Json): string {
  if (Array.isArray(s.enum)) return s.enum.map((v) => `\`${JSON.stringify(v)}\``).join(', ');
  const t = Array.isArray(s.type) ? s.type.join(' or ') : typeof s.type === 'string' ? s.type : 'any';
  if (t === 'array' && isObject(s.items)) return `${typeOf(s.items)}[]`;
  const extra: string[] = [];
  if (typeof s.format === 'string') extra.push(s.format);
  const num = (v: unknown): string => (typeof v === 'number' ? String(v) : '');
  const min = num(s.minimum ?? s.exclusiveMinimum ?? s.minLength);
  const max = num(s.maximum ?? s.maxLength);
  if (min !== '' || max !== '') extra.push(`${s.exclusiveMinimum !== undefined ? '>' : ''}${min}..${max}`);
  if (typeof s.maxItems === 'number') extra.push(`at most ${s.maxItems}`);
  return extra.length > 0 ? `${t} (${extra.join(', ')})` : t;
}

/** Rows `field | type | required | default | meaning` for an object schema, nested fields dotted. */
function fieldRows(schema: Json, prefix = '', requiredHere = true): string[] {
  if (!isObject(schema.properties)) return [];
  const required = new Set(Array.isArray(schema.required) ? (schema.required as string[]) : []);
  const rows: string[] = [];
  for (const [name, raw] of Object.entries(schema.properties)) {
    if (!isObject(raw)) continue;
    const field = `${prefix}${name}`;
    const req = requiredHere && required.has(name) ? 'yes' : 'no';
    const def = raw.default === undefined ? '' : `\`${JSON.stringify(raw.default)}\``;
    const desc = typeof raw.description === 'string' ? raw.description : '';
    const isObj = raw.type === 'object';
    rows.push(
      `| \`${field}\` | ${cell(isObj ? 'object' : typeOf(raw))} | ${req} | ${cell(def)} | ${cell(desc)} |`,
    );
    if (isObj && isObject(raw.properties)) rows.push(...fieldRows(raw, `${field}.`, true));
    if (isObj && isObject(raw.additionalProperties)) {
      const inner = raw.additionalProperties;
      if (isObject(inner.properties)) rows.push(...fieldRows(inner, `${field}.{name}.`, true));
      else rows.push(`| \`${field}.{name}\` | ${cell(typeOf(inner))} | no |  |  |`);
    }
  }
  return rows;
}

const REASONS: Record<string, string> = {
  '200': 'OK',
  '201': 'Created',
  '204': 'No Content',
  '304': 'Not Modified',
};

/** A made-up value for a schema (examples of routes that declare none). */
function sampleOf(s: Json): unknown {
  if (s.default !== undefined) return s.default;
  if (Array.isArray(s.enum)) return s.enum[0];
  const t: unknown = Array.isArray(s.type) ? (s.type as unknown[])[0] : s.type;
  switch (t) {
    case 'string':
      return s.format === 'uuid' ? '00000000-0000-4000-8000-000000000000' : 'text';
    case 'integer':
    case 'number':
      return typeof s.minimum === 'number' ? s.minimum : 1;
    case 'boolean':
      return true;
    case 'array':
      return [];
    case 'object': {
      const out: Json = {};
      const required = Array.isArray(s.required) ? (s.required as string[]) : [];
      if (isObject(s.properties)) {
        for (const [k, v] of Object.entries(s.properties))
          if (required.includes(k) && isObject(v)) out[k] = sampleOf(v);
      }
      return out;
    }
    default:
      return null;
  }
}

function authLine(auth: string): string {
  switch (auth) {
    case 'admin':
      return 'admin token (`Authorization: Bearer $HAKO_ADMIN_TOKEN`)';
    case 'tenant':
      return 'tenant API key (`Authorization: Bearer $HAKO_API_KEY`), rate limited per key';
    case 'admin_or_tenant':
      return 'admin token or tenant API key (`Authorization: Bearer $HAKO_ADMIN_TOKEN` or `$HAKO_API_KEY`)';
    case 'metrics':
      return 'metrics token (`Authorization: Bearer $HAKO_METRICS_TOKEN`) or the admin token';
    default:
      return 'none';
  }
}

function authHeader(auth: string): string[] {
  if (auth === 'admin') return ['Authorization: Bearer $HAKO_ADMIN_TOKEN'];
  if (auth === 'tenant' || auth === 'admin_or_tenant') return ['Authorization: Bearer $HAKO_API_KEY'];
  if (auth === 'metrics') return ['Authorization: Bearer $HAKO_METRICS_TOKEN'];
  return [];
}

const SAMPLE_SSE = [
  'id: 1',
  'event: init',
  'data: {"session_id":"…","tools":["Bash","Read","Write"],"model":"…","type":"init","seq":1,"timestamp":"…","run_id":"…","sdk_message":{…}}',
  '',
  'id: 2',
  'event: tool_call',
  'data: {"id":"toolu_1","name":"Bash","input":{"command":"echo hi > a.txt"},"type":"tool_call","seq":2,…}',
  '',
  '…',
  '',
  'id: 7',
  'event: done',
  'data: {"status":"completed","result":"done","is_error":false,"usage":{…},"cost_usd":0.0123,"turn_count":2,"duration_ms":5310,"session_id":"…","type":"done","seq":7,…}',
];

/** The example request and answer of one operation, as HTTP messages. */
function exampleBlock(method: string, path: string, op: Json): string[] {
  const ex = isObject(op['x-example']) ? op['x-example'] : undefined;
  const params = isObject(ex?.params) ? (ex.params as Record<string, string>) : {};
  let url = path.replace(/\{([^}]+)\}/g, (_m, name: string) => {
    const v = params[name] ?? params[name === 'path' ? '*' : name];
    return v ?? `{${name}}`;
  });
  if (isObject(ex?.query)) url += `?${new URLSearchParams(ex.query as Record<string, string>).toString()}`;
  const req = [`${method} ${url} HTTP/1.1`, ...authHeader(String(op['x-auth']))];
  const rb = isObject(op.requestBody) ? op.requestBody : undefined;
  let body: string | undefined;
  if (ex?.body !== undefined) {
    body = typeof ex.body === 'string' ? ex.body.replace(/\n$/, '') : JSON.stringify(ex.body, null, 2);
    req.push(`Content-Type: ${typeof ex.contentType === 'string' ? ex.contentType : 'application/json'}`);
  } else if (rb && isObject(rb.content) && isObject(rb.content['application/json'])) {
    const media = rb.content['application/json'];
    body = JSON.stringify(isObject(media.schema) ? sampleOf(media.schema) : {}, null, 2);
    req.push('Content-Type: application/json');
  }
  if (body !== undefined) req.push('', body);

  const responses = isObject(op.responses) ? op.responses : {};
  const res: string[] = [];
  const exr = isObject(ex?.response) ? ex.response : undefined;
  if (exr) {
    const status = String(exr.status);
    res.push(`HTTP/1.1 ${status} ${REASONS[status] ?? ''}`.trimEnd());
    if (exr.body !== undefined) {
      res.push(`Content-Type: ${typeof exr.contentType === 'string' ? exr.contentType : 'application/json'}`);
    }
    if (isObject(exr.headers))
      for (const [k, v] of Object.entries(exr.headers)) res.push(`${k}: ${String(v)}`);
    if (exr.body !== undefined) {
      res.push(
        '',
        typeof exr.body === 'string' ? exr.body.replace(/\n$/, '') : JSON.stringify(exr.body, null, 2),
      );
    }
  } else {
    const ok = Object.keys(responses).find((s) => /^2/.test(s)) ?? '200';
    const r = isObject(responses[ok]) ? responses[ok] : {};
    const content = isObject(r.content) ? r.content : {};
    res.push(`HTTP/1.1 ${ok} ${REASONS[ok] ?? ''}`.trimEnd());
    if (isObject(content['text/event-stream'])) {
      res.push('Content-Type: text/event-stream; charset=utf-8', '', ...SAMPLE_SSE);
    } else if (isObject(content['application/json'])) {
      const m = content['application/json'];
      res.push(
        'Content-Type: application/json',
        '',
        JSON.stringify(isObject(m.schema) ? sampleOf(m.schema) : {}, null, 2),
      );
    }
  }
  return ['```http', ...req, '```', '', '```http', ...res, '```'];
}

function operationSection(method: string, path: string, op: Json): string[] {
  const out: string[] = [];
  const summary = typeof op.summary === 'string' ? op.summary : '';
  out.push(`### \`${method} ${path}\``, '');
  if (summary) out.push(`${summary}.`, '');
  if (typeof op.description === 'string') out.push(op.description, '');
  out.push(`Auth: ${authLine(String(op['x-auth']))}.`, '');

  const params = Array.isArray(op.parameters) ? (op.parameters as Json[]) : [];
  if (params.length > 0) {
    out.push('| parameter | in | type | required | meaning |', '| --- | --- | --- | --- | --- |');
    for (const p of params) {
      const s = isObject(p.schema) ? p.schema : {};
      out.push(
        `| \`${String(p.name)}\` | ${String(p.in)} | ${cell(typeOf(s))} | ${p.required ? 'yes' : 'no'} | ${cell(typeof p.description === 'string' ? p.description : '')} |`,
      );
    }
    out.push('');
  }

  const rb = isObject(op.requestBody) ? op.requestBody : undefined;
  if (rb && isObject(rb.content)) {
    const json = rb.content['application/json'];
    if (isObject(json) && isObject(json.schema)) {
      out.push(`Body (\`application/json\`${rb.required === false ? ', optional' : ''}):`, '');
      const rows = fieldRows(json.schema);
      if (rows.length > 0) {
        out.push(
          '| field | type | required | default | meaning |',
          '| --- | --- | --- | --- | --- |',
          ...rows,
          '',
        );
      }
      const mp = rb.content['multipart/form-data'];
      if (isObject(mp) && isObject(mp.schema)) {
        const parts = isObject(mp.schema.properties) ? Object.keys(mp.schema.properties) : [];
        out.push(
          `Or \`multipart/form-data\` (parts ${parts.map((p) => `\`${p}\``).join(', ')}): ${typeof mp.schema.description === 'string' ? mp.schema.description : ''}`,
          '',
        );
      }
    } else {
      const types = Object.keys(rb.content)
        .map((t) => `\`${t}\``)
        .join(', ');
      out.push(`Body (${types}): ${typeof rb.description === 'string' ? rb.description : 'raw bytes'}`, '');
    }
  }

  const responses = isObject(op.responses) ? op.responses : {};
  out.push('| status | answer |', '| --- | --- |');
  for (const [status, raw] of Object.entries(responses)) {
    if (!isObject(raw)) continue;
    const content = isObject(raw.content) ? Object.keys(raw.content) : [];
    const codes = Array.isArray(raw['x-error-codes']) ? (raw['x-error-codes'] as string[]) : [];
    const description = typeof raw.description === 'string' ? raw.description : '';
    const what = codes.length > 0 ? codes.map((c) => `\`${c}\``).join(', ') : description;
    const media = content.length > 0 ? ` (${content.map((c) => `\`${c}\``).join(', ')})` : '';
    out.push(`| ${status} | ${cell(what + media)} |`);
  }
  out.push('', ...exampleBlock(method, path, op), '');
  return out;
}

/** docs/http-api.md from the OpenAPI document `doc`. */
export async function renderHttpDocs(doc?: Json): Promise<string> {
  const api = doc ?? (await loadOpenApi());
  const paths = isObject(api.paths) ? api.paths : {};
  const ops: { method: string; path: string; op: Json; tag: string }[] = [];
  for (const [path, item] of Object.entries(paths)) {
    if (!isObject(item)) continue;
    for (const [m, op] of Object.entries(item)) {
      if (!isObject(op)) continue;
      const tags = Array.isArray(op.tags) ? (op.tags as string[]) : [];
      ops.push({ method: m.toUpperCase(), path, op, tag: tags[0] ?? 'other' });
    }
  }
  const tagOrder = ['admin', 'conversations', 'files', 'meta'];
  const tagTitle: Record<string, string> = {
    admin: 'Admin: tenants and API keys',
    conversations: 'Conversations',
    files: 'Files',
    meta: 'Service',
  };
  const tags = [...new Set(ops.map((o) => o.tag))].sort(
    (a, b) => (tagOrder.indexOf(a) + 1 || 99) - (tagOrder.indexOf(b) + 1 || 99) || (a < b ? -1 : 1),
  );

  const usedCodes = new Set<string>();
  for (const { op } of ops) {
    for (const r of Object.values(isObject(op.responses) ? op.responses : {})) {
      if (isObject(r) && Array.isArray(r['x-error-codes']))
        for (const c of r['x-error-codes'] as string[]) usedCodes.add(c);
    }
  }

  const lines: string[] = [
    '# hako HTTP API',
    '',
    '<!-- generated by `npm run docs:gen` from the OpenAPI document (GET /openapi.json); do not edit by hand -->',
    '',
    'hako-api serves JSON over HTTP. The machine-readable description is the OpenAPI 3.1 document at',
    '`GET /openapi.json` (no auth); this page is generated from it.',
    '',
    '## Conventions',
    '',
    '- **Auth**: admin routes take the admin token (`HAKO_ADMIN_TOKEN`) as `Authorization: Bearer …`;',
    '  every other route takes a tenant API key (`hk_…`, created by `POST /v1/tenants/{id}/api-keys`,',
    '  shown once). A missing, wrong or revoked credential answers 401 `UNAUTHENTICATED` with',
    '  `WWW-Authenticate: Bearer realm="hako"`.',
    "- **Tenant isolation**: a tenant sees only its own conversations; another tenant's conversation",
    '  answers 404 `CONVERSATION_NOT_FOUND`, exactly like one that does not exist.',
    '- **Rate limits**: each API key may send `limits.requests_per_minute` requests per sliding minute',
    '  (a tenant setting); past it, 429 `RATE_LIMITED` with `Retry-After` (seconds). Answers carry',
    '  `X-RateLimit-Limit` and `X-RateLimit-Remaining`. Every answer carries `X-Request-Id`.',
    '- **Names**: JSON fields are snake_case. Unknown fields are refused (400 `INVALID_ARGUMENT` naming',
    '  the field), never ignored.',
    '- **Errors** are `application/problem+json` (RFC 9457):',
    '  `{"type": "urn:hako:error:CODE", "title", "status", "code", "detail", "instance"}`, plus',
    '  `field` for validation errors and `reason` for refused file paths. The status is always the',
    "  code's HTTP status below. For 5xx answers `detail` only names the log reference (`ref`, also the",
    '  `X-Request-Id`); what failed is in the server log.',
    '- **Files** live in the conversation workspace (`/workspace` of its sandbox) and in the object',
    '  store at `workspaces/{tenant}/{conversation}/{path}`. Paths are relative, `/`-separated, at',
    '  most 900 bytes and 32 levels, segments at most 255 bytes; `..`, `.`, empty segments, a leading',
    "  `/`, backslashes, control characters (NUL included) and anything under `.hako/` (the agent's",
    '  own state) are refused with 400 `FILE_PATH_INVALID` and a `reason`. Uploads and deletes are',
    '  refused with 409 `CONVERSATION_LOCKED` while an execute runs on the conversation.',
    '',
    '## Streams (Server-Sent Events)',
    '',
    '`POST /v1/conversations/{id}/execute` and `GET /v1/conversations/{id}/events` answer',
    '`text/event-stream`. Each event has `id:` (the increasing `seq`), `event:` (its type) and one',
    '`data:` line of JSON holding the fields of its type plus `type`, `seq`, `timestamp`, `run_id`',
    'and `sdk_message` (the Claude Agent SDK message it came from). A stream ends with `done`.',
    'Reconnect with `Last-Event-ID` to resume after the last event seen. Event types:',
    '',
    EVENT_TYPES.map((t) => `\`${t}\``).join(', ') + '.',
    '',
  ];
  for (const tag of tags) {
    lines.push(`## ${tagTitle[tag] ?? tag}`, '');
    for (const { method, path, op } of ops.filter((o) => o.tag === tag))
      lines.push(...operationSection(method, path, op));
  }
  lines.push(
    '## Error codes',
    '',
    'The codes these routes answer (every code is in `packages/core/src/errors.ts`); 5xx codes such as',
    '`INTERNAL`, `DATABASE_FAILED` or `AGENT_UNAVAILABLE` may come from any route.',
    '',
    '| code | HTTP status | meaning |',
    '| --- | --- | --- |',
    ...[...usedCodes]
      .sort()
      .map(
        (c) =>
          `| \`${c}\` | ${ERROR_CODES[c as ErrorCode].http} | ${cell(ERROR_CODES[c as ErrorCode].summary)} |`,
      ),
    '',
  );
  const text = lines.join('\n');
  const config = (await resolveConfig(target)) ?? {};
  return format(text, { ...config, parser: 'markdown', filepath: target });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const text = await renderHttpDocs();
  if (process.argv.includes('--check')) {
    const current = readFileSync(target, 'utf8');
    if (current !== text) {
      console.error('docs/http-api.md is stale: run `npm run docs:gen`');
      process.exit(1);
    }
  } else {
    writeFileSync(target, text);
    console.log(`wrote ${target}`);
  }
}
