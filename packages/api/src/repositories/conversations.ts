// Conversations of a tenant: title, workspace flag, the SDK session to resume, the context
// tokens the last run ended with, and the hakod sandbox serving it. Every call is scoped by
// tenant: another tenant's conversation is CONVERSATION_NOT_FOUND.
import { randomUUID } from 'node:crypto';
import { AppError } from '@hako/core';
import type { Queryable } from '../db/pool.js';
import { PG_ERROR, pgErrorCode } from '../db/pool.js';
import type { Conversation } from '../types.js';
import { conversationNotFound, isUuid, iso, num, tenantNotFound } from './common.js';

export interface ConversationSandbox {
  /** The hakod node's name (as configured). */
  node: string;
  sandboxId: string;
}

/** A conversation that has a sandbox, for the idle-sandbox sweeper (all tenants). */
export interface SandboxAssignment extends ConversationSandbox {
  tenantId: string;
  conversationId: string;
  /** Last change to the conversation (a run's session update included). */
  updatedAt: string;
  running: boolean;
}

interface ConversationRow {
  id: string;
  tenant_id: string;
  title: string | null;
  workspace_enabled: boolean;
  session_id: string | null;
  context_tokens: string | number;
  running: boolean;
  model_id: string | null;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = `c.id, c.tenant_id, c.title, c.workspace_enabled, c.session_id, c.context_tokens,
  EXISTS (SELECT 1 FROM runs r WHERE r.conversation_id = c.id AND r.status = 'running') AS running,
  c.model_id, c.created_at, c.updated_at`;

function toConversation(r: ConversationRow): Conversation {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    title: r.title,
    workspaceEnabled: r.workspace_enabled,
    sessionId: r.session_id,
    contextTokens: num(r.context_tokens),
    status: r.running ? 'running' : 'idle',
    modelId: r.model_id,
    createdAt: iso(r.created_at),
    updatedAt: iso(r.updated_at),
  };
}

const MAX_TITLE = 500;

function checkTitle(title: string | null | undefined): void {
  if (typeof title === 'string' && title.length > MAX_TITLE) {
    throw new AppError('INVALID_ARGUMENT', `A conversation title has at most ${MAX_TITLE} characters`);
  }
}

export class ConversationRepository {
  constructor(private readonly db: Queryable) {}

  /** Creates a conversation (workspace enabled unless told otherwise). TENANT_NOT_FOUND when there is no such tenant. */
  async create(
    tenantId: string,
    input: { title?: string | null; workspaceEnabled?: boolean; modelId?: string | null } = {},
  ): Promise<Conversation> {
    if (!isUuid(tenantId)) throw tenantNotFound(tenantId);
    checkTitle(input.title);
    try {
      const res = await this.db.query<ConversationRow>(
        `INSERT INTO conversations AS c (id, tenant_id, title, workspace_enabled, model_id)
         VALUES ($1, $2, $3, $4, $5) RETURNING ${COLUMNS}`,
        [randomUUID(), tenantId, input.title ?? null, input.workspaceEnabled ?? true, input.modelId ?? null],
      );
      return toConversation(res.rows[0] as ConversationRow);
    } catch (err) {
      if (pgErrorCode(err) === PG_ERROR.FOREIGN_KEY_VIOLATION) throw tenantNotFound(tenantId);
      throw err;
    }
  }

  /** The conversation; CONVERSATION_NOT_FOUND when it is not one of `tenantId`'s. */
  async get(tenantId: string, id: string): Promise<Conversation> {
    const found = await this.find(tenantId, id);
    if (!found) throw conversationNotFound(id);
    return found;
  }

  /** The conversation, or undefined when it is not one of `tenantId`'s. */
  async find(tenantId: string, id: string): Promise<Conversation | undefined> {
    if (!isUuid(tenantId) || !isUuid(id)) return undefined;
    const res = await this.db.query<ConversationRow>(
      `SELECT ${COLUMNS} FROM conversations c WHERE c.id = $1 AND c.tenant_id = $2`,
      [id, tenantId],
    );
    const row = res.rows[0];
    return row ? toConversation(row) : undefined;
  }

  /**
   * The tenant's conversations, newest first, at most `limit` (default 50, at most 500).
   * `before` (a conversation id from a previous page) continues after that conversation;
   * CONVERSATION_NOT_FOUND when it is not the tenant's.
   */
  async list(tenantId: string, options: { limit?: number; before?: string } = {}): Promise<Conversation[]> {
    if (!isUuid(tenantId)) return [];
    const limit = Math.min(Math.max(Math.trunc(options.limit ?? 50), 1), 500);
    if (options.before === undefined) {
      const res = await this.db.query<ConversationRow>(
        `SELECT ${COLUMNS} FROM conversations c WHERE c.tenant_id = $1
         ORDER BY c.created_at DESC, c.id DESC LIMIT $2`,
        [tenantId, limit],
      );
      return res.rows.map(toConversation);
    }
    await this.get(tenantId, options.before);
    const res = await this.db.query<ConversationRow>(
      `SELECT ${COLUMNS} FROM conversations c, conversations b
       WHERE c.tenant_id = $1 AND b.id = $2 AND b.tenant_id = $1 AND (c.created_at, c.id) < (b.created_at, b.id)
       ORDER BY c.created_at DESC, c.id DESC LIMIT $3`,
      [tenantId, options.before, limit],
    );
    return res.rows.map(toConversation);
  }

  /** Records the SDK session to resume and the context tokens the run ended with. */
  async setSession(
    tenantId: string,
    id: string,
    sessionId: string | null,
    contextTokens: number,
  ): Promise<void> {
    if (!Number.isSafeInteger(contextTokens) || contextTokens < 0) {
      throw new AppError(
        'INVALID_ARGUMENT',
        `contextTokens must be a non-negative integer, not ${contextTokens}`,
      );
    }
    await this.update(tenantId, id, 'session_id = $3, context_tokens = $4', [sessionId, contextTokens]);
  }

  async setTitle(tenantId: string, id: string, title: string | null): Promise<void> {
    checkTitle(title);
    await this.update(tenantId, id, 'title = $3', [title]);
  }

  /** Sets the conversation's model (a registered model id; the caller checks it is active) or null. */
  async setModel(tenantId: string, id: string, modelId: string | null): Promise<Conversation> {
    await this.update(tenantId, id, 'model_id = $3', [modelId]);
    return this.get(tenantId, id);
  }

  /** Records the sandbox now serving the conversation, or null when it has none. */
  async setSandbox(tenantId: string, id: string, sandbox: ConversationSandbox | null): Promise<void> {
    await this.update(tenantId, id, 'sandbox_node = $3, sandbox_id = $4', [
      sandbox?.node ?? null,
      sandbox?.sandboxId ?? null,
    ]);
  }

  /**
   * Forgets the conversation's sandbox only if it is still `sandboxId` (compare-and-clear, so a
   * sweeper never forgets a sandbox a newer run just recorded). True when it was cleared.
   */
  async clearSandbox(tenantId: string, id: string, sandboxId: string): Promise<boolean> {
    if (!isUuid(tenantId) || !isUuid(id)) return false;
    const res = await this.db.query(
      `UPDATE conversations SET sandbox_node = NULL, sandbox_id = NULL, updated_at = now()
       WHERE id = $1 AND tenant_id = $2 AND sandbox_id = $3`,
      [id, tenantId, sandboxId],
    );
    return res.rowCount > 0;
  }

  /** The sandbox serving the conversation, or undefined when none; CONVERSATION_NOT_FOUND when not the tenant's. */
  async getSandbox(tenantId: string, id: string): Promise<ConversationSandbox | undefined> {
    if (!isUuid(tenantId) || !isUuid(id)) throw conversationNotFound(id);
    const res = await this.db.query<{ sandbox_node: string | null; sandbox_id: string | null }>(
      'SELECT sandbox_node, sandbox_id FROM conversations WHERE id = $1 AND tenant_id = $2',
      [id, tenantId],
    );
    const row = res.rows[0];
    if (!row) throw conversationNotFound(id);
    return row.sandbox_node !== null && row.sandbox_id !== null
      ? { node: row.sandbox_node, sandboxId: row.sandbox_id }
      : undefined;
  }

  /**
   * Every conversation that has a sandbox (on `node` when given), across tenants, least recently
   * updated first: what the idle-sandbox sweeper walks. Not for tenant-facing code.
   */
  async listSandboxes(node?: string): Promise<SandboxAssignment[]> {
    const res = await this.db.query<{
      id: string;
      tenant_id: string;
      sandbox_node: string;
      sandbox_id: string;
      updated_at: Date;
      running: boolean;
    }>(
      `SELECT c.id, c.tenant_id, c.sandbox_node, c.sandbox_id, c.updated_at,
         EXISTS (SELECT 1 FROM runs r WHERE r.conversation_id = c.id AND r.status = 'running') AS running
       FROM conversations c
       WHERE c.sandbox_node IS NOT NULL AND ($1::text IS NULL OR c.sandbox_node = $1)
       ORDER BY c.updated_at, c.id`,
      [node ?? null],
    );
    return res.rows.map((r) => ({
      tenantId: r.tenant_id,
      conversationId: r.id,
      node: r.sandbox_node,
      sandboxId: r.sandbox_id,
      updatedAt: iso(r.updated_at),
      running: r.running,
    }));
  }

  private async update(tenantId: string, id: string, set: string, values: unknown[]): Promise<void> {
    if (!isUuid(tenantId) || !isUuid(id)) throw conversationNotFound(id);
    const res = await this.db.query(
      `UPDATE conversations SET ${set}, updated_at = now() WHERE id = $1 AND tenant_id = $2`,
      [id, tenantId, ...values],
    );
    if (res.rowCount === 0) throw conversationNotFound(id);
  }
}
