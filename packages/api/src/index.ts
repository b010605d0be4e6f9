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
