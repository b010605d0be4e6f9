// Fixes for s3rver 3.7.1's filesystem store, applied inside the S3 test server's process
// (s3rver-child.ts) before the server starts. Without them:
// - ListObjectsV2 loses keys across pages: the store walks directories depth first, so 'a/1' is
//   listed before 'a-b/1' and 'a.txt' (S3 orders by UTF-8 bytes: '-' and '.' sort before '/'), and
//   the next page's start-after then skips the keys that were out of order.
// - A delimiter listing misses every common prefix whose objects all sit two or more folders down.
// - A key with '..' segments (or a bucket named '..') reads and writes outside the data directory.
// - Deleting two objects of one folder at once (DeleteObjects deletes them concurrently) fails with
//   InternalError now and then: each delete checks whether the folder is empty and removes it, so
//   one rmdir finds it gone (ENOENT) or refilled; the client's retry then fails the same way on
//   the folder that is now missing.
// This module must not import workspace packages: the child process runs without them.
import { readdir, rmdir, unlink } from 'node:fs/promises';
import type { Dirent } from 'node:fs';
import { join } from 'node:path';

/** s3rver's on-disk name for an object's content: `<last key segment>._S3rver_object`. */
const OBJECT_SUFFIX = '._S3rver_object';
/** Marks s3rver's own files and folders (metadata, md5, multipart uploads). */
const S3RVER_MARK = '._S3rver_';
/** S3's bucket naming rules (3-63 chars, lowercase letters, digits, dots and hyphens). */
const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

export interface ListRequest {
  readonly prefix?: string | undefined;
  readonly delimiter?: string | undefined;
  readonly startAfter?: string | undefined;
  readonly maxKeys?: number | undefined;
}

export interface ListPage {
  /** Keys of this page in S3 order. */
  readonly keys: string[];
  /** Common prefixes of this page in S3 order. */
  readonly commonPrefixes: string[];
  readonly isTruncated: boolean;
}

/** S3's key order: by UTF-8 bytes. */
export function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * One page of a listing over `allKeys` (any order). Only keys count against maxKeys (s3rver makes
 * the continuation token from the page's last key); a common prefix appears on exactly one page,
 * the one whose key range holds it.
 */
export function listPage(allKeys: Iterable<string>, request: ListRequest): ListPage {
  const prefix = request.prefix ?? '';
  const delimiter = request.delimiter ?? '';
  const startAfter = request.startAfter ?? '';
  const maxKeys = request.maxKeys ?? 1000;
  const sorted = [...allKeys]
    .filter((k) => k.startsWith(prefix))
    .map((key) => ({ key, bytes: Buffer.from(key, 'utf8') }))
    .sort((a, b) => Buffer.compare(a.bytes, b.bytes))
    .map((entry) => entry.key);

  const keys: string[] = [];
  const commonPrefixes: string[] = [];
  let lastPrefix: string | undefined;
  for (const key of sorted) {
    let common: string | undefined;
    if (delimiter !== '') {
      const at = key.indexOf(delimiter, prefix.length);
      if (at !== -1) common = key.slice(0, at + delimiter.length);
    }
    if (common !== undefined) {
      if (common === lastPrefix) continue;
      lastPrefix = common;
      // Listed on an earlier page when it sorts before the start, or holds the start.
      if (compareKeys(common, startAfter) <= 0 || (startAfter !== '' && startAfter.startsWith(common)))
        continue;
    } else if (compareKeys(key, startAfter) <= 0) {
      continue;
    }
    if (keys.length >= maxKeys) return { keys, commonPrefixes, isTruncated: true };
    if (common !== undefined) commonPrefixes.push(common);
    else keys.push(key);
  }
  return { keys, commonPrefixes, isTruncated: false };
}

/** Why `key` cannot be stored (its file would not be inside the bucket folder), or undefined when it can. */
export function checkKey(key: string): string | undefined {
  const segments = key.split('/');
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i];
    if (segment === '.' || segment === '..')
      return `the key ${JSON.stringify(key)} has a '${segment}' segment`;
    // An empty segment would collapse into its neighbour ('a//b' and 'a/b' would be one file); a
    // trailing '/' (a folder marker) is fine.
    if (segment === '' && i < segments.length - 1 && key !== '') {
      return `the key ${JSON.stringify(key)} has an empty segment`;
    }
  }
  return undefined;
}

export function isValidBucketName(name: string): boolean {
  return BUCKET_NAME.test(name) && !name.includes('..');
}

/** Every object key under `dir` (a bucket folder or one below it), found through the suffix s3rver gives object files. */
async function collectKeys(bucketPath: string, dir: string, out: string[]): Promise<void> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR')
      return;
    throw err;
  }
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (!entry.name.includes(S3RVER_MARK)) await collectKeys(bucketPath, path, out);
    } else if (entry.name.endsWith(OBJECT_SUFFIX)) {
      out.push(path.slice(bucketPath.length + 1, -OBJECT_SUFFIX.length));
    }
  }
}

// The parts of s3rver's CommonJS modules the fixes touch.
interface S3ErrorClass {
  new (code: string, message: string): Error;
}
interface S3ObjectClass {
  new (bucket: string, key: string, content: null, metadata: Record<string, unknown>): unknown;
}
interface FilesystemStore {
  getBucketPath(bucket: string): string;
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
  getBucket(bucket: string): Promise<unknown>;
  getMetadata(bucket: string, key: string): Promise<Record<string, unknown>>;
  listObjects(bucket: string, options: ListRequest): Promise<unknown>;
  deleteObject(bucket: string, key: string): Promise<void>;
}
interface FilesystemStoreClass {
  prototype: FilesystemStore;
}

/**
 * Patches s3rver's FilesystemStore (loaded through `require`, the same module cache the server
 * uses): a correct listObjects, and keys and bucket names that cannot leave the data directory.
 */
export function applyS3rverFixes(require: NodeJS.Require): void {
  const store = (require('s3rver/lib/stores/filesystem.js') as FilesystemStoreClass).prototype;
  const S3Error = require('s3rver/lib/models/error.js') as S3ErrorClass;
  const S3Object = require('s3rver/lib/models/object.js') as S3ObjectClass;

  /* eslint-disable @typescript-eslint/unbound-method -- the originals are called with the store as `this` */
  const getBucketPath = store.getBucketPath;
  const getResourcePath = store.getResourcePath;
  const getBucket = store.getBucket;
  /* eslint-enable @typescript-eslint/unbound-method */

  store.getBucketPath = function (this: FilesystemStore, bucket: string): string {
    if (!isValidBucketName(bucket))
      throw new S3Error('InvalidBucketName', `the bucket name ${JSON.stringify(bucket)} is not valid`);
    return getBucketPath.call(this, bucket);
  };
  store.getBucket = async function (this: FilesystemStore, bucket: string): Promise<unknown> {
    // Not a bucket (and never a path outside the data directory): NoSuchBucket.
    if (!isValidBucketName(bucket)) return null;
    return getBucket.call(this, bucket);
  };
  store.getResourcePath = function (
    this: FilesystemStore,
    bucket: string,
    key: string | undefined,
    resource: string,
  ) {
    if (!isValidBucketName(bucket))
      throw new S3Error('InvalidBucketName', `the bucket name ${JSON.stringify(bucket)} is not valid`);
    const problem = checkKey(key ?? '');
    if (problem !== undefined)
      throw new S3Error('InvalidArgument', `${problem}; this test server refuses it`);
    return getResourcePath.call(this, bucket, key, resource);
  };
  store.listObjects = async function (this: FilesystemStore, bucket: string, request: ListRequest) {
    const bucketPath = this.getBucketPath(bucket);
    const prefix = request.prefix ?? '';
    const folder = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    const all: string[] = [];
    // A prefix with '..' in its folder part matches no key this store accepts.
    if (folder === '' || checkKey(`${folder}/`) === undefined) {
      await collectKeys(bucketPath, join(bucketPath, folder), all);
    }
    const page = listPage(all, request);
    const metadata = await Promise.all(
      page.keys.map((key) =>
        this.getMetadata(bucket, key).catch((err: unknown) => {
          // Deleted while listing: left out, as s3rver does.
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
          throw err;
        }),
      ),
    );
    const objects = page.keys.flatMap((key, i) => {
      const meta = metadata[i];
      return meta === undefined ? [] : [new S3Object(bucket, key, null, meta)];
    });
    return { objects, commonPrefixes: page.commonPrefixes, isTruncated: page.isTruncated };
  };
  store.deleteObject = async function (this: FilesystemStore, bucket: string, key: string): Promise<void> {
    await Promise.all(
      ['object', 'object.md5', 'metadata.json'].map((resource) =>
        unlink(this.getResourcePath(bucket, key, resource)).catch(ignoreCode('ENOENT')),
      ),
    );
    // Empty folders go, deepest first, each with one rmdir: a folder another delete removed
    // already (ENOENT) is fine, one that is not empty (ENOTEMPTY) ends the walk.
    const bucketPath = this.getBucketPath(bucket);
    const parts = key.split('/').slice(0, -1);
    for (; parts.length > 0; parts.pop()) {
      try {
        await rmdir(join(bucketPath, ...parts));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') continue;
        if (code === 'ENOTEMPTY' || code === 'EEXIST') return;
        throw err;
      }
    }
  };
}

/** A catch handler that ignores one errno code and rethrows everything else. */
function ignoreCode(code: string): (err: unknown) => void {
  return (err) => {
    if ((err as NodeJS.ErrnoException).code !== code) throw err;
  };
}
