/**
 * The MCP servers a conversation's run gets, and why each one is on or off:
 * the conversation's override when it has one, else the tenant default (the server's `enabled`);
 * a remote server the egress allowlist no longer covers is off whatever was chosen (the proxy
 * would refuse it, so Claude Code is not asked to connect).
 */
import type { Logger } from '@hako/core';
import type { AgentEvent, ConversationMcpServer, McpServer } from '../types.js';
import { egressCoversUrl } from './mcp-server-definition.js';

/** Why a server is on or off for a conversation. */
export type McpServerReason = 'tenant_default' | 'conversation_override' | 'egress_denied';

export interface McpServerState {
  readonly server: McpServer;
  /** Whether the run gets it. */
  readonly enabled: boolean;
  /** The conversation's choice; null when the tenant default applies. */
  readonly override: boolean | null;
  readonly reason: McpServerReason;
  /** The reason in words. */
  readonly detail: string;
}

/** Each server's state for one conversation (`servers` from listForConversation), in order. */
export function effectiveMcpServers(
  servers: readonly ConversationMcpServer[],
  egressAllow: readonly string[],
): McpServerState[] {
  return servers.map(({ server, override }) => {
    const wanted = override ?? server.enabled;
    const onOff = (b: boolean): string => (b ? 'enabled' : 'disabled');
    if (wanted && server.type === 'http') {
      const { covered, hostPort } = egressCoversUrl(egressAllow, server.url);
      if (!covered) {
        return {
          server,
          enabled: false,
          override,
          reason: 'egress_denied',
          detail: `${onOff(wanted)} by ${override === null ? 'the tenant default' : 'this conversation'}, but ${hostPort} is not on the tenant's egress allowlist`,
        };
      }
    }
    return override === null
      ? {
          server,
          enabled: wanted,
          override,
          reason: 'tenant_default',
          detail: `${onOff(wanted)} by the tenant default`,
        }
      : {
          server,
          enabled: wanted,
          override,
          reason: 'conversation_override',
          detail: `${onOff(wanted)} for this conversation (the tenant default is ${onOff(server.enabled)})`,
        };
  });
}

/** A server left out of a run although it was chosen, as the run's events report it. */
export interface SkippedMcpServer {
  readonly name: string;
  readonly reason: McpServerReason;
  readonly detail: string;
}

export interface RunMcpServers {
  /** Exactly the servers the SDK gets. */
  readonly servers: McpServer[];
  /** Chosen but left out (a remote server the allowlist no longer covers). */
  readonly skipped: SkippedMcpServer[];
}

/** The run's servers from the conversation's states; logs a warning for each one skipped. */
export function runMcpServers(
  states: readonly McpServerState[],
  logger: Logger,
  ids: { tenantId: string; conversationId: string },
): RunMcpServers {
  const servers: McpServer[] = [];
  const skipped: SkippedMcpServer[] = [];
  for (const s of states) {
    if (s.enabled) servers.push(s.server);
    else if (s.reason === 'egress_denied') {
      skipped.push({ name: s.server.name, reason: s.reason, detail: s.detail });
      logger.warn(
        { ...ids, mcpServer: s.server.name, mcpServerId: s.server.id },
        `MCP server skipped: ${s.detail}`,
      );
    }
  }
  return { servers, skipped };
}

/**
 * The note a run's events carry about skipped servers: a `progress` event to send before the
 * agent starts (undefined when none was skipped), and the init event with `mcp_servers_skipped`.
 */
export function skippedMcpNote(skipped: readonly SkippedMcpServer[]): {
  progress: AgentEvent | undefined;
  annotateInit: (ev: AgentEvent) => AgentEvent;
} {
  const list = skipped.map((s) => ({ name: s.name, reason: s.reason, detail: s.detail }));
  return {
    progress:
      list.length === 0
        ? undefined
        : { type: 'progress', data: { step: 'mcp_servers', status: 'skipped', servers: list } },
    annotateInit: (ev) =>
      ev.type === 'init' && list.length > 0 ? { ...ev, data: { ...ev.data, mcp_servers_skipped: list } } : ev,
  };
}

/**
 * Everything a run needs about MCP servers, from the registry: the servers to pass to the SDK
 * (the conversation's effective set, minus remote ones the allowlist no longer covers, each
 * logged), a `progress` event to send before the agent starts when some were skipped, and the
 * init-event annotation naming them.
 */
export async function prepareRunMcpServers(
  repo: { listForConversation(tenantId: string, conversationId: string): Promise<ConversationMcpServer[]> },
  input: { tenantId: string; conversationId: string; egressAllow: readonly string[]; logger: Logger },
): Promise<RunMcpServers & ReturnType<typeof skippedMcpNote>> {
  const { tenantId, conversationId } = input;
  const states = effectiveMcpServers(
    await repo.listForConversation(tenantId, conversationId),
    input.egressAllow,
  );
  const run = runMcpServers(states, input.logger, { tenantId, conversationId });
  return { ...run, ...skippedMcpNote(run.skipped) };
}
