/**
 * The whole hako stack on this machine for end-to-end tests and the api bench: private
 * PostgreSQL, Redis and S3 servers, the scripted model, hakod in-process (mTLS, real sandboxes)
 * and N hako-api processes (real child processes, `src/main.ts` through tsx). close() undoes
 * everything in reverse, even after a failed start.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createLogger } from '@hako/core';
import { startPostgres, startRedis, startS3, startScriptedModel } from '@hako/testkit';
import type { BedrockCredentials, ScriptInput } from '@hako/testkit';
import { certsInit } from '../../../cli/src/certs.js';
import { startAgent } from '../../../agentd/src/main.js';
import type { RunningAgent } from '../../../agentd/src/main.js';
import { createTestHost } from '../../../sandbox/test/helpers/test-host.js';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));

export interface ApiProcess {
  readonly url: string;
  readonly proc: ChildProcess;
  /** Everything the process wrote to stderr (its log), for failure messages. */
  readonly log: string[];
}

export interface Stack {
  readonly apis: ApiProcess[];
  readonly adminToken: string;
  /** The real Anthropic key hakod holds; it must never show inside a sandbox. */
  readonly modelKey: string;
  /** Values planted in the API processes' environment that must never reach a sandbox. */
  readonly apiSecrets: Record<string, string>;
  readonly model: Awaited<ReturnType<typeof startScriptedModel>>;
  /**
   * With `bedrock: true`: the AWS credentials hakod's bedrock upstream signs with; the scripted
   * model (also the fake Bedrock runtime) accepts only requests signed with them. Never in a sandbox.
   */
  readonly bedrock?: BedrockCredentials;
  readonly s3: Awaited<ReturnType<typeof startS3>>;
  readonly databaseUrl: string;
  readonly redisUrl: string;
  readonly agent: RunningAgent;
  readonly pkiDir: string;
  close(): Promise<void>;
}

export interface StackOptions {
  readonly apiProcesses?: number;
  readonly script: ScriptInput;
  /** Extra env for the API processes. */
  readonly apiEnv?: Record<string, string>;
  /**
   * Also configure hakod's bedrock upstream, at the scripted model's Bedrock mode (loopback), with
   * fresh random AWS credentials (Stack.bedrock).
   */
  readonly bedrock?: boolean;
}

export async function startStack(opts: StackOptions): Promise<Stack> {
  const closers: (() => Promise<unknown>)[] = [];
  const close = async (): Promise<void> => {
    const errors: unknown[] = [];
    for (const c of closers.splice(0).reverse()) await c().catch((e: unknown) => errors.push(e));
    if (errors.length > 0) throw new AggregateError(errors, 'stack teardown failed');
  };
  try {
    const th = createTestHost();
    closers.push(() => th.teardown());
    const pg = await startPostgres();
    closers.push(() => pg.stop());
    const redis = await startRedis();
    closers.push(() => redis.stop());
    const s3 = await startS3();
    closers.push(() => s3.stop());
    const bedrock: BedrockCredentials | undefined = opts.bedrock
      ? {
          region: 'eu-central-1',
          accessKeyId: `AKIA${randomBytes(8).toString('hex').toUpperCase()}`,
          secretAccessKey: `aws-bedrock-secret-${randomBytes(16).toString('hex')}`,
          sessionToken: `aws-bedrock-token-${randomBytes(16).toString('hex')}`,
        }
      : undefined;
    const model = await startScriptedModel({ script: opts.script, ...(bedrock ? { bedrock } : {}) });
    closers.push(() => model.close());
    const pkiDir = await mkdtemp(join(tmpdir(), 'hako-stack-pki-'));
    closers.push(() => rm(pkiDir, { recursive: true, force: true }));
    await certsInit({ dir: pkiDir, hosts: [], days: 1, force: false });
    const modelKey = `sk-ant-real-${randomBytes(12).toString('hex')}`;
    const agent = await startAgent(
      {
        ...th.env,
        AGENT_LISTEN: '127.0.0.1:0',
        AGENT_METRICS_LISTEN: '',
        AGENT_TLS_DIR: pkiDir,
        AGENT_POOL_MIN: '0',
        AGENT_UPSTREAM_ANTHROPIC_URL: model.url,
        AGENT_UPSTREAM_ANTHROPIC_API_KEY: modelKey,
        ...(bedrock
          ? {
              AGENT_UPSTREAM_BEDROCK_REGION: bedrock.region,
              AGENT_UPSTREAM_BEDROCK_ACCESS_KEY_ID: bedrock.accessKeyId,
              AGENT_UPSTREAM_BEDROCK_SECRET_ACCESS_KEY: bedrock.secretAccessKey,
              AGENT_UPSTREAM_BEDROCK_SESSION_TOKEN: bedrock.sessionToken!,
              AGENT_UPSTREAM_BEDROCK_ENDPOINT: model.url,
            }
          : {}),
      },
      { logger: createLogger({ level: 'error', name: 'hakod' }) },
    );
    closers.push(() => agent.close({ destroyAll: true }));
    const spoolDir = await mkdtemp(join(tmpdir(), 'hako-stack-spool-'));
    closers.push(() => rm(spoolDir, { recursive: true, force: true }));
    const adminToken = `admin-${randomBytes(16).toString('hex')}`;
    const apiSecrets = {
      AWS_SECRET_ACCESS_KEY: `aws-secret-${randomBytes(8).toString('hex')}`,
      HAKO_TEST_PLANTED_SECRET: `planted-${randomBytes(8).toString('hex')}`,
    };
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? '/root',
      HAKO_ENV: th.env.HAKO_ENV ?? 'test',
      HAKO_API_LISTEN: '127.0.0.1:0',
      HAKO_ADMIN_TOKEN: adminToken,
      DATABASE_URL: pg.url,
      REDIS_URL: redis.url,
      S3_ENDPOINT: s3.endpoint,
      S3_REGION: s3.region,
      S3_BUCKET: s3.bucket,
      S3_ACCESS_KEY_ID: s3.accessKeyId,
      S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
      HAKO_NODES: `local=${agent.address}`,
      HAKO_NODE_TLS_DIR: pkiDir,
      HAKO_SPOOL_DIR: spoolDir,
      HAKO_LOG_LEVEL: 'warn',
      ...apiSecrets,
      ...opts.apiEnv,
    };
    const apis: ApiProcess[] = [];
    for (let i = 0; i < (opts.apiProcesses ?? 1); i++) {
      const api = await startApiProcess(env);
      closers.push(() => stopProcess(api.proc));
      apis.push(api);
    }
    return {
      apis,
      adminToken,
      modelKey,
      apiSecrets,
      model,
      ...(bedrock ? { bedrock } : {}),
      s3,
      databaseUrl: pg.url,
      redisUrl: redis.url,
      agent,
      pkiDir,
      close,
    };
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
}

/** Starts `src/main.ts`; resolves with its URL from the `listening` line it prints on stdout. */
async function startApiProcess(env: Record<string, string>): Promise<ApiProcess> {
  const proc = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', MAIN], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log: string[] = [];
  proc.stderr?.setEncoding('utf8').on('data', (d: string) => log.push(d));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`hako-api did not start in 60 s:\n${log.join('')}`)),
      60_000,
    );
    const rl = createInterface({ input: proc.stdout });
    rl.on('line', (line) => {
      const m = /"url":"(http:\/\/[^"]+)"/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`hako-api exited with ${code} before listening:\n${log.join('')}`));
    });
  });
  return { url, proc, log };
}

async function stopProcess(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/** Parses a text/event-stream body into events (id, event, data as JSON). */
export function parseSse(text: string): { id: number; event: string; data: Record<string, unknown> }[] {
  const out: { id: number; event: string; data: Record<string, unknown> }[] = [];
  for (const block of text.split('\n\n')) {
    let id = NaN;
    let event = 'message';
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('id: ')) id = Number(line.slice(4));
      else if (line.startsWith('event: ')) event = line.slice(7);
      else if (line.startsWith('data: ')) data.push(line.slice(6));
    }
    if (data.length > 0)
      out.push({ id, event, data: JSON.parse(data.join('\n')) as Record<string, unknown> });
  }
  return out;
}
