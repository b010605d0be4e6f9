/**
 * A client for hakod's API: the generated AgentClient with mTLS channel credentials (or plaintext
 * for a loopback/unix hakod started with AGENT_INSECURE=1) and the bearer token on every call, plus
 * promise helpers for the unary calls and for collecting an Exec, a ReadFiles or a PullImage.
 * Failed calls reject with an AppError carrying hakod's code (errorFromStatus).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { credentials, InterceptingCall, Metadata } from '@grpc/grpc-js';
import type {
  CallOptions,
  ChannelCredentials,
  ClientOptions,
  Interceptor,
  ServiceError,
} from '@grpc/grpc-js';
import { AppError } from '@hako/core';
import { AgentClient, AgentService } from '@hako/proto';
import type {
  ExecExit,
  ExecRequest,
  ExecStart,
  Image,
  PullProgress,
  ReadFilesRequest,
  WriteFilesHeader,
  WriteFilesResponse,
} from '@hako/proto';
import { errorFromStatus } from './grpc-errors.js';

/** The client files `hako certs init` writes. */
export const CLIENT_TLS_FILES = { ca: 'ca.pem', cert: 'client.pem', key: 'client-key.pem' } as const;

export type AgentClientTls =
  | { readonly caPem: Buffer | string; readonly certPem: Buffer | string; readonly keyPem: Buffer | string }
  | { readonly dir: string };

export interface AgentClientOptions {
  /** `host:port` or `unix:/path`. */
  readonly address: string;
  /** Client certificate, key and the CA that signed hakod's certificate. Required unless `insecure`. */
  readonly tls?: AgentClientTls | undefined;
  /** Plaintext: only for a hakod on loopback or a unix socket started with AGENT_INSECURE=1. */
  readonly insecure?: boolean | undefined;
  /** Sent as `authorization: Bearer <token>` on every call (AGENT_AUTH_TOKEN). */
  readonly token?: string | undefined;
  /** Name to verify hakod's certificate against when it differs from the address's host. */
  readonly serverName?: string | undefined;
  /** Extra grpc-js channel options. */
  readonly channelOptions?: Partial<ClientOptions> | undefined;
}

function pem(v: Buffer | string): Buffer {
  return Buffer.isBuffer(v) ? v : Buffer.from(v);
}

function channelCredentials(opts: AgentClientOptions): ChannelCredentials {
  if (opts.insecure) {
    if (opts.tls) throw new AppError('INVALID_ARGUMENT', 'pass either tls or insecure, not both');
    return credentials.createInsecure();
  }
  if (!opts.tls) {
    throw new AppError(
      'INVALID_ARGUMENT',
      'hakod needs mTLS: pass tls ({ dir } from `hako certs init`) or insecure',
    );
  }
  let ca: Buffer;
  let cert: Buffer;
  let key: Buffer;
  if ('dir' in opts.tls) {
    const dir = opts.tls.dir;
    const read = (f: string): Buffer => {
      try {
        return readFileSync(join(dir, f));
      } catch (e) {
        throw new AppError('CONFIG_INVALID', `cannot read ${join(dir, f)}: ${(e as Error).message}`, {
          cause: e,
        });
      }
    };
    ca = read(CLIENT_TLS_FILES.ca);
    cert = read(CLIENT_TLS_FILES.cert);
    key = read(CLIENT_TLS_FILES.key);
  } else {
    ca = pem(opts.tls.caPem);
    cert = pem(opts.tls.certPem);
    key = pem(opts.tls.keyPem);
  }
  return credentials.createSsl(ca, key, cert);
}

/** Adds the bearer token to every call (works on plaintext channels too, unlike call credentials). */
function tokenInterceptor(token: string): Interceptor {
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('authorization', `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

/** Builds an AgentClient. Close it with `client.close()`. */
export function createAgentClient(opts: AgentClientOptions): AgentClient {
  const channelOptions: Partial<ClientOptions> = {
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    ...(opts.serverName === undefined ? {} : { 'grpc.ssl_target_name_override': opts.serverName }),
    ...opts.channelOptions,
  };
  if (opts.token !== undefined) {
    channelOptions.interceptors = [...(channelOptions.interceptors ?? []), tokenInterceptor(opts.token)];
  }
  return new AgentClient(opts.address, channelCredentials(opts), channelOptions);
}

// ------------------------------------------------------------------------------ promise helpers

type Service = typeof AgentService;
/** The names of the unary methods (request and response both single messages). */
export type UnaryMethod = {
  [K in keyof Service]: Service[K]['requestStream'] extends false
    ? Service[K]['responseStream'] extends false
      ? K
      : never
    : never;
}[keyof Service];
export type RequestOf<K extends keyof Service> = Parameters<Service[K]['requestSerialize']>[0];
export type ResponseOf<K extends keyof Service> = ReturnType<Service[K]['responseDeserialize']>;

export interface CallHelperOptions {
  /** Milliseconds from now; default none. */
  readonly timeoutMs?: number | undefined;
  readonly metadata?: Metadata | undefined;
}

function callOptions(o: CallHelperOptions | undefined): Partial<CallOptions> {
  return o?.timeoutMs === undefined ? {} : { deadline: Date.now() + o.timeoutMs };
}

/** Calls a unary method: `await callUnary(client, 'getSandbox', { ownerId, sandboxId })`. */
export function callUnary<K extends UnaryMethod>(
  client: AgentClient,
  method: K,
  request: RequestOf<K>,
  opts?: CallHelperOptions,
): Promise<ResponseOf<K>> {
  const def = AgentService[method];
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      def.path,
      def.requestSerialize as (v: RequestOf<K>) => Buffer,
      def.responseDeserialize as (b: Buffer) => ResponseOf<K>,
      request,
      opts?.metadata ?? new Metadata(),
      callOptions(opts),
      (err: ServiceError | null, res?: ResponseOf<K>) => {
        if (err) reject(errorFromStatus(err));
        else if (res === undefined) reject(new AppError('INTERNAL', `${method}: no response`));
        else resolve(res);
      },
    );
  });
}

export interface ExecResult {
  readonly pid: number;
  readonly stdout: Buffer;
  readonly stderr: Buffer;
  readonly exit: ExecExit;
}

export interface ExecHelperOptions extends CallHelperOptions {
  /** Input for the process; stdin is opened exactly when this is given, and closed after it. */
  readonly stdin?: Buffer | string | Readable | undefined;
  readonly onStarted?: ((pid: number) => void) | undefined;
}

const STDIN_CHUNK = 64 * 1024;

/**
 * Sends a Buffer, string or Readable as chunks of at most STDIN_CHUNK bytes through `write`, waiting
 * for `onDrain` whenever `write` returns false (the call's backpressure).
 */
async function sendChunks(
  input: Buffer | string | Readable,
  write: (chunk: Buffer) => boolean,
  onDrain: (done: () => void) => void,
): Promise<void> {
  const writeChunk = (b: Buffer): Promise<void> =>
    new Promise((res) => {
      if (write(b)) res();
      else onDrain(() => res());
    });
  if (typeof input === 'string' || Buffer.isBuffer(input)) {
    const buf = Buffer.isBuffer(input) ? input : Buffer.from(input);
    for (let i = 0; i < buf.length; i += STDIN_CHUNK) await writeChunk(buf.subarray(i, i + STDIN_CHUNK));
  } else {
    for await (const c of input) await writeChunk(Buffer.isBuffer(c) ? c : Buffer.from(c as string));
  }
}

/** An error reading what a client call uploads, as an AppError. */
function uploadError(e: unknown, what: string): AppError {
  return e instanceof AppError ? e : new AppError('INVALID_ARGUMENT', `${what}: ${(e as Error).message}`);
}

/**
 * Runs one process and collects its output: sends `start` (with `stdin` set when input is given),
 * streams the input, closes stdin, and resolves at the `exit` message.
 */
export function runExec(
  client: AgentClient,
  start: Omit<ExecStart, 'stdin' | 'env' | 'cwd' | 'user' | 'timeoutMs'> & Partial<ExecStart>,
  opts: ExecHelperOptions = {},
): Promise<ExecResult> {
  const call = client.exec(opts.metadata ?? new Metadata(), callOptions(opts));
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let pid = 0;
  let exit: ExecExit | undefined;
  const send = (m: ExecRequest): boolean => call.write(m);
  const input = opts.stdin;
  return new Promise<ExecResult>((resolve, reject) => {
    call.on('data', (m: { msg?: { $case: string } & Record<string, unknown> }) => {
      const msg = m.msg;
      if (!msg) return;
      if (msg.$case === 'started') {
        pid = (msg.started as { pid: number }).pid;
        opts.onStarted?.(pid);
      } else if (msg.$case === 'stdout') out.push(msg.stdout as Buffer);
      else if (msg.$case === 'stderr') err.push(msg.stderr as Buffer);
      else if (msg.$case === 'exit') exit = msg.exit as ExecExit;
    });
    call.on('error', (e: ServiceError) => reject(errorFromStatus(e)));
    call.on('end', () => {
      if (exit) resolve({ pid, stdout: Buffer.concat(out), stderr: Buffer.concat(err), exit });
      else reject(new AppError('INTERNAL', 'the Exec stream ended without an exit message'));
    });
    send({
      msg: {
        $case: 'start',
        start: {
          env: {},
          cwd: '',
          user: '',
          timeoutMs: 0,
          ...start,
          stdin: input !== undefined,
        },
      },
    });
    if (input === undefined) {
      call.end();
      return;
    }
    void sendChunks(
      input,
      (b) => send({ msg: { $case: 'stdin', stdin: b } }),
      (done) => call.once('drain', done),
    ).then(
      () => {
        send({ msg: { $case: 'stdinClose', stdinClose: {} } });
        call.end();
      },
      (e: unknown) => {
        call.cancel();
        reject(uploadError(e, 'reading exec input'));
      },
    );
  });
}

/** Reads workspace files as one tar Buffer. */
export function readFilesTar(
  client: AgentClient,
  req: ReadFilesRequest,
  opts?: CallHelperOptions,
): Promise<Buffer> {
  const call = client.readFiles(req, opts?.metadata ?? new Metadata(), callOptions(opts));
  const parts: Buffer[] = [];
  return new Promise((resolve, reject) => {
    call.on('data', (m: { chunk: Buffer }) => parts.push(m.chunk));
    call.on('error', (e: ServiceError) => reject(errorFromStatus(e)));
    call.on('end', () => resolve(Buffer.concat(parts)));
  });
}

/** Sends a tar stream (Buffer or Readable) into the workspace. */
export function writeFilesTar(
  client: AgentClient,
  header: WriteFilesHeader,
  tar: Buffer | Readable,
  opts?: CallHelperOptions,
): Promise<WriteFilesResponse> {
  return new Promise((resolve, reject) => {
    const call = client.writeFiles(
      opts?.metadata ?? new Metadata(),
      callOptions(opts),
      (err: ServiceError | null, res?: WriteFilesResponse) => {
        if (err) reject(errorFromStatus(err));
        else resolve(res ?? { filesWritten: 0, bytesWritten: 0 });
      },
    );
    call.on('error', () => undefined); // the callback carries the status
    call.write({ msg: { $case: 'header', header } });
    void sendChunks(
      tar,
      (b) => call.write({ msg: { $case: 'chunk', chunk: b } }),
      (done) => call.once('drain', done),
    ).then(
      () => call.end(),
      (e: unknown) => {
        call.cancel();
        reject(uploadError(e, 'reading the tar stream'));
      },
    );
  });
}

/** Pulls an image, reporting progress; resolves with the stored image. */
export function pullImageWithProgress(
  client: AgentClient,
  reference: string,
  opts: CallHelperOptions & {
    readonly auth?: { username: string; password: string } | undefined;
    readonly onProgress?: ((p: PullProgress) => void) | undefined;
  } = {},
): Promise<Image> {
  const call = client.pullImage(
    { reference, auth: opts.auth },
    opts.metadata ?? new Metadata(),
    callOptions(opts),
  );
  let done: Image | undefined;
  return new Promise((resolve, reject) => {
    call.on(
      'data',
      (m: { msg?: { $case: 'progress'; progress: PullProgress } | { $case: 'done'; done: Image } }) => {
        if (m.msg?.$case === 'progress') opts.onProgress?.(m.msg.progress);
        else if (m.msg?.$case === 'done') done = m.msg.done;
      },
    );
    call.on('error', (e: ServiceError) => reject(errorFromStatus(e)));
    call.on('end', () =>
      done ? resolve(done) : reject(new AppError('INTERNAL', 'PullImage ended without a done message')),
    );
  });
}
