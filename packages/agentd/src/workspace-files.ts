/**
 * WriteFiles and ReadFiles: tar streams into and out of a sandbox's /workspace, confined to it.
 *
 * hakod runs as root while the sandbox (uid 1000) writes the same directory tree at the same time
 * and may swap any directory for a symlink at any moment, so no path is ever resolved twice and no
 * symlink is ever followed. Every operation names one component inside a directory this process
 * already holds open: `/proc/self/fd/<dirfd>/<name>` jumps to exactly the open directory (the
 * magic link is not re-resolved by name) and then looks up `name` there, so with O_NOFOLLOW it
 * behaves like openat(dirfd, name, O_NOFOLLOW); mkdir, lstat, readlink, rename and unlink on such
 * a path act inside the open directory and never follow a final symlink. Intermediate directories
 * are opened with O_DIRECTORY|O_NOFOLLOW, so a symlink anywhere on a path fails (ELOOP/ENOTDIR)
 * instead of being followed. openWorkspaceRoot() checks that /proc/self/fd resolves to this
 * process's own descriptors before anything else is done.
 *
 * Files are written to a fresh temporary name (O_CREAT|O_EXCL|O_NOFOLLOW) in the target directory,
 * chowned to the sandbox's uid/gid, and renamed over the target: an existing file is replaced,
 * never opened, so a FIFO, a hard link or a symlink planted at the target cannot redirect the
 * write. Confinement assumes the sandbox cannot move a directory out of the workspace while hakod
 * holds it open: in a sandbox /workspace is its own mount, and rename(2) across mounts fails.
 *
 * Disk limits: the loop-image quota engine formats workspaces with no root-reserved blocks
 * (`mkfs.ext4 -m 0`, see quota-loop.ts), and XFS project quotas apply to root as well, so the
 * bytes hakod writes as root count against the sandbox's limit like the sandbox's own writes;
 * ENOSPC/EDQUOT become QUOTA_EXCEEDED.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import type { Stats } from 'node:fs';
import { lstat, mkdir, open, readdir, readlink, rename, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import tarStream from 'tar-stream';
import type { Header, Pack } from 'tar-stream';
import { AppError, toAppError } from '@hako/core';
import { parseDestDir, parseTarEntryName, parseWorkspacePath } from './workspace-paths.js';

export interface FileTransferLimits {
  /** Largest single file, in bytes. */
  maxFileBytes: number;
  /** Largest sum of file sizes in one transfer, in bytes. */
  maxTotalBytes: number;
  /** Most tar entries (files, directories, symlinks) in one transfer. */
  maxEntries: number;
}

export interface Owner {
  uid: number;
  gid: number;
}

const PROC_FD = '/proc/self/fd';
const O = fsConstants;
/** An intermediate directory: never a symlink. */
const DIR_FLAGS = O.O_RDONLY | O.O_DIRECTORY | O.O_NOFOLLOW;
/** A file to read: never a symlink, never blocks on a FIFO, never becomes a controlling tty. */
const READ_FLAGS = O.O_RDONLY | O.O_NOFOLLOW | O.O_NONBLOCK | O.O_NOCTTY;
/** A new temporary file: must not exist, never a symlink. */
const CREATE_FLAGS = O.O_WRONLY | O.O_CREAT | O.O_EXCL | O.O_NOFOLLOW | O.O_NOCTTY;
/** Temporary names of files being written (renamed over the target when complete). */
export const UPLOAD_TMP_PREFIX = '.hako-upload-';
const CHUNK_BYTES = 64 * 1024;
/** Deepest directory ReadFiles descends into (each level holds one descriptor). */
export const MAX_READ_DEPTH = 256;
/** How often an entry that changes type between lstat and open is looked at again. */
const CHANGE_RETRIES = 3;
const DEFAULT_DIR_MODE = 0o755;
/** Permission bits only: no setuid, setgid or sticky bit. */
const PERM_MASK = 0o777;

/** `name` inside the directory open as `dir`, without resolving any path by name. */
function inDir(dir: FileHandle, name: string | Buffer): string | Buffer {
  return typeof name === 'string'
    ? `${PROC_FD}/${dir.fd}/${name}`
    : Buffer.concat([Buffer.from(`${PROC_FD}/${dir.fd}/`), name]);
}

function errnoOf(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Maps a file-system error during `what` to an AppError (disk full → QUOTA_EXCEEDED). */
function fsError(err: unknown, what: string): AppError {
  if (err instanceof AppError) return err;
  switch (errnoOf(err) ?? '') {
    case 'ENOSPC':
    case 'EDQUOT':
      return new AppError(
        'QUOTA_EXCEEDED',
        `${what}: the workspace is full (its disk limit is reached); delete files in /workspace or create the sandbox with a larger disk limit`,
        { cause: err },
      );
    case 'EFBIG':
      return new AppError('FILE_TOO_LARGE', `${what}: the file is too large for the workspace`, {
        cause: err,
      });
    case 'ENOENT':
      return new AppError('FILE_NOT_FOUND', `${what}: it or a directory on its path was removed meanwhile`, {
        cause: err,
      });
    case 'ENAMETOOLONG':
      return new AppError('FILE_PATH_INVALID', `${what}: the name is too long`, { cause: err });
    default:
      return new AppError('INTERNAL', `${what}: ${messageOf(err)}`, { cause: err });
  }
}

function assertLimits(limits: FileTransferLimits): void {
  for (const key of ['maxFileBytes', 'maxTotalBytes', 'maxEntries'] as const) {
    const v = limits[key];
    if (!Number.isSafeInteger(v) || v < 0)
      throw new AppError(
        'INVALID_ARGUMENT',
        `file transfer limit ${key} must be a whole number ≥ 0, got ${v}`,
      );
  }
}

function tooLarge(message: string): AppError {
  return new AppError('FILE_TOO_LARGE', message);
}

/**
 * Opens the workspace root as a directory descriptor and checks that `/proc/self/fd/<fd>` is that
 * same directory (the confinement technique depends on it). WORKSPACE_INVALID when the root is
 * missing, not a directory or a symlink; HOST_PREREQUISITE_MISSING when /proc is not usable.
 */
async function openWorkspaceRoot(root: string): Promise<FileHandle> {
  let fh: FileHandle;
  try {
    fh = await open(root, DIR_FLAGS);
  } catch (err) {
    throw new AppError(
      'WORKSPACE_INVALID',
      `cannot open the workspace ${root} as a directory (${errnoOf(err) ?? messageOf(err)}); is the sandbox still there?`,
      { cause: err },
    );
  }
  try {
    const [own, viaProc] = await Promise.all([fh.stat(), stat(`${PROC_FD}/${fh.fd}`)]);
    if (own.dev !== viaProc.dev || own.ino !== viaProc.ino) throw new Error('a different directory');
  } catch (err) {
    await fh.close();
    throw new AppError(
      'HOST_PREREQUISITE_MISSING',
      `${PROC_FD}/<fd> does not lead to this process's open directories (${messageOf(err)}); hakod needs the host's /proc mounted`,
      { cause: err },
    );
  }
  return fh;
}

/** Why `name` in `dir` could not be entered as a directory (ELOOP/ENOTDIR): a symlink or not a directory. */
async function notADirectory(dir: FileHandle, name: string, rel: string): Promise<AppError> {
  const st = await lstat(inDir(dir, name)).catch(() => undefined);
  if (st?.isSymbolicLink()) {
    return new AppError(
      'FILE_PATH_INVALID',
      `"${rel}" is a symlink; file transfers never follow symlinks, use the real directory's path`,
    );
  }
  return new AppError('FILE_PATH_INVALID', `"${rel}" is not a directory`);
}

interface CreateDirs {
  readonly owner: Owner;
}

/**
 * Opens directory `name` inside `dir`, never following a symlink. With `create`, a missing
 * directory is made (owned by the owner, mode 0755). FILE_NOT_FOUND when missing (and not
 * created); FILE_PATH_INVALID when it is a symlink or not a directory.
 */
async function openChildDir(
  dir: FileHandle,
  name: string,
  rel: string,
  create: CreateDirs | undefined,
): Promise<FileHandle> {
  let created = false;
  for (let attempt = 0; ; attempt++) {
    let child: FileHandle;
    try {
      child = await open(inDir(dir, name), DIR_FLAGS);
    } catch (err) {
      const code = errnoOf(err);
      if (code === 'ENOENT' && create !== undefined && attempt < CHANGE_RETRIES) {
        try {
          await mkdir(inDir(dir, name), 0o700);
          created = true;
        } catch (mkErr) {
          if (errnoOf(mkErr) !== 'EEXIST') throw fsError(mkErr, `creating directory "${rel}"`);
        }
        continue;
      }
      if (code === 'ENOENT')
        throw new AppError('FILE_NOT_FOUND', `"${rel}" does not exist in the workspace`, { cause: err });
      if (code === 'ELOOP' || code === 'ENOTDIR') throw await notADirectory(dir, name, rel);
      throw fsError(err, `opening directory "${rel}"`);
    }
    if (created && create !== undefined) {
      try {
        await child.chown(create.owner.uid, create.owner.gid);
        await child.chmod(DEFAULT_DIR_MODE);
      } catch (err) {
        await child.close();
        throw fsError(err, `setting the owner of "${rel}"`);
      }
    }
    return child;
  }
}

/** Opens a second descriptor for the directory open as `dir`. */
function reopenDir(dir: FileHandle): Promise<FileHandle> {
  return open(inDir(dir, '.'), DIR_FLAGS);
}

/**
 * Walks `parts` down from the directory open as `base` (left open) and returns a new descriptor
 * for the last one (for `[]`, a second descriptor for `base`). `relPrefix` names `base` in messages.
 */
async function walkDirs(
  base: FileHandle,
  parts: readonly string[],
  relPrefix: readonly string[],
  create: CreateDirs | undefined,
): Promise<FileHandle> {
  let cur = await reopenDir(base);
  try {
    for (let i = 0; i < parts.length; i++) {
      const name = parts[i] as string;
      const next = await openChildDir(cur, name, [...relPrefix, ...parts.slice(0, i + 1)].join('/'), create);
      await cur.close();
      cur = next;
    }
    return cur;
  } catch (err) {
    await cur.close();
    throw err;
  }
}

/** Resolves on the stream's next 'drain' or 'close', or at once when it is already destroyed. */
function waitDrainOrClose(s: NodeJS.EventEmitter & { destroyed: boolean }): Promise<void> {
  return new Promise((resolve) => {
    if (s.destroyed || (s as { destroying?: boolean }).destroying === true) {
      resolve();
      return;
    }
    const done = (): void => {
      s.off('drain', done);
      s.off('close', done);
      resolve();
    };
    s.on('drain', done);
    s.on('close', done);
  });
}

async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, null);
    off += bytesWritten;
  }
}

// ------------------------------------------------------------------------------------- write

type TarEntry = AsyncIterable<Buffer> & { header: Header };
/** A header to write (pack.entry fills in the rest). */
type HeaderArg = Partial<Header> & Pick<Header, 'name'>;
/** The writable pack.entry() returns for an entry's body. */
type Sink = ReturnType<Pack['entry']>;

/** State of one WriteFiles: counters and a one-directory cache (tar entries come grouped by directory). */
class WorkspaceWriter {
  files = 0;
  bytes = 0;
  entries = 0;
  private cached: { key: string; fh: FileHandle } | undefined;

  constructor(
    private readonly dest: FileHandle,
    private readonly destParts: readonly string[],
    private readonly owner: Owner,
    private readonly limits: FileTransferLimits,
  ) {}

  private rel(parts: readonly string[]): string {
    return [...this.destParts, ...parts].join('/');
  }

  /** The directory `parts` under the destination, created as needed; owned by the cache (do not close). */
  private async dirAt(parts: readonly string[]): Promise<FileHandle> {
    const key = parts.join('/');
    if (this.cached?.key === key) return this.cached.fh;
    const fh = await walkDirs(this.dest, parts, this.destParts, { owner: this.owner });
    await this.dropCache();
    this.cached = { key, fh };
    return fh;
  }

  private async dropCache(): Promise<void> {
    const c = this.cached;
    this.cached = undefined;
    if (c) await c.fh.close();
  }

  async close(): Promise<void> {
    await this.dropCache();
  }

  async apply(entry: TarEntry): Promise<void> {
    const header = entry.header;
    if (++this.entries > this.limits.maxEntries) {
      throw tooLarge(
        `the upload has more than ${this.limits.maxEntries} entries; send fewer files per WriteFiles call`,
      );
    }
    const parts = parseTarEntryName(header.name);
    // tar-stream reports unknown typeflags as null
    const type = header.type as Header['type'] | null | undefined;
    switch (type) {
      case 'directory':
        await drainEntry(entry);
        if (parts.length > 0) await this.makeDir(parts, header);
        return;
      case 'file':
      case 'contiguous-file':
        if (parts.length === 0)
          throw new AppError(
            'FILE_PATH_INVALID',
            `tar entry "${header.name}" is a file named like a directory`,
          );
        await this.writeFile(parts, header, entry);
        return;
      case 'symlink':
      case 'link':
      case 'character-device':
      case 'block-device':
      case 'fifo':
      case null:
      case undefined:
        throw new AppError(
          'FILE_PATH_INVALID',
          `tar entry "${header.name}" is a ${type ?? 'entry of unknown type'}; only regular files and directories can be written to the workspace`,
        );
    }
  }

  private async makeDir(parts: readonly string[], header: Header): Promise<void> {
    const parent = await this.dirAt(parts.slice(0, -1));
    const name = parts[parts.length - 1] as string;
    const fh = await openChildDir(parent, name, this.rel(parts), { owner: this.owner });
    try {
      await fh.chown(this.owner.uid, this.owner.gid);
      await fh.chmod((header.mode ?? DEFAULT_DIR_MODE) & PERM_MASK);
    } catch (err) {
      await fh.close();
      throw fsError(err, `setting the mode of "${this.rel(parts)}"`);
    }
    // the next entries are most likely inside it
    await this.dropCache();
    this.cached = { key: parts.join('/'), fh };
  }

  private async writeFile(
    parts: readonly string[],
    header: Header,
    body: AsyncIterable<Buffer>,
  ): Promise<void> {
    const rel = this.rel(parts);
    const size = header.size ?? 0;
    if (size > this.limits.maxFileBytes) {
      throw tooLarge(
        `"${rel}" is ${size} bytes, over the ${this.limits.maxFileBytes}-byte limit for one file`,
      );
    }
    if (this.bytes + size > this.limits.maxTotalBytes) {
      throw tooLarge(
        `the upload is over the ${this.limits.maxTotalBytes}-byte limit for one transfer (at "${rel}")`,
      );
    }
    const dir = await this.dirAt(parts.slice(0, -1));
    const name = parts[parts.length - 1] as string;
    // Policy only (the rename below never follows anything): refuse to replace a symlink or a directory.
    const existing = await lstat(inDir(dir, name)).catch((err: unknown) => {
      if (errnoOf(err) === 'ENOENT') return undefined;
      throw fsError(err, `looking at "${rel}"`);
    });
    if (existing?.isSymbolicLink()) {
      throw new AppError(
        'FILE_PATH_INVALID',
        `"${rel}" is a symlink in the workspace; it is never followed or replaced`,
      );
    }
    if (existing?.isDirectory())
      throw new AppError('FILE_PATH_INVALID', `"${rel}" is a directory, not a file`);

    const tmpName = `${UPLOAD_TMP_PREFIX}${randomBytes(8).toString('hex')}`;
    let fh: FileHandle | undefined;
    let placed = false;
    try {
      try {
        fh = await open(inDir(dir, tmpName), CREATE_FLAGS, 0o600);
        await fh.chown(this.owner.uid, this.owner.gid);
      } catch (err) {
        throw fsError(err, `creating "${rel}"`);
      }
      let written = 0;
      for await (const chunk of body) {
        written += chunk.length;
        if (written > this.limits.maxFileBytes || this.bytes + written > this.limits.maxTotalBytes)
          throw tooLarge(`"${rel}" is over the transfer's size limits`);
        try {
          await writeAll(fh, chunk);
        } catch (err) {
          throw fsError(err, `writing "${rel}"`);
        }
      }
      try {
        await fh.chmod((header.mode ?? 0o644) & PERM_MASK);
        const mtime =
          header.mtime instanceof Date && !Number.isNaN(header.mtime.getTime()) ? header.mtime : new Date();
        await fh.utimes(mtime, mtime);
        await fh.close();
        fh = undefined;
        await rename(inDir(dir, tmpName), inDir(dir, name));
      } catch (err) {
        if (errnoOf(err) === 'EISDIR' || errnoOf(err) === 'ENOTEMPTY')
          throw new AppError('FILE_PATH_INVALID', `"${rel}" is a directory, not a file`, { cause: err });
        throw fsError(err, `writing "${rel}"`);
      }
      placed = true;
      this.files++;
      this.bytes += written;
    } finally {
      if (fh !== undefined) await fh.close().catch(() => undefined);
      if (!placed) await unlink(inDir(dir, tmpName)).catch(() => undefined);
    }
  }
}

async function drainEntry(entry: AsyncIterable<Buffer>): Promise<void> {
  for await (const chunk of entry) void chunk;
}

/**
 * Unpacks the tar stream `tar` under `workspaceRoot/destRel` (`''` = the workspace root; missing
 * directories of `destRel` are created).
 *
 * - Regular files and directories only: a symlink, hard link, device or FIFO entry is refused
 *   with FILE_PATH_INVALID (the whole call fails; nothing is skipped silently). Entry names are
 *   relative to `destRel`; a leading `./` is accepted (archives made with `tar -C dir .`), a `./`
 *   entry itself is ignored (the destination's mode is never changed), and `..`, absolute names,
 *   empty components and NUL bytes are FILE_PATH_INVALID.
 * - Modes are masked to 0o777 (no setuid/setgid/sticky); every file and directory created or named
 *   in the tar is owned by `owner`; directories created implicitly get 0755. File mtimes come from
 *   the tar.
 * - An existing file is replaced (a new file is renamed over it; it is never opened). An existing
 *   symlink on the target path — an intermediate directory or the file itself — is never followed
 *   and fails with FILE_PATH_INVALID; so does a directory where a file should go.
 * - More than `maxEntries` entries, a file over `maxFileBytes` or files totalling over
 *   `maxTotalBytes` → FILE_TOO_LARGE; disk full → QUOTA_EXCEEDED; a malformed tar →
 *   INVALID_ARGUMENT; an error from `tar` itself is passed on (as an AppError).
 *
 * On error, files completed before the failing entry stay in the workspace; the failing file is
 * removed (no partial file is left) and `tar` is destroyed. Nothing outside the workspace is ever
 * created, written, chowned or removed. Resolves with the number of regular files written and
 * their total size in bytes.
 */
export async function writeTarToWorkspace(
  workspaceRoot: string,
  destRel: string,
  tar: Readable,
  owner: Owner,
  limits: FileTransferLimits,
): Promise<{ files: number; bytes: number }> {
  try {
    assertLimits(limits);
    if (
      !Number.isSafeInteger(owner.uid) ||
      !Number.isSafeInteger(owner.gid) ||
      owner.uid < 0 ||
      owner.gid < 0
    )
      throw new AppError(
        'INVALID_ARGUMENT',
        `file owner must be numeric uid/gid, got ${owner.uid}:${owner.gid}`,
      );
    const destParts = parseDestDir(destRel);
    const root = await openWorkspaceRoot(workspaceRoot);
    let writer: WorkspaceWriter | undefined;
    try {
      const dest = await walkDirs(root, destParts, [], { owner });
      writer = new WorkspaceWriter(dest, destParts, owner, limits);
      try {
        await unpack(tar, writer);
      } finally {
        await writer.close();
        await dest.close();
      }
      return { files: writer.files, bytes: writer.bytes };
    } finally {
      await root.close();
    }
  } catch (err) {
    if (!tar.destroyed) tar.destroy();
    throw err;
  }
}

/** Feeds `tar` into a tar-stream extractor and applies each entry in turn (both sides with backpressure). */
async function unpack(tar: Readable, writer: WorkspaceWriter): Promise<void> {
  const extract = tarStream.extract();
  let sourceError: unknown;
  let parseError: Error | undefined;
  extract.on('error', (err: Error) => {
    parseError ??= err;
  });
  const pump = (async (): Promise<void> => {
    try {
      // destroyOnReturn: false — leaving early must not destroy `tar` with an AbortError that its
      // owner may not listen for; the caller destroys it quietly on error instead
      for await (const chunk of tar.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer | string>) {
        if (extract.destroyed) return;
        if (!extract.write(typeof chunk === 'string' ? Buffer.from(chunk) : chunk))
          await waitDrainOrClose(extract);
      }
      extract.end(undefined);
    } catch (err) {
      sourceError = err;
      extract.destroy(err as Error);
    }
  })();
  try {
    for await (const entry of extract as unknown as AsyncIterable<TarEntry>) {
      await writer.apply(entry);
    }
  } catch (err) {
    if (!extract.destroyed) extract.destroy();
    if (err instanceof AppError) throw err;
    if (sourceError !== undefined)
      throw toAppError(sourceError, 'INVALID_ARGUMENT', 'reading the tar stream failed');
    if (typeof (err as NodeJS.ErrnoException | null)?.syscall === 'string')
      throw fsError(err, 'unpacking the tar stream');
    // a body read fails with "stream destroyed" when the parser gave up: report the parser's reason
    const cause = parseError ?? err;
    throw new AppError('INVALID_ARGUMENT', `the upload is not a valid tar stream: ${messageOf(cause)}`, {
      cause,
    });
  }
  await pump;
  if (sourceError !== undefined)
    throw toAppError(sourceError, 'INVALID_ARGUMENT', 'reading the tar stream failed');
}

// -------------------------------------------------------------------------------------- read

/** Thrown inside the producer when the consumer went away; never reaches anyone. */
class Stopped extends Error {}

/** State of one ReadFiles: the pack stream, counters and limits. */
class WorkspaceReader {
  private entries = 0;
  private bytes = 0;

  constructor(
    private readonly pack: Pack,
    private readonly limits: FileTransferLimits,
  ) {}

  private get stopped(): boolean {
    const p = this.pack as Pack & { destroying?: boolean };
    return p.destroying === true || p.destroyed;
  }

  private countEntry(n = 1): void {
    if (this.stopped) throw new Stopped();
    this.entries += n;
    if (this.entries > this.limits.maxEntries) {
      throw tooLarge(`more than ${this.limits.maxEntries} entries to read; ask for fewer paths`);
    }
  }

  /** Adds an entry with a body written by `body` (or none); resolves when the pack has taken it. */
  private async entry(header: HeaderArg, body?: (sink: Sink) => Promise<void>): Promise<void> {
    if (this.stopped) throw new Stopped();
    let sink: Sink | undefined;
    const done = new Promise<void>((resolve, reject) => {
      sink = this.pack.entry(header, (err) => (err ? reject(err) : resolve()));
    });
    done.catch(() => undefined); // awaited below; a body error must not leave it unhandled
    const s = sink as Sink;
    s.on('error', () => undefined);
    try {
      if (body) await body(s);
      s.end(undefined);
      await done;
    } catch (err) {
      if (this.stopped) throw new Stopped();
      throw err;
    }
  }

  /** Emits the workspace entries below the directory open as `dir` (named `relParts`), sorted by name. */
  async children(dir: FileHandle, relParts: readonly string[], depth: number): Promise<void> {
    if (depth > MAX_READ_DEPTH) {
      throw new AppError(
        'FILE_PATH_INVALID',
        `"${relParts.join('/')}" is nested deeper than ${MAX_READ_DEPTH} directories; read a subdirectory instead`,
      );
    }
    let names: Buffer[];
    try {
      names = await readdir(`${PROC_FD}/${dir.fd}`, { encoding: 'buffer' });
    } catch (err) {
      throw fsError(err, `listing "${relParts.join('/') || '/workspace'}"`);
    }
    names.sort((a, b) => Buffer.compare(a, b));
    if (this.entries + names.length > this.limits.maxEntries) this.countEntry(names.length);
    for (const raw of names) {
      const name = raw.toString('utf8');
      // a name that is not UTF-8 cannot be written to the tar faithfully: skipped
      if (!Buffer.from(name, 'utf8').equals(raw)) continue;
      // another WriteFiles' file in progress: not part of the workspace yet
      if (name.startsWith(UPLOAD_TMP_PREFIX)) continue;
      await this.node(dir, [...relParts, name], false, depth);
    }
  }

  /**
   * Emits `relParts`' last component, found in the directory open as `parent`: a symlink as a
   * symlink entry, a directory with everything below it, a file with its contents; other types
   * are skipped. `requested`: named by the caller (missing → FILE_NOT_FOUND; else skipped).
   */
  async node(
    parent: FileHandle,
    relParts: readonly string[],
    requested: boolean,
    depth: number,
  ): Promise<void> {
    const name = relParts[relParts.length - 1] as string;
    const rel = relParts.join('/');
    const path = inDir(parent, name);
    for (let attempt = 0; attempt < CHANGE_RETRIES; attempt++) {
      if (this.stopped) throw new Stopped();
      let st: Stats;
      try {
        st = await lstat(path);
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') {
          if (!requested) return; // removed while we were reading
          throw new AppError('FILE_NOT_FOUND', `"${rel}" does not exist in the workspace`, { cause: err });
        }
        throw fsError(err, `looking at "${rel}"`);
      }
      if (st.isSymbolicLink()) {
        let target: string;
        try {
          target = await readlink(path);
        } catch (err) {
          if (errnoOf(err) === 'EINVAL' || errnoOf(err) === 'ENOENT') continue; // changed meanwhile
          throw fsError(err, `reading symlink "${rel}"`);
        }
        this.countEntry();
        await this.entry({
          name: rel,
          type: 'symlink',
          linkname: target,
          mode: 0o777,
          uid: st.uid,
          gid: st.gid,
          mtime: st.mtime,
        });
        return;
      }
      if (!st.isDirectory() && !st.isFile()) return; // FIFO, socket, device: skipped
      let fh: FileHandle;
      try {
        fh = await open(path, st.isDirectory() ? DIR_FLAGS : READ_FLAGS);
      } catch (err) {
        const code = errnoOf(err);
        if (code === 'ELOOP' || code === 'ENOTDIR' || code === 'ENOENT' || code === 'ENXIO') continue;
        throw fsError(err, `opening "${rel}"`);
      }
      try {
        const fst = await fh.stat();
        if (fst.isDirectory() && st.isDirectory()) {
          this.countEntry();
          await this.entry({
            name: `${rel}/`,
            type: 'directory',
            mode: fst.mode & PERM_MASK,
            uid: fst.uid,
            gid: fst.gid,
            mtime: fst.mtime,
          });
          await this.children(fh, relParts, depth + 1);
          return;
        }
        if (fst.isFile() && st.isFile()) {
          await this.file(fh, fst, rel);
          return;
        }
      } finally {
        await fh.close();
      }
    }
    throw new AppError('FILE_PATH_INVALID', `"${rel}" kept changing while it was read; try again`);
  }

  /**
   * Emits the file open as `fh`, `st.size` bytes long (its size when opened): a file that shrinks
   * meanwhile is padded with zeros, one that grows is cut at that size.
   */
  private async file(fh: FileHandle, st: Stats, rel: string): Promise<void> {
    const size = st.size;
    if (size > this.limits.maxFileBytes) {
      throw tooLarge(
        `"${rel}" is ${size} bytes, over the ${this.limits.maxFileBytes}-byte limit for one file`,
      );
    }
    if (this.bytes + size > this.limits.maxTotalBytes) {
      throw tooLarge(
        `the files to read total over the ${this.limits.maxTotalBytes}-byte limit (at "${rel}")`,
      );
    }
    this.countEntry();
    this.bytes += size;
    const header: HeaderArg = {
      name: rel,
      type: 'file',
      size,
      mode: st.mode & PERM_MASK,
      uid: st.uid,
      gid: st.gid,
      mtime: st.mtime,
    };
    await this.entry(header, async (sink) => {
      let pos = 0;
      let eof = false;
      while (pos < size) {
        if (this.stopped) throw new Stopped();
        const len = Math.min(CHUNK_BYTES, size - pos);
        let chunk: Buffer;
        if (eof) {
          chunk = Buffer.alloc(len);
        } else {
          const buf = Buffer.allocUnsafe(len);
          let n: number;
          try {
            ({ bytesRead: n } = await fh.read(buf, 0, len, pos));
          } catch (err) {
            throw fsError(err, `reading "${rel}"`);
          }
          if (n === 0) {
            eof = true;
            chunk = Buffer.alloc(len);
          } else {
            chunk = buf.subarray(0, n);
          }
        }
        pos += chunk.length;
        if (!sink.write(chunk)) await waitDrainOrClose(sink);
      }
    });
  }
}

async function produce(
  pack: Pack,
  workspaceRoot: string,
  paths: readonly string[],
  limits: FileTransferLimits,
): Promise<void> {
  assertLimits(limits);
  const wanted = paths.map((p) => parseWorkspacePath(p));
  const root = await openWorkspaceRoot(workspaceRoot);
  try {
    const reader = new WorkspaceReader(pack, limits);
    if (wanted.length === 0) {
      await reader.children(root, [], 0);
      return;
    }
    for (const parts of wanted) {
      const parent = await walkDirs(root, parts.slice(0, -1), [], undefined);
      try {
        await reader.node(parent, parts, true, parts.length - 1);
      } finally {
        await parent.close();
      }
    }
  } finally {
    await root.close();
  }
}

/**
 * Packs workspace paths into a tar stream. `paths` are workspace-relative (validated as by
 * parseWorkspacePath); a directory is packed recursively; `[]` packs the whole workspace (its
 * entries, not the root itself). Entry names are workspace-relative (`src/`, `src/main.ts`).
 *
 * - Symlinks are emitted as symlink entries with their target text, never followed; a requested
 *   path whose intermediate component is a symlink → FILE_PATH_INVALID; a missing requested
 *   path → FILE_NOT_FOUND. FIFOs, sockets and devices are skipped, as are names that are not
 *   UTF-8 and files of a WriteFiles in progress (UPLOAD_TMP_PREFIX) found inside a directory.
 *   Entries that vanish while the tree is walked are skipped.
 * - A file's size is taken when it is opened: a file that shrinks while being read is padded with
 *   zeros, one that grows is cut there.
 * - A file over `maxFileBytes`, files totalling over `maxTotalBytes` or more than `maxEntries`
 *   entries → FILE_TOO_LARGE; trees deeper than MAX_READ_DEPTH → FILE_PATH_INVALID.
 *
 * Every error (including invalid paths and limits) is reported by destroying the returned stream
 * with an AppError; the tar produced so far has already been emitted. Destroying the returned
 * stream stops the walk and closes every descriptor. File bodies are streamed with backpressure.
 */
export function readTarFromWorkspace(
  workspaceRoot: string,
  paths: readonly string[],
  limits: FileTransferLimits,
): Readable {
  const pack = tarStream.pack();
  pack.on('error', () => undefined);
  const out = Readable.from(pack, { objectMode: false, highWaterMark: CHUNK_BYTES });
  produce(pack, workspaceRoot, paths, limits).then(
    () => pack.finalize(),
    (err: unknown) => {
      if (err instanceof Stopped) return;
      pack.destroy(err instanceof AppError ? err : fsError(err, 'reading the workspace'));
    },
  );
  return out;
}
