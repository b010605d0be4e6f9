export {};
export * from './db/pool.js';
export * from './db/migrate.js';
export * from './repositories/tenants.js';
export * from './repositories/api-keys.js';
export * from './repositories/conversations.js';
export * from './repositories/runs.js';
export * from './repositories/events.js';
export * from './repositories/files.js';
export * from './repositories/workspace-objects.js';
export * from './agent/sandbox-process.js';
export * from './agent/claude-spawner.js';
export * from './agent/options-builder.js';
export * from './agent/event-mapper.js';
export * from './agent/runner.js';
export { RedisLockManager } from './coord/redis-lock.js';
export type { RedisLockManagerOptions } from './coord/redis-lock.js';
export { RedisRateLimiter } from './coord/redis-rate-limiter.js';
export type { RedisRateLimiterOptions } from './coord/redis-rate-limiter.js';
export { RedisConcurrencyLimiter } from './coord/redis-concurrency.js';
export type { RedisConcurrencyLimiterOptions } from './coord/redis-concurrency.js';
export { MemoryLockManager } from './coord/memory-lock.js';
export { MemoryRateLimiter } from './coord/memory-rate-limiter.js';
export { MemoryConcurrencyLimiter } from './coord/memory-concurrency.js';
export type { MemoryStoreOptions } from './coord/memory-store.js';
export {
  NodePool,
  leastLoaded,
  DEFAULT_NODE_POLL_INTERVAL_MS,
  DEFAULT_NODE_CALL_TIMEOUT_MS,
} from './nodes/node-pool.js';
export type { NodeEndpoint, PooledNode, NodeStatus, NodePoolOptions, NodeLoad } from './nodes/node-pool.js';
export { ConversationSandboxes, CONVERSATION_LABEL, TENANT_LABEL } from './nodes/conversation-sandbox.js';
export type {
  SandboxLimits,
  EnsureSandboxRequest,
  EnsuredSandbox,
  ConversationSandboxesOptions,
} from './nodes/conversation-sandbox.js';
export { buildApp, createAppRepos, DEFAULT_HTTP_LIMITS } from './app.js';
export type { AppDeps, AppRepos, AppRoutePlugin, HttpLimits } from './app.js';
export {
  registerAuth,
  tenantIdOf,
  tenantOf,
  bearerToken,
  safeEqual,
  apiKeyRateKey,
  RATE_WINDOW_MS,
} from './http/auth.js';
export type { AuthDeps } from './http/auth.js';
export {
  PROBLEM_CONTENT_TYPE,
  problemType,
  problemFromAppError,
  appErrorFromHttp,
  sendProblem,
  registerProblemHandlers,
} from './http/problem.js';
export type { Problem, ProblemAnswer } from './http/problem.js';
export { RouteRecorder, buildOpenApi, openApiPath, WILDCARD_PARAM } from './http/openapi.js';
export type { RecordedRoute, OpenApiOptions } from './http/openapi.js';
export type { AuthMode, RouteDocs, RouteExample } from './http/route-config.js';
export {
  assertFilePath,
  filePathProblem,
  workspaceObjectKey,
  MAX_FILE_PATH_BYTES,
  MAX_FILE_SEGMENT_BYTES,
  MAX_FILE_PATH_DEPTH,
  RESERVED_DIR,
} from './http/file-path.js';
export type { FilePathProblem } from './http/file-path.js';
export {
  DEFAULT_TENANT_SETTINGS,
  parseTenantSettings,
  tenantSettingsToWire,
  tenantSettingsWireSchema,
  tenantSettingsInputJsonSchema,
  tenantSettingsOutputJsonSchema,
} from './http/tenant-settings.js';
export type { TenantSettingsWire, TenantSettingsWireInput } from './http/tenant-settings.js';
export { DEFAULT_UPLOAD_LIMITS, uploadLimitFor, uploadMediaType } from './routes/files.js';
export type { UploadLimits } from './routes/files.js';
export { S3ObjectStore, S3_DELETE_BATCH } from './storage/s3-object-store.js';
export type { S3ObjectStoreOptions } from './storage/s3-object-store.js';
export { WorkspaceSync } from './workspace/workspace-sync.js';
export type {
  WorkspaceSyncOptions,
  SandboxRef,
  RestoreInput,
  SyncBackInput,
  SyncBackResult,
  ResumeReport,
} from './workspace/workspace-sync.js';
export { restoreWorkspace, DEFAULT_RESTORE_BATCH, DEFAULT_RESTORE_CONCURRENCY } from './workspace/restore.js';
export type { RestoreRequest, RestoreResult, RestoreDrift, RestoreBatchLimits } from './workspace/restore.js';
export { diffWorkspace } from './workspace/diff.js';
export type {
  Manifest,
  ManifestEntry,
  FileChange as WorkspaceFileChange,
  ChangeKind,
  WorkspaceDiff,
} from './workspace/diff.js';
export { workspacePrefix, isHakoStatePath, syncPathProblem, HAKO_STATE_DIR } from './workspace/paths.js';
export type { SyncPathProblem } from './workspace/paths.js';
export type { SkippedEntry, SkipReason } from './workspace/tar-entries.js';
export { DEFAULT_RETRY_POLICY } from './workspace/retry.js';
export type { RetryPolicy } from './workspace/retry.js';
export { DEFAULT_SCAN_LIMITS } from './workspace/scan.js';
export type { ScanLimits } from './workspace/scan.js';
export { startApi } from './server.js';
export type { RunningApi } from './server.js';
export { createPgliteDatabase, PGLITE_LOCK_FILE, DEFAULT_PGLITE_WAIT_TIMEOUT_MS } from './db/pglite.js';
export type { PgliteDatabaseOptions, PgliteLockOwner } from './db/pglite.js';
export { expandHome } from './config.js';
export * from './repositories/messages.js';
export {
  archiveConversation,
  unarchiveConversation,
  deleteConversation,
} from './conversations/conversation-lifecycle.js';
export type {
  ConversationResources,
  LifecycleDeps,
  LifecycleStore,
} from './conversations/conversation-lifecycle.js';
export * from './repositories/models.js';
export * from './repositories/usage.js';
export * from './repositories/tool-logs.js';
export { registerModelRoutes, modelToWire } from './routes/models.js';
export type { ModelRouteDeps } from './routes/models.js';
export { registerUsageRoutes, usageToWire } from './routes/usage.js';
export type { UsageRouteDeps } from './routes/usage.js';
export { registerToolLogRoutes, toolLogToWire } from './routes/tool-logs.js';
export type { ToolLogRouteDeps } from './routes/tool-logs.js';
