/* eslint-disable @typescript-eslint/require-await -- the in-memory ports implement async interfaces without awaiting */
// The execute flow's ordering and guarantees with in-memory ports: refusals before anything is
// held, the event order, the lock and the slot always released, a failed or cancelled run still
// syncs the workspace back and ends with one stored done event.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError, silentLogger } from '@hako/core';
import { beginExecute, conversationLockKey } from '../../src/execute/execute-run.js';
import type { AgentPort, ExecuteDeps, SyncResult } from '../../src/execute/execute-run.js';
import type { AgentEvent, ConcurrencyLimiter, HeldLock, LockManager, StoredEvent } from '../../src/types.js';
import { testConversation, testTenant } from '../helpers/fixtures.js';

class Locks implements LockManager {
  readonly held = new Map<string, string>();
  async acquire(key: string): Promise<HeldLock | undefined> {
    if (this.held.has(key)) return undefined;
    const token = Math.random().toString(36);
    this.held.set(key, token);
    return {
      key,
      token,
      renew: async () => this.held.get(key) === token,
      release: async () => (this.held.get(key) === token ? this.held.delete(key) : false),
    };
  }
  async isHeld(key: string): Promise<boolean> {
    return this.held.has(key);
  }
}

class Slots implements ConcurrencyLimiter {
  used = 0;
  async acquire(_key: string, max: number) {
    if (this.used >= max) return undefined;
    this.used++;
    let released = false;
    return {
      release: async () => {
        if (!released) this.used--;
        released = true;
      },
      renew: async () => !released,
    };
  }
}

const tenant = testTenant();
const conv = testConversation;
const noSync: SyncResult = { uploaded: 1, deleted: 0, unchanged: 0, changes: [], complete: true };

function harness(agent: AgentPort['run'], over: Partial<ExecuteDeps> = {}) {
  const stored: StoredEvent[] = [];
  const steps: string[] = [];
  const finished: { status: string; errorCode: string | undefined }[] = [];
  let seq = 0;
  const locks = new Locks();
  const slots = new Slots();
  const store = (conversationId: string, runId: string, ev: AgentEvent): StoredEvent => {
    const s = { ...ev, conversationId, runId, seq: ++seq, timestamp: new Date().toISOString() };
    stored.push(s);
    return s;
  };
  const deps: ExecuteDeps = {
    locks,
    slots,
    logger: silentLogger(),
    lockTtlMs: 60_000,
    pingIntervalMs: 60_000,
    runTimeoutMs: 60_000,
    runs: {
      startRun: async () => 'run-1',
      append: async (_t, c, r, ev) => store(c, r, ev),
      finishRun: async (i) => {
        finished.push({ status: i.status, errorCode: i.errorCode });
        return store(i.conversationId, i.runId, i.done);
      },
    },
    sandboxes: {
      ensure: async () => {
        steps.push('ensure');
        return { node: 'n1', sandboxId: 'sb1', created: true };
      },
    },
    workspace: {
      restore: async () => {
        steps.push('restore');
        return { files: 0, bytes: 0 };
      },
      syncBack: async () => {
        steps.push('sync');
        return noSync;
      },
    },
    agent: { run: agent },
    ...over,
  };
  return { deps, stored, steps, finished, locks, slots };
}

const okAgent: AgentPort['run'] = async ({ onEvent }) => {
  await onEvent({ type: 'init', data: { session_id: 's1' } });
  await onEvent({ type: 'assistant', data: { text: 'done' } });
  return {
    status: 'completed',
    result: 'done',
    isError: false,
    usage: { inputTokens: 10, outputTokens: 2, cacheCreationInputTokens: 0, cacheReadInputTokens: 0 },
    costUsd: 0.01,
    turnCount: 1,
    sessionId: 's1',
    contextTokens: 10,
  };
};

test('a run: title, sandbox, restore, agent events, sync, done; lock and slot released', async () => {
  const h = harness(okAgent);
  const handle = await beginExecute(h.deps, { tenant, conversation: conv(), prompt: 'hello world' });
  assert.equal(await h.locks.isHeld(conversationLockKey('c1')), true);
  const sent: number[] = [];
  const done = await handle.run({ onEvent: async (e) => void sent.push(e.seq) });
  assert.deepEqual(
    h.stored.map(
      (e) => `${e.type}${e.type === 'progress' ? `:${String(e.data.step)}:${String(e.data.status)}` : ''}`,
    ),
    [
      'title',
      'progress:sandbox:started',
      'progress:sandbox:done',
      'progress:workspace_restore:started',
      'progress:workspace_restore:done',
      'init',
      'assistant',
      'progress:workspace_sync:started',
      'progress:workspace_sync:done',
      'done',
    ],
  );
  assert.deepEqual(
    sent,
    h.stored.map((e) => e.seq),
    'the sink saw every stored event, in order',
  );
  assert.equal(done?.data.status, 'completed');
  assert.deepEqual(done?.data.usage, {
    input_tokens: 10,
    output_tokens: 2,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 0,
  });
  assert.equal(h.locks.held.size, 0);
  assert.equal(h.slots.used, 0);
});

test('without a workspace: skills synced, no restore and no sync-back; preferred skills reach the agent', async () => {
  const synced: string[] = [];
  let preferred: readonly string[] | undefined;
  let resumed: string | null | undefined;
  const h = harness(
    async (input) => {
      preferred = input.preferredSkills;
      resumed = input.conversation.sessionId;
      return okAgent(input);
    },
    {
      skills: {
        names: async () => ['pdf', 'docx'],
        sync: async (target, t) => {
          synced.push(`${t.id}:${target.sandboxId}`);
          return { changed: true, skills: 2 };
        },
      },
    },
  );
  const handle = await beginExecute(h.deps, {
    tenant,
    conversation: conv({ workspaceEnabled: false, sessionId: 'old-session' }),
    prompt: 'x',
    preferredSkills: ['pdf'],
  });
  const done = await handle.run({ onEvent: async () => undefined });
  assert.equal(done?.data.status, 'completed');
  assert.deepEqual(h.steps, ['ensure'], 'neither restore nor sync-back ran');
  assert.deepEqual(synced, ['t1:sb1']);
  assert.deepEqual(preferred, ['pdf']);
  assert.equal(resumed, null, 'a new sandbox has no transcript of the old session: it starts a new one');
  assert.deepEqual(
    h.stored
      .filter((e) => e.type === 'progress')
      .map((e) => `${String(e.data.step)}:${String(e.data.status)}`),
    ['sandbox:started', 'sandbox:done', 'skills_sync:started', 'skills_sync:done'],
  );
  // a skill the tenant does not have is refused before anything is taken
  await assert.rejects(
    beginExecute(h.deps, { tenant, conversation: conv(), prompt: 'x', preferredSkills: ['pdf', 'nope'] }),
    (e: { code?: string; message?: string }) => e.code === 'SKILL_UNKNOWN' && /"nope"/.test(e.message ?? ''),
  );
  assert.equal(h.locks.held.size, 0);
  // without a skills port every preferred skill is unknown
  await assert.rejects(
    beginExecute(harness(okAgent).deps, {
      tenant,
      conversation: conv(),
      prompt: 'x',
      preferredSkills: ['pdf'],
    }),
    { code: 'SKILL_UNKNOWN' },
  );
});

test('refusals hold nothing: context limit, a locked conversation, no run slot', async () => {
  const h = harness(okAgent);
  await assert.rejects(
    beginExecute(h.deps, { tenant, conversation: conv({ contextTokens: 1000 }), prompt: 'x' }),
    {
      code: 'CONTEXT_LIMIT_EXCEEDED',
    },
  );
  const first = await beginExecute(h.deps, { tenant, conversation: conv(), prompt: 'x' });
  await assert.rejects(beginExecute(h.deps, { tenant, conversation: conv(), prompt: 'x' }), {
    code: 'CONVERSATION_LOCKED',
  });
  // The tenant's one slot is taken by the first run: another conversation is refused.
  await assert.rejects(beginExecute(h.deps, { tenant, conversation: conv({ id: 'c2' }), prompt: 'x' }), {
    code: 'CONCURRENCY_LIMITED',
  });
  assert.equal(await h.locks.isHeld(conversationLockKey('c2')), false, 'the refused run let its lock go');
  await first.run({ onEvent: async () => undefined });
  assert.equal(h.locks.held.size, 0);
  assert.equal(h.slots.used, 0);
});

test('an agent failure still syncs the workspace and ends with error then done failed', async () => {
  const h = harness(async ({ onEvent }) => {
    await onEvent({ type: 'init', data: {} });
    throw new AppError('SANDBOX_NOT_FOUND', 'the sandbox went away');
  });
  const handle = await beginExecute(h.deps, { tenant, conversation: conv({ title: 'kept' }), prompt: 'x' });
  const done = await handle.run({ onEvent: async () => undefined });
  assert.ok(h.steps.includes('sync'));
  const types = h.stored.map((e) => e.type);
  assert.deepEqual(types.slice(-2), ['error', 'done']);
  assert.ok(!types.includes('title'), 'a titled conversation gets no title event');
  assert.equal(h.stored.at(-2)?.data.code, 'SANDBOX_NOT_FOUND');
  assert.equal(done?.data.status, 'failed');
  assert.equal(done?.data.is_error, true);
  assert.deepEqual(h.finished, [{ status: 'failed', errorCode: 'SANDBOX_NOT_FOUND' }]);
  assert.equal(h.locks.held.size, 0);
});

test('a cancel (client gone) aborts the agent, syncs back, stores done cancelled', async () => {
  let sawAbort = false;
  const h = harness(
    ({ signal }) =>
      new Promise((_resolve, reject) => {
        signal.addEventListener('abort', () => {
          sawAbort = true;
          reject(new Error('killed'));
        });
      }),
  );
  const handle = await beginExecute(h.deps, { tenant, conversation: conv(), prompt: 'x' });
  const running = handle.run({ onEvent: async () => undefined });
  setTimeout(() => handle.cancel('client'), 20);
  const done = await running;
  assert.equal(sawAbort, true);
  assert.ok(h.steps.includes('sync'));
  assert.equal(done?.data.status, 'cancelled');
  assert.equal(h.stored.at(-2)?.type, 'error');
  assert.equal(h.stored.at(-2)?.data.code, 'RUN_CANCELLED');
  assert.equal(h.locks.held.size, 0);
  assert.equal(h.slots.used, 0);
});

test('a 5xx failure shows the client no internal message', async () => {
  const h = harness(async () => {
    throw new Error('password=hunter2 in some driver message');
  });
  const handle = await beginExecute(h.deps, { tenant, conversation: conv(), prompt: 'x' });
  await handle.run({ onEvent: async () => undefined });
  const err = h.stored.find((e) => e.type === 'error');
  assert.equal(err?.data.code, 'INTERNAL');
  assert.doesNotMatch(String(err?.data.message), /hunter2/);
});

test('pings are stored events with their own seq while the run lives', async () => {
  const h = harness(
    async (i) => {
      await new Promise((r) => setTimeout(r, 120));
      return okAgent(i);
    },
    { pingIntervalMs: 25 },
  );
  const handle = await beginExecute(h.deps, { tenant, conversation: conv(), prompt: 'x' });
  await handle.run({ onEvent: async () => undefined });
  const pings = h.stored.filter((e) => e.type === 'ping');
  assert.ok(pings.length >= 2, `pings: ${pings.length}`);
  const seqs = h.stored.map((e) => e.seq);
  assert.deepEqual(
    seqs,
    [...seqs].sort((a, b) => a - b),
  );
  assert.ok(h.stored.indexOf(pings.at(-1)!) < h.stored.findIndex((e) => e.type === 'done'));
});

test("the run's model reaches the agent and its provider the sandbox; an upstream refusal ends the stream with its code", async () => {
  const asked: (string | undefined)[] = [];
  const models: (string | undefined)[] = [];
  const h = harness(
    async (input) => {
      models.push(input.model);
      return okAgent(input);
    },
    {
      models: { choose: async () => ({ id: 'eu.anthropic.claude-sonnet-4-5-v1:0', provider: 'bedrock' }) },
      sandboxes: {
        ensure: async (_t, _c, opts) => {
          asked.push(opts?.provider);
          return { node: 'n1', sandboxId: 'sb1', created: false };
        },
      },
    },
  );
  const done = await (
    await beginExecute(h.deps, { tenant, conversation: conv(), prompt: 'hi' })
  ).run({
    onEvent: async () => undefined,
  });
  assert.equal(done?.data.status, 'completed');
  assert.deepEqual([...asked], ['bedrock']);
  assert.deepEqual([...models], ['eu.anthropic.claude-sonnet-4-5-v1:0']);

  // no model configured: the anthropic upstream
  const plain = harness(okAgent, {
    sandboxes: {
      ensure: async (_t, _c, opts) => {
        asked.push(opts?.provider);
        return { node: 'n1', sandboxId: 'sb1', created: false };
      },
    },
  });
  await (
    await beginExecute(plain.deps, { tenant, conversation: conv(), prompt: 'hi' })
  ).run({
    onEvent: async () => undefined,
  });
  assert.deepEqual(asked, ['bedrock', 'anthropic']);

  // hakod without the upstream: an error event with the code, then done failed
  const refused = harness(okAgent, {
    models: { choose: async () => ({ id: 'm', provider: 'bedrock' }) },
    sandboxes: {
      ensure: async () => {
        throw new AppError('UPSTREAM_NOT_CONFIGURED', 'no hakod node can serve this run');
      },
    },
  });
  const failed = await (
    await beginExecute(refused.deps, { tenant, conversation: conv(), prompt: 'hi' })
  ).run({
    onEvent: async () => undefined,
  });
  assert.equal(failed?.data.status, 'failed');
  const error = refused.stored.find((e) => e.type === 'error');
  assert.equal(error?.data.code, 'UPSTREAM_NOT_CONFIGURED');
  assert.deepEqual(refused.finished, [{ status: 'failed', errorCode: 'UPSTREAM_NOT_CONFIGURED' }]);
});
