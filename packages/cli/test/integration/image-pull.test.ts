import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatPullProgress } from '../../src/commands/image.js';

test('pull progress: one readable line per phase, bytes in MiB with a percentage', () => {
  const ref = '127.0.0.1:5000/tools:1';
  const d = 'sha256:0123456789abcdef0123456789abcdef';
  assert.equal(formatPullProgress(ref, { phase: 'resolving' }), `${ref}: resolving`);
  assert.equal(
    formatPullProgress(ref, { phase: 'manifest', digest: d }),
    `${ref}: manifest sha256:0123456789ab…`,
  );
  assert.equal(
    formatPullProgress(ref, { phase: 'blob', digest: d, bytesDone: 3 * 2 ** 20, bytesTotal: 12 * 2 ** 20 }),
    `${ref}: downloading sha256:0123456789ab… 3.0 MiB / 12.0 MiB (25%)`,
  );
  assert.equal(
    formatPullProgress(ref, { phase: 'blob', bytesDone: 0, bytesTotal: 0 }),
    `${ref}: downloading 0.0 MiB / 0.0 MiB`,
  );
  assert.equal(
    formatPullProgress(ref, { phase: 'unpacking', digest: d }),
    `${ref}: unpacking sha256:0123456789ab…`,
  );
  assert.equal(formatPullProgress(ref, { phase: 'done', digest: d }), `${ref}: done sha256:0123456789ab…`);
});

test('hako image pull from a registry that does not answer fails with the code and quietly when not a TTY', () => {
  const state = mkdtempSync(join(tmpdir(), 'hako-pull-'));
  try {
    const main = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
    const r = spawnSync(
      process.execPath,
      [
        '--conditions=source',
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        `import { main } from ${JSON.stringify(main)}; process.exitCode = await main(process.argv.slice(1));`,
        'image',
        'pull',
        '127.0.0.1:1/nothing/here:1',
      ],
      {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HAKO_STATE_DIR: state, HAKO_RUN_DIR: state },
        encoding: 'utf8',
      },
    );
    assert.notEqual(r.status, 0);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /\[IMAGE_PULL_FAILED\]/);
    assert.doesNotMatch(r.stderr, /\r/, 'no progress line when stderr is not a terminal');
  } finally {
    rmSync(state, { recursive: true, force: true });
  }
});
