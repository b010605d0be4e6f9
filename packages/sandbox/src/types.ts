/**
 * The narrow driver interfaces the sandbox is built from. Each has one real implementation per
 * engine (chosen by a factory); fakes exist only in unit tests of the code above them.
 */

/** Resource limits a sandbox gets. Every field is required once defaults are applied. */
export interface SandboxLimits {
  /** Memory limit in bytes, swap included (memory+swap = this). */
  readonly memoryBytes: number;
  /** Maximum number of tasks (processes and threads). */
  readonly pids: number;
  /** CPU quota in cores (0.5 = half a core). */
  readonly cpus: number;
  /** Hard limit in bytes on /workspace (project quota). */
  readonly diskBytes: number;
  /** Size of the /tmp tmpfs in bytes (also used for /dev/shm). */
  readonly tmpBytes: number;
}

// ---------------------------------------------------------------- cgroups

export interface CgroupStats {
  readonly memoryCurrentBytes: number;
  readonly memoryPeakBytes: number;
  readonly memoryLimitBytes: number;
  /** Processes killed by the OOM killer because of this cgroup's limit. */
  readonly oomKills: number;
  readonly pidsCurrent: number;
  readonly pidsLimit: number;
  /** Times a fork failed because the pids limit was reached. */
  readonly pidsLimitHits: number;
  readonly cpuUsageNs: number;
}

/** What CgroupManager.create() made, for the OCI spec and the runtime. */
export interface CgroupCreated {
  /** `linux.cgroupsPath`: a child of the sandbox's cgroup that a managing runtime creates and removes. */
  readonly cgroupsPath: string;
  /**
   * The sandbox cgroup's `cgroup.procs` file in each hierarchy it was made in, for a runtime that
   * joins the cgroup instead of managing it (crun on v1, see OciCliRuntime); empty on v2.
   */
  readonly procsFiles: readonly string[];
  /**
   * Mounted hierarchies (relative to the cgroup root, e.g. `blkio`) that procsFiles leave out: a
   * joining runtime's cgroup namespace would show the host's whole tree there, so the sandbox
   * masks them. Empty on v2.
   */
  readonly notJoined: readonly string[];
}

export interface CgroupManager {
  readonly version: 1 | 2;
  /**
   * Creates the sandbox's cgroup `hako/{env}/{name}` (in the v1 hierarchies of the controllers
   * hako uses, or once on v2) and writes the limits to it; the limits there bound whatever runs
   * below it. Call once per sandbox, before the runtime starts; undo with remove().
   */
  create(name: string, limits: Pick<SandboxLimits, 'memoryBytes' | 'pids' | 'cpus'>): Promise<CgroupCreated>;
  /** Reads counters from the parent cgroup. Works after the sandbox's processes have exited, until remove(). */
  stats(name: string): Promise<CgroupStats>;
  /** Freezes (true) or thaws (false) every process of the sandbox. */
  setFrozen(name: string, frozen: boolean): Promise<void>;
  /**
   * Kills whatever is left in the cgroup tree and removes it (children first, in every hierarchy).
   * Idempotent: a cgroup that does not exist is not an error.
   */
  remove(name: string): Promise<void>;
  /** Names of the sandbox cgroups that exist for this env. */
  list(): Promise<string[]>;
}

// ---------------------------------------------------------------- network

export interface NetworkAttachment {
  /** Name of the network namespace under /run/netns. */
  readonly netnsName: string;
  /** Path to pass as the OCI spec's network namespace path. */
  readonly netnsPath: string;
  /** Address leased to the sandbox (IPv4, no prefix). */
  readonly ip: string;
  readonly prefixLength: number;
  readonly gateway: string;
  /** Host-side veth name. */
  readonly hostVeth: string | undefined;
}

export interface NetworkManager {
  /**
   * Writes the conflist and applies the host-wide nftables policy (idempotent). Call once before
   * add(). Fails with CNI_SUBNET_INVALID when the subnet, range and gateway disagree.
   */
  init(): Promise<void>;
  /**
   * Creates netns `name`, runs CNI ADD into it, and returns the lease. On any failure it runs CNI
   * DEL and deletes the netns before throwing, so a failed add leaves nothing behind.
   */
  add(name: string): Promise<NetworkAttachment>;
  /** CNI CHECK for an attached sandbox. */
  check(name: string): Promise<void>;
  /** CNI DEL (idempotent, retried) and deletes the netns. Safe when add() failed or never ran. */
  del(name: string): Promise<void>;
  /** Names of this env's sandboxes with network state: netns, cached ADD results, leases. */
  list(): Promise<string[]>;
  /** The names of list() that have a cached ADD result or a lease in hako's own CNI state dir. */
  listCached(): Promise<string[]>;
  /** The gateway address on the bridge, where the egress proxy listens. */
  readonly gateway: string;
}

// ---------------------------------------------------------------- quota

export interface QuotaUsage {
  readonly usedBytes: number;
  readonly limitBytes: number;
}

export interface QuotaManager {
  /** Ensures the project-quota volume exists and is mounted. Call once before create(). */
  init(): Promise<void>;
  /**
   * Creates the directory for `name` on the quota volume with a hard block limit of `bytes`, owned
   * by uid:gid, and returns its path. Undo with remove().
   */
  create(name: string, bytes: number, uid: number, gid: number): Promise<string>;
  usage(name: string): Promise<QuotaUsage>;
  /** The directory create() returns for `name` (whether or not it exists). */
  pathFor(name: string): string;
  /** Removes the directory and clears its project quota. Idempotent. */
  remove(name: string): Promise<void>;
  /** Names of this env's quota directories. */
  list(): Promise<string[]>;
  /** Waits for background work (spare workspaces being prepared) to finish. Call before exit. */
  close(): Promise<void>;
  /**
   * Deletes the spare workspaces kept ready for creates (a cache); returns how many (`dryRun`: how
   * many would go). 0 for an engine without spares.
   */
  drainSpares(dryRun?: boolean): Promise<number>;
  /**
   * drainSpares(), then removes this env's directories if nothing else is in them (`hako demo`
   * leaving the host as it found it). A workspace that still exists is left, and so is its directory.
   */
  removeEnvState(): Promise<void>;
}

// ---------------------------------------------------------------- images

export interface ImageConfig {
  readonly env: readonly string[];
  readonly entrypoint: readonly string[];
  readonly cmd: readonly string[];
  readonly workingDir: string | undefined;
  readonly user: string | undefined;
}

export interface ImageRef {
  /** `host` or a name given at import/pull (`name:tag`). */
  readonly name: string;
  /** Manifest digest (sha256:…); `host` for the built-in image. */
  readonly digest: string;
  /** Unpacked, read-only root filesystem shared by every sandbox of this image. */
  readonly rootfs: string;
  readonly config: ImageConfig;
  /**
   * Extra read-only bind mounts the image needs (the `host` image binds the host's /usr).
   * destination -> host source.
   */
  readonly binds: readonly { readonly destination: string; readonly source: string }[];
}

/** Progress of ImageStore.pull(), in this order: resolving, manifest, blob…, unpacking…, done. */
export interface PullProgress {
  /**
   * `resolving`: contacting the registry; `manifest`: the image manifest was fetched (`digest` is
   * the platform manifest's); `blob`: a config or layer is downloading (`bytesDone` of
   * `bytesTotal`; blobs already in the store send no event); `unpacking`: a layer is being
   * applied (`digest`); `done`: the image is stored (`digest` is the manifest's).
   */
  readonly phase: 'resolving' | 'manifest' | 'blob' | 'unpacking' | 'done';
  readonly digest?: string;
  readonly bytesDone?: number;
  readonly bytesTotal?: number;
}

/** Registry credentials: sent as Basic auth, or to the registry's token service for a Bearer token. */
export interface RegistryCredentials {
  readonly username: string;
  readonly password: string;
}

export interface PullOptions {
  /** Used only when the registry asks (401); undefined means anonymous. */
  readonly auth?: RegistryCredentials;
  readonly onProgress?: (p: PullProgress) => void;
  /** Aborting fails the pull with IMAGE_PULL_FAILED; nothing half-written is kept. */
  readonly signal?: AbortSignal;
}

export interface ImageStore {
  /**
   * Looks an image up by name or digest. Throws IMAGE_NOT_FOUND only when it is really absent;
   * permission, corruption and I/O problems throw their own codes (never hidden as not-found).
   */
  get(ref: string): Promise<ImageRef>;
  /** Imports an OCI image layout tar, verifying every blob's digest, and unpacks it. */
  importLayout(tarPath: string, name?: string): Promise<ImageRef>;
  /**
   * Pulls `ref` (`host[:port]/repository[:tag|@sha256:…]`) from its registry and stores it under
   * `ref`, as importLayout() would: picks this host's platform from an image index, downloads only
   * the blobs the store lacks, verifies every digest (IMAGE_DIGEST_MISMATCH), unpacks, then names it.
   * IMAGE_NOT_FOUND when the registry has no such manifest, REGISTRY_AUTH_FAILED when it refuses
   * the credentials, IMAGE_PULL_FAILED when it cannot be reached or fails. Callers that only want
   * an image present use ensureImage(), which never pulls over a store error.
   */
  pull(ref: string, opts?: PullOptions): Promise<ImageRef>;
  list(): Promise<ImageRef[]>;
  remove(ref: string): Promise<void>;
}

// ---------------------------------------------------------------- egress

export interface EgressProxy {
  /** Address sandboxes use (http://gateway:port). Valid after listen(). */
  readonly url: string;
  /** Starts listening on `host`, on the first free port of [port, port+count). */
  listen(host: string, port: number, count: number): Promise<void>;
  /**
   * Allows `sourceIp` to reach destinations matching `allowlist` (host:port patterns) and the named
   * `upstreams` (`anthropic`, `bedrock`: reached through `{url}/_hako/upstream/{name}`, the proxy
   * adding hakod's credentials; undefined or empty means none). Throws UPSTREAM_NOT_CONFIGURED for
   * an upstream hakod has no credentials for.
   */
  register(
    sourceIp: string,
    sandboxId: string,
    allowlist: readonly string[],
    upstreams?: readonly string[],
  ): void;
  unregister(sourceIp: string): void;
  close(): Promise<void>;
}
