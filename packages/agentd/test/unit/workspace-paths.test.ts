// Pure validation of workspace-relative paths: what may name something inside /workspace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '@hako/core';
import {
  MAX_NAME_BYTES,
  MAX_PATH_BYTES,
  parseDestDir,
  parseTarEntryName,
  parseWorkspacePath,
} from '../../src/workspace-paths.js';

function assertInvalid(fn: () => unknown, pattern?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof AppError, `want an AppError, got ${String(err)}`);
    assert.equal(err.code, 'FILE_PATH_INVALID');
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

test('relative paths split into their components', () => {
  assert.deepEqual(parseWorkspacePath('a'), ['a']);
  assert.deepEqual(parseWorkspacePath('src/main.ts'), ['src', 'main.ts']);
  assert.deepEqual(parseWorkspacePath('a/b/c/'), ['a', 'b', 'c'], 'one trailing slash names a directory');
  assert.deepEqual(parseWorkspacePath('.hidden/..dots/...'), ['.hidden', '..dots', '...']);
  assert.deepEqual(parseWorkspacePath('sp ace/ünï/a\\b'), ['sp ace', 'ünï', 'a\\b']);
});

test('paths that could leave the workspace or are malformed are FILE_PATH_INVALID', () => {
  assertInvalid(() => parseWorkspacePath(''), /empty/);
  assertInvalid(() => parseWorkspacePath('/etc/passwd'), /absolute/);
  assertInvalid(() => parseWorkspacePath('/'), /absolute/);
  assertInvalid(() => parseWorkspacePath('../x'), /"\.\."/);
  assertInvalid(() => parseWorkspacePath('a/../../x'), /"\.\."/);
  assertInvalid(() => parseWorkspacePath('a/..'), /"\.\."/);
  assertInvalid(() => parseWorkspacePath('..'), /"\.\."/);
  assertInvalid(() => parseWorkspacePath('.'), /"\."/);
  assertInvalid(() => parseWorkspacePath('./a'), /"\."/);
  assertInvalid(() => parseWorkspacePath('a/./b'), /"\."/);
  assertInvalid(() => parseWorkspacePath('a//b'), /empty component/);
  assertInvalid(() => parseWorkspacePath('a//'), /empty component/);
  assertInvalid(() => parseWorkspacePath('a\0b'), /NUL/);
  assertInvalid(() => parseWorkspacePath('a/b\0/../c'), /NUL/);
  assertInvalid(() => parseWorkspacePath(42 as unknown as string), /not a string/);
});

test('names over NAME_MAX bytes and paths over PATH_MAX bytes are refused, counted in UTF-8 bytes', () => {
  assert.deepEqual(parseWorkspacePath('x'.repeat(MAX_NAME_BYTES)), ['x'.repeat(MAX_NAME_BYTES)]);
  assertInvalid(() => parseWorkspacePath('x'.repeat(MAX_NAME_BYTES + 1)), /longer than 255 bytes/);
  // 128 two-byte characters: 128 characters but 256 bytes
  assertInvalid(() => parseWorkspacePath('é'.repeat(128)), /longer than 255 bytes/);
  const longOk = Array.from({ length: 16 }, () => 'y'.repeat(254)).join('/'); // 16*255-1 = 4079 bytes
  assert.equal(parseWorkspacePath(longOk).length, 16);
  const tooLong = `${longOk}/${'z'.repeat(MAX_PATH_BYTES - longOk.length)}`;
  assertInvalid(() => parseWorkspacePath(tooLong), /longer than 4095 bytes/);
});

test('the destination directory may be empty (the workspace root)', () => {
  assert.deepEqual(parseDestDir(''), []);
  assert.deepEqual(parseDestDir('uploads/in'), ['uploads', 'in']);
  assertInvalid(() => parseDestDir('../up'), /destination directory/);
  assertInvalid(() => parseDestDir('/abs'), /absolute/);
  assertInvalid(() => parseDestDir('.'));
});

test('tar entry names: leading ./ (tar -C dir .) is accepted, everything else as workspace paths', () => {
  assert.deepEqual(parseTarEntryName('./'), []);
  assert.deepEqual(parseTarEntryName('.'), []);
  assert.deepEqual(parseTarEntryName('./a/b'), ['a', 'b']);
  assert.deepEqual(parseTarEntryName('././a/'), ['a']);
  assert.deepEqual(parseTarEntryName('a/b.txt'), ['a', 'b.txt']);
  assertInvalid(() => parseTarEntryName(''), /empty name/);
  assertInvalid(() => parseTarEntryName('a/../../x'), /tar entry/);
  assertInvalid(() => parseTarEntryName('./../x'), /"\.\."/);
  assertInvalid(() => parseTarEntryName('../x'), /"\.\."/);
  assertInvalid(() => parseTarEntryName('/etc/x'), /absolute/);
  assertInvalid(() => parseTarEntryName('.//etc/x'), /absolute/);
  assertInvalid(() => parseTarEntryName('./a/./b'), /"\."/);
  assertInvalid(() => parseTarEntryName('a\0'), /NUL/);
});
