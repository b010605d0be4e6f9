/**
 * The CNI network configuration list hako writes for an env: one `bridge` plugin with
 * `host-local` IPAM. Pure: validation and derivation of the IPAM range live here so they can be
 * unit-tested (seed requirement P0-1: the IPAM `subnet` is exactly CNI_SUBNET, and the range and
 * gateway must agree with it).
 */
import { join } from 'node:path';
import { AppError } from '@hako/core';
import {
  broadcastAddress,
  cidrContains,
  formatCidr,
  formatIpv4,
  parseCidr,
  tryParseIpv4,
} from './ip-math.js';
import type { Ipv4Cidr } from './ip-math.js';

/** The CNI spec version of everything hako writes and sends to plugins. */
export const CNI_VERSION = '1.0.0';

/** Smallest subnet that still holds a gateway and one lease besides network and broadcast. */
export const MAX_SUBNET_PREFIX = 30;
/** Largest subnet accepted (a /8 already holds 16 million sandboxes). */
export const MIN_SUBNET_PREFIX = 8;

export interface IpamRangeInput {
  /** CNI_SUBNET: an IPv4 CIDR whose address is the network address. */
  readonly subnet: string;
  /** CNI_RANGE_START; network + 2 when undefined or empty. */
  readonly rangeStart?: string | undefined;
  /** CNI_RANGE_END; broadcast - 1 when undefined or empty. */
  readonly rangeEnd?: string | undefined;
  /** CNI_GATEWAY; network + 1 when undefined or empty. */
  readonly gateway?: string | undefined;
}

export interface IpamRange {
  /** Exactly the configured CNI_SUBNET (canonical form). */
  readonly subnet: string;
  readonly cidr: Ipv4Cidr;
  readonly prefixLength: number;
  readonly rangeStart: string;
  readonly rangeEnd: string;
  readonly gateway: string;
}

export interface ConflistInput extends IpamRangeInput {
  /** HAKO_ENV: names the network `hako-{env}`. */
  readonly env: string;
  /** Linux bridge the plugin creates (at most 15 characters). */
  readonly bridge: string;
  /** Directory of this env's CNI state; the host-local leases live in `{stateDir}/ipam`. */
  readonly stateDir: string;
}

/** One plugin's configuration as written in the conflist (no `name`/`cniVersion`; those are injected). */
export interface CniPluginConf {
  readonly type: string;
  readonly [key: string]: unknown;
}

export interface CniConflist {
  readonly cniVersion: string;
  readonly name: string;
  readonly plugins: readonly CniPluginConf[];
}

const ENV_RE = /^[a-z0-9]{1,12}$/;
const IFNAME_RE = /^[a-zA-Z0-9_-]{1,15}$/;

/** `hako-{env}`: the CNI network name (also the host-local lease directory's name). */
export function networkName(env: string): string {
  return `hako-${env}`;
}

/** Where host-local keeps its leases for this env: `{stateDir}/ipam/hako-{env}/{ip}`. */
export function ipamDataDir(stateDir: string): string {
  return join(stateDir, 'ipam');
}

/** The lease directory host-local writes for this env's network. */
export function leaseDir(stateDir: string, env: string): string {
  return join(ipamDataDir(stateDir), networkName(env));
}

/** Where the conflist is written (for operators and other CNI tools; hako keeps it in memory too). */
export function conflistPath(stateDir: string, env: string): string {
  return join(stateDir, `${networkName(env)}.conflist`);
}

/**
 * Validates CNI_SUBNET, CNI_RANGE_START, CNI_RANGE_END and CNI_GATEWAY together and derives the
 * ones left unset. Throws CNI_SUBNET_INVALID with one message naming every offending value.
 */
export function resolveIpamRange(input: IpamRangeInput): IpamRange {
  const problems: string[] = [];
  const subnetText = input.subnet.trim();
  let cidr: Ipv4Cidr | undefined;
  try {
    cidr = parseCidr(subnetText);
  } catch (err) {
    problems.push(`CNI_SUBNET=${subnetText} is invalid: ${(err as Error).message}`);
  }
  if (cidr && cidr.prefix > MAX_SUBNET_PREFIX) {
    problems.push(
      `CNI_SUBNET=${subnetText} is too small: it must hold a gateway and at least one lease besides the network and broadcast addresses (use a prefix of /${MAX_SUBNET_PREFIX} or shorter)`,
    );
    cidr = undefined;
  } else if (cidr && cidr.prefix < MIN_SUBNET_PREFIX) {
    problems.push(`CNI_SUBNET=${subnetText} is too large: use a prefix of /${MIN_SUBNET_PREFIX} or longer`);
    cidr = undefined;
  }

  interface Field {
    readonly variable: string;
    readonly text: string | undefined;
    readonly derive: (c: Ipv4Cidr) => number;
  }
  const fields: Field[] = [
    { variable: 'CNI_GATEWAY', text: input.gateway, derive: (c) => c.network + 1 },
    { variable: 'CNI_RANGE_START', text: input.rangeStart, derive: (c) => c.network + 2 },
    { variable: 'CNI_RANGE_END', text: input.rangeEnd, derive: (c) => broadcastAddress(c) - 1 },
  ];
  const values = new Map<string, { value: number; label: string }>();
  for (const f of fields) {
    const text = f.text?.trim();
    if (text) {
      const value = tryParseIpv4(text);
      if (value === undefined) {
        problems.push(`${f.variable}=${text} is not an IPv4 address`);
        continue;
      }
      const label = `${f.variable}=${text}`;
      if (cidr) {
        if (!cidrContains(cidr, value)) {
          problems.push(`${label} is outside CNI_SUBNET=${subnetText}`);
          continue;
        }
        if (value === cidr.network) {
          problems.push(`${label} is the network address of CNI_SUBNET=${subnetText}`);
          continue;
        }
        if (value === broadcastAddress(cidr)) {
          problems.push(`${label} is the broadcast address of CNI_SUBNET=${subnetText}`);
          continue;
        }
      }
      values.set(f.variable, { value, label });
    } else if (cidr) {
      const value = f.derive(cidr);
      values.set(f.variable, {
        value,
        label: `${f.variable}=${formatIpv4(value)} (derived from CNI_SUBNET)`,
      });
    }
  }

  const gw = values.get('CNI_GATEWAY');
  const start = values.get('CNI_RANGE_START');
  const end = values.get('CNI_RANGE_END');
  if (start && end && start.value > end.value) {
    problems.push(`${start.label} is after ${end.label}`);
  } else if (gw && start && end && gw.value >= start.value && gw.value <= end.value) {
    problems.push(
      `${gw.label} is inside the lease range ${start.label} .. ${end.label}; move the gateway or the range`,
    );
  }

  if (problems.length > 0 || !cidr || !gw || !start || !end) {
    throw new AppError(
      'CNI_SUBNET_INVALID',
      `the sandbox network configuration is inconsistent: ${problems.join('; ')}`,
      {
        details: { problems },
      },
    );
  }
  return {
    subnet: formatCidr(cidr),
    cidr,
    prefixLength: cidr.prefix,
    rangeStart: formatIpv4(start.value),
    rangeEnd: formatIpv4(end.value),
    gateway: formatIpv4(gw.value),
  };
}

/**
 * Builds the env's conflist: `bridge` as the gateway of an isolated L2 segment (no masquerade,
 * no hairpin, no routes: sandboxes talk only to the gateway, where the egress proxy listens) with
 * `host-local` IPAM whose leases live under `stateDir` so hako can list and clean them.
 * Throws CNI_SUBNET_INVALID (range) or CONFIG_INVALID (env, bridge name).
 */
export function buildConflist(input: ConflistInput): CniConflist {
  if (!ENV_RE.test(input.env)) {
    throw new AppError(
      'CONFIG_INVALID',
      `HAKO_ENV=${input.env} is invalid: use 1-12 lowercase letters and digits`,
    );
  }
  if (!IFNAME_RE.test(input.bridge)) {
    throw new AppError(
      'CONFIG_INVALID',
      `HAKO_BRIDGE=${input.bridge} is not a usable interface name: use 1-15 of [a-zA-Z0-9_-]`,
    );
  }
  const range = resolveIpamRange(input);
  return {
    cniVersion: CNI_VERSION,
    name: networkName(input.env),
    plugins: [
      {
        type: 'bridge',
        bridge: input.bridge,
        isGateway: true,
        isDefaultGateway: false,
        ipMasq: false,
        hairpinMode: false,
        promiscMode: false,
        ipam: {
          type: 'host-local',
          ranges: [
            [
              {
                subnet: range.subnet,
                rangeStart: range.rangeStart,
                rangeEnd: range.rangeEnd,
                gateway: range.gateway,
              },
            ],
          ],
          dataDir: ipamDataDir(input.stateDir),
        },
      },
    ],
  };
}
