// Health and metrics of a real hako-api process on the whole stack (PostgreSQL, Redis, S3, hakod
// with real sandboxes, the scripted model): /health/ready is 200 with the real node healthy, and
// after a real execute by Claude Code in a sandbox the /metrics counters match its done event
// exactly (tokens by kind, cost) and nothing is left held or in flight.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseSse, startStack } from '../helpers/stack.js';
import type { Stack } from '../helpers/stack.js';
import { parseExposition } from '../helpers/prometheus.js';
import type { Exposition } from '../helpers/prometheus.js';

const METRICS_TOKEN = `metrics-${randomBytes(12).toString('hex')}`;
// The test host's workspace budget is 2 GiB: the tenant takes a 128 MiB workspace.
const SMALL_DISK = 128 * 2 ** 20;
let stack: Stack | undefined;

before(async () => {
  stack = await startStack({
    apiProcesses: 1,
    script: {
      turns: [{ tool: 'Bash', input: { command: 'echo counted > counted.txt' } }, { text: 'counted' }],
    },
    apiEnv: { HAKO_METRICS_TOKEN: METRICS_TOKEN },
  });
});

after(async () => {
  await stack?.close();
});

async function json(
  url: string,
  init: RequestInit = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(url, init);
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

async function scrape(base: string): Promise<Exposition> {
  const r = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
  assert.equal(r.status, 200);
  return parseExposition(await r.text());
}

test('ready with a real hakod node; a real run moves the metrics by exactly its done event', async () => {
  const s = stack!;
  const base = s.apis[0]!.url;
  const ready = await json(`${base}/health/ready`);
  assert.equal(ready.status, 200, JSON.stringify(ready.body));
  const checks = ready.body.checks as Record<string, Record<string, unknown>>;
  assert.equal(checks.database!.engine, 'postgresql');
  assert.equal(checks.redis!.mode, 'redis');
  assert.equal(checks.s3!.bucket, s.s3.bucket);
  assert.equal(checks.nodes!.healthy, 1);
  assert.deepEqual(
    (checks.nodes!.nodes as { name: string; healthy: boolean }[]).map((n) => [n.name, n.healthy]),
    [['local', true]],
  );
  const text = JSON.stringify(ready.body);
  for (const secret of [s.s3.secretAccessKey, s.databaseUrl, s.redisUrl, s.agent.address, s.modelKey]) {
    assert.ok(!text.includes(secret), 'the probe shows no secret or address');
  }
  const before = await scrape(base);
  assert.equal(before.value('hako_api_nodes_healthy'), 1);
  assert.equal(before.value('hako_api_runs_total', { status: 'completed' }), 0);

  const admin = { authorization: `Bearer ${s.adminToken}`, 'content-type': 'application/json' };
  const t = await json(`${base}/v1/tenants`, {
    method: 'POST',
    headers: admin,
    body: JSON.stringify({ name: 'metered', settings: { limits: { disk_bytes: SMALL_DISK } } }),
  });
  assert.equal(t.status, 201, JSON.stringify(t.body));
  const k = await json(`${base}/v1/tenants/${String(t.body.id)}/api-keys`, {
    method: 'POST',
    headers: { authorization: admin.authorization },
  });
  const tenant = { authorization: `Bearer ${String(k.body.key)}`, 'content-type': 'application/json' };
  const c = await json(`${base}/v1/conversations`, { method: 'POST', headers: tenant, body: '{}' });
  assert.equal(c.status, 201);
  const run = await fetch(`${base}/v1/conversations/${String(c.body.id)}/execute`, {
    method: 'POST',
    headers: tenant,
    body: JSON.stringify({ prompt: 'write counted.txt' }),
  });
  assert.equal(run.status, 200);
  const events = parseSse(await run.text());
  const done = events.at(-1)!;
  assert.equal(done.event, 'done');
  assert.equal(done.data.status, 'completed', JSON.stringify(done.data));
  const usage = done.data.usage as Record<string, number>;
  assert.ok(usage.input_tokens! > 0 && usage.output_tokens! > 0, 'the scripted model reported usage');

  let after: Exposition | undefined;
  for (let i = 0; i < 100; i++) {
    after = await scrape(base);
    if (after.value('hako_api_runs_total', { status: 'completed' }) === 1) break;
    await sleep(100);
  }
  assert.equal(after!.value('hako_api_runs_total', { status: 'completed' }), 1);
  assert.equal(after!.value('hako_api_tokens_total', { kind: 'input' }), usage.input_tokens);
  assert.equal(after!.value('hako_api_tokens_total', { kind: 'output' }), usage.output_tokens);
  assert.equal(
    after!.value('hako_api_tokens_total', { kind: 'cache_creation' }),
    usage.cache_creation_input_tokens,
  );
  assert.equal(after!.value('hako_api_tokens_total', { kind: 'cache_read' }), usage.cache_read_input_tokens);
  assert.equal(after!.value('hako_api_cost_usd_total'), done.data.cost_usd);
  assert.equal(after!.value('hako_api_run_duration_seconds_count', { status: 'completed' }), 1);
  assert.equal(after!.value('hako_api_runs_in_flight'), 0);
  assert.equal(after!.value('hako_api_conversation_locks_held'), 0);
  assert.equal(
    after!.value('hako_api_http_requests_total', {
      method: 'POST',
      route: '/v1/conversations/:id/execute',
      status: '200',
    }),
    1,
  );
});
