/**
 * Disk quotas for kernels without project-quota support (no CONFIG_XFS_QUOTA, no ext4 quota
 * format): every sandbox workspace is its own small filesystem. create() makes a sparse file
 * `<stateDir>/workspace-images/<env>/<name>.img` of the limit's size, formats it ext4 (inode count
 * from inodeLimitFor, no journal: workspaces do not survive a reboot) and loop-mounts it at
 * `<stateDir>/workspaces/<env>/<name>`. A full workspace fails with ENOSPC like a project quota;
 * the host only ever stores the blocks actually written.
 *
 * `volumeBytes` bounds the sum of all workspaces' limits under the state dir (every env), so the
 * total a fleet of sandboxes can write is bounded as with the shared XFS volume.
 *
 * Spares: formatting is half of create()'s cost, so the manager keeps a few images of recently
 * asked-for sizes already formatted in `<env>/.spare/` (sparse, empty, never mounted, never given
 * to a sandbox twice) and refills them in the background, one at a time. create() claims one with
 * link(2), which fails if the sandbox's image exists and lets exactly one of several processes
 * win a spare; without a spare it formats as before. Spares do not count against `volumeBytes`.
 */
import { chmod, link, mkdir, open, readdir, rename, rmdir, stat, statfs, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { findMount, readMountInfo } from './mount-info.js';
import { idFromName } from './names.js';
import { errnoOf } from './errno.js';
import { assertQuotaBytes, assertQuotaName, hasTool, inodeLimitFor, runTool } from './quota-xfs.js';
import type { QuotaManagerOptions } from './quota-xfs.js';
import type { QuotaManager, QuotaUsage } from './types.js';

const IMAGES_DIR = 'workspace-images';
const MOUNTS_DIR = 'workspaces';
const IMAGE_SUFFIX = '.img';
const SPARE_DIR = '.spare';
const SPARE_TMP_SUFFIX = '.tmp';
/** Formatted spares kept per (size, owner). */
const SPARES_PER_KIND = 2;
/** A spare still being formatted after this long was left by a process that died. */
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

/**
 * QuotaManager with one loop-mounted ext4 image per sandbox. Spawns per sandbox: mkfs.ext4 and
 * mount in create(), umount in remove(); none in usage() or list().
 */
export class LoopQuotaManager implements QuotaManager {
  readonly engine = 'loop' as const;
  private readonly env: string;
  private readonly volumeBytes: number;
  private readonly logger: Logger;
  private readonly imagesRoot: string;
  private readonly mountsRoot: string;
  private ready = false;
  /** The background refill in flight, if any (at most one at a time). */
  private refilling: Promise<void> | undefined;
  /** Kinds asked for since the last refill round, with their latest request. */
  private readonly wanted = new Map<string, { bytes: number; uid: number; gid: number }>();

  constructor(opts: QuotaManagerOptions) {
    this.env = opts.env;
    this.volumeBytes = opts.volumeBytes;
    this.logger = opts.logger;
    this.imagesRoot = join(opts.stateDir, IMAGES_DIR);
    this.mountsRoot = join(opts.stateDir, MOUNTS_DIR);
  }

  private imagePath(name: string): string {
    return join(this.imagesRoot, this.env, `${name}${IMAGE_SUFFIX}`);
  }

  private spareDir(): string {
    return join(this.imagesRoot, this.env, SPARE_DIR);
  }

  /** Spare files of one kind are named `{bytes}-{uid}-{gid}-{random}.img`. */
  private static spareKind(bytes: number, uid: number, gid: number): string {
    return `${bytes}-${uid}-${gid}-`;
  }

  /** The directory create() returns for `name` (the mount point of its image). */
  pathFor(name: string): string {
    return join(this.mountsRoot, this.env, assertQuotaName(this.env, name));
  }

  /**
   * Checks the tools (mkfs.ext4, mount, loop devices) and makes the state directories. Call once
   * before create(); cheap, and nothing to remount after a reboot (stale images are listed by
   * list() for removal). QUOTA_UNAVAILABLE with the fix when something is missing.
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
    await mkdir(join(this.imagesRoot, this.env), { recursive: true, mode: 0o700 });
    await mkdir(join(this.mountsRoot, this.env), { recursive: true, mode: 0o700 });
    await mkdir(this.spareDir(), { recursive: true, mode: 0o700 });
    await this.removeStaleSpares();
    this.ready = true;
  }

  /** Deletes half-formatted spares whose formatting process is gone (older than a minute). */
  private async removeStaleSpares(): Promise<void> {
    const now = Date.now();
    for (const f of await readdir(this.spareDir()).catch(() => [] as string[])) {
      if (!f.endsWith(SPARE_TMP_SUFFIX)) continue;
      const p = join(this.spareDir(), f);
      const st = await stat(p).catch(() => undefined);
      if (st && now - st.mtimeMs > STALE_SPARE_MS) await unlink(p).catch(() => undefined);
    }
  }

  /**
   * Claims a formatted spare of this kind as `image` (link(2): fails when `image` exists, and only
   * one claimant can unlink the spare). True when the image is now a formatted spare.
   */
  private async claimSpare(image: string, kind: string): Promise<boolean> {
    const spares = (await readdir(this.spareDir()).catch(() => [] as string[])).filter(
      (f) => f.startsWith(kind) && f.endsWith(IMAGE_SUFFIX),
    );
    for (const f of spares) {
      const spare = join(this.spareDir(), f);
      try {
        await link(spare, image);
      } catch (err) {
        if (errnoOf(err) === 'EEXIST')
          throw new AppError('SANDBOX_ALREADY_EXISTS', `workspace image ${image} already exists`);
        continue; // another process took it
      }
      try {
        await unlink(spare);
        return true;
      } catch {
        // another process linked and unlinked the same spare first: it is theirs
        await unlink(image).catch(() => undefined);
      }
    }
    return false;
  }

  /** Starts a background refill round unless one is running. Never throws (logs). */
  private scheduleRefill(bytes: number, uid: number, gid: number): void {
    this.wanted.set(LoopQuotaManager.spareKind(bytes, uid, gid), { bytes, uid, gid });
    this.refilling ??= this.refill()
      .catch((err: unknown) => this.logger.warn({ err }, 'refilling workspace spares failed'))
      .finally(() => {
        this.refilling = undefined;
      });
  }

  private async refill(): Promise<void> {
    while (this.wanted.size > 0) {
      const [kind, want] = this.wanted.entries().next().value as [
        string,
        { bytes: number; uid: number; gid: number },
      ];
      this.wanted.delete(kind);
      const have = (await readdir(this.spareDir()).catch(() => [] as string[])).filter(
        (f) => f.startsWith(kind) && f.endsWith(IMAGE_SUFFIX),
      ).length;
      for (let i = have; i < SPARES_PER_KIND; i++) {
        const final = join(this.spareDir(), `${kind}${randomBytes(6).toString('hex')}${IMAGE_SUFFIX}`);
        const tmp = `${final}${SPARE_TMP_SUFFIX}`;
        try {
          const fh = await open(tmp, 'wx', 0o600);
          try {
            await fh.truncate(loopImageBytes(want.bytes));
          } finally {
            await fh.close();
          }
          await runTool('mkfs.ext4', mkfsExt4Args(tmp, want.bytes, want.uid, want.gid), 'QUOTA_FAILED');
          await rename(tmp, final);
        } catch (err) {
          await unlink(tmp).catch(() => undefined);
          throw err;
        }
      }
    }
  }

  /** Waits for a background refill to finish (call before the process exits). */
  async close(): Promise<void> {
    await this.refilling;
  }

  /** Sum of the image sizes (each limit plus its inode tables) under the state dir, every env. */
  private async committedBytes(): Promise<number> {
    let total = 0;
    const envs = await readdir(this.imagesRoot).catch(() => [] as string[]);
    for (const env of envs) {
      const files = await readdir(join(this.imagesRoot, env)).catch(() => [] as string[]);
      for (const f of files) {
        if (!f.endsWith(IMAGE_SUFFIX)) continue;
        const s = await stat(join(this.imagesRoot, env, f)).catch(() => undefined);
        total += s?.size ?? 0;
      }
    }
    return total;
  }

  /**
   * Creates, formats and mounts `name`'s image with `bytes` usable, the root owned by uid:gid with
   * mode 0700, and returns the mount point. Call after init(); undo with remove(). A failed create
   * leaves nothing behind. SANDBOX_ALREADY_EXISTS when `name` has an image; QUOTA_EXCEEDED when the
   * limits of all workspaces would exceed the volume size.
   */
  async create(name: string, bytes: number, uid: number, gid: number): Promise<string> {
    const dir = this.pathFor(name);
    assertQuotaBytes(bytes);
    if (!this.ready) await this.init();
    const image = this.imagePath(name);
    const size = loopImageBytes(bytes);
    const kind = LoopQuotaManager.spareKind(bytes, uid, gid);
    // Reserve first (O_EXCL, or link(2) of a spare), then check the budget: two racing creates can
    // both fail, never both pass.
    const formatted = await this.claimSpare(image, kind);
    if (!formatted) {
      try {
        const fh = await open(image, 'wx', 0o600);
        try {
          await fh.truncate(size);
        } finally {
          await fh.close();
        }
      } catch (err) {
        if (errnoOf(err) === 'EEXIST')
          throw new AppError('SANDBOX_ALREADY_EXISTS', `workspace image ${image} already exists`);
        throw new AppError('QUOTA_FAILED', `creating ${image} failed: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
    this.scheduleRefill(bytes, uid, gid);
    let mounted = false;
    try {
      const committed = await this.committedBytes();
      if (committed > this.volumeBytes) {
        throw new AppError(
          'QUOTA_EXCEEDED',
          `workspace limits would total ${committed} bytes, over the ${this.volumeBytes} of HAKO_QUOTA_VOLUME_SIZE; ` +
            'remove sandboxes, lower the disk limit, or raise HAKO_QUOTA_VOLUME_SIZE',
        );
      }
      if (!formatted) await runTool('mkfs.ext4', mkfsExt4Args(image, bytes, uid, gid), 'QUOTA_FAILED');
      await mkdir(dir, { mode: 0o700 }).catch((err: unknown) => {
        if (errnoOf(err) !== 'EEXIST') throw err;
      });
      await runTool('mount', ['-t', 'ext4', '-o', LOOP_MOUNT_OPTIONS, image, dir], 'QUOTA_FAILED');
      mounted = true;
      await rmdir(join(dir, 'lost+found')).catch(() => undefined);
      await chmod(dir, 0o700);
    } catch (err) {
      if (mounted) await this.unmount(dir).catch(() => undefined);
      await rmdir(dir).catch(() => undefined);
      await unlink(image).catch(() => undefined);
      throw err instanceof AppError
        ? err
        : new AppError('QUOTA_FAILED', `setting up ${dir} failed: ${(err as Error).message}`, { cause: err });
    }
    this.logger.debug({ name, bytes }, 'workspace volume created');
    return dir;
  }

  private async isMounted(dir: string): Promise<boolean> {
    return findMount(await readMountInfo(), dir) !== undefined;
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
   * Usable and used bytes of `name`'s filesystem (statfs; no spawn). SANDBOX_NOT_FOUND when it is
   * not mounted.
   */
  async usage(name: string): Promise<QuotaUsage> {
    const dir = this.pathFor(name);
    if (!(await this.isMounted(dir)))
      throw new AppError('SANDBOX_NOT_FOUND', `no mounted workspace at ${dir}`);
    const s = await statfs(dir);
    return { usedBytes: (s.blocks - s.bfree) * s.bsize, limitBytes: s.blocks * s.bsize };
  }

  /**
   * Unmounts `name`'s filesystem (the loop device detaches with it), deletes the mount point and
   * the image. Never walks the workspace's files. Idempotent.
   */
  async remove(name: string): Promise<void> {
    const dir = this.pathFor(name);
    if (await this.isMounted(dir)) await this.unmount(dir);
    await rmdir(dir).catch((err: unknown) => {
      if (errnoOf(err) !== 'ENOENT')
        throw new AppError('QUOTA_FAILED', `removing ${dir} failed: ${(err as Error).message}`);
    });
    await unlink(this.imagePath(name)).catch((err: unknown) => {
      if (errnoOf(err) !== 'ENOENT') {
        throw new AppError(
          'QUOTA_FAILED',
          `removing ${this.imagePath(name)} failed: ${(err as Error).message}`,
        );
      }
    });
    this.logger.debug({ name }, 'workspace volume removed');
  }

  /** Names of this env's workspaces: every image and every mount point (a half-made one included). */
  async list(): Promise<string[]> {
    const names = new Set<string>();
    const images = await readdir(join(this.imagesRoot, this.env)).catch(() => [] as string[]);
    for (const f of images) if (f.endsWith(IMAGE_SUFFIX)) names.add(f.slice(0, -IMAGE_SUFFIX.length));
    const dirs = await readdir(join(this.mountsRoot, this.env)).catch(() => [] as string[]);
    for (const d of dirs) names.add(d);
    return [...names].filter((n) => idFromName(this.env, n) !== undefined).sort();
  }
}
