// Bundles `hako sandbox run` (packages/cli/dist/sandbox-run-entry.js and everything it imports) into
// one file, packages/cli/dist/bundle/sandbox-run.js, which bin/hako.js loads instead of ~100
// modules: Node 20's ES module loader spends some 1.5 ms per module, most of the command's
// start-up. Run after `tsc -b` (npm run build and scripts/setup do). Next to the bundle,
// inputs.json lists what it was built from and when; bin/hako.js uses the bundle only while none
// of those files is newer, so a `tsc -b` without this step never runs stale code.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outDir = join(root, 'packages/cli/dist/bundle');
const builtAtMs = Date.now();
await mkdir(outDir, { recursive: true });
const result = await build({
  absWorkingDir: root,
  entryPoints: ['packages/cli/dist/sandbox-run-entry.js'],
  outfile: join(outDir, 'sandbox-run.js'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // CommonJS dependencies (pino, zod's cjs parts) call require: give the bundle one
  banner: {
    js: "import { createRequire as __hakoCreateRequire } from 'node:module'; const require = __hakoCreateRequire(import.meta.url);",
  },
  // loaded on first use only (Bedrock signing, image tars): never by `sandbox run`
  external: ['@smithy/*', '@aws-crypto/*', 'tar-stream'],
  metafile: true,
  logLevel: 'warning',
});
const inputs = Object.keys(result.metafile.inputs).sort();
await writeFile(join(outDir, 'inputs.json'), `${JSON.stringify({ builtAtMs, inputs })}\n`);
