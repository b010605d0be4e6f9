import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatBytes,
  formatDuration,
  readSseEvents,
  renderEvent,
  summarizeToolInput,
  TOOL_OUTPUT_MAX_LINES,
} from '../../src/event-render.js';
import type { SseEvent } from '../../src/event-render.js';

const plain = { color: false };
const render = (event: string, data: Record<string, unknown>): string | undefined =>
  renderEvent({ event, data }, plain);

test('init shows the model, the tool count and the Claude Code version on one line', () => {
  const s = render('init', {
    session_id: 's1',
    model: 'claude-sonnet-4-5',
    tools: ['Bash', 'Write', 'Read'],
    claude_code_version: '2.1.330',
  });
  assert.equal(s, '· session started (model claude-sonnet-4-5, 3 tools, Claude Code 2.1.330)');
  assert.equal(render('init', {}), '· session started');
});

test('title, thinking (also redacted and empty) and assistant text', () => {
  assert.equal(render('title', { title: 'Fibonacci in Python' }), '· title: Fibonacci in Python');
  assert.equal(render('thinking', { text: 'first line\nsecond line' }), '✻ first line (+1 lines)');
  assert.equal(render('thinking', { text: '', redacted: true }), '✻ (thinking redacted)');
  assert.equal(render('thinking', { text: '' }), '✻ thinking…');
  assert.equal(render('assistant', { text: 'The answer is 42.\n\n' }), 'The answer is 42.');
  assert.equal(render('assistant', { text: 'two\nlines' }), 'two\nlines');
  assert.equal(render('assistant', { text: 'x', error: 'rate_limit' }), 'x [rate_limit]');
});

test('tool calls summarize their input by tool', () => {
  assert.equal(
    render('tool_call', { id: 't1', name: 'Bash', input: { command: 'python3 fib.py', description: 'Run' } }),
    '▶ Bash $ python3 fib.py',
  );
  assert.equal(
    render('tool_call', {
      id: 't2',
      name: 'Write',
      input: { file_path: '/workspace/fib.py', content: 'a\nb\n' },
    }),
    '▶ Write /workspace/fib.py (2 lines, 4 B)',
  );
  assert.equal(
    render('tool_call', { name: 'Read', input: { file_path: '/workspace/x' } }),
    '▶ Read /workspace/x',
  );
  assert.equal(
    render('tool_call', { name: 'Grep', input: { pattern: 'TODO', path: 'src' } }),
    '▶ Grep TODO in src',
  );
  assert.equal(render('tool_call', { name: 'TodoWrite', input: { todos: [{}, {}] } }), '▶ TodoWrite 2 items');
  assert.equal(render('tool_call', { name: 'mcp__x__y', input: { a: 1 } }), '▶ mcp__x__y {"a":1}');
  assert.equal(render('tool_call', { name: 'NoInput', input: {} }), '▶ NoInput');
  // a multi-line command shows its first line and how many more there are
  assert.equal(summarizeToolInput('Bash', { command: 'cd x\nmake\nmake test' }), '$ cd x (+2 lines)');
  // a very long argument is cut
  const long = summarizeToolInput('Bash', { command: 'x'.repeat(500) });
  assert.ok(long.length < 200 && long.endsWith('…'), long);
});

test('a sub-agent tool call is marked as nested', () => {
  const s = render('tool_call', { name: 'Bash', input: { command: 'ls' }, parent_tool_use_id: 'toolu_1' });
  assert.equal(s, '  ↳ ▶ Bash $ ls');
});

test('tool output is indented and cut after TOOL_OUTPUT_MAX_LINES lines; errors say so', () => {
  assert.equal(
    render('tool_result', { id: 't', output: '0 1 1 2 3 5 8 13 21 34\n', is_error: false }),
    '    0 1 1 2 3 5 8 13 21 34',
  );
  assert.equal(render('tool_result', { id: 't', output: '', is_error: false }), '    (no output)');
  const many = Array.from({ length: 40 }, (_, i) => `line ${i}`).join('\n');
  const lines = render('tool_result', { id: 't', output: many, is_error: false })!.split('\n');
  assert.equal(lines.length, TOOL_OUTPUT_MAX_LINES + 1);
  assert.equal(lines[0], '    line 0');
  assert.equal(lines.at(-1), `    … ${40 - TOOL_OUTPUT_MAX_LINES} more lines`);
  const err = render('tool_result', { id: 't', output: 'No such file', is_error: true })!;
  assert.equal(err, '  ✗ tool error:\n    No such file');
  const cut = render('tool_result', { id: 't', output: 'x', is_error: false, truncated: true })!;
  assert.match(cut, /output truncated by hako/);
});

test('sub-agents start and end', () => {
  assert.equal(
    render('subagent_start', { id: 't', subagent_type: 'general-purpose', description: 'search the code' }),
    '⇢ subagent general-purpose started: search the code',
  );
  assert.equal(
    render('subagent_end', { id: 't', subagent_type: 'Explore', is_error: false }),
    '⇠ subagent Explore finished',
  );
  assert.equal(
    render('subagent_end', { id: 't', subagent_type: 'Explore', is_error: true }),
    '⇠ subagent Explore failed',
  );
});

test('progress steps are short', () => {
  assert.equal(render('progress', { step: 'sandbox', status: 'started' }), '· sandbox…');
  assert.equal(
    render('progress', { step: 'sandbox', status: 'done', node: 'local', sandbox_id: 'x', created: true }),
    '· sandbox done (new, node local)',
  );
  assert.equal(
    render('progress', { step: 'workspace_restore', status: 'done', files: 3, bytes: 2048 }),
    '· workspace restore done (3 files, 2.0 KiB)',
  );
  assert.equal(
    render('progress', { step: 'workspace_sync', status: 'done', uploaded: 1, deleted: 0, unchanged: 2 }),
    '· workspace sync done (1 uploaded, 0 deleted, 2 unchanged)',
  );
  assert.equal(
    render('progress', { step: 'workspace_sync', status: 'pending', uploaded: 0 }),
    '· workspace sync pending (0 uploaded)',
  );
  assert.equal(render('progress', { step: 'image_pull', status: 'started' }), '· image pull…');
});

test('ping and context_status are hidden', () => {
  assert.equal(render('ping', {}), undefined);
  assert.equal(render('context_status', { tokens_used: 100, limit: 200000 }), undefined);
});

test('errors show their code, message and reason', () => {
  assert.equal(
    render('error', { code: 'RUN_CANCELLED', message: 'the run was cancelled', reason: 'client' }),
    '✗ error [RUN_CANCELLED] the run was cancelled (client)',
  );
  assert.equal(render('error', {}), '✗ error [ERROR] ');
});

test('done shows status, turns, tokens, cost and duration; a failure shows its code', () => {
  const ok = render('done', {
    status: 'completed',
    is_error: false,
    usage: {
      input_tokens: 1200,
      output_tokens: 345,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 800,
    },
    cost_usd: 0.01234,
    turn_count: 3,
    duration_ms: 4200,
  });
  assert.equal(ok, '✓ completed · 3 turns · 2,000 in / 345 out tokens · $0.0123 · 4.2 s');
  const failed = render('done', {
    status: 'failed',
    is_error: true,
    error_code: 'AGENT_FAILED',
    turn_count: 1,
  });
  assert.equal(failed, '✗ failed [AGENT_FAILED] · 1 turn');
  const nested = render('done', { status: 'failed', error: { code: 'NO_HEALTHY_NODE', message: 'x' } });
  assert.equal(nested, '✗ failed [NO_HEALTHY_NODE]');
  assert.equal(render('done', { status: 'cancelled', is_error: true }), '✗ cancelled');
});

test('an unknown event shows its name and data', () => {
  assert.equal(render('surprise', { a: 1 }), '· surprise: {"a":1}');
});

test('color: ANSI codes only when asked, and the text is the same without them', () => {
  const events: [string, Record<string, unknown>][] = [
    ['tool_call', { name: 'Bash', input: { command: 'ls' } }],
    ['tool_result', { output: 'a', is_error: true }],
    ['done', { status: 'completed', turn_count: 1 }],
    ['error', { code: 'X', message: 'y' }],
  ];
  for (const [event, data] of events) {
    const colored = renderEvent({ event, data }, { color: true })!;
    const bare = renderEvent({ event, data }, plain)!;
    assert.match(colored, /\x1b\[\d+m/);
    assert.doesNotMatch(bare, /\x1b/);
    assert.equal(colored.replace(/\x1b\[\d+m/g, ''), bare);
  }
});

test('odd data never throws', () => {
  for (const event of [
    'init',
    'tool_call',
    'tool_result',
    'progress',
    'done',
    'error',
    'assistant',
    'thinking',
  ]) {
    assert.equal(
      typeof renderEvent({ event, data: { text: 5, input: 'x', usage: 'y', output: { a: 1 } } }, plain),
      'string',
    );
  }
});

test('formatBytes and formatDuration', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1023), '1023 B');
  assert.equal(formatBytes(1536), '1.5 KiB');
  assert.equal(formatBytes(128 * 2 ** 20), '128 MiB');
  assert.equal(formatDuration(850), '850 ms');
  assert.equal(formatDuration(4210), '4.2 s');
  assert.equal(formatDuration(185_000), '3m 05s');
});

async function* chunks(parts: (string | Uint8Array)[]): AsyncIterable<Uint8Array> {
  const enc = new TextEncoder();
  for (const p of parts) {
    await Promise.resolve(); // one chunk per tick, as a socket delivers them
    yield typeof p === 'string' ? enc.encode(p) : p;
  }
}

async function collect(parts: (string | Uint8Array)[]): Promise<SseEvent[]> {
  const out: SseEvent[] = [];
  for await (const ev of readSseEvents(chunks(parts))) out.push(ev);
  return out;
}

test('readSseEvents: hako frames, split anywhere, with comments', async () => {
  const frames =
    ': hako\n\n' +
    'id: 1\nevent: title\ndata: {"title":"t","seq":1}\n\n' +
    'id: 2\nevent: done\ndata: {"status":"completed","seq":2}\n\n';
  // every split point gives the same events
  for (let i = 0; i <= frames.length; i++) {
    const evs = await collect([frames.slice(0, i), frames.slice(i)]);
    assert.deepEqual(evs, [
      { id: '1', event: 'title', data: { title: 't', seq: 1 } },
      { id: '2', event: 'done', data: { status: 'completed', seq: 2 } },
    ]);
  }
});

test('readSseEvents: CRLF and CR line ends, a CRLF split across chunks', async () => {
  const evs = await collect([
    'id: 7\r\nevent: a\r',
    '\ndata: {"x":1}\r\n\r',
    '\nevent: b\rdata: {"y":2}\r\r',
  ]);
  assert.deepEqual(evs, [
    { id: '7', event: 'a', data: { x: 1 } },
    { id: '7', event: 'b', data: { y: 2 } },
  ]);
});

test('readSseEvents: multi-line data, no space after the colon, default event, non-JSON data', async () => {
  const evs = await collect(['data:{"a":\ndata: 1}\n\n', 'data: hello\n\n', 'data: [1,2]\n\n']);
  assert.deepEqual(evs, [
    { id: undefined, event: 'message', data: { a: 1 } },
    { id: undefined, event: 'message', data: { text: 'hello' } },
    { id: undefined, event: 'message', data: { value: [1, 2] } },
  ]);
});

test('readSseEvents: an event without data is not dispatched; an unterminated last event is dropped', async () => {
  const evs = await collect(['event: empty\n\n', 'retry: 1000\n\n', 'event: half\ndata: {"a":1}\n']);
  assert.deepEqual(evs, []);
});

test('readSseEvents: a UTF-8 character split across chunks', async () => {
  const bytes = new TextEncoder().encode('data: {"t":"✓ done"}\n\n');
  const at = bytes.indexOf(0xe2) + 1; // inside the 3-byte check mark
  const evs = await collect([bytes.slice(0, at), bytes.slice(at)]);
  assert.deepEqual(evs, [{ id: undefined, event: 'message', data: { t: '✓ done' } }]);
});
