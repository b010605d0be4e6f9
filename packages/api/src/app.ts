/**
 * hako-api's Fastify app, built from injected dependencies. It never listens and never connects to
 * anything by itself: server.ts builds the real dependencies (PostgreSQL, Redis, S3, hakod nodes)
 * and listens; tests build it with theirs and use `inject` or `listen` on port 0.
 *
 * Order matters and is fixed here: the route recorder (OpenAPI) and the problem+json handlers
 * first, then request decorations and the auth hook, then every route (ours, then the injected
 * ones), then `GET /openapi.json`, generated from what was registered.
 */
import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';
import type { FastifyInstance } from 'fastify';
import type { Logger } from '@hako/core';
import type { Queryable } from './db/pool.js';
import { ApiKeyRepository } from './repositories/api-keys.js';
import { ConversationRepository } from './repositories/conversations.js';
import { FileRepository } from './repositories/files.js';
import { MessageRepository } from './repositories/messages.js';
import { McpServerRepository } from './repositories/mcp-servers.js';
import { TenantRepository } from './repositories/tenants.js';
import { WorkspaceObjectRepository } from './repositories/workspace-objects.js';
import { PresentedFileRepository } from './repositories/presented-files.js';
import type { ConversationFile, LockManager, ObjectStore, RateLimiter } from './types.js';
import { ModelRepository } from './repositories/models.js';
import { UsageRepository } from './repositories/usage.js';
import { ToolLogRepository } from './repositories/tool-logs.js';
import { registerModelRoutes } from './routes/models.js';
import { registerUsageRoutes } from './routes/usage.js';
import { registerToolLogRoutes } from './routes/tool-logs.js';
import { SkillRepository } from './repositories/skills.js';
import { registerAuth } from './http/auth.js';
import { RouteRecorder, buildOpenApi } from './http/openapi.js';
import { registerProblemHandlers, sendProblem } from './http/problem.js';
import './http/route-config.js';
import { registerConversationRoutes } from './routes/conversations.js';
import { registerMessageRoutes } from './routes/messages.js';
import {
  archiveConversation,
  deleteConversation,
  unarchiveConversation,
} from './conversations/conversation-lifecycle.js';
import type { ConversationResources, LifecycleDeps } from './conversations/conversation-lifecycle.js';
import { DEFAULT_UPLOAD_LIMITS, registerFileRoutes } from './routes/files.js';
import type { UploadLimits } from './routes/files.js';
import { registerTenantRoutes } from './routes/tenants.js';
import { registerPresentedFileRoutes } from './routes/presented-files.js';
import { mcpServerRouteDeps, registerMcpServerRoutes } from './routes/mcp-servers.js';
import type { ApiMetrics } from './metrics/api-metrics.js';
import { registerHttpMetrics } from './metrics/instrument.js';
import { registerMetricsRoutes } from './routes/metrics.js';
import { registerSkillRoutes } from './routes/skills.js';

/** The repository calls the HTTP routes make (the real ones: createAppRepos). */
export interface AppRepos {
  tenants: Pick<TenantRepository, 'create' | 'get'>;
  apiKeys: Pick<ApiKeyRepository, 'create' | 'authenticate' | 'list' | 'revoke'>;
  conversations: Pick<
    ConversationRepository,
    | 'create'
    | 'get'
    | 'listPage'
    | 'update'
    | 'setArchived'
    | 'beginDelete'
    | 'isDeleting'
    | 'purge'
    | 'setModel'
  >;
  messages: Pick<MessageRepository, 'list'>;
  files: Pick<FileRepository, 'list' | 'get' | 'upsert' | 'delete'>;
  workspaceObjects: Pick<WorkspaceObjectRepository, 'applyChanges'>;
  presentedFiles: Pick<PresentedFileRepository, 'list' | 'listVersions' | 'mark'>;
  models: ModelRepository;
  usage: Pick<UsageRepository, 'list' | 'summary' | 'costReport'>;
  toolLogs: Pick<ToolLogRepository, 'list'>;
  mcpServers: Pick<
    McpServerRepository,
    'create' | 'list' | 'get' | 'update' | 'delete' | 'listForConversation' | 'setOverride' | 'clearOverride'
  >;
  skills: Pick<SkillRepository, 'list' | 'get' | 'upsert' | 'delete'>;
  /** Runs `fn` with repositories bound to one transaction: all of it or nothing. */
  transaction<T>(fn: (tx: AppRepos) => Promise<T>): Promise<T>;
}

/** The PostgreSQL repositories the routes use, on `db` (the pool, or a transaction). */
export function createAppRepos(db: Queryable): AppRepos {
  return {
    tenants: new TenantRepository(db),
    apiKeys: new ApiKeyRepository(db),
    conversations: new ConversationRepository(db),
    messages: new MessageRepository(db),
    files: new FileRepository(db),
    workspaceObjects: new WorkspaceObjectRepository(db),
    presentedFiles: new PresentedFileRepository(db),
    models: new ModelRepository(db),
    usage: new UsageRepository(db),
    toolLogs: new ToolLogRepository(db),
    mcpServers: new McpServerRepository(db),
    skills: new SkillRepository(db),
    transaction: (fn) => db.transaction((tx) => fn(createAppRepos(tx))),
  };
}

/**
 * Registers an uploaded file (the files API's upload, an execute's attachment) as `user_upload` in
 * conversation_files and the workspace manifest, in one transaction.
 */
export function registerUserUpload(
  repos: AppRepos,
  tenantId: string,
  conversationId: string,
  f: { path: string; size: number; sha256: string; mimeType: string; runId?: string | undefined },
): Promise<ConversationFile> {
  return repos.transaction(async (tx) => {
    const file = await tx.files.upsert(tenantId, conversationId, { ...f, source: 'user_upload' });
    await tx.workspaceObjects.applyChanges(
      tenantId,
      conversationId,
      [{ path: f.path, sha256: f.sha256, size: f.size }],
      [],
    );
    return file;
  });
}

export interface HttpLimits {
  /** Upload sizes by media type. */
  upload: UploadLimits;
  /** Largest JSON request body (default 1 MiB). */
  jsonBodyBytes: number;
  /** How long an upload or delete waits for other uploads' and deletes' hold on the conversation lock (default 30 s). */
  fileLockWaitMs: number;
}

export const DEFAULT_HTTP_LIMITS: HttpLimits = {
  upload: DEFAULT_UPLOAD_LIMITS,
  jsonBodyBytes: 1024 * 1024,
  fileLockWaitMs: 30_000,
};

/**
 * Adds routes to the app (the execute and events routes, later health and the rest). A route
 * declares `config.auth` ('admin' | 'tenant' | 'none'); without it the route takes a tenant API
 * key. Tenant routes read the caller with tenantIdOf(req) / tenantOf(req) from http/auth.ts.
 */
export type AppRoutePlugin = (app: FastifyInstance) => void | Promise<void>;

export interface AppDeps {
  logger: Logger;
  /** HAKO_ADMIN_TOKEN (at least 16 characters). */
  adminToken: string;
  repos: AppRepos;
  /** Requests per minute per API key. */
  rateLimiter: RateLimiter;
  /** The conversation locks executes take; uploads and deletes take them too, briefly. */
  locks: LockManager;
  store: ObjectStore;
  limits?: Partial<HttpLimits>;
  /**
   * What archive and delete release besides rows and S3 objects: hakod sandboxes and the local
   * spool (server.ts). Default: nothing (an app without nodes or spool, as in HTTP tests).
   */
  conversationResources?: ConversationResources;
  routes?: readonly AppRoutePlugin[];
  /** The API version shown in the OpenAPI document. */
  version?: string;
  /** Counts HTTP requests and problem answers, and serves `GET /metrics`; unset: neither. */
  metrics?: ApiMetrics;
  /** HAKO_METRICS_TOKEN: `/metrics` takes it (or the admin token). */
  metricsToken?: string | undefined;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The OpenAPI 3.1 document of every route registered (built once, after ready). */
    openapi(): Record<string, unknown>;
  }
}

/**
 * Builds the app. Call `ready()`, `inject()` or `listen()` on the answer; `close()` closes only
 * the app (the dependencies are the caller's).
 */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const limits: HttpLimits = { ...DEFAULT_HTTP_LIMITS, ...deps.limits };
  const app = Fastify({
    loggerInstance: deps.logger,
    genReqId: () => randomUUID(),
    bodyLimit: limits.jsonBodyBytes,
    return503OnClosing: true,
    // Errors Fastify raises before routing (a malformed URL, a bad Content-Type header).
    frameworkErrors: (err, req, reply) => {
      sendProblem(req, reply, err);
    },
    ajv: {
      // An unknown field is an error naming it (a typo such as workspaceEnabled is never ignored).
      customOptions: { removeAdditional: false, useDefaults: true, coerceTypes: 'array', allErrors: false },
    },
  }) as unknown as FastifyInstance;

  const recorder = new RouteRecorder();
  recorder.attach(app);
  registerProblemHandlers(app);
  if (deps.metrics) registerHttpMetrics(app, deps.metrics);

  // JSON as Fastify parses it (prototype poisoning refused), except that an empty body is no body.
  const jsonParser = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (typeof body === 'string' && body.trim() === '') {
      done(null, undefined);
      return;
    }
    void jsonParser(req, typeof body === 'string' ? body : body.toString('utf8'), done);
  });

  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-request-id', req.id);
  });
  registerAuth(app, {
    adminToken: deps.adminToken,
    metricsToken: deps.metricsToken,
    authenticateApiKey: (key) => deps.repos.apiKeys.authenticate(key),
    getTenant: (id) => deps.repos.tenants.get(id),
    rateLimiter: deps.rateLimiter,
  });

  const { repos } = deps;
  registerTenantRoutes(app, {
    createTenant: async (input) => {
      const model = input.settings.model;
      if (model !== undefined) await repos.models.requireUsable(model, 'settings.model');
      return repos.tenants.create(input);
    },
    getTenant: (id) => repos.tenants.get(id),
    createApiKey: (tenantId) => repos.apiKeys.create(tenantId),
    listApiKeys: (tenantId) => repos.apiKeys.list(tenantId),
    revokeApiKey: (tenantId, keyId) => repos.apiKeys.revoke(tenantId, keyId),
  });
  const lifecycle: LifecycleDeps = {
    store: repos.conversations,
    objects: deps.store,
    locks: deps.locks,
    resources: deps.conversationResources ?? {
      releaseSandboxes: () => Promise.resolve(),
      discardSpool: () => Promise.resolve(),
    },
    logger: deps.logger,
    lockWaitMs: limits.fileLockWaitMs,
  };
  registerConversationRoutes(app, {
    createConversation: async (tenantId, input) => {
      if (input.modelId) await repos.models.requireUsable(input.modelId, 'model_id');
      return repos.conversations.create(tenantId, input);
    },
    setConversationModel: async (tenantId, id, modelId) => {
      await repos.conversations.get(tenantId, id);
      if (modelId !== null) await repos.models.requireUsable(modelId, 'model_id');
      return repos.conversations.setModel(tenantId, id, modelId);
    },
    getConversation: (tenantId, id) => repos.conversations.get(tenantId, id),
    listConversations: (tenantId, options) => repos.conversations.listPage(tenantId, options),
    updateConversation: (tenantId, id, change) => repos.conversations.update(tenantId, id, change),
    archiveConversation: (tenantId, id) => archiveConversation(lifecycle, tenantId, id),
    unarchiveConversation: (tenantId, id) => unarchiveConversation(lifecycle, tenantId, id),
    deleteConversation: (tenantId, id) => deleteConversation(lifecycle, tenantId, id),
  });
  registerMessageRoutes(app, {
    listMessages: (tenantId, id, options) => repos.messages.list(tenantId, id, options),
  });
  await registerFileRoutes(app, {
    store: deps.store,
    locks: deps.locks,
    limits: limits.upload,
    lockWaitMs: limits.fileLockWaitMs,
    getConversation: (tenantId, id) => repos.conversations.get(tenantId, id),
    listFiles: (tenantId, id) => repos.files.list(tenantId, id),
    getFile: (tenantId, id, path) => repos.files.get(tenantId, id, path),
    registerUpload: (tenantId, id, f) => registerUserUpload(repos, tenantId, id, f),
    // The live sandbox goes (the next run restores from S3), so a run never syncs the change away.
    beforeWorkspaceChange: (tenantId, id) => lifecycle.resources.releaseSandboxes(tenantId, id),
    unregisterFile: (tenantId, id, path) =>
      repos.transaction(async (tx) => {
        const existed = await tx.files.delete(tenantId, id, path);
        await tx.workspaceObjects.applyChanges(tenantId, id, [], [path]);
        return existed;
      }),
  });
  registerPresentedFileRoutes(app, {
    listPresented: (tenantId, id) => repos.presentedFiles.list(tenantId, id),
    listVersions: (tenantId, id, path) => repos.presentedFiles.listVersions(tenantId, id, path),
  });
  registerModelRoutes(app, {
    models: repos.models,
    getTenant: (id) => repos.tenants.get(id),
    setTenantModel: async (tenantId, modelId) => {
      await repos.models.setTenantDefault(tenantId, modelId);
    },
  });
  registerUsageRoutes(app, { usage: repos.usage });
  registerToolLogRoutes(app, { toolLogs: repos.toolLogs });
  registerMcpServerRoutes(app, mcpServerRouteDeps(repos.mcpServers));
  if (deps.metrics) registerMetricsRoutes(app, { metrics: deps.metrics });
  await registerSkillRoutes(app, { store: deps.store, skills: repos.skills });
  for (const plugin of deps.routes ?? []) await plugin(app);

  let document: Record<string, unknown> | undefined;
  let documentText: string | undefined;
  app.decorate('openapi', () => {
    document ??= buildOpenApi(recorder.routes, { version: deps.version ?? '0.1.0' });
    return document;
  });
  app.get(
    '/openapi.json',
    {
      schema: {
        summary: 'This document (OpenAPI 3.1)',
        tags: ['meta'],
        response: {
          200: {
            description: 'The OpenAPI 3.1 document of every route.',
            content: { 'application/json': { schema: { type: 'object', additionalProperties: true } } },
          },
        },
      },
      config: {
        auth: 'none',
        docs: {
          example: {
            response: {
              status: 200,
              body: {
                openapi: '3.1.0',
                info: { title: 'hako API', version: '0.1.0' },
                paths: { '/v1/tenants': {} },
              },
            },
          },
        },
      },
    },
    async (_req, reply) => {
      documentText ??= JSON.stringify(app.openapi());
      return reply.type('application/json; charset=utf-8').send(documentText);
    },
  );

  return app;
}
