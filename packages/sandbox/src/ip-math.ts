/**
 * Pure IPv4 arithmetic: addresses are unsigned 32-bit integers (0 … 2^32-1) held in a `number`.
 * Parsing is strict (four decimal octets 0-255, no leading zeros, no spaces) so that an address
 * written in a config file means exactly one thing.
 */
import { AppError } from '@hako/core';

export interface Ipv4Cidr {
  /** The network address (every host bit zero). */
  readonly network: number;
  /** Prefix length, 0-32. */
  readonly prefix: number;
}

const OCTET_RE = /^(0|[1-9][0-9]{0,2})$/;

/** Parses dotted-quad IPv4, or returns undefined when `text` is not one. */
export function tryParseIpv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!OCTET_RE.test(part)) return undefined;
    const octet = Number(part);
    if (octet > 255) return undefined;
    value = value * 256 + octet;
  }
  return value;
}

/** Parses dotted-quad IPv4; throws INVALID_ARGUMENT naming the bad text. */
export function parseIpv4(text: string): number {
  const value = tryParseIpv4(text);
  if (value === undefined) {
    throw new AppError(
      'INVALID_ARGUMENT',
      `"${text}" is not an IPv4 address (expected four octets 0-255, e.g. 10.0.0.1)`,
    );
  }
  return value;
}

/** Formats a 32-bit address as dotted quad. */
export function formatIpv4(value: number): string {
  assertAddress(value);
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.');
}

/** The netmask of a prefix length as a 32-bit number (/0 → 0, /32 → 255.255.255.255). */
export function prefixMask(prefix: number): number {
  assertPrefix(prefix);
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** Number of addresses in a prefix (/0 → 2^32, /32 → 1). */
export function cidrSize(prefix: number): number {
  assertPrefix(prefix);
  return 2 ** (32 - prefix);
}

/**
 * Parses `a.b.c.d/n`. The address must be the network address (10.0.0.5/24 is rejected: it
 * almost always means a typo, and the seed system's P0 bug was exactly a subnet and range that
 * disagreed). Throws INVALID_ARGUMENT saying what is wrong.
 */
export function parseCidr(text: string): Ipv4Cidr {
  const slash = text.indexOf('/');
  if (slash < 0)
    throw new AppError('INVALID_ARGUMENT', `"${text}" is not an IPv4 CIDR (expected e.g. 10.0.0.0/24)`);
  const addrText = text.slice(0, slash);
  const prefixText = text.slice(slash + 1);
  const addr = tryParseIpv4(addrText);
  if (addr === undefined) {
    throw new AppError('INVALID_ARGUMENT', `"${text}": "${addrText}" is not an IPv4 address`);
  }
  if (!/^(0|[1-9][0-9]?)$/.test(prefixText) || Number(prefixText) > 32) {
    throw new AppError('INVALID_ARGUMENT', `"${text}": prefix length must be an integer 0-32`);
  }
  const prefix = Number(prefixText);
  const network = (addr & prefixMask(prefix)) >>> 0;
  if (network !== addr) {
    throw new AppError(
      'INVALID_ARGUMENT',
      `"${text}" is not a network address: host bits are set (did you mean ${formatIpv4(network)}/${prefix}?)`,
    );
  }
  return { network, prefix };
}

export function formatCidr(cidr: Ipv4Cidr): string {
  return `${formatIpv4(cidr.network)}/${cidr.prefix}`;
}

/** The network address (same as cidr.network; here for symmetry with broadcastAddress). */
export function networkAddress(cidr: Ipv4Cidr): number {
  return cidr.network;
}

/** The last address of the block (for /32 the address itself, for /31 the second one). */
export function broadcastAddress(cidr: Ipv4Cidr): number {
  return cidr.network + cidrSize(cidr.prefix) - 1;
}

/** True when `addr` lies in the block (network and broadcast addresses included). */
export function cidrContains(cidr: Ipv4Cidr, addr: number): boolean {
  assertAddress(addr);
  return addr >= cidr.network && addr <= broadcastAddress(cidr);
}

/**
 * The address `n` places after the network address (n = 0 is the network address itself).
 * Throws INVALID_ARGUMENT when that falls outside the block.
 */
export function nthAddress(cidr: Ipv4Cidr, n: number): number {
  if (!Number.isSafeInteger(n) || n < 0 || n >= cidrSize(cidr.prefix)) {
    throw new AppError('INVALID_ARGUMENT', `address #${n} is outside ${formatCidr(cidr)}`);
  }
  return cidr.network + n;
}

/** Orders two addresses: negative when a < b, 0 when equal, positive when a > b. */
export function compareIpv4(a: number, b: number): number {
  return a - b;
}

function assertAddress(value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new AppError('INVALID_ARGUMENT', `${value} is not a 32-bit IPv4 address value`);
  }
}

function assertPrefix(prefix: number): void {
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 32) {
    throw new AppError('INVALID_ARGUMENT', `${prefix} is not an IPv4 prefix length (0-32)`);
  }
}
