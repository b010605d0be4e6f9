/**
 * One sandbox per conversation, on some hakod node: ensureSandbox reuses the conversation's live
 * sandbox (the one recorded with the conversation, else one found by its labels on any healthy
 * node) and otherwise creates one on the least-loaded healthy node. The sandbox belongs to the
 * tenant (owner_id = tenant id, so hakod refuses it to anyone else), is labelled with the
 * conversation and tenant, runs the `host` image with egress through hakod's proxy (the tenant's
 * allowlist, plus the upstream of the run's model provider, `anthropic` or `bedrock`, whose
 * credentials hakod adds on the way out), and is removed by hakod itself after its idle timeout.
 * A live sandbox with other upstreams than the request's is destroyed and replaced.
 *
 * Callers serialize ensureSandbox per conversation (the conversation lock); this class does not.
 */
import { AppError, isAppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { callUnary } from '@hako/agentd';
import type { AgentClient, CreateSandboxRequest, Sandbox } from '@hako/proto';
import { NetworkMode, SandboxState } from '@hako/proto';
import type { NodePool, PooledNode } from './node-pool.js';

/** Label naming the conversation a sandbox serves. */
export const CONVERSATION_LABEL = 'hako.conversation';
/** Label naming the tenant a sandbox belongs to (also its owner_id). */
export const TENANT_LABEL = 'hako.tenant';

/** Sandbox limits; an unset or zero field takes the node's default. */
export interface SandboxLimits {
  readonly cpus?: number | undefined;
  readonly memoryBytes?: number | undefined;
  readonly pids?: number | undefined;
  readonly diskBytes?: number | undefined;
  readonly tmpBytes?: number | undefined;
}

export interface EnsureSandboxRequest {
  readonly tenantId: string;
  readonly conversationId: string;
  /** Used only when a sandbox is created; a reused one keeps the limits it was created with. */
  readonly limits: SandboxLimits;
  /** HOST:PORT patterns the sandbox may reach through the egress proxy (creation only). */
  readonly egressAllow: readonly string[];
  /** hakod removes the sandbox after this long without an RPC on it; 0 = the node's default. */
  readonly idleTimeoutSeconds: number;
  /**
   * Upstreams the sandbox must have (hakod's named model APIs); default the class's (['anthropic']).
   * A live sandbox with a different set is destroyed and a new one created.
   */
  readonly upstreams?: readonly string[] | undefined;
  /** Environment for every process in a new sandbox (never secrets). */
  readonly env?: Readonly<Record<string, string>> | undefined;
  /** The node and sandbox recorded with the conversation (conversations.sandbox_node/sandbox_id). */
  readonly knownNode?: string | null | undefined;
  readonly knownSandboxId?: string | null | undefined;
}

export interface EnsuredSandbox {
  /** The node's configured name (store it as conversations.sandbox_node). */
  readonly node: string;
  readonly client: AgentClient;
  readonly sandboxId: string;
  /** true when this call created the sandbox (its workspace is empty). */
  readonly created: boolean;
  readonly sandbox: Sandbox;
}

export interface ConversationSandboxesOptions {
  readonly pool: NodePool;
  readonly logger: Logger;
  /** Image of new sandboxes; default `host`. */
  readonly image?: string | undefined;
  /** Upstreams whose credentials hakod injects; default ['anthropic']. */
  readonly upstreams?: readonly string[] | undefined;
  /** Deadline of GetSandbox, ListSandboxes, ResumeSandbox and DestroySandbox; default 10 s. */
  readonly callTimeoutMs?: number | undefined;
  /** Deadline of CreateSandbox (may pull or unpack an image); default 120 s. */
  readonly createTimeoutMs?: number | undefined;
}

/** Codes that mean "this node is not reachable now": try elsewhere and mark the node. */
function isUnavailable(e: unknown): boolean {
  return isAppError(e) && e.code === 'AGENT_UNAVAILABLE';
}

/** Codes that mean "no such sandbox of this tenant here". */
function isGone(e: unknown): boolean {
  return isAppError(e) && (e.code === 'SANDBOX_NOT_FOUND' || e.code === 'PERMISSION_DENIED');
}

export class ConversationSandboxes {
  private readonly pool: NodePool;
  private readonly logger: Logger;
  private readonly image: string;
  private readonly upstreams: readonly string[];
  private readonly callTimeoutMs: number;
  private readonly createTimeoutMs: number;

  constructor(opts: ConversationSandboxesOptions) {
    this.pool = opts.pool;
    this.logger = opts.logger;
    this.image = opts.image ?? 'host';
    this.upstreams = opts.upstreams ?? ['anthropic'];
    this.callTimeoutMs = opts.callTimeoutMs ?? 10_000;
    this.createTimeoutMs = opts.createTimeoutMs ?? 120_000;
  }

  /**
   * The conversation's live sandbox: the known one when it is still running (a paused one is
   * resumed), else one found by label on a healthy node, else a new one on pickNode(). Sandboxes
   * of the conversation that are dead, or extra, are destroyed on the way. Another tenant's
   * sandbox is never answered (hakod scopes by owner_id, and the labels are checked too).
   * NO_HEALTHY_NODE when nothing can be created.
   */
  async ensureSandbox(req: EnsureSandboxRequest): Promise<EnsuredSandbox> {
    if (req.tenantId === '' || req.conversationId === '') {
      throw new AppError('INVALID_ARGUMENT', 'ensureSandbox needs a tenantId and a conversationId');
    }
    if (req.knownNode && req.knownSandboxId) {
      const known = await this.tryKnown(req, req.knownNode, req.knownSandboxId);
      if (known !== undefined) return known;
    }
    const found = await this.findByLabel(req);
    if (found !== undefined) return found;
    return this.create(req);
  }

  /**
   * Destroys one sandbox of the tenant. Idempotent: an id that is already gone is not an error.
   * INVALID_ARGUMENT when `node` is not configured; PERMISSION_DENIED for another tenant's sandbox.
   */
  async destroy(args: { tenantId: string; node: string; sandboxId: string }): Promise<void> {
    const node = this.pool.node(args.node);
    if (node === undefined) {
      throw new AppError(
        'INVALID_ARGUMENT',
        `hakod node ${JSON.stringify(args.node)} is not configured; its sandboxes end by their idle timeout`,
      );
    }
    try {
      await callUnary(
        node.client,
        'destroySandbox',
        { ownerId: args.tenantId, sandboxId: args.sandboxId },
        { timeoutMs: this.callTimeoutMs },
      );
    } catch (e) {
      if (isAppError(e) && e.code === 'SANDBOX_NOT_FOUND') return;
      if (isUnavailable(e)) this.pool.markUnhealthy(node.name, e);
      throw e;
    }
  }

  /** Destroys every sandbox of the conversation on every healthy node; answers how many went. */
  async destroyConversation(args: { tenantId: string; conversationId: string }): Promise<number> {
    const all = await this.listConversation(args.tenantId, args.conversationId);
    for (const { node, sandbox } of all) {
      await this.destroy({ tenantId: args.tenantId, node: node.name, sandboxId: sandbox.id });
    }
    return all.length;
  }

  /** The upstreams a request needs, sorted and without duplicates. */
  private upstreamsOf(req: EnsureSandboxRequest): string[] {
    return [...new Set(req.upstreams ?? this.upstreams)].sort();
  }

  private belongs(s: Sandbox, req: EnsureSandboxRequest): boolean {
    return (
      s.ownerId === req.tenantId &&
      s.labels[CONVERSATION_LABEL] === req.conversationId &&
      s.labels[TENANT_LABEL] === req.tenantId
    );
  }

  /** The known sandbox when it is this conversation's and usable (resumed if paused). */
  private async tryKnown(
    req: EnsureSandboxRequest,
    nodeName: string,
    sandboxId: string,
  ): Promise<EnsuredSandbox | undefined> {
    const node = this.pool.node(nodeName);
    if (node === undefined || !this.pool.isHealthy(nodeName)) return undefined;
    let sandbox: Sandbox | undefined;
    try {
      sandbox = (
        await callUnary(
          node.client,
          'getSandbox',
          { ownerId: req.tenantId, sandboxId },
          { timeoutMs: this.callTimeoutMs },
        )
      ).sandbox;
    } catch (e) {
      if (isGone(e)) return undefined;
      if (isUnavailable(e)) {
        this.pool.markUnhealthy(nodeName, e);
        return undefined;
      }
      throw e;
    }
    if (sandbox === undefined || !this.belongs(sandbox, req)) return undefined;
    return this.usable(req, node, sandbox);
  }

  /** The sandbox made ready for reuse, or undefined (and destroyed) when it cannot run again. */
  private async usable(
    req: EnsureSandboxRequest,
    node: PooledNode,
    sandbox: Sandbox,
  ): Promise<EnsuredSandbox | undefined> {
    const wanted = this.upstreamsOf(req);
    const has = [...sandbox.upstreams].sort();
    if (has.length !== wanted.length || has.some((u, i) => u !== wanted[i])) {
      await this.discard(
        req.tenantId,
        node,
        sandbox,
        `has upstreams [${has.join(', ')}], the run needs [${wanted.join(', ')}]`,
      );
      return undefined;
    }
    if (sandbox.state === SandboxState.SANDBOX_STATE_RUNNING) {
      return { node: node.name, client: node.client, sandboxId: sandbox.id, created: false, sandbox };
    }
    if (sandbox.state === SandboxState.SANDBOX_STATE_PAUSED) {
      const resumed = await callUnary(
        node.client,
        'resumeSandbox',
        { ownerId: req.tenantId, sandboxId: sandbox.id },
        { timeoutMs: this.callTimeoutMs },
      );
      const s = resumed.sandbox ?? sandbox;
      return { node: node.name, client: node.client, sandboxId: s.id, created: false, sandbox: s };
    }
    await this.discard(req.tenantId, node, sandbox, 'not running');
    return undefined;
  }

  /** Destroys a sandbox that will not be used; a failure is logged, not thrown (hakod's GC ends it). */
  private async discard(tenantId: string, node: PooledNode, sandbox: Sandbox, why: string): Promise<void> {
    try {
      await this.destroy({ tenantId, node: node.name, sandboxId: sandbox.id });
    } catch (err) {
      this.logger.warn(
        { err, node: node.name, sandboxId: sandbox.id, state: SandboxState[sandbox.state], why },
        'could not destroy an unused conversation sandbox; its idle timeout will',
      );
    }
  }

  private async listConversation(
    tenantId: string,
    conversationId: string,
  ): Promise<{ node: PooledNode; sandbox: Sandbox }[]> {
    const nodes = this.pool.healthyNodes();
    const lists = await Promise.all(
      nodes.map(async (node) => {
        try {
          const r = await callUnary(
            node.client,
            'listSandboxes',
            {
              ownerId: tenantId,
              labelSelector: { [CONVERSATION_LABEL]: conversationId, [TENANT_LABEL]: tenantId },
            },
            { timeoutMs: this.callTimeoutMs },
          );
          return r.sandboxes.map((sandbox) => ({ node, sandbox }));
        } catch (e) {
          if (!isUnavailable(e)) throw e;
          this.pool.markUnhealthy(node.name, e);
          return [];
        }
      }),
    );
    return lists.flat();
  }

  /** A running sandbox of the conversation on any healthy node; others of it are destroyed. */
  private async findByLabel(req: EnsureSandboxRequest): Promise<EnsuredSandbox | undefined> {
    const all = (await this.listConversation(req.tenantId, req.conversationId)).filter((c) =>
      this.belongs(c.sandbox, req),
    );
    // Most recently active first: that one most likely holds the conversation's latest state.
    all.sort((a, b) => b.sandbox.lastActiveAtMs - a.sandbox.lastActiveAtMs);
    let chosen: EnsuredSandbox | undefined;
    for (const { node, sandbox } of all) {
      if (chosen === undefined) {
        chosen = await this.usable(req, node, sandbox);
      } else {
        await this.discard(req.tenantId, node, sandbox, 'another sandbox serves the conversation');
      }
    }
    return chosen;
  }

  /** Creates the sandbox on the least-loaded healthy node, moving on when a node fails or is full. */
  private async create(req: EnsureSandboxRequest): Promise<EnsuredSandbox> {
    const request: CreateSandboxRequest = {
      ownerId: req.tenantId,
      image: this.image,
      labels: { [CONVERSATION_LABEL]: req.conversationId, [TENANT_LABEL]: req.tenantId },
      limits: {
        cpus: req.limits.cpus ?? 0,
        memoryBytes: req.limits.memoryBytes ?? 0,
        pids: req.limits.pids ?? 0,
        diskBytes: req.limits.diskBytes ?? 0,
        tmpBytes: req.limits.tmpBytes ?? 0,
      },
      network: NetworkMode.NETWORK_MODE_EGRESS,
      egressAllow: [...req.egressAllow],
      env: { ...req.env },
      upstreams: this.upstreamsOf(req),
      ttlSeconds: 0,
      idleTimeoutSeconds: req.idleTimeoutSeconds,
    };
    const failed = new Set<string>();
    // Nodes that have no credentials for an upstream the request needs (UPSTREAM_NOT_CONFIGURED).
    const refused: string[] = [];
    for (;;) {
      let node: PooledNode;
      try {
        node = await this.pool.pickNode(failed);
      } catch (e) {
        if (refused.length === 0 || !isAppError(e) || e.code !== 'NO_HEALTHY_NODE') throw e;
        throw new AppError(
          'UPSTREAM_NOT_CONFIGURED',
          `no hakod node can serve this run's model: ${refused.join(', ')} ${refused.length === 1 ? 'has' : 'have'} no credentials for the upstream ${request.upstreams.join(', ')}; configure it on a node (AGENT_UPSTREAM_*) or give the conversation a model of another provider`,
          { details: { upstreams: request.upstreams, nodes: refused } },
        );
      }
      try {
        const { sandbox } = await callUnary(node.client, 'createSandbox', request, {
          timeoutMs: this.createTimeoutMs,
        });
        if (sandbox === undefined)
          throw new AppError('INTERNAL', `hakod ${node.name} created a sandbox but did not describe it`);
        this.pool.noteCreated(node.name);
        this.logger.debug(
          { node: node.name, sandboxId: sandbox.id, conversationId: req.conversationId },
          'conversation sandbox created',
        );
        return { node: node.name, client: node.client, sandboxId: sandbox.id, created: true, sandbox };
      } catch (e) {
        if (isUnavailable(e)) this.pool.markUnhealthy(node.name, e);
        else if (isAppError(e) && e.code === 'POOL_EXHAUSTED') this.pool.noteFull(node.name);
        else if (isAppError(e) && e.code === 'UPSTREAM_NOT_CONFIGURED') refused.push(node.name);
        else throw e;
        this.logger.warn(
          { err: e, node: node.name },
          'creating a conversation sandbox failed; trying another node',
        );
        failed.add(node.name);
      }
    }
  }
}
