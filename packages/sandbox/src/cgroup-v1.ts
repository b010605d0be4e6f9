/**
 * cgroup v1 (and hybrid) manager. A sandbox gets a parent cgroup `hako/{env}/{name}` in every
 * mounted v1 hierarchy (and in the unified one on hybrid hosts, where runc and crun place processes
 * too); the OCI runtime creates and removes the `ctr` child below it. Limits live on the parent.
 */
import { rmdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import type { CgroupCreated, CgroupManager, CgroupStats, SandboxLimits } from './types.js';
import { DEV_ALLOW } from './oci-spec.js';
import {
  CPU_PERIOD_US,
  DEFAULT_CGROUP_ROOT,
  assertCgroupEnv,
  assertCgroupName,
  cgroupPids,
  childDirs,
  detectCgroupLayout,
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
import type { CgroupLayout } from './cgroup-layout.js';
import { errnoOf } from './errno.js';
import { NAME_PREFIX } from './names.js';

export interface CgroupV1Options {
  /** hako env; cgroups live under `hako/{env}` in each hierarchy. */
  readonly env: string;
  /**
   * Where the hierarchies are mounted (default /sys/fs/cgroup). Mounts outside it are ignored (a
   * second mount of a hierarchy elsewhere).
   */
  readonly root?: string;
  readonly logger: Logger;
  /** The host's layout; read from /proc/self/mountinfo on first use when omitted. */
  readonly layout?: CgroupLayout;
  /** How long remove() retries rmdir while killed processes exit (default 2000 ms). */
  readonly removeTimeoutMs?: number;
  /** How long setFrozen() waits for freezer.state to settle (default 5000 ms). */
  readonly freezeTimeoutMs?: number;
}

/** Controllers a sandbox needs; create() fails with HOST_PREREQUISITE_MISSING when one is not mounted. */
const REQUIRED_V1_CONTROLLERS = ['memory', 'pids', 'cpu', 'cpuacct', 'freezer', 'devices'] as const;

interface Hierarchies {
  /** Every directory a sandbox parent is created in: each v1 mount, plus unified when hybrid. */
  readonly all: string[];
  readonly byController: ReadonlyMap<string, string>;
  readonly cpuset: string | undefined;
}

export class CgroupV1Manager implements CgroupManager {
  readonly version = 1 as const;
  private readonly env: string;
  private readonly root: string;
  private readonly logger: Logger;
  private readonly removeTimeoutMs: number;
  private readonly freezeTimeoutMs: number;
  private layout: CgroupLayout | undefined;
  private hierarchies: Hierarchies | undefined;
  /** Hierarchies where hako/{env} is known to exist (made by this manager). */
  private readonly envLevelsMade = new Set<string>();

  constructor(opts: CgroupV1Options) {
    assertCgroupEnv(opts.env);
    this.env = opts.env;
    this.root = (opts.root ?? DEFAULT_CGROUP_ROOT).replace(/\/+$/, '') || '/';
    this.logger = opts.logger.child({ component: 'cgroup-v1', env: opts.env });
    this.layout = opts.layout;
    this.removeTimeoutMs = opts.removeTimeoutMs ?? 2000;
    this.freezeTimeoutMs = opts.freezeTimeoutMs ?? 5000;
  }

  private underRoot(path: string): boolean {
    return this.root === '/' || path === this.root || path.startsWith(`${this.root}/`);
  }

  private async resolve(): Promise<Hierarchies> {
    if (this.hierarchies) return this.hierarchies;
    this.layout ??= await detectCgroupLayout();
    const layout = this.layout;
    if (layout.mode === 'v2') {
      throw new AppError(
        'HOST_PREREQUISITE_MISSING',
        'this host uses cgroup v2 only; use the cgroup v2 manager (createCgroupManager picks it)',
      );
    }
    const mounts = layout.v1Mounts.filter((m) => this.underRoot(m.path));
    const all = mounts.map((m) => m.path);
    if (layout.mode === 'hybrid' && layout.unifiedPath && this.underRoot(layout.unifiedPath)) {
      all.push(layout.unifiedPath);
    }
    const byController = new Map<string, string>();
    for (const m of mounts) for (const c of m.controllers) byController.set(c, m.path);
    this.hierarchies = { all, byController, cpuset: byController.get('cpuset') };
    return this.hierarchies;
  }

  private async controllerDir(controller: string, name: string): Promise<string> {
    const h = await this.resolve();
    const mount = h.byController.get(controller);
    if (!mount) {
      throw new AppError(
        'HOST_PREREQUISITE_MISSING',
        `cgroup v1 controller "${controller}" is not mounted under ${this.root}; mount it: ` +
          `mkdir -p ${this.root}/${controller} && mount -t cgroup -o ${controller} cgroup ${this.root}/${controller}`,
      );
    }
    return join(mount, sandboxCgroupRel(this.env, name));
  }

  /**
   * Creates `hako/{env}/{name}` in every hierarchy, writes memory (swap included), pids and CPU
   * limits to it, and returns `{ cgroupsPath: '/hako/{env}/{name}/ctr' }` for the OCI spec. Call
   * once per sandbox before the runtime starts. Calling it again for an existing sandbox rewrites
   * the limits. On failure it removes what it created before throwing.
   */
  async create(
    name: string,
    limits: Pick<SandboxLimits, 'memoryBytes' | 'pids' | 'cpus'>,
  ): Promise<CgroupCreated> {
    assertCgroupName(name);
    const values = limitValues(limits);
    const started = Date.now();
    const h = await this.resolve();
    const missing = REQUIRED_V1_CONTROLLERS.filter((c) => !h.byController.has(c));
    if (missing.length > 0) {
      throw new AppError(
        'HOST_PREREQUISITE_MISSING',
        `cgroup v1 controller(s) ${missing.join(', ')} not mounted under ${this.root}; mount each with ` +
          `mkdir -p ${this.root}/<c> && mount -t cgroup -o <c> cgroup ${this.root}/<c>`,
      );
    }
    // only the hierarchies of the controllers hako uses: each one a process joins costs a cgroup
    // migration (about a millisecond on a fresh cgroup); runc makes the rest itself for its child
    const mounts = [...new Set(REQUIRED_V1_CONTROLLERS.map((c) => h.byController.get(c) ?? ''))];
    try {
      const results = await Promise.allSettled(mounts.map((mount) => this.makeParent(mount, name, h)));
      const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed[0]) throw failed[0].reason;
      await this.writeLimits(name, values);
    } catch (err) {
      try {
        await this.remove(name);
      } catch (undoErr) {
        this.logger.error({ err: undoErr, name }, 'removing a half-created cgroup failed');
      }
      throw err instanceof AppError
        ? err
        : new AppError('CGROUP_FAILED', `creating cgroup for ${name} failed: ${(err as Error).message}`, {
            cause: err,
          });
    }
    this.logger.debug({ name, ms: Date.now() - started, hierarchies: mounts.length }, 'cgroup created');
    return {
      cgroupsPath: runtimeCgroupsPath(this.env, name),
      procsFiles: mounts.map((mount) => join(mount, sandboxCgroupRel(this.env, name), 'cgroup.procs')),
      notJoined: h.all.filter((m) => !mounts.includes(m)).map((m) => relative(this.root, m)),
    };
  }

  /**
   * mkdir hako, hako/{env}, hako/{env}/{name} in one hierarchy; cpuset levels get cpus and mems.
   * The shared levels are made once per manager (remembered per hierarchy); if they have vanished
   * since, the sandbox's mkdir fails with ENOENT and the whole path is made again.
   */
  private async makeParent(mount: string, name: string, h: Hierarchies): Promise<void> {
    const envDir = join(mount, NAME_PREFIX, this.env);
    if (this.envLevelsMade.has(mount)) {
      try {
        await this.makeLevel(envDir, join(envDir, name), mount === h.cpuset);
        return;
      } catch (err) {
        if (!(err instanceof AppError && err.cause && errnoOf(err.cause) === 'ENOENT')) throw err;
        this.envLevelsMade.delete(mount);
      }
    }
    let dir = mount;
    for (const level of [NAME_PREFIX, this.env, name]) {
      const parent = dir;
      dir = join(dir, level);
      await this.makeLevel(parent, dir, mount === h.cpuset);
    }
    this.envLevelsMade.add(mount);
  }

  /** mkdir (an existing directory is fine), copying cpus and mems from the parent on cpuset. */
  private async makeLevel(parent: string, dir: string, cpuset: boolean): Promise<void> {
    await mkdirCgroup(dir);
    if (cpuset) await copyCpuset(parent, dir);
  }

  private async writeLimits(
    name: string,
    v: { memoryBytes: number; pids: number; cpuQuotaUs: number },
  ): Promise<void> {
    // each controller's files are independent of the others': write them concurrently
    await Promise.all([
      this.writeMemoryLimit(name, v.memoryBytes),
      this.controllerDir('pids', name).then((dir) => writeCgroupFile(join(dir, 'pids.max'), String(v.pids))),
      this.controllerDir('cpu', name).then(async (cpu) => {
        await writeCgroupFile(join(cpu, 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
        await writeCgroupFile(join(cpu, 'cpu.cfs_quota_us'), String(v.cpuQuotaUs));
      }),
      this.writeDevicePolicy(name),
    ]);
  }

  private async writeMemoryLimit(name: string, memoryBytes: number): Promise<void> {
    const mem = await this.controllerDir('memory', name);
    const limitFile = join(mem, 'memory.limit_in_bytes');
    const memswFile = join(mem, 'memory.memsw.limit_in_bytes');
    const value = String(memoryBytes);
    const hasMemsw = await fileExists(memswFile);
    if (hasMemsw) {
      // The kernel keeps memsw >= memory: lower memory first, raise memsw first.
      const currentMemsw = parseCgroupNumber(await readRequired(memswFile), memswFile);
      if (memoryBytes > currentMemsw) {
        await writeCgroupFile(memswFile, value);
        await writeCgroupFile(limitFile, value);
      } else {
        await writeCgroupFile(limitFile, value);
        await writeCgroupFile(memswFile, value);
      }
    } else {
      await writeCgroupFile(limitFile, value);
      this.logger.debug(
        { name, file: memswFile },
        'no memory.memsw.limit_in_bytes (kernel without swap accounting): only RAM is limited; swap is not',
      );
    }
  }

  /**
   * The device allowlist on the parent (v1 devices controller): deny everything, then allow the
   * sandbox's few character devices and ptys (and mknod, as runc's defaults). A runtime's child cgroup can only narrow it, and a
   * runtime that joins the parent (crun on v1) gets it without managing cgroups itself.
   */
  private async writeDevicePolicy(name: string): Promise<void> {
    const dir = await this.controllerDir('devices', name);
    await writeCgroupFile(join(dir, 'devices.deny'), 'a');
    for (const d of DEV_ALLOW)
      await writeCgroupFile(join(dir, 'devices.allow'), `${d.type} ${d.major}:${d.minor} rwm`);
    await writeCgroupFile(join(dir, 'devices.allow'), 'c 136:* rwm');
    // mknod permission only (runc's defaults, which its child cgroup re-applies): creating a node
    // needs CAP_MKNOD, which no sandbox process has, and opening one needs r or w above
    await writeCgroupFile(join(dir, 'devices.allow'), 'c *:* m');
    await writeCgroupFile(join(dir, 'devices.allow'), 'b *:* m');
    // runc always appends tun/tap to its child's list; the node does not exist in a sandbox's /dev
    // and cannot be made without CAP_MKNOD
    await writeCgroupFile(join(dir, 'devices.allow'), 'c 10:200 rwm');
  }

  /**
   * Counters of the sandbox's parent cgroup. Memory, pids and CPU usage are hierarchical. The OOM
   * kill and fork-failure counts are kept by the v1 kernel in the cgroup the process lived in, so
   * they are summed over the subtree: they include the runtime's `ctr` child only while it exists.
   * @throws AppError SANDBOX_NOT_FOUND when the cgroup does not exist.
   */
  async stats(name: string): Promise<CgroupStats> {
    assertCgroupName(name);
    const mem = await this.controllerDir('memory', name);
    const pids = await this.controllerDir('pids', name);
    const cpuacct = await this.controllerDir('cpuacct', name);
    const usage = await readOptional(join(mem, 'memory.usage_in_bytes'));
    if (usage === undefined) {
      throw new AppError('SANDBOX_NOT_FOUND', `no cgroup for sandbox ${name} in env ${this.env} (${mem})`);
    }
    const num = async (file: string): Promise<number> => parseCgroupNumber(await readRequired(file), file);
    let oomKills = 0;
    for (const dir of await subtreeDeepestFirst(mem)) {
      oomKills += keyedValue((await readOptional(join(dir, 'memory.oom_control'))) ?? '', 'oom_kill');
    }
    let pidsLimitHits = 0;
    for (const dir of await subtreeDeepestFirst(pids)) {
      pidsLimitHits += keyedValue((await readOptional(join(dir, 'pids.events'))) ?? '', 'max');
    }
    return {
      memoryCurrentBytes: parseCgroupNumber(usage, join(mem, 'memory.usage_in_bytes')),
      memoryPeakBytes: await num(join(mem, 'memory.max_usage_in_bytes')),
      memoryLimitBytes: await num(join(mem, 'memory.limit_in_bytes')),
      oomKills,
      pidsCurrent: await num(join(pids, 'pids.current')),
      pidsLimit: await num(join(pids, 'pids.max')),
      pidsLimitHits,
      cpuUsageNs: await num(join(cpuacct, 'cpuacct.usage')),
    };
  }

  /**
   * Freezes (true) or thaws (false) the sandbox through freezer.state and waits until the state
   * reads back FROZEN / THAWED.
   * @throws AppError CGROUP_FAILED when it does not settle in time (a task stuck in the kernel).
   */
  async setFrozen(name: string, frozen: boolean): Promise<void> {
    assertCgroupName(name);
    const file = join(await this.controllerDir('freezer', name), 'freezer.state');
    const want = frozen ? 'FROZEN' : 'THAWED';
    if ((await readOptional(file)) === undefined) {
      throw new AppError('SANDBOX_NOT_FOUND', `no freezer cgroup for sandbox ${name} in env ${this.env}`);
    }
    await writeCgroupFile(file, want);
    const settled = await waitFor(async () => {
      const state = await readOptional(file);
      if (state === want) return true;
      // A freeze that was interrupted (a task not yet frozen) stays FREEZING; writing again retries.
      if (frozen && state === 'FREEZING') await writeCgroupFile(file, want);
      return false;
    }, this.freezeTimeoutMs);
    if (!settled) {
      throw new AppError(
        'CGROUP_FAILED',
        `${file} did not reach ${want} within ${this.freezeTimeoutMs} ms (reads ${(await readOptional(file)) ?? 'nothing'})`,
      );
    }
  }

  /**
   * Thaws, SIGKILLs every process in the sandbox's tree and removes the tree (children first) in
   * every hierarchy, retrying rmdir while killed processes exit. Idempotent.
   * @throws AppError CGROUP_FAILED naming the cgroups that could not be removed.
   */
  async remove(name: string): Promise<void> {
    assertCgroupName(name);
    const started = Date.now();
    const h = await this.resolve();
    const rel = sandboxCgroupRel(this.env, name);
    const freezer = h.byController.get('freezer');
    if (freezer) {
      // Frozen tasks do not act on SIGKILL until thawed; the runtime may have frozen its child
      // itself (pause), so thaw every level, top-down.
      for (const dir of (await subtreeDeepestFirst(join(freezer, rel))).reverse()) {
        const stateFile = join(dir, 'freezer.state');
        const state = await readOptional(stateFile);
        if (state !== undefined && state !== 'THAWED') await writeCgroupFile(stateFile, 'THAWED');
      }
    }
    const trees = await Promise.all(h.all.map((mount) => subtreeDeepestFirst(join(mount, rel))));
    const refused = new Set<number>();
    const killIn = async (dirs: readonly string[]): Promise<void> => {
      for (const dir of dirs) for (const pid of killPids(await cgroupPids(dir))) refused.add(pid);
    };
    await killIn(trees.flat());
    const failures = (
      await Promise.all(trees.map((dirs) => rmdirWithRetry(dirs, this.removeTimeoutMs, (d) => killIn([d]))))
    ).flat();
    if (refused.size > 0) {
      this.logger.warn(
        { name, pids: [...refused] },
        'refused to kill pid 1 or hako itself found in a sandbox cgroup',
      );
    }
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

  /** Names of this env's sandbox cgroups found in any hierarchy (sorted). */
  async list(): Promise<string[]> {
    const h = await this.resolve();
    const names = new Set<string>();
    for (const mount of h.all)
      for (const n of await childDirs(join(mount, envCgroupRel(this.env)))) names.add(n);
    return [...names].sort();
  }

  /**
   * Removes `hako/{env}` in every hierarchy where it is empty (for tests and `gc --all`); levels
   * that still hold sandbox cgroups are left. Returns true when none is left anywhere.
   */
  async removeEnvRoot(): Promise<boolean> {
    const h = await this.resolve();
    let allGone = true;
    for (const mount of h.all) {
      const dir = join(mount, envCgroupRel(this.env));
      try {
        await rmdir(dir);
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') continue;
        if (errnoOf(err) === 'EBUSY' || errnoOf(err) === 'ENOTEMPTY') {
          allGone = false;
          continue;
        }
        throw new AppError('CGROUP_FAILED', `rmdir ${dir} failed: ${(err as Error).message}`, { cause: err });
      }
    }
    return allGone;
  }
}

/** A new cpuset cgroup starts with no cpus and mems (tasks cannot join it): copy the parent's. */
async function copyCpuset(parent: string, dir: string): Promise<void> {
  for (const file of ['cpuset.cpus', 'cpuset.mems']) {
    const mine = await readRequired(join(dir, file));
    if (mine !== '') continue;
    await writeCgroupFile(join(dir, file), await readRequired(join(parent, file)));
  }
}
