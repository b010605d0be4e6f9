import { mkdir, rm, readFile, readdir } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import type { ChildProcess, StdioOptions } from 'node:child_process';
import { AggregateAppError, AppError, processAlive, toAppError } from '@hako/core';
import type { Logger, SandboxHostConfig } from '@hako/core';
import { ATOMIC_TMP_RE, writeAtomic } from './atomic-file.js';
import { Sandbox } from './sandbox.js';
import { QuietTimer } from './quiet-timer.js';
import type { SandboxOptions } from './sandbox.js';
import { buildOciSpec, buildProcess, sandboxBinds } from './oci-spec.js';
import type { BindMount } from './oci-spec.js';
import { HOST_IMAGE_NAME } from './host-image.js';
import { HOST_ETC_BINDS, seedEtcFromImage, writeEtcDir } from './etc-files.js';
import {
  CREATED_BY_VALUE,
  LABEL_CREATED_BY,
  LABEL_ENV,
  envPrefix,
  idFromName,
  newSandboxId,
  resourceName,
} from './names.js';
import type { ContainerState, Runtime } from './oci-runtime.js';
import type {
  CgroupManager,
  CgroupStats,
  EgressProxy,
  ImageStore,
  NetworkAttachment,
  NetworkManager,
  QuotaManager,
  QuotaUsage,
} from './types.js';

export interface SandboxHostDeps {
  readonly config: SandboxHostConfig;
  readonly runtime: Runtime;
  readonly cgroups: CgroupManager;
  readonly quota: QuotaManager;
  readonly images: ImageStore;
  /** Needed only for network mode `egress`. */
  readonly network?: NetworkManager | undefined;
  /** Needed only for network mode `egress`. */
  readonly proxy?: EgressProxy | undefined;
  /**
   * Host files or directories bind-mounted into every sandbox this host prepares, always read-only
   * (nosuid, nodev), e.g. hakod's Claude Code binary at /opt/hako/bin/claude. Undefined or empty:
   * none. The sources must exist when a sandbox is created.
   */
  readonly binds?: readonly BindMount[] | undefined;
  /**
   * Egress identities to keep ready once egress has been asked for (see takeEgressIdentity): for
   * a long-lived host that creates many sandboxes (hakod). Undefined or 0: none, as for a process
   * that runs one sandbox (`hako sandbox run`), which would only pay to make and release them.
   */
  readonly egressPool?: number | undefined;
  readonly logger: Logger;
}

export type RunOutcome = 'exited' | 'signaled' | 'oom' | 'timeout' | 'cancelled';

export interface RunResult {
  /** The exit code the CLI should use: the command's, 137 on a limit kill, 124 on timeout. */
  readonly exitCode: number;
  readonly outcome: RunOutcome;
  /** A one-line explanation for stderr when the sandbox was stopped by hako, else undefined. */
  readonly message: string | undefined;
  /** The cgroup counters: after a kill, or always with RunOptions.collectStats; else undefined. */
  readonly stats: CgroupStats | undefined;
  readonly durationMs: number;
}

export interface RunOptions {
  readonly stdio: StdioOptions;
  /** Kill the sandbox after this long (exit 124). */
  readonly timeoutMs?: number | undefined;
  /** Aborting kills the sandbox (outcome `cancelled`, exit 130). */
  readonly signal?: AbortSignal | undefined;
  readonly cwd?: string | undefined;
  /** Called with the runtime process once it is spawned (for piping stdio). */
  readonly onSpawn?: ((child: ChildProcess) => void) | undefined;
  /** Read the cgroup counters into RunResult.stats after a normal exit too (a kill always does). */
  readonly collectStats?: boolean;
}

const HOME = '/home/sandbox';

/** Where every sandbox sees its skills directory (read-only; see Sandbox.skillsDir). */
export const SANDBOX_SKILLS_PATH = '/skills';
/** The skills directory's name inside a sandbox's bundle directory. */
const SKILLS_DIR = 'skills';

/** Where a long-lived sandbox's init (catatonit, bind-mounted read-only from the host) is. */
export const SANDBOX_INIT_PATH = '/dev/.hako-init';

/** A process to run in a started sandbox (SandboxHost.exec). */
export interface ExecProcess {
  readonly args: readonly string[];
  /** On top of the sandbox's environment (same names replace it). */
  readonly env: Readonly<Record<string, string>>;
  /** Absolute path inside the sandbox. */
  readonly cwd: string;
  /** Default: the sandbox user. 0 is refused. */
  readonly uid?: number | undefined;
  readonly gid?: number | undefined;
  /** Whether stdin is a pipe (else /dev/null). */
  readonly stdin: boolean;
}

export interface ExecProcessHandle {
  /** The runtime's exec process: its exit code is the process's (128+n when killed by signal n). */
  readonly child: ChildProcess;
  /** The process's host pid once it started; undefined when it exited before the pid was known. */
  readonly pid: Promise<number | undefined>;
}

/** Polls the runtime's pid file until it appears (or the exec process exits). */
async function readPidFile(path: string, closed: Promise<void>): Promise<number | undefined> {
  let done = false;
  void closed.then(() => (done = true));
  for (let delay = 1; ; delay = Math.min(delay + 1, 10)) {
    const text = await readFile(path, 'utf8').catch(() => '');
    const pid = Number.parseInt(text, 10);
    if (Number.isSafeInteger(pid) && pid > 0) return pid;
    if (done) return undefined;
    // the exec's exit ends the wait at once, not at the next poll
    await Promise.race([new Promise((r) => setTimeout(r, delay)), closed]);
  }
}
const OWNER_FILE = 'owner.json';
const CGROUP_FILE = 'cgroup.json';

function mib(bytes: number): string {
  return `${Math.round(bytes / 1024 / 1024)} MiB`;
}

/** Runs a host tool; resolves with its stdout, rejects with its stderr in the message. */
function execFileP(cmd: string, args: string[]): Promise<{ stdout: string }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} failed: ${(stderr || err.message).trim()}`));
      else resolve({ stdout });
    });
  });
}

/**
 * Creates, runs and destroys sandboxes on this host. Every resource a sandbox gets is pushed on its
 * cleanup stack right after it is acquired; a failed create runs the stack and leaves nothing.
 */
/**
 * A workspace is copied back only while its apparent size is at most this many times its disk
 * limit (sparse files beyond that would make the copy take unbounded time).
 */
const COPY_BACK_APPARENT_FACTOR = 64;

/** Cleanup steps of resources that do not depend on each other once the container is gone. */
const CONCURRENT = { concurrent: true } as const;

/** How many egress identities hakod keeps ready (SandboxHostDeps.egressPool). */
export const EGRESS_POOL_DEFAULT = 2;

/**
 * A sandbox identity made ahead for network egress: a fresh id, its bundle directory with the
 * owner record (so another process's GC leaves it alone), and its netns attached by CNI ADD.
 * prepare() takes one as the new sandbox's identity; the proxy policy is set then.
 */
interface EgressIdentity {
  readonly id: string;
  readonly name: string;
  readonly network: NetworkAttachment;
}

export class SandboxHost {
  private readonly d: SandboxHostDeps;
  private readonly runDir: string;
  private networkReady: Promise<void> | undefined;
  private proxyReady: Promise<void> | undefined;
  /**
   * Sandboxes this host is creating or holds, from prepare()/adopt() to destroy() (and until their
   * network is released), and the egress identities it keeps ready: gc() spares them.
   */
  private readonly held = new Set<string>();
  /** Ready egress identities; filled in the background once an egress sandbox was asked for. */
  private readonly egressReady: EgressIdentity[] = [];
  private egressWanted = false;
  private egressFilling: Promise<void> | undefined;
  /** Destroyed sandboxes whose network (CNI DEL, netns) and bundle are still to be released, by name. */
  private readonly toRelease = new Map<string, string>();
  private releasing: Promise<void> | undefined;
  private closing = false;
  /** Starts the egress fill and the releases once creates and destroys have been quiet a moment. */
  private readonly background = new QuietTimer(() => this.startBackground());

  constructor(deps: SandboxHostDeps) {
    this.d = deps;
    this.runDir = join(deps.config.HAKO_RUN_DIR, deps.config.HAKO_ENV);
  }

  /** Prepares host-wide pieces needed by every sandbox (quota volume, state dirs). Call once. */
  async init(): Promise<void> {
    await Promise.all([mkdir(this.runDir, { recursive: true, mode: 0o700 }), this.d.quota.init()]);
  }

  /**
   * Resolves once the background work creates and destroys started has finished: spare workspace
   * volumes being built, removed ones being unmounted and deleted. Nothing needs it for
   * correctness; benchmarks use it to time a create on a host that has had its idle time.
   */
  async settled(): Promise<void> {
    for (;;) {
      this.background.flush();
      const work = [this.releasing, this.egressFilling].filter((p) => p !== undefined);
      if (work.length === 0) break;
      await Promise.all(work);
    }
    await this.d.quota.close();
  }

  /**
   * Stops keeping egress identities, releases the ready ones and waits for all background work.
   * Sandboxes are left as they are (hakod adopts them when it starts again). Call before exit.
   */
  async close(): Promise<void> {
    this.closing = true;
    await this.egressFilling;
    for (const x of this.egressReady.splice(0)) this.toRelease.set(x.name, join(this.runDir, x.name));
    this.background.poke();
    await this.settled();
  }

  private startBackground(): void {
    this.releasing ??= this.runReleases().finally(() => {
      this.releasing = undefined;
    });
    if (!this.egressWanted || this.closing) return;
    this.egressFilling ??= this.fillEgress()
      .catch((err: unknown) => this.d.logger.warn({ err }, 'keeping egress identities ready failed'))
      .finally(() => {
        this.egressFilling = undefined;
      });
  }

  /**
   * Takes a ready egress identity (undefined when none is ready: the create attaches its own) and
   * asks for the pool to be refilled when things are quiet.
   */
  private takeEgressIdentity(): EgressIdentity | undefined {
    if (!this.d.egressPool) return undefined;
    this.egressWanted = true;
    this.background.poke();
    for (let x = this.egressReady.shift(); x; x = this.egressReady.shift()) {
      const bundleDir = join(this.runDir, x.name);
      // another host object of this process (same pid in the owner record) may have collected it
      if (existsSync(x.network.netnsPath) && existsSync(join(bundleDir, OWNER_FILE))) return x;
      this.d.logger.warn({ name: x.name }, 'a ready egress identity was removed under us; releasing it');
      this.toRelease.set(x.name, bundleDir);
      this.background.poke();
    }
    return undefined;
  }

  private async fillEgress(): Promise<void> {
    const { network } = await this.ensureEgress();
    while (!this.closing && this.egressReady.length < (this.d.egressPool ?? 0)) {
      const id = newSandboxId();
      const name = resourceName(this.d.config.HAKO_ENV, id);
      const bundleDir = join(this.runDir, name);
      this.held.add(name);
      try {
        await makeBundle(bundleDir);
        this.egressReady.push({ id, name, network: await network.add(name) });
      } catch (err) {
        // network.add() undoes itself; the bundle is all there is to undo
        removeBundle(bundleDir);
        this.held.delete(name);
        throw err;
      }
    }
  }

  /**
   * A destroyed egress sandbox's CNI DEL and netns removal (a veth, a lease: ~40 ms of plugin and
   * kernel work) happen in the background, then its bundle (with the owner record that keeps other
   * processes' GC away) goes. Its proxy registration is gone already and its processes are dead.
   */
  private releaseNetwork(sb: Sandbox): void {
    this.toRelease.set(sb.name, sb.bundleDir);
    this.background.poke();
  }

  private async runReleases(): Promise<void> {
    const network = this.d.network;
    for (const [name, bundleDir] of this.toRelease) {
      try {
        if (network) await network.del(name);
        removeBundle(bundleDir);
      } catch (err) {
        // the bundle stays, owned by this process: this host's next gc() retries the DEL
        this.d.logger.error({ err, name }, "releasing a destroyed sandbox's network failed; GC retries");
      } finally {
        this.toRelease.delete(name);
        this.held.delete(name);
      }
    }
  }

  private async ensureEgress(): Promise<{ network: NetworkManager; proxy: EgressProxy }> {
    const { network, proxy } = this.d;
    if (!network || !proxy) {
      throw new AppError(
        'HOST_PREREQUISITE_MISSING',
        'network mode egress needs the CNI network and the egress proxy',
      );
    }
    this.networkReady ??= network.init();
    await this.networkReady;
    return { network, proxy };
  }

  /**
   * Acquires every resource of a sandbox and writes its bundle, without starting it. The returned
   * sandbox is in state `creating`; run it with runPrepared() or destroy it with destroy().
   */
  async prepare(
    options: SandboxOptions,
    args: readonly string[],
    cwd = '/workspace',
    extraBinds: readonly BindMount[] = [],
  ): Promise<Sandbox> {
    const cfg = this.d.config;
    if (options.network === 'egress' && this.d.runtime.name === 'runsc') {
      // runsc's sandbox network (interfaces taken from the CNI netns) refuses to start on the gVisor
      // release Debian ships ("cannot run with network enabled in root network namespace")
      throw new AppError(
        'RUNTIME_UNAVAILABLE',
        'network egress is not supported with runsc yet; use --runtime crun or runc, or --network none',
      );
    }
    const pooled = options.network === 'egress' ? this.takeEgressIdentity() : undefined;
    const id = pooled?.id ?? newSandboxId();
    const sb = new Sandbox(id, resourceName(cfg.HAKO_ENV, id), options);
    this.held.add(sb.name);
    const uid = cfg.HAKO_SANDBOX_UID;
    // bundle directory (curated /etc, config.json, owner marker); an egress sandbox's goes after
    // its network is released (releaseNetwork)
    sb.bundleDir = join(this.runDir, sb.name);
    sb.cleanup.push(
      'bundle',
      () => {
        if (!sb.network) removeBundle(sb.bundleDir);
      },
      CONCURRENT,
    );
    if (pooled) {
      sb.network = pooled.network;
      sb.cleanup.push('network', () => this.releaseNetwork(sb), CONCURRENT);
    }
    try {
      const image = await this.d.images.get(options.image);
      sb.imageDigest = image.digest;

      // the bundle is a few small files on the run dir (a tmpfs): written synchronously, each a
      // few microseconds, instead of three thread-pool round trips per file
      if (!pooled) await makeBundle(sb.bundleDir);
      // /skills: empty and root's until hakod writes a tenant's skills into it (WriteFiles, target
      // SKILLS); read-only inside the sandbox. Removed with the bundle.
      sb.skillsDir = join(sb.bundleDir, SKILLS_DIR);
      mkdirSync(sb.skillsDir, { mode: 0o755 });

      // Independent resources are acquired concurrently; each pushes its undo as soon as it holds
      // it, so a failure of one still undoes the others. /etc needs the address (egress).
      const etcDir = join(sb.bundleDir, 'etc');
      const isHostImage = image.digest === HOST_IMAGE_NAME;
      const hostEtcBinds = isHostImage ? HOST_ETC_BINDS : [];
      const workspaceP = this.d.quota
        .create(sb.name, options.limits.diskBytes, uid, uid)
        .then(async (dir) => {
          sb.cleanup.push('quota', () => this.d.quota.remove(sb.name), CONCURRENT);
          if (options.workspaceDir) await this.copyIn(options.workspaceDir, dir, uid);
          return dir;
        });
      const cgroupP = this.d.cgroups.create(sb.name, options.limits).then((r) => {
        sb.cleanup.push('cgroup', () => this.d.cgroups.remove(sb.name), CONCURRENT);
        return r;
      });
      const proxyUrlP = options.network === 'egress' ? this.attachEgress(sb) : Promise.resolve(undefined);
      const etcP = proxyUrlP.then(async () => {
        const base = isHostImage ? {} : await seedEtcFromImage(etcDir, join(image.rootfs, 'etc'));
        await writeEtcDir(
          etcDir,
          { hostname: sb.id, uid, gid: uid, home: HOME, ip: sb.network?.ip },
          hostEtcBinds,
          base,
        );
      });
      const settled = await Promise.allSettled([workspaceP, cgroupP, proxyUrlP, etcP]);
      const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      const workspaceDir = await workspaceP;
      const cg = await cgroupP;
      const proxyUrl = await proxyUrlP;
      sb.workspaceDir = workspaceDir;
      sb.cgroupProcs = cg.procsFiles;
      // for adopt(): a restarted hakod runs execs through the same cgroup.procs files
      writeFileSync(join(sb.bundleDir, CGROUP_FILE), JSON.stringify({ procsFiles: cg.procsFiles }));

      const env: Record<string, string> = {
        PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        HOME,
        LANG: 'C.UTF-8',
      };
      if (proxyUrl) {
        for (const k of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy']) env[k] = proxyUrl;
      }
      // caller env last, but it cannot unset the basics
      for (const [k, v] of Object.entries(options.env)) env[k] = v;

      const annotations: Record<string, string> = {
        [LABEL_CREATED_BY]: CREATED_BY_VALUE,
        [LABEL_ENV]: cfg.HAKO_ENV,
        'hako.id': sb.id,
        'hako.image': image.name,
      };
      for (const [k, v] of Object.entries(options.labels)) annotations[`hako.label.${k}`] = v;
      sb.processEnv = [
        ...image.config.env.filter((e) => !e.startsWith('PATH=')),
        ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
      ];
      const spec = buildOciSpec({
        args: args.length > 0 ? args : [...image.config.entrypoint, ...image.config.cmd],
        env: sb.processEnv,
        cwd,
        uid,
        gid: uid,
        hostname: sb.id,
        rootfs: image.rootfs,
        etcDir,
        hostEtcBinds,
        imageBinds: image.binds,
        workspaceDir,
        home: HOME,
        tmpBytes: options.limits.tmpBytes,
        netnsPath: sb.network?.netnsPath,
        cgroupsPath: cg.cgroupsPath,
        // a runtime that joins the sandbox cgroup leaves the other hierarchies at the host's root
        extraMaskedPaths: this.d.runtime.joinsCgroups
          ? cg.notJoined.map((rel) => `/sys/fs/cgroup/${rel}`)
          : [],
        annotations,
        extraBinds: sandboxBinds(this.d.binds ?? [], [
          { destination: SANDBOX_SKILLS_PATH, source: sb.skillsDir, readonly: true },
          ...extraBinds,
        ]),
      });
      writeFileSync(join(sb.bundleDir, 'config.json'), JSON.stringify(spec));
      sb.cleanup.push('runtime container', () => this.deleteContainer(sb));
      return sb;
    } catch (err) {
      const errors = await sb.cleanup.run();
      if (!this.toRelease.has(sb.name)) this.held.delete(sb.name);
      sb.transition('failed');
      const e = toAppError(err, 'SANDBOX_CREATE_FAILED', 'creating the sandbox failed');
      if (errors.length > 0) {
        this.d.logger.error(
          { id, errors: errors.map((x) => x.message) },
          'rollback after failed create had errors',
        );
        throw new AggregateAppError(e.code, `${e.message}; rollback also failed`, errors);
      }
      throw e;
    }
  }

  /**
   * Network egress: CNI ADD into the sandbox's netns, the proxy listening on the gateway and the
   * sandbox's address registered with its allowlist (each with its undo step). Returns the proxy URL.
   */
  private async attachEgress(sb: Sandbox): Promise<string> {
    const cfg = this.d.config;
    const { network, proxy } = await this.ensureEgress();
    if (!sb.network) {
      sb.network = await network.add(sb.name);
      sb.cleanup.push('network', () => this.releaseNetwork(sb), CONCURRENT);
    }
    this.proxyReady ??= proxy.listen(network.gateway, cfg.HAKO_PROXY_PORT, cfg.HAKO_PROXY_PORT_COUNT);
    await this.proxyReady;
    const ip = sb.network.ip;
    proxy.register(ip, sb.id, sb.options.allow);
    sb.cleanup.push('proxy registration', () => proxy.unregister(ip), CONCURRENT);
    return proxy.url;
  }

  /** Mirrors a host directory into the quota'd workspace, owned by the sandbox user. */
  private async copyIn(src: string, dst: string, uid: number): Promise<void> {
    await execFileP('rsync', [
      '-a',
      '--no-D',
      `--chown=${uid}:${uid}`,
      `${src.replace(/\/+$/, '')}/`,
      `${dst}/`,
    ]).catch((err: unknown) => {
      throw toAppError(err, 'WORKSPACE_INVALID', `copying ${src} into the sandbox workspace`);
    });
  }

  /**
   * Mirrors the workspace back to the host directory: new and changed files, deletions; symlinks
   * are copied as links (never followed), device and special files are skipped, setuid/setgid
   * bits are stripped, hard links stay links and holes stay holes, so the copy takes about the
   * host disk the workspace took under its limit. A workspace whose files add up (apparent size,
   * each hard-linked file once) to more than COPY_BACK_APPARENT_FACTOR times its disk limit is
   * made of huge sparse files: reading them back would take unbounded time, so it is refused with
   * QUOTA_EXCEEDED and the host directory is left as it was.
   */
  private async copyOut(src: string, dst: string, diskBytes: number): Promise<void> {
    const { stdout } = await execFileP('du', ['-s', '-B1', '--apparent-size', src]);
    const apparent = Number(stdout.split(/\s/)[0]);
    const cap = diskBytes * COPY_BACK_APPARENT_FACTOR;
    if (!Number.isFinite(apparent) || apparent > cap) {
      throw new AppError(
        'QUOTA_EXCEEDED',
        `the workspace's files add up to ${apparent} bytes (sparse files), over ${COPY_BACK_APPARENT_FACTOR}x ` +
          `its ${diskBytes}-byte disk limit; it was not copied back to ${dst}`,
      );
    }
    await execFileP('rsync', [
      '-a',
      '--delete',
      '--no-D',
      '--chmod=ugo-s',
      '--sparse',
      '--hard-links',
      `${src}/`,
      `${dst.replace(/\/+$/, '')}/`,
    ]);
  }

  /** Runs a prepared sandbox's process to completion, then destroys the sandbox. */
  async runPrepared(sb: Sandbox, opts: RunOptions): Promise<RunResult> {
    const started = performance.now();
    const { runtime } = this.d;
    sb.transition('running');
    let outcome: RunOutcome | undefined;
    let stats: CgroupStats | undefined;
    let exitCode = 1;
    let signal: NodeJS.Signals | null = null;
    try {
      const child = runtime.run(sb.name, sb.bundleDir, opts.stdio, sb.cgroupProcs);
      opts.onSpawn?.(child);
      const killAll = (why: RunOutcome): void => {
        outcome ??= why;
        runtime.kill(sb.name, 'KILL', true).catch((err: unknown) => {
          this.d.logger.debug({ err, id: sb.id }, 'kill after stop request failed (already gone?)');
        });
      };
      const timer =
        opts.timeoutMs !== undefined
          ? setTimeout(() => killAll('timeout'), opts.timeoutMs).unref()
          : undefined;
      const onAbort = (): void => killAll('cancelled');
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      [exitCode, signal] = await new Promise<[number, NodeJS.Signals | null]>((resolve, reject) => {
        child.once('error', (err) =>
          reject(
            new AppError('RUNTIME_UNAVAILABLE', `cannot start ${runtime.name}: ${err.message}`, {
              cause: err,
            }),
          ),
        );
        child.once('exit', (code, sig) => resolve([code ?? 128, sig]));
      });
      if (timer) clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      // the runtime kept the container (run --keep): on cgroup v1 the OOM and pids counters live in
      // its child cgroup, so read them before the container is deleted
      // (only needed to explain a kill, unless the caller asks for them)
      if (opts.collectStats || exitCode > 128 || signal !== null || outcome !== undefined) {
        stats = await this.d.cgroups.stats(sb.name).catch(() => undefined);
      }
      if (runtime.keepsContainerAfterRun) await this.deleteContainer(sb);
      else sb.containerDeleted = true;
    } finally {
      await this.destroy(sb);
    }
    const durationMs = performance.now() - started;
    const limits = sb.options.limits;
    if (outcome === 'timeout') {
      return {
        exitCode: 124,
        outcome,
        message: `hako: sandbox timed out after ${fmtMs(opts.timeoutMs ?? 0)}`,
        stats,
        durationMs,
      };
    }
    if (outcome === 'cancelled') {
      return { exitCode: 130, outcome, message: 'hako: sandbox cancelled', stats, durationMs };
    }
    if (exitCode === 137 && stats && stats.oomKills > 0) {
      return {
        exitCode: 137,
        outcome: 'oom',
        message: `hako: sandbox killed: out of memory (limit ${mib(limits.memoryBytes)})`,
        stats,
        durationMs,
      };
    }
    if (signal)
      return {
        exitCode: 128,
        outcome: 'signaled',
        message: `hako: runtime killed by ${signal}`,
        stats,
        durationMs,
      };
    return {
      exitCode,
      outcome: exitCode > 128 ? 'signaled' : 'exited',
      message: undefined,
      stats,
      durationMs,
    };
  }

  /** Deletes the runtime's container once (force: kills what still runs). */
  private async deleteContainer(sb: Sandbox): Promise<void> {
    if (sb.containerDeleted) return;
    await this.d.runtime.delete(sb.name, true);
    sb.containerDeleted = true;
  }

  /**
   * Creates a long-lived sandbox: every resource as prepare(), then its init process (catatonit in
   * pause mode, bind-mounted from the host at SANDBOX_INIT_PATH: it only reaps orphans) started in
   * the background. Processes then run in it with exec(); destroy() ends it. A failed start leaves
   * nothing behind.
   */
  async start(options: SandboxOptions): Promise<Sandbox> {
    const init = this.d.config.HAKO_INIT_BINARY;
    const sb = await this.prepare(options, [SANDBOX_INIT_PATH, '-P'], '/', [
      { destination: SANDBOX_INIT_PATH, source: init, readonly: true },
    ]);
    try {
      await this.d.runtime.runDetached(sb.name, sb.bundleDir, sb.cgroupProcs);
      sb.transition('running');
      return sb;
    } catch (err) {
      await this.destroy(sb).catch((e: unknown) =>
        this.d.logger.error({ err: e, id: sb.id }, 'rollback after failed start had errors'),
      );
      throw toAppError(err, 'SANDBOX_CREATE_FAILED', 'starting the sandbox failed');
    }
  }

  /**
   * Runs a process in a started sandbox (see start()). The returned child is the runtime's exec
   * process: stdio per `stdin` ('pipe' or /dev/null) and piped stdout/stderr; its exit code is the
   * process's. `pid` resolves with the process's host pid once it has started (for signals), or
   * undefined when it never started. The process file and pid file are removed once it exits.
   */
  exec(sb: Sandbox, p: ExecProcess): ExecProcessHandle {
    if (sb.state !== 'running') {
      throw new AppError('SANDBOX_STATE_INVALID', `sandbox ${sb.id} is ${sb.state}, not running`);
    }
    if (p.uid === 0 || p.gid === 0) {
      throw new AppError('INVALID_ARGUMENT', 'processes in a sandbox never run as root (uid or gid 0)');
    }
    const env = new Map<string, string>();
    for (const kv of [...sb.processEnv, ...Object.entries(p.env).map(([k, v]) => `${k}=${v}`)]) {
      const i = kv.indexOf('=');
      env.set(kv.slice(0, i), kv.slice(i + 1));
    }
    const tag = randomBytes(6).toString('hex');
    const procFile = join(sb.bundleDir, `exec-${tag}.json`);
    const pidFile = join(sb.bundleDir, `exec-${tag}.pid`);
    const proc = buildProcess({
      args: p.args,
      env: [...env].map(([k, v]) => `${k}=${v}`),
      cwd: p.cwd,
      uid: p.uid ?? this.d.config.HAKO_SANDBOX_UID,
      gid: p.gid ?? p.uid ?? this.d.config.HAKO_SANDBOX_UID,
    });
    // a small file on the run dir (tmpfs): written synchronously so the spawn follows at once
    writeFileSync(procFile, JSON.stringify(proc), { mode: 0o600 });
    const child = this.d.runtime.exec(
      sb.name,
      procFile,
      [p.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      sb.cgroupProcs,
      pidFile,
    );
    const closed = new Promise<void>((resolve) =>
      child.once('close', () => {
        resolve();
        void rm(procFile, { force: true });
        void rm(pidFile, { force: true });
      }),
    );
    return { child, pid: readPidFile(pidFile, closed) };
  }

  /**
   * Whether the sandbox's last exec that ended with 137 was killed by the memory limit: reads the
   * cgroup's OOM-kill count and compares it with the count seen before.
   */
  async oomKilledSinceLastCheck(sb: Sandbox): Promise<boolean> {
    const stats = await this.d.cgroups.stats(sb.name);
    const hit = stats.oomKills > sb.oomKillsSeen;
    sb.oomKillsSeen = stats.oomKills;
    return hit;
  }

  /** Freezes (true) or thaws (false) every process of a started sandbox. */
  async setPaused(sb: Sandbox, paused: boolean): Promise<void> {
    await this.d.cgroups.setFrozen(sb.name, paused);
  }

  /** cgroup counters and disk usage of a sandbox. */
  async usage(sb: Sandbox): Promise<{ stats: CgroupStats; disk: QuotaUsage }> {
    const [stats, disk] = await Promise.all([this.d.cgroups.stats(sb.name), this.d.quota.usage(sb.name)]);
    return { stats, disk };
  }

  /** The runtime's view of the sandbox's container (undefined when it is gone). */
  async containerState(sb: Sandbox): Promise<ContainerState | undefined> {
    return this.d.runtime.state(sb.name);
  }

  /** The runtime's view of a container by resource name (reconcile, before a Sandbox exists). */
  async containerStateByName(name: string): Promise<ContainerState | undefined> {
    return this.d.runtime.state(name);
  }

  /**
   * Replaces an egress sandbox's proxy policy (allowlist), e.g. when a warm sandbox is claimed.
   * A sandbox without network is left alone.
   */
  setEgressPolicy(sb: Sandbox, allow: readonly string[], upstreams: readonly string[] = []): void {
    if (!sb.network || !this.d.proxy) return;
    this.d.proxy.register(sb.network.ip, sb.id, allow, upstreams);
  }

  /**
   * Rebuilds the Sandbox object of a started sandbox this host left running (hakod restarted):
   * its resources are found by name, and its cleanup stack undoes each of them by name. The caller
   * has checked that the container runs. `network` is the lease it had, if any.
   */
  async adopt(id: string, options: SandboxOptions, network: NetworkAttachment | undefined): Promise<Sandbox> {
    const cfg = this.d.config;
    const sb = new Sandbox(id, resourceName(cfg.HAKO_ENV, id), options);
    sb.bundleDir = join(this.runDir, sb.name);
    sb.cleanup.push('bundle', () => removeBundle(sb.bundleDir), CONCURRENT);
    sb.cleanup.push('quota', () => this.d.quota.remove(sb.name), CONCURRENT);
    sb.cleanup.push('cgroup', () => this.d.cgroups.remove(sb.name), CONCURRENT);
    if (network && this.d.network && this.d.proxy) {
      const { network: net, proxy } = await this.ensureEgress();
      // a restarted hakod's proxy is not listening yet: the adopted sandbox's HTTP_PROXY needs it
      this.proxyReady ??= proxy.listen(net.gateway, cfg.HAKO_PROXY_PORT, cfg.HAKO_PROXY_PORT_COUNT);
      await this.proxyReady;
      sb.network = network;
      sb.cleanup.push('network', () => net.del(sb.name), CONCURRENT);
      proxy.register(network.ip, sb.id, options.allow);
      sb.cleanup.push('proxy registration', () => proxy.unregister(network.ip), CONCURRENT);
    }
    sb.cleanup.push('runtime container', () => this.deleteContainer(sb));
    const spec = JSON.parse(await readFile(join(sb.bundleDir, 'config.json'), 'utf8')) as {
      process: { env: string[] };
    };
    sb.processEnv = spec.process.env;
    const cg = JSON.parse(await readFile(join(sb.bundleDir, CGROUP_FILE), 'utf8')) as {
      procsFiles: string[];
    };
    sb.cgroupProcs = cg.procsFiles;
    sb.workspaceDir = this.d.quota.pathFor(sb.name);
    sb.skillsDir = join(sb.bundleDir, SKILLS_DIR);
    await mkdir(sb.skillsDir, { recursive: true, mode: 0o755 });
    await writeAtomic(join(sb.bundleDir, OWNER_FILE), ownerRecord());
    this.held.add(sb.name);
    sb.transition('running');
    return sb;
  }

  /** prepare() then runPrepared(): one command in a fresh sandbox, destroyed afterwards. */
  async runOnce(options: SandboxOptions, args: readonly string[], opts: RunOptions): Promise<RunResult> {
    const sb = await this.prepare(options, args, opts.cwd);
    return this.runPrepared(sb, opts);
  }

  /**
   * Tears a sandbox down: mirrors the workspace back when it came from a host directory, then runs
   * the cleanup stack. Every step runs; failures are collected and thrown together.
   */
  async destroy(sb: Sandbox): Promise<void> {
    if (sb.state === 'gone') return;
    sb.transition('stopping');
    const errors: AppError[] = [];
    let copyBack: AppError | undefined;
    if (sb.options.workspaceDir && sb.workspaceDir) {
      // the container is gone (or killed) before copy-out: nothing writes while we copy
      await this.deleteContainer(sb).catch((e: unknown) => errors.push(toAppError(e, 'RUNTIME_FAILED')));
      await this.copyOut(sb.workspaceDir, sb.options.workspaceDir, sb.options.limits.diskBytes).catch(
        (e: unknown) => {
          copyBack = toAppError(e, 'WORKSPACE_INVALID', 'copying the workspace back');
        },
      );
    }
    errors.push(...(await sb.cleanup.run()));
    // what a failed step left is gc()'s to retry from now on (a network being released stays held
    // until it is)
    if (!this.toRelease.has(sb.name)) this.held.delete(sb.name);
    if (errors.length > 0) {
      sb.transition('failed');
      if (copyBack) errors.unshift(copyBack);
      throw new AggregateAppError('SANDBOX_CLEANUP_FAILED', `destroying sandbox ${sb.id}`, errors);
    }
    sb.transition('gone');
    // the sandbox is fully gone; only its workspace did not come back: say so with its own code
    if (copyBack) throw copyBack;
  }

  /**
   * Removes what this env's sandboxes left behind when their owning process died: runtime containers
   * (only those carrying hako's created-by annotation and this env's name prefix), cgroups, netns
   * and leases, quota directories and bundles. A sandbox whose owner is alive is left alone, and so
   * is every sandbox this host is creating or holds (so a GC may run alongside creates).
   * `dropSpares` also deletes the quota engine's spare workspaces (a cache: `hako gc` does; hakod's
   * periodic GC keeps them).
   */
  async gc(opts: { dryRun: boolean; dropSpares?: boolean }): Promise<GcReport> {
    const env = this.d.config.HAKO_ENV;
    const prefix = envPrefix(env);
    const live = new Set<string>(this.held);
    const bundles: string[] = [];
    for (const name of await readdir(this.runDir).catch(() => [] as string[])) {
      if (!idFromName(env, name) || this.held.has(name)) continue;
      try {
        const owner = JSON.parse(await readFile(join(this.runDir, name, OWNER_FILE), 'utf8')) as {
          pid: number;
          createdBy?: string;
        };
        // a bundle is hako's when its owner record says so (older records carry only the pid)
        if (owner.createdBy !== undefined && owner.createdBy !== CREATED_BY_VALUE) continue;
        bundles.push(name);
        if (owner.pid !== process.pid && processAlive(owner.pid)) live.add(name);
      } catch (err) {
        // a bundle directory without a readable owner record: its create died before the record
        // landed (nothing else was acquired yet: the directory is empty or holds only the record's
        // temporary file), or the directory is not hako's and stays
        const entries = await readdir(join(this.runDir, name)).catch(() => ['?']);
        if (entries.every((e) => ATOMIC_TMP_RE.exec(e)?.[1] === OWNER_FILE)) bundles.push(name);
        else this.d.logger.warn({ name, err }, 'gc: bundle without an owner record left alone');
      }
    }
    // crun's `list` leaves the annotations out: read each candidate's from its bundle's config
    // (a file read), else from `state` (a process). Live and held sandboxes are skipped first: with
    // hundreds of sandboxes a state call each took seconds per GC.
    const containers: ContainerState[] = [];
    for (const c of await this.d.runtime.list()) {
      if (!c.id.startsWith(prefix) || !idFromName(env, c.id)) continue;
      if (live.has(c.id) || this.held.has(c.id)) continue;
      let annotations: Readonly<Record<string, string>> | undefined = c.annotations;
      if (Object.keys(annotations).length === 0) {
        annotations = await readAnnotations(c.bundle);
        annotations ??= (
          await this.d.runtime.state(c.id).catch((err: unknown) => {
            this.d.logger.warn({ name: c.id, err }, 'gc: cannot read the container state; left alone');
            return undefined;
          })
        )?.annotations;
      }
      if (annotations?.[LABEL_CREATED_BY] === CREATED_BY_VALUE) containers.push(c);
    }
    const found = new Map<string, Set<string>>();
    const add = (kind: string, names: string[]): void => {
      for (const n of names) {
        // held is checked as each list comes in: a create that began after the scan started is held
        if (!idFromName(env, n) || live.has(n) || this.held.has(n)) continue;
        let s = found.get(n);
        if (!s) found.set(n, (s = new Set()));
        s.add(kind);
      }
    };
    add(
      'container',
      containers.map((c) => c.id),
    );
    add('bundle', bundles);
    // cgroups (under hako/{env}), quota images and CNI results and leases (in the state dir) live
    // in trees only hako writes. Network namespaces share /run/netns with everyone: one goes only
    // with something of hako's of the same name, so a foreign netns named like ours is left alone.
    add('cgroup', await this.d.cgroups.list());
    add('quota', await this.d.quota.list());
    if (this.d.network) {
      const cached = new Set(await this.d.network.listCached());
      const ours = new Set([...found.keys(), ...cached]);
      add(
        'netns',
        (await this.d.network.list()).filter((n) => ours.has(n)),
      );
    }

    const report: GcReport = { removed: [], failed: [], kept: [...live], spares: 0 };
    for (const [name, kinds] of found) {
      if (opts.dryRun) {
        report.removed.push({ name, kinds: [...kinds] });
        continue;
      }
      const errs: string[] = [];
      const step = async (kind: string, f: () => Promise<unknown> | void): Promise<void> => {
        try {
          await f();
        } catch (e) {
          errs.push(`${kind}: ${(e as Error).message}`);
        }
      };
      // order: processes first, then network (CNI DEL runs whether or not a task exists), then the rest
      await step('container', () => this.d.runtime.delete(name, true));
      if (this.d.network) await step('netns', () => this.d.network!.del(name));
      await step('cgroup', () => this.d.cgroups.remove(name));
      await step('quota', () => this.d.quota.remove(name));
      await step('bundle', () => removeBundle(join(this.runDir, name)));
      if (errs.length > 0) report.failed.push({ name, errors: errs });
      else report.removed.push({ name, kinds: [...kinds] });
    }
    // a removed workspace is unmounted in the background: a collection is done when that is
    if (!opts.dryRun && found.size > 0) await this.d.quota.close();
    if (opts.dropSpares) {
      try {
        report.spares = await this.d.quota.drainSpares(opts.dryRun);
      } catch (e) {
        report.failed.push({ name: 'spare workspaces', errors: [(e as Error).message] });
      }
    }
    return report;
  }
}

export interface GcReport {
  removed: { name: string; kinds: string[] }[];
  failed: { name: string; errors: string[] }[];
  kept: string[];
  /** Spare workspace volumes removed (`dropSpares`; with `dryRun`, how many would be). */
  spares: number;
}

/** A bundle's OCI annotations, or undefined when its config.json cannot be read. */
async function readAnnotations(bundle: string): Promise<Record<string, string> | undefined> {
  if (bundle === '') return undefined;
  try {
    const spec = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8')) as {
      annotations?: Record<string, string>;
    };
    return spec.annotations ?? {};
  } catch {
    return undefined;
  }
}

/** Makes a bundle directory holding only this process's owner record (what GC goes by). */
async function makeBundle(dir: string): Promise<void> {
  mkdirSync(dir, { mode: 0o700 });
  await writeAtomic(join(dir, OWNER_FILE), ownerRecord());
}

/**
 * Deletes a bundle directory (a dozen small files on the run dir, a tmpfs) synchronously: the
 * recursive async rm took ~10 ms of thread-pool round trips, the system calls well under one.
 */
function removeBundle(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** The owner record in every bundle: who made it (the GC's label for bundles) and which process holds it. */
function ownerRecord(): string {
  return JSON.stringify({ pid: process.pid, createdBy: CREATED_BY_VALUE });
}

function fmtMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
