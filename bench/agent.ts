/**
 * `npm run bench -- agent`: hakod's own costs, measured through a real client over mTLS on
 * loopback against hakod started in this process with startAgent() (the real wiring), in
 * throw-away environments (own HAKO_ENV, state and run dirs, bridge, subnet) torn down at the end:
 *
 * - create (cold): CreateSandbox round trip, network none, image host, on a hakod with no warm pool
 *   (AGENT_POOL_MIN=AGENT_POOL_MAX=0); destroy: the DestroySandbox round trip that follows it.
 *   Timed on a settled host: the background work the previous iteration left (spare workspace
 *   volumes refilled, destroyed ones unmounted) finishes first, untimed; how long it took after
 *   each create+destroy is its own row (`background`), so its cost is shown. Exec likewise.
 * - create_pool: CreateSandbox claiming a warm sandbox from a second hakod whose pool keeps
 *   POOL_SIZE of the same profile; before each timed claim (and after it, so no refill runs under
 *   another case) the bench waits until GetNodeInfo.sandboxes_warm is back at POOL_SIZE. A claim the
 *   answer does not mark `from_pool` is not a pool claim: it is counted as invalid, not used.
 * - exec: Exec of `true` in one running sandbox, start to exit message (runExec).
 * - spawn: child_process `true`, the floor, measured in the same interleaved rounds.
 * Then, in order: a phase profile of a few create/exec/destroy calls; creates_per_s (N cold
 * creates, concurrency 4, wall clock) and the destroys after them, next to spawns_per_s; and the
 * idle phase: as many idle sandboxes as --idle asks (concurrency 4, small limits), host memory from
 * /proc/meminfo before and after (MemAvailable; Slab, KernelStack, … for understanding), the RSS
 * and PSS of the sandboxes' processes, the memory charged to their cgroups, a GarbageCollect dry
 * run with all of them alive, and the time to destroy them all.
 *
 * The last line of stdout is one JSON object (`--json` prints only that line).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@hako/core';
import type { Logger } from '@hako/core';
import type { AgentClient, CreateSandboxRequest } from '@hako/proto';
import { NetworkMode } from '@hako/proto';
import { CleanupStack, detectCgroupLayout } from '@hako/sandbox';
import { certsInit } from '../packages/cli/src/certs.js';
import { callUnary, createAgentClient, runExec } from '../packages/agentd/src/client.js';
import { startAgent } from '../packages/agentd/src/main.js';
import type { RunningAgent } from '../packages/agentd/src/main.js';
import { createTestHost } from '../packages/sandbox/test/helpers/test-host.js';
import type { TestHost } from '../packages/sandbox/test/helpers/test-host.js';
import {
  MEMINFO_FIELDS,
  MIB,
  envCgroupMemory,
  memoryCgroupCount,
  sandboxProcessMemory,
  settledMeminfo,
} from './agent-memory.js';
import type { Meminfo, ProcessMemory, SettledMeminfo } from './agent-memory.js';
import { AgentProfiler, PROFILED_OPS, summarizeOp } from './agent-profile.js';
import type { OpProfile, OpSummary } from './agent-profile.js';
import { jsonLine } from './lib/json.js';
import type { JsonValue } from './lib/json.js';
import { timeCommand } from './lib/proc.js';
import { runInterleavedWithProgress } from './lib/rounds.js';
import type { BenchCase, CaseOutcome } from './lib/rounds.js';
import { ratio, round2, summarize } from './lib/stats.js';
import type { Summary } from './lib/stats.js';
import { fmtMs, fmtRatio, renderTable } from './lib/table.js';
import { spawnCase } from './sandbox-baselines.js';

export interface AgentBenchOptions {
  /** Measured interleaved rounds; also the number of creates for creates_per_s. */
  readonly n: number;
  readonly warmup: number;
  /** Idle sandboxes to hold at once (0 skips the idle phase). */
  readonly idle: number;
  /** Print only the JSON line. */
  readonly json: boolean;
}

export const DEFAULT_IDLE = 500;

const TARGET_CREATE_MS = 50;
const TARGET_POOL_MS = 5;
const TARGET_EXEC_MS = 15;
const TARGET_IDLE = 500;
const TARGET_MIB_PER_SANDBOX = 4;

/** Concurrency of the throughput and idle phases. */
const CONCURRENCY = 4;
/** Warm sandboxes the pool hakod keeps (AGENT_POOL_MIN = AGENT_POOL_MAX). */
const POOL_SIZE = 2;
/** Profiled create/exec/destroy iterations (at most). */
const PROFILE_ITERATIONS = 20;
const OWNER = 'bench';
const RPC_TIMEOUT_MS = 120_000;

/** The small sandbox every phase creates; also hakod's defaults, so the warm pool has this profile. */
const LIMITS = {
  cpus: 1,
  memoryBytes: 64 * MIB,
  pids: 128,
  diskBytes: 16 * MIB,
  tmpBytes: 4 * MIB,
} as const;
const LIMITS_ENV = {
  AGENT_DEFAULT_CPUS: String(LIMITS.cpus),
  AGENT_DEFAULT_MEMORY: '64m',
  AGENT_DEFAULT_PIDS: String(LIMITS.pids),
  AGENT_DEFAULT_DISK: '16m',
  AGENT_DEFAULT_TMP: '4m',
} as const;

function createRequest(): CreateSandboxRequest {
  return {
    ownerId: OWNER,
    image: 'host',
    labels: { bench: 'agent' },
    limits: { ...LIMITS },
    network: NetworkMode.NETWORK_MODE_NONE,
    egressAllow: [],
    env: {},
    upstreams: [],
    ttlSeconds: 0,
    idleTimeoutSeconds: 0,
  };
}

/** hakod's environment on top of a test host's: mTLS on an ephemeral loopback port, no metrics. */
function hakodEnv(th: TestHost, pkiDir: string, extra: Record<string, string>): Record<string, string> {
  return {
    ...th.env,
    AGENT_LISTEN: '127.0.0.1:0',
    AGENT_METRICS_LISTEN: '',
    AGENT_TLS_DIR: pkiDir,
    // the sweep (GC of the whole env) every minute would land in the middle of measurements
    AGENT_GC_INTERVAL: '1h',
    ...LIMITS_ENV,
    ...extra,
  };
}

function errText(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  const msg = typeof e?.message === 'string' ? e.message : String(err);
  return typeof e?.code === 'string' ? `${e.code}: ${msg}` : msg;
}

function errCode(err: unknown): string {
  const c = (err as { code?: unknown })?.code;
  return typeof c === 'string' ? c : 'ERROR';
}

/** Runs fn(0..count-1) with at most `concurrency` at once; stops starting new ones at the first failure. */
async function withConcurrency<T>(
  count: number,
  concurrency: number,
  fn: (i: number) => Promise<T>,
  signal: AbortSignal,
  onDone?: (done: number) => void,
): Promise<{ results: T[]; error: unknown; ms: number }> {
  const results: T[] = [];
  let next = 0;
  let error: unknown;
  const started = performance.now();
  const worker = async (): Promise<void> => {
    while (error === undefined && !signal.aborted && next < count) {
      const i = next++;
      try {
        results.push(await fn(i));
        onDone?.(results.length);
      } catch (err) {
        error ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, () => worker()));
  return { results, error, ms: performance.now() - started };
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | undefined;
  return () => (p ??= fn());
}

async function createOne(client: AgentClient): Promise<{ id: string; fromPool: boolean }> {
  const { sandbox } = await callUnary(client, 'createSandbox', createRequest(), {
    timeoutMs: RPC_TIMEOUT_MS,
  });
  if (!sandbox) throw new Error('CreateSandbox answered without a sandbox');
  return { id: sandbox.id, fromPool: sandbox.fromPool };
}

async function destroyOne(client: AgentClient, id: string): Promise<void> {
  await callUnary(client, 'destroySandbox', { ownerId: OWNER, sandboxId: id }, { timeoutMs: RPC_TIMEOUT_MS });
}

async function execTrue(client: AgentClient, id: string): Promise<void> {
  const r = await runExec(client, { ownerId: OWNER, sandboxId: id, argv: ['true'] }, { timeoutMs: 60_000 });
  if (r.exit.code !== 0) {
    throw new Error(`Exec true exited ${r.exit.code}: ${r.stderr.toString().trim().slice(-500)}`);
  }
}

/** Polls GetNodeInfo until the pool holds `target` warm sandboxes. */
async function waitWarm(client: AgentClient, target: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let warm = -1;
  while (Date.now() < deadline) {
    warm = (await callUnary(client, 'getNodeInfo', {}, { timeoutMs: 10_000 })).sandboxesWarm;
    if (warm >= target) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`the warm pool did not reach ${target} in ${timeoutMs} ms (it holds ${warm})`);
}

interface IdleResult {
  requested: number;
  held: number;
  error: string | undefined;
  errorCode: string | undefined;
  createMs: number;
  /** Create round trips (concurrency 4) in completion order: do they grow with the count held? */
  createLatencies: number[];
  destroyMs: number;
  destroyError: string | undefined;
  before: SettledMeminfo;
  after: SettledMeminfo;
  afterDestroy: SettledMeminfo | undefined;
  procs: ProcessMemory;
  cgroupBefore: number | undefined;
  cgroupAfter: number | undefined;
  nodeRssBefore: number;
  nodeRssAfter: number;
  /** /proc/cgroups memory count before, while held, after destroy. */
  memcgs: [number | undefined, number | undefined, number | undefined];
  gcDryRunMs: number | undefined;
  gcError: string | undefined;
  nodeSandboxes: number | undefined;
}

interface Throughput {
  count: number;
  createMs: number;
  destroyMs: number;
  spawnMs: number;
  error: string | undefined;
}

/** Per-sandbox view of the idle phase, in MiB (undefined pieces when nothing was held). */
function idlePerSandbox(r: IdleResult): Record<string, number | null> {
  const per = (bytes: number | undefined): number | null =>
    bytes === undefined || r.held === 0 || !Number.isFinite(bytes) ? null : bytes / r.held / MIB;
  const delta = (f: keyof Meminfo): number => r.after.mean[f] - r.before.mean[f];
  return {
    host_mib_per_sandbox: per(r.before.mean.MemAvailable - r.after.mean.MemAvailable),
    rss_mib_per_sandbox: per(r.procs.rssBytes),
    pss_mib_per_sandbox: per(r.procs.pssBytes),
    cgroup_mib_per_sandbox: r.cgroupAfter === undefined ? null : per(r.cgroupAfter - (r.cgroupBefore ?? 0)),
    hakod_rss_mib_per_sandbox: per(r.nodeRssAfter - r.nodeRssBefore),
    slab_mib_per_sandbox: per(delta('Slab')),
    sunreclaim_mib_per_sandbox: per(delta('SUnreclaim')),
    kernel_stack_mib_per_sandbox: per(delta('KernelStack')),
    page_tables_mib_per_sandbox: per(delta('PageTables')),
    percpu_mib_per_sandbox: per(delta('Percpu')),
    shmem_mib_per_sandbox: per(delta('Shmem')),
    not_returned_after_destroy_mib_per_sandbox: r.afterDestroy
      ? per(r.before.mean.MemAvailable - r.afterDestroy.mean.MemAvailable)
      : null,
  };
}

function meminfoJson(m: Meminfo): Record<string, number> {
  const out: Record<string, number> = {};
  for (const f of MEMINFO_FIELDS) out[`${f}_mib`] = round2(m[f] / MIB);
  return out;
}

function truncate(s: string, max: number): string {
  const one = s.replace(/\s+/g, ' ');
  return one.length > max ? `${one.slice(0, max - 1)}…` : one;
}

function verdict(ok: boolean | null): string {
  return ok === null ? 'skip' : ok ? 'pass' : 'MISS';
}

function fmtNum(x: number | null | undefined, digits = 1): string {
  return x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits);
}

function renderOpProfile(s: OpSummary): string {
  const share = (ms: number): string => `${((ms / s.total) * 100).toFixed(0)}%`;
  const rows: string[][] = [[`${s.op} RPC round trip (client)`, fmtMs(s.total), '', '100%']];
  const top = s.steps.filter((st) => st.depth === 1);
  for (const st of s.steps) {
    rows.push([`${'  '.repeat(st.depth)}${st.name}`, fmtMs(st.mean), fmtMs(st.p50), share(st.mean)]);
  }
  if (s.op !== 'exec') {
    const inner = top.reduce((a, st) => a + st.mean, 0);
    rows.push(['  gRPC + TLS + validation + backend', fmtMs(s.total - inner), '', share(s.total - inner)]);
  } else {
    const rt = s.steps.find((st) => st.name === 'runtime.exec')?.mean ?? 0;
    rows.push(['  round trip beyond the runtime exec', fmtMs(s.total - rt), '', share(s.total - rt)]);
  }
  return `profile: ${s.op}, mean of ${s.iterations} (steps nest; a step is the sum of its calls)\n${renderTable(
    [
      { header: 'step' },
      { header: 'mean ms', align: 'right' },
      { header: 'p50 ms', align: 'right' },
      { header: 'share', align: 'right' },
    ],
    rows,
  )}`;
}

/** Runs the agent bench; resolves to the process exit code. */
export async function agentBench(opts: AgentBenchOptions): Promise<number> {
  const progress = (msg: string): void => {
    if (!opts.json) process.stderr.write(`bench: ${msg}\n`);
  };
  const tag = randomBytes(3).toString('hex');
  const cleanup = new CleanupStack();
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const logger: Logger = createLogger({ level: opts.json ? 'error' : 'warn', name: 'hakod' });

  const failures: string[] = [];
  let outcomes = new Map<string, CaseOutcome>();
  const destroySamples: number[] = [];
  const backgroundSamples: number[] = [];
  const poolSamples: number[] = [];
  let poolInvalid = 0;
  const profiles: OpProfile[] = [];
  let profileMissing: string[] = [];
  let throughput: Throughput | undefined;
  let idle: IdleResult | undefined;
  let runtime: string | undefined;
  let cgroupMode = '?';
  const hosts: TestHost[] = [];
  let cleanupErrors: string[] = [];
  let leftovers: string[] = [];
  const loadStart = os.loadavg()[0] ?? 0;
  const cases: BenchCase[] = [];

  try {
    cgroupMode = (await detectCgroupLayout()).mode;
    const pkiDir = await mkdtemp(join(os.tmpdir(), `hako-bench-agent-${tag}-`));
    cleanup.push('pki dir', () => rm(pkiDir, { recursive: true, force: true }));
    await certsInit({ dir: pkiDir, hosts: [], days: 1, force: false });

    // the cold hakod holds the idle sandboxes: its quota volume and sandbox cap fit them all
    const room = opts.idle + 32;
    const thCold = createTestHost({ volume: `${room * (LIMITS.diskBytes / MIB)}m` });
    hosts.push(thCold);
    cleanup.push('cold test host teardown', () => thCold.teardown());
    const thPool = createTestHost();
    hosts.push(thPool);
    cleanup.push('pool test host teardown', () => thPool.teardown());

    progress(`starting hakod (no pool) in env ${thCold.hakoEnv}`);
    const cold: RunningAgent = await startAgent(
      hakodEnv(thCold, pkiDir, {
        AGENT_POOL_MIN: '0',
        AGENT_POOL_MAX: '0',
        AGENT_MAX_SANDBOXES: String(room),
      }),
      { logger: logger.child({ hakod: 'cold' }) },
    );
    const closeCold = once(() => cold.close({ destroyAll: true }));
    cleanup.push('cold hakod close', closeCold);
    progress(`starting hakod (pool of ${POOL_SIZE}) in env ${thPool.hakoEnv}`);
    const pool: RunningAgent = await startAgent(
      hakodEnv(thPool, pkiDir, {
        AGENT_POOL_MIN: String(POOL_SIZE),
        AGENT_POOL_MAX: String(POOL_SIZE),
        AGENT_MAX_SANDBOXES: String(POOL_SIZE + 8),
      }),
      { logger: logger.child({ hakod: 'pool' }) },
    );
    const closePool = once(() => pool.close({ destroyAll: true }));
    cleanup.push('pool hakod close', closePool);

    const coldClient = createAgentClient({ address: cold.address, tls: { dir: pkiDir } });
    cleanup.push('cold client', () => coldClient.close());
    const poolClient = createAgentClient({ address: pool.address, tls: { dir: pkiDir } });
    cleanup.push('pool client', () => poolClient.close());
    runtime = (await callUnary(coldClient, 'getNodeInfo', {})).runtime;

    // ------------------------------------------------------------ interleaved latency rounds
    const execBox = await createOne(coldClient);
    await waitWarm(poolClient, POOL_SIZE, 120_000);
    cases.push(
      spawnCase(),
      {
        name: 'create',
        critical: true,
        iterate: async (warmup) => {
          await cold.manager.settled();
          const t0 = performance.now();
          const sb = await createOne(coldClient);
          const ms = performance.now() - t0;
          const t1 = performance.now();
          await destroyOne(coldClient, sb.id);
          if (!warmup) destroySamples.push(performance.now() - t1);
          if (sb.fromPool) throw new Error('a create on the hakod without a pool came from a pool');
          const t2 = performance.now();
          await cold.manager.settled();
          if (!warmup) backgroundSamples.push(performance.now() - t2);
          return ms;
        },
      },
      {
        name: 'exec',
        critical: true,
        iterate: async () => {
          await cold.manager.settled();
          const t0 = performance.now();
          await execTrue(coldClient, execBox.id);
          return performance.now() - t0;
        },
      },
      {
        name: 'create_pool',
        critical: true,
        iterate: async (warmup) => {
          await waitWarm(poolClient, POOL_SIZE, 60_000);
          const t0 = performance.now();
          const sb = await createOne(poolClient);
          const ms = performance.now() - t0;
          if (!warmup) {
            if (sb.fromPool) poolSamples.push(ms);
            else poolInvalid++;
          }
          await destroyOne(poolClient, sb.id);
          // the refill runs now, not under the next case
          await waitWarm(poolClient, POOL_SIZE, 60_000);
          return ms;
        },
      },
    );
    outcomes = await runInterleavedWithProgress(
      cases,
      { n: opts.n, warmup: opts.warmup, signal: abort.signal },
      progress,
    );
    await destroyOne(coldClient, execBox.id);
    progress('closing the pool hakod');
    await closePool();

    // ------------------------------------------------------------ phase profile
    if (!abort.signal.aborted) {
      const k = Math.min(opts.n, PROFILE_ITERATIONS);
      progress(`profiling ${k} create/exec/destroy calls through hakod's phases`);
      const profiler = new AgentProfiler();
      profiler.instrument(cold);
      profileMissing = profiler.missing;
      for (let i = 0; i < k && !abort.signal.aborted; i++) {
        let id = '';
        profiles.push(
          await profiler.profile('create', async () => {
            id = (await createOne(coldClient)).id;
          }),
        );
        profiles.push(await profiler.profile('exec', () => execTrue(coldClient, id)));
        profiles.push(await profiler.profile('destroy', () => destroyOne(coldClient, id)));
      }
    }

    // ------------------------------------------------------------ throughput
    if (!abort.signal.aborted) {
      const count = Math.max(opts.n, 8);
      progress(`throughput: ${count} cold creates, ${CONCURRENCY} at a time`);
      const c = await withConcurrency(count, CONCURRENCY, () => createOne(coldClient), abort.signal);
      const ids = c.results.map((r) => r.id);
      const d = await withConcurrency(
        ids.length,
        CONCURRENCY,
        (i) => destroyOne(coldClient, ids[i] ?? ''),
        abort.signal,
      );
      const s = await withConcurrency(count, CONCURRENCY, () => timeCommand('true', []), abort.signal);
      const error = c.error ?? d.error ?? s.error;
      throughput = {
        count: c.results.length,
        createMs: c.ms,
        destroyMs: d.ms,
        spawnMs: s.ms,
        error: error === undefined ? undefined : errText(error),
      };
      if (error !== undefined) failures.push(`throughput: ${errText(error)}`);
    }

    // ------------------------------------------------------------ idle sandboxes
    if (!abort.signal.aborted && opts.idle > 0) {
      progress(
        `idle: measuring host memory, then creating ${opts.idle} idle sandboxes, ${CONCURRENCY} at a time`,
      );
      const before = await settledMeminfo();
      const cgroupBefore = await envCgroupMemory(thCold.hakoEnv);
      const memcgBefore = await memoryCgroupCount();
      const nodeRssBefore = process.memoryUsage().rss;
      const createLatencies: number[] = [];
      const c = await withConcurrency(
        opts.idle,
        CONCURRENCY,
        async () => {
          const t0 = performance.now();
          const sb = await createOne(coldClient);
          createLatencies.push(performance.now() - t0);
          return sb;
        },
        abort.signal,
        (done) => {
          if (done % 50 === 0) progress(`idle: ${done}/${opts.idle} created`);
        },
      );
      const ids = c.results.map((r) => r.id);
      if (c.error !== undefined) progress(`idle: creates stopped at ${ids.length}: ${errText(c.error)}`);
      progress(`idle: holding ${ids.length}; measuring`);
      const after = await settledMeminfo();
      const nodeRssAfter = process.memoryUsage().rss;
      const procs = await sandboxProcessMemory(thCold.hakoEnv);
      const cgroupAfter = await envCgroupMemory(thCold.hakoEnv);
      const memcgHeld = await memoryCgroupCount();
      const nodeSandboxes = await callUnary(coldClient, 'getNodeInfo', {})
        .then((i) => i.sandboxes)
        .catch(() => undefined);
      let gcDryRunMs: number | undefined;
      let gcError: string | undefined;
      try {
        const t0 = performance.now();
        await callUnary(
          coldClient,
          'garbageCollect',
          { prefix: '', dryRun: true },
          { timeoutMs: RPC_TIMEOUT_MS },
        );
        gcDryRunMs = performance.now() - t0;
      } catch (err) {
        gcError = errText(err);
      }
      progress(`idle: destroying ${ids.length}, ${CONCURRENCY} at a time`);
      // not aborted by Ctrl-C: these must go (and close() would take them otherwise)
      const d = await withConcurrency(
        ids.length,
        CONCURRENCY,
        (i) => destroyOne(coldClient, ids[i] ?? ''),
        new AbortController().signal,
      );
      const afterDestroy = d.error === undefined ? await settledMeminfo() : undefined;
      const memcgAfterDestroy = await memoryCgroupCount();
      idle = {
        requested: opts.idle,
        held: ids.length,
        error: c.error === undefined ? undefined : errText(c.error),
        errorCode: c.error === undefined ? undefined : errCode(c.error),
        createMs: c.ms,
        createLatencies,
        destroyMs: d.ms,
        destroyError: d.error === undefined ? undefined : errText(d.error),
        before,
        after,
        afterDestroy,
        procs,
        cgroupBefore,
        cgroupAfter,
        nodeRssBefore,
        nodeRssAfter,
        memcgs: [memcgBefore, memcgHeld, memcgAfterDestroy],
        gcDryRunMs,
        gcError,
        nodeSandboxes,
      };
      if (idle.destroyError) failures.push(`idle: destroying: ${idle.destroyError}`);
    }
  } catch (err) {
    failures.push(errText(err));
  } finally {
    progress('cleaning up');
    cleanupErrors = (await cleanup.run()).map(
      (e) => `${e.message}${e.cause ? `: ${(e.cause as Error).message}` : ''}`,
    );
    leftovers = hosts.flatMap((h) => h.leftovers());
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  const loadEnd = os.loadavg()[0] ?? 0;

  // ---------------------------------------------------------------- results
  const failed = new Map<string, string>();
  const summaries = new Map<string, Summary | undefined>();
  for (const [name, o] of outcomes) {
    summaries.set(name, summarize(o.samples));
    if (o.error !== undefined) failed.set(name, o.error);
  }
  // the pool row counts only claims hakod marked from_pool
  summaries.set('create_pool', summarize(poolSamples));
  summaries.set('destroy', summarize(destroySamples));
  summaries.set('background', summarize(backgroundSamples));
  const p50 = (key: string): number | null => summaries.get(key)?.p50 ?? null;
  const p95 = (key: string): number | null => summaries.get(key)?.p95 ?? null;
  const createP50 = p50('create');
  const poolP50 = p50('create_pool');
  const execP50 = p50('exec');
  const perSandbox = idle ? idlePerSandbox(idle) : undefined;
  const hostMib = perSandbox?.host_mib_per_sandbox ?? null;
  const rate = (count: number, ms: number): number | null => (ms > 0 ? count / (ms / 1000) : null);
  const createsPerS = throughput && !throughput.error ? rate(throughput.count, throughput.createMs) : null;
  const destroysPerS = throughput && !throughput.error ? rate(throughput.count, throughput.destroyMs) : null;
  const spawnsPerS = throughput && !throughput.error ? rate(throughput.count, throughput.spawnMs) : null;
  const idleHeld = idle?.held ?? null;
  // the first and the last tenth (at most 50) of the idle creates: does a create slow down with
  // the number of sandboxes already held?
  const slice = idle ? Math.min(50, Math.floor(idle.createLatencies.length / 10)) : 0;
  const idleFirst = idle && slice > 0 ? summarize(idle.createLatencies.slice(0, slice)) : undefined;
  const idleLast = idle && slice > 0 ? summarize(idle.createLatencies.slice(-slice)) : undefined;
  // other work on the machine moves MemAvailable too: flag a delta the 1 s drift is a big part of
  const memoryDrift = idle
    ? Math.max(Math.abs(idle.before.availableDrift), Math.abs(idle.after.availableDrift))
    : 0;
  const memoryDelta = idle ? Math.abs(idle.before.mean.MemAvailable - idle.after.mean.MemAvailable) : 0;
  const memoryNoisy = idle !== undefined && memoryDrift > 0.25 * memoryDelta;

  const targets: { key: string; text: string; ok: boolean | null }[] = [
    {
      key: 'create_p50_le_50ms',
      text: `cold create p50 <= ${TARGET_CREATE_MS} ms`,
      ok: createP50 === null ? null : createP50 <= TARGET_CREATE_MS,
    },
    {
      key: 'create_pool_p50_le_5ms',
      text: `pool claim p50 <= ${TARGET_POOL_MS} ms`,
      ok: poolP50 === null ? null : poolP50 <= TARGET_POOL_MS,
    },
    {
      key: 'exec_p50_le_15ms',
      text: `exec p50 <= ${TARGET_EXEC_MS} ms`,
      ok: execP50 === null ? null : execP50 <= TARGET_EXEC_MS,
    },
    {
      key: 'idle_ge_500',
      text: `>= ${TARGET_IDLE} idle sandboxes`,
      // a run asked for fewer cannot show it, unless it failed short of what it asked
      ok:
        idleHeld === null || !idle
          ? null
          : idleHeld >= TARGET_IDLE
            ? true
            : idle.requested < TARGET_IDLE && idle.error === undefined
              ? null
              : false,
    },
    {
      key: 'host_mib_per_sandbox_le_4',
      text: `host memory <= ${TARGET_MIB_PER_SANDBOX} MiB per idle sandbox`,
      ok: hostMib === null ? null : hostMib <= TARGET_MIB_PER_SANDBOX,
    },
  ];
  const targetOf: Record<string, { key: string; text: string; ok: boolean | null } | undefined> = {
    create: targets[0],
    create_pool: targets[1],
    exec: targets[2],
  };
  const criticalFailures = [
    ...failures,
    ...cases.filter((c) => c.critical && failed.has(c.name)).map((c) => `${c.name}: ${failed.get(c.name)}`),
  ];
  const profileSummaries = new Map(PROFILED_OPS.map((op) => [op, summarizeOp(op, profiles)] as const));

  // ---------------------------------------------------------------- human output
  if (!opts.json) {
    const lines: string[] = [];
    lines.push(
      `hako agent bench: hakod in-process over mTLS on 127.0.0.1, n=${opts.n} (+${opts.warmup} warm-up, interleaved), ` +
        `runtime ${runtime ?? '?'}, cgroup ${cgroupMode}, kernel ${os.release()}, ${os.cpus().length} cpus, ` +
        `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, load ${loadStart.toFixed(2)} -> ${loadEnd.toFixed(2)}`,
      '',
    );
    const latencyRows: [string, string, string][] = [
      ['spawn', 'spawn: child_process true (floor)', '-'],
      ['create', 'CreateSandbox, cold (pool off)', `<= ${TARGET_CREATE_MS} ms`],
      ['create_pool', 'CreateSandbox, warm pool claim', `<= ${TARGET_POOL_MS} ms`],
      ['exec', 'Exec true, start to exit', `<= ${TARGET_EXEC_MS} ms`],
      ['destroy', 'DestroySandbox', '-'],
      ['background', 'background work a create+destroy left (untimed above)', '-'],
    ];
    const rows = latencyRows.map(([key, label, target]) => {
      const s = summaries.get(key);
      const t = targetOf[key];
      let note = failed.get(key) ?? '';
      if (key === 'create_pool' && poolInvalid > 0) {
        note = `${poolInvalid} claim(s) not from the pool, left out${note ? `; ${note}` : ''}`;
      }
      return [
        label,
        String(s?.n ?? 0),
        fmtMs(s?.p50),
        fmtMs(s?.p95),
        target,
        t ? verdict(t.ok) : '',
        truncate(note, 100),
      ];
    });
    lines.push(
      renderTable(
        [
          { header: 'case' },
          { header: 'n', align: 'right' },
          { header: 'p50 ms', align: 'right' },
          { header: 'p95 ms', align: 'right' },
          { header: 'target' },
          { header: 'result' },
          { header: 'note' },
        ],
        rows,
      ),
      '',
      `ratios of p50: create/spawn ${fmtRatio(ratio(createP50, p50('spawn')))}, ` +
        `pool claim/spawn ${fmtRatio(ratio(poolP50, p50('spawn')))}, exec/spawn ${fmtRatio(ratio(execP50, p50('spawn')))}`,
      '',
    );

    const cap: string[][] = [];
    if (throughput) {
      cap.push(
        ['creates/s, cold, concurrency 4', String(throughput.count), fmtNum(createsPerS), '-', ''],
        ['destroys/s, concurrency 4', String(throughput.count), fmtNum(destroysPerS), '-', ''],
        ['spawns/s of true, concurrency 4 (floor)', String(throughput.count), fmtNum(spawnsPerS), '-', ''],
      );
    }
    if (idle && perSandbox) {
      const mib = (k: string): string => fmtNum(perSandbox[k], 2);
      cap.push(
        [
          'idle sandboxes held at once',
          String(idle.requested),
          String(idle.held),
          `>= ${TARGET_IDLE}`,
          verdict(targets[3]?.ok ?? null),
        ],
        [
          'host MiB per sandbox (MemAvailable drop)',
          String(idle.held),
          mib('host_mib_per_sandbox'),
          `<= ${TARGET_MIB_PER_SANDBOX}`,
          verdict(targets[4]?.ok ?? null),
        ],
        [
          '  RSS of sandbox processes, MiB each',
          String(idle.procs.processes),
          mib('rss_mib_per_sandbox'),
          '',
          '',
        ],
        [
          '  PSS of sandbox processes, MiB each',
          String(idle.procs.processes),
          mib('pss_mib_per_sandbox'),
          '',
          '',
        ],
        ['  charged to the env cgroup, MiB each', String(idle.held), mib('cgroup_mib_per_sandbox'), '', ''],
        ['  hakod (this process) RSS, MiB each', String(idle.held), mib('hakod_rss_mib_per_sandbox'), '', ''],
        ['  Slab delta, MiB each', String(idle.held), mib('slab_mib_per_sandbox'), '', ''],
        ['  SUnreclaim delta, MiB each', String(idle.held), mib('sunreclaim_mib_per_sandbox'), '', ''],
        ['  KernelStack delta, MiB each', String(idle.held), mib('kernel_stack_mib_per_sandbox'), '', ''],
        ['  PageTables delta, MiB each', String(idle.held), mib('page_tables_mib_per_sandbox'), '', ''],
        ['  Percpu delta, MiB each', String(idle.held), mib('percpu_mib_per_sandbox'), '', ''],
        ['  Shmem (tmpfs) delta, MiB each', String(idle.held), mib('shmem_mib_per_sandbox'), '', ''],
        [
          '  MemAvailable not back after destroy, MiB each',
          String(idle.held),
          mib('not_returned_after_destroy_mib_per_sandbox'),
          '',
          '',
        ],
        [
          'idle: create wall time, s (creates/s)',
          String(idle.held),
          `${fmtNum(idle.createMs / 1000)} (${fmtNum(rate(idle.held, idle.createMs))})`,
          '',
          '',
        ],
        [
          `idle: create p50, first ${slice} (concurrency 4), ms`,
          String(idleFirst?.n ?? 0),
          fmtMs(idleFirst?.p50),
          '',
          '',
        ],
        [
          `idle: create p50, last ${slice} (${Math.max(0, idle.held - slice)}+ held), ms`,
          String(idleLast?.n ?? 0),
          fmtMs(idleLast?.p50),
          '',
          '',
        ],
        [
          'idle: destroy wall time, s (destroys/s)',
          String(idle.held),
          `${fmtNum(idle.destroyMs / 1000)} (${fmtNum(rate(idle.held, idle.destroyMs))})`,
          '',
          '',
        ],
        [
          `GarbageCollect dry run with ${idle.held} alive, ms`,
          '1',
          idle.gcError ? 'failed' : fmtNum(idle.gcDryRunMs),
          '',
          '',
        ],
      );
    }
    if (cap.length > 0) {
      lines.push(
        renderTable(
          [
            { header: 'capacity' },
            { header: 'n', align: 'right' },
            { header: 'value', align: 'right' },
            { header: 'target' },
            { header: 'result' },
          ],
          cap,
        ),
        '',
      );
    }
    if (idle) {
      lines.push(
        `idle memory: MemAvailable ${fmtNum(idle.before.mean.MemAvailable / MIB, 0)} -> ${fmtNum(idle.after.mean.MemAvailable / MIB, 0)} MiB` +
          (idle.afterDestroy
            ? ` -> ${fmtNum(idle.afterDestroy.mean.MemAvailable / MIB, 0)} MiB after destroy`
            : '') +
          `; drift within a 1 s reading pair ${fmtNum(idle.before.availableDrift / MIB, 1)} / ${fmtNum(idle.after.availableDrift / MIB, 1)} MiB` +
          ` (other work on the machine moves these)`,
        `memory cgroups on the host (/proc/cgroups, removed ones the kernel has not freed yet included): ` +
          idle.memcgs.map((x) => (x === undefined ? '?' : String(x))).join(' -> ') +
          ' (before, held, after destroy)',
        '',
      );
    }
    lines.push('targets:');
    for (const t of targets) lines.push(`  ${verdict(t.ok).toUpperCase().padEnd(4)}  ${t.text}`);
    for (const op of PROFILED_OPS) {
      const s = profileSummaries.get(op);
      if (s) lines.push('', renderOpProfile(s));
    }
    if (profileMissing.length > 0)
      lines.push(`profile: not reachable (not timed): ${profileMissing.join(', ')}`);
    const notes: string[] = [];
    if (idle?.error) notes.push(`idle: creates stopped at ${idle.held} of ${idle.requested}: ${idle.error}`);
    if (memoryNoisy) {
      notes.push(
        `idle memory is noisy: MemAvailable moved up to ${fmtNum(memoryDrift / MIB)} MiB within one second, ` +
          `against a ${fmtNum(memoryDelta / MIB)} MiB drop for ${idle?.held ?? 0} sandboxes; hold more (--idle) or rerun on a quiet machine`,
      );
    }
    if (idle?.gcError) notes.push(`idle: GarbageCollect dry run failed: ${idle.gcError}`);
    for (const f of criticalFailures) notes.push(`FAILED: ${f}`);
    for (const e of cleanupErrors) notes.push(`cleanup error: ${e}`);
    if (leftovers.length > 0) notes.push(`WARNING: left behind after teardown: ${leftovers.join('; ')}`);
    if (abort.signal.aborted) notes.push('interrupted: results cover what was completed');
    if (notes.length > 0) lines.push('', ...notes.map((x) => `note: ${x}`));
    lines.push('');
    process.stdout.write(`${lines.join('\n')}\n`);
  } else if (leftovers.length > 0) {
    process.stderr.write(`bench: WARNING: left behind after teardown: ${leftovers.join('; ')}\n`);
  }

  // ---------------------------------------------------------------- JSON (last line)
  const results: Record<string, JsonValue> = {};
  for (const key of ['spawn', 'create', 'create_pool', 'exec', 'destroy', 'background']) {
    const s = summaries.get(key);
    results[key] = s ? { ...s } : null;
  }
  const profileJson: Record<string, JsonValue> = {};
  for (const op of PROFILED_OPS) {
    const s = profileSummaries.get(op);
    profileJson[op] = s
      ? {
          iterations: s.iterations,
          total_mean_ms: s.total,
          steps_mean_ms: Object.fromEntries(s.steps.map((st) => [st.name, st.mean])),
        }
      : null;
  }
  const out: Record<string, JsonValue> = {
    bench: 'agent',
    n: opts.n,
    warmup: opts.warmup,
    runtime: runtime ?? null,
    create_p50_ms: createP50,
    create_p95_ms: p95('create'),
    create_pool_p50_ms: poolP50,
    create_pool_p95_ms: p95('create_pool'),
    create_pool_invalid: poolInvalid,
    exec_p50_ms: execP50,
    exec_p95_ms: p95('exec'),
    destroy_p50_ms: p50('destroy'),
    destroy_p95_ms: p95('destroy'),
    background_p50_ms: p50('background'),
    spawn_p50_ms: p50('spawn'),
    creates_per_s: createsPerS,
    destroys_per_s: destroysPerS,
    spawns_per_s: spawnsPerS,
    throughput_count: throughput?.count ?? null,
    idle_requested: opts.idle,
    idle_sandboxes: idleHeld,
    idle_error_code: idle?.errorCode ?? null,
    idle_error: idle?.error ?? null,
    host_mib_per_sandbox: hostMib,
    host_memory_noisy: idle ? memoryNoisy : null,
    idle_detail: idle
      ? {
          ...perSandbox,
          processes: idle.procs.processes,
          create_s: idle.createMs / 1000,
          create_p50_first_ms: idleFirst?.p50 ?? null,
          create_p50_last_ms: idleLast?.p50 ?? null,
          destroy_s: idle.destroyMs / 1000,
          gc_dry_run_ms: idle.gcDryRunMs ?? null,
          node_info_sandboxes: idle.nodeSandboxes ?? null,
          memory_cgroups: idle.memcgs.map((x) => x ?? null),
          meminfo_before: meminfoJson(idle.before.mean),
          meminfo_after: meminfoJson(idle.after.mean),
          meminfo_after_destroy: idle.afterDestroy ? meminfoJson(idle.afterDestroy.mean) : null,
          available_drift_mib: [idle.before.availableDrift / MIB, idle.after.availableDrift / MIB],
        }
      : null,
    ratios: {
      create_spawn: ratio(createP50, p50('spawn')),
      create_pool_spawn: ratio(poolP50, p50('spawn')),
      exec_spawn: ratio(execP50, p50('spawn')),
    },
    targets: Object.fromEntries(targets.map((t) => [t.key, t.ok])),
    pass: targets.every((t) => t.ok === true),
    results,
    profile: profileJson,
    failed: Object.fromEntries(failed),
    failures: criticalFailures,
    host: {
      kernel: os.release(),
      cpus: os.cpus().length,
      memory_gib: os.totalmem() / 2 ** 30,
      node: process.version,
      cgroup_mode: cgroupMode,
      loadavg_start: loadStart,
      loadavg_end: loadEnd,
    },
    cleanup_errors: cleanupErrors,
    leftovers,
    interrupted: abort.signal.aborted,
  };
  process.stdout.write(`${jsonLine(out)}\n`);
  if (abort.signal.aborted) return 130;
  return criticalFailures.length > 0 ? 1 : 0;
}
