import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { AppError, parseBytes, parseDuration } from '@hako/core';
import type { EnvRecord } from '@hako/core';
import { parseAllowlist } from '@hako/sandbox';
import type { RuntimeName, SandboxOptions } from '@hako/sandbox';
import { UsageError, list, parseFlags, str } from '../flags.js';
import { SANDBOX_RUN_USAGE } from '../usage.js';
import { wireSandboxHost } from '../wire.js';
import { printError } from '../output.js';

const FLAGS = {
  workspace: { type: 'string' },
  image: { type: 'string' },
  runtime: { type: 'string' },
  memory: { type: 'string' },
  cpus: { type: 'string' },
  pids: { type: 'string' },
  disk: { type: 'string' },
  tmp: { type: 'string' },
  network: { type: 'string' },
  allow: { type: 'string', multiple: true },
  env: { type: 'string', multiple: true },
  timeout: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const DEFAULTS = {
  memory: '512m',
  cpus: '1',
  pids: '256',
  disk: '1g',
  tmp: '64m',
  timeout: '10m',
} as const;

export interface SandboxRunRequest {
  readonly options: SandboxOptions;
  readonly runtime: RuntimeName | undefined;
  readonly timeoutMs: number;
  readonly command: string[];
}

function usage(msg: string): UsageError {
  return new UsageError(msg);
}

/** Turns argv into a validated request; every problem is a UsageError (exit 2). Pure but for nothing. */
export function parseSandboxRun(argv: readonly string[]): SandboxRunRequest | 'help' {
  const { flags, rest } = parseFlags(argv, FLAGS, { stopAtPositional: true });
  if (flags.help) return 'help';
  if (rest.length === 0) throw usage('missing command: hako sandbox run [flags] -- CMD [ARGS...]');
  const wrap = <T>(flag: string, f: () => T): T => {
    try {
      return f();
    } catch (e) {
      throw usage(`--${flag}: ${(e as Error).message}`);
    }
  };
  const memoryBytes = wrap('memory', () => parseBytes(str(flags, 'memory') ?? DEFAULTS.memory));
  if (memoryBytes < 8 * 1024 * 1024) throw usage('--memory: at least 8m');
  const diskBytes = wrap('disk', () => parseBytes(str(flags, 'disk') ?? DEFAULTS.disk));
  if (diskBytes < 1024 * 1024) throw usage('--disk: at least 1m');
  const tmpBytes = wrap('tmp', () => parseBytes(str(flags, 'tmp') ?? DEFAULTS.tmp));
  const cpus = Number(str(flags, 'cpus') ?? DEFAULTS.cpus);
  if (!Number.isFinite(cpus) || cpus < 0.01 || cpus > 1024)
    throw usage('--cpus: a number of cores, e.g. 0.5 or 2');
  const pidsText = str(flags, 'pids') ?? DEFAULTS.pids;
  const pids = Number(pidsText);
  if (!/^\d+$/.test(pidsText) || pids < 8 || pids > 1_000_000) throw usage('--pids: a whole number from 8');
  const timeoutMs = wrap('timeout', () => parseDuration(str(flags, 'timeout') ?? DEFAULTS.timeout));
  const network = str(flags, 'network') ?? 'none';
  if (network !== 'none' && network !== 'egress') throw usage('--network: none or egress');
  const allow = list(flags, 'allow');
  if (allow.length > 0 && network !== 'egress') throw usage('--allow needs --network egress');
  wrap('allow', () => parseAllowlist(allow));
  const runtime = str(flags, 'runtime');
  if (runtime !== undefined && runtime !== 'crun' && runtime !== 'runc' && runtime !== 'runsc') {
    throw usage('--runtime: crun, runc or runsc');
  }
  const env: Record<string, string> = {};
  for (const kv of list(flags, 'env')) {
    const eq = kv.indexOf('=');
    if (eq <= 0 || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(kv.slice(0, eq)))
      throw usage(`--env: expected K=V, got "${kv}"`);
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const image = str(flags, 'image') ?? 'host';
  const workspace = str(flags, 'workspace');
  return {
    options: {
      image,
      limits: { memoryBytes, pids, cpus, diskBytes, tmpBytes },
      network,
      allow,
      env,
      labels: {},
      workspaceDir: workspace === undefined ? undefined : resolve(workspace),
    },
    runtime,
    timeoutMs,
    command: rest,
  };
}

export async function sandboxRun(argv: readonly string[], env: EnvRecord): Promise<number> {
  let req: SandboxRunRequest | 'help';
  try {
    req = parseSandboxRun(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`hako sandbox run: ${e.message}\n\n${SANDBOX_RUN_USAGE}`);
      return 2;
    }
    throw e;
  }
  if (req === 'help') {
    process.stdout.write(SANDBOX_RUN_USAGE);
    return 0;
  }
  if (req.options.workspaceDir) {
    const st = await stat(req.options.workspaceDir).catch(() => undefined);
    if (!st?.isDirectory()) {
      process.stderr.write(`hako sandbox run: --workspace ${req.options.workspaceDir} is not a directory\n`);
      return 2;
    }
  }
  const wired = await wireSandboxHost(env, { runtime: req.runtime }).catch((e: unknown) => e as Error);
  if (wired instanceof Error) return printError(wired);
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGHUP', onSignal);
  try {
    await wired.host.init();
    const result = await wired.host.runOnce(req.options, req.command, {
      stdio: 'inherit',
      timeoutMs: req.timeoutMs,
      signal: abort.signal,
    });
    if (result.message) process.stderr.write(`${result.message}\n`);
    return result.exitCode;
  } catch (e) {
    return printError(e instanceof AppError ? e : (e as Error));
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('SIGHUP', onSignal);
    await wired.close();
  }
}
