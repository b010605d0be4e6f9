import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { gzipSync } from 'node:zlib';
import { isAppError } from '@hako/core';
import {
  AGENT_ID_HEADER,
  assembleMessage,
  buildMessage,
  classifyRequest,
  encodeSseEvent,
  messageEvents,
  parseScript,
  parseSse,
  startScriptedModel,
  turnMarker,
} from '../../src/index.js';
import type { ApiMessage, ScriptedModel } from '../../src/index.js';

const BASH_SCRIPT = {
  turns: [{ tool: 'Bash', input: { command: 'echo hi > a.txt' } }, { text: 'done' }],
};

// ---------------------------------------------------------------------------------------------
// Request bodies shaped like Claude Code's (see scripted-model-classify.ts)

const TOOLS = [{ name: 'Bash', description: 'run', input_schema: { type: 'object' } }];
const REMINDER = { type: 'text', text: '<system-reminder>\nsome context\n</system-reminder>\n' };
const userPrompt = (text: string): Record<string, unknown> => ({
  role: 'user',
  content: [REMINDER, { type: 'text', text }],
});
const toolUse = (id: string): Record<string, unknown> => ({
  role: 'assistant',
  content: [{ type: 'tool_use', id, name: 'Bash', input: { command: 'true' } }],
});
const toolResult = (id: string): Record<string, unknown> => ({
  role: 'user',
  content: [{ type: 'tool_result', tool_use_id: id, content: 'ok' }, REMINDER],
});
const assistantText = (text: string): Record<string, unknown> => ({
  role: 'assistant',
  content: [{ type: 'text', text }],
});
const systemMsg = { role: 'system', content: [{ type: 'text', text: '# Environment' }] };

function mainBody(messages: unknown[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model: 'claude-test',
    max_tokens: 128000,
    system: [{ type: 'text', text: 'x-anthropic-billing-header: cc_version=2.1.330; cc_entrypoint=sdk-ts;' }],
    tools: TOOLS,
    messages,
    stream: true,
    ...extra,
  };
}

function expectInvalid(input: unknown, fragment: RegExp): void {
  assert.throws(
    () => parseScript(input),
    (e: unknown) => {
      assert.ok(isAppError(e), 'an AppError');
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.match(e.message, fragment);
      return true;
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Script parsing

test('parseScript normalises shorthand turns, block turns, thinking and usage', () => {
  const s = parseScript({
    turns: [
      { tool: 'Bash', input: { command: 'echo hi > a.txt' } },
      { thinking: 'hmm', text: 'writing', tool: 'Write', input: { file_path: '/w/a', content: 'x' } },
      { blocks: [{ text: 'a' }, { tool: 'Read', input: { file_path: '/w/a' }, id: 'toolu_fixed' }] },
      { text: 'done', usage: { input_tokens: 5, cache_read_input_tokens: 7 } },
      { tool: 'TodoWrite' },
    ],
  });
  assert.deepEqual(s.turns[0], {
    blocks: [{ type: 'tool_use', name: 'Bash', input: { command: 'echo hi > a.txt' } }],
  });
  assert.deepEqual(
    s.turns[1]?.blocks.map((b) => b.type),
    ['thinking', 'text', 'tool_use'],
  );
  assert.deepEqual(s.turns[2]?.blocks[1], {
    type: 'tool_use',
    name: 'Read',
    input: { file_path: '/w/a' },
    id: 'toolu_fixed',
  });
  assert.deepEqual(s.turns[3], {
    blocks: [{ type: 'text', text: 'done' }],
    usage: { input_tokens: 5, cache_read_input_tokens: 7 },
  });
  assert.deepEqual(s.turns[4]?.blocks[0], { type: 'tool_use', name: 'TodoWrite', input: {} });
  assert.equal(s.final, 'Done.');
  // JSON text is accepted too.
  assert.deepEqual(parseScript(JSON.stringify(BASH_SCRIPT)).turns.length, 2);
});

test('parseScript rejects malformed scripts with INVALID_ARGUMENT naming the place', () => {
  expectInvalid('{"turns": [', /not JSON/);
  expectInvalid({}, /turns: Required/);
  expectInvalid({ turns: [{}] }, /turns\.0: a turn needs "text", "tool"/);
  expectInvalid({ turns: [{ tool: 'Bash', input: 'echo hi' }] }, /turns\.0\.input: Expected object/);
  expectInvalid({ turns: [{ text: 'a', bogus: 1 }] }, /Unrecognized key\(s\) in object: 'bogus'/);
  expectInvalid({ turns: [{ text: 'a', input: {} }] }, /"input" and "id" belong to a "tool" turn/);
  expectInvalid({ turns: [{ blocks: [] }] }, /turns\.0\.blocks: a turn needs at least one block/);
  expectInvalid({ turns: [{ tool: '' }] }, /turns\.0\.tool/);
  expectInvalid({ turns: [{ text: 'a', usage: { input_tokens: -1 } }] }, /turns\.0\.usage\.input_tokens/);
});

// ---------------------------------------------------------------------------------------------
// SSE framing

test('a tool_use turn is framed like the API and parses back into the same message', () => {
  const turn = parseScript({
    turns: [
      {
        thinking: 'I will write it',
        text: 'Writing the file now.',
        tool: 'Bash',
        input: { command: 'echo hi > a.txt', description: 'Write hi into a.txt' },
      },
    ],
  }).turns[0]!;
  const message = buildMessage(turn, { model: 'claude-test', inputTokens: 1234 });
  assert.equal(message.stop_reason, 'tool_use');
  assert.match(message.id, /^msg_01[0-9A-Za-z]{22}$/);
  const body = messageEvents(message).map(encodeSseEvent).join('');

  const events = parseSse(body);
  assert.deepEqual(
    events.map((e) => e.event).filter((e, i, a) => e !== a[i - 1]),
    [
      'message_start',
      'ping',
      'content_block_start',
      'content_block_delta',
      'content_block_stop',
      'content_block_start',
      'content_block_delta',
      'content_block_stop',
      'content_block_start',
      'content_block_delta',
      'content_block_stop',
      'message_delta',
      'message_stop',
    ],
  );
  const start = events[0]!.data as { message: ApiMessage & { usage: Record<string, unknown> } };
  assert.deepEqual(start.message.content, []);
  assert.equal(start.message.stop_reason, null);
  assert.equal(start.message.usage.input_tokens, 1234);
  assert.equal(start.message.usage.output_tokens, 1);
  const jsonDeltas = events.filter(
    (e) =>
      e.event === 'content_block_delta' && (e.data.delta as { type: string }).type === 'input_json_delta',
  );
  assert.ok(jsonDeltas.length > 1, 'the tool input is streamed in several partial_json chunks');
  const toolStart = events.find(
    (e) =>
      e.event === 'content_block_start' && (e.data.content_block as { type: string }).type === 'tool_use',
  );
  assert.deepEqual(toolStart?.data.content_block, {
    type: 'tool_use',
    id: message.content[2]!.type === 'tool_use' ? message.content[2]!.id : '',
    name: 'Bash',
    input: {},
  });
  const signature = events.find(
    (e) => (e.data.delta as { type?: string } | undefined)?.type === 'signature_delta',
  );
  assert.ok(signature, 'a thinking block ends with a signature_delta');
  const delta = events.at(-2)!.data as { delta: { stop_reason: string }; usage: { output_tokens: number } };
  assert.equal(delta.delta.stop_reason, 'tool_use');
  assert.equal(delta.usage.output_tokens, message.usage.output_tokens);
  assert.ok(message.usage.output_tokens > 10, 'output tokens grow with the content');

  const back = assembleMessage(events);
  assert.deepEqual(back.content, message.content);
  assert.equal(back.stop_reason, 'tool_use');
  assert.equal(back.usage.output_tokens, message.usage.output_tokens);
  assert.equal(back.usage.input_tokens, 1234);
});

test('a text-only turn ends with end_turn; usage overrides win', () => {
  const turn = parseScript({
    turns: [{ text: 'done', usage: { output_tokens: 99, cache_read_input_tokens: 5 } }],
  }).turns[0]!;
  const m = buildMessage(turn, { model: 'm', inputTokens: 10 });
  assert.equal(m.stop_reason, 'end_turn');
  assert.deepEqual(m.usage, {
    input_tokens: 10,
    output_tokens: 99,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 5,
  });
  assert.deepEqual(assembleMessage(parseSse(messageEvents(m).map(encodeSseEvent).join(''))).content, [
    { type: 'text', text: 'done' },
  ]);
});

// ---------------------------------------------------------------------------------------------
// Request classification (pure)

test('classifyRequest: the turn is the number of assistant messages since the last prompt', () => {
  assert.deepEqual(classifyRequest(mainBody([userPrompt('go'), systemMsg])), { kind: 'main', turn: 0 });
  assert.deepEqual(
    classifyRequest(mainBody([userPrompt('go'), systemMsg, toolUse('t1'), toolResult('t1')])),
    {
      kind: 'main',
      turn: 1,
    },
  );
  // A second prompt (a resumed session) restarts at turn 0, then counts again.
  const history = [userPrompt('go'), toolUse('t1'), toolResult('t1'), assistantText('done')];
  assert.deepEqual(classifyRequest(mainBody([...history, userPrompt('again')])), { kind: 'main', turn: 0 });
  assert.deepEqual(
    classifyRequest(mainBody([...history, userPrompt('again'), toolUse('t2'), toolResult('t2')])),
    { kind: 'main', turn: 1 },
  );
  // A plain string content prompt counts as a prompt as well.
  assert.deepEqual(classifyRequest(mainBody([{ role: 'user', content: 'hi' }])), { kind: 'main', turn: 0 });
});

test('classifyRequest: auxiliary requests are told apart and say why', () => {
  const prompt = [userPrompt('go')];
  const aux = (body: unknown, headers = {}): string => {
    const c = classifyRequest(body, { headers });
    assert.equal(c.kind, 'aux', JSON.stringify(c));
    return c.kind === 'aux' ? c.reason : '';
  };
  assert.match(aux(mainBody(prompt, { tools: undefined })), /no tools/);
  assert.match(aux(mainBody(prompt, { tools: [] })), /no tools/);
  assert.match(aux(mainBody(prompt, { max_tokens: 1 })), /max_tokens 1/);
  assert.match(aux(mainBody(prompt, { tool_choice: { type: 'tool', name: 'Bash' } })), /tool_choice/);
  assert.match(
    aux(mainBody([userPrompt('go'), assistantText('prefill')])),
    /does not end with a user message/,
  );
  assert.match(aux(mainBody([toolResult('t9')])), /no user prompt/);
  assert.match(aux(mainBody(prompt), { [AGENT_ID_HEADER]: 'a1b2' }), /forked helper/);
  assert.match(aux('nope'), /not an object/);
});

test('classifyRequest: sub-agents started by this script, and compaction with its turn marker', () => {
  const prompts = new Set(['Write b.txt please']);
  assert.deepEqual(
    classifyRequest(mainBody([userPrompt('Write b.txt please')]), {
      headers: { [AGENT_ID_HEADER]: 'a1' },
      subagentPrompts: prompts,
    }),
    { kind: 'subagent', turn: 0 },
  );
  // The billing line marks sub-agents too, when a proxy dropped the header.
  const billed = mainBody([userPrompt('Write b.txt please'), toolUse('t'), toolResult('t')], {
    system: [{ type: 'text', text: 'x-anthropic-billing-header: cc_version=2.1.330; cc_is_subagent=true;' }],
  });
  assert.deepEqual(classifyRequest(billed, { subagentPrompts: prompts }), { kind: 'subagent', turn: 1 });

  // Compaction appended to tool results after turn 0: one turn played.
  const compactText =
    'CRITICAL: Respond with TEXT ONLY. Do NOT call any tools.\n\nYour task is to create a detailed summary of the conversation so far';
  const compact = mainBody([
    userPrompt('go'),
    toolUse('t1'),
    {
      role: 'user',
      content: [
        { type: 'tool_result', tool_use_id: 't1', content: 'ok' },
        { type: 'text', text: compactText },
      ],
    },
  ]);
  assert.deepEqual(classifyRequest(compact), { kind: 'compaction', turn: 1 });
  // Compaction as its own user message at the end of a turn.
  assert.deepEqual(
    classifyRequest(
      mainBody([
        userPrompt('go'),
        toolUse('t1'),
        toolResult('t1'),
        assistantText('x'),
        userPrompt(compactText),
      ]),
    ),
    { kind: 'compaction', turn: 2 },
  );
  // The continued conversation starts from the summary and goes on at the marked turn.
  const continued = userPrompt(
    `This session is being continued from a previous conversation.\n\nSummary: ${turnMarker(1)}`,
  );
  assert.deepEqual(classifyRequest(mainBody([continued, systemMsg])), { kind: 'main', turn: 1 });
  assert.deepEqual(classifyRequest(mainBody([continued, toolUse('t2'), toolResult('t2')])), {
    kind: 'main',
    turn: 2,
  });
});

// ---------------------------------------------------------------------------------------------
// The server over HTTP

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

function call(
  model: ScriptedModel,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload =
      body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    const req = request(
      `${model.url}${path}`,
      { method, headers: { 'content-type': 'application/json', ...headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text: Buffer.concat(chunks).toString(),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

async function turnOf(
  model: ScriptedModel,
  body: Record<string, unknown>,
  headers = {},
): Promise<ApiMessage> {
  const a = await call(model, 'POST', '/v1/messages?beta=true', body, headers);
  assert.equal(a.status, 200, a.text);
  if (body.stream === false) return JSON.parse(a.text) as ApiMessage;
  assert.match(String(a.headers['content-type']), /^text\/event-stream/);
  return assembleMessage(parseSse(a.text));
}

test('server: streams the scripted turns, restarts on a new prompt, and aux requests take no turn', async () => {
  const model = await startScriptedModel({ script: BASH_SCRIPT });
  try {
    assert.match(model.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const t0 = await turnOf(model, mainBody([userPrompt('make a.txt'), systemMsg]));
    assert.equal(t0.stop_reason, 'tool_use');
    const use = t0.content[0];
    assert.ok(use?.type === 'tool_use');
    assert.deepEqual(use.input, { command: 'echo hi > a.txt' });
    assert.match(use.id, /^toolu_01/);
    assert.ok(t0.usage.input_tokens > 10, 'input tokens estimated from the request');

    // Auxiliary calls in between (a title, a classifier, a forked helper) answer text and
    // leave the script where it was.
    for (const [body, headers] of [
      [{ model: 'claude-haiku', max_tokens: 512, messages: [userPrompt('title this')], stream: false }, {}],
      [mainBody([userPrompt('classify')], { max_tokens: 64 }), {}],
      [mainBody([userPrompt('suggest a next prompt')]), { [AGENT_ID_HEADER]: 'fork1' }],
    ] as const) {
      const aux = await turnOf(model, body, headers);
      assert.deepEqual(aux.content, [{ type: 'text', text: 'Scripted session' }]);
      assert.equal(aux.stop_reason, 'end_turn');
    }

    const history = [userPrompt('make a.txt'), systemMsg, toolUse(use.id), toolResult(use.id)];
    const t1 = await turnOf(model, mainBody(history));
    assert.deepEqual(t1.content, [{ type: 'text', text: 'done' }]);
    assert.equal(t1.stop_reason, 'end_turn');
    // Past the script: the plain final text.
    const t2 = await turnOf(model, mainBody([...history, assistantText('done'), toolResult('x')]));
    assert.deepEqual(t2.content, [{ type: 'text', text: 'Done.' }]);
    // A new prompt in the same (resumed) conversation plays the script from its first turn.
    const again = await turnOf(model, mainBody([...history, assistantText('done'), userPrompt('again')]));
    assert.equal(again.content[0]?.type, 'tool_use');
    assert.notEqual(again.content[0]?.type === 'tool_use' && again.content[0].id, use.id, 'fresh tool ids');
    // Non-streaming answers the same turn as one JSON message.
    const json = await turnOf(model, mainBody([userPrompt('again')], { stream: false }));
    assert.equal(json.content[0]?.type, 'tool_use');
    assert.equal(json.stop_reason, 'tool_use');

    assert.deepEqual(
      model.requests.map((r) => [r.kind, r.turn ?? null]),
      [
        ['main', 0],
        ['aux', null],
        ['aux', null],
        ['aux', null],
        ['main', 1],
        ['main', 2],
        ['main', 0],
        ['main', 0],
      ],
    );
    assert.equal(model.requests[0]?.path, '/v1/messages');
    assert.equal(model.requests[0]?.query, 'beta=true');
    assert.equal(model.requests[0]?.response?.id, t0.id);
  } finally {
    await model.close();
  }
});

test('server: sub-agents answer their own text, compaction answers a summary that keeps the turn', async () => {
  const model = await startScriptedModel({
    script: {
      turns: [
        {
          tool: 'Agent',
          input: { description: 'delegate', prompt: 'Write b.txt please', subagent_type: 'general-purpose' },
        },
        { text: 'main done' },
      ],
      subagent: 'sub done',
    },
  });
  try {
    const t0 = await turnOf(model, mainBody([userPrompt('delegate it')]));
    assert.equal(t0.content[0]?.type, 'tool_use');
    const sub = await turnOf(model, mainBody([userPrompt('Write b.txt please')]), {
      [AGENT_ID_HEADER]: 'ag1',
    });
    assert.deepEqual(sub.content, [{ type: 'text', text: 'sub done' }]);
    const id = t0.content[0]?.type === 'tool_use' ? t0.content[0].id : '';
    const compact = await turnOf(
      model,
      mainBody([
        userPrompt('delegate it'),
        toolUse(id),
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: id, content: 'ok' },
            { type: 'text', text: 'CRITICAL: Respond with TEXT ONLY. Do NOT call any tools.' },
          ],
        },
      ]),
    );
    const summary = compact.content[0]?.type === 'text' ? compact.content[0].text : '';
    assert.match(summary, /<summary>[^]*\[scripted-model turn=1\][^]*<\/summary>/);
    const after = await turnOf(model, mainBody([userPrompt(`This session is being continued.\n${summary}`)]));
    assert.deepEqual(after.content, [{ type: 'text', text: 'main done' }]);
    assert.deepEqual(
      model.requests.map((r) => r.kind),
      ['main', 'subagent', 'compaction', 'main'],
    );
  } finally {
    await model.close();
  }
});

test('server: side endpoints, bad requests and unknown paths answer without crashing; setScript', async () => {
  const model = await startScriptedModel({ script: BASH_SCRIPT });
  try {
    const count = await call(
      model,
      'POST',
      '/v1/messages/count_tokens?beta=true',
      mainBody([userPrompt('go')]),
    );
    assert.equal(count.status, 200);
    assert.ok((JSON.parse(count.text) as { input_tokens: number }).input_tokens > 10);
    const models = await call(model, 'GET', '/v1/models');
    assert.equal(models.status, 200);
    assert.equal((JSON.parse(models.text) as { data: unknown[] }).data.length, 1);
    assert.equal((await call(model, 'GET', '/v1/models/claude-x')).status, 200);
    assert.equal((await call(model, 'HEAD', '/api/hello')).status, 200);

    const unknown = await call(model, 'POST', '/v1/nope', {});
    assert.equal(unknown.status, 404);
    assert.deepEqual((JSON.parse(unknown.text) as { error: { type: string } }).error.type, 'not_found_error');
    const bad = await call(model, 'POST', '/v1/messages', Buffer.from('{not json'));
    assert.equal(bad.status, 400);
    assert.equal((JSON.parse(bad.text) as { type: string }).type, 'error');

    // A gzip-compressed request body is read like a plain one.
    const gz = await call(
      model,
      'POST',
      '/v1/messages',
      gzipSync(JSON.stringify(mainBody([userPrompt('go')], { stream: false }))),
      {
        'content-encoding': 'gzip',
      },
    );
    assert.equal(gz.status, 200, gz.text);
    assert.equal((JSON.parse(gz.text) as ApiMessage).stop_reason, 'tool_use');

    model.setScript('{"turns":[{"text":"replaced"}]}');
    assert.deepEqual((await turnOf(model, mainBody([userPrompt('go')]))).content, [
      { type: 'text', text: 'replaced' },
    ]);
    assert.throws(() => model.setScript({ turns: 'no' } as never), /INVALID|invalid script/);
    assert.deepEqual(
      model.requests.map((r) => r.kind),
      ['count_tokens', 'models', 'models', 'hello', 'unknown', 'unknown', 'main', 'main'],
    );
  } finally {
    await model.close();
    await model.close(); // idempotent
  }
});

test('server: a delayed turn is dropped when the client goes away, and the server keeps serving', async () => {
  const model = await startScriptedModel({ script: { turns: [{ text: 'slow', delayMs: 30_000 }] } });
  try {
    const ac = new AbortController();
    const started = Date.now();
    const pending = fetch(`${model.url}/v1/messages`, {
      method: 'POST',
      body: JSON.stringify(mainBody([userPrompt('go')])),
      signal: ac.signal,
    });
    setTimeout(() => ac.abort(), 200);
    await assert.rejects(pending, /abort/i);
    assert.ok(Date.now() - started < 5_000);
    model.setScript({ turns: [{ text: 'fast' }] });
    assert.deepEqual((await turnOf(model, mainBody([userPrompt('go')]))).content, [
      { type: 'text', text: 'fast' },
    ]);
  } finally {
    await model.close();
  }
});

test('startScriptedModel refuses an invalid script before listening', async () => {
  await assert.rejects(
    startScriptedModel({ script: { turns: [{ tool: 'Bash', input: 3 }] } as never }),
    (e: unknown) => {
      assert.ok(isAppError(e));
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.match(e.message, /turns\.0\.input/);
      return true;
    },
  );
});
