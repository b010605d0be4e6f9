/**
 * Pure classification of the tar entries a sandbox's ReadFiles answers. Only regular files with a
 * valid name are synced; symlinks, hard links, devices and FIFOs are skipped and reported (their
 * targets are never read, so a link the agent made to /etc/passwd or `../..` reaches nothing), as
 * are names that break the sync path rules.
 */
import type { Header } from 'tar-stream';
import { syncPathProblem } from './paths.js';
import type { SyncPathProblem } from './paths.js';

export type SkipReason =
  | 'symlink'
  | 'hard_link'
  | 'device'
  | 'fifo'
  | 'unknown_type'
  | 'not_utf8'
  /** Restore only: listed, then gone before it was downloaded. */
  | 'vanished'
  | SyncPathProblem;

/** An entry left out of a sync, for the result and the log. */
export interface SkippedEntry {
  /** The entry's name, at most 300 characters (longer ones are cut and end with `…`). */
  readonly path: string;
  readonly reason: SkipReason;
}

export type TarEntryClass =
  | { readonly kind: 'file'; readonly path: string; readonly size: number }
  | { readonly kind: 'directory' }
  | { readonly kind: 'skipped'; readonly skipped: SkippedEntry };

const SHOWN_CHARS = 300;

/** `name` for reports: cut to SHOWN_CHARS. */
export function shownPath(name: string): string {
  return name.length > SHOWN_CHARS ? `${name.slice(0, SHOWN_CHARS)}…` : name;
}

function skip(name: string, reason: SkipReason): TarEntryClass {
  return { kind: 'skipped', skipped: { path: shownPath(name), reason } };
}

/** Strips leading `./` segments (archives made with `tar -C dir .`). */
function stripDotSlash(name: string): string {
  let rest = name;
  while (rest.startsWith('./')) rest = rest.slice(2);
  return rest;
}

/**
 * What to do with one tar entry. `prefixBytes` is the byte length of the object key prefix the
 * path will be appended to (keys stop at 1024 bytes). A directory entry is only structure (files
 * carry their full paths); a file entry with an invalid name is skipped, never an error, because
 * the agent chose the name.
 */
export function classifyTarEntry(
  header: Pick<Header, 'name' | 'type' | 'size'> | { name: string; type: string | null; size?: number },
  prefixBytes: number,
): TarEntryClass {
  const name = header.name;
  const type = header.type as string | null | undefined;
  switch (type) {
    case 'directory':
      return { kind: 'directory' };
    case 'symlink':
      return skip(name, 'symlink');
    case 'link':
      return skip(name, 'hard_link');
    case 'character-device':
    case 'block-device':
      return skip(name, 'device');
    case 'fifo':
      return skip(name, 'fifo');
    case 'file':
    case 'contiguous-file':
      break;
    case null:
    case undefined:
    default:
      return skip(name, 'unknown_type');
  }
  if (name.includes('\uFFFD')) return skip(name, 'not_utf8');
  const path = stripDotSlash(name);
  const problem = syncPathProblem(path, prefixBytes);
  if (problem !== undefined) return skip(name, problem);
  const size = header.size ?? 0;
  return { kind: 'file', path, size };
}
