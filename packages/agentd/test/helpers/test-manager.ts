/** A SandboxManager on a real sandbox host, for the privileged tests of the manager and its GC. */
import { join } from 'node:path';
import type { Logger, SandboxHostConfig } from '@hako/core';
import { EGRESS_POOL_DEFAULT, buildSandboxHost } from '@hako/sandbox';
import type { BuiltSandboxHost } from '@hako/sandbox';
import { SandboxManager } from '../../src/sandbox-manager.js';
import type { SandboxManagerDeps } from '../../src/sandbox-manager.js';
import { SandboxRecordStore } from '../../src/sandbox-registry.js';
import type { CreateInput, ExecInput } from '../../src/backend.js';

export interface TestManager {
  readonly m: SandboxManager;
  readonly b: BuiltSandboxHost;
  readonly records: SandboxRecordStore;
}

/** Small default limits; records where hakod keeps them; no upstreams unless given. */
export async function newTestManager(
  config: SandboxHostConfig,
  logger: Logger,
  opts: { poolMin?: number; poolMax?: number; upstreamEnv?: SandboxManagerDeps['upstreamEnv'] } = {},
): Promise<TestManager> {
  // wired as hakod's main() does
  const b = await buildSandboxHost(config, logger, { egressPool: EGRESS_POOL_DEFAULT });
  await b.host.init();
  const records = new SandboxRecordStore(join(config.HAKO_RUN_DIR, config.HAKO_ENV, '.agent'));
  await records.init();
  const m = new SandboxManager({
    config: {
      env: config.HAKO_ENV,
      defaults: {
        cpus: 1,
        memoryBytes: 256 * 2 ** 20,
        pids: 128,
        diskBytes: 64 * 2 ** 20,
        tmpBytes: 16 * 2 ** 20,
      },
      maxSandboxes: 20,
      poolMin: opts.poolMin ?? 0,
      poolMax: opts.poolMax ?? 3,
      idleTtlMs: 3_600_000,
      sandboxTtlMs: 8 * 3_600_000,
      sandboxUid: config.HAKO_SANDBOX_UID,
    },
    host: b.host,
    records,
    logger,
    upstreamEnv: opts.upstreamEnv ?? (() => ({})),
    setEgressPolicy: (sb, allow, up) => b.host.setEgressPolicy(sb, allow, up),
  });
  return { m, b, records };
}

/** A CreateSandbox input for tenant-a on the host image, no network, node defaults; `over` wins. */
export function createInput(over: Partial<CreateInput> = {}): CreateInput {
  return {
    ownerId: 'tenant-a',
    image: 'host',
    labels: {},
    limits: {},
    network: 'none',
    egressAllow: [],
    env: {},
    upstreams: [],
    ttlSeconds: 0,
    idleTimeoutSeconds: 0,
    ...over,
  };
}

/** An Exec input for tenant-a as the sandbox user in /workspace, without stdin; `over` wins. */
export function execInput(id: string, argv: readonly string[], over: Partial<ExecInput> = {}): ExecInput {
  return {
    ownerId: 'tenant-a',
    sandboxId: id,
    argv,
    env: {},
    cwd: '',
    user: '',
    stdin: false,
    timeoutMs: 0,
    ...over,
  };
}
