/**
 * Reads /proc/self/mountinfo (proc(5)): which filesystem is mounted where, with which options.
 * Used by the quota managers to check their mounts without spawning anything.
 */
import { readFile } from 'node:fs/promises';

export const SELF_MOUNTINFO = '/proc/self/mountinfo';

export interface MountInfoEntry {
  readonly mountId: number;
  /** Path inside the filesystem that is mounted here (`/` unless a bind mount of a sub-tree). */
  readonly root: string;
  readonly mountPoint: string;
  /** Per-mount options (rw, nosuid, nodev, …). */
  readonly mountOptions: readonly string[];
  readonly fsType: string;
  /** Device or other source (`/dev/loop3`). */
  readonly source: string;
  /** Per-superblock options (for XFS: `prjquota` when project quotas are enforced). */
  readonly superOptions: readonly string[];
}

/** Undoes the octal escapes mountinfo uses in paths (\040 space, \011 tab, \012 newline, \134 backslash). */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses mountinfo text; malformed lines are skipped. */
export function parseMountInfo(text: string): MountInfoEntry[] {
  const out: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (sep < 0 || f.length < sep + 4) continue;
    const [id, , , root, mountPoint, mountOptions] = f;
    const fsType = f[sep + 1];
    const source = f[sep + 2];
    const superOptions = f[sep + 3];
    if (
      id === undefined ||
      root === undefined ||
      mountPoint === undefined ||
      mountOptions === undefined ||
      fsType === undefined ||
      source === undefined ||
      superOptions === undefined
    ) {
      continue;
    }
    out.push({
      mountId: Number(id),
      root: unescapeMountField(root),
      mountPoint: unescapeMountField(mountPoint),
      mountOptions: mountOptions.split(','),
      fsType,
      source: unescapeMountField(source),
      superOptions: superOptions.split(','),
    });
  }
  return out;
}

/**
 * The mount visible at `mountPoint` (an absolute, symlink-free path), or undefined. When several
 * mounts are stacked on the same point, the last one (the visible one) wins.
 */
export function findMount(
  entries: readonly MountInfoEntry[],
  mountPoint: string,
): MountInfoEntry | undefined {
  let found: MountInfoEntry | undefined;
  for (const e of entries) if (e.mountPoint === mountPoint) found = e;
  return found;
}

/** Reads and parses this process's mount table. */
export async function readMountInfo(path = SELF_MOUNTINFO): Promise<MountInfoEntry[]> {
  return parseMountInfo(await readFile(path, 'utf8'));
}
