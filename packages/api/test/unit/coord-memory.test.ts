// The in-process coordination stores' own housekeeping (their shared contract with Redis is in
// test/integration/coord.test.ts): expired entries are swept, the sweeper stops when the store is
// empty, and its timer never keeps a process alive.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { MemoryLockManager } from '../../src/coord/memory-lock.js';
import { MemoryRateLimiter } from '../../src/coord/memory-rate-limiter.js';
import { MemoryConcurrencyLimiter } from '../../src/coord/memory-concurrency.js';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));

test('expired locks, windows and slots are swept, and the sweeper stops when nothing is left', async () => {
  const locks = new MemoryLockManager({ sweepIntervalMs: 40 });
  const rates = new MemoryRateLimiter({ sweepIntervalMs: 40 });
  const slots = new MemoryConcurrencyLimiter({ sweepIntervalMs: 40 });
  try {
    for (let i = 0; i < 5; i++) {
      assert.ok(await locks.acquire(`l${i}`, 60));
      assert.ok((await rates.hit(`r${i}`, 3, 60)).allowed);
      assert.ok(await slots.acquire(`s${i}`, 2, 60));
    }
    const kept = await locks.acquire('kept', 10_000);
    assert.equal(locks.size, 6);
    assert.equal(rates.size, 5);
    assert.equal(slots.size, 5);
    assert.ok(locks.sweeping && rates.sweeping && slots.sweeping);
    await sleep(200);
    assert.equal(locks.size, 1, 'only the live lock is left');
    assert.ok(locks.sweeping, 'a live entry keeps the sweeper running');
    assert.equal(rates.size, 0);
    assert.equal(slots.size, 0);
    assert.ok(!rates.sweeping && !slots.sweeping, 'empty stores stop their sweeper');
    await kept!.release();
    await sleep(100);
    assert.equal(locks.size, 0);
    assert.ok(!locks.sweeping);
  } finally {
    locks.close();
    rates.close();
    slots.close();
  }
});

test('released slots and locks leave no entry behind', async () => {
  const locks = new MemoryLockManager();
  const slots = new MemoryConcurrencyLimiter();
  try {
    const l = await locks.acquire('k', 10_000);
    const s = await slots.acquire('k', 1, 10_000);
    await l!.release();
    await s!.release();
    assert.equal(locks.size, 0);
    assert.equal(slots.size, 0);
    assert.equal(await slots.acquire('k', 0, 1000), undefined);
    assert.equal(slots.size, 0, 'a refused acquire on an empty key stores nothing');
  } finally {
    locks.close();
    slots.close();
  }
});

test('a process holding long locks, windows and slots exits by itself (the timers are unref’d)', async () => {
  const script = `
    import { MemoryLockManager } from './packages/api/src/coord/memory-lock.ts';
    import { MemoryRateLimiter } from './packages/api/src/coord/memory-rate-limiter.ts';
    import { MemoryConcurrencyLimiter } from './packages/api/src/coord/memory-concurrency.ts';
    const l = await new MemoryLockManager({ sweepIntervalMs: 60000 }).acquire('k', 600000);
    const r = await new MemoryRateLimiter({ sweepIntervalMs: 60000 }).hit('k', 5, 600000);
    const s = await new MemoryConcurrencyLimiter({ sweepIntervalMs: 60000 }).acquire('k', 1, 600000);
    process.stdout.write(String(Boolean(l && r.allowed && s)));
  `;
  const started = Date.now();
  const out = await new Promise<string>((resolve, reject) => {
    execFile(
      process.execPath,
      ['--conditions=source', '--import', 'tsx', '--input-type=module', '-e', script],
      { cwd: ROOT, timeout: 20_000 },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
    );
  });
  assert.equal(out, 'true');
  assert.ok(Date.now() - started < 15_000, 'exited without waiting for a timer');
});
