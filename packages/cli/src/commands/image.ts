import { join } from 'node:path';
import { createLogger } from '@hako/core';
import type { EnvRecord } from '@hako/core';
import { LocalImageStore } from '@hako/sandbox';
import { parseFlags, str, UsageError } from '../flags.js';
import { loadConfig } from '../wire.js';
import { printError } from '../output.js';

const USAGE = `usage: hako image import FILE.tar [--name NAME:TAG]
       hako image list [--json]
       hako image rm NAME|DIGEST
`;

export async function image(argv: readonly string[], env: EnvRecord): Promise<number> {
  const [sub, ...rest] = argv;
  let parsed;
  try {
    parsed = parseFlags(
      rest,
      { name: { type: 'string' }, json: { type: 'boolean' } },
      { stopAtPositional: false },
    );
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`hako image: ${e.message}\n${USAGE}`);
      return 2;
    }
    throw e;
  }
  const config = loadConfig(env);
  const logger = createLogger({ level: config.HAKO_LOG_LEVEL });
  const store = new LocalImageStore({ root: join(config.HAKO_STATE_DIR, 'images'), logger });
  try {
    switch (sub) {
      case 'import': {
        const file = parsed.rest[0];
        if (!file || parsed.rest.length > 1) break;
        const ref = await store.importLayout(file, str(parsed.flags, 'name'));
        process.stdout.write(`imported ${ref.name} ${ref.digest}\n`);
        return 0;
      }
      case 'list':
      case 'ls': {
        const refs = await store.list();
        if (parsed.flags.json === true) {
          process.stdout.write(`${JSON.stringify(refs.map((r) => ({ name: r.name, digest: r.digest })))}\n`);
        } else for (const r of refs) process.stdout.write(`${r.name}\t${r.digest}\n`);
        return 0;
      }
      case 'rm':
      case 'remove': {
        const ref = parsed.rest[0];
        if (!ref || parsed.rest.length > 1) break;
        await store.remove(ref);
        process.stdout.write(`removed ${ref}\n`);
        return 0;
      }
      case undefined:
      default:
        break;
    }
  } catch (e) {
    return printError(e as Error);
  }
  process.stderr.write(USAGE);
  return 2;
}
