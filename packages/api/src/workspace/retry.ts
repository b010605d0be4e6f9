/**
 * Bounded retries with exponential backoff and full jitter for object store calls. Only failures
 * that a later attempt can fix are retried: STORAGE_FAILED and anything that is not an AppError
 * (a network error that escaped the store). Everything else (OBJECT_NOT_FOUND, INVALID_ARGUMENT,
 * FILE_PATH_INVALID, …) is thrown at once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { AppError } from '@hako/core';

export interface RetryPolicy {
  /** Attempts in all, the first included (≥ 1). */
  readonly attempts: number;
  /** Delay cap before the second attempt, in ms; doubles each time. */
  readonly baseDelayMs: number;
  /** Largest delay cap, in ms. */
  readonly maxDelayMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { attempts: 5, baseDelayMs: 200, maxDelayMs: 5_000 };

/** Whether another attempt may succeed where `err` failed. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof AppError) return err.code === 'STORAGE_FAILED';
  return true;
}

/**
 * The delay before attempt `attempt + 1` (attempt counts from 1): a uniformly random value in
 * [0, min(maxDelayMs, baseDelayMs * 2^(attempt-1))] ("full jitter"), so many retrying callers
 * spread out instead of hitting a recovering store at once.
 */
export function backoffDelayMs(
  policy: RetryPolicy,
  attempt: number,
  random: () => number = Math.random,
): number {
  const cap = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * cap);
}

export interface RetryOptions {
  readonly policy?: RetryPolicy | undefined;
  readonly signal?: AbortSignal | undefined;
  /** Called before each wait, for logging. */
  readonly onRetry?: ((err: unknown, attempt: number, delayMs: number) => void) | undefined;
  readonly random?: (() => number) | undefined;
}

/** Runs `fn` until it succeeds, fails with a non-retryable error, or `policy.attempts` are used up. */
export async function withRetry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const policy = opts.policy ?? DEFAULT_RETRY_POLICY;
  const attempts = Math.max(1, Math.floor(policy.attempts));
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= attempts || !isRetryable(err) || opts.signal?.aborted === true) throw err;
      const delay = backoffDelayMs(policy, attempt, opts.random);
      opts.onRetry?.(err, attempt, delay);
      await sleep(delay, undefined, opts.signal === undefined ? undefined : { signal: opts.signal });
    }
  }
}
