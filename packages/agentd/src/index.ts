export {};
export {
  resolveInvokeTarget,
  prepareWorkerRequest,
  callWorker,
  WORKER_PORT,
  DEFAULT_INVOKE_PATH,
  DEFAULT_INVOKE_METHOD,
  DEFAULT_INVOKE_TIMEOUT_MS,
  MAX_INVOKE_TIMEOUT_MS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_INVOKE_MAX_RESPONSE_BYTES,
  MAX_INVOKE_PATH_LENGTH,
  INVOKE_METHODS,
} from './invoke-worker.js';
export type {
  InvokeSandboxView,
  InvokeTargetLookup,
  InvokeTarget,
  InvokeTargetRequest,
  InvokeNetwork,
  WorkerRequest,
  WorkerResponse,
  PreparedWorkerRequest,
  CallWorkerOptions,
} from './invoke-worker.js';
export { AgentMetrics } from './metrics.js';
export type { AgentMetricsOptions, MetricsCollectors, CountsByLabel, CreateSource } from './metrics.js';
