import { mkdirSync, writeFileSync } from 'node:fs';
import { cp, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoOf } from './errno.js';

export interface EtcOptions {
  readonly hostname: string;
  readonly uid: number;
  readonly gid: number;
  /** Home directory of the sandbox user inside the sandbox. */
  readonly home: string;
  /** Sandbox address on the bridge, when it has one. */
  readonly ip?: string | undefined;
}

/** The sandbox user's name in /etc/passwd. */
export const SANDBOX_USER = 'sandbox';

/**
 * Host files that are public, read-only and needed by ordinary programs (CA bundle, Debian's
 * alternatives symlinks, the dynamic linker cache). Bind-mounted read-only over the curated /etc.
 * Nothing secret: never shadow, ssh keys, ssl/private, credentials or the host's passwd.
 */
export const HOST_ETC_BINDS: readonly string[] = ['alternatives', 'ssl/certs', 'ld.so.cache', 'localtime'];

/** The curated /etc's text files for one sandbox. Pure, so it is unit-tested. */
export function renderEtcFiles(o: EtcOptions): Record<string, string> {
  const files: Record<string, string> = {
    passwd:
      'root:x:0:0:root:/root:/usr/sbin/nologin\n' +
      `${SANDBOX_USER}:x:${o.uid}:${o.gid}:hako sandbox:${o.home}:/bin/bash\n` +
      'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n',
    group: `root:x:0:\n${SANDBOX_USER}:x:${o.gid}:\nnogroup:x:65534:\n`,
    hostname: `${o.hostname}\n`,
    hosts:
      '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' +
      `${o.ip ?? '127.0.1.1'}\t${o.hostname}\n`,
    // No resolver inside: names are resolved by the egress proxy, which enforces the allowlist.
    'resolv.conf': '# hako: no DNS inside the sandbox; HTTP(S) goes through the egress proxy\n',
    'nsswitch.conf': 'passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\n',
  };
  return files;
}

/**
 * Merges an image's passwd or group file with the curated one: the image's entries stay (its own
 * service users), except root, nobody/nogroup and any entry with the sandbox user's name or id,
 * which the curated text defines. Pure, so it is unit-tested.
 */
export function mergeAccountFile(image: string, curated: string, id: number): string {
  const curatedNames = new Set(curated.split('\n').map((l) => l.split(':')[0]));
  const kept = image
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('#'))
    .filter((l) => {
      const [name, , num] = l.split(':');
      return !curatedNames.has(name) && num !== String(id);
    });
  return curated + kept.map((l) => `${l}\n`).join('');
}

/**
 * Seeds `dir` with an OCI image's own /etc (symlinks kept as links) so the curated files written
 * next by writeEtcDir() replace only what hako defines; passwd and group are merged. A missing
 * /etc in the image is not an error.
 */
export async function seedEtcFromImage(dir: string, imageEtc: string): Promise<Record<string, string>> {
  try {
    await cp(imageEtc, dir, { recursive: true, verbatimSymlinks: true, errorOnExist: false, force: true });
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return {};
    throw err;
  }
  const base: Record<string, string> = {};
  for (const f of ['passwd', 'group']) {
    base[f] = await readFile(join(dir, f), 'utf8').catch(() => '');
  }
  return base;
}

/**
 * Writes the curated /etc into `dir` (the per-sandbox bundle) and creates the bind mount points.
 * `base` holds an image's passwd/group (from seedEtcFromImage) to merge with the curated ones.
 */
export async function writeEtcDir(
  dir: string,
  o: EtcOptions,
  hostBinds: readonly string[],
  base: Readonly<Record<string, string>> = {},
): Promise<void> {
  // a dozen small files in the bundle on the run dir (a tmpfs): synchronous writes take
  // microseconds each, where each async one cost three thread-pool round trips
  mkdirSync(join(dir, 'ssl'), { recursive: true });
  const files = renderEtcFiles(o);
  if (base.passwd) files.passwd = mergeAccountFile(base.passwd, files.passwd ?? '', o.uid);
  if (base.group) files.group = mergeAccountFile(base.group, files.group ?? '', o.gid);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text, { mode: 0o644 });
  for (const b of hostBinds) {
    // mount points for the read-only host binds: a directory or an empty file, as the source is
    if (b === 'ld.so.cache' || b === 'localtime') writeFileSync(join(dir, b), '');
    else mkdirSync(join(dir, b), { recursive: true });
  }
  return Promise.resolve();
}
