/**
 * The sandbox network of one env: a named netns per sandbox, attached by the real CNI `bridge` +
 * `host-local` plugins to the env's bridge, behind the env's nftables lockdown.
 */
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { writeAtomic } from './atomic-file.js';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AggregateAppError, AppError, toAppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { CleanupStack } from './cleanup-stack.js';
import { buildConflist, conflistPath, leaseDir, resolveIpamRange } from './cni-config.js';
import type { CniConflist, IpamRange } from './cni-config.js';
import { CniConflistInvoker, runTool, stderrTail } from './cni-plugin.js';
import type { CniResult, CniRuntimeArgs } from './cni-plugin.js';
import { parseIpv4, tryParseIpv4 } from './ip-math.js';
import { createNetns, deleteNetns, listNetns, netnsExists, netnsPath, setLoopbackUp } from './netns.js';
import { NftablesPolicy, setSandboxPortGroup } from './nftables-policy.js';
import { envPrefix } from './names.js';
import type { NetworkAttachment, NetworkManager } from './types.js';

export interface CniNetworkManagerOptions {
  /** HAKO_ENV. Sandbox names must be `hako-{env}-…`. */
  readonly env: string;
  /** HAKO_BRIDGE: the Linux bridge the CNI bridge plugin creates. */
  readonly bridge: string;
  /** CNI_SUBNET (IPv4 CIDR). */
  readonly subnet: string;
  /** CNI_RANGE_START; derived (network + 2) when undefined. */
  readonly rangeStart?: string | undefined;
  /** CNI_RANGE_END; derived (broadcast - 1) when undefined. */
  readonly rangeEnd?: string | undefined;
  /** CNI_GATEWAY; derived (network + 1) when undefined. */
  readonly gateway?: string | undefined;
  /** Directories searched for plugin binaries, in order (also passed as CNI_PATH). */
  readonly pluginDirs: readonly string[];
  /** This env's CNI state: the conflist, host-local leases (`ipam/`) and cached ADD results (`results/`). */
  readonly stateDir: string;
  /** TCP ports [first, first + count) of the gateway that sandboxes may reach (the egress proxy). */
  readonly proxyPorts: { readonly first: number; readonly count: number };
  readonly logger: Logger;
}

/** The interface name inside every sandbox. */
export const SANDBOX_IFNAME = 'eth0';

const DEL_ATTEMPTS = 3;
const DEL_BACKOFF_MS = 150;
const CONTAINER_ID_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

interface Resolved {
  readonly range: IpamRange;
  readonly conflist: CniConflist;
  readonly invoker: CniConflistInvoker;
  readonly policy: NftablesPolicy;
}

export class CniNetworkManager implements NetworkManager {
  private readonly opts: CniNetworkManagerOptions;
  private readonly logger: Logger;
  private resolvedConfig: Resolved | undefined;

  constructor(opts: CniNetworkManagerOptions) {
    this.opts = opts;
    this.logger = opts.logger.child({ component: 'network', env: opts.env });
  }

  /** Validated configuration, built on first use (so del() and list() work without init()). */
  private resolved(): Resolved {
    if (!this.resolvedConfig) {
      const { env, bridge, subnet, rangeStart, rangeEnd, gateway, stateDir, pluginDirs, proxyPorts } =
        this.opts;
      const range = resolveIpamRange({ subnet, rangeStart, rangeEnd, gateway });
      const conflist = buildConflist({ env, bridge, subnet, rangeStart, rangeEnd, gateway, stateDir });
      this.resolvedConfig = {
        range,
        conflist,
        invoker: new CniConflistInvoker(conflist, pluginDirs),
        policy: new NftablesPolicy({ env, bridge, gateway: range.gateway, proxyPorts }, this.logger),
      };
    }
    return this.resolvedConfig;
  }

  /** The gateway address on the bridge. Throws CNI_SUBNET_INVALID when the configuration is inconsistent. */
  get gateway(): string {
    return this.resolved().range.gateway;
  }

  /** The validated subnet, range and gateway. */
  get ipam(): IpamRange {
    return this.resolved().range;
  }

  private get resultsDir(): string {
    return join(this.opts.stateDir, 'results');
  }

  private resultPath(name: string): string {
    return join(this.resultsDir, `${name}.json`);
  }

  /**
   * Validates the configuration (CNI_SUBNET_INVALID), checks the plugins are installed
   * (HOST_PREREQUISITE_MISSING), writes the conflist under stateDir and applies the nftables
   * policy. Idempotent; call once per process before add().
   */
  async init(): Promise<void> {
    const { conflist, invoker, policy } = this.resolved();
    await invoker.resolvePlugins();
    await mkdir(this.resultsDir, { recursive: true, mode: 0o700 });
    await writeAtomic(
      conflistPath(this.opts.stateDir, this.opts.env),
      `${JSON.stringify(conflist, null, 2)}\n`,
    );
    await policy.apply();
    this.logger.debug({ ipam: this.ipam.subnet, bridge: this.opts.bridge }, 'network initialised');
  }

  private assertName(name: string): void {
    const prefix = envPrefix(this.opts.env);
    if (
      !name.startsWith(prefix) ||
      name.length === prefix.length ||
      !CONTAINER_ID_RE.test(name) ||
      name.length > 64
    ) {
      throw new AppError(
        'INVALID_ARGUMENT',
        `"${name}" is not a sandbox name of env ${this.opts.env} (${prefix}<id>)`,
      );
    }
  }

  private args(name: string): CniRuntimeArgs {
    return { containerId: name, netns: netnsPath(name), ifName: SANDBOX_IFNAME };
  }

  /**
   * Creates netns `name` (`hako-{env}-{id}`), brings its `lo` up, runs CNI ADD into it and marks
   * the host veth as a sandbox port. Call after init(). On any failure it runs CNI DEL and deletes
   * the netns before throwing, so nothing is left behind.
   */
  async add(name: string): Promise<NetworkAttachment> {
    this.assertName(name);
    const { invoker } = this.resolved();
    const started = performance.now();
    const undo = new CleanupStack();
    const path = await createNetns(name);
    undo.push('netns', async () => {
      await deleteNetns(name);
    });
    let result: CniResult | undefined;
    try {
      // DEL is pushed before ADD: a failed ADD may have left a veth or a lease behind
      undo.push('cni-del', () => this.cniDel(name, result));
      const args = this.args(name);
      const [added, lo] = await Promise.allSettled([invoker.add(args), setLoopbackUp(name)]);
      if (added.status === 'fulfilled') result = added.value;
      if (added.status === 'rejected') throw added.reason;
      if (lo.status === 'rejected') throw lo.reason;
      if (!result) throw new AppError('NETWORK_SETUP_FAILED', `CNI ADD for ${name} returned no result`);
      const attachment = this.attachment(name, path, result);
      await writeAtomic(this.resultPath(name), JSON.stringify(result));
      undo.push('cni-result', () => rm(this.resultPath(name), { force: true }));
      if (attachment.hostVeth === undefined) {
        throw new AppError('NETWORK_SETUP_FAILED', `CNI ADD for ${name} reported no host-side veth`);
      }
      await setSandboxPortGroup(this.opts.env, attachment.hostVeth);
      this.logger.debug(
        {
          name,
          ip: attachment.ip,
          hostVeth: attachment.hostVeth,
          ms: Math.round(performance.now() - started),
        },
        'network attached',
      );
      return attachment;
    } catch (err) {
      const failure = toAppError(err, 'NETWORK_SETUP_FAILED', `attaching ${name} to the network`);
      const cleanupErrors = await undo.run();
      if (cleanupErrors.length > 0) {
        throw new AggregateAppError(
          'NETWORK_SETUP_FAILED',
          `${failure.message}; rolling back also failed`,
          cleanupErrors,
        );
      }
      throw failure;
    }
  }

  /** Reads the lease, gateway and host veth out of an ADD result; checks the lease is in our range. */
  private attachment(name: string, path: string, result: CniResult): NetworkAttachment {
    const { range } = this.resolved();
    const ifaces = result.interfaces ?? [];
    const ipcfg = (result.ips ?? []).find((i) => typeof i.address === 'string' && i.address.includes('.'));
    if (!ipcfg) throw new AppError('NETWORK_SETUP_FAILED', `CNI ADD for ${name} returned no IPv4 address`);
    const [ip = '', prefixText = ''] = ipcfg.address.split('/');
    const addr = parseIpv4(ip);
    if (
      addr < parseIpv4(range.rangeStart) ||
      addr > parseIpv4(range.rangeEnd) ||
      Number(prefixText) !== range.prefixLength
    ) {
      throw new AppError(
        'NETWORK_SETUP_FAILED',
        `CNI ADD for ${name} leased ${ipcfg.address}, outside ${range.rangeStart}-${range.rangeEnd}/${range.prefixLength}: is another network using the same bridge?`,
      );
    }
    const hostVeth = ifaces.find((i) => !i.sandbox && i.name !== this.opts.bridge)?.name;
    return {
      netnsName: name,
      netnsPath: path,
      ip,
      prefixLength: range.prefixLength,
      gateway: ipcfg.gateway ?? range.gateway,
      hostVeth,
    };
  }

  /** CNI CHECK against the cached ADD result. Call after add(); throws NETWORK_SETUP_FAILED on any mismatch. */
  async check(name: string): Promise<void> {
    this.assertName(name);
    const { invoker } = this.resolved();
    if (!(await netnsExists(name))) {
      throw new AppError('NETWORK_SETUP_FAILED', `network namespace ${name} does not exist`);
    }
    const prev = await this.readResult(name);
    if (!prev)
      throw new AppError('NETWORK_SETUP_FAILED', `no cached CNI ADD result for ${name}: was add() called?`);
    await invoker.check(this.args(name), prev);
  }

  /**
   * CNI DEL (retried: DEL is idempotent) and then deletes the netns. Safe when add() failed or
   * never ran: a DEL for something unknown succeeds. Every failure is reported (never swallowed);
   * the netns is deleted even when DEL failed, and the cached result is kept then so a later
   * del() (e.g. from GC, which finds it through list()) can retry.
   */
  async del(name: string): Promise<void> {
    this.assertName(name);
    const started = performance.now();
    const errors: AppError[] = [];
    let prev: CniResult | undefined;
    try {
      prev = await this.readResult(name);
    } catch (err) {
      errors.push(toAppError(err, 'NETWORK_SETUP_FAILED'));
    }
    let delOk = false;
    try {
      await this.cniDel(name, prev);
      delOk = true;
    } catch (err) {
      errors.push(toAppError(err, 'NETWORK_SETUP_FAILED'));
    }
    try {
      await deleteNetns(name);
    } catch (err) {
      errors.push(toAppError(err, 'NETWORK_SETUP_FAILED'));
    }
    try {
      // a temporary result file is never a result: it goes whether or not DEL succeeded
      for (const f of await readdirOrEmpty(this.resultsDir)) {
        if (RESULT_FILE_RE.exec(f)?.[1] === name && f.endsWith('.tmp'))
          await rm(join(this.resultsDir, f), { force: true });
      }
      if (delOk) await rm(this.resultPath(name), { force: true });
    } catch (err) {
      errors.push(toAppError(err, 'NETWORK_SETUP_FAILED', `removing the cached result of ${name}`));
    }
    if (errors.length > 0) throw new AggregateAppError('NETWORK_SETUP_FAILED', `detaching ${name}`, errors);
    this.logger.debug({ name, ms: Math.round(performance.now() - started) }, 'network detached');
  }

  private async cniDel(name: string, prev: CniResult | undefined): Promise<void> {
    const { invoker } = this.resolved();
    for (let attempt = 1; ; attempt++) {
      try {
        await invoker.del(this.args(name), prev);
        return;
      } catch (err) {
        if (attempt >= DEL_ATTEMPTS) throw err;
        this.logger.warn({ name, attempt, err: (err as Error).message }, 'CNI DEL failed; retrying');
        await sleep(DEL_BACKOFF_MS * attempt);
      }
    }
  }

  private async readResult(name: string): Promise<CniResult | undefined> {
    let text: string;
    try {
      text = await readFile(this.resultPath(name), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw toAppError(err, 'NETWORK_SETUP_FAILED', `reading the cached CNI result of ${name}`);
    }
    try {
      return JSON.parse(text) as CniResult;
    } catch (err) {
      throw new AppError(
        'NETWORK_SETUP_FAILED',
        `the cached CNI result of ${name} (${this.resultPath(name)}) is corrupt; DEL ran without it`,
        { cause: err },
      );
    }
  }

  /**
   * Names of this env's sandboxes that have network state on the host: their netns under
   * /run/netns, plus any whose cached ADD result or host-local lease outlived the netns (so GC
   * can finish a DEL that failed or was interrupted). Empty when there is none.
   */
  async list(): Promise<string[]> {
    const prefix = envPrefix(this.opts.env);
    const names = new Set([...(await listNetns(prefix)), ...(await this.listCached())]);
    return [...names].sort();
  }

  /**
   * Names that have a cached ADD result or a host-local lease in this env's CNI state directory
   * (hako's own: only hako's ADDs put anything there), whether or not their netns still exists.
   */
  async listCached(): Promise<string[]> {
    const prefix = envPrefix(this.opts.env);
    const names = new Set<string>();
    for (const f of await readdirOrEmpty(this.resultsDir)) {
      // `{name}.json`, or the temporary file of a write a crash cut short (writeAtomic)
      const m = RESULT_FILE_RE.exec(f);
      if (m?.[1]?.startsWith(prefix)) names.add(m[1]);
    }
    const leases = leaseDir(this.opts.stateDir, this.opts.env);
    for (const f of await readdirOrEmpty(leases)) {
      if (!/^\d+\.\d+\.\d+\.\d+$/.test(f)) continue;
      const owner = (await readFile(join(leases, f), 'utf8').catch(() => '')).split(/\r?\n/)[0]?.trim() ?? '';
      if (owner.startsWith(prefix)) names.add(owner);
    }
    return [...names].sort();
  }

  /**
   * Removes this env's host-wide pieces: both nftables tables and the bridge, and the conflist.
   * Call only when no sandbox of the env is attached (`hako gc --all`, tests). Idempotent.
   */
  async teardown(): Promise<void> {
    const errors: AppError[] = [];
    const step = async (what: string, f: () => Promise<unknown>): Promise<void> => {
      try {
        await f();
      } catch (err) {
        errors.push(toAppError(err, 'NETWORK_SETUP_FAILED', what));
      }
    };
    await step('removing the nftables policy', () => this.resolved().policy.remove());
    await step(`deleting bridge ${this.opts.bridge}`, () => deleteLink(this.opts.bridge));
    await step('removing the conflist', () =>
      rm(conflistPath(this.opts.stateDir, this.opts.env), { force: true }),
    );
    // host-local's directory for the env: only its bookkeeping (last_reserved_ip.*, lock) once no
    // sandbox holds a lease; one with a lease file (named by its IPv4 address) is kept.
    await step('removing the IPAM directory', async () => {
      const dir = leaseDir(this.opts.stateDir, this.opts.env);
      const files = await readdir(dir).catch(() => [] as string[]);
      if (files.some((f) => tryParseIpv4(f) !== undefined)) return;
      await rm(dir, { recursive: true, force: true });
    });
    if (errors.length > 0)
      throw new AggregateAppError('NETWORK_SETUP_FAILED', `tearing down env ${this.opts.env}`, errors);
  }
}

async function deleteLink(name: string): Promise<void> {
  const r = await runTool('ip', ['link', 'delete', 'dev', name]);
  if (r.code !== 0 && !/cannot find device|does not exist/i.test(r.stderr)) {
    throw new AppError('NETWORK_SETUP_FAILED', `ip link delete ${name} failed: ${stderrTail(r)}`);
  }
}

async function readdirOrEmpty(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw toAppError(err, 'NETWORK_SETUP_FAILED', `listing ${dir}`);
  }
}

/** A cached result file: `{name}.json`, or writeAtomic's `{name}.json.{pid}.tmp`. */
const RESULT_FILE_RE = /^(.+)\.json(?:\.\d+\.tmp)?$/;
