/**
 * What makes an MCP server definition valid, and whether a remote one is reachable: the rules the
 * registry routes apply before anything is stored (MCP_SERVER_INVALID names the field), and the
 * egress check shared by registration and execute.
 *
 * A remote (http) server is reached from the sandbox only through hakod's egress proxy, which lets
 * a request through when the tenant's allowlist covers its host:port; registration refuses one the
 * allowlist does not cover (MCP_SERVER_EGRESS_DENIED), and execute skips one whose entry was
 * removed since. The check uses hakod's own allowlist rules (@hako/sandbox's egress policy) with
 * no DNS lookup: an IP literal needs an IP entry for that address and port, a name a name or
 * wildcard entry for that port. A name that resolves to a private address is still refused by the
 * proxy at run time unless that address is listed too.
 */
import { AppError } from '@hako/core';
import { decideEgress, needsResolution, parseAllowEntry } from '@hako/sandbox';
import type { AllowEntry } from '@hako/sandbox';
import type { McpServerTransport } from '../types.js';

export const MCP_SERVER_NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;
/** Names hako keeps for its own tools (compared regardless of case). */
export const RESERVED_MCP_SERVER_NAMES: readonly string[] = ['hako'];

const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
/** RFC 9110 token. */
const HEADER_NAME_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$/;
/** Set by the sandbox (its proxy): a server may not route around it. */
const SANDBOX_ENV = /^(HTTPS?_PROXY|NO_PROXY|ALL_PROXY)$/i;
/** Headers that belong to the connection or the proxy, never to a definition. */
const CONNECTION_HEADERS = new Set([
  'host',
  'connection',
  'content-length',
  'transfer-encoding',
  'keep-alive',
  'te',
  'trailer',
  'upgrade',
]);

export const MCP_LIMITS = {
  command: 4096,
  args: 256,
  arg: 4096,
  env: 100,
  envValue: 32_768,
  url: 2048,
  headers: 50,
  headerValue: 8192,
} as const;

function invalid(field: string, message: string): AppError {
  return new AppError('MCP_SERVER_INVALID', `${field}: ${message}`, { details: { field } });
}

/** MCP_SERVER_INVALID unless `name` can name a server (pattern, not reserved). */
export function checkMcpServerName(name: string): void {
  if (!MCP_SERVER_NAME_RE.test(name)) {
    throw invalid('name', '1 to 64 letters, digits, _ or - (it becomes the tool prefix mcp__{name}__)');
  }
  if (RESERVED_MCP_SERVER_NAMES.includes(name.toLowerCase())) {
    throw invalid('name', `"${name}" is reserved for hako's own tools; pick another name`);
  }
}

function checkText(field: string, value: string, max: number, allowEmpty = false): void {
  if (!allowEmpty && value.length === 0) throw invalid(field, 'must not be empty');
  if (value.length > max) throw invalid(field, `at most ${max} characters`);
  if (value.includes('\0')) throw invalid(field, 'must not contain NUL characters');
}

/** The host:port a remote server's URL connects to (default port by scheme). */
export function mcpUrlHostPort(url: URL): { host: string; port: number; text: string } {
  const port = url.port !== '' ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
  return { host: url.hostname, port, text: `${url.hostname}:${port}` };
}

/** Parses and checks a remote server's URL (http or https, no credentials, no fragment). */
export function parseMcpUrl(raw: string): URL {
  checkText('url', raw, MCP_LIMITS.url);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw invalid('url', `"${raw.slice(0, 200)}" is not an absolute URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw invalid('url', `must be http:// or https://, not ${url.protocol}`);
  }
  if (url.username !== '' || url.password !== '') {
    throw invalid('url', 'must not carry credentials; send them in headers (write-only)');
  }
  if (url.hash !== '') throw invalid('url', 'must not have a #fragment');
  if (url.hostname === '') throw invalid('url', 'has no host');
  return url;
}

/**
 * Checks a transport definition (MCP_SERVER_INVALID naming the first bad field) and answers it
 * normalized (a URL in its parsed form).
 */
export function checkMcpTransport(t: McpServerTransport): McpServerTransport {
  if (t.type === 'stdio') {
    checkText('command', t.command, MCP_LIMITS.command);
    if (t.args.length > MCP_LIMITS.args) throw invalid('args', `at most ${MCP_LIMITS.args} arguments`);
    t.args.forEach((a, i) => checkText(`args.${i}`, a, MCP_LIMITS.arg, true));
    const names = Object.keys(t.env);
    if (names.length > MCP_LIMITS.env) throw invalid('env', `at most ${MCP_LIMITS.env} variables`);
    for (const k of names) {
      if (!ENV_NAME_RE.test(k)) throw invalid(`env.${k}`, 'not an environment variable name');
      if (SANDBOX_ENV.test(k))
        throw invalid(`env.${k}`, 'set by the sandbox (its egress proxy); leave it out');
      checkText(`env.${k}`, t.env[k] ?? '', MCP_LIMITS.envValue, true);
    }
    return { type: 'stdio', command: t.command, args: [...t.args], env: { ...t.env } };
  }
  const url = parseMcpUrl(t.url);
  const names = Object.keys(t.headers);
  if (names.length > MCP_LIMITS.headers) throw invalid('headers', `at most ${MCP_LIMITS.headers} headers`);
  for (const k of names) {
    if (!HEADER_NAME_RE.test(k)) throw invalid(`headers.${k}`, 'not an HTTP header name');
    const lower = k.toLowerCase();
    if (CONNECTION_HEADERS.has(lower) || lower.startsWith('proxy-') || lower.startsWith('mcp-')) {
      throw invalid(`headers.${k}`, 'set by the HTTP client or the MCP transport; leave it out');
    }
    const v = t.headers[k] ?? '';
    checkText(`headers.${k}`, v, MCP_LIMITS.headerValue, true);
    if (/[\r\n]/.test(v)) throw invalid(`headers.${k}`, 'must not contain line breaks');
  }
  if (new Set(names.map((n) => n.toLowerCase())).size !== names.length) {
    throw invalid('headers', 'names a header twice (header names are case-insensitive)');
  }
  return { type: 'http', url: url.toString(), headers: { ...t.headers } };
}

function allowEntries(egressAllow: readonly string[]): AllowEntry[] {
  const out: AllowEntry[] = [];
  for (const raw of egressAllow) {
    try {
      out.push(parseAllowEntry(raw));
    } catch {
      // an entry hakod would refuse covers nothing
    }
  }
  return out;
}

/** Whether the egress allowlist lets the sandbox reach the remote server's host:port. */
export function egressCoversUrl(
  egressAllow: readonly string[],
  rawUrl: string,
): { covered: boolean; hostPort: string } {
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    return { covered: false, hostPort: rawUrl };
  }
  const { host, port, text } = mcpUrlHostPort(url);
  const entries = allowEntries(egressAllow);
  // an IP literal is decided without resolution; a name needs a name or wildcard entry for the port
  const covered = decideEgress(entries, host, port, []).allow || needsResolution(entries, host, port);
  return { covered, hostPort: text };
}

/** MCP_SERVER_EGRESS_DENIED unless the allowlist covers a remote server (stdio always passes). */
export function checkMcpEgress(t: McpServerTransport, egressAllow: readonly string[]): void {
  if (t.type !== 'http') return;
  const { covered, hostPort } = egressCoversUrl(egressAllow, t.url);
  if (!covered) {
    throw new AppError(
      'MCP_SERVER_EGRESS_DENIED',
      `${hostPort} is not on the tenant's egress allowlist (settings.egress_allow); the sandbox reaches remote MCP servers only through it, so ask an admin to add "${hostPort}"`,
      { details: { field: 'url', host_port: hostPort } },
    );
  }
}
