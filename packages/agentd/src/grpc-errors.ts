/**
 * AppError ⇄ gRPC status, in one place for both sides of hakod's API. The server answers the code's
 * gRPC status with hako's stable code in the `hako-error-code` trailer; for server faults (INTERNAL,
 * UNKNOWN, DATA_LOSS) the caller gets the code's generic summary and a reference, and the real
 * message goes to the log under that reference. The client turns a status back into an AppError.
 */
import { randomBytes } from 'node:crypto';
import { Metadata, status as Status } from '@grpc/grpc-js';
import type { ServiceError, StatusObject } from '@grpc/grpc-js';
import { AppError, ERROR_CODES, isAppError } from '@hako/core';
import type { ErrorCode, Logger } from '@hako/core';
import { ERROR_CODE_TRAILER } from '@hako/proto';

/** gRPC details longer than this are cut: they travel in a header. */
const MAX_DETAILS = 2048;

/** Statuses whose message is never shown to the caller (it may name host paths, commands, peers). */
const HIDDEN_STATUSES: ReadonlySet<number> = new Set([Status.INTERNAL, Status.UNKNOWN, Status.DATA_LOSS]);

function isErrorCode(v: string): v is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERROR_CODES, v);
}

function truncate(s: string): string {
  return s.length <= MAX_DETAILS ? s : `${s.slice(0, MAX_DETAILS - 1)}…`;
}

/**
 * The status a failed call answers. Unknown errors become INTERNAL. `logger` receives every
 * hidden message (with its reference) and, at debug level, the others.
 */
export function toGrpcStatus(
  err: unknown,
  logger?: Logger,
  context?: Record<string, unknown>,
): StatusObject & { metadata: Metadata } {
  const app = isAppError(err)
    ? err
    : new AppError('INTERNAL', err instanceof Error ? err.message : String(err), { cause: err });
  const code = app.grpcStatus as Status;
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_TRAILER, app.code);
  if (HIDDEN_STATUSES.has(code)) {
    const ref = randomBytes(6).toString('hex');
    logger?.error({ ...context, err, code: app.code, ref }, 'request failed');
    return { code, details: `${ERROR_CODES[app.code].summary} (logged on the node as ref ${ref})`, metadata };
  }
  logger?.debug({ ...context, code: app.code, message: app.message }, 'request refused');
  return { code, details: truncate(app.message), metadata };
}

/** Client statuses grpc-js makes itself (no trailer from hakod) and the code each stands for. */
const BARE_STATUS_CODES: ReadonlyMap<number, ErrorCode> = new Map<number, ErrorCode>([
  [Status.UNAVAILABLE, 'AGENT_UNAVAILABLE'],
  [Status.DEADLINE_EXCEEDED, 'AGENT_UNAVAILABLE'],
  [Status.UNAUTHENTICATED, 'UNAUTHENTICATED'],
  [Status.PERMISSION_DENIED, 'PERMISSION_DENIED'],
  [Status.INVALID_ARGUMENT, 'INVALID_ARGUMENT'],
]);

/**
 * The AppError for a failed call: the code from the `hako-error-code` trailer when hakod sent a
 * known one, else one derived from the status (UNAVAILABLE and DEADLINE_EXCEEDED: AGENT_UNAVAILABLE).
 * `details.grpcStatus` keeps the numeric status; `cause` is the ServiceError.
 */
export function errorFromStatus(err: ServiceError | (Error & Partial<StatusObject>)): AppError {
  const grpcStatus = typeof err.code === 'number' ? err.code : Status.UNKNOWN;
  const trailer = err.metadata?.get(ERROR_CODE_TRAILER)[0];
  const fromTrailer = typeof trailer === 'string' && isErrorCode(trailer) ? trailer : undefined;
  const code = fromTrailer ?? BARE_STATUS_CODES.get(grpcStatus) ?? 'INTERNAL';
  const details = typeof err.details === 'string' && err.details !== '' ? err.details : err.message;
  const message =
    fromTrailer === undefined
      ? `hakod call failed (${Status[grpcStatus] ?? grpcStatus}): ${details}`
      : details;
  return new AppError(code, message, { cause: err, details: { grpcStatus } });
}
