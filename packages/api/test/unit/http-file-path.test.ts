import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '@hako/core';
import {
  MAX_FILE_PATH_BYTES,
  MAX_FILE_PATH_DEPTH,
  MAX_FILE_SEGMENT_BYTES,
  assertFilePath,
  filePathProblem,
  workspaceObjectKey,
} from '../../src/http/file-path.js';

test('plain relative paths are accepted as they are', () => {
  for (const p of [
    'a.txt',
    'dir/name.txt',
    'deep/er/still/file',
    '.gitignore',
    'dir/.hidden',
    'x/.hako/not-top-level',
    '.hakoish/file',
    '..foo',
    'foo..',
    'a b/c d.txt',
    'ünïcode/文件.md',
    'emoji-😀.txt',
    'a'.repeat(MAX_FILE_SEGMENT_BYTES),
    Array.from({ length: MAX_FILE_PATH_DEPTH }, () => 'd').join('/'),
  ]) {
    assert.equal(filePathProblem(p), undefined, p);
    assert.equal(assertFilePath(p), p);
  }
});

test('every kind of bad path is refused with FILE_PATH_INVALID and its reason', () => {
  const cases: [string, string][] = [
    ['', 'empty'],
    ['/etc/passwd', 'absolute'],
    ['/', 'absolute'],
    ['..', 'dot_segment'],
    ['../x', 'dot_segment'],
    ['a/../../x', 'dot_segment'],
    ['a/..', 'dot_segment'],
    ['./a', 'dot_segment'],
    ['a/./b', 'dot_segment'],
    ['a//b', 'empty_segment'],
    ['a/', 'empty_segment'],
    ['a\0b', 'control_character'],
    ['a\nb', 'control_character'],
    ['a\tb', 'control_character'],
    ['a\u007fb', 'control_character'],
    ['a\u0085b', 'control_character'],
    ['a\\b', 'backslash'],
    ['..\\x', 'backslash'],
    ['a\uD800b', 'invalid_unicode'],
    ['a\uDC00', 'invalid_unicode'],
    ['.hako', 'reserved'],
    ['.hako/claude/settings.json', 'reserved'],
    ['a'.repeat(MAX_FILE_SEGMENT_BYTES + 1), 'segment_too_long'],
    ['é'.repeat(MAX_FILE_SEGMENT_BYTES / 2 + 1), 'segment_too_long'],
    [Array.from({ length: MAX_FILE_PATH_DEPTH + 1 }, () => 'd').join('/'), 'too_deep'],
    [Array.from({ length: 10 }, () => 'x'.repeat(100)).join('/'), 'too_long'],
  ];
  for (const [p, reason] of cases) {
    assert.equal(filePathProblem(p), reason, JSON.stringify(p));
    assert.throws(
      () => assertFilePath(p),
      (e: unknown) => e instanceof AppError && e.code === 'FILE_PATH_INVALID' && e.details?.reason === reason,
      JSON.stringify(p),
    );
  }
  assert.ok(Buffer.byteLength(cases.at(-1)![0]) > MAX_FILE_PATH_BYTES);
});

test('the object key of a file is workspaces/{tenant}/{conversation}/{path}, never for a bad path', () => {
  assert.equal(workspaceObjectKey('t1', 'c1', 'dir/a.txt'), 'workspaces/t1/c1/dir/a.txt');
  assert.throws(() => workspaceObjectKey('t1', 'c1', '../c2/a.txt'), /"\.\." segment/);
});
