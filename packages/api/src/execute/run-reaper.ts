/**
 * Ends the runs an API process left behind when it died mid-run: a run still `running` whose
 * conversation lock is gone (expired: its holder stopped renewing it) gets an `error` and a
 * `done` event and the status `failed`, so replay ends and the database holds no half run.
 */
import type { Logger } from '@hako/core';
import type { AgentEvent, LockManager } from '../types.js';
import { conversationLockKey } from './execute-run.js';

export interface OrphanRun {
  readonly runId: string;
  readonly tenantId: string;
  readonly conversationId: string;
  readonly startedAt: string;
}

export interface ReaperStore {
  /** Runs still `running` that started before `olderThan`. */
  listRunning(olderThan: Date): Promise<OrphanRun[]>;
  /** Marks the run failed with `code` and stores the events, in one transaction; false if it had already ended. */
  failRun(run: OrphanRun, code: string, events: AgentEvent[]): Promise<boolean>;
}

export interface RunReaperOptions {
  readonly store: ReaperStore;
  readonly locks: LockManager;
  readonly logger: Logger;
  /** A run younger than this is never reaped (its lock may be a moment from being taken). */
  readonly graceMs: number;
}

/** One pass; answers how many runs it ended. */
export async function reapOrphanRuns(opts: RunReaperOptions, now = new Date()): Promise<number> {
  const candidates = await opts.store.listRunning(new Date(now.getTime() - opts.graceMs));
  let ended = 0;
  for (const run of candidates) {
    if (await opts.locks.isHeld(conversationLockKey(run.conversationId))) continue;
    const message = 'the API process running this execute stopped before it ended; the run was marked failed';
    const events: AgentEvent[] = [
      { type: 'error', data: { code: 'RUN_ABANDONED', message } },
      {
        type: 'done',
        data: {
          status: 'failed',
          result: '',
          is_error: true,
          usage: {
            input_tokens: 0,
            output_tokens: 0,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
          },
          cost_usd: 0,
          turn_count: 0,
          duration_ms: now.getTime() - Date.parse(run.startedAt),
          session_id: null,
          error_code: 'RUN_ABANDONED',
        },
      },
    ];
    if (await opts.store.failRun(run, 'RUN_ABANDONED', events)) {
      ended++;
      opts.logger.warn({ runId: run.runId, conversationId: run.conversationId }, 'ended an abandoned run');
    }
  }
  return ended;
}
