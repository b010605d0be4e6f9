/** The one place the CLI builds the sandbox host and its drivers from the configuration. */
import { createLogger, parseConfig, sandboxHostConfigSchema } from '@hako/core';
import type { EnvRecord, Logger, SandboxHostConfig } from '@hako/core';
import { buildSandboxHost } from '@hako/sandbox';
import type { CniNetworkManager, HttpEgressProxy, LocalImageStore, SandboxHost } from '@hako/sandbox';
import type { RuntimeName } from '@hako/sandbox';

export interface Wired {
  readonly config: SandboxHostConfig;
  readonly host: SandboxHost;
  readonly logger: Logger;
  readonly runtimeName: RuntimeName;
  readonly images: LocalImageStore;
  readonly network: CniNetworkManager;
  readonly proxy: HttpEgressProxy;
  /** Closers in reverse order of construction. */
  close(): Promise<void>;
}

export function loadConfig(env: EnvRecord): SandboxHostConfig {
  return parseConfig(sandboxHostConfigSchema, env);
}

export async function wireSandboxHost(
  env: EnvRecord,
  overrides: { runtime?: RuntimeName | undefined; egressPool?: number | undefined } = {},
): Promise<Wired> {
  const config = loadConfig(env);
  const logger = createLogger({ level: config.HAKO_LOG_LEVEL, name: 'hako' });
  const built = await buildSandboxHost(config, logger, {
    runtime: overrides.runtime,
    egressPool: overrides.egressPool,
  });
  return {
    config,
    host: built.host,
    logger,
    runtimeName: built.runtimeName,
    images: built.images,
    network: built.network,
    proxy: built.proxy,
    close: () => built.close(),
  };
}
