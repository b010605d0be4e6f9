/**
 * hakod's sandboxes: create (from the warm pool or cold), exec, pause, metrics, destroy, the
 * periodic sweep of expired and idle ones, and start-up reconcile. Implements AgentBackend minus
 * the parts that live in their own modules (files, invoke, images), which agent-backend.ts adds.
 */
import { constants as osConstants } from 'node:os';
import { PassThrough } from 'node:stream';
import { AppError, toAppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { idFromName, resourceName } from '@hako/sandbox';
import type { NetworkAttachment, Sandbox, SandboxHost, SandboxLimits, SandboxOptions } from '@hako/sandbox';
import type {
  CreateInput,
  EffectiveLimits,
  ExecExitInfo,
  ExecHandle,
  ExecInput,
  ExitReasonName,
  GcResult,
  LimitsInput,
  NetworkModeName,
  SandboxInfo,
  SandboxMetrics,
  SandboxStateName,
} from './backend.js';
import type { SandboxRecord, SandboxRecordStore } from './sandbox-registry.js';

export interface ManagerConfig {
  readonly env: string;
  readonly defaults: EffectiveLimits;
  readonly maxSandboxes: number;
  readonly poolMin: number;
  readonly poolMax: number;
  readonly idleTtlMs: number;
  readonly sandboxTtlMs: number;
  readonly sandboxUid: number;
}

/** What the manager reports to metrics (AgentMetrics implements it). */
export interface ManagerObserver {
  observeCreate(source: 'cold' | 'pool', seconds: number): void;
  observeExec(seconds: number): void;
  observeDestroy(seconds: number): void;
  oomKill(): void;
  gcResult(removed: number, failed: number): void;
}

export interface SandboxManagerDeps {
  readonly config: ManagerConfig;
  readonly host: SandboxHost;
  readonly records: SandboxRecordStore;
  readonly logger: Logger;
  readonly observer?: ManagerObserver | undefined;
  /**
   * The environment a sandbox gets for its named upstreams (proxy URL, placeholder key). Throws for
   * names that are unknown or not configured. Called once before the sandbox starts (to check the
   * names; the answer may be empty while the egress proxy is not listening yet) and once after.
   */
  readonly upstreamEnv: (upstreams: readonly string[]) => Record<string, string>;
  /** Registers the sandbox's allowlist and upstreams with the egress proxy (egress sandboxes). */
  readonly setEgressPolicy: (sb: Sandbox, allow: readonly string[], upstreams: readonly string[]) => void;
}

/** One sandbox hakod holds, claimed by an owner or waiting in the warm pool. */
class Managed {
  readonly sb: Sandbox;
  rec: SandboxRecord;
  lastActiveAtMs: number;
  paused = false;
  destroying: Promise<void> | undefined;
  readonly execs = new Set<() => void>();
  lastExitCode: number | undefined;

  constructor(sb: Sandbox, rec: SandboxRecord) {
    this.sb = sb;
    this.rec = rec;
    this.lastActiveAtMs = Date.now();
  }
}

interface PoolProfile {
  readonly key: string;
  readonly image: string;
  readonly limits: EffectiveLimits;
  readonly network: NetworkModeName;
  readonly ready: Managed[];
  /** Claim times in the last minute: the pool keeps that many warm (between min and max). */
  claims: number[];
  lastUsedMs: number;
  starting: number;
}

const SIGNALS = osConstants.signals as Record<string, number>;

/** How many destroyed sandboxes' owners are remembered for an idempotent DestroySandbox. */
const DESTROYED_MEMORY = 10_000;

/**
 * Parses "TERM", "SIGTERM" or a number 1-64 (real-time signals included) into what process.kill
 * takes; INVALID_ARGUMENT otherwise.
 */
export function parseSignal(sig: string): NodeJS.Signals | number {
  const s = sig.trim().toUpperCase();
  if (/^[0-9]{1,2}$/.test(s)) {
    const n = Number(s);
    if (n >= 1 && n <= 64) return n;
  } else {
    const name = s.startsWith('SIG') ? s : `SIG${s}`;
    if (name in SIGNALS) return name as NodeJS.Signals;
  }
  throw new AppError('INVALID_ARGUMENT', `unknown signal "${sig}"`);
}

/** Parses an exec's user ("uid" or "uid:gid"; empty = the sandbox user). Root is refused. */
export function parseUser(user: string, defaultUid: number): { uid: number; gid: number } {
  if (user === '') return { uid: defaultUid, gid: defaultUid };
  const m = /^([0-9]{1,10})(?::([0-9]{1,10}))?$/.exec(user);
  if (!m) throw new AppError('INVALID_ARGUMENT', `user must be "uid" or "uid:gid", not "${user}"`);
  const uid = Number(m[1]);
  const gid = m[2] === undefined ? uid : Number(m[2]);
  if (uid === 0 || gid === 0) {
    throw new AppError('INVALID_ARGUMENT', 'processes in a sandbox never run as root (uid or gid 0)');
  }
  if (uid > 2 ** 31 - 2 || gid > 2 ** 31 - 2)
    throw new AppError('INVALID_ARGUMENT', `user out of range: ${user}`);
  return { uid, gid };
}

/** The limits a create asks for, with the node's defaults for what it leaves at 0. */
export function effectiveLimits(asked: LimitsInput, defaults: EffectiveLimits): EffectiveLimits {
  const pick = (v: number | undefined, d: number): number => (v !== undefined && v > 0 ? v : d);
  return {
    cpus: pick(asked.cpus, defaults.cpus),
    memoryBytes: pick(asked.memoryBytes, defaults.memoryBytes),
    pids: pick(asked.pids, defaults.pids),
    diskBytes: pick(asked.diskBytes, defaults.diskBytes),
    tmpBytes: pick(asked.tmpBytes, defaults.tmpBytes),
  };
}

function profileKey(image: string, limits: EffectiveLimits, network: NetworkModeName): string {
  return JSON.stringify([
    image,
    limits.cpus,
    limits.memoryBytes,
    limits.pids,
    limits.diskBytes,
    limits.tmpBytes,
    network,
  ]);
}

function labelsMatch(
  labels: Readonly<Record<string, string>>,
  selector: Readonly<Record<string, string>>,
): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

export class SandboxManager {
  private readonly d: SandboxManagerDeps;
  private readonly byId = new Map<string, Managed>();
  private readonly pool = new Map<string, PoolProfile>();
  /** id -> owner of recently destroyed sandboxes, so DestroySandbox is idempotent. */
  private readonly destroyed = new Map<string, string>();
  /** Creates under way (cold starts and pool fills), counted against maxSandboxes. */
  private inFlight = 0;
  /** The warm pool fill in flight, if any. */
  private filling: Promise<void> | undefined;
  private closed = false;
  private sweepTimer: NodeJS.Timeout | undefined;

  constructor(deps: SandboxManagerDeps) {
    this.d = deps;
  }

  // ------------------------------------------------------------------------------ lookup

  /** The owner's sandbox, or SANDBOX_NOT_FOUND / PERMISSION_DENIED. Pool sandboxes are nobody's. */
  private lookup(ownerId: string, id: string): Managed {
    const m = this.byId.get(id);
    if (!m || m.rec.ownerId === '' || m.destroying) {
      throw new AppError('SANDBOX_NOT_FOUND', `no sandbox ${id} on this node`);
    }
    if (m.rec.ownerId !== ownerId) {
      throw new AppError('PERMISSION_DENIED', `sandbox ${id} belongs to another owner`);
    }
    m.lastActiveAtMs = Date.now();
    return m;
  }

  /** Whether any sandbox (claimed or warm) runs on this image name or digest. */
  imageInUse(ref: string): boolean {
    for (const m of this.byId.values()) if (m.rec.image === ref || m.rec.imageDigest === ref) return true;
    return false;
  }

  /** Marks a sandbox active (an RPC reached it without going through lookup()). */
  touch(id: string): void {
    const m = this.byId.get(id);
    if (m) m.lastActiveAtMs = Date.now();
  }

  /** Live, claimed sandboxes (for InvokeWorker's target rules and metrics). */
  claimed(): {
    id: string;
    ownerId: string;
    ip: string | undefined;
    running: boolean;
    workspaceDir: string;
  }[] {
    return [...this.byId.values()]
      .filter((m) => m.rec.ownerId !== '')
      .map((m) => ({
        id: m.sb.id,
        ownerId: m.rec.ownerId,
        ip: m.sb.network?.ip,
        running: !m.destroying && !m.paused && m.sb.state === 'running',
        workspaceDir: m.sb.workspaceDir,
      }));
  }

  /** The owner's running sandbox's workspace directory on the host (for file transfer). */
  workspaceOf(ownerId: string, id: string): string {
    const m = this.lookup(ownerId, id);
    if (m.sb.state !== 'running') throw new AppError('SANDBOX_STATE_INVALID', `sandbox ${id} is not running`);
    return m.sb.workspaceDir;
  }

  /** The owner's running sandbox's skills directory on the host (mounted read-only at /skills). */
  skillsOf(ownerId: string, id: string): string {
    const m = this.lookup(ownerId, id);
    if (m.sb.state !== 'running') throw new AppError('SANDBOX_STATE_INVALID', `sandbox ${id} is not running`);
    if (m.sb.skillsDir === '')
      throw new AppError(
        'SANDBOX_STATE_INVALID',
        `sandbox ${id} has no /skills directory; create a new sandbox`,
      );
    return m.sb.skillsDir;
  }

  counts(): Record<SandboxStateName | 'warm', number> {
    const c: Record<SandboxStateName | 'warm', number> = {
      creating: this.inFlight,
      running: 0,
      paused: 0,
      stopping: 0,
      stopped: 0,
      failed: 0,
      warm: 0,
    };
    for (const m of this.byId.values()) {
      if (m.rec.ownerId === '') c.warm++;
      else if (m.destroying) c.stopping++;
      else if (m.paused) c.paused++;
      else c.running++;
    }
    return c;
  }

  private info(m: Managed, state?: SandboxStateName): SandboxInfo {
    const r = m.rec;
    return {
      id: r.id,
      ownerId: r.ownerId,
      image: r.image,
      imageDigest: r.imageDigest,
      labels: r.labels,
      state: state ?? (m.destroying ? 'stopping' : m.paused ? 'paused' : 'running'),
      limits: r.limits,
      network: r.network,
      ipAddress: r.ip,
      createdAtMs: r.createdAtMs,
      lastActiveAtMs: m.lastActiveAtMs,
      expiresAtMs: r.expiresAtMs,
      fromPool: r.fromPool,
      upstreams: r.upstreams,
    };
  }

  // ------------------------------------------------------------------------------ create

  async createSandbox(input: CreateInput): Promise<SandboxInfo> {
    if (this.closed) throw new AppError('SANDBOX_STATE_INVALID', 'hakod is shutting down');
    if (input.network !== 'egress' && (input.egressAllow.length > 0 || input.upstreams.length > 0)) {
      throw new AppError('INVALID_ARGUMENT', 'egress_allow and upstreams need network mode EGRESS');
    }
    const started = performance.now();
    const cfg = this.d.config;
    const limits = effectiveLimits(input.limits, cfg.defaults);
    // checked before a sandbox is claimed or started, so a refusal leaves nothing behind; computed
    // again once it runs (the egress proxy listens from the first egress sandbox on)
    if (input.upstreams.length > 0) this.d.upstreamEnv(input.upstreams);
    const key = profileKey(input.image, limits, input.network);
    const profile = this.profile(key, input.image, limits, input.network);
    profile.claims.push(Date.now());
    profile.lastUsedMs = Date.now();

    let m = profile.ready.shift();
    const source: 'cold' | 'pool' = m ? 'pool' : 'cold';
    if (!m) m = await this.startOne(profile, false);
    const now = Date.now();
    const ttlMs = input.ttlSeconds > 0 ? input.ttlSeconds * 1000 : cfg.sandboxTtlMs;
    const rec: SandboxRecord = {
      ...m.rec,
      ownerId: input.ownerId,
      labels: { ...input.labels },
      egressAllow: [...input.egressAllow],
      upstreams: [...input.upstreams],
      env: { ...input.env },
      createdAtMs: now,
      expiresAtMs: now + ttlMs,
      idleTimeoutMs: input.idleTimeoutSeconds > 0 ? input.idleTimeoutSeconds * 1000 : cfg.idleTtlMs,
      fromPool: source === 'pool',
      poolProfile: undefined,
    };
    try {
      if (input.upstreams.length > 0) Object.assign(rec.env, this.d.upstreamEnv(input.upstreams));
      if (rec.network === 'egress') this.d.setEgressPolicy(m.sb, rec.egressAllow, rec.upstreams);
      m.rec = rec;
      m.lastActiveAtMs = now;
      await this.d.records.put(rec);
    } catch (err) {
      await this.teardown(m);
      throw toAppError(err, 'SANDBOX_CREATE_FAILED', 'claiming the sandbox failed');
    }
    this.d.observer?.observeCreate(source, (performance.now() - started) / 1000);
    this.scheduleFill();
    return this.info(m);
  }

  private profile(
    key: string,
    image: string,
    limits: EffectiveLimits,
    network: NetworkModeName,
  ): PoolProfile {
    let p = this.pool.get(key);
    if (!p) {
      p = { key, image, limits, network, ready: [], claims: [], lastUsedMs: Date.now(), starting: 0 };
      this.pool.set(key, p);
    }
    return p;
  }

  /** Starts one sandbox of a profile (unclaimed). Counts against maxSandboxes while it starts. */
  private async startOne(p: PoolProfile, forPool: boolean): Promise<Managed> {
    if (this.byId.size + this.inFlight >= this.d.config.maxSandboxes) {
      // room first: an idle warm sandbox of another profile gives way to a real create
      const victim = forPool ? undefined : this.anyWarm();
      if (!victim) {
        throw new AppError(
          'POOL_EXHAUSTED',
          `this node holds its maximum of ${this.d.config.maxSandboxes} sandboxes (AGENT_MAX_SANDBOXES)`,
        );
      }
      await this.teardown(victim);
    }
    this.inFlight++;
    try {
      const options: SandboxOptions = {
        image: p.image,
        limits: p.limits satisfies SandboxLimits,
        network: p.network,
        allow: [],
        env: {},
        labels: {},
      };
      const sb = await this.d.host.start(options);
      const net = sb.network;
      const rec: SandboxRecord = {
        version: 1,
        id: sb.id,
        ownerId: '',
        image: p.image,
        imageDigest: sb.imageDigest,
        labels: {},
        limits: p.limits,
        network: p.network,
        egressAllow: [],
        upstreams: [],
        env: {},
        ip: net?.ip,
        prefixLength: net?.prefixLength,
        gateway: net?.gateway,
        hostVeth: net?.hostVeth,
        createdAtMs: Date.now(),
        expiresAtMs: 0,
        idleTimeoutMs: 0,
        fromPool: forPool,
        poolProfile: forPool ? p.key : undefined,
      };
      const m = new Managed(sb, rec);
      this.byId.set(sb.id, m);
      return m;
    } finally {
      this.inFlight--;
    }
  }

  private anyWarm(): Managed | undefined {
    for (const p of this.pool.values()) {
      const m = p.ready.pop();
      if (m) return m;
    }
    return undefined;
  }

  /** How many warm sandboxes a profile should have now. */
  private target(p: PoolProfile, now: number): number {
    p.claims = p.claims.filter((t) => now - t < 60_000);
    if (now - p.lastUsedMs > this.d.config.idleTtlMs) return 0;
    return Math.min(this.d.config.poolMax, Math.max(this.d.config.poolMin, p.claims.length));
  }

  /** Keeps every profile's pool at its target, one start at a time, in the background. */
  scheduleFill(): void {
    if (this.filling || this.closed || this.d.config.poolMax === 0) return;
    this.filling = this.fill()
      .catch((err: unknown) => this.d.logger.warn({ err }, 'warm pool fill failed'))
      .finally(() => {
        this.filling = undefined;
      });
  }

  private async fill(): Promise<void> {
    for (;;) {
      if (this.closed) return;
      const now = Date.now();
      let want: PoolProfile | undefined;
      for (const p of this.pool.values()) {
        const t = this.target(p, now);
        while (p.ready.length > t) {
          const extra = p.ready.pop();
          if (extra) await this.teardown(extra);
        }
        if (p.ready.length + p.starting < t && !want) want = p;
      }
      if (!want || this.byId.size + this.inFlight >= this.d.config.maxSandboxes) return;
      want.starting++;
      try {
        const m = await this.startOne(want, true);
        if (this.closed) {
          await this.teardown(m);
          return;
        }
        // The record first: a create may claim the sandbox as soon as it is ready, and its claimed
        // record must be the last one written.
        await this.d.records.put(m.rec);
        want.ready.push(m);
      } catch (err) {
        this.d.logger.warn({ err, profile: want.key }, 'starting a warm sandbox failed');
        return;
      } finally {
        want.starting--;
      }
    }
  }

  /** Registers a profile to keep warm from the start (the node's default profile). */
  warm(image: string, limits: LimitsInput, network: NetworkModeName): void {
    const l = effectiveLimits(limits, this.d.config.defaults);
    const p = this.profile(profileKey(image, l, network), image, l, network);
    p.lastUsedMs = Date.now();
    this.scheduleFill();
  }

  /** Warm sandboxes per profile, labelled `image/cpus/memory/pids/disk/network` (for metrics). */
  warmByProfile(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const p of this.pool.values()) {
      const l = p.limits;
      const label = `${p.image}/${l.cpus}cpu/${Math.round(l.memoryBytes / 2 ** 20)}MiB/${l.pids}pids/${Math.round(l.diskBytes / 2 ** 20)}MiB/${p.network}`;
      out[label] = (out[label] ?? 0) + p.ready.length;
    }
    return out;
  }

  warmCount(): number {
    let n = 0;
    for (const p of this.pool.values()) n += p.ready.length;
    return n;
  }

  // ------------------------------------------------------------------------------ queries

  async getSandbox(ownerId: string, id: string): Promise<SandboxInfo> {
    const m = this.lookup(ownerId, id);
    const st = await this.d.host.containerState(m.sb).catch(() => undefined);
    if (!st || st.status === 'stopped') return this.info(m, 'stopped');
    return this.info(m);
  }

  listSandboxes(ownerId: string, selector: Readonly<Record<string, string>>): Promise<SandboxInfo[]> {
    const out: SandboxInfo[] = [];
    for (const m of this.byId.values()) {
      if (m.rec.ownerId === ownerId && !m.destroying && labelsMatch(m.rec.labels, selector))
        out.push(this.info(m));
    }
    out.sort((a, b) => a.createdAtMs - b.createdAtMs || a.id.localeCompare(b.id));
    return Promise.resolve(out);
  }

  async getSandboxMetrics(ownerId: string, id: string): Promise<SandboxMetrics> {
    const m = this.lookup(ownerId, id);
    const { stats, disk } = await this.d.host.usage(m.sb);
    return {
      memoryCurrentBytes: stats.memoryCurrentBytes,
      memoryMaxBytes: stats.memoryLimitBytes,
      memoryPeakBytes: stats.memoryPeakBytes,
      oomKills: stats.oomKills,
      cpuUsageNs: stats.cpuUsageNs,
      pidsCurrent: stats.pidsCurrent,
      pidsLimit: stats.pidsLimit,
      diskUsedBytes: disk.usedBytes,
      diskLimitBytes: disk.limitBytes,
      exitCode: m.lastExitCode,
    };
  }

  // ------------------------------------------------------------------------------ pause

  async pauseSandbox(ownerId: string, id: string): Promise<SandboxInfo> {
    const m = this.lookup(ownerId, id);
    await this.d.host.setPaused(m.sb, true);
    m.paused = true;
    return this.info(m);
  }

  async resumeSandbox(ownerId: string, id: string): Promise<SandboxInfo> {
    const m = this.lookup(ownerId, id);
    await this.d.host.setPaused(m.sb, false);
    m.paused = false;
    return this.info(m);
  }

  // ------------------------------------------------------------------------------ exec

  async exec(input: ExecInput): Promise<ExecHandle> {
    const m = this.lookup(input.ownerId, input.sandboxId);
    if (m.paused)
      throw new AppError('SANDBOX_STATE_INVALID', `sandbox ${input.sandboxId} is paused; resume it first`);
    const { uid, gid } = parseUser(input.user, this.d.config.sandboxUid);
    const cwd = input.cwd === '' ? '/workspace' : input.cwd;
    if (!cwd.startsWith('/'))
      throw new AppError('INVALID_ARGUMENT', `cwd must be an absolute path, not "${cwd}"`);
    const started = performance.now();
    const { child, pid: pidP } = this.d.host.exec(m.sb, {
      args: input.argv,
      env: { ...m.rec.env, ...input.env },
      cwd,
      uid,
      gid,
      stdin: input.stdin,
    });
    let reason: ExitReasonName | undefined;
    const kill = (sig: NodeJS.Signals | number): void => {
      void pidP.then((pid) => {
        if (pid === undefined) return;
        try {
          process.kill(pid, sig);
        } catch {
          // already gone
        }
      });
    };
    const timer =
      input.timeoutMs > 0
        ? setTimeout(() => {
            reason ??= 'timeout';
            kill('SIGKILL');
          }, input.timeoutMs)
        : undefined;
    const onGone = (): void => {
      reason ??= 'sandbox_gone';
    };
    m.execs.add(onGone);
    const exit = new Promise<ExecExitInfo>((resolve, reject) => {
      child.once('error', (err) => {
        if (timer) clearTimeout(timer);
        m.execs.delete(onGone);
        reject(
          new AppError('RUNTIME_UNAVAILABLE', `cannot run the runtime's exec: ${err.message}`, {
            cause: err,
          }),
        );
      });
      child.once('close', (code, sig) => {
        if (timer) clearTimeout(timer);
        m.execs.delete(onGone);
        void this.exitInfo(m, code, sig, reason).then((info) => {
          m.lastExitCode = info.code;
          this.d.observer?.observeExec((performance.now() - started) / 1000);
          resolve(info);
        }, reject);
      });
    });
    // Node drops a child's unread output when it exits with no reader attached (flushStdio), and
    // the pid is awaited below: pipe into our own streams now (pipe() keeps the backpressure)
    const stdout = child.stdout!.pipe(new PassThrough());
    const stderr = child.stderr!.pipe(new PassThrough());
    const knownPid = await pidP;
    return {
      pid: knownPid ?? 0,
      stdout,
      stderr,
      stdin: input.stdin ? (child.stdin ?? undefined) : undefined,
      signal: (sig: string) => kill(parseSignal(sig)),
      exit,
    };
  }

  private async exitInfo(
    m: Managed,
    code: number | null,
    sig: NodeJS.Signals | null,
    reason: ExitReasonName | undefined,
  ): Promise<ExecExitInfo> {
    const c = code ?? (sig ? 128 + (SIGNALS[sig] ?? 0) : 128);
    if (reason === 'timeout') return { code: c, signal: 'SIGKILL', limitKilled: true, reason };
    if (reason === 'sandbox_gone')
      return { code: c, signal: c > 128 ? 'SIGKILL' : '', limitKilled: false, reason };
    if (c === 137) {
      const oom = await this.d.host.oomKilledSinceLastCheck(m.sb).catch(() => false);
      if (oom) {
        this.d.observer?.oomKill();
        return { code: c, signal: 'SIGKILL', limitKilled: true, reason: 'oom' };
      }
    }
    if (c > 128 && c < 128 + 65) {
      const name = Object.keys(SIGNALS).find((k) => SIGNALS[k] === c - 128) ?? '';
      return { code: c, signal: name, limitKilled: false, reason: 'signaled' };
    }
    return { code: c, signal: '', limitKilled: false, reason: 'exited' };
  }

  // ------------------------------------------------------------------------------ destroy

  /**
   * Destroys the owner's sandbox. Idempotent: destroying a sandbox that this owner already destroyed
   * (on this hakod, among the last DESTROYED_MEMORY) succeeds again; an id never seen is
   * SANDBOX_NOT_FOUND.
   */
  async destroySandbox(ownerId: string, id: string): Promise<void> {
    const m = this.byId.get(id);
    if (!m && this.destroyed.get(id) === ownerId) return;
    if (m?.destroying && m.rec.ownerId === ownerId) return m.destroying;
    await this.teardown(this.lookup(ownerId, id));
  }

  /** Remembers a destroyed claimed sandbox's owner (bounded, oldest forgotten first). */
  private rememberDestroyed(m: Managed): void {
    if (m.rec.ownerId === '') return;
    this.destroyed.set(m.sb.id, m.rec.ownerId);
    if (this.destroyed.size > DESTROYED_MEMORY) {
      const oldest = this.destroyed.keys().next().value;
      if (oldest !== undefined) this.destroyed.delete(oldest);
    }
  }

  /** Destroys a sandbox once (concurrent callers share the work). */
  private teardown(m: Managed): Promise<void> {
    m.destroying ??= (async () => {
      const started = performance.now();
      for (const gone of m.execs) gone();
      try {
        if (m.paused) await this.d.host.setPaused(m.sb, false).catch(() => undefined);
        await this.d.host.destroy(m.sb);
        await this.d.records.remove(m.sb.id);
      } finally {
        this.byId.delete(m.sb.id);
        this.rememberDestroyed(m);
        this.d.observer?.observeDestroy((performance.now() - started) / 1000);
      }
    })();
    return m.destroying;
  }

  // ------------------------------------------------------------------------------ gc, sweep

  /** GarbageCollect: what this env's hakod created and no longer holds (seed P1-3). */
  async garbageCollect(prefix: string, dryRun: boolean): Promise<GcResult> {
    const p = prefix === '' ? 'hako' : prefix;
    if (p !== 'hako') {
      // hako names everything `hako-{env}-…`: nothing under another prefix is hakod's
      return { removed: [], failed: [], kept: [...this.byId.values()].map((m) => m.sb.name) };
    }
    // the host spares every sandbox it is creating or holds: all of this manager's
    const r = await this.d.host.gc({ dryRun });
    if (dryRun) return r;
    // a removed sandbox's record goes too (it belonged to a hakod that died or lost track of it)
    for (const x of r.removed) {
      const id = idFromName(this.d.config.env, x.name);
      if (id !== undefined && !this.byId.has(id)) await this.d.records.remove(id);
    }
    this.d.observer?.gcResult(r.removed.length, r.failed.length);
    return r;
  }

  /** Destroys claimed sandboxes past their TTL or idle timeout, then collects orphans. */
  async sweep(): Promise<{ expired: string[] }> {
    const now = Date.now();
    const expired: Managed[] = [];
    for (const m of this.byId.values()) {
      if (m.rec.ownerId === '' || m.destroying) continue;
      const idle = m.execs.size === 0 && now - m.lastActiveAtMs > m.rec.idleTimeoutMs;
      if (now > m.rec.expiresAtMs || idle) expired.push(m);
    }
    const results = await Promise.allSettled(expired.map((m) => this.teardown(m)));
    for (const [i, r] of results.entries()) {
      if (r.status === 'rejected')
        this.d.logger.error({ err: r.reason as unknown, id: expired[i]?.sb.id }, 'sweep: destroy failed');
    }
    await this.garbageCollect('hako', false).catch((err: unknown) =>
      this.d.logger.error({ err }, 'sweep: gc failed'),
    );
    // what the reaped sandboxes held is released in the background (workspace volumes unmounted):
    // a sweep is done when that is
    if (expired.length > 0) await this.d.host.settled();
    this.scheduleFill();
    return { expired: expired.map((m) => m.sb.id) };
  }

  /**
   * Resolves once the host's background work (spare workspaces built, destroyed sandboxes' volumes
   * and networks released) has finished. Nothing needs it for correctness (benchmarks do).
   */
  settled(): Promise<void> {
    return this.d.host.settled();
  }

  startSweeper(intervalMs: number): void {
    this.sweepTimer = setInterval(() => {
      void this.sweep();
    }, intervalMs);
    this.sweepTimer.unref();
  }

  // ------------------------------------------------------------------------------ reconcile

  /**
   * At start-up: adopts every claimed sandbox whose record survived and whose container still runs
   * (usable as before: same id, address, workspace and policy), and removes everything else of this
   * env (warm sandboxes, half-made creates, sandboxes whose init died, orphans of any kind).
   */
  async reconcile(): Promise<{ adopted: string[]; removed: string[]; failed: string[] }> {
    const { records, broken } = await this.d.records.list();
    const adopted: string[] = [];
    for (const r of records) {
      let keep = false;
      if (r.ownerId !== '') {
        const name = resourceName(this.d.config.env, r.id);
        const st = await this.d.host.containerStateByName(name).catch(() => undefined);
        keep = st !== undefined && (st.status === 'running' || st.status === 'paused');
      }
      if (!keep) {
        await this.d.records.remove(r.id);
        continue;
      }
      try {
        const network: NetworkAttachment | undefined =
          r.ip && r.prefixLength !== undefined && r.gateway
            ? {
                netnsName: resourceName(this.d.config.env, r.id),
                netnsPath: `/run/netns/${resourceName(this.d.config.env, r.id)}`,
                ip: r.ip,
                prefixLength: r.prefixLength,
                gateway: r.gateway,
                hostVeth: r.hostVeth,
              }
            : undefined;
        const sb = await this.d.host.adopt(
          r.id,
          { image: r.image, limits: r.limits, network: r.network, allow: r.egressAllow, env: {}, labels: {} },
          network,
        );
        if (r.network === 'egress') this.d.setEgressPolicy(sb, r.egressAllow, r.upstreams);
        await this.d.host.setPaused(sb, false).catch(() => undefined);
        this.byId.set(r.id, new Managed(sb, r));
        adopted.push(r.id);
      } catch (err) {
        this.d.logger.warn({ err, id: r.id }, 'reconcile: could not adopt; removing it');
        await this.d.records.remove(r.id);
      }
    }
    for (const id of broken) await this.d.records.remove(id);
    const gc = await this.garbageCollect('hako', false);
    return {
      adopted,
      removed: gc.removed.map((x) => x.name),
      failed: gc.failed.map((x) => x.name),
    };
  }

  // ------------------------------------------------------------------------------ close

  /**
   * Stops the pool and the sweeper. With `destroyAll`, destroys every sandbox (tests, `hako up`
   * shutting down); otherwise claimed sandboxes keep running for the next hakod to adopt, and only
   * warm ones go.
   */
  async close(opts: { destroyAll: boolean }): Promise<void> {
    this.closed = true;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    // a warm sandbox being started when close began is torn down by fill() itself: wait for it
    await this.filling;
    const doomed = [...this.byId.values()].filter((m) => opts.destroyAll || m.rec.ownerId === '');
    for (const p of this.pool.values()) p.ready.length = 0;
    const results = await Promise.allSettled(doomed.map((m) => this.teardown(m)));
    const failed = results.filter((r) => r.status === 'rejected');
    if (failed.length > 0)
      this.d.logger.error({ failed: failed.length }, 'close: some sandboxes could not be destroyed');
    // and what they held that is released in the background
    await this.d.host.settled();
  }
}
