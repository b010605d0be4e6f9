// The HTTP client of the API commands without a server: a recording fetch answers what each test
// needs. Tokens go to the routes of their kind and only there, every problem+json answer becomes
// the server's code and detail, and every error prints as `hako: [CODE] detail` plus a next step.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '@hako/core';
import {
  ApiClient,
  ApiUnreachableError,
  DEFAULT_API_URL,
  apiClientFromEnv,
  errorFromAnswer,
  explainError,
  systemErrorCode,
  unreachable,
} from '../../src/api-client.js';
import { reportError, useColor } from '../../src/cli-io.js';
import type { CliIo } from '../../src/cli-io.js';

interface Recorded {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: string | undefined;
}

function fakeFetch(answer: (r: Recorded) => Response): { fetch: typeof fetch; calls: Recorded[] } {
  const calls: Recorded[] = [];
  const f = (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const headers = (init?.headers ?? {}) as Record<string, string>;
    const rec: Recorded = {
      url: input instanceof URL ? input.toString() : typeof input === 'string' ? input : input.url,
      method: init?.method ?? 'GET',
      headers,
      body: typeof init?.body === 'string' ? init.body : undefined,
    };
    calls.push(rec);
    return Promise.resolve(answer(rec));
  };
  return { fetch: f, calls };
}

const json = (status: number, body: unknown, type = 'application/json'): Response =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': type } });

function captureIo(): CliIo & { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    onInterrupt: () => () => undefined,
    out: () => out,
    err: () => err,
  };
}

test('admin routes carry HAKO_ADMIN_TOKEN, tenant routes HAKO_API_KEY, each only its own', async () => {
  const { fetch, calls } = fakeFetch((r) => {
    if (r.url.endsWith('/v1/tenants'))
      return json(201, { id: 't1', name: 'acme', settings: {}, created_at: 'x' });
    if (r.url.includes('/api-keys'))
      return json(201, { id: 'k1', key: 'hk_abc', prefix: 'abc', created_at: 'x' });
    return json(201, { id: 'c1' });
  });
  const client = new ApiClient({
    baseUrl: 'http://api.test:1234',
    adminToken: 'ADMIN',
    apiKey: 'KEY',
    fetch,
  });
  await client.createTenant({ name: 'acme', settings: { limits: { cpus: 2 } } });
  await client.createApiKey('t 1/x');
  await client.createConversation({ title: 'T', workspaceEnabled: false });
  assert.deepEqual(
    calls.map((c) => [c.method, c.url, c.headers.authorization]),
    [
      ['POST', 'http://api.test:1234/v1/tenants', 'Bearer ADMIN'],
      ['POST', 'http://api.test:1234/v1/tenants/t%201%2Fx/api-keys', 'Bearer ADMIN'],
      ['POST', 'http://api.test:1234/v1/conversations', 'Bearer KEY'],
    ],
  );
  assert.deepEqual(JSON.parse(calls[0]?.body ?? ''), { name: 'acme', settings: { limits: { cpus: 2 } } });
  assert.deepEqual(JSON.parse(calls[2]?.body ?? ''), { title: 'T', workspace_enabled: false });
  assert.equal(calls[0]?.headers['content-type'], 'application/json');
});

test('a missing credential is UNAUTHENTICATED before any request, naming the variable', async () => {
  const { fetch, calls } = fakeFetch(() => json(200, {}));
  const client = new ApiClient({ baseUrl: DEFAULT_API_URL, fetch });
  await assert.rejects(client.listConversations(), (e: unknown) => {
    assert.ok(e instanceof AppError);
    assert.equal(e.code, 'UNAUTHENTICATED');
    assert.match(e.message, /HAKO_API_KEY is not set/);
    assert.match(explainError(e).hint ?? '', /set HAKO_API_KEY/);
    return true;
  });
  await assert.rejects(client.getTenant('t'), /HAKO_ADMIN_TOKEN is not set/);
  assert.equal(calls.length, 0);
});

test('a base URL with a path keeps it; HAKO_API_URL must be http(s)', async () => {
  const { fetch, calls } = fakeFetch(() => json(200, { conversations: [] }));
  await new ApiClient({ baseUrl: 'https://h.test/hako/', apiKey: 'k', fetch }).listConversations({
    limit: 5,
    before: 'abc',
  });
  assert.equal(calls[0]?.url, 'https://h.test/hako/v1/conversations?limit=5&before=abc');
  assert.throws(() => new ApiClient({ baseUrl: 'ftp://x' }), /not an http or https URL/);
  assert.throws(() => new ApiClient({ baseUrl: 'not a url' }), /is not a URL/);
  assert.equal(apiClientFromEnv({}).baseUrl, 'http://127.0.0.1:8080');
  assert.equal(apiClientFromEnv({ HAKO_API_URL: 'http://x:1/' }).baseUrl, 'http://x:1');
});

test('the conversation list is taken as { conversations } or as a bare array, and refused otherwise', async () => {
  const one = { id: 'c1' };
  for (const body of [{ conversations: [one] }, [one]]) {
    const { fetch } = fakeFetch(() => json(200, body));
    assert.deepEqual(
      await new ApiClient({ baseUrl: DEFAULT_API_URL, apiKey: 'k', fetch }).listConversations(),
      [one],
    );
  }
  const { fetch } = fakeFetch(() => json(200, { items: [] }));
  await assert.rejects(
    new ApiClient({ baseUrl: DEFAULT_API_URL, apiKey: 'k', fetch }).listConversations(),
    /without a conversations list/,
  );
});

test('a problem+json answer becomes an AppError with the server code and detail', async () => {
  const { fetch } = fakeFetch(() =>
    json(
      404,
      {
        type: 'urn:hako:error:TENANT_NOT_FOUND',
        title: 'No tenant',
        status: 404,
        code: 'TENANT_NOT_FOUND',
        detail: 'tenant x does not exist',
      },
      'application/problem+json',
    ),
  );
  const client = new ApiClient({ baseUrl: DEFAULT_API_URL, adminToken: 'a', fetch });
  await assert.rejects(client.getTenant('x'), (e: unknown) => {
    assert.ok(e instanceof AppError);
    assert.equal(e.code, 'TENANT_NOT_FOUND');
    assert.equal(e.message, 'tenant x does not exist');
    assert.equal(e.details?.status, 404);
    return true;
  });
});

test('errorFromAnswer: unknown codes are kept for display, bodies that are not problems are described', () => {
  const unknown = errorFromAnswer(
    409,
    'application/problem+json',
    JSON.stringify({ code: 'SOMETHING_NEW', detail: 'a newer server said no' }),
    { auth: 'tenant', apiUrl: 'http://a' },
  );
  assert.equal(unknown.code, 'INTERNAL');
  assert.deepEqual(explainError(unknown), {
    code: 'SOMETHING_NEW',
    message: 'a newer server said no',
    hint: undefined,
  });

  const html = errorFromAnswer(502, 'text/html', '<h1>Bad gateway</h1>', {
    auth: 'tenant',
    apiUrl: 'http://a',
  });
  assert.equal(html.code, 'INTERNAL');
  assert.match(html.message, /answered HTTP 502 \(text\/html\) without a problem document/);

  const limited = errorFromAnswer(
    429,
    'application/problem+json',
    JSON.stringify({ code: 'RATE_LIMITED', detail: 'slow down' }),
    {
      auth: 'tenant',
      apiUrl: 'http://a',
      retryAfter: '17',
    },
  );
  assert.equal(limited.details?.retryAfterSeconds, 17);
  assert.match(explainError(limited).hint ?? '', /wait 17 s/);

  const invalid = errorFromAnswer(
    400,
    'application/problem+json',
    JSON.stringify({
      code: 'INVALID_ARGUMENT',
      detail: 'body.settings.limits.cpus must be <= 64',
      field: 'body.settings.limits.cpus',
    }),
    { auth: 'admin', apiUrl: 'http://a' },
  );
  assert.equal(invalid.code, 'INVALID_ARGUMENT');
  assert.match(explainError(invalid).hint ?? '', /fix body\.settings\.limits\.cpus/);
});

test('401 hints name the credential of the route: admin token vs tenant key', () => {
  const problem = JSON.stringify({ code: 'UNAUTHENTICATED', detail: 'the bearer token is not valid' });
  const admin = explainError(
    errorFromAnswer(401, 'application/problem+json', problem, { auth: 'admin', apiUrl: 'http://a' }),
  );
  const tenant = explainError(
    errorFromAnswer(401, 'application/problem+json', problem, { auth: 'tenant', apiUrl: 'http://a' }),
  );
  assert.equal(admin.code, 'UNAUTHENTICATED');
  assert.match(admin.hint ?? '', /HAKO_ADMIN_TOKEN/);
  assert.doesNotMatch(admin.hint ?? '', /HAKO_API_KEY/);
  assert.match(tenant.hint ?? '', /HAKO_API_KEY/);
});

test('a refused connection names ECONNREFUSED, the URL, and asks whether hako up runs', async () => {
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:8080'), { code: 'ECONNREFUSED' });
  const { fetch } = fakeFetch(() => {
    throw new TypeError('fetch failed', { cause: refused });
  });
  const client = new ApiClient({ baseUrl: 'http://127.0.0.1:8080', apiKey: 'k', fetch });
  const err = await client.listConversations().catch((e: unknown) => e);
  assert.ok(err instanceof ApiUnreachableError);
  const io = captureIo();
  assert.equal(reportError(io, err), 1);
  assert.equal(
    io.err(),
    'hako: [ECONNREFUSED] cannot reach hako-api at http://127.0.0.1:8080: connection refused (nothing listens there)\n' +
      '  is `hako up` running? hako-api was expected at http://127.0.0.1:8080 (set HAKO_API_URL if it listens elsewhere)\n',
  );
});

test('systemErrorCode digs through causes and AggregateErrors; unreachable() without one says why', () => {
  const agg = new AggregateError([Object.assign(new Error('x'), { code: 'ECONNREFUSED' })], 'all failed');
  assert.equal(systemErrorCode(new TypeError('fetch failed', { cause: agg })), 'ECONNREFUSED');
  assert.equal(systemErrorCode(new Error('plain')), undefined);
  const e = unreachable(new TypeError('fetch failed', { cause: new Error('bad port') }), 'http://h:9');
  assert.equal(e.code, 'UNREACHABLE');
  assert.equal(e.message, 'cannot reach hako-api at http://h:9: bad port');
});

test('an aborted request stays an abort (exec reports Ctrl-C, not an unreachable server)', async () => {
  const { fetch } = fakeFetch(() => {
    throw new DOMException('This operation was aborted', 'AbortError');
  });
  const client = new ApiClient({ baseUrl: DEFAULT_API_URL, apiKey: 'k', fetch });
  await assert.rejects(client.execute('c', 'p', AbortSignal.abort()), { name: 'AbortError' });
});

test('execute refuses an answer that is not an event stream', async () => {
  const { fetch } = fakeFetch(() => json(200, { ok: true }));
  const client = new ApiClient({ baseUrl: DEFAULT_API_URL, apiKey: 'k', fetch });
  await assert.rejects(client.execute('c', 'p'), /not an event stream/);
});

test('reportError prints a plain error without a code, and an explicit hint wins', () => {
  const io = captureIo();
  assert.equal(reportError(io, new Error('boom'), 'do this'), 1);
  assert.equal(io.err(), 'hako: boom\n  do this\n');
});

test('colors only on a terminal, never with NO_COLOR or TERM=dumb', () => {
  const tty = { write: () => true, isTTY: true };
  assert.equal(useColor(tty, {}), true);
  assert.equal(useColor(tty, { NO_COLOR: '1' }), false);
  assert.equal(useColor(tty, { TERM: 'dumb' }), false);
  assert.equal(useColor({ write: () => true }, {}), false);
});
