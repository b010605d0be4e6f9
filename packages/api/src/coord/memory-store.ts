/**
 * What the in-process coordination stores share: options, a monotonic clock, promise-returning
 * methods that reject (never throw), and the periodic clean-up.
 */

export interface MemoryStoreOptions {
  /** How often expired entries are dropped; default 30 s. */
  readonly sweepIntervalMs?: number;
}

/** Runs `fn` and answers its result as a promise; a throw becomes a rejection. */
export function settle<T>(fn: () => T): Promise<T> {
  return new Promise<T>((resolve) => resolve(fn()));
}

/**
 * The periodic clean-up of an in-process coordination store: runs `sweep` every `intervalMs` while
 * the store holds anything, on an unref'd timer so it never keeps the process alive. `sweep`
 * answers whether anything is left; the timer stops when nothing is.
 */
export class MemorySweeper {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly sweep: () => boolean,
    private readonly intervalMs: number,
  ) {}

  /** Starts the timer unless it runs; call after adding an entry. */
  ensure(): void {
    if (this.timer !== undefined) return;
    this.timer = setInterval(() => {
      if (!this.sweep()) this.stop();
    }, this.intervalMs);
    this.timer.unref();
  }

  /** Stops the timer (it starts again at the next `ensure`). */
  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Whether the timer runs (for tests). */
  get running(): boolean {
    return this.timer !== undefined;
  }
}

/** Milliseconds on a monotonic clock (wall-clock jumps do not move expiries). */
export function monotonicMs(): number {
  return performance.now();
}

/** How often the in-process stores drop expired entries by default. */
export const DEFAULT_SWEEP_INTERVAL_MS = 30_000;
