import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, RequestListener, Server } from 'node:http';
import { createServer as createNetServer, Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { AppError, GrpcStatus } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import { callWorker } from '../../src/invoke-worker.js';

// Real HTTP servers on 127.0.0.1. callWorker takes its target directly (resolveInvokeTarget, unit
// tested, is what keeps loopback out in production), so loopback is a fine stand-in for a worker.

const MiB = 1024 * 1024;

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  body: Buffer;
}

async function withServer(
  handler: RequestListener,
  fn: (port: number, server: Server) => Promise<void>,
): Promise<void> {
  const server = createServer(handler);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    await fn((server.address() as AddressInfo).port, server);
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** A handler that records the request and answers 200 "ok". */
function recorder(seen: Seen[]): RequestListener {
  return (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body: Buffer.concat(chunks),
      });
      res.writeHead(200, {
        'content-type': 'application/json',
        'x-worker': 'yes',
        'set-cookie': ['a=1', 'b=2'],
        connection: 'close',
      });
      res.end('{"ok":true}');
    });
  };
}

async function rejectsWith(
  p: Promise<unknown>,
  code: ErrorCode,
  grpc: keyof typeof GrpcStatus,
): Promise<AppError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof AppError, `expected AppError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.equal(caught.grpcStatus, GrpcStatus[grpc]);
  return caught;
}

test('defaults: POST to the Lambda invocation path, Host set by hakod, body and headers returned', async () => {
  const seen: Seen[] = [];
  await withServer(recorder(seen), async (port) => {
    const res = await callWorker(
      { ip: '127.0.0.1', port },
      { body: Buffer.from('{"x":1}') },
      { maxResponseBytes: MiB },
    );
    assert.equal(res.statusCode, 200);
    assert.equal(res.body.toString(), '{"ok":true}');
    assert.equal(res.headers['content-type'], 'application/json');
    assert.equal(res.headers['x-worker'], 'yes');
    assert.equal(res.headers['set-cookie'], 'a=1, b=2');
    assert.equal(res.headers['connection'], undefined, 'hop-by-hop response header dropped');
    assert.ok(res.durationMs >= 0 && res.durationMs < 5000);
    assert.equal(seen.length, 1);
    const s = seen[0]!;
    assert.equal(s.method, 'POST');
    assert.equal(s.url, '/2015-03-31/functions/function/invocations');
    assert.equal(s.headers.host, `127.0.0.1:${port}`);
    assert.equal(s.headers['content-length'], '7');
    assert.equal(s.body.toString(), '{"x":1}');
  });
});

test('method, path, headers and binary body pass; hop-by-hop and Host from the caller are dropped', async () => {
  const seen: Seen[] = [];
  await withServer(recorder(seen), async (port) => {
    const body = Buffer.from([0, 1, 2, 3, 254, 255]);
    await callWorker(
      { ip: '127.0.0.1', port },
      {
        method: 'put',
        path: '/custom/path?q=1',
        headers: {
          'X-Request-Id': 'abc-123',
          'Content-Type': 'application/octet-stream',
          Host: '169.254.169.254',
          Connection: 'X-Secret',
          'X-Secret': 'do not forward',
          'Keep-Alive': 'timeout=100',
          'Transfer-Encoding': 'chunked',
          Upgrade: 'h2c',
          'Proxy-Authorization': 'Basic Zm9vOmJhcg==',
          'Content-Length': '9999',
        },
        body,
        timeoutMs: 5000,
      },
      { maxResponseBytes: MiB },
    );
    const s = seen[0]!;
    assert.equal(s.method, 'PUT');
    assert.equal(s.url, '/custom/path?q=1');
    assert.equal(s.headers['x-request-id'], 'abc-123');
    assert.equal(s.headers['content-type'], 'application/octet-stream');
    assert.equal(s.headers.host, `127.0.0.1:${port}`);
    assert.equal(s.headers['content-length'], String(body.length));
    assert.deepEqual([...s.body], [...body]);
    for (const h of ['x-secret', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-authorization']) {
      assert.equal(s.headers[h], undefined, `${h} must not reach the worker`);
    }
    // Exactly one Host header arrived.
    assert.equal(
      s.rawHeaders.filter((_, i) => i % 2 === 0 && s.rawHeaders[i]!.toLowerCase() === 'host').length,
      1,
    );
    assert.equal(s.headers.connection, 'close');
  });
});

test('GET without a body sends no Content-Length; HEAD returns headers only', async () => {
  const seen: Seen[] = [];
  await withServer(recorder(seen), async (port) => {
    const get = await callWorker(
      { ip: '127.0.0.1', port },
      { method: 'GET', path: '/' },
      { maxResponseBytes: MiB },
    );
    assert.equal(get.body.toString(), '{"ok":true}');
    assert.equal(seen[0]!.headers['content-length'], undefined);
    const head = await callWorker(
      { ip: '127.0.0.1', port },
      { method: 'HEAD', path: '/' },
      { maxResponseBytes: MiB },
    );
    assert.equal(head.statusCode, 200);
    assert.equal(head.body.length, 0);
    assert.equal(seen[1]!.method, 'HEAD');
  });
});

test('an invalid request is refused before any connection is made', async () => {
  let connections = 0;
  await withServer(
    (_req, res) => res.end(),
    async (port, server) => {
      server.on('connection', () => connections++);
      await rejectsWith(
        callWorker({ ip: '127.0.0.1', port }, { path: 'http://169.254.169.254/' }, { maxResponseBytes: MiB }),
        'INVALID_ARGUMENT',
        'INVALID_ARGUMENT',
      );
      await rejectsWith(
        callWorker(
          { ip: '127.0.0.1', port },
          { headers: { 'X-A': 'a\r\nX-B: b' } },
          { maxResponseBytes: MiB },
        ),
        'INVALID_ARGUMENT',
        'INVALID_ARGUMENT',
      );
      await rejectsWith(
        callWorker({ ip: '127.0.0.1', port }, { method: 'CONNECT' }, { maxResponseBytes: MiB }),
        'INVALID_ARGUMENT',
        'INVALID_ARGUMENT',
      );
      assert.equal(connections, 0);
    },
  );
});

test('a 302 is returned as it is, never followed', async () => {
  const seen: string[] = [];
  await withServer(
    (req, res) => {
      seen.push(req.url ?? '');
      if (req.url === '/elsewhere') {
        res.end('followed');
        return;
      }
      res.writeHead(302, { location: `/elsewhere`, 'content-length': '0' });
      res.end();
    },
    async (port) => {
      const res = await callWorker(
        { ip: '127.0.0.1', port },
        { method: 'GET', path: '/start' },
        { maxResponseBytes: MiB },
      );
      assert.equal(res.statusCode, 302);
      assert.equal(res.headers.location, '/elsewhere');
      assert.equal(res.body.length, 0);
      assert.deepEqual(seen, ['/start']);
    },
  );
});

test('a non-2xx answer is a normal result', async () => {
  await withServer(
    (_req, res) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('worker crashed');
    },
    async (port) => {
      const res = await callWorker({ ip: '127.0.0.1', port }, {}, { maxResponseBytes: MiB });
      assert.equal(res.statusCode, 500);
      assert.equal(res.body.toString(), 'worker crashed');
    },
  );
});

test('a slow worker → INVOKE_TIMEOUT after about timeout_ms, and the connection is closed', async () => {
  let serverSawClose: (() => void) | undefined;
  const closed = new Promise<void>((resolve) => (serverSawClose = resolve));
  await withServer(
    (req) => {
      // Never answers.
      req.socket.on('close', () => serverSawClose?.());
    },
    async (port) => {
      const t0 = performance.now();
      const err = await rejectsWith(
        callWorker({ ip: '127.0.0.1', port }, { timeoutMs: 400 }, { maxResponseBytes: MiB }),
        'INVOKE_TIMEOUT',
        'DEADLINE_EXCEEDED',
      );
      const elapsed = performance.now() - t0;
      assert.ok(elapsed >= 390 && elapsed < 1500, `timed out after ${elapsed} ms`);
      assert.match(err.message, /400 ms/);
      await closed;
    },
  );
});

test('a worker that sends headers then stalls mid-body also times out', async () => {
  await withServer(
    (_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('partial');
    },
    async (port) => {
      await rejectsWith(
        callWorker({ ip: '127.0.0.1', port }, { timeoutMs: 300 }, { maxResponseBytes: MiB }),
        'INVOKE_TIMEOUT',
        'DEADLINE_EXCEEDED',
      );
    },
  );
});

test('a response over the limit → INVOKE_RESPONSE_TOO_LARGE, and the client stops reading early', async () => {
  const total = 64 * MiB;
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const server = { written: 0, finished: false, closedAt: -1 };
  let closedResolve: (() => void) | undefined;
  const closed = new Promise<void>((resolve) => (closedResolve = resolve));
  await withServer(
    (_req, res) => {
      // No Content-Length: chunked, so only counting while streaming can catch it.
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.on('close', () => {
        server.closedAt = server.written;
        closedResolve?.();
      });
      const pump = (): void => {
        while (server.written < total) {
          if (res.destroyed) return;
          server.written += chunk.length;
          if (!res.write(chunk)) {
            res.once('drain', pump);
            return;
          }
        }
        server.finished = true;
        res.end();
      };
      pump();
    },
    async (port) => {
      const err = await rejectsWith(
        callWorker({ ip: '127.0.0.1', port }, {}, { maxResponseBytes: MiB }),
        'INVOKE_RESPONSE_TOO_LARGE',
        'RESOURCE_EXHAUSTED',
      );
      assert.match(err.message, /1048576 bytes/);
      await closed;
      assert.equal(server.finished, false, 'the server must not have sent everything');
      // Socket buffers on loopback hold a few MiB at most; 64 MiB would mean the client kept reading.
      assert.ok(
        server.closedAt < 16 * MiB,
        `server had written ${server.closedAt} bytes when the client closed`,
      );
    },
  );
});

test('a Content-Length over the limit is refused without reading the body', async () => {
  await withServer(
    (_req, res) => {
      res.writeHead(200, { 'content-length': String(5 * MiB) });
      res.write(Buffer.alloc(1024));
    },
    async (port) => {
      await rejectsWith(
        callWorker({ ip: '127.0.0.1', port }, { timeoutMs: 5000 }, { maxResponseBytes: MiB }),
        'INVOKE_RESPONSE_TOO_LARGE',
        'RESOURCE_EXHAUSTED',
      );
    },
  );
});

test('a response exactly at the limit is accepted', async () => {
  await withServer(
    (_req, res) => {
      res.end(Buffer.alloc(1000, 0x62));
    },
    async (port) => {
      const res = await callWorker({ ip: '127.0.0.1', port }, {}, { maxResponseBytes: 1000 });
      assert.equal(res.body.length, 1000);
      await rejectsWith(
        callWorker({ ip: '127.0.0.1', port }, {}, { maxResponseBytes: 999 }),
        'INVOKE_RESPONSE_TOO_LARGE',
        'RESOURCE_EXHAUSTED',
      );
    },
  );
});

test('connection refused → INVOKE_FAILED (UNAVAILABLE)', async () => {
  const s = createNetServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  const err = await rejectsWith(
    callWorker({ ip: '127.0.0.1', port }, {}, { maxResponseBytes: MiB }),
    'INVOKE_FAILED',
    'UNAVAILABLE',
  );
  assert.match(err.message, /ECONNREFUSED/);
});

test('a worker that closes the connection mid-answer → INVOKE_FAILED', async () => {
  await withServer(
    (_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('only part', () => res.socket?.destroy());
    },
    async (port) => {
      await rejectsWith(
        callWorker({ ip: '127.0.0.1', port }, { timeoutMs: 5000 }, { maxResponseBytes: MiB }),
        'INVOKE_FAILED',
        'UNAVAILABLE',
      );
    },
  );
});

// Connect timeout: a deterministic SYN black hole needs a firewall rule or traffic leaving the
// machine, neither of which this test may use. The connect step is injectable instead: a socket
// that never connects stands for a SYN that is never answered, and the real timer logic runs.
test('connect timeout (injected never-connecting socket) → INVOKE_FAILED after connectTimeoutMs', async () => {
  const sockets: Socket[] = [];
  const t0 = performance.now();
  const err = await rejectsWith(
    callWorker(
      { ip: '10.213.7.10', port: 8080 },
      { timeoutMs: 10_000 },
      {
        maxResponseBytes: MiB,
        connectTimeoutMs: 300,
        connect: () => {
          const s = new Socket();
          sockets.push(s);
          return s;
        },
      },
    ),
    'INVOKE_FAILED',
    'UNAVAILABLE',
  );
  const elapsed = performance.now() - t0;
  assert.ok(elapsed >= 290 && elapsed < 1500, `gave up after ${elapsed} ms`);
  assert.match(err.message, /did not accept a connection within 300 ms/);
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0]!.destroyed, true, 'the pending socket is destroyed');
});

test('connect timeout longer than the total timeout → INVOKE_TIMEOUT', async () => {
  await rejectsWith(
    callWorker(
      { ip: '10.213.7.10', port: 8080 },
      { timeoutMs: 200 },
      { maxResponseBytes: MiB, connectTimeoutMs: 2000, connect: () => new Socket() },
    ),
    'INVOKE_TIMEOUT',
    'DEADLINE_EXCEEDED',
  );
});

test('the default connect path uses the real target (connect timer cleared on connect)', async () => {
  // A worker that answers after the connect timeout has passed: the timer must not fire once
  // connected.
  await withServer(
    (_req, res) => {
      setTimeout(() => res.end('late but fine'), 400);
    },
    async (port) => {
      const res = await callWorker(
        { ip: '127.0.0.1', port },
        { timeoutMs: 5000 },
        { maxResponseBytes: MiB, connectTimeoutMs: 150 },
      );
      assert.equal(res.body.toString(), 'late but fine');
    },
  );
});

test('an aborted signal closes the connection and rejects', async () => {
  let closedResolve: (() => void) | undefined;
  const closed = new Promise<void>((resolve) => (closedResolve = resolve));
  await withServer(
    (req) => {
      req.socket.on('close', () => closedResolve?.());
    },
    async (port) => {
      const ac = new AbortController();
      const p = callWorker(
        { ip: '127.0.0.1', port },
        { timeoutMs: 10_000 },
        { maxResponseBytes: MiB, signal: ac.signal },
      );
      setTimeout(() => ac.abort(), 100);
      await rejectsWith(p, 'INVOKE_FAILED', 'UNAVAILABLE');
      await closed;
    },
  );
});
