// The API commands run in-process (main(argv, env, io)) against real servers:
// - a real hako-api app (buildApp with the PostgreSQL repositories on a private, migrated
//   PostgreSQL, the S3 object store on a private s3rver, in-process locks and rate limits)
//   listening on 127.0.0.1:0: tenants, keys, conversations, and the errors a person meets;
// - `hako exec` against a small local HTTP server answering a recorded text/event-stream with the
//   event shapes of POST /v1/conversations/{id}/execute. That tests the client side only (the
//   stream handling, rendering, exit codes, Ctrl-C closing the request); the real execute needs
//   hakod and sandboxes, which the demo's test covers;
// - `hako sandboxes list` against hakod's real gRPC server (mTLS from `hako certs init`) with a
//   backend that records the call and answers two sandboxes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { silentLogger } from '@hako/core';
import { startPostgres, startS3 } from '@hako/testkit';
import type { PostgresService, S3Service } from '@hako/testkit';
import {
  MemoryLockManager,
  MemoryRateLimiter,
  S3ObjectStore,
  buildApp,
  createAppRepos,
  createDatabase,
  migrate,
} from '@hako/api';
import type { Database } from '@hako/api';
import { loadAgentConfig, startAgentServer } from '@hako/agentd';
import type { AgentBackend, RunningAgentServer, SandboxInfo } from '@hako/agentd';
import type { FastifyInstance } from 'fastify';
import { main } from '../../src/main.js';
import type { CliIo } from '../../src/cli-io.js';
import { certsInit } from '../../src/certs.js';

const ADMIN = `admin-${randomBytes(12).toString('hex')}`;

let pg: PostgresService | undefined;
let s3: S3Service | undefined;
let db: Database | undefined;
let app: FastifyInstance | undefined;
let apiUrl = '';
const closers: (() => unknown)[] = [];

before(async () => {
  pg = await startPostgres();
  s3 = await startS3();
  db = createDatabase({ url: pg.url, logger: silentLogger() });
  await migrate(db, { logger: silentLogger() });
  const store = new S3ObjectStore({
    bucket: s3.bucket,
    endpoint: s3.endpoint,
    region: s3.region,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    maxAttempts: 1,
    connectionTimeoutMs: 1_000,
  });
  closers.push(() => store.close());
  const locks = new MemoryLockManager();
  const rateLimiter = new MemoryRateLimiter();
  closers.push(
    () => locks.close(),
    () => rateLimiter.close(),
  );
  app = await buildApp({
    logger: silentLogger(),
    adminToken: ADMIN,
    repos: createAppRepos(db),
    rateLimiter,
    locks,
    store,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  apiUrl = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
});

after(async () => {
  await app?.close();
  for (const c of closers.splice(0).reverse()) await c();
  await db?.close();
  await s3?.stop();
  await pg?.stop();
});

interface Captured extends CliIo {
  out(): string;
  err(): string;
  /** Simulates Ctrl-C: calls what the command registered with onInterrupt. */
  interrupt(): void;
}

function captureIo(onOut?: (all: string, io: Captured) => void): Captured {
  let out = '';
  let err = '';
  let handlers: (() => void)[] = [];
  const io: Captured = {
    stdout: {
      write: (s: string) => {
        out += s;
        onOut?.(out, io);
        return true;
      },
    },
    stderr: { write: (s: string) => (err += s) },
    onInterrupt(fn) {
      handlers.push(fn);
      return () => {
        handlers = handlers.filter((h) => h !== fn);
      };
    },
    out: () => out,
    err: () => err,
    interrupt: () => {
      for (const h of handlers) h();
    },
  };
  return io;
}

async function hako(
  argv: string[],
  env: Record<string, string>,
  io: Captured = captureIo(),
): Promise<{ code: number; out: string; err: string }> {
  const code = await main(argv, env, io);
  return { code, out: io.out(), err: io.err() };
}

test('tenants create → keys create → conversations create → conversations list, as a person and as a program', async () => {
  const adminEnv = { HAKO_API_URL: apiUrl, HAKO_ADMIN_TOKEN: ADMIN };
  const dir = await mkdtemp(join(tmpdir(), 'hako-cli-'));
  try {
    const created = await hako(
      ['tenants', 'create', 'acme', '--settings', '{"limits":{"requests_per_minute":120}}', '--json'],
      adminEnv,
    );
    assert.equal(created.code, 0, created.err);
    const tenant = JSON.parse(created.out) as { id: string; name: string };
    assert.equal(tenant.name, 'acme');
    assert.match(tenant.id, /^[0-9a-f-]{36}$/);

    // The settings went to the server: it answers them back with the defaults filled in.
    const got = await hako(['tenants', 'get', tenant.id, '--json'], adminEnv);
    assert.equal(got.code, 0, got.err);
    const settings = (JSON.parse(got.out) as { settings: { limits: Record<string, number> } }).settings;
    assert.equal(settings.limits.requests_per_minute, 120);
    assert.equal(settings.limits.concurrent_runs, 4);
    const human = await hako(['tenants', 'get', tenant.id], adminEnv);
    assert.match(human.out, new RegExp(`^id {8}${tenant.id}\\nname {6}acme\\n`));
    assert.match(human.out, /"requests_per_minute": 120/);

    // --settings @FILE, and the plain-text answer.
    const file = join(dir, 'settings.json');
    await writeFile(file, JSON.stringify({ egress_allow: ['pypi.org:443'] }));
    const fromFile = await hako(['tenants', 'create', 'from file', '--settings', `@${file}`], adminEnv);
    assert.equal(fromFile.code, 0, fromFile.err);
    const fileTenantId = /^created tenant from file: ([0-9a-f-]{36})\n$/.exec(fromFile.out)?.[1];
    assert.ok(fileTenantId, fromFile.out);
    const fileTenant = await hako(['tenants', 'get', fileTenantId, '--json'], adminEnv);
    assert.deepEqual(
      (JSON.parse(fileTenant.out) as { settings: { egress_allow: string[] } }).settings.egress_allow,
      ['pypi.org:443'],
    );
    // Not a terminal: no next-step tips on stderr.
    assert.equal(fromFile.err, '');

    // keys create: stdout is the key alone, the warning is on stderr.
    const key = await hako(['keys', 'create', tenant.id], adminEnv);
    assert.equal(key.code, 0, key.err);
    assert.match(key.out, /^hk_[A-Za-z0-9_-]{43}\n$/);
    assert.match(key.err, /only time the key is shown/);
    const apiKey = key.out.trim();
    const keyJson = await hako(['keys', 'create', tenant.id, '--json'], adminEnv);
    const k2 = JSON.parse(keyJson.out) as { key: string; prefix: string; tenant_id: string };
    assert.equal(k2.tenant_id, tenant.id);
    assert.equal(k2.key.slice(3, 11), k2.prefix);
    assert.notEqual(k2.key, apiKey);

    const tenantEnv = { HAKO_API_URL: apiUrl, HAKO_API_KEY: apiKey };
    const empty = await hako(['conversations', 'list', '--json'], tenantEnv);
    assert.equal(empty.code, 0, empty.err);
    assert.deepEqual(JSON.parse(empty.out), []);
    assert.equal((await hako(['conversations', 'list'], tenantEnv)).out, 'no conversations\n');

    const c1 = await hako(['conversations', 'create', '--title', 'Quarterly report', '--json'], tenantEnv);
    assert.equal(c1.code, 0, c1.err);
    const conv1 = JSON.parse(c1.out) as { id: string; title: string; workspace_enabled: boolean };
    assert.equal(conv1.title, 'Quarterly report');
    assert.equal(conv1.workspace_enabled, true);
    const c2 = await hako(['conversations', 'create', '--no-workspace'], tenantEnv);
    assert.equal(c2.code, 0, c2.err);
    const conv2Id = /^created conversation ([0-9a-f-]{36})\n$/.exec(c2.out)?.[1];
    assert.ok(conv2Id, c2.out);

    const listed = await hako(['conversations', 'list', '--json'], tenantEnv);
    assert.equal(listed.code, 0, listed.err);
    const list = JSON.parse(listed.out) as { id: string; workspace_enabled: boolean; title: string | null }[];
    assert.deepEqual(
      list.map((c) => [c.id, c.workspace_enabled, c.title]),
      [
        [conv2Id, false, null],
        [conv1.id, true, 'Quarterly report'],
      ],
    );
    const table = await hako(['conversations', 'list'], tenantEnv);
    const lines = table.out.trimEnd().split('\n');
    assert.equal(lines.length, 3, table.out);
    assert.match(lines[0] ?? '', /^ID +STATUS +CONTEXT/);
    assert.match(lines[1] ?? '', new RegExp(`^${conv2Id} +idle +0/200000 .* - \\(no workspace\\)$`));
    assert.match(lines[2] ?? '', new RegExp(`^${conv1.id} +idle .* Quarterly report$`));

    const one = await hako(['conversations', 'get', conv1.id], tenantEnv);
    assert.match(one.out, /title {7}Quarterly report\n/);

    // Another tenant's key does not see these conversations.
    const other = JSON.parse((await hako(['tenants', 'create', 'other', '--json'], adminEnv)).out) as {
      id: string;
    };
    const otherKey = (await hako(['keys', 'create', other.id], adminEnv)).out.trim();
    const otherList = await hako(['conversations', 'list', '--json'], {
      HAKO_API_URL: apiUrl,
      HAKO_API_KEY: otherKey,
    });
    assert.deepEqual(JSON.parse(otherList.out), []);
    const notFound = await hako(['conversations', 'get', conv1.id], {
      HAKO_API_URL: apiUrl,
      HAKO_API_KEY: otherKey,
    });
    assert.equal(notFound.code, 1);
    assert.match(notFound.err, /^hako: \[CONVERSATION_NOT_FOUND\] /);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('wrong credentials: exit 1, the server code and detail, and which variable to set', async () => {
  const wrongKey = await hako(['conversations', 'list'], {
    HAKO_API_URL: apiUrl,
    HAKO_API_KEY: `hk_${'x'.repeat(43)}`,
  });
  assert.equal(wrongKey.code, 1);
  assert.equal(wrongKey.out, '');
  const [line, hint] = wrongKey.err.split('\n');
  assert.match(line ?? '', /^hako: \[UNAUTHENTICATED\] \S/);
  assert.match(hint ?? '', /^ {2}set HAKO_API_KEY to an API key of your tenant/);

  const wrongAdmin = await hako(['tenants', 'create', 'x'], {
    HAKO_API_URL: apiUrl,
    HAKO_ADMIN_TOKEN: 'not-the-token-at-all',
  });
  assert.equal(wrongAdmin.code, 1);
  assert.match(wrongAdmin.err, /^hako: \[UNAUTHENTICATED\] .*\n {2}set HAKO_ADMIN_TOKEN/);

  // An admin token is not a tenant key, nor the other way round.
  const adminAsKey = await hako(['conversations', 'list'], { HAKO_API_URL: apiUrl, HAKO_API_KEY: ADMIN });
  assert.equal(adminAsKey.code, 1);
  assert.match(adminAsKey.err, /^hako: \[UNAUTHENTICATED\]/);
});

test('refusals carry the server code: unknown tenant, invalid settings', async () => {
  const env = { HAKO_API_URL: apiUrl, HAKO_ADMIN_TOKEN: ADMIN };
  const missing = await hako(['keys', 'create', '00000000-0000-4000-8000-000000000000'], env);
  assert.equal(missing.code, 1);
  assert.match(
    missing.err,
    /^hako: \[TENANT_NOT_FOUND\] [Tt]enant 00000000-0000-4000-8000-000000000000 does not exist\n {2}check the tenant id/,
  );

  const invalid = await hako(['tenants', 'create', 'x', '--settings', '{"limits":{"cpus":"many"}}'], env);
  assert.equal(invalid.code, 1);
  assert.match(invalid.err, /^hako: \[INVALID_ARGUMENT\] .*cpus/);
});

test('hako-api not running: ECONNREFUSED, the URL, and a pointer to hako up', async () => {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address() as AddressInfo;
  await new Promise((r) => s.close(r));
  const url = `http://127.0.0.1:${port}`;
  const r = await hako(['conversations', 'list'], { HAKO_API_URL: url, HAKO_API_KEY: 'k' });
  assert.equal(r.code, 1);
  assert.equal(
    r.err,
    `hako: [ECONNREFUSED] cannot reach hako-api at ${url}: connection refused (nothing listens there)\n` +
      `  is \`hako up\` running? hako-api was expected at ${url} (set HAKO_API_URL if it listens elsewhere)\n`,
  );
});

// ------------------------------------------------------------------------------------ exec

const CONV = '0b9f3c1e-6a52-4d1b-9a8e-2f4c7d1e5a10';
const RUN = '7c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f';
const T0 = Date.parse('2026-11-23T10:00:00.000Z');

/** Events with the shapes execute streams (see packages/api/src/routes/execute.ts EXAMPLE_STREAM). */
function recordedEvents(
  doneStatus: 'completed' | 'failed',
): { type: string; data: Record<string, unknown> }[] {
  const evs: { type: string; data: Record<string, unknown> }[] = [
    { type: 'title', data: { title: 'Write hello.py that prints hello, and run it' } },
    { type: 'progress', data: { step: 'sandbox', status: 'started' } },
    { type: 'progress', data: { step: 'sandbox', status: 'done', created: true } },
    {
      type: 'init',
      data: { session_id: 's-1', tools: ['Bash', 'Edit', 'Read', 'Write'], model: 'claude-test' },
    },
    {
      type: 'tool_call',
      data: {
        id: 'toolu_01',
        name: 'Write',
        input: { file_path: '/workspace/hello.py', content: 'print("hello")\n' },
      },
    },
    { type: 'tool_result', data: { id: 'toolu_01', output: 'File created successfully', is_error: false } },
    { type: 'ping', data: {} },
    { type: 'tool_call', data: { id: 'toolu_02', name: 'Bash', input: { command: 'python3 hello.py' } } },
    { type: 'tool_result', data: { id: 'toolu_02', output: 'hello\n', is_error: false } },
    { type: 'assistant', data: { text: 'hello.py prints hello.' } },
  ];
  evs.push({
    type: 'done',
    data:
      doneStatus === 'completed'
        ? {
            status: 'completed',
            result: 'hello.py prints hello.',
            is_error: false,
            usage: {
              input_tokens: 1520,
              output_tokens: 96,
              cache_creation_input_tokens: 0,
              cache_read_input_tokens: 0,
            },
            cost_usd: 0.0061,
            turn_count: 2,
            duration_ms: 2410,
            session_id: 's-1',
          }
        : { status: 'failed', is_error: true, error_code: 'AGENT_FAILED', turn_count: 1, duration_ms: 900 },
  });
  return evs;
}

function frame(seq: number, ev: { type: string; data: Record<string, unknown> }): string {
  const data = {
    ...ev.data,
    type: ev.type,
    seq,
    timestamp: new Date(T0 + seq * 100).toISOString(),
    run_id: RUN,
    sdk_message: { type: 'stub' },
  };
  return `id: ${seq}\nevent: ${ev.type}\ndata: ${JSON.stringify(data)}\n\n`;
}

interface StubRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: unknown;
  /** Resolves when the client closed the connection before the answer ended. */
  aborted: Promise<void>;
}

/** A local HTTP server standing in for hako-api's execute route; `answer` decides each response. */
async function stubApi(
  answer: (req: StubRequest, res: ServerResponse) => void,
): Promise<{ url: string; requests: StubRequest[]; close: () => Promise<void> }> {
  const requests: StubRequest[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const aborted = new Promise<void>((resolve) => {
        res.on('close', () => {
          if (!res.writableFinished) resolve();
        });
      });
      const r: StubRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: text === '' ? undefined : JSON.parse(text),
        aborted,
      };
      requests.push(r);
      answer(r, res);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Writes the frames in uneven pieces (a frame split mid-line, several frames in one write). */
function streamFrames(res: ServerResponse, text: string): void {
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache' });
  res.write(': hako\n\n');
  for (let i = 0; i < text.length; i += 173) res.write(text.slice(i, i + 173));
}

const KEY = `hk_${'k'.repeat(43)}`;

test('exec renders the recorded stream for a person and exits 0 on completed', async () => {
  const events = recordedEvents('completed');
  const stub = await stubApi((_req, res) => {
    streamFrames(res, events.map((e, i) => frame(i + 1, e)).join(''));
    res.end();
  });
  try {
    const r = await hako(['exec', CONV, 'Write hello.py that prints hello, and run it'], {
      HAKO_API_URL: stub.url,
      HAKO_API_KEY: KEY,
    });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.err, '');
    const req = stub.requests[0];
    assert.equal(req?.method, 'POST');
    assert.equal(req?.url, `/v1/conversations/${CONV}/execute`);
    assert.equal(req?.headers.authorization, `Bearer ${KEY}`);
    assert.equal(req?.headers.accept, 'text/event-stream');
    assert.deepEqual(req?.body, { prompt: 'Write hello.py that prints hello, and run it' });
    // Plain text (captured output is not a terminal): no ANSI escapes.
    assert.doesNotMatch(r.out, /\x1b\[/);
    const lines = r.out.split('\n');
    const at = (re: RegExp): number => lines.findIndex((l) => re.test(l));
    const order = [
      at(/^· title: Write hello\.py/),
      at(/^· sandbox done \(new\)/),
      at(/^▶ Write \/workspace\/hello\.py \(1 line, 15 B\)$/),
      at(/^▶ Bash \$ python3 hello\.py$/),
      at(/^ {4}hello$/),
      at(/^hello\.py prints hello\.$/),
      at(/^✓ completed · 2 turns · 1,520 in \/ 96 out tokens · \$0\.0061 · 2\.4 s$/),
    ];
    assert.ok(
      order.every((i) => i >= 0),
      `every event is shown:\n${r.out}`,
    );
    assert.deepEqual(
      [...order].sort((a, b) => a - b),
      order,
      'in stream order',
    );
    assert.doesNotMatch(r.out, /ping/);

    // `-` reads the prompt from stdin.
    const io = { ...captureIo(), stdin: Readable.from([Buffer.from('  from stdin\n')]) };
    const piped = await main(['exec', CONV, '-'], { HAKO_API_URL: stub.url, HAKO_API_KEY: KEY }, io);
    assert.equal(piped, 0, io.err());
    assert.deepEqual(stub.requests[1]?.body, { prompt: 'from stdin' });
  } finally {
    await stub.close();
  }
});

test('exec --json prints each event as one JSON line, in order; a failed run exits 1', async () => {
  const events = recordedEvents('failed');
  const stub = await stubApi((_req, res) => {
    streamFrames(res, events.map((e, i) => frame(i + 1, e)).join(''));
    res.end();
  });
  try {
    const r = await hako(['exec', CONV, 'go', '--json'], { HAKO_API_URL: stub.url, HAKO_API_KEY: KEY });
    assert.equal(r.code, 1);
    const parsed = r.out
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as { type: string; seq: number; run_id: string });
    assert.deepEqual(
      parsed.map((e) => e.type),
      events.map((e) => e.type),
    );
    assert.deepEqual(
      parsed.map((e) => e.seq),
      events.map((_, i) => i + 1),
    );
    assert.equal(parsed.at(-1)?.run_id, RUN);
    assert.equal((parsed.at(-1) as unknown as { error_code: string }).error_code, 'AGENT_FAILED');

    const human = await hako(['exec', CONV, 'go'], { HAKO_API_URL: stub.url, HAKO_API_KEY: KEY });
    assert.equal(human.code, 1);
    assert.match(human.out, /^✗ failed \[AGENT_FAILED\]/m);
  } finally {
    await stub.close();
  }
});

test('exec: a refusal before the stream is the problem code; a stream without done exits 1', async () => {
  let mode: 'locked' | 'short' | 'cut' = 'locked';
  const events = recordedEvents('completed');
  const stub = await stubApi((_req, res) => {
    if (mode === 'locked') {
      res.writeHead(409, { 'content-type': 'application/problem+json' });
      res.end(
        JSON.stringify({
          type: 'urn:hako:error:CONVERSATION_LOCKED',
          title: 'Another execute is running on the conversation.',
          status: 409,
          code: 'CONVERSATION_LOCKED',
          detail: `conversation ${CONV} has a run in progress`,
        }),
      );
      return;
    }
    streamFrames(
      res,
      events
        .slice(0, 4)
        .map((e, i) => frame(i + 1, e))
        .join(''),
    );
    if (mode === 'short') res.end();
    else setTimeout(() => res.socket?.destroy(), 50);
  });
  const env = { HAKO_API_URL: stub.url, HAKO_API_KEY: KEY };
  try {
    const locked = await hako(['exec', CONV, 'go'], env);
    assert.equal(locked.code, 1);
    assert.equal(locked.out, '');
    assert.match(
      locked.err,
      new RegExp(
        `^hako: \\[CONVERSATION_LOCKED\\] conversation ${CONV} has a run in progress\\n {2}another execute`,
      ),
    );

    mode = 'short';
    const short = await hako(['exec', CONV, 'go'], env);
    assert.equal(short.code, 1);
    assert.match(short.out, /· title:/);
    assert.match(short.err, /ended before the run's done event/);

    mode = 'cut';
    const cut = await hako(['exec', CONV, 'go'], env);
    assert.equal(cut.code, 1);
    assert.match(cut.err, /^hako: the stream from hako-api broke off before the run ended/);
  } finally {
    await stub.close();
  }
});

test(
  'exec: Ctrl-C closes the request (which is what makes hako-api cancel the run) and exits 130',
  { timeout: 30_000 },
  async () => {
    const events = recordedEvents('completed');
    const stub = await stubApi((_req, res) => {
      // The run goes on: a few events, then nothing until the client leaves.
      streamFrames(
        res,
        events
          .slice(0, 4)
          .map((e, i) => frame(i + 1, e))
          .join(''),
      );
    });
    try {
      let pressed = false;
      const io = captureIo((all, self) => {
        if (!pressed && all.includes('· session started')) {
          pressed = true;
          self.interrupt();
        }
      });
      const started = Date.now();
      const r = await hako(['exec', CONV, 'go'], { HAKO_API_URL: stub.url, HAKO_API_KEY: KEY }, io);
      assert.equal(r.code, 130);
      assert.match(r.err, /interrupted: the stream was closed, so hako-api cancels the run/);
      const req = stub.requests[0];
      assert.ok(req);
      await Promise.race([
        req.aborted,
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error('the server never saw the request close')), 5_000),
        ),
      ]);
      assert.ok(Date.now() - started < 5_000);
    } finally {
      await stub.close();
    }
  },
);

// ------------------------------------------------------------------------------- sandboxes

test('sandboxes list asks hakod (mTLS, certificates under HAKO_HOME/tls) for the owner and prints what it answers', async () => {
  const home = await mkdtemp(join(tmpdir(), 'hako-home-'));
  let server: RunningAgentServer | undefined;
  const calls: [string, Record<string, string>][] = [];
  const sandbox = (id: string, conv: string, createdAtMs: number): SandboxInfo => ({
    id,
    ownerId: 'tenant-1',
    image: 'host',
    imageDigest: '',
    labels: { 'hako.conversation': conv, 'hako.tenant': 'tenant-1' },
    state: 'running',
    limits: { cpus: 1, memoryBytes: 1024 ** 3, pids: 256, diskBytes: 1024 ** 3, tmpBytes: 64 * 1024 ** 2 },
    network: 'egress',
    ipAddress: '10.88.0.5',
    createdAtMs,
    lastActiveAtMs: createdAtMs,
    expiresAtMs: 0,
    fromPool: false,
    upstreams: ['anthropic'],
  });
  const backend = {
    listSandboxes: (owner: string, selector: Readonly<Record<string, string>>) => {
      calls.push([owner, { ...selector }]);
      return Promise.resolve(
        owner === 'tenant-1'
          ? [sandbox('bbbbbbbb2222', 'conv-b', T0 + 1000), sandbox('aaaaaaaa1111', 'conv-a', T0)]
          : [],
      );
    },
  } as unknown as AgentBackend;
  try {
    await certsInit({ dir: join(home, 'tls'), hosts: [], days: 2, force: false });
    const config = loadAgentConfig({ AGENT_LISTEN: '127.0.0.1:0', AGENT_TLS_DIR: join(home, 'tls') });
    server = await startAgentServer({ logger: silentLogger(), config, backend });
    const env = { HAKO_HOME: home, AGENT_ADDRESS: server.address };

    const json = await hako(['sandboxes', 'list', '--owner', 'tenant-1', '--json'], env);
    assert.equal(json.code, 0, json.err);
    const list = JSON.parse(json.out) as {
      id: string;
      state: string;
      network: string;
      labels: Record<string, string>;
    }[];
    assert.deepEqual(
      list.map((s) => [s.id, s.state, s.network, s.labels['hako.conversation']]),
      [
        ['aaaaaaaa1111', 'running', 'egress', 'conv-a'],
        ['bbbbbbbb2222', 'running', 'egress', 'conv-b'],
      ],
    );

    const table = await hako(
      ['sandboxes', 'list', '--owner', 'tenant-1', '--label', 'hako.tenant=tenant-1'],
      env,
    );
    assert.equal(table.code, 0, table.err);
    assert.match(
      table.out,
      /^ID +STATE +IMAGE +NETWORK +CREATED \(UTC\) +CONVERSATION\naaaaaaaa1111 +running +host +egress 10\.88\.0\.5 +2026-11-23 10:00 +conv-a\n/,
    );
    assert.deepEqual(calls.at(-1), ['tenant-1', { 'hako.tenant': 'tenant-1' }]);

    const none = await hako(['sandboxes', 'list', '--owner', 'nobody'], env);
    assert.equal(none.out, 'no sandboxes of owner nobody\n');

    // Without the client certificates: the error names the directory and where they come from.
    const noCerts = await hako(['sandboxes', 'list', '--owner', 'tenant-1'], {
      HAKO_HOME: join(home, 'nothing'),
      AGENT_ADDRESS: server.address,
    });
    assert.equal(noCerts.code, 1);
    assert.match(noCerts.err, /^hako: \[CONFIG_INVALID\] cannot read .*nothing\/tls\/ca\.pem/);
    assert.match(
      noCerts.err,
      /\n {2}hakod's client certificates are read from .*nothing\/tls: `hako up` writes them there/,
    );
  } finally {
    await server?.close();
    await rm(home, { recursive: true, force: true });
  }
  // hakod gone: AGENT_UNAVAILABLE and a pointer to hako up.
  const home2 = await mkdtemp(join(tmpdir(), 'hako-home-'));
  try {
    await certsInit({ dir: join(home2, 'tls'), hosts: [], days: 2, force: false });
    const s = createServer();
    s.listen(0, '127.0.0.1');
    await once(s, 'listening');
    const { port } = s.address() as AddressInfo;
    await new Promise((r) => s.close(r));
    const gone = await hako(['sandboxes', 'list', '--owner', 'tenant-1'], {
      HAKO_HOME: home2,
      AGENT_ADDRESS: `127.0.0.1:${port}`,
    });
    assert.equal(gone.code, 1);
    assert.match(gone.err, /^hako: \[AGENT_UNAVAILABLE\] /);
    assert.match(
      gone.err,
      new RegExp(
        `\\n {2}is \`hako up\` \\(or \`hako agent\`\\) running\\? hakod was expected at 127\\.0\\.0\\.1:${port}`,
      ),
    );
  } finally {
    await rm(home2, { recursive: true, force: true });
  }
});
