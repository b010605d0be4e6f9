/**
 * Builds a SandboxHost and its drivers from the host configuration: the one place that chooses the
 * runtime, cgroup manager, quota engine, image store, network and proxy. The CLI and hakod both
 * call it from their own wiring.
 */
import { join } from 'node:path';
import type { Logger, SandboxHostConfig } from '@hako/core';
import { detectCgroupLayout } from './cgroup-layout.js';
import { createCgroupManager } from './cgroup-factory.js';
import { HttpEgressProxy } from './egress-proxy.js';
import type { BindMount } from './oci-spec.js';
import type { HttpEgressProxyOptions } from './egress-proxy.js';
import { LocalImageStore } from './image-store.js';
import { CniNetworkManager } from './network-manager.js';
import { createQuotaManager } from './quota.js';
import { chooseRuntime, createRuntime } from './runtime-select.js';
import type { RuntimeName } from './oci-runtime.js';
import { SandboxHost } from './sandbox-host.js';
import type { CgroupManager, QuotaManager } from './types.js';

export interface BuiltSandboxHost {
  readonly host: SandboxHost;
  readonly runtimeName: RuntimeName;
  readonly cgroups: CgroupManager;
  readonly quota: QuotaManager;
  readonly images: LocalImageStore;
  readonly network: CniNetworkManager;
  readonly proxy: HttpEgressProxy;
  /**
   * Closes the host (releases its ready egress identities, waits for background releases), the
   * proxy, then waits for the quota engine's background work.
   */
  close(): Promise<void>;
}

export async function buildSandboxHost(
  config: SandboxHostConfig,
  logger: Logger,
  overrides: {
    runtime?: RuntimeName | undefined;
    proxy?: Omit<HttpEgressProxyOptions, 'logger'>;
    /** Read-only binds into every sandbox (SandboxHostDeps.binds). */
    binds?: readonly BindMount[] | undefined;
    /** Egress identities to keep ready (SandboxHostDeps.egressPool; hakod: EGRESS_POOL_DEFAULT). */
    egressPool?: number | undefined;
  } = {},
): Promise<BuiltSandboxHost> {
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
  const proxy = new HttpEgressProxy({ ...overrides.proxy, logger });
  const host = new SandboxHost({
    config,
    runtime,
    cgroups,
    quota,
    images,
    network,
    proxy,
    binds: overrides.binds,
    egressPool: overrides.egressPool,
    logger,
  });
  return {
    host,
    runtimeName: choice.name,
    cgroups,
    quota,
    images,
    network,
    proxy,
    close: async () => {
      await host.close();
      await proxy.close();
      await quota.close();
    },
  };
}
