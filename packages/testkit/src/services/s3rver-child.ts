// The S3 test server's process: startS3 runs this file with `node --openssl-legacy-provider`
// (s3rver makes ListObjectsV2 continuation tokens with DES, which OpenSSL 3 refuses otherwise).
// It patches s3rver's store (s3rver-fixes.ts), starts s3rver on 127.0.0.1 with a port the kernel
// picks, and prints one JSON line {"port": N} on stdout once it listens. SIGTERM ends it.
// Usage: node --openssl-legacy-provider s3rver-child.js --directory DIR --bucket NAME [--verbose]
// It must not import workspace packages: it runs without --conditions=source.
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { applyS3rverFixes } from './s3rver-fixes.js';

interface S3rverOptions {
  address: string;
  port: number;
  directory: string;
  silent: boolean;
  vhostBuckets: boolean;
  configureBuckets: { name: string; configs: never[] }[];
}
type S3rverClass = new (options: S3rverOptions) => { run(): Promise<{ address: string; port: number }> };

const { values } = parseArgs({
  options: {
    directory: { type: 'string' },
    bucket: { type: 'string' },
    verbose: { type: 'boolean', default: false },
  },
});
if (values.directory === undefined || values.bucket === undefined) {
  process.stderr.write('usage: s3rver-child --directory DIR --bucket NAME [--verbose]\n');
  process.exit(2);
}

const require = createRequire(import.meta.url);
applyS3rverFixes(require);
const S3rver = require('s3rver') as S3rverClass;
const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  directory: values.directory,
  silent: !values.verbose,
  vhostBuckets: false,
  configureBuckets: [{ name: values.bucket, configs: [] }],
});
const { port } = await server.run();
process.stdout.write(`${JSON.stringify({ port })}\n`);
