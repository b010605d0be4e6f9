/**
 * Where a one-shot sandbox spends its time, measured from outside SandboxHost: prepare(),
 * runPrepared() and the destroy() it ends with are timed separately, and every driver call the host
 * makes (image store, quota, cgroups, network, proxy, runtime) is timed by wrapping the driver
 * objects' methods. What is left of a phase after its driver calls is the host's own code (bundle
 * directory, /etc files, OCI spec, rm of the bundle). Driver calls may overlap (quota and cgroup
 * creation run concurrently): the "outside driver calls" line subtracts their union, not their sum.
 */
import type { SandboxHost } from '@hako/sandbox';
import { coveredLength } from './lib/intervals.js';
import type { Interval } from './lib/intervals.js';
import { isChildProcess, isThenable } from './lib/guards.js';
import { mean, summarize } from './lib/stats.js';

export type Phase = 'prepare' | 'run' | 'destroy';
const PHASES: readonly Phase[] = ['prepare', 'run', 'destroy'];

/** The driver methods timed, by SandboxHostDeps field. */
const DRIVER_METHODS: Readonly<Record<string, readonly string[]>> = {
  images: ['get'],
  quota: ['create', 'remove'],
  cgroups: ['create', 'stats', 'remove'],
  network: ['init', 'add', 'del'],
  proxy: ['listen', 'register', 'unregister'],
  runtime: ['run', 'kill', 'delete'],
};

interface Call extends Interval {
  readonly phase: Phase;
  readonly name: string;
}

export interface IterationProfile {
  readonly phases: Readonly<Record<Phase, number>>;
  readonly total: number;
  /** Summed duration per `phase name` of every driver call in that phase. */
  readonly calls: ReadonlyMap<string, number>;
  /** Per phase: its duration minus the union of its driver calls. */
  readonly hostCode: Readonly<Record<Phase, number>>;
}

export interface ProfileStep {
  readonly phase: Phase;
  readonly name: string;
  readonly mean: number;
  readonly p50: number;
}

export interface ProfileSummary {
  readonly iterations: number;
  readonly total: number;
  readonly phases: Readonly<Record<Phase, number>>;
  readonly hostCode: Readonly<Record<Phase, number>>;
  readonly steps: readonly ProfileStep[];
}

/** Records driver calls while an iteration is being profiled; idle otherwise. */
export class ProfileRecorder {
  private active = false;
  private phase: Phase = 'prepare';
  private calls: Call[] = [];
  private t0 = 0;
  private t1 = 0;
  private d0 = NaN;
  private d1 = NaN;
  /** What could be wrapped (for the report), and what the host did not expose. */
  readonly instrumented: string[] = [];
  readonly missing: string[] = [];

  /**
   * Wraps the host's driver objects and its destroy() so calls are recorded while profiling. The
   * drivers are reached through the host's (private) deps; when they are not where this expects
   * them, only the phase totals are measured and `missing` says what was not found.
   */
  instrument(host: SandboxHost): void {
    const deps = (host as unknown as { d?: Record<string, unknown> }).d;
    for (const [dep, methods] of Object.entries(DRIVER_METHODS)) {
      const obj = deps?.[dep] as Record<string, unknown> | undefined;
      for (const m of methods) {
        if (obj && typeof obj[m] === 'function') {
          obj[m] = this.wrap(`${dep}.${m}`, obj, obj[m] as (...a: unknown[]) => unknown);
          this.instrumented.push(`${dep}.${m}`);
        } else if (dep !== 'network' && dep !== 'proxy') {
          this.missing.push(`${dep}.${m}`);
        }
      }
    }
    const destroy = host.destroy.bind(host);
    host.destroy = async (sb) => {
      if (!this.active) return destroy(sb);
      const prev = this.phase;
      this.phase = 'destroy';
      this.d0 = performance.now();
      try {
        return await destroy(sb);
      } finally {
        this.d1 = performance.now();
        this.phase = prev;
      }
    };
  }

  private wrap(name: string, obj: object, fn: (...a: unknown[]) => unknown): (...a: unknown[]) => unknown {
    return (...args: unknown[]): unknown => {
      if (!this.active) return fn.apply(obj, args);
      const phase = this.phase;
      const start = performance.now();
      const done = (): void => {
        this.calls.push({ phase, name, start, end: performance.now() });
      };
      const result = fn.apply(obj, args);
      if (isThenable(result)) result.then(done, done);
      else if (isChildProcess(result)) result.once('exit', done);
      else done();
      return result;
    };
  }

  /** Starts an iteration in phase `prepare`. */
  begin(): void {
    this.active = true;
    this.calls = [];
    this.phase = 'prepare';
    this.d0 = NaN;
    this.d1 = NaN;
    this.t0 = performance.now();
  }

  /** prepare() returned: runPrepared() starts now. */
  markRun(): void {
    this.t1 = performance.now();
    this.phase = 'run';
  }

  /** runPrepared() returned: the iteration's profile. */
  end(): IterationProfile {
    const t2 = performance.now();
    this.active = false;
    const destroyMs = Number.isNaN(this.d0) ? 0 : this.d1 - this.d0;
    const phases: Record<Phase, number> = {
      prepare: this.t1 - this.t0,
      run: t2 - this.t1 - destroyMs,
      destroy: destroyMs,
    };
    const windows: Record<Phase, [number, number]> = {
      prepare: [this.t0, this.t1],
      run: [this.t1, Number.isNaN(this.d0) ? t2 : this.d0],
      destroy: Number.isNaN(this.d0) ? [t2, t2] : [this.d0, this.d1],
    };
    const calls = new Map<string, number>();
    for (const c of this.calls) {
      const key = `${c.phase} ${c.name}`;
      calls.set(key, (calls.get(key) ?? 0) + (c.end - c.start));
    }
    const hostCode = {} as Record<Phase, number>;
    for (const p of PHASES) {
      const [from, to] = windows[p];
      const covered = coveredLength(
        this.calls.filter((c) => c.phase === p),
        from,
        to,
      );
      hostCode[p] = Math.max(0, phases[p] - covered);
    }
    return { phases, total: t2 - this.t0, calls, hostCode };
  }

  /** Drops an iteration that failed. */
  abort(): void {
    this.active = false;
  }
}

/** Means over iterations; a step missing from an iteration counts as 0 there. */
export function summarizeProfiles(its: readonly IterationProfile[]): ProfileSummary | undefined {
  if (its.length === 0) return undefined;
  const keys: string[] = [];
  for (const it of its) for (const k of it.calls.keys()) if (!keys.includes(k)) keys.push(k);
  const steps: ProfileStep[] = [];
  for (const p of PHASES) {
    for (const k of keys) {
      const [phase, name] = k.split(' ') as [Phase, string];
      if (phase !== p) continue;
      const values = its.map((it) => it.calls.get(k) ?? 0);
      steps.push({ phase, name, mean: mean(values), p50: summarize(values)?.p50 ?? NaN });
    }
  }
  const byPhase = (f: (it: IterationProfile) => Record<Phase, number>): Record<Phase, number> => ({
    prepare: mean(its.map((it) => f(it).prepare)),
    run: mean(its.map((it) => f(it).run)),
    destroy: mean(its.map((it) => f(it).destroy)),
  });
  return {
    iterations: its.length,
    total: mean(its.map((it) => it.total)),
    phases: byPhase((it) => it.phases),
    hostCode: byPhase((it) => it.hostCode),
    steps,
  };
}

export const PHASE_LABEL: Readonly<Record<Phase, string>> = {
  prepare: 'prepare()',
  run: 'runPrepared() without destroy',
  destroy: 'destroy() (cleanup stack)',
};

export { PHASES };
