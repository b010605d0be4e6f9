/**
 * Applies one image layer (a tar stream, already decompressed) onto a root filesystem directory,
 * with OCI whiteout semantics.
 *
 * Security model: the layer is untrusted. No entry may create, change or delete anything outside
 * `rootfs`:
 * - entry names and hardlink targets are split into components; absolute names and any `..`
 *   component are rejected (IMAGE_INVALID), `.` and empty components are dropped;
 * - every parent directory of an entry is checked with lstat, component by component, and a parent
 *   that is a symlink (or not a directory) is refused: hako never writes, deletes or links through
 *   a symlink, whoever created it (a lower layer or an earlier entry of this layer);
 * - the entry's own path, when it exists, is removed first (never opened), and files are created
 *   with O_CREAT|O_EXCL|O_NOFOLLOW, so an existing symlink is replaced, not followed;
 * - hardlink targets must be existing non-directories inside the rootfs, reached without symlinks;
 *   link(2) does not follow a symlink target, so a hardlink to a symlink stays a symlink;
 * - symlinks are created verbatim (any target): they are only resolved later, by the kernel, inside
 *   the sandbox's own root.
 * The caller unpacks into a private (0700, root-owned) staging directory, so nothing else can race
 * these checks.
 *
 * Kept from the tar: uid/gid (when running as root), mode bits including setuid/setgid/sticky, and
 * mtimes. Setuid/setgid files are harmless in a sandbox because every sandbox process runs with
 * `noNewPrivileges` and no capabilities, so exec never raises privileges. Extended attributes
 * (including file capabilities) are not applied. Device nodes and FIFOs are skipped: sandboxes get
 * their own /dev.
 */
import { constants } from 'node:fs';
import { lchown, link, lstat, lutimes, mkdir, open, readdir, rm, symlink, chmod } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { Extract, Header } from 'tar-stream';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';

/** One entry of a tar-stream extract (header plus data stream). */
export type TarEntry = Extract extends AsyncIterable<infer S> ? S : never;
type Entry = TarEntry;

/** Prefix of a whiteout entry: `.wh.<name>` deletes `<name>` from lower layers. */
export const WHITEOUT_PREFIX = '.wh.';
/** Whiteout meta prefix (aufs bookkeeping such as `.wh..wh.plnk`); such entries are ignored. */
export const WHITEOUT_META_PREFIX = '.wh..wh.';
/** Marks its directory opaque: everything lower layers put there is removed. */
export const WHITEOUT_OPAQUE = '.wh..wh..opq';

export interface ApplyLayerOptions {
  readonly logger: Logger;
  /** Apply the uid/gid recorded in the tar. Needs root; default: true when running as root. */
  readonly preserveOwnership?: boolean;
  /** Used in error messages (e.g. the layer digest). */
  readonly label?: string;
}

export interface ApplyLayerResult {
  /** Entries applied (files, dirs, links, whiteouts). */
  readonly applied: number;
  /** Entries skipped (device nodes, FIFOs, unknown types, aufs meta entries). */
  readonly skipped: number;
}

function invalid(label: string, message: string, cause?: unknown): AppError {
  return new AppError('IMAGE_INVALID', `layer ${label}: ${message}`, cause === undefined ? {} : { cause });
}

function isErrno(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === code;
}

/** True for errors from a system call (fs), which the caller classifies as store errors. */
function isSystemError(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException | null;
  return typeof e?.syscall === 'string' && typeof e.code === 'string';
}

/**
 * Splits a tar entry name (or hardlink target) into safe path components relative to the rootfs.
 * Drops `.` and empty components; throws IMAGE_INVALID for absolute names, `..` components and NUL
 * bytes. An empty result means the rootfs itself.
 */
export function entryPathComponents(name: string, label = 'entry'): string[] {
  if (name.includes('\0')) throw invalid(label, `entry name ${JSON.stringify(name)} contains a NUL byte`);
  if (name.startsWith('/')) {
    throw invalid(
      label,
      `entry ${JSON.stringify(name)} has an absolute path; layer entries must be relative to the root`,
    );
  }
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) {
    throw invalid(
      label,
      `entry ${JSON.stringify(name)} has a ".." component and would escape the root filesystem`,
    );
  }
  return parts;
}

async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw err;
  }
}

/**
 * Creates directory `rel` (slash-separated, relative) under `root` with `mode`, creating missing
 * parents (0755), without following symlinks. Returns false, and creates nothing further, when a
 * component exists as a symlink or a non-directory. Used for mount points in unpacked images.
 */
export async function ensureDirInRoot(root: string, rel: string, mode = 0o755): Promise<boolean> {
  const parts = entryPathComponents(rel, 'mount point');
  let cur = root;
  for (let i = 0; i < parts.length; i++) {
    cur = join(cur, parts[i] ?? '');
    const st = await lstatOrUndefined(cur);
    if (st === undefined) {
      const last = i === parts.length - 1;
      await mkdir(cur, { mode: last ? mode : 0o755 });
      // mkdir's mode is filtered by the umask; set it exactly
      await chmod(cur, last ? mode : 0o755);
      continue;
    }
    if (!st.isDirectory()) return false;
  }
  return true;
}

/**
 * Reads a tar entry's data chunk by chunk. A failure to read (truncated or corrupt archive) is
 * IMAGE_INVALID, prefixed with `context`; errors from `onChunk` pass through unchanged.
 */
export async function readEntryChunks(
  entry: Entry,
  context: string,
  onChunk: (chunk: Buffer) => Promise<void> | void,
): Promise<void> {
  const it = entry[Symbol.asyncIterator]();
  for (;;) {
    let r: IteratorResult<Buffer>;
    try {
      r = (await it.next()) as IteratorResult<Buffer>;
    } catch (err) {
      throw new AppError(
        'IMAGE_INVALID',
        `${context}: reading tar entry ${JSON.stringify(entry.header.name)} failed: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    if (r.done) return;
    await onChunk(r.value);
  }
}

function drain(entry: Entry, label: string): Promise<void> {
  return readEntryChunks(entry, `layer ${label}`, () => undefined);
}

class LayerApplier {
  /** Paths (and their ancestors) this layer created; lower-layer content is what is not here. */
  private readonly touched = new Set<string>();
  /** Paths this layer skipped (devices, FIFOs), so hardlinks to them are skipped too. */
  private readonly skippedPaths = new Set<string>();
  private readonly dirTimes: { abs: string; mtime: Date }[] = [];
  applied = 0;
  skipped = 0;

  constructor(
    private readonly root: string,
    private readonly label: string,
    private readonly chown: boolean,
    private readonly logger: Logger,
  ) {}

  private touch(parts: readonly string[]): void {
    for (let i = 1; i <= parts.length; i++) this.touched.add(parts.slice(0, i).join('/'));
  }

  /**
   * Checks every parent component of `parts` under the root: each must be a real directory (never a
   * symlink). Missing ones are created when `create`, else false is returned.
   */
  private async resolveParent(parts: readonly string[], create: boolean, name: string): Promise<boolean> {
    let cur = this.root;
    for (let i = 0; i < parts.length - 1; i++) {
      cur = join(cur, parts[i] ?? '');
      const st = await lstatOrUndefined(cur);
      if (st === undefined) {
        if (!create) return false;
        await mkdir(cur, { mode: 0o755 });
        await chmod(cur, 0o755);
        this.touch(parts.slice(0, i + 1));
        continue;
      }
      const rel = parts.slice(0, i + 1).join('/');
      if (st.isSymbolicLink()) {
        throw invalid(
          this.label,
          `entry ${JSON.stringify(name)} goes through "${rel}", which is a symlink; hako never writes through symlinks in image layers (rebuild the image so the layer uses the real path)`,
        );
      }
      if (!st.isDirectory()) {
        throw invalid(
          this.label,
          `entry ${JSON.stringify(name)} needs "${rel}" to be a directory, but it is not`,
        );
      }
    }
    return true;
  }

  /** Makes room for a new entry: removes what is at the path unless both are directories. */
  private async prepareTarget(
    parts: readonly string[],
    isDir: boolean,
    name: string,
  ): Promise<'exists-dir' | 'free'> {
    await this.resolveParent(parts, true, name);
    const abs = join(this.root, ...parts);
    const st = await lstatOrUndefined(abs);
    if (st === undefined) return 'free';
    if (isDir && st.isDirectory()) return 'exists-dir';
    await rm(abs, { recursive: true, force: true });
    return 'free';
  }

  private async setOwner(abs: string, header: Header): Promise<void> {
    if (this.chown) await lchown(abs, header.uid ?? 0, header.gid ?? 0);
  }

  /** Removes every lower-layer path under `dirParts` (what this layer did not create). */
  private async prune(dirParts: readonly string[]): Promise<void> {
    const abs = join(this.root, ...dirParts);
    for (const name of await readdir(abs)) {
      const childParts = [...dirParts, name];
      const childRel = childParts.join('/');
      const childAbs = join(abs, name);
      if (!this.touched.has(childRel)) {
        await rm(childAbs, { recursive: true, force: true });
        continue;
      }
      const st = await lstat(childAbs);
      if (st.isDirectory()) await this.prune(childParts);
    }
  }

  private async whiteout(parts: readonly string[], base: string, name: string): Promise<void> {
    const dirParts = parts.slice(0, -1);
    if (base === WHITEOUT_OPAQUE) {
      if (!(await this.resolveParent(parts, false, name))) return;
      const st = await lstatOrUndefined(join(this.root, ...dirParts));
      if (st?.isDirectory()) await this.prune(dirParts);
      this.applied++;
      return;
    }
    if (base.startsWith(WHITEOUT_META_PREFIX)) {
      this.logger.debug({ layer: this.label, entry: name }, 'skipping whiteout meta entry');
      this.skipped++;
      return;
    }
    const target = base.slice(WHITEOUT_PREFIX.length);
    if (target === '' || target === '.' || target === '..') {
      throw invalid(this.label, `whiteout ${JSON.stringify(name)} names no file`);
    }
    if (!(await this.resolveParent(parts, false, name))) return;
    const targetParts = [...dirParts, target];
    const abs = join(this.root, ...targetParts);
    if (this.touched.has(targetParts.join('/'))) {
      // this layer re-created it; only what lower layers left inside a directory goes
      const st = await lstatOrUndefined(abs);
      if (st?.isDirectory()) await this.prune(targetParts);
    } else {
      await rm(abs, { recursive: true, force: true });
    }
    this.applied++;
  }

  private async writeFile(parts: readonly string[], header: Header, entry: Entry): Promise<void> {
    await this.prepareTarget(parts, false, header.name);
    const abs = join(this.root, ...parts);
    const fh = await open(
      abs,
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
    try {
      await readEntryChunks(entry, `layer ${this.label}`, async (chunk) => {
        await fh.write(chunk);
      });
      // chown before chmod: chown clears setuid/setgid
      if (this.chown) await fh.chown(header.uid ?? 0, header.gid ?? 0);
      await fh.chmod((header.mode ?? 0o644) & 0o7777);
      if (header.mtime) await fh.utimes(header.mtime, header.mtime);
    } finally {
      await fh.close();
    }
    this.touch(parts);
  }

  private async makeDir(parts: readonly string[], header: Header): Promise<void> {
    const state = await this.prepareTarget(parts, true, header.name);
    const abs = join(this.root, ...parts);
    if (state === 'free') await mkdir(abs, { mode: 0o700 });
    await this.setOwner(abs, header);
    await chmod(abs, (header.mode ?? 0o755) & 0o7777);
    if (header.mtime) this.dirTimes.push({ abs, mtime: header.mtime });
    this.touch(parts);
  }

  private async makeSymlink(parts: readonly string[], header: Header): Promise<void> {
    const target = header.linkname;
    if (!target || target.includes('\0')) {
      throw invalid(this.label, `symlink ${JSON.stringify(header.name)} has no valid target`);
    }
    await this.prepareTarget(parts, false, header.name);
    const abs = join(this.root, ...parts);
    await symlink(target, abs);
    await this.setOwner(abs, header);
    if (header.mtime) await lutimes(abs, header.mtime, header.mtime);
    this.touch(parts);
  }

  private async makeHardlink(parts: readonly string[], header: Header): Promise<boolean> {
    const name = header.name;
    const targetParts = entryPathComponents(header.linkname ?? '', this.label);
    const rel = parts.join('/');
    const targetRel = targetParts.join('/');
    if (targetParts.length === 0) throw invalid(this.label, `hardlink ${JSON.stringify(name)} has no target`);
    if (targetRel === rel) return true; // a link to itself changes nothing
    if (this.skippedPaths.has(targetRel)) {
      this.skippedPaths.add(rel);
      return false;
    }
    if (targetRel.startsWith(`${rel}/`)) {
      throw invalid(this.label, `hardlink ${JSON.stringify(name)} points inside itself (${targetRel})`);
    }
    const missing = invalid(
      this.label,
      `hardlink ${JSON.stringify(name)} points at "${targetRel}", which does not exist in the image`,
    );
    if (!(await this.resolveParent(targetParts, false, header.linkname ?? ''))) throw missing;
    const targetAbs = join(this.root, ...targetParts);
    const st = await lstatOrUndefined(targetAbs);
    if (st === undefined) throw missing;
    if (st.isDirectory())
      throw invalid(this.label, `hardlink ${JSON.stringify(name)} points at directory "${targetRel}"`);
    await this.prepareTarget(parts, false, name);
    await link(targetAbs, join(this.root, ...parts));
    this.touch(parts);
    return true;
  }

  async apply(entry: Entry): Promise<void> {
    const header = entry.header;
    const parts = entryPathComponents(header.name, this.label);
    const base = parts[parts.length - 1];
    if (base === undefined) {
      // the root directory itself: the store owns its mode and owner
      await drain(entry, this.label);
      return;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      await drain(entry, this.label);
      await this.whiteout(parts, base, header.name);
      return;
    }
    // tar-stream reports unknown typeflags as null, whatever its types say
    const type = header.type as Header['type'] | null;
    switch (type) {
      case 'file':
      case 'contiguous-file':
        await this.writeFile(parts, header, entry);
        this.applied++;
        return;
      case 'directory':
        await drain(entry, this.label);
        await this.makeDir(parts, header);
        this.applied++;
        return;
      case 'symlink':
        await drain(entry, this.label);
        await this.makeSymlink(parts, header);
        this.applied++;
        return;
      case 'link':
        await drain(entry, this.label);
        if (await this.makeHardlink(parts, header)) this.applied++;
        else {
          this.logger.debug(
            { layer: this.label, entry: header.name },
            'skipping hardlink to a skipped entry',
          );
          this.skipped++;
        }
        return;
      case 'character-device':
      case 'block-device':
      case 'fifo':
        await drain(entry, this.label);
        this.skippedPaths.add(parts.join('/'));
        this.logger.debug({ layer: this.label, entry: header.name, type }, 'skipping device node or FIFO');
        this.skipped++;
        return;
      case null:
        await drain(entry, this.label);
        this.logger.warn({ layer: this.label, entry: header.name }, 'skipping tar entry of unknown type');
        this.skipped++;
        return;
    }
  }

  /** Sets directory mtimes last, deepest first (creating entries inside changed them). */
  async finish(): Promise<void> {
    for (const { abs, mtime } of this.dirTimes.reverse()) {
      try {
        await lutimes(abs, mtime, mtime);
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err;
      }
    }
  }
}

/**
 * Applies the layer tar read from `source` (uncompressed) onto `rootfs`, an existing directory
 * private to the caller. Call once per layer, lowest layer first.
 *
 * Throws AppError IMAGE_INVALID for malformed tars, unsafe entries (see the module comment) and
 * undecodable input (e.g. bad gzip in `source`); file-system errors are rethrown unchanged (with
 * their errno code) for the caller to classify. On error the rootfs is left half-applied: unpack
 * into a staging directory and discard it on failure.
 */
export async function applyLayer(
  rootfs: string,
  source: Readable,
  options: ApplyLayerOptions,
): Promise<ApplyLayerResult> {
  const label = options.label ?? 'layer';
  const chownEntries = options.preserveOwnership ?? process.getuid?.() === 0;
  const applier = new LayerApplier(rootfs, label, chownEntries, options.logger);
  // loaded on first use: the CLI's `sandbox run` never reads a tar
  const { default: tarStream } = await import('tar-stream');
  const extract = tarStream.extract();
  const it = extract[Symbol.asyncIterator]();
  source.on('error', (err) => extract.destroy(err));
  source.pipe(extract);
  try {
    for (;;) {
      let r: IteratorResult<Entry>;
      try {
        r = await it.next();
      } catch (err) {
        if (isSystemError(err)) throw err;
        const code = (err as NodeJS.ErrnoException | null)?.code;
        if (typeof code === 'string' && code.startsWith('Z_')) {
          throw invalid(label, `decompressing failed (${code}): ${(err as Error).message}`, err);
        }
        throw invalid(label, `not a valid tar stream: ${(err as Error).message}`, err);
      }
      if (r.done) break;
      await applier.apply(r.value);
    }
    await applier.finish();
  } catch (err) {
    source.unpipe(extract);
    source.destroy();
    extract.destroy();
    throw err;
  }
  return { applied: applier.applied, skipped: applier.skipped };
}
