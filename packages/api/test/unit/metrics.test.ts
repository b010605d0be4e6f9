// ApiMetrics and its lock decorator on their own: bounded labels, once-only lock accounting, a
// registry per instance. The HTTP and run paths are test/integration/metrics.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryLockManager } from '../../src/coord/memory-lock.js';
import { ApiMetrics, errorCodeLabel } from '../../src/metrics/api-metrics.js';
import { instrumentLocks } from '../../src/metrics/instrument.js';
import type { HeldLock, LockManager } from '../../src/types.js';
import { parseExposition } from '../helpers/prometheus.js';

async function exp(m: ApiMetrics) {
  return parseExposition(await m.metricsText());
}

test('error codes outside the registry become OTHER (no unbounded labels)', async () => {
  assert.equal(errorCodeLabel('CONVERSATION_LOCKED'), 'CONVERSATION_LOCKED');
  assert.equal(errorCodeLabel('constructor'), 'OTHER');
  assert.equal(errorCodeLabel('x'.repeat(500)), 'OTHER');
  const m = new ApiMetrics({ defaultMetrics: false });
  m.countError('run', 'AGENT_FAILED');
  m.countError('http', 'made-up');
  const e = await exp(m);
  assert.equal(e.value('hako_api_errors_total', { source: 'run', code: 'AGENT_FAILED' }), 1);
  assert.equal(e.value('hako_api_errors_total', { source: 'http', code: 'OTHER' }), 1);
});

test('a run counts its status, duration, tokens, cost and error code; bad numbers are ignored', async () => {
  const m = new ApiMetrics({ defaultMetrics: false });
  m.runStarted();
  assert.equal((await exp(m)).value('hako_api_runs_in_flight'), 1);
  m.runEnded({
    status: 'failed',
    durationMs: 2_500,
    usage: {
      inputTokens: 10,
      outputTokens: 5,
      cacheCreationInputTokens: 0,
      cacheReadInputTokens: Number.NaN,
    },
    costUsd: 0.5,
    errorCode: 'AGENT_FAILED',
  });
  m.runSettled();
  m.runEnded({ status: 'completed', durationMs: -1, costUsd: Number.POSITIVE_INFINITY });
  const e = await exp(m);
  assert.equal(e.value('hako_api_runs_in_flight'), 0);
  assert.equal(e.value('hako_api_runs_total', { status: 'failed' }), 1);
  assert.equal(e.value('hako_api_runs_total', { status: 'completed' }), 1);
  assert.equal(e.value('hako_api_run_duration_seconds_sum', { status: 'failed' }), 2.5);
  assert.equal(e.value('hako_api_run_duration_seconds_count', { status: 'completed' }), 0);
  assert.equal(e.value('hako_api_tokens_total', { kind: 'input' }), 10);
  assert.equal(e.value('hako_api_tokens_total', { kind: 'cache_read' }), 0);
  assert.equal(e.value('hako_api_cost_usd_total'), 0.5);
  assert.equal(e.value('hako_api_errors_total', { source: 'run', code: 'AGENT_FAILED' }), 1);
});

test('locks held: +1 per acquire, -1 once per lock whether released, lost or both', async () => {
  const m = new ApiMetrics({ defaultMetrics: false });
  const memory = new MemoryLockManager();
  try {
    const locks = instrumentLocks(memory, m);
    const held = async () => (await exp(m)).value('hako_api_conversation_locks_held');
    const a = (await locks.acquire('conversation:a', 60_000))!;
    const b = (await locks.acquire('conversation:b', 60_000))!;
    assert.equal(await locks.acquire('conversation:a', 60_000), undefined);
    assert.equal(await held(), 2);
    assert.equal(await a.release(), true);
    assert.equal(await a.release(), false);
    assert.equal(await held(), 1, 'a second release does not count again');
    assert.equal(await locks.isHeld('conversation:b'), true);
    assert.equal(b.token.length > 0, true);
    // A lock lost under its holder: renew answers false once it is gone.
    let lost = false;
    const losing: LockManager = {
      acquire: (key) =>
        Promise.resolve<HeldLock>({
          key,
          token: 't',
          renew: () => Promise.resolve(!lost),
          release: () => Promise.resolve(!lost),
        }),
      isHeld: () => Promise.resolve(!lost),
    };
    const c = (await instrumentLocks(losing, m).acquire('conversation:c', 1_000))!;
    assert.equal(await held(), 2);
    assert.equal(await c.renew(), true);
    lost = true;
    assert.equal(await c.renew(), false);
    assert.equal(await held(), 1);
    await c.release();
    assert.equal(await held(), 1, 'released after it was lost: not counted twice');
    await b.release();
    const e = await exp(m);
    assert.equal(e.value('hako_api_conversation_locks_held'), 0);
    assert.equal(e.value('hako_api_conversation_lock_acquisitions_total', { result: 'acquired' }), 3);
    assert.equal(e.value('hako_api_conversation_lock_acquisitions_total', { result: 'busy' }), 1);
  } finally {
    memory.close();
  }
});

test('every instance has its own registry; the nodes are read at scrape time', async () => {
  let nodes = [{ name: 'n1', healthy: true }];
  const a = new ApiMetrics({ nodes: () => nodes });
  const b = new ApiMetrics({ defaultMetrics: false });
  a.httpAnswered('GET', '/health', 200, 0.01);
  assert.equal(
    (await exp(a)).value('hako_api_http_requests_total', { method: 'GET', route: '/health', status: '200' }),
    1,
  );
  assert.equal(
    (await exp(b)).value('hako_api_http_requests_total', { method: 'GET', route: '/health', status: '200' }),
    undefined,
  );
  assert.equal((await exp(a)).value('hako_api_nodes_healthy'), 1);
  nodes = [
    { name: 'n1', healthy: false },
    { name: 'n2', healthy: true },
  ];
  const e = await exp(a);
  assert.equal(e.value('hako_api_nodes'), 2);
  assert.equal(e.value('hako_api_node_healthy', { node: 'n1' }), 0);
  assert.equal(e.value('hako_api_node_healthy', { node: 'n2' }), 1);
  assert.ok(e.types.has('process_resident_memory_bytes'), 'process metrics on a');
  assert.ok(!(await exp(b)).types.has('process_resident_memory_bytes'), 'none on b (turned off)');
});
