/**
 * The dependency checks behind `/health` and `/health/ready`: PostgreSQL, Redis (or in-process
 * coordination), S3 and the hakod node pool. Each check runs under its own deadline, so a hung
 * dependency answers "timed out" instead of hanging the probe, and at most one run of a check is
 * in flight at a time (a probe arriving while an earlier run still hangs waits on that run, with
 * its own deadline), so probes never pile connections up on a dependency that stopped answering.
 *
 * What a check reports is shown to anyone (probes carry no credentials): messages pass through
 * redact(), which removes credentials embedded in URLs and connection strings.
 */
import { HeadBucketCommand } from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Queryable } from '../db/pool.js';
import type { NodeStatus } from '../nodes/node-pool.js';

/** Facts a passing check adds to its report (snake_case, shown on the wire as they are). */
export type CheckDetails = Readonly<Record<string, unknown>>;

/**
 * One dependency check: resolves when the dependency answers (with details to show), rejects
 * with why it did not. `signal` aborts when the check's deadline passes; checks that can cancel
 * their call (an HTTP request) should pass it on.
 */
export type HealthCheck = (signal: AbortSignal) => Promise<CheckDetails | undefined>;

/** A check's outcome as the health routes show it. */
export interface CheckResult {
  readonly status: 'ok' | 'fail';
  readonly latency_ms: number;
  /** Why it failed (redacted). */
  readonly error?: string;
  readonly [detail: string]: unknown;
}

/** Thrown by a check that answers but not well enough (no healthy node). */
export class CheckFailed extends Error {
  constructor(
    message: string,
    readonly details: CheckDetails = {},
  ) {
    super(message);
    this.name = 'CheckFailed';
  }
}

/** `scheme://user:secret@host` -> `scheme://***@host`; `password=x` -> `password=***`. */
export function redact(text: string): string {
  return text
    .replace(/([a-z][a-z0-9+.-]*:\/\/)[^/\s@]*@/gi, '$1***@')
    .replace(/\b(password|passwd|pwd|secret|token|access_?key(?:_?id)?|signature)=([^&\s]+)/gi, '$1=***');
}

function messageOf(err: unknown): string {
  if (err instanceof AggregateError && err.message === '' && err.errors.length > 0) {
    return messageOf(err.errors[0]);
  }
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    const msg = err.message !== '' ? err.message : err.name;
    return typeof code === 'string' && !msg.includes(code) ? `${code}: ${msg}` : msg;
  }
  return String(err);
}

/**
 * Runs named checks, each with its own deadline, all at once. Keeps one in-flight run per check
 * name across calls (see the file comment).
 */
export class HealthChecker {
  private readonly inFlight = new Map<string, { run: Promise<CheckDetails | undefined>; since: number }>();

  constructor(
    private readonly checks: Readonly<Record<string, HealthCheck>>,
    private readonly timeoutMs: number,
  ) {}

  /** The check names, in the order given. */
  get names(): string[] {
    return Object.keys(this.checks);
  }

  /** Runs every check (or those in `only`); never rejects. */
  async run(only?: readonly string[]): Promise<Record<string, CheckResult>> {
    const names = only ?? this.names;
    const results = await Promise.all(names.map((n) => this.runOne(n)));
    return Object.fromEntries(names.map((n, i) => [n, results[i]!]));
  }

  private async runOne(name: string): Promise<CheckResult> {
    const check = this.checks[name];
    const started = performance.now();
    const elapsed = (): number => Math.round(performance.now() - started);
    if (check === undefined) return { status: 'fail', latency_ms: 0, error: `no check named ${name}` };
    let timer: NodeJS.Timeout | undefined;
    try {
      const details = await Promise.race([
        this.shared(name, check),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`timed out: no answer within ${this.timeoutMs} ms`)),
            this.timeoutMs,
          );
        }),
      ]);
      return { status: 'ok', latency_ms: elapsed(), ...redactDetails(details) };
    } catch (err) {
      const details = err instanceof CheckFailed ? redactDetails(err.details) : {};
      return { status: 'fail', latency_ms: elapsed(), error: redact(messageOf(err)), ...details };
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * The in-flight run of `name`, or a new one; the run's deadline aborts its signal. A run that
   * has hung for three deadlines is given up on (a call that never settles must not keep the check
   * failing after the dependency is back), so at most one hung call per three deadlines remains.
   */
  private shared(name: string, check: HealthCheck): Promise<CheckDetails | undefined> {
    const running = this.inFlight.get(name);
    if (running !== undefined && Date.now() - running.since < 3 * this.timeoutMs) return running.run;
    const signal = AbortSignal.timeout(this.timeoutMs);
    const run: Promise<CheckDetails | undefined> = Promise.resolve()
      .then(() => check(signal))
      .finally(() => {
        if (this.inFlight.get(name)?.run === run) this.inFlight.delete(name);
      });
    // A run given up on may still reject later; nobody waits for it then.
    run.catch(() => undefined);
    this.inFlight.set(name, { run, since: Date.now() });
    return run;
  }
}

function redactDetails(details: CheckDetails | undefined): Record<string, unknown> {
  if (details === undefined) return {};
  return JSON.parse(
    JSON.stringify(details, (_k, v: unknown) => (typeof v === 'string' ? redact(v) : v)),
  ) as Record<string, unknown>;
}

/** PostgreSQL (or the embedded PGlite) answers `SELECT 1`. */
export function databaseCheck(db: Queryable, engine: 'postgresql' | 'pglite'): HealthCheck {
  return async () => {
    await db.query('SELECT 1');
    return { engine };
  };
}

/** What the Redis check needs of an ioredis client. */
export interface RedisLike {
  readonly status: string;
  ping(): Promise<string>;
}

/**
 * Redis answers PING; a client that is not connected (reconnecting, connecting) fails at once.
 * Without Redis (REDIS_URL unset) coordination is in-process, which is ready by definition: the
 * check passes and says so.
 */
export function redisCheck(redis: RedisLike | undefined): HealthCheck {
  if (redis === undefined) {
    return () =>
      Promise.resolve({
        mode: 'in-process',
        detail: 'REDIS_URL is unset: locks and limits are in-process (one API process)',
      });
  }
  return async () => {
    if (redis.status !== 'ready') throw new Error(`Redis is not connected (client ${redis.status})`);
    const answer = await redis.ping();
    if (answer !== 'PONG') throw new Error(`Redis answered PING with ${JSON.stringify(answer)}`);
    return { mode: 'redis' };
  };
}

/** The S3 bucket exists and the credentials may read it (HeadBucket, aborted at the deadline). */
export function s3Check(client: S3Client, bucket: string): HealthCheck {
  return async (signal) => {
    try {
      await client.send(new HeadBucketCommand({ Bucket: bucket }), { abortSignal: signal });
    } catch (err) {
      if (signal.aborted) throw new Error('timed out: no answer before the deadline', { cause: err });
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      const name = err instanceof Error ? err.name : 'Error';
      if (status !== undefined) {
        throw new Error(`HeadBucket of ${bucket} answered ${status} (${name})`, { cause: err });
      }
      throw err;
    }
    return { bucket };
  };
}

/** What the nodes check needs of the node pool. */
export interface NodeHealthSource {
  status(): NodeStatus[];
  /** Polls every node now (never rejects). */
  refresh(): Promise<void>;
}

/**
 * At least one configured hakod node is healthy (by the pool's polls). When none is, the pool polls
 * every node once more (one may have come back) before the check fails. Reports each node by name
 * (never its address or token: an address in an error becomes `{name}`) with its load.
 */
export function nodesCheck(pool: NodeHealthSource): HealthCheck {
  const report = (status: NodeStatus[]) => ({
    healthy: status.filter((n) => n.healthy).length,
    total: status.length,
    nodes: status.map((n) => ({
      name: n.name,
      healthy: n.healthy,
      ...(n.info === undefined ? {} : { sandboxes: n.info.sandboxes, max_sandboxes: n.info.maxSandboxes }),
      // The address stays private: the error says it the pool's way, the answer names the node.
      ...(n.healthy || n.lastError === undefined
        ? {}
        : { error: n.lastError.split(n.address).join(`{${n.name}}`) }),
    })),
  });
  return async () => {
    let status = pool.status();
    if (!status.some((n) => n.healthy)) {
      await pool.refresh();
      status = pool.status();
    }
    const r = report(status);
    if (r.healthy === 0) {
      const why = r.nodes.map((n) => `${n.name}: ${n.error ?? 'unhealthy'}`).join('; ');
      throw new CheckFailed(`no healthy hakod node (${why})`, r);
    }
    return r;
  };
}
