/**
 * Disk quotas with XFS project quotas. The host's / is usually ext4 without project quotas, so every
 * sandbox workspace lives on one hako volume: a sparse file `<stateDir>/volume.img` formatted XFS and
 * loop-mounted at `<stateDir>/data` with `prjquota`. Each sandbox gets `<data>/<env>/<name>` tagged
 * with its own project id (inherited by everything created below it) and hard block and inode limits.
 *
 * Needs a kernel built with CONFIG_XFS_QUOTA (stock distribution kernels are); createQuotaManager()
 * in quota.ts picks the per-sandbox image engine (quota-loop.ts) on kernels without it.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import {
  access,
  chmod,
  chown,
  link,
  mkdir,
  open,
  readFile,
  readdir,
  realpath,
  rm,
  rmdir,
  statfs,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AppError } from '@hako/core';
import type { ErrorCode, Logger } from '@hako/core';
import { errnoOf } from './errno.js';
import { findMount, readMountInfo } from './mount-info.js';
import { idFromName } from './names.js';
import type { QuotaManager, QuotaUsage } from './types.js';

export interface QuotaManagerOptions {
  /** Environment name: this manager only sees and touches `hako-{env}-…` directories. */
  readonly env: string;
  /** Root-owned state directory (HAKO_STATE_DIR). */
  readonly stateDir: string;
  /** Size of the shared volume (HAKO_QUOTA_VOLUME_SIZE); for the image engine, the total of all limits. */
  readonly volumeBytes: number;
  readonly logger: Logger;
}

// ---------------------------------------------------------------- shared helpers

/** PATH used for host tools, so a caller's trimmed PATH (no sbin) cannot hide mkfs or mount. */
export const TOOL_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Runs a host tool (argument array, no shell) with the C locale; resolves stdout. Fails with
 * AppError(code) carrying the command line, exit status and stderr.
 */
export function runTool(
  cmd: string,
  args: readonly string[],
  code: ErrorCode,
  timeoutMs = 60_000,
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { env: { PATH: TOOL_PATH, LC_ALL: 'C' }, timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) {
          const e = err as NodeJS.ErrnoException & { code?: string | number; killed?: boolean };
          const why =
            e.code === 'ENOENT'
              ? 'not installed'
              : e.killed
                ? `timed out after ${timeoutMs} ms`
                : `exit ${String(e.code)}`;
          const detail = stderr.trim() || stdout.trim();
          reject(
            new AppError(code, `${cmd} ${args.join(' ')}: ${why}${detail ? `: ${detail}` : ''}`, {
              cause: err,
            }),
          );
          return;
        }
        resolve({ stdout, stderr });
      },
    );
  });
}

/** Whether an executable `name` is on TOOL_PATH. */
export async function hasTool(name: string): Promise<boolean> {
  for (const dir of TOOL_PATH.split(':')) {
    try {
      await access(join(dir, name), constants.X_OK);
      return true;
    } catch {
      // next
    }
  }
  return false;
}

const MIN_INODES = 1024;
const MAX_INODES = 4 * 1024 * 1024;

/**
 * The inode hard limit that goes with a block limit: one inode per 4 KiB, at least 1024 and at most
 * 4 Mi, so a flood of empty files is bounded as firmly as a flood of bytes.
 */
export function inodeLimitFor(bytes: number): number {
  return Math.min(MAX_INODES, Math.max(MIN_INODES, Math.floor(bytes / 4096)));
}

/** Validates a quota directory name (`hako-{env}-{id}`) for `env`; returns it. */
export function assertQuotaName(env: string, name: string): string {
  if (idFromName(env, name) === undefined) {
    throw new AppError(
      'INVALID_ARGUMENT',
      `bad quota directory name "${name}" (want hako-${env}-<8-32 of [a-z0-9]>)`,
    );
  }
  return name;
}

export function assertQuotaBytes(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes < 1024 * 1024) {
    throw new AppError(
      'INVALID_ARGUMENT',
      `disk limit must be a whole number of bytes of at least 1 MiB, got ${bytes}`,
    );
  }
}

/**
 * Runs `fn` while holding a host-wide lock named `key`. The lock is an abstract unix socket
 * (Linux), so the kernel releases it when the holder dies: a crash never leaves a stale lock.
 * Holders must share the network namespace (hakod and the CLI run in the host's).
 */
export async function withHostLock<T>(key: string, fn: () => Promise<T>, timeoutMs = 120_000): Promise<T> {
  const address = `\0hako-lock-${createHash('sha256').update(key).digest('hex').slice(0, 32)}`;
  const server = createServer();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const bound = await new Promise<boolean>((resolve, reject) => {
      const onError = (err: Error): void => {
        server.off('listening', onListening);
        if (errnoOf(err) === 'EADDRINUSE') resolve(false);
        else reject(err);
      };
      const onListening = (): void => {
        server.off('error', onError);
        resolve(true);
      };
      server.once('error', onError);
      server.once('listening', onListening);
      server.listen({ path: address, exclusive: true });
    });
    if (bound) break;
    if (Date.now() >= deadline) {
      throw new AppError('QUOTA_FAILED', `timed out after ${timeoutMs} ms waiting for the lock on ${key}`);
    }
    await sleep(25);
  }
  server.unref();
  try {
    return await fn();
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

// ---------------------------------------------------------------- project ids

/** Project ids hako uses: [PROJECT_ID_BASE, PROJECT_ID_BASE + PROJECT_ID_RANGE). 0 is the default project. */
export const PROJECT_ID_BASE = 1 << 20;
export const PROJECT_ID_RANGE = 1 << 30;
/** How many ids a name may probe before giving up (collisions are rare with 2^30 ids). */
export const PROJECT_ID_PROBES = 16;

/**
 * The ids `key` (`{env}/{name}`) may take, in order: a hash into the range, then the next ones.
 * Deterministic, so a lookup probes the same short list; the claim files make it collision-safe.
 */
export function projectIdCandidates(key: string): number[] {
  const h = createHash('sha256').update(key).digest().readUInt32BE(0) % PROJECT_ID_RANGE;
  const out: number[] = [];
  for (let i = 0; i < PROJECT_ID_PROBES; i++) out.push(PROJECT_ID_BASE + ((h + i) % PROJECT_ID_RANGE));
  return out;
}

/** The `-c` commands that tag `dir` with project `id` (inherited) and set its hard limits. */
export function xfsQuotaCreateCommands(dir: string, id: number, bytes: number): string[] {
  return [`project -s -p ${dir} ${id}`, `limit -p bhard=${bytes} ihard=${inodeLimitFor(bytes)} ${id}`];
}

/** The `-c` command that clears project `id`'s limits. */
export function xfsQuotaClearCommand(id: number): string {
  return `limit -p bhard=0 bsoft=0 ihard=0 isoft=0 ${id}`;
}

// ---------------------------------------------------------------- the manager

const VOLUME_FILE = 'volume.img';
const DATA_DIR = 'data';
const PROJECTS_DIR = '.projects';

/**
 * QuotaManager on one loop-mounted XFS volume with project quotas. Spawns per sandbox: one
 * `xfs_quota` in create(), one in remove(); none in usage() (statfs on a project directory reports
 * the project's limit and usage) or list().
 */
export class XfsQuotaManager implements QuotaManager {
  readonly engine = 'xfs' as const;
  private readonly env: string;
  private readonly stateDir: string;
  private readonly volumeBytes: number;
  private readonly logger: Logger;
  private readonly image: string;
  /** Mount point of the volume; the real path once init() ran. */
  private dataDir: string;

  constructor(opts: QuotaManagerOptions) {
    this.env = opts.env;
    this.stateDir = opts.stateDir;
    this.volumeBytes = opts.volumeBytes;
    this.logger = opts.logger;
    this.image = join(opts.stateDir, VOLUME_FILE);
    this.dataDir = join(opts.stateDir, DATA_DIR);
  }

  /** Where the volume is (or will be) mounted. */
  get mountPoint(): string {
    return this.dataDir;
  }

  /** The volume's image file. */
  get imagePath(): string {
    return this.image;
  }

  private envDir(): string {
    return join(this.dataDir, this.env);
  }

  private projectsDir(): string {
    return join(this.dataDir, PROJECTS_DIR);
  }

  /** The directory create() makes for `name`. */
  pathFor(name: string): string {
    return join(this.envDir(), assertQuotaName(this.env, name));
  }

  /** 'ok' when the volume is mounted with enforced project quotas, 'absent', or 'no-prjquota'. */
  private async mountState(): Promise<'ok' | 'absent' | 'no-prjquota'> {
    const m = findMount(await readMountInfo(), this.dataDir);
    if (!m) return 'absent';
    return m.fsType === 'xfs' && m.superOptions.includes('prjquota') ? 'ok' : 'no-prjquota';
  }

  private async ensureDirs(): Promise<void> {
    await mkdir(this.projectsDir(), { recursive: true, mode: 0o700 });
    await mkdir(this.envDir(), { recursive: true, mode: 0o700 });
  }

  /**
   * Ensures the volume exists and is mounted with `prjquota`. Call once before create(); cheap and
   * spawn-free when it is already mounted. Creates the sparse image and formats it on first use,
   * mounts an existing image after a reboot. Concurrent callers (hakod, the CLI) serialize on a
   * host lock. Fails with QUOTA_UNAVAILABLE (and what to do) when xfsprogs is missing, the kernel
   * has no XFS quota support, or the mount fails.
   */
  async init(): Promise<void> {
    await mkdir(this.dataDir, { recursive: true, mode: 0o700 });
    this.dataDir = await realpath(this.dataDir);
    if (/\s/.test(this.dataDir)) {
      // xfs_quota splits its -c commands on whitespace
      throw new AppError(
        'QUOTA_UNAVAILABLE',
        `the state dir must not contain whitespace: "${this.stateDir}"`,
      );
    }
    const state = await this.mountState();
    if (state === 'ok') {
      await this.ensureDirs();
      return;
    }
    if (state === 'no-prjquota') throw this.notPrjquota();
    await withHostLock(`quota:${this.dataDir}`, async () => {
      const again = await this.mountState();
      if (again === 'no-prjquota') throw this.notPrjquota();
      if (again === 'absent') await this.createAndMount();
    });
    await this.ensureDirs();
  }

  private notPrjquota(): AppError {
    return new AppError(
      'QUOTA_UNAVAILABLE',
      `${this.dataDir} is mounted without enforced project quotas; unmount it (umount ${this.dataDir}) and run \`hako doctor --fix\``,
    );
  }

  private async createAndMount(): Promise<void> {
    await assertXfsQuotaKernel();
    let haveImage = true;
    try {
      await access(this.image, constants.F_OK);
    } catch {
      haveImage = false;
    }
    if (!haveImage) {
      if (!(await hasTool('mkfs.xfs'))) {
        throw new AppError(
          'QUOTA_UNAVAILABLE',
          'mkfs.xfs is not installed: apt-get install -y xfsprogs (or bash scripts/setup)',
        );
      }
      // Format a temporary file and link it into place, so a crash never leaves a half-made volume.
      const tmp = `${this.image}.tmp-${randomBytes(4).toString('hex')}`;
      try {
        const fh = await open(tmp, 'wx', 0o600);
        try {
          await fh.truncate(this.volumeBytes);
        } finally {
          await fh.close();
        }
        await runTool('mkfs.xfs', ['-q', tmp], 'QUOTA_UNAVAILABLE');
        await link(tmp, this.image);
      } finally {
        await rm(tmp, { force: true });
      }
      this.logger.info({ image: this.image, bytes: this.volumeBytes }, 'created the quota volume');
    }
    try {
      await runTool(
        'mount',
        ['-t', 'xfs', '-o', 'loop,prjquota,nodev,nosuid', this.image, this.dataDir],
        'QUOTA_UNAVAILABLE',
      );
    } catch (err) {
      throw new AppError(
        'QUOTA_UNAVAILABLE',
        `mounting the quota volume ${this.image} at ${this.dataDir} failed (${(err as Error).message}); ` +
          'check `dmesg | tail`, that loop devices work (/dev/loop-control) and that xfsprogs is installed, then run `hako doctor`',
        { cause: err },
      );
    }
    await chmod(this.dataDir, 0o700);
    this.logger.info({ image: this.image, mountPoint: this.dataDir }, 'mounted the quota volume');
  }

  private async requireMounted(): Promise<void> {
    if ((await this.mountState()) !== 'ok') {
      throw new AppError(
        'QUOTA_UNAVAILABLE',
        `the quota volume is not mounted at ${this.dataDir}; call init() first (or run \`hako doctor --fix\`)`,
      );
    }
  }

  /**
   * Claims a project id for `key` with a claim file `<data>/.projects/<id>` holding the key,
   * linked into place atomically (link fails if the id is taken). A claim already holding `key`
   * is reused (a retried create).
   */
  private async claimProjectId(key: string): Promise<number> {
    const dir = this.projectsDir();
    const tmp = join(dir, `.claim-${randomBytes(6).toString('hex')}`);
    await writeFile(tmp, `${key}\n`, { mode: 0o600, flag: 'wx' });
    try {
      for (const id of projectIdCandidates(key)) {
        try {
          await link(tmp, join(dir, String(id)));
          return id;
        } catch (err) {
          if (errnoOf(err) !== 'EEXIST') throw err;
          const holder = await readFile(join(dir, String(id)), 'utf8').catch(() => '');
          if (holder.trim() === key) return id;
        }
      }
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
    throw new AppError('QUOTA_FAILED', `no free project id for ${key} after ${PROJECT_ID_PROBES} probes`);
  }

  /** The project id claimed for `key`, if any. */
  private async findProjectId(key: string): Promise<number | undefined> {
    for (const id of projectIdCandidates(key)) {
      try {
        if ((await readFile(join(this.projectsDir(), String(id)), 'utf8')).trim() === key) return id;
      } catch (err) {
        if (errnoOf(err) !== 'ENOENT') throw err;
      }
    }
    return undefined;
  }

  /**
   * Creates `<data>/<env>/<name>` with a project quota of `bytes` (and an inode limit from
   * inodeLimitFor), owned by uid:gid with mode 0700, and returns its path. Call after init();
   * undo with remove(). A failed create leaves nothing behind. SANDBOX_ALREADY_EXISTS when the
   * directory exists.
   */
  async create(name: string, bytes: number, uid: number, gid: number): Promise<string> {
    const dir = this.pathFor(name);
    assertQuotaBytes(bytes);
    await this.requireMounted();
    const key = `${this.env}/${name}`;
    const id = await this.claimProjectId(key);
    try {
      await mkdir(dir, { mode: 0o700 });
    } catch (err) {
      if (errnoOf(err) === 'EEXIST') {
        throw new AppError('SANDBOX_ALREADY_EXISTS', `quota directory ${dir} already exists`);
      }
      await this.releaseProjectId(id).catch(() => undefined);
      throw new AppError('QUOTA_FAILED', `creating ${dir} failed: ${(err as Error).message}`, { cause: err });
    }
    try {
      const cmds = xfsQuotaCreateCommands(dir, id, bytes);
      await this.xfsQuota(cmds);
      await chown(dir, uid, gid);
      await chmod(dir, 0o700);
    } catch (err) {
      await this.remove(name).catch((e: unknown) =>
        this.logger.error({ name, err: (e as Error).message }, 'rolling back a failed quota create failed'),
      );
      throw err instanceof AppError
        ? err
        : new AppError('QUOTA_FAILED', `setting up ${dir} failed: ${(err as Error).message}`, { cause: err });
    }
    this.logger.debug({ name, id, bytes }, 'quota directory created');
    return dir;
  }

  private async xfsQuota(commands: readonly string[]): Promise<void> {
    const args = ['-x'];
    for (const c of commands) args.push('-c', c);
    args.push(this.dataDir);
    const { stderr } = await runTool('xfs_quota', args, 'QUOTA_FAILED');
    // xfs_quota reports some command failures on stderr with exit status 0.
    if (stderr.trim() !== '') {
      throw new AppError('QUOTA_FAILED', `xfs_quota ${args.join(' ')}: ${stderr.trim()}`);
    }
  }

  private async releaseProjectId(id: number): Promise<void> {
    await unlink(join(this.projectsDir(), String(id))).catch((err: unknown) => {
      if (errnoOf(err) !== 'ENOENT') throw err;
    });
  }

  /**
   * Bytes used by and allowed to `name`'s project. Reads statfs on the directory: for a directory
   * carrying an inherited project id XFS reports the project's limit and usage there. Fails with
   * SANDBOX_NOT_FOUND when the directory does not exist.
   */
  async usage(name: string): Promise<QuotaUsage> {
    const dir = this.pathFor(name);
    await this.requireMounted();
    try {
      const s = await statfs(dir);
      return { usedBytes: (s.blocks - s.bfree) * s.bsize, limitBytes: s.blocks * s.bsize };
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') throw new AppError('SANDBOX_NOT_FOUND', `no quota directory ${dir}`);
      throw new AppError('QUOTA_FAILED', `statfs ${dir} failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Deletes `name`'s directory (symlinks inside are removed, never followed), clears its project's
   * limits and frees the project id. Idempotent. Needs the volume mounted (QUOTA_UNAVAILABLE
   * otherwise, so nothing is silently left on an unmounted volume).
   */
  async remove(name: string): Promise<void> {
    const dir = this.pathFor(name);
    await this.requireMounted();
    await rm(dir, { recursive: true, force: true });
    const id = await this.findProjectId(`${this.env}/${name}`);
    if (id !== undefined) {
      await this.xfsQuota([xfsQuotaClearCommand(id)]);
      await this.releaseProjectId(id);
    }
    this.logger.debug({ name, id }, 'quota directory removed');
  }

  /** Nothing runs in the background. */
  close(): Promise<void> {
    return Promise.resolve();
  }

  /** No spares: a project directory is one mkdir and one xfs_quota. */
  drainSpares(): Promise<number> {
    return Promise.resolve(0);
  }

  /** Removes the env's directory on the volume when it is empty. */
  async removeEnvState(): Promise<void> {
    await rmdir(this.envDir()).catch(() => undefined);
  }

  /** Names of this env's quota directories (empty when the volume is not mounted). */

  async list(): Promise<string[]> {
    try {
      const names = await readdir(this.envDir());
      return names.filter((n) => idFromName(this.env, n) !== undefined).sort();
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return [];
      throw new AppError('QUOTA_FAILED', `listing ${this.envDir()} failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
}

// ---------------------------------------------------------------- kernel support

/** Whether this kernel can enforce XFS project quotas, and why not. */
export interface XfsQuotaSupport {
  /** true: yes; false: the kernel was built without it; undefined: XFS is not loaded yet, so unknown. */
  readonly supported: boolean | undefined;
  readonly detail: string;
}

/**
 * Reads XFS quota support from /proc: the XFS quota code registers /proc/fs/xfs/xqmstat, so an
 * XFS that is loaded (/proc/fs/xfs exists) without it has no quota support (CONFIG_XFS_QUOTA unset).
 */
export async function detectXfsQuotaSupport(procRoot = '/proc'): Promise<XfsQuotaSupport> {
  const exists = (p: string): Promise<boolean> =>
    access(p, constants.F_OK).then(
      () => true,
      () => false,
    );
  if (await exists(join(procRoot, 'fs/xfs/xqmstat')))
    return { supported: true, detail: 'XFS quota support is loaded' };
  if (await exists(join(procRoot, 'fs/xfs'))) {
    return {
      supported: false,
      detail: 'this kernel was built without XFS quota support (CONFIG_XFS_QUOTA is not set)',
    };
  }
  return { supported: undefined, detail: 'XFS is not loaded yet (a module loaded on first mount)' };
}

async function assertXfsQuotaKernel(): Promise<void> {
  const s = await detectXfsQuotaSupport();
  if (s.supported === false) {
    throw new AppError(
      'QUOTA_UNAVAILABLE',
      `${s.detail}, so XFS project quotas cannot work here; use a kernel with CONFIG_XFS_QUOTA=y, ` +
        'or let createQuotaManager() pick the per-sandbox image engine',
    );
  }
}
