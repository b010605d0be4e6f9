/**
 * Invokes CNI plugin binaries as the CNI spec (1.0.0) describes: parameters in CNI_* environment
 * variables, the network configuration on stdin, the result (or a JSON error) on stdout.
 * Also holds the small spawn helper the other host-tool modules (netns, nftables) share.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { AppError } from '@hako/core';
import type { CniConflist, CniPluginConf } from './cni-config.js';

export interface ToolResult {
  /** Exit code, or null when the process was killed by a signal. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ToolOptions {
  /** Written to the child's stdin, which is then closed. Without it stdin is /dev/null. */
  readonly input?: string;
  /** Complete environment of the child (defaults to this process's). */
  readonly env?: NodeJS.ProcessEnv;
  /** Kills the child (SIGKILL) after this long; default 30 s. */
  readonly timeoutMs?: number;
}

/**
 * Runs `file args…` (no shell) and collects its output. Resolves whatever the exit code; rejects
 * only when the program cannot be started (e.g. ENOENT), with HOST_PREREQUISITE_MISSING.
 */
export function runTool(file: string, args: readonly string[], opts: ToolOptions = {}): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      env: opts.env ?? process.env,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 30_000);
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new AppError(
          e.code === 'ENOENT' ? 'HOST_PREREQUISITE_MISSING' : 'INTERNAL',
          e.code === 'ENOENT'
            ? `${file} is not installed or not on PATH`
            : `cannot run ${file}: ${e.message}`,
          { cause: e },
        ),
      );
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const stderr = Buffer.concat(err).toString('utf8');
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: timedOut ? `${stderr}\n(killed after ${opts.timeoutMs ?? 30_000} ms)` : stderr,
      });
    });
    if (opts.input !== undefined && child.stdin) {
      // a plugin that exits without reading stdin would otherwise crash us with EPIPE
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
  });
}

/** The last few lines of a tool's stderr, for error messages. */
export function stderrTail(r: ToolResult, lines = 3): string {
  const text = r.stderr.trim();
  return text ? text.split('\n').slice(-lines).join(' | ') : `exit ${r.code ?? r.signal ?? '?'}`;
}

// ---------------------------------------------------------------- CNI

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION';

export interface CniInterface {
  readonly name: string;
  readonly mac?: string;
  /** Set on interfaces inside the container's netns (the netns path). */
  readonly sandbox?: string;
}

export interface CniIpConfig {
  /** CIDR notation: address/prefix. */
  readonly address: string;
  readonly gateway?: string;
  /** Index into `interfaces`. */
  readonly interface?: number;
}

/** A CNI 1.0.0 success result (fields hako uses; everything else is kept and passed back as prevResult). */
export interface CniResult {
  readonly cniVersion: string;
  readonly interfaces?: readonly CniInterface[];
  readonly ips?: readonly CniIpConfig[];
  readonly routes?: readonly unknown[];
  readonly dns?: unknown;
  readonly [key: string]: unknown;
}

/** The per-attachment parameters of one invocation. */
export interface CniRuntimeArgs {
  /** CNI_CONTAINERID: hako uses the sandbox's resource name. */
  readonly containerId: string;
  /** CNI_NETNS: path of the network namespace. */
  readonly netns: string;
  /** CNI_IFNAME: the interface inside the netns. */
  readonly ifName: string;
}

interface CniErrorBody {
  readonly code?: unknown;
  readonly msg?: unknown;
  readonly details?: unknown;
}

/** Well-known error codes from the CNI spec, for messages. */
const CNI_ERROR_NAMES: Readonly<Record<number, string>> = {
  1: 'incompatible CNI version',
  2: 'unsupported field in network configuration',
  3: 'container unknown or does not exist',
  4: 'invalid necessary environment variables',
  5: 'I/O failure',
  6: 'failed to decode content',
  7: 'invalid network config',
  11: 'try again later',
};

/** Finds plugin `type` in the first of `dirs` that holds an executable of that name. */
export async function findPlugin(type: string, dirs: readonly string[]): Promise<string> {
  if (!/^[a-zA-Z0-9_.-]+$/.test(type) || type.startsWith('.')) {
    throw new AppError('CONFIG_INVALID', `"${type}" is not a valid CNI plugin type`);
  }
  for (const dir of dirs) {
    const path = join(dir, type);
    try {
      await access(path, constants.X_OK);
      return path;
    } catch {
      // not in this directory: try the next
    }
  }
  throw new AppError(
    'HOST_PREREQUISITE_MISSING',
    `CNI plugin "${type}" was not found in ${dirs.join(', ') || '(no directories)'}: install containernetworking-plugins or set CNI_PLUGIN_DIRS`,
  );
}

/**
 * Runs one plugin binary. Resolves the parsed stdout for ADD/CHECK/VERSION (undefined when the
 * plugin printed nothing, which DEL and CHECK may do). A non-zero exit throws
 * NETWORK_SETUP_FAILED carrying the plugin's JSON error (code, msg, details).
 */
export async function invokePlugin(opts: {
  readonly pluginPath: string;
  readonly command: CniCommand;
  readonly args: CniRuntimeArgs | undefined;
  readonly config: Readonly<Record<string, unknown>>;
  readonly pluginDirs: readonly string[];
  readonly timeoutMs?: number;
}): Promise<unknown> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CNI_COMMAND: opts.command,
    CNI_PATH: opts.pluginDirs.join(':'),
  };
  if (opts.args) {
    env.CNI_CONTAINERID = opts.args.containerId;
    env.CNI_NETNS = opts.args.netns;
    env.CNI_IFNAME = opts.args.ifName;
  }
  const r = await runTool(opts.pluginPath, [], {
    input: JSON.stringify(opts.config),
    env,
    timeoutMs: opts.timeoutMs ?? 60_000,
  });
  const what = `CNI ${String(opts.config.type)} ${opts.command}${opts.args ? ` for ${opts.args.containerId}` : ''}`;
  const stdout = r.stdout.trim();
  if (r.code !== 0) {
    let body: CniErrorBody | undefined;
    try {
      body = JSON.parse(stdout) as CniErrorBody;
    } catch {
      body = undefined;
    }
    const cniCode = typeof body?.code === 'number' ? body.code : undefined;
    const msg = typeof body?.msg === 'string' ? body.msg : undefined;
    const details = typeof body?.details === 'string' && body.details ? body.details : undefined;
    const parts: string[] = [];
    if (cniCode !== undefined) {
      const known = CNI_ERROR_NAMES[cniCode];
      parts.push(`[code ${cniCode}${known ? `: ${known}` : ''}]`);
    }
    if (msg) parts.push(msg);
    if (details) parts.push(`(${details})`);
    if (!msg) parts.push(stdout || stderrTail(r));
    else if (r.stderr.trim()) parts.push(`; stderr: ${stderrTail(r)}`);
    throw new AppError('NETWORK_SETUP_FAILED', `${what} failed: ${parts.join(' ')}`, {
      details: { cniCode, cniMsg: msg, cniDetails: details, command: opts.command },
    });
  }
  if (!stdout) return undefined;
  try {
    return JSON.parse(stdout) as unknown;
  } catch (err) {
    throw new AppError(
      'NETWORK_SETUP_FAILED',
      `${what} printed a result that is not JSON: ${stdout.slice(0, 200)}`,
      {
        cause: err,
      },
    );
  }
}

/**
 * Runs a conflist's plugins as a CNI runtime does: ADD and CHECK in order, DEL in reverse, each
 * plugin's config getting the list's `name` and `cniVersion`, and `prevResult` (the previous
 * plugin's result during ADD; the cached ADD result for CHECK and DEL).
 */
export class CniConflistInvoker {
  private readonly conflist: CniConflist;
  private readonly pluginDirs: readonly string[];
  private readonly paths = new Map<string, string>();

  constructor(conflist: CniConflist, pluginDirs: readonly string[]) {
    this.conflist = conflist;
    this.pluginDirs = pluginDirs;
  }

  /** Locates every plugin of the list (and the IPAM plugins they delegate to); fails fast when one is missing. */
  async resolvePlugins(): Promise<void> {
    for (const p of this.conflist.plugins) {
      await this.pluginPath(p.type);
      const ipam = p.ipam as { type?: unknown } | undefined;
      if (typeof ipam?.type === 'string') await this.pluginPath(ipam.type);
    }
  }

  /** ADD: returns the last plugin's result. On failure nothing is undone here: the caller runs DEL. */
  async add(args: CniRuntimeArgs): Promise<CniResult> {
    let prev: CniResult | undefined;
    for (const p of this.conflist.plugins) {
      const out = await this.invoke(p, 'ADD', args, prev);
      prev = asResult(out, `CNI ${p.type} ADD for ${args.containerId}`);
    }
    if (!prev) throw new AppError('CONFIG_INVALID', `conflist ${this.conflist.name} has no plugins`);
    return prev;
  }

  /** CHECK with the cached ADD result. */
  async check(args: CniRuntimeArgs, prevResult: CniResult): Promise<void> {
    for (const p of this.conflist.plugins) await this.invoke(p, 'CHECK', args, prevResult);
  }

  /** DEL in reverse order; `prevResult` is the cached ADD result when there is one. */
  async del(args: CniRuntimeArgs, prevResult: CniResult | undefined): Promise<void> {
    const errors: AppError[] = [];
    for (const p of [...this.conflist.plugins].reverse()) {
      try {
        await this.invoke(p, 'DEL', args, prevResult);
      } catch (err) {
        // every plugin gets its DEL even when an earlier one failed; report them all
        errors.push(
          err instanceof AppError ? err : new AppError('NETWORK_SETUP_FAILED', String(err), { cause: err }),
        );
      }
    }
    if (errors.length === 1 && errors[0]) throw errors[0];
    if (errors.length > 1) {
      throw new AppError('NETWORK_SETUP_FAILED', errors.map((e) => e.message).join('; '), {
        cause: errors[0],
      });
    }
  }

  /** VERSION of one plugin type: the spec versions it supports. */
  async versions(type: string): Promise<string[]> {
    const out = (await invokePlugin({
      pluginPath: await this.pluginPath(type),
      command: 'VERSION',
      args: undefined,
      config: { cniVersion: this.conflist.cniVersion, type },
      pluginDirs: this.pluginDirs,
    })) as { supportedVersions?: unknown } | undefined;
    return Array.isArray(out?.supportedVersions) ? out.supportedVersions.map(String) : [];
  }

  private async pluginPath(type: string): Promise<string> {
    let path = this.paths.get(type);
    if (!path) {
      path = await findPlugin(type, this.pluginDirs);
      this.paths.set(type, path);
    }
    return path;
  }

  private async invoke(
    plugin: CniPluginConf,
    command: CniCommand,
    args: CniRuntimeArgs,
    prevResult: CniResult | undefined,
  ): Promise<unknown> {
    const config: Record<string, unknown> = {
      ...plugin,
      cniVersion: this.conflist.cniVersion,
      name: this.conflist.name,
    };
    if (prevResult) config.prevResult = prevResult;
    return invokePlugin({
      pluginPath: await this.pluginPath(plugin.type),
      command,
      args,
      config,
      pluginDirs: this.pluginDirs,
    });
  }
}

function asResult(out: unknown, what: string): CniResult {
  if (typeof out !== 'object' || out === null || Array.isArray(out)) {
    throw new AppError('NETWORK_SETUP_FAILED', `${what} returned no result object`);
  }
  const r = out as Record<string, unknown>;
  if (typeof r.cniVersion !== 'string') {
    throw new AppError('NETWORK_SETUP_FAILED', `${what} returned a result without cniVersion`);
  }
  return r as CniResult;
}
