// The narrow interfaces hako-api's parts meet at. Each has one real implementation per engine
// (PostgreSQL, Redis, S3; issue 5 adds in-process and embedded ones behind the same shapes);
// server.ts wires them and passes them down. Nothing here touches the network by itself.
import type { Readable } from 'node:stream';

// ---------------------------------------------------------------------------------------------
// Object storage (S3 and anything that speaks its API)

export interface ObjectInfo {
  key: string;
  size: number;
  /** The store's entity tag, quotes stripped; not a content hash (multipart uploads). */
  etag?: string;
}

export interface ObjectStore {
  /** Writes `key` whole (replaces it). Buffers are sent with their length and MD5. */
  put(key: string, body: Buffer, opts?: { contentType?: string; sha256?: string }): Promise<void>;
  /** Reads `key` whole. OBJECT_NOT_FOUND when it does not exist. */
  get(key: string): Promise<Buffer>;
  /** Streams `key`. OBJECT_NOT_FOUND when it does not exist. */
  getStream(key: string): Promise<Readable>;
  /** Every object whose key starts with `prefix`, in key order, across pages. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** Deletes `key`; deleting a missing key is not an error. */
  delete(key: string): Promise<void>;
  /** Deletes every object under `prefix`; answers how many went. */
  deletePrefix(prefix: string): Promise<number>;
}

// ---------------------------------------------------------------------------------------------
// Coordination (Redis; in-process for a single API process)

export interface HeldLock {
  readonly key: string;
  /** The unique token this holder set; release and renew compare it. */
  readonly token: string;
  /** Extends the TTL if this holder still owns the lock; false once it was lost. */
  renew(): Promise<boolean>;
  /** Deletes the lock if this holder still owns it (compare-and-delete); false otherwise. */
  release(): Promise<boolean>;
}

export interface LockManager {
  /** Takes `key` for `ttlMs` if nobody holds it; undefined when it is held. */
  acquire(key: string, ttlMs: number): Promise<HeldLock | undefined>;
  /** Whether anybody holds `key` now. */
  isHeld(key: string): Promise<boolean>;
}

export interface RateDecision {
  allowed: boolean;
  /** Requests left in the current window after this one (0 when refused). */
  remaining: number;
  /** When refused, how long until one more request would be allowed; 0 when allowed. */
  retryAfterMs: number;
}

export interface RateLimiter {
  /** Counts one request against `key`: at most `limit` per sliding `windowMs`. */
  hit(key: string, limit: number, windowMs: number): Promise<RateDecision>;
}

export interface Slot {
  /** Gives the slot back; idempotent. */
  release(): Promise<void>;
  /** Keeps the slot alive past its TTL (a long run); false once it expired. */
  renew(): Promise<boolean>;
}

export interface ConcurrencyLimiter {
  /**
   * Takes one of `max` slots of `key` for `ttlMs` (a crashed holder's slot expires by itself);
   * undefined when all are taken.
   */
  acquire(key: string, max: number, ttlMs: number): Promise<Slot | undefined>;
}

// ---------------------------------------------------------------------------------------------
// The agent's event stream, in the seed system's vocabulary

export const EVENT_TYPES = [
  'init',
  'thinking',
  'assistant',
  'tool_call',
  'tool_result',
  'subagent_start',
  'subagent_end',
  'progress',
  'title',
  'context_status',
  'ping',
  'error',
  'done',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** An event before it is stored: the stored one adds seq (the SSE id) and timestamp. */
export interface AgentEvent {
  type: EventType;
  data: Record<string, unknown>;
  /** The SDK message this event came from (undefined for hako's own: progress, ping, error). */
  sdkMessage?: unknown;
}

export interface StoredEvent extends AgentEvent {
  conversationId: string;
  runId: string;
  /** Increasing per conversation; the SSE id. */
  seq: number;
  timestamp: string;
}

export interface Usage {
  inputTokens: number;
  outputTokens: number;
  cacheCreationInputTokens: number;
  cacheReadInputTokens: number;
}

// ---------------------------------------------------------------------------------------------
// Tenants

export interface TenantLimits {
  /** Sandbox limits. */
  cpus: number;
  memoryBytes: number;
  pids: number;
  diskBytes: number;
  /** Requests per minute per API key. */
  requestsPerMinute: number;
  /** Executes running at once per tenant. */
  concurrentRuns: number;
  /** Turns the agent may take in one execute. */
  maxTurns: number;
}

export interface TenantSettings {
  limits: TenantLimits;
  allowedTools: string[];
  disallowedTools: string[];
  /** HOST:PORT entries, as hakod's egress allowlist. */
  egressAllow: string[];
  systemPrompt?: string;
  maxContextTokens: number;
  model?: string;
}

export interface Tenant {
  id: string;
  name: string;
  settings: TenantSettings;
  createdAt: string;
}

export interface Conversation {
  id: string;
  tenantId: string;
  title: string | null;
  workspaceEnabled: boolean;
  /** The SDK session to resume; null before the first run. */
  sessionId: string | null;
  /** Context tokens the last run ended with. */
  contextTokens: number;
  status: 'idle' | 'running';
  /** The registered model the conversation picked; null/undefined: the tenant's default. */
  modelId?: string | null;
  createdAt: string;
  updatedAt: string;
  /** The calling application's user the conversation belongs to (the seed's user_id), or null. */
  userId: string | null;
  /** When it was archived (it then refuses executes and file changes); null when active. */
  archivedAt: string | null;
}

/** Who ran an execute, as the calling application names its user (the seed's `executor`). */
export interface Executor {
  /** The application's user id (1 to 200 characters). */
  userId: string;
  name?: string | undefined;
  email?: string | undefined;
}

export type FileSource = 'user_upload' | 'ai_created' | 'ai_modified';

export interface ConversationFile {
  conversationId: string;
  path: string;
  size: number;
  sha256: string;
  mimeType: string;
  version: number;
  source: FileSource;
  createdAt: string;
  updatedAt: string;
}

/** One version of a registered file (its content is kept only while it is the current one). */
export interface FileVersion {
  path: string;
  version: number;
  size: number;
  sha256: string;
  mimeType: string;
  source: FileSource;
  /** The run that wrote it; null for an upload through the files API. */
  runId: string | null;
  createdAt: string;
  /** Whether the file holds this version now (false for every version of a deleted file). */
  current: boolean;
}

/** A file the agent presented to the user, as it is now. */
export interface PresentedFile {
  path: string;
  /** The file's current version (it may have changed since it was presented). */
  version: number;
  /** The version it had when it was last presented. */
  presentedVersion: number;
  size: number;
  sha256: string;
  mimeType: string;
  description: string | null;
  /** The run that presented it. */
  runId: string | null;
  presentedAt: string;
}

/** A present_files mark: a workspace path (relative, validated) and what it is. */
export interface PresentMark {
  path: string;
  description?: string | undefined;
}

// ---------------------------------------------------------------------------------------------
// Models, usage and tool logs (issue 6)

export type ModelProvider = 'anthropic' | 'bedrock';
export type ModelStatus = 'active' | 'disabled';

/** USD per million tokens, as exact decimal text (numeric in PostgreSQL). */
export interface ModelPrices {
  input: string;
  output: string;
  cacheCreation: string;
  cacheRead: string;
}

/** A model of the admin registry; `id` is what the SDK gets as `model`. */
export interface Model {
  id: string;
  displayName: string;
  provider: ModelProvider;
  /** null: unpriced (its runs cost what Claude Code reports). */
  prices: ModelPrices | null;
  status: ModelStatus;
  createdAt: string;
  updatedAt: string;
}

/** One ended run's usage and cost (written with its done event). */
export interface UsageRecord {
  runId: string;
  tenantId: string;
  conversationId: string;
  modelId: string | null;
  executor: Executor | null;
  status: 'completed' | 'failed' | 'cancelled';
  inputTokens: number;
  outputTokens: number;
  cacheCreationInputTokens: number;
  cacheReadInputTokens: number;
  totalTokens: number;
  /** Exact decimal text, 8 places. */
  costUsd: string;
  costSource: 'model_prices' | 'reported';
  durationMs: number;
  turnCount: number;
  startedAt: string;
  endedAt: string;
}

/** One tool call of the agent, from its tool_call and tool_result events. */
export interface ToolCallLog {
  runId: string;
  conversationId: string;
  toolUseId: string;
  /** The seq of the tool_call event. */
  seq: number;
  name: string;
  input: unknown;
  /** The sub-agent call it was made inside (null on the main thread). */
  parentToolUseId: string | null;
  /** The first 2 KiB of the output (null while the call has no result). */
  outputSummary: string | null;
  outputTruncated: boolean;
  isError: boolean | null;
  startedAt: string;
  endedAt: string | null;
  durationMs: number | null;
}

// ---------------------------------------------------------------------------------------------
// MCP servers (the tenant's registry; per-conversation enablement)

/** How Claude Code reaches an MCP server. */
export type McpServerTransport =
  /** A command Claude Code starts inside the sandbox, speaking MCP over stdio. */
  | { type: 'stdio'; command: string; args: string[]; env: Record<string, string> }
  /** A remote streamable-HTTP server, reached through hakod's egress proxy (allowlist). */
  | { type: 'http'; url: string; headers: Record<string, string> };

/** One server of a tenant's registry. `enabled` is the tenant default. */
export type McpServer = {
  id: string;
  tenantId: string;
  /** `[A-Za-z0-9_-]{1,64}`, unique per tenant regardless of case: the tools are `mcp__{name}__{tool}`. */
  name: string;
  enabled: boolean;
  createdAt: string;
  updatedAt: string;
} & McpServerTransport;

/** A server as one conversation sees it: its override (null when it follows the tenant default). */
export interface ConversationMcpServer {
  server: McpServer;
  /** The conversation's own choice; null when none. */
  override: boolean | null;
}
