/**
 * A small typed client of hako-api's HTTP API for the `hako` command: fetch, the bearer token of the
 * route's kind (HAKO_ADMIN_TOKEN for admin routes, HAKO_API_KEY for tenant routes), and every
 * problem+json answer turned into an AppError carrying the server's `code` and `detail`. A server
 * that cannot be reached is an ApiUnreachableError naming the system's error code and the URL.
 * explainError() turns any of them into the line `hako` prints and a hint of what to do next.
 */
import { AppError, ERROR_CODES, isAppError } from '@hako/core';
import type { EnvRecord, ErrorCode } from '@hako/core';

export const DEFAULT_API_URL = 'http://127.0.0.1:8080';

/** Which credential a route takes. */
export type ApiAuth = 'admin' | 'tenant' | 'none';

/** A tenant as the admin API answers it. */
export interface TenantWire {
  id: string;
  name: string;
  settings: Record<string, unknown>;
  created_at: string;
}

/** A new API key: the only answer that ever holds `key`. */
export interface ApiKeyCreatedWire {
  id: string;
  key: string;
  prefix: string;
  created_at: string;
}

export interface ConversationWire {
  id: string;
  title: string | null;
  workspace_enabled: boolean;
  session_id: string | null;
  context_tokens: number;
  context_limit: number;
  status: 'idle' | 'running';
  created_at: string;
  updated_at: string;
}

/** What an API error carries in AppError.details (besides the problem's extension members). */
export interface ApiErrorDetails {
  /** The HTTP status. */
  status: number;
  /** The `code` the server sent (also when this client does not know it; then AppError.code is a fallback). */
  problemCode: string;
  auth: ApiAuth;
  apiUrl: string;
  retryAfterSeconds?: number;
  [extension: string]: unknown;
}

/** hako-api could not be reached at all: nothing listens, the name does not resolve, a timeout. */
export class ApiUnreachableError extends Error {
  override readonly name = 'ApiUnreachableError';
  /** The system's error code (ECONNREFUSED, ENOTFOUND, ...), or UNREACHABLE when there is none. */
  readonly code: string;
  readonly apiUrl: string;

  constructor(code: string, apiUrl: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.apiUrl = apiUrl;
  }
}

export interface ApiClientOptions {
  /** hako-api's base URL (HAKO_API_URL), e.g. http://127.0.0.1:8080. */
  readonly baseUrl: string;
  /** HAKO_ADMIN_TOKEN: sent on admin routes. */
  readonly adminToken?: string | undefined;
  /** HAKO_API_KEY: sent on tenant routes. */
  readonly apiKey?: string | undefined;
  /** For tests; default the global fetch. */
  readonly fetch?: typeof fetch | undefined;
}

function nonEmpty(v: string | undefined): string | undefined {
  const t = v?.trim();
  return t === undefined || t === '' ? undefined : t;
}

/** The client configured from HAKO_API_URL, HAKO_ADMIN_TOKEN and HAKO_API_KEY. */
export function apiClientFromEnv(env: EnvRecord): ApiClient {
  return new ApiClient({
    baseUrl: nonEmpty(env.HAKO_API_URL) ?? DEFAULT_API_URL,
    adminToken: nonEmpty(env.HAKO_ADMIN_TOKEN),
    apiKey: nonEmpty(env.HAKO_API_KEY),
  });
}

/** Whether the server's code is one this client knows. */
export function isKnownCode(code: string): code is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERROR_CODES, code);
}

/** The code to carry when the server sent none or one this client does not know. */
export function fallbackCode(status: number): ErrorCode {
  if (status === 400) return 'INVALID_ARGUMENT';
  if (status === 401) return 'UNAUTHENTICATED';
  if (status === 403) return 'PERMISSION_DENIED';
  if (status === 404) return 'ROUTE_NOT_FOUND';
  if (status === 413) return 'PAYLOAD_TOO_LARGE';
  if (status === 415) return 'UNSUPPORTED_MEDIA_TYPE';
  if (status === 429) return 'RATE_LIMITED';
  return 'INTERNAL';
}

const UNREACHABLE_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused (nothing listens there)',
  ENOTFOUND: 'the host name does not resolve',
  EAI_AGAIN: 'the host name could not be resolved (DNS)',
  ETIMEDOUT: 'timed out connecting',
  UND_ERR_CONNECT_TIMEOUT: 'timed out connecting',
  ECONNRESET: 'the connection was reset',
  UND_ERR_SOCKET: 'the connection was closed',
  EHOSTUNREACH: 'the host is unreachable',
  ENETUNREACH: 'the network is unreachable',
  EPROTO: 'the TLS handshake failed (is the URL http or https?)',
};

/** The system error code in a fetch failure (`TypeError: fetch failed` with the socket error as cause). */
export function systemErrorCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 5 && e !== null && typeof e === 'object'; depth++) {
    const o = e as { code?: unknown; errors?: unknown; cause?: unknown };
    if (typeof o.code === 'string' && o.code !== '') return o.code;
    if (Array.isArray(o.errors) && o.errors.length > 0) {
      const inner = systemErrorCode(o.errors[0]);
      if (inner !== undefined) return inner;
    }
    e = o.cause;
  }
  return undefined;
}

function isAbort(err: unknown): boolean {
  return err instanceof Error && (err.name === 'AbortError' || err.name === 'TimeoutError');
}

/** An ApiUnreachableError from a failed fetch. */
export function unreachable(err: unknown, apiUrl: string): ApiUnreachableError {
  const code = systemErrorCode(err) ?? 'UNREACHABLE';
  let inner: unknown = err;
  while (inner instanceof Error && inner.cause instanceof Error) inner = inner.cause;
  const reason = UNREACHABLE_REASONS[code] ?? (inner instanceof Error ? inner.message : String(err));
  return new ApiUnreachableError(code, apiUrl, `cannot reach hako-api at ${apiUrl}: ${reason}`, {
    cause: err,
  });
}

/**
 * The AppError of a failed answer: the problem's `code` and `detail` when the body is
 * problem+json, else the status and what the body was.
 */
export function errorFromAnswer(
  status: number,
  contentType: string,
  bodyText: string,
  ctx: { auth: ApiAuth; apiUrl: string; retryAfter?: string | null | undefined },
): AppError {
  let problem: Record<string, unknown> | undefined;
  if (/json/i.test(contentType)) {
    try {
      const parsed: unknown = JSON.parse(bodyText);
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) {
        problem = parsed as Record<string, unknown>;
      }
    } catch {
      problem = undefined;
    }
  }
  const sentCode = typeof problem?.code === 'string' ? problem.code : undefined;
  const code = sentCode !== undefined && isKnownCode(sentCode) ? sentCode : fallbackCode(status);
  const details: ApiErrorDetails = {
    ...(problem ?? {}),
    status,
    problemCode: sentCode ?? code,
    auth: ctx.auth,
    apiUrl: ctx.apiUrl,
  };
  const retry = Number(ctx.retryAfter ?? NaN);
  if (Number.isFinite(retry) && retry >= 0) details.retryAfterSeconds = retry;
  let message: string;
  if (typeof problem?.detail === 'string' && problem.detail !== '') message = problem.detail;
  else if (typeof problem?.title === 'string' && problem.title !== '') message = problem.title;
  else {
    const kind = contentType.split(';')[0]?.trim() || 'no content type';
    message = `hako-api at ${ctx.apiUrl} answered HTTP ${status} (${kind}) without a problem document`;
  }
  return new AppError(code, message, { details });
}

/** The client. Every method rejects with an AppError (from the answer) or an ApiUnreachableError. */
export class ApiClient {
  readonly baseUrl: string;
  private readonly base: URL;
  private readonly adminToken: string | undefined;
  private readonly apiKey: string | undefined;
  private readonly fetchFn: typeof fetch;

  constructor(opts: ApiClientOptions) {
    let base: URL;
    try {
      base = new URL(opts.baseUrl);
    } catch {
      throw new AppError(
        'CONFIG_INVALID',
        `HAKO_API_URL "${opts.baseUrl}" is not a URL; set it like ${DEFAULT_API_URL}`,
      );
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new AppError(
        'CONFIG_INVALID',
        `HAKO_API_URL "${opts.baseUrl}" is not an http or https URL; set it like ${DEFAULT_API_URL}`,
      );
    }
    if (!base.pathname.endsWith('/')) base.pathname += '/';
    this.base = base;
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
    this.adminToken = opts.adminToken;
    this.apiKey = opts.apiKey;
    this.fetchFn = opts.fetch ?? fetch;
  }

  /** POST /v1/tenants (admin). */
  async createTenant(input: { name: string; settings?: unknown }): Promise<TenantWire> {
    const body: Record<string, unknown> = { name: input.name };
    if (input.settings !== undefined) body.settings = input.settings;
    return this.json<TenantWire>('POST', 'v1/tenants', { auth: 'admin', body });
  }

  /** GET /v1/tenants/{id} (admin). */
  async getTenant(id: string): Promise<TenantWire> {
    return this.json<TenantWire>('GET', `v1/tenants/${encodeURIComponent(id)}`, { auth: 'admin' });
  }

  /** POST /v1/tenants/{id}/api-keys (admin): the key, shown this once. */
  async createApiKey(tenantId: string): Promise<ApiKeyCreatedWire> {
    return this.json<ApiKeyCreatedWire>('POST', `v1/tenants/${encodeURIComponent(tenantId)}/api-keys`, {
      auth: 'admin',
    });
  }

  /**
   * GET /v1/conversations (tenant): newest first. The answer is `{ conversations: [...] }`; a bare
   * array is taken too.
   */
  async listConversations(opts: { limit?: number; before?: string } = {}): Promise<ConversationWire[]> {
    const q = new URLSearchParams();
    if (opts.limit !== undefined) q.set('limit', String(opts.limit));
    if (opts.before !== undefined) q.set('before', opts.before);
    const qs = q.toString() === '' ? '' : `?${q.toString()}`;
    const body = await this.json<unknown>('GET', `v1/conversations${qs}`, { auth: 'tenant' });
    const list = Array.isArray(body) ? body : (body as { conversations?: unknown } | null)?.conversations;
    if (!Array.isArray(list)) {
      throw new AppError(
        'INTERNAL',
        `hako-api at ${this.baseUrl} answered GET /v1/conversations without a conversations list`,
      );
    }
    return list as ConversationWire[];
  }

  /** POST /v1/conversations (tenant). */
  async createConversation(input: { title?: string; workspaceEnabled?: boolean }): Promise<ConversationWire> {
    const body: Record<string, unknown> = {};
    if (input.title !== undefined) body.title = input.title;
    if (input.workspaceEnabled !== undefined) body.workspace_enabled = input.workspaceEnabled;
    return this.json<ConversationWire>('POST', 'v1/conversations', { auth: 'tenant', body });
  }

  /** GET /v1/conversations/{id} (tenant). */
  async getConversation(id: string): Promise<ConversationWire> {
    return this.json<ConversationWire>('GET', `v1/conversations/${encodeURIComponent(id)}`, {
      auth: 'tenant',
    });
  }

  /**
   * POST /v1/conversations/{id}/execute (tenant): the run's Server-Sent Events stream. Refusals
   * (not found, locked, limits) reject before the stream starts. Aborting `signal` closes the
   * connection, which cancels the run on the server.
   */
  async execute(
    conversationId: string,
    prompt: string,
    signal?: AbortSignal,
  ): Promise<ReadableStream<Uint8Array>> {
    const res = await this.send('POST', `v1/conversations/${encodeURIComponent(conversationId)}/execute`, {
      auth: 'tenant',
      body: { prompt },
      accept: 'text/event-stream',
      signal,
    });
    const type = res.headers.get('content-type') ?? '';
    if (!type.startsWith('text/event-stream') || res.body === null) {
      await res.body?.cancel().catch(() => undefined);
      throw new AppError(
        'INTERNAL',
        `hako-api at ${this.baseUrl} answered the execute with ${type || 'no content type'}, not an event stream`,
      );
    }
    return res.body;
  }

  private tokenFor(auth: ApiAuth): string | undefined {
    if (auth === 'none') return undefined;
    const token = auth === 'admin' ? this.adminToken : this.apiKey;
    if (token === undefined) {
      const name = auth === 'admin' ? 'HAKO_ADMIN_TOKEN' : 'HAKO_API_KEY';
      throw new AppError('UNAUTHENTICATED', `${name} is not set`, {
        details: {
          status: 401,
          problemCode: 'UNAUTHENTICATED',
          auth,
          apiUrl: this.baseUrl,
        } satisfies ApiErrorDetails,
      });
    }
    return token;
  }

  private async send(
    method: string,
    path: string,
    opts: { auth: ApiAuth; body?: unknown; accept?: string; signal?: AbortSignal | undefined },
  ): Promise<Response> {
    const headers: Record<string, string> = { accept: opts.accept ?? 'application/json' };
    const token = this.tokenFor(opts.auth);
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    let body: string | undefined;
    if (opts.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    let res: Response;
    try {
      res = await this.fetchFn(new URL(path, this.base), {
        method,
        headers,
        ...(body === undefined ? {} : { body }),
        ...(opts.signal === undefined ? {} : { signal: opts.signal }),
      });
    } catch (e) {
      if (isAbort(e)) throw e;
      throw unreachable(e, this.baseUrl);
    }
    if (res.ok) return res;
    const text = await res.text().catch(() => '');
    throw errorFromAnswer(res.status, res.headers.get('content-type') ?? '', text, {
      auth: opts.auth,
      apiUrl: this.baseUrl,
      retryAfter: res.headers.get('retry-after'),
    });
  }

  private async json<T>(
    method: string,
    path: string,
    opts: { auth: ApiAuth; body?: unknown; signal?: AbortSignal },
  ): Promise<T> {
    const res = await this.send(method, path, opts);
    const text = await res.text();
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new AppError(
        'INTERNAL',
        `hako-api at ${this.baseUrl} answered ${method} /${path} with a body that is not JSON`,
      );
    }
  }
}

/** What `hako` prints for an error: `[code] message`, and a next step when one is known. */
export interface ExplainedError {
  readonly code?: string | undefined;
  readonly message: string;
  readonly hint?: string | undefined;
}

function apiDetails(err: AppError): Partial<ApiErrorDetails> {
  return err.details ?? {};
}

/** The next step for an API error, from its code and what the request was. */
function hintFor(code: string, d: Partial<ApiErrorDetails>): string | undefined {
  const url = d.apiUrl ?? DEFAULT_API_URL;
  switch (code) {
    case 'UNAUTHENTICATED':
      if (d.auth === 'admin') {
        return 'set HAKO_ADMIN_TOKEN to the admin token of this hako-api (`hako up` prints it when it starts)';
      }
      return 'set HAKO_API_KEY to an API key of your tenant (`hako keys create TENANT_ID` makes one, with HAKO_ADMIN_TOKEN)';
    case 'RATE_LIMITED':
      return d.retryAfterSeconds === undefined
        ? 'wait a minute and retry'
        : `wait ${d.retryAfterSeconds} s and retry (the tenant's requests_per_minute)`;
    case 'TENANT_NOT_FOUND':
      return 'check the tenant id (`hako tenants create NAME` prints a new one)';
    case 'CONVERSATION_NOT_FOUND':
      return "check the id: `hako conversations list` shows your tenant's conversations (another tenant's are not found)";
    case 'CONVERSATION_LOCKED':
      return 'another execute is running on this conversation: wait for it to finish, then retry';
    case 'CONCURRENCY_LIMITED':
      return "wait for one of the tenant's runs to end, or raise its limits.concurrent_runs";
    case 'CONTEXT_LIMIT_EXCEEDED':
      return 'the conversation is full: start a new one with `hako conversations create`';
    case 'WORKSPACE_DISABLED':
      return 'this conversation has no workspace: create one without --no-workspace';
    case 'ROUTE_NOT_FOUND':
      return `is ${url} (HAKO_API_URL) a hako-api as new as this hako?`;
    case 'NO_HEALTHY_NODE':
    case 'AGENT_UNAVAILABLE':
      return 'hako-api cannot reach hakod: is `hako up` (or `hako agent`) running?';
    case 'INVALID_ARGUMENT':
      return typeof d.field === 'string' ? `fix ${d.field} and retry (see --help)` : 'see --help';
    default:
      if ((d.status ?? 0) >= 500) return "a server-side failure: hako-api's log has it under the ref above";
      return undefined;
  }
}

/** The printable form of any error a command meets. */
export function explainError(err: unknown): ExplainedError {
  if (err instanceof ApiUnreachableError) {
    return {
      code: err.code,
      message: err.message,
      hint: `is \`hako up\` running? hako-api was expected at ${err.apiUrl} (set HAKO_API_URL if it listens elsewhere)`,
    };
  }
  if (isAppError(err)) {
    const d = apiDetails(err);
    const code = typeof d.problemCode === 'string' ? d.problemCode : err.code;
    return { code, message: err.message, hint: hintFor(code, d) };
  }
  if (err instanceof Error) return { message: err.message };
  return { message: String(err) };
}
