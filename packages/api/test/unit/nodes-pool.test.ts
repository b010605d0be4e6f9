// NodePool's choice and health bookkeeping, and ConversationSandboxes' failover between nodes,
// with scripted stand-in clients (the real hakod path is test/privileged/nodes.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { silentLogger } from '@hako/core';
import type { AgentClient, GetNodeInfoResponse } from '@hako/proto';
import { NodePool, leastLoaded } from '../../src/nodes/node-pool.js';
import type { NodeEndpoint } from '../../src/nodes/node-pool.js';
import { ConversationSandboxes } from '../../src/nodes/conversation-sandbox.js';

const logger = silentLogger();

/** A failed gRPC call as grpc-js reports it; `hakoCode` rides in the trailer like hakod's. */
function grpcError(code: number, message: string, hakoCode?: string): Error {
  return Object.assign(new Error(message), {
    code,
    details: message,
    metadata: { get: (k: string) => (k === 'hako-error-code' && hakoCode ? [hakoCode] : []) },
  });
}
const UNAVAILABLE = 14;

type Handler = (method: string, req: Record<string, unknown>) => unknown;

/** A client whose unary calls answer `handler(method, request)` (a thrown error fails the call). */
function fakeClient(handler: Handler, calls: string[]): AgentClient {
  return {
    makeUnaryRequest(
      path: string,
      _ser: unknown,
      _de: unknown,
      req: Record<string, unknown>,
      _md: unknown,
      _opts: unknown,
      cb: (err: Error | null, res?: unknown) => void,
    ) {
      const method = path.slice(path.lastIndexOf('/') + 1);
      calls.push(method);
      setImmediate(() => {
        try {
          cb(null, handler(method, req));
        } catch (e) {
          cb(e as Error);
        }
      });
      return {};
    },
    close() {},
  } as unknown as AgentClient;
}

function info(sandboxes: number, maxSandboxes: number): GetNodeInfoResponse {
  return {
    version: '0.1.0',
    hostname: 'h',
    runtime: 'crun',
    cgroupVersion: 1,
    cpus: 2,
    memoryBytes: 2 ** 32,
    sandboxes,
    sandboxesWarm: 0,
    maxSandboxes,
    images: 0,
    cniSubnet: '10.200.0.0/24',
    env: 'test',
  };
}

interface FakeNode {
  up: boolean;
  sandboxes: number;
  max: number;
  create?: () => unknown;
  calls: string[];
}

function fakePool(nodes: Record<string, FakeNode>, pollIntervalMs = 60_000): NodePool {
  const endpoints: NodeEndpoint[] = Object.keys(nodes).map((name) => ({
    name,
    address: `${name}:1`,
    insecure: true,
  }));
  return new NodePool({
    nodes: endpoints,
    logger,
    pollIntervalMs,
    createClient: (ep) => {
      const n = nodes[ep.name]!;
      return fakeClient((method) => {
        if (!n.up) throw grpcError(UNAVAILABLE, 'connect ECONNREFUSED');
        if (method === 'GetNodeInfo') return info(n.sandboxes, n.max);
        if (method === 'ListSandboxes') return { sandboxes: [] };
        if (method === 'CreateSandbox') {
          if (n.create) return n.create();
          n.sandboxes++;
          return { sandbox: { id: `sb-${ep.name}-${n.sandboxes}`, ownerId: 't', labels: {}, state: 2 } };
        }
        throw new Error(`unexpected ${method}`);
      }, n.calls);
    },
  });
}

const node = (sandboxes: number, max: number, up = true): FakeNode => ({ up, sandboxes, max, calls: [] });

test('leastLoaded: lowest share of capacity, then fewest sandboxes, then configuration order; full nodes never', () => {
  assert.equal(
    leastLoaded([
      { name: 'a', used: 5, max: 10 },
      { name: 'b', used: 30, max: 100 },
      { name: 'c', used: 4, max: 5 },
    ])?.name,
    'b',
  );
  assert.equal(
    leastLoaded([
      { name: 'a', used: 4, max: 8 },
      { name: 'b', used: 2, max: 4 },
    ])?.name,
    'b',
    'equal share: fewer sandboxes',
  );
  assert.equal(
    leastLoaded([
      { name: 'a', used: 2, max: 4 },
      { name: 'b', used: 2, max: 4 },
    ])?.name,
    'a',
  );
  assert.equal(
    leastLoaded([
      { name: 'a', used: 4, max: 4 },
      { name: 'b', used: 9, max: 0 },
    ])?.name,
    'b',
    'max 0 is unlimited',
  );
  assert.equal(leastLoaded([{ name: 'a', used: 4, max: 4 }]), undefined);
  assert.equal(leastLoaded([]), undefined);
});

test('pickNode answers the least-loaded healthy node and counts its own creates until the next poll', async () => {
  const nodes = { n1: node(5, 10), n2: node(1, 10), n3: node(0, 10, false) };
  const pool = fakePool(nodes);
  try {
    await pool.start();
    assert.deepEqual(
      pool.status().map((s) => [s.name, s.healthy]),
      [
        ['n1', true],
        ['n2', true],
        ['n3', false],
      ],
    );
    assert.match(pool.status()[2]!.lastError!, /AGENT_UNAVAILABLE/);
    assert.equal((await pool.pickNode()).name, 'n2', 'the down node n3 (empty) is skipped');
    for (let i = 0; i < 4; i++) pool.noteCreated('n2');
    assert.equal(
      (await pool.pickNode()).name,
      'n1',
      'n2 at 5 of 10 with its pending creates: tie goes to n1',
    );
    nodes.n2.sandboxes = 5; // the node now reports what was created
    await pool.refresh();
    assert.equal(pool.status()[1]!.pendingCreates, 0);
    pool.markUnhealthy('n1', grpcError(UNAVAILABLE, 'reset'));
    assert.equal((await pool.pickNode()).name, 'n2', 'a node whose call failed is not picked');
    assert.equal(
      (await pool.pickNode(new Set(['n2']))).name,
      'n1',
      'no other choice: a re-poll brings n1 back',
    );
  } finally {
    pool.close();
  }
});

test('no node with room: one re-poll (a node that came back is used), then NO_HEALTHY_NODE naming each node', async () => {
  const nodes = { n1: node(10, 10), n2: node(0, 10, false) };
  const pool = fakePool(nodes);
  try {
    await pool.start();
    await assert.rejects(pool.pickNode(), (e: { code?: string; httpStatus?: number; message?: string }) => {
      assert.equal(e.code, 'NO_HEALTHY_NODE');
      assert.equal(e.httpStatus, 503);
      assert.match(e.message ?? '', /n1: full \(10 of 10/);
      assert.match(e.message ?? '', /n2 \(n2:1\): \[AGENT_UNAVAILABLE\]/);
      return true;
    });
    nodes.n2.up = true;
    assert.equal((await pool.pickNode()).name, 'n2');
  } finally {
    pool.close();
  }
});

test('the pool polls on its interval and stops at close', async () => {
  const nodes = { n1: node(0, 10) };
  const pool = fakePool(nodes, 25);
  await pool.start();
  await sleep(130);
  pool.close();
  const polls = nodes.n1.calls.filter((c) => c === 'GetNodeInfo').length;
  assert.ok(polls >= 3, `polled ${polls} times`);
  await sleep(80);
  assert.equal(nodes.n1.calls.filter((c) => c === 'GetNodeInfo').length, polls, 'no poll after close');
});

test('bad configuration is CONFIG_INVALID', () => {
  assert.throws(() => new NodePool({ nodes: [], logger }), { code: 'CONFIG_INVALID' });
  assert.throws(
    () =>
      new NodePool({
        nodes: [
          { name: 'a', address: 'x:1', insecure: true },
          { name: 'a', address: 'y:1', insecure: true },
        ],
        logger,
        createClient: () => fakeClient(() => ({}), []),
      }),
    { code: 'CONFIG_INVALID' },
  );
});

const req = {
  tenantId: 't',
  conversationId: 'c',
  limits: {},
  egressAllow: [],
  idleTimeoutSeconds: 60,
};

test('a create that fails because the node is down or full moves to the next node; other errors stop', async () => {
  const nodes = { n1: node(0, 10), n2: node(3, 10) };
  const pool = fakePool(nodes);
  const sandboxes = new ConversationSandboxes({ pool, logger });
  try {
    await pool.start();
    nodes.n1.create = () => {
      throw grpcError(UNAVAILABLE, 'connection reset');
    };
    const a = await sandboxes.ensureSandbox(req);
    assert.equal(a.node, 'n2');
    assert.equal(a.created, true);
    assert.equal(pool.isHealthy('n1'), false, 'the failed node is marked');

    await pool.refresh();
    nodes.n1.create = () => {
      throw grpcError(8, 'this node holds its maximum of 10 sandboxes', 'POOL_EXHAUSTED');
    };
    const b = await sandboxes.ensureSandbox({ ...req, conversationId: 'c2' });
    assert.equal(b.node, 'n2');
    assert.equal(pool.isHealthy('n1'), true, 'a full node is healthy');
    assert.equal((await pool.pickNode()).name, 'n2', 'a full node counts as full until its next poll');

    await pool.refresh();
    nodes.n1.create = () => {
      throw grpcError(3, 'limits.cpus: too many', 'INVALID_ARGUMENT');
    };
    const before = nodes.n2.calls.filter((c) => c === 'CreateSandbox').length;
    await assert.rejects(sandboxes.ensureSandbox({ ...req, conversationId: 'c3' }), {
      code: 'INVALID_ARGUMENT',
    });
    assert.equal(nodes.n2.calls.filter((c) => c === 'CreateSandbox').length, before, 'not retried elsewhere');

    nodes.n2.create = () => {
      throw grpcError(UNAVAILABLE, 'gone');
    };
    nodes.n1.create = () => {
      throw grpcError(UNAVAILABLE, 'gone');
    };
    await assert.rejects(sandboxes.ensureSandbox({ ...req, conversationId: 'c4' }), {
      code: 'NO_HEALTHY_NODE',
    });
  } finally {
    pool.close();
  }
});
