/**
 * A small client for the OCI distribution API (https://github.com/opencontainers/distribution-spec):
 * image references, manifests (OCI and Docker v2, with image indexes / manifest lists) and blobs
 * streamed to disk with their sha256 and size verified. Built on node:http / node:https only.
 *
 * Transport: https, except for loopback registries and those listed in `insecureRegistries`, which
 * are spoken to over plain http. Redirects (registries send blob GETs to their storage) are followed
 * up to `maxRedirects`; the Authorization header is only ever sent to the registry's own host.
 *
 * Auth: nothing is sent until the registry answers 401. A `Bearer` challenge is answered by fetching
 * a token from its realm (with Basic credentials when given; anonymously otherwise), a `Basic`
 * challenge with the credentials. A refused login is REGISTRY_AUTH_FAILED.
 *
 * Errors: an unreachable registry, a timeout, a 5xx or any other unexpected answer is
 * IMAGE_PULL_FAILED; a 404 for a manifest is IMAGE_NOT_FOUND naming the reference; a blob or
 * manifest whose bytes do not match its digest or size is IMAGE_DIGEST_MISMATCH.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import http from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import {
  MAX_MANIFEST_BYTES,
  MEDIA_TYPES,
  digestHex,
  isIndexMediaType,
  isManifestMediaType,
  parseIndex,
  selectPlatformManifest,
} from './oci-layout.js';
import type { Descriptor, Platform } from './oci-layout.js';
import type { RegistryCredentials } from './types.js';

/** Where Docker Hub's API really lives; `docker.io` is only the name in references. */
export const DOCKER_HUB_HOST = 'registry-1.docker.io';
const DOCKER_HUB_NAMES: ReadonlySet<string> = new Set(['docker.io', 'index.docker.io', DOCKER_HUB_HOST]);

/** The Accept header for manifests: indexes first, then single manifests (OCI and Docker v2). */
export const MANIFEST_ACCEPT = [
  MEDIA_TYPES.ociIndex,
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.dockerManifestList,
  MEDIA_TYPES.dockerManifest,
].join(', ');

export interface ImageReference {
  /** Registry as written (`127.0.0.1:5000`, `ghcr.io`); `docker.io` when the reference names none. */
  readonly registry: string;
  /** Host[:port] the API is spoken to (`registry-1.docker.io` for Docker Hub). */
  readonly apiHost: string;
  /** Repository path, e.g. `test/img` (`library/alpine` for a bare Docker Hub name). */
  readonly repository: string;
  /** Tag; `latest` when the reference has neither tag nor digest; undefined for a bare digest. */
  readonly tag: string | undefined;
  /** `sha256:<hex>` when the reference pins one (it wins over the tag). */
  readonly digest: string | undefined;
}

const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const HOSTNAME_RE =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/;

function badRef(ref: string, why: string): AppError {
  return new AppError(
    'INVALID_ARGUMENT',
    `bad image reference ${JSON.stringify(ref)}: ${why} (expected host[:port]/repository[:tag|@sha256:<hex>])`,
  );
}

/** True when `host` (host or host:port, IPv6 in brackets) is a valid registry address. */
function validRegistryHost(host: string): boolean {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(host);
  if (!m) return false;
  const name = m[1] ?? '';
  if (m[2] !== undefined && (Number(m[2]) < 1 || Number(m[2]) > 65535)) return false;
  if (name.startsWith('[')) return isIP(name.slice(1, -1)) === 6;
  return isIP(name) === 4 || HOSTNAME_RE.test(name);
}

/** True when the first path component of `ref` names a registry host (has `.` or `:`, or is localhost). */
function hasRegistryHost(ref: string): boolean {
  const slash = ref.indexOf('/');
  if (slash <= 0) return false;
  const first = ref.slice(0, slash);
  return first.includes('.') || first.includes(':') || first === 'localhost';
}

/**
 * Parses `[host[:port]/]repository[:tag][@sha256:<hex>]`. Without a host the reference is a
 * Docker Hub one (`alpine` → docker.io/library/alpine:latest). INVALID_ARGUMENT when malformed.
 */
export function parseImageReference(ref: string): ImageReference {
  if (ref.length === 0 || ref.length > 255) throw badRef(ref, 'empty or longer than 255 characters');
  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!digest.startsWith('sha256:')) throw badRef(ref, 'only sha256 digests are supported');
    if (digestHex(digest) === undefined) throw badRef(ref, 'the digest is not sha256:<64 lowercase hex>');
  }
  let registry = 'docker.io';
  if (hasRegistryHost(rest)) {
    const slash = rest.indexOf('/');
    registry = rest.slice(0, slash);
    rest = rest.slice(slash + 1);
    if (!validRegistryHost(registry)) throw badRef(ref, `"${registry}" is not a host[:port]`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw badRef(ref, `"${tag}" is not a valid tag`);
  }
  const parts = rest.split('/');
  if (rest === '' || !parts.every((p) => PATH_COMPONENT_RE.test(p))) {
    throw badRef(ref, `"${rest}" is not a repository (lowercase letters, digits and . _ - separated by /)`);
  }
  const hub = DOCKER_HUB_NAMES.has(registry);
  const repository = hub && parts.length === 1 ? `library/${rest}` : rest;
  return {
    registry,
    apiHost: hub ? DOCKER_HUB_HOST : registry,
    repository,
    tag: tag ?? (digest === undefined ? 'latest' : undefined),
    digest,
  };
}

/**
 * True when `ref` can be pulled as written: it parses and names its registry host explicitly
 * (`127.0.0.1:5000/test/img:1`, `ghcr.io/org/img`). Bare names (`alpine`, `my-image:1`) and `host`
 * are local names, never pulled implicitly.
 */
export function isPullableReference(ref: string): boolean {
  if (!hasRegistryHost(ref.split('@')[0] ?? '')) return false;
  try {
    parseImageReference(ref);
    return true;
  } catch {
    return false;
  }
}

/** `registry/repository[:tag][@digest]` for messages. */
export function formatReference(r: ImageReference): string {
  return `${r.registry}/${r.repository}${r.tag === undefined ? '' : `:${r.tag}`}${r.digest === undefined ? '' : `@${r.digest}`}`;
}

/** True for `localhost`, 127.0.0.0/8 and ::1 (with or without a port). */
export function isLoopbackHost(host: string): boolean {
  let name = host;
  const v6 = /^\[([^\]]+)\](?::\d+)?$/.exec(host);
  if (v6) name = v6[1] ?? '';
  else if (name.includes(':') && isIP(name) !== 6) name = name.slice(0, name.lastIndexOf(':'));
  name = name.toLowerCase();
  if (name === 'localhost' || name === '::1') return true;
  return isIP(name) === 4 && name.startsWith('127.');
}

// ---------------------------------------------------------------- WWW-Authenticate

export interface AuthChallenge {
  /** Lowercased scheme: `bearer`, `basic`, … */
  readonly scheme: string;
  /** Parameters with lowercased names (`realm`, `service`, `scope`, `error`). */
  readonly params: Readonly<Record<string, string>>;
}

/**
 * Parses a WWW-Authenticate header (RFC 9110 §11.6.1) into its challenges. Quoted values may
 * contain commas and escaped quotes (`scope="repository:a/b:pull,push"`). Malformed trailing
 * input is ignored rather than thrown on: the caller decides what a missing realm means.
 */
export function parseWwwAuthenticate(header: string): AuthChallenge[] {
  const out: { scheme: string; params: Record<string, string> }[] = [];
  let i = 0;
  const n = header.length;
  const skipWs = (): void => {
    while (i < n && (header[i] === ' ' || header[i] === '\t')) i++;
  };
  const token = (): string => {
    const start = i;
    while (i < n && /[!#$%&'*+\-.^_`|~0-9A-Za-z/]/.test(header[i] ?? '')) i++;
    return header.slice(start, i);
  };
  while (i < n) {
    skipWs();
    if (header[i] === ',') {
      i++;
      continue;
    }
    const scheme = token();
    if (scheme === '') break;
    const challenge = { scheme: scheme.toLowerCase(), params: {} as Record<string, string> };
    out.push(challenge);
    // auth-params: name=value pairs separated by commas, until the next scheme token
    for (;;) {
      skipWs();
      while (header[i] === ',') {
        i++;
        skipWs();
      }
      const save = i;
      const name = token();
      skipWs();
      if (name === '') break;
      if (header[i] !== '=') {
        i = save; // the next challenge's scheme (or a token68, which we do not use)
        break;
      }
      i++; // '='
      skipWs();
      let value = '';
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === '\\' && i + 1 < n) i++;
          value += header[i];
          i++;
        }
        i++; // closing quote
      } else {
        const start = i;
        while (i < n && header[i] !== ',' && header[i] !== ' ') i++;
        value = header.slice(start, i);
      }
      challenge.params[name.toLowerCase()] = value;
    }
  }
  return out;
}

// ---------------------------------------------------------------- manifests

export type ManifestKind = 'index' | 'manifest';

/**
 * Says whether a fetched manifest document is an image index (manifest list) or a single image
 * manifest, from its media type (the response's Content-Type, else the document's own mediaType,
 * else its shape). IMAGE_INVALID for anything else (schema 1 manifests, artifacts).
 */
export function manifestKind(body: Buffer, contentType: string | undefined, what: string): ManifestKind {
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8')) as unknown;
  } catch (err) {
    throw new AppError('IMAGE_INVALID', `${what} is not valid JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const obj = typeof doc === 'object' && doc !== null ? (doc as Record<string, unknown>) : {};
  const ct = (contentType ?? '').split(';')[0]?.trim() ?? '';
  const declared = typeof obj.mediaType === 'string' ? obj.mediaType : '';
  for (const t of [ct, declared]) {
    if (isIndexMediaType(t)) return 'index';
    if (isManifestMediaType(t)) return 'manifest';
  }
  if (obj.schemaVersion === 2 && Array.isArray(obj.manifests)) return 'index';
  if (obj.schemaVersion === 2 && Array.isArray(obj.layers)) return 'manifest';
  throw new AppError(
    'IMAGE_INVALID',
    `${what} has unsupported media type "${ct || declared || 'unknown'}" (schema 1 manifests are not supported; push the image again with a current client)`,
  );
}

/** Picks the manifest for `platform` from an image index document. */
export function selectIndexManifest(body: Buffer, platform: Platform, what: string): Descriptor {
  return selectPlatformManifest(parseIndex(body, what), platform, what);
}

// ---------------------------------------------------------------- the client

/** Settings shared by every pull of a store (the credentials come per pull). */
export interface RegistrySettings {
  /**
   * Registries (`host` or `host:port`) spoken to over plain http. Loopback registries always are;
   * every other registry over https.
   */
  readonly insecureRegistries?: readonly string[];
  /** Time to open a connection (TCP, and TLS for https); default 15 s. */
  readonly connectTimeoutMs?: number;
  /** Time a connection may stay silent, waiting for an answer or mid-body; default 60 s. */
  readonly idleTimeoutMs?: number;
  /** Redirects followed per request; default 5. */
  readonly maxRedirects?: number;
}

export interface RegistryClientOptions extends RegistrySettings {
  readonly logger: Logger;
  /** Used when the registry asks for credentials (Basic, or to fetch a Bearer token). */
  readonly auth?: RegistryCredentials | undefined;
}

export interface FetchedManifest {
  readonly body: Buffer;
  /** sha256 of the body (what the registry's Docker-Content-Digest must say). */
  readonly digest: string;
  readonly kind: ManifestKind;
  readonly contentType: string | undefined;
}

export interface BlobDownloadOptions {
  readonly signal?: AbortSignal | undefined;
  /** Called as bytes arrive (cumulative count). */
  readonly onBytes?: ((bytesDone: number) => void) | undefined;
}

interface Sent {
  readonly res: IncomingMessage;
  readonly url: URL;
}

const REDIRECTS: ReadonlySet<number> = new Set([301, 302, 303, 307, 308]);

function pullFailed(message: string, cause?: unknown): AppError {
  return new AppError('IMAGE_PULL_FAILED', message, cause === undefined ? {} : { cause });
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/** Reads at most `max` bytes of a body; `over` is thrown when it is longer. */
async function readBody(res: IncomingMessage, max: number, over: () => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of res) {
    const chunk = c as Buffer;
    size += chunk.length;
    if (size > max) {
      res.destroy();
      throw over();
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

/** The registry's own error text (`errors[].message` of its JSON body), for messages. */
async function errorText(res: IncomingMessage): Promise<string> {
  let body: Buffer;
  try {
    body = await readBody(res, 16 * 1024, () => new Error('long'));
  } catch {
    return '';
  }
  const text = body.toString('utf8');
  try {
    const doc = JSON.parse(text) as { errors?: { code?: unknown; message?: unknown }[] };
    const msgs = (doc.errors ?? [])
      .map((e) => [e.code, e.message].filter((x) => typeof x === 'string').join(': '))
      .filter((s) => s !== '');
    if (msgs.length > 0) return msgs.join('; ');
  } catch {
    // not JSON: use the text itself
  }
  return text.trim().slice(0, 200);
}

function aborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}

/**
 * One client per pull: it caches the tokens it obtained and keeps connections alive between
 * requests. Call close() when done (it drops the idle connections).
 */
export class RegistryClient {
  private readonly logger: Logger;
  private readonly auth: RegistryCredentials | undefined;
  private readonly insecure: ReadonlySet<string>;
  private readonly connectTimeoutMs: number;
  private readonly idleTimeoutMs: number;
  private readonly maxRedirects: number;
  private readonly httpAgent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  private readonly httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 4 });
  /** `apiHost repository` -> Authorization header value that the registry accepted. */
  private readonly authorizations = new Map<string, string>();

  constructor(options: RegistryClientOptions) {
    this.logger = options.logger;
    this.auth = options.auth;
    this.insecure = new Set((options.insecureRegistries ?? []).map((h) => h.toLowerCase()));
    this.connectTimeoutMs = options.connectTimeoutMs ?? 15_000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
    this.maxRedirects = options.maxRedirects ?? 5;
  }

  /** Drops kept-alive connections. The client must not be used afterwards. */
  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  /** True when `host` (host or host:port) may be spoken to over plain http. */
  allowsPlainHttp(host: string): boolean {
    const h = host.toLowerCase();
    if (isLoopbackHost(h)) return true;
    if (this.insecure.has(h)) return true;
    const bare = /^(\[[^\]]+\]|[^:]+)(?::\d+)?$/.exec(h)?.[1];
    return bare !== undefined && this.insecure.has(bare);
  }

  private baseUrl(ref: ImageReference): string {
    return `${this.allowsPlainHttp(ref.apiHost) ? 'http' : 'https'}://${ref.apiHost}`;
  }

  /**
   * Fetches the manifest `reference` (a tag or digest; default the ref's digest, else its tag) of
   * `ref.repository`. Verifies the body against the digest when fetching by digest, and against the
   * registry's Docker-Content-Digest header otherwise (IMAGE_DIGEST_MISMATCH). IMAGE_NOT_FOUND for
   * a 404.
   */
  async getManifest(
    ref: ImageReference,
    reference?: string,
    options: { signal?: AbortSignal | undefined; expectedSize?: number | undefined } = {},
  ): Promise<FetchedManifest> {
    const target = reference ?? ref.digest ?? ref.tag ?? 'latest';
    const what = `manifest ${ref.registry}/${ref.repository}${target.startsWith('sha256:') ? '@' : ':'}${target}`;
    const { res } = await this.request(ref, `/v2/${ref.repository}/manifests/${target}`, {
      accept: MANIFEST_ACCEPT,
      signal: options.signal,
      what,
    });
    if (res.statusCode === 404) {
      const text = await errorText(res);
      throw new AppError(
        'IMAGE_NOT_FOUND',
        `image ${formatReference(ref)} not found: registry ${ref.registry} has no ${what}${text ? ` (${text})` : ''}; check the repository and tag`,
        { details: { reference: formatReference(ref) } },
      );
    }
    if (res.statusCode !== 200) throw await this.unexpected(res, ref, what);
    const body = await readBody(
      res,
      MAX_MANIFEST_BYTES,
      () => new AppError('IMAGE_INVALID', `${what} is larger than ${MAX_MANIFEST_BYTES} bytes`),
    );
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    const expected = target.startsWith('sha256:') ? target : header(res.headers, 'docker-content-digest');
    if (expected !== undefined && expected.startsWith('sha256:') && expected !== digest) {
      throw new AppError(
        'IMAGE_DIGEST_MISMATCH',
        `${what} has digest ${digest}, but ${target.startsWith('sha256:') ? 'was requested by' : 'the registry says'} ${expected}: the manifest was modified in transit or the registry is corrupt`,
        { details: { digest: expected, actual: digest } },
      );
    }
    if (options.expectedSize !== undefined && options.expectedSize !== body.length) {
      throw new AppError(
        'IMAGE_DIGEST_MISMATCH',
        `${what} is ${body.length} bytes, but its descriptor says ${options.expectedSize}`,
        { details: { digest, size: body.length, declared: options.expectedSize } },
      );
    }
    const contentType = header(res.headers, 'content-type');
    return { body, digest, kind: manifestKind(body, contentType, what), contentType };
  }

  /**
   * Streams blob `desc` of `ref.repository` into `dest` (created, must not exist), verifying its
   * size and sha256 on the way: IMAGE_DIGEST_MISMATCH when they differ from the descriptor. On any
   * failure `dest` is deleted.
   */
  async downloadBlob(
    ref: ImageReference,
    desc: Pick<Descriptor, 'digest' | 'size'>,
    dest: string,
    options: BlobDownloadOptions = {},
  ): Promise<void> {
    const what = `blob ${desc.digest} of ${ref.registry}/${ref.repository}`;
    try {
      const { res } = await this.request(ref, `/v2/${ref.repository}/blobs/${desc.digest}`, {
        signal: options.signal,
        what,
      });
      if (res.statusCode === 404) {
        const text = await errorText(res);
        throw pullFailed(
          `${what} is missing from the registry although the manifest lists it${text ? ` (${text})` : ''}; push the image again`,
        );
      }
      if (res.statusCode !== 200) throw await this.unexpected(res, ref, what);
      const announced = header(res.headers, 'content-length');
      if (announced !== undefined && Number(announced) !== desc.size) {
        res.destroy();
        throw new AppError(
          'IMAGE_DIGEST_MISMATCH',
          `${what}: the registry sends ${announced} bytes but the descriptor says ${desc.size}`,
          { details: { digest: desc.digest, size: Number(announced), declared: desc.size } },
        );
      }
      const hash = createHash('sha256');
      let size = 0;
      const onBytes = options.onBytes;
      const meter = new Transform({
        transform(chunk: Buffer, _enc, cb): void {
          size += chunk.length;
          if (size > desc.size) {
            cb(
              new AppError(
                'IMAGE_DIGEST_MISMATCH',
                `${what} is longer than the ${desc.size} bytes its descriptor says`,
                { details: { digest: desc.digest, declared: desc.size } },
              ),
            );
            return;
          }
          hash.update(chunk);
          onBytes?.(size);
          cb(null, chunk);
        },
      });
      try {
        await pipeline(res, meter, createWriteStream(dest, { flags: 'wx', mode: 0o600 }));
      } catch (err) {
        throw this.transportError(err, ref, what, options.signal);
      }
      const actual = `sha256:${hash.digest('hex')}`;
      if (size !== desc.size || actual !== desc.digest) {
        throw new AppError(
          'IMAGE_DIGEST_MISMATCH',
          size !== desc.size
            ? `${what} is ${size} bytes, but its descriptor says ${desc.size}`
            : `${what} has digest ${actual}: it was modified in transit or the registry is corrupt; the download was discarded`,
          { details: { digest: desc.digest, actual, size, declared: desc.size } },
        );
      }
    } catch (err) {
      await rm(dest, { force: true });
      throw err;
    }
  }

  // ------------------------------------------------------------ requests

  private authKey(ref: ImageReference): string {
    return `${ref.apiHost} ${ref.repository}`;
  }

  /**
   * GETs `path` on the registry with auth (answering one 401 challenge) and redirects handled.
   * Returns the final response whatever its status (the caller reads or drains it).
   */
  private async request(
    ref: ImageReference,
    path: string,
    opts: { accept?: string; signal?: AbortSignal | undefined; what: string },
  ): Promise<Sent> {
    let authorization = this.authorizations.get(this.authKey(ref));
    for (let attempt = 0; ; attempt++) {
      const sent = await this.follow(new URL(path, this.baseUrl(ref)), ref, authorization, opts);
      if (sent.res.statusCode !== 401 || sent.url.host !== new URL(this.baseUrl(ref)).host) return sent;
      const challengeHeader = header(sent.res.headers, 'www-authenticate') ?? '';
      const detail = await errorText(sent.res);
      if (attempt > 0) {
        throw new AppError(
          'REGISTRY_AUTH_FAILED',
          `registry ${ref.registry} refused the ${this.auth ? `credentials of "${this.auth.username}"` : 'anonymous token'} for ${opts.what}${detail ? ` (${detail})` : ''}; check the username, password and their access to ${ref.repository}`,
        );
      }
      authorization = await this.authenticate(ref, parseWwwAuthenticate(challengeHeader), opts.signal);
      this.authorizations.set(this.authKey(ref), authorization);
    }
  }

  /** Answers a 401 challenge: returns the Authorization header value to retry with. */
  private async authenticate(
    ref: ImageReference,
    challenges: readonly AuthChallenge[],
    signal: AbortSignal | undefined,
  ): Promise<string> {
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    const basicHeader =
      this.auth === undefined
        ? undefined
        : `Basic ${Buffer.from(`${this.auth.username}:${this.auth.password}`).toString('base64')}`;
    if (bearer === undefined) {
      if (challenges.some((c) => c.scheme === 'basic') && basicHeader !== undefined) return basicHeader;
      throw new AppError(
        'REGISTRY_AUTH_FAILED',
        challenges.some((c) => c.scheme === 'basic')
          ? `registry ${ref.registry} requires credentials; pass a username and password`
          : `registry ${ref.registry} answered 401 with no usable challenge (${challenges.map((c) => c.scheme).join(', ') || 'no WWW-Authenticate'})`,
      );
    }
    const realmText = bearer.params.realm;
    let realm: URL;
    try {
      realm = new URL(realmText ?? '');
    } catch {
      throw pullFailed(`registry ${ref.registry} sent a Bearer challenge without a usable realm URL`);
    }
    if (realm.protocol !== 'https:' && !(realm.protocol === 'http:' && this.allowsPlainHttp(realm.host))) {
      throw pullFailed(
        `registry ${ref.registry} sends its token realm ${realm.href} over ${realm.protocol.replace(':', '')}; only https (or http to a loopback or insecure registry) is used`,
      );
    }
    if (bearer.params.service !== undefined) realm.searchParams.set('service', bearer.params.service);
    const scope = bearer.params.scope ?? `repository:${ref.repository}:pull`;
    for (const s of scope.split(' ').filter((x) => x !== '')) realm.searchParams.append('scope', s);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (basicHeader !== undefined) headers.authorization = basicHeader;
    const res = await this.send(realm, headers, signal, `token for ${ref.registry}`);
    if (res.statusCode === 401 || res.statusCode === 403) {
      const detail = await errorText(res);
      throw new AppError(
        'REGISTRY_AUTH_FAILED',
        this.auth === undefined
          ? `registry ${ref.registry} requires credentials to pull ${ref.repository} (token service ${realm.host} answered ${res.statusCode}${detail ? `: ${detail}` : ''}); pass a username and password`
          : `registry ${ref.registry} refused the login of "${this.auth.username}" (token service ${realm.host} answered ${res.statusCode}${detail ? `: ${detail}` : ''}); check the credentials`,
      );
    }
    if (res.statusCode !== 200) {
      const detail = await errorText(res);
      throw pullFailed(
        `token service ${realm.host} of registry ${ref.registry} answered ${res.statusCode}${detail ? `: ${detail}` : ''}`,
      );
    }
    let doc: { token?: unknown; access_token?: unknown };
    try {
      doc = JSON.parse(
        (
          await readBody(res, 1024 * 1024, () => pullFailed(`token from ${realm.host} is over 1 MiB`))
        ).toString('utf8'),
      ) as typeof doc;
    } catch (err) {
      if (err instanceof AppError) throw err;
      throw this.transportError(err, ref, `token from ${realm.host}`, signal);
    }
    const token = typeof doc.token === 'string' ? doc.token : doc.access_token;
    if (typeof token !== 'string' || token === '')
      throw pullFailed(`token service ${realm.host} of registry ${ref.registry} returned no token`);
    return `Bearer ${token}`;
  }

  /** Sends a GET, following redirects; Authorization goes only to the registry's own host. */
  private async follow(
    start: URL,
    ref: ImageReference,
    authorization: string | undefined,
    opts: { accept?: string; signal?: AbortSignal | undefined; what: string },
  ): Promise<Sent> {
    let url = start;
    for (let hops = 0; ; hops++) {
      const headers: Record<string, string> = {};
      if (opts.accept !== undefined) headers.accept = opts.accept;
      if (authorization !== undefined && url.host === start.host && url.protocol === start.protocol)
        headers.authorization = authorization;
      const res = await this.send(url, headers, opts.signal, opts.what);
      const location = header(res.headers, 'location');
      if (!REDIRECTS.has(res.statusCode ?? 0) || location === undefined) return { res, url };
      res.resume();
      if (hops >= this.maxRedirects) {
        throw pullFailed(
          `${opts.what}: more than ${this.maxRedirects} redirects (last to ${location}); the registry is misconfigured`,
        );
      }
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw pullFailed(
          `${opts.what}: the registry redirected to an invalid URL ${JSON.stringify(location)}`,
        );
      }
      if (next.protocol !== 'https:' && !(next.protocol === 'http:' && this.allowsPlainHttp(next.host))) {
        throw pullFailed(
          `${opts.what}: the registry redirected to ${next.protocol}//${next.host}, which is not https (only loopback or insecure registries may use http)`,
        );
      }
      this.logger.debug({ from: url.href, to: next.href }, 'registry redirect');
      url = next;
    }
  }

  /** One GET with connect and idle timeouts. Resolves with the response (any status). */
  private send(
    url: URL,
    headers: Record<string, string>,
    signal: AbortSignal | undefined,
    what: string,
  ): Promise<IncomingMessage> {
    if (aborted(signal)) return Promise.reject(pullFailed(`${what}: the pull was cancelled`));
    const isHttps = url.protocol === 'https:';
    const mod = isHttps ? https : http;
    return new Promise<IncomingMessage>((resolve, reject) => {
      let connectTimer: NodeJS.Timeout | undefined;
      let response: IncomingMessage | undefined;
      const fail = (err: unknown): void => {
        if (connectTimer) clearTimeout(connectTimer);
        reject(this.transportError(err, undefined, `${what} (${url.host})`, signal));
      };
      const req = mod.request(
        url,
        {
          method: 'GET',
          headers: { 'user-agent': 'hako', ...headers },
          agent: isHttps ? this.httpsAgent : this.httpAgent,
          signal,
        },
        (res) => {
          if (connectTimer) clearTimeout(connectTimer);
          response = res;
          resolve(res);
        },
      );
      req.on('error', fail);
      req.on('socket', (socket) => {
        if (!socket.connecting) return;
        connectTimer = setTimeout(() => {
          req.destroy(
            Object.assign(new Error(`no connection to ${url.host} within ${this.connectTimeoutMs} ms`), {
              code: 'ETIMEDOUT',
            }),
          );
        }, this.connectTimeoutMs);
        socket.once(isHttps ? 'secureConnect' : 'connect', () => clearTimeout(connectTimer));
      });
      req.setTimeout(this.idleTimeoutMs, () => {
        const err = Object.assign(new Error(`${url.host} sent nothing for ${this.idleTimeoutMs} ms`), {
          code: 'ETIMEDOUT',
        });
        // mid-body, the response stream must fail with the timeout rather than a bare "aborted"
        response?.destroy(err);
        req.destroy(err);
      });
      req.end();
    });
  }

  /** Maps a network-level failure to IMAGE_PULL_FAILED (AppErrors pass through). */
  private transportError(
    err: unknown,
    ref: ImageReference | undefined,
    what: string,
    signal: AbortSignal | undefined,
  ): AppError {
    if (err instanceof AppError) return err;
    if (aborted(signal) || (err as Error | undefined)?.name === 'AbortError')
      return pullFailed(`${what}: the pull was cancelled`, err);
    const e = err as NodeJS.ErrnoException;
    const code = typeof e.code === 'string' ? e.code : '';
    const where = ref === undefined ? '' : ` from registry ${ref.registry}`;
    const hint =
      code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH'
        ? '; check the registry address and that it is running'
        : code === 'ETIMEDOUT'
          ? '; the registry is slow or unreachable'
          : code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'ECONNRESET'
            ? '; the connection dropped, try again'
            : '';
    return pullFailed(
      `fetching ${what}${where} failed: ${e.message}${code && !e.message.includes(code) ? ` (${code})` : ''}${hint}`,
      err,
    );
  }

  /** IMAGE_PULL_FAILED (or REGISTRY_AUTH_FAILED for 401/403) for an unexpected status. */
  private async unexpected(res: IncomingMessage, ref: ImageReference, what: string): Promise<AppError> {
    const status = res.statusCode ?? 0;
    const text = await errorText(res);
    const detail = text ? `: ${text}` : '';
    if (status === 401 || status === 403) {
      return new AppError(
        'REGISTRY_AUTH_FAILED',
        `registry ${ref.registry} denied access to ${what} (${status}${detail}); check the credentials and their access to ${ref.repository}`,
      );
    }
    if (status === 429)
      return pullFailed(
        `registry ${ref.registry} rate-limits us (429) fetching ${what}${detail}; retry later`,
      );
    if (status >= 500)
      return pullFailed(`registry ${ref.registry} failed fetching ${what} (${status}${detail}); retry later`);
    return pullFailed(`registry ${ref.registry} answered ${status} fetching ${what}${detail}`);
  }
}
