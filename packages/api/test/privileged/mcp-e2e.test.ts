// MCP servers end to end on the whole stack (private PostgreSQL, Redis, S3, hakod with real
// sandboxes, a hako-api process, the scripted model):
// - a stdio MCP server (a Node script uploaded into the workspace with the files API) registered
//   through the registry runs inside the conversation's sandbox (uid 1000, the sandbox's hostname)
//   and answers the scripted model's `mcp__probe__whoami` call, its env value delivered;
// - a server disabled for that conversation is absent from init's mcp_servers and from the tools
//   the model is offered;
// - a remote streamable-HTTP MCP server on the host's loopback, allowlisted as 127.0.0.1:PORT, is
//   reached from the sandbox through hakod's egress proxy (Claude Code honours HTTPS_PROXY/HTTP_PROXY;
//   the sandbox has no other way out) and sees the tool call with its write-only header;
// - registering one outside the allowlist is MCP_SERVER_EGRESS_DENIED, and once the allowlist no
//   longer covers the registered one, the next execute skips it with a warning and a note.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createAgentClient, runExec } from '@hako/agentd';
import { parseSse, startStack } from '../helpers/stack.js';
import type { Stack } from '../helpers/stack.js';
import { startMcpHttpServer } from '../helpers/mcp-http-server.js';
import type { McpHttpServer } from '../helpers/mcp-http-server.js';
import { callApi as call } from '../helpers/http-call.js';

const SMALL_DISK = 128 * 2 ** 20;
let stack: Stack | undefined;
let remote: McpHttpServer | undefined;
const marker = `remote-${randomBytes(4).toString('hex')}`;

/** A minimal MCP stdio server: `whoami` reports who and where it runs. */
const PROBE_JS = `
const rl = require('readline').createInterface({ input: process.stdin });
const send = (m) => process.stdout.write(JSON.stringify(m) + '\\n');
rl.on('line', (l) => {
  const m = JSON.parse(l);
  if (m.id === undefined) return;
  if (m.method === 'initialize')
    send({ jsonrpc: '2.0', id: m.id, result: { protocolVersion: m.params.protocolVersion,
      capabilities: { tools: {} }, serverInfo: { name: 'probe', version: '1' } } });
  else if (m.method === 'tools/list')
    send({ jsonrpc: '2.0', id: m.id, result: { tools: [{ name: 'whoami', description: 'who runs me',
      inputSchema: { type: 'object', properties: {} } }] } });
  else if (m.method === 'tools/call')
    send({ jsonrpc: '2.0', id: m.id, result: { content: [{ type: 'text', text: 'PROBE_ENV=' + process.env.PROBE_ENV +
      ' uid=' + process.getuid() + ' host=' + require('os').hostname() + ' cwd=' + process.cwd() }] } });
  else send({ jsonrpc: '2.0', id: m.id, result: {} });
});
`;

before(async () => {
  remote = await startMcpHttpServer(marker);
  stack = await startStack({ script: { turns: [{ text: 'unused' }] } });
});

after(async () => {
  await stack?.close();
  await remote?.close();
});

test('registered MCP servers: stdio in the sandbox, remote through the egress proxy, per-conversation choice', async () => {
  const s = stack!;
  const srv = remote!;
  const api = s.apis[0]!.url;
  const allow = `127.0.0.1:${srv.port}`;
  const t = await call(api, s.adminToken, 'POST', '/v1/tenants', {
    name: 'mcp',
    settings: { limits: { memory_bytes: 1024 ** 3, disk_bytes: SMALL_DISK }, egress_allow: [allow] },
  });
  assert.equal(t.status, 201, t.text);
  const tenantId = String(t.json.id);
  const key = String((await call(api, s.adminToken, 'POST', `/v1/tenants/${tenantId}/api-keys`)).json.key);
  const conv = await call(api, key, 'POST', '/v1/conversations', {});
  assert.equal(conv.status, 201, conv.text);
  const id = String(conv.json.id);

  const up = await call(api, key, 'POST', `/v1/conversations/${id}/files?path=tools/probe.js`, PROBE_JS);
  assert.equal(up.status, 201, up.text);

  const register = async (body: Record<string, unknown>): Promise<string> => {
    const r = await call(api, key, 'POST', '/v1/mcp-servers', body);
    assert.equal(r.status, 201, r.text);
    return String(r.json.id);
  };
  const envSecret = `env-${randomBytes(6).toString('hex')}`;
  const headerSecret = `Bearer hdr-${randomBytes(6).toString('hex')}`;
  await register({
    name: 'probe',
    type: 'stdio',
    command: 'node',
    args: ['/workspace/tools/probe.js'],
    env: { PROBE_ENV: envSecret },
  });
  const quiet = await register({
    name: 'quiet',
    type: 'stdio',
    command: 'node',
    args: ['/workspace/tools/probe.js'],
  });
  const remoteId = await register({
    name: 'remote',
    type: 'http',
    url: srv.url,
    headers: { Authorization: headerSecret },
    enabled: false,
  });
  // a remote server outside the allowlist is refused
  const far = await call(api, key, 'POST', '/v1/mcp-servers', {
    name: 'far',
    type: 'http',
    url: `http://127.0.0.1:${srv.port === 65535 ? 1 : srv.port + 1}/mcp`,
  });
  assert.equal(far.status, 422, far.text);
  assert.equal(far.json.code, 'MCP_SERVER_EGRESS_DENIED');

  // this conversation: quiet off, remote on (the tenant default is off)
  assert.equal(
    (await call(api, key, 'PUT', `/v1/conversations/${id}/mcp-servers/${quiet}`, { enabled: false })).status,
    200,
  );
  assert.equal(
    (await call(api, key, 'PUT', `/v1/conversations/${id}/mcp-servers/${remoteId}`, { enabled: true }))
      .status,
    200,
  );
  const states = await call(api, key, 'GET', `/v1/conversations/${id}/mcp-servers`);
  assert.deepEqual(
    (states.json.mcp_servers as { name: string; enabled: boolean }[]).map((m) => [m.name, m.enabled]),
    [
      ['probe', true],
      ['quiet', false],
      ['remote', true],
    ],
  );

  s.model.setScript({
    turns: [
      { tool: 'mcp__probe__whoami', input: {} },
      { tool: 'mcp__remote__echo', input: { text: 'through-the-proxy' } },
      { text: 'done' },
    ],
  });
  const firstRequest = s.model.requests.length;
  const r1 = await call(api, key, 'POST', `/v1/conversations/${id}/execute`, { prompt: 'use your tools' });
  assert.equal(r1.status, 200, r1.text);
  const events = parseSse(r1.text);
  const done = events.find((e) => e.event === 'done');
  assert.equal(done?.data.status, 'completed', r1.text.slice(-2000));
  const init = events.find((e) => e.event === 'init');
  assert.deepEqual(
    (init?.data.mcp_servers as { name: string; status: string }[]).map((m) => [m.name, m.status]).sort(),
    [
      ['hako', 'connected'],
      ['probe', 'connected'],
      ['remote', 'connected'],
    ],
    JSON.stringify(init?.data),
  );
  assert.equal(init?.data.mcp_servers_skipped, undefined);

  // the stdio server ran inside the conversation's sandbox
  const db = new pg.Client({ connectionString: s.databaseUrl });
  await db.connect();
  let sandboxId: string;
  try {
    const row = await db.query<{ sandbox_id: string }>('SELECT sandbox_id FROM conversations WHERE id = $1', [
      id,
    ]);
    sandboxId = String(row.rows[0]?.sandbox_id);
  } finally {
    await db.end();
  }
  const results = events.filter((e) => e.event === 'tool_result');
  assert.equal(results.length, 2, JSON.stringify(results));
  assert.equal(results[0]?.data.output, `PROBE_ENV=${envSecret} uid=1000 host=${sandboxId} cwd=/workspace`);
  assert.equal(results[0]?.data.is_error, false);
  // the remote server answered through the proxy, and saw the call with its header
  assert.equal(results[1]?.data.output, `${marker}:through-the-proxy`);
  const callSeen = srv.requests.find(
    (r) => (r.body as { method?: string } | undefined)?.method === 'tools/call',
  );
  assert.ok(callSeen, 'the remote server received the tool call');
  assert.deepEqual((callSeen.body as { params: { name: string; arguments: unknown } }).params.name, 'echo');
  assert.deepEqual((callSeen.body as { params: { arguments: unknown } }).params.arguments, {
    text: 'through-the-proxy',
  });
  assert.equal(callSeen.headers.authorization, headerSecret);

  // ...and only through the proxy: a direct connection from the sandbox to that address fails
  const client = createAgentClient({ address: s.agent.address, tls: { dir: s.pkiDir } });
  try {
    const direct = await runExec(client, {
      ownerId: tenantId,
      sandboxId,
      argv: [
        'node',
        '-e',
        `require('http').get(${JSON.stringify(srv.url)}, (r) => console.log('direct', r.statusCode)).on('error', (e) => console.log('direct-error', e.code))`,
      ],
    });
    assert.equal(direct.stdout.toString().trim(), 'direct-error ECONNREFUSED', direct.stderr.toString());
  } finally {
    client.close();
  }

  // the model was told of exactly the enabled servers' tools (Claude Code defers MCP tools behind
  // ToolSearch and names them in the request rather than in `tools`)
  const asked = s.model.requests.slice(firstRequest).filter((r) => r.kind === 'main');
  assert.ok(asked.length > 0);
  const mcpNames = new Set(
    asked.flatMap((r) => JSON.stringify(r.body).match(/mcp__[A-Za-z0-9_-]+?__[A-Za-z0-9_]+/g) ?? []),
  );
  // (and hako's own in-process present_files)
  assert.deepEqual([...mcpNames].sort(), [
    'mcp__hako__present_files',
    'mcp__probe__whoami',
    'mcp__remote__echo',
  ]);

  // the allowlist no longer covers the remote server: the next execute skips it, with a note and a warning
  const db2 = new pg.Client({ connectionString: s.databaseUrl });
  await db2.connect();
  try {
    await db2.query(
      `UPDATE tenants SET settings = jsonb_set(settings, '{egressAllow}', '[]'::jsonb) WHERE id = $1`,
      [tenantId],
    );
  } finally {
    await db2.end();
  }
  const seenBefore = srv.requests.length;
  s.model.setScript({ turns: [{ text: 'no remote today' }] });
  const r2 = await call(api, key, 'POST', `/v1/conversations/${id}/execute`, { prompt: 'again' });
  assert.equal(r2.status, 200, r2.text);
  const events2 = parseSse(r2.text);
  assert.equal(events2.find((e) => e.event === 'done')?.data.status, 'completed', r2.text.slice(-2000));
  const progress = events2.find((e) => e.event === 'progress' && e.data.step === 'mcp_servers');
  assert.deepEqual(
    (progress?.data.servers as { name: string; reason: string }[]).map((x) => [x.name, x.reason]),
    [['remote', 'egress_denied']],
  );
  const init2 = events2.find((e) => e.event === 'init');
  assert.deepEqual((init2?.data.mcp_servers as { name: string }[]).map((m) => m.name).sort(), [
    'hako',
    'probe',
  ]);
  assert.deepEqual(
    (init2?.data.mcp_servers_skipped as { name: string }[]).map((m) => m.name),
    ['remote'],
  );
  assert.equal(srv.requests.length, seenBefore, 'Claude Code was never asked to connect to it');
  assert.match(
    s.apis[0]!.log.join(''),
    /MCP server skipped: .*127\.0\.0\.1:\d+ is not on the tenant's egress allowlist/,
  );
  const after2 = await call(api, key, 'GET', `/v1/conversations/${id}/mcp-servers`);
  assert.deepEqual(
    (after2.json.mcp_servers as { name: string; reason: string }[]).find((m) => m.name === 'remote')?.reason,
    'egress_denied',
  );
});
