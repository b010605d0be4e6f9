/**
 * Shared set-up for the gRPC integration tests: certificates made by `hako certs init`'s own
 * function in a temporary directory, hakod's server on a free loopback port, clients.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Metadata } from '@grpc/grpc-js';
import type { ServiceError } from '@grpc/grpc-js';
import { silentLogger } from '@hako/core';
import type { Logger } from '@hako/core';
import { ERROR_CODE_TRAILER } from '@hako/proto';
import type { AgentClient } from '@hako/proto';
import { certsInit } from '../../../cli/src/certs.js';
import { createAgentClient } from '../../src/client.js';
import type { AgentClientOptions } from '../../src/client.js';
import { loadAgentConfig } from '../../src/config.js';
import { startAgentServer } from '../../src/grpc-server.js';
import type { RunningAgentServer, StartAgentServerOptions } from '../../src/grpc-server.js';
import type { AgentBackend } from '../../src/backend.js';

export interface Pki {
  readonly root: string;
  /** hakod's CA, server and client files. */
  readonly tls: string;
  /** A second, unrelated CA with its own client certificate. */
  readonly other: string;
  cleanup(): Promise<void>;
}

export async function makePki(): Promise<Pki> {
  const root = await mkdtemp(join(tmpdir(), 'hako-grpc-'));
  try {
    const tls = join(root, 'tls');
    const other = join(root, 'other');
    await certsInit({ dir: tls, hosts: [], days: 2, force: false });
    await certsInit({ dir: other, hosts: [], days: 2, force: false });
    return { root, tls, other, cleanup: () => rm(root, { recursive: true, force: true }) };
  } catch (e) {
    await rm(root, { recursive: true, force: true });
    throw e;
  }
}

export interface Harness {
  readonly server: RunningAgentServer;
  readonly clients: AgentClient[];
  client(opts?: Partial<AgentClientOptions>): AgentClient;
  close(): Promise<void>;
}

/**
 * Starts hakod's server with `env` on top of a free loopback port (and, unless plaintext, the PKI's
 * TLS dir), and makes clients that are closed with the server.
 */
export async function startHarness(
  backend: AgentBackend,
  env: Record<string, string>,
  pki: Pki | undefined,
  extra: Partial<Omit<StartAgentServerOptions, 'config' | 'backend'>> & { logger?: Logger } = {},
): Promise<Harness> {
  const config = loadAgentConfig({
    AGENT_LISTEN: '127.0.0.1:0',
    ...(pki ? { AGENT_TLS_DIR: pki.tls } : {}),
    ...env,
  });
  const server = await startAgentServer({ logger: silentLogger(), ...extra, config, backend });
  const clients: AgentClient[] = [];
  return {
    server,
    clients,
    client(opts = {}) {
      const c = createAgentClient({
        address: server.address,
        ...(config.plaintext ? { insecure: true } : { tls: { dir: pki?.tls ?? '' } }),
        ...opts,
      });
      clients.push(c);
      return c;
    },
    async close() {
      for (const c of clients) c.close();
      await server.close();
    },
  };
}

/** Runs a raw unary call and returns the error (or undefined on success). */
export function rawUnary<Req>(
  fn: (req: Req, md: Metadata, cb: (err: ServiceError | null) => void) => unknown,
  req: Req,
  md: Metadata = new Metadata(),
): Promise<ServiceError | undefined> {
  return new Promise((resolve) => {
    fn(req, md, (err) => resolve(err ?? undefined));
  });
}

export function trailerCode(err: ServiceError | undefined): string | undefined {
  const v = err?.metadata?.get(ERROR_CODE_TRAILER)[0];
  return typeof v === 'string' ? v : undefined;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
