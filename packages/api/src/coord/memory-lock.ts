/**
 * LockManager in process memory, for a single API process (issue 5's embedded mode): the same
 * semantics as RedisLockManager (random token, TTL, compare-and-renew, compare-and-delete) but
 * nothing is shared with another process, so it is only correct when exactly one API process runs.
 * Expired locks are dropped by an unref'd sweeper.
 */
import type { HeldLock, LockManager } from '../types.js';
import { checkKey, checkMs, newToken } from './coord-args.js';
import { DEFAULT_SWEEP_INTERVAL_MS, MemorySweeper, monotonicMs, settle } from './memory-store.js';
import type { MemoryStoreOptions } from './memory-store.js';

interface LockEntry {
  readonly token: string;
  expiresAt: number;
}

class MemoryHeldLock implements HeldLock {
  constructor(
    private readonly locks: Map<string, LockEntry>,
    readonly key: string,
    readonly token: string,
    private readonly ttlMs: number,
  ) {}

  /** Extends the lock by its original TTL from now; false once another holder has it or it expired. */
  renew(): Promise<boolean> {
    return settle(() => {
      const e = this.locks.get(this.key);
      const now = monotonicMs();
      if (e === undefined || e.token !== this.token || e.expiresAt <= now) return false;
      e.expiresAt = now + this.ttlMs;
      return true;
    });
  }

  /** Deletes the lock if this holder still owns it; false when it expired or belongs to another. */
  release(): Promise<boolean> {
    return settle(() => {
      const e = this.locks.get(this.key);
      if (e === undefined || e.token !== this.token) return false;
      this.locks.delete(this.key);
      return e.expiresAt > monotonicMs();
    });
  }
}

export class MemoryLockManager implements LockManager {
  private readonly locks = new Map<string, LockEntry>();
  private readonly sweeper: MemorySweeper;

  constructor(opts: MemoryStoreOptions = {}) {
    this.sweeper = new MemorySweeper(() => this.sweep(), opts.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS);
  }

  /** Takes `key` for `ttlMs` with a new random token; undefined when a live holder has it. */
  acquire(key: string, ttlMs: number): Promise<HeldLock | undefined> {
    return settle(() => {
      checkKey(key);
      checkMs('ttlMs', ttlMs);
      const now = monotonicMs();
      const held = this.locks.get(key);
      if (held !== undefined && held.expiresAt > now) return undefined;
      const token = newToken();
      this.locks.set(key, { token, expiresAt: now + ttlMs });
      this.sweeper.ensure();
      return new MemoryHeldLock(this.locks, key, token, ttlMs);
    });
  }

  /** Whether anybody holds `key` now (an expired lock is not held). */
  isHeld(key: string): Promise<boolean> {
    return settle(() => {
      checkKey(key);
      const e = this.locks.get(key);
      return e !== undefined && e.expiresAt > monotonicMs();
    });
  }

  /** Drops every lock and stops the sweeper. */
  close(): void {
    this.sweeper.stop();
    this.locks.clear();
  }

  /** Entries in memory, expired ones not yet swept included (for tests). */
  get size(): number {
    return this.locks.size;
  }

  /** Whether the sweeper's timer runs (for tests). */
  get sweeping(): boolean {
    return this.sweeper.running;
  }

  private sweep(): boolean {
    const now = monotonicMs();
    for (const [k, e] of this.locks) if (e.expiresAt <= now) this.locks.delete(k);
    return this.locks.size > 0;
  }
}
