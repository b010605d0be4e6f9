// Coordination contract: the same suite runs against the Redis implementations (a private, real
// redis-server; two ioredis connections stand for two API processes) and the in-process ones.
// Timings use short TTLs and real sleeps; every assertion about time has a small, stated slack.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { startRedis } from '@hako/testkit';
import type { RedisService } from '@hako/testkit';
import type { ConcurrencyLimiter, LockManager, RateLimiter } from '../../src/types.js';
import { RedisLockManager } from '../../src/coord/redis-lock.js';
import { RedisRateLimiter } from '../../src/coord/redis-rate-limiter.js';
import { RedisConcurrencyLimiter } from '../../src/coord/redis-concurrency.js';
import { MemoryLockManager } from '../../src/coord/memory-lock.js';
import { MemoryRateLimiter } from '../../src/coord/memory-rate-limiter.js';
import { MemoryConcurrencyLimiter } from '../../src/coord/memory-concurrency.js';

const prefix = `hako:t${randomBytes(4).toString('hex').slice(0, 6)}`;
let redisService: RedisService | undefined;
const conns: Redis[] = [];
const memories: { close(): void }[] = [];

function connect(): Redis {
  if (!redisService) throw new Error('Redis is not started');
  const r = new Redis(redisService.url, { maxRetriesPerRequest: 1 });
  conns.push(r);
  return r;
}

before(async () => {
  redisService = await startRedis();
});

after(async () => {
  for (const m of memories) m.close();
  for (const c of conns) c.disconnect();
  await redisService?.stop();
});

interface Impl {
  readonly name: string;
  locks(): LockManager;
  rates(): RateLimiter;
  slots(): ConcurrencyLimiter;
}

const redisImpl: Impl = {
  name: 'redis',
  locks: () => new RedisLockManager({ redis: connect(), prefix }),
  rates: () => new RedisRateLimiter({ redis: connect(), prefix }),
  slots: () => new RedisConcurrencyLimiter({ redis: connect(), prefix }),
};

function keep<T extends { close(): void }>(m: T): T {
  memories.push(m);
  return m;
}

const memoryImpl: Impl = {
  name: 'memory',
  locks: () => keep(new MemoryLockManager()),
  rates: () => keep(new MemoryRateLimiter()),
  slots: () => keep(new MemoryConcurrencyLimiter()),
};

let n = 0;
/** A key nobody else in this run uses. */
const uniq = (what: string): string => `${what}-${++n}-${randomBytes(3).toString('hex')}`;

for (const impl of [redisImpl, memoryImpl]) {
  describe(`${impl.name}: LockManager`, () => {
    test('a lock is exclusive until released; release frees it; tokens differ', async () => {
      const locks = impl.locks();
      const key = uniq('conv');
      const a = await locks.acquire(key, 5_000);
      assert.ok(a, 'the first acquire takes the lock');
      assert.equal(a.key, key);
      assert.ok(a.token.length >= 16);
      assert.equal(await locks.acquire(key, 5_000), undefined, 'a second acquire is refused');
      assert.equal(await locks.isHeld(key), true);
      assert.equal(await locks.isHeld(uniq('other')), false);
      assert.equal(await a.release(), true);
      assert.equal(await locks.isHeld(key), false);
      assert.equal(await a.release(), false, 'a second release finds nothing of its own');
      const b = await locks.acquire(key, 5_000);
      assert.ok(b, 'released: a new holder gets it');
      assert.notEqual(b.token, a.token);
      assert.equal(await b.release(), true);
    });

    test("a crashed holder's lock expires; its stale release and renew leave the new holder's lock alone", async () => {
      const locks = impl.locks();
      const key = uniq('conv');
      const crashed = await locks.acquire(key, 120);
      assert.ok(crashed);
      assert.equal(await locks.acquire(key, 5_000), undefined);
      await sleep(200);
      assert.equal(await locks.isHeld(key), false, 'expired by itself');
      const next = await locks.acquire(key, 5_000);
      assert.ok(next, 'a new holder gets the expired lock');
      assert.equal(await crashed.release(), false, 'the stale token deletes nothing');
      assert.equal(await crashed.renew(), false, 'the stale token extends nothing');
      assert.equal(await locks.isHeld(key), true, "the new holder's lock survived");
      assert.equal(await locks.acquire(key, 5_000), undefined);
      assert.equal(await next.release(), true);
    });

    test('renew extends the lock past its first TTL; without renew it ends', async () => {
      const locks = impl.locks();
      const key = uniq('conv');
      const a = await locks.acquire(key, 400);
      assert.ok(a);
      await sleep(150);
      assert.equal(await a.renew(), true);
      await sleep(300); // 450 ms after acquire: past the first TTL, inside the renewed one
      assert.equal(await locks.isHeld(key), true, 'renewed');
      assert.equal(await locks.acquire(key, 5_000), undefined);
      await sleep(200); // 500 ms after the renew
      assert.equal(await locks.isHeld(key), false, 'expired after the renewed TTL');
      assert.equal(await a.renew(), false, 'a lost lock cannot be renewed');
    });

    test('bad arguments are INVALID_ARGUMENT', async () => {
      const locks = impl.locks();
      await assert.rejects(locks.acquire('', 1000), { code: 'INVALID_ARGUMENT' });
      await assert.rejects(locks.acquire(uniq('k'), 0), { code: 'INVALID_ARGUMENT' });
      await assert.rejects(locks.acquire(uniq('k'), 1.5), { code: 'INVALID_ARGUMENT' });
    });
  });

  describe(`${impl.name}: RateLimiter`, () => {
    test('exactly N per window, then refused with retryAfterMs up to the oldest request leaving', async () => {
      const rates = impl.rates();
      const key = uniq('key');
      const t0 = Date.now();
      const seen = [];
      for (let i = 0; i < 3; i++) seen.push(await rates.hit(key, 3, 1_000));
      assert.deepEqual(
        seen.map((d) => [d.allowed, d.remaining, d.retryAfterMs]),
        [
          [true, 2, 0],
          [true, 1, 0],
          [true, 0, 0],
        ],
      );
      const refused = await rates.hit(key, 3, 1_000);
      const elapsed = Date.now() - t0;
      assert.equal(refused.allowed, false);
      assert.equal(refused.remaining, 0);
      assert.ok(refused.retryAfterMs <= 1_000, `retryAfterMs ${refused.retryAfterMs} <= window`);
      assert.ok(
        refused.retryAfterMs >= 1_000 - elapsed - 2,
        `retryAfterMs ${refused.retryAfterMs} >= window - elapsed (${elapsed})`,
      );
      assert.equal((await rates.hit(uniq('key'), 3, 1_000)).allowed, true, 'another key has its own count');
    });

    test('the window slides: each request frees its place one window after it was made', async () => {
      const rates = impl.rates();
      const key = uniq('key');
      const W = 1_000;
      /** Runs one hit and answers it with the wall-clock times just before and after. */
      const timed = async () => {
        const before = Date.now();
        const d = await rates.hit(key, 2, W);
        return { d, before, after: Date.now() };
      };
      /** retryAfterMs must be what is left of a request made in [madeFrom, madeTo], asked in [askFrom, askTo]. */
      const assertLeft = (
        retry: number,
        made: { before: number; after: number },
        asked: { before: number; after: number },
      ) => {
        const lo = made.before + W - asked.after - 3;
        const hi = made.after + W - asked.before + 3;
        assert.ok(retry >= lo && retry <= hi, `retryAfterMs ${retry} in [${lo}, ${hi}]`);
      };
      const first = await timed();
      assert.equal(first.d.allowed, true);
      await sleep(300);
      const second = await timed();
      assert.equal(second.d.allowed, true);
      const r1 = await timed();
      assert.equal(r1.d.allowed, false);
      assertLeft(r1.d.retryAfterMs, first, r1);
      // Refused requests are not counted: hammering does not push the window out.
      for (let i = 0; i < 5; i++) assert.equal((await rates.hit(key, 2, W)).allowed, false);
      await sleep(r1.d.retryAfterMs + 5);
      const after1 = await timed();
      assert.equal(after1.d.allowed, true, 'the first request left the window');
      assert.equal(after1.d.remaining, 0);
      const r2 = await timed();
      assert.equal(r2.d.allowed, false, 'the second request still counts: a sliding, not fixed, window');
      assertLeft(r2.d.retryAfterMs, second, r2);
    });

    test('limit 0 refuses everything; bad arguments are INVALID_ARGUMENT', async () => {
      const rates = impl.rates();
      assert.deepEqual(await rates.hit(uniq('key'), 0, 60_000), {
        allowed: false,
        remaining: 0,
        retryAfterMs: 60_000,
      });
      await assert.rejects(rates.hit(uniq('key'), -1, 1000), { code: 'INVALID_ARGUMENT' });
      await assert.rejects(rates.hit(uniq('key'), 1, 0), { code: 'INVALID_ARGUMENT' });
    });
  });

  describe(`${impl.name}: ConcurrencyLimiter`, () => {
    test('at most max slots; release frees one; a second release frees nothing more', async () => {
      const slots = impl.slots();
      const key = uniq('tenant');
      const a = await slots.acquire(key, 2, 5_000);
      const b = await slots.acquire(key, 2, 5_000);
      assert.ok(a && b);
      assert.equal(await slots.acquire(key, 2, 5_000), undefined, 'the third is refused');
      assert.ok(await slots.acquire(uniq('tenant'), 2, 5_000), 'another key has its own slots');
      await a.release();
      await a.release();
      const c = await slots.acquire(key, 2, 5_000);
      assert.ok(c, 'the released slot is free');
      assert.equal(await slots.acquire(key, 2, 5_000), undefined, 'the double release freed only one slot');
      assert.equal(await a.renew(), false, 'a released slot cannot be renewed');
      await b.release();
      await c.release();
      assert.equal(await slots.acquire(uniq('tenant'), 0, 5_000), undefined, 'max 0 refuses');
    });

    test("a crashed holder's slot expires; renew keeps a slot past its TTL", async () => {
      const slots = impl.slots();
      const key = uniq('tenant');
      const crashed = await slots.acquire(key, 1, 120);
      assert.ok(crashed);
      assert.equal(await slots.acquire(key, 1, 120), undefined);
      await sleep(200);
      const live = await slots.acquire(key, 1, 400);
      assert.ok(live, "the crashed holder's slot expired");
      assert.equal(await crashed.renew(), false, 'an expired slot cannot be renewed');
      await sleep(150);
      assert.equal(await live.renew(), true);
      await sleep(300); // past the first TTL, inside the renewed one
      assert.equal(await slots.acquire(key, 1, 5_000), undefined, 'the renewed slot is still held');
      await live.release();
      const again = await slots.acquire(key, 1, 5_000);
      assert.ok(again);
      await again.release();
    });
  });
}

describe('redis only: several API processes, keys, failures', () => {
  test('a lock taken through one connection is refused through another, and keys carry the prefix', async () => {
    const p1 = new RedisLockManager({ redis: connect(), prefix });
    const raw = connect();
    const p2 = new RedisLockManager({ redis: raw, prefix });
    const key = uniq('conv');
    const a = await p1.acquire(key, 10_000);
    assert.ok(a);
    assert.equal(await p2.acquire(key, 10_000), undefined);
    assert.equal(await p2.isHeld(key), true);
    assert.equal(await raw.get(`${prefix}:lock:${key}`), a.token);
    const pttl = await raw.pttl(`${prefix}:lock:${key}`);
    assert.ok(pttl > 9_000 && pttl <= 10_000, `pttl ${pttl}`);
    const other = new RedisLockManager({ redis: raw, prefix: `${prefix}x` });
    const o = await other.acquire(key, 10_000);
    assert.ok(o, 'another prefix (another environment) is independent');
    await o.release();
    await a.release();
  });

  test('two processes share one rate count: concurrent hits through two connections allow exactly N', async () => {
    const p1 = new RedisRateLimiter({ redis: connect(), prefix });
    const p2 = new RedisRateLimiter({ redis: connect(), prefix });
    const key = uniq('apikey');
    const all = await Promise.all(
      Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? p1 : p2).hit(key, 7, 60_000)),
    );
    assert.equal(all.filter((d) => d.allowed).length, 7);
    assert.deepEqual(
      all
        .filter((d) => d.allowed)
        .map((d) => d.remaining)
        .sort(),
      [0, 1, 2, 3, 4, 5, 6],
    );
    for (const d of all.filter((x) => !x.allowed))
      assert.ok(d.retryAfterMs > 59_000 && d.retryAfterMs <= 60_000);
  });

  test('two processes share concurrency slots: concurrent acquires through two connections take exactly max', async () => {
    const p1 = new RedisConcurrencyLimiter({ redis: connect(), prefix });
    const p2 = new RedisConcurrencyLimiter({ redis: connect(), prefix });
    const key = uniq('tenant');
    const got = await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? p1 : p2).acquire(key, 3, 10_000)),
    );
    const held = got.filter((s) => s !== undefined);
    assert.equal(held.length, 3);
    await held[0]!.release(); // released through the process that took it; the other sees the place
    const more = await p2.acquire(key, 3, 10_000);
    assert.ok(more);
    for (const s of [...held.slice(1), more]) await s.release();
  });

  test('keys expire with their contents (nothing is left behind)', async () => {
    const raw = connect();
    const tag = uniq('gone');
    const locks = new RedisLockManager({ redis: raw, prefix });
    const rates = new RedisRateLimiter({ redis: raw, prefix });
    const slots = new RedisConcurrencyLimiter({ redis: raw, prefix });
    await locks.acquire(tag, 100);
    await rates.hit(tag, 5, 100);
    await slots.acquire(tag, 2, 100);
    const keys = [`${prefix}:lock:${tag}`, `${prefix}:rate:${tag}`, `${prefix}:slots:${tag}`];
    assert.equal(await raw.exists(...keys), 3);
    for (const k of keys) assert.ok((await raw.pttl(k)) > 0, `${k} has a TTL`);
    await sleep(200);
    assert.equal(await raw.exists(...keys), 0);
  });

  test('scripts run again after Redis forgot them (SCRIPT FLUSH)', async () => {
    const raw = connect();
    const rates = new RedisRateLimiter({ redis: raw, prefix });
    const locks = new RedisLockManager({ redis: raw, prefix });
    await rates.hit(uniq('k'), 1, 1000);
    await raw.script('FLUSH');
    assert.equal((await rates.hit(uniq('k'), 1, 1000)).allowed, true);
    const l = await locks.acquire(uniq('k'), 1000);
    await raw.script('FLUSH');
    assert.equal(await l!.release(), true);
  });

  test('an unreachable Redis is COORDINATION_FAILED', async () => {
    const dead = new Redis({
      host: '127.0.0.1',
      port: 1,
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    dead.on('error', () => undefined);
    try {
      await assert.rejects(new RedisLockManager({ redis: dead, prefix }).acquire('k', 1000), {
        code: 'COORDINATION_FAILED',
      });
      await assert.rejects(new RedisRateLimiter({ redis: dead, prefix }).hit('k', 1, 1000), {
        code: 'COORDINATION_FAILED',
      });
      await assert.rejects(new RedisConcurrencyLimiter({ redis: dead, prefix }).acquire('k', 1, 1000), {
        code: 'COORDINATION_FAILED',
      });
    } finally {
      dead.disconnect();
    }
  });

  test('a prefix ending in ":" or empty is refused', () => {
    const raw = connect();
    assert.throws(() => new RedisLockManager({ redis: raw, prefix: 'hako:' }), { code: 'INVALID_ARGUMENT' });
    assert.throws(() => new RedisRateLimiter({ redis: raw, prefix: '' }), { code: 'INVALID_ARGUMENT' });
  });
});
