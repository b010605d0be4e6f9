import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '@hako/core';
import {
  DEFAULT_TENANT_SETTINGS,
  parseTenantSettings,
  tenantSettingsInputJsonSchema,
  tenantSettingsToWire,
} from '../../src/http/tenant-settings.js';

test('no settings at all, or an empty object, give the documented defaults', () => {
  const expected = {
    limits: {
      cpus: 1,
      memoryBytes: 1024 ** 3,
      pids: 256,
      diskBytes: 1024 ** 3,
      requestsPerMinute: 60,
      concurrentRuns: 4,
      maxTurns: 50,
    },
    allowedTools: [],
    disallowedTools: [],
    egressAllow: [],
    maxContextTokens: 200_000,
  };
  assert.deepEqual(parseTenantSettings(undefined), expected);
  assert.deepEqual(parseTenantSettings({}), expected);
  assert.deepEqual(DEFAULT_TENANT_SETTINGS, expected);
});

test('a partial setting keeps the other defaults and maps wire names to TenantSettings', () => {
  const s = parseTenantSettings({
    limits: { cpus: 2.5, requests_per_minute: 5 },
    allowed_tools: ['Bash', 'Read'],
    egress_allow: ['pypi.org:443', '*.github.com:443', '[2001:db8::1]:*'],
    system_prompt: 'Be brief.',
    max_context_tokens: 50_000,
    model: 'claude-sonnet-4-5',
  });
  assert.equal(s.limits.cpus, 2.5);
  assert.equal(s.limits.requestsPerMinute, 5);
  assert.equal(s.limits.pids, 256);
  assert.equal(s.limits.memoryBytes, 1024 ** 3);
  assert.deepEqual(s.allowedTools, ['Bash', 'Read']);
  assert.equal(s.systemPrompt, 'Be brief.');
  assert.equal(s.maxContextTokens, 50_000);
  assert.equal(s.model, 'claude-sonnet-4-5');
  // Round trip through the wire form.
  assert.deepEqual(parseTenantSettings(tenantSettingsToWire(s)), s);
});

test('bad settings are INVALID_ARGUMENT naming the field', () => {
  const cases: [unknown, string][] = [
    [{ limits: { cpus: 0 } }, 'settings.limits.cpus'],
    [{ limits: { cpus: 'two' } }, 'settings.limits.cpus'],
    [{ limits: { pids: 1.5 } }, 'settings.limits.pids'],
    [{ limits: { memory_bytes: 1024 } }, 'settings.limits.memory_bytes'],
    [{ limits: { requests_per_minute: 0 } }, 'settings.limits.requests_per_minute'],
    [{ limits: { requestsPerMinute: 10 } }, 'settings.limits'],
    [{ allowedTools: [] }, 'settings'],
    [{ egress_allow: ['pypi.org'] }, 'settings.egress_allow.0'],
    [{ egress_allow: ['ok.org:443', 'has space:1'] }, 'settings.egress_allow.1'],
    // MCP servers moved to the registry (POST /v1/mcp-servers)
    [{ mcp_servers: { x: { type: 'stdio', command: 'a' } } }, 'settings.mcp_servers'],
    [{ max_context_tokens: -1 }, 'settings.max_context_tokens'],
    [{ model: 'has space' }, 'settings.model'],
  ];
  for (const [input, field] of cases) {
    assert.throws(
      () => parseTenantSettings(input),
      (e: unknown) =>
        e instanceof AppError &&
        e.code === 'INVALID_ARGUMENT' &&
        typeof e.details?.field === 'string' &&
        e.details.field.startsWith(field),
      JSON.stringify(input),
    );
  }
});

test('the JSON Schema of the request is derived from the same schema (defaults and strictness included)', () => {
  const js = tenantSettingsInputJsonSchema() as {
    additionalProperties: boolean;
    properties: Record<string, { properties?: Record<string, { default?: unknown }> }>;
    $schema?: string;
  };
  assert.equal(js.$schema, undefined);
  assert.equal(js.additionalProperties, false);
  assert.equal(js.properties.limits?.properties?.requests_per_minute?.default, 60);
  assert.equal(js.properties.limits?.properties?.concurrent_runs?.default, 4);
});
