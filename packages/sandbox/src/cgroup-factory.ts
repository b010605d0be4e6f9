/** Picks the cgroup manager for the host's layout. */
import type { Logger } from '@hako/core';
import type { CgroupLayout } from './cgroup-layout.js';
import { CgroupV1Manager } from './cgroup-v1.js';
import { CgroupV2Manager } from './cgroup-v2.js';

export interface CgroupManagerOptions {
  readonly env: string;
  /**
   * v2: the cgroup2 directory to work in (default: the layout's unified mount). v1/hybrid: where
   * the v1 hierarchies are mounted (default /sys/fs/cgroup).
   */
  readonly root?: string;
  readonly logger: Logger;
}

/** Either manager; both also offer removeEnvRoot(). */
export type HakoCgroupManager = CgroupV1Manager | CgroupV2Manager;

/**
 * v2 hosts get the v2 manager; v1 and hybrid hosts (controllers on v1, the unified hierarchy only
 * tracking processes) get the v1 manager, which also creates the sandbox's cgroup in the unified
 * hierarchy on hybrid hosts.
 */
export function createCgroupManager(layout: CgroupLayout, opts: CgroupManagerOptions): HakoCgroupManager {
  switch (layout.mode) {
    case 'v2':
      return new CgroupV2Manager({
        env: opts.env,
        root: opts.root ?? layout.unifiedPath,
        logger: opts.logger,
      });
    case 'v1':
    case 'hybrid':
      return new CgroupV1Manager({ env: opts.env, root: opts.root, logger: opts.logger, layout });
  }
}
