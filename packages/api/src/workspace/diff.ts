/**
 * Pure diffing of a workspace scan against the sync manifest (what S3 holds, from
 * workspace_objects): which files to upload, which objects to delete, and the changes the caller
 * registers.
 */
import { isHakoStatePath } from './paths.js';

/** One file's content identity: lowercase hex sha256 and size in bytes. */
export interface ManifestEntry {
  readonly sha256: string;
  readonly size: number;
}

/** path (relative to /workspace) -> content, for every file. */
export type Manifest = ReadonlyMap<string, ManifestEntry>;

export type ChangeKind = 'created' | 'modified' | 'deleted';

export interface FileChange {
  readonly path: string;
  /** The new content's hash; for `deleted`, the hash the object had. */
  readonly sha256: string;
  /** The new size; for `deleted`, the size the object had. */
  readonly size: number;
  readonly kind: ChangeKind;
  /**
   * Whether the change belongs in conversation_files: false for hako's own state under `.hako/`,
   * which is synced (and recorded in the manifest) but never registered.
   */
  readonly register: boolean;
}

export interface WorkspaceDiff {
  /** Created and modified files, by path. */
  readonly uploads: readonly (ManifestEntry & { readonly path: string })[];
  /** Paths in the manifest that are no longer files in the workspace. */
  readonly deletes: readonly string[];
  /** Every change, sorted by path. */
  readonly changes: readonly FileChange[];
  readonly unchanged: number;
}

function sameContent(a: ManifestEntry, b: ManifestEntry): boolean {
  return a.sha256 === b.sha256 && a.size === b.size;
}

function byPath(a: { path: string }, b: { path: string }): number {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
}

/**
 * Compares the files found in the workspace (`current`, complete: a path missing from it is gone)
 * with `manifest`. A path in both with the same hash and size is unchanged; a different one is
 * modified; only in `current` is created; only in `manifest` is deleted.
 */
export function diffWorkspace(current: Manifest, manifest: Manifest): WorkspaceDiff {
  const uploads: (ManifestEntry & { path: string })[] = [];
  const changes: FileChange[] = [];
  const deletes: string[] = [];
  let unchanged = 0;
  for (const [path, entry] of current) {
    const before = manifest.get(path);
    if (before !== undefined && sameContent(before, entry)) {
      unchanged++;
      continue;
    }
    uploads.push({ path, sha256: entry.sha256, size: entry.size });
    changes.push({
      path,
      sha256: entry.sha256,
      size: entry.size,
      kind: before === undefined ? 'created' : 'modified',
      register: !isHakoStatePath(path),
    });
  }
  for (const [path, before] of manifest) {
    if (current.has(path)) continue;
    deletes.push(path);
    changes.push({
      path,
      sha256: before.sha256,
      size: before.size,
      kind: 'deleted',
      register: !isHakoStatePath(path),
    });
  }
  uploads.sort(byPath);
  changes.sort(byPath);
  deletes.sort();
  return { uploads, deletes, changes, unchanged };
}

/** Whether `path` with `entry` is already in `manifest` with the same content. */
export function isUnchanged(manifest: Manifest, path: string, entry: ManifestEntry): boolean {
  const before = manifest.get(path);
  return before !== undefined && sameContent(before, entry);
}
