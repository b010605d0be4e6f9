/**
 * Short holds on a conversation's lock, for the changes that must not overlap a run (uploads,
 * file deletes, archive, delete): the same lock an execute holds for its whole run.
 */
import type { AppError } from '@hako/core';
import type { Conversation, HeldLock, LockManager } from '../types.js';
import { conversationLockKey } from './execute-run.js';

/** TTL of a short hold; renewed every third of it while `fn` runs. */
const HOLD_TTL_MS = 60_000;

/**
 * Runs `fn` holding the conversation's lock. CONVERSATION_LOCKED at once while a run is in
 * progress (`running`); otherwise waits up to `waitMs` (backing off 25 ms to 250 ms) for other
 * short holders and answers `busy` when they kept it that long. The lock is released after `fn`,
 * whatever it did.
 */
export async function withConversationLock<T>(
  locks: LockManager,
  conv: Pick<Conversation, 'id' | 'status'>,
  waitMs: number,
  errors: { running: () => AppError; busy: () => AppError },
  fn: () => Promise<T>,
): Promise<T> {
  if (conv.status === 'running') throw errors.running();
  const key = conversationLockKey(conv.id);
  const deadline = Date.now() + waitMs;
  let lock: HeldLock | undefined;
  for (let delay = 25; ; delay = Math.min(delay * 2, 250)) {
    lock = await locks.acquire(key, HOLD_TTL_MS);
    if (lock || Date.now() + delay > deadline) break;
    await new Promise((r) => setTimeout(r, delay));
  }
  if (!lock) throw errors.busy();
  const held = lock;
  const timer = setInterval(() => void held.renew().catch(() => undefined), HOLD_TTL_MS / 3);
  try {
    return await fn();
  } finally {
    clearInterval(timer);
    await held.release().catch(() => undefined);
  }
}
