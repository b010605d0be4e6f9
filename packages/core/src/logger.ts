import { pino } from 'pino';
import type { Logger } from 'pino';

export type { Logger } from 'pino';

/** Builds the process's logger. Libraries never call this: they take a Logger passed in. */
export function createLogger(options: { level?: string; name?: string; destination?: number } = {}): Logger {
  return pino(
    { level: options.level ?? 'info', name: options.name ?? 'hako', base: undefined },
    pino.destination({ fd: options.destination ?? 2, sync: true }),
  );
}

/** A logger that drops everything: for tests and quiet CLI runs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
