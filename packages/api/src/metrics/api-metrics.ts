/**
 * hako-api's Prometheus metrics. Every ApiMetrics owns its own prom-client Registry (nothing goes
 * on prom-client's global default registry), so two apps in one process (tests, `hako up` beside
 * hakod's own metrics) never clash.
 *
 * Labels are bounded by design: run statuses, token kinds, error codes from the ERROR_CODES
 * registry (anything else is `OTHER`), HTTP methods, route templates (`/v1/conversations/:id`,
 * never the id; unmatched URLs are one `unmatched` route), status codes, node names from
 * configuration. Tenant, conversation and run ids are never labels.
 *
 * What the code observes is pushed (runs, tokens, cost, errors, locks, HTTP requests); the nodes'
 * health is pulled at scrape time from a callback, so it cannot drift from the pool.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { ERROR_CODES } from '@hako/core';
import type { Logger } from '@hako/core';
import type { Usage } from '../types.js';

export type RunStatus = 'completed' | 'failed' | 'cancelled';
export const RUN_STATUSES: readonly RunStatus[] = ['completed', 'failed', 'cancelled'];

/** Where an error code was seen: an HTTP problem answer, or a run's final error. */
export type ErrorSource = 'http' | 'run';

/** A node as the gauges show it (read at scrape time). */
export interface NodeHealthSample {
  readonly name: string;
  readonly healthy: boolean;
}

export interface ApiMetricsOptions {
  /** Register prom-client's process metrics (CPU, memory, event loop, GC, handles); default true. */
  readonly defaultMetrics?: boolean | undefined;
  /** The hakod nodes, read at every scrape; unset leaves the node gauges empty. */
  readonly nodes?: (() => readonly NodeHealthSample[]) | undefined;
  readonly logger?: Logger | undefined;
}

/** Runs last from seconds (a refused sandbox) to the agent timeout (30 min by default). */
const RUN_BUCKETS = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600];
/** HTTP requests: milliseconds for most routes; execute streams last as long as their run. */
const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800];

const TOKEN_KINDS = {
  input: 'inputTokens',
  output: 'outputTokens',
  cache_creation: 'cacheCreationInputTokens',
  cache_read: 'cacheReadInputTokens',
} as const satisfies Record<string, keyof Usage>;

/** The label of an error code: the code when ERROR_CODES has it, else `OTHER`. */
export function errorCodeLabel(code: string): string {
  return Object.hasOwn(ERROR_CODES, code) ? code : 'OTHER';
}

export class ApiMetrics {
  /** The registry every metric of this instance lives on (serve it with `metricsText()`). */
  readonly registry: Registry;

  private readonly runs: Counter<'status'>;
  private readonly runSeconds: Histogram<'status'>;
  private readonly runsInFlight: Gauge;
  private readonly tokens: Counter<'kind'>;
  private readonly cost: Counter;
  private readonly errors: Counter<'source' | 'code'>;
  private readonly locksHeld: Gauge;
  private readonly lockAcquires: Counter<'result'>;
  private readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  private readonly httpSeconds: Histogram<'method' | 'route'>;

  constructor(options: ApiMetricsOptions = {}) {
    const registry = new Registry();
    this.registry = registry;
    const registers = [registry];
    const logger = options.logger;

    this.runs = new Counter({
      name: 'hako_api_runs_total',
      help: 'Executes that ended, by final status (completed, failed, cancelled).',
      labelNames: ['status'],
      registers,
    });
    this.runSeconds = new Histogram({
      name: 'hako_api_run_duration_seconds',
      help: 'Duration of an execute from its start to its stored done event, by final status.',
      labelNames: ['status'],
      buckets: RUN_BUCKETS,
      registers,
    });
    this.runsInFlight = new Gauge({
      name: 'hako_api_runs_in_flight',
      help: 'Executes this process is running now.',
      registers,
    });
    this.tokens = new Counter({
      name: 'hako_api_tokens_total',
      help: 'Model tokens used by ended executes, by kind (input, output, cache_creation, cache_read).',
      labelNames: ['kind'],
      registers,
    });
    this.cost = new Counter({
      name: 'hako_api_cost_usd_total',
      help: 'Cost in US dollars of ended executes, as the agent reported it.',
      registers,
    });
    this.errors = new Counter({
      name: 'hako_api_errors_total',
      help: 'Errors by hako error code: HTTP problem answers (source http) and the error codes runs ended with (source run).',
      labelNames: ['source', 'code'],
      registers,
    });
    this.locksHeld = new Gauge({
      name: 'hako_api_conversation_locks_held',
      help: 'Conversation locks this process holds now (executes, and uploads or deletes briefly).',
      registers,
    });
    this.lockAcquires = new Counter({
      name: 'hako_api_conversation_lock_acquisitions_total',
      help: 'Attempts to take a conversation lock: acquired, or busy (held by another run).',
      labelNames: ['result'],
      registers,
    });
    this.httpRequests = new Counter({
      name: 'hako_api_http_requests_total',
      help: 'HTTP requests answered, by method, route template and status code.',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.httpSeconds = new Histogram({
      name: 'hako_api_http_request_duration_seconds',
      help: 'Time from a request to the end of its answer (an execute stream: its whole run), by method and route template.',
      labelNames: ['method', 'route'],
      buckets: HTTP_BUCKETS,
      registers,
    });
    const nodes = options.nodes;
    const nodesHealthy = new Gauge({
      name: 'hako_api_nodes_healthy',
      help: 'Configured hakod nodes that answered their last health poll.',
      registers,
      collect: () => {
        const list = sample(nodes, logger);
        if (list !== undefined) nodesHealthy.set(list.filter((n) => n.healthy).length);
      },
    });
    const nodesConfigured = new Gauge({
      name: 'hako_api_nodes',
      help: 'Configured hakod nodes.',
      registers,
      collect: () => {
        const list = sample(nodes, logger);
        if (list !== undefined) nodesConfigured.set(list.length);
      },
    });
    const nodeUp = new Gauge({
      name: 'hako_api_node_healthy',
      help: 'Whether a configured hakod node answered its last health poll (1) or not (0), by node name.',
      labelNames: ['node'],
      registers,
      collect: () => {
        nodeUp.reset();
        for (const n of sample(nodes, logger) ?? []) nodeUp.set({ node: n.name }, n.healthy ? 1 : 0);
      },
    });

    // Series that exist from the start, so rate() and absent() see 0 before the first event.
    for (const status of RUN_STATUSES) {
      this.runs.inc({ status }, 0);
      this.runSeconds.zero({ status });
    }
    for (const kind of Object.keys(TOKEN_KINDS)) this.tokens.inc({ kind }, 0);
    this.lockAcquires.inc({ result: 'acquired' }, 0);
    this.lockAcquires.inc({ result: 'busy' }, 0);

    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  }

  /** A run began (its row exists). */
  runStarted(): void {
    this.runsInFlight.inc();
  }

  /** A run that began ended (its done was stored, or storing it failed); call once per runStarted. */
  runSettled(): void {
    this.runsInFlight.dec();
  }

  /**
   * A run ended with `status` after `durationMs`: its tokens and cost, and its error code when it
   * has one, are counted.
   */
  runEnded(input: {
    status: RunStatus;
    durationMs: number;
    usage?: Usage | undefined;
    costUsd?: number | undefined;
    errorCode?: string | undefined;
  }): void {
    this.runs.inc({ status: input.status });
    if (Number.isFinite(input.durationMs) && input.durationMs >= 0) {
      this.runSeconds.observe({ status: input.status }, input.durationMs / 1000);
    }
    if (input.usage !== undefined) {
      for (const [kind, field] of Object.entries(TOKEN_KINDS)) {
        const n = input.usage[field];
        if (Number.isFinite(n) && n > 0) this.tokens.inc({ kind }, n);
      }
    }
    if (input.costUsd !== undefined && Number.isFinite(input.costUsd) && input.costUsd > 0) {
      this.cost.inc(input.costUsd);
    }
    if (input.errorCode !== undefined) this.countError('run', input.errorCode);
  }

  /** An error code seen in an HTTP problem answer or at a run's end. */
  countError(source: ErrorSource, code: string): void {
    this.errors.inc({ source, code: errorCodeLabel(code) });
  }

  /** A conversation lock was taken (true) or found held by someone else (false). */
  lockAttempted(acquired: boolean): void {
    this.lockAcquires.inc({ result: acquired ? 'acquired' : 'busy' });
    if (acquired) this.locksHeld.inc();
  }

  /** A lock this process held is gone (released, or lost at a renewal); once per acquired lock. */
  lockGone(): void {
    this.locksHeld.dec();
  }

  /** An HTTP request was answered. `route` is the route template, or `unmatched`. */
  httpAnswered(method: string, route: string, status: number, seconds: number): void {
    this.httpRequests.inc({ method, route, status: String(status) });
    if (Number.isFinite(seconds) && seconds >= 0) this.httpSeconds.observe({ method, route }, seconds);
  }

  /** The Prometheus text exposition of every metric. */
  metricsText(): Promise<string> {
    return this.registry.metrics();
  }

  /** The exposition's Content-Type. */
  get contentType(): string {
    return this.registry.contentType;
  }
}

function sample(
  nodes: (() => readonly NodeHealthSample[]) | undefined,
  logger: Logger | undefined,
): readonly NodeHealthSample[] | undefined {
  if (nodes === undefined) return undefined;
  try {
    return nodes();
  } catch (err) {
    logger?.warn({ err }, 'reading the nodes for metrics failed; the node gauges are left as they were');
    return undefined;
  }
}
