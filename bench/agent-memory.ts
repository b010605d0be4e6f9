/**
 * Host memory as the agent bench sees it: /proc/meminfo read after `sync`, twice a second apart
 * (nothing is dropped: the page cache stays, so the numbers are what a real node would have), the
 * resident memory of the processes inside one hako env's sandboxes, and the memory its cgroups are
 * charged with.
 */
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { run } from './lib/proc.js';

/** The /proc/meminfo fields the bench reports, in bytes. */
export const MEMINFO_FIELDS = [
  'MemAvailable',
  'MemFree',
  'Shmem',
  'Slab',
  'SUnreclaim',
  'KernelStack',
  'PageTables',
  'Percpu',
] as const;
export type MeminfoField = (typeof MEMINFO_FIELDS)[number];
export type Meminfo = Record<MeminfoField, number>;

/** /proc/meminfo as bytes (fields the kernel does not have are NaN). */
export async function readMeminfo(): Promise<Meminfo> {
  const text = await readFile('/proc/meminfo', 'utf8');
  const out = {} as Meminfo;
  for (const f of MEMINFO_FIELDS) {
    const m = new RegExp(`^${f}:\\s+(\\d+) kB$`, 'm').exec(text);
    out[f] = m ? Number(m[1]) * 1024 : NaN;
  }
  return out;
}

export interface SettledMeminfo {
  /** The mean of the two readings. */
  readonly mean: Meminfo;
  /** How much MemAvailable moved between the two readings (bytes, signed): the noise floor. */
  readonly availableDrift: number;
}

/** `sync`, then /proc/meminfo twice a second apart. */
export async function settledMeminfo(): Promise<SettledMeminfo> {
  await run('sync', []);
  const a = await readMeminfo();
  await new Promise((r) => setTimeout(r, 1000));
  const b = await readMeminfo();
  const mean = {} as Meminfo;
  for (const f of MEMINFO_FIELDS) mean[f] = (a[f] + b[f]) / 2;
  return { mean, availableDrift: b.MemAvailable - a.MemAvailable };
}

export interface ProcessMemory {
  /** Processes whose cgroup is under hako/{env}/ in some hierarchy. */
  readonly processes: number;
  /** Sum of their RSS (shared pages counted once per process). */
  readonly rssBytes: number;
  /** Sum of their PSS (shared pages split between the processes sharing them). */
  readonly pssBytes: number;
}

function field(text: string, name: string): number {
  const m = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(text);
  return m ? Number(m[1]) * 1024 : 0;
}

/** The processes inside an env's sandboxes (found by their cgroup) and their resident memory. */
export async function sandboxProcessMemory(hakoEnv: string): Promise<ProcessMemory> {
  const marker = `/hako/${hakoEnv}/`;
  let processes = 0;
  let rssBytes = 0;
  let pssBytes = 0;
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    // a process may exit between the listing and the reads: skip it
    const cg = await readFile(`/proc/${pid}/cgroup`, 'utf8').catch(() => '');
    if (!cg.includes(marker)) continue;
    const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
    if (rollup === '') continue;
    processes++;
    rssBytes += field(rollup, 'Rss');
    pssBytes += field(rollup, 'Pss');
  }
  return { processes, rssBytes, pssBytes };
}

/**
 * Memory charged to the env's cgroup (hako/{env}: every sandbox below it), from the v1 memory
 * hierarchy (usage_in_bytes, kmem included) or cgroup v2 (memory.current); undefined when neither
 * file exists.
 */
export async function envCgroupMemory(hakoEnv: string): Promise<number | undefined> {
  const candidates = [
    `/sys/fs/cgroup/memory/hako/${hakoEnv}/memory.usage_in_bytes`,
    `/sys/fs/cgroup/unified/hako/${hakoEnv}/memory.current`,
    `/sys/fs/cgroup/hako/${hakoEnv}/memory.current`,
  ];
  for (const p of candidates) {
    if (!existsSync(p)) continue;
    const v = Number((await readFile(p, 'utf8').catch(() => '')).trim());
    if (Number.isFinite(v)) return v;
  }
  return undefined;
}

/**
 * The memory controller's cgroup count from /proc/cgroups. It includes removed cgroups the kernel
 * has not freed yet ("dying": still pinned by charged page cache or slab objects), so after a mass
 * destroy it shows how much of the memory not yet returned is waiting on lazy reclaim.
 */
export async function memoryCgroupCount(): Promise<number | undefined> {
  const text = await readFile('/proc/cgroups', 'utf8').catch(() => '');
  const m = /^memory\s+\d+\s+(\d+)\s+\d+$/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

export const MIB = 1024 * 1024;
