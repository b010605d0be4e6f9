// SandboxManager against the real host: crun/runc containers with catatonit as init, exec through
// the runtime, pause with the freezer, metrics from cgroups and the quota, destroy, warm pool,
// reconcile after the manager is dropped without closing (a crashed hakod).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { buffer } from 'node:stream/consumers';
import { AppError, createLogger, parseConfig, sandboxHostConfigSchema } from '@hako/core';
import type { BuiltSandboxHost } from '@hako/sandbox';
import type { SandboxManager } from '../../src/sandbox-manager.js';
import type { CreateInput, ExecInput } from '../../src/backend.js';
import { createInput, execInput, newTestManager } from '../helpers/test-manager.js';
import { createTestHost } from '../../../sandbox/test/helpers/test-host.js';

const th = createTestHost();
const config = parseConfig(sandboxHostConfigSchema, th.env);
const logger = createLogger({ level: 'warn', name: 'test' });
const built: BuiltSandboxHost[] = [];
const managers: SandboxManager[] = [];

async function newManager(poolMin = 0): Promise<SandboxManager> {
  const { m, b } = await newTestManager(config, logger, {
    poolMin,
    upstreamEnv: (names) => {
      if (names.includes('bedrock')) throw new AppError('UPSTREAM_NOT_CONFIGURED', 'no bedrock here');
      return { ANTHROPIC_BASE_URL: 'http://proxy/_hako/upstream/anthropic' };
    },
  });
  built.push(b);
  managers.push(m);
  return m;
}

const create = (over: Partial<CreateInput> = {}): CreateInput =>
  createInput({ labels: { app: 't' }, env: { GREETING: 'hi' }, ...over });
const execIn = execInput;

async function run(
  m: SandboxManager,
  id: string,
  argv: string[],
  over: Partial<ExecInput> = {},
  input?: string,
) {
  const h = await m.exec(execIn(id, argv, { ...over, stdin: input !== undefined }));
  if (input !== undefined) h.stdin!.end(input);
  const [stdout, stderr, exit] = await Promise.all([buffer(h.stdout), buffer(h.stderr), h.exit]);
  return { stdout: stdout.toString(), stderr: stderr.toString(), exit, pid: h.pid };
}

after(async () => {
  for (const m of managers) await m.close({ destroyAll: true }).catch(() => undefined);
  for (const b of built) await b.close().catch(() => undefined);
  await th.teardown();
  assert.deepEqual(th.leftovers(), []);
});

test('a sandbox runs many execs: env, cwd, user, stdin, exit codes, concurrency', async () => {
  const m = await newManager();
  const sb = await m.createSandbox(create());
  assert.equal(sb.state, 'running');
  assert.equal(sb.fromPool, false);
  const r = await run(m, sb.id, ['sh', '-c', 'echo "$GREETING $(id -u) $(pwd)"; echo err >&2; exit 3']);
  assert.equal(r.stdout, 'hi 1000 /workspace\n');
  assert.equal(r.stderr, 'err\n');
  assert.deepEqual(r.exit, { code: 3, signal: '', limitKilled: false, reason: 'exited' });
  const cat = await run(m, sb.id, ['cat'], {}, 'from stdin');
  assert.equal(cat.stdout, 'from stdin');
  const u = await run(m, sb.id, ['id', '-u'], { user: '1234:1234' });
  assert.equal(u.stdout, '1234\n');
  await assert.rejects(m.exec(execIn(sb.id, ['true'], { user: '0' })), { code: 'INVALID_ARGUMENT' });
  // files persist between execs; processes see each other (one pid namespace) with init as pid 1
  await run(m, sb.id, ['sh', '-c', 'echo kept > /workspace/f']);
  assert.equal((await run(m, sb.id, ['cat', '/workspace/f'])).stdout, 'kept\n');
  const comm = await run(m, sb.id, ['cat', '/proc/1/cmdline']);
  assert.match(comm.stdout, /hako-init/);
  const many = await Promise.all(
    Array.from({ length: 10 }, (_, i) => run(m, sb.id, ['sh', '-c', `echo ${i}`])),
  );
  assert.deepEqual(
    many.map((x) => x.stdout),
    Array.from({ length: 10 }, (_, i) => `${i}\n`),
  );
  await m.destroySandbox('tenant-a', sb.id);
  await assert.rejects(m.getSandbox('tenant-a', sb.id), { code: 'SANDBOX_NOT_FOUND' });
});

test('owner checks, label selectors, timeout, signal, OOM, pause and metrics', async () => {
  const m = await newManager();
  const sb = await m.createSandbox(create({ limits: { memoryBytes: 64 * 2 ** 20 } }));
  await assert.rejects(m.getSandbox('tenant-b', sb.id), { code: 'PERMISSION_DENIED' });
  await assert.rejects(m.exec(execIn(sb.id, ['true'], { ownerId: 'tenant-b' })), {
    code: 'PERMISSION_DENIED',
  });
  await assert.rejects(m.destroySandbox('tenant-b', sb.id), { code: 'PERMISSION_DENIED' });
  assert.equal((await m.listSandboxes('tenant-a', { app: 't' })).length, 1);
  assert.equal((await m.listSandboxes('tenant-a', { app: 'other' })).length, 0);
  assert.equal((await m.listSandboxes('tenant-b', {})).length, 0);

  const t0 = Date.now();
  const slow = await run(m, sb.id, ['sleep', '30'], { timeoutMs: 300 });
  assert.ok(Date.now() - t0 < 10_000);
  assert.deepEqual(slow.exit, { code: 137, signal: 'SIGKILL', limitKilled: true, reason: 'timeout' });

  const h = await m.exec(execIn(sb.id, ['sleep', '30']));
  assert.ok(h.pid > 0, 'the host pid is known');
  h.signal('TERM');
  const ex = await h.exit;
  assert.equal(ex.code, 143);
  assert.equal(ex.reason, 'signaled');
  assert.equal(ex.signal, 'SIGTERM');

  const oom = await run(m, sb.id, ['python3', '-c', 'b = bytearray(200 * 1024 * 1024)']);
  assert.equal(oom.exit.reason, 'oom');
  assert.equal(oom.exit.limitKilled, true);
  const met = await m.getSandboxMetrics('tenant-a', sb.id);
  assert.ok(met.oomKills >= 1);
  assert.equal(met.memoryMaxBytes, 64 * 2 ** 20);
  assert.ok(met.cpuUsageNs > 0);
  assert.equal(met.diskLimitBytes > 60 * 2 ** 20, true);
  assert.equal(met.exitCode, 137);

  // pause freezes a running loop; resume lets it go on
  const counter = await m.exec(
    execIn(sb.id, ['sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i > /tmp/c; sleep 0.05; done']),
  );
  await new Promise((r) => setTimeout(r, 300));
  await m.pauseSandbox('tenant-a', sb.id);
  assert.equal((await m.getSandbox('tenant-a', sb.id)).state, 'paused');
  await assert.rejects(m.exec(execIn(sb.id, ['true'])), { code: 'SANDBOX_STATE_INVALID' });
  await new Promise((r) => setTimeout(r, 100));
  await m.resumeSandbox('tenant-a', sb.id);
  const a = Number((await run(m, sb.id, ['cat', '/tmp/c'])).stdout);
  await m.pauseSandbox('tenant-a', sb.id);
  await new Promise((r) => setTimeout(r, 500));
  await m.resumeSandbox('tenant-a', sb.id);
  const b = Number((await run(m, sb.id, ['cat', '/tmp/c'])).stdout);
  assert.ok(b - a < 5, `the loop advanced ${b - a} times while paused for 500 ms`);
  counter.signal('KILL');
  assert.equal((await counter.exit).code, 137);

  // destroy under a running exec ends it with reason sandbox_gone
  const long = await m.exec(execIn(sb.id, ['sleep', '60']));
  await m.destroySandbox('tenant-a', sb.id);
  assert.equal((await long.exit).reason, 'sandbox_gone');
});

test('warm pool: a matching create claims a ready sandbox; reconcile adopts claimed ones and removes the rest', async () => {
  const m = await newManager(2);
  m.warm('host', {}, 'none');
  for (let i = 0; i < 100 && m.warmCount() < 2; i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(m.warmCount(), 2);
  const sb = await m.createSandbox(create());
  assert.equal(sb.fromPool, true);
  assert.equal((await run(m, sb.id, ['sh', '-c', 'echo $GREETING'])).stdout, 'hi\n');
  await run(m, sb.id, ['sh', '-c', 'echo survived > /workspace/s']);

  // a second manager on the same env, as after a hakod crash: the first is never closed
  await new Promise((r) => setTimeout(r, 500));
  const m2 = await newManager(0);
  const rec = await m2.reconcile();
  assert.deepEqual(rec.adopted, [sb.id]);
  assert.ok(rec.removed.length >= 1, 'the warm sandboxes were removed');
  assert.equal((await run(m2, sb.id, ['cat', '/workspace/s'])).stdout, 'survived\n');
  assert.equal((await m2.getSandbox('tenant-a', sb.id)).labels.app, 't');
  await m2.destroySandbox('tenant-a', sb.id);
  assert.equal(m2.counts().running, 0);
});

test('a refused create leaves nothing behind; destroy is idempotent for its owner', async () => {
  const m = await newManager();
  await assert.rejects(m.createSandbox(create({ network: 'egress', upstreams: ['bedrock'] })), {
    code: 'UPSTREAM_NOT_CONFIGURED',
  });
  await assert.rejects(m.createSandbox(create({ upstreams: ['anthropic'] })), { code: 'INVALID_ARGUMENT' });
  const c = m.counts();
  assert.equal(c.running + c.warm + c.creating, 0, 'no sandbox was started for a refused create');
  const sb = await m.createSandbox(create());
  await m.destroySandbox('tenant-a', sb.id);
  await m.destroySandbox('tenant-a', sb.id);
  await assert.rejects(m.destroySandbox('tenant-b', sb.id), { code: 'SANDBOX_NOT_FOUND' });
  await assert.rejects(m.destroySandbox('tenant-a', 'abcdef123456'), { code: 'SANDBOX_NOT_FOUND' });
});
