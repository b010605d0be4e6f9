/* eslint-disable @typescript-eslint/require-await -- the in-memory ports implement async interfaces without awaiting */
// The execute flow with attachments (in-memory ports): they are placed after the sandbox is ready
// (and restored) and before the agent starts; a placement failure fails the run without running
// the agent and still syncs the workspace back; the tar written into the sandbox holds the files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import tarStream from 'tar-stream';
import { AppError, silentLogger } from '@hako/core';
import { beginExecute } from '../../src/execute/execute-run.js';
import type { Attachment, AttachmentPort, ExecuteDeps } from '../../src/execute/execute-run.js';
import { createAttachmentPort, packFiles } from '../../src/execute/attachments.js';
import type { HeldLock, StoredEvent } from '../../src/types.js';
import { testConversation, testTenant } from '../helpers/fixtures.js';

const tenant = testTenant();
const conversation = testConversation({ title: 'x' });

function attachment(path: string, text: string): Attachment {
  const data = Buffer.from(text);
  return { path, data, sha256: createHash('sha256').update(data).digest('hex'), contentType: 'text/plain' };
}

function harness(place: AttachmentPort['place'] | undefined) {
  const steps: string[] = [];
  const events: StoredEvent[] = [];
  const finished: { status: string; errorCode: string | undefined }[] = [];
  let seq = 0;
  const lock: HeldLock = { key: 'k', token: 't', renew: async () => true, release: async () => true };
  const deps: ExecuteDeps = {
    locks: { acquire: async () => lock, isHeld: async () => false },
    slots: { acquire: async () => ({ release: async () => undefined, renew: async () => true }) },
    logger: silentLogger(),
    lockTtlMs: 60_000,
    pingIntervalMs: 60_000,
    runTimeoutMs: 60_000,
    runs: {
      startRun: async () => 'run-1',
      append: async (_t, c, r, ev) => {
        const s = { ...ev, conversationId: c, runId: r, seq: ++seq, timestamp: '' };
        events.push(s);
        return s;
      },
      finishRun: async (i) => {
        finished.push({ status: i.status, errorCode: i.errorCode });
        return { ...i.done, conversationId: i.conversationId, runId: i.runId, seq: ++seq, timestamp: '' };
      },
    },
    sandboxes: {
      ensure: async () => {
        steps.push('ensure');
        return { node: 'n1', sandboxId: 'sb1', created: true };
      },
    },
    workspace: {
      restore: async () => {
        steps.push('restore');
        return { files: 0, bytes: 0 };
      },
      syncBack: async () => {
        steps.push('syncBack');
        return { uploaded: 0, deleted: 0, unchanged: 0, changes: [], complete: true };
      },
    },
    agent: {
      run: async () => {
        steps.push('agent');
        return {
          status: 'completed',
          result: 'ok',
          isError: false,
          usage: { inputTokens: 1, outputTokens: 1, cacheCreationInputTokens: 0, cacheReadInputTokens: 0 },
          costUsd: 0,
          turnCount: 1,
          sessionId: 's',
          contextTokens: 1,
        };
      },
    },
    ...(place === undefined
      ? {}
      : {
          attachments: {
            place: async (...args) => {
              steps.push('attachments');
              return place(...args);
            },
          },
        }),
  };
  return { deps, steps, events, finished };
}

test('attachments are placed after the sandbox and its restore, before the agent', async () => {
  let got: readonly Attachment[] = [];
  let runId = '';
  const h = harness(async (_target, _tenant, _conv, id, files) => {
    got = files;
    runId = id;
    return { files: files.length, bytes: 7 };
  });
  const files = [attachment('a.txt', 'abc'), attachment('d/b.txt', 'defg')];
  const handle = await beginExecute(h.deps, { tenant, conversation, prompt: 'p', attachments: files });
  await handle.run({ onEvent: async () => undefined });
  assert.deepEqual(h.steps, ['ensure', 'restore', 'attachments', 'agent', 'syncBack']);
  assert.equal(got, files);
  assert.equal(runId, 'run-1');
  const progress = h.events.filter((e) => e.type === 'progress' && e.data.step === 'attachments');
  assert.deepEqual(
    progress.map((e) => e.data),
    [
      { step: 'attachments', status: 'started' },
      { step: 'attachments', status: 'done', files: 2, bytes: 7 },
    ],
  );
  assert.deepEqual(h.finished, [{ status: 'completed', errorCode: undefined }]);
});

test('without attachments nothing is placed', async () => {
  const h = harness(async () => assert.fail('placed'));
  await (
    await beginExecute(h.deps, { tenant, conversation, prompt: 'p' })
  ).run({ onEvent: async () => undefined });
  assert.deepEqual(h.steps, ['ensure', 'restore', 'agent', 'syncBack']);
});

test('a failed placement fails the run before the agent; the workspace is still synced back', async () => {
  const h = harness(async () => {
    throw new AppError('QUOTA_EXCEEDED', 'the workspace is full');
  });
  const handle = await beginExecute(h.deps, {
    tenant,
    conversation,
    prompt: 'p',
    attachments: [attachment('a', 'x')],
  });
  await handle.run({ onEvent: async () => undefined });
  assert.deepEqual(h.steps, ['ensure', 'restore', 'attachments', 'syncBack']);
  assert.deepEqual(h.finished, [{ status: 'failed', errorCode: 'QUOTA_EXCEEDED' }]);
  assert.equal(h.events.find((e) => e.type === 'error')?.data.code, 'QUOTA_EXCEEDED');
});

test('attachments without a wired port fail the run rather than being dropped', async () => {
  const h = harness(undefined);
  const handle = await beginExecute(h.deps, {
    tenant,
    conversation,
    prompt: 'p',
    attachments: [attachment('a', 'x')],
  });
  await handle.run({ onEvent: async () => undefined });
  assert.deepEqual(h.steps, ['ensure', 'restore', 'syncBack']);
  assert.equal(h.finished[0]?.status, 'failed');
});

async function untar(tar: Buffer): Promise<Map<string, { text: string; mode: number | undefined }>> {
  const out = new Map<string, { text: string; mode: number | undefined }>();
  const ex = tarStream.extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (h, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => {
        chunks.push(c as Buffer);
      });
      stream.on('end', () => {
        out.set(h.name, { text: Buffer.concat(chunks).toString(), mode: h.mode });
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

test('the port stores each file as an upload (with the run) and then writes them all into the sandbox', async () => {
  const order: string[] = [];
  const registered: unknown[] = [];
  let tar: Buffer | undefined;
  const port = createAttachmentPort({
    store: {
      put: async (key, body, opts) => {
        order.push(`put ${key} ${body.toString()} ${opts?.contentType}`);
      },
      get: async () => Buffer.alloc(0),
      getStream: async () => assert.fail(),
      list: async function* () {},
      delete: async () => undefined,
      deletePrefix: async () => 0,
    },
    registerUpload: async (tenantId, conversationId, f) => {
      order.push(`register ${f.path}`);
      registered.push({ tenantId, conversationId, ...f });
      return {
        conversationId,
        path: f.path,
        size: f.size,
        sha256: f.sha256,
        mimeType: f.mimeType,
        version: 1,
        source: 'user_upload',
        createdAt: '',
        updatedAt: '',
      };
    },
    writeTar: async (target, ownerId, t) => {
      order.push(`write ${target.sandboxId} ${ownerId}`);
      tar = t;
    },
    logger: silentLogger(),
  });
  const a = attachment('a.txt', 'abc');
  const r = await port.place({ node: 'n', sandboxId: 'sb1', created: false }, tenant, conversation, 'run-9', [
    a,
    attachment('deep/dir/b.txt', 'defg'),
  ]);
  assert.deepEqual(r, { files: 2, bytes: 7 });
  assert.deepEqual(order, [
    'put workspaces/t1/c1/a.txt abc text/plain',
    'register a.txt',
    'put workspaces/t1/c1/deep/dir/b.txt defg text/plain',
    'register deep/dir/b.txt',
    'write sb1 t1',
  ]);
  assert.deepEqual(registered[0], {
    tenantId: 't1',
    conversationId: 'c1',
    path: 'a.txt',
    size: 3,
    sha256: a.sha256,
    mimeType: 'text/plain',
    runId: 'run-9',
  });
  const entries = await untar(tar!);
  assert.deepEqual([...entries.keys()], ['a.txt', 'deep/dir/b.txt']);
  assert.equal(entries.get('deep/dir/b.txt')?.text, 'defg');
  assert.equal(entries.get('a.txt')?.mode, 0o644);
  assert.equal((await untar(await packFiles([]))).size, 0);
});
