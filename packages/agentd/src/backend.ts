/**
 * What the gRPC layer calls: hakod's operations in plain TypeScript types, with no gRPC in them.
 * `SandboxManager` implements it; the gRPC service (grpc-service.ts) translates messages to these
 * calls and AppErrors to statuses. Every method that names a sandbox takes the caller's owner id and
 * answers PERMISSION_DENIED for another owner's sandbox, SANDBOX_NOT_FOUND for an unknown one.
 */
import type { Readable } from 'node:stream';

export type NetworkModeName = 'none' | 'egress';
/** Where WriteFiles and ReadFiles act: the sandbox's /workspace or its read-only /skills. */
export type FilesTargetName = 'workspace' | 'skills';
export type SandboxStateName = 'creating' | 'running' | 'paused' | 'stopping' | 'stopped' | 'failed';

/** Limits as asked; 0 or undefined means the node's default. */
export interface LimitsInput {
  readonly cpus?: number;
  readonly memoryBytes?: number;
  readonly pids?: number;
  readonly diskBytes?: number;
  readonly tmpBytes?: number;
}

export interface EffectiveLimits {
  readonly cpus: number;
  readonly memoryBytes: number;
  readonly pids: number;
  readonly diskBytes: number;
  readonly tmpBytes: number;
}

export interface CreateInput {
  readonly ownerId: string;
  readonly image: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly limits: LimitsInput;
  readonly network: NetworkModeName;
  readonly egressAllow: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly upstreams: readonly string[];
  /** Seconds; 0 = the node's default. */
  readonly ttlSeconds: number;
  readonly idleTimeoutSeconds: number;
}

export interface SandboxInfo {
  readonly id: string;
  readonly ownerId: string;
  readonly image: string;
  readonly imageDigest: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly state: SandboxStateName;
  readonly limits: EffectiveLimits;
  readonly network: NetworkModeName;
  readonly ipAddress: string | undefined;
  readonly createdAtMs: number;
  readonly lastActiveAtMs: number;
  readonly expiresAtMs: number;
  readonly fromPool: boolean;
  readonly upstreams: readonly string[];
}

export interface ExecInput {
  readonly ownerId: string;
  readonly sandboxId: string;
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  /** Absolute path inside the sandbox; empty = /workspace. */
  readonly cwd: string;
  /** "uid" or "uid:gid"; empty = the sandbox user. */
  readonly user: string;
  readonly stdin: boolean;
  /** 0 = no limit. */
  readonly timeoutMs: number;
}

export type ExitReasonName = 'exited' | 'signaled' | 'oom' | 'timeout' | 'sandbox_gone';

export interface ExecExitInfo {
  readonly code: number;
  /** `SIGKILL` etc. when a signal ended it, else empty. */
  readonly signal: string;
  readonly limitKilled: boolean;
  readonly reason: ExitReasonName;
}

/**
 * A running process. stdout/stderr are Readables with backpressure (the gRPC layer pauses reading
 * while the client is slow); stdin is a Writable, or undefined when the exec was started without it.
 */
export interface ExecHandle {
  readonly pid: number;
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly stdin: NodeJS.WritableStream | undefined;
  /** Sends a signal ("TERM", "SIGINT", "9") to the process. Unknown names: INVALID_ARGUMENT. */
  signal(sig: string): void;
  /** Resolves once the process exited and stdout/stderr are fully read. */
  readonly exit: Promise<ExecExitInfo>;
}

export interface GcResult {
  readonly removed: readonly { name: string; kinds: readonly string[] }[];
  readonly failed: readonly { name: string; errors: readonly string[] }[];
  readonly kept: readonly string[];
}

export interface SandboxMetrics {
  readonly memoryCurrentBytes: number;
  readonly memoryMaxBytes: number;
  readonly memoryPeakBytes: number;
  readonly oomKills: number;
  readonly cpuUsageNs: number;
  readonly pidsCurrent: number;
  readonly pidsLimit: number;
  readonly diskUsedBytes: number;
  readonly diskLimitBytes: number;
  readonly exitCode: number | undefined;
}

export interface InvokeInput {
  readonly ownerId: string;
  readonly containerId: string;
  readonly path: string;
  readonly method: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
  readonly timeoutMs: number;
  readonly ipAddress: string;
  readonly port: number;
}

export interface InvokeOutput {
  readonly statusCode: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
  readonly durationMs: number;
}

export interface PullProgressInfo {
  readonly phase: string;
  readonly digest?: string | undefined;
  readonly bytesDone?: number | undefined;
  readonly bytesTotal?: number | undefined;
}

export interface ImageInfo {
  readonly name: string;
  readonly digest: string;
}

export interface NodeInfo {
  readonly version: string;
  readonly hostname: string;
  readonly runtime: string;
  readonly cgroupVersion: number;
  readonly cpus: number;
  readonly memoryBytes: number;
  readonly sandboxes: number;
  readonly sandboxesWarm: number;
  readonly maxSandboxes: number;
  readonly images: number;
  readonly cniSubnet: string;
  readonly env: string;
}

export interface AgentBackend {
  createSandbox(input: CreateInput): Promise<SandboxInfo>;
  getSandbox(ownerId: string, id: string): Promise<SandboxInfo>;
  listSandboxes(ownerId: string, selector: Readonly<Record<string, string>>): Promise<SandboxInfo[]>;
  destroySandbox(ownerId: string, id: string): Promise<void>;
  /** Starts a process; rejects before anything runs when the input or the sandbox is not usable. */
  exec(input: ExecInput): Promise<ExecHandle>;
  /**
   * Unpacks a tar stream into /workspace/destDir, or (target `skills`) replaces /skills/destDir
   * whole with it (destDir: one name). Undefined target = `workspace`.
   */
  writeFiles(
    ownerId: string,
    id: string,
    destDir: string,
    tar: Readable,
    target?: FilesTargetName,
  ): Promise<{ files: number; bytes: number }>;
  /** A tar stream of paths of /workspace, or of /skills (target `skills`); [] = everything. */
  readFiles(
    ownerId: string,
    id: string,
    paths: readonly string[],
    target?: FilesTargetName,
  ): Promise<Readable>;
  invokeWorker(input: InvokeInput): Promise<InvokeOutput>;
  garbageCollect(prefix: string, dryRun: boolean): Promise<GcResult>;
  pauseSandbox(ownerId: string, id: string): Promise<SandboxInfo>;
  resumeSandbox(ownerId: string, id: string): Promise<SandboxInfo>;
  getSandboxMetrics(ownerId: string, id: string): Promise<SandboxMetrics>;
  pullImage(
    reference: string,
    auth: { username: string; password: string } | undefined,
    onProgress: (p: PullProgressInfo) => void,
    signal: AbortSignal,
  ): Promise<ImageInfo>;
  listImages(): Promise<ImageInfo[]>;
  removeImage(reference: string): Promise<void>;
  getNodeInfo(): Promise<NodeInfo>;
}
