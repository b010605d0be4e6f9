/**
 * hakod's Prometheus metrics and the small HTTP server that exposes them (GET /metrics, GET
 * /healthz) on a port of its own, apart from the gRPC port.
 *
 * Every AgentMetrics owns its own prom-client Registry: nothing is registered on prom-client's
 * global default registry, so two instances (tests, or two daemons in one process) never collide.
 * Process default metrics (CPU, memory, event loop, GC, file descriptors) are registered on the
 * same registry.
 *
 * Gauges that describe current state (`hako_sandboxes`, `hako_warm_pool_sandboxes`) are pulled at
 * scrape time from callbacks hakod provides, so they can never drift from the truth; everything
 * else is pushed by the code that observes it.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';

export type CreateSource = 'cold' | 'pool';

/** Counts by label value, e.g. `{ running: 3, paused: 1 }`; return zeros explicitly to show them. */
export type CountsByLabel = Readonly<Record<string, number>>;

export interface MetricsCollectors {
  /** Sandboxes by state (creating, running, paused, stopping, stopped, failed), read at scrape time. */
  readonly sandboxStates?: () => CountsByLabel;
  /** Unclaimed warm-pool sandboxes by profile key, read at scrape time. */
  readonly warmPool?: () => CountsByLabel;
  /** /healthz answers 503 while this returns false or throws; absent = always healthy. */
  readonly healthy?: () => boolean | Promise<boolean>;
}

export interface AgentMetricsOptions extends MetricsCollectors {
  readonly logger?: Logger;
  /** Register process default metrics (default true). */
  readonly defaultMetrics?: boolean;
}

/** Sandbox creation: a warm-pool claim takes milliseconds, a cold create up to tens of seconds. */
const CREATE_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60];
/** Exec round trips range from a quick `true` to an agent session of many minutes. */
const EXEC_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600];
const DESTROY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30];

export class AgentMetrics {
  /** The registry every hako metric and the process metrics live on. */
  readonly registry: Registry;

  private readonly logger: Logger | undefined;
  private collectors: MetricsCollectors;
  private server: Server | undefined;

  private readonly sandboxes: Gauge<'state'>;
  private readonly warmPool: Gauge<'profile'>;
  private readonly createSeconds: Histogram<'source'>;
  private readonly execSeconds: Histogram;
  private readonly destroySeconds: Histogram;
  private readonly oomKills: Counter;
  private readonly gcRemoved: Counter;
  private readonly gcFailed: Counter;
  private readonly rpcErrors: Counter<'method' | 'code'>;

  constructor(options: AgentMetricsOptions = {}) {
    this.logger = options.logger;
    this.collectors = {
      sandboxStates: options.sandboxStates,
      warmPool: options.warmPool,
      healthy: options.healthy,
    };
    const registry = new Registry();
    this.registry = registry;
    const registers = [registry];

    // collect() runs at scrape time, when both fields are set; arrows keep `this` the AgentMetrics.
    this.sandboxes = new Gauge({
      name: 'hako_sandboxes',
      help: 'Sandboxes on this node by state.',
      labelNames: ['state'],
      registers,
      collect: () => this.fillGauge(this.sandboxes, 'state', this.collectors.sandboxStates, 'hako_sandboxes'),
    });
    this.warmPool = new Gauge({
      name: 'hako_warm_pool_sandboxes',
      help: 'Unclaimed warm-pool sandboxes by profile.',
      labelNames: ['profile'],
      registers,
      collect: () =>
        this.fillGauge(this.warmPool, 'profile', this.collectors.warmPool, 'hako_warm_pool_sandboxes'),
    });
    this.createSeconds = new Histogram({
      name: 'hako_sandbox_create_seconds',
      help: 'Time to create a sandbox, from request to running; source is cold or pool (a warm-pool claim).',
      labelNames: ['source'],
      buckets: CREATE_BUCKETS,
      registers,
    });
    this.execSeconds = new Histogram({
      name: 'hako_exec_seconds',
      help: 'Round trip of an Exec, from start until the process exited.',
      buckets: EXEC_BUCKETS,
      registers,
    });
    this.destroySeconds = new Histogram({
      name: 'hako_sandbox_destroy_seconds',
      help: 'Time to destroy a sandbox and release everything it held.',
      buckets: DESTROY_BUCKETS,
      registers,
    });
    this.oomKills = new Counter({
      name: 'hako_oom_kills_total',
      help: 'Processes killed by the OOM killer inside sandboxes.',
      registers,
    });
    this.gcRemoved = new Counter({
      name: 'hako_gc_removed_total',
      help: 'Leftover sandboxes (or their parts) removed by garbage collection.',
      registers,
    });
    this.gcFailed = new Counter({
      name: 'hako_gc_failed_total',
      help: 'Leftover sandboxes garbage collection failed to remove.',
      registers,
    });
    this.rpcErrors = new Counter({
      name: 'hako_rpc_errors_total',
      help: 'gRPC calls that ended with an error, by method and hako error code.',
      labelNames: ['method', 'code'],
      registers,
    });
    // Label series that exist from the start, so rate() sees 0 before the first event.
    this.createSeconds.zero({ source: 'cold' });
    this.createSeconds.zero({ source: 'pool' });

    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  }

  /**
   * Replaces the scrape-time callbacks given so far (those not named stay). For wiring order:
   * hakod may build AgentMetrics before the sandbox manager that the callbacks read.
   */
  setCollectors(collectors: MetricsCollectors): void {
    this.collectors = { ...this.collectors, ...collectors };
  }

  /** A finished sandbox creation; `seconds` from request to running. */
  observeCreate(source: CreateSource, seconds: number): void {
    if (validSeconds(seconds)) this.createSeconds.observe({ source }, seconds);
  }

  /** A finished Exec; `seconds` from start until the process exited. */
  observeExec(seconds: number): void {
    if (validSeconds(seconds)) this.execSeconds.observe(seconds);
  }

  /** A finished sandbox destroy. */
  observeDestroy(seconds: number): void {
    if (validSeconds(seconds)) this.destroySeconds.observe(seconds);
  }

  /** OOM kills seen (the increase of a sandbox's oom_kill counter). */
  countOomKills(n = 1): void {
    if (validCount(n)) this.oomKills.inc(n);
  }

  /** Items a GC run removed. */
  countGcRemoved(n: number): void {
    if (validCount(n)) this.gcRemoved.inc(n);
  }

  /** Items a GC run failed to remove. */
  countGcFailed(n: number): void {
    if (validCount(n)) this.gcFailed.inc(n);
  }

  /** A gRPC call that failed; `method` is the RPC name (e.g. "CreateSandbox"), `code` the hako code. */
  countRpcError(method: string, code: string): void {
    this.rpcErrors.inc({ method, code });
  }

  /** The exposition text a scrape would get. */
  async metricsText(): Promise<string> {
    return this.registry.metrics();
  }

  /**
   * Starts the HTTP server: GET/HEAD /metrics (Prometheus text format) and GET/HEAD /healthz
   * ("ok", or 503 when the `healthy` callback says no). Other paths: 404; other methods: 405.
   * Port 0 picks a free port; the chosen one is returned. Call once; close() stops it.
   */
  async startServer(host: string, port: number): Promise<{ port: number }> {
    if (this.server) throw new AppError('INTERNAL', 'the metrics server is already started');
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.logger?.error({ err }, 'metrics request failed');
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
        res.end('internal error\n');
      });
    });
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(
          new AppError(
            'CONFIG_INVALID',
            `cannot serve metrics on ${host}:${port} (${err.code ?? err.message}); pick another address or port`,
            { cause: err },
          ),
        );
      };
      server.once('error', onError);
      server.listen(port, host, () => {
        server.off('error', onError);
        resolve();
      });
    });
    server.on('error', (err) => this.logger?.error({ err }, 'metrics server error'));
    this.server = server;
    return { port: (server.address() as AddressInfo).port };
  }

  /** Stops the HTTP server and drops open connections; a no-op when it is not running. */
  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    server.closeAllConnections();
    await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics' && path !== '/healthz') {
      send(res, 404, 'text/plain; charset=utf-8', 'not found: try /metrics or /healthz\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
      return;
    }
    if (path === '/metrics') {
      const text = await this.registry.metrics();
      send(res, 200, this.registry.contentType, text, req.method === 'HEAD');
      return;
    }
    let ok: boolean;
    try {
      ok = (await this.collectors.healthy?.()) ?? true;
    } catch (err) {
      this.logger?.warn({ err }, 'health check failed');
      ok = false;
    }
    send(
      res,
      ok ? 200 : 503,
      'text/plain; charset=utf-8',
      ok ? 'ok\n' : 'unhealthy\n',
      req.method === 'HEAD',
    );
  }

  /** Resets a state gauge and fills it from a callback; a failing callback leaves it empty. */
  private fillGauge<L extends string>(
    gauge: Gauge<L>,
    label: L,
    source: (() => CountsByLabel) | undefined,
    name: string,
  ): void {
    gauge.reset();
    if (!source) return;
    let counts: CountsByLabel;
    try {
      counts = source();
    } catch (err) {
      this.logger?.warn({ err, metric: name }, 'metrics collector failed; the gauge is left empty');
      return;
    }
    for (const [value, n] of Object.entries(counts)) {
      if (Number.isFinite(n)) gauge.set({ [label]: value } as Partial<Record<L, string>>, n);
    }
  }
}

function send(res: ServerResponse, status: number, type: string, body: string, headOnly = false): void {
  res.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(headOnly ? undefined : body);
}

function validSeconds(s: number): boolean {
  return Number.isFinite(s) && s >= 0;
}

function validCount(n: number): boolean {
  return Number.isFinite(n) && n > 0;
}
