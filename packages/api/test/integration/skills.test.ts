// The skills API against a real PostgreSQL (fresh migrated database per test) and a private S3
// server: upload (tar and tar.gz), list, describe, replace (new object, row, old object gone),
// delete, every refusal of a bad package with nothing stored, and tenant isolation.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import tarStream from 'tar-stream';
import { Redis } from 'ioredis';
import { silentLogger } from '@hako/core';
import { startRedis, startS3 } from '@hako/testkit';
import type { RedisService, S3Service } from '@hako/testkit';
import type { FastifyInstance } from 'fastify';
import { buildApp, createAppRepos } from '../../src/app.js';
import { RedisLockManager } from '../../src/coord/redis-lock.js';
import { RedisRateLimiter } from '../../src/coord/redis-rate-limiter.js';
import { S3ObjectStore } from '../../src/storage/s3-object-store.js';
import { startPostgresFixture } from '../helpers/db.js';
import type { PostgresFixture } from '../helpers/db.js';

const ADMIN = `admin-${randomBytes(12).toString('hex')}`;
const prefix = `hako:s${randomBytes(3).toString('hex')}`;
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

async function harness(): Promise<{ app: FastifyInstance; store: S3ObjectStore }> {
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
  const app = await buildApp({
    logger: silentLogger(),
    adminToken: ADMIN,
    repos: createAppRepos(db.db),
    rateLimiter: new RedisRateLimiter({ redis, prefix }),
    locks: new RedisLockManager({ redis, prefix }),
    store,
  });
  closers.push(() => app.close());
  return { app, store };
}

async function tenant(app: FastifyInstance): Promise<{ id: string; key: string }> {
  const admin = { authorization: `Bearer ${ADMIN}` };
  const t = await app.inject({ method: 'POST', url: '/v1/tenants', headers: admin, payload: { name: 'a' } });
  const id = t.json<{ id: string }>().id;
  const k = await app.inject({ method: 'POST', url: `/v1/tenants/${id}/api-keys`, headers: admin });
  return { id, key: k.json<{ key: string }>().key };
}

type Entry = Partial<tarStream.Header> & { name: string; body?: string };

async function tarOf(entries: Entry[]): Promise<Buffer> {
  const pack = tarStream.pack();
  for (const e of entries) {
    const { body, ...h } = e;
    if (h.type === undefined || h.type === 'file') pack.entry({ mode: 0o644, ...h }, body ?? '');
    else pack.entry(h);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const SKILL_MD = (name: string, description = 'Makes PDF reports') =>
  `---\nname: ${name}\ndescription: ${description}\n---\n\nUse scripts/report.py.\n`;

const put = (app: FastifyInstance, key: string, name: string, body: Buffer, type = 'application/x-tar') =>
  app.inject({
    method: 'PUT',
    url: `/v1/skills/${name}`,
    headers: { authorization: `Bearer ${key}`, 'content-type': type },
    payload: body,
  });

async function keys(store: S3ObjectStore, p: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of store.list(p)) out.push(o.key);
  return out;
}

test('upload, list, describe, replace and delete a skill; S3 holds exactly the current version', async () => {
  const { app, store } = await harness();
  const a = await tenant(app);
  const v1 = gzipSync(
    await tarOf([
      { name: 'pdf/', type: 'directory', mode: 0o755 },
      { name: 'pdf/SKILL.md', body: SKILL_MD('pdf') },
      { name: 'pdf/scripts/report.py', body: 'print("report")\n', mode: 0o755 },
    ]),
  );
  const created = await put(app, a.key, 'pdf', v1, 'application/gzip');
  assert.equal(created.statusCode, 201, created.body);
  const c = created.json<Record<string, unknown>>();
  assert.equal(c.name, 'pdf');
  assert.equal(c.description, 'Makes PDF reports');
  assert.equal(c.version, 1);
  assert.equal(c.file_count, 2);
  assert.equal(c.sandbox_path, `/skills/${a.id}/pdf`);
  assert.deepEqual(
    (c.files as { path: string }[]).map((f) => f.path),
    ['SKILL.md', 'scripts/report.py'],
  );
  const firstKeys = await keys(store, `skills/${a.id}/pdf/`);
  assert.equal(firstKeys.length, 1);
  // the stored object is the normalised tar whose sha256 the API reports
  const stored = await store.get(firstKeys[0]!);
  const { createHash } = await import('node:crypto');
  assert.equal(createHash('sha256').update(stored).digest('hex'), c.sha256);

  const list = await app.inject({ url: '/v1/skills', headers: { authorization: `Bearer ${a.key}` } });
  assert.equal(list.statusCode, 200);
  const skills = list.json<{ skills: Record<string, unknown>[] }>().skills;
  assert.deepEqual(
    skills.map((s) => [s.name, s.version, s.file_count, 'files' in s]),
    [['pdf', 1, 2, false]],
  );

  // replace: the folder at the archive root this time, a plain tar
  const v2 = await tarOf([{ name: 'SKILL.md', body: SKILL_MD('pdf', 'Makes better PDF reports') }]);
  const replaced = await put(app, a.key, 'pdf', v2);
  assert.equal(replaced.statusCode, 200, replaced.body);
  assert.equal(replaced.json<{ version: number }>().version, 2);
  const secondKeys = await keys(store, `skills/${a.id}/pdf/`);
  assert.equal(secondKeys.length, 1, 'the old version is removed');
  assert.notEqual(secondKeys[0], firstKeys[0]);
  const one = await app.inject({ url: '/v1/skills/pdf', headers: { authorization: `Bearer ${a.key}` } });
  assert.equal(one.statusCode, 200);
  assert.equal(one.json<{ description: string }>().description, 'Makes better PDF reports');
  assert.deepEqual(
    one.json<{ files: { path: string }[] }>().files.map((f) => f.path),
    ['SKILL.md'],
  );

  // another tenant sees none of it, and cannot delete it
  const b = await tenant(app);
  const bList = await app.inject({ url: '/v1/skills', headers: { authorization: `Bearer ${b.key}` } });
  assert.deepEqual(bList.json(), { skills: [] });
  for (const method of ['GET', 'DELETE'] as const) {
    const r = await app.inject({
      method,
      url: '/v1/skills/pdf',
      headers: { authorization: `Bearer ${b.key}` },
    });
    assert.equal(r.statusCode, 404, r.body);
    assert.equal(r.json<{ code: string }>().code, 'SKILL_NOT_FOUND');
  }
  assert.equal((await keys(store, `skills/${a.id}/`)).length, 1);

  const del = await app.inject({
    method: 'DELETE',
    url: '/v1/skills/pdf',
    headers: { authorization: `Bearer ${a.key}` },
  });
  assert.equal(del.statusCode, 204);
  assert.deepEqual(await keys(store, `skills/${a.id}/`), []);
  const gone = await app.inject({ url: '/v1/skills/pdf', headers: { authorization: `Bearer ${a.key}` } });
  assert.equal(gone.json<{ code: string }>().code, 'SKILL_NOT_FOUND');
});

test('a bad package is SKILL_INVALID naming the entry, and nothing is stored (a replace keeps the old version)', async () => {
  const { app, store } = await harness();
  const a = await tenant(app);
  const good = await tarOf([{ name: 'SKILL.md', body: SKILL_MD('tool') }]);
  assert.equal((await put(app, a.key, 'tool', good)).statusCode, 201);
  const before = await keys(store, `skills/${a.id}/`);

  const md = { name: 'SKILL.md', body: SKILL_MD('tool') };
  const cases: [string, Buffer, RegExp, string | undefined][] = [
    [
      'symlink',
      await tarOf([md, { name: 'link', type: 'symlink', linkname: '/etc/passwd' }]),
      /symlink/,
      'link',
    ],
    ['hard link', await tarOf([md, { name: 'hard', type: 'link', linkname: 'SKILL.md' }]), /link/, 'hard'],
    [
      'device',
      await tarOf([md, { name: 'dev', type: 'character-device', devmajor: 1, devminor: 3 }]),
      /character-device/,
      'dev',
    ],
    ['dot-dot', await tarOf([md, { name: 'a/../../x', body: 'x' }]), /"\.\." segment/, 'a/../../x'],
    ['absolute', await tarOf([md, { name: '/etc/cron.d/x', body: 'x' }]), /absolute/, '/etc/cron.d/x'],
    [
      'control character',
      await tarOf([md, { name: 'a\u0007b', body: 'x' }]),
      /control character/,
      'a\u0007b',
    ],
    [
      'duplicate',
      await tarOf([md, { name: 'x.txt', body: '1' }, { name: './x.txt', body: '2' }]),
      /twice/,
      './x.txt',
    ],
    ['no SKILL.md', await tarOf([{ name: 'README.md', body: 'x' }]), /no SKILL\.md/, 'SKILL.md'],
    [
      'no description',
      await tarOf([{ name: 'SKILL.md', body: '---\nname: tool\n---\nbody\n' }]),
      /no description/,
      'SKILL.md',
    ],
    ['no frontmatter', await tarOf([{ name: 'SKILL.md', body: '# tool\n' }]), /frontmatter/, 'SKILL.md'],
    ['name mismatch', await tarOf([{ name: 'SKILL.md', body: SKILL_MD('other') }]), /"other"/, 'SKILL.md'],
    [
      'not a tar',
      Buffer.from('hello, this is not a tar archive at all'.repeat(20)),
      /not a valid tar/,
      undefined,
    ],
    ['empty body', Buffer.alloc(0), /empty/, undefined],
  ];
  for (const [what, body, message, entry] of cases) {
    const r = await put(app, a.key, 'tool', body);
    assert.equal(r.statusCode, 422, `${what}: ${r.body}`);
    const p = r.json<{ code: string; detail: string; entry?: string }>();
    assert.equal(p.code, 'SKILL_INVALID', what);
    assert.match(p.detail, message, what);
    if (entry !== undefined) assert.equal(p.entry, entry, `${what}: ${r.body}`);
  }
  for (const name of ['Bad_Name', 'hooks', '-x', 'a'.repeat(65)]) {
    const r = await put(app, a.key, name, good);
    assert.equal(r.statusCode, 422, `${name}: ${r.body}`);
    assert.equal(r.json<{ code: string }>().code, 'SKILL_INVALID');
  }
  assert.deepEqual(await keys(store, `skills/${a.id}/`), before, 'nothing new was stored');
  const one = await app.inject({ url: '/v1/skills/tool', headers: { authorization: `Bearer ${a.key}` } });
  assert.equal(one.json<{ version: number }>().version, 1, 'the old version stays');
});
