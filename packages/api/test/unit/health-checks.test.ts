// HealthChecker's deadlines and single flight, redaction, and the nodes and Redis checks, with
// stand-in checks (the real dependencies are test/integration/health.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { AppError } from '@hako/core';
import { loadApiConfig } from '../../src/config.js';
import { CheckFailed, HealthChecker, nodesCheck, redact, redisCheck } from '../../src/http/health-checks.js';
import type { NodeStatus } from '../../src/nodes/node-pool.js';

test('redact removes credentials from URLs and key=value secrets, and leaves the rest', () => {
  assert.equal(
    redact('connect to redis://:s3cret@10.0.0.5:6379/0 failed'),
    'connect to redis://***@10.0.0.5:6379/0 failed',
  );
  assert.equal(redact('postgres://hako:pw@db:5432/hako'), 'postgres://***@db:5432/hako');
  assert.equal(
    redact('https://s3.example/b?X-Amz-Signature=abc&x=1'),
    'https://s3.example/b?X-Amz-Signature=***&x=1',
  );
  assert.equal(redact('password=hunter2 token=t0k'), 'password=*** token=***');
  assert.equal(redact('connect ECONNREFUSED 127.0.0.1:5432'), 'connect ECONNREFUSED 127.0.0.1:5432');
});

test('each check has its own deadline; passing, failing and hung checks are reported apart', async () => {
  const checker = new HealthChecker(
    {
      fine: () => Promise.resolve({ engine: 'x' }),
      broken: () => Promise.reject(new Error('refused by postgres://u:p@h/db')),
      hung: () => new Promise(() => undefined),
      partial: () => Promise.reject(new CheckFailed('half there', { healthy: 0, total: 2 })),
    },
    100,
  );
  const started = Date.now();
  const r = await checker.run();
  assert.ok(Date.now() - started < 1_000);
  assert.deepEqual(Object.keys(r), ['fine', 'broken', 'hung', 'partial']);
  assert.equal(r.fine!.status, 'ok');
  assert.equal(r.fine!.engine, 'x');
  assert.equal(r.broken!.status, 'fail');
  assert.equal(r.broken!.error, 'refused by postgres://***@h/db');
  assert.equal(r.hung!.status, 'fail');
  assert.match(r.hung!.error!, /^timed out: no answer within 100 ms$/);
  assert.ok(r.hung!.latency_ms >= 95);
  assert.equal(r.partial!.error, 'half there');
  assert.equal(r.partial!.total, 2);
});

test('one run of a check at a time: probes share a hung run, which is given up after three deadlines', async () => {
  let calls = 0;
  let signals: AbortSignal[] = [];
  const checker = new HealthChecker(
    {
      hung: (signal) => {
        calls++;
        signals.push(signal);
        return new Promise(() => undefined);
      },
    },
    60,
  );
  await Promise.all([checker.run(), checker.run(), checker.run()]);
  assert.equal(calls, 1, 'three concurrent probes, one call');
  await checker.run();
  assert.equal(calls, 1, 'a later probe within three deadlines shares the hung call');
  assert.ok(signals[0]!.aborted, "the call's signal aborted at its deadline");
  await sleep(200);
  await checker.run();
  assert.equal(calls, 2, 'after three deadlines a new call starts');
  signals = [];
  // A check that answers is called again on every probe.
  let quick = 0;
  const q = new HealthChecker({ q: () => Promise.resolve(void quick++) }, 60);
  await q.run();
  await q.run();
  assert.equal(quick, 2);
});

function node(name: string, healthy: boolean, lastError?: string): NodeStatus {
  return {
    name,
    address: `10.1.2.3:7443`,
    healthy,
    info: healthy ? ({ sandboxes: 2, maxSandboxes: 10 } as NodeStatus['info']) : undefined,
    pendingCreates: 0,
    lastError,
    checkedAt: Date.now(),
  };
}

test('nodes: one healthy node passes; none fails after one more poll, without addresses', async () => {
  let refreshed = 0;
  let list = [node('a', false, 'hakod at 10.1.2.3:7443 refused'), node('b', true)];
  const check = nodesCheck({
    status: () => list,
    refresh: () => {
      refreshed++;
      return Promise.resolve();
    },
  });
  const ok = await check(new AbortController().signal);
  assert.equal(refreshed, 0);
  assert.deepEqual(ok, {
    healthy: 1,
    total: 2,
    nodes: [
      { name: 'a', healthy: false, error: 'hakod at {a} refused' },
      { name: 'b', healthy: true, sandboxes: 2, max_sandboxes: 10 },
    ],
  });
  list = [node('a', false, 'hakod at 10.1.2.3:7443 refused')];
  await assert.rejects(check(new AbortController().signal), (err: unknown) => {
    assert.ok(err instanceof CheckFailed);
    assert.equal(err.message, 'no healthy hakod node (a: hakod at {a} refused)');
    assert.ok(!JSON.stringify(err.details).includes('10.1.2.3'));
    return true;
  });
  assert.equal(refreshed, 1, 'the pool polled once more before failing');
});

test('redis: not connected fails at once, PONG passes, no Redis is in-process and passes', async () => {
  await assert.rejects(
    redisCheck({ status: 'reconnecting', ping: () => new Promise(() => undefined) })(
      new AbortController().signal,
    ),
    /not connected \(client reconnecting\)/,
  );
  assert.deepEqual(
    await redisCheck({ status: 'ready', ping: () => Promise.resolve('PONG') })(new AbortController().signal),
    {
      mode: 'redis',
    },
  );
  const inProcess = await redisCheck(undefined)(new AbortController().signal);
  assert.equal(inProcess?.mode, 'in-process');
});

test('config: HAKO_HEALTH_TIMEOUT (2 s, bounded), HAKO_METRICS_TOKEN (optional, long), HAKO_SHUTDOWN_DELAY (none, at most 5m)', () => {
  const base = { HAKO_ADMIN_TOKEN: 'a'.repeat(20), S3_BUCKET: 'bucket' };
  const c = loadApiConfig(base);
  assert.equal(c.HAKO_HEALTH_TIMEOUT, 2_000);
  assert.equal(c.HAKO_METRICS_TOKEN, undefined);
  assert.equal(c.HAKO_SHUTDOWN_DELAY, 0);
  assert.equal(loadApiConfig({ ...base, HAKO_SHUTDOWN_DELAY: '15s' }).HAKO_SHUTDOWN_DELAY, 15_000);
  assert.equal(loadApiConfig({ ...base, HAKO_METRICS_TOKEN: '' }).HAKO_METRICS_TOKEN, undefined);
  assert.equal(loadApiConfig({ ...base, HAKO_HEALTH_TIMEOUT: '500ms' }).HAKO_HEALTH_TIMEOUT, 500);
  const token = 'm'.repeat(24);
  assert.equal(loadApiConfig({ ...base, HAKO_METRICS_TOKEN: token }).HAKO_METRICS_TOKEN, token);
  for (const [k, v] of [
    ['HAKO_HEALTH_TIMEOUT', '10ms'],
    ['HAKO_HEALTH_TIMEOUT', '5m'],
    ['HAKO_METRICS_TOKEN', 'short'],
    ['HAKO_METRICS_TOKEN', 'has spaces in the token'],
    ['HAKO_SHUTDOWN_DELAY', '6m'],
    ['HAKO_SHUTDOWN_DELAY', 'soon'],
  ] as const) {
    assert.throws(
      () => loadApiConfig({ ...base, [k]: v }),
      (e: unknown) => e instanceof AppError && e.code === 'CONFIG_INVALID' && e.message.includes(k),
      `${k}=${v}`,
    );
  }
});
