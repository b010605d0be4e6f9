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
  user_id: string | null;
  archived_at: Date | null;
  /** created_at to the microsecond, for list cursors (a JavaScript Date keeps milliseconds). */
  created_key: string;
}

const COLUMNS = `c.id, c.tenant_id, c.title, c.workspace_enabled, c.session_id, c.context_tokens,
  EXISTS (SELECT 1 FROM runs r WHERE r.conversation_id = c.id AND r.status = 'running') AS running,
  c.model_id, c.created_at, c.updated_at, c.user_id, c.archived_at,
  to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created_key`;

/** Which conversations a list answers, by archive state. */
export type ConversationListStatus = 'active' | 'archived' | 'all';

export interface ConversationListOptions {
  /** Page size: default 50, at most 500. */
  limit?: number;
  /** Default active (not archived). */
  status?: ConversationListStatus;
  /** Only the conversations of this application user. */
  userId?: string;
  /** Case-insensitive substring of the title. */
  q?: string;
  /** created_at >= createdAfter (ISO 8601). */
  createdAfter?: string;
  /** created_at < createdBefore (ISO 8601). */
  createdBefore?: string;
  /** A previous page's nextCursor. */
  cursor?: string;
  /** Continue after this conversation id (the older form of cursor). */
  before?: string;
}

export interface ConversationPage {
  conversations: Conversation[];
  /** Where the next page starts; undefined on the last page. */
  nextCursor: string | undefined;
}

/** What an update may change; undefined leaves a field as it is, null clears it. */
export interface ConversationUpdate {
  title?: string | null;
  userId?: string | null;
}

const CURSOR_PREFIX = 'c1.';
const CURSOR_KEY_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

/** The opaque list cursor of a position (created_at to the microsecond, id). */
export function encodeListCursor(createdKey: string, id: string): string {
  return CURSOR_PREFIX + Buffer.from(`${createdKey}|${id}`, 'utf8').toString('base64url');
}

/** The position in a list cursor; CURSOR_INVALID when it is not one encodeListCursor made. */
export function decodeListCursor(cursor: string): { createdKey: string; id: string } {
  const bad = (): AppError =>
    new AppError(
      'CURSOR_INVALID',
      'cursor is not a next_cursor this API answered; pass next_cursor exactly as it came, or leave it out for the first page',
    );
  if (!cursor.startsWith(CURSOR_PREFIX) || cursor.length > 200) throw bad();
  const text = Buffer.from(cursor.slice(CURSOR_PREFIX.length), 'base64url').toString('utf8');
  const [createdKey, id, ...rest] = text.split('|');
  if (rest.length > 0 || !createdKey || !id || !CURSOR_KEY_RE.test(createdKey) || !isUuid(id)) throw bad();
  return { createdKey, id };
}

/** `s` with LIKE's wildcards escaped (ESCAPE '\\'). */
function likeEscape(s: string): string {
  return s.replace(/[\\%_]/g, (c) => `\\${c}`);
}

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
    userId: r.user_id,
    archivedAt: r.archived_at === null ? null : iso(r.archived_at),
  };
}

const MAX_TITLE = 500;

function checkTitle(title: string | null | undefined): void {
  if (typeof title === 'string' && title.length > MAX_TITLE) {
    throw new AppError('INVALID_ARGUMENT', `A conversation title has at most ${MAX_TITLE} characters`);
  }
}

const MAX_USER_ID = 200;

function checkUserId(userId: string | null | undefined): void {
  if (typeof userId === 'string' && (userId.length < 1 || userId.length > MAX_USER_ID)) {
    throw new AppError('INVALID_ARGUMENT', `A conversation user_id has 1 to ${MAX_USER_ID} characters`);
  }
}

/** `value` when it is an ISO 8601 date-time; INVALID_ARGUMENT naming `field` otherwise. */
function checkTime(field: string, value: string): string {
  if (
    !/^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(value) ||
    Number.isNaN(Date.parse(value))
  ) {
    throw new AppError(
      'INVALID_ARGUMENT',
      `${field} must be an ISO 8601 date-time such as 2025-01-31T00:00:00Z, not ${JSON.stringify(value.slice(0, 60))}`,
    );
  }
  return value;
}

function conversationArchived(id: string): AppError {
  return new AppError(
    'CONVERSATION_ARCHIVED',
    `Conversation ${id.slice(0, 64)} is archived; unarchive it (POST /v1/conversations/${id.slice(0, 64)}/unarchive) to run or change its files`,
  );
}

export class ConversationRepository {
  constructor(private readonly db: Queryable) {}

  /** Creates a conversation (workspace enabled unless told otherwise). TENANT_NOT_FOUND when there is no such tenant. */
  async create(
    tenantId: string,
    input: {
      title?: string | null;
      workspaceEnabled?: boolean;
      userId?: string | null;
      modelId?: string | null;
    } = {},
  ): Promise<Conversation> {
    if (!isUuid(tenantId)) throw tenantNotFound(tenantId);
    checkTitle(input.title);
    checkUserId(input.userId);
    try {
      const res = await this.db.query<ConversationRow>(
        `INSERT INTO conversations AS c (id, tenant_id, title, workspace_enabled, user_id, model_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING ${COLUMNS}`,
        [
          randomUUID(),
          tenantId,
          input.title ?? null,
          input.workspaceEnabled ?? true,
          input.userId ?? null,
          input.modelId ?? null,
        ],
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

  /** The conversation, or undefined when it is not one of `tenantId`'s (or its delete began). */
  async find(tenantId: string, id: string): Promise<Conversation | undefined> {
    if (!isUuid(tenantId) || !isUuid(id)) return undefined;
    const res = await this.db.query<ConversationRow>(
      `SELECT ${COLUMNS} FROM conversations c WHERE c.id = $1 AND c.tenant_id = $2 AND c.deleting_at IS NULL`,
      [id, tenantId],
    );
    const row = res.rows[0];
    return row ? toConversation(row) : undefined;
  }

  /**
   * The tenant's conversations, newest first (created_at, then id, descending: a stable order),
   * filtered by `options`, at most `limit` (default 50, at most 500). `cursor` (a previous page's
   * nextCursor) or `before` (a conversation id, CONVERSATION_NOT_FOUND when not the tenant's)
   * continues after that position; CURSOR_INVALID for a cursor this class did not make.
   */
  async listPage(tenantId: string, options: ConversationListOptions = {}): Promise<ConversationPage> {
    if (!isUuid(tenantId)) return { conversations: [], nextCursor: undefined };
    const limit = Math.min(Math.max(Math.trunc(options.limit ?? 50), 1), 500);
    if (options.cursor !== undefined && options.before !== undefined) {
      throw new AppError('INVALID_ARGUMENT', 'give cursor or before, not both');
    }
    checkUserId(options.userId);
    const where = ['c.tenant_id = $1', 'c.deleting_at IS NULL'];
    const values: unknown[] = [tenantId];
    const param = (v: unknown): string => {
      values.push(v);
      return `$${values.length}`;
    };
    const status = options.status ?? 'active';
    if (status === 'active') where.push('c.archived_at IS NULL');
    else if (status === 'archived') where.push('c.archived_at IS NOT NULL');
    if (options.userId !== undefined) where.push(`c.user_id = ${param(options.userId)}`);
    if (options.q !== undefined && options.q !== '') {
      where.push(`c.title ILIKE ${param(`%${likeEscape(options.q)}%`)} ESCAPE '\\'`);
    }
    if (options.createdAfter !== undefined) {
      where.push(`c.created_at >= ${param(checkTime('created_after', options.createdAfter))}::timestamptz`);
    }
    if (options.createdBefore !== undefined) {
      where.push(`c.created_at < ${param(checkTime('created_before', options.createdBefore))}::timestamptz`);
    }
    if (options.cursor !== undefined) {
      const pos = decodeListCursor(options.cursor);
      where.push(`(c.created_at, c.id) < (${param(pos.createdKey)}::timestamptz, ${param(pos.id)}::uuid)`);
    } else if (options.before !== undefined) {
      if (!isUuid(options.before)) throw conversationNotFound(options.before);
      const b = param(options.before);
      await this.get(tenantId, options.before);
      where.push(
        `(c.created_at, c.id) < (SELECT b.created_at, b.id FROM conversations b WHERE b.id = ${b} AND b.tenant_id = $1)`,
      );
    }
    const res = await this.db.query<ConversationRow>(
      `SELECT ${COLUMNS} FROM conversations c WHERE ${where.join(' AND ')}
       ORDER BY c.created_at DESC, c.id DESC LIMIT ${param(limit + 1)}`,
      values,
    );
    const rows = res.rows.slice(0, limit);
    const last = rows.at(-1);
    return {
      conversations: rows.map(toConversation),
      nextCursor:
        res.rows.length > limit && last !== undefined
          ? encodeListCursor(last.created_key, last.id)
          : undefined,
    };
  }

  /** listPage's conversations only (the first page, or the one after `before`). */
  async list(tenantId: string, options: ConversationListOptions = {}): Promise<Conversation[]> {
    return (await this.listPage(tenantId, options)).conversations;
  }

  /**
   * Changes the title and/or user_id (undefined leaves one as it is). Answers the conversation;
   * CONVERSATION_NOT_FOUND when it is not the tenant's.
   */
  async update(tenantId: string, id: string, change: ConversationUpdate): Promise<Conversation> {
    checkTitle(change.title);
    checkUserId(change.userId);
    if (!isUuid(tenantId) || !isUuid(id)) throw conversationNotFound(id);
    const res = await this.db.query<ConversationRow>(
      `UPDATE conversations AS c SET
         title = CASE WHEN $3 THEN $4 ELSE c.title END,
         user_id = CASE WHEN $5 THEN $6 ELSE c.user_id END,
         updated_at = now()
       WHERE c.id = $1 AND c.tenant_id = $2 AND c.deleting_at IS NULL
       RETURNING ${COLUMNS}`,
      [
        id,
        tenantId,
        change.title !== undefined,
        change.title ?? null,
        change.userId !== undefined,
        change.userId ?? null,
      ],
    );
    const row = res.rows[0];
    if (!row) throw conversationNotFound(id);
    return toConversation(row);
  }

  /**
   * Archives (`archived` true) or unarchives the conversation; archiving an archived one keeps
   * its first archived_at. Answers the conversation; CONVERSATION_NOT_FOUND when not the tenant's.
   */
  async setArchived(tenantId: string, id: string, archived: boolean): Promise<Conversation> {
    if (!isUuid(tenantId) || !isUuid(id)) throw conversationNotFound(id);
    const res = await this.db.query<ConversationRow>(
      `UPDATE conversations AS c SET
         archived_at = CASE WHEN $3 THEN COALESCE(c.archived_at, now()) ELSE NULL END,
         updated_at = CASE WHEN (c.archived_at IS NOT NULL) = $3 THEN c.updated_at ELSE now() END
       WHERE c.id = $1 AND c.tenant_id = $2 AND c.deleting_at IS NULL
       RETURNING ${COLUMNS}`,
      [id, tenantId, archived],
    );
    const row = res.rows[0];
    if (!row) throw conversationNotFound(id);
    return toConversation(row);
  }

  /**
   * Throws unless a run may start on the conversation now: CONVERSATION_NOT_FOUND (not the
   * tenant's, or being deleted), CONVERSATION_ARCHIVED. Call it holding the conversation lock
   * (archive and delete take it too), so the answer stays true until the lock is released.
   */
  async assertWritable(tenantId: string, id: string): Promise<Conversation> {
    const conv = await this.get(tenantId, id);
    if (conv.archivedAt !== null) throw conversationArchived(id);
    return conv;
  }

  /**
   * Begins deleting the conversation: from now on it is CONVERSATION_NOT_FOUND to every call but
   * beginDelete and purge. Answers whether it exists (a delete already begun included); a second
   * call keeps the first time.
   */
  async beginDelete(tenantId: string, id: string): Promise<boolean> {
    if (!isUuid(tenantId) || !isUuid(id)) return false;
    const res = await this.db.query(
      `UPDATE conversations SET deleting_at = COALESCE(deleting_at, now())
       WHERE id = $1 AND tenant_id = $2`,
      [id, tenantId],
    );
    return res.rowCount > 0;
  }

  /**
   * Deletes the conversation's rows (its runs, events, files and manifest go with it, by
   * cascade). Only after beginDelete; true when a row went.
   */
  async purge(tenantId: string, id: string): Promise<boolean> {
    if (!isUuid(tenantId) || !isUuid(id)) return false;
    const res = await this.db.query(
      'DELETE FROM conversations WHERE id = $1 AND tenant_id = $2 AND deleting_at IS NOT NULL',
      [id, tenantId],
    );
    return res.rowCount > 0;
  }

  /** Whether the conversation is being deleted (beginDelete ran, purge not yet). */
  async isDeleting(tenantId: string, id: string): Promise<boolean> {
    if (!isUuid(tenantId) || !isUuid(id)) return false;
    const res = await this.db.query(
      'SELECT 1 FROM conversations WHERE id = $1 AND tenant_id = $2 AND deleting_at IS NOT NULL',
      [id, tenantId],
    );
    return res.rowCount > 0;
  }

  /**
   * Sets the title the first exchange chose, unless the conversation has one by now (a PATCH
   * during the run wins). True when it was set.
   */
  async setTitleIfUnset(tenantId: string, id: string, title: string): Promise<boolean> {
    checkTitle(title);
    if (!isUuid(tenantId) || !isUuid(id)) throw conversationNotFound(id);
    const res = await this.db.query(
      `UPDATE conversations SET title = $3, updated_at = now()
       WHERE id = $1 AND tenant_id = $2 AND title IS NULL`,
      [id, tenantId, title],
    );
    return res.rowCount > 0;
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
    await this.updateColumns(tenantId, id, 'session_id = $3, context_tokens = $4', [
      sessionId,
      contextTokens,
    ]);
  }

  async setTitle(tenantId: string, id: string, title: string | null): Promise<void> {
    checkTitle(title);
    await this.updateColumns(tenantId, id, 'title = $3', [title]);
  }

  /** Sets the conversation's model (a registered model id; the caller checks it is active) or null. */
  async setModel(tenantId: string, id: string, modelId: string | null): Promise<Conversation> {
    await this.updateColumns(tenantId, id, 'model_id = $3', [modelId]);
    return this.get(tenantId, id);
  }

  /** Records the sandbox now serving the conversation, or null when it has none. */
  async setSandbox(tenantId: string, id: string, sandbox: ConversationSandbox | null): Promise<void> {
    await this.updateColumns(tenantId, id, 'sandbox_node = $3, sandbox_id = $4', [
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

  /**
   * The sandbox serving the conversation, or undefined when none; CONVERSATION_NOT_FOUND when not
   * the tenant's (a conversation being deleted still answers: its delete releases the sandbox).
   */
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

  private async updateColumns(tenantId: string, id: string, set: string, values: unknown[]): Promise<void> {
    if (!isUuid(tenantId) || !isUuid(id)) throw conversationNotFound(id);
    const res = await this.db.query(
      `UPDATE conversations SET ${set}, updated_at = now() WHERE id = $1 AND tenant_id = $2`,
      [id, tenantId, ...values],
    );
    if (res.rowCount === 0) throw conversationNotFound(id);
  }
}
