/**
 * `hako demo` through the CLI's entry (main() from the working tree's sources, through tsx, as
 * a child process with a throw-away host environment): exit 0, the streamed events rendered
 * (the Write and Bash tool calls, the program's output, the final answer, done), the workspace
 * listing with fib.py and its size, its temporary HAKO_HOME removed and nothing left on the host;
 * and a failure that exits non-zero with the error code and still cleans up.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEMO_ANSWER, DEMO_FILE, DEMO_OUTPUT, DEMO_PROGRAM } from '@hako/testkit';
import { createTestHost, REPO_ROOT } from '../../../sandbox/test/helpers/test-host.js';
import type { TestHost } from '../../../sandbox/test/helpers/test-host.js';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const CHILD = `import { main } from ${JSON.stringify(MAIN)};
process.exitCode = await main(process.argv.slice(1));`;

const hosts: TestHost[] = [];
const dirs: string[] = [];

after(async () => {
  for (const h of hosts) await h.teardown();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** `hako ARGS` from source with exactly `env` (plus PATH), killed after `timeoutMs`. */
function hako(args: string[], env: Record<string, string>, timeoutMs = 240_000): Promise<Result> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--conditions=source', '--import', 'tsx', '--input-type=module', '-e', CHILD, ...args],
      { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** The demo's temporary homes under `tmp` (tsx keeps its cache there too). */
function demoHomes(tmp: string): string[] {
  return readdirSync(tmp).filter((n) => n.startsWith('hako-demo-'));
}

/**
 * What the demo left of its env before the test host's own teardown: sandboxes (netns,
 * processes), the bridge, the nftables tables, cgroups, the env's run directory, its IPAM
 * directory and spare workspace images. The state directory itself (images) is host state and
 * stays.
 */
function demoLeftovers(th: TestHost): string[] {
  const left = th
    .leftovers()
    .filter((l) => !l.startsWith('dir ') && !l.startsWith('mount under') && l !== 'loop device');
  if (existsSync(join(th.runDir, th.hakoEnv))) left.push(`dir ${join(th.runDir, th.hakoEnv)}`);
  // the env's IPAM bookkeeping and its workspace directories (spare volumes included) go too
  const state = th.env.HAKO_STATE_DIR ?? '';
  for (const d of [
    join(state, 'cni', 'ipam', `hako-${th.hakoEnv}`),
    join(state, 'workspaces', th.hakoEnv),
    join(state, 'workspace-images', th.hakoEnv),
  ]) {
    if (existsSync(d)) left.push(`dir ${d}`);
  }
  return left;
}

async function setup(): Promise<{ th: TestHost; env: Record<string, string>; tmp: string }> {
  const th = createTestHost();
  hosts.push(th);
  // The demo's temporary HAKO_HOME goes under TMPDIR: this test's own directory, checked empty after.
  const tmp = await mkdtemp(join(tmpdir(), 'hako-demo-test-'));
  dirs.push(tmp);
  const env: Record<string, string> = { ...th.env, HOME: process.env.HOME ?? '/root', TMPDIR: tmp };
  return { th, env, tmp };
}

test('hako demo: the agent writes fib.py, runs it, answers; events and files are shown; all is stopped', async () => {
  const { th, env, tmp } = await setup();
  const r = await hako(['demo'], env);
  const all = `--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
  assert.equal(r.code, 0, all);
  const out = r.stdout;
  // no ANSI colours when stdout is not a terminal
  assert.doesNotMatch(out, /\x1b\[/);
  // the rendered events, in order: the Write call, the Bash call, its output, the answer, done
  const marks = [
    `▶ Write /workspace/${DEMO_FILE}`,
    `▶ Bash $ python3 ${DEMO_FILE}`,
    `    ${DEMO_OUTPUT}`,
    DEMO_ANSWER,
    '✓ completed · 3 turns',
    'workspace files of conversation',
  ];
  const at = marks.map((m) => out.indexOf(m));
  assert.ok(
    at.every((i) => i >= 0),
    `missing ${marks.filter((_, i) => at[i]! < 0).join(' | ')}\n${all}`,
  );
  assert.deepEqual(
    [...at].sort((a, b) => a - b),
    at,
    all,
  );
  // the file list: fib.py with its size, nothing of the agent's own state
  const size = Buffer.byteLength(DEMO_PROGRAM);
  assert.match(
    out,
    new RegExp(`^  ${DEMO_FILE.replace('.', '\\.')}\\s+${size} B\\s+text/x-python`, 'm'),
    all,
  );
  assert.doesNotMatch(out, /\.hako\//);
  assert.match(out, /hako demo finished in .*everything it started is stopped/);
  // nothing on stderr but what a user should read (not a TTY: no progress lines, no warnings)
  assert.equal(r.stderr.trim(), '', all);
  // the temporary HAKO_HOME is gone, and so is everything the demo made on the host
  const home = /HAKO_HOME (\S+) \(temporary\)/.exec(out)?.[1];
  assert.ok(home !== undefined && home.startsWith(tmp), all);
  assert.ok(!existsSync(home), `${home} was removed`);
  assert.deepEqual(demoHomes(tmp), []);
  assert.deepEqual(demoLeftovers(th), [], 'the demo left its env on the host');
  await th.teardown();
  hosts.splice(hosts.indexOf(th), 1);
  assert.deepEqual(th.leftovers(), []);
  process.stderr.write(`# hako demo took ${r.ms} ms\n`);
});

test('hako demo: a failure exits non-zero with its error code and still cleans up', async () => {
  const { th, env, tmp } = await setup();
  const script = join(tmp, 'bad.json');
  await writeFile(script, JSON.stringify({ turns: [{ tool: 'Bash', input: 'not an object' }] }));
  const bad = await hako(['demo'], { ...env, HAKO_MODEL_SCRIPT: script }, 120_000);
  assert.notEqual(bad.code, 0, bad.stdout);
  assert.match(
    bad.stderr,
    /^hako demo: \[INVALID_ARGUMENT\] HAKO_MODEL_SCRIPT=\S+bad\.json: .*turns\.0\.input/m,
    bad.stderr,
  );
  const missing = await hako(['demo'], { ...env, HAKO_MODEL_SCRIPT: join(tmp, 'nope.json') }, 120_000);
  assert.notEqual(missing.code, 0);
  assert.match(
    missing.stderr,
    /^hako demo: \[CONFIG_INVALID\] HAKO_MODEL_SCRIPT=\S+nope\.json cannot be read/m,
  );
  const usage = await hako(['demo', 'a', 'b'], env, 60_000);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /one argument/);
  const help = await hako(['demo', '--help'], env, 60_000);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: hako demo/);
  // the temporary homes are gone, and nothing is on the host
  assert.deepEqual(demoHomes(tmp), []);
  assert.deepEqual(demoLeftovers(th), [], 'the demo left its env on the host');
  await th.teardown();
  hosts.splice(hosts.indexOf(th), 1);
  assert.deepEqual(th.leftovers(), []);
});

test('hako demo: Ctrl-C during the run stops it cleanly (exit 130, nothing left)', async () => {
  const { th, env, tmp } = await setup();
  // A run that takes a while: the scripted model waits before its first answer.
  const script = join(tmp, 'slow.json');
  await writeFile(script, JSON.stringify({ turns: [{ text: 'slow', delayMs: 60_000 }] }));
  const child = spawn(
    process.execPath,
    ['--conditions=source', '--import', 'tsx', '--input-type=module', '-e', CHILD, 'demo'],
    { cwd: REPO_ROOT, env: { ...env, HAKO_MODEL_SCRIPT: script }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  const killer = setTimeout(() => child.kill('SIGKILL'), 180_000);
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
    // the agent session started in its sandbox: interrupt it
    if (/session started/.test(stdout) && !child.killed) child.kill('SIGINT');
  });
  const code = await exited;
  clearTimeout(killer);
  assert.equal(code, 130, `${stdout}\n${stderr}`);
  assert.match(stderr, /hako demo: SIGINT: stopping/);
  assert.match(stderr, /^hako demo: \[RUN_CANCELLED\] interrupted by SIGINT$/m);
  assert.deepEqual(demoHomes(tmp), []);
  assert.deepEqual(demoLeftovers(th), [], 'the demo left its env on the host');
  await th.teardown();
  hosts.splice(hosts.indexOf(th), 1);
  assert.deepEqual(th.leftovers(), []);
});
