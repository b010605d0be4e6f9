// Presented files (what the agent marked for the user with the hako MCP server's present_files)
// and the version history of registered files. Tenant-scoped through the conversation: another
// tenant's conversation answers CONVERSATION_NOT_FOUND like a missing one.
import { AppError } from '@hako/core';
import type { Queryable } from '../db/pool.js';
import type { FileSource, FileVersion, PresentMark, PresentedFile } from '../types.js';
import { assertConversation, isUuid, iso, num } from './common.js';
import { isRegistrablePath } from './files.js';

/** Longest description of a presented file, in characters. */
export const MAX_PRESENT_DESCRIPTION = 2000;

interface PresentedRow {
  path: string;
  version: number;
  presented_version: number;
  size: string | number;
  sha256: string;
  mime_type: string;
  description: string | null;
  run_id: string | null;
  presented_at: Date;
}

interface VersionRow {
  path: string;
  version: number;
  size: string | number;
  sha256: string;
  mime_type: string;
  source: FileSource;
  run_id: string | null;
  created_at: Date;
  current: boolean;
}

/** What marking a run's present_files calls did. */
export interface MarkResult {
  /** Paths now presented (registered files), in path order. */
  readonly presented: readonly string[];
  /** Paths marked that are not registered files when the run ended (never written, or deleted). */
  readonly missing: readonly string[];
}

export class PresentedFileRepository {
  constructor(private readonly db: Queryable) {}

  /**
   * Presents the marked paths that are registered files of the conversation (call it in the
   * transaction that registered the run's sync-back): each gets the file's current version, the
   * mark's description (a later mark without one keeps the earlier), the run and the time. A path
   * marked twice keeps its last mark. Answers which paths were presented and which are missing.
   */
  async mark(
    tenantId: string,
    conversationId: string,
    runId: string | undefined,
    marks: readonly PresentMark[],
  ): Promise<MarkResult> {
    await assertConversation(this.db, tenantId, conversationId);
    const byPath = new Map<string, PresentMark>();
    const invalid: string[] = [];
    for (const m of marks) {
      if (isRegistrablePath(m.path)) byPath.set(m.path, m);
      else invalid.push(m.path);
    }
    if (byPath.size === 0) return { presented: [], missing: invalid.sort() };
    if (runId !== undefined && !isUuid(runId)) throw new AppError('INVALID_ARGUMENT', 'runId must be a UUID');
    const list = [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    const res = await this.db.query<{ path: string }>(
      `INSERT INTO presented_files (conversation_id, path, version, description, run_id)
       SELECT f.conversation_id, f.path, f.version, u.description, $4
       FROM conversation_files f
       JOIN unnest($2::text[], $3::text[]) AS u(path, description) ON u.path = f.path
       WHERE f.conversation_id = $1
       ON CONFLICT (conversation_id, path) DO UPDATE SET
         version = EXCLUDED.version,
         description = COALESCE(EXCLUDED.description, presented_files.description),
         run_id = EXCLUDED.run_id,
         presented_at = now()
       RETURNING path`,
      [
        conversationId,
        list.map((m) => m.path),
        list.map((m) => m.description?.slice(0, MAX_PRESENT_DESCRIPTION) ?? null),
        runId ?? null,
      ],
    );
    const done = new Set(res.rows.map((r) => r.path));
    return {
      presented: list.filter((m) => done.has(m.path)).map((m) => m.path),
      missing: [...list.filter((m) => !done.has(m.path)).map((m) => m.path), ...invalid].sort(),
    };
  }

  /** The conversation's presented files, oldest presentation first. CONVERSATION_NOT_FOUND. */
  async list(tenantId: string, conversationId: string): Promise<PresentedFile[]> {
    await assertConversation(this.db, tenantId, conversationId);
    const res = await this.db.query<PresentedRow>(
      `SELECT p.path, f.version, p.version AS presented_version, f.size, f.sha256, f.mime_type,
         p.description, p.run_id, p.presented_at
       FROM presented_files p
       JOIN conversation_files f ON f.conversation_id = p.conversation_id AND f.path = p.path
       WHERE p.conversation_id = $1
       ORDER BY p.presented_at, p.path`,
      [conversationId],
    );
    return res.rows.map((r) => ({
      path: r.path,
      version: r.version,
      presentedVersion: r.presented_version,
      size: num(r.size),
      sha256: r.sha256,
      mimeType: r.mime_type,
      description: r.description,
      runId: r.run_id,
      presentedAt: iso(r.presented_at),
    }));
  }

  /**
   * Every recorded version of `path`, oldest first (empty when the path never was a registered
   * file, an unregistrable path included). CONVERSATION_NOT_FOUND.
   */
  async listVersions(tenantId: string, conversationId: string, path: string): Promise<FileVersion[]> {
    await assertConversation(this.db, tenantId, conversationId);
    if (!isRegistrablePath(path)) return [];
    const res = await this.db.query<VersionRow>(
      `SELECT v.path, v.version, v.size, v.sha256, v.mime_type, v.source, v.run_id, v.created_at,
         (f.version IS NOT NULL AND f.version = v.version) AS current
       FROM conversation_file_versions v
       LEFT JOIN conversation_files f ON f.conversation_id = v.conversation_id AND f.path = v.path
       WHERE v.conversation_id = $1 AND v.path = $2 ORDER BY v.version`,
      [conversationId, path],
    );
    return res.rows.map((r) => ({
      path: r.path,
      version: r.version,
      size: num(r.size),
      sha256: r.sha256,
      mimeType: r.mime_type,
      source: r.source,
      runId: r.run_id,
      createdAt: iso(r.created_at),
      current: r.current === true,
    }));
  }
}
