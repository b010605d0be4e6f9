// startOnFreePort: a lost race for the port is retried on a new port; any other failure is not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startOnFreePort } from '../../src/services/service-process.js';
import type { ServiceProcess } from '../../src/services/service-process.js';

function fakeProcess(output: string, stopped: number[], port: number): ServiceProcess {
  return {
    pid: undefined,
    exited: Promise.resolve(),
    running: () => true,
    exitDescription: () => undefined,
    output: () => output,
    stop: () => {
      stopped.push(port);
      return Promise.resolve();
    },
  };
}

test('a bind race is retried on another port; the loser is stopped and the winner stays on the undo stack', async () => {
  const stopped: number[] = [];
  const ports: number[] = [];
  const undo: (() => Promise<void>)[] = [];
  const r = await startOnFreePort({
    attempts: 3,
    undo,
    bindError: /Address already in use/,
    spawn: (port) => {
      ports.push(port);
      return Promise.resolve(
        fakeProcess(ports.length === 1 ? 'bind: Address already in use' : 'ok', stopped, port),
      );
    },
    stop: (p) => p.stop('SIGTERM', 0),
    ready: (_p, port) =>
      ports.length === 1 ? Promise.reject(new Error('not ready')) : Promise.resolve(port * 2),
  });
  assert.equal(ports.length, 2);
  assert.equal(r.port, ports[1]);
  assert.equal(r.ready, r.port * 2);
  assert.deepEqual(stopped, [ports[0]]);
  assert.equal(undo.length, 1);
  await undo[0]?.();
  assert.deepEqual(stopped, [ports[0], ports[1]]);
});

test('another failure, or too many lost races, is thrown with the last process left on the undo stack', async () => {
  const undo: (() => Promise<void>)[] = [];
  let spawns = 0;
  await assert.rejects(
    startOnFreePort({
      attempts: 3,
      undo,
      bindError: /Address already in use/,
      spawn: (port) => {
        spawns++;
        return Promise.resolve(fakeProcess('FATAL: bad config', [], port));
      },
      stop: () => Promise.resolve(),
      ready: () => Promise.reject(new Error('exited')),
    }),
    /exited/,
  );
  assert.equal(spawns, 1);
  assert.equal(undo.length, 1);

  spawns = 0;
  await assert.rejects(
    startOnFreePort({
      attempts: 2,
      undo: [],
      bindError: /in use/,
      spawn: (port) => {
        spawns++;
        return Promise.resolve(fakeProcess('in use', [], port));
      },
      stop: () => Promise.resolve(),
      ready: () => Promise.reject(new Error('lost')),
    }),
    /lost/,
  );
  assert.equal(spawns, 2);
});
