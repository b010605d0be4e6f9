/**
 * hakod's gRPC server: the Agent service (grpc-service.ts), the standard health service, and server
 * reflection only when AGENT_GRPC_REFLECTION=1. TLS requires a client certificate that chains to the
 * configured CA (mTLS); plaintext only when the config allowed it, which it does only on a unix
 * socket or a loopback address (checked again here).
 */
import { chmod, lstat, mkdir, readFile, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import type { AgentBackend } from './backend.js';
import { formatAgentListen, isLoopbackListen } from './config.js';
import type { AgentConfig } from './config.js';
import { createAgentService } from './grpc-service.js';
import type { AgentServiceLimits } from './grpc-service.js';

/** The fully qualified service name, as health checks and reflection know it. */
export const AGENT_SERVICE_NAME = 'hako.agent.v1.Agent';

/** packages/proto, which holds hako/agent/v1/agent.proto (the same from src/ and dist/). */
const PROTO_ROOT = fileURLToPath(new URL('../../proto/', import.meta.url));
const PROTO_FILE = 'hako/agent/v1/agent.proto';

export interface StartAgentServerOptions {
  readonly config: Pick<
    AgentConfig,
    'listen' | 'plaintext' | 'tls' | 'AGENT_AUTH_TOKEN' | 'AGENT_GRPC_REFLECTION' | 'AGENT_MAX_TRANSFER_BYTES'
  >;
  readonly backend: AgentBackend;
  readonly logger: Logger;
  /** Exec keepalive interval; default 15 s (tests shorten it). */
  readonly keepaliveMs?: number | undefined;
  readonly limits?: Partial<AgentServiceLimits> | undefined;
  /** Called with the RPC and hako error code of every failed call (metrics). */
  readonly onError?: ((rpc: string, code: string) => void) | undefined;
  /** How long close() lets calls finish before cutting them; default 10 s. */
  readonly shutdownTimeoutMs?: number | undefined;
}

export interface RunningAgentServer {
  /** What a client dials: `host:port` (the bound port when AGENT_LISTEN asked for 0) or `unix:/path`. */
  readonly address: string;
  /** Stops taking calls, lets running ones finish until the shutdown deadline, then cuts them. */
  close(): Promise<void>;
}

async function readTlsFile(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    throw new AppError(
      'CONFIG_INVALID',
      `cannot read the ${what} ${path} (AGENT_TLS_DIR or AGENT_GRPC_*_PATH): ${(e as Error).message}; \`hako certs init --dir DIR\` writes a set`,
      { cause: e },
    );
  }
}

async function credentialsFor(config: StartAgentServerOptions['config']): Promise<ServerCredentials> {
  if (config.plaintext) {
    if (!isLoopbackListen(config.listen)) {
      throw new AppError(
        'CONFIG_INVALID',
        `plaintext gRPC is refused on ${formatAgentListen(config.listen)}: only a unix socket or a loopback address may go without TLS`,
      );
    }
    return ServerCredentials.createInsecure();
  }
  if (!config.tls) {
    throw new AppError(
      'CONFIG_INVALID',
      'TLS is on but no CA, certificate and key are configured (AGENT_TLS_DIR)',
    );
  }
  const [ca, cert, key] = await Promise.all([
    readTlsFile(config.tls.caPath, 'CA certificate'),
    readTlsFile(config.tls.certPath, 'server certificate'),
    readTlsFile(config.tls.keyPath, 'server key'),
  ]);
  // checkClientCertificate = true: a client without a certificate from this CA fails the handshake.
  return ServerCredentials.createSsl(ca, [{ cert_chain: cert, private_key: key }], true);
}

/** Removes a stale socket file left by an earlier run; refuses to touch anything else. */
async function prepareUnixPath(path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const st = await lstat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (st === undefined) return;
  if (!st.isSocket()) {
    throw new AppError(
      'CONFIG_INVALID',
      `AGENT_LISTEN ${path} exists and is not a socket; remove it or pick another path`,
    );
  }
  await unlink(path);
}

function bind(server: Server, target: string, creds: ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(target, creds, (err, port) => {
      if (err) {
        reject(
          new AppError('CONFIG_INVALID', `cannot listen on ${target} (AGENT_LISTEN): ${err.message}`, {
            cause: err,
          }),
        );
      } else resolve(port);
    });
  });
}

/** Builds, binds and starts hakod's gRPC server. */
export async function startAgentServer(opts: StartAgentServerOptions): Promise<RunningAgentServer> {
  const { config, backend, logger } = opts;
  const creds = await credentialsFor(config);
  const server = new Server({
    // InvokeWorker bodies and WriteFiles chunks; the service bounds each field itself.
    'grpc.max_receive_message_length': 17 * 1024 * 1024,
  });
  const token = config.AGENT_AUTH_TOKEN;
  const { definition, implementation } = createAgentService(backend, {
    logger,
    auth: token === undefined ? undefined : { token },
    limits: { maxWriteBytes: config.AGENT_MAX_TRANSFER_BYTES, ...opts.limits },
    keepaliveMs: opts.keepaliveMs,
    onError: opts.onError,
  });
  server.addService(definition, implementation);

  const health = new HealthImplementation({ '': 'SERVING', [AGENT_SERVICE_NAME]: 'SERVING' });
  health.addToServer(server);

  if (config.AGENT_GRPC_REFLECTION) {
    const pkg = loadSync(PROTO_FILE, { includeDirs: [PROTO_ROOT] });
    new ReflectionService(pkg).addToServer(server);
    logger.warn('gRPC server reflection is on (AGENT_GRPC_REFLECTION=1)');
  }

  const listen = config.listen;
  if (listen.kind === 'unix') await prepareUnixPath(listen.path);
  const port = await bind(server, formatAgentListen(listen), creds).catch((e: unknown) => {
    server.forceShutdown();
    throw e;
  });
  if (listen.kind === 'unix') await chmod(listen.path, 0o600);
  const address = listen.kind === 'unix' ? formatAgentListen(listen) : formatAgentListen({ ...listen, port });
  logger.info({ address, tls: !config.plaintext, auth: token !== undefined }, 'hakod gRPC listening');

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      health.setStatus('', 'NOT_SERVING');
      health.setStatus(AGENT_SERVICE_NAME, 'NOT_SERVING');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          logger.warn('gRPC calls still running at the shutdown deadline; cutting them');
          server.forceShutdown();
          resolve();
        }, opts.shutdownTimeoutMs ?? 10_000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      if (listen.kind === 'unix') await unlink(listen.path).catch(() => undefined);
    })();
    return closing;
  };
  return { address, close };
}
