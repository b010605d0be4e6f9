/**
 * Checks and translates every request message of hakod's API into the backend's plain types. Each
 * function throws AppError INVALID_ARGUMENT naming the field and the rule, before anything reaches
 * the backend; messages never echo more than a short prefix of what the caller sent.
 */
import { constants as osConstants } from 'node:os';
import { AppError } from '@hako/core';
import { assertSandboxId } from '@hako/sandbox';
import { FilesTarget, NetworkMode } from '@hako/proto';
import type {
  CreateSandboxRequest,
  ExecSignal,
  ExecStart,
  GarbageCollectRequest,
  InvokeWorkerRequest,
  Limits,
  PullImageRequest,
  ReadFilesRequest,
  WriteFilesHeader,
} from '@hako/proto';
import type {
  CreateInput,
  ExecInput,
  FilesTargetName,
  InvokeInput,
  LimitsInput,
  NetworkModeName,
} from './backend.js';

/** Size and count bounds of request fields (the defaults suit hakod; tests may lower them). */
export interface RequestBounds {
  readonly maxLabels: number;
  readonly maxEnv: number;
  /** Total bytes of env names and values in one request. */
  readonly maxEnvBytes: number;
  readonly maxArgs: number;
  /** Total bytes of argv. */
  readonly maxArgvBytes: number;
  readonly maxEgressAllow: number;
  readonly maxPaths: number;
  readonly maxInvokeHeaders: number;
  readonly maxInvokeBodyBytes: number;
}

export const DEFAULT_REQUEST_BOUNDS: RequestBounds = {
  maxLabels: 64,
  maxEnv: 512,
  maxEnvBytes: 1024 * 1024,
  maxArgs: 16_384,
  maxArgvBytes: 1024 * 1024,
  maxEgressAllow: 256,
  maxPaths: 4096,
  maxInvokeHeaders: 128,
  maxInvokeBodyBytes: 16 * 1024 * 1024,
};

const OWNER_RE = /^[A-Za-z0-9._:@-]{1,128}$/;
const LABEL_KEY_RE = /^[A-Za-z0-9](?:[A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?$/;
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const UPSTREAM_RE = /^[a-z][a-z0-9-]{0,31}$/;
const PREFIX_RE = /^[a-z][a-z0-9]{0,15}$/;
const HTTP_TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const CONTROL_RE = /[\u0000-\u001f\u007f]/;
const PRINTABLE_RE = /^[\x21-\x7e]+$/;

const MAX_U64_FIELD = 2 ** 50; // 1 PiB: past any real limit, well inside a safe integer
const MAX_TTL_SECONDS = 366 * 24 * 3600;
const MAX_EXEC_TIMEOUT_MS = 7 * 24 * 3600 * 1000;
const MAX_INVOKE_TIMEOUT_MS = 15 * 60 * 1000;

function bad(field: string, rule: string): AppError {
  return new AppError('INVALID_ARGUMENT', `${field}: ${rule}`);
}

/** A short, printable rendering of what the caller sent, for error messages. */
function quote(v: string): string {
  const s = JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  return s;
}

function str(v: unknown, field: string): string {
  if (typeof v !== 'string') throw bad(field, 'must be a string');
  return v;
}

function noNul(v: string, field: string, maxLen: number): string {
  if (v.length > maxLen) throw bad(field, `longer than ${maxLen} characters`);
  if (v.includes('\0')) throw bad(field, 'contains a NUL byte');
  return v;
}

export function checkOwnerId(v: unknown, field = 'owner_id'): string {
  const s = str(v, field);
  if (s === '') throw bad(field, 'is required');
  if (!OWNER_RE.test(s)) throw bad(field, `${quote(s)} is not 1-128 of [A-Za-z0-9._:@-]`);
  return s;
}

export function checkSandboxId(v: unknown, field = 'sandbox_id'): string {
  const s = str(v, field);
  if (s === '') throw bad(field, 'is required');
  if (s.length > 64) throw bad(field, 'longer than 64 characters (ids are 8-32 of [a-z0-9])');
  try {
    assertSandboxId(s);
  } catch {
    throw bad(field, `${quote(s)} is not a sandbox id (8-32 of [a-z0-9])`);
  }
  return s;
}

function checkMap(
  v: unknown,
  field: string,
  maxEntries: number,
  checkEntry: (k: string, val: string) => void,
): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw bad(field, 'must be a map of strings');
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length > maxEntries) throw bad(field, `more than ${maxEntries} entries`);
  const out: Record<string, string> = {};
  for (const [k, val] of entries) {
    if (typeof val !== 'string') throw bad(`${field}[${quote(k)}]`, 'must be a string');
    checkEntry(k, val);
    out[k] = val;
  }
  return out;
}

function checkList(v: unknown, field: string, max: number, each: (s: string, f: string) => void): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw bad(field, 'must be a list of strings');
  if (v.length > max) throw bad(field, `more than ${max} entries`);
  return v.map((item: unknown, i) => {
    const s = str(item, `${field}[${i}]`);
    each(s, `${field}[${i}]`);
    return s;
  });
}

export function checkLabels(v: unknown, field: string, bounds: RequestBounds): Record<string, string> {
  return checkMap(v, field, bounds.maxLabels, (k, val) => {
    if (!LABEL_KEY_RE.test(k)) {
      throw bad(`${field} key ${quote(k)}`, '1-128 of [A-Za-z0-9._/-], starting and ending alphanumeric');
    }
    if (val.length > 256) throw bad(`${field}[${quote(k)}]`, 'value longer than 256 characters');
    if (CONTROL_RE.test(val)) throw bad(`${field}[${quote(k)}]`, 'value contains control characters');
  });
}

export function checkEnv(v: unknown, field: string, bounds: RequestBounds): Record<string, string> {
  let total = 0;
  return checkMap(v, field, bounds.maxEnv, (k, val) => {
    if (k.length > 256 || !ENV_NAME_RE.test(k)) {
      throw bad(`${field} name ${quote(k)}`, 'must match [A-Za-z_][A-Za-z0-9_]* (at most 256)');
    }
    if (val.includes('\0')) throw bad(`${field}[${k}]`, 'value contains a NUL byte');
    total += k.length + Buffer.byteLength(val) + 2;
    if (total > bounds.maxEnvBytes) throw bad(field, `more than ${bounds.maxEnvBytes} bytes in all`);
  });
}

function checkNumber(v: unknown, field: string, max: number, integer: boolean): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(field, 'must be a finite number');
  if (v < 0) throw bad(field, 'must not be negative');
  if (v > max) throw bad(field, `must be at most ${max}`);
  if (integer && !Number.isInteger(v)) throw bad(field, 'must be a whole number');
  return v;
}

export function checkLimits(v: Limits | undefined): LimitsInput {
  if (v === undefined || v === null) return {};
  return {
    cpus: checkNumber(v.cpus, 'limits.cpus', 1024, false),
    memoryBytes: checkNumber(v.memoryBytes, 'limits.memory_bytes', MAX_U64_FIELD, true),
    pids: checkNumber(v.pids, 'limits.pids', 4_194_304, true),
    diskBytes: checkNumber(v.diskBytes, 'limits.disk_bytes', MAX_U64_FIELD, true),
    tmpBytes: checkNumber(v.tmpBytes, 'limits.tmp_bytes', MAX_U64_FIELD, true),
  };
}

export function checkNetwork(v: unknown): NetworkModeName {
  switch (v) {
    case NetworkMode.NETWORK_MODE_UNSPECIFIED:
    case NetworkMode.NETWORK_MODE_NONE:
      return 'none';
    case NetworkMode.NETWORK_MODE_EGRESS:
      return 'egress';
    default:
      throw bad('network', `unknown network mode ${typeof v === 'number' ? v : '?'}`);
  }
}

function checkImageRef(v: unknown, field: string): string {
  const s = str(v, field);
  if (s === '') throw bad(field, 'is required');
  if (s.length > 512) throw bad(field, 'longer than 512 characters');
  if (!PRINTABLE_RE.test(s)) throw bad(field, `${quote(s)} contains spaces or control characters`);
  return s;
}

export function createInputFrom(req: CreateSandboxRequest, bounds: RequestBounds): CreateInput {
  const ownerId = checkOwnerId(req.ownerId);
  const image = checkImageRef(req.image, 'image');
  const network = checkNetwork(req.network);
  const egressAllow = checkList(req.egressAllow, 'egress_allow', bounds.maxEgressAllow, (s, f) => {
    if (s === '' || s.length > 300 || !PRINTABLE_RE.test(s))
      throw bad(f, `${quote(s)} is not a host:port pattern`);
  });
  const upstreams = checkList(req.upstreams, 'upstreams', 8, (s, f) => {
    if (!UPSTREAM_RE.test(s)) throw bad(f, `${quote(s)} is not an upstream name (anthropic, bedrock)`);
  });
  if (network !== 'egress' && egressAllow.length > 0) {
    throw bad('egress_allow', 'needs network NETWORK_MODE_EGRESS');
  }
  if (network !== 'egress' && upstreams.length > 0)
    throw bad('upstreams', 'need network NETWORK_MODE_EGRESS');
  return {
    ownerId,
    image,
    labels: checkLabels(req.labels, 'labels', bounds),
    limits: checkLimits(req.limits),
    network,
    egressAllow,
    env: checkEnv(req.env, 'env', bounds),
    upstreams,
    ttlSeconds: checkNumber(req.ttlSeconds, 'ttl_seconds', MAX_TTL_SECONDS, true),
    idleTimeoutSeconds: checkNumber(req.idleTimeoutSeconds, 'idle_timeout_seconds', MAX_TTL_SECONDS, true),
  };
}

/** `uid` or `uid:gid`, never 0 (root). Empty = the sandbox user. */
export function checkUser(v: unknown): string {
  const s = str(v, 'user');
  if (s === '') return s;
  const m = /^(\d{1,10})(?::(\d{1,10}))?$/.exec(s);
  if (!m) throw bad('user', `${quote(s)} is not "uid" or "uid:gid"`);
  const uid = Number(m[1]);
  const gid = m[2] === undefined ? undefined : Number(m[2]);
  if (uid === 0 || gid === 0) throw bad('user', 'root (0) is refused');
  if (uid > 2 ** 31 - 2 || (gid !== undefined && gid > 2 ** 31 - 2)) throw bad('user', 'id out of range');
  return s;
}

export function execInputFrom(start: ExecStart, bounds: RequestBounds): ExecInput {
  const ownerId = checkOwnerId(start.ownerId);
  const sandboxId = checkSandboxId(start.sandboxId);
  if (!Array.isArray(start.argv) || start.argv.length === 0)
    throw bad('argv', 'is required (the program and its arguments)');
  let argvBytes = 0;
  const argv = checkList(start.argv, 'argv', bounds.maxArgs, (s, f) => {
    noNul(s, f, 128 * 1024);
    argvBytes += Buffer.byteLength(s) + 1;
    if (argvBytes > bounds.maxArgvBytes) throw bad('argv', `more than ${bounds.maxArgvBytes} bytes in all`);
  });
  if (argv[0] === '') throw bad('argv[0]', 'the program must not be empty');
  const cwd = noNul(str(start.cwd, 'cwd'), 'cwd', 4096);
  if (cwd !== '' && !cwd.startsWith('/'))
    throw bad('cwd', 'must be an absolute path (or empty for /workspace)');
  if (typeof start.stdin !== 'boolean') throw bad('stdin', 'must be a boolean');
  return {
    ownerId,
    sandboxId,
    argv,
    env: checkEnv(start.env, 'env', bounds),
    cwd,
    user: checkUser(start.user),
    stdin: start.stdin,
    timeoutMs: checkNumber(start.timeoutMs, 'timeout_ms', MAX_EXEC_TIMEOUT_MS, true),
  };
}

const SIGNAL_NAMES: ReadonlySet<string> = new Set(Object.keys(osConstants.signals));

/** "TERM", "SIGTERM", "sigterm", "15": a signal this host knows (1-64). Names come back upper-cased. */
export function checkSignal(v: ExecSignal | undefined): string {
  const s = str(v?.signal, 'signal');
  if (/^\d{1,2}$/.test(s)) {
    const n = Number(s);
    if (n >= 1 && n <= 64) return s;
  } else if (s.length <= 16) {
    const up = s.toUpperCase();
    if (SIGNAL_NAMES.has(up) || SIGNAL_NAMES.has(`SIG${up}`)) return up;
  }
  throw bad('signal', `${quote(s)} is not a signal name or number (TERM, SIGINT, 9)`);
}

/** A path relative to /workspace as sent (the backend resolves it and refuses escapes). */
function checkRelPath(s: string, field: string): string {
  noNul(s, field, 4096);
  if (CONTROL_RE.test(s)) throw bad(field, 'contains control characters');
  return s;
}

/** FILES_TARGET_* as the backend's name; INVALID_ARGUMENT for an unknown value. */
export function filesTargetFrom(t: FilesTarget | undefined): FilesTargetName {
  if (t === undefined || t === FilesTarget.FILES_TARGET_WORKSPACE) return 'workspace';
  if (t === FilesTarget.FILES_TARGET_SKILLS) return 'skills';
  throw bad('target', `${String(t)} is not a FilesTarget (WORKSPACE or SKILLS)`);
}

export function writeHeaderFrom(h: WriteFilesHeader): {
  ownerId: string;
  sandboxId: string;
  destDir: string;
  target: FilesTargetName;
} {
  const target = filesTargetFrom(h.target);
  const destDir = checkRelPath(str(h.destDir, 'dest_dir'), 'dest_dir');
  if (target === 'skills' && destDir === '') throw bad('dest_dir', 'is required with target SKILLS');
  return {
    ownerId: checkOwnerId(h.ownerId),
    sandboxId: checkSandboxId(h.sandboxId),
    destDir,
    target,
  };
}

export function readFilesFrom(
  req: ReadFilesRequest,
  bounds: RequestBounds,
): { ownerId: string; sandboxId: string; paths: string[]; target: FilesTargetName } {
  return {
    target: filesTargetFrom(req.target),
    ownerId: checkOwnerId(req.ownerId),
    sandboxId: checkSandboxId(req.sandboxId),
    paths: checkList(req.paths, 'paths', bounds.maxPaths, (s, f) => {
      if (s === '') throw bad(f, 'must not be empty');
      checkRelPath(s, f);
    }),
  };
}

export function invokeInputFrom(req: InvokeWorkerRequest, bounds: RequestBounds): InvokeInput {
  const ownerId = checkOwnerId(req.ownerId);
  // container_id, or (seed compatibility) ip_address + port; which target is allowed is decided by
  // resolveInvokeTarget (INVOKE_TARGET_FORBIDDEN), so an odd address is not an INVALID_ARGUMENT here
  const rawId = str(req.containerId, 'container_id');
  const rawIp = str(req.ipAddress, 'ip_address');
  if (rawId === '' && rawIp === '') throw bad('container_id', 'is required (or ip_address and port)');
  const containerId = rawId === '' ? '' : checkSandboxId(rawId, 'container_id');
  const path = str(req.path, 'path');
  if (path !== '' && (!path.startsWith('/') || path.length > 8192 || !PRINTABLE_RE.test(path))) {
    throw bad('path', 'must be an absolute request path of printable characters (at most 8192)');
  }
  const method = str(req.method, 'method');
  if (method !== '' && !/^[A-Z]{1,16}$/.test(method))
    throw bad('method', `${quote(method)} is not an HTTP method`);
  const headers = checkMap(req.headers, 'headers', bounds.maxInvokeHeaders, (k, val) => {
    if (k.length > 256 || !HTTP_TOKEN_RE.test(k))
      throw bad(`headers name ${quote(k)}`, 'is not an HTTP header name');
    if (val.length > 8192 || /[\r\n\0]/.test(val)) {
      throw bad(`headers[${k}]`, 'value has CR, LF or NUL, or is longer than 8192');
    }
  });
  const body = req.body;
  if (body !== undefined && !(body instanceof Uint8Array)) throw bad('body', 'must be bytes');
  if (body !== undefined && body.length > bounds.maxInvokeBodyBytes) {
    throw bad('body', `larger than ${bounds.maxInvokeBodyBytes} bytes`);
  }
  const ipAddress = rawIp;
  if (ipAddress !== '' && (ipAddress.length > 64 || !PRINTABLE_RE.test(ipAddress))) {
    throw bad('ip_address', 'must be printable and at most 64 characters');
  }
  return {
    ownerId,
    containerId,
    path,
    method,
    headers,
    body: body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(body),
    timeoutMs: checkNumber(req.timeoutMs, 'timeout_ms', MAX_INVOKE_TIMEOUT_MS, true),
    ipAddress,
    port: checkNumber(req.port, 'port', 65535, true),
  };
}

export function gcInputFrom(req: GarbageCollectRequest): { prefix: string; dryRun: boolean } {
  const prefix = str(req.prefix, 'prefix');
  if (prefix !== '' && !PREFIX_RE.test(prefix))
    throw bad('prefix', `${quote(prefix)} is not 1-16 of [a-z0-9]`);
  if (typeof req.dryRun !== 'boolean') throw bad('dry_run', 'must be a boolean');
  return { prefix: prefix === '' ? 'hako' : prefix, dryRun: req.dryRun };
}

export function pullInputFrom(req: PullImageRequest): {
  reference: string;
  auth: { username: string; password: string } | undefined;
} {
  const reference = checkImageRef(req.reference, 'reference');
  const a = req.auth;
  if (a === undefined || a === null) return { reference, auth: undefined };
  const username = str(a.username, 'auth.username');
  const password = str(a.password, 'auth.password');
  if (username.length > 256 || CONTROL_RE.test(username))
    throw bad('auth.username', 'at most 256, no control characters');
  if (password.length > 8192 || CONTROL_RE.test(password))
    throw bad('auth.password', 'at most 8192, no control characters');
  if (username === '' && password === '') return { reference, auth: undefined };
  if (username === '') throw bad('auth.username', 'is required with a password');
  return { reference, auth: { username, password } };
}

export function imageRefFrom(v: unknown): string {
  return checkImageRef(v, 'reference');
}
