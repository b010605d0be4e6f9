// NodePool and ConversationSandboxes against a real hakod (startAgent, mTLS on loopback, real
// sandboxes) plus a second configured node that is down: polling and health, picking, and the
// conversation sandbox's create / reuse / recreate, never crossing tenants.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createLogger } from '@hako/core';
import { callUnary, runExec, startAgent } from '@hako/agentd';
import type { RunningAgent } from '@hako/agentd';
import { NetworkMode, SandboxState } from '@hako/proto';
import { certsInit } from '../../../cli/src/certs.js';
import { createTestHost } from '../../../sandbox/test/helpers/test-host.js';
import { NodePool } from '../../src/nodes/node-pool.js';
import {
  CONVERSATION_LABEL,
  ConversationSandboxes,
  TENANT_LABEL,
} from '../../src/nodes/conversation-sandbox.js';
import type { EnsureSandboxRequest } from '../../src/nodes/conversation-sandbox.js';

const th = createTestHost();
const logger = createLogger({ level: 'error', name: 'nodes-test' });
const tag = randomBytes(3).toString('hex');
const tenantA = `tenant-a-${tag}`;
const tenantB = `tenant-b-${tag}`;
const conv = `conv-${tag}`;
let pkiDir = '';
let agent: RunningAgent | undefined;
let pool: NodePool | undefined;
let downAddress = '';

/** A loopback port nobody listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

before(async () => {
  pkiDir = await mkdtemp(join(tmpdir(), 'hako-nodes-pki-'));
  await certsInit({ dir: pkiDir, hosts: [], days: 1, force: false });
  agent = await startAgent(
    {
      ...th.env,
      AGENT_LISTEN: '127.0.0.1:0',
      AGENT_TLS_DIR: pkiDir,
      AGENT_POOL_MIN: '0',
      // the anthropic upstream must exist for sandboxes that ask for it; nothing calls it here
      AGENT_UPSTREAM_ANTHROPIC_URL: `http://127.0.0.1:${await closedPort()}`,
      AGENT_UPSTREAM_ANTHROPIC_API_KEY: 'sk-test-unused',
      AGENT_CLAUDE_CODE_BINARY: '',
    },
    { logger },
  );
  downAddress = `127.0.0.1:${await closedPort()}`;
  pool = new NodePool({
    // the down node first: picking it would be the configuration-order default
    nodes: [
      { name: 'down', address: downAddress, tlsDir: pkiDir },
      { name: 'live', address: agent.address, tlsDir: pkiDir },
    ],
    logger,
    pollIntervalMs: 60_000,
    callTimeoutMs: 2_000,
  });
  await pool.start();
});

after(async () => {
  pool?.close();
  await agent?.close({ destroyAll: true });
  await rm(pkiDir, { recursive: true, force: true });
  await th.teardown();
  assert.deepEqual(th.leftovers(), []);
});

const ensureReq = (over: Partial<EnsureSandboxRequest> = {}): EnsureSandboxRequest => ({
  tenantId: tenantA,
  conversationId: conv,
  limits: { cpus: 0.5, memoryBytes: 128 * 2 ** 20, pids: 64, diskBytes: 32 * 2 ** 20 },
  egressAllow: ['example.invalid:443'],
  idleTimeoutSeconds: 300,
  ...over,
});

test('the pool polls every node: the live one is healthy with its info, the down one is unhealthy and skipped', async () => {
  const p = pool!;
  const [down, live] = p.status();
  assert.equal(down?.name, 'down');
  assert.equal(down.healthy, false);
  assert.match(down.lastError ?? '', /AGENT_UNAVAILABLE/);
  assert.equal(live?.name, 'live');
  assert.equal(live.healthy, true, live.lastError);
  assert.equal(live.info?.env, th.hakoEnv);
  assert.ok((live.info?.maxSandboxes ?? 0) > 0);
  assert.deepEqual(
    p.healthyNodes().map((n) => n.name),
    ['live'],
  );
  assert.equal((await p.pickNode()).name, 'live');
  assert.equal(p.isHealthy('down'), false);

  const onlyDown = new NodePool({
    nodes: [{ name: 'down', address: downAddress, tlsDir: pkiDir }],
    logger,
    callTimeoutMs: 2_000,
  });
  try {
    await onlyDown.start();
    await assert.rejects(
      onlyDown.pickNode(),
      (e: { code?: string; httpStatus?: number; message?: string }) => {
        assert.equal(e.code, 'NO_HEALTHY_NODE');
        assert.equal(e.httpStatus, 503);
        assert.match(e.message ?? '', new RegExp(downAddress));
        return true;
      },
    );
  } finally {
    onlyDown.close();
  }
});

test('ensureSandbox creates, reuses (known id and by label), recreates after destroy, and never crosses tenants', async () => {
  const p = pool!;
  const sandboxes = new ConversationSandboxes({ pool: p, logger });
  const live = p.node('live')!;
  let tenantBSandbox = '';
  try {
    // create
    const first = await sandboxes.ensureSandbox(ensureReq());
    assert.equal(first.created, true);
    assert.equal(first.node, 'live');
    const s = first.sandbox;
    assert.equal(s.ownerId, tenantA);
    assert.deepEqual(s.labels, { [CONVERSATION_LABEL]: conv, [TENANT_LABEL]: tenantA });
    assert.equal(s.image, 'host');
    assert.equal(s.network, NetworkMode.NETWORK_MODE_EGRESS);
    assert.deepEqual(s.upstreams, ['anthropic']);
    assert.equal(s.state, SandboxState.SANDBOX_STATE_RUNNING);
    assert.equal(s.limits?.pids, 64);
    assert.equal(p.status()[1]?.pendingCreates, 1, 'the create counts as load until the next poll');
    const mark = await runExec(first.client, {
      ownerId: tenantA,
      sandboxId: first.sandboxId,
      argv: ['sh', '-c', 'echo kept > /workspace/mark; printf %s "$ANTHROPIC_BASE_URL"'],
    });
    assert.equal(mark.exit.code, 0, mark.stderr.toString());
    assert.match(
      mark.stdout.toString(),
      /^http/,
      'the sandbox reaches the anthropic upstream through the proxy',
    );

    // reuse: the known sandbox, then by label, then with a known node that is down
    const byId = await sandboxes.ensureSandbox(
      ensureReq({ knownNode: 'live', knownSandboxId: first.sandboxId }),
    );
    assert.equal(byId.created, false);
    assert.equal(byId.sandboxId, first.sandboxId);
    const byLabel = await sandboxes.ensureSandbox(ensureReq());
    assert.equal(byLabel.created, false);
    assert.equal(byLabel.sandboxId, first.sandboxId);
    const viaDown = await sandboxes.ensureSandbox(
      ensureReq({ knownNode: 'down', knownSandboxId: first.sandboxId }),
    );
    assert.equal(viaDown.created, false);
    assert.equal(viaDown.sandboxId, first.sandboxId);
    const cat = await runExec(live.client, {
      ownerId: tenantA,
      sandboxId: byLabel.sandboxId,
      argv: ['cat', '/workspace/mark'],
    });
    assert.equal(cat.stdout.toString(), 'kept\n', 'the reused sandbox is the same one, workspace and all');

    // another tenant with the same conversation id and even tenant A's sandbox id gets its own
    const other = await sandboxes.ensureSandbox(
      ensureReq({ tenantId: tenantB, knownNode: 'live', knownSandboxId: first.sandboxId }),
    );
    tenantBSandbox = other.sandboxId;
    assert.equal(other.created, true);
    assert.notEqual(other.sandboxId, first.sandboxId);
    assert.equal(other.sandbox.ownerId, tenantB);
    const aStill = await callUnary(live.client, 'getSandbox', {
      ownerId: tenantA,
      sandboxId: first.sandboxId,
    });
    assert.equal(
      aStill.sandbox?.state,
      SandboxState.SANDBOX_STATE_RUNNING,
      "tenant A's sandbox was left alone",
    );
    const aAgain = await sandboxes.ensureSandbox(ensureReq());
    assert.equal(aAgain.sandboxId, first.sandboxId, "tenant B's sandbox is never found for tenant A");

    // destroyed (by the API or by hakod's idle timeout): the next ensure creates a new one
    await sandboxes.destroy({ tenantId: tenantA, node: 'live', sandboxId: first.sandboxId });
    await sandboxes.destroy({ tenantId: tenantA, node: 'live', sandboxId: first.sandboxId }); // idempotent
    await assert.rejects(
      callUnary(live.client, 'getSandbox', { ownerId: tenantA, sandboxId: first.sandboxId }),
      {
        code: 'SANDBOX_NOT_FOUND',
      },
    );
    const recreated = await sandboxes.ensureSandbox(
      ensureReq({ knownNode: 'live', knownSandboxId: first.sandboxId }),
    );
    assert.equal(recreated.created, true);
    assert.notEqual(recreated.sandboxId, first.sandboxId);
    assert.notEqual(recreated.sandboxId, tenantBSandbox);
    const fresh = await runExec(live.client, {
      ownerId: tenantA,
      sandboxId: recreated.sandboxId,
      argv: ['sh', '-c', 'test -e /workspace/mark && echo old || echo new'],
    });
    assert.equal(fresh.stdout.toString(), 'new\n');

    // a second sandbox of the conversation (e.g. made by an API that crashed mid-create): one is
    // kept, the other destroyed
    const { sandbox: extra } = await callUnary(live.client, 'createSandbox', {
      ownerId: tenantA,
      image: 'host',
      labels: { [CONVERSATION_LABEL]: conv, [TENANT_LABEL]: tenantA },
      limits: undefined,
      network: NetworkMode.NETWORK_MODE_NONE,
      egressAllow: [],
      env: {},
      upstreams: [],
      ttlSeconds: 0,
      idleTimeoutSeconds: 0,
    });
    assert.ok(extra);
    const one = await sandboxes.ensureSandbox(ensureReq());
    assert.equal(one.created, false);
    const left = await callUnary(live.client, 'listSandboxes', {
      ownerId: tenantA,
      labelSelector: { [CONVERSATION_LABEL]: conv },
    });
    assert.deepEqual(
      left.sandboxes.map((x) => x.id),
      [one.sandboxId],
      'exactly one sandbox serves the conversation',
    );

    // the poll sees the node's real load and clears the pool's own count
    await p.refresh();
    const st = p.status()[1];
    assert.equal(st?.pendingCreates, 0);
    assert.equal(st?.info?.sandboxes, 2, "tenant A's and tenant B's");

    assert.equal(await sandboxes.destroyConversation({ tenantId: tenantA, conversationId: conv }), 1);
    const bLeft = await callUnary(live.client, 'listSandboxes', { ownerId: tenantB, labelSelector: {} });
    assert.deepEqual(
      bLeft.sandboxes.map((x) => x.id),
      [tenantBSandbox],
      "destroying tenant A's conversation left tenant B's sandbox",
    );
  } finally {
    for (const owner of [tenantA, tenantB]) {
      const all = await callUnary(live.client, 'listSandboxes', { ownerId: owner, labelSelector: {} });
      for (const x of all.sandboxes)
        await callUnary(live.client, 'destroySandbox', { ownerId: owner, sandboxId: x.id });
    }
  }
});

test('ensureSandbox gives the sandbox the requested upstreams: one with others is replaced; an unconfigured one is UPSTREAM_NOT_CONFIGURED', async () => {
  const p = pool!;
  const sandboxes = new ConversationSandboxes({ pool: p, logger });
  const live = p.node('live')!;
  const convU = `conv-up-${tag}`;
  const req = (over: Partial<EnsureSandboxRequest> = {}): EnsureSandboxRequest =>
    ensureReq({ conversationId: convU, ...over });
  try {
    const anthropic = await sandboxes.ensureSandbox(req({ upstreams: ['anthropic'] }));
    assert.equal(anthropic.created, true);
    assert.deepEqual(anthropic.sandbox.upstreams, ['anthropic']);
    const same = await sandboxes.ensureSandbox(
      req({ upstreams: ['anthropic'], knownNode: 'live', knownSandboxId: anthropic.sandboxId }),
    );
    assert.equal(same.sandboxId, anthropic.sandboxId, 'the same upstreams: reused');

    // another set (here none): the known sandbox is destroyed and a new one made
    const none = await sandboxes.ensureSandbox(
      req({ upstreams: [], knownNode: 'live', knownSandboxId: anthropic.sandboxId }),
    );
    assert.equal(none.created, true);
    assert.notEqual(none.sandboxId, anthropic.sandboxId);
    assert.deepEqual(none.sandbox.upstreams, []);
    await assert.rejects(
      callUnary(live.client, 'getSandbox', { ownerId: tenantA, sandboxId: anthropic.sandboxId }),
      { code: 'SANDBOX_NOT_FOUND' },
    );
    // found by label too: the upstream-less one does not serve an anthropic request
    const back = await sandboxes.ensureSandbox(req({ upstreams: ['anthropic'] }));
    assert.equal(back.created, true);
    assert.deepEqual(back.sandbox.upstreams, ['anthropic']);
    const left = await callUnary(live.client, 'listSandboxes', {
      ownerId: tenantA,
      labelSelector: { [CONVERSATION_LABEL]: convU },
    });
    assert.deepEqual(
      left.sandboxes.map((x) => x.id),
      [back.sandboxId],
    );

    // this hakod has no bedrock credentials: a bedrock run is refused with the code and the node
    await assert.rejects(
      sandboxes.ensureSandbox(req({ upstreams: ['bedrock'] })),
      (e: { code?: string; message?: string; details?: Record<string, unknown> }) => {
        assert.equal(e.code, 'UPSTREAM_NOT_CONFIGURED');
        assert.match(e.message ?? '', /live has no credentials for the upstream bedrock/);
        assert.deepEqual(e.details, { upstreams: ['bedrock'], nodes: ['live'] });
        return true;
      },
    );
  } finally {
    await sandboxes.destroyConversation({ tenantId: tenantA, conversationId: convU });
  }
});
