export * from './types.js';
export * from './names.js';
export * from './cleanup-stack.js';
export * from './sandbox.js';
export * from './sandbox-host.js';
export * from './oci-spec.js';
export * from './seccomp-profile.js';
export * from './etc-files.js';
export * from './oci-runtime.js';
export * from './runtime-select.js';
export {
  detectCgroupLayout,
  crunUsable,
  v1MountFor,
  sandboxCgroupRel,
  runtimeCgroupsPath,
  RUNTIME_CHILD,
} from './cgroup-layout.js';
export type { CgroupLayout, CgroupMode, CgroupV1Mount } from './cgroup-layout.js';
export * from './cgroup-v1.js';
export * from './cgroup-v2.js';
export * from './cgroup-factory.js';
export {
  parseAllowEntry,
  parseAllowlist,
  decide as decideEgress,
  needsResolution,
  classifyAddress,
  canonicalIp,
} from './egress-policy.js';
export type { AllowEntry, AllowHost, EgressDecision, AddressClass } from './egress-policy.js';
export { HttpEgressProxy } from './egress-proxy.js';
export type { HttpEgressProxyOptions, EgressRegistration } from './egress-proxy.js';
export { LocalImageStore, classifyStoreError, assertImageName, IMAGE_MOUNT_POINTS } from './image-store.js';
export type { LocalImageStoreOptions } from './image-store.js';
export {
  HOST_IMAGE_NAME,
  HOST_IMAGE_CONFIG,
  HOST_MOUNT_POINTS,
  ensureHostRootfs,
  hostImageRef,
} from './host-image.js';
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
export { CniNetworkManager, SANDBOX_IFNAME } from './network-manager.js';
export type { CniNetworkManagerOptions } from './network-manager.js';
export {
  buildConflist,
  resolveIpamRange,
  networkName,
  conflistPath,
  leaseDir,
  ipamDataDir,
  CNI_VERSION,
} from './cni-config.js';
export type { CniConflist, CniPluginConf, ConflistInput, IpamRange, IpamRangeInput } from './cni-config.js';
export { CniConflistInvoker, findPlugin, invokePlugin } from './cni-plugin.js';
export type { CniCommand, CniResult, CniRuntimeArgs } from './cni-plugin.js';
export {
  NftablesPolicy,
  renderPolicy,
  renderRemoval,
  policyTableName,
  sandboxPortGroup,
} from './nftables-policy.js';
export type { HostPolicyOptions } from './nftables-policy.js';
export {
  createNetns,
  deleteNetns,
  listNetns,
  netnsPath,
  netnsExists,
  setLoopbackUp,
  NETNS_DIR,
} from './netns.js';
export {
  parseIpv4,
  tryParseIpv4,
  formatIpv4,
  parseCidr,
  formatCidr,
  cidrContains,
  cidrSize,
  networkAddress,
  broadcastAddress,
  nthAddress,
  compareIpv4,
  prefixMask,
} from './ip-math.js';
export type { Ipv4Cidr } from './ip-math.js';
export { buildSandboxHost } from './host-factory.js';
export type { BuiltSandboxHost } from './host-factory.js';
export { ensureImage } from './image-store.js';
export {
  RegistryClient,
  parseImageReference,
  isPullableReference,
  formatReference,
  isLoopbackHost,
  parseWwwAuthenticate,
  manifestKind,
  selectIndexManifest,
  MANIFEST_ACCEPT,
  DOCKER_HUB_HOST,
} from './registry-client.js';
export type {
  ImageReference,
  AuthChallenge,
  ManifestKind,
  RegistrySettings,
  RegistryClientOptions,
  FetchedManifest,
  BlobDownloadOptions,
} from './registry-client.js';
export {
  UPSTREAM_NAMES,
  UPSTREAM_PATH_PREFIX,
  UPSTREAM_PLACEHOLDER_KEY,
  upstreamEnv,
  upstreamNames,
  resolveUpstreams,
  bedrockEndpoint,
  parseUpstreamTarget,
  authorizeUpstreamRequest,
} from './upstreams.js';
export type {
  UpstreamName,
  UpstreamsConfig,
  AnthropicUpstreamConfig,
  BedrockUpstreamConfig,
  ResolvedUpstream,
  UpstreamTarget,
  AuthorizedRequest,
} from './upstreams.js';
