/**
 * cgroup v2 manager. A sandbox gets the parent cgroup `{root}/hako/{env}/{name}` with memory, pids
 * and cpu enabled down to it; the OCI runtime creates and removes the `ctr` child below it. Limits
 * live on the parent, so they bound the child and its counters survive the child's removal.
 */
import { rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import type { CgroupCreated, CgroupManager, CgroupStats, SandboxLimits } from './types.js';
import {
  CPU_PERIOD_US,
  DEFAULT_CGROUP_ROOT,
  assertCgroupEnv,
  assertCgroupName,
  cgroupPids,
  childDirs,
  envCgroupRel,
  fileExists,
  keyedValue,
  killPids,
  limitValues,
  mkdirCgroup,
  parseCgroupNumber,
  readOptional,
  readRequired,
  rmdirWithRetry,
  runtimeCgroupsPath,
  sandboxCgroupRel,
  subtreeDeepestFirst,
  waitFor,
  writeCgroupFile,
} from './cgroup-layout.js';
import { errnoOf } from './errno.js';
import { NAME_PREFIX } from './names.js';

export interface CgroupV2Options {
  /** hako env; cgroups live under `{root}/hako/{env}`. */
  readonly env: string;
  /** The cgroup2 mount (or a delegated subtree of it); default /sys/fs/cgroup. */
  readonly root?: string;
  readonly logger: Logger;
  /** How long remove() retries rmdir while killed processes exit (default 2000 ms). */
  readonly removeTimeoutMs?: number;
  /** How long setFrozen() waits for cgroup.events to report the new state (default 5000 ms). */
  readonly freezeTimeoutMs?: number;
}

/** Controllers a sandbox's cgroup needs, enabled in every ancestor's cgroup.subtree_control. */
export const V2_CONTROLLERS = ['memory', 'pids', 'cpu'] as const;

function words(text: string | undefined): string[] {
  return (text ?? '').split(/\s+/).filter((w) => w !== '');
}

export class CgroupV2Manager implements CgroupManager {
  readonly version = 2 as const;
  private readonly env: string;
  private readonly root: string;
  private readonly logger: Logger;
  private readonly removeTimeoutMs: number;
  private readonly freezeTimeoutMs: number;

  constructor(opts: CgroupV2Options) {
    assertCgroupEnv(opts.env);
    this.env = opts.env;
    this.root = opts.root ?? DEFAULT_CGROUP_ROOT;
    this.logger = opts.logger.child({ component: 'cgroup-v2', env: opts.env });
    this.removeTimeoutMs = opts.removeTimeoutMs ?? 2000;
    this.freezeTimeoutMs = opts.freezeTimeoutMs ?? 5000;
  }

  private dir(name: string): string {
    return join(this.root, sandboxCgroupRel(this.env, name));
  }

  /**
   * Creates `hako`, `hako/{env}` and `hako/{env}/{name}` under the root, enabling memory, pids and
   * cpu in the subtree_control of the root and of each new level (the last so the runtime's `ctr`
   * child gets them too), then writes memory.max, memory.swap.max=0 (memory+swap = the limit),
   * pids.max and cpu.max. Returns `{ cgroupsPath: '/hako/{env}/{name}/ctr' }` (relative to the
   * cgroup2 root the runtime sees). Call once per sandbox before the runtime starts; calling it
   * again rewrites the limits. On failure it removes what it created before throwing.
   */
  async create(
    name: string,
    limits: Pick<SandboxLimits, 'memoryBytes' | 'pids' | 'cpus'>,
  ): Promise<CgroupCreated> {
    assertCgroupName(name);
    const v = limitValues(limits);
    const started = Date.now();
    const available = words(await readOptional(join(this.root, 'cgroup.controllers')));
    const missing = V2_CONTROLLERS.filter((c) => !available.includes(c));
    if (missing.length > 0) {
      throw new AppError(
        'HOST_PREREQUISITE_MISSING',
        `cgroup v2 controller(s) ${missing.join(', ')} are not available in ${join(this.root, 'cgroup.controllers')}; ` +
          'delegate them to this cgroup (systemd: Delegate=yes on the hakod unit) or boot with the v2 controllers enabled',
      );
    }
    try {
      let dir = this.root;
      await this.enableControllers(dir);
      for (const level of [NAME_PREFIX, this.env, name]) {
        dir = join(dir, level);
        await mkdirCgroup(dir);
        await this.enableControllers(dir);
      }
      const have = words(await readOptional(join(dir, 'cgroup.controllers')));
      const lacking = V2_CONTROLLERS.filter((c) => !have.includes(c));
      if (lacking.length > 0) {
        throw new AppError(
          'CGROUP_FAILED',
          `controller(s) ${lacking.join(', ')} did not reach ${dir} (its cgroup.controllers reads "${have.join(' ')}"); ` +
            `check the cgroup.subtree_control of each level between ${this.root} and it`,
        );
      }
      await writeCgroupFile(join(dir, 'memory.max'), String(v.memoryBytes));
      const swapFile = join(dir, 'memory.swap.max');
      if (await fileExists(swapFile)) {
        await writeCgroupFile(swapFile, '0');
      } else {
        this.logger.debug(
          { name, file: swapFile },
          'no memory.swap.max (kernel without swap accounting): only RAM is limited; swap is not',
        );
      }
      await writeCgroupFile(join(dir, 'pids.max'), String(v.pids));
      await writeCgroupFile(join(dir, 'cpu.max'), `${v.cpuQuotaUs} ${CPU_PERIOD_US}`);
    } catch (err) {
      try {
        await this.remove(name);
      } catch (undoErr) {
        this.logger.error({ err: undoErr, name }, 'removing a half-created cgroup failed');
      }
      throw err;
    }
    this.logger.debug({ name, ms: Date.now() - started }, 'cgroup created');
    return {
      cgroupsPath: runtimeCgroupsPath(this.env, name),
      // v2 runtimes always manage the child: the parent has controllers enabled for it, so no
      // process may live in the parent itself
      procsFiles: [],
      notJoined: [],
    };
  }

  /** Enables the wanted controllers (those `dir` has) in `dir`'s cgroup.subtree_control. */
  private async enableControllers(dir: string): Promise<void> {
    const available = words(await readOptional(join(dir, 'cgroup.controllers')));
    const enabled = words(await readOptional(join(dir, 'cgroup.subtree_control')));
    const add = V2_CONTROLLERS.filter((c) => available.includes(c) && !enabled.includes(c));
    if (add.length === 0) return;
    await writeCgroupFile(join(dir, 'cgroup.subtree_control'), add.map((c) => `+${c}`).join(' '));
  }

  /**
   * Counters of the sandbox's parent cgroup: all hierarchical, so they include the runtime's `ctr`
   * child and survive its removal. memory.peak is missing before Linux 5.19: peak then reads as
   * the current usage. Unlimited values read as Infinity.
   * @throws AppError SANDBOX_NOT_FOUND when the cgroup does not exist.
   */
  async stats(name: string): Promise<CgroupStats> {
    assertCgroupName(name);
    const dir = this.dir(name);
    const current = await readOptional(join(dir, 'memory.current'));
    if (current === undefined) {
      throw new AppError('SANDBOX_NOT_FOUND', `no cgroup for sandbox ${name} in env ${this.env} (${dir})`);
    }
    const num = async (file: string): Promise<number> =>
      parseCgroupNumber(await readRequired(join(dir, file)), join(dir, file));
    const memoryCurrentBytes = parseCgroupNumber(current, join(dir, 'memory.current'));
    const peak = await readOptional(join(dir, 'memory.peak'));
    return {
      memoryCurrentBytes,
      memoryPeakBytes:
        peak === undefined ? memoryCurrentBytes : parseCgroupNumber(peak, join(dir, 'memory.peak')),
      memoryLimitBytes: await num('memory.max'),
      oomKills: keyedValue(await readRequired(join(dir, 'memory.events')), 'oom_kill'),
      pidsCurrent: await num('pids.current'),
      pidsLimit: await num('pids.max'),
      pidsLimitHits: await this.pidsLimitHits(dir),
      cpuUsageNs: keyedValue(await readRequired(join(dir, 'cpu.stat')), 'usage_usec') * 1000,
    };
  }

  /**
   * Since Linux 6.11 (which added pids.events.local) `pids.events` max is hierarchical; before, it
   * counted failed forks only of tasks directly in that cgroup, so the subtree is summed.
   */
  private async pidsLimitHits(dir: string): Promise<number> {
    if ((await readOptional(join(dir, 'pids.events.local'))) !== undefined) {
      return keyedValue(await readRequired(join(dir, 'pids.events')), 'max');
    }
    let sum = 0;
    for (const d of await subtreeDeepestFirst(dir)) {
      sum += keyedValue((await readOptional(join(d, 'pids.events'))) ?? '', 'max');
    }
    return sum;
  }

  /**
   * Freezes (true) or thaws (false) the sandbox through cgroup.freeze and waits until
   * cgroup.events reports `frozen 1` / `frozen 0`.
   * @throws AppError CGROUP_FAILED when it does not settle in time.
   */
  async setFrozen(name: string, frozen: boolean): Promise<void> {
    assertCgroupName(name);
    const dir = this.dir(name);
    if ((await readOptional(join(dir, 'cgroup.freeze'))) === undefined) {
      throw new AppError('SANDBOX_NOT_FOUND', `no cgroup for sandbox ${name} in env ${this.env} (${dir})`);
    }
    await writeCgroupFile(join(dir, 'cgroup.freeze'), frozen ? '1' : '0');
    const want = frozen ? 1 : 0;
    const settled = await waitFor(
      async () => keyedValue((await readOptional(join(dir, 'cgroup.events'))) ?? '', 'frozen') === want,
      this.freezeTimeoutMs,
    );
    if (!settled) {
      throw new AppError(
        'CGROUP_FAILED',
        `${join(dir, 'cgroup.events')} did not report frozen ${want} within ${this.freezeTimeoutMs} ms`,
      );
    }
  }

  /**
   * Kills everything in the sandbox's tree (cgroup.kill, or SIGKILL to each pid on kernels before
   * 5.14, after thawing) and removes the tree, children first, retrying rmdir while killed
   * processes exit. Idempotent.
   * @throws AppError CGROUP_FAILED naming the cgroups that could not be removed.
   */
  async remove(name: string): Promise<void> {
    assertCgroupName(name);
    const started = Date.now();
    const dir = this.dir(name);
    const tree = await subtreeDeepestFirst(dir);
    if (tree.length === 0) return;
    const refused = new Set<number>();
    const killIn = async (dirs: readonly string[]): Promise<void> => {
      for (const d of dirs) for (const pid of killPids(await cgroupPids(d))) refused.add(pid);
    };
    if (await fileExists(join(dir, 'cgroup.kill'))) {
      await writeCgroupFile(join(dir, 'cgroup.kill'), '1');
    } else {
      // Frozen tasks do not act on SIGKILL until thawed (any level may have been frozen).
      for (const d of [...tree].reverse()) {
        if ((await readOptional(join(d, 'cgroup.freeze'))) === '1')
          await writeCgroupFile(join(d, 'cgroup.freeze'), '0');
      }
      await killIn(tree);
    }
    const failures = await rmdirWithRetry(tree, this.removeTimeoutMs, (d) => killIn([d]));
    if (failures.length > 0) {
      throw new AppError(
        'CGROUP_FAILED',
        `could not remove cgroup(s) of ${name}: ${failures.map((f) => `${f.dir} (${f.error})`).join(', ')}` +
          (refused.size > 0 ? `; they hold pid(s) hako will not kill: ${[...refused].join(', ')}` : '') +
          '; processes still inside keep them busy — kill them and run remove again',
      );
    }
    this.logger.debug({ name, ms: Date.now() - started }, 'cgroup removed');
  }

  /** Names of this env's sandbox cgroups (sorted). */
  async list(): Promise<string[]> {
    return (await childDirs(join(this.root, envCgroupRel(this.env)))).sort();
  }

  /**
   * Removes `hako/{env}` when it holds no sandbox cgroup (for tests and `gc --all`). Returns true
   * when it is gone.
   */
  async removeEnvRoot(): Promise<boolean> {
    const dir = join(this.root, envCgroupRel(this.env));
    try {
      await rmdir(dir);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return true;
      if (errnoOf(err) === 'EBUSY' || errnoOf(err) === 'ENOTEMPTY') return false;
      throw new AppError('CGROUP_FAILED', `rmdir ${dir} failed: ${(err as Error).message}`, { cause: err });
    }
    return true;
  }
}
