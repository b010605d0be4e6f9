import { AppError } from '@hako/core';
import { MAIN_USAGE } from './usage.js';
import { printError } from './output.js';

export const VERSION = '0.1.0';

/** Dispatches a `hako` command line; returns the exit code. Commands load lazily to keep start-up short. */
export async function main(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  try {
    switch (cmd) {
      case 'sandbox':
        if (sub === 'run') return await (await import('./commands/sandbox-run.js')).sandboxRun(rest, env);
        process.stderr.write(`usage: hako sandbox run [flags] -- CMD [ARGS...]\n`);
        return 2;
      case 'image':
        return await (await import('./commands/image.js')).image(argv.slice(1), env);
      case 'certs':
        return await (await import('./commands/certs.js')).certs(argv.slice(1), env);
      case 'agent':
        return await (await import('./commands/agent.js')).agent(argv.slice(1), env);
      case 'gc':
        return await (await import('./commands/gc.js')).gc(argv.slice(1), env);
      case 'doctor':
        return await (await import('./commands/doctor.js')).doctor(argv.slice(1), env);
      case 'version':
      case '--version':
        process.stdout.write(`hako ${VERSION}\n`);
        return 0;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(MAIN_USAGE);
        return cmd === undefined ? 2 : 0;
      default:
        process.stderr.write(`hako: unknown command "${cmd}"\n\n${MAIN_USAGE}`);
        return 2;
    }
  } catch (e) {
    if (e instanceof AppError) return printError(e);
    throw e;
  }
}
