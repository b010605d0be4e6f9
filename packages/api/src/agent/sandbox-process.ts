/**
 * A process in a hakod sandbox that looks like a local child process to the Claude Agent SDK: it
 * satisfies the SDK's `SpawnedProcess` (stdin, stdout, kill, exitCode, signalCode, killed, 'exit'
 * and 'error') over one gRPC Exec stream. stdin chunks are written with the call's backpressure,
 * stdout is a Readable that pauses the call while the reader is behind, stderr is logged (bounded)
 * and its tail kept for error messages.
 */
import { EventEmitter } from 'node:events';
import { Readable, Writable } from 'node:stream';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { errorFromStatus, runExec } from '@hako/agentd';
import type { AgentClient, ExecExit, ExecRequest } from '@hako/proto';

/** Largest stdin message sent on the Exec stream (hakod takes up to its MAX_CHUNK_BYTES). */
const STDIN_CHUNK_BYTES = 64 * 1024;
/** How much of stderr's end is kept for error messages. */
const DEFAULT_STDERR_TAIL_BYTES = 16 * 1024;
/** How much stderr is logged in all (at debug) before the rest is only counted. */
const STDERR_LOG_BUDGET_BYTES = 64 * 1024;
/** After an abort asked hakod to SIGKILL the process, how long to wait for its exit before cancelling the call. */
const ABORT_EXIT_GRACE_MS = 5_000;

export interface SpawnInSandboxInput {
  readonly client: AgentClient;
  /** The sandbox's owner (the tenant id). */
  readonly ownerId: string;
  readonly sandboxId: string;
  /** Program and arguments, as inside the sandbox. */
  readonly argv: readonly string[];
  /** On top of the sandbox's own environment (same names replace it). */
  readonly env: Readonly<Record<string, string>>;
  /** Absolute directory inside the sandbox. */
  readonly cwd: string;
  readonly logger: Logger;
  /**
   * Aborting kills the process: hakod is asked for SIGKILL, and the call is cancelled (which kills
   * it as well) if no exit arrives within a few seconds. Already aborted: nothing is started.
   */
  readonly signal?: AbortSignal | undefined;
  /** Bytes of stderr's end kept in stderrTail(); default 16 KiB. */
  readonly stderrTailBytes?: number | undefined;
  /** Called with each stderr chunk as text (the SDK's `stderr` option, for custom spawns). */
  readonly onStderr?: ((text: string) => void) | undefined;
  /**
   * After the process was killed (kill() or an abort) and exited, SIGKILL every other process of
   * the sandbox too (`kill -KILL -1` as the sandbox user: all but its init) before 'exit' is
   * emitted, so the tools and MCP servers it started do not outlive it. Only for a sandbox this
   * process owns for now (a conversation's, while its run holds the lock). Default false.
   */
  readonly reapOnKill?: boolean | undefined;
}

/** Kills every process the sandbox user has in the sandbox except init and the shell itself. */
const REAP_ARGV = ['/bin/sh', '-c', 'kill -KILL -1 2>/dev/null; exit 0'];
const REAP_TIMEOUT_MS = 10_000;

type ExecMessage = {
  msg?:
    | { $case: 'started'; started: { pid: number } }
    | { $case: 'stdout'; stdout: Buffer }
    | { $case: 'stderr'; stderr: Buffer }
    | { $case: 'exit'; exit: ExecExit }
    | { $case: 'keepalive'; keepalive: object };
};

/** What the Exec call's 'error' event carries (a grpc-js ServiceError). */
type CallError = Parameters<typeof errorFromStatus>[0];

function epipe(): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error('write EPIPE: the process in the sandbox has exited');
  e.code = 'EPIPE';
  return e;
}

/**
 * The sandboxed process. Events: 'spawn' (hakod started it; `pid` is its host pid), 'exit' (code,
 * signal) once, then 'close' (code, signal); 'error' (an AppError) when the Exec call failed, e.g.
 * SANDBOX_NOT_FOUND or hakod unreachable, followed by 'exit' (null, null) so waiters end.
 */
export class SandboxProcess extends EventEmitter {
  readonly stdin: Writable;
  readonly stdout: Readable;
  /** The process's pid on the hakod host, once started. */
  pid: number | undefined;
  /** Whether kill() was called or the process was aborted. */
  killed = false;
  /** Exit code once it exited by itself; null while running and when a signal ended it. */
  exitCode: number | null = null;
  /** The signal that ended it (`SIGKILL` also for the memory limit and timeouts); else null. */
  signalCode: NodeJS.Signals | null = null;
  /** hakod's exit message (with `reason`: OOM, TIMEOUT, SANDBOX_GONE…), once it arrived. */
  exitInfo: ExecExit | undefined;
  /** Why the Exec call failed, when it did. */
  error: AppError | undefined;

  private readonly call: ReturnType<AgentClient['exec']>;
  private readonly log: Logger;
  private readonly tailBytes: number;
  private tail = '';
  private stderrLogged = 0;
  private stderrDropped = 0;
  private finished = false;
  private abortTimer: NodeJS.Timeout | undefined;
  private readonly onAbort: () => void;
  private readonly abortSignal: AbortSignal | undefined;
  private readonly input: SpawnInSandboxInput;

  constructor(input: SpawnInSandboxInput) {
    super();
    this.input = input;
    this.log = input.logger;
    this.tailBytes = input.stderrTailBytes ?? DEFAULT_STDERR_TAIL_BYTES;
    this.abortSignal = input.signal;
    this.call = input.client.exec();
    const call = this.call;

    this.stdout = new Readable({
      // the reader wants more: let the call deliver again
      read: () => {
        if (!this.finished) call.resume();
      },
    });
    this.stdin = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        this.sendStdin(chunk).then(() => cb(), cb);
      },
      final: (cb) => {
        if (!this.finished) this.send({ msg: { $case: 'stdinClose', stdinClose: {} } });
        cb();
      },
    });

    call.on('data', (m: ExecMessage) => this.onMessage(m, input.onStderr));
    call.on('error', (e: CallError) => this.onCallError(e));
    call.on('end', () => this.onCallEnd());

    this.onAbort = () => this.abort();
    this.send({
      msg: {
        $case: 'start',
        start: {
          ownerId: input.ownerId,
          sandboxId: input.sandboxId,
          argv: [...input.argv],
          env: { ...input.env },
          cwd: input.cwd,
          user: '',
          stdin: true,
          timeoutMs: 0,
        },
      },
    });
    if (input.signal?.aborted) this.abort();
    else input.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /** The last bytes (at most stderrTailBytes) the process wrote to stderr. */
  stderrTail(): string {
    return this.tail;
  }

  /**
   * Sends `signal` (SIGTERM, SIGKILL, SIGINT…) to the process through hakod. False once it has
   * exited (nothing is sent).
   */
  kill(signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
    if (this.finished) return false;
    this.killed = true;
    this.send({ msg: { $case: 'signal', signal: { signal: String(signal) } } });
    return true;
  }

  private send(m: ExecRequest): boolean {
    if (this.finished) return true;
    return this.call.write(m);
  }

  private async sendStdin(chunk: Buffer): Promise<void> {
    for (let i = 0; i < chunk.length; i += STDIN_CHUNK_BYTES) {
      if (this.finished) throw epipe();
      const ok = this.call.write({
        msg: { $case: 'stdin', stdin: chunk.subarray(i, i + STDIN_CHUNK_BYTES) },
      });
      if (!ok) await this.drained();
    }
  }

  /** Resolves at the call's next 'drain', or at once when the call ends first. */
  private drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.call.removeListener('drain', done);
        this.removeListener('close', done);
        resolve();
      };
      this.call.once('drain', done);
      this.once('close', done);
    });
  }

  private onMessage(m: ExecMessage, onStderr: ((text: string) => void) | undefined): void {
    const msg = m.msg;
    if (!msg) return;
    switch (msg.$case) {
      case 'started':
        this.pid = msg.started.pid;
        this.emit('spawn');
        return;
      case 'stdout':
        if (!this.stdout.push(msg.stdout)) this.call.pause();
        return;
      case 'stderr': {
        const text = msg.stderr.toString('utf8');
        this.tail = (this.tail + text).slice(-this.tailBytes);
        if (this.stderrLogged < STDERR_LOG_BUDGET_BYTES) {
          this.stderrLogged += msg.stderr.length;
          this.log.debug({ stderr: text.slice(0, STDERR_LOG_BUDGET_BYTES) }, 'sandboxed process stderr');
        } else this.stderrDropped += msg.stderr.length;
        onStderr?.(text);
        return;
      }
      case 'exit':
        this.exitInfo = msg.exit;
        return;
      case 'keepalive':
        return;
    }
  }

  private onCallEnd(): void {
    if (this.finished) return;
    if (this.exitInfo) {
      const signal = this.exitInfo.signal;
      if (signal !== '') this.signalCode = signal as NodeJS.Signals;
      else this.exitCode = this.exitInfo.code;
      this.finish();
    } else {
      this.fail(new AppError('INTERNAL', 'the Exec stream ended without an exit message'));
    }
  }

  private onCallError(e: CallError): void {
    if (this.finished) return;
    const err = errorFromStatus(e);
    if (this.killed && this.abortSignal?.aborted) {
      // we cancelled the call after an abort: hakod kills the process with the call
      this.signalCode = 'SIGKILL';
      this.finish();
      return;
    }
    this.fail(err);
  }

  private fail(err: AppError): void {
    this.error = err;
    this.finishStreams();
    this.log.warn({ err, stderr: this.tail.slice(-2048) }, 'the sandboxed process failed');
    this.emit('error', err);
    this.emitExit();
  }

  private finish(): void {
    this.finishStreams();
    if (this.stderrDropped > 0) {
      this.log.debug({ bytes: this.stderrDropped }, 'sandboxed process stderr not logged (over budget)');
    }
    if (this.killed && this.input.reapOnKill === true) void this.reap().then(() => this.emitExit());
    else this.emitExit();
  }

  /** Kills what the process left in the sandbox (reapOnKill); failures are logged. */
  private async reap(): Promise<void> {
    const { client, ownerId, sandboxId } = this.input;
    try {
      const r = await runExec(
        client,
        { ownerId, sandboxId, argv: REAP_ARGV },
        { timeoutMs: REAP_TIMEOUT_MS },
      );
      if (r.exit.code !== 0) {
        this.log.warn({ sandboxId, exit: r.exit }, 'killing what the agent left in the sandbox failed');
      }
    } catch (err) {
      this.log.warn({ err, sandboxId }, 'killing what the agent left in the sandbox failed');
    }
  }

  private finishStreams(): void {
    this.finished = true;
    if (this.abortTimer) clearTimeout(this.abortTimer);
    this.abortSignal?.removeEventListener('abort', this.onAbort);
    this.stdout.push(null);
    // the call may still be half-open on our side
    this.call.end();
  }

  private emitExit(): void {
    // after the data already pushed to stdout: listeners see a complete output
    process.nextTick(() => {
      this.emit('exit', this.exitCode, this.signalCode);
      this.emit('close', this.exitCode, this.signalCode);
    });
  }

  private abort(): void {
    if (this.finished) return;
    this.kill('SIGKILL');
    this.abortTimer = setTimeout(() => {
      if (!this.finished) this.call.cancel();
    }, ABORT_EXIT_GRACE_MS);
    this.abortTimer.unref();
  }
}

/**
 * Starts `argv` in the sandbox through hakod's Exec and answers at once (the SDK's spawn function is
 * synchronous); failures arrive as the process's 'error' event.
 */
export function spawnInSandbox(input: SpawnInSandboxInput): SandboxProcess {
  return new SandboxProcess(input);
}
