/**
 * hako-api's one wiring place: config → PostgreSQL (migrated) → Redis (locks, rate limits, run
 * slots) → S3 → hakod node pool → workspace sync → the execute flow's ports → the Fastify app,
 * listening. close() runs the named closers in reverse order.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
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
import { buildApp, createAppRepos, registerUserUpload } from './app.js';
import type { AppRepos } from './app.js';
import { tenantIdOf } from './http/auth.js';
import { registerExecuteRoutes } from './routes/execute.js';
import { registerHealthRoutes } from './routes/health.js';
import { databaseCheck, nodesCheck, redisCheck, s3Check } from './http/health-checks.js';
import type { RedisLike } from './http/health-checks.js';
import { ApiMetrics } from './metrics/api-metrics.js';
import { instrumentLocks, instrumentRunStore } from './metrics/instrument.js';
import { RunRepository } from './repositories/runs.js';
import { EventRepository } from './repositories/events.js';
import { ConversationRepository } from './repositories/conversations.js';
import { FileRepository } from './repositories/files.js';
import { WorkspaceObjectRepository } from './repositories/workspace-objects.js';
import { PresentedFileRepository } from './repositories/presented-files.js';
import { createAttachmentPort, sandboxWriter } from './execute/attachments.js';
import { HAKO_MCP_SERVER, PresentMarks, createHakoMcpServer } from './agent/hako-tools.js';
import { ModelRepository, chooseRunModelWithProvider } from './repositories/models.js';
import { buildAgentOptions } from './agent/options-builder.js';
import { McpServerRepository } from './repositories/mcp-servers.js';
import { prepareRunMcpServers } from './mcp/effective-set.js';
import { runAgent } from './agent/runner.js';
import type { AgentClient } from '@hako/proto';
import { isAppError } from '@hako/core';
import type { ConversationResources } from './conversations/conversation-lifecycle.js';
import type { AgentEvent, ConcurrencyLimiter, LockManager, RateLimiter } from './types.js';
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
  let shuttingDown = false;
  const close = async (): Promise<void> => {
    shuttingDown = true;
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
    const { rateLimiter, slots } = coordination;
    // Every metric of this process; the node gauges read the pool (built below) at scrape time.
    const metrics = new ApiMetrics({ logger, nodes: () => pool.status() });
    const locks = instrumentLocks(coordination.locks, metrics);

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
      runs: instrumentRunStore(runStore(db, logger), metrics),
      sandboxes: sandboxPort(sandboxes, new ConversationRepository(db), config),
      workspace: workspacePort(workspace, new WorkspaceObjectRepository(db), clientOf),
      agent: agentPort(logger, clientOf, new McpServerRepository(db)),
      models: {
        choose: (tenant, conversation) =>
          chooseRunModelWithProvider(new ModelRepository(db), {
            conversationModel: conversation.modelId,
            tenantModel: tenant.settings.model,
            configuredDefault: config.HAKO_DEFAULT_MODEL,
          }),
      },
      attachments: createAttachmentPort({
        store,
        registerUpload: (tenantId, id, f) => registerUserUpload(repos, tenantId, id, f),
        writeTar: sandboxWriter(clientOf),
        logger,
      }),
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
      conversationResources: conversationResources(sandboxes, new ConversationRepository(db), workspace),
      metrics,
      metricsToken: config.HAKO_METRICS_TOKEN,
      routes: [
        (a) =>
          registerHealthRoutes(a, {
            checks: {
              database: databaseCheck(db, config.DATABASE_URL === undefined ? 'pglite' : 'postgresql'),
              redis: redisCheck(coordination.redis),
              s3: s3Check(store.sdkClient, store.bucket),
              nodes: nodesCheck(pool),
            },
            timeoutMs: config.HAKO_HEALTH_TIMEOUT,
            shuttingDown: () => shuttingDown,
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
    // Last pushed, first run: probes answer 503 SHUTTING_DOWN while load balancers take the
    // process out, and requests (runs) keep being served until the HTTP server closes.
    closers.push(['shutdown delay', () => sleep(config.HAKO_SHUTDOWN_DELAY)]);
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
  /** The Redis client (health checks); undefined for in-process coordination. */
  readonly redis?: RedisLike | undefined;
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
    redis,
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
  runId: string,
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
      runId,
    }));
  if (records.length > 0) await files.upsertMany(tenantId, conversationId, records);
  for (const c of registered) if (c.kind === 'deleted') await files.delete(tenantId, conversationId, c.path);
}

/** The execute flow's RunStore on PostgreSQL (exported for integration tests). */
export function runStore(db: Database, logger: Logger): RunStore {
  return {
    // Under the conversation lock (archive and delete take it too): archived stays refused.
    startRun: async (i) => {
      await new ConversationRepository(db).assertWritable(i.tenantId, i.conversationId);
      return (await new RunRepository(db).start(i)).id;
    },
    append: (tenantId, conversationId, runId, ev) =>
      new EventRepository(db).append(tenantId, conversationId, runId, ev),
    finishRun: async (i) => {
      const stored = await db.transaction(async (tx) => {
        if (i.sync !== undefined) await applySync(tx, i.tenantId, i.conversationId, i.runId, i.sync.changes);
        // present_files marks become presented files now that the sync registered the files.
        let done = i.done;
        const marks = i.summary?.presented ?? [];
        if (marks.length > 0) {
          const r = await new PresentedFileRepository(tx).mark(i.tenantId, i.conversationId, i.runId, marks);
          if (r.missing.length > 0) {
            logger.warn(
              { runId: i.runId, missing: r.missing },
              'presented paths that are not workspace files',
            );
          }
          done = {
            ...done,
            data: { ...done.data, presented_files: r.presented, presented_missing: r.missing },
          };
        }
        // A title PATCHed during the run wins over the one from the prompt.
        if (i.title !== undefined)
          await new ConversationRepository(tx).setTitleIfUnset(i.tenantId, i.conversationId, i.title);
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
          done,
        );
      });
      if (stored === undefined) throw new Error(`run ${i.runId} had already ended`);
      return stored;
    },
  };
}

/** What archive and delete release: the conversation's sandboxes on every node, and its spool. */
function conversationResources(
  sandboxes: ConversationSandboxes,
  conversations: ConversationRepository,
  workspace: WorkspaceSync,
): ConversationResources {
  return {
    releaseSandboxes: async (tenantId, conversationId) => {
      const known = await conversations.getSandbox(tenantId, conversationId);
      if (known !== undefined) {
        await sandboxes
          .destroy({ tenantId, node: known.node, sandboxId: known.sandboxId })
          .catch((err: unknown) => {
            // A node no longer configured: its sandboxes end by their idle timeout.
            if (!(isAppError(err) && err.code === 'INVALID_ARGUMENT')) throw err;
          });
      }
      await sandboxes.destroyConversation({ tenantId, conversationId });
      if (known !== undefined) await conversations.clearSandbox(tenantId, conversationId, known.sandboxId);
    },
    discardSpool: async (conversationId) => {
      await workspace.discardConversation(conversationId);
    },
  };
}

function sandboxPort(
  sandboxes: ConversationSandboxes,
  conversations: ConversationRepository,
  config: ApiConfig,
): SandboxPort {
  return {
    ensure: async (tenant, conversation, opts) => {
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
        // the run's model provider names hakod's upstream: `bedrock` or `anthropic`
        upstreams: [opts?.provider ?? 'anthropic'],
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
  mcpServers: McpServerRepository,
): AgentPort {
  return {
    run: async ({ target, tenant, conversation, prompt, model, preferredSkills, signal, onEvent }) => {
      const abortController = new AbortController();
      const onAbort = (): void => abortController.abort(signal.reason);
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      try {
        // The model beginExecute chose (conversation, tenant default, HAKO_DEFAULT_MODEL).
        const settings = { ...tenant.settings, model };
        const marks = new PresentMarks();
        // exactly the conversation's effective set; a remote server the allowlist no longer covers is skipped
        const mcp = await prepareRunMcpServers(mcpServers, {
          tenantId: tenant.id,
          conversationId: conversation.id,
          egressAllow: settings.egressAllow,
          logger,
        });
        if (mcp.progress) await onEvent(mcp.progress);
        const options = buildAgentOptions({
          tenantId: tenant.id,
          settings,
          mcpServers: mcp.servers,
          conversation,
          sandbox: { client: clientOf(target), sandboxId: target.sandboxId },
          abortController,
          logger,
          inProcessMcpServers: { [HAKO_MCP_SERVER]: createHakoMcpServer(marks) },
          skills: true,
          preferredSkills,
        });
        // The runner's own done event is not stored: the flow stores one done, after the sync.
        const summary = await runAgent({
          options,
          prompt,
          contextLimit: tenant.settings.maxContextTokens,
          logger,
          onEvent: (ev: AgentEvent) => (ev.type === 'done' ? undefined : onEvent(mcp.annotateInit(ev))),
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
          presented: marks.list(),
        };
      } finally {
        signal.removeEventListener('abort', onAbort);
      }
    },
  };
}
