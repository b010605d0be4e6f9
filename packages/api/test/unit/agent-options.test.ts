// Tenant settings + conversation -> SDK Options: cwd, system prompt, tool policy, MCP servers,
// limits, resume, permissions, settings isolation, and an environment that never inherits the API
// process's own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  SANDBOX_CLAUDE_CONFIG_DIR,
  agentWorkingDir,
  buildAgentOptions,
  builtInToolsOf,
} from '../../src/agent/options-builder.js';
import type { AgentOptionsInput } from '../../src/agent/options-builder.js';
import { testOptionsInput, testSettings } from '../helpers/fixtures.js';

const settings = testSettings({
  limits: {
    memoryBytes: 1024 * 2 ** 20,
    pids: 256,
    diskBytes: 2 ** 30,
    concurrentRuns: 2,
    maxTurns: 7,
  },
  disallowedTools: ['WebFetch'],
  systemPrompt: 'Answer in French.',
  maxContextTokens: 100_000,
  model: 'claude-sonnet-4-5',
});

function input(over: Partial<AgentOptionsInput> = {}): AgentOptionsInput {
  return testOptionsInput(settings, over);
}

test('cwd: /workspace with a workspace, the tenant skills directory without', () => {
  assert.equal(buildAgentOptions(input()).cwd, '/workspace');
  const noWs = buildAgentOptions(
    input({ conversation: { id: 'c1', workspaceEnabled: false, sessionId: null } }),
  );
  assert.equal(noWs.cwd, '/skills/t1');
  assert.equal(agentWorkingDir('t2', false), '/skills/t2');
});

test('the tenant system prompt is appended to the claude_code preset', () => {
  assert.deepEqual(buildAgentOptions(input()).systemPrompt, {
    type: 'preset',
    preset: 'claude_code',
    append: 'Answer in French.',
  });
  const plain = buildAgentOptions(input({ settings: { ...settings, systemPrompt: undefined } }));
  assert.deepEqual(plain.systemPrompt, { type: 'preset', preset: 'claude_code' });
});

test('tool policy: disallowed tools removed; a non-empty allowlist also limits the built-in tools', () => {
  const all = buildAgentOptions(input());
  assert.deepEqual(all.disallowedTools, ['WebFetch']);
  assert.deepEqual(all.allowedTools, []);
  assert.equal(all.tools, undefined, 'an empty allowlist keeps every built-in tool');
  const some = buildAgentOptions(
    input({ settings: { ...settings, allowedTools: ['Bash(git:*)', 'Read', 'Bash', 'mcp__notes__add'] } }),
  );
  assert.deepEqual(some.tools, ['Bash', 'Read']);
  assert.deepEqual(some.allowedTools, ['Bash(git:*)', 'Read', 'Bash', 'mcp__notes__add']);
  assert.deepEqual(builtInToolsOf(['mcp__x__y']), [], 'only MCP tools: no built-in tool at all');
});

test('MCP servers: exactly the given set, stdio run by the sandboxed Claude Code, http with headers; over stdin', () => {
  const meta = { tenantId: 't1', enabled: true, createdAt: '', updatedAt: '' };
  const o = buildAgentOptions(
    input({
      mcpServers: [
        {
          ...meta,
          id: 's1',
          name: 'notes',
          type: 'stdio',
          command: 'node',
          args: ['/skills/t1/notes.js'],
          env: { NOTES_TOKEN: 'abc' },
        },
        {
          ...meta,
          id: 's2',
          name: 'docs',
          type: 'http',
          url: 'https://mcp.example.com/mcp',
          headers: { A: 'b' },
        },
      ],
    }),
  );
  assert.deepEqual(o.mcpServers, {
    notes: { type: 'stdio', command: 'node', args: ['/skills/t1/notes.js'], env: { NOTES_TOKEN: 'abc' } },
    docs: { type: 'http', url: 'https://mcp.example.com/mcp', headers: { A: 'b' } },
  });
  assert.deepEqual(buildAgentOptions(input()).mcpServers, {}, 'no servers given: none');
  assert.equal(o.mcpServersDelivery, 'initialize');
  assert.equal(o.strictMcpConfig, true);
});

test('limits, model, resume, permissions and settings isolation', () => {
  const o = buildAgentOptions(input());
  assert.equal(o.maxTurns, 7);
  assert.equal(o.model, 'claude-sonnet-4-5');
  assert.equal(o.resume, undefined, 'a first run starts a session');
  assert.equal(o.permissionMode, 'bypassPermissions');
  assert.equal(o.allowDangerouslySkipPermissions, true);
  assert.deepEqual(o.settingSources, []);
  assert.equal(o.includePartialMessages, false);
  assert.equal(o.pathToClaudeCodeExecutable, '/opt/hako/bin/claude');
  assert.equal(typeof o.spawnClaudeCodeProcess, 'function');
  const resumed = buildAgentOptions(
    input({
      conversation: { id: 'c1', workspaceEnabled: true, sessionId: '7b0c5a0e-0000-4000-8000-000000000000' },
    }),
  );
  assert.equal(resumed.resume, '7b0c5a0e-0000-4000-8000-000000000000');
  const noModel = buildAgentOptions(input({ settings: { ...settings, model: undefined } }));
  assert.equal('model' in noModel, false);
});

test('the environment is minimal: nothing of the API process is inherited', () => {
  const before = process.env.DATABASE_URL;
  process.env.DATABASE_URL = 'postgres://hako:secret@db/hako';
  try {
    const o = buildAgentOptions(input());
    assert.deepEqual(o.env, { CLAUDE_AGENT_SDK_CLIENT_APP: 'hako-api/0.1.0' });
  } finally {
    if (before === undefined) delete process.env.DATABASE_URL;
    else process.env.DATABASE_URL = before;
  }
});

test('the abort controller is the caller one', () => {
  const ac = new AbortController();
  assert.equal(buildAgentOptions(input({ abortController: ac })).abortController, ac);
  assert.equal(SANDBOX_CLAUDE_CONFIG_DIR, '/workspace/.hako/claude');
});
