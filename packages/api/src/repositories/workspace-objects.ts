// The workspace sync manifest: what S3 holds under workspaces/{tenant}/{conversation}/ (every
// file, .hako/ included), with content hashes, so a sync uploads only what changed. Scoped by
// tenant through the conversation.
import { AppError } from '@hako/core';
import type { Queryable } from '../db/pool.js';
import { assertConversation, num } from './common.js';

export interface ObjectEntry {
  /** Lowercase hex sha256 of the content. */
  sha256: string;
  size: number;
}

export interface ObjectUpsert extends ObjectEntry {
  /** Relative to /workspace, '/'-separated. */
  path: string;
}

const SHA_RE = /^[0-9a-f]{64}$/;

function checkUpsert(u: ObjectUpsert): void {
  if (u.path.length < 1 || u.path.length > 4096 || u.path.startsWith('/') || u.path.includes('\0')) {
    throw new AppError(
      'FILE_PATH_INVALID',
      `Workspace object path ${JSON.stringify(u.path.slice(0, 200))} is not relative`,
    );
  }
  if (!SHA_RE.test(u.sha256))
    throw new AppError('INVALID_ARGUMENT', `Object ${u.path}: sha256 must be 64 lowercase hex digits`);
  if (!Number.isSafeInteger(u.size) || u.size < 0) {
    throw new AppError('INVALID_ARGUMENT', `Object ${u.path}: size must be a non-negative integer`);
  }
}

export class WorkspaceObjectRepository {
  constructor(private readonly db: Queryable) {}

  /** path -> {sha256, size} of every object of the conversation. CONVERSATION_NOT_FOUND when it is not `tenantId`'s. */
  async getAll(tenantId: string, conversationId: string): Promise<Map<string, ObjectEntry>> {
    await assertConversation(this.db, tenantId, conversationId);
    const res = await this.db.query<{ path: string; sha256: string; size: string | number }>(
      'SELECT path, sha256, size FROM workspace_objects WHERE conversation_id = $1 ORDER BY path',
      [conversationId],
    );
    return new Map(res.rows.map((r) => [r.path, { sha256: r.sha256, size: num(r.size) }]));
  }

  /**
   * Records uploads and deletions in one transaction: all or nothing. A path in both lists ends
   * up deleted; a path given twice in `upserts` keeps its last entry; deleting an unknown path is
   * not an error. CONVERSATION_NOT_FOUND when the conversation is not `tenantId`'s.
   */
  async applyChanges(
    tenantId: string,
    conversationId: string,
    upserts: readonly ObjectUpsert[],
    deletes: readonly string[],
  ): Promise<void> {
    upserts.forEach(checkUpsert);
    // A path with NUL cannot be stored, so it cannot be there to delete.
    const gone = new Set(deletes.filter((p) => !p.includes('\0')));
    const byPath = new Map(upserts.filter((u) => !gone.has(u.path)).map((u) => [u.path, u]));
    const list = [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    await this.db.transaction(async (tx) => {
      await assertConversation(tx, tenantId, conversationId);
      if (gone.size > 0) {
        await tx.query(
          'DELETE FROM workspace_objects WHERE conversation_id = $1 AND path = ANY($2::text[])',
          [conversationId, [...gone]],
        );
      }
      if (list.length > 0) {
        await tx.query(
          `INSERT INTO workspace_objects (conversation_id, path, sha256, size)
           SELECT $1, u.path, u.sha256, u.size FROM unnest($2::text[], $3::text[], $4::bigint[]) AS u(path, sha256, size)
           ON CONFLICT (conversation_id, path) DO UPDATE SET
             sha256 = EXCLUDED.sha256, size = EXCLUDED.size, updated_at = now()
           WHERE workspace_objects.sha256 <> EXCLUDED.sha256 OR workspace_objects.size <> EXCLUDED.size`,
          [conversationId, list.map((u) => u.path), list.map((u) => u.sha256), list.map((u) => u.size)],
        );
      }
    });
  }
}
