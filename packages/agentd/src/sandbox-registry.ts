/**
 * hakod's record of the sandboxes it holds: one JSON file per sandbox in the run directory, written
 * once the sandbox runs and updated when its owner or policy changes, so a restarted hakod can adopt
 * what survived (see SandboxManager.reconcile).
 */
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { EffectiveLimits, NetworkModeName } from './backend.js';

export interface SandboxRecord {
  readonly version: 1;
  readonly id: string;
  /** Empty while the sandbox waits in the warm pool. */
  readonly ownerId: string;
  readonly image: string;
  readonly imageDigest: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly limits: EffectiveLimits;
  readonly network: NetworkModeName;
  readonly egressAllow: readonly string[];
  readonly upstreams: readonly string[];
  /** Environment for every exec, on top of the sandbox's own. */
  readonly env: Readonly<Record<string, string>>;
  readonly ip: string | undefined;
  readonly prefixLength: number | undefined;
  readonly gateway: string | undefined;
  readonly hostVeth: string | undefined;
  readonly createdAtMs: number;
  readonly expiresAtMs: number;
  readonly idleTimeoutMs: number;
  readonly fromPool: boolean;
  /** The warm-pool profile key while unclaimed. */
  readonly poolProfile: string | undefined;
}

export class SandboxRecordStore {
  private readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  /** Writes a record atomically (temp file + rename). */
  async put(r: SandboxRecord): Promise<void> {
    const tmp = join(this.dir, `.${r.id}.tmp`);
    await writeFile(tmp, JSON.stringify(r), { mode: 0o600 });
    await rename(tmp, join(this.dir, `${r.id}.json`));
  }

  async remove(id: string): Promise<void> {
    await rm(join(this.dir, `${id}.json`), { force: true });
  }

  /** Every readable record; unreadable ones are returned by id in `broken`. */
  async list(): Promise<{ records: SandboxRecord[]; broken: string[] }> {
    const records: SandboxRecord[] = [];
    const broken: string[] = [];
    for (const f of await readdir(this.dir).catch(() => [] as string[])) {
      if (f.startsWith('.')) {
        await rm(join(this.dir, f), { force: true });
        continue;
      }
      if (!f.endsWith('.json')) continue;
      try {
        const r = JSON.parse(await readFile(join(this.dir, f), 'utf8')) as SandboxRecord;
        if (r.version !== 1 || typeof r.id !== 'string') throw new Error('unknown record version');
        records.push(r);
      } catch {
        broken.push(f.slice(0, -'.json'.length));
      }
    }
    return { records, broken };
  }
}
