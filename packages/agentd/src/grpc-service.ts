/**
 * hakod's gRPC service: translates hako.agent.v1.Agent messages into AgentBackend calls and
 * AppErrors into statuses (grpc-errors.ts). Every handler checks the bearer token (when one is
 * configured) and validates its request (grpc-validate.ts) before the backend sees anything; a
 * message that does not even decode answers INVALID_ARGUMENT too, never INTERNAL. Streams move
 * data with backpressure both ways: a slow client pauses the process's stdout, a slow process
 * pauses reading the client's stdin.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import { PassThrough } from 'node:stream';
import type { Readable } from 'node:stream';
import type {
  Metadata,
  ServerDuplexStream,
  ServerReadableStream,
  ServerUnaryCall,
  ServerWritableStream,
  ServiceDefinition,
  sendUnaryData,
  handleUnaryCall,
} from '@grpc/grpc-js';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { AgentService, ExitReason, NetworkMode, SandboxState } from '@hako/proto';
import type {
  AgentServer,
  ExecRequest,
  ExecResponse,
  ExecStart,
  GetNodeInfoResponse,
  GetSandboxMetricsResponse,
  PullImageRequest,
  PullImageResponse,
  ReadFilesRequest,
  ReadFilesResponse,
  Sandbox,
  WriteFilesRequest,
  WriteFilesResponse,
} from '@hako/proto';
import type {
  AgentBackend,
  ExecExitInfo,
  ExecHandle,
  ExitReasonName,
  SandboxInfo,
  SandboxStateName,
} from './backend.js';
import { toGrpcStatus } from './grpc-errors.js';
import {
  DEFAULT_REQUEST_BOUNDS,
  checkOwnerId,
  checkLabels,
  checkSandboxId,
  checkSignal,
  createInputFrom,
  execInputFrom,
  gcInputFrom,
  imageRefFrom,
  invokeInputFrom,
  pullInputFrom,
  readFilesFrom,
  writeHeaderFrom,
} from './grpc-validate.js';
import type { RequestBounds } from './grpc-validate.js';

/** Largest data message hakod sends (stdout, stderr, tar chunks). */
export const MAX_CHUNK_BYTES = 64 * 1024;

export interface AgentServiceLimits extends RequestBounds {
  /** Largest tar stream one WriteFiles call may send; more is FILE_TOO_LARGE. */
  readonly maxWriteBytes: number;
}

export interface AgentServiceOptions {
  readonly logger: Logger;
  /** When set, every call must carry `authorization: Bearer <token>`. */
  readonly auth?: { readonly token: string } | undefined;
  readonly limits?: Partial<AgentServiceLimits> | undefined;
  /** Interval of Exec keepalive messages while a process runs; default 15 s. */
  readonly keepaliveMs?: number | undefined;
  /** Called with the RPC and hako error code of every failed call (metrics). */
  readonly onError?: ((rpc: string, code: string) => void) | undefined;
}

export interface AgentServiceParts {
  /** AgentService with request decoders that never throw (a bad message becomes INVALID_ARGUMENT). */
  readonly definition: ServiceDefinition;
  readonly implementation: AgentServer;
}

// ------------------------------------------------------------------------------ undecodable input

const MALFORMED = Symbol('hako.malformed-message');
interface Malformed {
  readonly [MALFORMED]: true;
  readonly reason: string;
}

function isMalformed(v: unknown): v is Malformed {
  return typeof v === 'object' && v !== null && MALFORMED in v;
}

function malformedError(what: string, m: Malformed): AppError {
  return new AppError('INVALID_ARGUMENT', `the request is not a valid ${what} message: ${m.reason}`);
}

/**
 * AgentService with each requestDeserialize wrapped: a message that fails to decode is handed to
 * the handler as a marker instead of making grpc-js answer INTERNAL.
 */
function tolerantDefinition(): ServiceDefinition {
  const out: Record<string, unknown> = {};
  for (const [name, def] of Object.entries(AgentService)) {
    const decode = def.requestDeserialize as (b: Buffer) => unknown;
    out[name] = {
      ...def,
      requestDeserialize: (b: Buffer): unknown => {
        try {
          return decode(b);
        } catch (e) {
          const reason = e instanceof Error ? e.message.slice(0, 200) : 'undecodable';
          return { [MALFORMED]: true, reason } satisfies Malformed;
        }
      },
    };
  }
  return out as ServiceDefinition;
}

// ------------------------------------------------------------------------------ auth

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** Checks `authorization: Bearer <token>` in constant time (over SHA-256 digests of equal length). */
function makeAuthCheck(token: string | undefined): (md: Metadata) => AppError | undefined {
  if (token === undefined) return () => undefined;
  const expected = digest(token);
  return (md) => {
    const values = md.get('authorization');
    const v = values.length === 1 && typeof values[0] === 'string' ? values[0] : '';
    const m = /^Bearer ([\x21-\x7e]+)$/i.exec(v);
    const ok = timingSafeEqual(digest(m?.[1] ?? ''), expected) && m !== null;
    return ok
      ? undefined
      : new AppError(
          'UNAUTHENTICATED',
          v === ''
            ? 'missing bearer token: send metadata "authorization: Bearer <AGENT_AUTH_TOKEN>"'
            : 'wrong bearer token',
        );
  };
}

// ------------------------------------------------------------------------------ translation

const STATE: Record<SandboxStateName, SandboxState> = {
  creating: SandboxState.SANDBOX_STATE_CREATING,
  running: SandboxState.SANDBOX_STATE_RUNNING,
  paused: SandboxState.SANDBOX_STATE_PAUSED,
  stopping: SandboxState.SANDBOX_STATE_STOPPING,
  stopped: SandboxState.SANDBOX_STATE_STOPPED,
  failed: SandboxState.SANDBOX_STATE_FAILED,
};

const REASON: Record<ExitReasonName, ExitReason> = {
  exited: ExitReason.EXIT_REASON_EXITED,
  signaled: ExitReason.EXIT_REASON_SIGNALED,
  oom: ExitReason.EXIT_REASON_OOM,
  timeout: ExitReason.EXIT_REASON_TIMEOUT,
  sandbox_gone: ExitReason.EXIT_REASON_SANDBOX_GONE,
};

export function sandboxToProto(s: SandboxInfo): Sandbox {
  return {
    id: s.id,
    ownerId: s.ownerId,
    image: s.image,
    imageDigest: s.imageDigest,
    labels: { ...s.labels },
    state: STATE[s.state] ?? SandboxState.SANDBOX_STATE_UNSPECIFIED,
    limits: { ...s.limits },
    network: s.network === 'egress' ? NetworkMode.NETWORK_MODE_EGRESS : NetworkMode.NETWORK_MODE_NONE,
    ipAddress: s.ipAddress ?? '',
    createdAtMs: s.createdAtMs,
    lastActiveAtMs: s.lastActiveAtMs,
    expiresAtMs: s.expiresAtMs,
    fromPool: s.fromPool,
    upstreams: [...s.upstreams],
  };
}

function exitToProto(e: ExecExitInfo): ExecResponse {
  return {
    msg: {
      $case: 'exit',
      exit: {
        code: e.code,
        signal: e.signal,
        limitKilled: e.limitKilled,
        reason: REASON[e.reason] ?? ExitReason.EXIT_REASON_UNSPECIFIED,
      },
    },
  };
}

function toBuffer(chunk: unknown): Buffer {
  return Buffer.isBuffer(chunk)
    ? chunk
    : typeof chunk === 'string'
      ? Buffer.from(chunk)
      : Buffer.from(chunk as Uint8Array);
}

function* pieces(buf: Buffer): Generator<Buffer> {
  for (let i = 0; i < buf.length; i += MAX_CHUNK_BYTES) yield buf.subarray(i, i + MAX_CHUNK_BYTES);
}

/** Resolves when a Readable ended, closed or failed (a failure is logged by the caller's listener). */
function settled(r: Readable): Promise<void> {
  return new Promise((resolve) => {
    if (r.readableEnded || r.destroyed) return resolve();
    const done = (): void => resolve();
    r.once('end', done);
    r.once('close', done);
    r.once('error', done);
  });
}

/** The writing side of a server-streaming or bidi call. */
interface MessageSink<T> {
  write(msg: T): boolean;
  on(event: 'drain', listener: () => void): unknown;
}

/**
 * Writes messages to a call and pauses its sources while the call's buffer is full (write()
 * returned false), resuming them on 'drain'.
 */
class BackpressuredWriter<T> {
  private readonly sources = new Set<Readable>();
  private blocked = false;
  private closed = false;

  constructor(private readonly call: MessageSink<T>) {
    call.on('drain', () => {
      this.blocked = false;
      if (!this.closed) for (const s of this.sources) s.resume();
    });
  }

  /** False once the call is finished (nothing more is written). */
  get open(): boolean {
    return !this.closed;
  }

  write(msg: T): void {
    if (this.closed) return;
    if (!this.call.write(msg)) {
      this.blocked = true;
      for (const s of this.sources) s.pause();
    }
  }

  /** Forwards a Readable's data as messages, ≤ MAX_CHUNK_BYTES each. */
  pipe(r: Readable, toMsg: (b: Buffer) => T): void {
    this.sources.add(r);
    r.on('data', (chunk: unknown) => {
      if (this.closed) return;
      for (const p of pieces(toBuffer(chunk))) this.write(toMsg(p));
    });
    if (this.blocked) r.pause();
  }

  /** Stops writing; the sources flow freely so whatever they still hold is read and dropped. */
  close(): void {
    this.closed = true;
    for (const s of this.sources) s.resume();
  }
}

// ------------------------------------------------------------------------------ the service

/**
 * Builds the service definition and its handlers over `backend`. Register both with
 * `server.addService(definition, implementation)`.
 */
export function createAgentService(backend: AgentBackend, opts: AgentServiceOptions): AgentServiceParts {
  const logger = opts.logger;
  const limits: AgentServiceLimits = {
    ...DEFAULT_REQUEST_BOUNDS,
    maxWriteBytes: 256 * 1024 * 1024,
    ...stripUndefined(opts.limits ?? {}),
  };
  const keepaliveMs = opts.keepaliveMs ?? 15_000;
  const checkAuth = makeAuthCheck(opts.auth?.token);

  const status = (err: unknown, rpc: string): ReturnType<typeof toGrpcStatus> => {
    opts.onError?.(rpc, err instanceof AppError ? err.code : 'INTERNAL');
    return toGrpcStatus(err, logger, { rpc });
  };

  /** A unary handler: auth, decode check, then `fn`; any throw or rejection becomes a status. */
  function unary<Req, Res>(rpc: string, fn: (req: Req) => Promise<Res>): handleUnaryCall<Req, Res> {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      const fail = (err: unknown): void => callback(status(err, rpc), null);
      const denied = checkAuth(call.metadata);
      if (denied) return fail(denied);
      const req: unknown = call.request;
      if (isMalformed(req)) return fail(malformedError(rpc, req));
      Promise.resolve()
        .then(() => fn(req as Req))
        .then((res) => callback(null, res), fail);
    };
  }

  /** Ends a streaming call with an error status, once. */
  function failStream(call: EventEmitter, err: unknown, rpc: string): void {
    call.emit('error', status(err, rpc));
  }

  function exec(call: ServerDuplexStream<ExecRequest, ExecResponse>): void {
    const rpc = 'Exec';
    const denied = checkAuth(call.metadata);
    if (denied) return failStream(call, denied, rpc);

    const out = new BackpressuredWriter<ExecResponse>(call);
    let phase: 'waiting' | 'starting' | 'running' | 'done' = 'waiting';
    let handle: ExecHandle | undefined;
    let stdinClosed = false;
    let stdinBroken = false;
    let keepalive: NodeJS.Timeout | undefined;
    const pending: unknown[] = [];

    const stop = (): void => {
      phase = 'done';
      if (keepalive) clearInterval(keepalive);
      out.close();
    };
    const kill = (): void => {
      if (!handle) return;
      try {
        handle.signal('KILL');
      } catch (e) {
        logger.warn({ err: e, rpc }, 'could not kill an exec whose call ended');
      }
    };
    const fail = (err: unknown): void => {
      if (phase === 'done') return;
      stop();
      kill();
      failStream(call, err, rpc);
    };

    const onStdin = (chunk: Buffer): void => {
      const stdin = handle?.stdin;
      if (!stdin)
        throw new AppError('INVALID_ARGUMENT', 'stdin was not opened: set start.stdin to send input');
      if (stdinClosed) throw new AppError('INVALID_ARGUMENT', 'stdin was closed; no more input is accepted');
      // The process closed its stdin (or it failed): input is dropped, as a closed pipe would.
      if (chunk.length === 0 || stdinBroken) return;
      if (!stdin.write(chunk)) {
        // Stop reading the client until the process takes more input (or can take none).
        call.pause();
        const resume = (): void => {
          stdin.removeListener('drain', resume);
          stdin.removeListener('close', resume);
          if (phase === 'running') call.resume();
        };
        stdin.once('drain', resume);
        stdin.once('close', resume);
      }
    };

    const closeStdin = (): void => {
      if (stdinClosed) return;
      stdinClosed = true;
      handle?.stdin?.end();
    };

    const onMessage = (raw: unknown): void => {
      if (phase === 'done') return;
      if (phase === 'starting') {
        pending.push(raw);
        return;
      }
      try {
        if (isMalformed(raw)) throw malformedError('hako.agent.v1.ExecRequest', raw);
        const msg = (raw as ExecRequest).msg;
        if (msg === undefined)
          throw new AppError('INVALID_ARGUMENT', 'an ExecRequest must set one of its fields');
        if (phase === 'waiting') {
          if (msg.$case !== 'start') {
            throw new AppError('EXEC_NOT_STARTED', `the first Exec message must be start, not ${msg.$case}`);
          }
          start(msg.start);
          return;
        }
        switch (msg.$case) {
          case 'start':
            throw new AppError(
              'EXEC_NOT_STARTED',
              'this Exec stream already started a process; send one start per stream',
            );
          case 'stdin':
            onStdin(msg.stdin);
            return;
          case 'stdinClose':
            if (!handle?.stdin)
              throw new AppError('INVALID_ARGUMENT', 'stdin was not opened: set start.stdin');
            closeStdin();
            return;
          case 'signal':
            handle?.signal(checkSignal(msg.signal));
            return;
          default: {
            const never: never = msg;
            throw new AppError('INVALID_ARGUMENT', `unknown Exec message ${String(never)}`);
          }
        }
      } catch (e) {
        fail(e);
      }
    };

    const start = (startMsg: ExecStart): void => {
      const input = execInputFrom(startMsg, limits);
      phase = 'starting';
      call.pause();
      Promise.resolve()
        .then(() => backend.exec(input))
        .then(
          (h) => {
            handle = h;
            h.stdin?.on('error', (e: Error) => {
              stdinBroken = true;
              logger.debug({ err: e, rpc }, 'exec stdin closed under a write');
            });
            h.stdin?.on('close', () => (stdinBroken = true));
            h.stdout.on('error', (e: Error) => logger.warn({ err: e, rpc }, 'exec stdout failed'));
            h.stderr.on('error', (e: Error) => logger.warn({ err: e, rpc }, 'exec stderr failed'));
            if (phase === 'done') {
              // The call ended while the process was starting.
              kill();
              h.stdout.resume();
              h.stderr.resume();
              return;
            }
            phase = 'running';
            out.write({ msg: { $case: 'started', started: { pid: h.pid } } });
            out.pipe(h.stdout, (b) => ({ msg: { $case: 'stdout', stdout: b } }));
            out.pipe(h.stderr, (b) => ({ msg: { $case: 'stderr', stderr: b } }));
            keepalive = setInterval(
              () => out.write({ msg: { $case: 'keepalive', keepalive: {} } }),
              keepaliveMs,
            );
            keepalive.unref();
            Promise.all([h.exit, settled(h.stdout), settled(h.stderr)]).then(([exit]) => {
              if (phase === 'done') return;
              out.write(exitToProto(exit));
              stop();
              call.end();
            }, fail);
            for (const m of pending.splice(0)) onMessage(m);
            if (phase === 'running') call.resume();
          },
          (e: unknown) => fail(e),
        );
    };

    call.on('data', onMessage);
    call.on('end', () => {
      // The client half-closed: no more input. Before start that is a protocol error.
      if (phase === 'waiting')
        fail(new AppError('EXEC_NOT_STARTED', 'the Exec stream ended before a start message'));
      else if (phase === 'running' && handle?.stdin) closeStdin();
    });
    call.on('cancelled', () => {
      // Client cancel, deadline or a dropped connection: the process must not outlive its caller.
      if (phase === 'done') return;
      stop();
      kill();
    });
  }

  function writeFiles(
    call: ServerReadableStream<WriteFilesRequest, WriteFilesResponse>,
    callback: sendUnaryData<WriteFilesResponse>,
  ): void {
    const rpc = 'WriteFiles';
    let answered = false;
    let tar: PassThrough | undefined;
    let total = 0;
    const answer = (err: unknown, res?: WriteFilesResponse): void => {
      if (answered) return;
      answered = true;
      if (err !== null) {
        tar?.destroy(err instanceof Error ? err : new AppError('INTERNAL', 'WriteFiles failed'));
        call.resume();
        callback(status(err, rpc), null);
      } else {
        callback(null, res ?? { filesWritten: 0, bytesWritten: 0 });
      }
    };
    const denied = checkAuth(call.metadata);
    if (denied) return answer(denied);

    call.on('data', (raw: unknown) => {
      if (answered) return;
      try {
        if (isMalformed(raw)) throw malformedError('hako.agent.v1.WriteFilesRequest', raw);
        const msg = (raw as WriteFilesRequest).msg;
        if (msg === undefined)
          throw new AppError('INVALID_ARGUMENT', 'a WriteFilesRequest must set header or chunk');
        if (msg.$case === 'header') {
          if (tar) throw new AppError('INVALID_ARGUMENT', 'WriteFiles takes one header, first');
          const h = writeHeaderFrom(msg.header);
          const stream = new PassThrough({ highWaterMark: 1024 * 1024 });
          stream.on('error', () => undefined); // the backend sees it through its own read
          tar = stream;
          Promise.resolve()
            .then(() => backend.writeFiles(h.ownerId, h.sandboxId, h.destDir, stream, h.target))
            .then(
              (r) => answer(null, { filesWritten: r.files, bytesWritten: r.bytes }),
              (e: unknown) => answer(e),
            );
          return;
        }
        if (!tar) throw new AppError('INVALID_ARGUMENT', 'WriteFiles must begin with a header message');
        total += msg.chunk.length;
        if (total > limits.maxWriteBytes) {
          throw new AppError('FILE_TOO_LARGE', `the tar stream is over ${limits.maxWriteBytes} bytes`);
        }
        const stream = tar;
        if (!stream.write(msg.chunk)) {
          call.pause();
          stream.once('drain', () => call.resume());
        }
      } catch (e) {
        answer(e);
      }
    });
    call.on('end', () => {
      if (answered) return;
      if (!tar) answer(new AppError('INVALID_ARGUMENT', 'WriteFiles must begin with a header message'));
      else tar.end();
    });
    call.on('cancelled', () => {
      if (answered) return;
      answered = true;
      tar?.destroy(new AppError('INVALID_ARGUMENT', 'the client cancelled WriteFiles'));
    });
  }

  function readFiles(call: ServerWritableStream<ReadFilesRequest, ReadFilesResponse>): void {
    const rpc = 'ReadFiles';
    const denied = checkAuth(call.metadata);
    if (denied) return failStream(call, denied, rpc);
    const req: unknown = call.request;
    if (isMalformed(req)) return failStream(call, malformedError(rpc, req), rpc);
    const out = new BackpressuredWriter<ReadFilesResponse>(call);
    let done = false;
    let source: Readable | undefined;
    call.on('cancelled', () => {
      done = true;
      out.close();
      source?.destroy();
    });
    Promise.resolve()
      .then(() => {
        const r = readFilesFrom(req as ReadFilesRequest, limits);
        return backend.readFiles(r.ownerId, r.sandboxId, r.paths, r.target);
      })
      .then(
        (readable) => {
          source = readable;
          if (done) return void readable.destroy();
          readable.on('error', (e: unknown) => {
            if (done) return;
            done = true;
            out.close();
            failStream(call, e, rpc);
          });
          readable.on('end', () => {
            if (done) return;
            done = true;
            out.close();
            call.end();
          });
          out.pipe(readable, (b) => ({ chunk: b }));
        },
        (e: unknown) => {
          if (done) return;
          done = true;
          failStream(call, e, rpc);
        },
      );
  }

  function pullImage(call: ServerWritableStream<PullImageRequest, PullImageResponse>): void {
    const rpc = 'PullImage';
    const denied = checkAuth(call.metadata);
    if (denied) return failStream(call, denied, rpc);
    const req: unknown = call.request;
    if (isMalformed(req)) return failStream(call, malformedError(rpc, req), rpc);
    const abort = new AbortController();
    let done = false;
    call.on('cancelled', () => {
      done = true;
      abort.abort();
    });
    Promise.resolve()
      .then(() => {
        const r = pullInputFrom(req as PullImageRequest);
        return backend.pullImage(
          r.reference,
          r.auth,
          (p) => {
            if (done) return;
            call.write({
              msg: {
                $case: 'progress',
                progress: {
                  phase: p.phase,
                  digest: p.digest ?? '',
                  bytesDone: p.bytesDone ?? 0,
                  bytesTotal: p.bytesTotal ?? 0,
                },
              },
            });
          },
          abort.signal,
        );
      })
      .then(
        (img) => {
          if (done) return;
          done = true;
          call.write({ msg: { $case: 'done', done: { name: img.name, digest: img.digest } } });
          call.end();
        },
        (e: unknown) => {
          if (done) return;
          done = true;
          failStream(call, e, rpc);
        },
      );
  }

  const ownerAndId = (r: { ownerId: unknown; sandboxId: unknown }): [string, string] => [
    checkOwnerId(r.ownerId),
    checkSandboxId(r.sandboxId),
  ];

  const implementation: AgentServer = {
    createSandbox: unary('CreateSandbox', async (req) => ({
      sandbox: sandboxToProto(await backend.createSandbox(createInputFrom(req, limits))),
    })),
    getSandbox: unary('GetSandbox', async (req) => ({
      sandbox: sandboxToProto(await backend.getSandbox(...ownerAndId(req))),
    })),
    listSandboxes: unary('ListSandboxes', async (req) => {
      const owner = checkOwnerId(req.ownerId);
      const selector = checkLabels(req.labelSelector, 'label_selector', limits);
      return { sandboxes: (await backend.listSandboxes(owner, selector)).map(sandboxToProto) };
    }),
    destroySandbox: unary('DestroySandbox', async (req) => {
      await backend.destroySandbox(...ownerAndId(req));
      return {};
    }),
    exec,
    writeFiles,
    readFiles,
    invokeWorker: unary('InvokeWorker', async (req) => {
      const r = await backend.invokeWorker(invokeInputFrom(req, limits));
      return { statusCode: r.statusCode, headers: { ...r.headers }, body: r.body, durationMs: r.durationMs };
    }),
    garbageCollect: unary('GarbageCollect', async (req) => {
      const { prefix, dryRun } = gcInputFrom(req);
      const r = await backend.garbageCollect(prefix, dryRun);
      return {
        removed: r.removed.map((i) => ({ name: i.name, kinds: [...i.kinds] })),
        failed: r.failed.map((f) => ({ name: f.name, errors: [...f.errors] })),
        kept: [...r.kept],
      };
    }),
    pauseSandbox: unary('PauseSandbox', async (req) => ({
      sandbox: sandboxToProto(await backend.pauseSandbox(...ownerAndId(req))),
    })),
    resumeSandbox: unary('ResumeSandbox', async (req) => ({
      sandbox: sandboxToProto(await backend.resumeSandbox(...ownerAndId(req))),
    })),
    getSandboxMetrics: unary('GetSandboxMetrics', async (req): Promise<GetSandboxMetricsResponse> => {
      const m = await backend.getSandboxMetrics(...ownerAndId(req));
      return {
        memoryCurrentBytes: m.memoryCurrentBytes,
        memoryMaxBytes: m.memoryMaxBytes,
        memoryPeakBytes: m.memoryPeakBytes,
        oomKills: m.oomKills,
        cpuUsageNs: m.cpuUsageNs,
        pidsCurrent: m.pidsCurrent,
        pidsLimit: m.pidsLimit,
        diskUsedBytes: m.diskUsedBytes,
        diskLimitBytes: m.diskLimitBytes,
        hasExitCode: m.exitCode !== undefined,
        exitCode: m.exitCode ?? 0,
      };
    }),
    pullImage,
    listImages: unary('ListImages', async () => ({
      images: (await backend.listImages()).map((i) => ({ name: i.name, digest: i.digest })),
    })),
    removeImage: unary('RemoveImage', async (req) => {
      await backend.removeImage(imageRefFrom(req.reference));
      return {};
    }),
    getNodeInfo: unary('GetNodeInfo', async (): Promise<GetNodeInfoResponse> => {
      const n = await backend.getNodeInfo();
      return {
        version: n.version,
        hostname: n.hostname,
        runtime: n.runtime,
        cgroupVersion: n.cgroupVersion,
        cpus: n.cpus,
        memoryBytes: n.memoryBytes,
        sandboxes: n.sandboxes,
        sandboxesWarm: n.sandboxesWarm,
        maxSandboxes: n.maxSandboxes,
        images: n.images,
        cniSubnet: n.cniSubnet,
        env: n.env,
      };
    }),
  };

  return { definition: tolerantDefinition(), implementation };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
