/**
 * A Lua script run atomically on Redis: EVALSHA by its digest, and EVAL once when the server does
 * not know it yet (a restart or SCRIPT FLUSH drops the cache). Redis failures become
 * COORDINATION_FAILED.
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { AppError, isAppError } from '@hako/core';

export class RedisScript {
  readonly sha: string;

  constructor(
    /** What the script does, for error messages. */
    readonly name: string,
    readonly source: string,
  ) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  /** Runs the script with `keys` and `args`; answers its reply. */
  async run(redis: Redis, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    try {
      try {
        return await redis.evalsha(this.sha, keys.length, ...keys, ...args);
      } catch (e) {
        if (!(e instanceof Error) || !e.message.includes('NOSCRIPT')) throw e;
        return await redis.eval(this.source, keys.length, ...keys, ...args);
      }
    } catch (e) {
      throw coordinationError(e, `Redis script ${this.name}`);
    }
  }
}

/** Wraps a Redis failure as COORDINATION_FAILED (an AppError passes through). */
export function coordinationError(e: unknown, what: string): AppError {
  if (isAppError(e)) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new AppError(
    'COORDINATION_FAILED',
    `${what} failed: ${msg}; check that Redis (REDIS_URL) is reachable and healthy`,
    { cause: e },
  );
}

/** Runs one plain Redis command, wrapping a failure as COORDINATION_FAILED. */
export async function redisCall<T>(what: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (e) {
    throw coordinationError(e, what);
  }
}
