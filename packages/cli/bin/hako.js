#!/usr/bin/env node
import { readFileSync, statSync } from 'node:fs';

const argv = process.argv.slice(2);
const root = new URL('../../../', import.meta.url);
const bundleDir = new URL('../dist/bundle/', import.meta.url);

/**
 * `hako sandbox run` starts from one bundled file (scripts/bundle-cli.mjs, run by npm run build and
 * scripts/setup) instead of ~100 modules, while none of the files it was built from is newer than
 * it; otherwise from the modules, as every other command.
 */
function sandboxRunModule() {
  let fresh = false;
  try {
    const m = JSON.parse(readFileSync(new URL('inputs.json', bundleDir), 'utf8'));
    fresh = m.inputs.length > 0 && m.inputs.every((p) => statSync(new URL(p, root)).mtimeMs <= m.builtAtMs);
  } catch {
    // no bundle (a source checkout before the build), or one of its inputs is gone
  }
  return fresh ? import(new URL('sandbox-run.js', bundleDir).href) : import('../dist/sandbox-run-entry.js');
}

const done =
  argv[0] === 'sandbox' && argv[1] === 'run'
    ? sandboxRunModule().then((m) => m.runSandboxCommand(argv.slice(2), process.env))
    : import('../dist/main.js').then((m) => m.main(argv));

done.then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`hako: internal error: ${err?.stack ?? err}\n`);
    process.exitCode = 1;
  },
);
