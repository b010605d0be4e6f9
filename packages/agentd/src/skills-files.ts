/**
 * WriteFiles with target SKILLS: a sandbox's /skills tree (a host directory inside its bundle,
 * bind-mounted read-only) gets one directory replaced whole. Only hakod writes this tree and the
 * sandbox cannot (its mount is read-only), so no component can be swapped under us; the tar is
 * still unpacked with workspace-files.ts' confinement and size rules (regular files and
 * directories only, no `..`, no absolute names, the transfer limits).
 *
 * Replacement: the tar goes into a fresh staging directory beside the target, then the old
 * directory is renamed away, the staging one renamed into place and the old one removed. A reader
 * in the sandbox sees the old tree or the new one, never a mix; a failed write leaves the old tree
 * as it was and removes the staging directory. Files and directories are root's, with the tar's
 * permission bits (0644 / 0755 from hako-api), so the sandbox user can read them.
 */
import { randomBytes } from 'node:crypto';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { AppError } from '@hako/core';
import { writeTarToWorkspace } from './workspace-files.js';
import type { FileTransferLimits } from './workspace-files.js';
import { parseDestDir } from './workspace-paths.js';

/** Names hakod uses next to the replaced directory while it swaps it. */
const STAGING_PREFIX = '.hako-staging-';
const OLD_PREFIX = '.hako-old-';

/**
 * Replaces `skillsRoot/destDir` with the contents of `tar`. `destDir` is one name (hako-api uses
 * the tenant id); FILE_PATH_INVALID for anything else. Resolves with the files and bytes written.
 */
export async function replaceSkillsDir(
  skillsRoot: string,
  destDir: string,
  tar: Readable,
  limits: FileTransferLimits,
): Promise<{ files: number; bytes: number }> {
  let name: string;
  try {
    const parts = parseDestDir(destDir);
    if (parts.length !== 1 || (parts[0] as string).startsWith('.hako-')) {
      throw new AppError(
        'FILE_PATH_INVALID',
        `dest_dir ${JSON.stringify(destDir.slice(0, 100))} must be one name (not starting with .hako-) for the skills target`,
      );
    }
    name = parts[0] as string;
  } catch (err) {
    if (!tar.destroyed) tar.destroy();
    throw err;
  }
  const tag = randomBytes(8).toString('hex');
  const staging = `${STAGING_PREFIX}${tag}`;
  const old = `${OLD_PREFIX}${tag}`;
  try {
    const written = await writeTarToWorkspace(skillsRoot, staging, tar, { uid: 0, gid: 0 }, limits);
    let moved = false;
    try {
      await rename(join(skillsRoot, name), join(skillsRoot, old));
      moved = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    try {
      await rename(join(skillsRoot, staging), join(skillsRoot, name));
    } catch (err) {
      if (moved) await rename(join(skillsRoot, old), join(skillsRoot, name)).catch(() => undefined);
      throw err;
    }
    if (moved) await rm(join(skillsRoot, old), { recursive: true, force: true });
    return written;
  } catch (err) {
    await rm(join(skillsRoot, staging), { recursive: true, force: true }).catch(() => undefined);
    if (err instanceof AppError) throw err;
    throw new AppError('INTERNAL', `replacing /skills/${name}: ${(err as Error).message}`, { cause: err });
  }
}
