/**
 * Where the cgroup hierarchies are (v1, v2 or hybrid, read from /proc/self/mountinfo), where hako
 * puts its cgroups inside them (`hako/{env}/{name}`), and the small file helpers both cgroup
 * managers share.
 */
import { mkdirSync, readFileSync, readdirSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AppError } from '@hako/core';
import { errnoOf } from './errno.js';
import { NAME_PREFIX } from './names.js';

export type CgroupMode = 'v1' | 'v2' | 'hybrid';

/** One mounted cgroup v1 hierarchy. */
export interface CgroupV1Mount {
  /** Controllers bound to it (`cpu`, `memory`, …) and named hierarchies (`name=systemd`). */
  readonly controllers: string[];
  /** Mount point, e.g. /sys/fs/cgroup/memory. */
  readonly path: string;
}

export interface CgroupLayout {
  /** `hybrid`: v1 controllers plus a cgroup2 mount (systemd's /sys/fs/cgroup/unified). */
  readonly mode: CgroupMode;
  /** Every mounted v1 hierarchy (each once), including named ones without controllers. */
  readonly v1Mounts: CgroupV1Mount[];
  /** Mount point of the cgroup2 hierarchy, when one is mounted. */
  readonly unifiedPath?: string;
  /** Controllers available on the cgroup2 hierarchy (its root `cgroup.controllers`). */
  readonly unifiedControllers: string[];
}

export const MOUNTINFO_PATH = '/proc/self/mountinfo';
export const DEFAULT_CGROUP_ROOT = '/sys/fs/cgroup';
/** Leaf the OCI runtime creates (and removes) below a sandbox's parent cgroup. */
export const RUNTIME_CHILD = 'ctr';

/** cgroup v1 super-block options that are not controllers. */
const V1_NON_CONTROLLER_OPTIONS = new Set([
  'rw',
  'ro',
  'none',
  'all',
  'noprefix',
  'clone_children',
  'xattr',
  'cpuset_v2_mode',
  'favordynmods',
  'nofavordynmods',
]);

interface MountEntry {
  readonly root: string;
  readonly mountPoint: string;
  readonly fsType: string;
  readonly superOptions: string[];
}

/** Undoes the octal escapes (\040 for space, …) mountinfo uses in paths. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses /proc/self/mountinfo lines (see proc(5)); malformed lines are skipped. */
function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(' ');
    const sep = fields.indexOf('-');
    if (sep < 6 || fields.length < sep + 4) continue;
    const root = fields[3];
    const mountPoint = fields[4];
    const fsType = fields[sep + 1];
    const superOptions = fields[sep + 3];
    if (
      root === undefined ||
      mountPoint === undefined ||
      fsType === undefined ||
      superOptions === undefined
    ) {
      continue;
    }
    out.push({
      root: unescapeMountPath(root),
      mountPoint: unescapeMountPath(mountPoint),
      fsType,
      superOptions: superOptions.split(','),
    });
  }
  return out;
}

async function readTextFile(path: string): Promise<string> {
  return readFile(path, 'utf8');
}

/**
 * Reads the cgroup layout of this mount namespace.
 *
 * @param mountinfoText contents of /proc/self/mountinfo; read from the host when undefined.
 * @param readFileFn reads `cgroup.controllers` of the unified mount; defaults to the real file.
 *   A missing file reads as no controllers.
 * @throws AppError HOST_PREREQUISITE_MISSING when no cgroup filesystem is mounted at all.
 */
export async function detectCgroupLayout(
  mountinfoText?: string,
  readFileFn: (path: string) => Promise<string> | string = readTextFile,
): Promise<CgroupLayout> {
  const text = mountinfoText ?? (await readTextFile(MOUNTINFO_PATH));
  const entries = parseMountinfo(text);

  // The same v1 hierarchy may be mounted more than once (bind mounts of a sub-cgroup, a second
  // mount elsewhere): keep one mount per controller set, preferring one of the hierarchy's root.
  const v1ByKey = new Map<string, { mount: CgroupV1Mount; isRoot: boolean }>();
  let unified: { path: string; isRoot: boolean } | undefined;
  for (const e of entries) {
    const isRoot = e.root === '/';
    if (e.fsType === 'cgroup') {
      const controllers = e.superOptions.filter(
        (o) => o !== '' && !V1_NON_CONTROLLER_OPTIONS.has(o) && !o.startsWith('release_agent='),
      );
      if (controllers.length === 0) continue;
      controllers.sort();
      const key = controllers.join(',');
      const seen = v1ByKey.get(key);
      if (!seen || (isRoot && !seen.isRoot))
        v1ByKey.set(key, { mount: { controllers, path: e.mountPoint }, isRoot });
    } else if (e.fsType === 'cgroup2') {
      if (!unified || (isRoot && !unified.isRoot)) unified = { path: e.mountPoint, isRoot };
    }
  }

  const v1Mounts = [...v1ByKey.values()].map((v) => v.mount);
  const hasV1Controllers = v1Mounts.some((m) => m.controllers.some((c) => !c.startsWith('name=')));
  if (!unified && v1Mounts.length === 0) {
    throw new AppError(
      'HOST_PREREQUISITE_MISSING',
      'no cgroup filesystem is mounted (neither cgroup nor cgroup2 in /proc/self/mountinfo); mount cgroup2 at /sys/fs/cgroup',
    );
  }

  let unifiedControllers: string[] = [];
  if (unified) {
    const file = join(unified.path, 'cgroup.controllers');
    try {
      unifiedControllers = (await readFileFn(file)).split(/\s+/).filter((c) => c !== '');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new AppError('CGROUP_FAILED', `reading ${file} failed: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
  }

  const mode: CgroupMode = !unified ? 'v1' : hasV1Controllers ? 'hybrid' : 'v2';
  return unified
    ? { mode, v1Mounts, unifiedPath: unified.path, unifiedControllers }
    : { mode, v1Mounts, unifiedControllers };
}

/** The v1 mount that carries `controller`, if any. */
export function v1MountFor(layout: CgroupLayout, controller: string): CgroupV1Mount | undefined {
  return layout.v1Mounts.find((m) => m.controllers.includes(controller));
}

/**
 * Whether crun can run sandboxes on this layout. crun 1.8 refuses the hybrid layout when the
 * unified hierarchy has any controller ("cgroups in hybrid mode not supported, drop all
 * controllers from cgroupv2"); `fix` gives the commands that move those controllers to v1.
 */
export function crunUsable(layout: CgroupLayout): { ok: boolean; reason?: string; fix?: string } {
  if (layout.mode !== 'hybrid' || layout.unifiedControllers.length === 0) return { ok: true };
  const unifiedPath = layout.unifiedPath ?? join(DEFAULT_CGROUP_ROOT, 'unified');
  const base = dirname(unifiedPath);
  const list = layout.unifiedControllers.join(' ');
  const mounts = layout.unifiedControllers
    .map((c) => {
      const dir = join(base, c);
      return `mkdir -p ${dir} && mount -t cgroup -o ${c} cgroup ${dir}`;
    })
    .join(' && ');
  return {
    ok: false,
    reason:
      `hybrid cgroup layout with controller(s) ${list} on the unified hierarchy ${unifiedPath}; ` +
      'crun refuses it: "cgroups in hybrid mode not supported, drop all controllers from cgroupv2"',
    fix:
      `mount each of them as a v1 hierarchy (first drop it from every cgroup.subtree_control under ${unifiedPath}): ` +
      `${mounts}; or use runc (HAKO_RUNTIME=runc)`,
  };
}

// ---------------------------------------------------------------- hako's names inside a hierarchy

const ENV_RE = /^[a-z0-9]{1,12}$/;
const CGROUP_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function assertCgroupEnv(env: string): void {
  if (!ENV_RE.test(env)) {
    throw new AppError('INVALID_ARGUMENT', `bad env "${env}" for cgroups (1-12 of [a-z0-9])`);
  }
}

export function assertCgroupName(name: string): void {
  if (!CGROUP_NAME_RE.test(name)) {
    throw new AppError(
      'INVALID_ARGUMENT',
      `bad sandbox cgroup name "${name}" (1-128 of [A-Za-z0-9_.-], starting with a letter or digit)`,
    );
  }
}

/** `hako/{env}` relative to a hierarchy root. */
export function envCgroupRel(env: string): string {
  return `${NAME_PREFIX}/${env}`;
}

/** `hako/{env}/{name}`: the sandbox's parent cgroup, relative to a hierarchy root. */
export function sandboxCgroupRel(env: string, name: string): string {
  return `${NAME_PREFIX}/${env}/${name}`;
}

/** The OCI `linux.cgroupsPath` for a sandbox: `/hako/{env}/{name}/ctr`. */
export function runtimeCgroupsPath(env: string, name: string): string {
  return `/${sandboxCgroupRel(env, name)}/${RUNTIME_CHILD}`;
}

/** Validated limit values as the kernel wants them. */
export interface CgroupLimitValues {
  readonly memoryBytes: number;
  readonly pids: number;
  /** CFS quota in microseconds per CPU_PERIOD_US. */
  readonly cpuQuotaUs: number;
}

export const CPU_PERIOD_US = 100_000;
const MIN_CPU_QUOTA_US = 1_000;

export function limitValues(limits: { memoryBytes: number; pids: number; cpus: number }): CgroupLimitValues {
  const { memoryBytes, pids, cpus } = limits;
  if (!Number.isSafeInteger(memoryBytes) || memoryBytes <= 0) {
    throw new AppError(
      'INVALID_ARGUMENT',
      `memory limit must be a positive whole number of bytes, got ${memoryBytes}`,
    );
  }
  if (!Number.isSafeInteger(pids) || pids <= 0) {
    throw new AppError('INVALID_ARGUMENT', `pids limit must be a positive whole number, got ${pids}`);
  }
  const cpuQuotaUs = Math.round(cpus * CPU_PERIOD_US);
  if (!Number.isFinite(cpus) || cpuQuotaUs < MIN_CPU_QUOTA_US) {
    throw new AppError('INVALID_ARGUMENT', `cpus must be at least 0.01, got ${cpus}`);
  }
  return { memoryBytes, pids, cpuQuotaUs };
}

// ---------------------------------------------------------------- file helpers
//
// cgroupfs lives in kernel memory: a read, write, mkdir or rmdir there takes microseconds and never
// waits for a disk, so these helpers make the system calls synchronously. Through the thread pool
// each file cost three round trips (open, read or write, close) and a wake-up of the event loop,
// and a sandbox's create or remove touches some thirty files: ~3 ms alone, 10-15 ms when other
// work kept the loop or the CPUs busy. They stay async in signature. The writes hako makes go to
// cgroups it just created (limits on an empty cgroup reclaim nothing) or to freezer, kill and
// device files, none of which blocks.

/** Runs a synchronous cgroupfs call and hands its result (or error) over as a promise. */
function now<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

/** Reads a cgroup file, trimmed; undefined when it does not exist. */
export function readOptional(path: string): Promise<string | undefined> {
  return now(() => {
    try {
      return readFileSync(path, 'utf8').trim();
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return undefined;
      throw new AppError('CGROUP_FAILED', `reading ${path} failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
  });
}

/** Whether a cgroup file exists (for write-only files like cgroup.kill, which cannot be read). */
export function fileExists(path: string): Promise<boolean> {
  return now(() => {
    try {
      statSync(path);
      return true;
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return false;
      throw new AppError('CGROUP_FAILED', `stat ${path} failed: ${(err as Error).message}`, { cause: err });
    }
  });
}

/** Reads a cgroup file that must exist. */
export async function readRequired(path: string): Promise<string> {
  const v = await readOptional(path);
  if (v === undefined) {
    throw new AppError('CGROUP_FAILED', `${path} does not exist; is the controller enabled for this cgroup?`);
  }
  return v;
}

/** Makes a cgroup directory; one that exists already is fine. CGROUP_FAILED otherwise. */
export function mkdirCgroup(dir: string): Promise<void> {
  return now(() => {
    try {
      mkdirSync(dir);
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST') {
        throw new AppError('CGROUP_FAILED', `mkdir ${dir} failed: ${(err as Error).message}`, { cause: err });
      }
    }
  });
}

/** Writes a value to a cgroup file (one write, as the kernel wants). */
export function writeCgroupFile(path: string, value: string): Promise<void> {
  return now(() => {
    try {
      writeFileSync(path, value);
    } catch (err) {
      throw new AppError(
        'CGROUP_FAILED',
        `writing "${value}" to ${path} failed: ${(err as Error).message}` +
          (errnoOf(err) === 'EACCES' || errnoOf(err) === 'EROFS' || errnoOf(err) === 'EPERM'
            ? ' (hako needs root and a read-write cgroup filesystem)'
            : ''),
        { cause: err },
      );
    }
  });
}

/** Parses a number from a cgroup file; `max` reads as Infinity. */
export function parseCgroupNumber(text: string, path: string): number {
  const t = text.trim();
  if (t === 'max') return Number.POSITIVE_INFINITY;
  const n = Number(t);
  if (t === '' || !Number.isFinite(n))
    throw new AppError('CGROUP_FAILED', `${path} holds "${t}", not a number`);
  return n;
}

/** The value of `key` in a flat-keyed file (`key value` per line), or 0 when the key is absent. */
export function keyedValue(text: string, key: string): number {
  for (const line of text.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k === key && v !== undefined) {
      const n = Number(v);
      return Number.isFinite(n) ? n : 0;
    }
  }
  return 0;
}

/** Sub-directories of `dir` (cgroup children); empty when `dir` does not exist. */
export function childDirs(dir: string): Promise<string[]> {
  return now(() => {
    try {
      const entries = readdirSync(dir, { withFileTypes: true });
      return entries.filter((e) => e.isDirectory()).map((e) => e.name);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return [];
      throw new AppError('CGROUP_FAILED', `listing ${dir} failed: ${(err as Error).message}`, { cause: err });
    }
  });
}

/** `dir` and every cgroup below it, deepest first (the order rmdir needs). Empty when missing. */
export async function subtreeDeepestFirst(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<boolean> => {
    let kids: string[];
    try {
      const entries = readdirSync(d, { withFileTypes: true });
      kids = entries.filter((e) => e.isDirectory()).map((e) => e.name);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return false;
      throw new AppError('CGROUP_FAILED', `listing ${d} failed: ${(err as Error).message}`, { cause: err });
    }
    for (const k of kids) await walk(join(d, k));
    out.push(d);
    return true;
  };
  await walk(dir);
  return out;
}

/** Pids listed in `cgroup.procs` of a cgroup dir (empty when the dir is gone). */
export async function cgroupPids(dir: string): Promise<number[]> {
  const text = await readOptional(join(dir, 'cgroup.procs'));
  if (!text) return [];
  return text
    .split('\n')
    .map((l) => Number(l.trim()))
    .filter((n) => Number.isSafeInteger(n) && n > 0);
}

/**
 * SIGKILLs the given pids. Never signals pid 1 or this process itself (returns those as refused,
 * so the caller's rmdir fails and names the cgroup instead of killing the daemon).
 */
export function killPids(pids: Iterable<number>): number[] {
  const refused: number[] = [];
  for (const pid of pids) {
    if (pid <= 1 || pid === process.pid) {
      refused.push(pid);
      continue;
    }
    try {
      process.kill(pid, 'SIGKILL');
    } catch (err) {
      if (errnoOf(err) !== 'ESRCH') throw err;
    }
  }
  return refused;
}

/**
 * rmdirs `dirs` in order (deepest first), retrying on EBUSY (processes still exiting) with a short
 * backoff until `timeoutMs`; `beforeRetry` runs before each retry (to kill stragglers again).
 * Missing dirs are fine. Returns the dirs that could not be removed, with the last error.
 */
export async function rmdirWithRetry(
  dirs: readonly string[],
  timeoutMs: number,
  beforeRetry: (dir: string) => Promise<void>,
): Promise<{ dir: string; error: string }[]> {
  const failed: { dir: string; error: string }[] = [];
  const deadline = Date.now() + timeoutMs;
  for (const dir of dirs) {
    let delay = 5;
    for (;;) {
      try {
        rmdirSync(dir);
        break;
      } catch (err) {
        const code = errnoOf(err);
        if (code === 'ENOENT') break;
        if (code !== 'EBUSY' || Date.now() >= deadline) {
          failed.push({ dir, error: (err as Error).message });
          break;
        }
        await sleep(Math.min(delay, Math.max(1, deadline - Date.now())));
        delay = Math.min(delay * 2, 100);
        await beforeRetry(dir);
      }
    }
  }
  return failed;
}

/** Polls `check` until it returns true or `timeoutMs` passes. */
export async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let delay = 2;
  for (;;) {
    if (await check()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(delay);
    delay = Math.min(delay * 2, 50);
  }
}
