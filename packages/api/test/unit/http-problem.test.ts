import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError, ERROR_CODES } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import { appErrorFromHttp, problemFromAppError, problemType } from '../../src/http/problem.js';

test('every code maps to a problem with its ERROR_CODES status and summary', () => {
  for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
    const { problem } = problemFromAppError(new AppError(code, 'what went wrong'), {
      ref: 'r1',
      instance: '/x',
    });
    assert.equal(problem.status, ERROR_CODES[code].http, code);
    assert.equal(problem.code, code);
    assert.equal(problem.type, problemType(code));
    assert.equal(problem.title, ERROR_CODES[code].summary);
    assert.equal(problem.instance, '/x');
    if (problem.status >= 500) {
      assert.equal(problem.detail, 'the error was logged as ref r1', code);
      assert.equal(problem.ref, 'r1');
    } else {
      assert.equal(problem.detail, 'what went wrong', code);
    }
  }
});

test('4xx details become extension members; 5xx details and messages are never shown', () => {
  const client = problemFromAppError(
    new AppError('FILE_PATH_INVALID', 'bad', { details: { reason: 'dot_segment', status: 999, code: 'X' } }),
  );
  assert.equal(client.problem.reason, 'dot_segment');
  assert.equal(client.problem.status, 400, 'details cannot override the standard members');
  assert.equal(client.problem.code, 'FILE_PATH_INVALID');

  const server = problemFromAppError(
    new AppError('DATABASE_FAILED', 'password authentication failed for user hako at 10.0.0.5', {
      details: { host: '10.0.0.5' },
    }),
    { ref: 'abc' },
  );
  const text = JSON.stringify(server.problem);
  assert.doesNotMatch(text, /password|10\.0\.0\.5/);
  assert.equal(server.problem.status, 503);
});

test('rate limits answer Retry-After in whole seconds (at least 1); 401 answers WWW-Authenticate', () => {
  const a = problemFromAppError(
    new AppError('RATE_LIMITED', 'slow down', { details: { retryAfterSeconds: 1.2 } }),
  );
  assert.equal(a.headers['retry-after'], '2');
  const b = problemFromAppError(
    new AppError('CONCURRENCY_LIMITED', 'wait', { details: { retryAfterSeconds: 0 } }),
  );
  assert.equal(b.headers['retry-after'], '1');
  const c = problemFromAppError(new AppError('UNAUTHENTICATED', 'who'));
  assert.equal(c.headers['www-authenticate'], 'Bearer realm="hako"');
  assert.equal(c.headers['retry-after'], undefined);
});

test("Fastify's errors map to stable codes; validation names the failing field", () => {
  const v = appErrorFromHttp(
    Object.assign(new Error('body/settings/limits/cpus must be number'), {
      statusCode: 400,
      validationContext: 'body',
      validation: [
        { instancePath: '/settings/limits/cpus', keyword: 'type', message: 'must be number', params: {} },
      ],
    }),
  );
  assert.equal(v.code, 'INVALID_ARGUMENT');
  assert.equal(v.details?.field, 'body.settings.limits.cpus');
  assert.equal(v.message, 'body.settings.limits.cpus must be number');

  const missing = appErrorFromHttp(
    Object.assign(new Error('x'), {
      validationContext: 'querystring',
      validation: [{ instancePath: '', keyword: 'required', params: { missingProperty: 'path' } }],
    }),
  );
  assert.equal(missing.details?.field, 'querystring.path');
  assert.match(missing.message, /querystring\.path is required/);

  const extra = appErrorFromHttp(
    Object.assign(new Error('x'), {
      validationContext: 'body',
      validation: [
        {
          instancePath: '',
          keyword: 'additionalProperties',
          params: { additionalProperty: 'workspaceEnabled' },
        },
      ],
    }),
  );
  assert.equal(extra.details?.field, 'body.workspaceEnabled');
  assert.match(extra.message, /not a known field/);

  const fe = (code: string, statusCode: number): Error =>
    Object.assign(new Error(code), { code, statusCode });
  assert.equal(appErrorFromHttp(fe('FST_ERR_CTP_BODY_TOO_LARGE', 413)).code, 'PAYLOAD_TOO_LARGE');
  assert.equal(appErrorFromHttp(fe('FST_ERR_CTP_INVALID_MEDIA_TYPE', 415)).code, 'UNSUPPORTED_MEDIA_TYPE');
  assert.equal(appErrorFromHttp(fe('FST_ERR_NOT_FOUND', 404)).code, 'ROUTE_NOT_FOUND');
  assert.equal(appErrorFromHttp(fe('FST_ERR_CTP_INVALID_JSON_BODY', 400)).code, 'INVALID_ARGUMENT');
  assert.equal(appErrorFromHttp(new TypeError('x is undefined')).code, 'INTERNAL');
  const own = new AppError('AGENT_UNAVAILABLE', 'hakod down');
  assert.equal(appErrorFromHttp(own), own, 'an AppError (from gRPC too) keeps its code');
});
