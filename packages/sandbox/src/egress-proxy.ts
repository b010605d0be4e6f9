/**
 * The egress proxy: an HTTP forward proxy (CONNECT tunnels and absolute-URI plain HTTP) that every
 * sandbox's traffic goes through. A sandbox is identified by the TCP source address of the
 * connection; each request is checked against that sandbox's allowlist (see egress-policy.ts) and
 * sent to the exact address that was resolved and checked, never looked up twice.
 *
 * It is also a reverse proxy for named upstreams (see upstreams.ts): a plain-HTTP request for
 * `/_hako/upstream/{name}/…` (origin-form, or absolute-form naming the proxy itself, as a client
 * that honours HTTP_PROXY sends it) from a sandbox registered with that upstream goes to hakod's
 * configured base URL with the real credentials added. The allowlist does not apply there: the
 * address is hakod's own config, and the sandbox only supplies the path and query.
 */
import { lookup } from 'node:dns/promises';
import { Agent as HttpAgent, createServer, request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, Server, ServerResponse } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { connect as netConnect } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { AppError, type ErrorCode, type Logger } from '@hako/core';
import {
  canonicalIp,
  classifyAddress,
  decide,
  hostForUrl,
  needsResolution,
  parseAllowlist,
  socketIp,
} from './egress-policy.js';
import type { AllowEntry } from './egress-policy.js';
import type { EgressProxy } from './types.js';
import {
  authorizeUpstreamRequest,
  parseUpstreamTarget,
  resolveUpstreams,
  upstreamNames,
} from './upstreams.js';
import type {
  AuthorizedRequest,
  ResolvedUpstream,
  UpstreamName,
  UpstreamTarget,
  UpstreamsConfig,
} from './upstreams.js';

export interface HttpEgressProxyOptions {
  readonly logger: Logger;
  /** Resolves a DNS name to its addresses. Defaults to the system resolver (IPv4 first). */
  readonly resolver?: (host: string) => Promise<string[]>;
  /** Budget for resolving a name and for each TCP connect attempt, in ms (default 10000). */
  readonly connectTimeoutMs?: number;
  /**
   * Named upstreams hakod holds credentials for (see upstreams.ts); checked here, CONFIG_INVALID
   * when unusable. Undefined or empty: no sandbox can be given an upstream.
   */
  readonly upstreams?: UpstreamsConfig | undefined;
  /** Largest request body sent to an upstream (it is buffered, to sign it); default 32 MiB, over it 413. */
  readonly upstreamMaxBodyBytes?: number;
}

/** What the proxy holds for one sandbox. */
export interface EgressRegistration {
  readonly sourceIp: string;
  readonly sandboxId: string;
  readonly allowlist: readonly AllowEntry[];
  /** Named upstreams this sandbox may reach through `/_hako/upstream/{name}/` (empty: none). */
  readonly upstreams: readonly UpstreamName[];
}

/** Headers that describe one hop, never forwarded (RFC 9110 7.6.1), plus Proxy-*. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** How long a tunnel's surviving side may linger after its partner closed. */
const TUNNEL_LINGER_MS = 30_000;
/** How long a refused CONNECT client may take to close after the error response. */
const REFUSE_LINGER_MS = 5_000;

class ConnectTimeoutError extends Error {}
class ClientGoneError extends Error {}

/**
 * Reads a request body into memory. Resolves 'too-large' as soon as it passes `max` bytes (the
 * rest is discarded); rejects with ClientGoneError when the client goes away first.
 */
function readBody(req: IncomingMessage, max: number): Promise<Buffer | 'too-large'> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > max) {
        req.off('data', onData);
        req.resume();
        resolve('too-large');
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
    req.once('close', () => {
      if (!req.complete) reject(new ClientGoneError('client closed the request early'));
    });
  });
}

function defaultResolver(host: string): Promise<string[]> {
  return lookup(host, { all: true, order: 'ipv4first' }).then((rs) => rs.map((r) => r.address));
}

/**
 * Sends an upstream's answer back to the sandbox: status and end-to-end headers, then the body, each
 * chunk written as it arrives (no buffering: streamed answers stay streamed).
 */
function relayAnswer(answer: IncomingMessage, res: ServerResponse): void {
  res.writeHead(
    answer.statusCode ?? 502,
    answer.statusMessage,
    endToEndHeaders(answer.rawHeaders, answer.headers).flat(),
  );
  answer.pipe(res);
  answer.on('error', () => res.destroy());
}

/** Runs `p` with a deadline; rejects with ConnectTimeoutError when it passes. */
function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ConnectTimeoutError(`timed out after ${ms}ms`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

/** Splits a CONNECT authority (`host:port`, `[v6]:port`) into host and port. */
function parseAuthority(authority: string): { host: string; port: number } | undefined {
  const m = /^(\[[^\]]+\]|[^:[\]]+):([0-9]{1,5})$/.exec(authority);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1]!, port };
}

/** Copies raw headers minus hop-by-hop ones, Proxy-* and whatever Connection names. */
function endToEndHeaders(rawHeaders: readonly string[], parsed: IncomingHttpHeaders): [string, string][] {
  const named = new Set(
    String(parsed.connection ?? '')
      .split(',')
      .map((t) => t.trim().toLowerCase())
      .filter((t) => t !== ''),
  );
  const out: [string, string][] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || lower.startsWith('proxy-') || named.has(lower)) continue;
    out.push([name, rawHeaders[i + 1]!]);
  }
  return out;
}

function rawResponse(status: number, reason: string, body: string): string {
  return (
    `HTTP/1.1 ${status} ${reason}\r\n` +
    'Content-Type: text/plain; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    'Connection: close\r\n\r\n' +
    body
  );
}

const STATUS_TEXT: Readonly<Record<number, string>> = {
  400: 'Bad Request',
  403: 'Forbidden',
  502: 'Bad Gateway',
  504: 'Gateway Timeout',
};

/** The Anthropic API's error type for a status, so SDKs in the sandbox show the message. */
const API_ERROR_TYPE: Readonly<Record<number, string>> = {
  400: 'invalid_request_error',
  403: 'permission_error',
  413: 'request_too_large',
};

const DEFAULT_UPSTREAM_MAX_BODY = 32 * 1024 * 1024;

/**
 * Answers a raw socket (CONNECT, malformed request) with an error and closes it. Unread input is
 * drained first so the close does not turn into a reset that loses the response.
 */
function refuse(socket: Duplex, status: number, body: string): void {
  if (socket.destroyed) return;
  socket.end(rawResponse(status, STATUS_TEXT[status] ?? 'Error', body));
  socket.resume();
  const timer = setTimeout(() => socket.destroy(), REFUSE_LINGER_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/** Every address of this host's interfaces, canonical. */
function localAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) out.add(socketIp(i.address) ?? i.address);
  }
  return out;
}

interface Refusal {
  readonly ok: false;
  readonly status: number;
  readonly body: string;
}

/** The outcome of checking one request: where to connect, or the response to give instead. */
type Verdict =
  { readonly ok: true; readonly reg: EgressRegistration; readonly addresses: readonly string[] } | Refusal;

export class HttpEgressProxy implements EgressProxy {
  private readonly logger: Logger;
  private readonly resolver: (host: string) => Promise<string[]>;
  private readonly connectTimeoutMs: number;
  private readonly upstreams: ReadonlyMap<UpstreamName, ResolvedUpstream>;
  private readonly upstreamsConfig: UpstreamsConfig | undefined;
  private readonly upstreamMaxBodyBytes: number;
  /** Connections to upstreams, kept alive between requests; destroyed by close(). */
  private readonly httpAgent = new HttpAgent({ keepAlive: true });
  private readonly httpsAgent = new HttpsAgent({ keepAlive: true });
  private readonly server: Server;
  /** Registered sandboxes by canonical source address. */
  private readonly sandboxes = new Map<string, EgressRegistration>();
  /** Every open socket: client sockets map to their source address, upstream sockets to undefined. */
  private readonly sockets = new Map<Socket, string | undefined>();
  private bound: { host: string; port: number } | undefined;
  private listenUrl = '';

  constructor(options: HttpEgressProxyOptions) {
    this.logger = options.logger;
    this.resolver = options.resolver ?? defaultResolver;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.upstreamsConfig = options.upstreams;
    this.upstreams = resolveUpstreams(options.upstreams);
    this.upstreamMaxBodyBytes = options.upstreamMaxBodyBytes ?? DEFAULT_UPSTREAM_MAX_BODY;
    this.server = createServer();
    this.server.on('connection', (socket: Socket) => {
      this.sockets.set(socket, socketIp(socket.remoteAddress ?? '') ?? '');
      socket.once('close', () => this.sockets.delete(socket));
    });
    this.server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      this.onRequest(req, res).catch((err: unknown) => this.internalError(err, res.socket ?? undefined));
    });
    this.server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.onConnect(req, socket as Socket, head).catch((err: unknown) => this.internalError(err, socket));
    });
    this.server.on('clientError', (_err: Error, socket: Duplex) => {
      if (socket.writable) refuse(socket, 400, 'hako egress: malformed request\n');
      else socket.destroy();
    });
    this.server.on('error', (err: Error) => this.logger.error({ err }, 'egress proxy server error'));
  }

  /** `http://host:port` the proxy listens on; empty before listen() and after close(). */
  get url(): string {
    return this.listenUrl;
  }

  /**
   * Starts listening on `host`, on the first port of [port, port+count) that is free (a port in use
   * moves on to the next; any other error stops). Call once, before sandboxes use the proxy.
   */
  async listen(host: string, port: number, count: number): Promise<void> {
    if (this.bound)
      throw new AppError('INVALID_ARGUMENT', `egress proxy already listens on ${this.listenUrl}`);
    if (
      !Number.isInteger(port) ||
      !Number.isInteger(count) ||
      port < 1 ||
      count < 1 ||
      port + count - 1 > 65535
    ) {
      throw new AppError(
        'INVALID_ARGUMENT',
        `egress proxy port range ${port}+${count} is not within 1-65535`,
      );
    }
    for (let p = port; p < port + count; p++) {
      try {
        await new Promise<void>((resolve, reject) => {
          const onError = (err: Error): void => reject(err);
          this.server.once('error', onError);
          this.server.listen({ host, port: p, exclusive: true }, () => {
            this.server.off('error', onError);
            resolve();
          });
        });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') continue;
        throw new AppError(
          'NETWORK_SETUP_FAILED',
          `egress proxy cannot listen on ${hostForUrl(host)}:${p}: ${(err as Error).message}`,
          { cause: err },
        );
      }
      const addr = this.server.address() as AddressInfo;
      this.bound = { host: socketIp(addr.address) ?? addr.address, port: addr.port };
      this.listenUrl = `http://${hostForUrl(canonicalIp(host) ?? host)}:${addr.port}`;
      this.logger.info({ url: this.listenUrl }, 'egress proxy listening');
      return;
    }
    throw new AppError(
      'NETWORK_SETUP_FAILED',
      `egress proxy: every port in ${port}-${port + count - 1} on ${host} is in use; free one or widen the range`,
    );
  }

  /**
   * Lets connections from `sourceIp` reach destinations matching `allowlist` (see
   * parseAllowEntry; an empty list allows nothing) and the named `upstreams` (see upstreams.ts;
   * undefined or empty: none). Throws INVALID_ARGUMENT on a malformed entry, source address or
   * unknown upstream name, or when `sourceIp` is registered to another sandbox (unregister it
   * first); UPSTREAM_NOT_CONFIGURED for an upstream the proxy has no credentials for. Registering
   * the same source and sandbox again replaces the allowlist and upstreams for new requests.
   */
  register(
    sourceIp: string,
    sandboxId: string,
    allowlist: readonly string[],
    upstreams: readonly string[] = [],
  ): void {
    const ip = socketIp(sourceIp);
    if (!ip)
      throw new AppError('INVALID_ARGUMENT', `egress proxy: source "${sourceIp}" is not an IP address`);
    const entries = parseAllowlist(allowlist);
    const names = upstreamNames(upstreams, this.upstreamsConfig);
    const existing = this.sandboxes.get(ip);
    if (existing && existing.sandboxId !== sandboxId) {
      throw new AppError(
        'INVALID_ARGUMENT',
        `egress proxy: source ${ip} is registered to sandbox ${existing.sandboxId}; unregister it before registering ${sandboxId}`,
      );
    }
    this.sandboxes.set(ip, { sourceIp: ip, sandboxId, allowlist: entries, upstreams: names });
  }

  /**
   * Forgets `sourceIp` and closes its open connections and tunnels. Unknown sources are ignored
   * (idempotent, safe on a cleanup stack).
   */
  unregister(sourceIp: string): void {
    const ip = socketIp(sourceIp) ?? sourceIp;
    this.sandboxes.delete(ip);
    for (const [socket, source] of this.sockets) if (source === ip) socket.destroy();
  }

  /** The registration for `sourceIp`, or undefined. */
  registration(sourceIp: string): EgressRegistration | undefined {
    const ip = socketIp(sourceIp);
    return ip ? this.sandboxes.get(ip) : undefined;
  }

  /** Stops listening and destroys every open connection. Safe to call when not listening. */
  async close(): Promise<void> {
    const closed = this.server.listening
      ? new Promise<void>((resolve) => this.server.close(() => resolve()))
      : Promise.resolve();
    for (const socket of this.sockets.keys()) socket.destroy();
    this.sockets.clear();
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
    await closed;
    this.bound = undefined;
    this.listenUrl = '';
  }

  // ---------------------------------------------------------------- request handling

  /** Finds the sandbox, checks the destination, resolves a name once. Logs every denial. */
  private async check(socket: Socket, host: string, port: number): Promise<Verdict> {
    const sourceIp = socketIp(socket.remoteAddress ?? '') ?? String(socket.remoteAddress);
    const reg = this.sandboxes.get(sourceIp);
    if (!reg) {
      this.logger.warn({ sourceIp, host, port, reason: 'unknown source' }, 'egress denied');
      return { ok: false, status: 403, body: `hako egress: ${sourceIp} is not a registered sandbox\n` };
    }
    const deny = (reason: string): Verdict => {
      this.logger.warn({ sandboxId: reg.sandboxId, sourceIp, host, port, reason }, 'egress denied');
      return {
        ok: false,
        status: 403,
        body: `hako egress: ${host}:${port} is not on this sandbox's allowlist\n`,
      };
    };
    const literal = canonicalIp(host);
    let resolved: string[] = [];
    if (!literal && needsResolution(reg.allowlist, host, port)) {
      try {
        resolved = await withTimeout(this.resolver(host), this.connectTimeoutMs);
      } catch (err) {
        const timeout = err instanceof ConnectTimeoutError;
        this.logger.info(
          { sandboxId: reg.sandboxId, sourceIp, host, port, err: (err as Error).message },
          'egress name resolution failed',
        );
        return {
          ok: false,
          status: timeout ? 504 : 502,
          body: `hako egress: cannot resolve ${host}${timeout ? ' (timed out)' : ''}\n`,
        };
      }
      if (!this.sandboxes.has(sourceIp) || socket.destroyed)
        return deny('sandbox unregistered during lookup');
    }
    const decision = decide(reg.allowlist, host, port, resolved);
    if (!decision.allow) return deny(decision.reason);
    if (decision.addresses.some((a) => this.isSelf(a, port)))
      return deny('destination is the egress proxy itself');
    return { ok: true, reg, addresses: decision.addresses };
  }

  /** True when address:port is this proxy's own listener (a request must not loop through it). */
  private isSelf(address: string, port: number): boolean {
    if (!this.bound || port !== this.bound.port) return false;
    const a = socketIp(address) ?? address;
    if (a === this.bound.host) return true;
    const cls = classifyAddress(a);
    if (cls === 'unspecified') return true; // connect() to 0.0.0.0 or :: reaches this host
    if (classifyAddress(this.bound.host) === 'unspecified') {
      return cls === 'loopback' || localAddresses().has(a); // listening on every address
    }
    return false;
  }

  /** Connects to the first address that accepts, each attempt bounded by connectTimeoutMs. */
  private async connectUpstream(addresses: readonly string[], port: number): Promise<Socket> {
    let last: unknown;
    for (const address of addresses) {
      const socket = netConnect({ host: address, port, allowHalfOpen: true });
      this.sockets.set(socket, undefined);
      socket.once('close', () => this.sockets.delete(socket));
      try {
        await withTimeout(
          new Promise<void>((resolve, reject) => {
            socket.once('connect', resolve);
            socket.once('error', reject);
          }),
          this.connectTimeoutMs,
        );
        socket.removeAllListeners('error');
        return socket;
      } catch (err) {
        socket.destroy();
        last = err;
      }
    }
    throw last;
  }

  /** Maps a failed connect to 504 (timeout) or 502, and logs it. */
  private upstreamFailure(reg: EgressRegistration, err: unknown, host: string, port: number): Refusal {
    const timeout = err instanceof ConnectTimeoutError;
    const code = timeout ? 'ETIMEDOUT' : ((err as NodeJS.ErrnoException).code ?? (err as Error).message);
    this.logger.info({ sandboxId: reg.sandboxId, host, port, err: code }, 'egress upstream connect failed');
    return timeout
      ? { ok: false, status: 504, body: `hako egress: connecting to ${host}:${port} timed out\n` }
      : { ok: false, status: 502, body: `hako egress: cannot connect to ${host}:${port} (${code})\n` };
  }

  private async onConnect(req: IncomingMessage, client: Socket, head: Buffer): Promise<void> {
    client.on('error', () => client.destroy());
    const target = parseAuthority(req.url ?? '');
    if (!target) {
      refuse(client, 400, 'hako egress: CONNECT needs host:port\n');
      return;
    }
    const verdict = await this.check(client, target.host, target.port);
    if (!verdict.ok) {
      refuse(client, verdict.status, verdict.body);
      return;
    }
    let upstream: Socket;
    try {
      upstream = await this.connectUpstream(verdict.addresses, target.port);
    } catch (err) {
      const f = this.upstreamFailure(verdict.reg, err, target.host, target.port);
      refuse(client, f.status, f.body);
      return;
    }
    if (client.destroyed) {
      upstream.destroy();
      return;
    }
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length > 0) upstream.write(head);
    splice(client, upstream);
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const reply = (status: number, body: string): void => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
      res.end(body);
    };
    const direct = parseUpstreamTarget(req.url ?? '');
    if (direct) {
      await this.onUpstream(req, res, direct);
      return;
    }
    let url: URL | undefined;
    try {
      url = new URL(req.url ?? '');
    } catch {
      url = undefined;
    }
    if (!url || url.protocol !== 'http:') {
      req.resume();
      reply(400, 'hako egress: send absolute http:// URLs through this proxy, or use CONNECT for https\n');
      return;
    }
    const host = url.hostname;
    const port = url.port === '' ? 80 : Number(url.port);
    // A client that honours HTTP_PROXY asks the proxy for the proxy's own upstream URL.
    const self = canonicalIp(host);
    if (self && this.isSelf(self, port)) {
      const route = parseUpstreamTarget(`${url.pathname}${url.search}`);
      if (route) {
        await this.onUpstream(req, res, route);
        return;
      }
    }
    const verdict = await this.check(req.socket, host, port);
    if (!verdict.ok) {
      req.resume();
      reply(verdict.status, verdict.body);
      return;
    }
    let upstream: Socket;
    try {
      upstream = await this.connectUpstream(verdict.addresses, port);
    } catch (err) {
      const f = this.upstreamFailure(verdict.reg, err, host, port);
      req.resume();
      reply(f.status, f.body);
      return;
    }
    this.forwardHttp(req, res, url, upstream);
  }

  /** Sends one plain-HTTP request over `upstream` and streams the answer back. */
  private forwardHttp(req: IncomingMessage, res: ServerResponse, url: URL, upstream: Socket): void {
    if (res.destroyed || req.socket.destroyed) {
      upstream.destroy();
      return;
    }
    const headers = endToEndHeaders(req.rawHeaders, req.headers).filter(([n]) => n.toLowerCase() !== 'host');
    headers.unshift(['Host', url.host]);
    const out = httpRequest({
      method: req.method,
      path: `${url.pathname}${url.search}`,
      headers: headers.flat(),
      setHost: false,
      createConnection: () => upstream,
    });
    out.on('response', (answer: IncomingMessage) => relayAnswer(answer, res));
    out.on('error', (err: Error) => {
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
        res.end(
          `hako egress: upstream ${url.host} failed (${(err as NodeJS.ErrnoException).code ?? err.message})\n`,
        );
      } else {
        res.destroy();
      }
    });
    // The client went away before the exchange finished: drop the upstream side too.
    res.on('close', () => {
      if (!res.writableFinished) out.destroy();
      upstream.destroy();
    });
    req.pipe(out);
  }

  // ---------------------------------------------------------------- named upstreams

  /**
   * Answers a request for `/_hako/upstream/{name}/…`: only a sandbox registered with that upstream
   * gets through; the body is read (up to upstreamMaxBodyBytes), credentials are added, and the
   * answer streams back.
   */
  private async onUpstream(req: IncomingMessage, res: ServerResponse, route: UpstreamTarget): Promise<void> {
    const sourceIp = socketIp(req.socket.remoteAddress ?? '') ?? String(req.socket.remoteAddress);
    const reg = this.sandboxes.get(sourceIp);
    const upstream = this.upstreams.get(route.name as UpstreamName);
    if (!reg || !upstream || !reg.upstreams.includes(upstream.name)) {
      const reason = !reg ? 'unknown source' : 'upstream not given to this sandbox';
      this.logger.warn(
        { sandboxId: reg?.sandboxId, sourceIp, upstream: route.name, reason },
        'egress upstream denied',
      );
      req.resume();
      const who = reg ? `sandbox ${reg.sandboxId}` : `${sourceIp} (not a registered sandbox)`;
      this.upstreamError(
        res,
        403,
        'EGRESS_DENIED',
        `hako egress: ${who} may not use upstream "${route.name}"`,
      );
      return;
    }
    if (!route.ok) {
      req.resume();
      this.upstreamError(res, 400, 'INVALID_ARGUMENT', `hako egress: ${route.reason}`);
      return;
    }
    const tooLarge = (): void =>
      this.upstreamError(
        res,
        413,
        'FILE_TOO_LARGE',
        `hako egress: request bodies for upstreams are limited to ${this.upstreamMaxBodyBytes} bytes`,
      );
    if (Number(req.headers['content-length'] ?? 0) > this.upstreamMaxBodyBytes) {
      req.resume();
      tooLarge();
      return;
    }
    let body: Buffer | 'too-large';
    try {
      body = await readBody(req, this.upstreamMaxBodyBytes);
    } catch {
      res.destroy();
      return;
    }
    if (body === 'too-large') {
      tooLarge();
      return;
    }
    // Registration may have changed while the body arrived (unregister also closes the socket).
    if (res.destroyed || !this.sandboxes.get(sourceIp)?.upstreams.includes(upstream.name)) {
      if (!res.destroyed) this.upstreamError(res, 403, 'EGRESS_DENIED', 'hako egress: registration changed');
      return;
    }
    const authorized = await authorizeUpstreamRequest(upstream, {
      method: req.method ?? 'GET',
      path: route.path,
      query: route.query,
      headers: endToEndHeaders(req.rawHeaders, req.headers),
      body,
    });
    this.sendUpstream(res, reg, upstream, req.method ?? 'GET', authorized, body);
  }

  /** Sends an authorised request to `upstream` and streams the answer (SSE included) back. */
  private sendUpstream(
    res: ServerResponse,
    reg: EgressRegistration,
    upstream: ResolvedUpstream,
    method: string,
    authorized: AuthorizedRequest,
    body: Buffer,
  ): void {
    const https = upstream.protocol === 'https:';
    const log = {
      sandboxId: reg.sandboxId,
      upstream: upstream.name,
      method,
      path: authorized.path.split('?')[0],
    };
    const out = (https ? httpsRequest : httpRequest)({
      host: upstream.hostname,
      port: upstream.port,
      method,
      path: authorized.path,
      headers: authorized.headers.flat(),
      setHost: false,
      agent: https ? this.httpsAgent : this.httpAgent,
    });
    // Bound the lookup, connect and TLS handshake; an answer may then take as long as it takes.
    out.on('socket', (socket: Socket) => {
      if (!socket.connecting) return;
      const timer = setTimeout(
        () => out.destroy(new ConnectTimeoutError(`timed out after ${this.connectTimeoutMs}ms`)),
        this.connectTimeoutMs,
      );
      const clear = (): void => clearTimeout(timer);
      socket.once(https ? 'secureConnect' : 'connect', clear);
      socket.once('close', clear);
    });
    out.on('response', (answer: IncomingMessage) => {
      this.logger.debug({ ...log, status: answer.statusCode }, 'egress upstream answered');
      relayAnswer(answer, res);
    });
    out.on('error', (err: Error) => {
      const timeout = err instanceof ConnectTimeoutError;
      const code = timeout ? 'ETIMEDOUT' : ((err as NodeJS.ErrnoException).code ?? err.message);
      this.logger.info({ ...log, err: code }, 'egress upstream failed');
      if (res.headersSent) res.destroy();
      else
        this.upstreamError(
          res,
          timeout ? 504 : 502,
          undefined,
          `hako egress: upstream ${upstream.name} failed (${code})`,
        );
    });
    // The client went away before the exchange finished: drop the upstream request too.
    res.on('close', () => {
      if (!res.writableFinished) out.destroy();
    });
    out.end(body.length > 0 ? body : undefined);
  }

  /**
   * An error from the upstream route, shaped like the Anthropic API's errors so SDKs in the sandbox
   * show the message, with hako's code in the body and the `x-hako-error-code` header.
   */
  private upstreamError(
    res: ServerResponse,
    status: number,
    code: ErrorCode | undefined,
    message: string,
  ): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body = JSON.stringify({
      type: 'error',
      error: { type: API_ERROR_TYPE[status] ?? 'api_error', message },
      ...(code ? { code } : {}),
    });
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      connection: 'close',
      ...(code ? { 'x-hako-error-code': code } : {}),
    });
    res.end(body);
  }

  private internalError(err: unknown, socket: Duplex | undefined): void {
    this.logger.error({ err }, 'egress proxy internal error');
    socket?.destroy();
  }
}

/**
 * Joins two sockets both ways. Half-closes pass through (pipe ends the other side); an error on
 * either side destroys both; when one side closes, the other is ended and may linger briefly.
 */
function splice(a: Socket, b: Socket): void {
  const kill = (): void => {
    a.destroy();
    b.destroy();
  };
  a.on('error', kill);
  b.on('error', kill);
  const linger = (other: Socket) => (): void => {
    if (other.destroyed) return;
    other.end();
    other.resume();
    other.setTimeout(TUNNEL_LINGER_MS, () => other.destroy());
  };
  a.once('close', linger(b));
  b.once('close', linger(a));
  a.pipe(b);
  b.pipe(a);
}
