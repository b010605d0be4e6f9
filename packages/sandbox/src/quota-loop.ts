/**
 * Disk quotas for kernels without project-quota support (no CONFIG_XFS_QUOTA, no ext4 quota
 * format): every sandbox workspace is its own small filesystem. A workspace is a root-only volume
 * directory `<stateDir>/workspaces/<env>/<name>/` holding a sparse ext4 image `disk.img` (the
 * limit's size, inode count from inodeLimitFor, no journal: workspaces do not survive a reboot)
 * loop-mounted at `fs/`, which is what the sandbox sees as /workspace. A full workspace fails with
 * ENOSPC like a project quota; the host only ever stores the blocks actually written.
 *
 * `volumeBytes` bounds the sum of all workspaces' limits under the state dir (every env), so the
 * total a fleet of sandboxes can write is bounded as with the shared XFS volume.
 *
 * Formatting and mounting take ~25 ms and unmounting ~10 ms of kernel work (plus a fork each), so
 * neither happens on a sandbox's own path when it can be avoided:
 * - Spares: the manager keeps a few volumes of recently asked-for (size, owner) kinds formatted,
 *   mounted and empty in `<env>/.pool/`, and refills them in the background, one at a time. A
 *   volume is built under a `.tmp` name and renamed when complete. create() claims one with a
 *   single rename(2) of its directory to `<name>` (the mount moves with its parent): exactly one of
 *   several processes wins a spare, a spare is never given out twice, and rename onto an existing
 *   workspace fails. Without a spare of the kind, create() builds one the same way, synchronously.
 * - Recycling: remove() renames the volume directory into `<env>/.trash/` (gone from the
 *   sandbox's name at once; the sandbox's processes are gone before remove() runs) and a
 *   background task unmounts it and deletes its image. close() waits for both; init() picks up
 *   what a process that died left in `.trash/` and in `.pool/` half-built.
 * Spares and the trash do not count against `volumeBytes`. drainSpares() (`hako gc`) unmounts and
 * deletes the spares.
 */
import { readdirSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { chmod, mkdir, open, rename, rm, rmdir, stat, statfs, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { AppError, processAlive } from '@hako/core';
import type { Logger } from '@hako/core';
import { findMount, readMountInfo } from './mount-info.js';
import type { MountInfoEntry } from './mount-info.js';
import { idFromName } from './names.js';
import { QuietTimer } from './quiet-timer.js';
import { errnoOf } from './errno.js';
import { assertQuotaBytes, assertQuotaName, hasTool, inodeLimitFor, runTool } from './quota-xfs.js';
import type { QuotaManagerOptions } from './quota-xfs.js';
import type { QuotaManager, QuotaUsage } from './types.js';

const MOUNTS_DIR = 'workspaces';
/** Where images lived before volume directories (one `<name>.img` per sandbox): removed by remove(). */
const LEGACY_IMAGES_DIR = 'workspace-images';
const POOL_DIR = '.pool';
const TRASH_DIR = '.trash';
/** The image file and the mount point inside a volume directory. */
export const LOOP_IMAGE_FILE = 'disk.img';
export const LOOP_FS_DIR = 'fs';
const TMP_SUFFIX = '.tmp';
const TMP_PID_RE = /-p(\d+)\.tmp$/;
/** Mounted spares kept per (size, owner). */
const SPARES_PER_KIND = 2;
/** A spare still being built after this long was left by a process that died. */
const STALE_SPARE_MS = 60_000;

const INODE_SIZE = 256;
const BLOCK_SIZE = 4096;

/**
 * Size of the image file for a `bytes` limit: the limit plus the inode tables, so the usable space
 * the filesystem reports is the limit (within about 0.1 %).
 */
export function loopImageBytes(bytes: number): number {
  const raw = bytes + inodeLimitFor(bytes) * INODE_SIZE;
  return Math.ceil(raw / BLOCK_SIZE) * BLOCK_SIZE;
}

/** mkfs.ext4 arguments for a workspace image. */
export function mkfsExt4Args(image: string, bytes: number, uid: number, gid: number): string[] {
  return [
    '-q',
    '-F',
    '-b',
    String(BLOCK_SIZE),
    '-I',
    String(INODE_SIZE),
    '-N',
    String(inodeLimitFor(bytes)),
    '-m',
    '0',
    '-O',
    '^has_journal,^resize_inode',
    // a fresh sparse file reads as zeros: nothing to zero now or later (keeps the file sparse)
    '-E',
    `assume_storage_prezeroed=1,nodiscard,root_owner=${uid}:${gid}`,
    image,
  ];
}

export const LOOP_MOUNT_OPTIONS = 'loop,nodev,nosuid,noinit_itable';

interface Kind {
  readonly bytes: number;
  readonly uid: number;
  readonly gid: number;
}

/**
 * QuotaManager with one loop-mounted ext4 image per sandbox. On a sandbox's path: rename(2) only
 * when a spare is ready (else mkfs.ext4 and mount); the forks happen in the background otherwise.
 * The directory operations on that path (readdir, rename, stat, unlink of a few entries) are made
 * synchronously: each is microseconds of metadata work, where the thread pool cost a round trip.
 */
export class LoopQuotaManager implements QuotaManager {
  readonly engine = 'loop' as const;
  private readonly env: string;
  private readonly volumeBytes: number;
  private readonly logger: Logger;
  private readonly mountsRoot: string;
  private readonly envRoot: string;
  private readonly poolDir: string;
  private readonly trashDir: string;
  private readonly legacyImages: string;
  private ready = false;
  /** The background refill in flight, if any (at most one at a time). */
  private refilling: Promise<void> | undefined;
  /** The background recycling of `.trash/` in flight, if any. */
  private recycling: Promise<void> | undefined;
  /** Set while drainSpares() runs: no refill starts. */
  private draining = false;
  /** Starts the refill and recycling once creates and removes have been quiet a moment. */
  private readonly background = new QuietTimer(() => this.startBackground());
  /** Kinds asked for since the last refill round, with their latest request. */
  private readonly wanted = new Map<string, Kind>();

  constructor(opts: QuotaManagerOptions) {
    this.env = opts.env;
    this.volumeBytes = opts.volumeBytes;
    this.logger = opts.logger;
    this.mountsRoot = join(opts.stateDir, MOUNTS_DIR);
    this.envRoot = join(this.mountsRoot, opts.env);
    this.poolDir = join(this.envRoot, POOL_DIR);
    this.trashDir = join(this.envRoot, TRASH_DIR);
    this.legacyImages = join(opts.stateDir, LEGACY_IMAGES_DIR, opts.env);
  }

  /** Spare volume directories of one kind are named `{bytes}-{uid}-{gid}-{random}`. */
  private static kindPrefix(k: Kind): string {
    return `${k.bytes}-${k.uid}-${k.gid}-`;
  }

  /** The volume directory of `name` (root-only; holds the image and the mount point). */
  volumeDir(name: string): string {
    return join(this.envRoot, assertQuotaName(this.env, name));
  }

  /** The directory create() returns for `name` (the mount point of its image). */
  pathFor(name: string): string {
    return join(this.volumeDir(name), LOOP_FS_DIR);
  }

  /**
   * Checks the tools (mkfs.ext4, mount, loop devices) and makes the state directories; removes
   * what a process that died left half-done (recycled in the background). Call once before
   * create(); nothing to remount after a reboot (stale volumes are listed by list() for removal).
   * QUOTA_UNAVAILABLE with the fix when something is missing.
   */
  async init(): Promise<void> {
    const missing: string[] = [];
    if (!(await hasTool('mkfs.ext4'))) missing.push('mkfs.ext4 (apt-get install -y e2fsprogs)');
    if (!(await hasTool('mount'))) missing.push('mount (apt-get install -y mount)');
    try {
      await stat('/dev/loop-control');
    } catch {
      missing.push('loop devices (/dev/loop-control; modprobe loop)');
    }
    if (missing.length > 0) {
      throw new AppError(
        'QUOTA_UNAVAILABLE',
        `cannot make workspace volumes, missing: ${missing.join('; ')}`,
      );
    }
    await mkdir(this.poolDir, { recursive: true, mode: 0o700 });
    await mkdir(this.trashDir, { recursive: true, mode: 0o700 });
    // formatted, never-mounted spares of the layout before volume directories
    await rm(join(this.legacyImages, '.spare'), { recursive: true, force: true });
    await this.trashStaleSpares();
    this.ready = true;
    this.startRecycle();
  }

  /**
   * Moves half-built volumes whose building process is gone to the trash. Their names carry the
   * builder's pid (`…-p{pid}.tmp`); one without (or whose pid is reused) goes after a minute.
   */
  private async trashStaleSpares(): Promise<void> {
    const now = Date.now();
    for (const f of readdirOrEmpty(this.poolDir)) {
      if (!f.endsWith(TMP_SUFFIX)) continue;
      const pid = Number(TMP_PID_RE.exec(f)?.[1] ?? NaN);
      const st = await stat(join(this.poolDir, f)).catch(() => undefined);
      if (!st) continue;
      const dead = Number.isSafeInteger(pid) ? !processAlive(pid) : false;
      if (dead || now - st.mtimeMs > STALE_SPARE_MS) this.toTrash(join(this.poolDir, f), f);
    }
  }

  /** A name for a volume being built in the pool: `{base}-p{pid}.tmp`. */
  private static tmpName(base: string): string {
    return `${base}-p${process.pid}${TMP_SUFFIX}`;
  }

  /**
   * Builds a complete volume at `dir` (must not exist): image, mkfs, mount point, mount, the root
   * owned by uid:gid with mode 0700. On failure what was made is torn down before throwing.
   */
  private async buildVolume(dir: string, k: Kind): Promise<void> {
    await mkdir(dir, { mode: 0o700 });
    const image = join(dir, LOOP_IMAGE_FILE);
    const fs = join(dir, LOOP_FS_DIR);
    try {
      const fh = await open(image, 'wx', 0o600);
      try {
        await fh.truncate(loopImageBytes(k.bytes));
      } finally {
        await fh.close();
      }
      await runTool('mkfs.ext4', mkfsExt4Args(image, k.bytes, k.uid, k.gid), 'QUOTA_FAILED');
      await mkdir(fs, { mode: 0o700 });
      await runTool('mount', ['-t', 'ext4', '-o', LOOP_MOUNT_OPTIONS, image, fs], 'QUOTA_FAILED');
      await rmdir(join(fs, 'lost+found')).catch(() => undefined);
      await chmod(fs, 0o700);
    } catch (err) {
      await this.teardownVolume(dir, await readMountInfo()).catch((e: unknown) =>
        this.logger.error({ dir, err: e }, 'removing a half-built workspace volume failed'),
      );
      throw err instanceof AppError
        ? err
        : new AppError('QUOTA_FAILED', `building ${dir} failed: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Unmounts a volume directory's filesystem (if mounted) and deletes the directory. */
  private async teardownVolume(dir: string, mounts: readonly MountInfoEntry[]): Promise<void> {
    const fs = join(dir, LOOP_FS_DIR);
    if (findMount(mounts, fs) !== undefined) await this.unmount(fs);
    await unlink(join(dir, LOOP_IMAGE_FILE)).catch(ignoreEnoent);
    await rmdir(fs).catch(ignoreEnoent);
    await rmdir(dir).catch(ignoreEnoent);
  }

  /** Unmounts; a busy mount (a host process inside it) is detached lazily, freed when released. */
  private async unmount(dir: string): Promise<void> {
    try {
      await runTool('umount', [dir], 'QUOTA_FAILED');
    } catch (err) {
      if (!/busy/i.test((err as Error).message)) throw err;
      this.logger.warn({ dir }, 'workspace busy: detaching it lazily');
      await runTool('umount', ['-l', dir], 'QUOTA_FAILED');
    }
  }

  /**
   * Claims a ready spare of this kind as `target` with rename(2): ENOENT means another process
   * took it first (try the next); a `target` that exists makes it fail (SANDBOX_ALREADY_EXISTS).
   */
  private claimSpare(target: string, k: Kind): boolean {
    const prefix = LoopQuotaManager.kindPrefix(k);
    for (const f of readdirOrEmpty(this.poolDir)) {
      if (!f.startsWith(prefix) || f.endsWith(TMP_SUFFIX)) continue;
      try {
        renameSync(join(this.poolDir, f), target);
        return true;
      } catch (err) {
        const code = errnoOf(err);
        if (code === 'ENOENT') continue;
        if (code === 'ENOTEMPTY' || code === 'EEXIST')
          throw new AppError('SANDBOX_ALREADY_EXISTS', `workspace volume ${target} already exists`);
        throw new AppError('QUOTA_FAILED', `claiming spare ${f}: ${(err as Error).message}`, { cause: err });
      }
    }
    return false;
  }

  /** Starts the background work asked for (the quiet timer fired or was flushed). */
  private startBackground(): void {
    this.startRecycle();
    if (this.wanted.size === 0 || this.draining) return;
    this.refilling ??= this.refill()
      .catch((err: unknown) => this.logger.warn({ err }, 'refilling workspace spares failed'))
      .finally(() => {
        this.refilling = undefined;
      });
  }

  private async refill(): Promise<void> {
    while (this.wanted.size > 0 && !this.draining) {
      const [prefix, k] = this.wanted.entries().next().value as [string, Kind];
      this.wanted.delete(prefix);
      const have = readdirOrEmpty(this.poolDir).filter(
        (f) => f.startsWith(prefix) && !f.endsWith(TMP_SUFFIX),
      ).length;
      for (let i = have; i < SPARES_PER_KIND && !this.draining; i++) {
        const base = `${prefix}${randomBytes(6).toString('hex')}`;
        const tmp = join(this.poolDir, LoopQuotaManager.tmpName(base));
        await this.buildVolume(tmp, k);
        await rename(tmp, join(this.poolDir, base));
      }
    }
  }

  /**
   * Moves a volume directory into the trash, to be recycled in the background. False when `dir`
   * was not there.
   */
  private toTrash(dir: string, label: string): boolean {
    try {
      renameSync(dir, join(this.trashDir, `${label}-${randomBytes(4).toString('hex')}`));
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return false;
      throw err;
    }
    this.background.poke();
    return true;
  }

  /** Starts recycling the trash unless it is running. Never throws (logs). */
  private startRecycle(): void {
    this.recycling ??= this.recycle()
      .catch((err: unknown) => this.logger.warn({ err }, 'recycling workspace volumes failed'))
      .finally(() => {
        this.recycling = undefined;
      });
  }

  /** Unmounts and deletes every volume in the trash, until it is empty. */
  private async recycle(): Promise<void> {
    for (;;) {
      const entries = readdirOrEmpty(this.trashDir);
      if (entries.length === 0) return;
      const mounts = await readMountInfo();
      const failed: string[] = [];
      for (const e of entries) {
        await this.teardownVolume(join(this.trashDir, e), mounts).catch((err: unknown) => {
          failed.push(e);
          this.logger.warn({ volume: e, err }, 'recycling a workspace volume failed');
        });
      }
      // what failed stays for the next init() or `hako gc`; do not spin on it
      if (failed.length === entries.length) return;
    }
  }

  /**
   * Starts the background work that is waiting for a quiet moment and waits until the refill and
   * the recycling have finished (call before the process exits).
   */
  async close(): Promise<void> {
    this.background.flush();
    while (this.refilling || this.recycling) {
      await Promise.all([this.refilling, this.recycling]);
      this.background.flush();
    }
  }

  /**
   * Unmounts and deletes every ready spare of this env (`hako gc`): spares are a cache, and a
   * volume nobody will use should not hold a loop device. Returns how many went. Creates may run
   * meanwhile; they build their volume themselves until the next refill. `dryRun`: only counts.
   */
  async drainSpares(dryRun = false): Promise<number> {
    const ready = (): string[] => readdirOrEmpty(this.poolDir).filter((f) => !f.endsWith(TMP_SUFFIX));
    if (dryRun) return ready().length;
    this.draining = true;
    let n = 0;
    try {
      // listed after the refill in flight has put its spare in place
      await this.refilling;
      for (const f of ready()) if (this.toTrash(join(this.poolDir, f), f)) n++;
      await this.trashStaleSpares();
    } finally {
      this.draining = false;
    }
    await this.close();
    return n;
  }

  /** drainSpares(), then the env's directories (and the old layout's image dir) when empty. */
  async removeEnvState(): Promise<void> {
    await this.drainSpares();
    for (const dir of [this.poolDir, this.trashDir, this.envRoot, this.legacyImages]) {
      await rmdir(dir).catch(() => undefined);
    }
  }

  /** Sum of the image sizes (each limit plus its inode tables) of every env's workspaces. */
  private committedBytes(): number {
    let total = 0;
    for (const env of readdirOrEmpty(this.mountsRoot)) {
      for (const name of readdirOrEmpty(join(this.mountsRoot, env))) {
        if (name.startsWith('.')) continue;
        total +=
          statSync(join(this.mountsRoot, env, name, LOOP_IMAGE_FILE), { throwIfNoEntry: false })?.size ?? 0;
      }
    }
    return total;
  }

  /**
   * Gives `name` a workspace volume with `bytes` usable, its root owned by uid:gid with mode 0700,
   * and returns the mount point. Call after init(); undo with remove(). A failed create leaves
   * nothing behind. SANDBOX_ALREADY_EXISTS when `name` has a volume; QUOTA_EXCEEDED when the
   * limits of all workspaces would exceed the volume size.
   */
  async create(name: string, bytes: number, uid: number, gid: number): Promise<string> {
    const dir = this.volumeDir(name);
    assertQuotaBytes(bytes);
    if (!this.ready) await this.init();
    const k: Kind = { bytes, uid, gid };
    // Take the volume first (a spare, or one built now), then check the budget: two racing creates
    // can both fail, never both pass.
    const claimed = this.claimSpare(dir, k);
    this.wanted.set(LoopQuotaManager.kindPrefix(k), k);
    this.background.poke();
    if (!claimed) {
      const tmp = join(this.poolDir, LoopQuotaManager.tmpName(`${name}-${randomBytes(4).toString('hex')}`));
      await this.buildVolume(tmp, k);
      try {
        await rename(tmp, dir);
      } catch (err) {
        this.toTrash(tmp, name);
        const code = errnoOf(err);
        if (code === 'ENOTEMPTY' || code === 'EEXIST')
          throw new AppError('SANDBOX_ALREADY_EXISTS', `workspace volume ${dir} already exists`);
        throw new AppError('QUOTA_FAILED', `placing ${dir} failed: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
    const committed = this.committedBytes();
    if (committed > this.volumeBytes) {
      this.toTrash(dir, name);
      throw new AppError(
        'QUOTA_EXCEEDED',
        `workspace limits would total ${committed} bytes, over the ${this.volumeBytes} of HAKO_QUOTA_VOLUME_SIZE; ` +
          'remove sandboxes, lower the disk limit, or raise HAKO_QUOTA_VOLUME_SIZE',
      );
    }
    this.logger.debug({ name, bytes, spare: claimed }, 'workspace volume created');
    return join(dir, LOOP_FS_DIR);
  }

  /**
   * Usable and used bytes of `name`'s filesystem (statfs; no spawn). SANDBOX_NOT_FOUND when it is
   * not mounted.
   */
  async usage(name: string): Promise<QuotaUsage> {
    const fs = this.pathFor(name);
    if (findMount(await readMountInfo(), fs) === undefined)
      throw new AppError('SANDBOX_NOT_FOUND', `no mounted workspace at ${fs}`);
    const s = await statfs(fs);
    return { usedBytes: (s.blocks - s.bfree) * s.bsize, limitBytes: s.blocks * s.bsize };
  }

  /**
   * Takes `name`'s volume away at once (into the trash, recycled in the background: unmounted, the
   * loop device detached with it, the image deleted). Never walks the workspace's files.
   * Idempotent. Also removes a workspace of the layout before volume directories (mounted at the
   * name's own directory, image under workspace-images/), synchronously.
   */
  async remove(name: string): Promise<void> {
    const dir = this.volumeDir(name);
    try {
      this.toTrash(dir, name);
    } catch (err) {
      if (errnoOf(err) !== 'EBUSY') {
        throw new AppError('QUOTA_FAILED', `removing ${dir} failed: ${(err as Error).message}`, {
          cause: err,
        });
      }
      // the old layout: `dir` is itself the mount point
      await this.unmount(dir);
      await rmdir(dir).catch(ignoreEnoent);
    }
    try {
      unlinkSync(join(this.legacyImages, `${name}.img`));
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT' && errnoOf(err) !== 'ENOTDIR') {
        throw new AppError('QUOTA_FAILED', `removing ${name}'s old image failed: ${(err as Error).message}`);
      }
    }
    this.logger.debug({ name }, 'workspace volume removed');
  }

  /** Names of this env's workspaces: every volume directory (a half-made one included), old images too. */
  list(): Promise<string[]> {
    const names = new Set<string>(readdirOrEmpty(this.envRoot));
    for (const f of readdirOrEmpty(this.legacyImages)) if (f.endsWith('.img')) names.add(f.slice(0, -4));
    return Promise.resolve([...names].filter((n) => idFromName(this.env, n) !== undefined).sort());
  }
}

/** A directory's entries (synchronously: a few names of hako's own dirs), or none when it is missing. */
function readdirOrEmpty(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function ignoreEnoent(err: unknown): void {
  if (errnoOf(err) !== 'ENOENT') throw err;
}
