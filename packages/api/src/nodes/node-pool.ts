/**
 * The hakod nodes this API process may place sandboxes on, from configuration. The pool keeps one
 * AgentClient per node, asks every node for GetNodeInfo every `pollIntervalMs` (on an unref'd
 * timer), marks a node unhealthy when a call to it fails (the poll, or any caller through
 * markUnhealthy) and healthy again at its next good answer, and picks the least-loaded healthy
 * node for a new sandbox.
 *
 * Load is the node's live (claimed) sandboxes over its AGENT_MAX_SANDBOXES, plus the sandboxes this
 * pool created there since the last answer, so a burst of creates between two polls spreads out.
 *
 * Call order: construct, `start()` (first poll), then `pickNode()` / `node()` / `healthyNodes()`
 * freely, `close()` last.
 */
import { AppError, isAppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { callUnary, createAgentClient } from '@hako/agentd';
import type { AgentClient, GetNodeInfoResponse } from '@hako/proto';

/** One configured hakod. */
export interface NodeEndpoint {
  /** Stable name, stored with a conversation's sandbox (conversations.sandbox_node). */
  readonly name: string;
  /** `host:port` or `unix:/path`. */
  readonly address: string;
  /** Directory with the client files `hako certs init` writes (ca.pem, client.pem, client-key.pem). */
  readonly tlsDir?: string | undefined;
  /** Plaintext, for a loopback or unix-socket hakod started with AGENT_INSECURE=1 (tlsDir must be unset). */
  readonly insecure?: boolean | undefined;
  /** hakod's AGENT_AUTH_TOKEN, sent as a bearer token, when it has one. */
  readonly token?: string | undefined;
  /** Name to verify hakod's certificate against when it differs from the address's host. */
  readonly serverName?: string | undefined;
}

/** A node as callers use it. */
export interface PooledNode {
  readonly name: string;
  readonly address: string;
  readonly client: AgentClient;
}

/** What the pool knows about a node (for health endpoints and `hako doctor`). */
export interface NodeStatus {
  readonly name: string;
  readonly address: string;
  readonly healthy: boolean;
  /** The node's last good GetNodeInfo answer; undefined before the first one. */
  readonly info: GetNodeInfoResponse | undefined;
  /** Sandboxes this pool created on the node since that answer. */
  readonly pendingCreates: number;
  /** Why it is unhealthy (the failed call's message); undefined when healthy. */
  readonly lastError: string | undefined;
  /** When the node last answered or failed (ms since the epoch); undefined before the first poll. */
  readonly checkedAt: number | undefined;
}

export interface NodePoolOptions {
  readonly nodes: readonly NodeEndpoint[];
  readonly logger: Logger;
  /** How often every node is asked for GetNodeInfo; default 10 s. */
  readonly pollIntervalMs?: number | undefined;
  /** Deadline of one GetNodeInfo call; default 3 s. */
  readonly callTimeoutMs?: number | undefined;
  /** Builds a node's client; default createAgentClient with the endpoint's TLS settings. */
  readonly createClient?: ((node: NodeEndpoint) => AgentClient) | undefined;
}

export const DEFAULT_NODE_POLL_INTERVAL_MS = 10_000;
export const DEFAULT_NODE_CALL_TIMEOUT_MS = 3_000;

interface NodeState {
  readonly endpoint: NodeEndpoint;
  readonly pooled: PooledNode;
  healthy: boolean;
  info: GetNodeInfoResponse | undefined;
  pendingCreates: number;
  lastError: string | undefined;
  checkedAt: number | undefined;
}

/** A healthy node's place in the order pickNode chooses by. */
export interface NodeLoad {
  readonly name: string;
  /** Live sandboxes, the pool's own recent creates included. */
  readonly used: number;
  /** The node's maximum (0: unknown, treated as unlimited). */
  readonly max: number;
}

/**
 * The least-loaded node with room (used < max): lowest used/max, then fewest used, then the first
 * in configuration order. Undefined when none has room.
 */
export function leastLoaded(loads: readonly NodeLoad[]): NodeLoad | undefined {
  let best: NodeLoad | undefined;
  let bestRatio = Infinity;
  for (const l of loads) {
    if (l.max > 0 && l.used >= l.max) continue;
    const ratio = l.max > 0 ? l.used / l.max : 0;
    if (best === undefined || ratio < bestRatio || (ratio === bestRatio && l.used < best.used)) {
      best = l;
      bestRatio = ratio;
    }
  }
  return best;
}

function defaultClient(n: NodeEndpoint): AgentClient {
  return createAgentClient({
    address: n.address,
    tls: n.tlsDir === undefined ? undefined : { dir: n.tlsDir },
    insecure: n.insecure,
    token: n.token,
    serverName: n.serverName,
  });
}

export class NodePool {
  private readonly states: NodeState[];
  private readonly byName = new Map<string, NodeState>();
  private readonly logger: Logger;
  private readonly pollIntervalMs: number;
  private readonly callTimeoutMs: number;
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private closed = false;

  /** Builds a client per node (no network yet). CONFIG_INVALID for an empty list or a repeated name. */
  constructor(opts: NodePoolOptions) {
    if (opts.nodes.length === 0) {
      throw new AppError(
        'CONFIG_INVALID',
        'no hakod node is configured: give at least one { name, address, tlsDir }',
      );
    }
    this.logger = opts.logger;
    this.pollIntervalMs = opts.pollIntervalMs ?? DEFAULT_NODE_POLL_INTERVAL_MS;
    this.callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_NODE_CALL_TIMEOUT_MS;
    const create = opts.createClient ?? defaultClient;
    this.states = [];
    try {
      for (const endpoint of opts.nodes) {
        if (endpoint.name === '' || this.byName.has(endpoint.name)) {
          throw new AppError(
            'CONFIG_INVALID',
            `hakod node names must be unique and non-empty (${JSON.stringify(endpoint.name)} at ${endpoint.address})`,
          );
        }
        const state: NodeState = {
          endpoint,
          pooled: { name: endpoint.name, address: endpoint.address, client: create(endpoint) },
          healthy: false,
          info: undefined,
          pendingCreates: 0,
          lastError: 'not polled yet',
          checkedAt: undefined,
        };
        this.states.push(state);
        this.byName.set(endpoint.name, state);
      }
    } catch (e) {
      for (const s of this.states) s.pooled.client.close();
      throw e;
    }
  }

  /** Polls every node once (resolves when all answered or failed), then every pollIntervalMs. */
  async start(): Promise<void> {
    await this.refresh();
    if (this.closed || this.timer !== undefined) return;
    this.timer = setInterval(() => void this.refresh(), this.pollIntervalMs);
    this.timer.unref();
  }

  /** Polls every node now; concurrent calls share one round. Never rejects (failures mark nodes). */
  refresh(): Promise<void> {
    this.polling ??= Promise.all(this.states.map((s) => this.poll(s))).then(
      () => {
        this.polling = undefined;
      },
      () => {
        this.polling = undefined;
      },
    );
    return this.polling;
  }

  private async poll(s: NodeState): Promise<void> {
    const pendingAtStart = s.pendingCreates;
    try {
      const info = await callUnary(s.pooled.client, 'getNodeInfo', {}, { timeoutMs: this.callTimeoutMs });
      if (this.closed) return;
      // Creates made before this answer are counted in it; later ones stay pending.
      s.pendingCreates = Math.max(0, s.pendingCreates - pendingAtStart);
      s.info = info;
      s.checkedAt = Date.now();
      if (!s.healthy) {
        this.logger.info(
          {
            node: s.pooled.name,
            address: s.pooled.address,
            sandboxes: info.sandboxes,
            max: info.maxSandboxes,
          },
          'hakod node is healthy',
        );
      }
      s.healthy = true;
      s.lastError = undefined;
    } catch (e) {
      if (!this.closed) this.markUnhealthy(s.pooled.name, e);
    }
  }

  /** Marks a node unhealthy after a failed call to it (until its next good GetNodeInfo). */
  markUnhealthy(name: string, err: unknown): void {
    const s = this.byName.get(name);
    if (s === undefined) return;
    const msg = isAppError(err)
      ? `[${err.code}] ${err.message}`
      : err instanceof Error
        ? err.message
        : String(err);
    if (s.healthy || s.checkedAt === undefined) {
      this.logger.warn({ node: name, address: s.pooled.address, err: msg }, 'hakod node is unhealthy');
    }
    s.healthy = false;
    s.lastError = msg;
    s.checkedAt = Date.now();
  }

  /** Counts a sandbox this pool's caller just created on `name` until the next poll sees it. */
  noteCreated(name: string): void {
    const s = this.byName.get(name);
    if (s !== undefined) s.pendingCreates++;
  }

  /** Records that `name` answered POOL_EXHAUSTED: it counts as full until its next poll. */
  noteFull(name: string): void {
    const s = this.byName.get(name);
    if (s?.info !== undefined)
      s.pendingCreates = Math.max(s.pendingCreates, s.info.maxSandboxes - s.info.sandboxes);
  }

  /**
   * The least-loaded healthy node with room, skipping `exclude`. When none qualifies, polls every
   * node once more (one may have come back) before giving up with NO_HEALTHY_NODE.
   */
  async pickNode(exclude: ReadonlySet<string> = new Set()): Promise<PooledNode> {
    const first = this.choose(exclude);
    if (first !== undefined) return first;
    await this.refresh();
    const second = this.choose(exclude);
    if (second !== undefined) return second;
    const why = this.states
      .map((s) =>
        exclude.has(s.pooled.name)
          ? `${s.pooled.name}: failed just now`
          : s.healthy
            ? `${s.pooled.name}: full (${s.info?.sandboxes ?? 0} of ${s.info?.maxSandboxes ?? 0} sandboxes)`
            : `${s.pooled.name} (${s.pooled.address}): ${s.lastError ?? 'unhealthy'}`,
      )
      .join('; ');
    throw new AppError(
      'NO_HEALTHY_NODE',
      `no hakod node can take a new sandbox: ${why}; start or fix a node, or raise AGENT_MAX_SANDBOXES`,
    );
  }

  private choose(exclude: ReadonlySet<string>): PooledNode | undefined {
    const loads: NodeLoad[] = [];
    for (const s of this.states) {
      if (!s.healthy || s.info === undefined || exclude.has(s.pooled.name)) continue;
      loads.push({
        name: s.pooled.name,
        used: s.info.sandboxes + s.pendingCreates,
        max: s.info.maxSandboxes,
      });
    }
    const best = leastLoaded(loads);
    return best === undefined ? undefined : this.byName.get(best.name)?.pooled;
  }

  /** The configured node named `name` (healthy or not); undefined when there is none. */
  node(name: string): PooledNode | undefined {
    return this.byName.get(name)?.pooled;
  }

  /** Whether `name` is configured and answered its last call. */
  isHealthy(name: string): boolean {
    return this.byName.get(name)?.healthy ?? false;
  }

  /** Healthy nodes in configuration order. */
  healthyNodes(): PooledNode[] {
    return this.states.filter((s) => s.healthy).map((s) => s.pooled);
  }

  /** Every node's state, in configuration order. */
  status(): NodeStatus[] {
    return this.states.map((s) => ({
      name: s.pooled.name,
      address: s.pooled.address,
      healthy: s.healthy,
      info: s.info,
      pendingCreates: s.pendingCreates,
      lastError: s.lastError,
      checkedAt: s.checkedAt,
    }));
  }

  /** Stops polling and closes every client. */
  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    for (const s of this.states) s.pooled.client.close();
  }
}
