// hakod's AGENT_CLAUDE_CODE_BINARY: unset resolves the SDK's native package from node_modules,
// empty disables the mount, a path is taken as is; a missing, non-regular or non-executable file
// stops hakod at start-up with CONFIG_INVALID naming the variable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  agentConfigBaseSchema,
  checkClaudeCodeBinary,
  claudeCodeBinaryPath,
  claudeCodePackages,
  loadAgentConfig,
  startAgent,
} from '@hako/agentd';

const base = { AGENT_INSECURE: '1', AGENT_LISTEN: '127.0.0.1:0' };

test('unset: the SDK native binary for this platform, resolved from node_modules', () => {
  const path = claudeCodeBinaryPath(loadAgentConfig(base));
  assert.ok(path?.endsWith(`/@anthropic-ai/claude-agent-sdk-linux-${process.arch}/claude`), path);
  assert.ok(existsSync(path!));
  assert.deepEqual(claudeCodePackages('arm64'), [
    '@anthropic-ai/claude-agent-sdk-linux-arm64',
    '@anthropic-ai/claude-agent-sdk-linux-arm64-musl',
  ]);
});

test('unset, on a platform without the package: musl tried next, then CONFIG_INVALID', () => {
  const tried: string[] = [];
  const resolve = (s: string): string => {
    tried.push(s);
    if (s.includes('-musl')) return '/nm/musl/claude';
    throw new Error('not found');
  };
  assert.equal(
    claudeCodeBinaryPath({ AGENT_CLAUDE_CODE_BINARY: undefined }, resolve, 'arm64'),
    '/nm/musl/claude',
  );
  assert.deepEqual(tried, [
    '@anthropic-ai/claude-agent-sdk-linux-arm64/claude',
    '@anthropic-ai/claude-agent-sdk-linux-arm64-musl/claude',
  ]);
  assert.throws(
    () =>
      claudeCodeBinaryPath(
        { AGENT_CLAUDE_CODE_BINARY: undefined },
        () => {
          throw new Error('not found');
        },
        'riscv64',
      ),
    (e: { code?: string; message?: string }) =>
      e.code === 'CONFIG_INVALID' &&
      /AGENT_CLAUDE_CODE_BINARY/.test(e.message ?? '') &&
      /riscv64/.test(e.message ?? ''),
  );
});

test('empty disables the mount; a path is used as given; a relative path is refused', () => {
  assert.equal(claudeCodeBinaryPath(loadAgentConfig({ ...base, AGENT_CLAUDE_CODE_BINARY: '' })), undefined);
  assert.equal(
    claudeCodeBinaryPath(loadAgentConfig({ ...base, AGENT_CLAUDE_CODE_BINARY: '/opt/claude/bin/claude' })),
    '/opt/claude/bin/claude',
  );
  assert.throws(() => loadAgentConfig({ ...base, AGENT_CLAUDE_CODE_BINARY: 'claude' }), {
    code: 'CONFIG_INVALID',
  });
  assert.match(
    agentConfigBaseSchema.shape.AGENT_CLAUDE_CODE_BINARY.description ?? '',
    /\/opt\/hako\/bin\/claude/,
  );
});

test('the binary must be an executable regular file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'hako-claude-bin-'));
  try {
    const file = join(dir, 'claude');
    await writeFile(file, '#!/bin/sh\n');
    await chmod(file, 0o644);
    const bad = async (p: string, why: RegExp) =>
      assert.rejects(checkClaudeCodeBinary(p), (e: { code?: string; message?: string }) => {
        assert.equal(e.code, 'CONFIG_INVALID');
        assert.match(e.message ?? '', /AGENT_CLAUDE_CODE_BINARY/);
        assert.match(e.message ?? '', why);
        return true;
      });
    await bad(file, /not executable/);
    await bad(dir, /not a regular file/);
    await bad(join(dir, 'missing'), /ENOENT/);
    await chmod(file, 0o755);
    await checkClaudeCodeBinary(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('hakod does not start with a missing binary', async () => {
  await assert.rejects(
    startAgent({ ...base, AGENT_CLAUDE_CODE_BINARY: '/nonexistent/claude', AGENT_METRICS_LISTEN: '' }),
    (e: { code?: string; message?: string }) =>
      e.code === 'CONFIG_INVALID' && /\/nonexistent\/claude cannot be read \(ENOENT\)/.test(e.message ?? ''),
  );
});
