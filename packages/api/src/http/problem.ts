/**
 * Every HTTP error of hako-api as `application/problem+json` (RFC 9457) with a stable `code` from
 * ERROR_CODES, whose HTTP status it answers. One mapping for everything thrown: AppErrors (ours and
 * the ones the hakod client made from a gRPC status, which already carry hakod's code), Fastify's
 * own errors (validation, content type, body size, unknown route), and anything else (INTERNAL).
 * 5xx answers never show what went wrong: the error is logged with a reference the answer names.
 */
import { AppError, ERROR_CODES, isAppError } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

/** The problem document. Extension members come from AppError.details (safe to show by contract). */
export interface Problem {
  /** `urn:hako:error:{CODE}`. */
  type: string;
  /** The code's summary from ERROR_CODES (the same for every occurrence of the code). */
  title: string;
  status: number;
  code: ErrorCode;
  /** What went wrong for this request; for 5xx only the log reference. */
  detail: string;
  /** The request path (without the query string). */
  instance?: string;
  [extension: string]: unknown;
}

export interface ProblemAnswer {
  problem: Problem;
  /** Headers to send with it (WWW-Authenticate, Retry-After). */
  headers: Record<string, string>;
}

const RESERVED = new Set(['type', 'title', 'status', 'code', 'detail', 'instance']);

/** The problem type URI of a code. */
export function problemType(code: ErrorCode): string {
  return `urn:hako:error:${code}`;
}

/**
 * Maps an AppError to its problem and headers. `ref` names the log entry of a 5xx (its detail and
 * details are not shown); `instance` is the request path.
 */
export function problemFromAppError(
  err: AppError,
  opts: { ref?: string; instance?: string } = {},
): ProblemAnswer {
  const spec = ERROR_CODES[err.code];
  const status = spec.http;
  const serverSide = status >= 500;
  const problem: Problem = {
    type: problemType(err.code),
    title: spec.summary,
    status,
    code: err.code,
    detail: serverSide ? `the error was logged as ref ${opts.ref ?? 'unknown'}` : err.message,
  };
  if (opts.instance !== undefined) problem.instance = opts.instance;
  const headers: Record<string, string> = {};
  if (!serverSide && err.details) {
    for (const [k, v] of Object.entries(err.details)) if (!RESERVED.has(k)) problem[k] = v;
  }
  if (serverSide && opts.ref !== undefined) problem.ref = opts.ref;
  const retry = err.details?.retryAfterSeconds;
  if (typeof retry === 'number' && Number.isFinite(retry)) {
    headers['retry-after'] = String(Math.max(1, Math.ceil(retry)));
  }
  if (status === 401) headers['www-authenticate'] = 'Bearer realm="hako"';
  // A refused body may still be arriving: answer, then close rather than read the rest.
  if (status === 413) headers.connection = 'close';
  return { problem, headers };
}

interface ValidationIssue {
  instancePath?: string;
  message?: string;
  keyword?: string;
  params?: Record<string, unknown>;
}

/** `body.settings.limits.cpus` from a validation context and an ajv instancePath (`/settings/limits/cpus`). */
function fieldOf(context: string | undefined, issue: ValidationIssue | undefined): string {
  const parts = (issue?.instancePath ?? '')
    .split('/')
    .filter((p) => p !== '')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  const params = issue?.params ?? {};
  if (typeof params.missingProperty === 'string') parts.push(params.missingProperty);
  if (typeof params.additionalProperty === 'string') parts.push(params.additionalProperty);
  return [context ?? 'request', ...parts].join('.');
}

/**
 * Turns anything thrown while handling a request into an AppError: AppErrors as they are, Fastify's
 * client errors into their codes (validation names the failing field in `details.field`), the
 * rest into INTERNAL (kept as the cause, for the log).
 */
export function appErrorFromHttp(err: unknown): AppError {
  if (isAppError(err)) return err;
  const fe = err as Partial<FastifyError> & { validation?: ValidationIssue[]; validationContext?: string };
  if (fe && typeof fe === 'object' && Array.isArray(fe.validation)) {
    const issue = fe.validation[0];
    const field = fieldOf(fe.validationContext, issue);
    let reason = issue?.message ?? 'is not valid';
    if (issue?.keyword === 'additionalProperties') reason = 'is not a known field';
    else if (issue?.keyword === 'required') reason = 'is required';
    return new AppError('INVALID_ARGUMENT', `${field} ${reason}`, { cause: err, details: { field } });
  }
  const status = typeof fe?.statusCode === 'number' ? fe.statusCode : 500;
  const message = typeof fe?.message === 'string' ? fe.message : String(err);
  const fastifyCode = typeof fe?.code === 'string' ? fe.code : '';
  if (fastifyCode === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    return new AppError('PAYLOAD_TOO_LARGE', 'the request body is over the size limit of this route', {
      cause: err,
    });
  }
  if (fastifyCode === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    return new AppError('UNSUPPORTED_MEDIA_TYPE', `${message}; send application/json`, { cause: err });
  }
  if (fastifyCode === 'FST_ERR_NOT_FOUND') return new AppError('ROUTE_NOT_FOUND', message, { cause: err });
  if (status >= 400 && status < 500) {
    // Fastify's other client errors (malformed JSON, bad Content-Length, bad URL): their messages
    // describe the request, not the server.
    return new AppError('INVALID_ARGUMENT', message, { cause: err });
  }
  return new AppError('INTERNAL', message, { cause: err });
}

/** The request path without its query string. */
function pathOf(request: FastifyRequest): string {
  const q = request.url.indexOf('?');
  return q === -1 ? request.url : request.url.slice(0, q);
}

/** Sends `err` as problem+json; 5xx are logged at error level with the request id as the ref. */
export function sendProblem(request: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply {
  const appErr = appErrorFromHttp(err);
  const ref = request.id;
  const { problem, headers } = problemFromAppError(appErr, { ref, instance: pathOf(request) });
  if (problem.status >= 500) {
    request.log.error({ err: appErr, cause: appErr.cause, code: appErr.code, ref }, 'request failed');
  } else {
    request.log.info({ code: appErr.code, status: problem.status }, appErr.message);
  }
  return reply.code(problem.status).headers(headers).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(problem));
}

/** Installs the error and not-found handlers of `app` (call before registering routes). */
export function registerProblemHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err, request, reply) => {
    if (reply.sent || reply.raw.headersSent) {
      request.log.error({ err }, 'error after the answer started');
      return;
    }
    return sendProblem(request, reply, err);
  });
  app.setNotFoundHandler((request, reply) =>
    sendProblem(
      request,
      reply,
      new AppError('ROUTE_NOT_FOUND', `no route ${request.method} ${pathOf(request)}; see /openapi.json`),
    ),
  );
}
