/**
 * Pure path rules for workspace sync: where a conversation's files live in the object store, and
 * which workspace paths may travel between a sandbox and S3 at all. A sandbox is hostile: its tar
 * stream may name anything, so every name is checked before it becomes an object key or a spool
 * entry.
 */
import { AppError } from '@hako/core';

/** hako's own state inside the workspace (the agent's config dir): synced, never registered as a file. */
export const HAKO_STATE_DIR = '.hako';
/** S3 keys stop at 1024 bytes of UTF-8. */
export const MAX_OBJECT_KEY_BYTES = 1024;
/** Longest path segment (Linux NAME_MAX). */
export const MAX_SEGMENT_BYTES = 255;

/** `workspaces/{tenant}/{conversation}/`: every object of one conversation's workspace. */
export function workspacePrefix(tenantId: string, conversationId: string): string {
  for (const [what, v] of [
    ['tenant id', tenantId],
    ['conversation id', conversationId],
  ] as const) {
    if (!isSafeId(v)) {
      throw new AppError(
        'INVALID_ARGUMENT',
        `${what} ${JSON.stringify(v.slice(0, 80))} cannot name a workspace (letters, digits, '.', '_', '-' only)`,
      );
    }
  }
  return `workspaces/${tenantId}/${conversationId}/`;
}

/** An id usable as one key segment and one directory name: 1..128 of [A-Za-z0-9._-], not `.`/`..`. */
export function isSafeId(v: string): boolean {
  return /^[A-Za-z0-9._-]{1,128}$/.test(v) && v !== '.' && v !== '..';
}

/** Why a workspace path cannot be synced. */
export type SyncPathProblem =
  | 'empty'
  | 'absolute'
  | 'nul'
  | 'control_character'
  | 'empty_segment'
  | 'dot_segment'
  | 'segment_too_long'
  | 'too_long';

// C0 controls, DEL and C1 controls: S3's XML listings cannot carry all of them faithfully.
const CONTROL = /[\u0001-\u001f\u007f-\u009f]/;

/**
 * Checks a workspace-relative path (`src/main.ts`, no trailing `/`) against the sync rules: not
 * empty, relative, no NUL or control characters, no empty/`.`/`..` segment, segments of at most
 * MAX_SEGMENT_BYTES, and short enough that `prefixBytes + path` fits in an S3 key. Answers the
 * first problem, or undefined when it may be synced.
 */
export function syncPathProblem(path: string, prefixBytes: number): SyncPathProblem | undefined {
  if (path === '') return 'empty';
  if (path.includes('\0')) return 'nul';
  if (path.startsWith('/')) return 'absolute';
  if (CONTROL.test(path)) return 'control_character';
  if (prefixBytes + Buffer.byteLength(path, 'utf8') > MAX_OBJECT_KEY_BYTES) return 'too_long';
  for (const seg of path.split('/')) {
    if (seg === '') return 'empty_segment';
    if (seg === '.' || seg === '..') return 'dot_segment';
    if (Buffer.byteLength(seg, 'utf8') > MAX_SEGMENT_BYTES) return 'segment_too_long';
  }
  return undefined;
}

/** Whether `path` is hako's own state (`.hako` or below): synced, but never registered or listed. */
export function isHakoStatePath(path: string): boolean {
  return path === HAKO_STATE_DIR || path.startsWith(`${HAKO_STATE_DIR}/`);
}
