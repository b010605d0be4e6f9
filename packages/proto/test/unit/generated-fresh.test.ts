// The generated TypeScript in packages/proto/gen is committed; this regenerates it from the .proto
// files with the pinned buf and ts-proto and fails when the committed copy differs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const protoDir = fileURLToPath(new URL('../..', import.meta.url));
const buf = join(protoDir, '..', '..', 'node_modules', '.bin', 'buf');

function files(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) files(p, out);
    else out.push(p);
  }
  return out;
}

test('generated code in packages/proto/gen matches the .proto files (run `npm run proto:gen`)', () => {
  const out = mkdtempSync(join(tmpdir(), 'hako-proto-'));
  try {
    execFileSync(buf, ['generate', '-o', out], { cwd: protoDir, stdio: ['ignore', 'pipe', 'pipe'] });
    const fresh = files(join(out, 'gen'))
      .map((f) => relative(join(out, 'gen'), f))
      .sort();
    const committed = files(join(protoDir, 'gen'))
      .map((f) => relative(join(protoDir, 'gen'), f))
      .sort();
    assert.deepEqual(committed, fresh, 'the set of generated files differs');
    for (const f of fresh) {
      const a = readFileSync(join(protoDir, 'gen', f), 'utf8');
      const b = readFileSync(join(out, 'gen', f), 'utf8');
      assert.ok(a === b, `packages/proto/gen/${f} is stale: run \`npm run proto:gen\` and commit it`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
