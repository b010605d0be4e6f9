import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadOpenApi, renderHttpDocs } from '../../../../scripts/gen-http-docs.js';
import { EVENT_TYPES } from '../../src/types.js';
import { openApiPath } from '../../src/http/openapi.js';

type Json = Record<string, unknown>;

const CONTRACT = [
  'GET /v1/conversations',
  'GET /healthz',
  'GET /health',
  'GET /health/live',
  'GET /health/ready',
  'GET /metrics',
  'POST /v1/tenants',
  'GET /v1/tenants/{id}',
  'POST /v1/tenants/{id}/api-keys',
  'GET /v1/tenants/{id}/api-keys',
  'DELETE /v1/tenants/{id}/api-keys/{keyId}',
  'POST /v1/conversations',
  'GET /v1/conversations/{id}',
  'PATCH /v1/conversations/{id}',
  'DELETE /v1/conversations/{id}',
  'POST /v1/conversations/{id}/archive',
  'POST /v1/conversations/{id}/unarchive',
  'GET /v1/conversations/{id}/messages',
  'POST /v1/conversations/{id}/execute',
  'GET /v1/conversations/{id}/events',
  'POST /v1/conversations/{id}/files',
  'GET /v1/conversations/{id}/files',
  'GET /v1/conversations/{id}/files/{path}',
  'DELETE /v1/conversations/{id}/files/{path}',
  'GET /v1/conversations/{id}/files/presented',
  'GET /v1/conversations/{id}/file-versions/{path}',
  'PUT /v1/skills/{name}',
  'GET /v1/skills',
  'GET /v1/skills/{name}',
  'DELETE /v1/skills/{name}',
  'GET /openapi.json',
  'POST /v1/models',
  'GET /v1/models',
  'GET /v1/models/{id}',
  'PATCH /v1/models/{id}',
  'PATCH /v1/models/{id}/status',
  'PUT /v1/tenants/{id}/model',
  'GET /v1/usage',
  'GET /v1/usage/summary',
  'GET /v1/usage/cost-report',
  'GET /v1/conversations/{id}/tool-logs',
  'POST /v1/mcp-servers',
  'GET /v1/mcp-servers',
  'GET /v1/mcp-servers/{id}',
  'PATCH /v1/mcp-servers/{id}',
  'DELETE /v1/mcp-servers/{id}',
  'GET /v1/conversations/{id}/mcp-servers',
  'PUT /v1/conversations/{id}/mcp-servers/{serverId}',
  'DELETE /v1/conversations/{id}/mcp-servers/{serverId}',
];

function operations(doc: Json): [string, Json][] {
  const out: [string, Json][] = [];
  for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, Json>>)) {
    for (const [m, op] of Object.entries(item)) out.push([`${m.toUpperCase()} ${path}`, op]);
  }
  return out;
}

/** Every `$ref` in `v`. */
function refs(v: unknown, out: string[] = []): string[] {
  if (Array.isArray(v)) v.forEach((x) => refs(x, out));
  else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (k === '$ref' && typeof x === 'string') out.push(x);
      else refs(x, out);
    }
  }
  return out;
}

test('Fastify paths become OpenAPI paths', () => {
  assert.equal(openApiPath('/v1/conversations/:id/files/*'), '/v1/conversations/{id}/files/{path}');
  assert.equal(openApiPath('/v1/tenants/:id/api-keys/:keyId'), '/v1/tenants/{id}/api-keys/{keyId}');
  assert.equal(openApiPath('/openapi.json'), '/openapi.json');
});

test('the OpenAPI document has every route of the HTTP contract, each well-formed', async () => {
  const doc = await loadOpenApi();
  assert.equal(doc.openapi, '3.1.0');
  const ops = operations(doc);
  assert.deepEqual(ops.map(([k]) => k).sort(), [...CONTRACT].sort());

  const schemes = (doc.components as { securitySchemes: Record<string, Json> }).securitySchemes;
  assert.deepEqual(Object.keys(schemes).sort(), ['adminToken', 'apiKey', 'metricsToken']);
  const componentSchemas = (doc.components as { schemas: Record<string, Json> }).schemas;
  const ids = new Set<string>();
  for (const [key, op] of ops) {
    const [, path] = key.split(' ') as [string, string];
    assert.equal(typeof op.operationId, 'string', key);
    assert.ok(!ids.has(op.operationId as string), `${key}: duplicate operationId`);
    ids.add(op.operationId as string);
    assert.equal(typeof op.summary, 'string', `${key}: no summary`);
    // Auth as declared and as enforced.
    const auth = op['x-auth'];
    const expectAuth =
      path === '/openapi.json' || path === '/healthz' || path.startsWith('/health')
        ? 'none'
        : path === '/metrics'
          ? 'metrics'
          : path.startsWith('/v1/tenants') || (path.startsWith('/v1/models') && !key.startsWith('GET '))
            ? 'admin'
            : path.startsWith('/v1/models')
              ? 'admin_or_tenant'
              : 'tenant';
    assert.equal(auth, expectAuth, key);
    const security: Record<string, unknown> = {
      admin: [{ adminToken: [] }],
      tenant: [{ apiKey: [] }],
      admin_or_tenant: [{ adminToken: [] }, { apiKey: [] }],
      metrics: [{ metricsToken: [] }, { adminToken: [] }],
      none: [],
    };
    assert.deepEqual(op.security, security[auth as string], key);
    // Path parameters: exactly the ones in the path.
    const params = (op.parameters as Json[] | undefined) ?? [];
    const inPath = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]).sort();
    assert.deepEqual(
      params
        .filter((p) => p.in === 'path')
        .map((p) => p.name)
        .sort(),
      inPath,
      key,
    );
    for (const p of params)
      assert.ok(p.schema && typeof p.schema === 'object', `${key}: ${String(p.name)} has no schema`);
    // Responses: a success, problem+json errors, every one described.
    const responses = op.responses as Record<string, Json>;
    assert.ok(
      Object.keys(responses).some((s) => /^2\d\d$/.test(s)),
      `${key}: no 2xx`,
    );
    for (const [status, r] of Object.entries(responses)) {
      assert.equal(typeof r.description, 'string', `${key} ${status}`);
      if (/^[45]/.test(status)) {
        assert.ok((r.content as Json)['application/problem+json'], `${key} ${status} is not problem+json`);
      }
    }
    if (auth !== 'none') assert.ok(responses['401'], `${key}: no 401`);
    if (auth === 'tenant') assert.ok(responses['429'], `${key}: no 429`);
    for (const ref of refs(op)) {
      const name = ref.replace('#/components/schemas/', '');
      assert.ok(componentSchemas[name], `${key}: dangling ${ref}`);
    }
  }

  const byKey = new Map(ops);
  const execute = byKey.get('POST /v1/conversations/{id}/execute')!;
  const sse = ((execute.responses as Record<string, Json>)['200']!.content as Record<string, Json>)[
    'text/event-stream'
  ]!;
  assert.deepEqual(sse['x-event-types'], [...EVENT_TYPES]);
  const upload = byKey.get('POST /v1/conversations/{id}/files')!;
  assert.ok(((upload.requestBody as Json).content as Json)['*/*'], 'the upload body is raw bytes');
  assert.deepEqual(((upload.responses as Record<string, Json>)['413']!['x-error-codes'] as string[]).sort(), [
    'FILE_TOO_LARGE',
  ]);
  const tenant = byKey.get('POST /v1/tenants')!;
  const body = ((tenant.requestBody as Json).content as Record<string, Json>)['application/json']!;
  assert.ok((body.schema as { properties: Json }).properties.settings, 'tenant settings are documented');
  assert.ok(body.example, 'an example request');
});

test('docs/http-api.md is generated from the OpenAPI document and up to date', async () => {
  const current = readFileSync(new URL('../../../../docs/http-api.md', import.meta.url), 'utf8');
  assert.equal(current, await renderHttpDocs(), 'stale: run `npm run docs:gen`');
  for (const route of CONTRACT) {
    assert.ok(current.includes(`### \`${route}\``), `${route} is not documented`);
  }
});
