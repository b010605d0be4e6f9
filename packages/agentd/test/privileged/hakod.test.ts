// hakod end to end: startAgent() (the real wiring) serving over mTLS on loopback, a real client,
// real sandboxes. Covers the lifecycle RPCs, exec, files, InvokeWorker's target rules against a
// worker listening in a sandbox, credential injection through the egress proxy, pause, metrics,
// node info and GC.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import tar from 'tar-stream';
import { createLogger } from '@hako/core';
import type { AgentClient } from '@hako/proto';
import { NetworkMode } from '@hako/proto';
import { certsInit } from '../../../cli/src/certs.js';
import { createAgentClient, callUnary, runExec, readFilesTar, writeFilesTar } from '../../src/client.js';
import { startAgent } from '../../src/main.js';
import type { RunningAgent } from '../../src/main.js';
import { createTestHost } from '../../../sandbox/test/helpers/test-host.js';

const th = createTestHost();
const owner = 'tenant-a';
const secret = `sk-real-${randomBytes(12).toString('hex')}`;
let pkiDir = '';
let agent: RunningAgent | undefined;
let client: AgentClient;
const upstreamSeen: { key: string | undefined; path: string | undefined }[] = [];
const upstream = createServer((req, res) => {
  upstreamSeen.push({ key: req.headers['x-api-key'] as string | undefined, path: req.url });
  res.setHeader('content-type', 'application/json');
  res.end('{"ok":true}');
});

const limits = {
  cpus: 1,
  memoryBytes: 256 * 2 ** 20,
  pids: 128,
  diskBytes: 64 * 2 ** 20,
  tmpBytes: 16 * 2 ** 20,
};
const createReq = (over: Record<string, unknown> = {}) => ({
  ownerId: owner,
  image: 'host',
  labels: { conv: 'c1' },
  limits,
  network: NetworkMode.NETWORK_MODE_NONE,
  egressAllow: [],
  env: {},
  upstreams: [],
  ttlSeconds: 0,
  idleTimeoutSeconds: 0,
  ...over,
});
const sh = (sandboxId: string, script: string, over: Record<string, unknown> = {}) =>
  runExec(client, { ownerId: owner, sandboxId, argv: ['sh', '-c', script], ...over });

before(async () => {
  pkiDir = await mkdtemp(join(tmpdir(), 'hakod-pki-'));
  await certsInit({ dir: pkiDir, hosts: [], days: 1, force: false });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const port = (upstream.address() as AddressInfo).port;
  agent = await startAgent(
    {
      ...th.env,
      AGENT_LISTEN: '127.0.0.1:0',
      AGENT_METRICS_LISTEN: '127.0.0.1:0',
      AGENT_TLS_DIR: pkiDir,
      AGENT_POOL_MIN: '0',
      AGENT_UPSTREAM_ANTHROPIC_URL: `http://127.0.0.1:${port}`,
      AGENT_UPSTREAM_ANTHROPIC_API_KEY: secret,
    },
    { logger: createLogger({ level: 'error', name: 'hakod-test' }) },
  );
  client = createAgentClient({ address: agent.address, tls: { dir: pkiDir } });
});

after(async () => {
  client?.close();
  await agent?.close({ destroyAll: true });
  upstream.close();
  await rm(pkiDir, { recursive: true, force: true });
  await th.teardown();
  assert.deepEqual(th.leftovers(), []);
});

test('create, get, list by label, exec, destroy; another owner is refused', async () => {
  const { sandbox } = await callUnary(client, 'createSandbox', createReq());
  assert.ok(sandbox);
  const id = sandbox.id;
  const r = await sh(id, 'echo out; echo err >&2; id -u; exit 7');
  assert.equal(r.stdout.toString(), 'out\n1000\n');
  assert.equal(r.stderr.toString(), 'err\n');
  assert.equal(r.exit.code, 7);
  const cat = await runExec(client, { ownerId: owner, sandboxId: id, argv: ['cat'] }, { stdin: 'piped' });
  assert.equal(cat.stdout.toString(), 'piped');
  const listed = await callUnary(client, 'listSandboxes', { ownerId: owner, labelSelector: { conv: 'c1' } });
  assert.deepEqual(
    listed.sandboxes.map((s) => s.id),
    [id],
  );
  await assert.rejects(callUnary(client, 'getSandbox', { ownerId: 'tenant-b', sandboxId: id }), {
    code: 'PERMISSION_DENIED',
  });
  await assert.rejects(
    runExec(client, { ownerId: 'tenant-b', sandboxId: id, argv: ['true'] }),
    (e: { code?: string }) => e.code === 'PERMISSION_DENIED',
  );
  await callUnary(client, 'destroySandbox', { ownerId: owner, sandboxId: id });
  await assert.rejects(callUnary(client, 'getSandbox', { ownerId: owner, sandboxId: id }), {
    code: 'SANDBOX_NOT_FOUND',
  });
});

test('WriteFiles and ReadFiles move tar streams into and out of /workspace', async () => {
  const { sandbox } = await callUnary(client, 'createSandbox', createReq());
  const id = sandbox!.id;
  const pack = tar.pack();
  pack.entry({ name: 'dir/hello.txt', mode: 0o644 }, 'hello from the client\n');
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  const w = await writeFilesTar(
    client,
    { ownerId: owner, sandboxId: id, destDir: 'in' },
    Buffer.concat(chunks),
  );
  assert.equal(w.filesWritten, 1);
  const seen = await sh(
    id,
    'cat /workspace/in/dir/hello.txt; stat -c %u /workspace/in/dir/hello.txt; echo made > /workspace/out.txt',
  );
  assert.equal(seen.stdout.toString(), 'hello from the client\n1000\n');
  const out = await readFilesTar(client, { ownerId: owner, sandboxId: id, paths: ['out.txt'] });
  const extract = tar.extract();
  const files: Record<string, string> = {};
  extract.on('entry', (h, stream, next) => {
    const parts: Buffer[] = [];
    stream.on('data', (d: unknown) => parts.push(d as Buffer));
    stream.on('end', () => {
      files[h.name] = Buffer.concat(parts).toString();
      next();
    });
  });
  await new Promise<void>((resolve, reject) => {
    extract.on('finish', () => resolve());
    extract.on('error', reject);
    extract.end(out);
  });
  assert.equal(files['out.txt'], 'made\n');
  await assert.rejects(readFilesTar(client, { ownerId: owner, sandboxId: id, paths: ['../etc/passwd'] }), {
    code: 'FILE_PATH_INVALID',
  });
  await callUnary(client, 'destroySandbox', { ownerId: owner, sandboxId: id });
});

test('InvokeWorker reaches the worker by container id; every other target is INVOKE_TARGET_FORBIDDEN', async () => {
  const egress = createReq({ network: NetworkMode.NETWORK_MODE_EGRESS });
  const { sandbox } = await callUnary(client, 'createSandbox', egress);
  const id = sandbox!.id;
  const ip = sandbox!.ipAddress;
  assert.ok(ip.startsWith(th.subnet.split('.').slice(0, 3).join('.')));
  const worker = [
    'import http.server',
    'class H(http.server.BaseHTTPRequestHandler):',
    '    def do_POST(self):',
    "        n = int(self.headers.get('content-length', 0)); b = self.rfile.read(n)",
    "        self.send_response(200); self.send_header('x-path', self.path); self.end_headers(); self.wfile.write(b'echo:' + b)",
    '    def log_message(self, *a): pass',
    "http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()",
  ].join('\n');
  const server = runExec(client, { ownerId: owner, sandboxId: id, argv: ['python3', '-c', worker] });
  server.catch(() => undefined);
  const invoke = (over: Record<string, unknown>) =>
    callUnary(client, 'invokeWorker', {
      ownerId: owner,
      containerId: '',
      path: '',
      method: '',
      headers: {},
      body: Buffer.from('ping'),
      timeoutMs: 5000,
      ipAddress: '',
      port: 0,
      ...over,
    });
  let res;
  for (let i = 0; i < 50; i++) {
    try {
      res = await invoke({ containerId: id });
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  assert.ok(res, 'the worker answered');
  assert.equal(res.statusCode, 200);
  assert.equal(Buffer.from(res.body).toString(), 'echo:ping');
  assert.equal(res.headers['x-path'], '/2015-03-31/functions/function/invocations');
  // seed compatibility: its own address and port 8080 are accepted
  const byIp = await invoke({ ipAddress: ip, port: 8080 });
  assert.equal(byIp.statusCode, 200);
  const forbidden = async (over: Record<string, unknown>, why: string) =>
    assert.rejects(invoke(over), (e: { code?: string }) => {
      assert.equal(e.code, 'INVOKE_TARGET_FORBIDDEN', why);
      return true;
    });
  await forbidden({ ipAddress: '10.1.2.3', port: 8080 }, 'outside CNI_SUBNET');
  await forbidden({ ipAddress: th.gateway, port: 8080 }, 'the gateway');
  await forbidden({ ipAddress: '127.0.0.1', port: 8080 }, 'loopback');
  await forbidden({ ipAddress: ip, port: 22 }, 'another port');
  await assert.rejects(invoke({ containerId: id, ownerId: 'tenant-b' }), { code: 'PERMISSION_DENIED' });
  await callUnary(client, 'destroySandbox', { ownerId: owner, sandboxId: id });
  await forbidden({ ipAddress: ip, port: 8080 }, "a destroyed sandbox's old address");
  await assert.rejects(invoke({ containerId: id }), { code: 'SANDBOX_NOT_FOUND' });
});

test('the upstream sees the real API key; the sandbox only ever holds a placeholder', async () => {
  const { sandbox } = await callUnary(
    client,
    'createSandbox',
    createReq({ network: NetworkMode.NETWORK_MODE_EGRESS, upstreams: ['anthropic'] }),
  );
  const id = sandbox!.id;
  const r = await sh(
    id,
    'curl -sS -X POST "$ANTHROPIC_BASE_URL/v1/messages" -H "x-api-key: $ANTHROPIC_API_KEY" -H "content-type: application/json" -d "{}"',
  );
  assert.equal(r.stdout.toString(), '{"ok":true}', r.stderr.toString());
  assert.equal(upstreamSeen.at(-1)?.key, secret);
  assert.equal(upstreamSeen.at(-1)?.path, '/v1/messages');
  // nothing in the sandbox holds the secret: env, every process's environ, the files it can read
  const look = await sh(
    id,
    `env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; grep -rs "${secret.slice(0, 12)}" /etc /workspace /tmp /home 2>/dev/null; true`,
  );
  assert.ok(!look.stdout.toString().includes(secret), 'the secret is visible inside the sandbox');
  assert.match(look.stdout.toString(), /ANTHROPIC_API_KEY=hako-placeholder-key/);
  await callUnary(client, 'destroySandbox', { ownerId: owner, sandboxId: id });
});

test('pause, resume, metrics, node info, GC', async () => {
  const { sandbox } = await callUnary(client, 'createSandbox', createReq());
  const id = sandbox!.id;
  const paused = await callUnary(client, 'pauseSandbox', { ownerId: owner, sandboxId: id });
  assert.equal(paused.sandbox?.state, 3); // PAUSED
  await callUnary(client, 'resumeSandbox', { ownerId: owner, sandboxId: id });
  await sh(id, 'head -c 3000000 /dev/zero > /workspace/blob');
  const m = await callUnary(client, 'getSandboxMetrics', { ownerId: owner, sandboxId: id });
  assert.equal(m.memoryMaxBytes, limits.memoryBytes);
  assert.ok(m.diskUsedBytes >= 3_000_000, `disk used ${m.diskUsedBytes}`);
  assert.equal(m.pidsLimit, limits.pids);
  const info = await callUnary(client, 'getNodeInfo', {});
  assert.ok(['crun', 'runc', 'runsc'].includes(info.runtime));
  assert.equal(info.env, th.hakoEnv);
  assert.ok(info.sandboxes >= 1);
  const gc = await callUnary(client, 'garbageCollect', { prefix: '', dryRun: true });
  assert.deepEqual(gc.removed, [], 'a live sandbox is never garbage');
  const metricsText = await (await fetch(`http://${agent!.metricsAddress}/metrics`)).text();
  assert.match(metricsText, /hako_sandbox_create_seconds_count\{source="cold"\} [1-9]/);
  assert.match(metricsText, /hako_exec_seconds_count [1-9]/);
  // the refused calls of the tests above were counted by RPC and code
  assert.match(
    metricsText,
    /hako_rpc_errors_total\{method="(getSandbox|GetSandbox)",code="PERMISSION_DENIED"\} [1-9]/,
  );
  await callUnary(client, 'destroySandbox', { ownerId: owner, sandboxId: id });
});
