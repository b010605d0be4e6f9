/**
 * hakod: the one place that builds every dependency from the configuration and passes it down
 * (CONVENTIONS §3 "wire once"). startAgent() is what `hako agent` and the tests call; closers run in
 * reverse order of construction.
 */
import { join } from 'node:path';
import { createLogger } from '@hako/core';
import type { EnvRecord, Logger } from '@hako/core';
import {
  EGRESS_POOL_DEFAULT,
  buildSandboxHost,
  resolveIpamRange,
  upstreamEnv,
  upstreamNames,
} from '@hako/sandbox';
import type { UpstreamsConfig } from '@hako/sandbox';
import { HakodBackend } from './agent-backend.js';
import {
  CLAUDE_CODE_SANDBOX_PATH,
  checkClaudeCodeBinary,
  claudeCodeBinaryPath,
  loadAgentConfig,
  parseAgentListen,
} from './config.js';
import type { AgentConfig } from './config.js';
import { startAgentServer } from './grpc-server.js';
import { AgentMetrics } from './metrics.js';
import { SandboxManager } from './sandbox-manager.js';
import { SandboxRecordStore } from './sandbox-registry.js';

export const AGENT_VERSION = '0.1.0';

export interface RunningAgent {
  readonly config: AgentConfig;
  /** What clients dial (`host:port` or `unix:/path`). */
  readonly address: string;
  /** `host:port` of /metrics, when enabled. */
  readonly metricsAddress: string | undefined;
  readonly manager: SandboxManager;
  readonly logger: Logger;
  /**
   * Stops serving and closes everything. Claimed sandboxes keep running for the next hakod to adopt
   * unless `destroyAll`; warm ones always go.
   */
  close(opts?: { destroyAll?: boolean }): Promise<void>;
}

function upstreamsFrom(c: AgentConfig): UpstreamsConfig {
  return {
    anthropic:
      c.AGENT_UPSTREAM_ANTHROPIC_API_KEY !== undefined
        ? { baseUrl: c.AGENT_UPSTREAM_ANTHROPIC_URL, apiKey: c.AGENT_UPSTREAM_ANTHROPIC_API_KEY }
        : undefined,
    bedrock:
      c.AGENT_UPSTREAM_BEDROCK_ACCESS_KEY_ID !== undefined &&
      c.AGENT_UPSTREAM_BEDROCK_SECRET_ACCESS_KEY !== undefined &&
      c.AGENT_UPSTREAM_BEDROCK_REGION !== undefined
        ? {
            region: c.AGENT_UPSTREAM_BEDROCK_REGION,
            accessKeyId: c.AGENT_UPSTREAM_BEDROCK_ACCESS_KEY_ID,
            secretAccessKey: c.AGENT_UPSTREAM_BEDROCK_SECRET_ACCESS_KEY,
            sessionToken: c.AGENT_UPSTREAM_BEDROCK_SESSION_TOKEN,
            endpoint: c.AGENT_UPSTREAM_BEDROCK_ENDPOINT,
          }
        : undefined,
  };
}

/** Builds hakod from an environment record, reconciles what a previous hakod left, and serves. */
export async function startAgent(env: EnvRecord, opts: { logger?: Logger } = {}): Promise<RunningAgent> {
  const config = loadAgentConfig(env);
  const logger = opts.logger ?? createLogger({ level: config.HAKO_LOG_LEVEL, name: 'hakod' });
  const closers: { name: string; close: () => Promise<void> }[] = [];
  let destroyAllOnClose = false;
  const closeAll = async (): Promise<void> => {
    for (const c of closers.reverse()) {
      await c.close().catch((err: unknown) => logger.error({ err, closer: c.name }, 'closing failed'));
    }
  };
  try {
    const upstreams = upstreamsFrom(config);
    const claudeCode = claudeCodeBinaryPath(config);
    if (claudeCode !== undefined) await checkClaudeCodeBinary(claudeCode);
    const built = await buildSandboxHost(config, logger, {
      proxy: { upstreams },
      egressPool: EGRESS_POOL_DEFAULT,
      binds:
        claudeCode === undefined
          ? []
          : [{ destination: CLAUDE_CODE_SANDBOX_PATH, source: claudeCode, readonly: true }],
    });
    closers.push({ name: 'sandbox host', close: () => built.close() });
    await built.host.init();
    const range = resolveIpamRange({
      subnet: config.CNI_SUBNET,
      rangeStart: config.CNI_RANGE_START,
      rangeEnd: config.CNI_RANGE_END,
      gateway: config.CNI_GATEWAY,
    });
    const records = new SandboxRecordStore(join(config.HAKO_RUN_DIR, config.HAKO_ENV, '.agent'));
    await records.init();
    const metrics = new AgentMetrics({ logger });
    const manager = new SandboxManager({
      config: {
        env: config.HAKO_ENV,
        defaults: {
          cpus: config.AGENT_DEFAULT_CPUS,
          memoryBytes: config.AGENT_DEFAULT_MEMORY,
          pids: config.AGENT_DEFAULT_PIDS,
          diskBytes: config.AGENT_DEFAULT_DISK,
          tmpBytes: config.AGENT_DEFAULT_TMP,
        },
        maxSandboxes: config.AGENT_MAX_SANDBOXES,
        poolMin: config.AGENT_POOL_MIN,
        poolMax: config.AGENT_POOL_MAX,
        idleTtlMs: config.AGENT_IDLE_TTL,
        sandboxTtlMs: config.AGENT_SANDBOX_TTL,
        sandboxUid: config.HAKO_SANDBOX_UID,
      },
      host: built.host,
      records,
      logger,
      observer: {
        observeCreate: (source, s) => metrics.observeCreate(source, s),
        observeExec: (s) => metrics.observeExec(s),
        observeDestroy: (s) => metrics.observeDestroy(s),
        oomKill: () => metrics.countOomKills(1),
        gcResult: (removed, failed) => {
          metrics.countGcRemoved(removed);
          metrics.countGcFailed(failed);
        },
      },
      // the proxy listens from the first egress sandbox on: before that only the names are checked
      upstreamEnv: (names) =>
        built.proxy.url === ''
          ? (upstreamNames(names, upstreams), {})
          : upstreamEnv(names, built.proxy.url, upstreams),
      setEgressPolicy: (sb, allow, names) => built.host.setEgressPolicy(sb, allow, names),
    });
    closers.push({ name: 'sandboxes', close: () => manager.close({ destroyAll: destroyAllOnClose }) });
    metrics.setCollectors({
      sandboxStates: () => manager.counts(),
      warmPool: () => manager.warmByProfile(),
    });

    const rec = await manager.reconcile();
    logger.info(rec, 'reconciled what the previous hakod left');

    const backend = new HakodBackend({
      manager,
      images: built.images,
      version: AGENT_VERSION,
      runtime: built.runtimeName,
      cgroupVersion: built.cgroups.version,
      env: config.HAKO_ENV,
      network: { subnet: config.CNI_SUBNET, gateway: range.gateway },
      maxSandboxes: config.AGENT_MAX_SANDBOXES,
      invokeMaxResponseBytes: config.AGENT_INVOKE_MAX_RESPONSE_SIZE,
      fileLimits: {
        maxFileBytes: config.AGENT_MAX_FILE_BYTES,
        maxTotalBytes: config.AGENT_MAX_TRANSFER_BYTES,
        maxEntries: 100_000,
      },
      sandboxUid: config.HAKO_SANDBOX_UID,
    });
    let metricsAddress: string | undefined;
    if (config.AGENT_METRICS_LISTEN !== '') {
      const m = parseAgentListen(config.AGENT_METRICS_LISTEN);
      if (m.kind !== 'tcp') throw new Error('AGENT_METRICS_LISTEN must be host:port');
      const { port } = await metrics.startServer(m.host, m.port);
      metricsAddress = `${m.host}:${port}`;
      closers.push({ name: 'metrics', close: () => metrics.close() });
    }
    const server = await startAgentServer({
      config,
      backend,
      logger,
      onError: (rpc, code) => metrics.countRpcError(rpc, code),
    });
    closers.push({ name: 'grpc server', close: () => server.close() });

    manager.startSweeper(config.AGENT_GC_INTERVAL);
    if (config.AGENT_POOL_MIN > 0) manager.warm('host', {}, 'none');
    logger.info(
      {
        address: server.address,
        metrics: metricsAddress,
        runtime: built.runtimeName,
        claudeCode: claudeCode ?? 'none',
      },
      'hakod ready',
    );

    return {
      config,
      address: server.address,
      metricsAddress,
      manager,
      logger,
      close: async (o = {}) => {
        destroyAllOnClose = o.destroyAll ?? false;
        await closeAll();
      },
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}
