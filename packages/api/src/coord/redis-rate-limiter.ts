/**
 * RateLimiter on Redis, shared by every API process: a sliding window kept as a sorted set per key
 * (one member per allowed request, scored by its time in ms on the Redis server's clock, so API
 * hosts with skewed clocks agree). One Lua script prunes what left the window, counts, and either
 * adds the request or answers how long until the oldest one leaves: atomic, so two processes never
 * both take the last place.
 *
 * Keys: `{prefix}:rate:{key}`; each expires one window after its newest request.
 */
import type { Redis } from 'ioredis';
import type { RateDecision, RateLimiter } from '../types.js';
import { checkCount, checkKey, checkMs, checkPrefix, newToken } from './coord-args.js';
import { RedisScript } from './redis-script.js';

/**
 * KEYS[1] the window; ARGV: limit, windowMs, member. A request at time s counts while
 * now - s < window. Answers { allowed 0|1, remaining, retryAfterMs }.
 */
const HIT = new RedisScript(
  'rate limit hit',
  `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if n < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, limit - n - 1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local retry = window
if oldest[2] then retry = tonumber(oldest[2]) + window - now end
if retry < 1 then retry = 1 end
return {0, 0, retry}`,
);

export interface RedisRateLimiterOptions {
  readonly redis: Redis;
  /** Key prefix without a trailing colon, e.g. `hako:prod`. */
  readonly prefix: string;
}

export class RedisRateLimiter implements RateLimiter {
  private readonly redis: Redis;
  private readonly prefix: string;

  constructor(opts: RedisRateLimiterOptions) {
    checkPrefix(opts.prefix);
    this.redis = opts.redis;
    this.prefix = opts.prefix;
  }

  /**
   * Counts one request against `key` when fewer than `limit` were allowed in the last `windowMs`;
   * a refused request is not counted. `limit` 0 refuses everything (retryAfterMs = windowMs).
   */
  async hit(key: string, limit: number, windowMs: number): Promise<RateDecision> {
    checkKey(key);
    checkCount('limit', limit);
    checkMs('windowMs', windowMs);
    const r = (await HIT.run(this.redis, [`${this.prefix}:rate:${key}`], [limit, windowMs, newToken()])) as [
      number,
      number,
      number,
    ];
    return { allowed: r[0] === 1, remaining: r[1], retryAfterMs: r[2] };
  }
}
