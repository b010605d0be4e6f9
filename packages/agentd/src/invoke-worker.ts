/**
 * InvokeWorker: hakod calls the HTTP worker inside one of the caller's sandboxes (seed P1-1).
 *
 * The seed system let a caller name any `ip_address:port` and hakod would connect there, which made
 * hakod an SSRF proxy into the host's networks. Here the target is resolved by hakod itself:
 * `resolveInvokeTarget` (pure) turns a request into the sandbox's current address on port 8080 or
 * refuses it, and `callWorker` performs one HTTP/1.1 exchange with that address under hard limits
 * (connect and total timeouts, a response size cap, no redirects, a fixed set of methods, validated
 * path and headers).
 *
 * Error choices (documented here because the spec left them open):
 * - A sandbox named by `container_id` that exists and is the caller's but is not running (paused,
 *   stopping, stopped, failed, creating) → SANDBOX_STATE_INVALID: the caller may resume it and retry.
 *   One without a network address → INVOKE_TARGET_FORBIDDEN: no state change makes it reachable.
 * - On the compatibility path (`ip_address` + `port`) every refusal, including "that address is
 *   another owner's sandbox" and "that sandbox is stopped", is INVOKE_TARGET_FORBIDDEN with the
 *   same message, so the answer does not reveal what lives at an address.
 * - A connection that is not established within the connect timeout (2 s) → INVOKE_FAILED
 *   (UNAVAILABLE): the worker is unreachable, which is a different failure from a worker that
 *   accepted the request and is slow (INVOKE_TIMEOUT, DEADLINE_EXCEEDED). When the total timeout is
 *   shorter than the connect timeout and runs out first, the answer is INVOKE_TIMEOUT.
 */
import { connect as netConnect } from 'node:net';
import type { Socket } from 'node:net';
import { request as httpRequest } from 'node:http';
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import { AppError } from '@hako/core';
import { broadcastAddress, cidrContains, networkAddress, parseCidr, tryParseIpv4 } from '@hako/sandbox';
import type { Ipv4Cidr } from '@hako/sandbox';

/** The only port InvokeWorker ever connects to. */
export const WORKER_PORT = 8080;
/** The path the seed system's workers (AWS Lambda runtime interface emulator) answer on. */
export const DEFAULT_INVOKE_PATH = '/2015-03-31/functions/function/invocations';
export const DEFAULT_INVOKE_METHOD = 'POST';
export const DEFAULT_INVOKE_TIMEOUT_MS = 30_000;
/** Upper bound for `timeout_ms` (15 minutes, the longest a Lambda-style worker may run). */
export const MAX_INVOKE_TIMEOUT_MS = 900_000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 2_000;
/** Default of AGENT_INVOKE_MAX_RESPONSE_SIZE (10 MiB). */
export const DEFAULT_INVOKE_MAX_RESPONSE_BYTES = 10 * 1024 * 1024;
export const MAX_INVOKE_PATH_LENGTH = 2048;
/** Methods a caller may use; CONNECT and TRACE never. */
export const INVOKE_METHODS: ReadonlySet<string> = new Set([
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'PATCH',
  'DELETE',
  'OPTIONS',
]);
const MAX_REQUEST_HEADERS = 100;
const MAX_HEADER_NAME_LENGTH = 256;
const MAX_HEADER_VALUE_LENGTH = 8192;

// ------------------------------------------------------------------------------------ target

/** What resolveInvokeTarget needs to know about one sandbox. */
export interface InvokeSandboxView {
  readonly id: string;
  /** Empty while the sandbox is unclaimed in the warm pool: such a sandbox is nobody's target. */
  readonly ownerId: string;
  /** The sandbox's current address on the CNI bridge; undefined without a network. */
  readonly ip: string | undefined;
  /** True only while the sandbox is in the running state (not paused, stopping, stopped, failed). */
  readonly running: boolean;
}

/** hakod's live sandboxes, looked up by id or by current address. */
export interface InvokeTargetLookup {
  byId(id: string): InvokeSandboxView | undefined;
  byIp(ip: string): InvokeSandboxView | undefined;
}

export interface InvokeTarget {
  readonly sandboxId: string;
  readonly ip: string;
  readonly port: typeof WORKER_PORT;
}

/** The addressing part of an InvokeWorker request; '' and 0 mean "not given" (proto3 defaults). */
export interface InvokeTargetRequest {
  readonly ownerId: string;
  readonly containerId: string | undefined;
  readonly ipAddress: string | undefined;
  readonly port: number | undefined;
}

export interface InvokeNetwork {
  /** CNI_SUBNET, e.g. "10.88.0.0/16". */
  readonly subnet: string;
  /** The bridge gateway (CNI_GATEWAY or derived). */
  readonly gateway: string;
}

const FORBIDDEN_MESSAGE =
  'InvokeWorker may call only a running sandbox of yours on port 8080: pass its container_id ' +
  '(preferred) or its current ip_address inside CNI_SUBNET with port 8080';

function forbidden(detail: string): AppError {
  return new AppError('INVOKE_TARGET_FORBIDDEN', `${FORBIDDEN_MESSAGE} (${detail})`);
}

/**
 * Decides where an InvokeWorker request may go, applying every rule; pure (no I/O).
 *
 * - `containerId` given: the sandbox must exist (else SANDBOX_NOT_FOUND), be the caller's (else
 *   PERMISSION_DENIED), be running (else SANDBOX_STATE_INVALID) and have an address that passes the
 *   address rules below (else INVOKE_TARGET_FORBIDDEN). An `ipAddress`/`port` given as well must
 *   name that same address and port 8080 (else INVOKE_TARGET_FORBIDDEN).
 * - Only `ipAddress` (+ `port`) given (seed compatibility): the address must be a canonical dotted
 *   quad ("10.1.1.1"; not "010.1.1.1", "::ffff:10.1.1.1", a host name or padded text), not loopback,
 *   inside `net.subnet`, not its network or broadcast address, not the gateway, the current address
 *   of a running sandbox of the caller; and the port must be exactly 8080. Anything else:
 *   INVOKE_TARGET_FORBIDDEN.
 * - Neither given: INVALID_ARGUMENT. An empty `ownerId`: INVALID_ARGUMENT.
 * - An unparsable `net.subnet`/`net.gateway`: CONFIG_INVALID.
 */
export function resolveInvokeTarget(
  req: InvokeTargetRequest,
  lookup: InvokeTargetLookup,
  net: InvokeNetwork,
): InvokeTarget {
  if (!req.ownerId) {
    throw new AppError('INVALID_ARGUMENT', 'InvokeWorker needs owner_id');
  }
  const subnet = parseNetwork(net);
  const containerId = req.containerId ?? '';
  const ipAddress = req.ipAddress ?? '';
  const port = req.port ?? 0;

  if (containerId) {
    const sb = lookup.byId(containerId);
    if (!sb) {
      throw new AppError('SANDBOX_NOT_FOUND', `no sandbox "${containerId}" on this node`);
    }
    if (!sb.ownerId || sb.ownerId !== req.ownerId) {
      throw new AppError('PERMISSION_DENIED', `sandbox "${containerId}" belongs to another owner`);
    }
    if (!sb.running) {
      throw new AppError(
        'SANDBOX_STATE_INVALID',
        `sandbox "${containerId}" is not running; resume or recreate it before invoking its worker`,
      );
    }
    if (sb.ip === undefined || sb.ip === '') {
      throw forbidden(`sandbox "${containerId}" has no network; create it with network egress`);
    }
    // hakod's own record is checked like caller input: a stale or corrupt record must not turn
    // into a connection to the gateway or outside the sandbox subnet.
    const own = checkAddress(sb.ip, subnet);
    if (own !== undefined) throw forbidden(`the sandbox's recorded address is unusable: ${own}`);
    if (ipAddress !== '' && ipAddress !== sb.ip) {
      throw forbidden('ip_address does not match the sandbox named by container_id');
    }
    if (port !== 0 && port !== WORKER_PORT) {
      throw forbidden(`port ${port} is not the worker port`);
    }
    return { sandboxId: sb.id, ip: sb.ip, port: WORKER_PORT };
  }

  if (ipAddress === '') {
    throw new AppError(
      'INVALID_ARGUMENT',
      'InvokeWorker needs container_id (the sandbox id) to know which worker to call',
    );
  }
  const bad = checkAddress(ipAddress, subnet);
  if (bad !== undefined) throw forbidden(bad);
  if (port !== WORKER_PORT) throw forbidden(`port ${port} is not the worker port`);
  const sb = lookup.byIp(ipAddress);
  if (!sb || !sb.running || !sb.ownerId || sb.ownerId !== req.ownerId || sb.ip !== ipAddress) {
    // One answer for "nothing there", "stopped" and "someone else's": no probing of the subnet.
    throw forbidden(`${ipAddress} is not the address of a running sandbox of yours`);
  }
  return { sandboxId: sb.id, ip: ipAddress, port: WORKER_PORT };
}

interface ParsedNetwork {
  readonly cidr: Ipv4Cidr;
  readonly gateway: number;
  readonly text: string;
}

function parseNetwork(net: InvokeNetwork): ParsedNetwork {
  let cidr: Ipv4Cidr;
  try {
    cidr = parseCidr(net.subnet);
  } catch (err) {
    throw new AppError('CONFIG_INVALID', `CNI_SUBNET "${net.subnet}" is not an IPv4 CIDR`, {
      cause: err,
    });
  }
  const gateway = tryParseIpv4(net.gateway);
  if (gateway === undefined) {
    throw new AppError('CONFIG_INVALID', `the CNI gateway "${net.gateway}" is not an IPv4 address`);
  }
  return { cidr, gateway, text: net.subnet };
}

/** Returns why `text` may not be a worker address, or undefined when it may. */
function checkAddress(text: string, net: ParsedNetwork): string | undefined {
  // tryParseIpv4 is strict: four decimal octets, no leading zeros, no spaces, no IPv6 forms.
  const addr = tryParseIpv4(text);
  if (addr === undefined) return `"${text}" is not a canonical IPv4 address such as 10.88.0.5`;
  if (addr >>> 24 === 127) return `${text} is a loopback address`;
  if (!cidrContains(net.cidr, addr)) return `${text} is outside CNI_SUBNET ${net.text}`;
  // /31 and /32 have no network or broadcast address (RFC 3021); every wider block has both.
  if (net.cidr.prefix <= 30) {
    if (addr === networkAddress(net.cidr)) return `${text} is the network address of ${net.text}`;
    if (addr === broadcastAddress(net.cidr)) return `${text} is the broadcast address of ${net.text}`;
  }
  if (addr === net.gateway) return `${text} is the bridge gateway`;
  return undefined;
}

// ------------------------------------------------------------------------------------ request

/** The HTTP part of an InvokeWorker request; '' / 0 / undefined mean "the default". */
export interface WorkerRequest {
  /** Default POST; one of INVOKE_METHODS (case-insensitive, sent upper-case). */
  readonly method?: string | undefined;
  /** Default DEFAULT_INVOKE_PATH; origin-form ("/…"), printable ASCII, ≤ 2048 characters. */
  readonly path?: string | undefined;
  readonly headers?: Readonly<Record<string, string>> | undefined;
  readonly body?: Uint8Array | undefined;
  /** Total time for connect + request + the whole response; default 30 s, at most 15 min. */
  readonly timeoutMs?: number | undefined;
}

export interface WorkerResponse {
  readonly statusCode: number;
  /** Response headers, lower-case names, repeated ones joined with ", "; hop-by-hop ones dropped. */
  readonly headers: Record<string, string>;
  readonly body: Buffer;
  /** From the start of the connect to the last byte of the body. */
  readonly durationMs: number;
}

/** A request checked and normalised by prepareWorkerRequest. */
export interface PreparedWorkerRequest {
  readonly method: string;
  readonly path: string;
  /** Caller headers minus hop-by-hop, Host and Content-Length (hakod sets those). */
  readonly headers: Record<string, string>;
  readonly body: Buffer;
  readonly timeoutMs: number;
}

/** Connection-scoped headers (RFC 9110 §7.6.1) and the ones hakod sets itself. */
const DROPPED_REQUEST_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  'content-length',
  'expect',
]);
const HOP_BY_HOP_RESPONSE_HEADERS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);
/** RFC 9110 token (header field names). */
const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Field value: visible ASCII, space, tab and obs-text; no CR, LF, NUL or other controls. */
const FIELD_VALUE_RE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** Origin-form path: printable ASCII without space or '#'. */
const PATH_RE = /^\/[\x21-\x22\x24-\x7e]*$/;

function invalid(message: string): AppError {
  return new AppError('INVALID_ARGUMENT', message);
}

/**
 * Checks and normalises the HTTP part of a request (pure). Throws INVALID_ARGUMENT for a method
 * outside INVOKE_METHODS, a path that is not origin-form ("/…", no scheme or authority, no "//"
 * prefix, no spaces, controls, CR/LF or '#', ≤ 2048 characters), a header name that is not a
 * token or a value with control characters, too many or too long headers, or a timeout outside
 * 1 ms … 15 min. Drops hop-by-hop headers, Host, Content-Length and Expect, plus any header named
 * in the caller's Connection header.
 */
export function prepareWorkerRequest(req: WorkerRequest): PreparedWorkerRequest {
  const method = (
    req.method === undefined || req.method === '' ? DEFAULT_INVOKE_METHOD : req.method
  ).toUpperCase();
  if (!INVOKE_METHODS.has(method)) {
    throw invalid(`method "${req.method}" is not allowed; use one of ${[...INVOKE_METHODS].join(', ')}`);
  }

  const path = req.path === undefined || req.path === '' ? DEFAULT_INVOKE_PATH : req.path;
  if (path.length > MAX_INVOKE_PATH_LENGTH) {
    throw invalid(`path is ${path.length} characters; at most ${MAX_INVOKE_PATH_LENGTH} are allowed`);
  }
  if (!PATH_RE.test(path) || path.startsWith('//')) {
    throw invalid(
      'path must be an absolute path such as /2015-03-31/functions/function/invocations: it starts ' +
        'with a single "/", has no scheme or host, and only printable ASCII without spaces or "#" ' +
        '(percent-encode anything else)',
    );
  }

  const timeoutMs =
    req.timeoutMs === undefined || req.timeoutMs === 0 ? DEFAULT_INVOKE_TIMEOUT_MS : req.timeoutMs;
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_INVOKE_TIMEOUT_MS) {
    throw invalid(`timeout_ms must be 1-${MAX_INVOKE_TIMEOUT_MS} (0 = ${DEFAULT_INVOKE_TIMEOUT_MS})`);
  }

  const entries = Object.entries(req.headers ?? {});
  if (entries.length > MAX_REQUEST_HEADERS) {
    throw invalid(`${entries.length} headers; at most ${MAX_REQUEST_HEADERS} are allowed`);
  }
  const named = new Set<string>();
  for (const [name, value] of entries) {
    if (name.length > MAX_HEADER_NAME_LENGTH || !TOKEN_RE.test(name)) {
      throw invalid(`header name "${name.slice(0, 64)}" is not a valid HTTP field name`);
    }
    if (typeof value !== 'string' || value.length > MAX_HEADER_VALUE_LENGTH || !FIELD_VALUE_RE.test(value)) {
      throw invalid(
        `header "${name}" has a value with control characters (CR, LF, NUL) or over ${MAX_HEADER_VALUE_LENGTH} characters`,
      );
    }
    if (name.toLowerCase() === 'connection') {
      for (const token of value.split(',')) named.add(token.trim().toLowerCase());
    }
  }
  // A Map, not an object: a header may be called "constructor" or "__proto__".
  const headers = new Map<string, string>();
  for (const [name, value] of entries) {
    const lower = name.toLowerCase();
    if (DROPPED_REQUEST_HEADERS.has(lower) || named.has(lower)) continue;
    if (headers.has(lower)) throw invalid(`header "${name}" is given twice (names are case-insensitive)`);
    headers.set(lower, value);
  }

  const body =
    req.body === undefined
      ? Buffer.alloc(0)
      : Buffer.from(req.body.buffer, req.body.byteOffset, req.body.byteLength);
  return { method, path, headers: Object.fromEntries(headers), body, timeoutMs };
}

// ------------------------------------------------------------------------------------ call

export interface CallWorkerOptions {
  /** The response body cap (AGENT_INVOKE_MAX_RESPONSE_SIZE); more → INVOKE_RESPONSE_TOO_LARGE. */
  readonly maxResponseBytes: number;
  /** Default 2000 ms. */
  readonly connectTimeoutMs?: number;
  /** Aborting (the gRPC call was cancelled) closes the connection and rejects with INVOKE_FAILED. */
  readonly signal?: AbortSignal;
  /**
   * Opens the TCP connection; default net.connect. Tests inject a socket that never connects to
   * exercise the connect timeout without sending traffic anywhere.
   */
  readonly connect?: (ip: string, port: number) => Socket;
}

/**
 * Performs one HTTP/1.1 exchange with a worker, already resolved by resolveInvokeTarget.
 * The request is checked by prepareWorkerRequest first (INVALID_ARGUMENT before any connection).
 *
 * - Connection not established within `connectTimeoutMs` → INVOKE_FAILED; refused, reset or
 *   closed before a complete response → INVOKE_FAILED.
 * - `timeoutMs` (default 30 s) elapsed before the last body byte → INVOKE_TIMEOUT.
 * - Body larger than `maxResponseBytes` (by Content-Length, or while streaming) → the connection is
 *   closed at once and the call rejects with INVOKE_RESPONSE_TOO_LARGE; at most
 *   `maxResponseBytes` are ever held.
 * - Redirects are returned as they are (never followed); any status code is a normal result.
 * - Host is set to "ip:port"; Content-Length is set from the body; the connection is not reused.
 */
export async function callWorker(
  target: { readonly ip: string; readonly port: number },
  req: WorkerRequest,
  opts: CallWorkerOptions,
): Promise<WorkerResponse> {
  const prepared = prepareWorkerRequest(req);
  if (!Number.isSafeInteger(opts.maxResponseBytes) || opts.maxResponseBytes < 0) {
    throw new AppError('CONFIG_INVALID', `maxResponseBytes ${opts.maxResponseBytes} is not a byte count`);
  }
  const connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const connect = opts.connect ?? ((ip: string, port: number) => netConnect({ host: ip, port }));
  const where = `${target.ip}:${target.port}`;
  if (opts.signal?.aborted) {
    throw new AppError('INVOKE_FAILED', `the call to the worker at ${where} was cancelled`);
  }

  const started = performance.now();
  return new Promise<WorkerResponse>((resolve, reject) => {
    let settled = false;
    let socket: Socket | undefined;
    let connectTimer: NodeJS.Timeout | undefined;

    const totalTimer = setTimeout(() => {
      fail(
        new AppError(
          'INVOKE_TIMEOUT',
          `the worker at ${where} did not answer within ${prepared.timeoutMs} ms; raise timeout_ms or make the worker faster`,
        ),
      );
    }, prepared.timeoutMs);

    const onAbort = (): void => {
      fail(new AppError('INVOKE_FAILED', `the call to the worker at ${where} was cancelled`));
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    function cleanup(): void {
      settled = true;
      clearTimeout(totalTimer);
      if (connectTimer !== undefined) clearTimeout(connectTimer);
      opts.signal?.removeEventListener('abort', onAbort);
    }

    function fail(err: AppError): void {
      if (settled) return;
      cleanup();
      socket?.destroy();
      reject(err);
    }

    function succeed(res: WorkerResponse): void {
      if (settled) return;
      cleanup();
      socket?.destroy();
      resolve(res);
    }

    try {
      socket = connect(target.ip, target.port);
    } catch (err) {
      fail(new AppError('INVOKE_FAILED', `cannot connect to the worker at ${where}`, { cause: err }));
      return;
    }
    const sock = socket;
    sock.on('error', (err: NodeJS.ErrnoException) => {
      fail(
        new AppError(
          'INVOKE_FAILED',
          `the worker at ${where} is not reachable (${err.code ?? err.message}); is it listening on port ${target.port}?`,
          { cause: err },
        ),
      );
    });
    connectTimer = setTimeout(() => {
      fail(
        new AppError(
          'INVOKE_FAILED',
          `the worker at ${where} did not accept a connection within ${connectTimeoutMs} ms`,
        ),
      );
    }, connectTimeoutMs);

    const onConnected = (): void => {
      if (connectTimer !== undefined) clearTimeout(connectTimer);
      connectTimer = undefined;
      if (settled) return;
      sendRequest(sock);
    };
    if (!sock.pending) onConnected();
    else sock.once('connect', onConnected);

    function sendRequest(s: Socket): void {
      const headers: OutgoingHttpHeaders = { ...prepared.headers, host: where };
      const needsLength =
        prepared.body.length > 0 ||
        prepared.method === 'POST' ||
        prepared.method === 'PUT' ||
        prepared.method === 'PATCH';
      if (needsLength) headers['content-length'] = String(prepared.body.length);
      headers.connection = 'close';
      const httpReq = httpRequest({
        createConnection: () => s,
        method: prepared.method,
        path: prepared.path,
        headers,
        setHost: false,
      });
      httpReq.on('error', (err: NodeJS.ErrnoException) => {
        fail(
          new AppError(
            'INVOKE_FAILED',
            `the worker at ${where} closed the connection (${err.code ?? err.message})`,
            {
              cause: err,
            },
          ),
        );
      });
      httpReq.on('response', (res) => readResponse(res));
      httpReq.end(prepared.body);
    }

    function readResponse(res: IncomingMessage): void {
      const tooLarge = (): AppError =>
        new AppError(
          'INVOKE_RESPONSE_TOO_LARGE',
          `the worker at ${where} answered with more than ${opts.maxResponseBytes} bytes (AGENT_INVOKE_MAX_RESPONSE_SIZE)`,
        );
      const declared = res.headers['content-length'];
      if (declared !== undefined && /^[0-9]+$/.test(declared) && Number(declared) > opts.maxResponseBytes) {
        fail(tooLarge());
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        if (settled) return;
        if (size + chunk.length > opts.maxResponseBytes) {
          fail(tooLarge());
          return;
        }
        size += chunk.length;
        chunks.push(chunk);
      });
      res.on('error', (err: NodeJS.ErrnoException) => {
        fail(
          new AppError(
            'INVOKE_FAILED',
            `reading the answer of the worker at ${where} failed (${err.code ?? err.message})`,
            {
              cause: err,
            },
          ),
        );
      });
      res.on('aborted', () => {
        fail(new AppError('INVOKE_FAILED', `the worker at ${where} closed the connection mid-answer`));
      });
      res.on('end', () => {
        if (!res.complete) {
          fail(new AppError('INVOKE_FAILED', `the worker at ${where} closed the connection mid-answer`));
          return;
        }
        succeed({
          statusCode: res.statusCode ?? 0,
          headers: responseHeaders(res.rawHeaders),
          body: Buffer.concat(chunks, size),
          durationMs: Math.round(performance.now() - started),
        });
      });
    }
  });
}

/** Lower-cases names, joins repeated ones with ", ", drops hop-by-hop ones (the body was de-chunked). */
function responseHeaders(raw: readonly string[]): Record<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    const value = raw[i + 1] as string;
    if (HOP_BY_HOP_RESPONSE_HEADERS.has(name)) continue;
    const prev = out.get(name);
    out.set(name, prev === undefined ? value : `${prev}, ${value}`);
  }
  // Object.fromEntries defines own properties, so "__proto__" stays a plain key.
  return Object.fromEntries(out);
}
