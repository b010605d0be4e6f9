import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CleanupStack } from '../../src/cleanup-stack.js';
import { Sandbox } from '../../src/sandbox.js';
import { idFromName, newSandboxId, resourceName } from '../../src/names.js';

test('runs undo steps in reverse order, runs all of them, and reports failures', async () => {
  const s = new CleanupStack();
  const order: string[] = [];
  s.push('a', () => {
    order.push('a');
  });
  s.push('b', () => {
    throw new Error('b broke');
  });
  s.push('c', async () => {
    await Promise.resolve();
    order.push('c');
  });
  const errors = await s.run();
  assert.deepEqual(order, ['c', 'a']);
  assert.equal(errors.length, 1);
  assert.equal(errors[0]?.code, 'SANDBOX_CLEANUP_FAILED');
  assert.match(errors[0]?.message ?? '', /cleanup step "b": b broke/);
  assert.equal(s.size, 0);
  assert.deepEqual(await s.run(), [], 'a second run does nothing');
});

test('sandbox state machine refuses illegal transitions', () => {
  const sb = new Sandbox('abcdef123456', 'hako-dev-abcdef123456', {
    image: 'host',
    limits: { memoryBytes: 1, pids: 1, cpus: 1, diskBytes: 1, tmpBytes: 1 },
    network: 'none',
    allow: [],
    env: {},
    labels: {},
  });
  assert.equal(sb.state, 'creating');
  sb.transition('running');
  assert.throws(() => sb.transition('creating'), { code: 'SANDBOX_STATE_INVALID' });
  sb.transition('stopping');
  sb.transition('gone');
  assert.throws(() => sb.transition('running'), { code: 'SANDBOX_STATE_INVALID' });
});

test('names mark the env and round-trip; foreign names are not ours', () => {
  const id = newSandboxId();
  assert.match(id, /^[a-z0-9]{12}$/);
  const n = resourceName('ci', id);
  assert.equal(n, `hako-ci-${id}`);
  assert.equal(idFromName('ci', n), id);
  assert.equal(idFromName('prod', n), undefined, 'another env');
  assert.equal(idFromName('ci', `hako-ci-${id}-x`), undefined);
  assert.equal(idFromName('ci', `other-ci-${id}`), undefined);
});

test('concurrent steps run together, and a plain step waits for everything above it', async () => {
  const s = new CleanupStack();
  const events: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  s.push('first', () => {
    events.push('first');
  });
  s.push(
    'b',
    () => {
      events.push('b');
      release();
      throw new Error('b broke');
    },
    { concurrent: true },
  );
  // a is popped before b: run one at a time, a would wait for b's release until the timer fires
  s.push(
    'a',
    async () => {
      events.push('a start');
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<string>((r) => (timer = setTimeout(() => r('a timed out'), 2000)));
      events.push(await Promise.race([gate.then(() => 'a end'), timedOut]));
      clearTimeout(timer);
    },
    { concurrent: true },
  );
  s.push('top', () => {
    events.push('top');
  });
  const errors = await s.run();
  assert.deepEqual(events, ['top', 'a start', 'b', 'a end', 'first']);
  assert.equal(errors.length, 1);
  assert.match(errors[0]?.message ?? '', /b broke/);
  assert.equal(s.size, 0);
});
