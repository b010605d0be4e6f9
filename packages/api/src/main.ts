/**
 * hako-api as a process: reads process.env, starts the server, prints one JSON line with the URL
 * on stdout once it listens (scripts and tests read it), and stops cleanly on SIGTERM or SIGINT.
 */
import { createLogger } from '@hako/core';
import { startApi } from './server.js';

async function main(): Promise<void> {
  const level = process.env.HAKO_LOG_LEVEL ?? 'info';
  const logger = createLogger({ level, name: 'hako-api' });
  let api;
  try {
    api = await startApi(process.env, { logger });
  } catch (err) {
    logger.fatal({ err }, 'hako-api could not start');
    process.exitCode = 1;
    return;
  }
  process.stdout.write(`${JSON.stringify({ event: 'listening', url: api.url })}\n`);
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'hako-api stopping');
    void api.close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

void main();
