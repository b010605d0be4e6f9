/**
 * Plain values the unit tests build flows and SDK options from: tenant `t1`, conversation `c1`,
 * sandbox `sb1`. Each takes overrides, so a test states only what it depends on.
 */
import { silentLogger } from '@hako/core';
import type { AgentClient } from '@hako/proto';
import type { AgentOptionsInput } from '../../src/agent/options-builder.js';
import type { Conversation, Tenant, TenantLimits, TenantSettings } from '../../src/types.js';

export function testSettings(
  over: Partial<Omit<TenantSettings, 'limits'>> & { limits?: Partial<TenantLimits> } = {},
): TenantSettings {
  const { limits, ...rest } = over;
  return {
    limits: {
      cpus: 1,
      memoryBytes: 1,
      pids: 1,
      diskBytes: 1,
      requestsPerMinute: 60,
      concurrentRuns: 1,
      maxTurns: 5,
      ...limits,
    },
    allowedTools: [],
    disallowedTools: [],
    egressAllow: [],
    maxContextTokens: 1000,
    ...rest,
  };
}

export function testTenant(settings: TenantSettings = testSettings()): Tenant {
  return { id: 't1', name: 'acme', createdAt: '', settings };
}

export function testConversation(over: Partial<Conversation> = {}): Conversation {
  return {
    id: 'c1',
    tenantId: 't1',
    title: null,
    workspaceEnabled: true,
    sessionId: null,
    contextTokens: 0,
    status: 'idle',
    createdAt: '',
    updatedAt: '',
    userId: null,
    archivedAt: null,
    ...over,
  };
}

/** buildAgentOptions' input for tenant t1, conversation c1 with a workspace, sandbox sb1. */
export function testOptionsInput(
  settings: TenantSettings,
  over: Partial<AgentOptionsInput> = {},
): AgentOptionsInput {
  return {
    tenantId: 't1',
    settings,
    conversation: { id: 'c1', workspaceEnabled: true, sessionId: null },
    sandbox: { client: {} as AgentClient, sandboxId: 'sb1' },
    abortController: new AbortController(),
    logger: silentLogger(),
    ...over,
  };
}
