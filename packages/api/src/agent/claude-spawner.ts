/**
 * The SDK's `spawnClaudeCodeProcess` for hako: Claude Code runs inside the conversation's sandbox
 * (hakod bind-mounts the binary at CLAUDE_CODE_SANDBOX_PATH), not on the API host. The SDK's
 * command (a host path) is ignored; its arguments are kept. The environment is rebuilt from an
 * allowlist: nothing of the API's own environment (database, Redis, S3, Anthropic credentials)
 * can reach the sandbox, and the sandbox's ANTHROPIC_BASE_URL and placeholder key (hakod's
 * credential-injecting upstream) are left alone.
 */
import type { SpawnOptions, SpawnedProcess } from '@anthropic-ai/claude-agent-sdk';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { CLAUDE_CODE_SANDBOX_PATH } from '@hako/agentd';
import type { AgentClient } from '@hako/proto';
import { spawnInSandbox } from './sandbox-process.js';
import type { SandboxProcess } from './sandbox-process.js';

/** HOME inside every hako sandbox (a per-sandbox tmpfs). */
export const SANDBOX_HOME = '/home/sandbox';

/**
 * Variables hako sets for every Claude Code it runs: no auto-update, telemetry, error reporting or
 * other traffic besides the model API (the egress proxy would refuse it anyway, after a wait).
 */
export const CLAUDE_CODE_FIXED_ENV: Readonly<Record<string, string>> = {
  DISABLE_AUTOUPDATER: '1',
  DISABLE_TELEMETRY: '1',
  DISABLE_ERROR_REPORTING: '1',
  CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
};

/** Names that may carry a credential: never passed even when they look like the SDK's own. */
const SECRET_NAME = /TOKEN|KEY|SECRET|PASSW|CREDENTIAL|OAUTH|AUTH|COOKIE|SESSION_ACCESS/i;

/**
 * Whether a variable of the SDK's spawn environment may enter the sandbox: Claude Code's and the
 * SDK's own settings (`CLAUDE_*`, e.g. CLAUDE_CODE_ENTRYPOINT, CLAUDE_AGENT_SDK_VERSION) unless the
 * name looks like a credential; CLAUDE_CONFIG_DIR only from hako (a host path means nothing there);
 * never a provider switch (CLAUDE_CODE_USE_BEDROCK, _VERTEX…): the provider is the sandbox's
 * upstream, which hakod set from the run's model, and the process must not be pointed elsewhere.
 */
export function isAllowedSdkEnvName(name: string): boolean {
  if (!/^CLAUDE_[A-Z0-9_]+$/.test(name)) return false;
  if (name === 'CLAUDE_CONFIG_DIR' || name.startsWith('CLAUDE_CODE_USE_')) return false;
  return !SECRET_NAME.test(name);
}

/**
 * The environment Claude Code gets on top of the sandbox's own: the allowed variables of the SDK's
 * spawn environment (isAllowedSdkEnvName), then CLAUDE_CODE_FIXED_ENV and HOME, then `extra`
 * (hako's own: CLAUDE_CONFIG_DIR…). `extra` must not name ANTHROPIC_* (the sandbox's upstream
 * variables stay), PATH or proxy variables (INVALID_ARGUMENT).
 */
export function claudeCodeEnv(
  sdkEnv: Readonly<Record<string, string | undefined>>,
  extra: Readonly<Record<string, string>> = {},
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(sdkEnv)) {
    if (v !== undefined && isAllowedSdkEnvName(k)) env[k] = v;
  }
  Object.assign(env, CLAUDE_CODE_FIXED_ENV, { HOME: SANDBOX_HOME });
  for (const [k, v] of Object.entries(extra)) {
    if (/^(ANTHROPIC_|AWS_|CLAUDE_CODE_USE_)|^(PATH|HTTPS?_PROXY|NO_PROXY)$/i.test(k)) {
      throw new AppError(
        'INVALID_ARGUMENT',
        `${k} is set by the sandbox (its upstream and proxy); the agent's environment may not replace it`,
      );
    }
    env[k] = v;
  }
  return env;
}

export interface SpawnerOptions {
  readonly client: AgentClient;
  /** The sandbox's owner: the tenant id. */
  readonly ownerId: string;
  readonly sandboxId: string;
  /**
   * Working directory inside the sandbox (/workspace, or /skills/{tenant} without a workspace).
   * Undefined: the SDK's `cwd` (Options.cwd), which must then be a sandbox path.
   */
  readonly cwd?: string | undefined;
  /** hako's own variables (HOME is always /home/sandbox; CLAUDE_CONFIG_DIR…); see claudeCodeEnv. */
  readonly env?: Readonly<Record<string, string>> | undefined;
  /** The binary inside the sandbox; default CLAUDE_CODE_SANDBOX_PATH (/opt/hako/bin/claude). */
  readonly binaryPath?: string | undefined;
  readonly logger: Logger;
  /** Claude Code's stderr, as text (bounded by nothing: keep what you need). */
  readonly onStderr?: ((text: string) => void) | undefined;
  /** Called with every process started (the runner keeps it for the stderr tail and exit reason). */
  readonly onSpawn?: ((process: SandboxProcess) => void) | undefined;
}

/**
 * Builds the function to pass as Options.spawnClaudeCodeProcess. Each call runs the binary in the
 * sandbox with the SDK's arguments; the SDK's forwarded abort signal kills it there.
 */
export function makeSpawner(o: SpawnerOptions): (options: SpawnOptions) => SpawnedProcess {
  return (options) => {
    const cwd = o.cwd ?? options.cwd;
    if (cwd === undefined || !cwd.startsWith('/')) {
      throw new AppError(
        'INVALID_ARGUMENT',
        `Claude Code needs an absolute working directory inside the sandbox, not ${JSON.stringify(cwd)}`,
      );
    }
    const env = claudeCodeEnv(options.env, o.env);
    const argv = [o.binaryPath ?? CLAUDE_CODE_SANDBOX_PATH, ...options.args];
    o.logger.debug(
      { sandboxId: o.sandboxId, cwd, args: options.args, env: Object.keys(env) },
      'starting Claude Code in the sandbox',
    );
    const p = spawnInSandbox({
      client: o.client,
      ownerId: o.ownerId,
      sandboxId: o.sandboxId,
      argv,
      env,
      cwd,
      logger: o.logger,
      signal: options.signal,
      onStderr: o.onStderr,
      // the conversation's sandbox serves this run alone: a killed agent takes its tools along
      reapOnKill: true,
    });
    o.onSpawn?.(p);
    return p;
  };
}
