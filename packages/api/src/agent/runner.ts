/**
 * Runs one agent turn: the SDK's query() with Options from buildAgentOptions (Claude Code in the
 * sandbox), each SDK message mapped to hako events and handed to `onEvent` in order (awaited, so a
 * slow store slows the agent instead of buffering without bound). Exactly one `done` event is the
 * last one: the SDK's own result, or, when the run was cancelled or failed before a result, a
 * synthetic one (after an `error` event for a failure). runAgent resolves once every Claude Code
 * process it started has exited, so after a cancel nothing of the agent runs in the sandbox.
 */
import { query as sdkQuery } from '@anthropic-ai/claude-agent-sdk';
import type { Options, Query, SpawnOptions, SpawnedProcess } from '@anthropic-ai/claude-agent-sdk';
import { AppError } from '@hako/core';
import type { ErrorCode, Logger } from '@hako/core';
import { ExitReason } from '@hako/proto';
import type { AgentEvent, Usage } from '../types.js';
import { createMapperState, mapSdkMessage, toUsage, usageOf } from './event-mapper.js';
import type { AgentOptions } from './options-builder.js';
import { SandboxProcess } from './sandbox-process.js';

/** After an abort, how long Claude Code gets to exit by the SDK's own close (stdin EOF, SIGTERM) before SIGKILL. */
const ABORT_KILL_AFTER_MS = 3_000;
/** How long to wait for a process's exit after SIGKILL before giving up on it (logged). */
const EXIT_WAIT_MS = 10_000;
/** How much of Claude Code's stderr goes into an error message. */
const STDERR_IN_ERROR_CHARS = 2_000;

export type AgentRunStatus = 'completed' | 'failed' | 'cancelled';

export interface AgentRunSummary {
  readonly status: AgentRunStatus;
  /** The SDK session (resume it next time); undefined when Claude Code never started one. */
  readonly sessionId: string | undefined;
  /** The agent's final text (empty for failures and cancels). */
  readonly result: string;
  readonly isError: boolean;
  readonly usage: Usage;
  readonly costUsd: number;
  readonly turnCount: number;
  readonly durationMs: number;
  /** Context tokens after the last main-thread model response (0 when none came). */
  readonly contextTokens: number;
  /** Why it failed or was cancelled. */
  readonly error?: { readonly code: ErrorCode; readonly message: string } | undefined;
}

export interface RunAgentInput {
  /** From buildAgentOptions: must carry the abortController that cancels the run. */
  readonly options: AgentOptions;
  readonly prompt: string;
  /** Called with every event, in order, and awaited. A throw cancels the run and is rethrown. */
  readonly onEvent: (event: AgentEvent) => void | Promise<void>;
  /** The tenant's context limit, reported in context_status events. */
  readonly contextLimit: number;
  readonly logger: Logger;
  /** The SDK's query (tests may pass another). */
  readonly query?:
    ((params: { prompt: string; options?: Options }) => Query | AsyncIterable<unknown>) | undefined;
}

const ZERO_USAGE: Usage = {
  inputTokens: 0,
  outputTokens: 0,
  cacheCreationInputTokens: 0,
  cacheReadInputTokens: 0,
};

function exited(p: SpawnedProcess): boolean {
  return p.exitCode !== null || (p.signalCode ?? null) !== null;
}

/** Resolves when `p` has exited (at once if it has), or after `ms` with false. */
function waitExit(p: SpawnedProcess, ms: number): Promise<boolean> {
  if (exited(p)) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      p.off('exit', done);
      resolve(true);
    };
    const timer = setTimeout(() => {
      p.off('exit', done);
      resolve(exited(p));
    }, ms);
    p.once('exit', done);
  });
}

/** The most telling description of why Claude Code's process ended badly, if it did. */
function processFailure(procs: readonly SpawnedProcess[]): { code: ErrorCode; message: string } | undefined {
  for (const p of [...procs].reverse()) {
    if (!(p instanceof SandboxProcess)) continue;
    const tail = p.stderrTail().trim().slice(-STDERR_IN_ERROR_CHARS);
    const stderr = tail === '' ? '' : `; its stderr ended with: ${tail}`;
    if (p.error) return { code: p.error.code, message: `${p.error.message}${stderr}` };
    const info = p.exitInfo;
    if (info?.reason === ExitReason.EXIT_REASON_OOM) {
      return {
        code: 'AGENT_FAILED',
        message: `Claude Code was killed by the sandbox's memory limit; raise the tenant's memory limit${stderr}`,
      };
    }
    if (info?.reason === ExitReason.EXIT_REASON_SANDBOX_GONE) {
      return { code: 'AGENT_FAILED', message: `the sandbox was destroyed while Claude Code ran${stderr}` };
    }
    if (info && info.code !== 0 && !p.killed) {
      return {
        code: 'AGENT_FAILED',
        message: `Claude Code exited with code ${info.code}${info.signal === '' ? '' : ` (${info.signal})`}${stderr}`,
      };
    }
  }
  return undefined;
}

/**
 * Runs the agent until its result, a cancel (options.abortController) or a failure, and answers the
 * summary. Never rejects for the agent's own failures (they end as status `failed` with an error
 * event); rejects only when `onEvent` throws.
 */
export async function runAgent(input: RunAgentInput): Promise<AgentRunSummary> {
  const { logger } = input;
  const abort = input.options.abortController;
  const started = Date.now();
  const procs: SpawnedProcess[] = [];
  const spawn = input.options.spawnClaudeCodeProcess;
  const options: Options = {
    ...input.options,
    ...(spawn === undefined
      ? {}
      : {
          spawnClaudeCodeProcess: (o: SpawnOptions): SpawnedProcess => {
            const p = spawn(o);
            procs.push(p);
            return p;
          },
        }),
  };
  const state = createMapperState({ contextLimit: input.contextLimit });
  const onIgnored = (msg: unknown, why: string): void =>
    logger.debug({ type: (msg as { type?: unknown } | null)?.type, why }, 'SDK message without an event');

  let done: AgentEvent | undefined;
  let failure: { code: ErrorCode; message: string } | undefined;
  let handlerError: Error | undefined;
  const emit = async (e: AgentEvent): Promise<void> => {
    try {
      await input.onEvent(e);
    } catch (err) {
      handlerError = err instanceof Error ? err : new Error(String(err));
      abort.abort(handlerError);
      throw handlerError;
    }
  };

  try {
    const q = (input.query ?? sdkQuery)({ prompt: input.prompt, options });
    for await (const msg of q) {
      for (const e of mapSdkMessage(msg, state, onIgnored)) {
        if (e.type === 'done') done = e;
        else await emit(e);
      }
      // the result is the last thing that matters; later messages (if any) are not events
      if (done) break;
    }
  } catch (err) {
    if (handlerError === undefined && !abort.signal.aborted) {
      const fromProcess = processFailure(procs);
      failure = fromProcess ?? {
        code: err instanceof AppError ? err.code : 'AGENT_FAILED',
        message: `the agent failed: ${(err as Error).message}`,
      };
      logger.warn({ err, code: failure.code }, 'agent run failed');
    }
  }

  await settleProcesses(procs, abort.signal.aborted, logger);
  if (handlerError !== undefined) throw handlerError;

  const cancelled = abort.signal.aborted && done === undefined;
  if (!done && !cancelled && !failure) {
    failure = processFailure(procs) ?? {
      code: 'AGENT_FAILED',
      message: 'Claude Code ended without a result',
    };
  }
  if (cancelled) failure = { code: 'RUN_CANCELLED', message: 'the run was cancelled' };

  if (done) {
    await emit(done);
    const d = done.data;
    const usage = usageOf(d.usage);
    const failed = d.is_error === true;
    return {
      status: failed ? 'failed' : 'completed',
      sessionId: typeof d.session_id === 'string' ? d.session_id : state.sessionId,
      result: typeof d.result === 'string' ? d.result : '',
      isError: failed,
      usage: toUsage(usage),
      costUsd: typeof d.cost_usd === 'number' ? d.cost_usd : 0,
      turnCount: typeof d.turn_count === 'number' ? d.turn_count : 0,
      durationMs: typeof d.duration_ms === 'number' ? d.duration_ms : Date.now() - started,
      contextTokens: state.contextTokens,
      error: failed
        ? {
            code: 'AGENT_FAILED',
            message: Array.isArray(d.errors) && d.errors.length > 0 ? d.errors.join('; ') : String(d.subtype),
          }
        : undefined,
    };
  }

  const status: AgentRunStatus = cancelled ? 'cancelled' : 'failed';
  const error = failure!;
  const durationMs = Date.now() - started;
  if (!cancelled) await emit({ type: 'error', data: { code: error.code, message: error.message } });
  await emit({
    type: 'done',
    data: {
      status,
      result: '',
      is_error: true,
      usage: usageOf(undefined),
      cost_usd: 0,
      turn_count: 0,
      duration_ms: durationMs,
      session_id: state.sessionId ?? null,
      error: { code: error.code, message: error.message },
    },
  });
  return {
    status,
    sessionId: state.sessionId,
    result: '',
    isError: true,
    usage: ZERO_USAGE,
    costUsd: 0,
    turnCount: 0,
    durationMs,
    contextTokens: state.contextTokens,
    error,
  };
}

/**
 * Waits for every Claude Code process to exit. After an abort the SDK closes stdin and signals on
 * its own schedule; a process still there after ABORT_KILL_AFTER_MS gets SIGKILL.
 */
async function settleProcesses(
  procs: readonly SpawnedProcess[],
  aborted: boolean,
  logger: Logger,
): Promise<void> {
  await Promise.all(
    procs.map(async (p) => {
      if (await waitExit(p, aborted ? ABORT_KILL_AFTER_MS : EXIT_WAIT_MS)) return;
      p.kill('SIGKILL');
      if (!(await waitExit(p, EXIT_WAIT_MS))) {
        logger.error({ pid: (p as { pid?: number }).pid }, 'Claude Code did not exit after SIGKILL');
      }
    }),
  );
}
