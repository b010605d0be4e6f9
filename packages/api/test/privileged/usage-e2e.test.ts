// Models, usage and cost, executor and tool logs end to end: the whole stack (PostgreSQL, Redis,
// S3, hakod with real sandboxes, a hako-api process) and real Claude Code sessions against the
// scripted model, whose turns report usage. The model the scripted server is asked for is the one
// the conversation or tenant chose; the usage endpoints equal the sum of the done events exactly
// (decimal arithmetic); each Bash call is in the tool log; a disabled model is refused before the
// stream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { parseSse, startStack } from '../helpers/stack.js';
import type { Stack } from '../helpers/stack.js';
import { callApi as call } from '../helpers/http-call.js';
import { SONNET_MODEL, cost8, expectedCost8 } from '../helpers/models.js';

const SMALL_DISK = 128 * 2 ** 20;
const SONNET = SONNET_MODEL;
const HAIKU = {
  id: 'claude-haiku-4-5',
  display_name: 'Claude Haiku 4.5',
  provider: 'anthropic',
  prices: { input: 0.812345, output: 4.000007, cache_creation: 1.000003, cache_read: 0.080001 },
};

const script = (marker: string) => ({
  turns: [
    {
      tool: 'Bash',
      input: { command: `echo ${marker}` },
      usage: {
        input_tokens: 1234,
        output_tokens: 56,
        cache_creation_input_tokens: 78,
        cache_read_input_tokens: 9,
      },
    },
    {
      text: `ran ${marker}`,
      usage: {
        input_tokens: 2345,
        output_tokens: 67,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 1111,
      },
    },
  ],
});

let stack: Stack | undefined;
const S = (): Stack => {
  if (!stack) throw new Error('the stack did not start');
  return stack;
};

before(async () => {
  stack = await startStack({ apiProcesses: 1, script: script('first') });
});

after(async () => {
  await stack?.close();
});

test('runs record model, executor, usage and cost; the usage API equals the done events exactly', async () => {
  const s = S();
  const api = s.apis[0]!.url;
  const admin = s.adminToken;
  for (const m of [SONNET, HAIKU]) {
    const r = await call(api, admin, 'POST', '/v1/models', m);
    assert.equal(r.status, 201, r.text);
  }
  const t = await call(api, admin, 'POST', '/v1/tenants', {
    name: 'usage-e2e',
    settings: { model: SONNET.id, limits: { disk_bytes: SMALL_DISK } },
  });
  assert.equal(t.status, 201, t.text);
  const tenantId = String(t.json.id);
  const key = String((await call(api, admin, 'POST', `/v1/tenants/${tenantId}/api-keys`)).json.key);
  const c1 = String((await call(api, key, 'POST', '/v1/conversations', {})).json.id);
  const c2r = await call(api, key, 'POST', '/v1/conversations', { model_id: HAIKU.id });
  assert.equal(c2r.json.model_id, HAIKU.id);
  const c2 = String(c2r.json.id);

  const plan = [
    {
      conv: c1,
      model: SONNET,
      marker: 'first',
      executor: { user_id: 'u-ada', name: 'Ada', email: 'ada@example.com' },
    },
    { conv: c2, model: HAIKU, marker: 'second', executor: { user_id: 'u-bob' } },
    {
      conv: c1,
      model: SONNET,
      marker: 'third',
      executor: { user_id: 'u-ada', name: 'Ada', email: 'ada@example.com' },
    },
  ];
  const dones: Record<string, unknown>[] = [];
  const runIds: string[] = [];
  for (const p of plan) {
    s.model.setScript(script(p.marker));
    const from = s.model.requests.length;
    const r = await call(api, key, 'POST', `/v1/conversations/${p.conv}/execute`, {
      user_input: `run ${p.marker}`,
      executor: p.executor,
    });
    assert.equal(r.status, 200, r.text);
    const events = parseSse(r.text);
    const done = events.at(-1)!;
    assert.equal(done.event, 'done');
    assert.equal(done.data.status, 'completed', JSON.stringify(done.data));
    assert.equal(
      events.find((e) => e.event === 'tool_result')?.data.output,
      p.marker,
      'the Bash call ran in the sandbox',
    );
    // The scripted model was asked for the chosen model on every turn of the conversation.
    const main = s.model.requests.slice(from).filter((q) => q.kind === 'main');
    assert.ok(main.length >= 2, `main turns: ${main.length}`);
    for (const q of main) assert.equal((q.body as { model?: string }).model, p.model.id);
    assert.equal(events.find((e) => e.event === 'init')?.data.model, p.model.id);
    // The done event's cost is the tokens priced with the registry's prices.
    const usage = done.data.usage as Record<string, number>;
    assert.ok(usage.input_tokens! >= 1234 && usage.output_tokens! >= 56, JSON.stringify(usage));
    assert.equal(
      cost8(done.data.cost_usd),
      expectedCost8(p.model.prices, {
        inputTokens: usage.input_tokens!,
        outputTokens: usage.output_tokens!,
        cacheCreationInputTokens: usage.cache_creation_input_tokens!,
        cacheReadInputTokens: usage.cache_read_input_tokens!,
      }),
    );
    dones.push(done.data);
    runIds.push(String(done.data.run_id));
  }

  // One record per run, newest first, each equal to its done event.
  const list = await call(api, key, 'GET', '/v1/usage');
  assert.equal(list.status, 200, list.text);
  const records = list.json.usage as Record<string, unknown>[];
  assert.deepEqual(
    records.map((r) => r.run_id),
    [...runIds].reverse(),
  );
  for (const rec of records) {
    const i = runIds.indexOf(String(rec.run_id));
    const d = dones[i]!;
    assert.equal(rec.cost_usd, d.cost_usd);
    assert.equal(rec.cost_source, 'model_prices');
    assert.equal(rec.model_id, plan[i]!.model.id);
    assert.deepEqual(rec.executor, plan[i]!.executor);
    assert.equal(rec.conversation_id, plan[i]!.conv);
    const du = d.usage as Record<string, number>;
    for (const k of [
      'input_tokens',
      'output_tokens',
      'cache_creation_input_tokens',
      'cache_read_input_tokens',
    ]) {
      assert.equal(rec[k], du[k], k);
    }
    assert.equal(rec.duration_ms, d.duration_ms);
    assert.equal(rec.turn_count, d.turn_count);
  }

  const sum = (idx: number[]): bigint => idx.reduce((a, i) => a + cost8(dones[i]!.cost_usd), 0n);
  const tokens = (idx: number[], k: string): number =>
    idx.reduce((a, i) => a + (dones[i]!.usage as Record<string, number>)[k]!, 0);
  const report = await call(api, key, 'GET', '/v1/usage/cost-report');
  assert.equal(report.status, 200, report.text);
  const totals = report.json.totals as Record<string, unknown>;
  assert.equal(cost8(totals.cost_usd), sum([0, 1, 2]));
  assert.equal(totals.runs, 3);
  assert.equal(totals.input_tokens, tokens([0, 1, 2], 'input_tokens'));
  assert.equal(totals.cache_read_input_tokens, tokens([0, 1, 2], 'cache_read_input_tokens'));
  const byModel = new Map(
    (report.json.by_model as Record<string, unknown>[]).map((m) => [String(m.model_id), m]),
  );
  assert.equal(cost8(byModel.get(SONNET.id)!.cost_usd), sum([0, 2]));
  assert.equal(cost8(byModel.get(HAIKU.id)!.cost_usd), sum([1]));
  assert.equal(byModel.get(HAIKU.id)!.display_name, HAIKU.display_name);

  const byUser = await call(api, key, 'GET', '/v1/usage/summary?group_by=user');
  const ug = new Map((byUser.json.groups as Record<string, unknown>[]).map((g) => [g.key, g]));
  assert.equal(ug.get('u-ada')!.runs, 2);
  assert.equal(cost8(ug.get('u-ada')!.cost_usd), sum([0, 2]));
  assert.equal(cost8(ug.get('u-bob')!.cost_usd), sum([1]));
  assert.equal(ug.get('u-bob')!.output_tokens, tokens([1], 'output_tokens'));
  const byDay = await call(api, key, 'GET', '/v1/usage/summary?group_by=day');
  assert.equal(cost8((byDay.json.totals as Record<string, unknown>).cost_usd), sum([0, 1, 2]));

  // Tool logs: the Bash calls of the first conversation, in order, with their output.
  const logs = await call(api, key, 'GET', `/v1/conversations/${c1}/tool-logs`);
  assert.equal(logs.status, 200, logs.text);
  const calls = logs.json.tool_logs as Record<string, unknown>[];
  assert.deepEqual(
    calls.map((c) => [c.name, c.run_id, c.output_summary, c.is_error, c.parent_tool_use_id]),
    [
      ['Bash', runIds[0], 'first', false, null],
      ['Bash', runIds[2], 'third', false, null],
    ],
  );
  assert.deepEqual(calls[0]!.input, { command: 'echo first' });
  for (const c of calls) {
    assert.ok(typeof c.duration_ms === 'number' && c.duration_ms >= 0, JSON.stringify(c));
    assert.ok(typeof c.tool_use_id === 'string' && c.tool_use_id !== '');
  }
  const onlyThird = await call(api, key, 'GET', `/v1/conversations/${c1}/tool-logs?run_id=${runIds[2]}`);
  assert.equal((onlyThird.json.tool_logs as unknown[]).length, 1);

  // Disabling a model refuses the next execute on it before the stream; nothing is recorded.
  const off = await call(api, admin, 'PATCH', `/v1/models/${HAIKU.id}/status`, { status: 'disabled' });
  assert.equal(off.status, 200, off.text);
  const refused = await call(api, key, 'POST', `/v1/conversations/${c2}/execute`, { prompt: 'again' });
  assert.equal(refused.status, 409, refused.text);
  assert.equal(refused.json.code, 'MODEL_DISABLED');
  assert.equal(((await call(api, key, 'GET', '/v1/usage')).json.usage as unknown[]).length, 3);
  // Switching the conversation back to the tenant default lets it run again.
  const back = await call(api, key, 'PATCH', `/v1/conversations/${c2}`, { model_id: null });
  assert.equal(back.status, 200, back.text);
  s.model.setScript({ turns: [{ text: 'fine' }] });
  const from = s.model.requests.length;
  const again = await call(api, key, 'POST', `/v1/conversations/${c2}/execute`, { prompt: 'again' });
  assert.equal(parseSse(again.text).at(-1)?.data.status, 'completed', again.text.slice(-1000));
  const main = s.model.requests.slice(from).filter((q) => q.kind === 'main');
  assert.ok(main.length > 0 && main.every((q) => (q.body as { model?: string }).model === SONNET.id));
});
