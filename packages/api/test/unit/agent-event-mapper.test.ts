// mapSdkMessage: a recorded real run of the SDK (Claude Code against the scripted model: Bash, then
// text) gives the seed vocabulary's sequence; hand-made messages cover sub-agents (Task/Agent),
// messages inside a sub-agent, thinking, error results, long tool output and unknown messages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  MAX_TOOL_OUTPUT_CHARS,
  createMapperState,
  mapSdkMessage,
  toolOutputText,
} from '../../src/agent/event-mapper.js';
import type { AgentEvent } from '../../src/types.js';

const FIXTURE = fileURLToPath(new URL('../../../testkit/fixtures/sdk-messages-bash.json', import.meta.url));

function mapAll(msgs: readonly unknown[], limit = 200_000): { events: AgentEvent[]; ignored: unknown[] } {
  const state = createMapperState({ contextLimit: limit });
  const ignored: unknown[] = [];
  const events = msgs.flatMap((m) => mapSdkMessage(m, state, (x) => ignored.push(x)));
  return { events, ignored };
}

/** The recorded messages: the fixture is an array of SDK messages, or an object holding one. */
function loadRecorded(): unknown[] {
  const raw = JSON.parse(readFileSync(FIXTURE, 'utf8')) as unknown;
  if (Array.isArray(raw)) return raw;
  const obj = raw as Record<string, unknown>;
  const arr = obj.messages ?? obj.sdkMessages;
  assert.ok(Array.isArray(arr), `${FIXTURE}: no array of SDK messages`);
  return arr;
}

test('a recorded real run (Bash, then text) maps to init, tool_call, tool_result, assistant, done', () => {
  assert.ok(existsSync(FIXTURE), `${FIXTURE} is missing (recorded by the testkit)`);
  const msgs = loadRecorded();
  const { events } = mapAll(msgs);
  const kinds = events.map((e) => e.type).filter((t) => t !== 'context_status');
  assert.deepEqual(kinds, ['init', 'tool_call', 'tool_result', 'assistant', 'done']);
  const by = (t: string) => events.find((e) => e.type === t)!;
  const initMsg = msgs.find((m) => (m as { type: string; subtype?: string }).subtype === 'init') as {
    session_id: string;
    model: string;
    tools: string[];
  };
  assert.equal(by('init').data.session_id, initMsg.session_id);
  assert.equal(by('init').data.model, initMsg.model);
  assert.ok((by('init').data.tools as string[]).includes('Bash'));
  assert.equal(by('tool_call').data.name, 'Bash');
  assert.equal(typeof (by('tool_call').data.input as { command?: unknown }).command, 'string');
  assert.equal(by('tool_result').data.id, by('tool_call').data.id);
  assert.equal(by('tool_result').data.is_error, false);
  assert.equal(typeof by('tool_result').data.output, 'string');
  const done = by('done').data;
  assert.equal(done.status, 'completed');
  assert.equal(done.is_error, false);
  assert.equal(done.session_id, initMsg.session_id);
  assert.equal(done.turn_count, 2);
  assert.deepEqual(Object.keys(done.usage as object).sort(), [
    'cache_creation_input_tokens',
    'cache_read_input_tokens',
    'input_tokens',
    'output_tokens',
  ]);
  assert.ok(((done.usage as { output_tokens: number }).output_tokens ?? 0) > 0);
  assert.equal(typeof done.cost_usd, 'number');
  assert.equal(typeof done.duration_ms, 'number');
  // every event carries the SDK message it came from, and every context_status has the limit
  for (const e of events) assert.ok(msgs.includes(e.sdkMessage), e.type);
  const ctx = events.filter((e) => e.type === 'context_status');
  assert.ok(ctx.length >= 1);
  for (const c of ctx) {
    assert.equal(c.data.limit, 200_000);
    assert.ok((c.data.tokens_used as number) > 0);
  }
});

const session = 's-1';
const asst = (content: unknown[], extra: Record<string, unknown> = {}) => ({
  type: 'assistant',
  session_id: session,
  parent_tool_use_id: null,
  uuid: 'u',
  message: {
    id: 'msg_a',
    role: 'assistant',
    content,
    usage: {
      input_tokens: 10,
      output_tokens: 5,
      cache_creation_input_tokens: 100,
      cache_read_input_tokens: 1000,
    },
  },
  ...extra,
});
const toolResult = (id: string, content: unknown, isError = false, parent: string | null = null) => ({
  type: 'user',
  session_id: session,
  parent_tool_use_id: parent,
  uuid: 'r',
  message: { role: 'user', content: [{ type: 'tool_result', tool_use_id: id, content, is_error: isError }] },
});

test('a Task call starts a sub-agent; its messages carry parent_tool_use_id; its result ends it', () => {
  const taskCall = asst([
    {
      type: 'tool_use',
      id: 'toolu_task',
      name: 'Task',
      input: { description: 'count files', prompt: 'count the files', subagent_type: 'general-purpose' },
    },
  ]);
  const inner = asst(
    [{ type: 'tool_use', id: 'toolu_inner', name: 'Bash', input: { command: 'ls | wc -l' } }],
    {
      parent_tool_use_id: 'toolu_task',
      message: {
        id: 'msg_sub',
        role: 'assistant',
        content: [{ type: 'tool_use', id: 'toolu_inner', name: 'Bash', input: { command: 'ls | wc -l' } }],
        usage: {
          input_tokens: 5,
          output_tokens: 5,
          cache_creation_input_tokens: 0,
          cache_read_input_tokens: 0,
        },
      },
    },
  );
  const innerResult = toolResult('toolu_inner', '3', false, 'toolu_task');
  const taskResult = toolResult('toolu_task', [{ type: 'text', text: 'There are 3 files.' }]);
  const { events } = mapAll([taskCall, inner, innerResult, taskResult]);
  assert.deepEqual(
    events.map((e) => [e.type, e.data.parent_tool_use_id]),
    [
      ['tool_call', undefined],
      ['subagent_start', undefined],
      ['context_status', undefined],
      ['tool_call', 'toolu_task'],
      ['tool_result', 'toolu_task'],
      ['tool_result', undefined],
      ['subagent_end', undefined],
    ],
  );
  assert.deepEqual(events[1]?.data, {
    id: 'toolu_task',
    subagent_type: 'general-purpose',
    description: 'count files',
  });
  assert.equal(events[2]?.data.tokens_used, 1115, 'input + cache creation + cache read + output');
  assert.equal(events[5]?.data.output, 'There are 3 files.');
  assert.deepEqual(events[6]?.data, { id: 'toolu_task', subagent_type: 'general-purpose', is_error: false });
  // the sub-agent's own model response does not change the conversation's context size
  assert.equal(events.filter((e) => e.type === 'context_status').length, 1);
});

test('the Agent tool (the new name of Task) starts a sub-agent too; an error result ends it as an error', () => {
  const { events } = mapAll([
    asst([{ type: 'tool_use', id: 'toolu_ag', name: 'Agent', input: { description: 'd', prompt: 'p' } }]),
    toolResult('toolu_ag', 'sub-agent failed', true),
  ]);
  const start = events.find((e) => e.type === 'subagent_start');
  assert.deepEqual(start?.data, { id: 'toolu_ag', subagent_type: 'general-purpose', description: 'd' });
  const end = events.find((e) => e.type === 'subagent_end');
  assert.equal(end?.data.is_error, true);
  assert.equal(events.find((e) => e.type === 'tool_result')?.data.is_error, true);
});

test('thinking and text blocks, in order; one context_status per model response', () => {
  const state = createMapperState({ contextLimit: 5000 });
  const a = mapSdkMessage(asst([{ type: 'thinking', thinking: 'let me see', signature: 'sig' }]), state);
  const b = mapSdkMessage(asst([{ type: 'text', text: 'hello' }]), state);
  assert.deepEqual(
    a.map((e) => [e.type, e.data]),
    [
      ['thinking', { text: 'let me see' }],
      ['context_status', { tokens_used: 1115, limit: 5000 }],
    ],
  );
  assert.deepEqual(
    b.map((e) => [e.type, e.data]),
    [['assistant', { text: 'hello' }]],
    'the same response (same id and usage) does not repeat context_status',
  );
  assert.equal(state.contextTokens, 1115);
});

test('tool output: blocks become text, long output is cut to the bound', () => {
  assert.equal(
    toolOutputText([
      { type: 'text', text: 'a' },
      { type: 'image', source: {} },
      { type: 'text', text: 'b' },
    ]),
    'a\n[image]\nb',
  );
  const long = 'x'.repeat(MAX_TOOL_OUTPUT_CHARS + 500);
  const [e] = mapAll([asst([]), toolResult('t1', long)]).events.filter((x) => x.type === 'tool_result');
  const out = e?.data.output as string;
  assert.ok(out.length < MAX_TOOL_OUTPUT_CHARS + 100);
  assert.match(out, /500 more characters/);
  assert.equal(e?.data.truncated, true);
});

test('error results are failed dones with the SDK errors', () => {
  const [done] = mapAll([
    {
      type: 'result',
      subtype: 'error_during_execution',
      is_error: true,
      num_turns: 1,
      duration_ms: 10,
      total_cost_usd: 0,
      usage: {
        input_tokens: 1,
        output_tokens: 0,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
      },
      errors: ['API Error: 500'],
      session_id: session,
      uuid: 'x',
    },
  ]).events;
  assert.deepEqual(done?.data, {
    status: 'failed',
    subtype: 'error_during_execution',
    result: '',
    is_error: true,
    usage: { input_tokens: 1, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
    cost_usd: 0,
    turn_count: 1,
    duration_ms: 10,
    session_id: session,
    errors: ['API Error: 500'],
  });
});

test('unknown and uninteresting messages give no events and are reported', () => {
  const { events, ignored } = mapAll([
    { type: 'system', subtype: 'status', status: 'requesting', session_id: session, uuid: 'a' },
    { type: 'rate_limit_event', session_id: session, uuid: 'b' },
    {
      type: 'user',
      session_id: session,
      parent_tool_use_id: null,
      message: { role: 'user', content: 'hello' },
    },
    'not a message',
    null,
  ]);
  assert.deepEqual(events, []);
  assert.equal(ignored.length, 5);
});
