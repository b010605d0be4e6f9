import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  DEMO_ANSWER,
  DEMO_FILE,
  DEMO_OUTPUT,
  DEMO_PROGRAM,
  DEMO_PROMPT,
  DEMO_SCRIPT,
  parseScript,
  startScriptedModel,
} from '@hako/testkit';

test('the demo script is a valid scripted-model script: Write fib.py, run it, answer', () => {
  const script = parseScript(DEMO_SCRIPT);
  assert.equal(script.turns.length, 3);
  const tools = script.turns.map((t) => t.blocks.find((b) => b.type === 'tool_use'));
  assert.equal(tools[0]?.type === 'tool_use' && tools[0].name, 'Write');
  assert.deepEqual(tools[0]?.type === 'tool_use' && tools[0].input, {
    file_path: `/workspace/${DEMO_FILE}`,
    content: DEMO_PROGRAM,
  });
  assert.equal(tools[1]?.type === 'tool_use' && tools[1].name, 'Bash');
  assert.equal(tools[1]?.type === 'tool_use' && tools[1].input.command, `python3 ${DEMO_FILE}`);
  assert.equal(tools[2], undefined);
  assert.deepEqual(script.turns[2]?.blocks, [{ type: 'text', text: DEMO_ANSWER }]);
  assert.ok(DEMO_ANSWER.includes(DEMO_OUTPUT));
  assert.ok(DEMO_PROMPT.includes(DEMO_FILE));
  // it survives JSON, as HAKO_MODEL_SCRIPT files do
  assert.deepEqual(parseScript(JSON.stringify(DEMO_SCRIPT)), script);
});

test('the demo program prints the first 10 Fibonacci numbers', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'hako-demo-script-'));
  try {
    await writeFile(join(dir, DEMO_FILE), DEMO_PROGRAM);
    const { stdout } = await promisify(execFile)('python3', [DEMO_FILE], { cwd: dir });
    assert.equal(stdout, `${DEMO_OUTPUT}\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('the scripted model plays it: a Write tool use first', async () => {
  const model = await startScriptedModel({ script: DEMO_SCRIPT });
  try {
    const res = await fetch(`${model.url}/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': 'k', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({
        model: 'claude-x',
        max_tokens: 128000,
        messages: [{ role: 'user', content: DEMO_PROMPT }],
        tools: [{ name: 'Write', input_schema: { type: 'object' } }],
      }),
    });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { content: { type: string; name?: string; input?: unknown }[] };
    const tool = body.content.find((b) => b.type === 'tool_use');
    assert.equal(tool?.name, 'Write');
    assert.deepEqual(tool?.input, { file_path: `/workspace/${DEMO_FILE}`, content: DEMO_PROGRAM });
  } finally {
    await model.close();
  }
});
