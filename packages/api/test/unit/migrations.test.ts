import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AppError } from '@hako/core';
import { defaultMigrationsDir, loadMigrations } from '../../src/db/migrate.js';

const PACKAGE_MIGRATIONS = fileURLToPath(new URL('../../migrations/', import.meta.url));

async function withDir(files: Record<string, string>, fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'hako-mig-'));
  try {
    for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('the default directory is the package migrations folder, found from the module file', async () => {
  assert.equal(path.resolve(defaultMigrationsDir()), path.resolve(PACKAGE_MIGRATIONS));
  const files = (await readdir(PACKAGE_MIGRATIONS)).filter((f) => f.endsWith('.sql'));
  assert.ok(files.includes('0001_init.sql'));
  const loaded = await loadMigrations();
  assert.equal(loaded.length, files.length);
  assert.deepEqual(
    loaded.map((m) => m.version),
    loaded.map((_, i) => i + 1),
    'package migrations are numbered 1..n without holes',
  );
  const init = loaded[0];
  assert.ok(init);
  assert.equal(init.name, 'init');
  const bytes = await readFile(path.join(PACKAGE_MIGRATIONS, '0001_init.sql'));
  assert.equal(init.checksum, createHash('sha256').update(bytes).digest('hex'));
  assert.match(init.sql, /CREATE TABLE conversation_events/);
});

test('migrations load in version order with their names, other files ignored', async () => {
  await withDir(
    {
      '0002_b.sql': 'SELECT 2;',
      '0010_later_one.sql': 'SELECT 10;',
      '0001_a.sql': 'SELECT 1;',
      'README.md': 'x',
    },
    async (dir) => {
      const list = await loadMigrations(dir);
      assert.deepEqual(
        list.map((m) => [m.version, m.name, m.sql]),
        [
          [1, 'a', 'SELECT 1;'],
          [2, 'b', 'SELECT 2;'],
          [10, 'later_one', 'SELECT 10;'],
        ],
      );
      assert.equal(list[0]?.checksum, createHash('sha256').update('SELECT 1;').digest('hex'));
    },
  );
});

test('a badly named .sql file, a duplicate version, version 0 and a missing directory are CONFIG_INVALID', async () => {
  const refused = async (files: Record<string, string>, pattern: RegExp): Promise<void> => {
    await withDir(files, async (dir) => {
      await assert.rejects(loadMigrations(dir), (err: unknown) => {
        assert.ok(err instanceof AppError);
        assert.equal(err.code, 'CONFIG_INVALID');
        assert.match(err.message, pattern);
        return true;
      });
    });
  };
  await refused({ '0001_init.sql': '', '2_bad.sql': '' }, /2_bad\.sql is not named NNNN_lowercase_name\.sql/);
  await refused({ '0001_Init.sql': '' }, /not named/);
  await refused({ '0001_a.sql': '', '0001_b.sql': '' }, /Two migration files have version 0001/);
  await refused({ '0000_zero.sql': '' }, /versions start at 0001/);
  await assert.rejects(loadMigrations('/nonexistent/hako-migrations'), { code: 'CONFIG_INVALID' });
});
