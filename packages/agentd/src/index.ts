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
export { startAgent, AGENT_VERSION } from './main.js';
export type { RunningAgent } from './main.js';
export { SandboxManager, parseSignal, parseUser, effectiveLimits } from './sandbox-manager.js';
export type { ManagerConfig, ManagerObserver, SandboxManagerDeps } from './sandbox-manager.js';
export { SandboxRecordStore } from './sandbox-registry.js';
export type { SandboxRecord } from './sandbox-registry.js';
export { HakodBackend } from './agent-backend.js';
export type * from './backend.js';
export {
  agentConfigBaseSchema,
  agentConfigSchema,
  loadAgentConfig,
  parseAgentListen,
  isLoopbackListen,
  formatAgentListen,
  AGENT_TLS_DIR_FILES,
} from './config.js';
export type { AgentConfig, AgentListenAddress, AgentTlsFiles } from './config.js';
export { toGrpcStatus, errorFromStatus } from './grpc-errors.js';
export { DEFAULT_REQUEST_BOUNDS } from './grpc-validate.js';
export type { RequestBounds } from './grpc-validate.js';
export { createAgentService, sandboxToProto, MAX_CHUNK_BYTES } from './grpc-service.js';
export type { AgentServiceOptions, AgentServiceParts, AgentServiceLimits } from './grpc-service.js';
export { startAgentServer, AGENT_SERVICE_NAME } from './grpc-server.js';
export type { StartAgentServerOptions, RunningAgentServer } from './grpc-server.js';
export {
  createAgentClient,
  callUnary,
  runExec,
  readFilesTar,
  writeFilesTar,
  pullImageWithProgress,
  CLIENT_TLS_FILES,
} from './client.js';
export type {
  AgentClientOptions,
  AgentClientTls,
  UnaryMethod,
  RequestOf,
  ResponseOf,
  CallHelperOptions,
  ExecResult,
  ExecHelperOptions,
} from './client.js';
export {
  writeTarToWorkspace,
  readTarFromWorkspace,
  UPLOAD_TMP_PREFIX,
  MAX_READ_DEPTH,
} from './workspace-files.js';
export type { FileTransferLimits, Owner } from './workspace-files.js';
export {
  parseWorkspacePath,
  parseDestDir,
  parseTarEntryName,
  MAX_NAME_BYTES,
  MAX_PATH_BYTES,
} from './workspace-paths.js';
export {
  CLAUDE_CODE_SANDBOX_PATH,
  claudeCodeBinaryPath,
  claudeCodePackages,
  checkClaudeCodeBinary,
} from './config.js';
