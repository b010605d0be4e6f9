import { mkdir, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, extname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { S3ClientConfig } from '@aws-sdk/client-s3';
import { silentLogger } from '@hako/core';
import type { Logger } from '@hako/core';
import { removeDir, runUndo, serviceEnv, spawnService, waitForService } from './service-process.js';

const READY_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 5_000;

/** s3rver accepts only its built-in account. It checks the access key id, not the V4 signature. */
const S3RVER_ACCESS_KEY_ID = 'S3RVER';
const S3RVER_SECRET_ACCESS_KEY = 'S3RVER';
const DEFAULT_BUCKET = 'hako';
const REGION = 'us-east-1';

/**
 * The S3 client settings hako needs to talk to s3rver (and that every real S3 accepts too):
 *
 * - `forcePathStyle`: the endpoint is an IP address, so bucket-in-hostname addressing cannot work.
 * - `requestChecksumCalculation: 'WHEN_REQUIRED'`: by default SDK v3 sends a CRC32 checksum with
 *   every upload, and for a stream body it sends it as an aws-chunked trailer. s3rver does not
 *   decode aws-chunked, so a streamed PutObject would be stored with the chunk framing inside the
 *   object, silently. With WHEN_REQUIRED only operations that need a checksum (DeleteObjects) send
 *   one, as a plain header, which s3rver ignores.
 * - `responseChecksumValidation: 'WHEN_REQUIRED'`: s3rver returns no checksums; this keeps the SDK
 *   from asking for them on every GetObject.
 */
export const S3_CLIENT_COMPAT = {
  forcePathStyle: true,
  requestChecksumCalculation: 'WHEN_REQUIRED',
  responseChecksumValidation: 'WHEN_REQUIRED',
} as const satisfies Partial<S3ClientConfig>;

export interface StartS3Options {
  /**
   * The data directory. Given: created when missing and kept at stop(), so a later startS3 with the
   * same dir serves the same objects. Default: a temporary directory that stop() removes.
   */
  readonly dir?: string;
  /** The bucket created at start (kept when it exists). Default `hako`. */
  readonly bucket?: string;
  /** Gets s3rver's request log at debug level (only when debug is enabled). Default: silent. */
  readonly logger?: Logger;
}

/** A private S3-compatible server (s3rver) for one test file. */
export interface S3Service {
  /** http://127.0.0.1:<port>; use with S3_CLIENT_COMPAT. */
  readonly endpoint: string;
  readonly port: number;
  readonly region: string;
  readonly bucket: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** The data directory: one folder per bucket, objects stored as files under their keys. */
  readonly dir: string;
  /** Stops the server; removes `dir` unless the caller gave it. Idempotent: later calls return the first call's promise. */
  stop(): Promise<void>;
}

/** node's arguments for the child program: the compiled .js, or the .ts source through tsx when running from source. */
function childProgram(): string[] {
  const self = fileURLToPath(import.meta.url);
  const ext = extname(self);
  const child = join(dirname(self), `s3rver-child${ext}`);
  const loader = ext === '.ts' ? ['--import', import.meta.resolve('tsx')] : [];
  return ['--openssl-legacy-provider', ...loader, child];
}

/**
 * Starts s3rver on 127.0.0.1 and a port the kernel picks, with `bucket` created. It runs as a
 * child Node process (s3rver-child.ts) with OpenSSL's legacy provider, because s3rver 3.7.1 makes
 * ListObjectsV2 continuation tokens with DES, which OpenSSL 3 refuses otherwise (every truncated
 * listing answered 500), and with fixes to its listing and key handling (s3rver-fixes.ts).
 * Resolves once the bucket answers; everything is removed again when the start fails.
 *
 * Differences from S3 worth knowing: signatures are not verified (only the access key id), only
 * keys count against MaxKeys (common prefixes do not), and keys with '.' or '..' segments or empty
 * inner segments ('a//b') are refused with InvalidArgument, since keys are file paths here.
 */
export async function startS3(options: StartS3Options = {}): Promise<S3Service> {
  const logger = options.logger ?? silentLogger();
  const bucket = options.bucket ?? DEFAULT_BUCKET;
  const ownDir = options.dir === undefined;
  const dir = options.dir === undefined ? await mkdtemp(join(tmpdir(), 'hako-s3-')) : resolve(options.dir);
  const undo: (() => Promise<void>)[] = [];
  if (ownDir) undo.push(() => removeDir(dir));
  try {
    await mkdir(dir, { recursive: true });
    let port: number | undefined;
    const proc = await spawnService({
      name: 's3',
      command: process.execPath,
      args: [
        ...childProgram(),
        '--directory',
        dir,
        '--bucket',
        bucket,
        ...(logger.isLevelEnabled('debug') ? ['--verbose'] : []),
      ],
      env: serviceEnv(),
      parentDeathSignal: 'SIGTERM',
      logger,
      onLine: (line) => {
        const match = /^\{"port":(\d+)\}$/.exec(line);
        if (match?.[1] !== undefined) port = Number(match[1]);
      },
    });
    undo.push(() => proc.stop('SIGTERM', STOP_GRACE_MS));

    const listening = await waitForService(proc, 's3rver', READY_TIMEOUT_MS, async () => {
      if (port === undefined) throw new Error('s3rver has not printed its port yet');
      const res = await fetch(`http://127.0.0.1:${port}/${encodeURIComponent(bucket)}`, { method: 'HEAD' });
      if (res.status !== 200) throw new Error(`HEAD /${bucket} answered ${res.status}`);
      return port;
    });

    const endpoint = `http://127.0.0.1:${listening}`;
    logger.debug({ endpoint, bucket, dir, pid: proc.pid }, 'test S3 server started');
    let stopping: Promise<void> | undefined;
    return {
      endpoint,
      port: listening,
      region: REGION,
      bucket,
      accessKeyId: S3RVER_ACCESS_KEY_ID,
      secretAccessKey: S3RVER_SECRET_ACCESS_KEY,
      dir,
      stop: () => (stopping ??= runUndo('S3 server', undo)),
    };
  } catch (err) {
    await runUndo('S3 server', undo).catch((undoErr: unknown) => {
      logger.warn({ err: undoErr }, 'cleaning up a failed S3 server start failed');
    });
    throw err;
  }
}
