/**
 * Named network namespaces under /run/netns, managed with iproute2 (`ip netns add/delete`), which
 * bind-mounts the namespace there so it outlives any process; runc/crun then join it by path.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { AppError } from '@hako/core';
import { runTool, stderrTail } from './cni-plugin.js';

/** Where `ip netns` keeps named namespaces. */
export const NETNS_DIR = '/run/netns';

const NAME_RE = /^[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,63}$/;

function assertName(name: string): void {
  if (!NAME_RE.test(name)) {
    throw new AppError(
      'INVALID_ARGUMENT',
      `"${name}" is not a valid network namespace name (1-64 of [a-zA-Z0-9_.-])`,
    );
  }
}

/** The path of netns `name` (whether or not it exists). */
export function netnsPath(name: string): string {
  assertName(name);
  return join(NETNS_DIR, name);
}

export async function netnsExists(name: string): Promise<boolean> {
  try {
    await stat(netnsPath(name));
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new AppError('NETWORK_SETUP_FAILED', `cannot stat ${netnsPath(name)}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/**
 * Creates netns `name` and returns its path. Fails with NETWORK_SETUP_FAILED when it already
 * exists (it is someone else's until proven otherwise, so it is never adopted here).
 */
export async function createNetns(name: string): Promise<string> {
  const path = netnsPath(name);
  const r = await runTool('ip', ['netns', 'add', name]);
  if (r.code !== 0) {
    const exists = /exists/i.test(r.stderr);
    throw new AppError(
      'NETWORK_SETUP_FAILED',
      exists
        ? `network namespace ${name} already exists: a sandbox of that name is still attached, or one leaked (run \`hako gc\`)`
        : `ip netns add ${name} failed: ${stderrTail(r)}`,
    );
  }
  return path;
}

/**
 * Brings the loopback interface up inside netns `name` (a pre-made netns has `lo` down, and the
 * OCI runtime does not touch a namespace it joins).
 */
export async function setLoopbackUp(name: string): Promise<void> {
  assertName(name);
  const r = await runTool('ip', ['-n', name, 'link', 'set', 'dev', 'lo', 'up']);
  if (r.code !== 0) {
    throw new AppError('NETWORK_SETUP_FAILED', `bringing lo up in netns ${name} failed: ${stderrTail(r)}`);
  }
}

/**
 * Deletes netns `name` (unmounts and removes /run/netns/name; the namespace itself goes away with
 * its last user, taking its veth ends with it). Returns false when it did not exist (idempotent).
 */
export async function deleteNetns(name: string): Promise<boolean> {
  assertName(name);
  if (!(await netnsExists(name))) return false;
  const r = await runTool('ip', ['netns', 'delete', name]);
  if (r.code !== 0) {
    if (!(await netnsExists(name))) return false; // removed concurrently
    throw new AppError('NETWORK_SETUP_FAILED', `ip netns delete ${name} failed: ${stderrTail(r)}`);
  }
  return true;
}

/** Names of the netns under /run/netns that start with `prefix` (all when empty), sorted. */
export async function listNetns(prefix = ''): Promise<string[]> {
  let entries: string[];
  try {
    entries = await readdir(NETNS_DIR);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new AppError('NETWORK_SETUP_FAILED', `cannot list ${NETNS_DIR}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return entries.filter((n) => n.startsWith(prefix)).sort();
}
