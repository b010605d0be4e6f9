/**
 * RateLimiter in process memory, for a single API process (issue 5's embedded mode): the same
 * sliding window as RedisRateLimiter (a request at time s counts while now - s < window; refused
 * requests are not counted), but counts are not shared with another process. Windows that emptied
 * are dropped by an unref'd sweeper.
 */
import type { RateDecision, RateLimiter } from '../types.js';
import { checkCount, checkKey, checkMs } from './coord-args.js';
import { DEFAULT_SWEEP_INTERVAL_MS, MemorySweeper, monotonicMs, settle } from './memory-store.js';
import type { MemoryStoreOptions } from './memory-store.js';

interface Window {
  /** Times (ms) of the allowed requests, oldest first. */
  readonly hits: number[];
  /** The window length the last hit used; the sweeper drops the key one window after its newest hit. */
  windowMs: number;
}

export class MemoryRateLimiter implements RateLimiter {
  private readonly windows = new Map<string, Window>();
  private readonly sweeper: MemorySweeper;

  constructor(opts: MemoryStoreOptions = {}) {
    this.sweeper = new MemorySweeper(() => this.sweep(), opts.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS);
  }

  /**
   * Counts one request against `key` when fewer than `limit` were allowed in the last `windowMs`;
   * a refused request is not counted. `limit` 0 refuses everything (retryAfterMs = windowMs).
   */
  hit(key: string, limit: number, windowMs: number): Promise<RateDecision> {
    return settle(() => {
      checkKey(key);
      checkCount('limit', limit);
      checkMs('windowMs', windowMs);
      const now = monotonicMs();
      const w = this.windows.get(key) ?? { hits: [], windowMs };
      w.windowMs = windowMs;
      prune(w.hits, now - windowMs);
      if (w.hits.length < limit) {
        w.hits.push(now);
        this.windows.set(key, w);
        this.sweeper.ensure();
        return { allowed: true, remaining: limit - w.hits.length, retryAfterMs: 0 };
      }
      const oldest = w.hits[0];
      const retry = oldest === undefined ? windowMs : Math.ceil(oldest + windowMs - now);
      return { allowed: false, remaining: 0, retryAfterMs: Math.max(1, retry) };
    });
  }

  /** Drops every window and stops the sweeper. */
  close(): void {
    this.sweeper.stop();
    this.windows.clear();
  }

  /** Keys with a window in memory (for tests). */
  get size(): number {
    return this.windows.size;
  }

  /** Whether the sweeper's timer runs (for tests). */
  get sweeping(): boolean {
    return this.sweeper.running;
  }

  private sweep(): boolean {
    const now = monotonicMs();
    for (const [k, w] of this.windows) {
      prune(w.hits, now - w.windowMs);
      if (w.hits.length === 0) this.windows.delete(k);
    }
    return this.windows.size > 0;
  }
}

/** Removes the leading times at or before `cutoff` (the array is sorted). */
function prune(hits: number[], cutoff: number): void {
  let n = 0;
  while (n < hits.length && (hits[n] as number) <= cutoff) n++;
  if (n > 0) hits.splice(0, n);
}
