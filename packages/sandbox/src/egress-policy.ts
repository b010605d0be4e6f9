/**
 * The egress allowlist: parsing `host:port` entries and deciding whether a sandbox may reach a
 * destination. Pure (no I/O): the proxy resolves names and passes the addresses in, then connects
 * to exactly the addresses the decision returns, so a second lookup (DNS rebinding) cannot happen.
 *
 * Rule: nothing private is reachable unless listed. An entry that names a DNS name or a wildcard
 * only reaches public addresses; when the name resolves to any loopback, private, shared (CGNAT),
 * link-local (cloud metadata), unspecified, multicast or reserved address, the request is denied,
 * unless that very address is itself on the allowlist as an IP-literal entry for that port.
 */
import { AppError } from '@hako/core';

/** What an allowlist entry's host part matches. Names are lowercase, without a trailing dot. */
export type AllowHost =
  | { readonly kind: 'name'; readonly name: string }
  /** `*.example.com`: any subdomain of `suffix` at any depth, never `suffix` itself. */
  | { readonly kind: 'wildcard'; readonly suffix: string }
  /** An IP literal in canonical form (dotted quad, or RFC 5952 IPv6 without brackets). */
  | { readonly kind: 'ip'; readonly address: string };

export interface AllowEntry {
  /** The entry in canonical form (`example.com:443`, `[::1]:*`), used in log reasons. */
  readonly text: string;
  readonly host: AllowHost;
  /** A port 1-65535, or `*` for any port. */
  readonly port: number | '*';
}

export type EgressDecision =
  | {
      readonly allow: true;
      /** Addresses to connect to, in order; every one was checked. Never empty. */
      readonly addresses: readonly string[];
      readonly reason: string;
    }
  | { readonly allow: false; readonly reason: string };

/** How an address is classified. Everything but `public` is refused for DNS-name entries. */
export type AddressClass =
  'public' | 'loopback' | 'private' | 'shared' | 'link-local' | 'unspecified' | 'multicast' | 'reserved';

const ENTRY_HELP = 'use host:port, *.domain:port, 1.2.3.4:port or [::1]:port (the port may be *)';

// ---------------------------------------------------------------- IP literals

/** Parses a strict dotted-quad IPv4 address (no leading zeros, no short forms) into 4 bytes. */
function parseIpv4(s: string): number[] | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    out.push(n);
  }
  return out;
}

function parseGroups(s: string): number[] | undefined {
  if (s === '') return [];
  const out: number[] = [];
  for (const g of s.split(':')) {
    if (!/^[0-9a-f]{1,4}$/i.test(g)) return undefined;
    out.push(parseInt(g, 16));
  }
  return out;
}

/** Parses an IPv6 address (no brackets, no zone id; an IPv4 tail is allowed) into 16 bytes. */
function parseIpv6(s: string): number[] | undefined {
  if (!s.includes(':')) return undefined;
  let text = s;
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  const last = text.slice(lastColon + 1);
  if (last.includes('.')) {
    const v4 = parseIpv4(last);
    if (!v4) return undefined;
    tail = [(v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!];
    // Keep a trailing ':' when the IPv4 part follows '::' ("::1.2.3.4", "::ffff:1.2.3.4").
    text = text.slice(0, lastColon + 1);
    if (!text.endsWith('::')) text = text.slice(0, -1);
  }
  const halves = text.split('::');
  let groups: number[];
  if (halves.length === 1) {
    const g = parseGroups(halves[0]!);
    if (!g) return undefined;
    groups = [...g, ...tail];
    if (groups.length !== 8) return undefined;
  } else if (halves.length === 2) {
    const head = parseGroups(halves[0]!);
    const rest = parseGroups(halves[1]!);
    if (!head || !rest) return undefined;
    const known = head.length + rest.length + tail.length;
    if (known > 7) return undefined;
    groups = [...head, ...new Array<number>(8 - known).fill(0), ...rest, ...tail];
  } else {
    return undefined;
  }
  const bytes: number[] = [];
  for (const g of groups) bytes.push(g >> 8, g & 0xff);
  return bytes;
}

function isV4Mapped(b: readonly number[]): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

function formatIpv6(b: readonly number[]): string {
  if (isV4Mapped(b)) return `::ffff:${b.slice(12).join('.')}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i]! << 8) | b[i + 1]!);
  // RFC 5952: compress the longest run (length >= 2) of zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestLen < 2) return hex.join(':');
  const head = hex.slice(0, bestStart).join(':');
  const rest = hex.slice(bestStart + bestLen).join(':');
  return `${head}::${rest}`;
}

/**
 * The canonical text of an IP literal (dotted quad, or RFC 5952 lowercase IPv6), or undefined
 * when `ip` is not one. Accepts IPv6 with or without brackets; rejects zone ids.
 */
export function canonicalIp(ip: string): string | undefined {
  const v4 = parseIpv4(ip);
  if (v4) return v4.join('.');
  const inner = ip.startsWith('[') && ip.endsWith(']') ? ip.slice(1, -1) : ip;
  const v6 = parseIpv6(inner);
  return v6 ? formatIpv6(v6) : undefined;
}

/**
 * Like canonicalIp, but an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a dual-stack socket
 * reports IPv4 peers) becomes its IPv4 form. For identifying sockets, not for policy matching.
 */
export function socketIp(ip: string): string | undefined {
  const c = canonicalIp(ip);
  return c?.startsWith('::ffff:') && c.includes('.') ? c.slice('::ffff:'.length) : c;
}

/** Formats an address for `host:port` text: IPv6 in brackets. */
export function hostForUrl(address: string): string {
  return address.includes(':') ? `[${address}]` : address;
}

function inV4(b: readonly number[], net: readonly [number, number, number, number], prefix: number): boolean {
  for (let bit = 0; bit < prefix; bit += 8) {
    const take = Math.min(8, prefix - bit);
    const mask = (0xff << (8 - take)) & 0xff;
    const i = bit / 8;
    if ((b[i]! & mask) !== (net[i]! & mask)) return false;
  }
  return true;
}

function classifyV4(b: readonly number[]): AddressClass {
  if (inV4(b, [0, 0, 0, 0], 32)) return 'unspecified';
  if (inV4(b, [0, 0, 0, 0], 8)) return 'reserved'; // "this network"
  if (inV4(b, [127, 0, 0, 0], 8)) return 'loopback';
  if (inV4(b, [10, 0, 0, 0], 8)) return 'private';
  if (inV4(b, [172, 16, 0, 0], 12)) return 'private';
  if (inV4(b, [192, 168, 0, 0], 16)) return 'private';
  if (inV4(b, [100, 64, 0, 0], 10)) return 'shared';
  if (inV4(b, [169, 254, 0, 0], 16)) return 'link-local';
  if (inV4(b, [192, 0, 0, 0], 24)) return 'reserved'; // IETF protocol assignments
  if (inV4(b, [198, 18, 0, 0], 15)) return 'reserved'; // benchmarking
  if (inV4(b, [224, 0, 0, 0], 4)) return 'multicast';
  if (inV4(b, [240, 0, 0, 0], 4)) return 'reserved'; // includes 255.255.255.255
  return 'public';
}

/**
 * Classifies an IP address. IPv6 forms that carry an IPv4 address (IPv4-mapped ::ffff:0:0/96,
 * NAT64 64:ff9b::/96, 6to4 2002::/16) are classified by that IPv4 address. Undefined when `ip`
 * is not an IP literal.
 */
export function classifyAddress(ip: string): AddressClass | undefined {
  const v4 = parseIpv4(ip);
  if (v4) return classifyV4(v4);
  const inner = ip.startsWith('[') && ip.endsWith(']') ? ip.slice(1, -1) : ip;
  const b = parseIpv6(inner);
  if (!b) return undefined;
  const zeroUntil = (n: number): boolean => b.slice(0, n).every((x) => x === 0);
  if (zeroUntil(16)) return 'unspecified';
  if (zeroUntil(15) && b[15] === 1) return 'loopback';
  if (isV4Mapped(b)) return classifyV4(b.slice(12));
  if (zeroUntil(12)) return 'reserved'; // deprecated IPv4-compatible ::a.b.c.d
  if (
    b[0] === 0x00 &&
    b[1] === 0x64 &&
    b[2] === 0xff &&
    b[3] === 0x9b &&
    b.slice(4, 12).every((x) => x === 0)
  ) {
    return classifyV4(b.slice(12)); // NAT64 well-known prefix
  }
  if (b[0] === 0x20 && b[1] === 0x02) return classifyV4(b.slice(2, 6)); // 6to4
  if ((b[0]! & 0xfe) === 0xfc) return 'private'; // fc00::/7 unique local
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) return 'link-local'; // fe80::/10
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0xc0) return 'private'; // fec0::/10 site-local (deprecated)
  if (b[0] === 0xff) return 'multicast';
  return 'public';
}

// ---------------------------------------------------------------- names

const LABEL_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Lowercases a DNS name, drops one trailing dot, and checks it is a host name (LDH labels of 1-63
 * characters, 253 at most, last label not all digits so it cannot be read as an IPv4 number).
 */
function normalizeName(input: string): string | undefined {
  let name = input.toLowerCase();
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (name.length === 0 || name.length > 253) return undefined;
  const labels = name.split('.');
  if (!labels.every((l) => LABEL_RE.test(l))) return undefined;
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) return undefined;
  return name;
}

type Destination =
  { readonly kind: 'ip'; readonly address: string } | { readonly kind: 'name'; readonly name: string };

/** Reads a destination host (name, IPv4, IPv6 with or without brackets) into canonical form. */
function normalizeDestination(host: string): Destination | undefined {
  const ip = canonicalIp(host);
  if (ip) return { kind: 'ip', address: ip };
  const name = normalizeName(host);
  return name ? { kind: 'name', name } : undefined;
}

// ---------------------------------------------------------------- entries

/**
 * Parses one allowlist entry. Throws AppError('INVALID_ARGUMENT') naming the entry when it is
 * malformed (no port, bad port, IPv6 without brackets, `*` anywhere but a leading `*.` label, …).
 */
export function parseAllowEntry(raw: string): AllowEntry {
  const fail = (what: string): never => {
    throw new AppError('INVALID_ARGUMENT', `egress allowlist entry "${raw}": ${what}; ${ENTRY_HELP}`);
  };
  if (raw.length === 0) fail('empty');
  if (/\s/.test(raw)) fail('contains whitespace');

  let hostPart: string;
  let portPart: string;
  if (raw.startsWith('[')) {
    const close = raw.indexOf(']');
    if (close < 0) fail('missing "]" after the IPv6 address');
    hostPart = raw.slice(0, close + 1);
    const after = raw.slice(close + 1);
    if (after === '') fail('has no port');
    if (!after.startsWith(':')) fail('expected ":port" after "]"');
    portPart = after.slice(1);
  } else {
    const colons = raw.split(':').length - 1;
    if (colons === 0) fail('has no port');
    if (colons > 1) fail('IPv6 addresses must be written in brackets, e.g. [2001:db8::1]:443');
    const i = raw.indexOf(':');
    hostPart = raw.slice(0, i);
    portPart = raw.slice(i + 1);
  }

  let port: number | '*';
  if (portPart === '*') port = '*';
  else if (/^[0-9]{1,5}$/.test(portPart) && Number(portPart) >= 1 && Number(portPart) <= 65535) {
    port = Number(portPart);
  } else {
    return fail(`"${portPart}" is not a port (1-65535 or *)`);
  }

  let host: AllowHost;
  if (hostPart === '') return fail('has no host');
  if (hostPart.startsWith('[')) {
    const inner = hostPart.slice(1, -1);
    const v6 = inner.includes('.') || inner.includes(':') ? parseIpv6(inner) : undefined;
    if (!v6) return fail(`"${inner}" is not an IPv6 address`);
    host = { kind: 'ip', address: formatIpv6(v6) };
  } else if (hostPart === '*') {
    return fail('a bare "*" host would allow everything; list the hosts');
  } else if (hostPart.startsWith('*.')) {
    const suffix = normalizeName(hostPart.slice(2));
    if (!suffix || hostPart.slice(2).includes('*')) return fail(`"${hostPart}" is not a valid wildcard`);
    host = { kind: 'wildcard', suffix };
  } else if (hostPart.includes('*')) {
    return fail('"*" is only allowed as the whole first label ("*.example.com")');
  } else {
    const v4 = parseIpv4(hostPart);
    if (v4) host = { kind: 'ip', address: v4.join('.') };
    else {
      const name = normalizeName(hostPart);
      if (!name) return fail(`"${hostPart}" is not a host name or IPv4 address`);
      host = { kind: 'name', name };
    }
  }

  const hostText =
    host.kind === 'ip' ? hostForUrl(host.address) : host.kind === 'wildcard' ? `*.${host.suffix}` : host.name;
  return { text: `${hostText}:${port}`, host, port };
}

/** Parses every entry (see parseAllowEntry); throws on the first malformed one. */
export function parseAllowlist(raws: readonly string[]): AllowEntry[] {
  return raws.map(parseAllowEntry);
}

// ---------------------------------------------------------------- decisions

function portMatches(entry: AllowEntry, port: number): boolean {
  return entry.port === '*' || entry.port === port;
}

function nameMatches(entry: AllowEntry, name: string): boolean {
  switch (entry.host.kind) {
    case 'name':
      return entry.host.name === name;
    case 'wildcard':
      return name.endsWith(`.${entry.host.suffix}`);
    case 'ip':
      return false;
  }
}

function ipEntryFor(entries: readonly AllowEntry[], address: string, port: number): AllowEntry | undefined {
  return entries.find((e) => e.host.kind === 'ip' && e.host.address === address && portMatches(e, port));
}

function nameEntryFor(entries: readonly AllowEntry[], name: string, port: number): AllowEntry | undefined {
  return entries.find((e) => nameMatches(e, name) && portMatches(e, port));
}

/**
 * True when `host` is a DNS name that a name or wildcard entry allows on `port`, i.e. when the
 * proxy must resolve it before calling decide(). Names that match nothing are never resolved, so a
 * sandbox cannot leak data through DNS queries for arbitrary names.
 */
export function needsResolution(entries: readonly AllowEntry[], host: string, port: number): boolean {
  const dest = normalizeDestination(host);
  return dest?.kind === 'name' && nameEntryFor(entries, dest.name, port) !== undefined;
}

/**
 * Decides whether `host:port` may be reached. `resolvedIps` are the addresses the proxy resolved
 * for a DNS-name host (ignored for an IP-literal host; empty when the name was not resolved). On
 * allow, `addresses` are the canonical addresses to connect to, all of them checked.
 *
 * - An IP-literal host is allowed only by an IP-literal entry for that exact address and port.
 * - A name is allowed by a matching name/wildcard entry when every resolved address is public or
 *   is itself listed as an IP-literal entry for that port; any other private-range address denies.
 */
export function decide(
  entries: readonly AllowEntry[],
  host: string,
  port: number,
  resolvedIps: readonly string[],
): EgressDecision {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    return { allow: false, reason: `invalid port ${port}` };
  }
  const dest = normalizeDestination(host);
  if (!dest) return { allow: false, reason: `"${host}" is not a valid host name or IP address` };

  if (dest.kind === 'ip') {
    const entry = ipEntryFor(entries, dest.address, port);
    if (!entry) return { allow: false, reason: 'no allowlist entry matches' };
    return { allow: true, addresses: [dest.address], reason: `matches "${entry.text}"` };
  }

  const entry = nameEntryFor(entries, dest.name, port);
  if (!entry) return { allow: false, reason: 'no allowlist entry matches' };
  if (resolvedIps.length === 0) {
    return { allow: false, reason: `${dest.name} did not resolve to any address` };
  }
  const addresses: string[] = [];
  for (const ip of resolvedIps) {
    const address = canonicalIp(ip);
    const cls = classifyAddress(ip);
    if (!address || !cls) return { allow: false, reason: `resolver returned "${ip}", not an IP address` };
    if (cls !== 'public' && !ipEntryFor(entries, address, port)) {
      return {
        allow: false,
        reason:
          `${dest.name} resolves to ${cls} address ${address} (entry "${entry.text}" only reaches public ` +
          `addresses; list ${hostForUrl(address)}:${port} to allow it)`,
      };
    }
    if (!addresses.includes(address)) addresses.push(address);
  }
  return { allow: true, addresses, reason: `matches "${entry.text}"` };
}
