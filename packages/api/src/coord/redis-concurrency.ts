/**
 * ConcurrencyLimiter on Redis, shared by every API process: the slots of a key are a sorted set of
 * holder ids scored by their expiry (ms, Redis server clock). Acquire prunes expired holders (a
 * crashed API's runs), counts, and adds the new holder in one Lua script; renew moves a live
 * holder's expiry; release removes it. The set itself expires with its last holder.
 *
 * Keys: `{prefix}:slots:{key}`.
 */
import type { Redis } from 'ioredis';
import type { ConcurrencyLimiter, Slot } from '../types.js';
import { checkCount, checkKey, checkMs, checkPrefix, newToken } from './coord-args.js';
import { RedisScript, redisCall } from './redis-script.js';

/** Common Lua prelude: `now` in ms, and `keepUntilLast()` to expire the set with its last holder. */
const PRELUDE = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function keepUntilLast()
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if last[2] then
    local ms = tonumber(last[2]) - now
    if ms < 1 then ms = 1 end
    redis.call('PEXPIRE', KEYS[1], ms)
  end
end
`;

/** ARGV: max, ttlMs, holder. 1 when the slot was taken, 0 when all are held. */
const ACQUIRE = new RedisScript(
  'slot acquire',
  `${PRELUDE}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
keepUntilLast()
return 1`,
);

/** ARGV: ttlMs, holder. 1 when extended; 0 (and the holder removed) once it expired or was released. */
const RENEW = new RedisScript(
  'slot renew',
  `${PRELUDE}
local exp = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not exp then return 0 end
if tonumber(exp) <= now then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
keepUntilLast()
return 1`,
);

export interface RedisConcurrencyLimiterOptions {
  readonly redis: Redis;
  /** Key prefix without a trailing colon, e.g. `hako:prod`. */
  readonly prefix: string;
}

class RedisSlot implements Slot {
  constructor(
    private readonly redis: Redis,
    private readonly redisKey: string,
    private readonly holder: string,
    private readonly ttlMs: number,
  ) {}

  /** Removes this holder; releasing twice, or after expiry, does nothing. */
  async release(): Promise<void> {
    await redisCall('releasing a concurrency slot', () => this.redis.zrem(this.redisKey, this.holder));
  }

  /** Extends the slot by its original TTL from now; false once it expired or was released. */
  async renew(): Promise<boolean> {
    return (await RENEW.run(this.redis, [this.redisKey], [this.ttlMs, this.holder])) === 1;
  }
}

export class RedisConcurrencyLimiter implements ConcurrencyLimiter {
  private readonly redis: Redis;
  private readonly prefix: string;

  constructor(opts: RedisConcurrencyLimiterOptions) {
    checkPrefix(opts.prefix);
    this.redis = opts.redis;
    this.prefix = opts.prefix;
  }

  /**
   * Takes one of `max` slots of `key` for `ttlMs`; undefined when `max` live holders exist (`max`
   * 0 refuses everything). The holder renews before the TTL ends and releases when done.
   */
  async acquire(key: string, max: number, ttlMs: number): Promise<Slot | undefined> {
    checkKey(key);
    checkCount('max', max);
    checkMs('ttlMs', ttlMs);
    const redisKey = `${this.prefix}:slots:${key}`;
    const holder = newToken();
    const ok = await ACQUIRE.run(this.redis, [redisKey], [max, ttlMs, holder]);
    return ok === 1 ? new RedisSlot(this.redis, redisKey, holder, ttlMs) : undefined;
  }
}
