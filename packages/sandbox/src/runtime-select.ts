import { access, constants } from 'node:fs/promises';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { crunUsable, detectCgroupLayout } from './cgroup-layout.js';
import type { CgroupLayout } from './cgroup-layout.js';
import { OciCliRuntime } from './oci-runtime.js';
import type { Runtime, RuntimeName } from './oci-runtime.js';

/** Preference order for `auto`: crun is the fastest; runsc is the strongest but slowest. */
export const RUNTIME_ORDER: readonly RuntimeName[] = ['crun', 'runc', 'runsc'];

const SEARCH_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

export async function findBinary(name: string): Promise<string | undefined> {
  for (const dir of SEARCH_DIRS) {
    const p = `${dir}/${name}`;
    try {
      await access(p, constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return undefined;
}

export interface RuntimeChoice {
  readonly name: RuntimeName;
  readonly binary: string;
  /** Why the others were passed over (for doctor and --verbose). */
  readonly skipped: readonly string[];
}

/** Whether a runtime can work on this host's cgroup layout, and why not. */
export function runtimeUsableOn(
  name: RuntimeName,
  layout: CgroupLayout,
): { ok: boolean; reason?: string; fix?: string } {
  if (name === 'crun') return crunUsable(layout);
  return { ok: true };
}

/**
 * Picks the OCI runtime. `auto` takes the first installed runtime that works on this host's cgroup
 * layout; an explicit choice that cannot work fails with RUNTIME_UNAVAILABLE and the reason.
 */
export async function chooseRuntime(
  requested: RuntimeName | 'auto',
  layout?: CgroupLayout,
): Promise<RuntimeChoice> {
  const lay = layout ?? (await detectCgroupLayout());
  const candidates = requested === 'auto' ? RUNTIME_ORDER : [requested];
  const skipped: string[] = [];
  for (const name of candidates) {
    const binary = await findBinary(name);
    if (!binary) {
      skipped.push(`${name}: not installed (apt-get install -y ${name})`);
      continue;
    }
    const usable = runtimeUsableOn(name, lay);
    if (!usable.ok) {
      skipped.push(`${name}: ${usable.reason ?? 'unusable'}${usable.fix ? ` (fix: ${usable.fix})` : ''}`);
      continue;
    }
    return { name, binary, skipped };
  }
  throw new AppError(
    'RUNTIME_UNAVAILABLE',
    requested === 'auto'
      ? `no usable OCI runtime: ${skipped.join('; ')}`
      : `runtime ${requested} cannot be used: ${skipped.join('; ')}`,
  );
}

/**
 * Builds the runtime driver. On cgroup v1, crun and runsc (which, unlike runc, cannot keep a
 * container after it exits) run with their cgroup management off and join the sandbox's cgroups
 * (see OciCliRuntime), so the sandbox's counters survive the process.
 */
export function createRuntime(
  choice: RuntimeChoice,
  root: string,
  logger: Logger,
  cgroupVersion: 1 | 2,
): Runtime {
  const joinCgroups = choice.name !== 'runc' && cgroupVersion === 1;
  return new OciCliRuntime({ name: choice.name, binary: choice.binary, root, logger, joinCgroups });
}
