// The spawner hands the SDK a process in the sandbox: the binary at /opt/hako/bin/claude with the
// SDK's arguments, the sandbox cwd, and an environment rebuilt from an allowlist (nothing of the
// API process's environment, no credentials, the sandbox's upstream variables untouched).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createLogger } from '@hako/core';
import type { AgentClient, ExecRequest } from '@hako/proto';
import {
  CLAUDE_CODE_FIXED_ENV,
  claudeCodeEnv,
  isAllowedSdkEnvName,
  makeSpawner,
} from '../../src/agent/claude-spawner.js';
import { SandboxProcess } from '../../src/agent/sandbox-process.js';

const logger = createLogger({ level: 'silent', name: 'test' });

/** What the SDK hands its spawner when Options.env was left out: the whole API process env. */
const apiProcessEnv = {
  PATH: '/usr/bin',
  HOME: '/root',
  DATABASE_URL: 'postgres://hako:pw@db/hako',
  REDIS_URL: 'redis://:pw@redis:6379',
  AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE',
  AWS_SECRET_ACCESS_KEY: 'secret',
  S3_SECRET_ACCESS_KEY: 's3secret',
  ANTHROPIC_API_KEY: 'sk-ant-real',
  ANTHROPIC_BASE_URL: 'https://api.anthropic.com',
  HAKO_ADMIN_TOKEN: 'admin',
  NODE_OPTIONS: '--inspect',
  CLAUDE_CODE_ENTRYPOINT: 'sdk-ts',
  CLAUDE_AGENT_SDK_VERSION: '0.3.330',
  CLAUDE_CODE_SDK_READS_SESSION_STATE: '1',
  CLAUDE_AGENT_SDK_CLIENT_APP: 'hako-api/0.1.0',
  CLAUDE_CODE_OAUTH_TOKEN: 'oauth-secret',
  CLAUDE_CODE_SESSION_ACCESS_TOKEN: 'tok',
  CLAUDE_CONFIG_DIR: '/root/.claude',
  UNSET: undefined,
};

test('only the SDK own non-secret CLAUDE_* variables pass', () => {
  for (const ok of [
    'CLAUDE_CODE_ENTRYPOINT',
    'CLAUDE_AGENT_SDK_VERSION',
    'CLAUDE_CODE_SDK_READS_SESSION_STATE',
  ])
    assert.equal(isAllowedSdkEnvName(ok), true, ok);
  for (const no of [
    'ANTHROPIC_API_KEY',
    'DATABASE_URL',
    'AWS_SECRET_ACCESS_KEY',
    'CLAUDE_CODE_OAUTH_TOKEN',
    'CLAUDE_CODE_SESSION_ACCESS_TOKEN',
    'CLAUDE_CONFIG_DIR',
    // a provider switch from the API host would point Claude Code away from the sandbox's upstream
    'CLAUDE_CODE_USE_BEDROCK',
    'CLAUDE_CODE_USE_VERTEX',
    'CLAUDE_CODE_SKIP_BEDROCK_AUTH',
    'claude_code_entrypoint',
    'PATH',
  ])
    assert.equal(isAllowedSdkEnvName(no), false, no);
});

test('claudeCodeEnv rebuilds the environment from the allowlist plus hako variables', () => {
  const env = claudeCodeEnv(apiProcessEnv, { CLAUDE_CONFIG_DIR: '/workspace/.hako/claude' });
  assert.deepEqual(env, {
    CLAUDE_CODE_ENTRYPOINT: 'sdk-ts',
    CLAUDE_AGENT_SDK_VERSION: '0.3.330',
    CLAUDE_CODE_SDK_READS_SESSION_STATE: '1',
    CLAUDE_AGENT_SDK_CLIENT_APP: 'hako-api/0.1.0',
    ...CLAUDE_CODE_FIXED_ENV,
    HOME: '/home/sandbox',
    CLAUDE_CONFIG_DIR: '/workspace/.hako/claude',
  });
  const text = JSON.stringify(env);
  for (const secret of ['pw@', 'AKIA', 'secret', 'sk-ant', 'admin', 'oauth', 'inspect'])
    assert.ok(!text.includes(secret), secret);
});

test('hako variables may not replace the sandbox upstream, proxy or PATH', () => {
  for (const k of [
    'ANTHROPIC_BASE_URL',
    'ANTHROPIC_API_KEY',
    'AWS_REGION',
    'CLAUDE_CODE_USE_BEDROCK',
    'HTTPS_PROXY',
    'NO_PROXY',
    'PATH',
  ]) {
    assert.throws(() => claudeCodeEnv({}, { [k]: 'x' }), { code: 'INVALID_ARGUMENT' }, k);
  }
});

class RecordingCall extends EventEmitter {
  readonly sent: ExecRequest[] = [];
  write(m: ExecRequest): boolean {
    this.sent.push(m);
    return true;
  }
  pause(): this {
    return this;
  }
  resume(): this {
    return this;
  }
  end(): this {
    return this;
  }
  cancel(): void {}
}

test('makeSpawner runs the sandbox binary with the SDK args, in the sandbox cwd', () => {
  const call = new RecordingCall();
  const client = { exec: () => call } as unknown as AgentClient;
  const spawned: SandboxProcess[] = [];
  const spawn = makeSpawner({
    client,
    ownerId: 'tenant-1',
    sandboxId: 'sb1',
    cwd: '/workspace',
    env: { CLAUDE_CONFIG_DIR: '/workspace/.hako/claude' },
    logger,
    onSpawn: (p) => spawned.push(p),
  });
  const p = spawn({
    command: '/host/node_modules/@anthropic-ai/claude-agent-sdk-linux-x64/claude',
    args: ['--output-format', 'stream-json', '--verbose'],
    cwd: '/srv/hako-api',
    env: apiProcessEnv,
    signal: new AbortController().signal,
  });
  assert.ok(p instanceof SandboxProcess);
  assert.equal(spawned[0], p);
  const start = call.sent[0]?.msg;
  assert.equal(start?.$case, 'start');
  if (start?.$case !== 'start') return;
  assert.deepEqual(start.start.argv, ['/opt/hako/bin/claude', '--output-format', 'stream-json', '--verbose']);
  assert.equal(start.start.cwd, '/workspace');
  assert.equal(start.start.ownerId, 'tenant-1');
  assert.equal(start.start.sandboxId, 'sb1');
  assert.equal(start.start.env.CLAUDE_CONFIG_DIR, '/workspace/.hako/claude');
  assert.equal(start.start.env.HOME, '/home/sandbox');
  for (const k of Object.keys(start.start.env)) {
    assert.ok(
      k.startsWith('CLAUDE_') || k.startsWith('DISABLE_') || k === 'HOME',
      `${k} entered the sandbox`,
    );
  }
  assert.equal(start.start.env.ANTHROPIC_API_KEY, undefined, 'the sandbox keeps its placeholder key');
  assert.equal(start.start.env.ANTHROPIC_BASE_URL, undefined, 'the sandbox keeps its proxy base URL');
});

test('without a configured cwd the SDK cwd is used, and it must be absolute', () => {
  const call = new RecordingCall();
  const spawn = makeSpawner({
    client: { exec: () => call } as unknown as AgentClient,
    ownerId: 't',
    sandboxId: 's',
    logger,
  });
  spawn({ command: 'x', args: [], cwd: '/skills/t', env: {}, signal: new AbortController().signal });
  const start = call.sent[0]?.msg;
  assert.equal(start?.$case === 'start' ? start.start.cwd : undefined, '/skills/t');
  assert.throws(
    () => spawn({ command: 'x', args: [], cwd: 'relative', env: {}, signal: new AbortController().signal }),
    { code: 'INVALID_ARGUMENT' },
  );
});
