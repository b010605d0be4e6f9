// The MCP server registry and per-conversation enablement over HTTP, against a private migrated
// PostgreSQL (a fresh database per test): validation codes, write-only env and header values,
// the egress allowlist check, tenant isolation, overrides and their effective set (what the
// options builder gets), cascades, and migration 0005 moving settings.mcpServers into the table.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { silentLogger } from '@hako/core';
import type { FastifyInstance } from 'fastify';
import type { AgentClient } from '@hako/proto';
import { buildApp, createAppRepos } from '../../src/app.js';
import { MemoryLockManager } from '../../src/coord/memory-lock.js';
import { MemoryRateLimiter } from '../../src/coord/memory-rate-limiter.js';
import { S3ObjectStore } from '../../src/storage/s3-object-store.js';
import { loadMigrations, migrate } from '../../src/db/migrate.js';
import { McpServerRepository } from '../../src/repositories/mcp-servers.js';
import { prepareRunMcpServers } from '../../src/mcp/effective-set.js';
import { buildAgentOptions } from '../../src/agent/options-builder.js';
import { DEFAULT_TENANT_SETTINGS } from '../../src/http/tenant-settings.js';
import { startPostgresFixture } from '../helpers/db.js';
import type { PostgresFixture, TestDatabase } from '../helpers/db.js';

const ADMIN = `admin-${randomBytes(12).toString('hex')}`;
let pg: PostgresFixture | undefined;
const closers: (() => Promise<unknown> | void)[] = [];

before(async () => {
  pg = await startPostgresFixture();
});

after(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await pg?.stop();
});

interface Harness {
  app: FastifyInstance;
  db: TestDatabase;
}

async function harness(): Promise<Harness> {
  const db = await pg!.migrated();
  const locks = new MemoryLockManager();
  const rateLimiter = new MemoryRateLimiter();
  // the MCP routes never touch the object store; nothing listens there
  const store = new S3ObjectStore({ bucket: 'unused', endpoint: 'http://127.0.0.1:9', region: 'us-east-1' });
  closers.push(
    () => store.close(),
    () => locks.close(),
    () => rateLimiter.close(),
  );
  const app = await buildApp({
    logger: silentLogger(),
    adminToken: ADMIN,
    repos: createAppRepos(db.db),
    rateLimiter,
    locks,
    store,
  });
  closers.push(() => app.close());
  return { app, db };
}

const admin = { authorization: `Bearer ${ADMIN}` };
const bearer = (key: string): Record<string, string> => ({ authorization: `Bearer ${key}` });

async function createTenant(
  app: FastifyInstance,
  settings: unknown = {},
): Promise<{ id: string; key: string }> {
  const t = await app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: admin,
    payload: { name: 'acme', settings },
  });
  assert.equal(t.statusCode, 201, t.body);
  const id = t.json<{ id: string }>().id;
  const k = await app.inject({ method: 'POST', url: `/v1/tenants/${id}/api-keys`, headers: admin });
  assert.equal(k.statusCode, 201, k.body);
  return { id, key: k.json<{ key: string }>().key };
}

async function createConversation(app: FastifyInstance, key: string): Promise<string> {
  const r = await app.inject({ method: 'POST', url: '/v1/conversations', headers: bearer(key), payload: {} });
  assert.equal(r.statusCode, 201, r.body);
  return r.json<{ id: string }>().id;
}

type Json = Record<string, unknown>;

async function call(
  app: FastifyInstance,
  key: string,
  method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE',
  url: string,
  payload?: Json,
): Promise<{ status: number; json: Json; body: string }> {
  const r = await app.inject({ method, url, headers: bearer(key), ...(payload ? { payload } : {}) });
  return { status: r.statusCode, json: r.body === '' ? {} : (JSON.parse(r.body) as Json), body: r.body };
}

function problem(r: { status: number; json: Json; body: string }, status: number, code: string): void {
  assert.equal(r.status, status, r.body);
  assert.equal(r.json.code, code, r.body);
}

test('registry CRUD: validation codes, write-only env and headers, allowlist, names unique regardless of case', async () => {
  const { app, db } = await harness();
  const t = await createTenant(app, { egress_allow: ['mcp.example.com:443', '127.0.0.1:8123'] });

  const created = await call(app, t.key, 'POST', '/v1/mcp-servers', {
    name: 'Notes',
    type: 'stdio',
    command: 'node',
    args: ['/workspace/notes.js', '--fast'],
    env: { NOTES_TOKEN: 'secret-env-value', MODE: 'x' },
  });
  assert.equal(created.status, 201, created.body);
  assert.ok(!created.body.includes('secret-env-value'), 'env values are never answered');
  assert.deepEqual(
    { ...created.json, id: undefined, created_at: undefined, updated_at: undefined },
    {
      id: undefined,
      name: 'Notes',
      type: 'stdio',
      enabled: true,
      command: 'node',
      args: ['/workspace/notes.js', '--fast'],
      env_names: ['MODE', 'NOTES_TOKEN'],
      created_at: undefined,
      updated_at: undefined,
    },
  );
  const stdioId = String(created.json.id);

  const remote = await call(app, t.key, 'POST', '/v1/mcp-servers', {
    name: 'docs',
    type: 'http',
    url: 'https://mcp.example.com/mcp',
    headers: { Authorization: 'Bearer secret-header-value' },
    enabled: false,
  });
  assert.equal(remote.status, 201, remote.body);
  assert.ok(!remote.body.includes('secret-header-value'));
  assert.equal(remote.json.url, 'https://mcp.example.com/mcp');
  assert.deepEqual(remote.json.header_names, ['Authorization']);
  assert.equal(remote.json.enabled, false);
  const httpId = String(remote.json.id);

  // the values are stored (write-only is not write-never)
  const rows = await db.db.query<{ name: string; env: Json; headers: Json }>(
    'SELECT name, env, headers FROM mcp_servers WHERE tenant_id = $1 ORDER BY name',
    [t.id],
  );
  assert.deepEqual(
    rows.rows.map((r) => [r.name, r.env, r.headers]),
    [
      ['Notes', { NOTES_TOKEN: 'secret-env-value', MODE: 'x' }, {}],
      ['docs', {}, { Authorization: 'Bearer secret-header-value' }],
    ],
  );

  const list = await call(app, t.key, 'GET', '/v1/mcp-servers');
  assert.equal(list.status, 200);
  assert.deepEqual(
    (list.json.mcp_servers as Json[]).map((s) => s.name),
    ['docs', 'Notes'],
  );
  assert.ok(!list.body.includes('secret-'), 'no value in the list either');
  const one = await call(app, t.key, 'GET', `/v1/mcp-servers/${stdioId}`);
  assert.equal(one.status, 200);
  assert.deepEqual(one.json, created.json);

  // duplicate names, regardless of case
  problem(
    await call(app, t.key, 'POST', '/v1/mcp-servers', { name: 'notes', type: 'stdio', command: 'x' }),
    409,
    'MCP_SERVER_EXISTS',
  );

  // invalid definitions: 422 MCP_SERVER_INVALID naming the field; nothing stored
  const bad: [Json, string][] = [
    [{ name: 'has space', type: 'stdio', command: 'x' }, 'name'],
    [{ name: 'x'.repeat(65), type: 'stdio', command: 'x' }, 'name'],
    [{ name: 'HAKO', type: 'stdio', command: 'x' }, 'name'],
    [{ name: 'a', type: 'stdio' }, 'command'],
    [{ name: 'a', type: 'stdio', command: '' }, 'command'],
    [{ name: 'a', type: 'stdio', command: 'x', url: 'https://mcp.example.com/' }, 'url'],
    [{ name: 'a', type: 'stdio', command: 'x', env: { 'BAD-NAME': 'v' } }, 'env.BAD-NAME'],
    [
      { name: 'a', type: 'stdio', command: 'x', env: { HTTPS_PROXY: 'http://elsewhere:1' } },
      'env.HTTPS_PROXY',
    ],
    [{ name: 'a', type: 'http' }, 'url'],
    [{ name: 'a', type: 'http', url: 'ftp://mcp.example.com/' }, 'url'],
    [{ name: 'a', type: 'http', url: 'not a url' }, 'url'],
    [{ name: 'a', type: 'http', url: 'https://u:p@mcp.example.com/mcp' }, 'url'],
    [{ name: 'a', type: 'http', url: 'https://mcp.example.com/mcp', command: 'x' }, 'command'],
    [{ name: 'a', type: 'http', url: 'https://mcp.example.com/mcp', headers: { Host: 'x' } }, 'headers.Host'],
    [
      { name: 'a', type: 'http', url: 'https://mcp.example.com/mcp', headers: { 'Bad Name': 'x' } },
      'headers.Bad Name',
    ],
  ];
  for (const [body, field] of bad) {
    const r = await call(app, t.key, 'POST', '/v1/mcp-servers', body);
    problem(r, 422, 'MCP_SERVER_INVALID');
    assert.equal(r.json.field, field, r.body);
  }
  // a malformed request (wrong JSON type, unknown field) is INVALID_ARGUMENT
  problem(
    await call(app, t.key, 'POST', '/v1/mcp-servers', { name: 'a', type: 'sse', command: 'x' }),
    400,
    'INVALID_ARGUMENT',
  );
  problem(
    await call(app, t.key, 'POST', '/v1/mcp-servers', { name: 'a', type: 'stdio', command: 'x', cwd: '/' }),
    400,
    'INVALID_ARGUMENT',
  );

  // remote servers outside the allowlist: refused (port and host both count)
  for (const url of [
    'https://other.example.com/mcp',
    'http://mcp.example.com/mcp',
    'http://127.0.0.1:8124/mcp',
    'http://localhost:8123/',
  ]) {
    const r = await call(app, t.key, 'POST', '/v1/mcp-servers', { name: 'far', type: 'http', url });
    problem(r, 422, 'MCP_SERVER_EGRESS_DENIED');
  }
  const ok = await call(app, t.key, 'POST', '/v1/mcp-servers', {
    name: 'local',
    type: 'http',
    url: 'http://127.0.0.1:8123/mcp',
  });
  assert.equal(ok.status, 201, ok.body);
  const count = await db.db.query<{ n: string }>(
    'SELECT count(*) AS n FROM mcp_servers WHERE tenant_id = $1',
    [t.id],
  );
  assert.equal(Number(count.rows[0]?.n), 3, 'nothing refused was stored');

  // PATCH: env merged (set, remove, keep), other fields kept
  const patched = await call(app, t.key, 'PATCH', `/v1/mcp-servers/${stdioId}`, {
    enabled: false,
    env: { NOTES_TOKEN: 'rotated-value', MODE: null, EXTRA: '1' },
  });
  assert.equal(patched.status, 200, patched.body);
  assert.equal(patched.json.enabled, false);
  assert.deepEqual(patched.json.env_names, ['EXTRA', 'NOTES_TOKEN']);
  assert.deepEqual(patched.json.args, ['/workspace/notes.js', '--fast']);
  assert.ok(!patched.body.includes('rotated-value'));
  const env = await db.db.query<{ env: Json }>('SELECT env FROM mcp_servers WHERE id = $1', [stdioId]);
  assert.deepEqual(env.rows[0]?.env, { NOTES_TOKEN: 'rotated-value', EXTRA: '1' });

  problem(
    await call(app, t.key, 'PATCH', `/v1/mcp-servers/${stdioId}`, { type: 'http' }),
    422,
    'MCP_SERVER_INVALID',
  );
  problem(
    await call(app, t.key, 'PATCH', `/v1/mcp-servers/${stdioId}`, { url: 'https://mcp.example.com/' }),
    422,
    'MCP_SERVER_INVALID',
  );
  problem(
    await call(app, t.key, 'PATCH', `/v1/mcp-servers/${stdioId}`, { name: 'DOCS' }),
    409,
    'MCP_SERVER_EXISTS',
  );
  problem(
    await call(app, t.key, 'PATCH', `/v1/mcp-servers/${httpId}`, { url: 'https://evil.example.net/mcp' }),
    422,
    'MCP_SERVER_EGRESS_DENIED',
  );
  const renamed = await call(app, t.key, 'PATCH', `/v1/mcp-servers/${httpId}`, {
    name: 'docs2',
    headers: { 'X-Extra': 'v' },
  });
  assert.equal(renamed.status, 200, renamed.body);
  assert.deepEqual([renamed.json.name, renamed.json.header_names], ['docs2', ['Authorization', 'X-Extra']]);
  const after = await db.db.query<{ url: string; headers: Json }>(
    'SELECT url, headers FROM mcp_servers WHERE id = $1',
    [httpId],
  );
  assert.deepEqual(after.rows[0], {
    url: 'https://mcp.example.com/mcp',
    headers: { Authorization: 'Bearer secret-header-value', 'X-Extra': 'v' },
  });

  // DELETE, then it is gone
  const del = await call(app, t.key, 'DELETE', `/v1/mcp-servers/${httpId}`);
  assert.equal(del.status, 204, del.body);
  problem(await call(app, t.key, 'GET', `/v1/mcp-servers/${httpId}`), 404, 'MCP_SERVER_NOT_FOUND');
  problem(await call(app, t.key, 'DELETE', `/v1/mcp-servers/${httpId}`), 404, 'MCP_SERVER_NOT_FOUND');
  problem(
    await call(app, t.key, 'PATCH', `/v1/mcp-servers/${httpId}`, { enabled: true }),
    404,
    'MCP_SERVER_NOT_FOUND',
  );
});

test("another tenant's servers and conversations are not found; the same name is free in another tenant", async () => {
  const { app } = await harness();
  const a = await createTenant(app);
  const b = await createTenant(app);
  const s = await call(app, a.key, 'POST', '/v1/mcp-servers', {
    name: 'shared',
    type: 'stdio',
    command: 'x',
  });
  assert.equal(s.status, 201, s.body);
  const id = String(s.json.id);
  const convA = await createConversation(app, a.key);
  const convB = await createConversation(app, b.key);

  problem(await call(app, b.key, 'GET', `/v1/mcp-servers/${id}`), 404, 'MCP_SERVER_NOT_FOUND');
  problem(
    await call(app, b.key, 'PATCH', `/v1/mcp-servers/${id}`, { enabled: false }),
    404,
    'MCP_SERVER_NOT_FOUND',
  );
  problem(await call(app, b.key, 'DELETE', `/v1/mcp-servers/${id}`), 404, 'MCP_SERVER_NOT_FOUND');
  problem(
    await call(app, b.key, 'PUT', `/v1/conversations/${convB}/mcp-servers/${id}`, { enabled: true }),
    404,
    'MCP_SERVER_NOT_FOUND',
  );
  problem(
    await call(app, b.key, 'GET', `/v1/conversations/${convA}/mcp-servers`),
    404,
    'CONVERSATION_NOT_FOUND',
  );
  problem(
    await call(app, b.key, 'PUT', `/v1/conversations/${convA}/mcp-servers/${id}`, { enabled: false }),
    404,
    'CONVERSATION_NOT_FOUND',
  );
  problem(await call(app, a.key, 'GET', '/v1/mcp-servers/not-a-uuid'), 400, 'INVALID_ARGUMENT');
  const listB = await call(app, b.key, 'GET', '/v1/mcp-servers');
  assert.deepEqual(listB.json.mcp_servers, []);
  const mine = await call(app, b.key, 'POST', '/v1/mcp-servers', {
    name: 'shared',
    type: 'stdio',
    command: 'y',
  });
  assert.equal(mine.status, 201, mine.body);
  const stillA = await call(app, a.key, 'GET', `/v1/mcp-servers/${id}`);
  assert.equal(stillA.json.command, 'x');
});

test('per conversation: overrides, back to the default, the effective set the options builder gets, allowlist changes', async () => {
  const { app, db } = await harness();
  const t = await createTenant(app, { egress_allow: ['127.0.0.1:8123'] });
  const mk = async (body: Json): Promise<string> => {
    const r = await call(app, t.key, 'POST', '/v1/mcp-servers', body);
    assert.equal(r.status, 201, r.body);
    return String(r.json.id);
  };
  const on = await mk({ name: 'on', type: 'stdio', command: 'node', args: ['on.js'], env: { K: 'v' } });
  const off = await mk({ name: 'off', type: 'stdio', command: 'node', enabled: false });
  const remote = await mk({
    name: 'remote',
    type: 'http',
    url: 'http://127.0.0.1:8123/mcp',
    headers: { A: 'b' },
  });
  const c1 = await createConversation(app, t.key);
  const c2 = await createConversation(app, t.key);

  const states = async (conv: string): Promise<[string, boolean, string, boolean | null][]> => {
    const r = await call(app, t.key, 'GET', `/v1/conversations/${conv}/mcp-servers`);
    assert.equal(r.status, 200, r.body);
    return (r.json.mcp_servers as Json[]).map((s) => [
      String(s.name),
      s.enabled as boolean,
      String(s.reason),
      s.conversation_enabled as boolean | null,
    ]);
  };
  assert.deepEqual(await states(c1), [
    ['off', false, 'tenant_default', null],
    ['on', true, 'tenant_default', null],
    ['remote', true, 'tenant_default', null],
  ]);

  const put = await call(app, t.key, 'PUT', `/v1/conversations/${c1}/mcp-servers/${on}`, { enabled: false });
  assert.equal(put.status, 200, put.body);
  assert.deepEqual(put.json, {
    id: on,
    name: 'on',
    type: 'stdio',
    enabled: false,
    tenant_enabled: true,
    conversation_enabled: false,
    reason: 'conversation_override',
    detail: 'disabled for this conversation (the tenant default is enabled)',
  });
  assert.equal(
    (await call(app, t.key, 'PUT', `/v1/conversations/${c1}/mcp-servers/${off}`, { enabled: true })).status,
    200,
  );
  // PUT again replaces the choice
  assert.equal(
    (await call(app, t.key, 'PUT', `/v1/conversations/${c1}/mcp-servers/${remote}`, { enabled: true }))
      .status,
    200,
  );
  assert.equal(
    (await call(app, t.key, 'PUT', `/v1/conversations/${c1}/mcp-servers/${remote}`, { enabled: false }))
      .status,
    200,
  );
  assert.deepEqual(await states(c1), [
    ['off', true, 'conversation_override', true],
    ['on', false, 'conversation_override', false],
    ['remote', false, 'conversation_override', false],
  ]);
  assert.deepEqual(
    (await states(c2)).map(([n, e]) => [n, e]),
    [
      ['off', false],
      ['on', true],
      ['remote', true],
    ],
    'another conversation keeps the tenant defaults',
  );
  problem(
    await call(app, t.key, 'PUT', `/v1/conversations/${c1}/mcp-servers/${on}`, {}),
    400,
    'INVALID_ARGUMENT',
  );

  // what a run of each conversation gets: exactly its enabled servers, as SDK configs
  const repo = new McpServerRepository(db.db);
  const tenant = { id: t.id, egressAllow: ['127.0.0.1:8123'] };
  const sdkSet = async (conv: string, egressAllow = tenant.egressAllow): Promise<Record<string, unknown>> => {
    // what server.ts's agent port does for a run
    const run = await prepareRunMcpServers(repo, {
      tenantId: t.id,
      conversationId: conv,
      egressAllow,
      logger: silentLogger(),
    });
    return buildAgentOptions({
      tenantId: t.id,
      settings: DEFAULT_TENANT_SETTINGS,
      mcpServers: run.servers,
      conversation: { id: conv, workspaceEnabled: true, sessionId: null },
      sandbox: { client: {} as AgentClient, sandboxId: 'unused' },
      abortController: new AbortController(),
      logger: silentLogger(),
    }).mcpServers as Record<string, unknown>;
  };
  assert.deepEqual(await sdkSet(c1), { off: { type: 'stdio', command: 'node', args: [], env: {} } });
  assert.deepEqual(await sdkSet(c2), {
    on: { type: 'stdio', command: 'node', args: ['on.js'], env: { K: 'v' } },
    remote: { type: 'http', url: 'http://127.0.0.1:8123/mcp', headers: { A: 'b' } },
  });

  // back to the default
  const cleared = await call(app, t.key, 'DELETE', `/v1/conversations/${c1}/mcp-servers/${on}`);
  assert.equal(cleared.status, 200, cleared.body);
  assert.deepEqual(
    [cleared.json.enabled, cleared.json.reason, cleared.json.conversation_enabled],
    [true, 'tenant_default', null],
  );
  assert.equal(
    (await call(app, t.key, 'DELETE', `/v1/conversations/${c1}/mcp-servers/${on}`)).status,
    200,
    'idempotent',
  );
  const overrides = await db.db.query<{ server_id: string }>(
    'SELECT server_id FROM conversation_mcp_servers WHERE conversation_id = $1 ORDER BY server_id',
    [c1],
  );
  assert.deepEqual(
    overrides.rows.map((r) => r.server_id),
    [off, remote].sort(),
  );

  // the allowlist no longer covers the remote server: it is off with egress_denied, and a run skips it with a note
  await db.db.query(
    `UPDATE tenants SET settings = jsonb_set(settings, '{egressAllow}', '[]'::jsonb) WHERE id = $1`,
    [t.id],
  );
  assert.deepEqual(
    (await states(c2)).find(([n]) => n === 'remote'),
    ['remote', false, 'egress_denied', null],
  );
  const run = await prepareRunMcpServers(repo, {
    tenantId: t.id,
    conversationId: c2,
    egressAllow: [],
    logger: silentLogger(),
  });
  assert.deepEqual(
    run.servers.map((s) => s.name),
    ['on'],
  );
  assert.deepEqual(
    run.skipped.map((s) => [s.name, s.reason]),
    [['remote', 'egress_denied']],
  );

  assert.deepEqual(run.progress?.data, {
    step: 'mcp_servers',
    status: 'skipped',
    servers: [{ name: 'remote', reason: 'egress_denied', detail: run.skipped[0]?.detail }],
  });
  assert.match(String(run.skipped[0]?.detail), /127\.0\.0\.1:8123 is not on the tenant's egress allowlist/);
  const init = run.annotateInit({ type: 'init', data: { mcp_servers: [] } });
  assert.deepEqual(init.data.mcp_servers_skipped, run.progress?.data.servers);

  // deleting a server drops its overrides; deleting a conversation drops its overrides
  assert.equal((await call(app, t.key, 'DELETE', `/v1/mcp-servers/${remote}`)).status, 204);
  await db.db.query('DELETE FROM conversations WHERE id = $1', [c2]);
  const left = await db.db.query<{ server_id: string }>(
    'SELECT server_id FROM conversation_mcp_servers WHERE tenant_id = $1',
    [t.id],
  );
  assert.deepEqual(
    left.rows.map((r) => r.server_id),
    [off],
  );
  problem(
    await call(app, t.key, 'PUT', `/v1/conversations/${c1}/mcp-servers/${remote}`, { enabled: true }),
    404,
    'MCP_SERVER_NOT_FOUND',
  );
});

test('tenant settings no longer take mcp_servers: the answer points at the registry', async () => {
  const { app } = await harness();
  const r = await app.inject({
    method: 'POST',
    url: '/v1/tenants',
    headers: admin,
    payload: { name: 'x', settings: { mcp_servers: { a: { type: 'stdio', command: 'x' } } } },
  });
  assert.equal(r.statusCode, 400, r.body);
  assert.equal(r.json<Json>().code, 'INVALID_ARGUMENT');
  assert.match(r.body, /mcp_servers/);
  const t = await createTenant(app);
  const got = await app.inject({ method: 'GET', url: `/v1/tenants/${t.id}`, headers: admin });
  assert.equal('mcp_servers' in got.json<{ settings: Json }>().settings, false);
});

test('migration 0005 moves the stdio servers of tenant settings into the registry, enabled', async () => {
  const db = await pg!.empty();
  const all = await loadMigrations();
  const logger = silentLogger();
  await migrate(db.db, { logger, migrations: all.filter((m) => m.version < 5) });
  const t1 = '3f1c2a9e-8b7d-4c6e-9a5f-1e2d3c4b5a69';
  const t2 = '4a2d3b0f-9c8e-4d7f-8b6a-2f3e4d5c6b7a';
  const settings = {
    ...DEFAULT_TENANT_SETTINGS,
    mcpServers: {
      files: { type: 'stdio', command: '/usr/bin/mcp-files', args: ['--ro'], env: { TOKEN: 'tok' } },
      Notes: { type: 'stdio', command: 'node', args: [], env: {} },
    },
  };
  await db.db.query(
    `INSERT INTO tenants (id, name, settings) VALUES ($1, 'a', $2::jsonb), ($3, 'b', $4::jsonb)`,
    [t1, JSON.stringify(settings), t2, JSON.stringify(DEFAULT_TENANT_SETTINGS)],
  );
  await migrate(db.db, { logger, migrations: all });
  const repo = new McpServerRepository(db.db);
  const moved = await repo.list(t1);
  assert.deepEqual(
    moved.map((s) => (s.type === 'stdio' ? [s.name, s.enabled, s.command, s.args, s.env] : [])),
    [
      ['files', true, '/usr/bin/mcp-files', ['--ro'], { TOKEN: 'tok' }],
      ['Notes', true, 'node', [], {}],
    ],
  );
  assert.deepEqual(await repo.list(t2), []);
  const rows = await db.db.query<{ id: string; settings: Json }>(
    'SELECT id, settings FROM tenants ORDER BY id',
  );
  for (const r of rows.rows) assert.equal('mcpServers' in r.settings, false, `tenant ${r.id}`);
  assert.deepEqual(
    rows.rows.find((r) => r.id === t1)?.settings,
    DEFAULT_TENANT_SETTINGS as unknown as Json,
    'the rest of the settings is untouched',
  );
});
