// Models whose provider is `bedrock` run on Bedrock, end to end: the whole stack with hakod's
// bedrock upstream pointed at the scripted model's Bedrock mode (loopback), which answers only
// requests SigV4-signed with the credentials hakod holds (checked by an independent verifier). A
// real Claude Code session runs in the conversation's sandbox with CLAUDE_CODE_USE_BEDROCK and
// asks for the registered model id; the AWS secret never enters the sandbox. Switching the
// conversation to an anthropic model replaces the sandbox (its upstream is fixed at creation)
// and the new one restores the workspace from S3.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { parseSse, startStack } from '../helpers/stack.js';
import type { Stack } from '../helpers/stack.js';
import { callApi as call } from '../helpers/http-call.js';
import { SONNET_MODEL } from '../helpers/models.js';

const SMALL_DISK = 128 * 2 ** 20;
const BEDROCK_MODEL = {
  id: 'eu.anthropic.claude-sonnet-4-5-20250929-v1:0',
  display_name: 'Claude Sonnet 4.5 on Bedrock',
  provider: 'bedrock',
  prices: { input: 3.3, output: 16.5, cache_creation: 4.125, cache_read: 0.33 },
};
const ANTHROPIC_MODEL = SONNET_MODEL;

const bedrockScript = {
  turns: [
    {
      tool: 'Bash',
      input: {
        command: "echo from-bedrock > b.txt; env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'",
      },
      usage: {
        input_tokens: 1500,
        output_tokens: 40,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
      },
    },
    { text: 'ran on bedrock' },
  ],
};
const anthropicScript = {
  turns: [{ tool: 'Bash', input: { command: 'cat b.txt; env' } }, { text: 'ran on anthropic' }],
};

let stack: Stack | undefined;
const S = (): Stack => {
  if (!stack) throw new Error('the stack did not start');
  return stack;
};

before(async () => {
  stack = await startStack({ apiProcesses: 1, script: bedrockScript, bedrock: true });
});

after(async () => {
  await stack?.close();
});

function toolOutputs(events: ReturnType<typeof parseSse>): string {
  return events
    .filter((e) => e.event === 'tool_result')
    .map((e) => String(e.data.output))
    .join('\n');
}

function sandboxDone(events: ReturnType<typeof parseSse>): Record<string, unknown> {
  const p = events.find(
    (e) => e.event === 'progress' && e.data.step === 'sandbox' && e.data.status === 'done',
  );
  assert.ok(p, 'a sandbox progress event');
  return p.data;
}

test('a bedrock model runs through hakod’s bedrock upstream: signed requests, usage, no AWS secret in the sandbox', async () => {
  const s = S();
  const creds = s.bedrock!;
  const api = s.apis[0]!.url;
  const admin = s.adminToken;
  for (const m of [BEDROCK_MODEL, ANTHROPIC_MODEL]) {
    const r = await call(api, admin, 'POST', '/v1/models', m);
    assert.equal(r.status, 201, r.text);
  }
  const t = await call(api, admin, 'POST', '/v1/tenants', {
    name: 'bedrock-e2e',
    settings: { model: BEDROCK_MODEL.id, limits: { disk_bytes: SMALL_DISK } },
  });
  assert.equal(t.status, 201, t.text);
  const key = String((await call(api, admin, 'POST', `/v1/tenants/${String(t.json.id)}/api-keys`)).json.key);
  const conv = await call(api, key, 'POST', '/v1/conversations', {});
  assert.equal(conv.status, 201, conv.text);
  const id = String(conv.json.id);

  const r1 = await call(api, key, 'POST', `/v1/conversations/${id}/execute`, { prompt: 'run on bedrock' });
  assert.equal(r1.status, 200, r1.text);
  const events = parseSse(r1.text);
  const done = events.at(-1)!;
  assert.equal(done.event, 'done');
  assert.equal(done.data.status, 'completed', JSON.stringify(done.data));
  assert.equal(done.data.result, 'ran on bedrock');
  const usage = done.data.usage as Record<string, number>;
  assert.ok((usage.input_tokens ?? 0) >= 1500 && (usage.output_tokens ?? 0) > 0, JSON.stringify(usage));
  assert.equal(events.find((e) => e.event === 'tool_call')?.data.name, 'Bash');

  // Every model call went to the Bedrock runtime, signed by hakod with the real credentials, and
  // the conversation's turns asked for the registered model id; none went to the Anthropic API.
  const seen = s.model.requests;
  assert.equal(seen.filter((r) => r.path.startsWith('/v1/')).length, 0, 'no Anthropic API request');
  const invocations = seen.filter((r) => r.bedrock?.modelId !== undefined);
  const unsigned = seen.filter((r) => r.kind === 'unsigned').map((r) => `${r.path}: ${r.bedrock?.signature}`);
  assert.deepEqual(unsigned, [], 'every Bedrock request was correctly signed');
  assert.ok(invocations.every((r) => r.bedrock?.signature === 'ok'));
  const main = invocations.filter((r) => r.kind === 'main');
  assert.ok(main.length >= 2, `main turns: ${invocations.map((r) => `${r.kind} ${r.path}`).join(', ')}`);
  for (const r of main) {
    assert.equal(r.bedrock?.modelId, BEDROCK_MODEL.id);
    assert.equal(r.path, `/model/${BEDROCK_MODEL.id}/invoke-with-response-stream`);
    assert.match(
      String(r.headers.authorization),
      new RegExp(`Credential=${creds.accessKeyId}/\\d{8}/${creds.region}/bedrock/`),
    );
    assert.equal(r.headers['x-amz-security-token'], creds.sessionToken);
  }

  // The sandbox runs Claude Code in Bedrock mode against the proxy, holding no AWS secret.
  const dump = toolOutputs(events);
  assert.match(dump, /CLAUDE_CODE_USE_BEDROCK=1/);
  assert.match(dump, /ANTHROPIC_BEDROCK_BASE_URL=http:\/\/[^\s]+\/_hako\/upstream\/bedrock/);
  assert.match(dump, /CLAUDE_CODE_SKIP_BEDROCK_AUTH=1/);
  assert.match(dump, /CLAUDE_CODE_ENTRYPOINT=/, "Claude Code's own environ was read");
  assert.doesNotMatch(
    dump,
    /ANTHROPIC_BASE_URL=|ANTHROPIC_API_KEY=/,
    'no anthropic upstream in a bedrock sandbox',
  );
  assert.doesNotMatch(dump, /AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|AWS_ACCESS_KEY_ID/);
  for (const secret of [
    creds.secretAccessKey,
    creds.sessionToken!,
    creds.accessKeyId,
    s.modelKey,
    ...Object.values(s.apiSecrets),
  ]) {
    assert.ok(!dump.includes(secret), `a secret reached the sandbox: ${secret.slice(0, 10)}…`);
  }
  const first = sandboxDone(events);
  assert.equal(first.created, true);

  // The run is recorded with the bedrock model.
  const usageList = await call(api, key, 'GET', `/v1/usage?conversation_id=${id}`);
  assert.equal(usageList.status, 200, usageList.text);
  const records = usageList.json.usage as Record<string, unknown>[] | undefined;
  assert.ok(
    records?.some((u) => u.model_id === BEDROCK_MODEL.id),
    usageList.text,
  );

  // Switching the conversation to an anthropic model: the bedrock sandbox cannot serve it, so a
  // new sandbox with the anthropic upstream is created and the workspace comes back from S3.
  const patched = await call(api, key, 'PATCH', `/v1/conversations/${id}`, { model_id: ANTHROPIC_MODEL.id });
  assert.equal(patched.status, 200, patched.text);
  s.model.setScript(anthropicScript);
  const before = s.model.requests.length;
  const r2 = await call(api, key, 'POST', `/v1/conversations/${id}/execute`, { prompt: 'now on anthropic' });
  assert.equal(r2.status, 200, r2.text);
  const events2 = parseSse(r2.text);
  const done2 = events2.at(-1)!;
  assert.equal(done2.data.status, 'completed', JSON.stringify(done2.data));
  assert.equal(done2.data.result, 'ran on anthropic');
  const second = sandboxDone(events2);
  assert.equal(second.created, true, 'a new sandbox for the other provider');
  assert.notEqual(second.sandbox_id, first.sandbox_id);
  assert.ok(events2.some((e) => e.event === 'progress' && e.data.step === 'workspace_restore'));
  const dump2 = toolOutputs(events2);
  assert.match(dump2, /from-bedrock/, 'the workspace was restored into the new sandbox');
  assert.match(dump2, /ANTHROPIC_BASE_URL=/);
  assert.doesNotMatch(dump2, /CLAUDE_CODE_USE_BEDROCK/);
  const later = s.model.requests.slice(before);
  assert.ok(later.length > 0);
  assert.ok(later.every((r) => r.bedrock === undefined && r.headers['x-api-key'] === s.modelKey));
  assert.ok(
    later.some((r) => r.kind === 'main' && (r.body as { model?: string }).model === ANTHROPIC_MODEL.id),
  );
});
