/**
 * hako-api's one wiring place: config → PostgreSQL (migrated) → Redis (locks, rate limits, run
 * slots) → S3 → hakod node pool → workspace sync → the execute flow's ports → the Fastify app,
 * listening. close() runs the named closers in reverse order.
 */
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { Logger } from '@hako/core';
import type { EnvRecord } from '@hako/core';
import { loadApiConfig } from './config.js';
import type { ApiConfig } from './config.js';
import { createDatabase } from './db/pool.js';
import type { Database, Queryable } from './db/pool.js';
import { migrate } from './db/migrate.js';
import { RedisLockManager } from './coord/redis-lock.js';
import { RedisRateLimiter } from './coord/redis-rate-limiter.js';
import { RedisConcurrencyLimiter } from './coord/redis-concurrency.js';
import { MemoryLockManager } from './coord/memory-lock.js';
import { MemoryRateLimiter } from './coord/memory-rate-limiter.js';
import { MemoryConcurrencyLimiter } from './coord/memory-concurrency.js';
import { createPgliteDatabase } from './db/pglite.js';
import { S3ObjectStore } from './storage/s3-object-store.js';
import { NodePool } from './nodes/node-pool.js';
import { ConversationSandboxes } from './nodes/conversation-sandbox.js';
import { WorkspaceSync } from './workspace/workspace-sync.js';
import type { FileChange as SyncChange } from './workspace/diff.js';
import { buildApp, createAppRepos } from './app.js';
import type { AppRepos } from './app.js';
import { tenantIdOf } from './http/auth.js';
import { registerExecuteRoutes } from './routes/execute.js';
import { registerHealthRoutes } from './routes/health.js';
import { RunRepository } from './repositories/runs.js';
import { EventRepository } from './repositories/events.js';
import { ConversationRepository } from './repositories/conversations.js';
import { FileRepository } from './repositories/files.js';
import { WorkspaceObjectRepository } from './repositories/workspace-objects.js';
import { buildAgentOptions } from './agent/options-builder.js';
import { runAgent } from './agent/runner.js';
import type { AgentClient } from '@hako/proto';
import type { AgentEvent, ConcurrencyLimiter, LockManager, RateLimiter, Tenant } from './types.js';
import type {
  AgentPort,
  ExecuteDeps,
  RunStore,
  SandboxPort,
  SandboxTarget,
  SyncResult,
  WorkspacePort,
} from './execute/execute-run.js';
import { reapOrphanRuns } from './execute/run-reaper.js';
import { mimeTypeOf } from './execute/mime.js';
import { SkillRepository } from './repositories/skills.js';
import { skillsPort } from './skills/skills-port.js';

export interface RunningApi {
  readonly url: string;
  readonly config: ApiConfig;
  close(): Promise<void>;
}

type Closer = readonly [name: string, close: () => Promise<unknown>];

/** Starts hako-api from an env record; the answer's url is where it listens. */
export async function startApi(env: EnvRecord, opts: { logger: Logger }): Promise<RunningApi> {
  const config = loadApiConfig(env);
  const logger = opts.logger;
  const closers: Closer[] = [];
  const close = async (): Promise<void> => {
    for (const [name, fn] of closers.splice(0).reverse()) {
      await fn().catch((err: unknown) => logger.error({ err, closer: name }, 'shutdown step failed'));
    }
  };
  try {
    const db = await openDatabase(config, logger);
    closers.push(['database', () => db.close()]);
    await migrate(db, { logger });
    const coordination = await openCoordination(config, logger);
    closers.push(['coordination', () => coordination.close()]);
    const { locks, rateLimiter, slots } = coordination;

    const store = new S3ObjectStore({
      bucket: config.S3_BUCKET,
      endpoint: config.S3_ENDPOINT,
      region: config.S3_REGION,
      forcePathStyle: config.S3_FORCE_PATH_STYLE,
      credentials:
        config.S3_ACCESS_KEY_ID !== undefined && config.S3_SECRET_ACCESS_KEY !== undefined
          ? { accessKeyId: config.S3_ACCESS_KEY_ID, secretAccessKey: config.S3_SECRET_ACCESS_KEY }
          : undefined,
    });

    const pool = new NodePool({
      nodes: config.nodes.map((n) => ({
        ...n,
        tlsDir: config.HAKO_NODE_TLS_DIR,
        insecure: config.HAKO_NODE_TLS_DIR === undefined,
        token: config.HAKO_NODE_AUTH_TOKEN,
      })),
      logger,
      pollIntervalMs: config.HAKO_NODE_POLL_INTERVAL,
    });
    await pool.start();
    closers.push(['node pool', () => Promise.resolve(pool.close())]);
    const sandboxes = new ConversationSandboxes({ pool, logger });

    const workspace = new WorkspaceSync({ store, spoolDir: config.HAKO_SPOOL_DIR, logger });
    const repos = createAppRepos(db);
    // The manifest and the file registry were written when the run ended (a spooled sync is
    // recorded then too: restore pushes a conversation's spool before it reads S3).
    const resumeLoop = workspace.startResumeLoop(30_000, (report) => {
      for (const r of report.completed) {
        logger.info({ runId: r.runId, changes: r.changes.length }, 'a spooled workspace sync reached S3');
      }
    });
    closers.push(['workspace resume loop', () => resumeLoop.stop()]);

    const clientOf = (target: SandboxTarget) => {
      const node = pool.node(target.node);
      if (!node) throw new Error(`node ${target.node} is not configured`);
      return node.client;
    };
    const executeDeps: ExecuteDeps = {
      locks,
      slots,
      logger,
      lockTtlMs: config.HAKO_LOCK_TTL,
      pingIntervalMs: config.HAKO_PING_INTERVAL,
      runTimeoutMs: config.HAKO_AGENT_TIMEOUT,
      runs: runStore(db),
      sandboxes: sandboxPort(sandboxes, new ConversationRepository(db), config),
      workspace: workspacePort(workspace, new WorkspaceObjectRepository(db), clientOf),
      agent: agentPort(logger, clientOf, config.HAKO_DEFAULT_MODEL),
      skills: skillsPort({ skills: new SkillRepository(db), store, logger, clientOf }),
    };

    const reaper = setInterval(() => {
      void reapOrphanRuns({
        locks,
        logger,
        graceMs: 60_000,
        store: {
          listRunning: async (olderThan) =>
            (await new RunRepository(db).findStaleRunning(Date.now() - olderThan.getTime())).map((r) => ({
              runId: r.id,
              tenantId: r.tenantId,
              conversationId: r.conversationId,
              startedAt: r.startedAt,
            })),
          failRun: async (run, code, events) =>
            (await new RunRepository(db).finish(
              run.tenantId,
              run.runId,
              { status: 'failed', errorCode: code },
              events,
            )) !== undefined,
        },
      }).catch((err: unknown) => logger.error({ err }, 'the run reaper failed'));
    }, 30_000);
    reaper.unref();
    closers.push(['run reaper', () => Promise.resolve(clearInterval(reaper))]);

    const app = await buildApp({
      logger,
      adminToken: config.HAKO_ADMIN_TOKEN,
      repos,
      rateLimiter,
      locks,
      store,
      routes: [
        (a) =>
          registerHealthRoutes(a, {
            checkDatabase: async () => {
              await db.query('SELECT 1');
            },
          }),
        (a) =>
          registerExecuteRoutes(a, {
            execute: executeDeps,
            tenantOf: tenantIdOf,
            loadContext: (tenantId, id) => loadContext(repos, tenantId, id),
            listEvents: (tenantId, id, after, limit) =>
              new EventRepository(db).listAfter(tenantId, id, after, limit),
            followIntervalMs: 250,
            maxPromptChars: 100_000,
          }),
      ],
    });
    closers.push(['http', () => app.close()]);
    const sep = config.HAKO_API_LISTEN.lastIndexOf(':');
    await app.listen({
      host: config.HAKO_API_LISTEN.slice(0, sep).replace(/^\[|\]$/g, ''),
      port: Number(config.HAKO_API_LISTEN.slice(sep + 1)),
    });
    const addr = app.server.address();
    const url =
      addr !== null && typeof addr === 'object'
        ? `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`
        : `http://${config.HAKO_API_LISTEN}`;
    logger.info({ url, nodes: config.nodes.map((n) => n.name) }, 'hako-api listening');
    return { url, config, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** PostgreSQL at DATABASE_URL, or the embedded one (PGlite) under HAKO_HOME. */
async function openDatabase(config: ApiConfig, logger: Logger): Promise<Database> {
  if (config.DATABASE_URL !== undefined) {
    return createDatabase({ url: config.DATABASE_URL, logger, max: config.DATABASE_POOL_MAX });
  }
  const dataDir = join(config.HAKO_HOME, 'pgdata');
  logger.info({ dataDir }, 'DATABASE_URL is unset: using the embedded PostgreSQL (PGlite; one API process)');
  return createPgliteDatabase({ dataDir, logger });
}

interface Coordination {
  readonly locks: LockManager;
  readonly rateLimiter: RateLimiter;
  readonly slots: ConcurrencyLimiter;
  close(): Promise<void>;
}

/** Redis at REDIS_URL (any number of API processes), or in-process (one; loadApiConfig checks). */
async function openCoordination(config: ApiConfig, logger: Logger): Promise<Coordination> {
  if (config.REDIS_URL === undefined) {
    logger.info('REDIS_URL is unset: locks and limits are in-process (one API process)');
    const locks = new MemoryLockManager();
    const rateLimiter = new MemoryRateLimiter();
    const slots = new MemoryConcurrencyLimiter();
    return {
      locks,
      rateLimiter,
      slots,
      close: () => {
        locks.close();
        rateLimiter.close();
        slots.close();
        return Promise.resolve();
      },
    };
  }
  const redis = new Redis(config.REDIS_URL, { maxRetriesPerRequest: 2, lazyConnect: true });
  await redis.connect();
  const prefix = `hako:${config.HAKO_ENV}`;
  return {
    locks: new RedisLockManager({ redis, prefix }),
    rateLimiter: new RedisRateLimiter({ redis, prefix }),
    slots: new RedisConcurrencyLimiter({ redis, prefix }),
    close: async () => {
      await redis.quit();
    },
  };
}

async function loadContext(repos: AppRepos, tenantId: string, conversationId: string) {
  const tenant = await repos.tenants.get(tenantId);
  const conversation = await repos.conversations.get(tenantId, conversationId);
  if (!tenant) throw new Error(`tenant ${tenantId} of an authenticated key is missing`);
  return { tenant, conversation };
}

/**
 * Registers what a sync moved to S3: the manifest (every path, `.hako/` included) and the
 * conversation's files (the agent's: ai_created / ai_modified; `.hako/` never).
 */
async function applySync(
  tx: Queryable,
  tenantId: string,
  conversationId: string,
  changes: readonly SyncChange[],
): Promise<void> {
  const upserts = changes
    .filter((c) => c.kind !== 'deleted')
    .map((c) => ({ path: c.path, sha256: c.sha256, size: c.size }));
  const deletes = changes.filter((c) => c.kind === 'deleted').map((c) => c.path);
  await new WorkspaceObjectRepository(tx).applyChanges(tenantId, conversationId, upserts, deletes);
  const files = new FileRepository(tx);
  const registered = changes.filter((c) => c.register);
  const records = registered
    .filter((c) => c.kind !== 'deleted')
    .map((c) => ({
      path: c.path,
      size: c.size,
      sha256: c.sha256,
      mimeType: mimeTypeOf(c.path),
      source: c.kind === 'created' ? ('ai_created' as const) : ('ai_modified' as const),
    }));
  if (records.length > 0) await files.upsertMany(tenantId, conversationId, records);
  for (const c of registered) if (c.kind === 'deleted') await files.delete(tenantId, conversationId, c.path);
}

function runStore(db: Database): RunStore {
  return {
    startRun: async (i) => (await new RunRepository(db).start(i)).id,
    append: (tenantId, conversationId, runId, ev) =>
      new EventRepository(db).append(tenantId, conversationId, runId, ev),
    finishRun: async (i) => {
      const stored = await db.transaction(async (tx) => {
        if (i.sync !== undefined) await applySync(tx, i.tenantId, i.conversationId, i.sync.changes);
        if (i.title !== undefined)
          await new ConversationRepository(tx).setTitle(i.tenantId, i.conversationId, i.title);
        const s = i.summary;
        return new RunRepository(tx).finish(
          i.tenantId,
          i.runId,
          {
            status: i.status,
            usage: s?.usage,
            costUsd: s?.costUsd,
            turnCount: s?.turnCount,
            durationMs: i.durationMs,
            errorCode: i.errorCode,
            ...(s?.sessionId ? { sessionId: s.sessionId, contextTokens: s.contextTokens } : {}),
          },
          i.done,
        );
      });
      if (stored === undefined) throw new Error(`run ${i.runId} had already ended`);
      return stored;
    },
  };
}

function sandboxPort(
  sandboxes: ConversationSandboxes,
  conversations: ConversationRepository,
  config: ApiConfig,
): SandboxPort {
  return {
    ensure: async (tenant, conversation) => {
      const known = await conversations.getSandbox(tenant.id, conversation.id);
      const l = tenant.settings.limits;
      const s = await sandboxes.ensureSandbox({
        tenantId: tenant.id,
        conversationId: conversation.id,
        limits: { cpus: l.cpus, memoryBytes: l.memoryBytes, pids: l.pids, diskBytes: l.diskBytes },
        egressAllow: tenant.settings.egressAllow,
        idleTimeoutSeconds: Math.ceil(config.HAKO_SANDBOX_IDLE_TIMEOUT / 1000),
        knownNode: known?.node,
        knownSandboxId: known?.sandboxId,
      });
      if (known?.node !== s.node || known.sandboxId !== s.sandboxId) {
        await conversations.setSandbox(tenant.id, conversation.id, { node: s.node, sandboxId: s.sandboxId });
      }
      return { node: s.node, sandboxId: s.sandboxId, created: s.created };
    },
  };
}

function workspacePort(
  sync: WorkspaceSync,
  objects: WorkspaceObjectRepository,
  clientOf: (t: SandboxTarget) => AgentClient,
): WorkspacePort {
  return {
    restore: async (target, tenant, conversation) => {
      const r = await sync.restore({
        client: clientOf(target),
        ownerId: tenant.id,
        sandboxId: target.sandboxId,
        tenantId: tenant.id,
        conversationId: conversation.id,
      });
      return { files: r.files, bytes: r.bytes };
    },
    syncBack: async (target, tenant, conversation, runId): Promise<SyncResult> => {
      const manifest = await objects.getAll(tenant.id, conversation.id);
      const r = await sync.syncBack({
        client: clientOf(target),
        ownerId: tenant.id,
        sandboxId: target.sandboxId,
        tenantId: tenant.id,
        conversationId: conversation.id,
        runId,
        manifest,
      });
      return {
        uploaded: r.uploaded,
        deleted: r.deleted,
        unchanged: r.unchanged,
        complete: r.complete,
        changes: r.changes,
      };
    },
  };
}

function agentPort(
  logger: Logger,
  clientOf: (t: SandboxTarget) => AgentClient,
  defaultModel: string | undefined,
): AgentPort {
  return {
    run: async ({ target, tenant, conversation, prompt, preferredSkills, signal, onEvent }) => {
      const abortController = new AbortController();
      const onAbort = (): void => abortController.abort(signal.reason);
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      try {
        const settings = settingsWithModel(tenant, defaultModel);
        const options = buildAgentOptions({
          tenantId: tenant.id,
          settings,
          conversation,
          sandbox: { client: clientOf(target), sandboxId: target.sandboxId },
          abortController,
          logger,
          skills: true,
          preferredSkills,
        });
        // The runner's own done event is not stored: the flow stores one done, after the sync.
        const summary = await runAgent({
          options,
          prompt,
          contextLimit: tenant.settings.maxContextTokens,
          logger,
          onEvent: (ev: AgentEvent) => (ev.type === 'done' ? undefined : onEvent(ev)),
        });
        // A cancelled run is cancelled even when Claude Code still managed to finish its turn
        // during the SDK's grace period.
        if (summary.status === 'cancelled' || signal.aborted) throw signal.reason ?? new Error('cancelled');
        return {
          status: summary.status,
          result: summary.result,
          isError: summary.isError,
          usage: summary.usage,
          costUsd: summary.costUsd,
          turnCount: summary.turnCount,
          sessionId: summary.sessionId ?? null,
          contextTokens: summary.contextTokens,
          errorCode: summary.error?.code,
        };
      } finally {
        signal.removeEventListener('abort', onAbort);
      }
    },
  };
}

function settingsWithModel(tenant: Tenant, defaultModel: string | undefined): Tenant['settings'] {
  if (tenant.settings.model !== undefined || defaultModel === undefined) return tenant.settings;
  return { ...tenant.settings, model: defaultModel };
}
