// Pure parts of the workspace sync: path rules, tar entry classification, diffing against the
// manifest, restore batching, and retry with backoff.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '@hako/core';
import { diffWorkspace, isUnchanged } from '../../src/workspace/diff.js';
import type { ManifestEntry } from '../../src/workspace/diff.js';
import {
  MAX_OBJECT_KEY_BYTES,
  isHakoStatePath,
  isSafeId,
  syncPathProblem,
  workspacePrefix,
} from '../../src/workspace/paths.js';
import { planBatches, tarEntryBytes } from '../../src/workspace/restore.js';
import { backoffDelayMs, isRetryable, withRetry } from '../../src/workspace/retry.js';
import { classifyTarEntry } from '../../src/workspace/tar-entries.js';

const PREFIX = workspacePrefix(
  '3f1c2a0e-1111-4222-8333-944455556666',
  '0a1b2c3d-aaaa-4bbb-8ccc-ddddeeeeffff',
);
const PB = Buffer.byteLength(PREFIX);
const sha = (c: string): string => c.repeat(64);

test('workspacePrefix names workspaces/{tenant}/{conversation}/ and refuses ids that are not one safe segment', () => {
  assert.equal(workspacePrefix('t1', 'c1'), 'workspaces/t1/c1/');
  for (const bad of ['', '.', '..', 'a/b', 'a\0b', 'x'.repeat(129), 'a b']) {
    assert.throws(() => workspacePrefix(bad, 'c1'), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => workspacePrefix('t1', bad), { code: 'INVALID_ARGUMENT' });
    assert.equal(isSafeId(bad), false, bad);
  }
});

test('syncPathProblem accepts ordinary names and refuses .., absolute, NUL, control characters, empty segments, over-long', () => {
  for (const ok of [
    'a.txt',
    'src/main.ts',
    '.hako/claude/x.json',
    'dir with space/ü.md',
    '..a/b..',
    'x'.repeat(255),
  ]) {
    assert.equal(syncPathProblem(ok, PB), undefined, ok);
  }
  const cases: [string, string][] = [
    ['', 'empty'],
    ['/etc/passwd', 'absolute'],
    ['a\0b', 'nul'],
    ['a\nb', 'control_character'],
    ['a\u0085b', 'control_character'],
    ['a//b', 'empty_segment'],
    ['a/', 'empty_segment'],
    ['../x', 'dot_segment'],
    ['a/../../x', 'dot_segment'],
    ['./a', 'dot_segment'],
    ['x'.repeat(256), 'segment_too_long'],
    [`${'d/'.repeat(500)}f`, 'too_long'],
  ];
  for (const [path, problem] of cases) assert.equal(syncPathProblem(path, PB), problem, JSON.stringify(path));
  // the object key (prefix + path) must fit in S3's 1024 bytes, counted in UTF-8
  const room = MAX_OBJECT_KEY_BYTES - PB;
  const ofBytes = (n: number, ch = 'a'): string => {
    const seg = `${ch.repeat(99)}/`; // 100 bytes for 'a'
    const segBytes = Buffer.byteLength(seg);
    const k = Math.floor((n - 1) / segBytes);
    const tail = n - k * segBytes;
    return seg.repeat(k) + 'b'.repeat(tail);
  };
  assert.equal(Buffer.byteLength(ofBytes(room)), room);
  assert.equal(syncPathProblem(ofBytes(room), PB), undefined);
  assert.equal(syncPathProblem(ofBytes(room + 1), PB), 'too_long');
  // 'é' is two bytes: a path of room/2+1 of them is too long though it has fewer characters
  const e = 'é'.repeat(Math.floor(room / 2) + 1).replace(/(.{100})/g, '$1/');
  assert.ok(e.length < room + 20);
  assert.equal(syncPathProblem(e, PB), 'too_long');
});

test('isHakoStatePath is .hako and below, nothing else', () => {
  assert.equal(isHakoStatePath('.hako'), true);
  assert.equal(isHakoStatePath('.hako/claude/projects/x.jsonl'), true);
  assert.equal(isHakoStatePath('.hakofile'), false);
  assert.equal(isHakoStatePath('src/.hako/x'), false);
});

test('classifyTarEntry keeps regular files with valid names and skips links, devices, FIFOs and hostile names', () => {
  assert.deepEqual(classifyTarEntry({ name: 'src/a.ts', type: 'file', size: 3 }, PB), {
    kind: 'file',
    path: 'src/a.ts',
    size: 3,
  });
  assert.deepEqual(classifyTarEntry({ name: './b', type: 'contiguous-file', size: 0 }, PB), {
    kind: 'file',
    path: 'b',
    size: 0,
  });
  assert.deepEqual(classifyTarEntry({ name: 'src/', type: 'directory', size: 0 }, PB), { kind: 'directory' });
  const skipped = (name: string, type: string | null): string => {
    const c = classifyTarEntry({ name, type, size: 0 }, PB);
    assert.equal(c.kind, 'skipped', `${name} ${type}`);
    return c.kind === 'skipped' ? c.skipped.reason : '';
  };
  assert.equal(skipped('passwd', 'symlink'), 'symlink');
  assert.equal(skipped('up', 'symlink'), 'symlink');
  assert.equal(skipped('hard', 'link'), 'hard_link');
  assert.equal(skipped('null', 'character-device'), 'device');
  assert.equal(skipped('sda', 'block-device'), 'device');
  assert.equal(skipped('pipe', 'fifo'), 'fifo');
  assert.equal(skipped('weird', null), 'unknown_type');
  assert.equal(skipped('../../etc/cron.d/x', 'file'), 'dot_segment');
  assert.equal(skipped('/etc/passwd', 'file'), 'absolute');
  assert.equal(skipped('a\0b', 'file'), 'nul');
  assert.equal(skipped('bad\uFFFDname', 'file'), 'not_utf8');
  assert.equal(skipped(`${'d/'.repeat(600)}f`, 'file'), 'too_long');
  // reported names are cut, never echoed whole
  const long = classifyTarEntry({ name: `${'z'.repeat(5000)}/../x`, type: 'file', size: 0 }, PB);
  assert.ok(long.kind === 'skipped' && long.skipped.path.length <= 301);
});

test('diffWorkspace: created, modified, deleted and unchanged against the manifest; .hako/ changes are not registered', () => {
  const m = new Map<string, ManifestEntry>([
    ['same.txt', { sha256: sha('a'), size: 1 }],
    ['changed.txt', { sha256: sha('b'), size: 2 }],
    ['resized.txt', { sha256: sha('c'), size: 3 }],
    ['gone.txt', { sha256: sha('d'), size: 4 }],
    ['.hako/claude/old.json', { sha256: sha('e'), size: 5 }],
  ]);
  const cur = new Map<string, ManifestEntry>([
    ['same.txt', { sha256: sha('a'), size: 1 }],
    ['changed.txt', { sha256: sha('f'), size: 2 }],
    ['resized.txt', { sha256: sha('c'), size: 30 }],
    ['new/file.md', { sha256: sha('0'), size: 6 }],
    ['.hako/claude/session.jsonl', { sha256: sha('1'), size: 7 }],
  ]);
  const d = diffWorkspace(cur, m);
  assert.equal(d.unchanged, 1);
  assert.deepEqual(
    d.uploads.map((u) => u.path),
    ['.hako/claude/session.jsonl', 'changed.txt', 'new/file.md', 'resized.txt'],
  );
  assert.deepEqual(d.deletes, ['.hako/claude/old.json', 'gone.txt']);
  assert.deepEqual(
    d.changes.map((c) => [c.path, c.kind, c.register, c.size]),
    [
      ['.hako/claude/old.json', 'deleted', false, 5],
      ['.hako/claude/session.jsonl', 'created', false, 7],
      ['changed.txt', 'modified', true, 2],
      ['gone.txt', 'deleted', true, 4],
      ['new/file.md', 'created', true, 6],
      ['resized.txt', 'modified', true, 30],
    ],
  );
  assert.equal(d.changes.find((c) => c.path === 'changed.txt')?.sha256, sha('f'));
  assert.equal(d.changes.find((c) => c.path === 'gone.txt')?.sha256, sha('d'));
  assert.equal(isUnchanged(m, 'same.txt', { sha256: sha('a'), size: 1 }), true);
  assert.equal(isUnchanged(m, 'same.txt', { sha256: sha('a'), size: 2 }), false);
  assert.equal(isUnchanged(m, 'nope', { sha256: sha('a'), size: 1 }), false);

  const empty = diffWorkspace(new Map(), new Map());
  assert.deepEqual([empty.uploads, empty.deletes, empty.changes, empty.unchanged], [[], [], [], 0]);
});

test('restore batching: tar sizes with padding and long-name headers; batches stay within bytes and entries', () => {
  assert.equal(tarEntryBytes('a', 0), 512);
  assert.equal(tarEntryBytes('a', 1), 1024);
  assert.equal(tarEntryBytes('a', 512), 1024);
  assert.equal(tarEntryBytes('a', 513), 1536);
  assert.equal(tarEntryBytes('x'.repeat(101), 1), 1024 + 1536);
  assert.equal(tarEntryBytes('ü', 1), 1024 + 1536);

  const items = Array.from({ length: 10 }, (_, i) => ({ path: `f${i}`, size: 1000 }));
  assert.deepEqual(
    planBatches(items, { maxBytes: 1 << 30, maxEntries: 4 }).map((b) => b.length),
    [4, 4, 2],
  );
  // each entry is 512 + 1024 bytes; 1024 is reserved for the end of the archive
  assert.deepEqual(
    planBatches(items, { maxBytes: 1024 + 3 * 1536, maxEntries: 100 }).map((b) => b.length),
    [3, 3, 3, 1],
  );
  // one file larger than a batch still goes, alone
  assert.deepEqual(
    planBatches([{ path: 'big', size: 10_000 }, ...items.slice(0, 1)], {
      maxBytes: 2048,
      maxEntries: 100,
    }).map((b) => b.map((i) => i.path)),
    [['big'], ['f0']],
  );
  assert.deepEqual(planBatches([], { maxBytes: 10, maxEntries: 1 }), []);
  assert.deepEqual(
    planBatches(items, { maxBytes: 1 << 30, maxEntries: 50_000 }).flat(),
    items,
    'order and items are kept',
  );
});

test('backoff is exponential, capped and fully jittered', () => {
  const policy = { attempts: 6, baseDelayMs: 100, maxDelayMs: 1000 };
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6].map((a) => backoffDelayMs(policy, a, () => 0.999999)),
    [99, 199, 399, 799, 999, 999],
  );
  assert.equal(
    backoffDelayMs(policy, 3, () => 0),
    0,
  );
  assert.equal(
    backoffDelayMs(policy, 3, () => 0.5),
    200,
  );
});

test('withRetry retries STORAGE_FAILED and unknown errors up to the attempts, never OBJECT_NOT_FOUND or argument errors', async () => {
  const policy = { attempts: 4, baseDelayMs: 1, maxDelayMs: 2 };
  let calls = 0;
  const retried: number[] = [];
  const v = await withRetry(
    (attempt) => {
      calls++;
      return attempt < 3 ? Promise.reject(new AppError('STORAGE_FAILED', 'down')) : Promise.resolve('ok');
    },
    { policy, onRetry: (_e, attempt) => retried.push(attempt) },
  );
  assert.equal(v, 'ok');
  assert.equal(calls, 3);
  assert.deepEqual(retried, [1, 2]);

  calls = 0;
  await assert.rejects(
    withRetry(
      () => {
        calls++;
        return Promise.reject(new Error('ECONNREFUSED'));
      },
      { policy },
    ),
    /ECONNREFUSED/,
  );
  assert.equal(calls, 4);

  for (const code of ['OBJECT_NOT_FOUND', 'INVALID_ARGUMENT', 'FILE_PATH_INVALID'] as const) {
    calls = 0;
    await assert.rejects(
      withRetry(
        () => {
          calls++;
          return Promise.reject(new AppError(code, 'no'));
        },
        { policy },
      ),
      { code },
    );
    assert.equal(calls, 1, code);
    assert.equal(isRetryable(new AppError(code, 'x')), false);
  }
  assert.equal(isRetryable(new AppError('STORAGE_FAILED', 'x')), true);
});
