/**
 * The host-wide network lockdown of one env, in two nftables tables of its own
 * (`inet hako_{env}` and `bridge hako_{env}`) so envs never touch each other's rules:
 *
 * - bridge forward: every frame that the bridge would forward from or to a sandbox port is
 *   dropped (IPv4, IPv6, ARP alike), so sandboxes cannot reach each other. Sandbox ports are
 *   recognised by their interface group (set by {@link setSandboxPortGroup} when a sandbox is
 *   attached): this kernel family has no portable "which bridge" match (`meta ibrname` needs
 *   CONFIG_NFT_BRIDGE_META, which not every kernel has), and the veth names the bridge plugin picks
 *   are random. The group lives on the interface, so re-applying the policy never loses it.
 * - inet input: from the bridge interface only established/related traffic and TCP to the
 *   gateway's proxy ports are accepted; everything else (host services, DNS, other gateway ports,
 *   IPv6 link-local) is dropped. Traffic from anywhere else is left alone.
 * - inet forward: nothing is routed from or to the bridge, whatever `net.ipv4.ip_forward` says
 *   (the bridge plugin turns it on), so cloud metadata and other networks stay unreachable.
 *
 * Applied atomically with `nft -f -`; applying again replaces the tables in the same transaction.
 */
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { tryParseIpv4 } from './ip-math.js';
import { runTool, stderrTail } from './cni-plugin.js';

export interface HostPolicyOptions {
  readonly env: string;
  readonly bridge: string;
  /** The gateway address on the bridge (IPv4), where the egress proxy listens. */
  readonly gateway: string;
  /** TCP ports [first, first + count) on the gateway that sandboxes may connect to. */
  readonly proxyPorts: { readonly first: number; readonly count: number };
}

const ENV_RE = /^[a-z0-9]{1,12}$/;
const IFNAME_RE = /^[a-zA-Z0-9_-]{1,15}$/;

/** `hako_{env}`: the name of both tables. */
export function policyTableName(env: string): string {
  if (!ENV_RE.test(env))
    throw new AppError('CONFIG_INVALID', `HAKO_ENV=${env} is invalid: use 1-12 of [a-z0-9]`);
  return `hako_${env}`;
}

/**
 * The interface group that marks this env's sandbox-side bridge ports: 0x68 ("h") in the top byte,
 * FNV-1a of the env below, so it is stable across processes and distinct per env.
 */
export function sandboxPortGroup(env: string): number {
  policyTableName(env);
  let h = 0x811c9dc5;
  for (const ch of `hako-${env}`) {
    h ^= ch.charCodeAt(0);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return (0x68000000 | (h & 0x00ffffff)) >>> 0;
}

function validate(opts: HostPolicyOptions): void {
  policyTableName(opts.env);
  if (!IFNAME_RE.test(opts.bridge)) {
    throw new AppError('CONFIG_INVALID', `HAKO_BRIDGE=${opts.bridge} is not a usable interface name`);
  }
  if (tryParseIpv4(opts.gateway) === undefined) {
    throw new AppError('CONFIG_INVALID', `gateway ${opts.gateway} is not an IPv4 address`);
  }
  const { first, count } = opts.proxyPorts;
  if (
    !Number.isInteger(first) ||
    !Number.isInteger(count) ||
    first < 1 ||
    count < 1 ||
    first + count - 1 > 65535
  ) {
    throw new AppError(
      'CONFIG_INVALID',
      `proxy ports ${first}+${count} are not a valid TCP port range (1-65535)`,
    );
  }
}

/** The nft script that (re)defines both tables. Pure, for tests and `--dry-run` style output. */
export function renderPolicy(opts: HostPolicyOptions): string {
  validate(opts);
  const table = policyTableName(opts.env);
  const group = sandboxPortGroup(opts.env);
  const br = JSON.stringify(opts.bridge);
  const { first, count } = opts.proxyPorts;
  const ports = count === 1 ? String(first) : `${first}-${first + count - 1}`;
  return [
    // add-then-delete makes the delete succeed whether or not the table exists (nft 1.0.6 has no `destroy`)
    `add table bridge ${table}`,
    `delete table bridge ${table}`,
    `add table inet ${table}`,
    `delete table inet ${table}`,
    `table bridge ${table} {`,
    `  chain forward {`,
    `    type filter hook forward priority filter - 10; policy accept;`,
    `    meta iifgroup ${group} drop`,
    `    meta oifgroup ${group} drop`,
    `  }`,
    `}`,
    `table inet ${table} {`,
    `  chain input {`,
    `    type filter hook input priority filter - 10; policy accept;`,
    `    iifname ${br} ct state established,related accept`,
    `    iifname ${br} ip daddr ${opts.gateway} tcp dport ${ports} ct state new accept`,
    `    iifname ${br} drop`,
    `  }`,
    `  chain forward {`,
    `    type filter hook forward priority filter - 10; policy accept;`,
    `    iifname ${br} drop`,
    `    oifname ${br} drop`,
    `  }`,
    `}`,
    '',
  ].join('\n');
}

/** The nft script that removes both tables (succeeds when they do not exist). */
export function renderRemoval(env: string): string {
  const table = policyTableName(env);
  return [
    `add table bridge ${table}`,
    `delete table bridge ${table}`,
    `add table inet ${table}`,
    `delete table inet ${table}`,
    '',
  ].join('\n');
}

async function nft(script: string, what: string): Promise<void> {
  const r = await runTool('nft', ['-f', '-'], { input: script });
  if (r.code !== 0) {
    throw new AppError('NFTABLES_FAILED', `${what} failed: ${stderrTail(r, 6)}`);
  }
}

/**
 * Puts a sandbox's host-side veth into this env's port group, which the bridge table drops
 * forwarding for. Call right after CNI ADD, before anything runs in the sandbox.
 */
export async function setSandboxPortGroup(env: string, hostVeth: string): Promise<void> {
  if (!IFNAME_RE.test(hostVeth))
    throw new AppError('NETWORK_SETUP_FAILED', `bad host veth name "${hostVeth}"`);
  const r = await runTool('ip', ['link', 'set', 'dev', hostVeth, 'group', String(sandboxPortGroup(env))]);
  if (r.code !== 0) {
    throw new AppError(
      'NETWORK_SETUP_FAILED',
      `marking ${hostVeth} as a sandbox port failed: ${stderrTail(r)}`,
    );
  }
}

export class NftablesPolicy {
  private readonly opts: HostPolicyOptions;
  private readonly logger: Logger;

  constructor(opts: HostPolicyOptions, logger: Logger) {
    validate(opts);
    this.opts = opts;
    this.logger = logger;
  }

  /** Defines (or atomically redefines) both tables. Idempotent. Throws NFTABLES_FAILED. */
  async apply(): Promise<void> {
    await nft(renderPolicy(this.opts), `applying the nftables policy of env ${this.opts.env}`);
    this.logger.debug({ env: this.opts.env, bridge: this.opts.bridge }, 'nftables policy applied');
  }

  /** Removes both tables. Idempotent. */
  async remove(): Promise<void> {
    await nft(renderRemoval(this.opts.env), `removing the nftables policy of env ${this.opts.env}`);
    this.logger.debug({ env: this.opts.env }, 'nftables policy removed');
  }

  /** True when both tables exist. */
  async isApplied(): Promise<boolean> {
    const r = await runTool('nft', ['list', 'tables']);
    if (r.code !== 0) throw new AppError('NFTABLES_FAILED', `nft list tables failed: ${stderrTail(r)}`);
    const table = policyTableName(this.opts.env);
    const lines = r.stdout.split('\n').map((l) => l.trim());
    return lines.includes(`table bridge ${table}`) && lines.includes(`table inet ${table}`);
  }
}
