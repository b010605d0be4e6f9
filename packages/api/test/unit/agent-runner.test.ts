// runAgent with a stand-in query(): events in order with exactly one `done` last, the summary, a
// failure before any result (error event + synthetic done, with the process's own reason), a
// cancel, and an onEvent that throws.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createLogger } from '@hako/core';
import type { Options, SpawnedProcess } from '@anthropic-ai/claude-agent-sdk';
import type { AgentClient } from '@hako/proto';
import { ExitReason } from '@hako/proto';
import { runAgent } from '../../src/agent/runner.js';
import { spawnInSandbox } from '../../src/agent/sandbox-process.js';
import type { AgentEvent } from '../../src/types.js';

const logger = createLogger({ level: 'silent', name: 'test' });
const session = '3f1e0c4a-1111-4222-8333-444455556666';

const init = {
  type: 'system',
  subtype: 'init',
  session_id: session,
  tools: ['Bash'],
  model: 'claude-test',
  mcp_servers: [],
  claude_code_version: '2.1.330',
  uuid: 'u0',
};
const toolUse = {
  type: 'assistant',
  parent_tool_use_id: null,
  session_id: session,
  uuid: 'u1',
  message: {
    id: 'msg_1',
    role: 'assistant',
    content: [{ type: 'tool_use', id: 'toolu_1', name: 'Bash', input: { command: 'echo hi' } }],
    usage: {
      input_tokens: 50,
      output_tokens: 10,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
    },
  },
};
const toolResult = {
  type: 'user',
  parent_tool_use_id: null,
  session_id: session,
  uuid: 'u2',
  message: {
    role: 'user',
    content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'hi', is_error: false }],
  },
};
const text = {
  type: 'assistant',
  parent_tool_use_id: null,
  session_id: session,
  uuid: 'u3',
  message: {
    id: 'msg_2',
    role: 'assistant',
    content: [{ type: 'text', text: 'done' }],
    usage: { input_tokens: 70, output_tokens: 3, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
  },
};
const result = {
  type: 'result',
  subtype: 'success',
  is_error: false,
  result: 'done',
  num_turns: 2,
  duration_ms: 1234,
  total_cost_usd: 0.01,
  usage: { input_tokens: 120, output_tokens: 13, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
  session_id: session,
  uuid: 'u4',
};

function options(ac = new AbortController()): Options & { abortController: AbortController } {
  return { abortController: ac };
}

async function* play(
  msgs: unknown[],
  opts?: { throwAtEnd?: Error; signal?: AbortSignal },
): AsyncGenerator<unknown> {
  for (const m of msgs) {
    await new Promise((r) => setImmediate(r));
    if (opts?.signal?.aborted) throw new Error('aborted by user');
    yield m;
  }
  if (opts?.throwAtEnd) throw opts.throwAtEnd;
}

test('events come in order, one done last, and the summary carries the result', async () => {
  const events: AgentEvent[] = [];
  const summary = await runAgent({
    options: options(),
    prompt: 'hi',
    contextLimit: 1000,
    logger,
    onEvent: (e) => void events.push(e),
    query: () => play([init, toolUse, toolResult, text, result]),
  });
  assert.deepEqual(
    events.map((e) => e.type),
    ['init', 'tool_call', 'context_status', 'tool_result', 'assistant', 'context_status', 'done'],
  );
  assert.equal(events.at(-1)?.sdkMessage, result);
  assert.deepEqual(summary, {
    status: 'completed',
    sessionId: session,
    result: 'done',
    isError: false,
    usage: { inputTokens: 120, outputTokens: 13, cacheCreationInputTokens: 0, cacheReadInputTokens: 0 },
    costUsd: 0.01,
    turnCount: 2,
    durationMs: 1234,
    contextTokens: 73,
    error: undefined,
  });
});

test('Claude Code ending without a result: error event, then a failed done', async () => {
  const events: AgentEvent[] = [];
  const summary = await runAgent({
    options: options(),
    prompt: 'hi',
    contextLimit: 1000,
    logger,
    onEvent: (e) => void events.push(e),
    query: () => play([init], { throwAtEnd: new Error('Claude Code process exited with code 1') }),
  });
  assert.deepEqual(
    events.map((e) => e.type),
    ['init', 'error', 'done'],
  );
  assert.equal(events[1]?.data.code, 'AGENT_FAILED');
  assert.match(String(events[1]?.data.message), /exited with code 1/);
  assert.equal(events[2]?.data.status, 'failed');
  assert.equal(events[2]?.data.session_id, session);
  assert.equal(summary.status, 'failed');
  assert.equal(summary.sessionId, session);
  assert.equal(summary.error?.code, 'AGENT_FAILED');
});

test('a process killed by the memory limit is named as such, with its stderr', async () => {
  const call = Object.assign(new EventEmitter(), {
    write: () => true,
    pause() {},
    resume() {},
    end() {},
    cancel() {},
  });
  const events: AgentEvent[] = [];
  const opts: Options & { abortController: AbortController } = {
    abortController: new AbortController(),
    spawnClaudeCodeProcess: (o) =>
      spawnInSandbox({
        client: { exec: () => call } as unknown as AgentClient,
        ownerId: 't',
        sandboxId: 's',
        argv: ['/opt/hako/bin/claude', ...o.args],
        env: {},
        cwd: '/workspace',
        logger,
      }),
  };
  const summary = await runAgent({
    options: opts,
    prompt: 'hi',
    contextLimit: 1000,
    logger,
    onEvent: (e) => void events.push(e),
    query: ({ options: o }) => {
      const p: SpawnedProcess = o!.spawnClaudeCodeProcess!({
        command: 'x',
        args: [],
        env: {},
        signal: new AbortController().signal,
      });
      return (async function* () {
        yield init;
        call.emit('data', { msg: { $case: 'stderr', stderr: Buffer.from('allocating a lot\n') } });
        call.emit('data', {
          msg: {
            $case: 'exit',
            exit: { code: 137, signal: 'SIGKILL', limitKilled: true, reason: ExitReason.EXIT_REASON_OOM },
          },
        });
        call.emit('end');
        await new Promise((r) => p.once('exit', r));
        throw new Error('Claude Code process terminated by signal SIGKILL');
      })();
    },
  });
  assert.equal(summary.status, 'failed');
  assert.equal(summary.error?.code, 'AGENT_FAILED');
  assert.match(summary.error?.message ?? '', /memory limit/);
  assert.match(summary.error?.message ?? '', /allocating a lot/);
  assert.deepEqual(
    events.map((e) => e.type),
    ['init', 'error', 'done'],
  );
});

test('a cancel ends with a cancelled done and no error event', async () => {
  const ac = new AbortController();
  const events: AgentEvent[] = [];
  const summary = await runAgent({
    options: options(ac),
    prompt: 'hi',
    contextLimit: 1000,
    logger,
    onEvent: (e) => {
      events.push(e);
      if (e.type === 'tool_call') ac.abort();
    },
    query: () => play([init, toolUse, toolResult, text, result], { signal: ac.signal }),
  });
  assert.deepEqual(
    events.map((e) => e.type),
    ['init', 'tool_call', 'context_status', 'done'],
  );
  assert.equal(events.at(-1)?.data.status, 'cancelled');
  assert.equal(summary.status, 'cancelled');
  assert.equal(summary.error?.code, 'RUN_CANCELLED');
});

test('an onEvent that throws cancels the run and the error comes back', async () => {
  const ac = new AbortController();
  await assert.rejects(
    runAgent({
      options: options(ac),
      prompt: 'hi',
      contextLimit: 1000,
      logger,
      onEvent: (e) => {
        if (e.type === 'tool_call') throw new Error('database down');
      },
      query: () => play([init, toolUse, toolResult, text, result], { signal: ac.signal }),
    }),
    /database down/,
  );
  assert.equal(ac.signal.aborted, true);
});

test('an error result is a failed run with the SDK errors', async () => {
  const events: AgentEvent[] = [];
  const summary = await runAgent({
    options: options(),
    prompt: 'hi',
    contextLimit: 1000,
    logger,
    onEvent: (e) => void events.push(e),
    query: () =>
      play([
        init,
        {
          ...result,
          subtype: 'error_max_turns',
          is_error: true,
          result: undefined,
          errors: ['Reached maximum number of turns (1)'],
        },
      ]),
  });
  assert.deepEqual(
    events.map((e) => e.type),
    ['init', 'done'],
  );
  assert.equal(events[1]?.data.status, 'failed');
  assert.equal(summary.status, 'failed');
  assert.deepEqual(summary.error, { code: 'AGENT_FAILED', message: 'Reached maximum number of turns (1)' });
});
