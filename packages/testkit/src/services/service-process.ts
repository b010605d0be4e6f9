import { execFile, spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';

const execFileAsync = promisify(execFile);

/** How much of a service's output is kept for error messages. */
const OUTPUT_TAIL_BYTES = 16_384;

/** Where host tools live besides PATH (Debian keeps some in sbin, which a non-login root PATH may miss). */
const EXTRA_BIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** A numeric user and group to run a service as. */
export interface RunAs {
  readonly uid: number;
  readonly gid: number;
}

export interface ServiceProcessOptions {
  /** Short name for messages and logs ('postgres', 'redis', 's3'). */
  readonly name: string;
  /** Absolute path of the program. */
  readonly command: string;
  readonly args: readonly string[];
  /** The whole environment of the service (nothing is inherited). */
  readonly env: NodeJS.ProcessEnv;
  /** Run as this user (supplementary groups dropped); undefined keeps the caller's user. */
  readonly runAs?: RunAs | undefined;
  /**
   * Sent by the kernel to the service when the process that started it dies, even by SIGKILL, so
   * a killed test run leaves no server behind (setpriv --pdeathsig).
   */
  readonly parentDeathSignal: NodeJS.Signals;
  readonly logger: Logger;
  /** Called with every complete line the service writes to stdout or stderr. */
  readonly onLine?: (line: string) => void;
}

/** A server process started by a test. */
export interface ServiceProcess {
  readonly pid: number | undefined;
  /** Resolves when the process has exited (or could not be started). Never rejects. */
  readonly exited: Promise<void>;
  /** True until the process exits. */
  running(): boolean;
  /** How the process ended ('exited with code 1', 'killed by SIGKILL', a spawn error), or undefined while it runs. */
  exitDescription(): string | undefined;
  /** The last 16 KiB of stdout and stderr together. */
  output(): string;
  /**
   * Sends `signal`, waits up to `graceMs` for the exit, then SIGKILLs and waits again. Returns at
   * once when the process has already exited. Safe to call more than once.
   */
  stop(signal: NodeJS.Signals, graceMs: number): Promise<void>;
}

/** Finds a program on PATH or in the sbin dirs; throws HOST_PREREQUISITE_MISSING naming `pkg` when absent. */
export async function findExecutable(name: string, pkg: string): Promise<string> {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter((d) => d !== ''), ...EXTRA_BIN_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this dir
    }
  }
  throw new AppError(
    'HOST_PREREQUISITE_MISSING',
    `${name} was not found on PATH or in ${EXTRA_BIN_DIRS.join(', ')}; install the Debian package ${pkg} (bash scripts/setup does)`,
  );
}

/** Looks up a system user's uid and primary gid (through NSS, like the rest of the system). */
export async function lookupUser(name: string): Promise<RunAs> {
  try {
    const [uid, gid] = await Promise.all([
      execFileAsync('id', ['-u', name]).then((r) => Number(r.stdout.trim())),
      execFileAsync('id', ['-g', name]).then((r) => Number(r.stdout.trim())),
    ]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error(`id printed uid ${uid} gid ${gid}`);
    return { uid, gid };
  } catch (err) {
    throw new AppError(
      'HOST_PREREQUISITE_MISSING',
      `the system user ${name} does not exist (${err instanceof Error ? err.message.trim() : String(err)}); the Debian package that creates it is missing (bash scripts/setup installs it)`,
      { cause: err },
    );
  }
}

/**
 * A TCP port on 127.0.0.1 that was free a moment ago. Another process may take it before the
 * service binds it, so callers retry with a new port when the bind fails.
 */
export async function pickFreePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') {
    throw new AppError('INTERNAL', 'a loopback listener reported no TCP port');
  }
  return address.port;
}

/** How a service is started on a free port: see startOnFreePort. */
export interface FreePortStart<T> {
  /** Ports tried before giving up (each lost race for a port costs one). */
  readonly attempts: number;
  /** The caller's cleanup stack: each started process's stop step is pushed on it. */
  readonly undo: (() => Promise<void>)[];
  /** The service's output when its bind lost the race for the port. */
  readonly bindError: RegExp;
  readonly spawn: (port: number) => Promise<ServiceProcess>;
  readonly stop: (proc: ServiceProcess) => Promise<void>;
  /** Resolves once the service answers (waitForService); its value is returned as `ready`. */
  readonly ready: (proc: ServiceProcess, port: number) => Promise<T>;
}

/**
 * Starts a service on a loopback port that was free a moment ago. When another process took the
 * port before the service bound it (its output matches `bindError`), that attempt is stopped and
 * a new port tried; any other failure is thrown at once. The running attempt's stop step stays on
 * `undo`.
 */
export async function startOnFreePort<T>(
  o: FreePortStart<T>,
): Promise<{ proc: ServiceProcess; port: number; ready: T }> {
  for (let attempt = 1; ; attempt++) {
    const port = await pickFreePort();
    const proc = await o.spawn(port);
    o.undo.push(() => o.stop(proc));
    try {
      return { proc, port, ready: await o.ready(proc, port) };
    } catch (err) {
      if (attempt >= o.attempts || !o.bindError.test(proc.output())) throw err;
      await o.undo.pop()?.();
    }
  }
}

/** Starts a service through setpriv, which sets the parent-death signal and the user, then execs it. */
export async function spawnService(options: ServiceProcessOptions): Promise<ServiceProcess> {
  const setpriv = await findExecutable('setpriv', 'util-linux');
  const privArgs = ['--pdeathsig', options.parentDeathSignal.replace(/^SIG/, '')];
  if (options.runAs) {
    privArgs.push(`--reuid=${options.runAs.uid}`, `--regid=${options.runAs.gid}`, '--clear-groups');
  }
  const child = spawn(setpriv, [...privArgs, '--', options.command, ...options.args], {
    env: options.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });

  let tail = '';
  let exitDescription: string | undefined;
  const pending = { stdout: '', stderr: '' };
  const onData = (stream: 'stdout' | 'stderr') => (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    tail = (tail + text).slice(-OUTPUT_TAIL_BYTES);
    const lines = (pending[stream] + text).split('\n');
    pending[stream] = lines.pop() ?? '';
    for (const line of lines) {
      if (line === '') continue;
      options.logger.debug({ service: options.name, pid: child.pid }, line);
      options.onLine?.(line);
    }
  };
  child.stdout.on('data', onData('stdout'));
  child.stderr.on('data', onData('stderr'));

  const exited = new Promise<void>((resolve) => {
    child.once('error', (err) => {
      exitDescription ??= `could not be started: ${err.message}`;
      resolve();
    });
    child.once('exit', (code, signal) => {
      exitDescription ??= signal === null ? `exited with code ${code ?? 'unknown'}` : `killed by ${signal}`;
      resolve();
    });
  });

  const signalChild = (signal: NodeJS.Signals): void => {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  };
  const waitExit = async (ms: number): Promise<boolean> => {
    const timer = sleep(ms, false, { ref: false });
    return Promise.race([exited.then(() => true), timer]);
  };

  return {
    pid: child.pid,
    exited,
    running: () => exitDescription === undefined,
    exitDescription: () => exitDescription,
    output: () => tail,
    async stop(signal, graceMs) {
      if (exitDescription !== undefined) return;
      signalChild(signal);
      if (await waitExit(graceMs)) return;
      options.logger.warn(
        { service: options.name, pid: child.pid, signal },
        'service ignored the stop signal; killing it',
      );
      signalChild('SIGKILL');
      await exited;
    },
  };
}

/**
 * Polls `check` until it resolves, the service exits, or `timeoutMs` passes. The error says which,
 * with the check's last error and the service's output.
 */
export async function waitForService<T>(
  proc: ServiceProcess,
  what: string,
  timeoutMs: number,
  check: () => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    if (!proc.running()) {
      throw new AppError(
        'INTERNAL',
        `${what}: the server ${proc.exitDescription() ?? 'exited'} before it was ready; its output:\n${proc.output()}`,
      );
    }
    try {
      return await check();
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const reason = lastError instanceof Error ? lastError.message : String(lastError);
      throw new AppError(
        'INTERNAL',
        `${what}: not ready after ${timeoutMs} ms (last attempt: ${reason}); its output:\n${proc.output()}`,
      );
    }
    await sleep(25);
  }
}

/** Removes a directory tree; a directory that is already gone is fine. */
export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 50 });
}

/**
 * Runs undo steps in reverse order, all of them even when some fail, and throws one error naming
 * every failure.
 */
export async function runUndo(name: string, steps: readonly (() => Promise<void>)[]): Promise<void> {
  const failures: string[] = [];
  for (const step of [...steps].reverse()) {
    try {
      await step();
    } catch (err) {
      failures.push(err instanceof Error ? err.message : String(err));
    }
  }
  if (failures.length > 0) {
    throw new AppError('INTERNAL', `stopping the test ${name} failed: ${failures.join('; ')}`);
  }
}

/** The environment every service gets: PATH and a UTF-8 locale, nothing from the test's own environment. */
export function serviceEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    LANG: 'C.UTF-8',
    LC_ALL: 'C.UTF-8',
    ...extra,
  };
}
