import { join } from 'node:path';
import { createLogger } from '@hako/core';
import type { EnvRecord } from '@hako/core';
import { LocalImageStore } from '@hako/sandbox';
import type { PullProgress } from '@hako/sandbox';
import { parseFlags, str, UsageError } from '../flags.js';
import { loadConfig } from '../wire.js';
import { printError } from '../output.js';

const USAGE = `usage: hako image pull REF [--json]
       hako image import FILE.tar [--name NAME:TAG]
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
      case 'pull': {
        const ref = parsed.rest[0];
        if (!ref || parsed.rest.length > 1) break;
        const json = parsed.flags.json === true;
        const tty = process.stderr.isTTY === true && !json;
        let last = '';
        const pulled = await store.pull(ref, {
          onProgress: (p) => {
            if (json) process.stdout.write(`${JSON.stringify({ progress: p })}\n`);
            const line = formatPullProgress(ref, p);
            // On a terminal one line updates in place; otherwise the pull is quiet until it ends.
            if (tty && line !== last) process.stderr.write(`\r\x1b[2K${line}`);
            last = line;
          },
        });
        if (tty) process.stderr.write('\r\x1b[2K');
        if (json) process.stdout.write(`${JSON.stringify({ name: pulled.name, digest: pulled.digest })}\n`);
        else process.stdout.write(`pulled ${pulled.name} ${pulled.digest}\n`);
        return 0;
      }
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

/** One line for a pull's progress: `REF: downloading sha256:abcd… 12.0 MiB / 40.0 MiB (30%)`. */
export function formatPullProgress(ref: string, p: PullProgress): string {
  const short = p.digest === undefined ? '' : ` ${p.digest.slice(0, 19)}…`;
  switch (p.phase) {
    case 'resolving':
      return `${ref}: resolving`;
    case 'manifest':
      return `${ref}: manifest${short}`;
    case 'blob': {
      const done = p.bytesDone ?? 0;
      const total = p.bytesTotal ?? 0;
      const pct = total > 0 ? ` (${Math.floor((done / total) * 100)}%)` : '';
      return `${ref}: downloading${short} ${mib(done)} / ${mib(total)}${pct}`;
    }
    case 'unpacking':
      return `${ref}: unpacking${short}`;
    case 'done':
      return `${ref}: done${short}`;
  }
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
