import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isAppError, parseConfig, sandboxHostConfigSchema } from '@hako/core';
import type { EnvRecord, Logger } from '@hako/core';
import { buildSandboxHost } from '@hako/sandbox';
import { DEMO_PROMPT } from '@hako/testkit';
import { parseFlags, UsageError } from '../flags.js';
import { formatBytes, formatDuration, readSseEvents, renderEvent } from '../event-render.js';
import type { RunningUp } from '../stack-up.js';
import { progressPrinter, quietKnownWarnings, stackLogger, takeEnv } from './up.js';

export const DEMO_USAGE = `usage: hako demo [PROMPT]

Shows hako end to end on this machine, then stops everything it started: starts hako-api and hakod
with embedded defaults (as \`hako up\` does) in a fresh temporary HAKO_HOME, creates a tenant, an API
key and a conversation, runs an agent session in the conversation's sandbox (by default: write a
small Python program, run it, report its output), prints the streamed events, lists the files the
agent left in its workspace, and exits 0. Needs root (real sandboxes).

Offline by default: the scripted model plays a built-in script (HAKO_MODEL_SCRIPT: your own). With
ANTHROPIC_API_KEY set, the real model answers, through hakod's egress proxy (only hakod holds the
key). HAKO_HOME set: that home is used and kept. Any failure exits non-zero with its error code.

Flags:
  -h, --help
`;

/** Defaults that keep the demo's sandboxes, bridge and subnet apart from a running \`hako up\`. */
export const DEMO_ENV_DEFAULTS: Readonly<Record<string, string>> = {
  HAKO_ENV: 'demo',
  HAKO_BRIDGE: 'hakodemo0',
  CNI_SUBNET: '10.209.8.0/24',
  HAKO_API_LISTEN: '127.0.0.1:0',
  AGENT_LISTEN: '127.0.0.1:0',
};

/** The demo tenant's workspace disk: small, the program is a few hundred bytes. */
export const DEMO_DISK_BYTES = 128 * 2 ** 20;

class DemoFailure extends Error {
  override readonly name = 'DemoFailure';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

interface Api {
  call(method: string, path: string, token: string, body?: unknown): Promise<Record<string, unknown>>;
  stream(path: string, token: string, body: unknown): Promise<Response>;
}

/** Problem+json of a failed answer as a DemoFailure naming the request, the code and the detail. */
async function failure(method: string, path: string, res: Response): Promise<DemoFailure> {
  const text = await res.text().catch(() => '');
  let code = `HTTP_${res.status}`;
  let detail = text.slice(0, 500);
  try {
    const p = JSON.parse(text) as Record<string, unknown>;
    if (typeof p.code === 'string') code = p.code;
    if (typeof p.detail === 'string') detail = p.detail;
  } catch {
    // not problem+json: the text as it is
  }
  return new DemoFailure(code, `${method} ${path} answered ${res.status}: ${detail}`);
}

function apiClient(base: string, signal: AbortSignal): Api {
  const headers = (token: string, body: unknown): Record<string, string> => ({
    authorization: `Bearer ${token}`,
    ...(body === undefined ? {} : { 'content-type': 'application/json' }),
  });
  return {
    async call(method, path, token, body) {
      const res = await fetch(`${base}${path}`, {
        method,
        headers: headers(token, body),
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
      if (!res.ok) throw await failure(method, path, res);
      return (await res.json()) as Record<string, unknown>;
    },
    async stream(path, token, body) {
      const res = await fetch(`${base}${path}`, {
        method: 'POST',
        headers: { ...headers(token, body), accept: 'text/event-stream' },
        body: JSON.stringify(body),
        signal,
      });
      if (!res.ok) throw await failure('POST', path, res);
      if (res.body === null) throw new DemoFailure('INTERNAL', `POST ${path} answered without a body`);
      return res;
    },
  };
}

/**
 * After the stack stopped with every sandbox destroyed: the host-wide pieces hakod keeps for its
 * env between starts (nftables tables, bridge, CNI conflist, the env's cgroup parents, its run
 * directory), so the demo leaves the host as it found it. Images and the workspace volume stay.
 */
export async function removeEnvHostState(env: Record<string, string>, logger: Logger): Promise<void> {
  const config = parseConfig(sandboxHostConfigSchema, env);
  const built = await buildSandboxHost(config, logger);
  try {
    await built.network.teardown();
    // both cgroup managers have it; the CgroupManager interface does not declare it
    const cgroups = built.cgroups as typeof built.cgroups & { removeEnvRoot?: () => Promise<boolean> };
    await cgroups.removeEnvRoot?.();
    await rm(join(config.HAKO_RUN_DIR, config.HAKO_ENV), { recursive: true, force: true });
    // the quota engine's spare workspaces, and the env's workspace directories once empty
    await built.quota.removeEnvState();
  } finally {
    await built.close();
  }
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : String(v);
}

/** The exit status and message of a failure: `hako demo: [CODE] message`. */
function report(err: unknown): number {
  if (err instanceof DemoFailure || isAppError(err)) {
    process.stderr.write(`hako demo: [${err.code}] ${err.message}\n`);
  } else {
    process.stderr.write(`hako demo: [INTERNAL] ${(err as Error)?.stack ?? String(err)}\n`);
  }
  return 1;
}

export async function demo(argv: readonly string[], env: EnvRecord): Promise<number> {
  let prompt = DEMO_PROMPT;
  try {
    const { flags, rest } = parseFlags(
      argv,
      { help: { type: 'boolean', short: 'h' } },
      { stopAtPositional: false },
    );
    if (flags.help === true) {
      process.stdout.write(DEMO_USAGE);
      return 0;
    }
    if (rest.length > 1) throw new UsageError('give the prompt as one argument (quote it)');
    if (rest[0] !== undefined) {
      if (rest[0].trim() === '') throw new UsageError('the prompt is empty');
      prompt = rest[0];
    }
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`hako demo: ${e.message}\n\n${DEMO_USAGE}`);
      return 2;
    }
    throw e;
  }

  const out = (s: string): void => void process.stdout.write(`${s}\n`);
  const color = process.stdout.isTTY === true && (env.NO_COLOR ?? '') === '';
  const dim = (s: string): string => (color ? `\x1b[2m${s}\x1b[0m` : s);
  const bold = (s: string): string => (color ? `\x1b[1m${s}\x1b[0m` : s);
  const started = Date.now();
  const base = takeEnv(env);
  quietKnownWarnings(base);
  const tempHome = (base.HAKO_HOME ?? '') === '' ? await mkdtemp(join(tmpdir(), 'hako-demo-')) : undefined;
  const stackEnv: Record<string, string> = { ...DEMO_ENV_DEFAULTS, ...base };
  if (tempHome !== undefined) stackEnv.HAKO_HOME = tempHome;
  const logger = stackLogger(stackEnv);

  // Ctrl-C (or SIGTERM) stops the demo cleanly: the request in flight is aborted (the API
  // cancels the run), then everything is stopped and removed as after a normal run. A second
  // signal while cleaning up ends the process at once.
  const interrupt = new AbortController();
  const onSignal = (s: NodeJS.Signals): void => {
    if (interrupt.signal.aborted) {
      process.stderr.write(`hako demo: ${s} again: exiting without cleaning up\n`);
      process.exit(130);
    }
    process.stderr.write(`hako demo: ${s}: stopping…\n`);
    interrupt.abort(new DemoFailure('RUN_CANCELLED', `interrupted by ${s}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const checkInterrupt = (): void => {
    if (interrupt.signal.aborted) throw interrupt.signal.reason;
  };

  let up: RunningUp | undefined;
  let code = 0;
  try {
    const { startUp } = await import('../stack-up.js');
    out(bold('hako demo') + dim(` · HAKO_HOME ${stackEnv.HAKO_HOME ?? ''}${tempHome ? ' (temporary)' : ''}`));
    up = await startUp(stackEnv, { logger, onProgress: progressPrinter('hako demo: ') });
    const model = up.model === 'anthropic' ? 'the Anthropic API' : 'the scripted model (offline)';
    out(`· hako is up at ${up.apiUrl} in ${formatDuration(Date.now() - started)}, model: ${model}`);

    checkInterrupt();
    const api = apiClient(up.apiUrl, interrupt.signal);
    const tenant = await api.call('POST', '/v1/tenants', up.adminToken, {
      name: 'demo',
      settings: { limits: { disk_bytes: DEMO_DISK_BYTES } },
    });
    const tenantId = str(tenant.id);
    const key = await api.call('POST', `/v1/tenants/${tenantId}/api-keys`, up.adminToken);
    const apiKey = str(key.key);
    const conv = await api.call('POST', '/v1/conversations', apiKey, {});
    const convId = str(conv.id);
    out(`· tenant ${tenantId} (workspace ${formatBytes(DEMO_DISK_BYTES)}), API key ${str(key.prefix)}…`);
    out(`· conversation ${convId}`);
    out('');
    out(bold(`> ${prompt}`));
    out('');

    const res = await api.stream(`/v1/conversations/${convId}/execute`, apiKey, { prompt });
    let done: Record<string, unknown> | undefined;
    let errorEvent: Record<string, unknown> | undefined;
    for await (const ev of readSseEvents(res.body as AsyncIterable<Uint8Array>)) {
      if (ev.event === 'done') done = ev.data;
      if (ev.event === 'error') errorEvent = ev.data;
      const block = renderEvent(ev, { color });
      if (block !== undefined) out(block);
    }
    if (up.model === 'scripted') {
      out(
        dim('  (the scripted model answered: no request left this machine; tokens and cost are estimates)'),
      );
    }
    if (done === undefined) {
      throw new DemoFailure('INTERNAL', 'the event stream ended without a done event; see the log above');
    }
    if (done.status !== 'completed') {
      const c = str(done.error_code ?? errorEvent?.code ?? 'AGENT_FAILED');
      const why = typeof errorEvent?.message === 'string' ? `: ${errorEvent.message}` : '';
      throw new DemoFailure(c, `the agent run ended ${str(done.status)}${why}`);
    }

    const listing = await api.call('GET', `/v1/conversations/${convId}/files`, apiKey);
    const files = Array.isArray(listing.files) ? (listing.files as Record<string, unknown>[]) : [];
    out('');
    out(bold(`workspace files of conversation ${convId}:`));
    if (files.length === 0) out('  (none)');
    const width = Math.max(0, ...files.map((f) => str(f.path).length));
    for (const f of files) {
      const size = typeof f.size === 'number' ? formatBytes(f.size) : '?';
      out(
        `  ${str(f.path).padEnd(width)}  ${size.padStart(9)}  ${dim(`${str(f.mime_type)}, ${str(f.source)}`)}`,
      );
    }
    out('');
  } catch (e) {
    code = report(interrupt.signal.aborted ? interrupt.signal.reason : e);
    if (interrupt.signal.aborted) code = 130;
  } finally {
    if (up !== undefined) {
      const closed = await up.close({ destroyAll: true }).then(
        () => true,
        (e: unknown) => {
          code = report(e instanceof Error ? e : new Error(String(e)));
          return false;
        },
      );
      // Only when every sandbox is gone: the network and cgroups of the env are theirs too.
      if (closed && (stackEnv.HAKO_ENV ?? '') !== '') {
        await removeEnvHostState(stackEnv, logger).catch((e: unknown) => {
          code = report(e instanceof Error ? e : new Error(String(e)));
        });
      }
    }
    if (tempHome !== undefined) await rm(tempHome, { recursive: true, force: true }).catch(() => undefined);
  }
  if (code === 0)
    out(`hako demo finished in ${formatDuration(Date.now() - started)}; everything it started is stopped.`);
  return code;
}
