export { LocalImageStore, classifyStoreError, assertImageName, IMAGE_MOUNT_POINTS } from './image-store.js';
export type { LocalImageStoreOptions } from './image-store.js';
export { HOST_IMAGE_NAME, HOST_IMAGE_CONFIG, HOST_MOUNT_POINTS, ensureHostRootfs, hostImageRef } from './host-image.js';
export type { HostLayoutEntry } from './host-image.js';
export { applyLayer, entryPathComponents } from './layer-unpack.js';
export type { ApplyLayerOptions, ApplyLayerResult } from './layer-unpack.js';
export { hostPlatform } from './oci-layout.js';
export type { Platform } from './oci-layout.js';
