/**
 * Chooses the disk quota engine for this host: XFS project quotas on one shared volume
 * (quota-xfs.ts) where the kernel supports them, one ext4 image per sandbox (quota-loop.ts) where
 * it was built without quota support.
 */
import { LoopQuotaManager } from './quota-loop.js';
import { XfsQuotaManager, detectXfsQuotaSupport } from './quota-xfs.js';
import type { QuotaManagerOptions } from './quota-xfs.js';

export type QuotaEngine = 'xfs' | 'loop';

export interface QuotaEngineChoice {
  readonly engine: QuotaEngine;
  /** Why (for doctor and logs). */
  readonly reason: string;
}

/**
 * `xfs` unless the kernel has loaded XFS without quota support. When XFS is not loaded yet the
 * answer is `xfs`: stock kernels have CONFIG_XFS_QUOTA, and init() says so clearly if not.
 */
export async function chooseQuotaEngine(procRoot = '/proc'): Promise<QuotaEngineChoice> {
  const s = await detectXfsQuotaSupport(procRoot);
  if (s.supported === false) return { engine: 'loop', reason: `${s.detail}: one ext4 image per sandbox` };
  return { engine: 'xfs', reason: `${s.detail}: XFS project quotas on one volume` };
}

/** The quota manager for this host (see chooseQuotaEngine). Call init() on it before use. */
export async function createQuotaManager(
  opts: QuotaManagerOptions,
  engine?: QuotaEngine,
): Promise<XfsQuotaManager | LoopQuotaManager> {
  const chosen = engine ?? (await chooseQuotaEngine()).engine;
  return chosen === 'xfs' ? new XfsQuotaManager(opts) : new LoopQuotaManager(opts);
}
