import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AppError,
  ERROR_CODES,
  GrpcStatus,
  describeConfig,
  parseBytes,
  parseConfig,
  parseDuration,
  sandboxHostConfigSchema,
} from '../../src/index.js';

test('sizes and durations', () => {
  assert.equal(parseBytes('512m'), 512 * 1024 * 1024);
  assert.equal(parseBytes('1g'), 1024 ** 3);
  assert.equal(parseBytes('64MiB'), 64 * 1024 ** 2);
  assert.equal(parseBytes('4096'), 4096);
  for (const bad of ['', 'lots', '-1m', '0', '1x'])
    assert.throws(() => parseBytes(bad), { code: 'INVALID_ARGUMENT' }, bad);
  assert.equal(parseDuration('60s'), 60_000);
  assert.equal(parseDuration('500ms'), 500);
  assert.equal(parseDuration('2m'), 120_000);
  assert.equal(parseDuration('3'), 3000);
  for (const bad of ['', 'soon', '0s', '-5s'])
    assert.throws(() => parseDuration(bad), { code: 'INVALID_ARGUMENT' }, bad);
});

test('config defaults and validation name the bad variable', () => {
  const c = parseConfig(sandboxHostConfigSchema, {});
  assert.equal(c.HAKO_ENV, 'dev');
  assert.equal(c.CNI_SUBNET, '10.209.0.0/23');
  assert.equal(c.HAKO_SANDBOX_UID, 1000);
  assert.equal(c.HAKO_QUOTA_VOLUME_SIZE, 20 * 1024 ** 3);
  assert.throws(
    () => parseConfig(sandboxHostConfigSchema, { HAKO_SANDBOX_UID: '0', HAKO_RUNTIME: 'docker' }),
    (e: unknown) =>
      e instanceof AppError &&
      e.code === 'CONFIG_INVALID' &&
      /HAKO_SANDBOX_UID/.test(e.message) &&
      /HAKO_RUNTIME/.test(e.message),
  );
});

test('every config field is described, for the generated docs', () => {
  for (const f of describeConfig(sandboxHostConfigSchema)) assert.ok(f.description.length > 10, f.name);
});

test('every error code maps to a gRPC status and an HTTP status', () => {
  for (const [code, spec] of Object.entries(ERROR_CODES)) {
    assert.ok(spec.grpc in GrpcStatus, code);
    assert.ok(spec.http >= 400 && spec.http < 600, code);
  }
  const e = new AppError('SANDBOX_NOT_FOUND', 'x');
  assert.equal(e.grpcStatus, 5);
  assert.equal(e.httpStatus, 404);
});
