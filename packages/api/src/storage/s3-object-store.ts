/**
 * ObjectStore over the S3 API (AWS S3 and S3-compatible servers) with @aws-sdk/client-s3.
 *
 * Failures are AppErrors: OBJECT_NOT_FOUND (404) for a missing key on get/getStream,
 * STORAGE_FAILED (503) for everything else the store or the network answered (the SDK has already
 * retried transient ones `maxAttempts` times). Callers that must not lose data retry
 * STORAGE_FAILED themselves (see workspace/retry.ts).
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import type { S3ClientConfig } from '@aws-sdk/client-s3';
import { AppError } from '@hako/core';
import type { ObjectInfo, ObjectStore } from '../types.js';

/** DeleteObjects takes at most this many keys per request. */
export const S3_DELETE_BATCH = 1000;

export interface S3ObjectStoreOptions {
  readonly bucket: string;
  /** S3-compatible server URL (`http://127.0.0.1:9000`); undefined means AWS S3 for `region`. */
  readonly endpoint?: string | undefined;
  /** Default `us-east-1`. */
  readonly region?: string | undefined;
  /** Static credentials; undefined uses the AWS default chain (environment, profile, instance role). */
  readonly credentials?:
    | {
        readonly accessKeyId: string;
        readonly secretAccessKey: string;
        readonly sessionToken?: string | undefined;
      }
    | undefined;
  /**
   * `endpoint/bucket/key` addressing instead of `bucket.endpoint/key`. Default: true when an
   * endpoint is given (S3-compatible servers, IP addresses), false for AWS.
   */
  readonly forcePathStyle?: boolean | undefined;
  /**
   * When the SDK computes request checksums. Default `WHEN_REQUIRED`: only operations that need
   * one (DeleteObjects) send it, as a plain header. `WHEN_SUPPORTED` sends a CRC32 with every
   * upload, which some S3-compatible servers (s3rver) store inside the object instead of checking.
   * Puts carry Content-MD5 either way, so S3 checks every upload's integrity.
   */
  readonly requestChecksumCalculation?: 'WHEN_REQUIRED' | 'WHEN_SUPPORTED' | undefined;
  /** When the SDK validates response checksums. Default `WHEN_REQUIRED` (servers that send none). */
  readonly responseChecksumValidation?: 'WHEN_REQUIRED' | 'WHEN_SUPPORTED' | undefined;
  /** Attempts per request including the SDK's own retries of transient failures. Default 3. */
  readonly maxAttempts?: number | undefined;
  /** Milliseconds to wait for a TCP connection. Default 5000. */
  readonly connectionTimeoutMs?: number | undefined;
  /** Milliseconds a request's socket may stay idle. Default 60000. */
  readonly requestTimeoutMs?: number | undefined;
  /** Keys per ListObjectsV2 page (1..1000). Default 1000; tests use small pages. */
  readonly listPageSize?: number | undefined;
  /** Extra S3Client settings, applied last (a custom requestHandler, a logger). */
  readonly clientConfig?: Partial<S3ClientConfig> | undefined;
}

interface S3ErrorShape {
  name?: string;
  message?: string;
  Code?: string;
  $metadata?: { httpStatusCode?: number };
}

function statusOf(err: unknown): number | undefined {
  return (err as S3ErrorShape | null)?.$metadata?.httpStatusCode;
}

function nameOf(err: unknown): string {
  const e = err as S3ErrorShape | null;
  return e?.Code ?? e?.name ?? 'Error';
}

function isNotFound(err: unknown): boolean {
  const name = nameOf(err);
  if (name === 'NoSuchBucket') return false; // a configuration error, not a missing object
  return name === 'NoSuchKey' || name === 'NotFound' || statusOf(err) === 404;
}

function stripQuotes(etag: string | undefined): string | undefined {
  return etag === undefined ? undefined : etag.replace(/^"|"$/g, '');
}

export class S3ObjectStore implements ObjectStore {
  readonly bucket: string;
  private readonly client: S3Client;
  private readonly pageSize: number;
  private readonly where: string;

  constructor(opts: S3ObjectStoreOptions) {
    if (opts.bucket === '') throw new AppError('CONFIG_INVALID', 'S3 bucket name is empty; set S3_BUCKET');
    const pageSize = opts.listPageSize ?? 1000;
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1000) {
      throw new AppError('CONFIG_INVALID', `S3 listPageSize must be 1..1000, got ${pageSize}`);
    }
    this.bucket = opts.bucket;
    this.pageSize = pageSize;
    this.where = `s3://${opts.bucket}${opts.endpoint === undefined ? '' : ` at ${opts.endpoint}`}`;
    this.client = new S3Client({
      region: opts.region ?? 'us-east-1',
      ...(opts.endpoint === undefined ? {} : { endpoint: opts.endpoint }),
      ...(opts.credentials === undefined ? {} : { credentials: { ...opts.credentials } }),
      forcePathStyle: opts.forcePathStyle ?? opts.endpoint !== undefined,
      requestChecksumCalculation: opts.requestChecksumCalculation ?? 'WHEN_REQUIRED',
      responseChecksumValidation: opts.responseChecksumValidation ?? 'WHEN_REQUIRED',
      maxAttempts: opts.maxAttempts ?? 3,
      requestHandler: {
        connectionTimeout: opts.connectionTimeoutMs ?? 5_000,
        requestTimeout: opts.requestTimeoutMs ?? 60_000,
      },
      ...opts.clientConfig,
    });
  }

  /** The SDK client, for middleware (request metrics, tests counting requests). */
  get sdkClient(): S3Client {
    return this.client;
  }

  /** Closes the client's sockets. The store cannot be used afterwards. */
  close(): void {
    this.client.destroy();
  }

  private failure(err: unknown, op: string, key: string): AppError {
    if (err instanceof AppError) return err;
    const status = statusOf(err);
    const msg = (err as S3ErrorShape | null)?.message ?? String(err);
    return new AppError(
      'STORAGE_FAILED',
      `S3 ${op} of "${key}" in ${this.where} failed (${nameOf(err)}${status === undefined ? '' : ` ${status}`}: ${msg}); check that the S3 server is up and S3_* settings are right — the operation can be retried`,
      { cause: err },
    );
  }

  private notFound(key: string, err: unknown): AppError {
    return new AppError('OBJECT_NOT_FOUND', `no object "${key}" in ${this.where}`, { cause: err });
  }

  async put(key: string, body: Buffer, opts: { contentType?: string; sha256?: string } = {}): Promise<void> {
    const md5 = createHash('md5').update(body).digest('base64');
    try {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: body,
          ContentLength: body.length,
          ContentMD5: md5,
          ...(opts.contentType === undefined ? {} : { ContentType: opts.contentType }),
          ...(opts.sha256 === undefined ? {} : { Metadata: { sha256: opts.sha256 } }),
        }),
      );
    } catch (err) {
      throw this.failure(err, 'PutObject', key);
    }
  }

  async get(key: string): Promise<Buffer> {
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      if (res.Body === undefined) return Buffer.alloc(0);
      const bytes = await res.Body.transformToByteArray();
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    } catch (err) {
      if (isNotFound(err)) throw this.notFound(key, err);
      throw this.failure(err, 'GetObject', key);
    }
  }

  async getStream(key: string): Promise<Readable> {
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      const body = res.Body;
      if (body === undefined) return Readable.from([]);
      if (body instanceof Readable) return body;
      // Other runtimes answer a web stream; Node's SDK answers an IncomingMessage (a Readable).
      return Readable.fromWeb(body.transformToWebStream() as Parameters<typeof Readable.fromWeb>[0]);
    } catch (err) {
      if (isNotFound(err)) throw this.notFound(key, err);
      throw this.failure(err, 'GetObject', key);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let token: string | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: prefix,
            MaxKeys: this.pageSize,
            ...(token === undefined ? {} : { ContinuationToken: token }),
          }),
        );
      } catch (err) {
        throw this.failure(err, 'ListObjectsV2', prefix);
      }
      for (const o of page.Contents ?? []) {
        if (o.Key === undefined) continue;
        const etag = stripQuotes(o.ETag);
        yield { key: o.Key, size: o.Size ?? 0, ...(etag === undefined ? {} : { etag }) };
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
      if (page.IsTruncated === true && token === undefined) {
        throw new AppError(
          'STORAGE_FAILED',
          `S3 ListObjectsV2 of "${prefix}" in ${this.where} answered a truncated page without a continuation token`,
        );
      }
    } while (token !== undefined);
  }

  async delete(key: string): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (err) {
      if (isNotFound(err)) return;
      throw this.failure(err, 'DeleteObject', key);
    }
  }

  /** Deletes `keys` (at most S3_DELETE_BATCH) in one DeleteObjects; STORAGE_FAILED naming what failed. */
  async deleteBatch(keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return;
    if (keys.length > S3_DELETE_BATCH) {
      throw new AppError(
        'INVALID_ARGUMENT',
        `deleteBatch takes at most ${S3_DELETE_BATCH} keys, got ${keys.length}`,
      );
    }
    let res;
    try {
      res = await this.client.send(
        new DeleteObjectsCommand({
          Bucket: this.bucket,
          Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true },
        }),
      );
    } catch (err) {
      throw this.failure(err, 'DeleteObjects', keys[0] ?? '');
    }
    const errors = (res.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
    if (errors.length > 0) {
      const shown = errors
        .slice(0, 5)
        .map((e) => `${e.Key ?? '?'}: ${e.Code ?? 'Error'} ${e.Message ?? ''}`.trim())
        .join('; ');
      throw new AppError(
        'STORAGE_FAILED',
        `S3 DeleteObjects in ${this.where} failed for ${errors.length} of ${keys.length} keys (${shown}); the operation can be retried`,
      );
    }
  }

  async deletePrefix(prefix: string): Promise<number> {
    if (prefix === '') {
      throw new AppError(
        'INVALID_ARGUMENT',
        'deletePrefix with an empty prefix would empty the whole bucket',
      );
    }
    let deleted = 0;
    let batch: string[] = [];
    for await (const o of this.list(prefix)) {
      batch.push(o.key);
      if (batch.length === S3_DELETE_BATCH) {
        await this.deleteBatch(batch);
        deleted += batch.length;
        batch = [];
      }
    }
    await this.deleteBatch(batch);
    return deleted + batch.length;
  }
}
