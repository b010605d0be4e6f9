#!/usr/bin/env node
// Runs a test tier (unit | integration | privileged | all) with Node's built-in runner through tsx.
// Node 20's `--test` takes no globs, so the files are collected here.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const TIERS = ['unit', 'integration', 'privileged'];
const arg = process.argv[2] ?? 'all';
const filter = process.argv[3];
const tiers = arg === 'all' ? TIERS : [arg];
for (const t of tiers) {
  if (!TIERS.includes(t)) {
    console.error(`usage: run-tests.mjs [unit|integration|privileged|all] [filter]`);
    process.exit(2);
  }
}

function walk(dir, out) {
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (e.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const files = [];
for (const pkg of readdirSync('packages')) {
  for (const t of tiers) walk(join('packages', pkg, 'test', t), files);
}
const selected = filter ? files.filter((f) => f.includes(filter)) : files;
if (selected.length === 0) {
  console.error('no test files found');
  process.exit(1);
}
if (tiers.includes('privileged') && process.getuid?.() !== 0) {
  console.error('privileged tests need root: run as root (CI does)');
  process.exit(1);
}
// Privileged tests share host-wide things (the bridge, nftables): one file at a time.
const concurrency =
  tiers.includes('privileged') || tiers.includes('integration') ? '1' : String(Math.max(2, 2));
const r = spawnSync(
  process.execPath,
  [
    '--conditions=source',
    '--import',
    'tsx',
    '--test',
    `--test-concurrency=${concurrency}`,
    '--test-reporter=spec',
    ...selected.sort(),
  ],
  { stdio: 'inherit', env: { ...process.env, HAKO_TEST: '1' } },
);
process.exit(r.status ?? 1);
