import type { EnvRecord } from '@hako/core';
import { isAppError } from '@hako/core';
import { parseFlags, UsageError } from '../flags.js';
import { printError } from '../output.js';
import { certsInit } from '../certs.js';

const USAGE = 'usage: hako certs init --dir DIR [--host NAME|IP]... [--days 825] [--force]\n';

export async function certs(argv: readonly string[], _env: EnvRecord): Promise<number> {
  let parsed;
  let days: number;
  try {
    parsed = parseFlags(
      argv,
      {
        dir: { type: 'string' },
        host: { type: 'string', multiple: true },
        days: { type: 'string' },
        force: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      { stopAtPositional: false },
    );
    if (parsed.flags.help === true) {
      process.stdout.write(USAGE);
      return 0;
    }
    if (parsed.rest[0] !== 'init' || parsed.rest.length !== 1) throw new UsageError('expected: certs init');
    if (typeof parsed.flags.dir !== 'string' || parsed.flags.dir === '')
      throw new UsageError('--dir is required');
    const daysFlag = parsed.flags.days === undefined ? '825' : String(parsed.flags.days);
    if (!/^\d+$/.test(daysFlag)) throw new UsageError(`--days must be a whole number, not "${daysFlag}"`);
    days = Number(daysFlag);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`hako certs: ${e.message}\n${USAGE}`);
      return 2;
    }
    throw e;
  }
  const hosts = (parsed.flags.host as string[] | undefined) ?? [];
  try {
    const written = await certsInit({
      dir: parsed.flags.dir,
      hosts,
      days,
      force: parsed.flags.force === true,
    });
    for (const f of written) process.stdout.write(`wrote ${f}\n`);
    return 0;
  } catch (e) {
    if (isAppError(e) && e.code === 'INVALID_ARGUMENT') {
      process.stderr.write(`hako certs: ${e.message}\n${USAGE}`);
      return 2;
    }
    return printError(e as Error);
  }
}
