/**
 * LockManager on Redis, shared by every API process: `SET key token NX PX ttl` takes a lock; renew
 * and release compare the holder's token first (Lua, atomic), so a holder whose lock expired and
 * was taken by another can never extend or delete the new holder's lock. A crashed holder's lock
 * goes away by itself when its TTL runs out.
 *
 * Keys: `{prefix}:lock:{key}`.
 */
import type { Redis } from 'ioredis';
import type { HeldLock, LockManager } from '../types.js';
import { checkKey, checkMs, checkPrefix, newToken } from './coord-args.js';
import { RedisScript, redisCall } from './redis-script.js';

/** PEXPIREs the key when it still holds this token; 1 when extended, 0 otherwise. */
const RENEW = new RedisScript(
  'lock renew',
  `if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`,
);

/** DELetes the key when it still holds this token; 1 when deleted, 0 otherwise. */
const RELEASE = new RedisScript(
  'lock release',
  `if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`,
);

export interface RedisLockManagerOptions {
  readonly redis: Redis;
  /** Key prefix without a trailing colon, e.g. `hako:prod`. */
  readonly prefix: string;
}

class RedisHeldLock implements HeldLock {
  constructor(
    private readonly redis: Redis,
    private readonly redisKey: string,
    readonly key: string,
    readonly token: string,
    private readonly ttlMs: number,
  ) {}

  /** Extends the lock by its original TTL from now; false once another holder has it or it expired. */
  async renew(): Promise<boolean> {
    return (await RENEW.run(this.redis, [this.redisKey], [this.token, this.ttlMs])) === 1;
  }

  /** Compare-and-delete; false when the lock already expired or belongs to another holder. */
  async release(): Promise<boolean> {
    return (await RELEASE.run(this.redis, [this.redisKey], [this.token])) === 1;
  }
}

export class RedisLockManager implements LockManager {
  private readonly redis: Redis;
  private readonly prefix: string;

  constructor(opts: RedisLockManagerOptions) {
    checkPrefix(opts.prefix);
    this.redis = opts.redis;
    this.prefix = opts.prefix;
  }

  private redisKey(key: string): string {
    return `${this.prefix}:lock:${key}`;
  }

  /**
   * Takes `key` for `ttlMs` with a new random token; undefined when somebody holds it. The caller
   * renews before the TTL runs out (e.g. every ttl/3) and releases when done.
   */
  async acquire(key: string, ttlMs: number): Promise<HeldLock | undefined> {
    checkKey(key);
    checkMs('ttlMs', ttlMs);
    const token = newToken();
    const redisKey = this.redisKey(key);
    const ok = await redisCall(`taking lock ${key}`, () =>
      this.redis.set(redisKey, token, 'PX', ttlMs, 'NX'),
    );
    return ok === 'OK' ? new RedisHeldLock(this.redis, redisKey, key, token, ttlMs) : undefined;
  }

  /** Whether anybody holds `key` now (an expired lock is not held). */
  async isHeld(key: string): Promise<boolean> {
    checkKey(key);
    return (await redisCall(`checking lock ${key}`, () => this.redis.exists(this.redisKey(key)))) === 1;
  }
}
