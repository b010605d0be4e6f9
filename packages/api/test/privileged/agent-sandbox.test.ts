// The agent in a real sandbox: hakod (startAgent, mTLS on loopback) bind-mounts the Claude Code
// binary into a sandbox with network egress and the `anthropic` upstream; runAgent drives the real
// SDK whose spawnClaudeCodeProcess runs that binary there through Exec, against the scripted
// model. Proves the event sequence, the file written in /workspace, that no secret of hakod or of
// the API process is visible to the agent while the model still gets the real key (injected by
// the proxy), that resume finds the session kept in /workspace/.hako/claude, and that an abort
// leaves no Claude Code process in the sandbox. The first sandbox is the fresh hakod's first egress
// sandbox with an upstream (its proxy starts listening with it). Also measures a two-turn session in the sandbox
// against the SDK run directly, and Claude Code's memory.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createLogger } from '@hako/core';
import { NetworkMode } from '@hako/proto';
import type { AgentClient } from '@hako/proto';
import { callUnary, createAgentClient, runExec, startAgent } from '@hako/agentd';
import type { RunningAgent } from '@hako/agentd';
import { runDirect, startScriptedModel } from '@hako/testkit';
import type { ScriptInput, ScriptedModel } from '@hako/testkit';
import { certsInit } from '../../../cli/src/certs.js';
import { createTestHost } from '../../../sandbox/test/helpers/test-host.js';
import { buildAgentOptions } from '../../src/agent/options-builder.js';
import { runAgent } from '../../src/agent/runner.js';
import type { AgentRunSummary } from '../../src/agent/runner.js';
import type { SandboxProcess } from '../../src/agent/sandbox-process.js';
import type { AgentEvent, McpServer, TenantSettings } from '../../src/types.js';

const th = createTestHost();
const logger = createLogger({ level: 'error', name: 'agent-sandbox-test' });
const tenant = `t${randomBytes(3).toString('hex')}`;
const hakodSecret = `sk-ant-real-${randomBytes(12).toString('hex')}`;
/** Secrets of the API process itself: they must not reach the sandbox either. */
const apiSecrets: Record<string, string> = {
  DATABASE_URL: `postgres://hako:db-${randomBytes(8).toString('hex')}@127.0.0.1:5432/hako`,
  REDIS_URL: `redis://:redis-${randomBytes(8).toString('hex')}@127.0.0.1:6379`,
  AWS_SECRET_ACCESS_KEY: `aws-${randomBytes(12).toString('hex')}`,
  HAKO_S3_SECRET_ACCESS_KEY: `s3-${randomBytes(12).toString('hex')}`,
  ANTHROPIC_API_KEY: `sk-ant-api-${randomBytes(12).toString('hex')}`,
};
const savedEnv: Record<string, string | undefined> = {};
let pkiDir = '';
let agent: RunningAgent | undefined;
let client: AgentClient;
let model: ScriptedModel;

const settings: TenantSettings = {
  limits: {
    cpus: 1,
    memoryBytes: 512 * 2 ** 20,
    pids: 256,
    diskBytes: 256 * 2 ** 20,
    requestsPerMinute: 60,
    concurrentRuns: 2,
    maxTurns: 10,
  },
  allowedTools: [],
  disallowedTools: [],
  egressAllow: [],
  maxContextTokens: 200_000,
};

before(async () => {
  for (const [k, v] of Object.entries(apiSecrets)) {
    savedEnv[k] = process.env[k];
    process.env[k] = v;
  }
  pkiDir = await mkdtemp(join(tmpdir(), 'hako-agent-pki-'));
  await certsInit({ dir: pkiDir, hosts: [], days: 1, force: false });
  model = await startScriptedModel({ script: { turns: [{ text: 'unused' }] }, logger });
  agent = await startAgent(
    {
      ...th.env,
      AGENT_LISTEN: '127.0.0.1:0',
      AGENT_METRICS_LISTEN: '',
      AGENT_TLS_DIR: pkiDir,
      AGENT_POOL_MIN: '0',
      AGENT_UPSTREAM_ANTHROPIC_URL: model.url,
      AGENT_UPSTREAM_ANTHROPIC_API_KEY: hakodSecret,
    },
    { logger },
  );
  client = createAgentClient({ address: agent.address, tls: { dir: pkiDir } });
});

after(async () => {
  for (const [k, v] of Object.entries(savedEnv)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  client?.close();
  await agent?.close({ destroyAll: true });
  await model?.close();
  await rm(pkiDir, { recursive: true, force: true });
  await th.teardown();
  assert.deepEqual(th.leftovers(), []);
});

async function newSandbox(conversationId: string): Promise<string> {
  const { sandbox } = await callUnary(client, 'createSandbox', {
    ownerId: tenant,
    image: 'host',
    labels: { 'hako.conversation': conversationId, 'hako.tenant': tenant },
    limits: {
      cpus: settings.limits.cpus,
      memoryBytes: settings.limits.memoryBytes,
      pids: settings.limits.pids,
      diskBytes: settings.limits.diskBytes,
      tmpBytes: 64 * 2 ** 20,
    },
    network: NetworkMode.NETWORK_MODE_EGRESS,
    egressAllow: [],
    env: {},
    upstreams: ['anthropic'],
    ttlSeconds: 0,
    idleTimeoutSeconds: 0,
  });
  assert.ok(sandbox);
  return sandbox.id;
}

const sh = async (sandboxId: string, script: string): Promise<string> => {
  const r = await runExec(client, { ownerId: tenant, sandboxId, argv: ['sh', '-c', script] });
  return r.stdout.toString() + r.stderr.toString();
};

interface Run {
  events: AgentEvent[];
  summary: AgentRunSummary;
  procs: SandboxProcess[];
  ms: number;
}

async function run(
  sandboxId: string,
  script: ScriptInput,
  opts: {
    sessionId?: string;
    onEvent?: (e: AgentEvent, ac: AbortController) => void;
    onSpawn?: (p: SandboxProcess) => void;
    mcpServers?: McpServer[];
  } = {},
): Promise<Run> {
  model.setScript(script);
  const ac = new AbortController();
  const events: AgentEvent[] = [];
  const procs: SandboxProcess[] = [];
  const started = performance.now();
  const summary = await runAgent({
    options: buildAgentOptions({
      tenantId: tenant,
      settings,
      mcpServers: opts.mcpServers,
      conversation: { id: 'c', workspaceEnabled: true, sessionId: opts.sessionId ?? null },
      sandbox: { client, sandboxId },
      abortController: ac,
      logger,
      onSpawn: (p) => {
        procs.push(p);
        opts.onSpawn?.(p);
      },
    }),
    prompt: 'do the thing',
    contextLimit: settings.maxContextTokens,
    logger,
    onEvent: (e) => {
      events.push(e);
      opts.onEvent?.(e, ac);
    },
  });
  return { events, summary, procs, ms: performance.now() - started };
}

const kinds = (events: AgentEvent[]) => events.map((e) => e.type).filter((t) => t !== 'context_status');

test('Claude Code runs in the sandbox: Bash writes a file, no secret is visible, the proxy adds the key', async () => {
  const sb = await newSandbox('conv-1');
  try {
    const firstRequest = model.requests.length;
    const r = await run(sb, {
      turns: [
        { tool: 'Bash', input: { command: 'echo hi > a.txt' } },
        { tool: 'Bash', input: { command: "env; cat /proc/*/environ | tr '\\0' '\\n'" } },
        { text: 'done' },
      ],
    });
    assert.equal(r.summary.status, 'completed', JSON.stringify(r.summary.error));
    assert.deepEqual(kinds(r.events), [
      'init',
      'tool_call',
      'tool_result',
      'tool_call',
      'tool_result',
      'assistant',
      'done',
    ]);
    assert.ok(r.events.some((e) => e.type === 'context_status'));
    for (const e of r.events) assert.ok(e.sdkMessage !== undefined, `${e.type} carries its SDK message`);
    const done = r.events.at(-1)!;
    assert.equal(done.data.status, 'completed');
    assert.equal(done.data.result, 'done');
    assert.equal(done.data.turn_count, 3);
    assert.equal(r.summary.sessionId, r.events[0]!.data.session_id);

    // Claude Code ran in the sandbox, from the bind-mounted binary, as the sandbox user
    assert.equal(r.procs.length, 1);
    assert.ok((r.procs[0]!.pid ?? 0) > 0);
    assert.equal((await sh(sb, 'cat /workspace/a.txt')).trim(), 'hi');
    assert.match(await sh(sb, 'stat -c %u /workspace/a.txt'), /^1000\s*$/);
    assert.match(await sh(sb, 'ls /workspace/.hako/claude/projects'), /workspace/);
    const mount = await sh(sb, 'grep " /opt/hako/bin/claude " /proc/self/mountinfo');
    assert.match(mount, /\/opt\/hako\/bin\/claude ro,nosuid,nodev/, mount);
    assert.match(await sh(sb, 'echo x > /opt/hako/bin/claude || echo refused'), /Read-only file system/);

    // what the agent saw: its own environment and every process's in the sandbox
    const envResult = r.events.filter((e) => e.type === 'tool_result')[1]!;
    const fullOutput = JSON.stringify(envResult.sdkMessage);
    assert.match(fullOutput, /ANTHROPIC_API_KEY=hako-placeholder-key/);
    assert.match(fullOutput, /ANTHROPIC_BASE_URL=http:\/\/[0-9.]+:\d+\/_hako\/upstream\/anthropic/);
    assert.match(fullOutput, /CLAUDE_CODE_ENTRYPOINT=sdk-ts/, "Claude Code's own environ was read");
    assert.match(fullOutput, /CLAUDE_CONFIG_DIR=\/workspace\/.hako\/claude/);
    const everything = JSON.stringify(r.events);
    for (const secret of [hakodSecret, ...Object.values(apiSecrets)]) {
      assert.ok(!fullOutput.includes(secret), `a secret reached the sandbox: ${secret.slice(0, 12)}…`);
      assert.ok(!everything.includes(secret), `a secret is in the events: ${secret.slice(0, 12)}…`);
    }
    assert.ok(!/DATABASE_URL|REDIS_URL|AWS_SECRET|S3_SECRET/.test(fullOutput));

    // the model got the real key, added by hakod's proxy
    const messages = model.requests.slice(firstRequest).filter((q) => q.path === '/v1/messages');
    assert.ok(messages.filter((q) => q.kind === 'main').length >= 3);
    for (const q of messages) assert.equal(q.headers['x-api-key'], hakodSecret);
  } finally {
    await callUnary(client, 'destroySandbox', { ownerId: tenant, sandboxId: sb });
  }
});

test('a second run resumes the session kept in /workspace/.hako/claude', async () => {
  const sb = await newSandbox('conv-2');
  try {
    const first = await run(sb, {
      turns: [{ tool: 'Bash', input: { command: 'echo remembered > r.txt' } }, { text: 'one' }],
    });
    assert.equal(first.summary.status, 'completed');
    const sessionId = first.summary.sessionId;
    assert.ok(sessionId);
    const from = model.requests.length;
    const second = await run(sb, { turns: [{ text: 'two' }] }, { sessionId });
    assert.equal(second.summary.status, 'completed', JSON.stringify(second.summary.error));
    assert.equal(second.summary.result, 'two');
    // the model sees the first run's conversation (the Bash call) in the resumed session
    const main = model.requests.slice(from).find((q) => q.kind === 'main');
    assert.ok(main, 'the resumed run asked the model');
    assert.match(JSON.stringify(main.body), /echo remembered > r\.txt/);
  } finally {
    await callUnary(client, 'destroySandbox', { ownerId: tenant, sandboxId: sb });
  }
});

/** A minimal MCP stdio server (one tool, `whoami`) for `node -e`. */
const MCP_SERVER = `
const rl = require('readline').createInterface({ input: process.stdin });
const send = (m) => process.stdout.write(JSON.stringify(m) + '\\n');
rl.on('line', (l) => {
  const m = JSON.parse(l);
  if (m.id === undefined) return;
  if (m.method === 'initialize')
    send({ jsonrpc: '2.0', id: m.id, result: { protocolVersion: m.params.protocolVersion,
      capabilities: { tools: {} }, serverInfo: { name: 'probe', version: '1' } } });
  else if (m.method === 'tools/list')
    send({ jsonrpc: '2.0', id: m.id, result: { tools: [{ name: 'whoami', description: 'who runs me',
      inputSchema: { type: 'object', properties: {} } }] } });
  else if (m.method === 'tools/call')
    send({ jsonrpc: '2.0', id: m.id, result: { content: [{ type: 'text',
      text: 'PROBE_ENV=' + process.env.PROBE_ENV + ' uid=' + process.getuid() + ' host=' + require('os').hostname() }] } });
  else send({ jsonrpc: '2.0', id: m.id, result: {} });
});`;

test("the tenant's MCP servers run inside the sandbox, with their env", async () => {
  const sb = await newSandbox('conv-mcp');
  const probe: McpServer = {
    id: 's1',
    tenantId: tenant,
    name: 'probe',
    enabled: true,
    createdAt: '',
    updatedAt: '',
    type: 'stdio',
    command: 'node',
    args: ['-e', MCP_SERVER],
    env: { PROBE_ENV: 'from-tenant' },
  };
  try {
    const r = await run(
      sb,
      { turns: [{ tool: 'mcp__probe__whoami', input: {} }, { text: 'done' }] },
      { mcpServers: [probe] },
    );
    assert.equal(r.summary.status, 'completed', JSON.stringify(r.summary.error));
    const init = r.events.find((e) => e.type === 'init');
    assert.deepEqual(
      (init?.data.mcp_servers as { name: string; status: string }[]).map((m) => [m.name, m.status]),
      [['probe', 'connected']],
    );
    const result = r.events.find((e) => e.type === 'tool_result');
    assert.equal(result?.data.output, `PROBE_ENV=from-tenant uid=1000 host=${sb}`);
  } finally {
    await callUnary(client, 'destroySandbox', { ownerId: tenant, sandboxId: sb });
  }
});

test('an abort mid-run kills Claude Code and its tool processes in the sandbox', async (t) => {
  const sb = await newSandbox('conv-3');
  try {
    let abortedAt = 0;
    const r = await run(
      sb,
      {
        turns: [
          { tool: 'Bash', input: { command: 'echo started; sleep 300; echo late' } },
          { text: 'never' },
        ],
      },
      {
        onEvent: (e, ac) => {
          if (e.type === 'tool_call' && abortedAt === 0) {
            // let the Bash tool start its sleep, then cancel
            setTimeout(() => {
              abortedAt = performance.now();
              ac.abort();
            }, 1500);
          }
        },
      },
    );
    const stopMs = performance.now() - abortedAt;
    assert.equal(r.summary.status, 'cancelled');
    assert.equal(r.summary.error?.code, 'RUN_CANCELLED');
    assert.deepEqual(kinds(r.events), ['init', 'tool_call', 'done']);
    assert.equal(r.events.at(-1)?.data.status, 'cancelled');
    assert.ok(stopMs < 10_000, `the run took ${Math.round(stopMs)} ms to stop`);
    t.diagnostic(`abort to runAgent's end: ${Math.round(stopMs)} ms`);
    const p = r.procs[0]!;
    assert.ok(p.exitCode !== null || p.signalCode !== null, 'runAgent waited for the process to exit');
    // nothing of the agent is left in the sandbox (only its init and this ps)
    const ps = await sh(sb, 'ps -eo pid=,args=');
    assert.ok(!/claude/.test(ps), ps);
    assert.ok(!/sleep/.test(ps), `the Bash tool's process survived: ${ps}`);
    assert.ok(!existsPid(p.pid), 'the process is gone on the host too');
  } finally {
    await callUnary(client, 'destroySandbox', { ownerId: tenant, sandboxId: sb });
  }
});

function existsPid(pid: number | undefined): boolean {
  if (pid === undefined || pid <= 0) return false;
  try {
    return !readFileSync(`/proc/${pid}/status`, 'utf8').includes('State:\tZ');
  } catch {
    return false;
  }
}

test('timing and memory: a two-turn session in the sandbox against the SDK run directly', async (t) => {
  const sb = await newSandbox('conv-4');
  const script: ScriptInput = {
    turns: [{ tool: 'Bash', input: { command: 'echo hi > a.txt' } }, { text: 'done' }],
  };
  const hako: number[] = [];
  const direct: number[] = [];
  let peakKiB = 0;
  try {
    for (let i = 0; i < 3; i++) {
      let timer: NodeJS.Timeout | undefined;
      const r = await run(sb, script, {
        // Claude Code's peak resident set (VmHWM) on the host, sampled while it lives
        onSpawn: (p) => {
          timer = setInterval(() => {
            const m = /VmHWM:\s+(\d+)/.exec(safeRead(`/proc/${p.pid ?? 0}/status`));
            if (m) peakKiB = Math.max(peakKiB, Number(m[1]));
          }, 20);
        },
      }).finally(() => clearInterval(timer));
      assert.equal(r.summary.status, 'completed');
      hako.push(r.ms);
      const dir = await mkdtemp(join(tmpdir(), 'hako-direct-'));
      try {
        const d = await runDirect({ prompt: 'do the thing', cwd: dir, modelUrl: model.url });
        assert.equal(d.result?.subtype, 'success');
        direct.push(d.durationMs);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }
    const metrics = await callUnary(client, 'getSandboxMetrics', { ownerId: tenant, sandboxId: sb });
    const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
    const report = {
      hako_ms: hako.map(Math.round),
      direct_ms: direct.map(Math.round),
      hako_p50_ms: Math.round(median(hako)),
      direct_p50_ms: Math.round(median(direct)),
      claude_peak_rss_mib: Math.round(peakKiB / 1024),
      sandbox_memory_peak_mib: Math.round(Number(metrics.memoryPeakBytes) / 2 ** 20),
    };
    t.diagnostic(JSON.stringify(report));
    assert.ok(peakKiB > 50 * 1024, 'Claude Code was measured while it ran');
  } finally {
    await callUnary(client, 'destroySandbox', { ownerId: tenant, sandboxId: sb });
  }
});

function safeRead(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
