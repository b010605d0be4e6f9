// The files registered for a conversation (uploads and what the agent created or changed): the
// files API lists and serves these. A new content hash bumps the version; the same hash changes
// nothing. hako's own state under .hako/ is never registered. Scoped by tenant through the
// conversation.
import { AppError } from '@hako/core';
import type { Queryable } from '../db/pool.js';
import type { ConversationFile, FileSource } from '../types.js';
import { assertConversation, conversationNotFound, isUuid, iso, num } from './common.js';

export interface FileRecord {
  /** Relative to /workspace, '/'-separated, no '.' or '..' segments, not under .hako/. */
  path: string;
  size: number;
  /** Lowercase hex sha256 of the content. */
  sha256: string;
  mimeType: string;
  /**
   * Who wrote this version. `ai_created` for a path already registered with another hash is
   * stored as `ai_modified` (the agent changed an existing file).
   */
  source: FileSource;
  /** The run that wrote this version (recorded in the file's version history); none for an upload. */
  runId?: string | undefined;
}

interface FileRow {
  conversation_id: string;
  path: string;
  size: string | number;
  sha256: string;
  mime_type: string;
  version: number;
  source: FileSource;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = 'conversation_id, path, size, sha256, mime_type, version, source, created_at, updated_at';
const SHA_RE = /^[0-9a-f]{64}$/;
const SOURCES: readonly FileSource[] = ['user_upload', 'ai_created', 'ai_modified'];

function toFile(r: FileRow): ConversationFile {
  return {
    conversationId: r.conversation_id,
    path: r.path,
    size: num(r.size),
    sha256: r.sha256,
    mimeType: r.mime_type,
    version: r.version,
    source: r.source,
    createdAt: iso(r.created_at),
    updatedAt: iso(r.updated_at),
  };
}

/**
 * Whether `path` may be registered: relative, '/'-separated, 1..4096 characters, no empty, '.'
 * or '..' segment, no NUL, not .hako or under it.
 */
export function isRegistrablePath(path: string): boolean {
  if (path.length < 1 || path.length > 4096 || path.includes('\0')) return false;
  const parts = path.split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..')) return false;
  return parts[0] !== '.hako';
}

function checkPath(path: string): void {
  if (!isRegistrablePath(path)) {
    throw new AppError(
      'FILE_PATH_INVALID',
      `File path ${JSON.stringify(path.slice(0, 200))} is not a relative workspace path (no '..', leading '/', NUL or .hako/)`,
    );
  }
}

function checkRecord(f: FileRecord): void {
  checkPath(f.path);
  if (!Number.isSafeInteger(f.size) || f.size < 0) {
    throw new AppError('INVALID_ARGUMENT', `File ${f.path}: size must be a non-negative integer`);
  }
  if (!SHA_RE.test(f.sha256))
    throw new AppError('INVALID_ARGUMENT', `File ${f.path}: sha256 must be 64 lowercase hex digits`);
  if (!SOURCES.includes(f.source))
    throw new AppError('INVALID_ARGUMENT', `File ${f.path}: unknown source ${String(f.source)}`);
  if (f.runId !== undefined && !isUuid(f.runId))
    throw new AppError('INVALID_ARGUMENT', `File ${f.path}: runId must be a run id (a UUID)`);
}

// New row: version 1, or one more than the last version of a path that was deleted and comes back
// (its history is kept). Same hash: nothing changes (the row is still returned). New hash: version
// + 1, the caller's metadata, and ai_created turned into ai_modified.
const UPSERT_TAIL = `
  ON CONFLICT (conversation_id, path) DO UPDATE SET
    size = EXCLUDED.size,
    sha256 = EXCLUDED.sha256,
    mime_type = EXCLUDED.mime_type,
    version = conversation_files.version + 1,
    source = CASE WHEN EXCLUDED.source = 'ai_created' THEN 'ai_modified' ELSE EXCLUDED.source END,
    updated_at = now()
  WHERE conversation_files.sha256 <> EXCLUDED.sha256`;

export class FileRepository {
  constructor(private readonly db: Queryable) {}

  /** Registers one file (see FileRecord). CONVERSATION_NOT_FOUND, FILE_PATH_INVALID, INVALID_ARGUMENT. */
  async upsert(tenantId: string, conversationId: string, file: FileRecord): Promise<ConversationFile> {
    const [out] = await this.upsertMany(tenantId, conversationId, [file]);
    return out as ConversationFile;
  }

  /**
   * Registers several files in one transaction (all or none), answering each file's row in
   * path order. A path given twice keeps its last record.
   */
  async upsertMany(
    tenantId: string,
    conversationId: string,
    files: readonly FileRecord[],
  ): Promise<ConversationFile[]> {
    files.forEach(checkRecord);
    const byPath = new Map(files.map((f) => [f.path, f]));
    // Path order: concurrent batches lock rows in the same order and cannot deadlock.
    const list = [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    return this.db.transaction(async (tx) => {
      await assertConversation(tx, tenantId, conversationId);
      if (list.length === 0) return [];
      await tx.query(
        `INSERT INTO conversation_files (conversation_id, path, size, sha256, mime_type, version, source)
         SELECT $1, u.path, u.size, u.sha256, u.mime_type,
           COALESCE((SELECT max(v.version) FROM conversation_file_versions v
                     WHERE v.conversation_id = $1 AND v.path = u.path), 0) + 1,
           u.source
         FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[]) AS u(path, size, sha256, mime_type, source)
         ${UPSERT_TAIL}`,
        [
          conversationId,
          list.map((f) => f.path),
          list.map((f) => f.size),
          list.map((f) => f.sha256),
          list.map((f) => f.mimeType),
          list.map((f) => f.source),
        ],
      );
      // The version history: a row for each (path, version) not recorded yet (a new file or a
      // new content; an unchanged one already has its row).
      await tx.query(
        `INSERT INTO conversation_file_versions
           (conversation_id, path, version, size, sha256, mime_type, source, run_id)
         SELECT f.conversation_id, f.path, f.version, f.size, f.sha256, f.mime_type, f.source, u.run_id
         FROM conversation_files f
         JOIN unnest($2::text[], $3::uuid[]) AS u(path, run_id) ON u.path = f.path
         WHERE f.conversation_id = $1
         ON CONFLICT (conversation_id, path, version) DO NOTHING`,
        [conversationId, list.map((f) => f.path), list.map((f) => f.runId ?? null)],
      );
      const res = await tx.query<FileRow>(
        `SELECT ${COLUMNS} FROM conversation_files WHERE conversation_id = $1 AND path = ANY($2::text[]) ORDER BY path`,
        [conversationId, list.map((f) => f.path)],
      );
      return res.rows.map(toFile);
    });
  }

  /** The conversation's files in path order. CONVERSATION_NOT_FOUND when it is not `tenantId`'s. */
  async list(tenantId: string, conversationId: string): Promise<ConversationFile[]> {
    await assertConversation(this.db, tenantId, conversationId);
    const res = await this.db.query<FileRow>(
      `SELECT ${COLUMNS} FROM conversation_files WHERE conversation_id = $1 ORDER BY path`,
      [conversationId],
    );
    return res.rows.map(toFile);
  }

  /**
   * The file, or undefined when the conversation has no such file (an unregistrable path
   * included). CONVERSATION_NOT_FOUND when the conversation is not `tenantId`'s.
   */
  async get(tenantId: string, conversationId: string, path: string): Promise<ConversationFile | undefined> {
    if (!isUuid(tenantId) || !isUuid(conversationId)) throw conversationNotFound(conversationId);
    if (!isRegistrablePath(path)) {
      await assertConversation(this.db, tenantId, conversationId);
      return undefined;
    }
    const res = await this.db.query<FileRow & { cid: string }>(
      `SELECT c.id AS cid, f.conversation_id, f.path, f.size, f.sha256, f.mime_type, f.version, f.source,
         f.created_at, f.updated_at
       FROM conversations c
       LEFT JOIN conversation_files f ON f.conversation_id = c.id AND f.path = $3
       WHERE c.id = $1 AND c.tenant_id = $2`,
      [conversationId, tenantId, path],
    );
    const row = res.rows[0];
    if (!row) throw conversationNotFound(conversationId);
    return row.path === null ? undefined : toFile(row);
  }

  /** Unregisters the file; true when it existed. CONVERSATION_NOT_FOUND when the conversation is not `tenantId`'s. */
  async delete(tenantId: string, conversationId: string, path: string): Promise<boolean> {
    return this.db.transaction(async (tx) => {
      await assertConversation(tx, tenantId, conversationId);
      if (!isRegistrablePath(path)) return false;
      const res = await tx.query('DELETE FROM conversation_files WHERE conversation_id = $1 AND path = $2', [
        conversationId,
        path,
      ]);
      return res.rowCount > 0;
    });
  }
}
