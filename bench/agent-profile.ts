/**
 * Where one CreateSandbox, Exec and DestroySandbox spend their time inside an in-process hakod:
 * the manager's, the sandbox host's and the drivers' methods are wrapped (on the instances, reached
 * through their private deps the way sandbox-profile.ts reaches SandboxHost's) and timed while an
 * operation is being profiled. Steps nest (the RPC contains the manager call, which contains
 * host.start, which contains prepare and the runtime); a step's time is its calls summed per
 * operation. What the RPC took beyond the manager call is gRPC, TLS, validation and the backend.
 */
import type { RunningAgent } from '../packages/agentd/src/main.js';
import { isChildProcess, isThenable } from './lib/guards.js';
import { mean, summarize } from './lib/stats.js';

export type ProfiledOp = 'create' | 'exec' | 'destroy';
export const PROFILED_OPS: readonly ProfiledOp[] = ['create', 'exec', 'destroy'];

/** What is wrapped: object path (from the manager) → methods, with their nesting depth for display. */
const TARGETS: readonly { path: readonly string[]; label: string; methods: readonly string[] }[] = [
  { path: [], label: 'manager', methods: ['createSandbox', 'exec', 'destroySandbox'] },
  { path: ['d', 'records'], label: 'records', methods: ['put', 'remove'] },
  { path: ['d', 'host'], label: 'host', methods: ['start', 'prepare', 'exec', 'destroy'] },
  { path: ['d', 'host', 'd', 'images'], label: 'images', methods: ['get'] },
  { path: ['d', 'host', 'd', 'quota'], label: 'quota', methods: ['create', 'remove'] },
  { path: ['d', 'host', 'd', 'cgroups'], label: 'cgroups', methods: ['create', 'remove'] },
  {
    path: ['d', 'host', 'd', 'runtime'],
    label: 'runtime',
    methods: ['runDetached', 'exec', 'kill', 'delete', 'state'],
  },
];

/** Display order and indentation of the steps of each operation (others are appended). */
const LAYOUT: Readonly<Record<ProfiledOp, readonly [string, number][]>> = {
  create: [
    ['manager.createSandbox', 1],
    ['host.start', 2],
    ['host.prepare', 3],
    ['images.get', 4],
    ['quota.create', 4],
    ['cgroups.create', 4],
    ['runtime.runDetached', 3],
    ['records.put', 2],
  ],
  exec: [
    ['manager.exec', 1],
    ['host.exec', 2],
    ['runtime.exec', 1],
  ],
  destroy: [
    ['manager.destroySandbox', 1],
    ['host.destroy', 2],
    ['runtime.delete', 3],
    ['runtime.kill', 3],
    ['quota.remove', 3],
    ['cgroups.remove', 3],
    ['records.remove', 2],
  ],
};

export interface OpProfile {
  readonly op: ProfiledOp;
  /** The client's round trip. */
  readonly total: number;
  /** Summed duration per step name. */
  readonly steps: ReadonlyMap<string, number>;
}

export interface OpStep {
  readonly name: string;
  readonly depth: number;
  readonly mean: number;
  readonly p50: number;
}

export interface OpSummary {
  readonly op: ProfiledOp;
  readonly iterations: number;
  readonly total: number;
  readonly steps: readonly OpStep[];
}

/** Wraps an agent's internals once; records calls only between begin() and end(). */
export class AgentProfiler {
  private active = false;
  private calls: { name: string; ms: number }[] = [];
  readonly instrumented: string[] = [];
  readonly missing: string[] = [];

  instrument(agent: RunningAgent): void {
    for (const t of TARGETS) {
      let obj: unknown = agent.manager;
      for (const k of t.path) obj = (obj as Record<string, unknown> | undefined)?.[k];
      const o = obj as Record<string, unknown> | undefined;
      for (const m of t.methods) {
        const name = `${t.label}.${m}`;
        const fn = o?.[m];
        if (!o || typeof fn !== 'function') {
          this.missing.push(name);
          continue;
        }
        o[m] = this.wrap(name, o, fn as (...a: unknown[]) => unknown);
        this.instrumented.push(name);
      }
    }
  }

  private wrap(name: string, obj: object, fn: (...a: unknown[]) => unknown): (...a: unknown[]) => unknown {
    return (...args: unknown[]): unknown => {
      if (!this.active) return fn.apply(obj, args);
      const start = performance.now();
      const done = (): void => {
        this.calls.push({ name, ms: performance.now() - start });
      };
      let result: unknown;
      try {
        result = fn.apply(obj, args);
      } catch (err) {
        done();
        throw err;
      }
      // a runtime's exec returns its ChildProcess: the step lasts until the process exits
      if (isThenable(result)) result.then(done, done);
      else if (isChildProcess(result)) result.once('exit', done);
      else done(); // host.exec returns { child, pid } synchronously: its own part is the call
      return result;
    };
  }

  /** Times `fn` (the client's round trip) with recording on. */
  async profile(op: ProfiledOp, fn: () => Promise<void>): Promise<OpProfile> {
    this.calls = [];
    this.active = true;
    const start = performance.now();
    try {
      await fn();
    } finally {
      this.active = false;
    }
    const total = performance.now() - start;
    // a child's exit event can trail the RPC's end by a tick
    await new Promise((r) => setImmediate(r));
    const steps = new Map<string, number>();
    for (const c of this.calls) steps.set(c.name, (steps.get(c.name) ?? 0) + c.ms);
    return { op, total, steps };
  }
}

/** Means and medians per step over the profiled iterations of one operation. */
export function summarizeOp(op: ProfiledOp, its: readonly OpProfile[]): OpSummary | undefined {
  const mine = its.filter((p) => p.op === op);
  if (mine.length === 0) return undefined;
  const names: [string, number][] = [...LAYOUT[op]];
  for (const p of mine) {
    for (const k of p.steps.keys()) if (!names.some(([n]) => n === k)) names.push([k, 1]);
  }
  const steps: OpStep[] = [];
  for (const [name, depth] of names) {
    if (!mine.some((p) => p.steps.has(name))) continue;
    const values = mine.map((p) => p.steps.get(name) ?? 0);
    steps.push({ name, depth, mean: mean(values), p50: summarize(values)?.p50 ?? NaN });
  }
  return { op, iterations: mine.length, total: mean(mine.map((p) => p.total)), steps };
}
