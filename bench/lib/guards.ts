/** Type guards for the profilers, which wrap driver methods whose results may be processes or promises. */
import type { ChildProcess } from 'node:child_process';

export function isChildProcess(x: unknown): x is ChildProcess {
  return (
    typeof x === 'object' &&
    x !== null &&
    typeof (x as ChildProcess).once === 'function' &&
    'stdio' in x &&
    'pid' in x
  );
}

export function isThenable(x: unknown): x is PromiseLike<unknown> {
  return typeof x === 'object' && x !== null && typeof (x as PromiseLike<unknown>).then === 'function';
}
