/**
 * hakod's gRPC boundary over real sockets with a fake backend: mTLS (client certificate required
 * and checked against the CA), the bearer token, plaintext only on loopback with the flag,
 * reflection off unless asked, health, error statuses with the code trailer, and the file and
 * image streams.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  credentials,
  loadPackageDefinition,
  makeGenericClientConstructor,
  Metadata,
  status,
} from '@grpc/grpc-js';
import type { ClientDuplexStream, ServiceError, ServiceClientConstructor, GrpcObject } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { service as healthService } from 'grpc-health-check';
import { AppError, silentLogger } from '@hako/core';
import { AgentClient, ExecStart } from '@hako/proto';
import type { GetSandboxRequest } from '@hako/proto';
import {
  callUnary,
  createAgentClient,
  pullImageWithProgress,
  readFilesTar,
  writeFilesTar,
} from '../../src/client.js';
import { loadAgentConfig } from '../../src/config.js';
import { startAgentServer } from '../../src/grpc-server.js';
import { FakeBackend } from './fake-backend.js';
import { makePki, rawUnary, startHarness, trailerCode } from './grpc-harness.js';
import type { Pki } from './grpc-harness.js';

const ID = 'abcdef123456';
const TOKEN = randomBytes(24).toString('hex');
let pki: Pki;

before(async () => {
  pki = await makePki();
});
after(async () => {
  await pki.cleanup();
});

function getSandboxRaw(client: AgentClient, req: Partial<GetSandboxRequest>, md?: Metadata) {
  return rawUnary<GetSandboxRequest>(
    (r, m, cb) => client.getSandbox(r, m, { deadline: Date.now() + 10_000 }, cb),
    { ownerId: 'o1', sandboxId: ID, ...req },
    md,
  );
}

test('mTLS: a client with a certificate from hakod CA is served', async () => {
  const backend = new FakeBackend();
  const h = await startHarness(backend, {}, pki);
  try {
    const info = await callUnary(h.client(), 'getNodeInfo', {});
    assert.equal(info.hostname, 'fake-node');
    assert.equal(info.memoryBytes, 4 << 30);
    const sb = await callUnary(h.client(), 'getSandbox', { ownerId: 'o1', sandboxId: ID });
    assert.equal(sb.sandbox?.id, ID);
    assert.equal(sb.sandbox?.createdAtMs, 1_700_000_000_000);
    assert.equal(backend.callsTo('getSandbox'), 1);
  } finally {
    await h.close();
  }
});

test('mTLS: no client certificate, a foreign CA client certificate, or an untrusted server all fail the handshake', async () => {
  const backend = new FakeBackend();
  const h = await startHarness(backend, {}, pki);
  const read = (d: string, f: string): Buffer => readFileSync(join(d, f));
  const clients: AgentClient[] = [];
  try {
    const noCert = new AgentClient(h.server.address, credentials.createSsl(read(pki.tls, 'ca.pem')));
    const foreignCert = createAgentClient({
      address: h.server.address,
      tls: {
        caPem: read(pki.tls, 'ca.pem'),
        certPem: read(pki.other, 'client.pem'),
        keyPem: read(pki.other, 'client-key.pem'),
      },
    });
    const untrustedServer = createAgentClient({
      address: h.server.address,
      tls: {
        caPem: read(pki.other, 'ca.pem'),
        certPem: read(pki.tls, 'client.pem'),
        keyPem: read(pki.tls, 'client-key.pem'),
      },
    });
    const plaintext = createAgentClient({ address: h.server.address, insecure: true });
    clients.push(noCert, foreignCert, untrustedServer, plaintext);
    for (const [name, c] of [
      ['no client certificate', noCert],
      ['client certificate from another CA', foreignCert],
      ['server not trusted by the client', untrustedServer],
      ['plaintext client', plaintext],
    ] as const) {
      const err = await getSandboxRaw(c, {});
      assert.ok(err, `${name}: the call must fail`);
      assert.equal(err.code, status.UNAVAILABLE, `${name}: ${err.code} ${err.details}`);
    }
    assert.equal(backend.calls.length, 0, 'no refused client reached the backend');
    // The CA's own client still works on the same server.
    await callUnary(h.client(), 'listImages', {});
  } finally {
    for (const c of clients) c.close();
    await h.close();
  }
});

test('bearer token: missing or wrong is UNAUTHENTICATED (unary and streams), the right one works', async () => {
  const backend = new FakeBackend();
  const h = await startHarness(backend, { AGENT_AUTH_TOKEN: TOKEN }, pki);
  try {
    const c = h.client();
    const missing = await getSandboxRaw(c, {});
    assert.equal(missing?.code, status.UNAUTHENTICATED);
    assert.equal(trailerCode(missing), 'UNAUTHENTICATED');
    for (const bad of [`Bearer ${TOKEN}x`, `Bearer ${TOKEN.slice(1)}`, TOKEN, `Basic ${TOKEN}`, 'Bearer ']) {
      const md = new Metadata();
      md.set('authorization', bad);
      const err = await getSandboxRaw(c, {}, md);
      assert.equal(err?.code, status.UNAUTHENTICATED, bad);
    }
    // Streams are checked before anything is read.
    const execErr = await new Promise<ServiceError>((resolve) => {
      const call = c.exec();
      call.on('error', resolve);
      call.on('data', () => undefined);
      call.write({
        msg: { $case: 'start', start: ExecStart.fromPartial({ ownerId: 'o1', sandboxId: ID, argv: ['id'] }) },
      });
    });
    assert.equal(execErr.code, status.UNAUTHENTICATED);
    await assert.rejects(readFilesTar(c, { ownerId: 'o1', sandboxId: ID, paths: [] }), {
      code: 'UNAUTHENTICATED',
    });
    await assert.rejects(writeFilesTar(c, { ownerId: 'o1', sandboxId: ID, destDir: '' }, Buffer.alloc(10)), {
      code: 'UNAUTHENTICATED',
    });
    await assert.rejects(pullImageWithProgress(c, 'reg/x:1'), { code: 'UNAUTHENTICATED' });
    assert.equal(backend.calls.length, 0, 'nothing reached the backend without the token');

    const good = h.client({ token: TOKEN });
    const sb = await callUnary(good, 'getSandbox', { ownerId: 'o1', sandboxId: ID });
    assert.equal(sb.sandbox?.id, ID);
    assert.equal(backend.callsTo('getSandbox'), 1);
  } finally {
    await h.close();
  }
});

test('plaintext: refused without the flag and off loopback; works on 127.0.0.1 and a unix socket with it', async () => {
  assert.throws(() => loadAgentConfig({ AGENT_LISTEN: '127.0.0.1:0' }), { code: 'CONFIG_INVALID' });
  assert.throws(() => loadAgentConfig({ AGENT_LISTEN: '0.0.0.0:0', AGENT_INSECURE: '1' }), {
    code: 'CONFIG_INVALID',
  });
  // A config object that skipped the schema is checked again by the server.
  const forged = { ...loadAgentConfig({ AGENT_LISTEN: '127.0.0.1:0', AGENT_INSECURE: '1' }) };
  await assert.rejects(
    startAgentServer({
      config: { ...forged, listen: { kind: 'tcp', host: '0.0.0.0', port: 0 } },
      backend: new FakeBackend(),
      logger: silentLogger(),
    }),
    { code: 'CONFIG_INVALID' },
  );

  const backend = new FakeBackend();
  const h = await startHarness(backend, { AGENT_INSECURE: '1' }, undefined);
  try {
    const info = await callUnary(h.client(), 'getNodeInfo', {});
    assert.equal(info.hostname, 'fake-node');
    // A TLS client cannot talk to it (no accidental downgrade on the client side).
    const tlsClient = h.client({ insecure: false, tls: { dir: pki.tls } });
    await assert.rejects(callUnary(tlsClient, 'getNodeInfo', {}, { timeoutMs: 5000 }), {
      code: 'AGENT_UNAVAILABLE',
    });
  } finally {
    await h.close();
  }

  const dir = await mkdtemp(join(tmpdir(), 'hako-sock-'));
  const sock = join(dir, 'run', 'hakod.sock');
  const u = await startHarness(
    backend,
    { AGENT_LISTEN: `unix:${sock}`, AGENT_GRPC_TLS_DISABLED: '1' },
    undefined,
  );
  try {
    assert.equal(u.server.address, `unix:${sock}`);
    assert.equal(statSync(sock).mode & 0o777, 0o600, 'only root may connect to the plaintext socket');
    const info = await callUnary(u.client(), 'getNodeInfo', {});
    assert.equal(info.env, 'test');
  } finally {
    await u.close();
    await rm(dir, { recursive: true, force: true });
  }
  assert.throws(() => statSync(sock), 'the socket is removed on close');
});

// ------------------------------------------------------------------------------ reflection, health

const require = createRequire(import.meta.url);
const REFLECTION_PROTO = join(
  dirname(require.resolve('@grpc/reflection')),
  '../proto/grpc/reflection/v1/reflection.proto',
);

interface ReflectionResponse {
  listServicesResponse?: { service: { name: string }[] };
}

function listServices(
  address: string,
  pkiDir: string,
): Promise<{ services?: string[]; error?: ServiceError }> {
  const def = loadSync(REFLECTION_PROTO, { keepCase: false });
  const grpcObj = loadPackageDefinition(def) as unknown as {
    grpc: { reflection: { v1: { ServerReflection: ServiceClientConstructor } } };
  };
  const Ctor = grpcObj.grpc.reflection.v1.ServerReflection;
  const read = (f: string): Buffer => readFileSync(join(pkiDir, f));
  const client = new Ctor(
    address,
    credentials.createSsl(read('ca.pem'), read('client-key.pem'), read('client.pem')),
  );
  return new Promise((resolve) => {
    const call = (
      client as unknown as {
        serverReflectionInfo(): ClientDuplexStream<{ listServices: string }, ReflectionResponse>;
      }
    ).serverReflectionInfo();
    let services: string[] | undefined;
    call.on('data', (m: ReflectionResponse) => {
      services = m.listServicesResponse?.service.map((s) => s.name);
      call.end();
    });
    call.on('error', (e: ServiceError) => {
      client.close();
      resolve({ error: e });
    });
    call.on('end', () => {
      client.close();
      resolve({ services });
    });
    call.write({ listServices: '' });
  });
}

test('reflection is off by default (UNIMPLEMENTED) and on with AGENT_GRPC_REFLECTION=1', async () => {
  const off = await startHarness(new FakeBackend(), {}, pki);
  try {
    const r = await listServices(off.server.address, pki.tls);
    assert.equal(r.error?.code, status.UNIMPLEMENTED, JSON.stringify(r));
  } finally {
    await off.close();
  }
  const on = await startHarness(new FakeBackend(), { AGENT_GRPC_REFLECTION: '1' }, pki);
  try {
    const r = await listServices(on.server.address, pki.tls);
    assert.equal(r.error, undefined);
    assert.ok(r.services?.includes('hako.agent.v1.Agent'), JSON.stringify(r.services));
  } finally {
    await on.close();
  }
});

test('health: SERVING for the server and for hako.agent.v1.Agent, NOT_FOUND for others', async () => {
  const h = await startHarness(new FakeBackend(), {}, pki);
  const Health = makeGenericClientConstructor(healthService, 'grpc.health.v1.Health') as unknown as new (
    a: string,
    c: ReturnType<typeof credentials.createSsl>,
  ) => GrpcObject & {
    check(r: { service: string }, cb: (e: ServiceError | null, res?: { status: string }) => void): void;
    close(): void;
  };
  const read = (f: string): Buffer => readFileSync(join(pki.tls, f));
  const client = new Health(
    h.server.address,
    credentials.createSsl(read('ca.pem'), read('client-key.pem'), read('client.pem')),
  );
  const check = (service: string): Promise<{ err: ServiceError | null; status?: string }> =>
    new Promise((resolve) => client.check({ service }, (err, res) => resolve({ err, status: res?.status })));
  try {
    assert.equal((await check('')).status, 'SERVING');
    assert.equal((await check('hako.agent.v1.Agent')).status, 'SERVING');
    assert.equal((await check('nope.Service')).err?.code, status.NOT_FOUND);
  } finally {
    client.close();
    await h.close();
  }
});

// ------------------------------------------------------------------------------ errors

test('an AppError from the backend arrives with its status and the hako-error-code trailer', async () => {
  const backend = new FakeBackend();
  const h = await startHarness(backend, {}, pki);
  try {
    const c = h.client();
    for (const [code, grpc] of [
      ['SANDBOX_NOT_FOUND', status.NOT_FOUND],
      ['PERMISSION_DENIED', status.PERMISSION_DENIED],
      ['SANDBOX_STATE_INVALID', status.FAILED_PRECONDITION],
      ['POOL_EXHAUSTED', status.RESOURCE_EXHAUSTED],
    ] as const) {
      backend.failNext = new AppError(code, `backend says ${code}`);
      const err = await getSandboxRaw(c, {});
      assert.equal(err?.code, grpc, code);
      assert.equal(trailerCode(err), code);
      assert.equal(err?.details, `backend says ${code}`);
      backend.failNext = new AppError(code, `again ${code}`);
      await assert.rejects(callUnary(c, 'getSandbox', { ownerId: 'o1', sandboxId: ID }), (e: unknown) => {
        assert.ok(e instanceof AppError);
        assert.equal(e.code, code);
        assert.equal(e.message, `again ${code}`);
        return true;
      });
    }
  } finally {
    await h.close();
  }
});

test('INTERNAL errors do not leak their message; bugs (plain Errors) become INTERNAL', async () => {
  const backend = new FakeBackend();
  const h = await startHarness(backend, {}, pki);
  try {
    const c = h.client();
    backend.failNext = new AppError('RUNTIME_FAILED', 'crun: /var/lib/hako/secret-bundle: permission denied');
    const e1 = await getSandboxRaw(c, {});
    assert.equal(e1?.code, status.INTERNAL);
    assert.equal(trailerCode(e1), 'RUNTIME_FAILED');
    assert.doesNotMatch(e1?.details ?? '', /secret|crun|var\/lib/);
    backend.failNext = new TypeError("Cannot read properties of undefined (reading 'password')");
    const e2 = await getSandboxRaw(c, {});
    assert.equal(e2?.code, status.INTERNAL);
    assert.equal(trailerCode(e2), 'INTERNAL');
    assert.doesNotMatch(e2?.details ?? '', /password|undefined/);
  } finally {
    await h.close();
  }
});

test('invalid input is INVALID_ARGUMENT with the code trailer and never reaches the backend', async () => {
  const backend = new FakeBackend();
  const h = await startHarness(backend, {}, pki);
  try {
    const c = h.client();
    for (const req of [
      { ownerId: '' },
      { sandboxId: '../../etc' },
      { ownerId: 'a b' },
      { sandboxId: 'x'.repeat(5000) },
    ]) {
      const err = await getSandboxRaw(c, req);
      assert.equal(err?.code, status.INVALID_ARGUMENT, JSON.stringify(req).slice(0, 80));
      assert.equal(trailerCode(err), 'INVALID_ARGUMENT');
      assert.ok((err?.details.length ?? 0) < 300);
    }
    await assert.rejects(
      callUnary(c, 'createSandbox', {
        ownerId: 'o',
        image: 'host',
        labels: {},
        limits: { cpus: -1, memoryBytes: 0, pids: 0, diskBytes: 0, tmpBytes: 0 },
        network: 0,
        egressAllow: [],
        env: {},
        upstreams: [],
        ttlSeconds: 0,
        idleTimeoutSeconds: 0,
      }),
      { code: 'INVALID_ARGUMENT', message: /limits\.cpus/ },
    );
    assert.equal(backend.calls.length, 0);
    assert.deepEqual(backend.violations, []);
  } finally {
    await h.close();
  }
});

// ------------------------------------------------------------------------------ files and images

test('WriteFiles streams the tar to the backend with backpressure; header first, once', async () => {
  const backend = new FakeBackend();
  let received = Buffer.alloc(0);
  backend.writeFilesImpl = async (tar) => {
    const parts: Buffer[] = [];
    for await (const chunk of tar) {
      parts.push(chunk as Buffer);
      await new Promise((r) => setImmediate(r)); // a slow consumer
    }
    received = Buffer.concat(parts);
    return { files: 2, bytes: received.length };
  };
  const h = await startHarness(backend, { AGENT_MAX_TRANSFER_BYTES: '8m', AGENT_MAX_FILE_BYTES: '8m' }, pki);
  try {
    const c = h.client();
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const res = await writeFilesTar(
      c,
      { ownerId: 'o1', sandboxId: ID, destDir: 'src' },
      Readable.from([data]),
    );
    assert.deepEqual(res, { filesWritten: 2, bytesWritten: data.length });
    assert.equal(
      createHash('sha256').update(received).digest('hex'),
      createHash('sha256').update(data).digest('hex'),
    );
    assert.deepEqual(backend.calls.at(-1)?.args, ['o1', ID, 'src']);

    // Over the transfer limit: FILE_TOO_LARGE.
    await assert.rejects(
      writeFilesTar(c, { ownerId: 'o1', sandboxId: ID, destDir: '' }, Buffer.alloc(9 * 1024 * 1024)),
      { code: 'FILE_TOO_LARGE' },
    );
    // A chunk before the header, or two headers.
    const before = backend.callsTo('writeFiles');
    const noHeader = await new Promise<ServiceError | null>((resolve) => {
      const call = c.writeFiles((err) => resolve(err));
      call.write({ msg: { $case: 'chunk', chunk: Buffer.from('x') } });
      call.end();
    });
    assert.equal(noHeader?.code, status.INVALID_ARGUMENT);
    assert.equal(trailerCode(noHeader ?? undefined), 'INVALID_ARGUMENT');
    const empty = await new Promise<ServiceError | null>((resolve) =>
      c.writeFiles((err) => resolve(err)).end(),
    );
    assert.equal(empty?.code, status.INVALID_ARGUMENT);
    assert.equal(backend.callsTo('writeFiles'), before);
  } finally {
    await h.close();
  }
});

test('ReadFiles sends the backend stream in chunks of at most 64 KiB', async () => {
  const backend = new FakeBackend();
  const data = randomBytes(1024 * 1024 + 5);
  backend.readFilesImpl = () => Readable.from([data.subarray(0, 300_000), data.subarray(300_000)]);
  const h = await startHarness(backend, {}, pki);
  try {
    const c = h.client();
    const sizes: number[] = [];
    const got = await new Promise<Buffer>((resolve, reject) => {
      const parts: Buffer[] = [];
      const call = c.readFiles({ ownerId: 'o1', sandboxId: ID, paths: ['a', 'b/c'] });
      call.on('data', (m: { chunk: Buffer }) => {
        sizes.push(m.chunk.length);
        parts.push(m.chunk);
      });
      call.on('error', reject);
      call.on('end', () => resolve(Buffer.concat(parts)));
    });
    assert.ok(got.equals(data));
    assert.ok(Math.max(...sizes) <= 64 * 1024);
    assert.deepEqual(backend.calls.at(-1)?.args, ['o1', ID, ['a', 'b/c']]);
    // The helper and a backend failure.
    assert.ok((await readFilesTar(c, { ownerId: 'o1', sandboxId: ID, paths: [] })).equals(data));
    backend.failNext = new AppError('FILE_NOT_FOUND', 'no such file: a');
    await assert.rejects(readFilesTar(c, { ownerId: 'o1', sandboxId: ID, paths: ['a'] }), {
      code: 'FILE_NOT_FOUND',
    });
  } finally {
    await h.close();
  }
});

test('PullImage streams progress then done; cancelling aborts the backend', async () => {
  const backend = new FakeBackend();
  const h = await startHarness(backend, {}, pki);
  try {
    const c = h.client();
    const phases: string[] = [];
    const img = await pullImageWithProgress(c, 'reg.local/x:1', { onProgress: (p) => phases.push(p.phase) });
    assert.deepEqual(img, { name: 'reg.local/x:1', digest: 'sha256:bb' });
    assert.deepEqual(phases, ['resolving', 'blob']);

    let aborted = false;
    backend.pullImpl = (_p, signal) =>
      new Promise((_, reject) => {
        signal.addEventListener('abort', () => {
          aborted = true;
          reject(new AppError('IMAGE_PULL_FAILED', 'aborted'));
        });
      });
    const call = c.pullImage({ reference: 'reg.local/slow:1', auth: undefined });
    call.on('error', () => undefined);
    await new Promise((r) => setTimeout(r, 200));
    call.cancel();
    for (let i = 0; i < 50 && !aborted; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(aborted, true);
  } finally {
    await h.close();
  }
});

test('the other unary calls translate both ways', async () => {
  const backend = new FakeBackend();
  const h = await startHarness(backend, {}, pki);
  try {
    const c = h.client();
    const created = await callUnary(c, 'createSandbox', {
      ownerId: 'tenant:1',
      image: 'host',
      labels: { conv: 'c1' },
      limits: undefined,
      network: 2,
      egressAllow: ['pypi.org:443'],
      env: { A: '1' },
      upstreams: ['anthropic'],
      ttlSeconds: 60,
      idleTimeoutSeconds: 0,
    });
    assert.equal(created.sandbox?.state, 2);
    const input = backend.calls.at(-1)?.args[0] as { network: string; limits: object; upstreams: string[] };
    assert.equal(input.network, 'egress');
    assert.deepEqual(input.limits, {});
    assert.deepEqual(input.upstreams, ['anthropic']);
    assert.equal(
      (await callUnary(c, 'listSandboxes', { ownerId: 'o', labelSelector: { conv: 'c1' } })).sandboxes.length,
      1,
    );
    await callUnary(c, 'destroySandbox', { ownerId: 'o', sandboxId: ID });
    assert.equal((await callUnary(c, 'pauseSandbox', { ownerId: 'o', sandboxId: ID })).sandbox?.state, 3);
    await callUnary(c, 'resumeSandbox', { ownerId: 'o', sandboxId: ID });
    const m = await callUnary(c, 'getSandboxMetrics', { ownerId: 'o', sandboxId: ID });
    assert.equal(m.hasExitCode, false);
    assert.equal(m.diskLimitBytes, 8);
    const inv = await callUnary(c, 'invokeWorker', {
      ownerId: 'o',
      containerId: ID,
      path: '',
      method: '',
      headers: { 'x-a': '1' },
      body: Buffer.from('ping'),
      timeoutMs: 0,
      ipAddress: '',
      port: 0,
    });
    assert.equal(inv.statusCode, 200);
    assert.equal(inv.body.toString(), 'ping');
    const gc = await callUnary(c, 'garbageCollect', { prefix: '', dryRun: true });
    assert.deepEqual(backend.calls.at(-1)?.args, ['hako', true]);
    assert.deepEqual(gc.kept, ['hako-t-y']);
    await callUnary(c, 'removeImage', { reference: 'reg.local/x:1' });
    assert.deepEqual(backend.violations, []);
  } finally {
    await h.close();
  }
});
