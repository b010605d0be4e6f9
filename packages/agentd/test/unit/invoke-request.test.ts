import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '@hako/core';
import {
  DEFAULT_INVOKE_PATH,
  DEFAULT_INVOKE_TIMEOUT_MS,
  prepareWorkerRequest,
} from '../../src/invoke-worker.js';
import type { WorkerRequest } from '../../src/invoke-worker.js';

function assertInvalid(r: WorkerRequest, label: string): void {
  assert.throws(
    () => prepareWorkerRequest(r),
    (err: unknown) => err instanceof AppError && err.code === 'INVALID_ARGUMENT',
    label,
  );
}

test('defaults: POST, the Lambda invocation path, 30 s, empty body', () => {
  const p = prepareWorkerRequest({ method: '', path: '', headers: {}, timeoutMs: 0 });
  assert.equal(p.method, 'POST');
  assert.equal(p.path, DEFAULT_INVOKE_PATH);
  assert.equal(p.path, '/2015-03-31/functions/function/invocations');
  assert.equal(p.timeoutMs, DEFAULT_INVOKE_TIMEOUT_MS);
  assert.equal(p.timeoutMs, 30_000);
  assert.equal(p.body.length, 0);
  assert.deepEqual(p.headers, {});
  assert.equal(prepareWorkerRequest({}).method, 'POST');
});

test('methods: a fixed set, case-insensitive, sent upper-case', () => {
  for (const m of ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
    assert.equal(prepareWorkerRequest({ method: m }).method, m);
  }
  assert.equal(prepareWorkerRequest({ method: 'get' }).method, 'GET');
  for (const m of ['CONNECT', 'TRACE', 'PROPFIND', 'GET ', 'G\r\nET', 'X']) assertInvalid({ method: m }, m);
});

test('paths: origin-form only', () => {
  for (const ok of ['/', '/a/b?c=d&e=%20', '/2015-03-31/functions/function/invocations', '/~x/@y:z']) {
    assert.equal(prepareWorkerRequest({ path: ok }).path, ok);
  }
  const bad = [
    'relative',
    'http://169.254.169.254/latest',
    '//evil.example/x',
    '/a b',
    '/a\r\nHost: x',
    '/a\nb',
    '/a\tb',
    '/a\u0000',
    '/é',
    '/a#frag',
    '*',
    `/${'a'.repeat(2048)}`,
  ];
  for (const p of bad) assertInvalid({ path: p }, JSON.stringify(p));
  // Exactly 2048 characters is allowed.
  assert.equal(prepareWorkerRequest({ path: `/${'a'.repeat(2047)}` }).path.length, 2048);
});

test('headers: hop-by-hop, Host, Content-Length and Connection-named ones are dropped; names lower-cased', () => {
  const p = prepareWorkerRequest({
    headers: {
      'Content-Type': 'application/json',
      'X-Amz-Invocation-Type': 'RequestResponse',
      Host: '169.254.169.254',
      Connection: 'keep-alive, X-Private',
      'X-Private': 'secret',
      'Keep-Alive': 'timeout=5',
      'Transfer-Encoding': 'chunked',
      TE: 'trailers',
      Trailer: 'x',
      Upgrade: 'websocket',
      'Proxy-Authorization': 'Basic abc',
      'Proxy-Connection': 'keep-alive',
      'Content-Length': '999',
      Expect: '100-continue',
      constructor: 'is a fine header name',
    },
  });
  assert.deepEqual(p.headers, {
    'content-type': 'application/json',
    'x-amz-invocation-type': 'RequestResponse',
    constructor: 'is a fine header name',
  });
});

test('headers: invalid names or values, duplicates and excess are INVALID_ARGUMENT', () => {
  assertInvalid({ headers: { 'X-A': 'ok\r\nInjected: yes' } }, 'CRLF in value');
  assertInvalid({ headers: { 'X-A': 'a\nb' } }, 'LF in value');
  assertInvalid({ headers: { 'X-A': 'a\u0000b' } }, 'NUL in value');
  assertInvalid({ headers: { 'X-A': '\u2028' } }, 'non-latin1 value');
  assertInvalid({ headers: { 'X A': 'v' } }, 'space in name');
  assertInvalid({ headers: { 'X-A:': 'v' } }, 'colon in name');
  assertInvalid({ headers: { '': 'v' } }, 'empty name');
  assertInvalid({ headers: { 'X-\r\nA': 'v' } }, 'CRLF in name');
  assertInvalid({ headers: { 'x-a': '1', 'X-A': '2' } }, 'duplicate');
  assertInvalid({ headers: { 'X-A': 'v'.repeat(8193) } }, 'long value');
  const many: Record<string, string> = {};
  for (let i = 0; i < 101; i++) many[`x-h${i}`] = 'v';
  assertInvalid({ headers: many }, 'too many headers');
  // Tabs and obs-text are allowed in values.
  assert.equal(prepareWorkerRequest({ headers: { 'X-A': 'a\tb\u00e9' } }).headers['x-a'], 'a\tb\u00e9');
});

test('timeout_ms: 1 ms … 15 min', () => {
  assert.equal(prepareWorkerRequest({ timeoutMs: 1 }).timeoutMs, 1);
  assert.equal(prepareWorkerRequest({ timeoutMs: 900_000 }).timeoutMs, 900_000);
  assertInvalid({ timeoutMs: 900_001 }, 'over 15 min');
  assertInvalid({ timeoutMs: -5 }, 'negative');
  assertInvalid({ timeoutMs: 1.5 }, 'fraction');
});

test('body: any bytes, passed through as a Buffer view', () => {
  const bytes = new Uint8Array([0, 1, 2, 255]);
  const p = prepareWorkerRequest({ body: bytes });
  assert.ok(Buffer.isBuffer(p.body));
  assert.deepEqual([...p.body], [0, 1, 2, 255]);
});
