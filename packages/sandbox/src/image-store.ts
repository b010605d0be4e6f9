/**
 * LocalImageStore: a content-addressed image store on the local disk.
 *
 *   <root>/blobs/sha256/<hex>        manifests, configs and layers, verified against their digest
 *   <root>/refs/<encoded name>       `sha256:<manifest hex>\n` (name URI-encoded: `/` and `:` escaped)
 *   <root>/configs/<hex>.json        the image record: blobs, diff_ids and the parsed config
 *   <root>/rootfs/<hex>/             the flattened root filesystem, shared read-only by sandboxes
 *   <root>/rootfs/<hex>.complete     completion marker, written after the rootfs is in place
 *   <root>/tmp/                      staging for imports and unpacks (same file system, so renames
 *                                    are atomic); stale entries are swept by prune()
 *   <root>/host-rootfs/              the built-in `host` image skeleton (or `hostRootfsDir`)
 *
 * Every write is staged and renamed into place. An import commits in this order: blobs, record,
 * rootfs (rename, then marker), ref. A rootfs without its marker is treated as absent and rebuilt
 * from the stored blobs by get(); blobs and records without a ref are removed by prune().
 *
 * Error discipline: a missing ref (or unknown digest) is IMAGE_NOT_FOUND; EACCES/EPERM/EROFS is
 * IMAGE_STORE_PERMISSION; unparsable files, wrong types (a file where a directory belongs) and
 * anything missing behind an existing ref are IMAGE_STORE_CORRUPT; other I/O errors are
 * IMAGE_STORE_IO. Nothing is ever reported as not-found unless it really is absent.
 *
 * Concurrency: mutations (import, rebuild, remove, prune, and the unpack-and-name step of a pull)
 * are serialised within one store instance. A pull downloads outside that lock: each blob is
 * verified in tmp/ and renamed into blobs/ at once, concurrent pulls of one blob share a single
 * download, and prune() keeps the blobs an unfinished pull needs. Two processes importing into the
 * same root at once are safe for different images; running prune() in one process while another
 * imports or pulls is not.
 *
 * Pulling (pull(), ensureImage()): see registry-client.ts for the transport, auth and error codes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, pipeline } from 'node:stream';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { AppError } from '@hako/core';
import type { ErrorCode, Logger } from '@hako/core';
import { HOST_IMAGE_NAME, ensureHostRootfs, hostImageRef } from './host-image.js';
import type { HostLayoutEntry } from './host-image.js';
import { errnoOf } from './errno.js';
import { applyLayer, ensureDirInRoot } from './layer-unpack.js';
import {
  RegistryClient,
  isPullableReference,
  parseImageReference,
  selectIndexManifest,
} from './registry-client.js';
import type { ImageReference, RegistrySettings } from './registry-client.js';
import {
  MAX_CONFIG_BYTES,
  checkStaged,
  descriptorName,
  digestHex,
  hostPlatform,
  isIndexMediaType,
  isManifestMediaType,
  parseImageConfig,
  parseIndex,
  parseManifest,
  readLayoutTar,
  readStagedJson,
  selectPlatformManifest,
  selectTopDescriptor,
} from './oci-layout.js';
import type { Descriptor, ImageManifest, ParsedImageConfig, Platform, StagedLayout } from './oci-layout.js';
import type { ImageConfig, ImageRef, ImageStore, PullOptions, PullProgress } from './types.js';

/** Directories created in every unpacked OCI rootfs so a read-only rootfs can be mounted on. */
export const IMAGE_MOUNT_POINTS: readonly { readonly path: string; readonly mode: number }[] = [
  { path: 'workspace', mode: 0o755 },
  { path: 'tmp', mode: 0o1777 },
  { path: 'proc', mode: 0o555 },
  { path: 'dev', mode: 0o755 },
  { path: 'sys', mode: 0o555 },
  { path: 'etc', mode: 0o755 },
  { path: 'var/tmp', mode: 0o1777 },
  { path: 'home', mode: 0o755 },
];

/** Temp entries older than this are swept by prune() (left by a crashed import). */
const STALE_TMP_MS = 24 * 3600 * 1000;

const DIGEST_RE = /^sha256:([a-f0-9]{64})$/;
const HEX_RE = /^[a-f0-9]{64}$/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._\-/:@+]{0,199}$/;

export interface LocalImageStoreOptions {
  /** Store directory, e.g. `<HAKO_STATE_DIR>/images`. Created on first import. */
  readonly root: string;
  /** Where the `host` image skeleton lives; default `<root>/host-rootfs`. */
  readonly hostRootfsDir?: string;
  readonly logger: Logger;
  /** Platform to pick from multi-platform images; default this host's (linux/amd64 here). */
  readonly platform?: Platform;
  /** How pull() talks to registries (insecure registries, timeouts); defaults when absent. */
  readonly registry?: RegistrySettings;
}

/** Blob download progress is reported at most once per this many bytes (plus start and end). */
const PROGRESS_STEP_BYTES = 1024 * 1024;

interface LayerRecord {
  readonly digest: string;
  readonly mediaType: string;
  readonly size: number;
}

/** What configs/<hex>.json holds. */
interface ImageRecord {
  readonly schemaVersion: 1;
  readonly manifestDigest: string;
  readonly configDigest: string;
  readonly layers: readonly LayerRecord[];
  readonly diffIds: readonly string[];
  readonly config: ImageConfig;
}

/**
 * Maps a store error to its AppError code. AppErrors pass through unchanged; `onMissing` is the
 * code for ENOENT (IMAGE_NOT_FOUND only where absence really means the image is not there).
 */
export function classifyStoreError(
  err: unknown,
  context: string,
  onMissing: ErrorCode = 'IMAGE_STORE_CORRUPT',
): AppError {
  if (err instanceof AppError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  if (err instanceof SyntaxError) {
    return new AppError(
      'IMAGE_STORE_CORRUPT',
      `${context}: the image store holds invalid JSON (${msg}); remove the image and import it again`,
      {
        cause: err,
      },
    );
  }
  const code = errnoOf(err);
  if (code === 'ENOENT') return new AppError(onMissing, `${context}: ${msg}`, { cause: err });
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
    return new AppError(
      'IMAGE_STORE_PERMISSION',
      `${context}: ${msg}; the image store must be readable and writable by hakod (root)`,
      {
        cause: err,
      },
    );
  }
  if (code === 'ENOTDIR' || code === 'EISDIR' || code === 'ELOOP') {
    return new AppError(
      'IMAGE_STORE_CORRUPT',
      `${context}: the image store has an unexpected file type (${msg}); repair or recreate it`,
      {
        cause: err,
      },
    );
  }
  return new AppError('IMAGE_STORE_IO', `${context}: ${msg}`, { cause: err });
}

function corrupt(message: string): AppError {
  return new AppError('IMAGE_STORE_CORRUPT', message);
}

/** Throws INVALID_ARGUMENT unless `name` can be stored as an image name. */
export function assertImageName(name: string): void {
  if (name === HOST_IMAGE_NAME)
    throw new AppError('INVALID_ARGUMENT', `"${HOST_IMAGE_NAME}" is the built-in image; pick another name`);
  if (!NAME_RE.test(name) || name.startsWith('sha256:') || encodeURIComponent(name).length > 240) {
    throw new AppError(
      'INVALID_ARGUMENT',
      `bad image name ${JSON.stringify(name)}: use letters, digits and . _ - / : @ + (at most 200, not starting with sha256:)`,
    );
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === 'string');
}

/** Validates a record read back from disk (IMAGE_STORE_CORRUPT when it does not fit). */
function parseRecord(buf: Buffer, hex: string): ImageRecord {
  const doc = JSON.parse(buf.toString('utf8')) as unknown;
  const bad = (what: string): AppError =>
    corrupt(`image record configs/${hex}.json is invalid (${what}); remove the image and import it again`);
  if (!isObject(doc) || doc.schemaVersion !== 1) throw bad('unknown schema');
  if (doc.manifestDigest !== `sha256:${hex}`) throw bad('manifest digest does not match its file name');
  if (typeof doc.configDigest !== 'string' || !DIGEST_RE.test(doc.configDigest)) throw bad('config digest');
  if (!Array.isArray(doc.layers) || !isStringArray(doc.diffIds) || doc.diffIds.length !== doc.layers.length)
    throw bad('layers');
  const layers: LayerRecord[] = [];
  for (const l of doc.layers as unknown[]) {
    if (
      !isObject(l) ||
      typeof l.digest !== 'string' ||
      !DIGEST_RE.test(l.digest) ||
      typeof l.mediaType !== 'string' ||
      typeof l.size !== 'number'
    ) {
      throw bad('layer entry');
    }
    layers.push({ digest: l.digest, mediaType: l.mediaType, size: l.size });
  }
  const c = doc.config;
  if (!isObject(c) || !isStringArray(c.env) || !isStringArray(c.entrypoint) || !isStringArray(c.cmd))
    throw bad('config');
  const optional = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
  return {
    schemaVersion: 1,
    manifestDigest: doc.manifestDigest,
    configDigest: doc.configDigest,
    layers,
    diffIds: doc.diffIds,
    config: {
      env: c.env,
      entrypoint: c.entrypoint,
      cmd: c.cmd,
      workingDir: optional(c.workingDir),
      user: optional(c.user),
    },
  };
}

function recordBlobs(r: ImageRecord): string[] {
  return [r.manifestDigest, r.configDigest, ...r.layers.map((l) => l.digest)].map((d) =>
    d.slice('sha256:'.length),
  );
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return false;
    throw err;
  }
}

/** Writes `data` to `path` atomically (temp file in the same directory, then rename). */
async function atomicWrite(path: string, data: string): Promise<void> {
  const dir = join(path, '..');
  const tmp = join(dir, `.tmp-${randomBytes(6).toString('hex')}`);
  try {
    await writeFile(tmp, data, { mode: 0o600 });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Reads the first bytes of a file to detect its compression. */
async function sniff(path: string): Promise<'gzip' | 'zstd' | 'none'> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(4);
    const { bytesRead } = await fh.read(buf, 0, 4, 0);
    if (bytesRead >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) return 'gzip';
    if (bytesRead === 4 && buf.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
    return 'none';
  } finally {
    await fh.close();
  }
}

export class LocalImageStore implements ImageStore {
  private readonly root: string;
  private readonly hostDir: string;
  private readonly logger: Logger;
  private readonly platform: Platform;
  private readonly registry: RegistrySettings;
  private queue: Promise<void> = Promise.resolve();
  private hostReady: Promise<HostLayoutEntry[]> | undefined;
  /** hex -> the download of that blob into the store, shared by concurrent pulls. */
  private readonly downloads = new Map<string, Promise<void>>();
  /** hex -> how many unfinished pulls need the blob; prune() keeps these. */
  private readonly pinned = new Map<string, number>();

  constructor(options: LocalImageStoreOptions) {
    this.root = options.root;
    this.hostDir = options.hostRootfsDir ?? join(options.root, 'host-rootfs');
    this.logger = options.logger;
    this.platform = options.platform ?? hostPlatform();
    this.registry = options.registry ?? {};
  }

  // ------------------------------------------------------------ paths

  private blobPath(hex: string): string {
    return join(this.root, 'blobs', 'sha256', hex);
  }
  private refPath(name: string): string {
    return join(this.root, 'refs', encodeURIComponent(name));
  }
  private recordPath(hex: string): string {
    return join(this.root, 'configs', `${hex}.json`);
  }
  /** The rootfs directory of the image with manifest `hex` (valid once get() returned it). */
  rootfsPath(hex: string): string {
    return join(this.root, 'rootfs', hex);
  }
  private markerPath(hex: string): string {
    return join(this.root, 'rootfs', `${hex}.complete`);
  }
  private get tmpDir(): string {
    return join(this.root, 'tmp');
  }

  /** Runs `fn` after every earlier mutation of this store instance has finished. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private async ensureDirs(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
    for (const d of [join('blobs', 'sha256'), 'refs', 'configs', 'rootfs', 'tmp']) {
      await mkdir(join(this.root, d), { recursive: true, mode: 0o700 });
    }
  }

  // ------------------------------------------------------------ reading

  private async host(): Promise<ImageRef> {
    this.hostReady ??= ensureHostRootfs(this.hostDir).catch((err: unknown) => {
      this.hostReady = undefined;
      throw classifyStoreError(err, `preparing the host image skeleton at ${this.hostDir}`, 'IMAGE_STORE_IO');
    });
    return hostImageRef(this.hostDir, await this.hostReady);
  }

  /** The manifest hex a ref file points at; undefined when the ref does not exist. */
  private async readRef(name: string): Promise<string | undefined> {
    let text: string;
    try {
      text = await readFile(this.refPath(name), 'utf8');
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return undefined;
      throw classifyStoreError(err, `reading image ref "${name}"`);
    }
    const hex = DIGEST_RE.exec(text.trim())?.[1];
    if (hex === undefined) {
      throw corrupt(
        `image ref "${name}" (${this.refPath(name)}) does not hold a sha256 digest; remove the image and import it again`,
      );
    }
    return hex;
  }

  /** Names of every ref, sorted. An absent refs directory means none. */
  private async refNames(): Promise<string[]> {
    let files: string[];
    try {
      files = await readdir(join(this.root, 'refs'));
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return [];
      throw classifyStoreError(err, 'listing image refs');
    }
    const names: string[] = [];
    for (const f of files) {
      if (f.startsWith('.')) continue;
      try {
        names.push(decodeURIComponent(f));
      } catch {
        this.logger.warn({ file: f }, 'ignoring a ref file whose name is not URI-encoded');
      }
    }
    return names.sort();
  }

  private async readRecord(hex: string, context: string, onMissing: ErrorCode): Promise<ImageRecord> {
    let buf: Buffer;
    try {
      buf = await readFile(this.recordPath(hex));
    } catch (err) {
      throw classifyStoreError(err, `${context}: reading image record configs/${hex}.json`, onMissing);
    }
    try {
      return parseRecord(buf, hex);
    } catch (err) {
      throw classifyStoreError(err, `${context}: image record configs/${hex}.json`);
    }
  }

  /** Every blob of the image must be in the store (IMAGE_STORE_CORRUPT otherwise). */
  private async checkBlobs(record: ImageRecord, context: string): Promise<void> {
    for (const hex of recordBlobs(record)) {
      try {
        const st = await stat(this.blobPath(hex));
        if (!st.isFile()) throw corrupt(`${context}: blob sha256:${hex} is not a regular file`);
      } catch (err) {
        throw classifyStoreError(
          err,
          `${context}: blob sha256:${hex} is missing or unreadable; remove the image and import it again`,
          'IMAGE_STORE_CORRUPT',
        );
      }
    }
  }

  private async isComplete(hex: string): Promise<boolean> {
    try {
      if (!(await exists(this.markerPath(hex)))) return false;
      const st = await lstat(this.rootfsPath(hex));
      return st.isDirectory();
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return false;
      throw classifyStoreError(err, `checking rootfs of sha256:${hex}`);
    }
  }

  private toRef(name: string, hex: string, record: ImageRecord): ImageRef {
    return { name, digest: `sha256:${hex}`, rootfs: this.rootfsPath(hex), config: record.config, binds: [] };
  }

  /**
   * Looks an image up by name, by manifest digest (`sha256:<hex>`), or `host` (the built-in image,
   * whose skeleton is created on first use). Rebuilds the rootfs from the stored blobs when its
   * completion marker is missing (an interrupted unpack). Throws IMAGE_NOT_FOUND only when no such
   * ref (or digest) exists; see the module comment for the other codes.
   */
  async get(ref: string): Promise<ImageRef> {
    if (ref === HOST_IMAGE_NAME) return this.host();
    let name: string;
    let hex: string;
    let record: ImageRecord;
    const byDigest = DIGEST_RE.exec(ref)?.[1];
    if (byDigest !== undefined) {
      hex = byDigest;
      record = await this.readRecord(hex, `image ${ref}`, 'IMAGE_NOT_FOUND');
      name = (await this.namesFor(hex))[0] ?? ref;
    } else {
      assertImageName(ref);
      const h = await this.readRef(ref);
      if (h === undefined) {
        throw new AppError(
          'IMAGE_NOT_FOUND',
          `no image named "${ref}"; import it with \`hako image import\` (or use "host")`,
        );
      }
      hex = h;
      name = ref;
      record = await this.readRecord(hex, `image "${ref}"`, 'IMAGE_STORE_CORRUPT');
    }
    await this.checkBlobs(record, `image "${name}"`);
    if (!(await this.isComplete(hex))) {
      await this.exclusive(async () => {
        if (await this.isComplete(hex)) return;
        this.logger.warn(
          { image: name, digest: `sha256:${hex}` },
          'rootfs incomplete (interrupted unpack?); rebuilding it from the stored blobs',
        );
        try {
          await this.ensureDirs();
          const staging = await mkdtemp(join(this.tmpDir, 'rebuild-'));
          try {
            const rootfs = join(staging, 'rootfs');
            await this.buildRootfs(rootfs, record, (h) => this.blobPath(h), 'IMAGE_STORE_CORRUPT');
            await this.installRootfs(hex, rootfs);
          } finally {
            await rm(staging, { recursive: true, force: true });
          }
        } catch (err) {
          if (err instanceof AppError && err.code === 'IMAGE_INVALID') {
            // it was valid when imported: the stored blobs changed
            throw new AppError(
              'IMAGE_STORE_CORRUPT',
              `rebuilding the rootfs of image "${name}": ${err.message}`,
              {
                cause: err,
              },
            );
          }
          throw classifyStoreError(err, `rebuilding the rootfs of image "${name}"`, 'IMAGE_STORE_CORRUPT');
        }
      });
    }
    return this.toRef(name, hex, record);
  }

  private async namesFor(hex: string): Promise<string[]> {
    const out: string[] = [];
    for (const n of await this.refNames()) {
      let h: string | undefined;
      try {
        h = await this.readRef(n);
      } catch (err) {
        this.logger.warn({ ref: n, err: (err as Error).message }, 'skipping unreadable image ref');
        continue;
      }
      if (h === hex) out.push(n);
    }
    return out;
  }

  /**
   * Every image: `host` first, then each ref sorted by name. Does not check or rebuild rootfs
   * directories (get() does). A ref whose record is unreadable fails the whole list with its code
   * and names the ref, so it can be removed.
   */
  async list(): Promise<ImageRef[]> {
    const out: ImageRef[] = [await this.host()];
    for (const name of await this.refNames()) {
      const hex = await this.readRef(name);
      if (hex === undefined) continue; // removed meanwhile
      const record = await this.readRecord(hex, `image "${name}"`, 'IMAGE_STORE_CORRUPT');
      out.push(this.toRef(name, hex, record));
    }
    return out;
  }

  // ------------------------------------------------------------ unpacking

  /**
   * Applies every layer of `record` onto `rootfs` (created here), reading blobs through `blob`,
   * checking each layer's uncompressed digest against its diff_id (`mismatch` code otherwise), then
   * creates the mount points.
   */
  private async buildRootfs(
    rootfs: string,
    record: ImageRecord,
    blob: (hex: string) => string,
    mismatch: ErrorCode,
    onLayer?: (digest: string) => void,
  ): Promise<void> {
    await mkdir(rootfs, { mode: 0o755 });
    for (const [i, layer] of record.layers.entries()) {
      onLayer?.(layer.digest);
      const path = blob(layer.digest.slice('sha256:'.length));
      const kind = await sniff(path);
      if (kind === 'zstd') {
        throw new AppError(
          'IMAGE_INVALID',
          `layer ${layer.digest} is zstd-compressed, which hako cannot unpack yet; re-export the image with gzip layers`,
        );
      }
      const hash = createHash('sha256');
      const tap = new Transform({
        transform(chunk: Buffer, _enc, cb): void {
          hash.update(chunk);
          cb(null, chunk);
        },
      });
      const streams: (Readable | Transform)[] = [createReadStream(path)];
      if (kind === 'gzip') streams.push(createGunzip());
      streams.push(tap);
      pipeline(streams, (err) => {
        if (err) tap.destroy(err);
      });
      await applyLayer(rootfs, tap, { logger: this.logger, label: layer.digest });
      const diffId = `sha256:${hash.digest('hex')}`;
      if (diffId !== record.diffIds[i]) {
        throw new AppError(
          mismatch,
          `layer ${layer.digest} uncompresses to ${diffId}, but the image config says ${record.diffIds[i] ?? '(nothing)'}`,
          { details: { digest: layer.digest, diffId: record.diffIds[i], actual: diffId } },
        );
      }
    }
    for (const mp of IMAGE_MOUNT_POINTS) {
      if (!(await ensureDirInRoot(rootfs, mp.path, mp.mode))) {
        this.logger.warn(
          { path: mp.path },
          'image has a non-directory where a mount point belongs; leaving it',
        );
      }
    }
    await chmod(rootfs, 0o755);
  }

  /** Moves a built rootfs into place and marks it complete (replacing an incomplete one). */
  private async installRootfs(hex: string, built: string): Promise<void> {
    const final = this.rootfsPath(hex);
    await rm(this.markerPath(hex), { force: true });
    if (await exists(final)) await this.discard(final);
    await rename(built, final);
    await atomicWrite(this.markerPath(hex), `${JSON.stringify({ completedAt: new Date().toISOString() })}\n`);
  }

  /** Removes a directory tree: renamed into tmp first, so it disappears atomically. */
  private async discard(path: string): Promise<void> {
    const trash = join(this.tmpDir, `trash-${randomBytes(6).toString('hex')}`);
    try {
      await rename(path, trash);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return;
      throw err;
    }
    await rm(trash, { recursive: true, force: true });
  }

  /** Moves a verified staged blob into the store, unless an equal-sized copy is there already. */
  private async commitBlob(hex: string, stagedPath: string): Promise<void> {
    const dest = this.blobPath(hex);
    try {
      const st = await stat(dest);
      const staged = await stat(stagedPath);
      if (st.isFile() && st.size === staged.size) return;
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw err;
    }
    await chmod(stagedPath, 0o600);
    await rename(stagedPath, dest);
  }

  // ------------------------------------------------------------ importing

  /**
   * Imports an OCI image layout tar (`skopeo copy … oci-archive:FILE`, `docker save` from Docker
   * 25+): picks the image (following one level of image index, choosing this host's platform),
   * verifies every blob's sha256 and every descriptor's size (IMAGE_DIGEST_MISMATCH naming the
   * digest), unpacks the layers, and stores it under `name`, or when `name` is undefined under the
   * name in index.json (`io.containerd.image.name`, else `org.opencontainers.image.ref.name`).
   * Importing the same image again is cheap and changes nothing; importing another image under an
   * existing name moves the name (the old image stays until prune()). On failure nothing is
   * committed.
   */
  async importLayout(tarPath: string, name?: string): Promise<ImageRef> {
    if (name !== undefined) assertImageName(name);
    try {
      const st = await stat(tarPath);
      if (!st.isFile()) throw new AppError('INVALID_ARGUMENT', `${tarPath} is not a file`);
    } catch (err) {
      if (err instanceof AppError) throw err;
      throw new AppError(
        'INVALID_ARGUMENT',
        `cannot read image archive ${tarPath}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    return this.exclusive(async () => {
      try {
        await this.ensureDirs();
        const staging = await mkdtemp(join(this.tmpDir, 'import-'));
        try {
          return await this.importStaged(tarPath, name, staging);
        } finally {
          await rm(staging, { recursive: true, force: true });
        }
      } catch (err) {
        throw classifyStoreError(err, `importing ${tarPath}`, 'IMAGE_STORE_IO');
      }
    });
  }

  private async resolveManifest(layout: StagedLayout, top: Descriptor): Promise<Descriptor> {
    let kind = top.mediaType;
    if (kind === '') {
      // index.json entries should carry a mediaType; without one, look at the document
      const blob = checkStaged(layout, top, 'manifest');
      let doc: unknown;
      try {
        doc = JSON.parse((await readStagedJson(blob, top, 'manifest')).toString('utf8'));
      } catch (err) {
        if (!(err instanceof SyntaxError)) throw err;
        throw new AppError('IMAGE_INVALID', `manifest ${top.digest} is not valid JSON: ${err.message}`, {
          cause: err,
        });
      }
      const isIndex =
        typeof doc === 'object' && doc !== null && Array.isArray((doc as { manifests?: unknown }).manifests);
      kind = isIndex
        ? 'application/vnd.oci.image.index.v1+json'
        : 'application/vnd.oci.image.manifest.v1+json';
    }
    if (isManifestMediaType(kind)) return top;
    if (!isIndexMediaType(kind))
      throw new AppError(
        'IMAGE_INVALID',
        `index.json entry ${top.digest} has unsupported media type "${kind}"`,
      );
    const blob = checkStaged(layout, top, 'image index');
    const entries = parseIndex(await readStagedJson(blob, top, 'image index'), `image index ${top.digest}`);
    return selectPlatformManifest(entries, this.platform, `image index ${top.digest}`);
  }

  /** IMAGE_INVALID unless the config is for this platform and has a diff_id per layer. */
  private checkConfigFits(parsed: ParsedImageConfig, manifest: ImageManifest): void {
    if (
      (parsed.os !== undefined && parsed.os !== this.platform.os) ||
      (parsed.architecture !== undefined && parsed.architecture !== this.platform.architecture)
    ) {
      throw new AppError(
        'IMAGE_INVALID',
        `image is for ${parsed.os ?? '?'}/${parsed.architecture ?? '?'}, this host runs ${this.platform.os}/${this.platform.architecture}`,
      );
    }
    if (parsed.diffIds.length !== manifest.layers.length) {
      throw new AppError(
        'IMAGE_INVALID',
        `image config lists ${parsed.diffIds.length} diff_ids for ${manifest.layers.length} layers`,
      );
    }
  }

  private async importStaged(tarPath: string, name: string | undefined, staging: string): Promise<ImageRef> {
    const blobDir = join(staging, 'blobs');
    await mkdir(blobDir, { mode: 0o700 });
    const layout = await readLayoutTar(tarPath, blobDir, this.logger);
    const top = selectTopDescriptor(parseIndex(layout.indexJson, 'index.json'), name, this.platform);
    const manifestDesc = await this.resolveManifest(layout, top);
    const manifestBlob = checkStaged(layout, manifestDesc, 'manifest');
    const manifest = parseManifest(
      await readStagedJson(manifestBlob, manifestDesc, 'manifest'),
      `manifest ${manifestDesc.digest}`,
    );
    const configBlob = checkStaged(layout, manifest.config, 'config');
    const parsed = parseImageConfig(
      await readStagedJson(configBlob, manifest.config, 'config', MAX_CONFIG_BYTES),
      `image config ${manifest.config.digest}`,
    );
    this.checkConfigFits(parsed, manifest);
    manifest.layers.forEach((l, i) => checkStaged(layout, l, `layer ${i}`));

    const imageName = name ?? descriptorName(top);
    if (imageName === undefined) {
      throw new AppError(
        'IMAGE_INVALID',
        `the image layout does not name its image (no ${'org.opencontainers.image.ref.name'} annotation); pass a name`,
      );
    }
    try {
      assertImageName(imageName);
    } catch (err) {
      throw new AppError(
        'IMAGE_INVALID',
        `the name in the image layout is unusable (${(err as Error).message}); pass a name`,
      );
    }

    const hex = digestHex(manifestDesc.digest) ?? '';
    const record: ImageRecord = {
      schemaVersion: 1,
      manifestDigest: manifestDesc.digest,
      configDigest: manifest.config.digest,
      layers: manifest.layers.map((l) => ({ digest: l.digest, mediaType: l.mediaType, size: l.size })),
      diffIds: parsed.diffIds,
      config: parsed.config,
    };
    const staged = (h: string): string => layout.blobs.get(h)?.path ?? join(blobDir, h);

    // unpack from the staged blobs before committing anything
    let built: string | undefined;
    if (!(await this.isComplete(hex))) {
      built = join(staging, 'rootfs');
      await this.buildRootfs(built, record, staged, 'IMAGE_DIGEST_MISMATCH');
    }
    for (const h of new Set(recordBlobs(record))) await this.commitBlob(h, staged(h));
    await atomicWrite(this.recordPath(hex), `${JSON.stringify(record)}\n`);
    if (built !== undefined) await this.installRootfs(hex, built);
    const previous = await this.readRef(imageName).catch(() => undefined);
    await atomicWrite(this.refPath(imageName), `${manifestDesc.digest}\n`);
    if (previous !== undefined && previous !== hex) {
      this.logger.info(
        { image: imageName, previous: `sha256:${previous}` },
        'name moved to a new image; prune() removes the old one once unused',
      );
    }
    this.logger.info(
      {
        image: imageName,
        digest: manifestDesc.digest,
        layers: record.layers.length,
        unpacked: built !== undefined,
      },
      'image imported',
    );
    return this.toRef(imageName, hex, record);
  }

  // ------------------------------------------------------------ pulling

  /**
   * Pulls `ref` (`host[:port]/repository[:tag|@sha256:<hex>]`) from its registry and stores it
   * under the name `ref` exactly as written. Follows one level of image index (this host's
   * platform), fetches the config and layers the store does not hold yet (each verified against
   * its descriptor's sha256 and size, IMAGE_DIGEST_MISMATCH otherwise, the partial download
   * deleted), unpacks them like importLayout() and then names the image. Pulling an image that is
   * already stored downloads only its manifest. Progress is reported through `opts.onProgress`
   * (a throwing callback is logged and ignored). Codes: INVALID_ARGUMENT for a malformed
   * reference, IMAGE_NOT_FOUND when the registry has no such manifest, REGISTRY_AUTH_FAILED,
   * IMAGE_PULL_FAILED (unreachable, timeout, 5xx, cancelled through `opts.signal`), IMAGE_INVALID,
   * and the store's own codes.
   */
  async pull(ref: string, opts: PullOptions = {}): Promise<ImageRef> {
    if (ref === HOST_IMAGE_NAME)
      throw new AppError(
        'INVALID_ARGUMENT',
        `"${HOST_IMAGE_NAME}" is the built-in image; it is never pulled`,
      );
    const target = parseImageReference(ref);
    assertImageName(ref);
    const progress = (p: PullProgress): void => {
      try {
        opts.onProgress?.(p);
      } catch (err) {
        this.logger.warn({ image: ref, err: (err as Error).message }, 'pull progress callback threw');
      }
    };
    const client = new RegistryClient({ ...this.registry, logger: this.logger, auth: opts.auth });
    const pins: string[] = [];
    try {
      return await this.pullWith(client, target, ref, opts.signal, progress, pins);
    } catch (err) {
      throw classifyStoreError(err, `pulling ${ref}`, 'IMAGE_STORE_IO');
    } finally {
      client.close();
      for (const hex of pins) {
        const n = (this.pinned.get(hex) ?? 1) - 1;
        if (n <= 0) this.pinned.delete(hex);
        else this.pinned.set(hex, n);
      }
    }
  }

  private async pullWith(
    client: RegistryClient,
    target: ImageReference,
    name: string,
    signal: AbortSignal | undefined,
    progress: (p: PullProgress) => void,
    pins: string[],
  ): Promise<ImageRef> {
    progress({ phase: 'resolving' });
    await this.ensureDirs();
    let fetched = await client.getManifest(target, undefined, { signal });
    if (fetched.kind === 'index') {
      const chosen = selectIndexManifest(
        fetched.body,
        this.platform,
        `image index ${fetched.digest} of ${name}`,
      );
      fetched = await client.getManifest(target, chosen.digest, { signal, expectedSize: chosen.size });
      if (fetched.kind !== 'manifest') {
        throw new AppError(
          'IMAGE_INVALID',
          `the ${this.platform.os}/${this.platform.architecture} entry of ${name} is another image index; nested indexes are not supported`,
        );
      }
    }
    const manifest = parseManifest(fetched.body, `manifest ${fetched.digest} of ${name}`);
    const hex = digestHex(fetched.digest) ?? '';
    progress({ phase: 'manifest', digest: fetched.digest });
    if (manifest.config.size > MAX_CONFIG_BYTES) {
      throw new AppError(
        'IMAGE_INVALID',
        `image config ${manifest.config.digest} of ${name} is larger than ${MAX_CONFIG_BYTES} bytes`,
      );
    }
    for (const d of [fetched.digest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
      const h = digestHex(d) ?? '';
      if (pins.includes(h)) continue;
      pins.push(h);
      this.pinned.set(h, (this.pinned.get(h) ?? 0) + 1);
    }

    await this.storeBytes(hex, fetched.body);
    await this.ensureBlob(client, target, manifest.config, signal, progress);
    const parsed = parseImageConfig(
      await readFile(this.blobPath(digestHex(manifest.config.digest) ?? '')),
      `image config ${manifest.config.digest} of ${name}`,
    );
    this.checkConfigFits(parsed, manifest);
    for (const layer of manifest.layers) await this.ensureBlob(client, target, layer, signal, progress);

    const record: ImageRecord = {
      schemaVersion: 1,
      manifestDigest: fetched.digest,
      configDigest: manifest.config.digest,
      layers: manifest.layers.map((l) => ({ digest: l.digest, mediaType: l.mediaType, size: l.size })),
      diffIds: parsed.diffIds,
      config: parsed.config,
    };
    const ref = await this.exclusive(async () => {
      if (signal?.aborted === true)
        throw new AppError('IMAGE_PULL_FAILED', `pulling ${name}: the pull was cancelled`);
      await this.checkBlobs(record, `pulling ${name}`);
      let unpacked = false;
      if (!(await this.isComplete(hex))) {
        const staging = await mkdtemp(join(this.tmpDir, 'pull-'));
        try {
          const rootfs = join(staging, 'rootfs');
          await this.buildRootfs(
            rootfs,
            record,
            (h) => this.blobPath(h),
            'IMAGE_DIGEST_MISMATCH',
            (digest) => progress({ phase: 'unpacking', digest }),
          );
          await atomicWrite(this.recordPath(hex), `${JSON.stringify(record)}\n`);
          await this.installRootfs(hex, rootfs);
          unpacked = true;
        } finally {
          await rm(staging, { recursive: true, force: true });
        }
      } else {
        await atomicWrite(this.recordPath(hex), `${JSON.stringify(record)}\n`);
      }
      const previous = await this.readRef(name).catch(() => undefined);
      await atomicWrite(this.refPath(name), `${fetched.digest}\n`);
      if (previous !== undefined && previous !== hex) {
        this.logger.info(
          { image: name, previous: `sha256:${previous}` },
          'name moved to a new image; prune() removes the old one once unused',
        );
      }
      this.logger.info(
        { image: name, digest: fetched.digest, layers: record.layers.length, unpacked },
        'image pulled',
      );
      return this.toRef(name, hex, record);
    });
    progress({ phase: 'done', digest: fetched.digest });
    return ref;
  }

  /** True when blob `hex` is in the store with `size` bytes (blobs are verified on the way in). */
  private async hasBlob(hex: string, size: number): Promise<boolean> {
    try {
      const st = await stat(this.blobPath(hex));
      return st.isFile() && st.size === size;
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return false;
      throw err;
    }
  }

  /** Stores already-verified bytes (a manifest) as blob `hex`. */
  private async storeBytes(hex: string, body: Buffer): Promise<void> {
    if (await this.hasBlob(hex, body.length)) return;
    const tmp = join(this.tmpDir, `blob-${hex.slice(0, 12)}-${randomBytes(6).toString('hex')}`);
    try {
      await writeFile(tmp, body, { mode: 0o600, flag: 'wx' });
      await this.commitBlob(hex, tmp);
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /**
   * Makes blob `desc` present in the store, downloading it unless it is there. Concurrent pulls of
   * one blob share the download; when the shared download fails, each waiter tries on its own.
   */
  private async ensureBlob(
    client: RegistryClient,
    target: ImageReference,
    desc: Descriptor,
    signal: AbortSignal | undefined,
    progress: (p: PullProgress) => void,
  ): Promise<void> {
    const hex = digestHex(desc.digest) ?? '';
    for (;;) {
      const running = this.downloads.get(hex);
      if (running === undefined) break;
      try {
        await running;
        return;
      } catch {
        // another pull's failure (its cancellation, say) is not ours: try ourselves
      }
    }
    const mine = this.downloadBlob(client, target, desc, hex, signal, progress);
    this.downloads.set(hex, mine);
    try {
      await mine;
    } finally {
      if (this.downloads.get(hex) === mine) this.downloads.delete(hex);
    }
  }

  private async downloadBlob(
    client: RegistryClient,
    target: ImageReference,
    desc: Descriptor,
    hex: string,
    signal: AbortSignal | undefined,
    progress: (p: PullProgress) => void,
  ): Promise<void> {
    if (await this.hasBlob(hex, desc.size)) return;
    const tmp = join(this.tmpDir, `blob-${hex.slice(0, 12)}-${randomBytes(6).toString('hex')}`);
    const total = desc.size;
    let reported = 0;
    progress({ phase: 'blob', digest: desc.digest, bytesDone: 0, bytesTotal: total });
    try {
      await client.downloadBlob(target, desc, tmp, {
        signal,
        onBytes: (n) => {
          if (n - reported >= PROGRESS_STEP_BYTES && n < total) {
            reported = n;
            progress({ phase: 'blob', digest: desc.digest, bytesDone: n, bytesTotal: total });
          }
        },
      });
      await this.commitBlob(hex, tmp);
    } finally {
      await rm(tmp, { force: true });
    }
    progress({ phase: 'blob', digest: desc.digest, bytesDone: total, bytesTotal: total });
  }

  // ------------------------------------------------------------ removing

  /**
   * Removes a name (or, given a digest, every name of that image), then prunes: the rootfs, record
   * and blobs no remaining name uses are deleted. IMAGE_NOT_FOUND when nothing matched;
   * INVALID_ARGUMENT for `host`. The caller must make sure no sandbox still runs on the image: its
   * rootfs is deleted.
   */
  async remove(ref: string): Promise<void> {
    if (ref === HOST_IMAGE_NAME)
      throw new AppError('INVALID_ARGUMENT', 'the built-in host image cannot be removed');
    const byDigest = DIGEST_RE.exec(ref)?.[1];
    if (byDigest === undefined) assertImageName(ref);
    await this.exclusive(async () => {
      try {
        const names = byDigest === undefined ? [ref] : await this.namesFor(byDigest);
        let removed = 0;
        for (const n of names) {
          try {
            await rm(this.refPath(n));
            removed++;
          } catch (err) {
            if (errnoOf(err) !== 'ENOENT') throw err;
          }
        }
        if (removed === 0 && !(byDigest !== undefined && (await exists(this.recordPath(byDigest))))) {
          throw new AppError(
            'IMAGE_NOT_FOUND',
            `no image ${byDigest === undefined ? `named "${ref}"` : ref} to remove`,
          );
        }
        await this.pruneLocked();
      } catch (err) {
        throw classifyStoreError(err, `removing image ${ref}`, 'IMAGE_STORE_IO');
      }
    });
  }

  /**
   * Deletes everything no ref uses: records, rootfs directories and markers, blobs, and temp
   * entries older than a day. Returns the manifest digests whose images were deleted. Blobs are
   * only swept when every remaining record is readable (a corrupt record could hide users).
   */
  async prune(): Promise<string[]> {
    return this.exclusive(async () => {
      try {
        return await this.pruneLocked();
      } catch (err) {
        throw classifyStoreError(err, 'pruning the image store', 'IMAGE_STORE_IO');
      }
    });
  }

  private async listDir(rel: string): Promise<string[]> {
    try {
      return await readdir(join(this.root, rel));
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return [];
      throw err;
    }
  }

  private async pruneLocked(): Promise<string[]> {
    const live = new Set<string>();
    for (const n of await this.refNames()) {
      const h = await this.readRef(n).catch((err: unknown) => {
        // a broken ref keeps nothing alive, but must not stop the sweep
        this.logger.warn({ ref: n, err: (err as Error).message }, 'ignoring unreadable ref while pruning');
        return undefined;
      });
      if (h !== undefined) live.add(h);
    }
    const deleted: string[] = [];
    for (const f of await this.listDir('configs')) {
      const hex = f.endsWith('.json') ? f.slice(0, -'.json'.length) : '';
      if (!HEX_RE.test(hex) || live.has(hex)) continue;
      await rm(this.markerPath(hex), { force: true });
      await this.discard(this.rootfsPath(hex));
      await rm(join(this.root, 'configs', f), { force: true });
      deleted.push(`sha256:${hex}`);
    }
    for (const f of await this.listDir('rootfs')) {
      const hex = f.endsWith('.complete') ? f.slice(0, -'.complete'.length) : f;
      if (HEX_RE.test(hex) && live.has(hex)) continue;
      if (f.endsWith('.complete')) await rm(join(this.root, 'rootfs', f), { force: true });
      else await this.discard(join(this.root, 'rootfs', f));
    }
    const used = new Set<string>();
    let complete = true;
    for (const hex of live) {
      try {
        for (const b of recordBlobs(await this.readRecord(hex, 'pruning', 'IMAGE_STORE_CORRUPT')))
          used.add(b);
      } catch (err) {
        complete = false;
        this.logger.warn(
          { digest: `sha256:${hex}`, err: (err as Error).message },
          'unreadable image record; not sweeping blobs',
        );
      }
    }
    if (complete) {
      for (const f of await this.listDir(join('blobs', 'sha256'))) {
        if (!used.has(f) && !this.pinned.has(f)) await rm(this.blobPath(f), { force: true, recursive: true });
      }
    }
    const now = Date.now();
    for (const f of await this.listDir('tmp')) {
      const p = join(this.tmpDir, f);
      const st = await lstat(p).catch(() => undefined);
      if (st !== undefined && (f.startsWith('trash-') || now - st.mtimeMs > STALE_TMP_MS))
        await rm(p, { recursive: true, force: true });
    }
    if (deleted.length > 0) this.logger.info({ deleted }, 'pruned unused images');
    return deleted;
  }
}

/**
 * Returns image `ref`, pulling it first only when the store really lacks it: get() threw
 * IMAGE_NOT_FOUND and `ref` names a registry host (`host[:port]/repo[:tag]`). Any other error from
 * get() (IMAGE_STORE_PERMISSION, IMAGE_STORE_CORRUPT, IMAGE_STORE_IO, INVALID_ARGUMENT, …) is
 * rethrown at once with its own code: a broken store is never papered over by a pull. A local name
 * that is absent stays IMAGE_NOT_FOUND.
 */
export async function ensureImage(
  store: Pick<ImageStore, 'get' | 'pull'>,
  ref: string,
  pullOpts?: PullOptions,
): Promise<ImageRef> {
  try {
    return await store.get(ref);
  } catch (err) {
    if (!(err instanceof AppError) || err.code !== 'IMAGE_NOT_FOUND' || !isPullableReference(ref)) throw err;
  }
  return store.pull(ref, pullOpts);
}
