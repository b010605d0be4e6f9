import { AppError } from '@hako/core';
import { MAIN_USAGE } from './usage.js';
import { printError } from './output.js';
import { processIo } from './cli-io.js';
import type { CliIo } from './cli-io.js';

export const VERSION = '0.1.0';

/**
 * Dispatches a `hako` command line; returns the exit code. Commands load lazily to keep start-up
 * short. `io` is where the API commands (tenants, keys, conversations, exec, sandboxes) write and
 * how they learn of Ctrl-C; tests pass their own.
 */
export async function main(
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
  io: CliIo = processIo(),
): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  try {
    switch (cmd) {
      case 'up':
        return await (await import('./commands/up.js')).up(argv.slice(1), env);
      case 'demo':
        return await (await import('./commands/demo.js')).demo(argv.slice(1), env);
      case 'tenants':
      case 'tenant':
        return await (await import('./commands/tenants.js')).tenants(argv.slice(1), env, io);
      case 'keys':
      case 'key':
        return await (await import('./commands/keys.js')).keys(argv.slice(1), env, io);
      case 'conversations':
      case 'conversation':
        return await (await import('./commands/conversations.js')).conversations(argv.slice(1), env, io);
      case 'exec':
        return await (await import('./commands/exec.js')).exec(argv.slice(1), env, io);
      case 'sandboxes':
        return await (await import('./commands/sandboxes.js')).sandboxes(argv.slice(1), env, io);
      case 'sandbox':
        if (sub === 'run') return await (await import('./sandbox-run-entry.js')).runSandboxCommand(rest, env);
        io.stderr.write(`usage: hako sandbox run [flags] -- CMD [ARGS...]\n`);
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
        io.stdout.write(`hako ${VERSION}\n`);
        return 0;
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        (cmd === undefined ? io.stderr : io.stdout).write(MAIN_USAGE);
        return cmd === undefined ? 2 : 0;
      default:
        io.stderr.write(`hako: unknown command "${cmd}"\n\n${MAIN_USAGE}`);
        return 2;
    }
  } catch (e) {
    if (e instanceof AppError) return printError(e);
    throw e;
  }
}
