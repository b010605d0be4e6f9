/**
 * Pure validation of workspace-relative paths (WriteFiles' dest_dir and tar entry names,
 * ReadFiles' paths). A valid path is split into components that are each safe to hand to the
 * kernel as one name inside an already-open directory: never empty, `.`, `..`, never containing
 * `/` or NUL, at most NAME_MAX bytes. Confinement itself is done by workspace-files.ts, which
 * walks these components one directory fd at a time; this module only refuses what can never be
 * a name inside the workspace.
 */
import { AppError } from '@hako/core';

/** Longest single component in bytes (Linux NAME_MAX). */
export const MAX_NAME_BYTES = 255;
/** Longest workspace-relative path in bytes (Linux PATH_MAX less the terminating NUL). */
export const MAX_PATH_BYTES = 4095;

function invalid(what: string, path: string, why: string): AppError {
  const shown = path.length > 200 ? `${path.slice(0, 200)}…` : path;
  return new AppError(
    'FILE_PATH_INVALID',
    `${what} ${JSON.stringify(shown)} ${why}; use a relative path inside /workspace such as "src/main.ts"`,
  );
}

/**
 * Splits a workspace-relative path into its components. One trailing `/` is allowed (`src/`
 * names a directory). FILE_PATH_INVALID for the empty string, absolute paths, NUL bytes, empty
 * components (`a//b`), `.` and `..` components, a component over MAX_NAME_BYTES or a path over
 * MAX_PATH_BYTES.
 */
export function parseWorkspacePath(path: string, what = 'path'): string[] {
  if (typeof path !== 'string') throw invalid(what, String(path), 'is not a string');
  if (path === '') throw invalid(what, path, 'is empty');
  if (path.includes('\0')) throw invalid(what, path.replaceAll('\0', '\\0'), 'contains a NUL byte');
  if (path.startsWith('/')) throw invalid(what, path, 'is absolute');
  if (Buffer.byteLength(path, 'utf8') > MAX_PATH_BYTES)
    throw invalid(what, path, `is longer than ${MAX_PATH_BYTES} bytes`);
  const body = path.endsWith('/') ? path.slice(0, -1) : path;
  const parts = body.split('/');
  for (const part of parts) {
    if (part === '') throw invalid(what, path, 'has an empty component');
    if (part === '.' || part === '..') throw invalid(what, path, `has a "${part}" component`);
    if (Buffer.byteLength(part, 'utf8') > MAX_NAME_BYTES)
      throw invalid(what, path, `has a component longer than ${MAX_NAME_BYTES} bytes`);
  }
  return parts;
}

/** WriteFiles' destination directory: `''` is the workspace root (no components), else as parseWorkspacePath. */
export function parseDestDir(dest: string): string[] {
  return dest === '' ? [] : parseWorkspacePath(dest, 'destination directory');
}

/**
 * A tar entry's name, relative to the destination directory. Archives made with
 * `tar -C dir -cf - .` name their entries `./a/b` and include `./` itself, so leading `./`
 * prefixes are removed first; `.` or `./` alone is the destination directory (no components).
 * Everything else is refused as by parseWorkspacePath (`a/../../x`, `/etc/x`, `../x`).
 */
export function parseTarEntryName(name: string): string[] {
  let rest = name;
  while (rest.startsWith('./')) rest = rest.slice(2);
  if (rest === '' || rest === '.') {
    if (name === '') throw invalid('tar entry', name, 'has an empty name');
    return [];
  }
  return parseWorkspacePath(rest, 'tar entry');
}
