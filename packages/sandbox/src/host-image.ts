/**
 * The built-in `host` image: an almost empty root filesystem skeleton whose /usr is the host's
 * /usr, bind-mounted read-only. Sandboxes of this image run the host's programs without any image
 * to import. The skeleton holds only mount points and the usr-merge symlinks; /etc is provided per
 * sandbox by the caller (a curated directory bind-mounted over it).
 */
import { lstat, mkdir, readlink, rm, symlink, chmod } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { join, posix } from 'node:path';
import type { ImageConfig, ImageRef } from './types.js';

export const HOST_IMAGE_NAME = 'host';

/** Empty directories the skeleton has, so a read-only rootfs can still be mounted on. */
export const HOST_MOUNT_POINTS = [
  'usr',
  'etc',
  'tmp',
  'workspace',
  'proc',
  'dev',
  'sys',
  'home',
  'run',
  'var',
  'var/tmp',
  'skills',
] as const;

/** Top-level host directories that usr-merged systems make symlinks into /usr. */
export const HOST_MERGED_DIRS = ['bin', 'sbin', 'lib', 'lib64'] as const;

export const HOST_IMAGE_CONFIG: ImageConfig = {
  env: ['PATH=/usr/local/bin:/usr/bin:/bin'],
  entrypoint: [],
  cmd: [],
  workingDir: undefined,
  user: undefined,
};

export type HostDirKind = { kind: 'symlink'; target: string } | { kind: 'dir' } | { kind: 'absent' };

/** What the skeleton does for one of HOST_MERGED_DIRS, given how the host has it. */
export interface HostLayoutEntry {
  readonly name: string;
  readonly host: HostDirKind;
}

async function lstatOrUndefined(path: string): Promise<Stats | undefined> {
  try {
    return await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * Inspects the host's /bin, /sbin, /lib, /lib64 (under `hostRoot`, `/` by default): a symlink into
 * /usr becomes `usr/…` (relative), a real directory stays a directory (and gets its own bind),
 * anything else is left out.
 */
export async function inspectHostLayout(hostRoot = '/'): Promise<HostLayoutEntry[]> {
  const out: HostLayoutEntry[] = [];
  for (const name of HOST_MERGED_DIRS) {
    const path = join(hostRoot, name);
    const st = await lstatOrUndefined(path);
    if (st?.isSymbolicLink()) {
      const resolved = posix.resolve('/', await readlink(path));
      if (resolved.startsWith('/usr/')) {
        out.push({ name, host: { kind: 'symlink', target: resolved.slice(1) } });
        continue;
      }
      // a symlink elsewhere: follow what it points at
      const real = await lstatOrUndefined(join(hostRoot, resolved));
      out.push({ name, host: real?.isDirectory() ? { kind: 'dir' } : { kind: 'absent' } });
      continue;
    }
    out.push({ name, host: st?.isDirectory() ? { kind: 'dir' } : { kind: 'absent' } });
  }
  return out;
}

/** Read-only binds the host image needs: /usr, plus any of /bin, /lib… that is a real directory. */
export function hostImageBinds(
  layout: readonly HostLayoutEntry[],
): { destination: string; source: string }[] {
  const binds = [{ destination: '/usr', source: '/usr' }];
  for (const e of layout)
    if (e.host.kind === 'dir') binds.push({ destination: `/${e.name}`, source: `/${e.name}` });
  return binds;
}

async function ensureDir(path: string, mode: number): Promise<void> {
  const st = await lstatOrUndefined(path);
  if (st?.isDirectory()) return;
  if (st !== undefined) await rm(path, { recursive: true, force: true });
  await mkdir(path, { mode });
  await chmod(path, mode);
}

async function ensureSymlink(path: string, target: string): Promise<void> {
  const st = await lstatOrUndefined(path);
  if (st?.isSymbolicLink() && (await readlink(path)) === target) return;
  if (st !== undefined) await rm(path, { recursive: true, force: true });
  await symlink(target, path);
}

/**
 * Creates (or repairs) the host image skeleton at `dir`. Idempotent: every call checks each mount
 * point and symlink and fixes what differs, so an interrupted earlier run is simply completed.
 * Returns the host layout it mirrored.
 */
export async function ensureHostRootfs(dir: string, hostRoot = '/'): Promise<HostLayoutEntry[]> {
  const layout = await inspectHostLayout(hostRoot);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  await chmod(dir, 0o755);
  for (const rel of HOST_MOUNT_POINTS) {
    await ensureDir(join(dir, rel), rel === 'tmp' || rel === 'var/tmp' ? 0o1777 : 0o755);
  }
  for (const e of layout) {
    const path = join(dir, e.name);
    switch (e.host.kind) {
      case 'symlink':
        await ensureSymlink(path, e.host.target);
        break;
      case 'dir':
        await ensureDir(path, 0o755);
        break;
      case 'absent':
        break;
    }
  }
  return layout;
}

/** The ImageRef of the host image whose skeleton is at `rootfs`. */
export function hostImageRef(rootfs: string, layout: readonly HostLayoutEntry[]): ImageRef {
  return {
    name: HOST_IMAGE_NAME,
    digest: HOST_IMAGE_NAME,
    rootfs,
    config: HOST_IMAGE_CONFIG,
    binds: hostImageBinds(layout),
  };
}
