import type { EnvRecord, Logger } from '@hako/core';
import { createLogger } from '@hako/core';
import { parseFlags, UsageError } from '../flags.js';
import { printError } from '../output.js';
import type { RunningUp } from '../stack-up.js';

export const UP_USAGE = `usage: hako up [--json]

Runs hako on this machine: hako-api and hakod together in this process, with embedded defaults
for everything not configured. Prints the API URL and the admin token once GET /healthz answers,
then serves until SIGINT (Ctrl-C) or SIGTERM. Needs root (hakod makes real sandboxes).

State lives in HAKO_HOME (default ~/.hako) and survives a restart: the embedded database
(pgdata/), the embedded S3 store (s3/), the mTLS certificates between the API and hakod (tls/),
the admin token (admin-token). Sandboxes still running at stop are adopted by the next start.

Flags:
  --json    print one JSON line {"api_url","admin_token","home"} once ready (nothing else on stdout)
  -h, --help

Environment (see docs/configuration.md):
  HAKO_HOME          home of the embedded engines (default ~/.hako)
  HAKO_API_LISTEN    where the API listens, host:port (default 127.0.0.1:8080)
  HAKO_ADMIN_TOKEN   the admin token; unset: generated once and kept in HAKO_HOME/admin-token
  DATABASE_URL       PostgreSQL; unset: embedded PostgreSQL (PGlite) in HAKO_HOME/pgdata
  REDIS_URL          Redis; unset: in-process locks and limits (one API process)
  S3_BUCKET, S3_ENDPOINT, S3_*   your S3 store; unset: the embedded S3-compatible store in HAKO_HOME/s3
  ANTHROPIC_API_KEY  the real model through hakod's egress proxy (only hakod holds the key)
  HAKO_MODEL         "scripted" forces the offline scripted model (the default without a key)
  HAKO_MODEL_SCRIPT  the scripted model's script (JSON, the testkit's format); unset: the demo's
  HAKO_ENV           names what hakod creates (default "up"); HAKO_LOG_LEVEL (default warn)
`;

/** A logger for the stack on stderr: HAKO_LOG_LEVEL, default warn (the CLI prints what matters). */
export function stackLogger(env: EnvRecord): Logger {
  return createLogger({ level: env.HAKO_LOG_LEVEL ?? 'warn', name: 'hako' });
}

/**
 * The environment for the stack. When it is this process's own, the Anthropic key is taken out
 * of process.env as well, so nothing else in this process (the API, the SDK) could ever read it:
 * the copy handed to startUp gives it to hakod alone.
 */
export function takeEnv(env: EnvRecord): Record<string, string> {
  const copy: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) copy[k] = v;
  if (env === process.env) {
    for (const k of Object.keys(process.env)) if (k.startsWith('ANTHROPIC_')) delete process.env[k];
  }
  return copy;
}

/**
 * Keeps two warnings every run would print off a newcomer's terminal: the AWS SDK's notice about
 * future Node versions and Node's deprecation notice for TLS to an IP address (hakod on
 * 127.0.0.1). HAKO_LOG_LEVEL=debug or trace keeps them.
 */
export function quietKnownWarnings(env: EnvRecord): void {
  if (env.HAKO_LOG_LEVEL === 'debug' || env.HAKO_LOG_LEVEL === 'trace') return;
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  process.noDeprecation = true;
}

/** Progress lines on stderr when it is a terminal; nothing otherwise. */
export function progressPrinter(prefix: string): ((message: string) => void) | undefined {
  if (!process.stderr.isTTY) return undefined;
  return (message) => process.stderr.write(`${prefix}${message}…\n`);
}

function describe(up: RunningUp): string {
  const model = up.model === 'anthropic' ? `Anthropic API at ${up.modelUrl}` : 'scripted model (offline)';
  const db = up.database === 'embedded' ? 'embedded PostgreSQL (PGlite)' : 'PostgreSQL';
  const s3 = up.storage === 'embedded' ? 'embedded S3 store' : 'S3';
  const coord = up.coordination === 'in-process' ? 'in-process locks' : 'Redis';
  return `${model}, ${db}, ${s3}, ${coord}`;
}

export async function up(argv: readonly string[], env: EnvRecord): Promise<number> {
  let json = false;
  try {
    const { flags, rest } = parseFlags(
      argv,
      { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      { stopAtPositional: false },
    );
    if (flags.help === true) {
      process.stdout.write(UP_USAGE);
      return 0;
    }
    if (rest.length > 0) throw new UsageError(`unexpected argument "${rest[0] ?? ''}"`);
    json = flags.json === true;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`hako up: ${e.message}\n\n${UP_USAGE}`);
      return 2;
    }
    throw e;
  }

  const stackEnv = takeEnv(env);
  quietKnownWarnings(stackEnv);
  const logger = stackLogger(stackEnv);
  // Listening for the stop signals before anything starts: a signal during start-up stops the
  // stack once it is up (nothing is left half-made), and one right after the ready line is
  // never missed (a pipe's reader can act on that line before the next statement runs here).
  let signalled: NodeJS.Signals | undefined;
  let onSignal: ((s: NodeJS.Signals) => void) | undefined;
  const stopSignal = new Promise<NodeJS.Signals>((resolve) => {
    onSignal = (s) => {
      if (signalled !== undefined) return;
      signalled = s;
      resolve(s);
    };
  });
  const handler = (s: NodeJS.Signals): void => onSignal?.(s);
  process.once('SIGTERM', handler);
  process.once('SIGINT', handler);
  const { startUp } = await import('../stack-up.js');
  const started = Date.now();
  const running = await startUp(stackEnv, { logger, onProgress: progressPrinter('hako up: ') }).catch(
    (e: unknown) => e as Error,
  );
  if (running instanceof Error) {
    process.off('SIGTERM', handler);
    process.off('SIGINT', handler);
    return printError(running);
  }

  if (signalled !== undefined) {
    // stopped while starting: no ready line
  } else if (json) {
    process.stdout.write(
      `${JSON.stringify({ api_url: running.apiUrl, admin_token: running.adminToken, home: running.home })}\n`,
    );
  } else {
    const kept =
      running.adminTokenSource === 'file' ? ` (kept in ${running.home}/admin-token)` : ' (HAKO_ADMIN_TOKEN)';
    process.stdout.write(
      `hako is up in ${((Date.now() - started) / 1000).toFixed(1)} s: ${describe(running)}\n` +
        `  API          ${running.apiUrl}\n` +
        `  admin token  ${running.adminToken}${kept}\n` +
        `  home         ${running.home}\n` +
        `\nTry: curl -s -H "authorization: Bearer ${running.adminToken}" -H 'content-type: application/json' \\\n` +
        `       -d '{"name":"acme"}' ${running.apiUrl}/v1/tenants\n` +
        `Ctrl-C stops hako; conversations, events and workspaces stay in ${running.home}.\n`,
    );
  }

  const signal = await stopSignal;
  process.off('SIGTERM', handler);
  process.off('SIGINT', handler);
  logger.info({ signal }, 'hako up stopping');
  if (!json) process.stderr.write(`hako up: ${signal}: stopping…\n`);
  // A second signal while stopping ends the process at once.
  const force = (): void => {
    process.stderr.write('hako up: stopped without cleaning up (second signal)\n');
    process.exit(130);
  };
  process.once('SIGINT', force);
  process.once('SIGTERM', force);
  try {
    await running.close();
  } catch (e) {
    return printError(e as Error);
  } finally {
    process.off('SIGINT', force);
    process.off('SIGTERM', force);
  }
  if (!json) process.stderr.write('hako up: stopped\n');
  return 0;
}
