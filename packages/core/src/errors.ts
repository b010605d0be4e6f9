/**
 * One registry of stable error codes. Each code declares its gRPC status (numeric, per
 * grpc/status.h) and its HTTP status, so every layer maps the same failure the same way.
 */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type GrpcStatusName = keyof typeof GrpcStatus;

interface CodeSpec {
  readonly grpc: GrpcStatusName;
  readonly http: number;
  readonly summary: string;
}

export const ERROR_CODES = {
  INVALID_ARGUMENT: { grpc: 'INVALID_ARGUMENT', http: 400, summary: 'The request or a flag is malformed.' },
  CONFIG_INVALID: { grpc: 'INVALID_ARGUMENT', http: 500, summary: 'The service configuration is invalid.' },
  CNI_SUBNET_INVALID: {
    grpc: 'INVALID_ARGUMENT',
    http: 500,
    summary: 'CNI_SUBNET and the IPAM range or gateway disagree.',
  },
  HOST_PREREQUISITE_MISSING: {
    grpc: 'FAILED_PRECONDITION',
    http: 503,
    summary: 'A host prerequisite (runtime, CNI plugin, cgroup controller, quota volume) is missing.',
  },
  RUNTIME_UNAVAILABLE: {
    grpc: 'FAILED_PRECONDITION',
    http: 503,
    summary: 'The requested OCI runtime is not installed or cannot run on this host.',
  },
  RUNTIME_FAILED: { grpc: 'INTERNAL', http: 500, summary: 'The OCI runtime returned an error.' },
  SANDBOX_NOT_FOUND: { grpc: 'NOT_FOUND', http: 404, summary: 'No sandbox with that id.' },
  SANDBOX_ALREADY_EXISTS: { grpc: 'ALREADY_EXISTS', http: 409, summary: 'A sandbox with that id exists.' },
  SANDBOX_CREATE_FAILED: {
    grpc: 'INTERNAL',
    http: 500,
    summary: 'Creating the sandbox failed; it was rolled back.',
  },
  SANDBOX_STATE_INVALID: {
    grpc: 'FAILED_PRECONDITION',
    http: 409,
    summary: 'The sandbox is not in a state that allows this operation.',
  },
  SANDBOX_CLEANUP_FAILED: {
    grpc: 'INTERNAL',
    http: 500,
    summary: 'One or more cleanup steps failed; the rest ran.',
  },
  CGROUP_FAILED: { grpc: 'INTERNAL', http: 500, summary: 'Creating or configuring a cgroup failed.' },
  NETWORK_SETUP_FAILED: { grpc: 'INTERNAL', http: 500, summary: 'A CNI plugin or netns operation failed.' },
  NFTABLES_FAILED: { grpc: 'INTERNAL', http: 500, summary: 'Applying the nftables policy failed.' },
  QUOTA_UNAVAILABLE: {
    grpc: 'FAILED_PRECONDITION',
    http: 503,
    summary: 'The disk quota volume is not set up.',
  },
  QUOTA_FAILED: { grpc: 'INTERNAL', http: 500, summary: 'Setting a disk quota failed.' },
  QUOTA_EXCEEDED: { grpc: 'RESOURCE_EXHAUSTED', http: 507, summary: 'A disk quota was exceeded.' },
  IMAGE_NOT_FOUND: { grpc: 'NOT_FOUND', http: 404, summary: 'The image is not in the store.' },
  IMAGE_INVALID: { grpc: 'INVALID_ARGUMENT', http: 400, summary: 'The image is malformed.' },
  IMAGE_DIGEST_MISMATCH: {
    grpc: 'DATA_LOSS',
    http: 422,
    summary: 'A blob did not match its declared digest.',
  },
  IMAGE_STORE_CORRUPT: { grpc: 'DATA_LOSS', http: 500, summary: 'The image store is corrupt.' },
  IMAGE_STORE_PERMISSION: {
    grpc: 'PERMISSION_DENIED',
    http: 500,
    summary: 'The image store cannot be read or written.',
  },
  IMAGE_STORE_IO: { grpc: 'UNAVAILABLE', http: 500, summary: 'An I/O error in the image store.' },
  IMAGE_IN_USE: {
    grpc: 'FAILED_PRECONDITION',
    http: 409,
    summary: 'A sandbox runs on the image; destroy it before removing the image.',
  },
  IMAGE_PULL_FAILED: {
    grpc: 'UNAVAILABLE',
    http: 502,
    summary: 'Pulling the image from the registry failed.',
  },
  EGRESS_DENIED: {
    grpc: 'PERMISSION_DENIED',
    http: 403,
    summary: 'The destination is not on the allowlist.',
  },
  WORKSPACE_INVALID: { grpc: 'INVALID_ARGUMENT', http: 400, summary: 'The workspace path is not usable.' },
  TLS_FILES_EXIST: {
    grpc: 'ALREADY_EXISTS',
    http: 409,
    summary: 'TLS files are already there (use --force to replace them).',
  },
  TLS_GENERATION_FAILED: { grpc: 'INTERNAL', http: 500, summary: 'Generating keys or certificates failed.' },
  PERMISSION_DENIED: {
    grpc: 'PERMISSION_DENIED',
    http: 403,
    summary: "The caller may not act on this resource (another owner's sandbox).",
  },
  UNAUTHENTICATED: { grpc: 'UNAUTHENTICATED', http: 401, summary: 'Missing or wrong credentials.' },
  INVOKE_TARGET_FORBIDDEN: {
    grpc: 'PERMISSION_DENIED',
    http: 403,
    summary: 'InvokeWorker may call only a live hako sandbox of the caller, on the worker port.',
  },
  INVOKE_TIMEOUT: { grpc: 'DEADLINE_EXCEEDED', http: 504, summary: 'The worker did not answer in time.' },
  INVOKE_RESPONSE_TOO_LARGE: {
    grpc: 'RESOURCE_EXHAUSTED',
    http: 502,
    summary: 'The worker answered with more than the configured maximum response size.',
  },
  INVOKE_FAILED: { grpc: 'UNAVAILABLE', http: 502, summary: 'The worker could not be reached.' },
  FILE_PATH_INVALID: {
    grpc: 'INVALID_ARGUMENT',
    http: 400,
    summary: 'A file path leaves /workspace, crosses a symlink, or is malformed.',
  },
  FILE_NOT_FOUND: { grpc: 'NOT_FOUND', http: 404, summary: 'No such file in the workspace.' },
  FILE_TOO_LARGE: {
    grpc: 'RESOURCE_EXHAUSTED',
    http: 413,
    summary: 'A file or the whole transfer is over its size limit.',
  },
  EXEC_NOT_STARTED: {
    grpc: 'FAILED_PRECONDITION',
    http: 409,
    summary: 'An Exec stream must begin with a start message, once.',
  },
  POOL_EXHAUSTED: {
    grpc: 'RESOURCE_EXHAUSTED',
    http: 503,
    summary: 'The node holds its maximum number of sandboxes.',
  },
  REGISTRY_AUTH_FAILED: {
    grpc: 'UNAUTHENTICATED',
    http: 502,
    summary: 'The image registry refused the credentials.',
  },
  UPSTREAM_NOT_CONFIGURED: {
    grpc: 'FAILED_PRECONDITION',
    http: 400,
    summary: 'A named upstream (anthropic, bedrock) was requested but hakod has no credentials for it.',
  },
  AGENT_UNAVAILABLE: {
    grpc: 'UNAVAILABLE',
    http: 503,
    summary: 'hakod could not be reached, refused the TLS handshake, or did not answer in time.',
  },
  CONVERSATION_NOT_FOUND: {
    grpc: 'NOT_FOUND',
    http: 404,
    summary: 'No conversation with that id for this tenant.',
  },
  CONVERSATION_LOCKED: {
    grpc: 'ABORTED',
    http: 409,
    summary: 'Another execute is running on the conversation.',
  },
  CONTEXT_LIMIT_EXCEEDED: {
    grpc: 'FAILED_PRECONDITION',
    http: 422,
    summary: "The conversation's context tokens reached the tenant's limit.",
  },
  CONCURRENCY_LIMITED: {
    grpc: 'RESOURCE_EXHAUSTED',
    http: 429,
    summary: 'The tenant runs as many executes at once as it may.',
  },
  RUN_CANCELLED: { grpc: 'CANCELLED', http: 499, summary: 'The run was cancelled (client gone, timeout).' },
  RUN_ABANDONED: {
    grpc: 'ABORTED',
    http: 500,
    summary: 'The API process running the execute stopped before it ended; the run was marked failed.',
  },
  TENANT_NOT_FOUND: { grpc: 'NOT_FOUND', http: 404, summary: 'No tenant with that id.' },
  RUN_NOT_FOUND: { grpc: 'NOT_FOUND', http: 404, summary: 'No run with that id for this tenant.' },
  DATABASE_FAILED: {
    grpc: 'UNAVAILABLE',
    http: 503,
    summary: 'A PostgreSQL query failed or the database could not be reached.',
  },
  MIGRATION_CHECKSUM_MISMATCH: {
    grpc: 'FAILED_PRECONDITION',
    http: 500,
    summary: 'An applied database migration file was changed; restore it and add a new migration instead.',
  },
  RATE_LIMITED: {
    grpc: 'RESOURCE_EXHAUSTED',
    http: 429,
    summary: 'The API key sent more requests this minute than its tenant allows; wait Retry-After seconds.',
  },
  WORKSPACE_DISABLED: {
    grpc: 'FAILED_PRECONDITION',
    http: 409,
    summary: 'The conversation was created with workspace_enabled false: it has no files.',
  },
  API_KEY_NOT_FOUND: {
    grpc: 'NOT_FOUND',
    http: 404,
    summary: 'No active API key with that id for this tenant (unknown or already revoked).',
  },
  ROUTE_NOT_FOUND: { grpc: 'UNIMPLEMENTED', http: 404, summary: 'No route with that method and path.' },
  UNSUPPORTED_MEDIA_TYPE: {
    grpc: 'INVALID_ARGUMENT',
    http: 415,
    summary: 'The request body has a Content-Type the route does not accept.',
  },
  PAYLOAD_TOO_LARGE: {
    grpc: 'RESOURCE_EXHAUSTED',
    http: 413,
    summary: 'The request body is over its size limit.',
  },
  NO_HEALTHY_NODE: {
    grpc: 'UNAVAILABLE',
    http: 503,
    summary: 'No configured hakod node is healthy and has room for a sandbox.',
  },
  COORDINATION_FAILED: {
    grpc: 'UNAVAILABLE',
    http: 503,
    summary: 'Redis (locks, rate limits, concurrency slots) could not be reached or failed.',
  },
  AGENT_FAILED: {
    grpc: 'INTERNAL',
    http: 502,
    summary:
      'The agent (Claude Code in the sandbox) failed: it exited early, a sandbox limit killed it, or the model API answered an error.',
  },
  OBJECT_NOT_FOUND: { grpc: 'NOT_FOUND', http: 404, summary: 'No object with that key in the object store.' },
  STORAGE_FAILED: {
    grpc: 'UNAVAILABLE',
    http: 503,
    summary:
      'The object store (S3) could not be reached or refused the request; workspace changes wait in the local spool.',
  },
  CONVERSATION_ARCHIVED: {
    grpc: 'FAILED_PRECONDITION',
    http: 409,
    summary: 'The conversation is archived: it refuses executes and file changes until it is unarchived.',
  },
  FIELD_IMMUTABLE: {
    grpc: 'INVALID_ARGUMENT',
    http: 400,
    summary: 'An update named a field that is fixed when the object is created.',
  },
  CURSOR_INVALID: {
    grpc: 'INVALID_ARGUMENT',
    http: 400,
    summary: 'A pagination cursor is not one this API handed out (use next_cursor as it came).',
  },
  MODEL_NOT_FOUND: { grpc: 'NOT_FOUND', http: 404, summary: 'No model with that id in the registry.' },
  MODEL_UNKNOWN: {
    grpc: 'FAILED_PRECONDITION',
    http: 422,
    summary: 'A model the request (or the tenant default) names is not in the model registry.',
  },
  MODEL_DISABLED: {
    grpc: 'FAILED_PRECONDITION',
    http: 409,
    summary: 'The model is disabled in the registry; pick an active one (GET /v1/models).',
  },
  MODEL_EXISTS: { grpc: 'ALREADY_EXISTS', http: 409, summary: 'A model with that id is already registered.' },
  MCP_SERVER_INVALID: {
    grpc: 'INVALID_ARGUMENT',
    http: 422,
    summary: 'The MCP server definition is not valid (name, command, URL, env or headers).',
  },
  MCP_SERVER_EXISTS: {
    grpc: 'ALREADY_EXISTS',
    http: 409,
    summary: 'The tenant already has an MCP server with that name.',
  },
  MCP_SERVER_NOT_FOUND: {
    grpc: 'NOT_FOUND',
    http: 404,
    summary: 'No MCP server with that id for this tenant.',
  },
  MCP_SERVER_EGRESS_DENIED: {
    grpc: 'FAILED_PRECONDITION',
    http: 422,
    summary: "The remote MCP server's host:port is not on the tenant's egress allowlist.",
  },
  NOT_READY: {
    grpc: 'UNAVAILABLE',
    http: 503,
    summary: 'A dependency (database, Redis, S3, a hakod node) failed its check; `checks` says why.',
  },
  SHUTTING_DOWN: {
    grpc: 'UNAVAILABLE',
    http: 503,
    summary: 'The API process is shutting down; send requests to another process.',
  },
  SKILL_INVALID: {
    grpc: 'INVALID_ARGUMENT',
    http: 422,
    summary:
      'The skill package is refused: not a tar, too large, a bad or duplicate path, a link or device, or no SKILL.md with a name and description.',
  },
  SKILL_NOT_FOUND: { grpc: 'NOT_FOUND', http: 404, summary: 'The tenant has no skill of that name.' },
  SKILL_UNKNOWN: {
    grpc: 'FAILED_PRECONDITION',
    http: 422,
    summary: 'preferred_skills names a skill the tenant does not have (GET /v1/skills lists them).',
  },
  INTERNAL: { grpc: 'INTERNAL', http: 500, summary: 'An unexpected internal error.' },
} as const satisfies Record<string, CodeSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface AppErrorOptions {
  readonly cause?: unknown;
  /** Structured details safe to show to the caller (never secrets). */
  readonly details?: Record<string, unknown>;
}

/** An error with a stable code. `message` says what went wrong and, where useful, what to do next. */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: AppErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.details = options.details;
  }

  get grpcStatus(): number {
    return GrpcStatus[ERROR_CODES[this.code].grpc];
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].http;
  }
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}

/** Wraps anything thrown into an AppError, keeping an existing code. */
export function toAppError(err: unknown, fallback: ErrorCode = 'INTERNAL', context?: string): AppError {
  if (err instanceof AppError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new AppError(fallback, context ? `${context}: ${msg}` : msg, { cause: err });
}

/** Several errors from independent steps (cleanup), reported together. */
export class AggregateAppError extends AppError {
  readonly errors: readonly AppError[];
  constructor(code: ErrorCode, message: string, errors: readonly AppError[]) {
    super(code, `${message}: ${errors.map((e) => `[${e.code}] ${e.message}`).join('; ')}`);
    this.errors = errors;
  }
}
