import type { EnvRecord } from '@hako/core';
import { printError } from '../output.js';

export const AGENT_USAGE = `usage: hako agent

Starts hakod, the node agent, in the foreground: the gRPC API (mTLS by default) on AGENT_LISTEN,
Prometheus metrics on AGENT_METRICS_LISTEN. On start it adopts the sandboxes a previous hakod left
running and removes everything else it had made. SIGTERM or SIGINT stops it; running sandboxes are
left for the next start to adopt (warm ones are removed).

Configuration comes from the environment: see docs/configuration.md (AGENT_TLS_DIR from
\`hako certs init --dir DIR\`, or AGENT_INSECURE=1 on loopback for local development).
`;

export async function agent(argv: readonly string[], env: EnvRecord): Promise<number> {
  if (argv.length > 0) {
    const help = argv[0] === '--help' || argv[0] === '-h';
    (help ? process.stdout : process.stderr).write(AGENT_USAGE);
    return help ? 0 : 2;
  }
  const { startAgent } = await import('@hako/agentd');
  const running = await startAgent(env).catch((e: unknown) => e as Error);
  if (running instanceof Error) return printError(running);
  process.stderr.write(
    `hakod listening on ${running.address}` +
      (running.metricsAddress ? `, metrics on http://${running.metricsAddress}/metrics` : '') +
      '\n',
  );
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  running.logger.info({ signal }, 'hakod stopping');
  await running.close();
  return 0;
}
