/**
 * `hako sandbox run` as one entry point: what main() does for it (the command, and hako's own
 * errors printed as `hako: [CODE] message`). scripts/bundle-cli.mjs bundles this module so that
 * bin/hako.js can start the command from one file.
 */
import { AppError } from '@hako/core';
import type { EnvRecord } from '@hako/core';
import { sandboxRun } from './commands/sandbox-run.js';
import { printError } from './output.js';

export async function runSandboxCommand(argv: readonly string[], env: EnvRecord): Promise<number> {
  try {
    return await sandboxRun(argv, env);
  } catch (e) {
    if (e instanceof AppError) return printError(e);
    throw e;
  }
}
