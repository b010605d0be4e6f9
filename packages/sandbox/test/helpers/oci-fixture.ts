/**
 * Builds OCI image layout tars (and single layer tars) for tests, entirely in memory with
 * tar-stream: no registry, no network, no host tools.
 *
 *   const { tarPath, manifestDigest } = await buildOciLayoutTar(tmpDir, {
 *     layers: [[{ path: 'etc/hello', type: 'file', content: 'hi\n' }]],
 *     config: { Cmd: ['/bin/sh'] },
 *     refName: 'hello:1',
 *   });
 *
 * Entry paths are written verbatim, so tests can also build hostile layers (`../x`, `/abs`).
 */
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import tarStream from 'tar-stream';
import type { Header } from 'tar-stream';

type Headers = Partial<Header> & { name: string };

export interface FixtureEntry {
  readonly path: string;
  readonly type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'fifo' | 'char-device';
  readonly content?: string | Buffer;
  /** Permission bits (setuid etc. included). Default 0644 for files, 0755 for dirs. */
  readonly mode?: number;
  /** Symlink target, or the archive path a hardlink points at. */
  readonly linkname?: string;
  readonly uid?: number;
  readonly gid?: number;
  readonly mtime?: Date;
}

export interface FixtureConfig {
  readonly Env?: string[];
  readonly Cmd?: string[];
  readonly Entrypoint?: string[];
  readonly WorkingDir?: string;
  readonly User?: string;
}

export type FixtureBlob = 'manifest' | 'config' | 'index' | number;

export interface BuildOciLayoutOptions {
  /** Layers, lowest first; each is a list of tar entries. */
  readonly layers: readonly (readonly FixtureEntry[])[];
  readonly config?: FixtureConfig;
  /** `org.opencontainers.image.ref.name` annotation on the index.json entry. */
  readonly refName?: string;
  /** gzip the layers (media type `…tar+gzip`). */
  readonly gzip?: boolean;
  /** Override every layer's media type (e.g. the zstd one). */
  readonly layerMediaType?: string;
  /** Use Docker v2 media types instead of OCI ones. */
  readonly docker?: boolean;
  /**
   * Wrap the manifest in an image index next to a linux/arm64 manifest (index.json points at the
   * nested index), to test platform selection.
   */
  readonly platformIndex?: boolean;
  /**
   * Damage the layout after building it: `content` flips a byte of the blob (same size, so only
   * the digest check can catch it); `size` makes the referencing descriptor declare one byte more;
   * `missing` leaves the blob out of the tar.
   */
  readonly corrupt?: { readonly blob: FixtureBlob; readonly how: 'content' | 'size' | 'missing' };
  /** Leave out the oci-layout file. */
  readonly omitLayoutFile?: boolean;
  /** File name inside `dir`; default a random `image-xxxxxx.tar`. */
  readonly fileName?: string;
}

export interface BuiltOciLayout {
  readonly tarPath: string;
  /** sha256:… of the (single-platform) image manifest the store should pick. */
  readonly manifestDigest: string;
  readonly configDigest: string;
  /** Digests of the layer blobs as stored (compressed when gzip). */
  readonly layerDigests: readonly string[];
}

function sha256(buf: Buffer): string {
  return `sha256:${createHash('sha256').update(buf).digest('hex')}`;
}

function header(e: FixtureEntry, size: number): Headers {
  const base = {
    name: e.path,
    uid: e.uid ?? 0,
    gid: e.gid ?? 0,
    mtime: e.mtime ?? new Date('2024-01-02T03:04:05Z'),
  };
  switch (e.type) {
    case 'file':
      return { ...base, type: 'file', mode: e.mode ?? 0o644, size };
    case 'dir':
      return { ...base, type: 'directory', mode: e.mode ?? 0o755 };
    case 'symlink':
      return { ...base, type: 'symlink', mode: 0o777, linkname: e.linkname ?? '' };
    case 'hardlink':
      return { ...base, type: 'link', mode: e.mode ?? 0o644, linkname: e.linkname ?? '' };
    case 'fifo':
      return { ...base, type: 'fifo', mode: e.mode ?? 0o644 };
    case 'char-device':
      return { ...base, type: 'character-device', mode: e.mode ?? 0o666, devmajor: 1, devminor: 3 };
  }
}

async function packTar(items: readonly { header: Headers; body?: Buffer }[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  for (const item of items) {
    await new Promise<void>((resolve, reject) => {
      pack.entry(item.header, item.body ?? Buffer.alloc(0), (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

/** Builds one uncompressed layer tar from fixture entries. */
export async function buildLayerTar(entries: readonly FixtureEntry[]): Promise<Buffer> {
  return packTar(
    entries.map((e) => {
      const body = e.type === 'file' ? Buffer.from(e.content ?? '') : undefined;
      return { header: header(e, body?.length ?? 0), body };
    }),
  );
}

function json(v: unknown): Buffer {
  return Buffer.from(JSON.stringify(v));
}

/**
 * Writes an OCI image layout tar (oci-layout, index.json, blobs/sha256/…) into `dir` and returns
 * its path and the digests in it. The config's rootfs.diff_ids are the real uncompressed digests.
 */
export async function buildOciLayoutTar(dir: string, opts: BuildOciLayoutOptions): Promise<BuiltOciLayout> {
  const mt = opts.docker
    ? {
        manifest: 'application/vnd.docker.distribution.manifest.v2+json',
        index: 'application/vnd.docker.distribution.manifest.list.v2+json',
        config: 'application/vnd.docker.container.image.v1+json',
        layer: opts.gzip
          ? 'application/vnd.docker.image.rootfs.diff.tar.gzip'
          : 'application/vnd.docker.image.rootfs.diff.tar',
      }
    : {
        manifest: 'application/vnd.oci.image.manifest.v1+json',
        index: 'application/vnd.oci.image.index.v1+json',
        config: 'application/vnd.oci.image.config.v1+json',
        layer: opts.gzip
          ? 'application/vnd.oci.image.layer.v1.tar+gzip'
          : 'application/vnd.oci.image.layer.v1.tar',
      };
  const blobs = new Map<string, Buffer>();
  const add = (buf: Buffer): string => {
    const d = sha256(buf);
    blobs.set(d, buf);
    return d;
  };
  const sizeDelta = (which: FixtureBlob): number =>
    opts.corrupt?.how === 'size' && opts.corrupt.blob === which ? 1 : 0;

  const layerDescs: { mediaType: string; digest: string; size: number }[] = [];
  const diffIds: string[] = [];
  for (const [i, entries] of opts.layers.entries()) {
    const raw = await buildLayerTar(entries);
    diffIds.push(sha256(raw));
    const stored = opts.gzip ? gzipSync(raw) : raw;
    const digest = add(stored);
    layerDescs.push({
      mediaType: opts.layerMediaType ?? mt.layer,
      digest,
      size: stored.length + sizeDelta(i),
    });
  }
  const configBuf = json({
    architecture: 'amd64',
    os: 'linux',
    config: opts.config ?? {},
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: [],
  });
  const configDigest = add(configBuf);
  const manifestBuf = json({
    schemaVersion: 2,
    mediaType: mt.manifest,
    config: { mediaType: mt.config, digest: configDigest, size: configBuf.length + sizeDelta('config') },
    layers: layerDescs,
  });
  const manifestDigest = add(manifestBuf);
  const annotations =
    opts.refName === undefined ? undefined : { 'org.opencontainers.image.ref.name': opts.refName };

  let top: Record<string, unknown>;
  if (opts.platformIndex) {
    // a second, arm64 manifest with a config that says so; it must never be picked
    const armConfig = json({
      architecture: 'arm64',
      os: 'linux',
      config: {},
      rootfs: { type: 'layers', diff_ids: [] },
    });
    const armConfigDigest = add(armConfig);
    const armManifest = json({
      schemaVersion: 2,
      mediaType: mt.manifest,
      config: { mediaType: mt.config, digest: armConfigDigest, size: armConfig.length },
      layers: [],
    });
    const armDigest = add(armManifest);
    const indexBuf = json({
      schemaVersion: 2,
      mediaType: mt.index,
      manifests: [
        {
          mediaType: mt.manifest,
          digest: armDigest,
          size: armManifest.length,
          platform: { os: 'linux', architecture: 'arm64' },
        },
        {
          mediaType: mt.manifest,
          digest: manifestDigest,
          size: manifestBuf.length + sizeDelta('manifest'),
          platform: { os: 'linux', architecture: 'amd64' },
        },
      ],
    });
    const indexDigest = add(indexBuf);
    top = {
      mediaType: mt.index,
      digest: indexDigest,
      size: indexBuf.length + sizeDelta('index'),
      annotations,
    };
  } else {
    top = {
      mediaType: mt.manifest,
      digest: manifestDigest,
      size: manifestBuf.length + sizeDelta('manifest'),
      annotations,
    };
  }
  const indexJson = json({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [top],
  });

  const target = (which: FixtureBlob): string | undefined => {
    if (which === 'manifest') return manifestDigest;
    if (which === 'config') return configDigest;
    if (which === 'index') return opts.platformIndex ? (top.digest as string) : undefined;
    return layerDescs[which]?.digest;
  };
  const damaged = opts.corrupt ? target(opts.corrupt.blob) : undefined;
  if (opts.corrupt && damaged === undefined)
    throw new Error(`no blob ${String(opts.corrupt.blob)} to corrupt`);

  const mtime = new Date('2024-01-02T03:04:05Z');
  const items: { header: Headers; body?: Buffer }[] = [];
  const file = (name: string, body: Buffer): void => {
    items.push({ header: { name, type: 'file', mode: 0o644, size: body.length, mtime }, body });
  };
  if (!opts.omitLayoutFile) file('oci-layout', json({ imageLayoutVersion: '1.0.0' }));
  file('index.json', indexJson);
  items.push({ header: { name: 'blobs/', type: 'directory', mode: 0o755, mtime } });
  items.push({ header: { name: 'blobs/sha256/', type: 'directory', mode: 0o755, mtime } });
  for (const [digest, buf] of blobs) {
    let body = buf;
    if (digest === damaged && opts.corrupt?.how === 'missing') continue;
    if (digest === damaged && opts.corrupt?.how === 'content') {
      body = Buffer.from(buf);
      body[body.length - 1] = (body[body.length - 1] ?? 0) ^ 0xff;
    }
    file(`blobs/sha256/${digest.slice('sha256:'.length)}`, body);
  }
  const tarPath = join(dir, opts.fileName ?? `image-${randomBytes(3).toString('hex')}.tar`);
  await writeFile(tarPath, await packTar(items));
  return { tarPath, manifestDigest, configDigest, layerDigests: layerDescs.map((l) => l.digest) };
}
