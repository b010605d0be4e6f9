/**
 * The data behind `hako doctor`: every host prerequisite, whether it is there, and the exact command
 * that fixes it. gatherHostFacts() reads the host (files under /proc and /sys, a few `--version`
 * spawns, all concurrently); evaluateHostChecks() turns those facts into checks and is pure, so it
 * is unit-tested with synthetic hosts.
 */
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crunUsable, detectCgroupLayout, v1MountFor } from './cgroup-layout.js';
import type { CgroupLayout } from './cgroup-layout.js';
import { findMount, parseMountInfo, SELF_MOUNTINFO } from './mount-info.js';
import type { MountInfoEntry } from './mount-info.js';
import { detectXfsQuotaSupport, TOOL_PATH } from './quota-xfs.js';
import type { XfsQuotaSupport } from './quota-xfs.js';

export interface HostCheck {
  /** Short, stable name (`runtime crun`, `cni bridge`, `cgroup memory`, …). */
  readonly name: string;
  readonly ok: boolean;
  /** What was found (a version, a path) or what is wrong. */
  readonly detail: string;
  /** The exact command (or step) that fixes a failing check. */
  readonly fix?: string;
  /** false: hako works without it (an optional runtime, a volume made on first use). */
  readonly required: boolean;
}

export interface HostCheckOptions {
  /** HAKO_STATE_DIR: where the quota volume is mounted (`<stateDir>/data`). */
  readonly stateDir: string;
  /** CNI_PLUGIN_DIRS, split. */
  readonly pluginDirs: readonly string[];
}

export const OCI_RUNTIMES = ['crun', 'runc', 'runsc'] as const;
export type OciRuntimeName = (typeof OCI_RUNTIMES)[number];
export const CNI_PLUGINS = ['bridge', 'host-local', 'loopback'] as const;
export const CGROUP_CONTROLLERS = ['memory', 'pids', 'cpu', 'freezer'] as const;
/** Namespaces a sandbox uses (user is reported but optional: hako's sandboxes do not use it). */
export const NAMESPACES = ['pid', 'net', 'mnt', 'ipc', 'uts', 'cgroup', 'user'] as const;
export type NamespaceName = (typeof NAMESPACES)[number];
/** Tools looked up on TOOL_PATH (presence only, no spawn). */
export const HOST_TOOLS = ['mkfs.xfs', 'xfs_quota', 'mkfs.ext4', 'mount', 'losetup', 'rsync'] as const;
export type HostTool = (typeof HOST_TOOLS)[number];

/** A command's result: its output, or why it could not run (`ENOENT` when not installed). */
export type CommandResult =
  | { readonly ok: true; readonly output: string }
  | { readonly ok: false; readonly error: string; readonly notFound: boolean };

/** Everything the checks look at, read once. */
export interface HostFacts {
  readonly uid: number;
  readonly runtimes: Readonly<Record<OciRuntimeName, CommandResult>>;
  readonly cgroupLayout: CgroupLayout | { readonly error: string };
  /** Plugin name -> path found in the plugin dirs, or undefined. */
  readonly cniPlugins: Readonly<Record<string, string | undefined>>;
  readonly nftVersion: CommandResult;
  readonly nftListTables: CommandResult;
  readonly ipVersion: CommandResult;
  readonly tools: Readonly<Record<HostTool, boolean>>;
  readonly loopControl: boolean;
  readonly xfsQuota: XfsQuotaSupport;
  /** The mount at `<stateDir>/data`, if any. */
  readonly quotaMount: MountInfoEntry | undefined;
  /** The cgroup2 mount (the whole tree on v2, `unified` on hybrid), if any. */
  readonly cgroup2Mount: MountInfoEntry | undefined;
  readonly namespaces: Readonly<Record<NamespaceName, boolean>>;
  /** Contents of /proc/self/status, or undefined when unreadable. */
  readonly procStatus: string | undefined;
}

// ---------------------------------------------------------------- pure parsing

/** First non-empty line of a `--version` output, trimmed. */
export function firstLine(output: string): string {
  return (
    output
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l !== '') ?? ''
  );
}

/** A version number (`1.8.1`, `6.1.0`, `20230925.0`) from a `--version` line, or the line itself. */
export function parseVersion(output: string): string {
  const line = firstLine(output);
  const m =
    /(?:version\s+|v|iproute2-)(?:release-)?(\d+(?:\.\d+)+)/i.exec(line) ?? /(\d+(?:\.\d+)+)/.exec(line);
  return m?.[1] ?? line;
}

/** The Seccomp lines of /proc/self/status: whether the kernel has seccomp and filter mode. */
export function parseSeccompStatus(status: string): {
  supported: boolean;
  filters: boolean;
  mode: number | undefined;
} {
  let mode: number | undefined;
  let filters = false;
  for (const line of status.split('\n')) {
    const [k, v] = line.split(':').map((s) => s.trim());
    if (k === 'Seccomp' && v !== undefined) mode = Number(v);
    if (k === 'Seccomp_filters') filters = true;
  }
  return { supported: mode !== undefined && Number.isFinite(mode), filters, mode };
}

export function aptFix(...packages: string[]): string {
  return `apt-get install -y --no-install-recommends ${packages.join(' ')} (or: bash scripts/setup)`;
}

const NAMESPACE_CONFIG: Record<NamespaceName, string> = {
  pid: 'CONFIG_PID_NS',
  net: 'CONFIG_NET_NS',
  mnt: 'CONFIG_NAMESPACES',
  ipc: 'CONFIG_IPC_NS',
  uts: 'CONFIG_UTS_NS',
  cgroup: 'CONFIG_CGROUPS',
  user: 'CONFIG_USER_NS',
};

const RUNTIME_PACKAGE: Record<OciRuntimeName, string | undefined> = {
  crun: 'crun',
  runc: 'runc',
  runsc: undefined,
};
const RUNSC_FIX = 'apt-get install -y runsc (optional: gVisor; network none only for now)';

// ---------------------------------------------------------------- pure evaluation

function runtimeCheck(name: OciRuntimeName, r: CommandResult, layout: CgroupLayout | undefined): HostCheck {
  const pkg = RUNTIME_PACKAGE[name];
  const installFix = pkg ? aptFix(pkg) : RUNSC_FIX;
  if (!r.ok) {
    return {
      name: `runtime ${name}`,
      ok: false,
      detail: r.notFound ? 'not installed' : `\`${name} --version\` failed: ${r.error}`,
      fix: installFix,
      required: false,
    };
  }
  const version = `${name} ${parseVersion(r.output)}`;
  if (!layout)
    return {
      name: `runtime ${name}`,
      ok: false,
      detail: `${version}; cgroup layout unknown`,
      required: false,
    };
  // only crun depends on the layout (see crunUsable); runc and runsc run on v1, v2 and hybrid
  const usable = name === 'crun' ? crunUsable(layout) : { ok: true as const };
  if (!usable.ok) {
    return {
      name: `runtime ${name}`,
      ok: false,
      detail: `${version}, unusable here: ${usable.reason ?? 'unknown reason'}`,
      ...(usable.fix ? { fix: usable.fix } : {}),
      required: false,
    };
  }
  return {
    name: `runtime ${name}`,
    ok: true,
    detail: `${version}, usable on this cgroup layout`,
    required: false,
  };
}

function describeLayout(l: CgroupLayout): string {
  const v1 = l.v1Mounts
    .flatMap((m) => m.controllers)
    .filter((c) => !c.startsWith('name='))
    .sort()
    .join(',');
  switch (l.mode) {
    case 'v1':
      return `cgroup v1 (controllers ${v1})`;
    case 'v2':
      return `cgroup v2 at ${l.unifiedPath ?? '?'} (controllers ${l.unifiedControllers.join(',') || 'none'})`;
    case 'hybrid':
      return (
        `hybrid: cgroup v1 (controllers ${v1}) plus cgroup2 at ${l.unifiedPath ?? '?'} ` +
        `(controllers ${l.unifiedControllers.join(',') || 'none'})`
      );
  }
}

function controllerCheck(c: (typeof CGROUP_CONTROLLERS)[number], l: CgroupLayout): HostCheck {
  const name = `cgroup ${c}`;
  if (l.mode === 'v2') {
    if (c === 'freezer')
      return { name, ok: true, detail: 'built into cgroup v2 (cgroup.freeze)', required: true };
    return l.unifiedControllers.includes(c)
      ? { name, ok: true, detail: `enabled on ${l.unifiedPath ?? 'cgroup2'}`, required: true }
      : {
          name,
          ok: false,
          detail: `not in ${l.unifiedPath ?? 'cgroup2'}/cgroup.controllers`,
          fix: `boot a kernel with the ${c} controller and without it bound to cgroup v1 (check cgroup_no_v1= and systemd.unified_cgroup_hierarchy on the kernel command line)`,
          required: true,
        };
  }
  const m = v1MountFor(l, c);
  if (m) return { name, ok: true, detail: `v1 hierarchy at ${m.path}`, required: true };
  return {
    name,
    ok: false,
    detail: 'no cgroup v1 hierarchy carries it',
    fix: `mkdir -p /sys/fs/cgroup/${c} && mount -t cgroup -o ${c} cgroup /sys/fs/cgroup/${c}`,
    required: true,
  };
}

function commandCheck(name: string, r: CommandResult, pkg: string, cmd: string): HostCheck {
  return r.ok
    ? { name, ok: true, detail: firstLine(r.output), required: true }
    : {
        name,
        ok: false,
        detail: r.notFound ? `${cmd} is not installed` : `\`${cmd}\` failed: ${r.error}`,
        fix: aptFix(pkg),
        required: true,
      };
}

/** Turns host facts into checks (pure). */
export function evaluateHostChecks(f: HostFacts, opts: HostCheckOptions): HostCheck[] {
  const checks: HostCheck[] = [];
  checks.push(
    f.uid === 0
      ? { name: 'root', ok: true, detail: 'running as root', required: true }
      : {
          name: 'root',
          ok: false,
          detail: `running as uid ${f.uid}; sandboxes need root (namespaces, cgroups, mounts, nftables)`,
          fix: 'run as root: sudo hako …',
          required: true,
        },
  );

  // OCI runtimes: each is optional, at least one usable is required.
  const layout = 'error' in f.cgroupLayout ? undefined : f.cgroupLayout;
  const runtimeChecks = OCI_RUNTIMES.map((r) => runtimeCheck(r, f.runtimes[r], layout));
  checks.push(...runtimeChecks);
  const usable = OCI_RUNTIMES.filter((_r, i) => runtimeChecks[i]?.ok);
  checks.push(
    usable.length > 0
      ? {
          name: 'oci runtime',
          ok: true,
          detail: `usable: ${usable.join(', ')} (auto picks ${usable[0] ?? ''})`,
          required: true,
        }
      : {
          name: 'oci runtime',
          ok: false,
          detail: 'no usable OCI runtime (crun, runc or runsc)',
          fix: aptFix('runc'),
          required: true,
        },
  );

  // CNI plugins
  for (const p of CNI_PLUGINS) {
    const path = f.cniPlugins[p];
    checks.push(
      path
        ? { name: `cni ${p}`, ok: true, detail: path, required: true }
        : {
            name: `cni ${p}`,
            ok: false,
            detail: `not found in ${opts.pluginDirs.join(':') || '(no plugin dirs)'}`,
            fix: `${aptFix('containernetworking-plugins')}; or set CNI_PLUGIN_DIRS to the directory holding ${p}`,
            required: true,
          },
    );
  }

  // cgroups
  if (!layout) {
    const error = 'error' in f.cgroupLayout ? f.cgroupLayout.error : 'unknown';
    checks.push({
      name: 'cgroup layout',
      ok: false,
      detail: error,
      fix: 'mount cgroup2: mount -t cgroup2 none /sys/fs/cgroup',
      required: true,
    });
  } else {
    checks.push({ name: 'cgroup layout', ok: true, detail: describeLayout(layout), required: true });
    for (const c of CGROUP_CONTROLLERS) checks.push(controllerCheck(c, layout));
    if (f.cgroup2Mount) checks.push(favorDynmodsCheck(f.cgroup2Mount));
  }

  // network tools
  if (!f.nftVersion.ok) {
    checks.push(commandCheck('nftables', f.nftVersion, 'nftables', 'nft --version'));
  } else if (!f.nftListTables.ok) {
    checks.push({
      name: 'nftables',
      ok: false,
      detail: `${firstLine(f.nftVersion.output)}, but \`nft list tables\` failed: ${f.nftListTables.error}`,
      fix: f.uid === 0 ? 'load nf_tables: modprobe nf_tables' : 'run as root',
      required: true,
    });
  } else {
    checks.push({
      name: 'nftables',
      ok: true,
      detail: `${firstLine(f.nftVersion.output)}; tables listable`,
      required: true,
    });
  }
  checks.push(commandCheck('iproute2', f.ipVersion, 'iproute2', 'ip -V'));
  checks.push(
    f.tools.rsync
      ? { name: 'rsync', ok: true, detail: 'installed (workspace copy in and out)', required: true }
      : {
          name: 'rsync',
          ok: false,
          detail: 'rsync is not installed (copies workspaces in and out)',
          fix: aptFix('rsync'),
          required: true,
        },
  );

  // disk quotas
  const engine = f.xfsQuota.supported === false ? 'loop' : 'xfs';
  checks.push({
    name: 'quota engine',
    ok: true,
    detail:
      engine === 'xfs'
        ? `XFS project quotas on one volume (${f.xfsQuota.detail})`
        : `one ext4 image per sandbox (${f.xfsQuota.detail})`,
    required: true,
  });
  checks.push(
    f.loopControl
      ? { name: 'loop devices', ok: true, detail: '/dev/loop-control present', required: true }
      : {
          name: 'loop devices',
          ok: false,
          detail: '/dev/loop-control is missing',
          fix: 'modprobe loop',
          required: true,
        },
  );
  const xfsMissing = (['mkfs.xfs', 'xfs_quota'] as const).filter((t) => !f.tools[t]);
  checks.push(
    xfsMissing.length === 0
      ? { name: 'xfsprogs', ok: true, detail: 'mkfs.xfs and xfs_quota installed', required: engine === 'xfs' }
      : {
          name: 'xfsprogs',
          ok: false,
          detail: `missing ${xfsMissing.join(', ')}`,
          fix: aptFix('xfsprogs'),
          required: engine === 'xfs',
        },
  );
  checks.push(
    f.tools['mkfs.ext4']
      ? { name: 'e2fsprogs', ok: true, detail: 'mkfs.ext4 installed', required: engine === 'loop' }
      : {
          name: 'e2fsprogs',
          ok: false,
          detail: 'mkfs.ext4 is missing',
          fix: aptFix('e2fsprogs'),
          required: engine === 'loop',
        },
  );
  const dataDir = join(opts.stateDir, 'data');
  if (engine === 'loop') {
    checks.push({
      name: 'quota volume',
      ok: true,
      detail: 'not used: each sandbox gets its own image on create',
      required: false,
    });
  } else if (f.quotaMount?.fsType === 'xfs' && f.quotaMount.superOptions.includes('prjquota')) {
    checks.push({
      name: 'quota volume',
      ok: true,
      detail: `${dataDir} (${f.quotaMount.source}, prjquota)`,
      required: false,
    });
  } else {
    checks.push({
      name: 'quota volume',
      ok: false,
      detail: f.quotaMount
        ? `${dataDir} is mounted (${f.quotaMount.fsType}) without enforced project quotas`
        : `${dataDir} is not mounted yet (made on first use)`,
      fix: f.quotaMount
        ? `umount ${dataDir} && bash scripts/setup`
        : 'hako doctor --fix (or: bash scripts/setup)',
      required: false,
    });
  }

  // kernel features
  for (const ns of NAMESPACES) {
    const required = ns !== 'user';
    checks.push(
      f.namespaces[ns]
        ? { name: `namespace ${ns}`, ok: true, detail: `/proc/self/ns/${ns}`, required }
        : {
            name: `namespace ${ns}`,
            ok: false,
            detail: `/proc/self/ns/${ns} is missing: the kernel lacks ${ns} namespaces`,
            fix: `boot a kernel built with ${NAMESPACE_CONFIG[ns]}=y`,
            required,
          },
    );
  }
  const sec = f.procStatus === undefined ? undefined : parseSeccompStatus(f.procStatus);
  checks.push(
    sec?.supported
      ? {
          name: 'seccomp',
          ok: true,
          detail: `supported${sec.filters ? ', filter mode' : ''} (this process: mode ${String(sec.mode)})`,
          required: true,
        }
      : {
          name: 'seccomp',
          ok: false,
          detail: sec ? 'no Seccomp line in /proc/self/status' : '/proc/self/status is unreadable',
          fix: 'boot a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y',
          required: true,
        },
  );
  return checks;
}

// ---------------------------------------------------------------- gathering

function run(cmd: string, args: readonly string[]): Promise<CommandResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env: { PATH: TOOL_PATH, LC_ALL: 'C' }, timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        resolve({
          ok: false,
          error: (stderr.trim() || err.message).split('\n')[0] ?? '',
          notFound: code === 'ENOENT',
        });
      } else {
        resolve({ ok: true, output: stdout || stderr });
      }
    });
  });
}

async function exists(path: string, mode = constants.F_OK): Promise<boolean> {
  try {
    await access(path, mode);
    return true;
  } catch {
    return false;
  }
}

async function onToolPath(name: string): Promise<boolean> {
  const hits = await Promise.all(TOOL_PATH.split(':').map((d) => exists(join(d, name), constants.X_OK)));
  return hits.some(Boolean);
}

async function findPlugin(dirs: readonly string[], name: string): Promise<string | undefined> {
  for (const d of dirs) {
    const p = join(d, name);
    if (await exists(p, constants.X_OK)) return p;
  }
  return undefined;
}

async function record<K extends string, V>(
  keys: readonly K[],
  fn: (k: K) => Promise<V>,
): Promise<Record<K, V>> {
  const values = await Promise.all(keys.map(fn));
  return Object.fromEntries(keys.map((k, i) => [k, values[i]])) as Record<K, V>;
}

/** Reads everything the checks need, concurrently: six short spawns, the rest from /proc and /sys. */
export async function gatherHostFacts(opts: HostCheckOptions): Promise<HostFacts> {
  const mountinfo = readFile(SELF_MOUNTINFO, 'utf8');
  const [
    runtimes,
    cgroupLayout,
    cniPlugins,
    nftVersion,
    nftListTables,
    ipVersion,
    tools,
    loopControl,
    xfsQuota,
    mounts,
    namespaces,
    procStatus,
  ] = await Promise.all([
    record(OCI_RUNTIMES, (r) => run(r, ['--version'])),
    mountinfo
      .then((text) => detectCgroupLayout(text))
      .catch((err: unknown): { error: string } => ({ error: (err as Error).message })),
    record(CNI_PLUGINS, (p) => findPlugin(opts.pluginDirs, p)),
    run('nft', ['--version']),
    run('nft', ['list', 'tables']),
    run('ip', ['-V']),
    record(HOST_TOOLS, onToolPath),
    exists('/dev/loop-control'),
    detectXfsQuotaSupport(),
    mountinfo.then(parseMountInfo).catch(() => []),
    record(NAMESPACES, (ns) => exists(`/proc/self/ns/${ns}`)),
    readFile('/proc/self/status', 'utf8').catch(() => undefined),
  ]);
  return {
    uid: process.getuid?.() ?? -1,
    runtimes,
    cgroupLayout,
    cniPlugins,
    nftVersion,
    nftListTables,
    ipVersion,
    tools,
    loopControl,
    xfsQuota,
    quotaMount: findMount(mounts, join(opts.stateDir, 'data')),
    cgroup2Mount: mounts.find((m) => m.fsType === 'cgroup2'),
    namespaces,
    procStatus,
  };
}

/**
 * `favordynmods` on the cgroup2 mount makes moving a process between cgroups cheap (it switches the
 * kernel's global cgroup threadgroup lock to a mode without an RCU grace period per move, at a
 * small cost to fork and exit). Without it every sandbox start waits for a grace period when its
 * process joins its cgroups: about 10 ms on a 2-core VM. Optional; scripts/setup sets it.
 */
export function favorDynmodsCheck(m: MountInfoEntry): HostCheck {
  const on = m.superOptions.includes('favordynmods') || m.mountOptions.includes('favordynmods');
  return on
    ? { name: 'cgroup favordynmods', ok: true, detail: `set on ${m.mountPoint}`, required: false }
    : {
        name: 'cgroup favordynmods',
        ok: false,
        detail: `not set on ${m.mountPoint}: each sandbox start waits for an RCU grace period when it joins its cgroups`,
        fix: `mount -o remount,favordynmods ${m.mountPoint} (kernel 6.0 or later)`,
        required: false,
      };
}

/**
 * Checks every host prerequisite (see HostCheck). Never throws for a missing prerequisite: it is
 * reported as a failing check with its fix. Runs concurrently; spawns `--version` of the three
 * runtimes, `nft --version`, `nft list tables` and `ip -V`.
 */
export async function runHostChecks(opts: HostCheckOptions): Promise<HostCheck[]> {
  return evaluateHostChecks(await gatherHostFacts(opts), opts);
}
