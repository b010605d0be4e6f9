/** The one place the CLI builds the sandbox host and its drivers from the configuration. */
import { join } from 'node:path';
import { createLogger, parseConfig, sandboxHostConfigSchema } from '@hako/core';
import type { EnvRecord, Logger, SandboxHostConfig } from '@hako/core';
import {
  CniNetworkManager,
  HttpEgressProxy,
  LocalImageStore,
  SandboxHost,
  createQuotaManager,
  chooseRuntime,
  createCgroupManager,
  createRuntime,
  detectCgroupLayout,
} from '@hako/sandbox';
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
  overrides: { runtime?: RuntimeName | undefined } = {},
): Promise<Wired> {
  const config = loadConfig(env);
  const logger = createLogger({ level: config.HAKO_LOG_LEVEL, name: 'hako' });
  const layout = await detectCgroupLayout();
  const choice = await chooseRuntime(overrides.runtime ?? config.HAKO_RUNTIME, layout);
  const cgroups = createCgroupManager(layout, { env: config.HAKO_ENV, logger });
  const runtime = createRuntime(
    choice,
    join(config.HAKO_RUN_DIR, config.HAKO_ENV, `.${choice.name}`),
    logger,
    cgroups.version,
  );
  const quota = await createQuotaManager({
    env: config.HAKO_ENV,
    stateDir: config.HAKO_STATE_DIR,
    volumeBytes: config.HAKO_QUOTA_VOLUME_SIZE,
    logger,
  });
  const images = new LocalImageStore({ root: join(config.HAKO_STATE_DIR, 'images'), logger });
  const network = new CniNetworkManager({
    env: config.HAKO_ENV,
    bridge: config.HAKO_BRIDGE,
    subnet: config.CNI_SUBNET,
    rangeStart: config.CNI_RANGE_START,
    rangeEnd: config.CNI_RANGE_END,
    gateway: config.CNI_GATEWAY,
    pluginDirs: config.CNI_PLUGIN_DIRS.split(':').filter(Boolean),
    stateDir: join(config.HAKO_STATE_DIR, 'cni'),
    proxyPorts: { first: config.HAKO_PROXY_PORT, count: config.HAKO_PROXY_PORT_COUNT },
    logger,
  });
  const proxy = new HttpEgressProxy({ logger });
  const host = new SandboxHost({ config, runtime, cgroups, quota, images, network, proxy, logger });
  return {
    config,
    host,
    logger,
    runtimeName: choice.name,
    images,
    network,
    proxy,
    close: async () => {
      await proxy.close();
      await quota.close();
    },
  };
}
