/**
 * LocalImageStore.pull against a real registry: Debian's docker-registry (distribution 2.8) on
 * 127.0.0.1:<free port> with its storage in a temp dir, images pushed into it with skopeo from OCI
 * layouts built by the oci-fixture helper. A small Node HTTP proxy in front of the registry counts
 * requests and, per test, corrupts a blob, demands Bearer or Basic auth (serving its own token
 * endpoint), redirects blob GETs, answers 503, or stalls mid-body.
 *
 * Needs /usr/bin/docker-registry and skopeo (scripts/setup installs both); fails loudly without.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { access, lstat, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppError, silentLogger } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import { LocalImageStore } from '../../src/image-store.js';
import type { LocalImageStoreOptions } from '../../src/image-store.js';
import type { PullProgress } from '../../src/types.js';
import { buildOciLayoutTar } from '../helpers/oci-fixture.js';
import type { BuiltOciLayout, FixtureEntry } from '../helpers/oci-fixture.js';

const logger = silentLogger();
const REGISTRY_BIN = '/usr/bin/docker-registry';

function run(cmd: string, args: readonly string[], timeoutMs = 120_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function httpStatus(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.setTimeout(2000, () => req.destroy(new Error('timeout')));
  });
}

// ---------------------------------------------------------------- the proxy

interface ProxyMode {
  /** Flip one byte in the middle of this blob's body (same length). */
  corruptBlob?: string;
  /** Demand `Authorization: Bearer <token>`; /token hands it out for these Basic credentials. */
  bearer?: { user: string; pass: string; token: string };
  /** Demand these Basic credentials directly. */
  basic?: { user: string; pass: string };
  /** Answer blob GETs with 307 to /_storage/… (served from the registry). */
  redirectBlobs?: boolean;
  /** Answer blob GETs with a 307 to themselves, forever. */
  redirectLoop?: boolean;
  /** Answer every /v2/ request with this status. */
  status?: number;
  /** Send blob headers and half the body, then nothing. */
  stallBlobs?: boolean;
}

interface LoggedRequest {
  readonly path: string;
  readonly authorization: string | undefined;
}

class RegistryProxy {
  mode: ProxyMode = {};
  requests: LoggedRequest[] = [];
  private readonly server: http.Server;
  port = 0;

  constructor(private readonly upstreamPort: number) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        res.destroy(err as Error);
      });
    });
  }

  get url(): string {
    return `127.0.0.1:${this.port}`;
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  reset(mode: ProxyMode = {}): void {
    this.mode = mode;
    this.requests = [];
  }

  /** Blob GETs (sha256 digests) the proxy received since the last reset. */
  blobGets(): string[] {
    return this.requests
      .map((r) => /\/blobs\/(sha256:[a-f0-9]{64})$/.exec(r.path)?.[1])
      .filter((d): d is string => d !== undefined);
  }

  private upstream(path: string, req: IncomingMessage): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const headers = { ...req.headers, host: `127.0.0.1:${this.upstreamPort}` };
      delete headers.authorization;
      const up = http.request(
        { host: '127.0.0.1', port: this.upstreamPort, path, method: req.method, headers },
        resolve,
      );
      up.on('error', reject);
      up.end();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = req.url ?? '/';
    this.requests.push({ path, authorization: req.headers.authorization });
    const m = this.mode;
    if (path.startsWith('/token')) {
      const want = m.bearer;
      const basic = want ? `Basic ${Buffer.from(`${want.user}:${want.pass}`).toString('base64')}` : '';
      if (want === undefined || req.headers.authorization !== basic) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ details: 'incorrect username or password' }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token: want.token, expires_in: 300 }));
      return;
    }
    if (m.bearer !== undefined && req.headers.authorization !== `Bearer ${m.bearer.token}`) {
      const repo = /^\/v2\/(.+)\/(?:manifests|blobs)\//.exec(path)?.[1] ?? 'x';
      res.writeHead(401, {
        'content-type': 'application/json',
        'www-authenticate': `Bearer realm="http://${this.url}/token",service="hako-test",scope="repository:${repo}:pull"`,
      });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
      return;
    }
    if (m.basic !== undefined) {
      const want = `Basic ${Buffer.from(`${m.basic.user}:${m.basic.pass}`).toString('base64')}`;
      if (req.headers.authorization !== want) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="hako-test"' });
        res.end();
        return;
      }
    }
    if (m.status !== undefined && path.startsWith('/v2/')) {
      res.writeHead(m.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'down for maintenance' }] }));
      return;
    }
    const blob = /\/blobs\/(sha256:[a-f0-9]{64})$/.exec(path)?.[1];
    if (blob !== undefined && m.redirectLoop) {
      res.writeHead(307, { location: path });
      res.end();
      return;
    }
    if (blob !== undefined && m.redirectBlobs && !path.startsWith('/_storage/')) {
      res.writeHead(307, { location: `/_storage${path}` });
      res.end();
      return;
    }
    const upstreamPath = path.startsWith('/_storage/') ? path.slice('/_storage'.length) : path;
    const up = await this.upstream(upstreamPath, req);
    const headers = { ...up.headers };
    if (blob !== undefined && (m.corruptBlob === blob || m.stallBlobs) && up.statusCode === 200) {
      const chunks: Buffer[] = [];
      for await (const c of up) chunks.push(c as Buffer);
      const body = Buffer.concat(chunks);
      if (m.stallBlobs) {
        res.writeHead(200, headers);
        res.write(body.subarray(0, Math.floor(body.length / 2)));
        return; // never ends: the client's idle timeout (or abort) must fire
      }
      const mid = Math.floor(body.length / 2);
      body[mid] = (body[mid] ?? 0) ^ 0x01;
      res.writeHead(200, headers);
      res.end(body);
      return;
    }
    res.writeHead(up.statusCode ?? 502, headers);
    up.pipe(res);
  }
}

// ---------------------------------------------------------------- fixture

const LAYERS: FixtureEntry[][] = [
  [
    { path: 'etc/', type: 'dir' },
    { path: 'etc/hello', type: 'file', content: 'hello v1\n' },
    { path: 'data/', type: 'dir' },
    { path: 'data/old.txt', type: 'file', content: 'to be whited out\n' },
    { path: 'data/keep.txt', type: 'file', content: 'kept\n' },
    { path: 'opq/', type: 'dir' },
    { path: 'opq/a', type: 'file', content: 'hidden by the opaque whiteout\n' },
    { path: 'bin/', type: 'dir' },
    { path: 'bin/tool', type: 'file', content: '#!/bin/sh\necho tool\n', mode: 0o755 },
  ],
  [
    { path: 'etc/hello', type: 'file', content: 'hello v2\n' },
    { path: 'data/.wh.old.txt', type: 'file' },
    { path: 'opq/', type: 'dir' },
    { path: 'opq/.wh..wh..opq', type: 'file' },
    { path: 'opq/b', type: 'file', content: 'b\n' },
    // enough incompressible bytes that progress has something to count
    { path: 'data/random.bin', type: 'file', content: randomBytes(3 * 1024 * 1024) },
  ],
];

interface Ctx {
  base: string;
  registry: ChildProcess;
  registryPort: number;
  registryLog: string[];
  proxy: RegistryProxy;
  image: BuiltOciLayout;
  multi: BuiltOciLayout;
}

let ctx: Ctx | undefined;
const started = Date.now();

function c(): Ctx {
  assert.ok(ctx, 'setup failed (see the before hook)');
  return ctx;
}

async function startRegistry(base: string): Promise<{ proc: ChildProcess; port: number; log: string[] }> {
  await access(REGISTRY_BIN).catch(() => {
    throw new Error(`${REGISTRY_BIN} is missing: run scripts/setup (it installs docker-registry)`);
  });
  const port = await freePort();
  const storage = join(base, 'registry-storage');
  await mkdir(storage);
  const config = join(base, 'registry.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${storage}`,
      'http:',
      `  addr: 127.0.0.1:${port}`,
      `  secret: ${randomBytes(16).toString('hex')}`,
      '',
    ].join('\n'),
  );
  const log: string[] = [];
  const proc = spawn(REGISTRY_BIN, ['serve', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout?.on('data', (d: Buffer) => log.push(d.toString()));
  proc.stderr?.on('data', (d: Buffer) => log.push(d.toString()));
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (proc.exitCode !== null)
      throw new Error(`docker-registry exited (${proc.exitCode}):\n${log.join('')}`);
    const status = await httpStatus(`http://127.0.0.1:${port}/v2/`).catch(() => 0);
    if (status === 200) break;
    if (Date.now() > deadline)
      throw new Error(`docker-registry did not answer on ${port} within 20 s:\n${log.join('')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { proc, port, log };
}

/** Builds a layout tar, unpacks it into a directory and pushes it with skopeo. */
async function push(
  base: string,
  port: number,
  repoTag: string,
  opts: { platformIndex?: boolean },
): Promise<BuiltOciLayout> {
  const dir = await mkdtemp(join(base, 'layout-'));
  const built = await buildOciLayoutTar(dir, {
    layers: LAYERS,
    gzip: true,
    config: { Env: ['PATH=/bin', 'GREETING=hi'], Cmd: ['/bin/tool'], WorkingDir: '/data' },
    refName: 'v1',
    platformIndex: opts.platformIndex ?? false,
  });
  const layoutDir = join(dir, 'layout');
  await mkdir(layoutDir);
  await run('tar', ['-xf', built.tarPath, '-C', layoutDir]);
  await run('skopeo', [
    '--insecure-policy',
    'copy',
    '--quiet',
    '--preserve-digests',
    ...(opts.platformIndex ? ['--all'] : []),
    '--dest-tls-verify=false',
    `oci:${layoutDir}:v1`,
    `docker://127.0.0.1:${port}/${repoTag}`,
  ]);
  return built;
}

before(async () => {
  const base = await mkdtemp(join(tmpdir(), 'hako-pull-'));
  let registry: ChildProcess | undefined;
  try {
    const r = await startRegistry(base);
    registry = r.proc;
    const image = await push(base, r.port, 'test/img:v1', {});
    const multi = await push(base, r.port, 'test/multi:v1', { platformIndex: true });
    const proxy = new RegistryProxy(r.port);
    await proxy.listen();
    ctx = { base, registry: r.proc, registryPort: r.port, registryLog: r.log, proxy, image, multi };
  } catch (err) {
    registry?.kill('SIGKILL');
    await rm(base, { recursive: true, force: true });
    throw err;
  }
});

after(async () => {
  if (ctx === undefined) return;
  const { proxy, registry, base } = ctx;
  try {
    await proxy.close();
  } finally {
    if (registry.exitCode === null) {
      const exited = new Promise((r) => registry.once('exit', r));
      registry.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (registry.exitCode === null) registry.kill('SIGKILL');
    }
    await rm(base, { recursive: true, force: true });
    process.stderr.write(`# image-pull: ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  }
});

// ---------------------------------------------------------------- helpers

async function withStore(
  fn: (store: LocalImageStore, root: string) => Promise<void>,
  options: Partial<LocalImageStoreOptions> = {},
): Promise<void> {
  const root = await mkdtemp(join(c().base, 'store-'));
  try {
    await fn(new LocalImageStore({ root, logger, ...options }), root);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, re?: RegExp): Promise<AppError> {
  let caught: unknown;
  await assert.rejects(p, (err: unknown) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof AppError, `expected AppError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (re) assert.match(caught.message, re);
  return caught;
}

const hexOf = (d: string): string => d.slice('sha256:'.length);

async function storedBlobs(root: string): Promise<string[]> {
  return (await readdir(join(root, 'blobs', 'sha256')).catch(() => [])).sort();
}

async function assertImageTree(rootfs: string): Promise<void> {
  assert.equal(await readFile(join(rootfs, 'etc/hello'), 'utf8'), 'hello v2\n', 'upper layer wins');
  assert.equal(await readFile(join(rootfs, 'data/keep.txt'), 'utf8'), 'kept\n');
  await assert.rejects(lstat(join(rootfs, 'data/old.txt')), { code: 'ENOENT' }, 'whiteout applied');
  await assert.rejects(lstat(join(rootfs, 'data/.wh.old.txt')), { code: 'ENOENT' }, 'no whiteout file left');
  assert.deepEqual((await readdir(join(rootfs, 'opq'))).sort(), ['b'], 'opaque whiteout hid opq/a');
  assert.equal((await lstat(join(rootfs, 'data/random.bin'))).size, 3 * 1024 * 1024);
  assert.equal((await lstat(join(rootfs, 'bin/tool'))).mode & 0o777, 0o755);
}

// ---------------------------------------------------------------- tests

test('pull by tag: verified blobs, unpacked rootfs with whiteouts, progress, and a second pull downloads nothing', async () => {
  const { proxy, image } = c();
  const ref = `${proxy.url}/test/img:v1`;
  await withStore(async (store, root) => {
    proxy.reset();
    const events: PullProgress[] = [];
    const pulled = await store.pull(ref, { onProgress: (p) => events.push(p) });
    assert.equal(pulled.name, ref);
    assert.equal(pulled.digest, image.manifestDigest);
    assert.deepEqual(pulled.config.cmd, ['/bin/tool']);
    assert.deepEqual(pulled.config.env, ['PATH=/bin', 'GREETING=hi']);
    assert.equal(pulled.config.workingDir, '/data');
    await assertImageTree(pulled.rootfs);

    // exactly the config and the two layers were fetched, once each
    assert.deepEqual(proxy.blobGets().sort(), [image.configDigest, ...image.layerDigests].sort());
    assert.deepEqual(
      await storedBlobs(root),
      [image.manifestDigest, image.configDigest, ...image.layerDigests].map(hexOf).sort(),
    );
    assert.deepEqual(await readdir(join(root, 'tmp')), [], 'no staging left behind');

    // progress: resolving, manifest, blobs (each ending complete), unpacking per layer, done
    assert.equal(events[0]?.phase, 'resolving');
    assert.deepEqual(events[1], { phase: 'manifest', digest: image.manifestDigest });
    const blobEvents = events.filter((e) => e.phase === 'blob');
    const finished = blobEvents.filter((e) => e.bytesDone === e.bytesTotal).map((e) => e.digest);
    assert.deepEqual(finished.sort(), [image.configDigest, ...image.layerDigests].sort());
    assert.ok(
      blobEvents.some((e) => (e.bytesDone ?? 0) > 0 && (e.bytesDone ?? 0) < (e.bytesTotal ?? 0)),
      'the big layer reports progress on the way',
    );
    assert.deepEqual(
      events.filter((e) => e.phase === 'unpacking').map((e) => e.digest),
      image.layerDigests,
    );
    assert.deepEqual(events.at(-1), { phase: 'done', digest: image.manifestDigest });

    // the store knows it by name and digest, also from a fresh instance
    const again = await new LocalImageStore({ root, logger }).get(ref);
    assert.equal(again.digest, image.manifestDigest);
    assert.equal((await store.get(image.manifestDigest)).name, ref);

    // second pull: only the manifest is fetched
    proxy.reset();
    const events2: PullProgress[] = [];
    const second = await store.pull(ref, { onProgress: (p) => events2.push(p) });
    assert.equal(second.digest, image.manifestDigest);
    assert.deepEqual(proxy.blobGets(), [], 'no blob downloaded the second time');
    assert.equal(proxy.requests.filter((r) => r.path.includes('/manifests/')).length, 1, 'one manifest GET');
    assert.deepEqual(
      events2.map((e) => e.phase),
      ['resolving', 'manifest', 'done'],
    );
  });
});

test('a tampered layer fails with IMAGE_DIGEST_MISMATCH, keeps no partial blob or name; a retry fetches only what is missing', async () => {
  const { proxy, image } = c();
  const ref = `${proxy.url}/test/img:v1`;
  const bad = image.layerDigests[1] ?? '';
  await withStore(async (store, root) => {
    proxy.reset({ corruptBlob: bad });
    const err = await rejectsWith(store.pull(ref), 'IMAGE_DIGEST_MISMATCH');
    assert.ok(err.message.includes(bad), err.message);
    assert.ok(proxy.blobGets().includes(bad), 'the corrupted blob was served');
    assert.ok(!(await storedBlobs(root)).includes(hexOf(bad)), 'no corrupt blob in the store');
    assert.deepEqual(await readdir(join(root, 'tmp')), [], 'no partial download in tmp');
    await rejectsWith(store.get(ref), 'IMAGE_NOT_FOUND');
    assert.deepEqual(await readdir(join(root, 'rootfs')), [], 'nothing unpacked');

    proxy.reset();
    const pulled = await store.pull(ref);
    assert.equal(pulled.digest, image.manifestDigest);
    assert.deepEqual(proxy.blobGets(), [bad], 'the verified blobs of the failed pull were kept');
    await assertImageTree(pulled.rootfs);
  });
});

test('a missing tag or repository is IMAGE_NOT_FOUND naming the reference', async () => {
  const { registryPort } = c();
  await withStore(async (store, root) => {
    const ref = `127.0.0.1:${registryPort}/test/img:no-such-tag`;
    await rejectsWith(store.pull(ref), 'IMAGE_NOT_FOUND', new RegExp(ref.replace(/[.]/g, '\\.')));
    await rejectsWith(
      store.pull(`127.0.0.1:${registryPort}/test/nothing-here:v1`),
      'IMAGE_NOT_FOUND',
      /nothing-here/,
    );
    assert.deepEqual(await readdir(join(root, 'refs')), []);
  });
});

test('a manifest list picks linux/amd64 and fetches only its blobs', async () => {
  const { proxy, multi } = c();
  const ref = `${proxy.url}/test/multi:v1`;
  await withStore(async (store, root) => {
    proxy.reset();
    const pulled = await store.pull(ref);
    assert.equal(pulled.digest, multi.manifestDigest, 'the amd64 manifest');
    await assertImageTree(pulled.rootfs);
    assert.deepEqual(proxy.blobGets().sort(), [multi.configDigest, ...multi.layerDigests].sort());
    const manifestGets = proxy.requests.filter((r) => r.path.includes('/manifests/')).map((r) => r.path);
    assert.deepEqual(manifestGets, [
      '/v2/test/multi/manifests/v1',
      `/v2/test/multi/manifests/${multi.manifestDigest}`,
    ]);
    assert.deepEqual(
      await storedBlobs(root),
      [multi.manifestDigest, multi.configDigest, ...multi.layerDigests].map(hexOf).sort(),
      'nothing of the arm64 image',
    );
  });
});

test('token auth: credentials get a Bearer token; wrong or missing ones are REGISTRY_AUTH_FAILED', async () => {
  const { proxy, image } = c();
  const ref = `${proxy.url}/test/img:v1`;
  const bearer = { user: 'alice', pass: 's3cret', token: `tok-${randomBytes(6).toString('hex')}` };
  await withStore(async (store) => {
    proxy.reset({ bearer });
    const pulled = await store.pull(ref, { auth: { username: 'alice', password: 's3cret' } });
    assert.equal(pulled.digest, image.manifestDigest);
    const tokenReqs = proxy.requests.filter((r) => r.path.startsWith('/token'));
    assert.equal(tokenReqs.length, 1, 'one token for the whole pull');
    const q = new URL(tokenReqs[0]?.path ?? '', 'http://x').searchParams;
    assert.equal(q.get('service'), 'hako-test');
    assert.equal(q.get('scope'), 'repository:test/img:pull');
    assert.equal(tokenReqs[0]?.authorization, `Basic ${Buffer.from('alice:s3cret').toString('base64')}`);
    for (const r of proxy.requests.filter((x) => x.path.includes('/blobs/')))
      assert.equal(r.authorization, `Bearer ${bearer.token}`);
  });
  await withStore(async (store, root) => {
    proxy.reset({ bearer });
    await rejectsWith(
      store.pull(ref, { auth: { username: 'alice', password: 'wrong' } }),
      'REGISTRY_AUTH_FAILED',
      /alice/,
    );
    await rejectsWith(store.pull(ref), 'REGISTRY_AUTH_FAILED', /credentials/);
    assert.deepEqual(proxy.blobGets(), []);
    assert.deepEqual(await readdir(join(root, 'refs')), []);
  });
});

test('basic auth: the credentials are sent after the challenge; wrong ones are REGISTRY_AUTH_FAILED', async () => {
  const { proxy, image } = c();
  const ref = `${proxy.url}/test/img:v1`;
  await withStore(async (store) => {
    proxy.reset({ basic: { user: 'bob', pass: 'pw' } });
    assert.equal(
      (await store.pull(ref, { auth: { username: 'bob', password: 'pw' } })).digest,
      image.manifestDigest,
    );
    await rejectsWith(
      store.pull(ref, { auth: { username: 'bob', password: 'nope' } }),
      'REGISTRY_AUTH_FAILED',
    );
    await rejectsWith(store.pull(ref), 'REGISTRY_AUTH_FAILED', /requires credentials/);
  });
});

test('blob GETs follow redirects; a redirect loop is IMAGE_PULL_FAILED', async () => {
  const { proxy, image } = c();
  const ref = `${proxy.url}/test/img:v1`;
  await withStore(async (store) => {
    proxy.reset({ redirectBlobs: true });
    const pulled = await store.pull(ref);
    assert.equal(pulled.digest, image.manifestDigest);
    await assertImageTree(pulled.rootfs);
    assert.equal(proxy.requests.filter((r) => r.path.startsWith('/_storage/')).length, 3);
  });
  await withStore(async (store, root) => {
    proxy.reset({ redirectLoop: true });
    await rejectsWith(store.pull(ref), 'IMAGE_PULL_FAILED', /redirects/);
    assert.deepEqual(await readdir(join(root, 'tmp')), []);
  });
});

test('an unreachable registry, a 503 and a stalled download are IMAGE_PULL_FAILED; an abort cancels', async () => {
  const { proxy } = c();
  const closed = await freePort();
  await withStore(async (store) => {
    await rejectsWith(store.pull(`127.0.0.1:${closed}/test/img:v1`), 'IMAGE_PULL_FAILED', /ECONNREFUSED/);
    proxy.reset({ status: 503 });
    await rejectsWith(
      store.pull(`${proxy.url}/test/img:v1`),
      'IMAGE_PULL_FAILED',
      /503.*down for maintenance/,
    );
  });
  await withStore(
    async (store, root) => {
      proxy.reset({ stallBlobs: true });
      const t0 = Date.now();
      await rejectsWith(
        store.pull(`${proxy.url}/test/img:v1`),
        'IMAGE_PULL_FAILED',
        /sent nothing for 400 ms/,
      );
      assert.ok(Date.now() - t0 < 10_000, 'the idle timeout fired');
      assert.deepEqual(await readdir(join(root, 'tmp')), [], 'the partial blob was deleted');
    },
    { registry: { idleTimeoutMs: 400 } },
  );
  await withStore(async (store, root) => {
    proxy.reset({ stallBlobs: true });
    const ac = new AbortController();
    const p = store.pull(`${proxy.url}/test/img:v1`, {
      signal: ac.signal,
      onProgress: (e) => {
        if (e.phase === 'blob') setTimeout(() => ac.abort(), 100);
      },
    });
    await rejectsWith(p, 'IMAGE_PULL_FAILED', /cancelled/);
    assert.deepEqual(await readdir(join(root, 'tmp')), []);
    assert.deepEqual(await readdir(join(root, 'refs')), []);
  });
});

test('concurrent pulls of one ref share each download and leave one consistent image', async () => {
  const { proxy, image } = c();
  const ref = `${proxy.url}/test/img:v1`;
  await withStore(async (store, root) => {
    proxy.reset();
    const [a, b, d] = await Promise.all([store.pull(ref), store.pull(ref), store.pull(ref)]);
    for (const r of [a, b, d]) assert.equal(r.digest, image.manifestDigest);
    assert.deepEqual(
      proxy.blobGets().sort(),
      [image.configDigest, ...image.layerDigests].sort(),
      'each blob once',
    );
    await assertImageTree(a.rootfs);
    assert.deepEqual(await readdir(join(root, 'tmp')), []);
    assert.deepEqual(
      (await readdir(join(root, 'rootfs'))).sort(),
      [hexOf(image.manifestDigest), `${hexOf(image.manifestDigest)}.complete`].sort(),
    );
    // prune keeps everything the named image uses
    assert.deepEqual(await store.prune(), []);
    assert.equal((await store.get(ref)).digest, image.manifestDigest);
  });
});

test('pull by digest verifies the manifest against the pinned digest', async () => {
  const { proxy, registryPort, image } = c();
  await withStore(async (store) => {
    const byDigest = `127.0.0.1:${registryPort}/test/img@${image.manifestDigest}`;
    const pulled = await store.pull(byDigest);
    assert.equal(pulled.digest, image.manifestDigest);
    assert.equal(pulled.name, byDigest);
    // a digest the registry does not have
    const other = `sha256:${'0'.repeat(64)}`;
    proxy.reset();
    await rejectsWith(store.pull(`${proxy.url}/test/img@${other}`), 'IMAGE_NOT_FOUND', /0000/);
  });
});
