/**
 * Named upstreams: model APIs whose credentials hakod holds and the egress proxy adds on the way
 * out, so no secret ever enters a sandbox.
 *
 * Path scheme. A sandbox given upstream `{name}` talks plain HTTP to the egress proxy at
 * `{proxyUrl}/_hako/upstream/{name}`; the proxy sends `{method} {base}{rest}?{query}` to the
 * upstream configured under that name, where `{rest}` is whatever follows the prefix (`/v1/messages`)
 * and `{base}` is the configured base URL. Only the rest of the path and the query come from the
 * sandbox; scheme, host, port and base path always come from hakod's config.
 *
 * - `anthropic`: `ANTHROPIC_BASE_URL=…/_hako/upstream/anthropic`, `ANTHROPIC_API_KEY` a placeholder;
 *   the proxy drops any key the sandbox sent and sets `x-api-key` to the real one.
 * - `bedrock`: Claude Code's Bedrock variables, with `ANTHROPIC_BEDROCK_BASE_URL` at the proxy and
 *   `CLAUDE_CODE_SKIP_BEDROCK_AUTH=1` (the sandbox signs nothing); the proxy signs each request with
 *   SigV4 (service `bedrock`) using @smithy/signature-v4.
 */
import { AppError } from '@hako/core';
import type { SignatureV4 } from '@smithy/signature-v4';
import { classifyAddress } from './egress-policy.js';

export const UPSTREAM_NAMES = ['anthropic', 'bedrock'] as const;
export type UpstreamName = (typeof UPSTREAM_NAMES)[number];

/** Requests whose path starts with this (then `{name}`) are sent to a named upstream. */
export const UPSTREAM_PATH_PREFIX = '/_hako/upstream/';

/** The API key a sandbox sees; the proxy replaces it, so it is worth nothing anywhere else. */
export const UPSTREAM_PLACEHOLDER_KEY = 'hako-placeholder-key';

export interface AnthropicUpstreamConfig {
  /** `https://api.anthropic.com` or a gateway; http only for a loopback address (tests). No query. */
  readonly baseUrl: string;
  /** Sent as `x-api-key`. */
  readonly apiKey: string;
}

export interface BedrockUpstreamConfig {
  /** AWS region, e.g. `us-east-1`: the signing region and, by default, the endpoint's. */
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** For temporary credentials; sent as `x-amz-security-token` and signed. */
  readonly sessionToken?: string | undefined;
  /**
   * Base URL requests go to; default `https://bedrock-runtime.{region}.amazonaws.com`. http only for
   * a loopback address (tests).
   */
  readonly endpoint?: string | undefined;
}

/** The upstreams hakod has credentials for; an absent name cannot be given to a sandbox. */
export interface UpstreamsConfig {
  readonly anthropic?: AnthropicUpstreamConfig | undefined;
  readonly bedrock?: BedrockUpstreamConfig | undefined;
}

/** A configured upstream after checking: where requests go and how they are authorised. */
export interface ResolvedUpstream {
  readonly name: UpstreamName;
  readonly protocol: 'http:' | 'https:';
  /** Host name or IP to connect to (IPv6 without brackets). */
  readonly hostname: string;
  readonly port: number;
  /** The Host header: host, plus `:port` when it is not the scheme's default. */
  readonly host: string;
  /** Path of the base URL without a trailing slash ('' for none). */
  readonly basePath: string;
  readonly auth:
    | { readonly kind: 'api-key'; readonly apiKey: string }
    | { readonly kind: 'sigv4'; readonly signer: () => Promise<SignatureV4> };
}

/** Which named upstream a request to the proxy targets (see parseUpstreamTarget). */
export type UpstreamTarget =
  | {
      readonly ok: true;
      readonly name: string;
      /** The path after `/_hako/upstream/{name}`, starting with `/` (`/` when there is none). */
      readonly path: string;
      /** The query including its `?`, or ''. */
      readonly query: string;
    }
  | { readonly ok: false; readonly name: string; readonly reason: string };

/** A request on its way to an upstream, after authorizeUpstreamRequest. */
export interface AuthorizedRequest {
  /** Request target: base path + path + query. */
  readonly path: string;
  /** Every header to send, Host and credentials included, in order. */
  readonly headers: readonly [string, string][];
}

const NAME_RE = /^[a-z0-9-]{1,32}$/;
/** RFC 3986 path characters (pchar and `/`), percent-escapes allowed. */
const PATH_RE = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$/;
const QUERY_RE = /^(\?[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*)?$/;
const REGION_RE = /^[a-z0-9]+(-[a-z0-9]+)+$/;

/** Headers from the sandbox never sent to an upstream: credentials (it has none to send) and ones the proxy sets. */
function isDroppedHeader(lower: string): boolean {
  return (
    lower === 'host' ||
    lower === 'content-length' ||
    lower === 'expect' ||
    lower === 'x-api-key' ||
    lower === 'authorization' ||
    lower.startsWith('x-amz-')
  );
}

function isUpstreamName(name: string): name is UpstreamName {
  return (UPSTREAM_NAMES as readonly string[]).includes(name);
}

/**
 * Checks a list of upstream names for a sandbox: INVALID_ARGUMENT for a name hako does not know,
 * UPSTREAM_NOT_CONFIGURED for one hakod has no credentials for. Duplicates collapse; an empty list
 * is fine (no upstreams).
 */
export function upstreamNames(names: readonly string[], config: UpstreamsConfig | undefined): UpstreamName[] {
  const out: UpstreamName[] = [];
  for (const name of names) {
    if (!isUpstreamName(name)) {
      throw new AppError(
        'INVALID_ARGUMENT',
        `unknown upstream "${name}"; the known upstreams are ${UPSTREAM_NAMES.join(', ')}`,
      );
    }
    if (!config?.[name]) {
      throw new AppError(
        'UPSTREAM_NOT_CONFIGURED',
        `upstream "${name}" was requested but hakod has no credentials for it; configure it on this node or drop it from the request`,
      );
    }
    if (!out.includes(name)) out.push(name);
  }
  return out;
}

/** Parses and checks a base URL from hakod's config (CONFIG_INVALID when it is unusable). */
function parseBaseUrl(
  what: string,
  raw: string,
): Pick<ResolvedUpstream, 'protocol' | 'hostname' | 'port' | 'host' | 'basePath'> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new AppError('CONFIG_INVALID', `${what} "${raw}" is not a URL; use https://host[:port][/path]`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new AppError('CONFIG_INVALID', `${what} "${raw}" must be an https:// URL`);
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new AppError(
      'CONFIG_INVALID',
      `${what} must not carry credentials, a query or a fragment; give https://host[:port][/path]`,
    );
  }
  const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  if (url.protocol === 'http:' && hostname !== 'localhost' && classifyAddress(hostname) !== 'loopback') {
    throw new AppError(
      'CONFIG_INVALID',
      `${what} "${raw}" uses plain http to a non-loopback host; credentials may only travel over https`,
    );
  }
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
  return {
    protocol: url.protocol,
    hostname,
    port,
    host: url.host,
    basePath: url.pathname.replace(/\/+$/, ''),
  };
}

function requireSecret(what: string, value: string | undefined): string {
  if (typeof value !== 'string' || value === '' || /[\s\0]/.test(value)) {
    throw new AppError('CONFIG_INVALID', `${what} is empty or contains whitespace; set it to the real value`);
  }
  return value;
}

/** The endpoint a Bedrock upstream uses: the configured one, or the region's bedrock-runtime. */
export function bedrockEndpoint(config: BedrockUpstreamConfig): string {
  return config.endpoint ?? `https://bedrock-runtime.${config.region}.amazonaws.com`;
}

/**
 * Checks the upstream config and prepares each configured upstream (a SigV4 signer for Bedrock).
 * Throws CONFIG_INVALID naming the field that is wrong; never puts a secret in a message.
 */
export function resolveUpstreams(config: UpstreamsConfig | undefined): Map<UpstreamName, ResolvedUpstream> {
  const out = new Map<UpstreamName, ResolvedUpstream>();
  const a = config?.anthropic;
  if (a) {
    out.set('anthropic', {
      name: 'anthropic',
      ...parseBaseUrl('upstream anthropic baseUrl', a.baseUrl),
      auth: { kind: 'api-key', apiKey: requireSecret('upstream anthropic apiKey', a.apiKey) },
    });
  }
  const b = config?.bedrock;
  if (b) {
    if (typeof b.region !== 'string' || !REGION_RE.test(b.region)) {
      throw new AppError(
        'CONFIG_INVALID',
        `upstream bedrock region "${String(b.region)}" is not an AWS region (e.g. us-east-1)`,
      );
    }
    const sessionToken =
      b.sessionToken === undefined
        ? undefined
        : requireSecret('upstream bedrock sessionToken', b.sessionToken);
    const region = b.region;
    const credentials = {
      accessKeyId: requireSecret('upstream bedrock accessKeyId', b.accessKeyId),
      secretAccessKey: requireSecret('upstream bedrock secretAccessKey', b.secretAccessKey),
      ...(sessionToken === undefined ? {} : { sessionToken }),
    };
    // the signer's modules take ~100 ms to load: only a process that signs loads them (not the CLI)
    let made: Promise<SignatureV4> | undefined;
    const signer = (): Promise<SignatureV4> =>
      (made ??= Promise.all([import('@smithy/signature-v4'), import('@aws-crypto/sha256-js')]).then(
        ([sv4, sha]) => new sv4.SignatureV4({ service: 'bedrock', region, credentials, sha256: sha.Sha256 }),
      ));
    out.set('bedrock', {
      name: 'bedrock',
      ...parseBaseUrl('upstream bedrock endpoint', bedrockEndpoint(b)),
      auth: { kind: 'sigv4', signer },
    });
  }
  return out;
}

/**
 * The environment a sandbox gets for its upstreams (merge it over the sandbox's own env). Nothing
 * in it is secret: the key is a placeholder and Bedrock requests are signed by the proxy.
 *
 * - anthropic: `ANTHROPIC_BASE_URL={proxyUrl}/_hako/upstream/anthropic`,
 *   `ANTHROPIC_API_KEY=hako-placeholder-key`.
 * - bedrock: `CLAUDE_CODE_USE_BEDROCK=1`, `ANTHROPIC_BEDROCK_BASE_URL={proxyUrl}/_hako/upstream/bedrock`,
 *   `CLAUDE_CODE_SKIP_BEDROCK_AUTH=1`, `AWS_REGION={region}`.
 * - with any upstream: `NO_PROXY` and `no_proxy` set to the proxy's host, so clients that honour
 *   HTTP_PROXY talk to the upstream route directly instead of asking the proxy for a CONNECT
 *   tunnel to itself (which it refuses). Merge with any NO_PROXY of your own (comma-separated).
 *
 * `proxyUrl` is the proxy's address as the sandbox reaches it (EgressProxy.url); `config` is the
 * same config the proxy got (it supplies the region and says what is configured). Throws
 * INVALID_ARGUMENT for an unknown name or a proxyUrl that is not an http(s) URL, and
 * UPSTREAM_NOT_CONFIGURED for a name without credentials. An empty `names` gives `{}`.
 */
export function upstreamEnv(
  names: readonly string[],
  proxyUrl: string,
  config: UpstreamsConfig | undefined,
): Record<string, string> {
  const list = upstreamNames(names, config);
  if (list.length === 0) return {};
  let base: URL;
  try {
    base = new URL(proxyUrl);
  } catch {
    throw new AppError(
      'INVALID_ARGUMENT',
      `egress proxy URL "${proxyUrl}" is not a URL; is the proxy listening?`,
    );
  }
  if ((base.protocol !== 'http:' && base.protocol !== 'https:') || base.search !== '' || base.hash !== '') {
    throw new AppError('INVALID_ARGUMENT', `egress proxy URL "${proxyUrl}" must be http://host:port`);
  }
  const root = `${base.origin}${base.pathname.replace(/\/+$/, '')}${UPSTREAM_PATH_PREFIX}`;
  const env: Record<string, string> = {};
  for (const name of list) {
    switch (name) {
      case 'anthropic':
        env.ANTHROPIC_BASE_URL = `${root}anthropic`;
        env.ANTHROPIC_API_KEY = UPSTREAM_PLACEHOLDER_KEY;
        break;
      case 'bedrock':
        env.CLAUDE_CODE_USE_BEDROCK = '1';
        env.ANTHROPIC_BEDROCK_BASE_URL = `${root}bedrock`;
        env.CLAUDE_CODE_SKIP_BEDROCK_AUTH = '1';
        env.AWS_REGION = config!.bedrock!.region;
        break;
    }
  }
  const proxyHost = base.hostname.startsWith('[') ? base.hostname.slice(1, -1) : base.hostname;
  env.NO_PROXY = proxyHost;
  env.no_proxy = proxyHost;
  return env;
}

/**
 * Reads a request target (`/_hako/upstream/{name}/rest?query`, origin-form). Undefined when the
 * target is not under the prefix; `ok: false` with a reason when it is but the name, path or query
 * is malformed, or the path has `.`/`..` segments (which could climb out of the base path).
 */
export function parseUpstreamTarget(target: string): UpstreamTarget | undefined {
  if (!target.startsWith(UPSTREAM_PATH_PREFIX)) return undefined;
  const q = target.indexOf('?');
  const pathname = q < 0 ? target : target.slice(0, q);
  const query = q < 0 ? '' : target.slice(q);
  const rest = pathname.slice(UPSTREAM_PATH_PREFIX.length);
  const slash = rest.indexOf('/');
  const name = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? '/' : rest.slice(slash);
  if (!NAME_RE.test(name)) return { ok: false, name, reason: `"${name}" is not an upstream name` };
  if (!PATH_RE.test(path)) return { ok: false, name, reason: 'the path has characters that must be escaped' };
  if (!QUERY_RE.test(query))
    return { ok: false, name, reason: 'the query has characters that must be escaped' };
  for (const segment of path.split('/')) {
    const s = segment.replace(/%2e/gi, '.');
    if (s === '.' || s === '..') return { ok: false, name, reason: 'the path has "." or ".." segments' };
  }
  return { ok: true, name, path, query };
}

/** RFC 3986 unreserved characters stay, everything else is %XX (what SigV4 canonicalises to). */
function escapeRfc3986(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** Splits a query (with or without `?`) into SigV4's parameter bag; repeated keys become arrays. */
function queryBag(query: string): Record<string, string | string[]> {
  const bag: Record<string, string | string[]> = {};
  for (const [k, v] of new URLSearchParams(query)) {
    const prev = bag[k];
    if (prev === undefined) bag[k] = v;
    else if (Array.isArray(prev)) prev.push(v);
    else bag[k] = [prev, v];
  }
  return bag;
}

/** Serialises a parameter bag the way it was signed. */
function queryString(bag: Record<string, string | string[]>): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(bag)) {
    for (const value of Array.isArray(v) ? v : [v]) parts.push(`${escapeRfc3986(k)}=${escapeRfc3986(value)}`);
  }
  return parts.length === 0 ? '' : `?${parts.join('&')}`;
}

/**
 * Builds what goes to the upstream for one request from a sandbox: the sandbox's end-to-end
 * `headers` minus Host, Content-Length, Expect and every credential header (`x-api-key`,
 * `authorization`, `x-amz-*`), then Host and Content-Length for `body`, then the upstream's
 * credentials: `x-api-key` for anthropic, a SigV4 signature over method, path, query, headers and
 * body for bedrock (so those must be sent exactly as returned). `path` and `query` are the
 * sandbox's part (see parseUpstreamTarget).
 */
export async function authorizeUpstreamRequest(
  upstream: ResolvedUpstream,
  request: {
    readonly method: string;
    readonly path: string;
    readonly query: string;
    readonly headers: readonly (readonly [string, string])[];
    readonly body: Buffer;
  },
): Promise<AuthorizedRequest> {
  const path = `${upstream.basePath}${request.path}`;
  const kept = request.headers.filter(([n]) => !isDroppedHeader(n.toLowerCase()));
  const hasBody = request.body.length > 0 || !['GET', 'HEAD', 'DELETE', 'OPTIONS'].includes(request.method);
  const framing: [string, string][] = [['host', upstream.host]];
  if (hasBody) framing.push(['content-length', String(request.body.length)]);

  switch (upstream.auth.kind) {
    case 'api-key':
      return {
        path: `${path}${request.query}`,
        headers: [
          ...framing,
          ...kept.map(([n, v]): [string, string] => [n, v]),
          ['x-api-key', upstream.auth.apiKey],
        ],
      };
    case 'sigv4': {
      // One value per lowercase name: what is signed must be exactly what is sent.
      const bag: Record<string, string> = {};
      for (const [n, v] of [...framing, ...kept]) {
        const lower = n.toLowerCase();
        bag[lower] = bag[lower] === undefined ? v : `${bag[lower]},${v}`;
      }
      const query = queryBag(request.query);
      const [signer, { HttpRequest }] = await Promise.all([
        upstream.auth.signer(),
        import('@smithy/protocol-http'),
      ]);
      const signed = await signer.sign(
        new HttpRequest({
          method: request.method,
          protocol: upstream.protocol,
          hostname: upstream.hostname,
          port: upstream.port,
          path,
          query,
          headers: bag,
          body: request.body.length > 0 ? request.body : undefined,
        }),
      );
      return { path: `${path}${queryString(query)}`, headers: Object.entries(signed.headers) };
    }
  }
}
