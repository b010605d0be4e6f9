/**
 * The README's first command from scratch: the repository (its committed HEAD) cloned into a
 * temporary directory, and `npm run demo` run there as a newcomer would: setup (npm ci, the
 * build), the embedded stack, the agent session, the file list, everything stopped, exit 0.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { DEMO_FILE, DEMO_OUTPUT } from '@hako/testkit';
import { REPO_ROOT } from '../../../sandbox/test/helpers/test-host.js';

// Under /var/tmp, world-readable: the sandbox user must be able to reach the clone's files that
// hakod bind-mounts (the Claude Code binary in its node_modules).
const dir = mkdtempSync('/var/tmp/hako-demo-clone-');
chmodSync(dir, 0o755);

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('a fresh clone runs `npm run demo` to the end: exit 0, the program ran, fib.py listed', async () => {
  const clone = join(dir, 'hako');
  execFileSync('git', ['clone', '--quiet', REPO_ROOT, clone], { stdio: 'ignore' });
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: process.env.HOME ?? '/root',
    LANG: 'C.UTF-8',
    CI: 'true',
    // Its own environment name, bridge and subnet, apart from the demo test and a running `hako up`.
    HAKO_ENV: 'democlone',
    HAKO_BRIDGE: 'hakodc0',
    CNI_SUBNET: '10.209.12.0/24',
  };
  const r = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
    const child = spawn('npm', ['run', 'demo'], { cwd: clone, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 900_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
  assert.equal(r.code, 0, r.out.slice(-4000));
  assert.ok(r.out.includes(DEMO_OUTPUT), `the program's output is shown:\n${r.out.slice(-3000)}`);
  assert.match(r.out, /▶ Write/);
  assert.match(r.out, /▶ Bash/);
  assert.match(r.out, /✓ completed/);
  assert.match(
    r.out,
    new RegExp(`${DEMO_FILE.replace('.', '\\.')}\\s+\\d+ B`),
    'the workspace listing names the file',
  );
});
