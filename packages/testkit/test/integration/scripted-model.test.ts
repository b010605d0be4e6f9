// The real Claude Code binary (the SDK's bundled one) against the scripted model, offline:
// every request goes to 127.0.0.1. Set HAKO_UPDATE_FIXTURES=1 to rewrite
// fixtures/sdk-messages-bash.json from a fresh run (then `npx prettier --write` it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SDKMessage } from '@anthropic-ai/claude-agent-sdk';
import { runDirect, startScriptedModel } from '../../src/index.js';
import type { RecordedRequest } from '../../src/index.js';

const FIXTURE = fileURLToPath(new URL('../../fixtures/sdk-messages-bash.json', import.meta.url));
const CANONICAL = { turns: [{ tool: 'Bash', input: { command: 'echo hi > a.txt' } }, { text: 'done' }] };

async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'hako-sm-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

type Block = { type: string; [k: string]: unknown };

function blocks(messages: SDKMessage[], type: 'assistant' | 'user'): Block[] {
  return messages.flatMap((m) =>
    m.type === type && Array.isArray(m.message.content) ? (m.message.content as unknown as Block[]) : [],
  );
}

/** The final text of a successful run (undefined for an error result or none). */
function finalText(messages: SDKMessage[]): string | undefined {
  const r = messages.filter((m) => m.type === 'result').at(-1);
  return r?.subtype === 'success' ? r.result : undefined;
}

function kinds(requests: readonly RecordedRequest[]): string[] {
  return requests.filter((r) => r.path === '/v1/messages').map((r) => `${r.kind}${r.turn ?? ''}`);
}

/** The tool_result text, whether Claude Code sent a string or text blocks. */
function resultText(b: Block | undefined): string {
  const c = b?.content;
  if (typeof c === 'string') return c;
  if (Array.isArray(c)) return (c as { text?: string }[]).map((x) => x.text ?? '').join('');
  return '';
}

test('the real SDK plays a Bash turn and a text turn; a resumed prompt restarts the script and sees the file', async (t) => {
  await withTempDir(async (cwd) => {
    const model = await startScriptedModel({
      script: {
        turns: [{ tool: 'Bash', input: { command: 'echo hi >> a.txt && cat a.txt' } }, { text: 'done' }],
      },
    });
    try {
      const first = await runDirect({ prompt: 'write hi into a.txt', cwd, modelUrl: model.url });
      t.diagnostic(`first session: ${first.durationMs} ms`);
      assert.equal(await readFile(join(cwd, 'a.txt'), 'utf8'), 'hi\n');

      const m = first.messages;
      const init = m.find((x) => x.type === 'system' && x.subtype === 'init');
      assert.ok(init && init.type === 'system' && init.subtype === 'init', 'a system init message');
      assert.equal(init.cwd, cwd);
      assert.ok(init.tools.includes('Bash'));
      assert.equal(init.permissionMode, 'bypassPermissions');
      const uses = blocks(m, 'assistant').filter((b) => b.type === 'tool_use');
      assert.equal(uses.length, 1);
      assert.equal(uses[0]?.name, 'Bash');
      assert.deepEqual(uses[0]?.input, { command: 'echo hi >> a.txt && cat a.txt' });
      const results = blocks(m, 'user').filter((b) => b.type === 'tool_result');
      assert.equal(results.length, 1);
      assert.equal(results[0]?.tool_use_id, uses[0]?.id);
      assert.equal(results[0]?.is_error, false);
      assert.equal(resultText(results[0]).trim(), 'hi');
      assert.deepEqual(
        blocks(m, 'assistant').filter((b) => b.type === 'text'),
        [{ type: 'text', text: 'done' }],
      );
      const result = first.result;
      assert.ok(result && result.subtype === 'success', JSON.stringify(result));
      assert.equal(result.is_error, false);
      assert.equal(result.result, 'done');
      assert.equal(result.num_turns, 2);
      assert.ok(result.usage.input_tokens > 1000, `input tokens ${result.usage.input_tokens}`);
      assert.ok(result.usage.output_tokens > 0);
      assert.equal(result.usage.cache_read_input_tokens, 0);
      assert.equal(m.at(-1), result, 'the result comes last');
      assert.deepEqual(kinds(model.requests), ['main0', 'main1']);
      // Claude Code kept its session in the run's config dir, not in the real home.
      const projects = await readdir(join(cwd, '.hako', 'claude', 'projects'));
      assert.equal(projects.length, 1);
      assert.ok(
        existsSync(join(cwd, '.hako', 'claude', 'projects', projects[0] ?? '', `${first.sessionId}.jsonl`)),
      );

      const second = await runDirect({
        prompt: 'again',
        cwd,
        modelUrl: model.url,
        resume: first.sessionId,
      });
      t.diagnostic(`resumed session: ${second.durationMs} ms`);
      assert.equal(second.sessionId, first.sessionId);
      assert.equal(second.result?.subtype, 'success');
      assert.equal(finalText(second.messages), 'done');
      // The script started over at its Bash turn, which found the first run's file.
      const results2 = blocks(second.messages, 'user').filter((b) => b.type === 'tool_result');
      assert.equal(resultText(results2[0]).trim(), 'hi\nhi');
      assert.equal(await readFile(join(cwd, 'a.txt'), 'utf8'), 'hi\nhi\n');
      assert.deepEqual(kinds(model.requests), ['main0', 'main1', 'main0', 'main1']);
      const resumed = model.requests.filter((r) => r.path === '/v1/messages')[2]?.body as {
        messages: unknown[];
      };
      assert.ok(resumed.messages.length > 4, 'the resumed request carries the first prompt history');
    } finally {
      await model.close();
    }
  });
});

test('auto-compaction, a real auxiliary request, takes no turn and the script goes on after it', async (t) => {
  await withTempDir(async (cwd) => {
    // A turn that reports a nearly full context window makes Claude Code compact before the
    // next turn: a fork of the main request that asks for a summary.
    const run = await runDirect({
      prompt: 'write hi',
      cwd,
      script: {
        turns: [
          { tool: 'Bash', input: { command: 'echo hi >> a.txt' }, usage: { input_tokens: 990_000 } },
          { text: 'done' },
        ],
      },
    });
    t.diagnostic(`compacting session: ${run.durationMs} ms`);
    assert.deepEqual(kinds(run.requests ?? []), ['main0', 'compaction1', 'main1']);
    assert.equal(await readFile(join(cwd, 'a.txt'), 'utf8'), 'hi\n', 'the Bash turn ran once');
    assert.ok(run.messages.some((m) => m.type === 'system' && m.subtype === 'compact_boundary'));
    assert.equal(run.result?.subtype, 'success');
    assert.equal(finalText(run.messages), 'done');
  });
});

test('a sub-agent started by an Agent turn answers its own text and does not replay the script', async (t) => {
  await withTempDir(async (cwd) => {
    const run = await runDirect({
      prompt: 'delegate',
      cwd,
      script: {
        turns: [
          {
            thinking: 'I will delegate this.',
            tool: 'Agent',
            input: {
              description: 'Write a file',
              prompt: 'Write b.txt please',
              subagent_type: 'general-purpose',
              run_in_background: false,
            },
          },
          { text: 'done' },
        ],
        subagent: 'b.txt is written.',
      },
    });
    t.diagnostic(`sub-agent session: ${run.durationMs} ms`);
    assert.deepEqual(kinds(run.requests ?? []), ['main0', 'subagent0', 'main1']);
    assert.ok(
      blocks(run.messages, 'assistant').some((b) => b.type === 'thinking'),
      'the thinking block arrives',
    );
    const handBack = blocks(run.messages, 'user').find((b) => b.type === 'tool_result');
    assert.match(resultText(handBack), /b\.txt is written\./);
    assert.equal(finalText(run.messages), 'done');
  });
});

test('the recorded SDK messages fixture matches a fresh run of the canonical script', async () => {
  await withTempDir(async (cwd) => {
    const run = await runDirect({ prompt: 'Write hi into a.txt, then say done.', cwd, script: CANONICAL });
    assert.equal(await readFile(join(cwd, 'a.txt'), 'utf8'), 'hi\n');
    // Machine-specific temp paths become hako's own workspace path.
    // (Claude Code also names the project directory after the cwd: /tmp/x → -tmp-x.)
    const text = JSON.stringify(run.messages)
      .split(cwd)
      .join('/workspace')
      .split(cwd.replace(/[^A-Za-z0-9]/g, '-'))
      .join('-workspace');
    const portable = JSON.parse(text) as SDKMessage[];
    if (process.env.HAKO_UPDATE_FIXTURES === '1') {
      await writeFile(FIXTURE, `${JSON.stringify(portable, null, 2)}\n`);
    }
    const fixture = JSON.parse(await readFile(FIXTURE, 'utf8')) as SDKMessage[];
    const shape = (ms: SDKMessage[]): string[] =>
      ms.map((m) => {
        const sub = 'subtype' in m ? `:${String(m.subtype)}` : '';
        const content =
          (m.type === 'assistant' || m.type === 'user') && Array.isArray(m.message.content)
            ? `[${(m.message.content as unknown as Block[]).map((b) => b.type).join(',')}]`
            : '';
        return `${m.type}${sub}${content}`;
      });
    assert.deepEqual(shape(fixture), shape(portable));
    assert.doesNotMatch(JSON.stringify(fixture), /hako-sm-/, 'no temp paths in the fixture');
  });
});
