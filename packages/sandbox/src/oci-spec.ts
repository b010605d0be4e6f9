import { buildSeccompProfile } from './seccomp-profile.js';
import type { SeccompProfile } from './seccomp-profile.js';

/** A bind mount into the sandbox. */
export interface BindMount {
  readonly destination: string;
  readonly source: string;
  readonly readonly: boolean;
}

/**
 * The extra binds of one sandbox: the host-wide ones (SandboxHostDeps.binds, e.g. the Claude Code
 * binary) first and always read-only whatever they say, then the sandbox's own.
 */
export function sandboxBinds(hostWide: readonly BindMount[], own: readonly BindMount[]): BindMount[] {
  return [...hostWide.map((b) => ({ ...b, readonly: true })), ...own];
}

export interface SpecInput {
  /** Argument vector of the sandbox's first process. */
  readonly args: readonly string[];
  /** Complete environment (KEY=VALUE); nothing else is inherited. */
  readonly env: readonly string[];
  readonly cwd: string;
  readonly uid: number;
  readonly gid: number;
  readonly hostname: string;
  /** Root filesystem directory; mounted read-only. */
  readonly rootfs: string;
  /** The curated per-sandbox /etc directory. */
  readonly etcDir: string;
  /** Host /etc entries bind-mounted read-only over the curated /etc (relative names). */
  readonly hostEtcBinds: readonly string[];
  /** Image-provided read-only binds (the `host` image's /usr). */
  readonly imageBinds: readonly { readonly destination: string; readonly source: string }[];
  /** Host directory mounted read-write at /workspace. */
  readonly workspaceDir: string;
  readonly home: string;
  readonly tmpBytes: number;
  /** Existing network namespace to join; undefined gives a fresh one with only loopback. */
  readonly netnsPath: string | undefined;
  readonly cgroupsPath: string;
  /** Extra paths to mask (e.g. cgroup hierarchies the sandbox's cgroup namespace does not cover). */
  readonly extraMaskedPaths?: readonly string[];
  readonly annotations: Readonly<Record<string, string>>;
  /** Extra binds (read-only unless stated), e.g. the tenant's skills. */
  readonly extraBinds?: readonly BindMount[];
}

/** Paths hidden from /proc and /sys, as runc's defaults. */
export const MASKED_PATHS = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
  '/sys/kernel/debug',
] as const;

/** Paths made read-only, as runc's defaults. */
export const READONLY_PATHS = [
  '/proc/bus',
  '/proc/fs',
  '/proc/irq',
  '/proc/sys',
  '/proc/sysrq-trigger',
] as const;

/** Character devices a sandbox may use (besides pts, 136:*); the rest are denied. */
export const DEV_ALLOW: readonly { type: 'c'; major: number; minor: number }[] = [
  { type: 'c', major: 1, minor: 3 }, // null
  { type: 'c', major: 1, minor: 5 }, // zero
  { type: 'c', major: 1, minor: 7 }, // full
  { type: 'c', major: 1, minor: 8 }, // random
  { type: 'c', major: 1, minor: 9 }, // urandom
  { type: 'c', major: 5, minor: 0 }, // tty
  { type: 'c', major: 5, minor: 2 }, // ptmx
];

export interface OciSpec {
  ociVersion: string;
  process: Record<string, unknown>;
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: { destination: string; type: string; source: string; options: string[] }[];
  annotations: Record<string, string>;
  linux: {
    namespaces: { type: string; path?: string }[];
    cgroupsPath: string;
    resources: Record<string, unknown>;
    seccomp: SeccompProfile;
    maskedPaths: string[];
    readonlyPaths: string[];
    [k: string]: unknown;
  };
}

/** Builds the process section (also used for exec into a running sandbox). */
export function buildProcess(p: {
  args: readonly string[];
  env: readonly string[];
  cwd: string;
  uid: number;
  gid: number;
}): Record<string, unknown> {
  return {
    terminal: false,
    user: { uid: p.uid, gid: p.gid, additionalGids: [] },
    args: [...p.args],
    env: [...p.env],
    cwd: p.cwd,
    // no capabilities in any set: the sandbox user can do nothing a plain user cannot
    capabilities: { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] },
    rlimits: [
      { type: 'RLIMIT_NOFILE', hard: 8192, soft: 8192 },
      { type: 'RLIMIT_CORE', hard: 0, soft: 0 },
    ],
    noNewPrivileges: true,
    // under host-wide memory pressure, sandboxes go before anything else
    oomScoreAdj: 500,
  };
}

/** Builds a complete OCI runtime spec (config.json) for one sandbox. Pure. */
export function buildOciSpec(s: SpecInput): OciSpec {
  const tmpSize = String(s.tmpBytes);
  const mounts: OciSpec['mounts'] = [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'],
    },
    {
      destination: '/dev/shm',
      type: 'tmpfs',
      source: 'shm',
      options: ['nosuid', 'noexec', 'nodev', 'mode=1777', `size=${tmpSize}`],
    },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    {
      destination: '/sys/fs/cgroup',
      type: 'cgroup',
      source: 'cgroup',
      options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'],
    },
    // On cgroup v1 the runtime puts the controller mounts on a tmpfs at /sys/fs/cgroup and leaves
    // that tmpfs writable whatever the options above say (crun: mode 1777, 1 MiB), which would give
    // the sandbox a writable directory outside its writable paths. Remount it read-only. (Listing
    // it in readonlyPaths instead is wrong: crun's read-only bind copies the controller mounts
    // before it makes them read-only, and the copies stay writable.)
    {
      destination: '/sys/fs/cgroup',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['remount', 'ro', 'nosuid', 'noexec', 'nodev'],
    },
    {
      destination: '/tmp',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'nodev', 'mode=1777', `size=${tmpSize}`],
    },
    {
      destination: '/var/tmp',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'nodev', 'mode=1777', `size=${tmpSize}`],
    },
    {
      destination: s.home,
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'nodev', 'mode=700', `uid=${s.uid}`, `gid=${s.gid}`, `size=${tmpSize}`],
    },
    { destination: '/etc', type: 'bind', source: s.etcDir, options: ['bind', 'ro', 'nosuid', 'nodev'] },
  ];
  for (const rel of s.hostEtcBinds) {
    mounts.push({
      destination: `/etc/${rel}`,
      type: 'bind',
      source: `/etc/${rel}`,
      options: ['rbind', 'ro', 'nosuid', 'nodev'],
    });
  }
  for (const b of s.imageBinds) {
    mounts.push({
      destination: b.destination,
      type: 'bind',
      source: b.source,
      options: ['rbind', 'ro', 'nodev'],
    });
  }
  mounts.push({
    destination: '/workspace',
    type: 'bind',
    source: s.workspaceDir,
    options: ['bind', 'rw', 'nosuid', 'nodev'],
  });
  for (const b of s.extraBinds ?? []) {
    mounts.push({
      destination: b.destination,
      type: 'bind',
      source: b.source,
      options: ['rbind', b.readonly ? 'ro' : 'rw', 'nosuid', 'nodev'],
    });
  }

  const namespaces: { type: string; path?: string }[] = [
    { type: 'pid' },
    { type: 'ipc' },
    { type: 'uts' },
    { type: 'mount' },
    { type: 'cgroup' },
    s.netnsPath ? { type: 'network', path: s.netnsPath } : { type: 'network' },
  ];

  return {
    ociVersion: '1.0.2',
    process: buildProcess(s),
    root: { path: s.rootfs, readonly: true },
    hostname: s.hostname,
    mounts,
    annotations: { ...s.annotations },
    linux: {
      namespaces,
      cgroupsPath: s.cgroupsPath,
      resources: {
        // limits live on the parent cgroup (see CgroupManager); the child only gets the device policy
        devices: [
          { allow: false, access: 'rwm' },
          ...DEV_ALLOW.map((d) => ({
            allow: true,
            type: d.type,
            major: d.major,
            minor: d.minor,
            access: 'rwm',
          })),
          { allow: true, type: 'c', major: 136, access: 'rwm' }, // pts
        ],
      },
      seccomp: buildSeccompProfile(),
      maskedPaths: [...MASKED_PATHS, ...(s.extraMaskedPaths ?? [])],
      readonlyPaths: [...READONLY_PATHS],
    },
  };
}
