/**
 * Bench entry point: `npm run bench -- <name> [flags]` (root package.json runs this with
 * `node --conditions=source --import tsx`, so workspace packages resolve to their sources).
 * Each bench prints a human report and, as the last line of stdout, one JSON object.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_IDLE, agentBench } from './agent.js';
import { API_DEFAULT_N, API_DEFAULT_WARMUP, apiBench } from './api.js';
import { SANDBOX_SELECTORS, sandboxBench } from './sandbox.js';
import type { SandboxSelector } from './sandbox.js';

const USAGE = `usage: npm run bench -- <name> [flags]

benches:
  sandbox    one sandboxed \`true\` through hako (library and CLI) against spawn, the bare OCI
             runtimes, podman and sandbox-runtime; phase profile of the one-shot (run as root)
  agent      hakod in-process, a client over mTLS on loopback: cold and warm-pool CreateSandbox,
             Exec of \`true\`, DestroySandbox against spawn; creates/s; idle sandboxes and host
             memory per sandbox; phase profile (run as root)
  api        the whole stack on this host (PostgreSQL, Redis, s3rver, scripted model, hakod,
             hako-api processes): a two-turn agent session via POST .../execute against the same
             session run by the SDK directly; 20 executes at once; restore of 1000 files and the
             sync-back of one changed file (run as root)

flags:
  --n N          measured iterations per case (default 50; api: ${API_DEFAULT_N}); agent: also the
                 creates of creates/s
  --warmup N     warm-up iterations per case, discarded (default 3; api: ${API_DEFAULT_WARMUP})
  --only A,B     sandbox only: run a subset: ${SANDBOX_SELECTORS.join(', ')}
  --idle N       agent only: idle sandboxes to hold at once (default ${DEFAULT_IDLE}; 0 skips)
  --json         print only the JSON result line
  -h, --help     this text
`;

function fail(msg: string): number {
  process.stderr.write(`bench: ${msg}\n\n${USAGE}`);
  return 2;
}

function positiveInt(text: string | undefined, flag: string, fallback: number, min: number): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < min) throw new Error(`--${flag}: a whole number >= ${min}`);
  return Number(text);
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        n: { type: 'string' },
        warmup: { type: 'string' },
        only: { type: 'string' },
        idle: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    return fail((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const [name, ...extra] = positionals;
  if (!name) return fail('which bench? (sandbox, agent or api)');
  if (extra.length > 0) return fail(`unexpected arguments: ${extra.join(' ')}`);
  if (name !== 'sandbox' && name !== 'agent' && name !== 'api') return fail(`unknown bench "${name}"`);
  if (name === 'api') {
    if (values.only !== undefined) return fail('--only is for the sandbox bench');
    if (values.idle !== undefined) return fail('--idle is for the agent bench');
    let apiN: number;
    let apiWarmup: number;
    try {
      apiN = positiveInt(values.n, 'n', API_DEFAULT_N, 1);
      apiWarmup = positiveInt(values.warmup, 'warmup', API_DEFAULT_WARMUP, 0);
    } catch (err) {
      return fail((err as Error).message);
    }
    if (process.getuid?.() !== 0) {
      process.stderr.write('bench: warning: not root; hakod needs root for its sandboxes\n');
    }
    return apiBench({ n: apiN, warmup: apiWarmup, json: values.json ?? false });
  }
  let n: number;
  let warmup: number;
  let idle: number;
  try {
    n = positiveInt(values.n, 'n', 50, 1);
    warmup = positiveInt(values.warmup, 'warmup', 3, 0);
    idle = positiveInt(values.idle, 'idle', DEFAULT_IDLE, 0);
  } catch (err) {
    return fail((err as Error).message);
  }
  if (name === 'agent') {
    if (values.only !== undefined) return fail('--only is for the sandbox bench');
    if (process.getuid?.() !== 0) {
      process.stderr.write('bench: warning: not root; hakod needs root for its sandboxes\n');
    }
    return agentBench({ n, warmup, idle, json: values.json ?? false });
  }
  if (values.idle !== undefined) return fail('--idle is for the agent bench');
  let only: Set<SandboxSelector> | undefined;
  if (values.only !== undefined) {
    only = new Set();
    for (const s of values.only
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean)) {
      if (!(SANDBOX_SELECTORS as readonly string[]).includes(s)) {
        return fail(`--only: unknown "${s}" (one of ${SANDBOX_SELECTORS.join(', ')})`);
      }
      only.add(s as SandboxSelector);
    }
    if (only.size === 0) return fail('--only: name at least one of ' + SANDBOX_SELECTORS.join(', '));
  }
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench: warning: not root; hako, the runtimes and podman need root\n');
  }
  return sandboxBench({ n, warmup, only, json: values.json ?? false });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`bench: internal error: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
