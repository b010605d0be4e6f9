// The multipart execute against real PostgreSQL, Redis and S3 (the sandbox, the workspace sync
// and the agent are in-memory ports; the sandbox write is recorded): the files are stored as
// uploads (S3 object, user_upload row, manifest entry, a version with the run) and written into
// the sandbox before the agent starts; every invalid request is refused before the stream with
// problem+json and stores nothing (no object, no file row, no run).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import tarStream from 'tar-stream';
import { silentLogger } from '@hako/core';
import { startRedis, startS3 } from '@hako/testkit';
import type { RedisService, S3Service } from '@hako/testkit';
import { buildApp, createAppRepos, registerUserUpload } from '../../src/app.js';
import { RedisLockManager } from '../../src/coord/redis-lock.js';
import { RedisRateLimiter } from '../../src/coord/redis-rate-limiter.js';
import { MemoryConcurrencyLimiter } from '../../src/coord/memory-concurrency.js';
import { createAttachmentPort, defaultAttachmentLimits } from '../../src/execute/attachments.js';
import type { ExecuteDeps } from '../../src/execute/execute-run.js';
import { tenantIdOf } from '../../src/http/auth.js';
import { EventRepository } from '../../src/repositories/events.js';
import { RunRepository } from '../../src/repositories/runs.js';
import { DEFAULT_UPLOAD_LIMITS } from '../../src/routes/files.js';
import { registerExecuteRoutes } from '../../src/routes/execute.js';
import { S3ObjectStore } from '../../src/storage/s3-object-store.js';
import { startPostgresFixture } from '../helpers/db.js';
import type { PostgresFixture, TestDatabase } from '../helpers/db.js';
import { parseSse } from '../helpers/stack.js';

const ADMIN = `admin-${randomBytes(12).toString('hex')}`;
const prefix = `hako:a${randomBytes(3).toString('hex')}`;
let pg: PostgresFixture | undefined;
let s3: S3Service | undefined;
let redisService: RedisService | undefined;
const closers: (() => Promise<unknown> | void)[] = [];

before(async () => {
  pg = await startPostgresFixture();
  s3 = await startS3();
  redisService = await startRedis();
});

after(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await redisService?.stop();
  await s3?.stop();
  await pg?.stop();
});

interface Harness {
  url: string;
  db: TestDatabase;
  store: S3ObjectStore;
  /** Tars written into the "sandbox", in order. */
  written: Buffer[];
  /** What happened, in order: sandbox, write, agent(prompt). */
  steps: string[];
}

async function harness(maxTotalBytes = 64 * 1024): Promise<Harness> {
  const db = await pg!.migrated();
  const redis = new Redis(redisService!.url, { maxRetriesPerRequest: 1 });
  closers.push(() => redis.disconnect());
  const store = new S3ObjectStore({
    bucket: s3!.bucket,
    endpoint: s3!.endpoint,
    region: s3!.region,
    credentials: { accessKeyId: s3!.accessKeyId, secretAccessKey: s3!.secretAccessKey },
    maxAttempts: 1,
  });
  closers.push(() => store.close());
  const locks = new RedisLockManager({ redis, prefix });
  const slots = new MemoryConcurrencyLimiter();
  closers.push(() => slots.close());
  const repos = createAppRepos(db.db);
  const written: Buffer[] = [];
  const steps: string[] = [];
  const execute: ExecuteDeps = {
    locks,
    slots,
    logger: silentLogger(),
    lockTtlMs: 30_000,
    pingIntervalMs: 60_000,
    runTimeoutMs: 60_000,
    runs: {
      startRun: async (i) => (await new RunRepository(db.db).start(i)).id,
      append: (t, c, r, ev) => new EventRepository(db.db).append(t, c, r, ev),
      finishRun: async (i) =>
        (await new RunRepository(db.db).finish(i.tenantId, i.runId, { status: i.status }, i.done))!,
    },
    sandboxes: {
      ensure: () => {
        steps.push('sandbox');
        return Promise.resolve({ node: 'n1', sandboxId: 'sb1', created: false });
      },
    },
    workspace: {
      restore: () => Promise.resolve({ files: 0, bytes: 0 }),
      syncBack: () => Promise.resolve({ uploaded: 0, deleted: 0, unchanged: 0, changes: [], complete: true }),
    },
    agent: {
      run: ({ prompt }) => {
        steps.push(`agent(${prompt})`);
        return Promise.resolve({
          status: 'completed',
          result: 'ok',
          isError: false,
          usage: { inputTokens: 1, outputTokens: 1, cacheCreationInputTokens: 0, cacheReadInputTokens: 0 },
          costUsd: 0,
          turnCount: 1,
          sessionId: null,
          contextTokens: 0,
        });
      },
    },
    attachments: createAttachmentPort({
      store,
      registerUpload: (t, c, f) => registerUserUpload(repos, t, c, f),
      writeTar: (target, _owner, tar) => {
        steps.push(`write(${target.sandboxId})`);
        written.push(tar);
        return Promise.resolve();
      },
      logger: silentLogger(),
    }),
  };
  const app = await buildApp({
    logger: silentLogger(),
    adminToken: ADMIN,
    repos,
    rateLimiter: new RedisRateLimiter({ redis, prefix }),
    locks,
    store,
    routes: [
      (a) =>
        registerExecuteRoutes(a, {
          execute,
          tenantOf: tenantIdOf,
          loadContext: async (tenantId, id) => ({
            tenant: (await repos.tenants.get(tenantId))!,
            conversation: await repos.conversations.get(tenantId, id),
          }),
          listEvents: (t, c, after, limit) => new EventRepository(db.db).listAfter(t, c, after, limit),
          followIntervalMs: 50,
          maxPromptChars: 1000,
          attachmentLimits: {
            ...defaultAttachmentLimits({
              ...DEFAULT_UPLOAD_LIMITS,
              byType: { ...DEFAULT_UPLOAD_LIMITS.byType, 'text/*': 1024 },
            }),
            maxFiles: 3,
            maxTotalBytes,
          },
        }),
    ],
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  closers.push(() => app.close());
  const { port } = app.server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, db, store, written, steps };
}

async function json(url: string, token: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return {
    status: res.status,
    text,
    json: (text.startsWith('{') ? JSON.parse(text) : {}) as Record<string, unknown>,
  };
}

async function setup(h: Harness, conversation: Record<string, unknown> = {}) {
  const t = await json(h.url, ADMIN, 'POST', '/v1/tenants', {
    name: 'acme',
    settings: { limits: { requests_per_minute: 1000 } },
  });
  assert.equal(t.status, 201, t.text);
  const tenantId = String(t.json.id);
  const key = String((await json(h.url, ADMIN, 'POST', `/v1/tenants/${tenantId}/api-keys`)).json.key);
  const c = await json(h.url, key, 'POST', '/v1/conversations', conversation);
  assert.equal(c.status, 201, c.text);
  return { tenantId, key, id: String(c.json.id) };
}

type Part =
  { field: string; value: string } | { field: string; name: string; content: string | Buffer; type?: string };

async function multipart(h: Harness, key: string, id: string, parts: Part[]) {
  const form = new FormData();
  for (const p of parts) {
    if ('value' in p) form.append(p.field, p.value);
    else form.append(p.field, new Blob([p.content], p.type === undefined ? {} : { type: p.type }), p.name);
  }
  const res = await fetch(`${h.url}/v1/conversations/${id}/execute`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}` },
    body: form,
  });
  const text = await res.text();
  return {
    status: res.status,
    type: res.headers.get('content-type') ?? '',
    text,
    json: (text.startsWith('{') ? JSON.parse(text) : {}) as Record<string, unknown>,
  };
}

async function untar(tar: Buffer): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const ex = tarStream.extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (hd, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => {
        chunks.push(c as Buffer);
      });
      stream.on('end', () => {
        out[hd.name] = Buffer.concat(chunks).toString();
        next();
      });
    });
    ex.on('finish', resolve);
    ex.on('error', reject);
  });
  ex.end(tar);
  await done;
  return out;
}

async function objectsUnder(store: S3ObjectStore, p: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of store.list(p)) keys.push(o.key);
  return keys;
}

const requestData = (over: Record<string, unknown> = {}): Part => ({
  field: 'request_data',
  value: JSON.stringify({ user_input: 'read the files', executor: { user_id: 'u-7' }, ...over }),
});

test('a multipart execute stores its files as uploads and writes them into the sandbox before the agent', async () => {
  const h = await harness();
  const { tenantId, key, id } = await setup(h);
  const csv = Buffer.from('a,b\n1,2\n');
  const r = await multipart(h, key, id, [
    requestData(),
    { field: 'files[]', name: 'data/table.csv', content: csv, type: 'text/csv' },
    { field: 'files[]', name: 'notes.txt', content: 'hello notes', type: 'text/plain;charset=UTF-8' },
    { field: 'files', name: 'blob.bin', content: Buffer.from([0, 1, 2, 3]) },
  ]);
  assert.equal(r.status, 200, r.text);
  const events = parseSse(r.text);
  assert.equal(events.at(-1)?.data.status, 'completed', r.text);
  assert.deepEqual(h.steps, ['sandbox', 'write(sb1)', 'agent(read the files)']);
  const placed = events.find((e) => e.data.step === 'attachments' && e.data.status === 'done');
  assert.deepEqual([placed?.data.files, placed?.data.bytes], [3, csv.length + 11 + 4]);
  const runId = String(events.at(-1)?.data.run_id);

  assert.deepEqual(await untar(h.written[0]!), {
    'blob.bin': '\u0000\u0001\u0002\u0003',
    'data/table.csv': 'a,b\n1,2\n',
    'notes.txt': 'hello notes',
  });
  assert.equal((await h.store.get(`workspaces/${tenantId}/${id}/data/table.csv`)).toString(), 'a,b\n1,2\n');
  const files = await json(h.url, key, 'GET', `/v1/conversations/${id}/files`);
  const list = files.json.files as { path: string; source: string; mime_type: string; sha256: string }[];
  assert.deepEqual(
    list.map((f) => [f.path, f.source, f.mime_type]),
    [
      ['blob.bin', 'user_upload', 'application/octet-stream'],
      ['data/table.csv', 'user_upload', 'text/csv'],
      ['notes.txt', 'user_upload', 'text/plain'],
    ],
  );
  assert.equal(list[1]!.sha256, createHash('sha256').update(csv).digest('hex'));
  const manifest = await h.db.db.query<{ path: string }>(
    'SELECT path FROM workspace_objects WHERE conversation_id = $1 ORDER BY path',
    [id],
  );
  assert.deepEqual(
    manifest.rows.map((x) => x.path),
    ['blob.bin', 'data/table.csv', 'notes.txt'],
  );
  const versions = await h.db.db.query<{ path: string; version: number; run_id: string; source: string }>(
    'SELECT path, version, run_id, source FROM conversation_file_versions WHERE conversation_id = $1 ORDER BY path',
    [id],
  );
  assert.deepEqual(
    versions.rows.map((v) => [v.path, v.version, v.run_id, v.source]),
    [
      ['blob.bin', 1, runId, 'user_upload'],
      ['data/table.csv', 1, runId, 'user_upload'],
      ['notes.txt', 1, runId, 'user_upload'],
    ],
  );

  // A JSON execute is unchanged: no attachments step, nothing written.
  h.steps.length = 0;
  const plain = await json(h.url, key, 'POST', `/v1/conversations/${id}/execute`, { prompt: 'again' });
  assert.equal(plain.status, 200, plain.text);
  assert.deepEqual(h.steps, ['sandbox', 'agent(again)']);
  assert.equal(h.written.length, 1);
});

test('every invalid multipart execute is refused before the stream and stores nothing', async () => {
  const h = await harness();
  const { tenantId, key, id } = await setup(h);
  const ok: Part = { field: 'files[]', name: 'fine.txt', content: 'fine', type: 'text/plain' };
  const cases: { name: string; parts: Part[]; status: number; code: string; detail?: RegExp }[] = [
    {
      name: 'a text file over the text/* limit',
      parts: [
        requestData(),
        ok,
        { field: 'files[]', name: 'big.txt', content: 'x'.repeat(1025), type: 'text/plain' },
      ],
      status: 413,
      code: 'FILE_TOO_LARGE',
    },
    {
      name: 'a path escaping the workspace',
      parts: [
        requestData(),
        ok,
        { field: 'files[]', name: '../escape.txt', content: 'x', type: 'text/plain' },
      ],
      status: 400,
      code: 'FILE_PATH_INVALID',
    },
    {
      name: 'a path under .hako/',
      parts: [
        requestData(),
        { field: 'files[]', name: '.hako/claude/x.json', content: '{}', type: 'application/json' },
      ],
      status: 400,
      code: 'FILE_PATH_INVALID',
    },
    {
      name: 'an absolute path',
      parts: [requestData(), { field: 'files[]', name: '/etc/passwd', content: 'x' }],
      status: 400,
      code: 'FILE_PATH_INVALID',
    },
    {
      name: 'request_data that is not JSON',
      parts: [{ field: 'request_data', value: '{"prompt": ' }, ok],
      status: 400,
      code: 'INVALID_ARGUMENT',
      detail: /request_data is not valid JSON/,
    },
    {
      name: 'no request_data',
      parts: [ok],
      status: 400,
      code: 'INVALID_ARGUMENT',
      detail: /needs a request_data part/,
    },
    {
      name: 'request_data with an unknown field',
      parts: [requestData({ promtp: 'typo' }), ok],
      status: 400,
      code: 'INVALID_ARGUMENT',
    },
    {
      name: 'request_data with neither prompt nor user_input',
      parts: [{ field: 'request_data', value: '{"executor":{"user_id":"u"}}' }, ok],
      status: 400,
      code: 'INVALID_ARGUMENT',
    },
    {
      name: 'an unknown part',
      parts: [requestData(), ok, { field: 'attachment', name: 'a.txt', content: 'x' }],
      status: 400,
      code: 'INVALID_ARGUMENT',
      detail: /unexpected form part "attachment"/,
    },
    {
      name: 'the same path twice',
      parts: [requestData(), ok, { ...ok, content: 'other' }],
      status: 400,
      code: 'INVALID_ARGUMENT',
      detail: /two files are named "fine.txt"/,
    },
    {
      name: 'more files than allowed',
      parts: [
        requestData(),
        ...['a', 'b', 'c', 'd'].map((n) => ({
          field: 'files[]',
          name: `${n}.txt`,
          content: n,
          type: 'text/plain',
        })),
      ],
      status: 400,
      code: 'INVALID_ARGUMENT',
      detail: /at most 3 files/,
    },
    {
      name: 'a files[] part without a filename',
      parts: [requestData(), { field: 'files[]', value: 'just text' }],
      status: 400,
      code: 'INVALID_ARGUMENT',
      detail: /needs a filename/,
    },
    {
      name: 'a malformed media type',
      parts: [requestData(), { field: 'files[]', name: 'x.txt', content: 'x', type: 'bogus' }],
      status: 415,
      code: 'UNSUPPORTED_MEDIA_TYPE',
    },
    {
      name: 'a body over the total limit',
      parts: [requestData(), { field: 'files[]', name: 'big.bin', content: Buffer.alloc(70 * 1024, 1) }],
      status: 413,
      code: 'PAYLOAD_TOO_LARGE',
    },
  ];
  for (const c of cases) {
    const r = await multipart(h, key, id, c.parts);
    assert.equal(r.status, c.status, `${c.name}: ${r.text}`);
    assert.match(r.type, /application\/problem\+json/, c.name);
    assert.equal(r.json.code, c.code, `${c.name}: ${r.text}`);
    if (c.detail) assert.match(String(r.json.detail), c.detail, c.name);
  }
  assert.deepEqual(await objectsUnder(h.store, `workspaces/${tenantId}/`), []);
  for (const table of ['conversation_files', 'workspace_objects', 'conversation_file_versions', 'runs']) {
    const n = await h.db.db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM ${table} WHERE conversation_id = $1`,
      [id],
    );
    assert.equal(n.rows[0]?.n, 0, `${table} holds nothing`);
  }
  assert.deepEqual(h.steps, [], 'no sandbox, no agent');
  assert.equal(h.written.length, 0);

  // A conversation without a workspace refuses attachments.
  const noWs = await json(h.url, key, 'POST', '/v1/conversations', { workspace_enabled: false });
  const refused = await multipart(h, key, String(noWs.json.id), [requestData(), ok]);
  assert.equal(refused.json.code, 'WORKSPACE_DISABLED', refused.text);
  // Another tenant's conversation is not found, attachments or not.
  const other = await setup(h);
  const foreign = await multipart(h, other.key, id, [requestData(), ok]);
  assert.equal(foreign.status, 404, foreign.text);
  assert.equal(foreign.json.code, 'CONVERSATION_NOT_FOUND');
  assert.deepEqual(await objectsUnder(h.store, `workspaces/${tenantId}/`), []);
});

test('a multipart body may pass the JSON body limit (1 MiB) up to the attachment limit', async () => {
  const h = await harness(8 * 1024 ** 2);
  const { tenantId, key, id } = await setup(h);
  const big = randomBytes(3 * 1024 ** 2);
  const r = await multipart(h, key, id, [
    requestData(),
    { field: 'files[]', name: 'big.bin', content: big, type: 'application/octet-stream' },
  ]);
  assert.equal(r.status, 200, r.text);
  const stored = await h.store.get(`workspaces/${tenantId}/${id}/big.bin`);
  assert.ok(stored.equals(big), 'the stored object is the file');
  assert.equal(Object.keys(await untar(h.written[0]!)).join(), 'big.bin');
});
