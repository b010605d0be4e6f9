/**
 * The whole hako stack on one machine, in this process, with embedded defaults: what `hako up`
 * serves and `hako demo` runs. startUp builds, in order: HAKO_HOME (0700), the mTLS material
 * between hako-api and hakod (`${HAKO_HOME}/tls`, made once), the admin token (HAKO_ADMIN_TOKEN,
 * else made once and kept in `${HAKO_HOME}/admin-token`), object storage (S3 when S3_BUCKET is set,
 * else the embedded S3-compatible store in `${HAKO_HOME}/s3`), the model (the real Anthropic API
 * when ANTHROPIC_API_KEY is set and HAKO_MODEL is not `scripted`, else the scripted model on
 * loopback), hakod (real sandboxes) and hako-api (PostgreSQL or the embedded PGlite in
 * `${HAKO_HOME}/pgdata`, Redis or in-process coordination: the API decides from DATABASE_URL and
 * REDIS_URL), and waits until `GET /healthz` answers 200. close() stops them in reverse.
 *
 * The Anthropic key goes to hakod only (its egress proxy adds it to the sandbox's requests); the
 * API's environment never holds it.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { AppError, isAppError, processAlive } from '@hako/core';
import type { EnvRecord, Logger } from '@hako/core';
import { startAgent } from '@hako/agentd';
import type { RunningAgent } from '@hako/agentd';
import { expandHome, startApi } from '@hako/api';
import { DEMO_SCRIPT, startS3, startScriptedModel } from '@hako/testkit';
import type { S3Service, ScriptedModel } from '@hako/testkit';
import { TLS_FILES, certsInit } from './certs.js';

export const DEFAULT_HAKO_HOME = '~/.hako';
export const DEFAULT_API_LISTEN = '127.0.0.1:8080';
export const DEFAULT_UP_ENV = 'up';
export const DEFAULT_ANTHROPIC_URL = 'https://api.anthropic.com';
/** Longest wait for `GET /healthz` to answer 200 after the API listens. */
export const HEALTH_TIMEOUT_MS = 30_000;
/** Validity of the generated certificates (the most `certs init` allows). */
const CERT_DAYS = 3650;

export type ModelChoice = 'scripted' | 'anthropic';
export type StorageChoice = 'embedded' | 's3';

export interface StartUpOptions {
  readonly logger: Logger;
  /** Hears each step as it starts, in words ("starting hakod"); for a progress display. */
  readonly onProgress?: (message: string) => void;
}

export interface RunningUp {
  /** `http://host:port` of hako-api; `/healthz` answered 200 before startUp resolved. */
  readonly apiUrl: string;
  readonly adminToken: string;
  /** Where the admin token came from: the environment, or `${home}/admin-token`. */
  readonly adminTokenSource: 'env' | 'file';
  /** HAKO_HOME, absolute. */
  readonly home: string;
  readonly model: ModelChoice;
  /** The scripted model's URL when model is `scripted`, else the real API's base URL. */
  readonly modelUrl: string;
  readonly storage: StorageChoice;
  /** The embedded database (PGlite) or DATABASE_URL's PostgreSQL. */
  readonly database: 'embedded' | 'postgres';
  readonly coordination: 'in-process' | 'redis';
  /** hakod, for callers that look at its sandboxes (tests). */
  readonly agent: RunningAgent;
  /**
   * Stops hako-api, hakod, the scripted model and the embedded store, in that order; errors are
   * logged and the first one is thrown once everything had its turn. Claimed sandboxes stay for the
   * next start to adopt unless `destroyAll` (the demo, tests). Idempotent.
   */
  close(opts?: { destroyAll?: boolean }): Promise<void>;
}

/** `~` or `~/x` with the user's home (HOME, else the OS's), made absolute. */
export function resolveHome(value: string | undefined, env: EnvRecord): string {
  const v = value === undefined || value === '' ? DEFAULT_HAKO_HOME : value;
  return resolve(expandHome(v, env));
}

/** Which model and with what: throws CONFIG_INVALID for an unknown HAKO_MODEL or a missing key. */
export function chooseModel(env: EnvRecord): ModelChoice {
  const asked = env.HAKO_MODEL ?? '';
  const key = env.ANTHROPIC_API_KEY ?? '';
  if (asked !== '' && asked !== 'scripted' && asked !== 'anthropic') {
    throw new AppError(
      'CONFIG_INVALID',
      `HAKO_MODEL=${asked} is not a model choice: use "scripted" (offline, the scripted model) or "anthropic" (the real API, with ANTHROPIC_API_KEY)`,
    );
  }
  if (asked === 'anthropic' && key === '') {
    throw new AppError(
      'CONFIG_INVALID',
      'HAKO_MODEL=anthropic needs ANTHROPIC_API_KEY: set it, or unset HAKO_MODEL for the offline scripted model',
    );
  }
  return asked !== 'scripted' && key !== '' ? 'anthropic' : 'scripted';
}

/** Object storage from the environment: S3 when S3_BUCKET is set, else the embedded store. */
export function chooseStorage(env: EnvRecord): StorageChoice {
  const bucket = env.S3_BUCKET ?? '';
  if (bucket === '' && (env.S3_ENDPOINT ?? '') !== '') {
    throw new AppError(
      'CONFIG_INVALID',
      'S3_ENDPOINT is set but S3_BUCKET is not: set both for your S3 store, or neither for the embedded one',
    );
  }
  return bucket === '' ? 'embedded' : 's3';
}

/** The environment without anything that names Anthropic credentials or hakod's upstreams. */
export function withoutModelSecrets(env: EnvRecord): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) continue;
    if (k.startsWith('ANTHROPIC_') || k.startsWith('AGENT_UPSTREAM_') || k === 'CLAUDE_CODE_OAUTH_TOKEN')
      continue;
    out[k] = v;
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** HAKO_HOME, created 0700 when missing. */
async function ensureHome(home: string): Promise<void> {
  try {
    await mkdir(home, { recursive: true, mode: 0o700 });
    const st = await stat(home);
    if (!st.isDirectory()) throw new Error('not a directory');
  } catch (err) {
    throw new AppError(
      'CONFIG_INVALID',
      `HAKO_HOME=${home} cannot be used as hako's home directory (${(err as Error).message}); set HAKO_HOME to a writable directory`,
      { cause: err },
    );
  }
}

/**
 * Holds `${home}/up.pid` for this process: a second stack on the same home would share one
 * embedded database, which PGlite does not allow. A file left by a dead process is taken over.
 */
async function lockHome(home: string): Promise<() => Promise<void>> {
  const path = join(home, 'up.pid');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(path, 'wx', 0o600);
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      return () => rm(path, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processAlive(pid)) {
        throw new AppError(
          'CONFIG_INVALID',
          `HAKO_HOME=${home} is in use by another hako up or hako demo (pid ${pid}): stop it, or set HAKO_HOME to another directory`,
        );
      }
      await rm(path, { force: true });
    }
  }
  throw new AppError('CONFIG_INVALID', `could not take ${path}: remove it if no hako up is running`);
}

/** The mTLS material in `${home}/tls`, generated on first use (and again if it is incomplete). */
async function ensureCerts(home: string, logger: Logger): Promise<string> {
  const dir = join(home, 'tls');
  const files = Object.values(TLS_FILES);
  const present = await Promise.all(files.map((f) => exists(join(dir, f))));
  if (present.every(Boolean)) return dir;
  if (present.some(Boolean))
    logger.warn({ dir }, 'the TLS directory is incomplete; generating new certificates');
  await certsInit({ dir, hosts: [], days: CERT_DAYS, force: present.some(Boolean) });
  return dir;
}

/** HAKO_ADMIN_TOKEN, else the one kept in `${home}/admin-token`, else a new one written there (0600). */
async function ensureAdminToken(
  home: string,
  env: EnvRecord,
): Promise<{ token: string; source: 'env' | 'file' }> {
  const fromEnv = env.HAKO_ADMIN_TOKEN ?? '';
  if (fromEnv !== '') return { token: fromEnv, source: 'env' };
  const path = join(home, 'admin-token');
  const kept = (await readFile(path, 'utf8').catch(() => '')).trim();
  if (kept !== '') return { token: kept, source: 'file' };
  const token = `hako_admin_${randomBytes(24).toString('base64url')}`;
  const fh = await open(path, 'w', 0o600);
  try {
    await fh.writeFile(`${token}\n`);
  } finally {
    await fh.close();
  }
  return { token, source: 'file' };
}

/** The scripted model's script: HAKO_MODEL_SCRIPT's file (JSON, the testkit's format) or the demo's. */
async function loadScript(env: EnvRecord): Promise<string | typeof DEMO_SCRIPT> {
  const path = env.HAKO_MODEL_SCRIPT ?? '';
  if (path === '') return DEMO_SCRIPT;
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new AppError(
      'CONFIG_INVALID',
      `HAKO_MODEL_SCRIPT=${path} cannot be read (${(err as Error).message}); point it at a JSON script such as {"turns":[{"text":"hello"}]}`,
      { cause: err },
    );
  }
}

/** Polls `${url}/healthz` until it answers 200; AGENT_UNAVAILABLE-like failure after `timeoutMs`. */
export async function waitHealthy(url: string, timeoutMs: number = HEALTH_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(5_000) });
      const body = await res.text();
      if (res.status === 200) return;
      last = `${res.status} ${body.slice(0, 200)}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new AppError(
    'DATABASE_FAILED',
    `hako-api at ${url} did not become healthy in ${Math.round(timeoutMs / 1000)} s (GET /healthz: ${last}); see the log above`,
  );
}

/** Starts the stack; everything already started is stopped again when a step fails. */
export async function startUp(env: EnvRecord, opts: StartUpOptions): Promise<RunningUp> {
  const { logger } = opts;
  const progress = opts.onProgress ?? (() => undefined);
  const model = chooseModel(env);
  const storage = chooseStorage(env);
  const home = resolveHome(env.HAKO_HOME, env);
  const hakoEnv = env.HAKO_ENV !== undefined && env.HAKO_ENV !== '' ? env.HAKO_ENV : DEFAULT_UP_ENV;

  const closers: { name: string; close: () => Promise<unknown> }[] = [];
  let destroyAll = false;
  let closing: Promise<void> | undefined;
  const closeAll = (): Promise<void> => {
    closing ??= (async () => {
      let first: Error | undefined;
      for (const c of closers.splice(0).reverse()) {
        try {
          await c.close();
        } catch (err) {
          logger.error({ err, closer: c.name }, 'stopping failed');
          first ??= err instanceof Error ? err : new Error(String(err));
        }
      }
      if (first !== undefined) throw first;
    })();
    return closing;
  };

  try {
    progress(`preparing ${home}`);
    await ensureHome(home);
    closers.push({ name: 'home lock', close: await lockHome(home) });
    const tlsDir = await ensureCerts(home, logger);
    const admin = await ensureAdminToken(home, env);

    let s3Env: Record<string, string>;
    if (storage === 'embedded') {
      progress('starting the embedded S3 store');
      const s3: S3Service = await startS3({
        dir: join(home, 's3'),
        logger: logger.child({ component: 's3' }),
      });
      closers.push({ name: 'embedded S3 store', close: () => s3.stop() });
      s3Env = {
        S3_ENDPOINT: s3.endpoint,
        S3_REGION: s3.region,
        S3_BUCKET: s3.bucket,
        S3_ACCESS_KEY_ID: s3.accessKeyId,
        S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
        S3_FORCE_PATH_STYLE: '1',
      };
    } else {
      s3Env = {};
      for (const [k, v] of Object.entries(env)) if (k.startsWith('S3_') && v !== undefined) s3Env[k] = v;
    }

    let upstreamUrl: string;
    let upstreamKey: string;
    if (model === 'anthropic') {
      upstreamUrl = env.AGENT_UPSTREAM_ANTHROPIC_URL ?? DEFAULT_ANTHROPIC_URL;
      upstreamKey = env.ANTHROPIC_API_KEY ?? '';
    } else {
      progress('starting the scripted model');
      const script = await loadScript(env);
      let scripted: ScriptedModel;
      try {
        scripted = await startScriptedModel({
          script,
          host: '127.0.0.1',
          logger: logger.child({ component: 'scripted-model' }),
          record: false,
        });
      } catch (err) {
        if (isAppError(err) && env.HAKO_MODEL_SCRIPT) {
          throw new AppError(err.code, `HAKO_MODEL_SCRIPT=${env.HAKO_MODEL_SCRIPT}: ${err.message}`, {
            cause: err,
          });
        }
        throw err;
      }
      closers.push({ name: 'scripted model', close: () => scripted.close() });
      upstreamUrl = scripted.url;
      // hakod offers the upstream only with a key; the scripted model ignores it.
      upstreamKey = `sk-ant-scripted-${randomBytes(12).toString('hex')}`;
    }

    progress('starting hakod (sandboxes)');
    const base = withoutModelSecrets(env);
    const agent = await startAgent(
      {
        ...base,
        HAKO_ENV: hakoEnv,
        AGENT_TLS_DIR: tlsDir,
        // hakod's own default, so `hako sandboxes list` finds it; the demo asks for port 0.
        AGENT_LISTEN: env.AGENT_LISTEN ?? '127.0.0.1:7443',
        AGENT_METRICS_LISTEN: env.AGENT_METRICS_LISTEN ?? '',
        AGENT_POOL_MIN: env.AGENT_POOL_MIN ?? '0',
        AGENT_UPSTREAM_ANTHROPIC_URL: upstreamUrl,
        AGENT_UPSTREAM_ANTHROPIC_API_KEY: upstreamKey,
      },
      { logger: logger.child({ component: 'hakod' }) },
    );
    closers.push({ name: 'hakod', close: () => agent.close({ destroyAll }) });

    progress('starting hako-api');
    const spoolDir = join(home, 'spool');
    await mkdir(spoolDir, { recursive: true, mode: 0o700 });
    const api = await startApi(
      {
        ...base,
        ...s3Env,
        HAKO_ENV: hakoEnv,
        HAKO_HOME: home,
        HAKO_API_LISTEN: env.HAKO_API_LISTEN ?? DEFAULT_API_LISTEN,
        HAKO_ADMIN_TOKEN: admin.token,
        HAKO_NODES: `local=${agent.address}`,
        HAKO_NODE_TLS_DIR: tlsDir,
        HAKO_SPOOL_DIR: env.HAKO_SPOOL_DIR ?? spoolDir,
      },
      { logger: logger.child({ component: 'hako-api' }) },
    );
    closers.push({ name: 'hako-api', close: () => api.close() });
    progress('waiting for GET /healthz');
    await waitHealthy(api.url);

    return {
      apiUrl: api.url,
      adminToken: admin.token,
      adminTokenSource: admin.source,
      home,
      model,
      modelUrl: upstreamUrl,
      storage,
      database: (env.DATABASE_URL ?? '') === '' ? 'embedded' : 'postgres',
      coordination: (env.REDIS_URL ?? '') === '' ? 'in-process' : 'redis',
      agent,
      close: (o = {}) => {
        destroyAll = o.destroyAll ?? false;
        return closeAll();
      },
    };
  } catch (err) {
    // Sandboxes a previous start left stay for the next one to adopt.
    await closeAll().catch(() => undefined);
    throw err;
  }
}
