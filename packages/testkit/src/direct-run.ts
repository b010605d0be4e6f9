// The "direct" run: the Claude Agent SDK's query() with its own Claude Code binary, on the host,
// unsandboxed, against a (scripted) model at a loopback URL. The benchmark's baseline for hako's
// sandboxed runs, and a test helper that yields real SDK messages.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { query } from '@anthropic-ai/claude-agent-sdk';
import type { Options, SDKMessage, SDKResultMessage } from '@anthropic-ai/claude-agent-sdk';
import { AppError, silentLogger } from '@hako/core';
import type { Logger } from '@hako/core';
import { startScriptedModel } from './scripted-model.js';
import type { RecordedRequest, ScriptedModel } from './scripted-model.js';
import type { Script, ScriptInput } from './scripted-model-script.js';

export interface DirectRunOptions {
  prompt: string;
  /** The session's working directory (must exist). */
  cwd: string;
  /** A script: a scripted model is started for this run and closed after it. */
  script?: ScriptInput | Script | string;
  /** Or the base URL of a model already running (e.g. a shared scripted model). */
  modelUrl?: string;
  /**
   * Claude Code's config dir (CLAUDE_CONFIG_DIR: sessions, settings, caches). Default
   * `<cwd>/.hako/claude`, hako's own layout, so a later run with `resume` in the same cwd finds
   * the session. HOME, Claude Code's temp dir and its runtime dir (sockets) are `home`, `tmp`
   * and `run` inside it, so nothing lands in the real home or /tmp.
   */
  configDir?: string;
  /** Variables added to (or overriding) the clean environment below. */
  env?: Record<string, string>;
  /** Session id to resume. */
  resume?: string;
  /** Model name sent to the API (the scripted model echoes any). */
  model?: string;
  maxTurns?: number;
  /** Aborts the run after this long (default 120 s), so a stuck session cannot hang a test. */
  timeoutMs?: number;
  /** Another Claude Code binary than the SDK's bundled one. */
  pathToClaudeCodeExecutable?: string;
  /** Further SDK options (e.g. `promptSuggestions`); the ones set above win. */
  sdkOptions?: Partial<Options>;
  logger?: Logger;
}

export interface DirectRunResult {
  /** Every SDK message, in order. */
  messages: SDKMessage[];
  /** The last `result` message (undefined if the run ended without one). */
  result: SDKResultMessage | undefined;
  /** The session id reported by the run (pass it as `resume`). */
  sessionId: string | undefined;
  /** Wall time of query() from call to its last message. */
  durationMs: number;
  /** What the scripted model received, when this run started it (`script` given). */
  requests?: RecordedRequest[];
}

/**
 * The environment Claude Code gets: PATH and locale from the host, nothing else of it (no
 * cloud or API secrets); the model URL; a dummy key; config and home in `configDir`; no
 * telemetry, update checks or other non-essential traffic (everything stays on loopback).
 */
export function directRunEnv(
  modelUrl: string,
  configDir: string,
  extra: Record<string, string> = {},
): Record<string, string> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    LANG: 'C.UTF-8',
    HOME: join(configDir, 'home'),
    CLAUDE_CONFIG_DIR: configDir,
    // Claude Code's scratch files (/tmp/claude-UID) and its messaging socket (/tmp/cc-socks)
    // go with the session too; a socket path over 103 bytes makes it fall back by itself.
    CLAUDE_CODE_TMPDIR: join(configDir, 'tmp'),
    XDG_RUNTIME_DIR: join(configDir, 'run'),
    ANTHROPIC_BASE_URL: modelUrl,
    ANTHROPIC_API_KEY: 'sk-ant-scripted-placeholder',
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    DISABLE_TELEMETRY: '1',
    DISABLE_AUTOUPDATER: '1',
    DISABLE_ERROR_REPORTING: '1',
    DISABLE_BUG_COMMAND: '1',
  };
  // Claude Code refuses bypassPermissions as root unless told it runs in a deliberate sandbox.
  // The direct run is the unsandboxed baseline on a test host, so say so when we are root.
  if (typeof process.getuid === 'function' && process.getuid() === 0) env.IS_SANDBOX = '1';
  return { ...env, ...extra };
}

/**
 * Runs one prompt through the SDK's `query()` with permissions bypassed, no filesystem
 * settings (`settingSources: []`) and the clean environment of {@link directRunEnv}. Collects
 * every message. A run that ends with an error result still resolves (look at `result`); a
 * run that cannot start or times out throws INTERNAL with Claude Code's stderr.
 */
export async function runDirect(opts: DirectRunOptions): Promise<DirectRunResult> {
  if ((opts.script === undefined) === (opts.modelUrl === undefined)) {
    throw new AppError('INVALID_ARGUMENT', 'runDirect: pass exactly one of `script` or `modelUrl`');
  }
  const log = opts.logger ?? silentLogger();
  const configDir = opts.configDir ?? join(opts.cwd, '.hako', 'claude');
  for (const dir of ['home', 'tmp', 'run']) await mkdir(join(configDir, dir), { recursive: true });
  let model: ScriptedModel | undefined;
  if (opts.script !== undefined) model = await startScriptedModel({ script: opts.script, logger: log });
  const modelUrl = model?.url ?? opts.modelUrl ?? '';
  const stderr: string[] = [];
  const ac = new AbortController();
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  const options: Options = {
    ...opts.sdkOptions,
    cwd: opts.cwd,
    env: directRunEnv(modelUrl, configDir, opts.env),
    permissionMode: 'bypassPermissions',
    allowDangerouslySkipPermissions: true,
    settingSources: [],
    abortController: ac,
    stderr: (data) => {
      stderr.push(data);
      if (stderr.length > 200) stderr.shift();
    },
    ...(opts.resume ? { resume: opts.resume } : {}),
    ...(opts.model ? { model: opts.model } : {}),
    ...(opts.maxTurns ? { maxTurns: opts.maxTurns } : {}),
    ...(opts.pathToClaudeCodeExecutable
      ? { pathToClaudeCodeExecutable: opts.pathToClaudeCodeExecutable }
      : {}),
  };
  const messages: SDKMessage[] = [];
  const started = performance.now();
  try {
    for await (const m of query({ prompt: opts.prompt, options })) messages.push(m);
  } catch (err) {
    // The SDK throws after yielding an error result; that run ended, it did not fail to run.
    const ended = messages.some((m) => m.type === 'result');
    if (ended && !ac.signal.aborted) {
      log.debug({ err }, 'direct run: the session ended with an error result');
    } else {
      const why = ac.signal.aborted ? `timed out after ${timeoutMs} ms` : (err as Error).message;
      throw new AppError(
        'INTERNAL',
        `runDirect: the Claude Code session failed: ${why}; stderr: ${stderr.join('').slice(-2000) || '(empty)'}`,
        { cause: err },
      );
    }
  } finally {
    clearTimeout(timer);
    await model?.close();
  }
  const durationMs = Math.round(performance.now() - started);
  const result = messages.filter((m): m is SDKResultMessage => m.type === 'result').at(-1);
  const sessionId = result?.session_id ?? messages.find((m) => 'session_id' in m)?.session_id;
  log.debug({ durationMs, messages: messages.length, sessionId }, 'direct run finished');
  return { messages, result, sessionId, durationMs, ...(model ? { requests: model.requests } : {}) };
}
