/**
 * Argument checks and tokens shared by the Redis and in-process coordination implementations, so
 * both refuse the same bad input with the same error.
 */
import { randomBytes } from 'node:crypto';
import { AppError } from '@hako/core';

/** A fresh unguessable token (lock tokens, slot holder ids, rate-window members). */
export function newToken(): string {
  return randomBytes(18).toString('base64url');
}

/** INVALID_ARGUMENT unless `key` is a non-empty string. */
export function checkKey(key: string): void {
  if (typeof key !== 'string' || key === '') {
    throw new AppError('INVALID_ARGUMENT', 'a coordination key must be a non-empty string');
  }
}

/** INVALID_ARGUMENT unless `ms` is a whole number of milliseconds of at least 1. */
export function checkMs(what: string, ms: number): void {
  if (!Number.isSafeInteger(ms) || ms < 1) {
    throw new AppError('INVALID_ARGUMENT', `${what} must be a whole number of milliseconds >= 1 (got ${ms})`);
  }
}

/** INVALID_ARGUMENT unless `n` is a whole number >= 0. */
export function checkCount(what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new AppError('INVALID_ARGUMENT', `${what} must be a whole number >= 0 (got ${n})`);
  }
}

/** INVALID_ARGUMENT unless `prefix` is usable as a Redis key prefix (`hako:prod`, no trailing colon). */
export function checkPrefix(prefix: string): void {
  if (typeof prefix !== 'string' || prefix === '' || prefix.endsWith(':')) {
    throw new AppError(
      'INVALID_ARGUMENT',
      `the Redis key prefix must be non-empty and not end with ':' (got ${JSON.stringify(prefix)}); use e.g. "hako:prod"`,
    );
  }
}
