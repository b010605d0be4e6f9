import { rename, writeFile } from 'node:fs/promises';

/** writeAtomic's temporary file for `name`: `{name}.{pid}.tmp`. */
export const ATOMIC_TMP_RE = /^(.+)\.\d+\.tmp$/;

/**
 * Writes `text` to `path` so that a reader (or a process killed mid-write) sees the old file or the
 * whole new one, never a part: a temporary file beside it (`{path}.{pid}.tmp`, mode 0600), renamed
 * over it. A crash can leave the temporary file; its owner's GC recognizes it by ATOMIC_TMP_RE.
 */
export async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, text, { mode: 0o600 });
  await rename(tmp, path);
}
