/**
 * hakod's record of the sandboxes it holds: one JSON file per sandbox in the run directory, written
 * once the sandbox runs and updated when its owner or policy changes, so a restarted hakod can adopt
 * what survived (see SandboxManager.reconcile).
 */
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
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

/** A temporary file older than this was left by a hakod that died mid-write. */
const STALE_TMP_MS = 60_000;

export class SandboxRecordStore {
  private readonly dir: string;
  /** Per id, the tail of its writes: they land in call order, never interleaved. */
  private readonly writes = new Map<string, Promise<void>>();
  private tmpSeq = 0;

  constructor(dir: string) {
    this.dir = dir;
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  /**
   * Writes a record atomically (a temporary file of its own, then rename). Writes of one id land in
   * the order they were called, so the last call's record is the one on disk.
   */
  put(r: SandboxRecord): Promise<void> {
    return this.serialized(r.id, async () => {
      const tmp = join(this.dir, `.${r.id}.${process.pid}.${++this.tmpSeq}.tmp`);
      try {
        await writeFile(tmp, JSON.stringify(r), { mode: 0o600 });
        await rename(tmp, join(this.dir, `${r.id}.json`));
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
    });
  }

  /** Removes a record, after any write of it still in flight. */
  remove(id: string): Promise<void> {
    return this.serialized(id, () => rm(join(this.dir, `${id}.json`), { force: true }));
  }

  private serialized(id: string, fn: () => Promise<void>): Promise<void> {
    const prev = this.writes.get(id) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    const tail = next.catch(() => undefined);
    this.writes.set(id, tail);
    void tail.then(() => {
      if (this.writes.get(id) === tail) this.writes.delete(id);
    });
    return next;
  }

  /** Every readable record; unreadable ones are returned by id in `broken`. */
  async list(): Promise<{ records: SandboxRecord[]; broken: string[] }> {
    const records: SandboxRecord[] = [];
    const broken: string[] = [];
    for (const f of await readdir(this.dir).catch(() => [] as string[])) {
      if (f.startsWith('.')) {
        // a write in flight has a fresh temporary file; only a dead writer's stale one goes
        const p = join(this.dir, f);
        const st = await stat(p).catch(() => undefined);
        if (st !== undefined && Date.now() - st.mtimeMs > STALE_TMP_MS) await rm(p, { force: true });
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
