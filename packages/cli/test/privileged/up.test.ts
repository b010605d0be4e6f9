/**
 * The embedded stack of `hako up` (stack-up.ts) on a real host: everything in one HAKO_HOME
 * (certificates, admin token, PGlite, the embedded S3 store), a real agent session in a real
 * sandbox with the scripted model, then a stop and a second start on the same home that still
 * has the conversation, its events and its workspace (a new sandbox restores fib.py from the
 * embedded store and runs it).
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { silentLogger } from '@hako/core';
import { DEMO_FILE, DEMO_OUTPUT, DEMO_PROGRAM, DEMO_PROMPT, startScriptedModel } from '@hako/testkit';
import { createTestHost, REPO_ROOT } from '../../../sandbox/test/helpers/test-host.js';
import type { TestHost } from '../../../sandbox/test/helpers/test-host.js';
import { startUp } from '../../src/stack-up.js';
import type { RunningUp } from '../../src/stack-up.js';
import { readSseEvents } from '../../src/event-render.js';
import type { SseEvent } from '../../src/event-render.js';
import { TLS_FILES } from '../../src/certs.js';
import { callApi as call } from '../../../api/test/helpers/http-call.js';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const CHILD = `import { main } from ${JSON.stringify(MAIN)};
process.exitCode = await main(process.argv.slice(1));`;

/** The HAKO_HOME of the first test, reused by the command's test (PGlite's first init is slow). */
let keptHome: string | undefined;
/** The first test's tenant, API key and conversation in keptHome. */
let kept: { tenantId: string; apiKey: string; conversationId: string } | undefined;
const hosts: TestHost[] = [];
const dirs: string[] = [];
const stacks: RunningUp[] = [];

after(async () => {
  for (const s of stacks) await s.close({ destroyAll: true }).catch(() => undefined);
  for (const h of hosts) await h.teardown();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function events(
  base: string,
  token: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<SseEvent[]> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.equal(res.status, 200, await res.clone().text());
  assert.ok(res.body);
  const out: SseEvent[] = [];
  for await (const ev of readSseEvents(res.body as AsyncIterable<Uint8Array>)) out.push(ev);
  return out;
}

const outputsOf = (evs: SseEvent[]): string =>
  evs
    .filter((e) => e.event === 'tool_result')
    .map((e) => String(e.data.output))
    .join('\n');

test('hako up: state survives a restart (conversation, events, workspace) on the same HAKO_HOME', async () => {
  const th = createTestHost();
  hosts.push(th);
  const home = join(await mkdtemp(join(tmpdir(), 'hako-up-test-')), 'home');
  dirs.push(join(home, '..'));
  // The test's own environment: its host names, no Anthropic key (the scripted model).
  const env: Record<string, string> = {
    ...th.env,
    HOME: process.env.HOME ?? '/root',
    HAKO_HOME: home,
    HAKO_API_LISTEN: '127.0.0.1:0',
  };
  const logger = silentLogger();
  const steps: string[] = [];

  const t0 = Date.now();
  const first = await startUp(env, { logger, onProgress: (m) => steps.push(m) });
  stacks.push(first);
  const startMs = Date.now() - t0;
  assert.equal(first.home, home);
  assert.equal(first.model, 'scripted');
  assert.equal(first.storage, 'embedded');
  assert.equal(first.database, 'embedded');
  assert.equal(first.coordination, 'in-process');
  assert.ok(steps.length >= 4, steps.join(', '));
  // HAKO_HOME: 0700, the certificates, the admin token kept 0600, the engines' data
  assert.equal((await stat(home)).mode & 0o777, 0o700);
  for (const f of Object.values(TLS_FILES)) assert.ok(existsSync(join(home, 'tls', f)), f);
  assert.equal((await stat(join(home, 'admin-token'))).mode & 0o777, 0o600);
  assert.equal((await readFile(join(home, 'admin-token'), 'utf8')).trim(), first.adminToken);
  assert.equal(first.adminTokenSource, 'file');
  assert.ok(existsSync(join(home, 'pgdata')), 'PGlite data under HAKO_HOME');
  assert.ok(existsSync(join(home, 's3')), 'the embedded S3 store under HAKO_HOME');
  const health = await fetch(`${first.apiUrl}/healthz`);
  assert.equal(health.status, 200);

  const admin = first.adminToken;
  const tenant = await call(first.apiUrl, admin, 'POST', '/v1/tenants', {
    name: 'up-test',
    settings: { limits: { disk_bytes: 128 * 2 ** 20 } },
  });
  assert.equal(tenant.status, 201, tenant.text);
  const key = await call(first.apiUrl, admin, 'POST', `/v1/tenants/${String(tenant.json.id)}/api-keys`);
  assert.equal(key.status, 201, key.text);
  const apiKey = String(key.json.key);
  const conv = await call(first.apiUrl, apiKey, 'POST', '/v1/conversations', {});
  assert.equal(conv.status, 201, conv.text);
  const id = String(conv.json.id);

  const t1 = Date.now();
  const run1 = await events(first.apiUrl, apiKey, 'POST', `/v1/conversations/${id}/execute`, {
    prompt: DEMO_PROMPT,
  });
  const run1Ms = Date.now() - t1;
  const types1 = run1.map((e) => e.event);
  const done1 = run1.at(-1);
  assert.equal(done1?.event, 'done', types1.join(','));
  assert.equal(done1?.data.status, 'completed', JSON.stringify(done1?.data));
  const writes = run1.filter((e) => e.event === 'tool_call' && e.data.name === 'Write');
  assert.equal(writes.length, 1, types1.join(','));
  assert.match(outputsOf(run1), new RegExp(DEMO_OUTPUT), 'the program ran in the sandbox');
  const listed = await call(first.apiUrl, apiKey, 'GET', `/v1/conversations/${id}/files`);
  assert.ok(
    (listed.json.files as { path: string }[]).some((f) => f.path === DEMO_FILE),
    listed.text,
  );

  // Stop everything, sandboxes included: the second start must restore the workspace from S3.
  await first.close({ destroyAll: true });
  stacks.splice(stacks.indexOf(first), 1);
  assert.ok(!existsSync(join(home, 'up.pid')), 'the home lock is released');
  const closed = await fetch(`${first.apiUrl}/healthz`).catch((e: unknown) => e as Error);
  assert.ok(closed instanceof Error, 'the API stopped listening');

  // Second start, same home, another script: read fib.py back and run it.
  const scriptFile = join(home, '..', 'second.json');
  await writeFile(
    scriptFile,
    JSON.stringify({
      turns: [
        { tool: 'Bash', input: { command: `cat ${DEMO_FILE} && python3 ${DEMO_FILE}` } },
        { text: 'still there' },
      ],
    }),
  );
  const t2 = Date.now();
  const second = await startUp({ ...env, HAKO_MODEL_SCRIPT: scriptFile }, { logger });
  stacks.push(second);
  const restartMs = Date.now() - t2;
  assert.equal(second.adminToken, admin, 'the admin token is kept across restarts');

  const again = await call(second.apiUrl, apiKey, 'GET', `/v1/conversations/${id}`);
  assert.equal(again.status, 200, again.text);
  assert.equal(again.json.id, id);
  const replay = await events(second.apiUrl, apiKey, 'GET', `/v1/conversations/${id}/events`);
  assert.deepEqual(
    replay.map((e) => [e.id, e.event]),
    run1.map((e) => [e.id, e.event]),
    'the stored events replay as they were streamed',
  );
  const file = await call(second.apiUrl, apiKey, 'GET', `/v1/conversations/${id}/files/${DEMO_FILE}`);
  assert.equal(file.status, 200, file.text);
  assert.equal(file.text, DEMO_PROGRAM);

  const run2 = await events(second.apiUrl, apiKey, 'POST', `/v1/conversations/${id}/execute`, {
    prompt: 'show fib.py and run it again',
  });
  assert.equal(run2.at(-1)?.data.status, 'completed', JSON.stringify(run2.at(-1)?.data));
  const restore = run2.find(
    (e) => e.event === 'progress' && e.data.step === 'workspace_restore' && e.data.status === 'done',
  );
  assert.ok(restore, `a new sandbox restored the workspace: ${run2.map((e) => e.event).join(',')}`);
  assert.ok(Number(restore.data.files) >= 1, JSON.stringify(restore.data));
  const out2 = outputsOf(run2);
  assert.ok(out2.includes('def fib(n):'), out2);
  assert.ok(out2.includes(DEMO_OUTPUT), out2);
  assert.ok(
    run2.every((e) => Number(e.id) > Number(run1.at(-1)?.id)),
    'event ids go on increasing',
  );

  await second.close({ destroyAll: true });
  stacks.splice(stacks.indexOf(second), 1);
  process.stderr.write(
    `# timings: first start ${startMs} ms, first execute ${run1Ms} ms, restart ${restartMs} ms\n`,
  );
  await th.teardown();
  hosts.splice(hosts.indexOf(th), 1);
  assert.deepEqual(th.leftovers(), []);
  keptHome = home;
  kept = { tenantId: String(tenant.json.id), apiKey, conversationId: id };
});

test('hako up: a second stack on a home in use is refused, naming the pid', async () => {
  const home = await mkdtemp(join(tmpdir(), 'hako-up-lock-'));
  dirs.push(home);
  // Another live process holds the home (pid 1 is always alive).
  await writeFile(join(home, 'up.pid'), '1\n');
  await assert.rejects(
    startUp({ HOME: '/root', HAKO_HOME: home }, { logger: silentLogger() }),
    (e: Error & { code?: string }) => e.code === 'CONFIG_INVALID' && /pid 1/.test(e.message),
  );
});

/** `hako up ARGS` from source; resolves with its first stdout line, then `stop(signal)` ends it. */
async function hakoUp(
  args: string[],
  env: Record<string, string>,
): Promise<{
  first: string;
  stop(signal: NodeJS.Signals): Promise<{ code: number | null; stdout: string; stderr: string }>;
}> {
  const child = spawn(
    process.execPath,
    ['--conditions=source', '--import', 'tsx', '--input-type=module', '-e', CHILD, 'up', ...args],
    { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const lines = createInterface({ input: child.stdout });
  const first = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`hako up printed nothing in 120 s:\n${stderr}`)),
      120_000,
    );
    lines.on('line', (l) => {
      stdout += `${l}\n`;
      clearTimeout(timer);
      resolve(l);
    });
    void exited.then((code) => reject(new Error(`hako up exited with ${code}:\n${stderr}`)));
  });
  return {
    first,
    stop: async (signal) => {
      child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      const code = await exited;
      clearTimeout(timer);
      return { code, stdout, stderr };
    },
  };
}

test('the hako up command: --json prints one line once healthy, serves the kept state, stops on SIGTERM and SIGINT', async () => {
  const th = createTestHost();
  hosts.push(th);
  const home = keptHome ?? join(await mkdtemp(join(tmpdir(), 'hako-up-cmd-')), 'home');
  if (keptHome === undefined) dirs.push(join(home, '..'));
  const env: Record<string, string> = {
    ...th.env,
    HOME: process.env.HOME ?? '/root',
    HAKO_HOME: home,
    HAKO_API_LISTEN: '127.0.0.1:0',
  };

  const json = await hakoUp(['--json'], env);
  const ready = JSON.parse(json.first) as { api_url: string; admin_token: string; home: string };
  assert.deepEqual(Object.keys(ready).sort(), ['admin_token', 'api_url', 'home']);
  assert.equal(ready.home, home);
  assert.equal(ready.admin_token, (await readFile(join(home, 'admin-token'), 'utf8')).trim());
  assert.equal((await fetch(`${ready.api_url}/healthz`)).status, 200, 'healthy when it says so');
  if (kept !== undefined) {
    // the first test's state is served: its tenant (admin API) and its conversation (its key)
    const t = await call(ready.api_url, ready.admin_token, 'GET', `/v1/tenants/${kept.tenantId}`);
    assert.equal(t.status, 200, t.text);
    assert.equal(t.json.name, 'up-test');
    const c = await call(ready.api_url, kept.apiKey, 'GET', `/v1/conversations/${kept.conversationId}`);
    assert.equal(c.status, 200, c.text);
  }
  const stopped = await json.stop('SIGTERM');
  assert.equal(stopped.code, 0, stopped.stderr);
  assert.equal(stopped.stdout, `${json.first}\n`, 'one JSON line and nothing else on stdout');
  assert.ok(!existsSync(join(home, 'up.pid')));

  // Without --json: the URL, the token and the home for a person; Ctrl-C stops it.
  const human = await hakoUp([], { ...env, HAKO_ADMIN_TOKEN: 'given-admin-token-0123456789' });
  assert.match(human.first, /^hako is up in [\d.]+ s: scripted model \(offline\), embedded PostgreSQL/);
  const byHand = await human.stop('SIGINT');
  assert.equal(byHand.code, 0, byHand.stderr);
  assert.match(byHand.stdout, /^ {2}API {10}http:\/\/127\.0\.0\.1:\d+$/m);
  assert.match(byHand.stdout, /^ {2}admin token {2}given-admin-token-0123456789 \(HAKO_ADMIN_TOKEN\)$/m);
  assert.match(byHand.stdout, new RegExp(`^  home {9}${home}$`, 'm'));
  assert.match(byHand.stderr, /SIGINT: stopping/);
  assert.match(byHand.stderr, /hako up: stopped/);

  await th.teardown();
  hosts.splice(hosts.indexOf(th), 1);
  assert.deepEqual(th.leftovers(), []);
});

test('with ANTHROPIC_API_KEY the model is the upstream, reached through hakod with the key only hakod holds', async () => {
  const th = createTestHost();
  hosts.push(th);
  const home = keptHome ?? join(await mkdtemp(join(tmpdir(), 'hako-up-key-')), 'home');
  if (keptHome === undefined) dirs.push(join(home, '..'));
  // A stand-in for api.anthropic.com on loopback (nothing may leave this machine): it records
  // every request, so the key it receives is checked.
  const upstream = await startScriptedModel({
    script: {
      turns: [
        { tool: 'Bash', input: { command: "env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'" } },
        { text: 'checked' },
      ],
    },
  });
  try {
    const key = `sk-ant-test-${randomBytes(12).toString('hex')}`;
    const up = await startUp(
      {
        ...th.env,
        HOME: process.env.HOME ?? '/root',
        HAKO_HOME: home,
        HAKO_API_LISTEN: '127.0.0.1:0',
        ANTHROPIC_API_KEY: key,
        AGENT_UPSTREAM_ANTHROPIC_URL: upstream.url,
      },
      { logger: silentLogger() },
    );
    stacks.push(up);
    assert.equal(up.model, 'anthropic');
    assert.equal(up.modelUrl, upstream.url);
    // a tenant with the default settings: an empty egress allowlist
    const t = await call(up.apiUrl, up.adminToken, 'POST', '/v1/tenants', {
      name: 'keyed',
      settings: { limits: { disk_bytes: 128 * 2 ** 20 } },
    });
    assert.equal(t.status, 201, t.text);
    const k = String(
      (await call(up.apiUrl, up.adminToken, 'POST', `/v1/tenants/${String(t.json.id)}/api-keys`)).json.key,
    );
    const conv = await call(up.apiUrl, k, 'POST', '/v1/conversations', {});
    const run = await events(up.apiUrl, k, 'POST', `/v1/conversations/${String(conv.json.id)}/execute`, {
      prompt: 'show your environment',
    });
    assert.equal(run.at(-1)?.data.status, 'completed', JSON.stringify(run.at(-1)?.data));
    // the upstream got the real key from hakod's proxy; the sandbox never saw it
    assert.ok(upstream.requests.length > 0);
    assert.ok(
      upstream.requests.every((r) => r.headers['x-api-key'] === key),
      'every upstream request carries the key',
    );
    const dump = outputsOf(run);
    assert.match(dump, /ANTHROPIC_BASE_URL=/, 'the environment dump ran');
    assert.ok(!dump.includes(key), 'the key is not in the sandbox');
    assert.ok(!dump.includes(up.adminToken), 'the admin token is not in the sandbox');
    await up.close({ destroyAll: true });
    stacks.splice(stacks.indexOf(up), 1);
  } finally {
    await upstream.close();
  }
  await th.teardown();
  hosts.splice(hosts.indexOf(th), 1);
  assert.deepEqual(th.leftovers(), []);
});
