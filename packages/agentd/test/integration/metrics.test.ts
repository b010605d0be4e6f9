import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { pino } from 'pino';
import { AgentMetrics } from '../../src/metrics.js';

interface Fetched {
  status: number;
  type: string | undefined;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function fetchText(port: number, path: string, method = 'GET'): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          type: res.headers['content-type'],
          headers: res.headers,
          body: Buffer.concat(chunks).toString(),
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition format (enough of it: no escapes inside label values here). */
function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const typeMatch = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (typeMatch) {
      types.set(typeMatch[1]!, typeMatch[2]!);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$/.exec(line);
    assert.ok(m, `unparsable exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]!] = pair[2]!;
    }
    const raw = m[3]!;
    samples.push({ name: m[1]!, labels, value: raw === '+Inf' ? Infinity : Number(raw) });
  }
  return { samples, types };
}

function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const hit = samples.filter(
    (s) =>
      s.name === name &&
      Object.keys(labels).length === Object.keys(s.labels).length &&
      Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  assert.ok(hit.length <= 1, `${name} ${JSON.stringify(labels)} appears ${hit.length} times`);
  return hit[0]?.value;
}

function seriesOf(samples: Sample[], name: string): Sample[] {
  return samples.filter((s) => s.name === name);
}

test('GET /metrics serves every hako series with the exact values observed', async () => {
  let states: Record<string, number> = { running: 3, paused: 1, failed: 0 };
  const metrics = new AgentMetrics({ logger: pino({ level: 'silent' }) });
  // Wired late, as hakod does once its sandbox manager exists.
  metrics.setCollectors({ sandboxStates: () => states, warmPool: () => ({ 'python-small': 2, default: 0 }) });
  const { port } = await metrics.startServer('127.0.0.1', 0);
  try {
    assert.ok(port > 0);
    metrics.observeCreate('cold', 1.5);
    metrics.observeCreate('cold', 0.3);
    metrics.observeCreate('pool', 0.02);
    metrics.observeExec(0.2);
    metrics.observeExec(42);
    metrics.observeDestroy(0.7);
    metrics.countOomKills();
    metrics.countOomKills(2);
    metrics.countGcRemoved(4);
    metrics.countGcFailed(1);
    metrics.countRpcError('CreateSandbox', 'POOL_EXHAUSTED');
    metrics.countRpcError('CreateSandbox', 'POOL_EXHAUSTED');
    metrics.countRpcError('InvokeWorker', 'INVOKE_TARGET_FORBIDDEN');
    // Nonsense values are ignored, not recorded.
    metrics.observeExec(-1);
    metrics.observeExec(Number.NaN);
    metrics.countGcRemoved(0);

    const res = await fetchText(port, '/metrics');
    assert.equal(res.status, 200);
    assert.equal(res.type, 'text/plain; version=0.0.4; charset=utf-8');
    const { samples, types } = parseExposition(res.body);

    assert.equal(types.get('hako_sandboxes'), 'gauge');
    assert.equal(valueOf(samples, 'hako_sandboxes', { state: 'running' }), 3);
    assert.equal(valueOf(samples, 'hako_sandboxes', { state: 'paused' }), 1);
    assert.equal(valueOf(samples, 'hako_sandboxes', { state: 'failed' }), 0);
    assert.equal(seriesOf(samples, 'hako_sandboxes').length, 3);

    assert.equal(types.get('hako_warm_pool_sandboxes'), 'gauge');
    assert.equal(valueOf(samples, 'hako_warm_pool_sandboxes', { profile: 'python-small' }), 2);
    assert.equal(valueOf(samples, 'hako_warm_pool_sandboxes', { profile: 'default' }), 0);

    assert.equal(types.get('hako_sandbox_create_seconds'), 'histogram');
    assert.equal(valueOf(samples, 'hako_sandbox_create_seconds_count', { source: 'cold' }), 2);
    assert.equal(valueOf(samples, 'hako_sandbox_create_seconds_sum', { source: 'cold' }), 1.8);
    assert.equal(valueOf(samples, 'hako_sandbox_create_seconds_bucket', { source: 'cold', le: '0.5' }), 1);
    assert.equal(valueOf(samples, 'hako_sandbox_create_seconds_bucket', { source: 'cold', le: '2' }), 2);
    assert.equal(valueOf(samples, 'hako_sandbox_create_seconds_bucket', { source: 'cold', le: '+Inf' }), 2);
    assert.equal(valueOf(samples, 'hako_sandbox_create_seconds_count', { source: 'pool' }), 1);
    assert.equal(valueOf(samples, 'hako_sandbox_create_seconds_sum', { source: 'pool' }), 0.02);
    assert.equal(valueOf(samples, 'hako_sandbox_create_seconds_bucket', { source: 'pool', le: '0.01' }), 0);
    assert.equal(valueOf(samples, 'hako_sandbox_create_seconds_bucket', { source: 'pool', le: '0.05' }), 1);

    assert.equal(types.get('hako_exec_seconds'), 'histogram');
    assert.equal(valueOf(samples, 'hako_exec_seconds_count'), 2);
    assert.equal(valueOf(samples, 'hako_exec_seconds_sum'), 42.2);
    assert.equal(valueOf(samples, 'hako_exec_seconds_bucket', { le: '1' }), 1);
    assert.equal(valueOf(samples, 'hako_exec_seconds_bucket', { le: '60' }), 2);

    assert.equal(types.get('hako_sandbox_destroy_seconds'), 'histogram');
    assert.equal(valueOf(samples, 'hako_sandbox_destroy_seconds_count'), 1);
    assert.equal(valueOf(samples, 'hako_sandbox_destroy_seconds_sum'), 0.7);

    assert.equal(types.get('hako_oom_kills_total'), 'counter');
    assert.equal(valueOf(samples, 'hako_oom_kills_total'), 3);
    assert.equal(valueOf(samples, 'hako_gc_removed_total'), 4);
    assert.equal(valueOf(samples, 'hako_gc_failed_total'), 1);
    assert.equal(types.get('hako_rpc_errors_total'), 'counter');
    assert.equal(
      valueOf(samples, 'hako_rpc_errors_total', { method: 'CreateSandbox', code: 'POOL_EXHAUSTED' }),
      2,
    );
    assert.equal(
      valueOf(samples, 'hako_rpc_errors_total', { method: 'InvokeWorker', code: 'INVOKE_TARGET_FORBIDDEN' }),
      1,
    );
    assert.equal(seriesOf(samples, 'hako_rpc_errors_total').length, 2);

    // Process default metrics live on the same registry.
    assert.ok((valueOf(samples, 'process_resident_memory_bytes') ?? 0) > 0);
    assert.ok(valueOf(samples, 'process_cpu_seconds_total') !== undefined);
    assert.ok(seriesOf(samples, 'nodejs_heap_size_used_bytes').length === 1);

    // State gauges are read at scrape time: a state that went away disappears, new ones appear.
    states = { running: 5, stopping: 1 };
    const again = parseExposition((await fetchText(port, '/metrics')).body).samples;
    assert.equal(valueOf(again, 'hako_sandboxes', { state: 'running' }), 5);
    assert.equal(valueOf(again, 'hako_sandboxes', { state: 'stopping' }), 1);
    assert.equal(valueOf(again, 'hako_sandboxes', { state: 'paused' }), undefined);
  } finally {
    await metrics.close();
  }
});

test('two instances keep separate registries (no global default registry)', async () => {
  const a = new AgentMetrics({ defaultMetrics: false });
  const b = new AgentMetrics({ defaultMetrics: false });
  a.countGcRemoved(7);
  const ta = parseExposition(await a.metricsText()).samples;
  const tb = parseExposition(await b.metricsText()).samples;
  assert.equal(valueOf(ta, 'hako_gc_removed_total'), 7);
  assert.equal(valueOf(tb, 'hako_gc_removed_total'), 0);
  assert.equal(seriesOf(ta, 'process_cpu_seconds_total').length, 0);
  // The global registry of prom-client holds nothing of ours.
  const { register } = await import('prom-client');
  assert.equal(register.getSingleMetric('hako_gc_removed_total'), undefined);
  // Before any observation a histogram series exists for both sources, at zero.
  assert.equal(valueOf(tb, 'hako_sandbox_create_seconds_count', { source: 'cold' }), 0);
  assert.equal(valueOf(tb, 'hako_sandbox_create_seconds_count', { source: 'pool' }), 0);
  // No collectors wired: the state gauges have no series.
  assert.equal(seriesOf(tb, 'hako_sandboxes').length, 0);
});

test('a collector that throws leaves its gauge empty and the scrape still succeeds', async () => {
  const metrics = new AgentMetrics({
    logger: pino({ level: 'silent' }),
    defaultMetrics: false,
    sandboxStates: () => {
      throw new Error('manager not ready');
    },
    warmPool: () => ({ default: 1 }),
  });
  const { port } = await metrics.startServer('127.0.0.1', 0);
  try {
    const res = await fetchText(port, '/metrics');
    assert.equal(res.status, 200);
    const { samples } = parseExposition(res.body);
    assert.equal(seriesOf(samples, 'hako_sandboxes').length, 0);
    assert.equal(valueOf(samples, 'hako_warm_pool_sandboxes', { profile: 'default' }), 1);
  } finally {
    await metrics.close();
  }
});

test('/healthz, 404 for other paths, 405 for other methods, HEAD without a body', async () => {
  let healthy = true;
  const metrics = new AgentMetrics({ defaultMetrics: false, healthy: () => healthy });
  const { port } = await metrics.startServer('127.0.0.1', 0);
  try {
    const ok = await fetchText(port, '/healthz');
    assert.equal(ok.status, 200);
    assert.equal(ok.body, 'ok\n');
    healthy = false;
    const bad = await fetchText(port, '/healthz');
    assert.equal(bad.status, 503);

    for (const p of ['/', '/metrics/', '/metricsx', '/health', '/favicon.ico', '/../metrics']) {
      const r = await fetchText(port, p);
      assert.equal(r.status, 404, p);
    }
    const withQuery = await fetchText(port, '/metrics?name[]=hako_sandboxes');
    assert.equal(withQuery.status, 200);

    const post = await fetchText(port, '/metrics', 'POST');
    assert.equal(post.status, 405);
    assert.equal(post.headers['allow'], 'GET, HEAD');

    const head = await fetchText(port, '/metrics', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.ok(Number(head.headers['content-length']) > 0);
  } finally {
    await metrics.close();
  }
});

test('close() stops the server; startServer twice is refused; a busy port is CONFIG_INVALID', async () => {
  const metrics = new AgentMetrics({ defaultMetrics: false });
  const other = new AgentMetrics({ defaultMetrics: false });
  const { port } = await metrics.startServer('127.0.0.1', 0);
  try {
    await assert.rejects(metrics.startServer('127.0.0.1', 0), /already started/);
    await assert.rejects(other.startServer('127.0.0.1', port), (err: unknown) => {
      assert.equal((err as { code?: string }).code, 'CONFIG_INVALID');
      assert.match((err as Error).message, /EADDRINUSE/);
      return true;
    });
  } finally {
    await metrics.close();
    await other.close();
  }
  await assert.rejects(fetchText(port, '/metrics'), /ECONNREFUSED/);
  // close() twice is harmless.
  await metrics.close();
});
