// Workspace restore and sync-back against a real S3-compatible server (s3rver) and hakod's real
// gRPC service and file transfer code (WriteFiles/ReadFiles over a local directory standing in for
// a sandbox's /workspace; the privileged test does the same with a real sandbox). Covers: restore
// in batches, drift against the manifest, sync-back of exactly the changed files, links and FIFOs
// skipped, retries, a store that stays down (spool kept, resumePending finishes it after a
// restart), per-conversation ordering of pending runs, cross-process locks, and size limits.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { AppError, createLogger } from '@hako/core';
import { startS3 } from '@hako/testkit';
import type { S3Service } from '@hako/testkit';
import { readTarFromWorkspace, writeTarToWorkspace } from '@hako/agentd';
import type { AgentClient } from '@hako/proto';
import { S3ObjectStore } from '../../src/storage/s3-object-store.js';
import type { ObjectInfo, ObjectStore } from '../../src/types.js';
import { restoreWorkspace } from '../../src/workspace/restore.js';
import { WorkspaceSync } from '../../src/workspace/workspace-sync.js';
import type { WorkspaceSyncOptions } from '../../src/workspace/workspace-sync.js';
import type { ManifestEntry } from '../../src/workspace/diff.js';
import { LOCK_FILE, PENDING_FILE, readPending } from '../../src/workspace/spool.js';
import { FakeBackend } from '../../../agentd/test/integration/fake-backend.js';
import { startHarness } from '../../../agentd/test/integration/grpc-harness.js';
import type { Harness } from '../../../agentd/test/integration/grpc-harness.js';

const logger = createLogger({ level: 'error', name: 'workspace-sync-test' });
const SANDBOX = 'abcdef123456';
const LIMITS = { maxFileBytes: 64 << 20, maxTotalBytes: 256 << 20, maxEntries: 100_000 };
const FAST_RETRY = { attempts: 3, baseDelayMs: 5, maxDelayMs: 20 };

/** hakod's gRPC service with its real WriteFiles/ReadFiles code over one local directory per sandbox. */
class DirBackend extends FakeBackend {
  readonly roots = new Map<string, string>();
  writeCalls = 0;
  override async writeFiles(
    _o: string,
    id: string,
    destDir: string,
    tar: Readable,
  ): Promise<{ files: number; bytes: number }> {
    this.writeCalls++;
    const uid = process.getuid?.() ?? 0;
    return writeTarToWorkspace(this.root(id), destDir, tar, { uid, gid: process.getgid?.() ?? uid }, LIMITS);
  }
  override async readFiles(_o: string, id: string, paths: readonly string[]): Promise<Readable> {
    return Promise.resolve(readTarFromWorkspace(this.root(id), paths, LIMITS));
  }
  private root(id: string): string {
    const r = this.roots.get(id);
    if (r === undefined) throw new AppError('SANDBOX_NOT_FOUND', id);
    return r;
  }
}

/** An ObjectStore that counts calls and fails the next `failPuts` puts / everything while `down`. */
class FlakyStore implements ObjectStore {
  puts: string[] = [];
  deletes: string[] = [];
  failPuts = 0;
  down = false;
  constructor(
    private readonly inner: ObjectStore & { deleteBatch?: (k: readonly string[]) => Promise<void> },
  ) {}
  private check(): void {
    if (this.down) throw new AppError('STORAGE_FAILED', 'injected: store down');
  }
  async put(key: string, body: Buffer, opts?: { contentType?: string; sha256?: string }): Promise<void> {
    this.check();
    if (this.failPuts > 0) {
      this.failPuts--;
      throw new AppError('STORAGE_FAILED', 'injected: put failed');
    }
    this.puts.push(key);
    return this.inner.put(key, body, opts);
  }
  async get(key: string): Promise<Buffer> {
    this.check();
    return this.inner.get(key);
  }
  async getStream(key: string): Promise<Readable> {
    this.check();
    return this.inner.getStream(key);
  }
  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    this.check();
    yield* this.inner.list(prefix);
  }
  async delete(key: string): Promise<void> {
    this.check();
    this.deletes.push(key);
    return this.inner.delete(key);
  }
  async deletePrefix(prefix: string): Promise<number> {
    this.check();
    return this.inner.deletePrefix(prefix);
  }
}

let s3: S3Service | undefined;
let s3Dir = '';
let harness: Harness | undefined;
let client: AgentClient;
let backend: DirBackend;
let tmp = '';
const stores: S3ObjectStore[] = [];

function s3Store(svc: S3Service = s3!): S3ObjectStore {
  const s = new S3ObjectStore({
    bucket: svc.bucket,
    endpoint: svc.endpoint,
    region: svc.region,
    credentials: { accessKeyId: svc.accessKeyId, secretAccessKey: svc.secretAccessKey },
    maxAttempts: 1,
    connectionTimeoutMs: 1000,
  });
  stores.push(s);
  return s;
}

/** A fresh "sandbox" directory, a tenant and a conversation. */
async function sandbox(): Promise<{
  id: string;
  root: string;
  tenantId: string;
  conversationId: string;
  prefix: string;
}> {
  const root = await mkdtemp(join(tmp, 'ws-'));
  backend.roots.set(SANDBOX, root);
  const tenantId = randomUUID();
  const conversationId = randomUUID();
  return { id: SANDBOX, root, tenantId, conversationId, prefix: `workspaces/${tenantId}/${conversationId}/` };
}

function sha(b: Buffer | string): string {
  return createHash('sha256').update(b).digest('hex');
}

async function putFiles(
  store: ObjectStore,
  prefix: string,
  files: Record<string, string | Buffer>,
): Promise<Map<string, ManifestEntry>> {
  const m = new Map<string, ManifestEntry>();
  await Promise.all(
    Object.entries(files).map(async ([p, c]) => {
      const b = Buffer.isBuffer(c) ? c : Buffer.from(c);
      await store.put(`${prefix}${p}`, b);
      m.set(p, { sha256: sha(b), size: b.length });
    }),
  );
  return m;
}

async function listAll(store: ObjectStore, prefix: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const o of store.list(prefix))
    out.set(o.key.slice(prefix.length), (await store.get(o.key)).toString());
  return out;
}

/** The manifest after applying a sync's changes (what the lead does in its transaction). */
function applied(
  m: ReadonlyMap<string, ManifestEntry>,
  changes: readonly { path: string; sha256: string; size: number; kind: string }[],
): Map<string, ManifestEntry> {
  const next = new Map(m);
  for (const c of changes) {
    if (c.kind === 'deleted') next.delete(c.path);
    else next.set(c.path, { sha256: c.sha256, size: c.size });
  }
  return next;
}

function newSync(
  store: ObjectStore,
  spoolDir: string,
  over: Partial<WorkspaceSyncOptions> = {},
): WorkspaceSync {
  return new WorkspaceSync({ store, spoolDir, logger, retry: FAST_RETRY, ...over });
}

async function spoolRuns(spoolDir: string): Promise<string[]> {
  const out: string[] = [];
  if (!existsSync(spoolDir)) return out;
  for (const c of await readdir(spoolDir))
    for (const r of await readdir(join(spoolDir, c))) out.push(`${c}/${r}`);
  return out;
}

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'hako-ws-sync-'));
  s3Dir = join(tmp, 's3data');
  s3 = await startS3({ dir: s3Dir });
  backend = new DirBackend();
  harness = await startHarness(backend, { AGENT_INSECURE: '1' }, undefined, { logger });
  client = harness.client({ insecure: true });
});

after(async () => {
  for (const s of stores) s.close();
  await harness?.close();
  await s3?.stop();
  await rm(tmp, { recursive: true, force: true });
});

test('restore writes every object into the workspace, in as few WriteFiles as the batch limits allow, and reports drift from the manifest', async () => {
  const store = s3Store();
  const sb = await sandbox();
  const files: Record<string, string> = {};
  for (let i = 0; i < 25; i++) files[`dir${i % 3}/sub/f${i}.txt`] = `content ${i}\n`;
  files['.hako/claude/session.jsonl'] = '{"resume":true}\n';
  files['top.md'] = '# top\n';
  files['big.bin'] = randomBytes(9 * 1024 * 1024).toString('base64'); // over the prefetch size: streamed
  const manifest = await putFiles(store, sb.prefix, files);
  // a key that cannot be a workspace path is skipped, not written
  await store.put(`${sb.prefix}bad\u0085name`, Buffer.from('x'));

  const before = backend.writeCalls;
  const r = await restoreWorkspace({
    store,
    client,
    ownerId: sb.tenantId,
    sandboxId: sb.id,
    tenantId: sb.tenantId,
    conversationId: sb.conversationId,
    manifest,
    batch: { maxEntries: 10 },
    logger,
  });
  assert.equal(r.files, 28);
  assert.equal(r.writeCalls, 3);
  assert.equal(backend.writeCalls - before, 3);
  assert.equal(
    r.bytes,
    [...manifest.values()].reduce((a, e) => a + e.size, 0),
  );
  assert.deepEqual(r.skipped, [{ path: 'bad\u0085name', reason: 'control_character' }]);
  assert.deepEqual(r.drift, { missing: 0, extra: 0, mismatched: 0, examples: [] });
  for (const [p, c] of Object.entries(files)) assert.equal(await readFile(join(sb.root, p), 'utf8'), c, p);

  // one call for an ordinary workspace; drift: a stale manifest entry, an unknown object, a changed one
  const sb2 = await sandbox();
  await putFiles(store, sb2.prefix, { 'a.txt': 'A', 'b.txt': 'B', 'extra.txt': 'E' });
  const stale = new Map<string, ManifestEntry>([
    ['a.txt', { sha256: sha('A'), size: 1 }],
    ['b.txt', { sha256: sha('old B'), size: 5 }],
    ['lost.txt', { sha256: sha('L'), size: 1 }],
  ]);
  const r2 = await restoreWorkspace({
    store,
    client,
    ownerId: sb2.tenantId,
    sandboxId: sb2.id,
    tenantId: sb2.tenantId,
    conversationId: sb2.conversationId,
    manifest: stale,
  });
  assert.equal(r2.writeCalls, 1);
  assert.deepEqual(r2.drift, {
    missing: 1,
    extra: 1,
    mismatched: 1,
    examples: ['lost.txt', 'b.txt', 'extra.txt'],
  });

  // an empty workspace makes no call
  const sb3 = await sandbox();
  const calls = backend.writeCalls;
  const r3 = await restoreWorkspace({
    store,
    client,
    ownerId: sb3.tenantId,
    sandboxId: sb3.id,
    tenantId: sb3.tenantId,
    conversationId: sb3.conversationId,
  });
  assert.deepEqual([r3.files, r3.writeCalls, backend.writeCalls - calls], [0, 0, 0]);
});

test('syncBack uploads exactly the created and modified files, deletes the vanished ones, skips links and FIFOs, and cleans the spool', async () => {
  const store = new FlakyStore(s3Store());
  const spoolDir = join(tmp, 'spool-basic');
  const sync = newSync(store, spoolDir);
  const sb = await sandbox();
  const files: Record<string, string> = {
    'keep.txt': 'keep',
    'edit.txt': 'v1',
    'gone.txt': 'bye',
    'd/deep/x.txt': 'x',
    '.hako/claude/s.json': '{}',
  };
  const manifest = await putFiles(store, sb.prefix, files);
  await sync.restore({
    client,
    ownerId: sb.tenantId,
    sandboxId: sb.id,
    tenantId: sb.tenantId,
    conversationId: sb.conversationId,
  });

  // what an agent does
  await writeFile(join(sb.root, 'edit.txt'), 'v2');
  await unlink(join(sb.root, 'gone.txt'));
  await mkdir(join(sb.root, 'new'), { recursive: true });
  await writeFile(join(sb.root, 'new/made.txt'), 'made by the agent');
  await writeFile(join(sb.root, '.hako/claude/s.json'), '{"turns":2}');
  await symlink('/etc/passwd', join(sb.root, 'passwd'));
  await symlink('../..', join(sb.root, 'd/up'));
  execFileSync('mkfifo', [join(sb.root, 'pipe')]);
  store.puts = [];
  store.deletes = [];

  const runId = randomUUID();
  const r = await sync.syncBack({
    client,
    ownerId: sb.tenantId,
    sandboxId: sb.id,
    tenantId: sb.tenantId,
    conversationId: sb.conversationId,
    runId,
    manifest,
  });
  assert.equal(r.complete, true, r.error);
  assert.equal(r.uploaded, 3);
  assert.equal(r.deleted, 1);
  assert.equal(r.unchanged, 2);
  assert.deepEqual(store.puts.sort(), [
    `${sb.prefix}.hako/claude/s.json`,
    `${sb.prefix}edit.txt`,
    `${sb.prefix}new/made.txt`,
  ]);
  assert.deepEqual(store.deletes, [`${sb.prefix}gone.txt`]);
  assert.deepEqual(
    r.changes.map((c) => [c.path, c.kind, c.register]),
    [
      ['.hako/claude/s.json', 'modified', false],
      ['edit.txt', 'modified', true],
      ['gone.txt', 'deleted', true],
      ['new/made.txt', 'created', true],
    ],
  );
  assert.equal(r.changes.find((c) => c.path === 'new/made.txt')?.sha256, sha('made by the agent'));
  // the symlinks are reported; their targets were never read (the FIFO is not even in hakod's tar)
  assert.deepEqual(
    [...r.skipped].sort((a, b) => a.path.localeCompare(b.path)),
    [
      { path: 'd/up', reason: 'symlink' },
      { path: 'passwd', reason: 'symlink' },
    ],
  );
  assert.equal(r.files, 5);
  const inS3 = await listAll(store, sb.prefix);
  assert.deepEqual(Object.fromEntries(inS3), {
    '.hako/claude/s.json': '{"turns":2}',
    'd/deep/x.txt': 'x',
    'edit.txt': 'v2',
    'keep.txt': 'keep',
    'new/made.txt': 'made by the agent',
  });
  assert.ok(![...inS3.values()].some((v) => v.includes('root:')), 'no /etc/passwd content anywhere');
  assert.deepEqual(await spoolRuns(spoolDir), []);

  // a second sync with nothing changed uploads nothing and leaves no spool
  store.puts = [];
  const again = await sync.syncBack({
    client,
    ownerId: sb.tenantId,
    sandboxId: sb.id,
    tenantId: sb.tenantId,
    conversationId: sb.conversationId,
    runId: randomUUID(),
    manifest: applied(manifest, r.changes),
  });
  assert.deepEqual(
    [again.uploaded, again.deleted, again.unchanged, again.complete, store.puts.length],
    [0, 0, 5, true, 0],
  );
  assert.deepEqual(await spoolRuns(spoolDir), []);
});

test('transient store failures are retried with backoff and the sync completes', async () => {
  const store = new FlakyStore(s3Store());
  const spoolDir = join(tmp, 'spool-retry');
  const sync = newSync(store, spoolDir, { retry: { attempts: 4, baseDelayMs: 5, maxDelayMs: 10 } });
  const sb = await sandbox();
  await writeFile(join(sb.root, 'a.txt'), 'A');
  await writeFile(join(sb.root, 'b.txt'), 'B');
  store.failPuts = 3; // the first three puts fail; one file needs up to 4 attempts
  const r = await sync.syncBack({
    client,
    ownerId: sb.tenantId,
    sandboxId: sb.id,
    tenantId: sb.tenantId,
    conversationId: sb.conversationId,
    runId: randomUUID(),
    manifest: new Map(),
  });
  assert.equal(r.complete, true, r.error);
  assert.equal(store.failPuts, 0);
  assert.deepEqual(Object.fromEntries(await listAll(store, sb.prefix)), { 'a.txt': 'A', 'b.txt': 'B' });
  assert.deepEqual(await spoolRuns(spoolDir), []);
});

test('a store that stays down keeps the spool (pending.json says what is left); after a restart resumePending finishes it and restore then sees the files', async () => {
  const spoolDir = join(tmp, 'spool-down');
  const sb = await sandbox();
  const first = s3Store();
  const manifest = await putFiles(first, sb.prefix, { 'old.txt': 'old', 'remove-me.txt': 'r' });
  await writeFile(join(sb.root, 'old.txt'), 'old');
  await writeFile(join(sb.root, 'new.txt'), 'precious');
  await mkdir(join(sb.root, '.hako/claude'), { recursive: true });
  await writeFile(join(sb.root, '.hako/claude/state.json'), '{"s":1}');

  // the real S3 server goes away mid-life
  await s3!.stop();
  const sync = newSync(first, spoolDir);
  const runId = randomUUID();
  const r = await sync.syncBack({
    client,
    ownerId: sb.tenantId,
    sandboxId: sb.id,
    tenantId: sb.tenantId,
    conversationId: sb.conversationId,
    runId,
    manifest,
  });
  assert.equal(r.complete, false);
  assert.match(r.error ?? '', /STORAGE_FAILED/);
  assert.deepEqual(
    r.changes.map((c) => [c.path, c.kind]),
    [
      ['.hako/claude/state.json', 'created'],
      ['new.txt', 'created'],
      ['remove-me.txt', 'deleted'],
    ],
  );
  const runDir = join(spoolDir, sb.conversationId, runId);
  const pending = await readPending(runDir);
  assert.ok(pending);
  assert.deepEqual(
    pending.uploads.map((u) => u.path),
    ['.hako/claude/state.json', 'new.txt'],
  );
  assert.deepEqual(pending.deletes, ['remove-me.txt']);
  assert.equal(pending.attempts, 1);
  assert.match(pending.lastError ?? '', /STORAGE_FAILED/);
  assert.equal(await readFile(join(runDir, 'objects', sha('precious')), 'utf8'), 'precious');
  assert.equal(existsSync(join(runDir, LOCK_FILE)), false, 'the lock is released while the run waits');

  // the sandbox is gone now: the spool is the only copy
  await rm(sb.root, { recursive: true, force: true });
  // restore refuses to start from a store that lags the manifest
  const sb2 = await sandbox();
  await assert.rejects(
    sync.restore({
      client,
      ownerId: sb.tenantId,
      sandboxId: sb2.id,
      tenantId: sb.tenantId,
      conversationId: sb.conversationId,
    }),
    (e: { code?: string; message?: string }) => {
      assert.equal(e.code, 'STORAGE_FAILED');
      assert.match(e.message ?? '', new RegExp(runId));
      return true;
    },
  );
  const still = await sync.resumePending();
  assert.deepEqual(still.completed, []);
  assert.deepEqual(
    still.waiting.map((w) => w.runId),
    [runId],
  );
  assert.equal((await readPending(runDir))?.attempts, 3);

  // S3 comes back (same data, new port) and the API process restarts: a new instance resumes
  s3 = await startS3({ dir: s3Dir });
  const second = s3Store(s3);
  const restarted = newSync(second, spoolDir);
  const report = await restarted.resumePending();
  assert.deepEqual(
    report.completed.map((c) => c.runId),
    [runId],
  );
  assert.deepEqual(
    report.completed[0]?.changes.map((c) => c.path),
    ['.hako/claude/state.json', 'new.txt', 'remove-me.txt'],
  );
  assert.deepEqual(report.waiting, []);
  assert.deepEqual(await spoolRuns(spoolDir), []);
  assert.deepEqual(Object.fromEntries(await listAll(second, sb.prefix)), {
    '.hako/claude/state.json': '{"s":1}',
    'new.txt': 'precious',
    'old.txt': 'old',
  });
  const back = await restarted.restore({
    client,
    ownerId: sb.tenantId,
    sandboxId: sb2.id,
    tenantId: sb.tenantId,
    conversationId: sb.conversationId,
  });
  assert.equal(back.files, 3);
  assert.equal(await readFile(join(sb2.root, 'new.txt'), 'utf8'), 'precious');
});

test("one conversation's pending runs reach the store in scan order, and restore finishes them before restoring", async () => {
  const store = new FlakyStore(s3Store());
  const spoolDir = join(tmp, 'spool-order');
  const sync = newSync(store, spoolDir);
  const sb = await sandbox();
  const base = {
    client,
    ownerId: sb.tenantId,
    sandboxId: sb.id,
    tenantId: sb.tenantId,
    conversationId: sb.conversationId,
  };
  store.down = true;
  // run 1 creates x.txt; run 2 deletes it and creates y.txt
  await writeFile(join(sb.root, 'x.txt'), 'x');
  const run1 = await sync.syncBack({
    ...base,
    runId: `r1-${randomBytes(3).toString('hex')}`,
    manifest: new Map(),
  });
  assert.equal(run1.complete, false);
  await unlink(join(sb.root, 'x.txt'));
  await writeFile(join(sb.root, 'y.txt'), 'y');
  const m1 = applied(new Map(), run1.changes);
  const run2 = await sync.syncBack({ ...base, runId: `r0-${randomBytes(3).toString('hex')}`, manifest: m1 });
  assert.equal(run2.complete, false);
  assert.deepEqual(
    run2.changes.map((c) => [c.path, c.kind]),
    [
      ['x.txt', 'deleted'],
      ['y.txt', 'created'],
    ],
  );
  assert.equal((await spoolRuns(spoolDir)).length, 2);

  store.down = false;
  store.puts = [];
  store.deletes = [];
  // restore flushes both (run 1 first, though its id sorts after run 2's) and then restores
  const sb2 = await sandbox();
  const r = await sync.restore({ ...base, sandboxId: sb2.id });
  assert.equal(r.files, 1);
  assert.deepEqual(store.puts, [`${sb.prefix}x.txt`, `${sb.prefix}y.txt`]);
  assert.deepEqual(store.deletes, [`${sb.prefix}x.txt`]);
  assert.deepEqual(Object.fromEntries(await listAll(store, sb.prefix)), { 'y.txt': 'y' });
  assert.equal(existsSync(join(sb2.root, 'x.txt')), false);
  assert.equal(await readFile(join(sb2.root, 'y.txt'), 'utf8'), 'y');
  assert.deepEqual(await spoolRuns(spoolDir), []);
});

test('a spool run locked by another live process is left alone; a stale lock (dead process) is taken over', async () => {
  const store = new FlakyStore(s3Store());
  const spoolDir = join(tmp, 'spool-locks');
  const sync = newSync(store, spoolDir);
  const sb = await sandbox();
  await writeFile(join(sb.root, 'f.txt'), 'f');
  store.down = true;
  const runId = randomUUID();
  const r = await sync.syncBack({
    client,
    ownerId: sb.tenantId,
    sandboxId: sb.id,
    tenantId: sb.tenantId,
    conversationId: sb.conversationId,
    runId,
    manifest: new Map(),
  });
  assert.equal(r.complete, false);
  store.down = false;
  const runDir = join(spoolDir, sb.conversationId, runId);

  // another live process on this host holds it (our parent): not touched
  await writeFile(
    join(runDir, LOCK_FILE),
    JSON.stringify({ pid: process.ppid, host: hostname(), since: new Date().toISOString() }),
  );
  const held = await sync.resumePending();
  assert.deepEqual(
    held.waiting.map((w) => [w.runId, w.error]),
    [[runId, undefined]],
  );
  assert.equal(store.puts.length, 0);
  assert.ok(existsSync(join(runDir, PENDING_FILE)));

  // that process died: its lock is stale and the run is finished here
  const dead = execFileSync('sh', ['-c', 'sh -c "echo \\$\\$" ']).toString().trim();
  await writeFile(
    join(runDir, LOCK_FILE),
    JSON.stringify({ pid: Number(dead), host: hostname(), since: new Date().toISOString() }),
  );
  const taken = await sync.resumePending();
  assert.deepEqual(
    taken.completed.map((c) => c.runId),
    [runId],
  );
  assert.deepEqual(Object.fromEntries(await listAll(store, sb.prefix)), { 'f.txt': 'f' });

  // an abandoned scan (no pending.json, its process gone) is removed; a live one is not
  const conv = randomUUID();
  const abandoned = join(spoolDir, conv, 'run-abandoned');
  const live = join(spoolDir, conv, 'run-live');
  for (const [d, pid] of [
    [abandoned, Number(dead)],
    [live, process.ppid],
  ] as const) {
    await mkdir(join(d, 'objects'), { recursive: true });
    await writeFile(join(d, LOCK_FILE), JSON.stringify({ pid, host: hostname(), since: '' }));
  }
  const cleaned = await sync.resumePending();
  assert.equal(cleaned.removed, 1);
  assert.equal(existsSync(abandoned), false);
  assert.equal(existsSync(live), true);
  await rm(dirname(live), { recursive: true, force: true });
});

test('hostile workspaces: over the size limits the sync fails with FILE_TOO_LARGE and leaves no spool; a run is synced once', async () => {
  const store = new FlakyStore(s3Store());
  const spoolDir = join(tmp, 'spool-limits');
  const sb = await sandbox();
  const base = {
    client,
    ownerId: sb.tenantId,
    sandboxId: sb.id,
    tenantId: sb.tenantId,
    conversationId: sb.conversationId,
    manifest: new Map<string, ManifestEntry>(),
  };
  for (let i = 0; i < 5; i++) await writeFile(join(sb.root, `f${i}`), Buffer.alloc(2000, i));
  const cases: [WorkspaceSyncOptions['scanLimits'], RegExp][] = [
    [{ maxTotalBytes: 9000 }, /over 9000 bytes/],
    [{ maxFileBytes: 1999 }, /over the 1999-byte/],
    [{ maxEntries: 4 }, /more than 4 entries/],
  ];
  for (const [scanLimits, msg] of cases) {
    const sync = newSync(store, spoolDir, { scanLimits });
    await assert.rejects(
      sync.syncBack({ ...base, runId: randomUUID() }),
      (e: { code?: string; message?: string }) => {
        assert.equal(e.code, 'FILE_TOO_LARGE');
        assert.match(e.message ?? '', msg);
        return true;
      },
    );
    assert.deepEqual(await spoolRuns(spoolDir), []);
  }
  assert.equal(store.puts.length, 0);

  const sync = newSync(store, spoolDir);
  store.down = true;
  const runId = randomUUID();
  assert.equal((await sync.syncBack({ ...base, runId })).complete, false);
  await assert.rejects(sync.syncBack({ ...base, runId }), { code: 'INVALID_ARGUMENT' });
  store.down = false;
  assert.equal((await sync.resumePending()).completed.length, 1);

  // a sandbox that is not there: hakod's error, no spool
  backend.roots.delete(SANDBOX);
  await assert.rejects(sync.syncBack({ ...base, runId: randomUUID() }), { code: 'SANDBOX_NOT_FOUND' });
  assert.deepEqual(await spoolRuns(spoolDir), []);
});

test('startResumeLoop finishes a waiting run in the background once the store answers, and stop() ends it', async () => {
  const store = new FlakyStore(s3Store());
  const spoolDir = join(tmp, 'spool-loop');
  const sync = newSync(store, spoolDir);
  const sb = await sandbox();
  await writeFile(join(sb.root, 'later.txt'), 'later');
  store.down = true;
  const r = await sync.syncBack({
    client,
    ownerId: sb.tenantId,
    sandboxId: sb.id,
    tenantId: sb.tenantId,
    conversationId: sb.conversationId,
    runId: randomUUID(),
    manifest: new Map(),
  });
  assert.equal(r.complete, false);
  const reports: number[] = [];
  const loop = sync.startResumeLoop(20, (rep) => reports.push(rep.completed.length));
  try {
    await new Promise((res) => setTimeout(res, 100));
    assert.equal(
      reports.reduce((a, b) => a + b, 0),
      0,
      'nothing completes while the store is down',
    );
    store.down = false;
    const deadline = Date.now() + 5000;
    while ((await spoolRuns(spoolDir)).length > 0 && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 20));
    }
  } finally {
    await loop.stop();
  }
  assert.deepEqual(await spoolRuns(spoolDir), []);
  assert.equal(
    reports.reduce((a, b) => a + b, 0),
    1,
  );
  assert.deepEqual(Object.fromEntries(await listAll(store, sb.prefix)), { 'later.txt': 'later' });
});
