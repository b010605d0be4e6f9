/**
 * ConcurrencyLimiter in process memory, for a single API process (issue 5's embedded mode): the
 * same semantics as RedisConcurrencyLimiter (holders with expiries; expired holders free their
 * slot), but slots are not shared with another process. Expired holders are dropped at the next
 * acquire of their key and by an unref'd sweeper.
 */
import type { ConcurrencyLimiter, Slot } from '../types.js';
import { checkCount, checkKey, checkMs, newToken } from './coord-args.js';
import { DEFAULT_SWEEP_INTERVAL_MS, MemorySweeper, monotonicMs, settle } from './memory-store.js';
import type { MemoryStoreOptions } from './memory-store.js';

/** holder id -> expiry (ms, monotonic). */
type Holders = Map<string, number>;

class MemorySlot implements Slot {
  constructor(
    private readonly slots: Map<string, Holders>,
    private readonly key: string,
    private readonly holder: string,
    private readonly ttlMs: number,
  ) {}

  /** Removes this holder; releasing twice, or after expiry, does nothing. */
  release(): Promise<void> {
    return settle(() => this.drop());
  }

  /** Extends the slot by its original TTL from now; false once it expired or was released. */
  renew(): Promise<boolean> {
    return settle(() => {
      const exp = this.slots.get(this.key)?.get(this.holder);
      const now = monotonicMs();
      if (exp === undefined) return false;
      if (exp <= now) {
        this.drop();
        return false;
      }
      this.slots.get(this.key)?.set(this.holder, now + this.ttlMs);
      return true;
    });
  }

  private drop(): void {
    const h = this.slots.get(this.key);
    if (h === undefined) return;
    h.delete(this.holder);
    if (h.size === 0) this.slots.delete(this.key);
  }
}

export class MemoryConcurrencyLimiter implements ConcurrencyLimiter {
  private readonly slots = new Map<string, Holders>();
  private readonly sweeper: MemorySweeper;

  constructor(opts: MemoryStoreOptions = {}) {
    this.sweeper = new MemorySweeper(() => this.sweep(), opts.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS);
  }

  /**
   * Takes one of `max` slots of `key` for `ttlMs`; undefined when `max` live holders exist (`max`
   * 0 refuses everything). The holder renews before the TTL ends and releases when done.
   */
  acquire(key: string, max: number, ttlMs: number): Promise<Slot | undefined> {
    return settle(() => {
      checkKey(key);
      checkCount('max', max);
      checkMs('ttlMs', ttlMs);
      const now = monotonicMs();
      const h = this.slots.get(key) ?? new Map<string, number>();
      dropExpired(h, now);
      if (h.size >= max) {
        if (h.size === 0) this.slots.delete(key);
        return undefined;
      }
      const holder = newToken();
      h.set(holder, now + ttlMs);
      this.slots.set(key, h);
      this.sweeper.ensure();
      return new MemorySlot(this.slots, key, holder, ttlMs);
    });
  }

  /** Drops every slot and stops the sweeper. */
  close(): void {
    this.sweeper.stop();
    this.slots.clear();
  }

  /** Keys with holders in memory (for tests). */
  get size(): number {
    return this.slots.size;
  }

  /** Whether the sweeper's timer runs (for tests). */
  get sweeping(): boolean {
    return this.sweeper.running;
  }

  private sweep(): boolean {
    const now = monotonicMs();
    for (const [k, h] of this.slots) {
      dropExpired(h, now);
      if (h.size === 0) this.slots.delete(k);
    }
    return this.slots.size > 0;
  }
}

function dropExpired(h: Holders, now: number): void {
  for (const [holder, exp] of h) if (exp <= now) h.delete(holder);
}
