import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Metadata, status as Status } from '@grpc/grpc-js';
import type { ServiceError } from '@grpc/grpc-js';
import { pino } from 'pino';
import { AppError, ERROR_CODES, GrpcStatus } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import { ERROR_CODE_TRAILER } from '@hako/proto';
import { errorFromStatus, toGrpcStatus } from '../../src/grpc-errors.js';

/** A pino logger that records what it was given. */
function recordingLogger(): { logger: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const logger = pino(
    { level: 'debug' },
    { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) },
  );
  return { logger, lines };
}

function serviceError(code: number, details: string, trailer?: string): ServiceError {
  const metadata = new Metadata();
  if (trailer !== undefined) metadata.set(ERROR_CODE_TRAILER, trailer);
  return Object.assign(new Error(`${code} ${Status[code]}: ${details}`), { code, details, metadata });
}

test('every AppError code maps to its declared gRPC status with the code in the trailer', () => {
  for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
    const s = toGrpcStatus(new AppError(code, `detail for ${code}`));
    assert.equal(s.code, GrpcStatus[ERROR_CODES[code].grpc], code);
    assert.deepEqual(s.metadata.get(ERROR_CODE_TRAILER), [code], code);
  }
});

test('client errors keep their message; INTERNAL-class errors show a generic one and log the real one', () => {
  const { logger, lines } = recordingLogger();
  const nf = toGrpcStatus(new AppError('SANDBOX_NOT_FOUND', 'no sandbox abcdefgh1234'), logger);
  assert.equal(nf.code, Status.NOT_FOUND);
  assert.equal(nf.details, 'no sandbox abcdefgh1234');

  const secret = 'crun failed: /var/lib/hako/bundles/hako-dev-x/config.json: EACCES';
  const internal = toGrpcStatus(new AppError('RUNTIME_FAILED', secret), logger, { rpc: 'Exec' });
  assert.equal(internal.code, Status.INTERNAL);
  assert.doesNotMatch(internal.details, /crun|var\/lib/);
  const ref = /ref ([0-9a-f]{12})/.exec(internal.details)?.[1];
  assert.ok(ref, internal.details);
  const logged = lines.find((l) => l.ref === ref);
  assert.ok(logged, 'the real message is logged under the reference');
  assert.equal(logged.rpc, 'Exec');
  assert.match(JSON.stringify(logged.err), /EACCES/);

  const dataLoss = toGrpcStatus(new AppError('IMAGE_STORE_CORRUPT', '/var/lib/hako/images/blobs broken'));
  assert.equal(dataLoss.code, Status.DATA_LOSS);
  assert.doesNotMatch(dataLoss.details, /var\/lib/);
});

test('unknown errors become INTERNAL with the INTERNAL code and no leak', () => {
  for (const err of [
    new TypeError('cannot read x of undefined at /src/secret.ts'),
    'a string',
    { weird: true },
  ]) {
    const s = toGrpcStatus(err);
    assert.equal(s.code, Status.INTERNAL);
    assert.deepEqual(s.metadata.get(ERROR_CODE_TRAILER), ['INTERNAL']);
    assert.doesNotMatch(s.details, /secret|string|weird/);
  }
});

test('long details are cut (they travel in a header)', () => {
  const s = toGrpcStatus(new AppError('INVALID_ARGUMENT', 'x'.repeat(100_000)));
  assert.ok(s.details.length <= 2048);
});

test('errorFromStatus reads the trailer code and keeps the status', () => {
  const e = errorFromStatus(serviceError(Status.NOT_FOUND, 'no sandbox x', 'SANDBOX_NOT_FOUND'));
  assert.equal(e.code, 'SANDBOX_NOT_FOUND');
  assert.equal(e.message, 'no sandbox x');
  assert.equal(e.details?.grpcStatus, Status.NOT_FOUND);
  assert.ok(e.cause instanceof Error);
});

test('errorFromStatus without a (known) trailer derives the code from the status', () => {
  assert.equal(
    errorFromStatus(serviceError(Status.UNAVAILABLE, 'No connection established')).code,
    'AGENT_UNAVAILABLE',
  );
  assert.equal(
    errorFromStatus(serviceError(Status.DEADLINE_EXCEEDED, 'Deadline exceeded')).code,
    'AGENT_UNAVAILABLE',
  );
  assert.equal(errorFromStatus(serviceError(Status.UNAUTHENTICATED, 'x')).code, 'UNAUTHENTICATED');
  assert.equal(errorFromStatus(serviceError(Status.UNIMPLEMENTED, 'x')).code, 'INTERNAL');
  // A trailer naming no known code (or a prototype key) is ignored.
  assert.equal(
    errorFromStatus(serviceError(Status.INVALID_ARGUMENT, 'x', 'NOT_A_CODE')).code,
    'INVALID_ARGUMENT',
  );
  assert.equal(errorFromStatus(serviceError(Status.INTERNAL, 'x', 'constructor')).code, 'INTERNAL');
  assert.match(errorFromStatus(serviceError(Status.UNAVAILABLE, 'refused')).message, /UNAVAILABLE.*refused/);
});

test('round trip: server status → client AppError keeps the code', () => {
  const s = toGrpcStatus(new AppError('EXEC_NOT_STARTED', 'first message must be start'));
  const e = errorFromStatus(Object.assign(new Error(s.details), s));
  assert.equal(e.code, 'EXEC_NOT_STARTED');
  assert.equal(e.grpcStatus, Status.FAILED_PRECONDITION);
});
