import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '@hako/core';
import { CreateSandboxRequest, ExecStart, FilesTarget, InvokeWorkerRequest, NetworkMode } from '@hako/proto';
import {
  DEFAULT_REQUEST_BOUNDS as B,
  checkOwnerId,
  checkSandboxId,
  checkSignal,
  checkUser,
  createInputFrom,
  execInputFrom,
  gcInputFrom,
  invokeInputFrom,
  pullInputFrom,
  readFilesFrom,
  writeHeaderFrom,
} from '../../src/grpc-validate.js';

function refused(fn: () => unknown, field: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof AppError, String(e));
    assert.equal(e.code, 'INVALID_ARGUMENT');
    assert.match(e.message, field);
    assert.ok(e.message.length < 400, 'messages do not echo whole inputs');
    return true;
  });
}

const ID = 'abcdef123456';
const start = (over: Partial<ExecStart>): ExecStart =>
  ExecStart.fromPartial({ ownerId: 'tenant-1', sandboxId: ID, argv: ['true'], ...over });
const create = (over: Partial<CreateSandboxRequest>): CreateSandboxRequest =>
  CreateSandboxRequest.fromPartial({ ownerId: 'tenant-1', image: 'host', ...over });

test('owner ids: non-empty, at most 128 of [A-Za-z0-9._:@-]', () => {
  assert.equal(checkOwnerId('org:team@x.y_z-1'), 'org:team@x.y_z-1');
  assert.equal(checkOwnerId('a'.repeat(128)), 'a'.repeat(128));
  for (const bad of ['', 'a'.repeat(129), 'a b', 'a/b', 'a\0', 'é', '../x'])
    refused(() => checkOwnerId(bad), /owner_id/);
  refused(() => checkOwnerId(5), /owner_id: must be a string/);
});

test('sandbox ids follow the sandbox library (8-32 of [a-z0-9]) and huge ones are not echoed', () => {
  assert.equal(checkSandboxId(ID), ID);
  for (const bad of ['', 'short', 'ABCDEFGH1234', 'abcdefgh-123', 'a'.repeat(33), 'x'.repeat(1_000_000)]) {
    refused(() => checkSandboxId(bad), /sandbox_id/);
  }
});

test('CreateSandbox: translated, with limits, enums, labels, env and egress rules checked', () => {
  const input = createInputFrom(
    create({
      labels: { 'hako.io/conv': 'c1' },
      env: { FOO: 'bar' },
      limits: { cpus: 0.5, memoryBytes: 1 << 30, pids: 100, diskBytes: 0, tmpBytes: 0 },
      network: NetworkMode.NETWORK_MODE_EGRESS,
      egressAllow: ['pypi.org:443'],
      upstreams: ['anthropic'],
      ttlSeconds: 60,
    }),
    B,
  );
  assert.equal(input.network, 'egress');
  assert.deepEqual(input.limits, { cpus: 0.5, memoryBytes: 1 << 30, pids: 100, diskBytes: 0, tmpBytes: 0 });
  assert.deepEqual(input.labels, { 'hako.io/conv': 'c1' });
  assert.equal(createInputFrom(create({}), B).network, 'none');

  refused(() => createInputFrom(create({ image: '' }), B), /image/);
  refused(() => createInputFrom(create({ image: 'a b' }), B), /image/);
  refused(() => createInputFrom(create({ network: 7 as NetworkMode }), B), /network/);
  refused(() => createInputFrom(create({ network: NetworkMode.UNRECOGNIZED }), B), /network/);
  for (const cpus of [-1, Number.NaN, Number.POSITIVE_INFINITY, 1e9]) {
    refused(
      () =>
        createInputFrom(create({ limits: { cpus, memoryBytes: 0, pids: 0, diskBytes: 0, tmpBytes: 0 } }), B),
      /limits\.cpus/,
    );
  }
  refused(
    () =>
      createInputFrom(
        create({ limits: { cpus: 0, memoryBytes: 1.5, pids: 0, diskBytes: 0, tmpBytes: 0 } }),
        B,
      ),
    /memory_bytes: must be a whole number/,
  );
  refused(() => createInputFrom(create({ labels: { '': 'x' } }), B), /labels key/);
  refused(() => createInputFrom(create({ labels: { 'a\nb': 'x' } }), B), /labels key/);
  refused(() => createInputFrom(create({ labels: { a: 'x\0' } }), B), /labels/);
  refused(() => createInputFrom(create({ labels: { a: 'x'.repeat(257) } }), B), /labels/);
  const many = Object.fromEntries(Array.from({ length: B.maxLabels + 1 }, (_, i) => [`k${i}`, 'v']));
  refused(() => createInputFrom(create({ labels: many }), B), /labels: more than/);
  refused(() => createInputFrom(create({ env: { '1BAD': 'x' } }), B), /env name/);
  refused(() => createInputFrom(create({ env: { 'A=B': 'x' } }), B), /env name/);
  refused(() => createInputFrom(create({ env: { A: 'nul\0' } }), B), /env\[A\]/);
  refused(() => createInputFrom(create({ egressAllow: ['x.org:443'] }), B), /egress_allow: needs network/);
  refused(() => createInputFrom(create({ upstreams: ['anthropic'] }), B), /upstreams: need network/);
  refused(
    () => createInputFrom(create({ network: NetworkMode.NETWORK_MODE_EGRESS, upstreams: ['Anthropic!'] }), B),
    /upstreams\[0\]/,
  );
  refused(() => createInputFrom(create({ ttlSeconds: 10 ** 9 }), B), /ttl_seconds/);
});

test('Exec start: argv, env, cwd, user and timeout are checked', () => {
  const ok = execInputFrom(
    start({ argv: ['sh', '-c', 'echo hi'], cwd: '/tmp', user: '1000:1000', stdin: true }),
    B,
  );
  assert.deepEqual(ok.argv, ['sh', '-c', 'echo hi']);
  assert.equal(ok.stdin, true);
  refused(() => execInputFrom(start({ argv: [] }), B), /argv: is required/);
  refused(() => execInputFrom(start({ argv: [''] }), B), /argv\[0\]/);
  refused(() => execInputFrom(start({ argv: ['sh', 'a\0b'] }), B), /argv\[1\]: contains a NUL/);
  refused(() => execInputFrom(start({ argv: ['x'.repeat(200_000)] }), B), /argv\[0\]: longer/);
  refused(() => execInputFrom(start({ argv: Array(B.maxArgs + 1).fill('a') }), B), /argv: more than/);
  refused(
    () => execInputFrom(start({ argv: Array(20).fill('x'.repeat(100_000)) }), B),
    /argv: more than .* bytes/,
  );
  refused(() => execInputFrom(start({ cwd: 'relative' }), B), /cwd/);
  refused(() => execInputFrom(start({ cwd: '/a\0' }), B), /cwd/);
  refused(() => execInputFrom(start({ env: { 'X-Y': '1' } }), B), /env name/);
  refused(() => execInputFrom(start({ ownerId: '' }), B), /owner_id: is required/);
  refused(() => execInputFrom(start({ sandboxId: 'nope' }), B), /sandbox_id/);
  assert.equal(checkUser(''), '');
  assert.equal(checkUser('1000'), '1000');
  refused(() => checkUser('0'), /root/);
  refused(() => checkUser('1000:0'), /root/);
  refused(() => checkUser('root'), /user/);
  refused(() => checkUser('99999999999'), /user/);
});

test('signals: names with or without SIG, any case, and numbers 1-64', () => {
  for (const s of ['TERM', 'SIGTERM', 'KILL', '9', '64']) assert.equal(checkSignal({ signal: s }), s);
  assert.equal(checkSignal({ signal: 'sigint' }), 'SIGINT');
  for (const s of ['', 'NOPE', '0', '65', 'SIG', 'TERM; rm -rf /', 'x'.repeat(100)]) {
    refused(() => checkSignal({ signal: s }), /signal/);
  }
  refused(() => checkSignal(undefined), /signal/);
});

test('files, invoke, gc and pull requests', () => {
  assert.deepEqual(writeHeaderFrom({ ownerId: 'o', sandboxId: ID, destDir: 'src' }), {
    ownerId: 'o',
    sandboxId: ID,
    destDir: 'src',
    target: 'workspace',
  });
  // the read-only /skills tree: a directory name is required; unknown targets are refused
  assert.equal(
    writeHeaderFrom({ ownerId: 'o', sandboxId: ID, destDir: 't1', target: FilesTarget.FILES_TARGET_SKILLS })
      .target,
    'skills',
  );
  refused(
    () =>
      writeHeaderFrom({ ownerId: 'o', sandboxId: ID, destDir: '', target: FilesTarget.FILES_TARGET_SKILLS }),
    /dest_dir/,
  );
  refused(
    () => writeHeaderFrom({ ownerId: 'o', sandboxId: ID, destDir: 'x', target: FilesTarget.UNRECOGNIZED }),
    /target/,
  );
  assert.equal(
    readFilesFrom({ ownerId: 'o', sandboxId: ID, paths: [], target: FilesTarget.FILES_TARGET_SKILLS }, B)
      .target,
    'skills',
  );
  refused(() => writeHeaderFrom({ ownerId: 'o', sandboxId: ID, destDir: 'a\0' }), /dest_dir/);
  refused(() => readFilesFrom({ ownerId: 'o', sandboxId: ID, paths: [''] }, B), /paths\[0\]/);
  refused(() => readFilesFrom({ ownerId: 'o', sandboxId: ID, paths: ['a\nb'] }, B), /paths\[0\]/);

  const inv = (over: Partial<InvokeWorkerRequest>): InvokeWorkerRequest =>
    InvokeWorkerRequest.fromPartial({ ownerId: 'o', containerId: ID, ...over });
  assert.equal(invokeInputFrom(inv({ body: Buffer.from('{}') }), B).body.toString(), '{}');
  refused(() => invokeInputFrom(inv({ containerId: '' }), B), /container_id/);
  refused(() => invokeInputFrom(inv({ method: 'get me' }), B), /method/);
  refused(() => invokeInputFrom(inv({ path: 'no-slash' }), B), /path/);
  refused(() => invokeInputFrom(inv({ headers: { 'bad name': 'x' } }), B), /headers name/);
  refused(() => invokeInputFrom(inv({ headers: { X: 'a\r\nInjected: 1' } }), B), /headers\[X\]/);
  refused(() => invokeInputFrom(inv({ ipAddress: 'a b' }), B), /ip_address/);
  // an address that is not a sandbox's is INVOKE_TARGET_FORBIDDEN later (resolveInvokeTarget), not here
  assert.equal(
    invokeInputFrom(inv({ containerId: '', ipAddress: '999.1.1.1', port: 8080 }), B).ipAddress,
    '999.1.1.1',
  );
  refused(() => invokeInputFrom(inv({ port: 70000 }), B), /port/);
  refused(() => invokeInputFrom(inv({ timeoutMs: 10 ** 9 }), B), /timeout_ms/);

  assert.deepEqual(gcInputFrom({ prefix: '', dryRun: true }), { prefix: 'hako', dryRun: true });
  refused(() => gcInputFrom({ prefix: 'hako-dev-', dryRun: false }), /prefix/);

  assert.deepEqual(pullInputFrom({ reference: 'r/x:1', auth: { username: '', password: '' } }), {
    reference: 'r/x:1',
    auth: undefined,
  });
  refused(() => pullInputFrom({ reference: '', auth: undefined }), /reference/);
  refused(() => pullInputFrom({ reference: 'r/x', auth: { username: '', password: 'p' } }), /auth\.username/);
});
