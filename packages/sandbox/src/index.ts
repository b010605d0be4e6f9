export { LocalImageStore, classifyStoreError, assertImageName, IMAGE_MOUNT_POINTS } from './image-store.js';
export type { LocalImageStoreOptions } from './image-store.js';
export { HOST_IMAGE_NAME, HOST_IMAGE_CONFIG, HOST_MOUNT_POINTS, ensureHostRootfs, hostImageRef } from './host-image.js';
export type { HostLayoutEntry } from './host-image.js';
export { applyLayer, entryPathComponents } from './layer-unpack.js';
export type { ApplyLayerOptions, ApplyLayerResult } from './layer-unpack.js';
export { hostPlatform } from './oci-layout.js';
export type { Platform } from './oci-layout.js';
export {
  XfsQuotaManager,
  detectXfsQuotaSupport,
  inodeLimitFor,
  projectIdCandidates,
  withHostLock,
} from './quota-xfs.js';
export type { QuotaManagerOptions, XfsQuotaSupport } from './quota-xfs.js';
export { LoopQuotaManager, loopImageBytes } from './quota-loop.js';
export { chooseQuotaEngine, createQuotaManager } from './quota.js';
export type { QuotaEngine, QuotaEngineChoice } from './quota.js';
export { parseMountInfo, readMountInfo, findMount } from './mount-info.js';
export type { MountInfoEntry } from './mount-info.js';
export {
  runHostChecks,
  gatherHostFacts,
  evaluateHostChecks,
  parseVersion,
  parseSeccompStatus,
} from './host-checks.js';
export type { HostCheck, HostCheckOptions, HostFacts, CommandResult } from './host-checks.js';
