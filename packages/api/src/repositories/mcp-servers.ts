// A tenant's MCP server registry and the per-conversation overrides of its servers' default.
// Every call is scoped by tenant: another tenant's server is MCP_SERVER_NOT_FOUND and another
// tenant's conversation CONVERSATION_NOT_FOUND, exactly like missing ones. Definitions are
// validated by the caller (mcp/mcp-server-definition.ts); the table's checks are the backstop.
import { randomUUID } from 'node:crypto';
import { AppError } from '@hako/core';
import type { Queryable } from '../db/pool.js';
import { PG_ERROR, pgErrorCode } from '../db/pool.js';
import type { ConversationMcpServer, McpServer, McpServerTransport } from '../types.js';
import { assertConversation, isUuid, iso, tenantNotFound } from './common.js';

/** What a server is made of, as written (create, or a whole replacement on update). */
export type McpServerInput = { name: string; enabled: boolean } & McpServerTransport;

interface McpServerRow {
  id: string;
  tenant_id: string;
  name: string;
  type: 'stdio' | 'http';
  command: string | null;
  args: string[];
  env: Record<string, string>;
  url: string | null;
  headers: Record<string, string>;
  enabled: boolean;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = `s.id, s.tenant_id, s.name, s.type, s.command, s.args, s.env, s.url, s.headers, s.enabled,
  s.created_at, s.updated_at`;

function toServer(r: McpServerRow): McpServer {
  const base = {
    id: r.id,
    tenantId: r.tenant_id,
    name: r.name,
    enabled: r.enabled,
    createdAt: iso(r.created_at),
    updatedAt: iso(r.updated_at),
  };
  return r.type === 'http'
    ? { ...base, type: 'http', url: r.url ?? '', headers: { ...r.headers } }
    : { ...base, type: 'stdio', command: r.command ?? '', args: [...r.args], env: { ...r.env } };
}

/** The columns of a definition, in the order of the INSERT/UPDATE parameters $3..$10. */
function values(input: McpServerInput): unknown[] {
  const stdio = input.type === 'stdio';
  return [
    input.name,
    input.type,
    stdio ? input.command : null,
    JSON.stringify(stdio ? input.args : []),
    JSON.stringify(stdio ? input.env : {}),
    stdio ? null : input.url,
    JSON.stringify(stdio ? {} : input.headers),
    input.enabled,
  ];
}

export function mcpServerNotFound(id: string): AppError {
  return new AppError('MCP_SERVER_NOT_FOUND', `MCP server ${id.slice(0, 64)} does not exist for this tenant`);
}

function nameTaken(name: string): AppError {
  return new AppError(
    'MCP_SERVER_EXISTS',
    `this tenant already has an MCP server named "${name}" (names are unique regardless of case); pick another name or PATCH the existing one`,
    { details: { field: 'name' } },
  );
}

export class McpServerRepository {
  constructor(private readonly db: Queryable) {}

  /** Registers a server. MCP_SERVER_EXISTS when the name is taken, TENANT_NOT_FOUND without the tenant. */
  async create(tenantId: string, input: McpServerInput): Promise<McpServer> {
    if (!isUuid(tenantId)) throw tenantNotFound(tenantId);
    try {
      const res = await this.db.query<McpServerRow>(
        `INSERT INTO mcp_servers AS s (id, tenant_id, name, type, command, args, env, url, headers, enabled)
         VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9::jsonb, $10)
         RETURNING ${COLUMNS}`,
        [randomUUID(), tenantId, ...values(input)],
      );
      return toServer(res.rows[0] as McpServerRow);
    } catch (err) {
      if (pgErrorCode(err) === PG_ERROR.UNIQUE_VIOLATION) throw nameTaken(input.name);
      if (pgErrorCode(err) === PG_ERROR.FOREIGN_KEY_VIOLATION) throw tenantNotFound(tenantId);
      throw err;
    }
  }

  /** The tenant's servers by name. */
  async list(tenantId: string): Promise<McpServer[]> {
    if (!isUuid(tenantId)) return [];
    const res = await this.db.query<McpServerRow>(
      `SELECT ${COLUMNS} FROM mcp_servers s WHERE s.tenant_id = $1 ORDER BY lower(s.name), s.name`,
      [tenantId],
    );
    return res.rows.map(toServer);
  }

  /** The server; MCP_SERVER_NOT_FOUND when it is not one of `tenantId`'s. */
  async get(tenantId: string, id: string): Promise<McpServer> {
    if (!isUuid(tenantId) || !isUuid(id)) throw mcpServerNotFound(id);
    const res = await this.db.query<McpServerRow>(
      `SELECT ${COLUMNS} FROM mcp_servers s WHERE s.id = $1 AND s.tenant_id = $2`,
      [id, tenantId],
    );
    const row = res.rows[0];
    if (!row) throw mcpServerNotFound(id);
    return toServer(row);
  }

  /**
   * Replaces the server's definition with what `change` makes of the current one, in one
   * transaction holding the row (two concurrent PATCHes never lose each other's change).
   * MCP_SERVER_NOT_FOUND when it is not the tenant's; MCP_SERVER_EXISTS when the new name is taken;
   * whatever `change` throws (nothing is written then).
   */
  async update(
    tenantId: string,
    id: string,
    change: (current: McpServer) => McpServerInput | Promise<McpServerInput>,
  ): Promise<McpServer> {
    if (!isUuid(tenantId) || !isUuid(id)) throw mcpServerNotFound(id);
    return this.db.transaction(async (tx) => {
      const cur = await tx.query<McpServerRow>(
        `SELECT ${COLUMNS} FROM mcp_servers s WHERE s.id = $1 AND s.tenant_id = $2 FOR UPDATE`,
        [id, tenantId],
      );
      const row = cur.rows[0];
      if (!row) throw mcpServerNotFound(id);
      const next = await change(toServer(row));
      try {
        const res = await tx.query<McpServerRow>(
          `UPDATE mcp_servers AS s SET name = $3, type = $4, command = $5, args = $6::jsonb, env = $7::jsonb,
             url = $8, headers = $9::jsonb, enabled = $10, updated_at = now()
           WHERE s.id = $1 AND s.tenant_id = $2
           RETURNING ${COLUMNS}`,
          [id, tenantId, ...values(next)],
        );
        return toServer(res.rows[0] as McpServerRow);
      } catch (err) {
        if (pgErrorCode(err) === PG_ERROR.UNIQUE_VIOLATION) throw nameTaken(next.name);
        throw err;
      }
    });
  }

  /** Removes the server and every conversation's override of it; false when it was not the tenant's. */
  async delete(tenantId: string, id: string): Promise<boolean> {
    if (!isUuid(tenantId) || !isUuid(id)) return false;
    const res = await this.db.query('DELETE FROM mcp_servers WHERE id = $1 AND tenant_id = $2', [
      id,
      tenantId,
    ]);
    return res.rowCount > 0;
  }

  /**
   * Every server of the tenant with the conversation's override of it (null: the tenant default
   * applies), by name. CONVERSATION_NOT_FOUND when the conversation is not the tenant's.
   */
  async listForConversation(tenantId: string, conversationId: string): Promise<ConversationMcpServer[]> {
    await assertConversation(this.db, tenantId, conversationId);
    const res = await this.db.query<McpServerRow & { override: boolean | null }>(
      `SELECT ${COLUMNS}, o.enabled AS override
       FROM mcp_servers s
       LEFT JOIN conversation_mcp_servers o ON o.server_id = s.id AND o.conversation_id = $2
       WHERE s.tenant_id = $1
       ORDER BY lower(s.name), s.name`,
      [tenantId, conversationId],
    );
    return res.rows.map((r) => ({ server: toServer(r), override: r.override }));
  }

  /**
   * Sets the conversation's choice for the server (overriding the tenant default).
   * CONVERSATION_NOT_FOUND / MCP_SERVER_NOT_FOUND when either is not the tenant's.
   */
  async setOverride(
    tenantId: string,
    conversationId: string,
    serverId: string,
    enabled: boolean,
  ): Promise<ConversationMcpServer> {
    await assertConversation(this.db, tenantId, conversationId);
    const server = await this.get(tenantId, serverId);
    try {
      await this.db.query(
        `INSERT INTO conversation_mcp_servers (conversation_id, server_id, tenant_id, enabled) VALUES ($1, $2, $3, $4)
         ON CONFLICT (conversation_id, server_id) DO UPDATE SET enabled = EXCLUDED.enabled, updated_at = now()`,
        [conversationId, serverId, tenantId, enabled],
      );
    } catch (err) {
      // deleted meanwhile: the same answer as before the insert
      if (pgErrorCode(err) === PG_ERROR.FOREIGN_KEY_VIOLATION) {
        await assertConversation(this.db, tenantId, conversationId);
        throw mcpServerNotFound(serverId);
      }
      throw err;
    }
    return { server, override: enabled };
  }

  /**
   * Drops the conversation's choice (back to the tenant default); false when it had none.
   * CONVERSATION_NOT_FOUND / MCP_SERVER_NOT_FOUND when either is not the tenant's.
   */
  async clearOverride(tenantId: string, conversationId: string, serverId: string): Promise<boolean> {
    await assertConversation(this.db, tenantId, conversationId);
    await this.get(tenantId, serverId);
    const res = await this.db.query(
      `DELETE FROM conversation_mcp_servers WHERE conversation_id = $1 AND server_id = $2 AND tenant_id = $3`,
      [conversationId, serverId, tenantId],
    );
    return res.rowCount > 0;
  }
}
