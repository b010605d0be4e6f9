// The hako MCP server's present_files tool (agent/hako-tools.ts) and how the options builder
// offers it: path rules, marks, the server config handed to the SDK, the allowlist.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  HAKO_MCP_SERVER,
  MAX_PRESENT_MARKS,
  PresentMarks,
  createHakoMcpServer,
  presentFiles,
  presentedPath,
} from '../../src/agent/hako-tools.js';
import { buildAgentOptions } from '../../src/agent/options-builder.js';
import type { McpServer, TenantSettings } from '../../src/types.js';
import { testOptionsInput, testSettings } from '../helpers/fixtures.js';

test('present_files paths: relative or under /workspace, never outside it or under .hako/', () => {
  assert.deepEqual(presentedPath('report.md'), { path: 'report.md' });
  assert.deepEqual(presentedPath('/workspace/out/chart.png'), { path: 'out/chart.png' });
  assert.deepEqual(presentedPath('./a/b.txt'), { path: 'a/b.txt' });
  for (const bad of [
    '/etc/passwd',
    '/workspace',
    '/workspace/',
    '../x',
    'a/../../x',
    '.hako/claude/x',
    '.hako',
    'a//b',
    'a\\b',
    '',
  ]) {
    assert.ok('problem' in presentedPath(bad), bad);
  }
  assert.match((presentedPath('.hako/x') as { problem: string }).problem, /\.hako/);
  assert.match((presentedPath('/tmp/x') as { problem: string }).problem, /outside \/workspace/);
});

test('present_files marks valid paths (last mark wins) and refuses a call with any invalid one', async () => {
  const marks = new PresentMarks();
  const ok = await presentFiles(marks, {
    paths: ['report.md', '/workspace/report.md', 'b.csv'],
    description: ' Q3 ',
  });
  assert.equal(ok.isError, undefined);
  assert.match(ok.content[0]!.text, /report\.md, b\.csv/);
  assert.deepEqual(marks.list(), [
    { path: 'report.md', description: 'Q3' },
    { path: 'b.csv', description: 'Q3' },
  ]);
  const bad = await presentFiles(marks, { paths: ['c.txt', '/etc/shadow'] });
  assert.equal(bad.isError, true);
  assert.match(bad.content[0]!.text, /Nothing was marked.*\/etc\/shadow/);
  assert.equal(marks.list().length, 2, 'a refused call marks nothing, not even its valid paths');
  await presentFiles(marks, { paths: ['report.md'] });
  assert.deepEqual(marks.list()[0], { path: 'report.md' }, 'a later mark replaces the earlier');
});

test('a run holds at most MAX_PRESENT_MARKS marks', async () => {
  const marks = new PresentMarks();
  const paths = Array.from({ length: MAX_PRESENT_MARKS }, (_, i) => `f${i}.txt`);
  for (let i = 0; i < paths.length; i += 100) {
    assert.equal((await presentFiles(marks, { paths: paths.slice(i, i + 100) })).isError, undefined);
  }
  const over = await presentFiles(marks, { paths: ['one-more.txt'] });
  assert.equal(over.isError, true);
  assert.equal(marks.list().length, MAX_PRESENT_MARKS);
  assert.equal(
    (await presentFiles(marks, { paths: ['f1.txt'] })).isError,
    undefined,
    're-marking is no new mark',
  );
});

test('the hako server is an in-process (sdk) MCP server with present_files', () => {
  const server = createHakoMcpServer(new PresentMarks());
  assert.equal(server.type, 'sdk');
  assert.equal(server.name, HAKO_MCP_SERVER);
  const tools = (server.instance as unknown as { _registeredTools: Record<string, unknown> })
    ._registeredTools;
  assert.deepEqual(Object.keys(tools), ['present_files']);
});

const settings = testSettings;

function registryServer(name: string, command: string): McpServer {
  return {
    id: `id-${name}`,
    tenantId: 't1',
    name,
    enabled: true,
    createdAt: '2026-01-01T00:00:00.000Z',
    updatedAt: '2026-01-01T00:00:00.000Z',
    type: 'stdio',
    command,
    args: [],
    env: {},
  };
}

function options(s: TenantSettings, mcpServers: McpServer[] = []) {
  return buildAgentOptions(
    testOptionsInput(s, {
      mcpServers,
      inProcessMcpServers: { [HAKO_MCP_SERVER]: createHakoMcpServer(new PresentMarks()) },
    }),
  );
}

test('the options offer the hako server, replacing a tenant server of its name, and allow it past an allowlist', () => {
  const open = options(settings());
  assert.equal(open.mcpServers?.hako?.type, 'sdk');
  assert.deepEqual(open.allowedTools, [], 'an empty allowlist stays empty (everything allowed)');

  const listed = options(settings({ allowedTools: ['Bash'] }), [
    registryServer('hako', '/bin/evil'),
    registryServer('db', 'db'),
  ]);
  assert.equal(listed.mcpServers?.hako?.type, 'sdk', "a tenant server cannot take hako's name");
  assert.equal(listed.mcpServers?.db?.type, 'stdio');
  assert.deepEqual(listed.allowedTools, ['Bash', 'mcp__hako']);
  assert.deepEqual(listed.tools, ['Bash'], 'the built-in tools stay the allowlisted ones');
});
