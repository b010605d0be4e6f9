/**
 * Where a `hako` command writes and how it learns of Ctrl-C: the process's own streams and signals
 * in real use, captured buffers and a test-driven interrupt in the tests (main(argv, env, io)).
 */
import type { EnvRecord } from '@hako/core';
import { explainError } from './api-client.js';

export interface CliOutput {
  write(text: string): unknown;
  readonly isTTY?: boolean | undefined;
}

export interface CliIo {
  readonly stdout: CliOutput;
  readonly stderr: CliOutput;
  /** What `-` arguments read (exec's prompt); the process's stdin by default. */
  readonly stdin?: AsyncIterable<Uint8Array | string> | undefined;
  /**
   * Calls `fn` once when the user interrupts (Ctrl-C, SIGTERM, SIGHUP); answers a function that
   * stops listening. Commands that run long (exec) abort their request from it.
   */
  onInterrupt(fn: () => void): () => void;
}

/** The process's stdout, stderr and termination signals. */
export function processIo(): CliIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
    onInterrupt(fn) {
      const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
      let fired = false;
      const handler = (): void => {
        if (fired) return;
        fired = true;
        fn();
      };
      for (const s of signals) process.on(s, handler);
      return () => {
        for (const s of signals) process.off(s, handler);
      };
    },
  };
}

/**
 * Whether output to `out` may use colors: only on a terminal, and never with NO_COLOR set
 * (https://no-color.org) or TERM=dumb. Output to a pipe or file is plain text.
 */
export function useColor(out: CliOutput, env: EnvRecord): boolean {
  if (out.isTTY !== true) return false;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  return env.TERM !== 'dumb';
}

/**
 * Prints an error as `hako: [CODE] what went wrong` and, on the next line, what to do about it;
 * answers the exit code (1: the request failed, as opposed to 2 for bad usage). `hint`, when
 * given, replaces the generic next step.
 */
export function reportError(io: CliIo, err: unknown, hint?: string): number {
  const e = explainError(err);
  io.stderr.write(`hako: ${e.code === undefined ? '' : `[${e.code}] `}${e.message}\n`);
  const next = hint ?? e.hint;
  if (next !== undefined) io.stderr.write(`  ${next}\n`);
  return 1;
}

/** Prints a next-step tip on stderr, only for a person at a terminal (scripts see none). */
export function tip(io: CliIo, text: string): void {
  if (io.stderr.isTTY === true) io.stderr.write(`${text}\n`);
}

/** Prints a usage error (`hako CMD: what is wrong`, then the usage) and answers 2. */
export function reportUsage(io: CliIo, command: string, message: string, usage: string): number {
  io.stderr.write(`hako ${command}: ${message}\n\n${usage}`);
  return 2;
}
