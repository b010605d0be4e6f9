import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';
import { SignatureV4 } from '@smithy/signature-v4';
import { pino } from 'pino';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { HttpEgressProxy } from '../../src/egress-proxy.js';
import { UPSTREAM_PLACEHOLDER_KEY, upstreamEnv } from '../../src/upstreams.js';
import type { UpstreamsConfig } from '../../src/upstreams.js';

// Everything runs on loopback: the proxy, a fake Anthropic API, a Bedrock stand-in that verifies
// SigV4 signatures, and the clients. The proxy identifies sandboxes by source address, so
// 127.0.0.1 is registered as the sandbox (and 127.0.0.2, which Linux routes to lo, is a stranger).

const SANDBOX = 'tupstrm01';
// Fresh secrets per run, so a match anywhere can only have come from the config.
const REAL_KEY = `sk-ant-real-${randomBytes(12).toString('hex')}`;
const AWS_ACCESS_KEY_ID = `AKIA${randomBytes(8).toString('hex').toUpperCase()}`;
const AWS_SECRET = `secret/${randomBytes(16).toString('base64')}`;
const AWS_SESSION_TOKEN = `session-${randomBytes(12).toString('hex')}`;
const REGION = 'eu-central-1';
const SECRETS = [REAL_KEY, AWS_SECRET, AWS_SESSION_TOKEN];

type LogLine = Record<string, unknown>;

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

interface FakeServer {
  readonly server: Server;
  readonly port: number;
  readonly seen: Seen[];
}

function readAll(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}

async function startServer(
  handle: (seen: Seen, res: ServerResponse) => void | Promise<void>,
): Promise<FakeServer> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    void readAll(req).then(async (body) => {
      const s = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body };
      seen.push(s);
      await handle(s, res);
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

/** A gate the SSE handler waits on before its last event; opened by the test (or after 5 s). */
interface Sse {
  finished: boolean;
  open: () => void;
  gate: Promise<void>;
}

function newSse(): Sse {
  let open = (): void => undefined;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
    setTimeout(resolve, 5000).unref();
  });
  return { finished: false, open, gate };
}

/** The fake Anthropic API: `/base/v1/messages` answers JSON, `/base/v1/stream` streams SSE. */
function anthropicHandler(sse: () => Sse) {
  return async (s: Seen, res: ServerResponse): Promise<void> => {
    if (s.url.startsWith('/base/v1/stream')) {
      const state = sse();
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write('event: message_start\ndata: {"type":"message_start"}\n\n');
      await state.gate;
      res.write('event: message_stop\ndata: {"type":"message_stop"}\n\n');
      state.finished = true;
      res.end();
      return;
    }
    const answer = JSON.stringify({ id: 'msg_fake', type: 'message', path: s.url });
    res.writeHead(200, { 'content-type': 'application/json', 'request-id': 'req_fake' });
    res.end(answer);
  };
}

/**
 * Checks a request's SigV4 signature the way AWS does: the payload hash must match the body, the
 * signed headers must be there, and recomputing the signature from the received request with
 * `secret` must give the same Authorization header. Returns 'ok' or why not.
 */
async function verifySigV4(s: Seen, secret: string): Promise<string> {
  const auth = String(s.headers.authorization ?? '');
  const m =
    /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$/.exec(
      auth,
    );
  if (!m) return `malformed authorization "${auth}"`;
  const [, keyId, day, region, service, signedList] = m;
  if (keyId !== AWS_ACCESS_KEY_ID) return 'unknown access key';
  if (region !== REGION || service !== 'bedrock') return `wrong scope ${region}/${service}`;
  const amzDate = String(s.headers['x-amz-date'] ?? '');
  const d = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  if (!d || !amzDate.startsWith(day!)) return `bad x-amz-date "${amzDate}"`;
  const signingDate = new Date(Date.UTC(+d[1]!, +d[2]! - 1, +d[3]!, +d[4]!, +d[5]!, +d[6]!));
  if (Math.abs(Date.now() - signingDate.getTime()) > 5 * 60_000) return 'request time too skewed';
  const bodyHash = createHash('sha256').update(s.body).digest('hex');
  if (s.headers['x-amz-content-sha256'] !== bodyHash) return 'payload hash does not match the body';
  const signed = signedList!.split(';');
  for (const required of ['host', 'x-amz-date', 'x-amz-content-sha256', 'x-amz-security-token']) {
    if (!signed.includes(required)) return `${required} is not signed`;
  }
  const headers: Record<string, string> = {};
  for (const name of signed) {
    const v = s.headers[name];
    if (v === undefined) return `signed header ${name} is missing`;
    headers[name] = Array.isArray(v) ? v.join(',') : v;
  }
  const q = s.url.indexOf('?');
  const query: Record<string, string | string[]> = {};
  for (const [k, v] of new URLSearchParams(q < 0 ? '' : s.url.slice(q))) {
    const prev = query[k];
    query[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  const verifier = new SignatureV4({
    service: 'bedrock',
    region: REGION,
    credentials: { accessKeyId: AWS_ACCESS_KEY_ID, secretAccessKey: secret, sessionToken: AWS_SESSION_TOKEN },
    sha256: Sha256,
  });
  const expected = await verifier.sign(
    new HttpRequest({
      method: s.method,
      protocol: 'http:',
      hostname: '127.0.0.1',
      path: q < 0 ? s.url : s.url.slice(0, q),
      query,
      headers,
      body: s.body.length > 0 ? s.body : undefined,
    }),
    { signingDate },
  );
  return expected.headers.authorization === auth ? 'ok' : 'signature does not match';
}

/** The Bedrock stand-in: accepts only correctly signed requests; records both verdicts. */
function bedrockHandler(verdicts: { right: string; wrong: string }[]) {
  return async (s: Seen, res: ServerResponse): Promise<void> => {
    const right = await verifySigV4(s, AWS_SECRET);
    const wrong = await verifySigV4(s, `${AWS_SECRET}x`);
    verdicts.push({ right, wrong });
    const answer = JSON.stringify(right === 'ok' ? { verified: true } : { message: right });
    res.writeHead(right === 'ok' ? 200 : 403, { 'content-type': 'application/json' });
    res.end(answer);
  };
}

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

interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/** Sends one request to the proxy with `target` as the request line's target. */
async function send(
  proxyPort: number,
  target: string,
  opts: {
    method?: string;
    headers?: Record<string, string>;
    body?: string | Buffer;
    localAddress?: string;
    chunked?: boolean;
  } = {},
): Promise<Answer> {
  const req = httpRequest({
    host: '127.0.0.1',
    port: proxyPort,
    method: opts.method ?? 'POST',
    path: target,
    headers: opts.headers,
    localAddress: opts.localAddress,
    agent: false,
  });
  if (opts.chunked) req.setHeader('transfer-encoding', 'chunked');
  req.on('error', () => undefined); // a refused upload may reset; the response is what counts
  const done = once(req, 'response');
  req.end(opts.body);
  const [res] = (await done) as [IncomingMessage];
  const body = (await readAll(res)).toString();
  return { status: res.statusCode ?? 0, headers: res.headers, body };
}

interface Fixture {
  readonly proxy: HttpEgressProxy;
  readonly proxyPort: number;
  readonly config: UpstreamsConfig;
  readonly anthropic: FakeServer;
  readonly bedrock: FakeServer;
  readonly verdicts: { right: string; wrong: string }[];
  readonly sse: Sse[];
  readonly lines: LogLine[];
}

async function withFixture(
  fn: (f: Fixture) => Promise<void> | void,
  upstreamMaxBodyBytes?: number,
): Promise<void> {
  const { logger, lines } = capturingLogger();
  const servers: Server[] = [];
  const sse: Sse[] = [];
  const verdicts: { right: string; wrong: string }[] = [];
  let proxy: HttpEgressProxy | undefined;
  try {
    const anthropic = await startServer(
      anthropicHandler(() => {
        const s = newSse();
        sse.push(s);
        return s;
      }),
    );
    servers.push(anthropic.server);
    const bedrock = await startServer(bedrockHandler(verdicts));
    servers.push(bedrock.server);
    const config: UpstreamsConfig = {
      anthropic: { baseUrl: `http://127.0.0.1:${anthropic.port}/base/`, apiKey: REAL_KEY },
      bedrock: {
        region: REGION,
        accessKeyId: AWS_ACCESS_KEY_ID,
        secretAccessKey: AWS_SECRET,
        sessionToken: AWS_SESSION_TOKEN,
        endpoint: `http://127.0.0.1:${bedrock.port}`,
      },
    };
    proxy = new HttpEgressProxy({
      logger,
      connectTimeoutMs: 2000,
      upstreams: config,
      ...(upstreamMaxBodyBytes === undefined ? {} : { upstreamMaxBodyBytes }),
    });
    await proxy.listen('127.0.0.1', 18000 + Math.floor(Math.random() * 20000), 50);
    const proxyPort = Number(new URL(proxy.url).port);
    await fn({ proxy, proxyPort, config, anthropic, bedrock, verdicts, sse, lines });
    // Whatever happened, no secret was logged.
    const logged = JSON.stringify(lines);
    for (const secret of SECRETS) assert.ok(!logged.includes(secret), 'a secret reached the log');
  } finally {
    await proxy?.close();
    for (const s of servers) await closeServer(s);
  }
}

/** The path part of a URL the sandbox got in its env (what it sends to the proxy directly). */
function pathOf(url: string): string {
  const u = new URL(url);
  return `${u.pathname}${u.search}`;
}

function assertNoSecret(text: string, what: string): void {
  for (const secret of [...SECRETS, AWS_ACCESS_KEY_ID])
    assert.ok(!text.includes(secret), `${what} holds a secret`);
}

test('anthropic: the upstream sees the real key, never the placeholder; the sandbox never sees the key', async () => {
  await withFixture(async ({ proxy, proxyPort, config, anthropic }) => {
    proxy.register('127.0.0.1', SANDBOX, [], ['anthropic']);
    const env = upstreamEnv(['anthropic'], proxy.url, config);
    assert.equal(env.ANTHROPIC_BASE_URL, `${proxy.url}/_hako/upstream/anthropic`);
    assert.equal(env.ANTHROPIC_API_KEY, UPSTREAM_PLACEHOLDER_KEY);
    assert.equal(env.NO_PROXY, '127.0.0.1', 'clients reach the route directly, not by CONNECT');
    assertNoSecret(JSON.stringify(env), 'the sandbox env');

    const body = JSON.stringify({ model: 'claude-test', max_tokens: 8, messages: [] });
    const res = await send(proxyPort, pathOf(`${env.ANTHROPIC_BASE_URL}/v1/messages?beta=true`), {
      headers: {
        'content-type': 'application/json',
        'anthropic-version': '2023-06-01',
        'x-api-key': env.ANTHROPIC_API_KEY,
        authorization: `Bearer ${env.ANTHROPIC_API_KEY}`,
        'x-amz-security-token': 'planted',
        host: 'evil.example:1',
        connection: 'x-hop',
        'x-hop': 'hop-by-hop',
      },
      body,
    });
    assert.equal(res.status, 200, res.body);
    assert.equal((JSON.parse(res.body) as { path: string }).path, '/base/v1/messages?beta=true');
    assert.equal(res.headers['request-id'], 'req_fake');
    assertNoSecret(JSON.stringify(res), 'the answer to the sandbox');

    assert.equal(anthropic.seen.length, 1);
    const seen = anthropic.seen[0]!;
    assert.equal(seen.method, 'POST');
    assert.equal(seen.url, '/base/v1/messages?beta=true');
    assert.equal(seen.headers['x-api-key'], REAL_KEY);
    assert.equal(seen.headers.authorization, undefined);
    assert.equal(seen.headers['x-amz-security-token'], undefined);
    assert.equal(seen.headers['x-hop'], undefined);
    assert.equal(seen.headers.host, `127.0.0.1:${anthropic.port}`, 'the sandbox cannot steer Host');
    assert.equal(seen.headers['anthropic-version'], '2023-06-01');
    assert.equal(seen.headers['content-length'], String(Buffer.byteLength(body)));
    assert.equal(seen.body.toString(), body);
    assert.ok(
      !JSON.stringify(seen.headers).includes(UPSTREAM_PLACEHOLDER_KEY),
      'the placeholder never leaves the proxy',
    );

    // A client that honours HTTP_PROXY sends the same URL in absolute form to the proxy itself.
    const viaProxyForm = await send(proxyPort, `${env.ANTHROPIC_BASE_URL}/v1/messages`, {
      headers: { 'x-api-key': UPSTREAM_PLACEHOLDER_KEY },
      body: '{}',
    });
    assert.equal(viaProxyForm.status, 200, viaProxyForm.body);
    assert.equal(anthropic.seen.length, 2);
    assert.equal(anthropic.seen[1]!.url, '/base/v1/messages');
    assert.equal(anthropic.seen[1]!.headers['x-api-key'], REAL_KEY);
  });
});

test('anthropic: an SSE answer streams, the first event reaches the client before the server finishes', async () => {
  await withFixture(async ({ proxy, proxyPort, sse }) => {
    proxy.register('127.0.0.1', SANDBOX, [], ['anthropic']);
    const req = httpRequest({
      host: '127.0.0.1',
      port: proxyPort,
      method: 'POST',
      path: '/_hako/upstream/anthropic/v1/stream',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
      agent: false,
    });
    const responded = once(req, 'response');
    req.end('{"stream":true}');
    const [res] = (await responded) as [IncomingMessage];
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['content-type'], 'text/event-stream');
    res.setEncoding('utf8');
    const [first] = (await once(res, 'data')) as [string];
    assert.match(first, /event: message_start/);
    assert.equal(sse.length, 1);
    assert.equal(sse[0]!.finished, false, 'the first event arrived while the upstream was still sending');
    sse[0]!.open();
    let rest = '';
    for await (const chunk of res) rest += chunk as string;
    assert.match(rest, /event: message_stop/);
    assert.equal(sse[0]!.finished, true);
  });
});

test('a sandbox not registered for an upstream gets 403 and the upstream sees nothing', async () => {
  await withFixture(async ({ proxy, proxyPort, anthropic, bedrock, lines }) => {
    const target = '/_hako/upstream/anthropic/v1/messages';
    const headers = { 'x-api-key': UPSTREAM_PLACEHOLDER_KEY };

    // Not a registered sandbox at all.
    let res = await send(proxyPort, target, { headers, body: '{}' });
    assert.equal(res.status, 403);
    assert.equal(res.headers['x-hako-error-code'], 'EGRESS_DENIED');
    const parsed = JSON.parse(res.body) as { type: string; code: string; error: { type: string } };
    assert.equal(parsed.code, 'EGRESS_DENIED');
    assert.equal(parsed.error.type, 'permission_error');

    // Registered, with an allowlist but without the upstream.
    proxy.register('127.0.0.1', SANDBOX, [`127.0.0.1:${anthropic.port}`]);
    res = await send(proxyPort, target, { headers, body: '{}' });
    assert.equal(res.status, 403);
    assert.match(res.body, /sandbox tupstrm01 may not use upstream \\"anthropic\\"/);

    // Registered for anthropic only: bedrock stays closed; another source is still a stranger.
    proxy.register('127.0.0.1', SANDBOX, [], ['anthropic']);
    res = await send(proxyPort, '/_hako/upstream/bedrock/model/m/invoke', { body: '{}' });
    assert.equal(res.status, 403);
    res = await send(proxyPort, target, { headers, body: '{}', localAddress: '127.0.0.2' });
    assert.equal(res.status, 403);
    res = await send(proxyPort, '/_hako/upstream/openai/v1/chat', { body: '{}' });
    assert.equal(res.status, 403);

    // After unregister the route is closed again.
    assert.equal((await send(proxyPort, target, { headers, body: '{}' })).status, 200);
    proxy.unregister('127.0.0.1');
    assert.equal((await send(proxyPort, target, { headers, body: '{}' })).status, 403);

    assert.equal(anthropic.seen.length, 1, 'only the one allowed request reached the upstream');
    assert.equal(bedrock.seen.length, 0);
    const denied = lines.filter((l) => l.msg === 'egress upstream denied');
    assert.equal(denied.length, 6);
    assert.ok(denied.some((l) => l.sourceIp === '127.0.0.2' && l.reason === 'unknown source'));
  });
});

test('the sandbox cannot steer where an upstream request goes', async () => {
  await withFixture(async ({ proxy, proxyPort, anthropic, bedrock }) => {
    proxy.register('127.0.0.1', SANDBOX, [], ['anthropic']);
    const climb = await send(proxyPort, '/_hako/upstream/anthropic/../../admin', { body: '{}' });
    assert.equal(climb.status, 400);
    assert.equal(climb.headers['x-hako-error-code'], 'INVALID_ARGUMENT');
    assert.equal(
      (await send(proxyPort, '/_hako/upstream/anthropic/v1/%2e%2e/x', { body: '{}' })).status,
      400,
    );
    // An absolute URI naming another host:port is an ordinary proxy request, checked against the
    // allowlist (empty here), never the upstream route.
    const elsewhere = await send(
      proxyPort,
      `http://127.0.0.1:${bedrock.port}/_hako/upstream/anthropic/v1/messages`,
      { body: '{}' },
    );
    assert.equal(elsewhere.status, 403);
    assert.match(elsewhere.body, /not on this sandbox's allowlist/);
    // A name that smuggles an authority is not a name.
    const smuggled = await send(proxyPort, `/_hako/upstream/anthropic@127.0.0.1:${bedrock.port}/v1`, {
      body: '{}',
    });
    assert.equal(smuggled.status, 403);
    assert.equal(anthropic.seen.length, 0);
    assert.equal(bedrock.seen.length, 0);
  });
});

test('bedrock: the proxy signs with SigV4 and a verifying server accepts it (and would refuse a wrong secret)', async () => {
  await withFixture(async ({ proxy, proxyPort, config, bedrock, verdicts }) => {
    proxy.register('127.0.0.1', SANDBOX, [], ['bedrock']);
    const env = upstreamEnv(['bedrock'], proxy.url, config);
    assert.equal(env.CLAUDE_CODE_USE_BEDROCK, '1');
    assert.equal(env.CLAUDE_CODE_SKIP_BEDROCK_AUTH, '1');
    assert.equal(env.AWS_REGION, REGION);
    assert.equal(env.ANTHROPIC_BEDROCK_BASE_URL, `${proxy.url}/_hako/upstream/bedrock`);
    assertNoSecret(JSON.stringify(env), 'the sandbox env');

    const body = JSON.stringify({ anthropic_version: 'bedrock-2023-05-31', max_tokens: 8, messages: [] });
    const res = await send(
      proxyPort,
      pathOf(
        `${env.ANTHROPIC_BEDROCK_BASE_URL}/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke?trace=a+b`,
      ),
      {
        headers: {
          'content-type': 'application/json',
          accept: 'application/json',
          'x-amz-date': '20000101T000000Z',
          'x-amz-security-token': 'planted',
          authorization: 'AWS4-HMAC-SHA256 Credential=planted',
        },
        body,
      },
    );
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(JSON.parse(res.body), { verified: true });
    assert.deepEqual(verdicts, [{ right: 'ok', wrong: 'signature does not match' }]);
    const seen = bedrock.seen[0]!;
    assert.equal(seen.url, '/model/anthropic.claude-3-haiku-20240307-v1%3A0/invoke?trace=a%20b');
    assert.equal(seen.headers['x-amz-security-token'], AWS_SESSION_TOKEN);
    assert.equal(seen.headers.host, `127.0.0.1:${bedrock.port}`);
    assert.equal(seen.body.toString(), body);
    assertNoSecret(JSON.stringify(res), 'the answer to the sandbox');

    // The verifier really checks: a body changed after signing is refused.
    const tampered = await verifySigV4({ ...seen, body: Buffer.from(`${body} `) }, AWS_SECRET);
    assert.equal(tampered, 'payload hash does not match the body');
    const otherPath = await verifySigV4({ ...seen, url: '/model/other/invoke?trace=a%20b' }, AWS_SECRET);
    assert.equal(otherPath, 'signature does not match');
  });
});

test('request bodies over the limit get 413 and never reach the upstream', async () => {
  await withFixture(async ({ proxy, proxyPort, anthropic }) => {
    proxy.register('127.0.0.1', SANDBOX, [], ['anthropic', 'bedrock']);
    const declared = await send(proxyPort, '/_hako/upstream/anthropic/v1/messages', {
      body: Buffer.alloc(2048, 'a'),
    });
    assert.equal(declared.status, 413);
    assert.equal(declared.headers['x-hako-error-code'], 'FILE_TOO_LARGE');
    const chunked = await send(proxyPort, '/_hako/upstream/bedrock/model/m/invoke', {
      body: Buffer.alloc(4096, 'b'),
      chunked: true,
    });
    assert.equal(chunked.status, 413);
    const fits = await send(proxyPort, '/_hako/upstream/anthropic/v1/messages', {
      body: Buffer.alloc(1024, 'c'),
    });
    assert.equal(fits.status, 200);
    assert.equal(anthropic.seen.length, 1);
    assert.equal(anthropic.seen[0]!.body.length, 1024);
  }, 1024);
});

test('register checks upstream names against what the proxy is configured with', async () => {
  const { logger } = capturingLogger();
  const bare = new HttpEgressProxy({ logger });
  await withFixture(({ proxy }) => {
    assert.throws(
      () => bare.register('127.0.0.1', SANDBOX, [], ['anthropic']),
      (e: unknown) => e instanceof AppError && e.code === 'UPSTREAM_NOT_CONFIGURED',
    );
    assert.equal(bare.registration('127.0.0.1'), undefined, 'a refused registration leaves nothing');
    assert.throws(
      () => proxy.register('127.0.0.1', SANDBOX, [], ['anthropic', 'openai']),
      (e: unknown) => e instanceof AppError && e.code === 'INVALID_ARGUMENT' && /"openai"/.test(e.message),
    );
    proxy.register('127.0.0.1', SANDBOX, ['example.com:443'], ['bedrock', 'anthropic']);
    assert.deepEqual(proxy.registration('127.0.0.1')?.upstreams, ['bedrock', 'anthropic']);
    proxy.register('127.0.0.1', SANDBOX, ['example.com:443']);
    assert.deepEqual(proxy.registration('127.0.0.1')?.upstreams, []);
  });
  assert.throws(
    () =>
      new HttpEgressProxy({
        logger,
        upstreams: { anthropic: { baseUrl: 'http://api.anthropic.com', apiKey: 'k' } },
      }),
    (e: unknown) => e instanceof AppError && e.code === 'CONFIG_INVALID',
  );
});

test('an upstream that cannot be reached gives 502 without leaking anything', async () => {
  const s = createNetServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const dead = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  const { logger, lines } = capturingLogger();
  const proxy = new HttpEgressProxy({
    logger,
    connectTimeoutMs: 2000,
    upstreams: { anthropic: { baseUrl: `http://127.0.0.1:${dead}`, apiKey: REAL_KEY } },
  });
  try {
    await proxy.listen('127.0.0.1', 18000 + Math.floor(Math.random() * 20000), 50);
    proxy.register('127.0.0.1', SANDBOX, [], ['anthropic']);
    const res = await send(Number(new URL(proxy.url).port), '/_hako/upstream/anthropic/v1/messages', {
      body: '{}',
    });
    assert.equal(res.status, 502);
    assert.match(res.body, /ECONNREFUSED/);
    assert.ok(!res.body.includes(REAL_KEY));
    assert.ok(lines.some((l) => l.msg === 'egress upstream failed' && l.err === 'ECONNREFUSED'));
  } finally {
    await proxy.close();
  }
});
