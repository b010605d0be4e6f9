import { isAppError } from '@hako/core';

/** Prints an error as `hako: [CODE] message` and returns the exit code (1; 125 for hako's own failures). */
export function printError(err: Error): number {
  if (isAppError(err)) {
    process.stderr.write(`hako: [${err.code}] ${err.message}\n`);
  } else {
    process.stderr.write(`hako: ${err.message}\n`);
  }
  // 125, as container engines use: the failure is hako's, not the command's
  return 125;
}
