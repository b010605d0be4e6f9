/**
 * Reading OCI image layouts (https://github.com/opencontainers/image-spec/blob/main/image-layout.md)
 * from a tar archive: staging every blob while checking its sha256, then parsing and validating
 * index.json, image indexes, manifests and image configs. Docker v2 (schema 2) media types are
 * accepted next to the OCI ones.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { readEntryChunks } from './layer-unpack.js';
import type { TarEntry as Entry } from './layer-unpack.js';
import type { ImageConfig } from './types.js';

export const MEDIA_TYPES = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
} as const;

const INDEX_TYPES: ReadonlySet<string> = new Set([MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifestList]);
const MANIFEST_TYPES: ReadonlySet<string> = new Set([MEDIA_TYPES.ociManifest, MEDIA_TYPES.dockerManifest]);
const CONFIG_TYPES: ReadonlySet<string> = new Set([MEDIA_TYPES.ociConfig, MEDIA_TYPES.dockerConfig]);

export type LayerCompression = 'none' | 'gzip';

const LAYER_TYPES: ReadonlyMap<string, LayerCompression | 'zstd'> = new Map([
  ['application/vnd.oci.image.layer.v1.tar', 'none'],
  ['application/vnd.oci.image.layer.v1.tar+gzip', 'gzip'],
  ['application/vnd.oci.image.layer.v1.tar+zstd', 'zstd'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar', 'none'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', 'gzip'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar+zstd', 'zstd'],
  ['application/vnd.docker.image.rootfs.diff.tar', 'none'],
  ['application/vnd.docker.image.rootfs.diff.tar.gzip', 'gzip'],
  ['application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', 'gzip'],
]);

/** Annotations that name an image in index.json (containerd's full name wins over the bare tag). */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
export const CONTAINERD_NAME_ANNOTATION = 'io.containerd.image.name';

/** JSON documents larger than this are refused (the OCI spec suggests 4 MiB for manifests). */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

const HEX_RE = /^[a-f0-9]{64}$/;
const DIGEST_RE = /^sha256:([a-f0-9]{64})$/;

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string | undefined;
}

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly annotations: Readonly<Record<string, string>>;
  readonly platform: Platform | undefined;
}

export interface ImageManifest {
  readonly config: Descriptor;
  readonly layers: readonly Descriptor[];
}

export interface ParsedImageConfig {
  readonly config: ImageConfig;
  /** Uncompressed layer digests, in layer order. */
  readonly diffIds: readonly string[];
  readonly os: string | undefined;
  readonly architecture: string | undefined;
}

function invalid(message: string, cause?: unknown): AppError {
  return new AppError('IMAGE_INVALID', message, cause === undefined ? {} : { cause });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The hex part of a `sha256:<hex>` digest, or undefined when it is not one. */
export function digestHex(digest: string): string | undefined {
  return DIGEST_RE.exec(digest)?.[1];
}

/** The OCI platform of this host (GOARCH names), e.g. linux/amd64. */
export function hostPlatform(): Platform {
  const arch: Record<string, string> = {
    x64: 'amd64',
    arm64: 'arm64',
    arm: 'arm',
    ia32: '386',
    ppc64: 'ppc64le',
    s390x: 's390x',
  };
  return { os: 'linux', architecture: arch[process.arch] ?? process.arch };
}

/** How a layer of `mediaType` is compressed; IMAGE_INVALID for zstd and unknown types. */
export function layerCompression(mediaType: string, digest: string): LayerCompression {
  const c = LAYER_TYPES.get(mediaType);
  if (c === 'zstd') {
    throw invalid(
      `layer ${digest} is zstd-compressed (${mediaType}), which hako cannot unpack yet; re-export the image with gzip layers (e.g. skopeo copy --dest-compress-format gzip)`,
    );
  }
  if (c === undefined) throw invalid(`layer ${digest} has unsupported media type "${mediaType}"`);
  return c;
}

export function parseDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw invalid(`${where}: descriptor is not an object`);
  const { mediaType, digest, size, annotations, platform } = v;
  if (typeof digest !== 'string') throw invalid(`${where}: descriptor has no digest`);
  if (digestHex(digest) === undefined) {
    throw invalid(`${where}: digest "${digest}" is not a sha256 digest (only sha256 is supported)`);
  }
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw invalid(`${where}: descriptor ${digest} has an invalid size`);
  }
  if (mediaType !== undefined && typeof mediaType !== 'string')
    throw invalid(`${where}: descriptor ${digest} has a bad mediaType`);
  const ann: Record<string, string> = {};
  if (isObject(annotations)) {
    for (const [k, val] of Object.entries(annotations)) if (typeof val === 'string') ann[k] = val;
  }
  let plat: Platform | undefined;
  if (isObject(platform) && typeof platform.os === 'string' && typeof platform.architecture === 'string') {
    plat = {
      os: platform.os,
      architecture: platform.architecture,
      variant: typeof platform.variant === 'string' ? platform.variant : undefined,
    };
  }
  return { mediaType: mediaType ?? '', digest, size, annotations: ann, platform: plat };
}

function parseJson(buf: Buffer, what: string): unknown {
  try {
    return JSON.parse(buf.toString('utf8')) as unknown;
  } catch (err) {
    throw invalid(`${what} is not valid JSON: ${(err as Error).message}`, err);
  }
}

/** Parses an image index (index.json or a nested index blob) into its manifest descriptors. */
export function parseIndex(buf: Buffer, what: string): Descriptor[] {
  const doc = parseJson(buf, what);
  if (!isObject(doc) || doc.schemaVersion !== 2 || !Array.isArray(doc.manifests)) {
    throw invalid(`${what} is not an image index (schemaVersion 2 with a manifests array)`);
  }
  return doc.manifests.map((m, i) => parseDescriptor(m, `${what} manifests[${i}]`));
}

export function parseManifest(buf: Buffer, what: string): ImageManifest {
  const doc = parseJson(buf, what);
  if (!isObject(doc) || doc.schemaVersion !== 2 || !Array.isArray(doc.layers)) {
    throw invalid(`${what} is not an image manifest (schemaVersion 2 with config and layers)`);
  }
  if (typeof doc.mediaType === 'string' && !MANIFEST_TYPES.has(doc.mediaType)) {
    throw invalid(`${what} has unsupported media type "${doc.mediaType}"`);
  }
  const config = parseDescriptor(doc.config, `${what} config`);
  if (!CONFIG_TYPES.has(config.mediaType)) {
    throw invalid(
      `${what}: config media type "${config.mediaType}" is not an image config (not a container image?)`,
    );
  }
  const layers = doc.layers.map((l, i) => parseDescriptor(l, `${what} layers[${i}]`));
  for (const l of layers) layerCompression(l.mediaType, l.digest);
  return { config, layers };
}

function stringArray(v: unknown, what: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string'))
    throw invalid(`${what} must be an array of strings`);
  return v;
}

function optionalString(v: unknown, what: string): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw invalid(`${what} must be a string`);
  return v;
}

export function parseImageConfig(buf: Buffer, what: string): ParsedImageConfig {
  const doc = parseJson(buf, what);
  if (!isObject(doc)) throw invalid(`${what} is not a JSON object`);
  const c = isObject(doc.config) ? doc.config : {};
  const rootfs = isObject(doc.rootfs) ? doc.rootfs : {};
  const diffIds = stringArray(rootfs.diff_ids, `${what} rootfs.diff_ids`);
  for (const d of diffIds)
    if (digestHex(d) === undefined) throw invalid(`${what}: diff_id "${d}" is not a sha256 digest`);
  return {
    config: {
      env: stringArray(c.Env, `${what} config.Env`),
      entrypoint: stringArray(c.Entrypoint, `${what} config.Entrypoint`),
      cmd: stringArray(c.Cmd, `${what} config.Cmd`),
      workingDir: optionalString(c.WorkingDir, `${what} config.WorkingDir`),
      user: optionalString(c.User, `${what} config.User`),
    },
    diffIds,
    os: typeof doc.os === 'string' ? doc.os : undefined,
    architecture: typeof doc.architecture === 'string' ? doc.architecture : undefined,
  };
}

export function isIndexMediaType(mediaType: string): boolean {
  return INDEX_TYPES.has(mediaType);
}

export function isManifestMediaType(mediaType: string): boolean {
  return MANIFEST_TYPES.has(mediaType);
}

/** The name an index.json entry gives its image, if any. */
export function descriptorName(d: Descriptor): string | undefined {
  return d.annotations[CONTAINERD_NAME_ANNOTATION] ?? d.annotations[REF_NAME_ANNOTATION];
}

function platformMatches(p: Platform | undefined, want: Platform): boolean {
  return p === undefined || (p.os === want.os && p.architecture === want.architecture);
}

function platformString(p: Platform | undefined): string {
  return p ? `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}` : 'unspecified';
}

/**
 * Picks the one entry of index.json to import. Entries for another platform are dropped; when
 * several remain, the one whose name annotation equals `name` wins, else the choice is ambiguous.
 */
export function selectTopDescriptor(
  entries: readonly Descriptor[],
  name: string | undefined,
  want: Platform,
): Descriptor {
  if (entries.length === 0) throw invalid('index.json lists no images');
  const candidates = entries.filter((d) => platformMatches(d.platform, want));
  if (candidates.length === 0) {
    throw invalid(
      `no ${platformString(want)} image in the layout (it has ${entries.map((d) => platformString(d.platform)).join(', ')})`,
    );
  }
  if (candidates.length === 1) return candidates[0] as Descriptor;
  const byName =
    name === undefined
      ? []
      : candidates.filter((d) => descriptorName(d) === name || d.annotations[REF_NAME_ANNOTATION] === name);
  if (byName.length === 1) return byName[0] as Descriptor;
  const names = candidates.map((d) => descriptorName(d) ?? d.digest).join(', ');
  throw invalid(
    `the layout holds ${candidates.length} images (${names}); pass the name of the one to import`,
  );
}

/** Picks the manifest for `want` from a (nested) image index. */
export function selectPlatformManifest(
  entries: readonly Descriptor[],
  want: Platform,
  what: string,
): Descriptor {
  const manifests = entries.filter((d) => isManifestMediaType(d.mediaType));
  const exact = manifests.filter((d) => d.platform !== undefined && platformMatches(d.platform, want));
  const chosen =
    exact[0] ?? (manifests.length === 1 && manifests[0]?.platform === undefined ? manifests[0] : undefined);
  if (chosen === undefined) {
    const have = entries.map((d) => platformString(d.platform)).join(', ');
    throw invalid(`${what} has no ${platformString(want)} manifest (platforms: ${have || 'none'})`);
  }
  return chosen;
}

// ---------------------------------------------------------------- reading the layout tar

export interface StagedBlob {
  readonly path: string;
  readonly size: number;
}

export interface StagedLayout {
  readonly indexJson: Buffer;
  /** hex -> staged file whose sha256 was checked against its name. */
  readonly blobs: ReadonlyMap<string, StagedBlob>;
}

/** Strips `./` and leading slashes from a layout tar member name. */
function memberName(name: string): string {
  let n = name;
  for (;;) {
    if (n.startsWith('./')) n = n.slice(2);
    else if (n.startsWith('/')) n = n.slice(1);
    else return n.replace(/\/+$/, '');
  }
}

async function readSmall(entry: Entry, what: string, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  await readEntryChunks(entry, 'image layout', (c) => {
    size += c.length;
    if (size > max) throw invalid(`${what} in the layout is larger than ${max} bytes`);
    chunks.push(c);
  });
  return Buffer.concat(chunks);
}

async function stageBlob(entry: Entry, hex: string, dir: string): Promise<StagedBlob> {
  const path = join(dir, hex);
  const hash = createHash('sha256');
  let size = 0;
  const fh = await open(path, 'w', 0o600);
  try {
    await readEntryChunks(entry, 'image layout', async (c) => {
      hash.update(c);
      size += c.length;
      await fh.write(c);
    });
  } finally {
    await fh.close();
  }
  const actual = hash.digest('hex');
  if (actual !== hex) {
    throw new AppError(
      'IMAGE_DIGEST_MISMATCH',
      `blob sha256:${hex} in the image layout has digest sha256:${actual}: the archive is corrupt or was modified; re-export it`,
      { details: { digest: `sha256:${hex}`, actual: `sha256:${actual}` } },
    );
  }
  return { path, size };
}

function isSystemError(err: unknown): boolean {
  const e = err as NodeJS.ErrnoException | null;
  return typeof e?.syscall === 'string' && typeof e.code === 'string';
}

/**
 * Reads an OCI image layout tar: keeps oci-layout and index.json in memory and writes every
 * `blobs/sha256/<hex>` member into `stagingDir/<hex>`, verifying its sha256 on the way
 * (IMAGE_DIGEST_MISMATCH naming the digest). Other members are ignored. IMAGE_INVALID when the
 * archive is not a tar or not an image layout; file-system errors are rethrown unchanged.
 */
export async function readLayoutTar(
  tarPath: string,
  stagingDir: string,
  logger: Logger,
): Promise<StagedLayout> {
  const source = createReadStream(tarPath);
  // loaded on first use: the CLI's `sandbox run` never reads a tar
  const { default: tarStream } = await import('tar-stream');
  const extract = tarStream.extract();
  source.on('error', (err) => extract.destroy(err));
  source.pipe(extract);
  const it = extract[Symbol.asyncIterator]();
  const blobs = new Map<string, StagedBlob>();
  let layoutFile: Buffer | undefined;
  let indexJson: Buffer | undefined;
  try {
    for (;;) {
      let r: IteratorResult<Entry>;
      try {
        r = await it.next();
      } catch (err) {
        if (isSystemError(err)) throw err;
        throw invalid(`${tarPath} is not a valid tar archive: ${(err as Error).message}`, err);
      }
      if (r.done) break;
      const entry = r.value;
      const name = memberName(entry.header.name);
      const isFile = entry.header.type === 'file' || entry.header.type === 'contiguous-file';
      const blob = /^blobs\/sha256\/(.+)$/.exec(name);
      if (isFile && name === 'oci-layout') {
        layoutFile = await readSmall(entry, 'oci-layout', 64 * 1024);
      } else if (isFile && name === 'index.json') {
        indexJson = await readSmall(entry, 'index.json', MAX_MANIFEST_BYTES);
      } else if (isFile && blob) {
        const hex = blob[1] ?? '';
        if (!HEX_RE.test(hex)) throw invalid(`${tarPath}: blob name "${name}" is not a sha256 digest`);
        blobs.set(hex, await stageBlob(entry, hex, stagingDir));
      } else {
        logger.debug({ member: entry.header.name }, 'ignoring image layout member');
        await readEntryChunks(entry, 'image layout', () => undefined);
      }
    }
  } catch (err) {
    source.unpipe(extract);
    source.destroy();
    extract.destroy();
    throw err;
  }
  if (layoutFile === undefined) {
    throw invalid(
      `${tarPath} is not an OCI image layout (no oci-layout file); export one with e.g. \`skopeo copy docker-daemon:IMAGE oci-archive:FILE\` or \`docker save\` (Docker 25+)`,
    );
  }
  const layout = parseJson(layoutFile, 'oci-layout');
  if (
    !isObject(layout) ||
    typeof layout.imageLayoutVersion !== 'string' ||
    !layout.imageLayoutVersion.startsWith('1.')
  ) {
    throw invalid(`${tarPath}: unsupported oci-layout ${layoutFile.toString('utf8').slice(0, 200)}`);
  }
  if (indexJson === undefined) throw invalid(`${tarPath} is not an OCI image layout (no index.json)`);
  return { indexJson, blobs };
}

/**
 * Checks a descriptor against a staged blob: the blob must be present, and its size must equal
 * the descriptor's (IMAGE_DIGEST_MISMATCH otherwise, naming the digest). Returns the staged blob.
 */
export function checkStaged(layout: StagedLayout, d: Descriptor, what: string): StagedBlob {
  const hex = digestHex(d.digest) ?? '';
  const blob = layout.blobs.get(hex);
  if (blob === undefined) throw invalid(`${what} ${d.digest} is missing from the image layout`);
  if (blob.size !== d.size) {
    throw new AppError(
      'IMAGE_DIGEST_MISMATCH',
      `${what} ${d.digest} is ${blob.size} bytes but its descriptor says ${d.size}: the image is corrupt; re-export it`,
      { details: { digest: d.digest, size: blob.size, declared: d.size } },
    );
  }
  return blob;
}

/** Reads a staged JSON blob (manifest, index, config) after checkStaged(). */
export async function readStagedJson(
  blob: StagedBlob,
  d: Descriptor,
  what: string,
  max = MAX_MANIFEST_BYTES,
): Promise<Buffer> {
  if (blob.size > max) throw invalid(`${what} ${d.digest} is larger than ${max} bytes`);
  return readFile(blob.path);
}

export { MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES };
