/**
 * Validation of workspace file paths given by API callers (uploads, downloads, deletes) and the
 * object key a valid path maps to. A valid path is relative to /workspace, made of plain segments,
 * and never names the agent's own state under `.hako/`.
 */
import { AppError } from '@hako/core';

/** Longest path, in UTF-8 bytes (S3 keys stop at 1024 bytes; the key prefix takes about 90). */
export const MAX_FILE_PATH_BYTES = 900;
/** Longest segment, in UTF-8 bytes (most Linux filesystems stop at 255). */
export const MAX_FILE_SEGMENT_BYTES = 255;
/** Most directory levels. */
export const MAX_FILE_PATH_DEPTH = 32;
/** The agent's state directory inside the workspace: never listed, uploaded, downloaded or deleted. */
export const RESERVED_DIR = '.hako';

/** Why a path was refused; also `details.reason` of the FILE_PATH_INVALID problem. */
export type FilePathProblem =
  | 'empty'
  | 'absolute'
  | 'too_long'
  | 'too_deep'
  | 'segment_too_long'
  | 'empty_segment'
  | 'dot_segment'
  | 'control_character'
  | 'backslash'
  | 'invalid_unicode'
  | 'reserved';

// C0 controls (NUL included), DEL and C1 controls.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Checks `path` without throwing: the first problem found, or undefined when it is valid. */
export function filePathProblem(path: string): FilePathProblem | undefined {
  if (path.length === 0) return 'empty';
  if (CONTROL.test(path)) return 'control_character';
  if (LONE_SURROGATE.test(path)) return 'invalid_unicode';
  if (path.includes('\\')) return 'backslash';
  if (path.startsWith('/')) return 'absolute';
  if (Buffer.byteLength(path, 'utf8') > MAX_FILE_PATH_BYTES) return 'too_long';
  const segments = path.split('/');
  if (segments.length > MAX_FILE_PATH_DEPTH) return 'too_deep';
  for (const s of segments) {
    if (s === '') return 'empty_segment';
    if (s === '.' || s === '..') return 'dot_segment';
    if (Buffer.byteLength(s, 'utf8') > MAX_FILE_SEGMENT_BYTES) return 'segment_too_long';
  }
  if (segments[0] === RESERVED_DIR) return 'reserved';
  return undefined;
}

const MESSAGES: Record<FilePathProblem, string> = {
  empty: 'the file path is empty',
  absolute: 'the file path is absolute; give it relative to the workspace (dir/name.txt)',
  too_long: `the file path is longer than ${MAX_FILE_PATH_BYTES} bytes`,
  too_deep: `the file path has more than ${MAX_FILE_PATH_DEPTH} levels`,
  segment_too_long: `a file path segment is longer than ${MAX_FILE_SEGMENT_BYTES} bytes`,
  empty_segment: 'the file path has an empty segment (a doubled or trailing "/")',
  dot_segment: 'the file path has a "." or ".." segment',
  control_character: 'the file path holds a NUL or another control character',
  backslash: 'the file path holds a backslash; separate directories with "/"',
  invalid_unicode: 'the file path is not valid Unicode (a lone surrogate)',
  reserved: `paths under ${RESERVED_DIR}/ hold the agent's own state and cannot be accessed through the files API`,
};

/** Answers `path` when it is valid; FILE_PATH_INVALID (400) with `details.reason` otherwise. */
export function assertFilePath(path: string): string {
  const problem = filePathProblem(path);
  if (problem !== undefined) {
    throw new AppError('FILE_PATH_INVALID', MESSAGES[problem], { details: { reason: problem } });
  }
  return path;
}

/** The object key of a workspace file: `workspaces/{tenant}/{conversation}/{path}`. */
export function workspaceObjectKey(tenantId: string, conversationId: string, path: string): string {
  return `workspaces/${tenantId}/${conversationId}/${assertFilePath(path)}`;
}
