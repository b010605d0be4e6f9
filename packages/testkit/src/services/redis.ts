import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { silentLogger } from '@hako/core';
import type { Logger } from '@hako/core';
import {
  findExecutable,
  startOnFreePort,
  removeDir,
  runUndo,
  serviceEnv,
  spawnService,
  waitForService,
} from './service-process.js';

const READY_TIMEOUT_MS = 15_000;
const STOP_GRACE_MS = 5_000;
const PORT_ATTEMPTS = 3;

export interface StartRedisOptions {
  /** Gets the server's log lines at debug level. Default: silent. */
  readonly logger?: Logger;
}

/** A private Redis server for one test file. */
export interface RedisService {
  /** redis://127.0.0.1:<port> (no password, database 0). */
  readonly url: string;
  readonly port: number;
  /** The server's working directory (temporary); stop() removes it. */
  readonly dir: string;
  /** Stops the server (nothing is saved) and removes `dir`. Idempotent: later calls return the first call's promise. */
  stop(): Promise<void>;
}

/**
 * Starts a private redis-server on 127.0.0.1 and a random port, with no persistence (no RDB
 * snapshots, no AOF) and its own temporary working directory. Resolves once it answers PING;
 * everything is removed again when the start fails.
 */
export async function startRedis(options: StartRedisOptions = {}): Promise<RedisService> {
  const logger = options.logger ?? silentLogger();
  const command = await findExecutable('redis-server', 'redis-server');
  const dir = await mkdtemp(join(tmpdir(), 'hako-redis-'));
  const undo: (() => Promise<void>)[] = [() => removeDir(dir)];
  try {
    const { proc, port } = await startOnFreePort({
      attempts: PORT_ATTEMPTS,
      undo,
      bindError: /Address already in use/i,
      spawn: (port) =>
        spawnService({
          name: 'redis',
          command,
          args: serverArgs(dir, port),
          env: serviceEnv(),
          parentDeathSignal: 'SIGTERM',
          logger,
        }),
      stop: (p) => p.stop('SIGTERM', STOP_GRACE_MS),
      ready: (p, port) => waitForService(p, `Redis on 127.0.0.1:${port}`, READY_TIMEOUT_MS, () => ping(port)),
    });

    const url = `redis://127.0.0.1:${port}`;
    logger.debug({ url, dir, pid: proc.pid }, 'test Redis started');
    let stopping: Promise<void> | undefined;
    return {
      url,
      port,
      dir,
      stop: () => (stopping ??= runUndo('Redis', undo)),
    };
  } catch (err) {
    await runUndo('Redis', undo).catch((undoErr: unknown) => {
      logger.warn({ err: undoErr }, 'cleaning up a failed Redis start failed');
    });
    throw err;
  }
}

function serverArgs(dir: string, port: number): string[] {
  return [
    '--bind',
    '127.0.0.1',
    '--port',
    String(port),
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    'no',
    '--daemonize',
    'no',
    '--supervised',
    'no',
    '--logfile',
    '',
    '--loglevel',
    'warning',
  ];
}

async function ping(port: number): Promise<void> {
  const client = new Redis({
    host: '127.0.0.1',
    port,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 1_000,
  });
  // A refused connection is also emitted as 'error'; the rejected connect() already reports it.
  client.on('error', () => undefined);
  try {
    await client.connect();
    const answer: string = await client.ping();
    if (answer !== 'PONG') throw new Error(`PING answered ${answer}`);
  } finally {
    client.disconnect();
  }
}
