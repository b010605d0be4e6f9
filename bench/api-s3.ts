/**
 * What reached S3, seen from outside hako: the test S3 server (s3rver) keeps each object as a file
 * `<dir>/<bucket>/<key>._S3rver_object`, written anew by every PutObject. A snapshot of those files'
 * inode, size and nanosecond mtime before and after a run tells which objects were written (a
 * ListObjects LastModified has whole seconds only, too coarse for back-to-back runs).
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { S3_CLIENT_COMPAT } from '@hako/testkit';
import type { S3Service } from '@hako/testkit';

const OBJECT_SUFFIX = '._S3rver_object';

export interface ObjectStamp {
  readonly ino: bigint;
  readonly size: bigint;
  readonly mtimeNs: bigint;
}

/** Object key → its stamp, for every object under `prefix` (a key prefix ending in `/`). */
export type S3Snapshot = Map<string, ObjectStamp>;

async function walk(dir: string, rel: string, out: S3Snapshot): Promise<void> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  for (const e of entries) {
    const path = join(dir, e.name);
    if (e.isDirectory()) {
      await walk(path, `${rel}${e.name}/`, out);
    } else if (e.isFile() && e.name.endsWith(OBJECT_SUFFIX)) {
      const s = await stat(path, { bigint: true });
      out.set(`${rel}${e.name.slice(0, -OBJECT_SUFFIX.length)}`, {
        ino: s.ino,
        size: s.size,
        mtimeNs: s.mtimeNs,
      });
    }
  }
}

/** Every object of `bucket` under `prefix` in s3rver's data directory `dataDir`. */
export async function snapshotObjects(dataDir: string, bucket: string, prefix: string): Promise<S3Snapshot> {
  const out: S3Snapshot = new Map();
  await walk(join(dataDir, bucket, prefix), prefix, out);
  return out;
}

export interface ObjectDiff {
  /** Keys written between the snapshots (new, or a new inode, size or mtime). */
  readonly written: string[];
  /** Keys gone after. */
  readonly deleted: string[];
}

export function diffSnapshots(before: S3Snapshot, after: S3Snapshot): ObjectDiff {
  const written: string[] = [];
  for (const [key, a] of after) {
    const b = before.get(key);
    if (!b || b.ino !== a.ino || b.size !== a.size || b.mtimeNs !== a.mtimeNs) written.push(key);
  }
  const deleted = [...before.keys()].filter((k) => !after.has(k));
  return { written: written.sort(), deleted: deleted.sort() };
}

export interface DownloadResult {
  readonly ms: number;
  readonly objects: number;
  readonly bytes: number;
}

/**
 * The floor under a restore: list `prefix` and GET every object's body from the S3 server with
 * `concurrency` requests at once (what the restore does before it packs and writes), nothing else.
 */
export async function downloadAll(
  s3: S3Service,
  prefix: string,
  concurrency: number,
): Promise<DownloadResult> {
  const client = new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    ...S3_CLIENT_COMPAT,
  });
  try {
    const t = performance.now();
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(
        new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const o of page.Contents ?? []) if (o.Key !== undefined) keys.push(o.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token !== undefined);
    let next = 0;
    let bytes = 0;
    const worker = async (): Promise<void> => {
      while (next < keys.length) {
        const key = keys[next++] ?? '';
        const obj = await client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
        bytes += (await obj.Body?.transformToByteArray())?.length ?? 0;
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, keys.length) }, () => worker()));
    return { ms: performance.now() - t, objects: keys.length, bytes };
  } finally {
    client.destroy();
  }
}
