import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findCycles, importGraph, sourceFiles } from '../../../../scripts/check-cycles.js';

test('import cycles are found through .js specifiers, type-only imports, re-exports and index files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hako-cycles-'));
  try {
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'a.ts'), "import { b } from './b.js';\nexport const a = b;\n");
    writeFileSync(join(dir, 'b.ts'), "import type { S } from './sub/index.js';\nexport const b = 1 as S;\n");
    writeFileSync(join(dir, 'sub/index.ts'), "export type { a } from '../a.js';\nexport type S = number;\n");
    writeFileSync(
      join(dir, 'leaf.ts'),
      "import { a } from './a.js';\nimport { z } from 'zod';\nexport { a, z };\n",
    );
    writeFileSync(join(dir, 'self.ts'), "export * from './self.js';\n");
    const cycles = findCycles(importGraph(sourceFiles(dir)));
    const named = cycles.map((c) => c.map((f) => f.slice(dir.length + 1)));
    assert.deepEqual(named.sort(), [['a.ts', 'b.ts', 'sub/index.ts'], ['self.ts']]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a graph without cycles reports none', () => {
  const g = new Map([
    ['a', ['b', 'c']],
    ['b', ['c']],
    ['c', []],
  ]);
  assert.deepEqual(findCycles(g), []);
});
