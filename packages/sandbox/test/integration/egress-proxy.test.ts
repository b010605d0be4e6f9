import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, Server } from 'node:http';
import { connect as netConnect, createServer as createNetServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { once } from 'node:events';
import { pino } from 'pino';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { HttpEgressProxy } from '../../src/egress-proxy.js';

// Everything here runs on loopback: the proxy, the targets and the clients (127.0.0.1, and
// 127.0.0.2 as a second source address, which Linux routes to lo).

type LogLine = Record<string, unknown>;

interface Target {
  readonly server: Server;
  readonly port: number;
  readonly seen: { method: string; url: string; headers: IncomingHttpHeaders; body: string }[];
}

/** An HTTP server on 127.0.0.1 that records requests and answers `hello from <name>: <body>`. */
async function startTarget(name: string): Promise<Target> {
  const seen: Target['seen'] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      const answer = `hello from ${name}: ${body}`;
      res.writeHead(200, {
        'content-type': 'text/plain',
        'content-length': Buffer.byteLength(answer),
        'x-target': name,
        connection: 'x-resp-hop',
        'x-resp-hop': 'hop-by-hop, must not be relayed',
      });
      res.end(answer);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, seen };
}

async function closeServer(server: Server): Promise<void> {
  if (!server.listening) return;
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** A port on 127.0.0.1 that nothing listens on (bound once, then released). */
async function closedPort(): Promise<number> {
  const s = createNetServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** A pino logger whose JSON lines land in `lines` (pino with a custom destination stream). */
function capturingLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino<never>(
    { level: 'debug' },
    {
      write: (s: string) => {
        lines.push(JSON.parse(s) as LogLine);
      },
    },
  );
  return { logger, lines };
}

interface HttpResult {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/** Sends a plain-HTTP request through the proxy (absolute URI in the request line). */
async function viaProxy(
  proxyPort: number,
  absoluteUrl: string,
  opts: { method?: string; body?: string; headers?: Record<string, string>; localAddress?: string } = {},
): Promise<HttpResult> {
  const req = httpRequest({
    host: '127.0.0.1',
    port: proxyPort,
    method: opts.method ?? 'GET',
    path: absoluteUrl,
    headers: opts.headers,
    localAddress: opts.localAddress,
    agent: false,
  });
  const done = once(req, 'response');
  req.end(opts.body);
  const [res] = (await done) as [IncomingMessage];
  const chunks: Buffer[] = [];
  for await (const c of res) chunks.push(c as Buffer);
  return { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() };
}

/** Reads from `socket` until `predicate(buffer)` holds or the socket ends. */
function readUntil(socket: Socket, predicate: (b: Buffer) => boolean): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      if (predicate(buf)) finish();
    };
    const finish = (): void => {
      socket.off('data', onData);
      socket.off('end', finish);
      socket.off('error', reject);
      resolve(buf);
    };
    socket.on('data', onData);
    socket.once('end', finish);
    socket.once('error', reject);
  });
}

/** Opens a CONNECT tunnel by hand; returns the status line's code and the socket. */
async function connectVia(
  proxyPort: number,
  authority: string,
  localAddress?: string,
): Promise<{ status: number; socket: Socket; response: string }> {
  const socket = netConnect({ host: '127.0.0.1', port: proxyPort, localAddress });
  await once(socket, 'connect');
  socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  const head = await readUntil(socket, (b) => b.includes('\r\n\r\n'));
  const text = head.toString();
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
  if (status !== 200) {
    const rest = await readUntil(socket, () => false); // error responses end the connection
    socket.destroy();
    return { status, socket, response: text + rest.toString() };
  }
  return { status, socket, response: text };
}

/** Resolves when `socket` closes; rejects after `ms` (targets would only time it out much later). */
function closesWithin(socket: Socket, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return resolve();
    const timer = setTimeout(() => reject(new Error(`socket still open after ${ms}ms`)), ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

interface Fixture {
  readonly proxy: HttpEgressProxy;
  readonly proxyPort: number;
  readonly allowed: Target;
  readonly other: Target;
  readonly lines: LogLine[];
  readonly resolverCalls: string[];
}

/**
 * Starts the proxy on 127.0.0.1 and two targets, runs `fn`, and closes everything in finally.
 * The injected resolver maps `*.test` names through `names`; anything else fails to resolve.
 */
async function withFixture(
  fn: (f: Fixture) => Promise<void> | void,
  names: Record<string, string[] | (() => Promise<string[]>)> = {},
  connectTimeoutMs = 2000,
): Promise<void> {
  const { logger, lines } = capturingLogger();
  const resolverCalls: string[] = [];
  const resolver = async (host: string): Promise<string[]> => {
    resolverCalls.push(host);
    const r = names[host];
    if (typeof r === 'function') return r();
    if (r) return r;
    throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  };
  const proxy = new HttpEgressProxy({ logger, resolver, connectTimeoutMs });
  const servers: Server[] = [];
  try {
    const allowed = await startTarget('allowed');
    servers.push(allowed.server);
    const other = await startTarget('other');
    servers.push(other.server);
    await proxy.listen('127.0.0.1', 18000 + Math.floor(Math.random() * 20000), 50);
    const proxyPort = Number(new URL(proxy.url).port);
    await fn({ proxy, proxyPort, allowed, other, lines, resolverCalls });
  } finally {
    await proxy.close();
    for (const s of servers) await closeServer(s);
  }
}

const SANDBOX = 'tegress01';

function denials(lines: LogLine[]): LogLine[] {
  return lines.filter((l) => l.msg === 'egress denied');
}

test('plain HTTP to an allowed destination is forwarded both ways, hop-by-hop headers stripped', async () => {
  await withFixture(async ({ proxy, proxyPort, allowed }) => {
    proxy.register('127.0.0.1', SANDBOX, [`127.0.0.1:${allowed.port}`]);
    const url = `http://127.0.0.1:${allowed.port}/echo?q=1`;
    const res = await viaProxy(proxyPort, url, {
      method: 'POST',
      body: 'ping-body',
      headers: {
        'Proxy-Authorization': 'Basic c2VjcmV0',
        'Proxy-Connection': 'keep-alive',
        Connection: 'x-hop',
        'X-Hop': 'drop me',
        'X-Keep': 'keep me',
      },
    });
    assert.equal(res.status, 200);
    assert.equal(res.body, 'hello from allowed: ping-body');
    assert.equal(res.headers['x-target'], 'allowed');
    assert.equal(
      res.headers['x-resp-hop'],
      undefined,
      'headers named by the response Connection are stripped',
    );
    assert.notEqual(res.headers.connection, 'x-resp-hop');
    assert.equal(allowed.seen.length, 1);
    const seen = allowed.seen[0]!;
    assert.equal(seen.method, 'POST');
    assert.equal(seen.url, '/echo?q=1');
    assert.equal(seen.body, 'ping-body');
    assert.equal(seen.headers.host, `127.0.0.1:${allowed.port}`);
    assert.equal(seen.headers['x-keep'], 'keep me');
    assert.equal(seen.headers['x-hop'], undefined);
    assert.equal(seen.headers['proxy-authorization'], undefined);
    assert.equal(seen.headers['proxy-connection'], undefined);
  });
});

test('CONNECT to an allowed destination opens a tunnel that carries bytes both ways', async () => {
  await withFixture(async ({ proxy, proxyPort, allowed }) => {
    proxy.register('127.0.0.1', SANDBOX, [`127.0.0.1:${allowed.port}`]);
    const { status, socket } = await connectVia(proxyPort, `127.0.0.1:${allowed.port}`);
    try {
      assert.equal(status, 200);
      socket.write(`POST /tunnel HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 11\r\n\r\nthrough-tun`);
      const body = 'hello from allowed: through-tun';
      const reply = (await readUntil(socket, (b) => b.toString().endsWith(body))).toString();
      assert.match(reply, /^HTTP\/1\.1 200 OK/);
      assert.ok(reply.endsWith(body), reply);
      assert.equal(allowed.seen[0]?.url, '/tunnel');
      assert.equal(allowed.seen[0]?.body, 'through-tun');
      // A half-close from the client reaches the target, whose close comes back through the tunnel.
      const closed = once(socket, 'close');
      socket.end();
      await closed;
    } finally {
      socket.destroy();
    }
  });
});

test('a port that is not on the allowlist gets 403 and one structured log line', async () => {
  await withFixture(async ({ proxy, proxyPort, allowed, other, lines }) => {
    proxy.register('127.0.0.1', SANDBOX, [`127.0.0.1:${allowed.port}`]);

    const res = await viaProxy(proxyPort, `http://127.0.0.1:${other.port}/`);
    assert.equal(res.status, 403);
    assert.equal(res.body, `hako egress: 127.0.0.1:${other.port} is not on this sandbox's allowlist\n`);
    let denied = denials(lines);
    assert.equal(denied.length, 1);
    assert.equal(denied[0]!.level, 40); // warn
    assert.equal(denied[0]!.sandboxId, SANDBOX);
    assert.equal(denied[0]!.sourceIp, '127.0.0.1');
    assert.equal(denied[0]!.host, '127.0.0.1');
    assert.equal(denied[0]!.port, other.port);
    assert.equal(denied[0]!.reason, 'no allowlist entry matches');

    const tunnel = await connectVia(proxyPort, `127.0.0.1:${other.port}`);
    assert.equal(tunnel.status, 403);
    assert.match(tunnel.response, /is not on this sandbox's allowlist/);
    denied = denials(lines);
    assert.equal(denied.length, 2);
    assert.equal(other.seen.length, 0, 'the denied target must never see a request');
  });
});

test('an unknown source address gets 403, and unregister closes open tunnels', async () => {
  await withFixture(async ({ proxy, proxyPort, allowed, lines }) => {
    const url = `http://127.0.0.1:${allowed.port}/`;
    // Nothing registered.
    assert.equal((await viaProxy(proxyPort, url)).status, 403);

    proxy.register('127.0.0.1', SANDBOX, [`127.0.0.1:${allowed.port}`]);
    assert.equal((await viaProxy(proxyPort, url)).status, 200);
    // Another source address on the same host is a different (unregistered) sandbox.
    const fromOther = await viaProxy(proxyPort, url, { localAddress: '127.0.0.2' });
    assert.equal(fromOther.status, 403);
    assert.match(fromOther.body, /127\.0\.0\.2 is not a registered sandbox/);
    assert.ok(lines.some((l) => l.msg === 'egress denied' && l.sourceIp === '127.0.0.2'));

    const tunnel = await connectVia(proxyPort, `127.0.0.1:${allowed.port}`);
    assert.equal(tunnel.status, 200);
    tunnel.socket.on('error', () => undefined);
    const closed = closesWithin(tunnel.socket, 2000);
    proxy.unregister('127.0.0.1');
    await closed;
    assert.equal((await viaProxy(proxyPort, url)).status, 403);
    assert.equal((await connectVia(proxyPort, `127.0.0.1:${allowed.port}`)).status, 403);
    assert.equal(allowed.seen.length, 1);
  });
});

test('a name resolving to 127.0.0.1 is denied unless the IP literal is listed; the checked address is used', async () => {
  let calls = 0;
  // Rebinding resolver: the first answer is 127.0.0.1, later answers point elsewhere.
  const rebinding = (): Promise<string[]> =>
    Promise.resolve(calls++ === 0 ? ['127.0.0.1'] : ['10.255.255.1']);
  await withFixture(
    async ({ proxy, proxyPort, allowed, lines, resolverCalls }) => {
      const port = allowed.port;
      proxy.register('127.0.0.1', SANDBOX, [`local.test:${port}`]);
      const res = await viaProxy(proxyPort, `http://local.test:${port}/`);
      assert.equal(res.status, 403);
      assert.match(String(denials(lines)[0]?.reason), /resolves to loopback address 127\.0\.0\.1/);
      assert.equal((await connectVia(proxyPort, `local.test:${port}`)).status, 403);
      assert.equal(allowed.seen.length, 0);

      // The IP literal itself is allowed when listed…
      proxy.register('127.0.0.1', SANDBOX, [`127.0.0.1:${port}`]);
      assert.equal((await viaProxy(proxyPort, `http://127.0.0.1:${port}/`)).status, 200);
      // …but does not let the name through on its own.
      assert.equal((await viaProxy(proxyPort, `http://local.test:${port}/`)).status, 403);

      // Name plus literal: allowed, connected to the address that was resolved and checked,
      // with exactly one lookup (a second one would have answered 10.255.255.1).
      proxy.register('127.0.0.1', SANDBOX, [`rebind.test:${port}`, `127.0.0.1:${port}`]);
      const before = resolverCalls.length;
      const ok = await viaProxy(proxyPort, `http://rebind.test:${port}/r`);
      assert.equal(ok.status, 200);
      assert.equal(ok.body, 'hello from allowed: ');
      assert.deepEqual(resolverCalls.slice(before), ['rebind.test']);
      assert.equal(allowed.seen.at(-1)?.headers.host, `rebind.test:${port}`);

      // Names that match no entry are never resolved (no DNS side channel).
      const n = resolverCalls.length;
      assert.equal((await viaProxy(proxyPort, `http://secret-data.attacker.test:${port}/`)).status, 403);
      assert.equal(resolverCalls.length, n);
    },
    { 'local.test': ['127.0.0.1'], 'rebind.test': rebinding },
  );
});

test('cloud metadata and private resolutions are denied for name entries', async () => {
  await withFixture(
    async ({ proxy, proxyPort, lines }) => {
      proxy.register('127.0.0.1', SANDBOX, ['metadata.test:80', '*.corp.test:*']);
      assert.equal((await viaProxy(proxyPort, 'http://metadata.test/latest/meta-data/')).status, 403);
      assert.equal((await connectVia(proxyPort, 'db.corp.test:5432')).status, 403);
      assert.equal((await viaProxy(proxyPort, 'http://169.254.169.254/')).status, 403);
      const reasons = denials(lines).map((l) => String(l.reason));
      assert.match(reasons[0]!, /link-local address 169\.254\.169\.254/);
      assert.match(reasons[1]!, /private address 10\.1\.2\.3/);
      assert.equal(reasons[2], 'no allowlist entry matches');
    },
    { 'metadata.test': ['169.254.169.254'], 'db.corp.test': ['93.184.216.34', '10.1.2.3'] },
  );
});

test('an unreachable port gives 502, a resolver that hangs gives 504', async () => {
  const dead = await closedPort();
  await withFixture(
    async ({ proxy, proxyPort }) => {
      proxy.register('127.0.0.1', SANDBOX, [`127.0.0.1:${dead}`, 'slow.test:80', 'gone.test:80']);
      const res = await viaProxy(proxyPort, `http://127.0.0.1:${dead}/`);
      assert.equal(res.status, 502);
      assert.match(res.body, /ECONNREFUSED/);
      assert.equal((await connectVia(proxyPort, `127.0.0.1:${dead}`)).status, 502);
      assert.equal((await viaProxy(proxyPort, 'http://gone.test/')).status, 502);
      const slow = await viaProxy(proxyPort, 'http://slow.test/');
      assert.equal(slow.status, 504);
      assert.match(slow.body, /timed out/);
    },
    { 'slow.test': () => new Promise<string[]>(() => undefined) },
    300,
  );
});

test("requests to the proxy's own address are denied", async () => {
  await withFixture(async ({ proxy, proxyPort, lines }) => {
    proxy.register('127.0.0.1', SANDBOX, [`127.0.0.1:${proxyPort}`, `0.0.0.0:${proxyPort}`]);
    assert.equal((await viaProxy(proxyPort, `http://127.0.0.1:${proxyPort}/`)).status, 403);
    assert.equal((await connectVia(proxyPort, `127.0.0.1:${proxyPort}`)).status, 403);
    assert.equal((await connectVia(proxyPort, `0.0.0.0:${proxyPort}`)).status, 403);
    assert.ok(denials(lines).every((l) => l.reason === 'destination is the egress proxy itself'));
    assert.equal(denials(lines).length, 3);
  });
});

test('requests that are not proxy requests get 400', async () => {
  await withFixture(async ({ proxy, proxyPort, allowed }) => {
    proxy.register('127.0.0.1', SANDBOX, [`127.0.0.1:${allowed.port}`]);
    assert.equal((await viaProxy(proxyPort, '/origin-form')).status, 400);
    assert.equal((await viaProxy(proxyPort, `https://127.0.0.1:${allowed.port}/`)).status, 400);
    assert.equal((await connectVia(proxyPort, 'no-port-here')).status, 400);
    assert.equal(allowed.seen.length, 0);
  });
});

test('register rejects malformed entries and a source owned by another sandbox', async () => {
  await withFixture(({ proxy }) => {
    assert.throws(
      () => proxy.register('127.0.0.1', SANDBOX, ['example.com']),
      (e: unknown) =>
        e instanceof AppError && e.code === 'INVALID_ARGUMENT' && e.message.includes('"example.com"'),
    );
    assert.throws(() => proxy.register('not-an-ip', SANDBOX, []), /not an IP address/);
    proxy.register('127.0.0.1', SANDBOX, []);
    assert.throws(() => proxy.register('127.0.0.1', 'tother002', []), /registered to sandbox tegress01/);
    proxy.register('::ffff:127.0.0.1', SANDBOX, ['example.com:443']);
    assert.equal(proxy.registration('127.0.0.1')?.allowlist[0]?.text, 'example.com:443');
    proxy.unregister('127.0.0.1');
    proxy.unregister('127.0.0.1');
    assert.equal(proxy.registration('127.0.0.1'), undefined);
  });
});

test('listen skips ports in use, and close() stops listening and drops open tunnels', async () => {
  const { logger } = capturingLogger();
  const blocker = createNetServer();
  const proxy = new HttpEgressProxy({ logger });
  const second = new HttpEgressProxy({ logger });
  let target: Target | undefined;
  try {
    blocker.listen(0, '127.0.0.1');
    await once(blocker, 'listening');
    const busy = (blocker.address() as AddressInfo).port;
    target = await startTarget('t');

    await assert.rejects(
      second.listen('127.0.0.1', busy, 1),
      (e: unknown) => e instanceof AppError && e.code === 'NETWORK_SETUP_FAILED' && /in use/.test(e.message),
    );
    assert.equal(second.url, '');

    await proxy.listen('127.0.0.1', busy, 20);
    const port = Number(new URL(proxy.url).port);
    assert.ok(port > busy && port < busy + 20, `bound ${port}, blocked ${busy}`);
    assert.equal(proxy.url, `http://127.0.0.1:${port}`);

    proxy.register('127.0.0.1', SANDBOX, [`127.0.0.1:${target.port}`]);
    const tunnel = await connectVia(port, `127.0.0.1:${target.port}`);
    assert.equal(tunnel.status, 200);
    tunnel.socket.on('error', () => undefined);
    const tunnelClosed = closesWithin(tunnel.socket, 2000);

    await proxy.close();
    await tunnelClosed;
    assert.equal(proxy.url, '');
    const probe = netConnect({ host: '127.0.0.1', port });
    const [err] = (await once(probe, 'error')) as [NodeJS.ErrnoException];
    assert.equal(err.code, 'ECONNREFUSED');
  } finally {
    await proxy.close();
    await second.close();
    if (target) await closeServer(target.server);
    if (blocker.listening) await new Promise<void>((resolve) => blocker.close(() => resolve()));
  }
});
