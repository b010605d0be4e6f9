/**
 * The api bench's HTTP side: JSON calls with a bearer token, raw file uploads, and an execute that
 * reads the Server-Sent Events stream as it arrives, noting when each event came (client clocks)
 * next to the server's own timestamp in the event's data, so a run can be split into its phases.
 */

/** A JSON answer (or an error body) of one request. */
export interface CallResult {
  readonly status: number;
  readonly json: Record<string, unknown>;
  readonly text: string;
}

/** Most a bench request may take before it is aborted (an execute ends with `done` long before). */
const REQUEST_TIMEOUT_MS = 300_000;

function parseJson(text: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** `METHOD base+path` with a JSON body (or none); never throws for an HTTP error status. */
export async function call(
  base: string,
  token: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<CallResult> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const text = await res.text();
  return { status: res.status, json: parseJson(text), text };
}

/** call() that insists on one status and answers the JSON body. */
export async function callOk(
  base: string,
  token: string,
  method: string,
  path: string,
  expect: number,
  body?: unknown,
): Promise<Record<string, unknown>> {
  const r = await call(base, token, method, path, body);
  if (r.status !== expect) {
    throw new Error(`${method} ${path} answered ${r.status} (expected ${expect}): ${r.text.slice(0, 500)}`);
  }
  return r.json;
}

/** Uploads one file through `POST /v1/conversations/{id}/files?path=…` with a raw body. */
export async function uploadFile(
  base: string,
  token: string,
  conversationId: string,
  path: string,
  content: Buffer,
): Promise<void> {
  const res = await fetch(
    `${base}/v1/conversations/${conversationId}/files?path=${encodeURIComponent(path)}`,
    {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'text/plain; charset=utf-8' },
      body: content,
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    },
  );
  const text = await res.text();
  if (res.status !== 201 && res.status !== 200) {
    throw new Error(`upload of ${path} answered ${res.status}: ${text.slice(0, 300)}`);
  }
}

/** One event of an execute stream. */
export interface StreamEvent {
  readonly id: number;
  readonly event: string;
  readonly data: Record<string, unknown>;
  /** performance.now() when the frame was parsed. */
  readonly recvPerf: number;
  /** Date.now() when the frame was parsed (comparable with the server's timestamps). */
  readonly recvWall: number;
  /** The server's timestamp of the event (ms since the epoch), NaN when missing. */
  readonly ts: number;
}

export interface ExecuteResult {
  readonly status: number;
  readonly events: StreamEvent[];
  /** performance.now() / Date.now() just before the request was sent. */
  readonly startPerf: number;
  readonly startWall: number;
  /** Request sent → status line and headers. */
  readonly headersMs: number;
  /** Request sent → first complete SSE event (not the `: hako` comment line). */
  readonly firstEventMs: number;
  /** Request sent → the `done` event (NaN when none came). */
  readonly doneMs: number;
  /** Request sent → end of the response body. */
  readonly wallMs: number;
  /** The problem+json body of a refused request. */
  readonly errorText: string;
}

function parseFrame(block: string): { id: number; event: string; data: string } | undefined {
  let id = NaN;
  let event = 'message';
  const data: string[] = [];
  for (const line of block.split('\n')) {
    if (line.startsWith(':')) continue;
    if (line.startsWith('id: ')) id = Number(line.slice(4));
    else if (line.startsWith('event: ')) event = line.slice(7);
    else if (line.startsWith('data: ')) data.push(line.slice(6));
  }
  return data.length === 0 ? undefined : { id, event, data: data.join('\n') };
}

/**
 * `POST /v1/conversations/{id}/execute` read to the end of the stream, every event stamped with
 * when it arrived. A refused request (not 200) resolves with its status and body; a network
 * failure or the timeout rejects.
 */
export async function executeStream(
  base: string,
  token: string,
  conversationId: string,
  prompt: string,
): Promise<ExecuteResult> {
  const startWall = Date.now();
  const startPerf = performance.now();
  const res = await fetch(`${base}/v1/conversations/${conversationId}/execute`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ prompt }),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const headersMs = performance.now() - startPerf;
  const events: StreamEvent[] = [];
  if (res.status !== 200 || !res.body) {
    const errorText = await res.text();
    const wallMs = performance.now() - startPerf;
    return {
      status: res.status,
      events,
      startPerf,
      startWall,
      headersMs,
      firstEventMs: NaN,
      doneMs: NaN,
      wallMs,
      errorText,
    };
  }
  const decoder = new TextDecoder();
  let buf = '';
  let firstEventMs = NaN;
  let doneMs = NaN;
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut = buf.indexOf('\n\n');
    while (cut >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      cut = buf.indexOf('\n\n');
      const frame = parseFrame(block);
      if (!frame) continue;
      const recvPerf = performance.now();
      const recvWall = Date.now();
      const data = JSON.parse(frame.data) as Record<string, unknown>;
      const ts = typeof data.timestamp === 'string' ? Date.parse(data.timestamp) : NaN;
      events.push({ id: frame.id, event: frame.event, data, recvPerf, recvWall, ts });
      if (Number.isNaN(firstEventMs)) firstEventMs = recvPerf - startPerf;
      if (frame.event === 'done') doneMs = recvPerf - startPerf;
    }
  }
  const wallMs = performance.now() - startPerf;
  return {
    status: 200,
    events,
    startPerf,
    startWall,
    headersMs,
    firstEventMs,
    doneMs,
    wallMs,
    errorText: '',
  };
}

/** A field of event data as text (strings as they are, anything else as JSON). */
export function text(v: unknown): string {
  return typeof v === 'string' ? v : v === undefined ? '' : JSON.stringify(v);
}

/** The `progress` event of `step` with `status`, if the run sent one. */
export function progressEvent(r: ExecuteResult, step: string, status: string): StreamEvent | undefined {
  return r.events.find((e) => e.event === 'progress' && e.data.step === step && e.data.status === status);
}

/** The `done` event's data, or undefined when the stream ended without one. */
export function doneData(r: ExecuteResult): Record<string, unknown> | undefined {
  return r.events.find((e) => e.event === 'done')?.data;
}

/**
 * Why an execute did not complete as expected (undefined when it did): a refusal, a stream without
 * `done`, a `done` that is not `completed`, or another final text than `expectResult`.
 */
export function executeProblem(r: ExecuteResult, expectResult?: string): string | undefined {
  if (r.status !== 200) return `execute answered ${r.status}: ${r.errorText.slice(0, 300)}`;
  const done = doneData(r);
  if (!done) return `the stream ended without a done event (${r.events.map((e) => e.event).join(',')})`;
  if (done.status !== 'completed') {
    const err = r.events.find((e) => e.event === 'error')?.data;
    const code = done.error_code === undefined ? '' : ` (${text(done.error_code)})`;
    return `done status ${text(done.status)}${code}${err ? `: ${text(err.message)}` : ''}`;
  }
  if (expectResult !== undefined && done.result !== expectResult) {
    return `done result ${JSON.stringify(done.result)}, expected ${JSON.stringify(expectResult)}`;
  }
  return undefined;
}

/**
 * One execute split into phases (ms), from the server's event timestamps where both ends are on
 * the server and from the client's clocks otherwise (same host, same system clock):
 * - admission: request sent → `progress sandbox started` stored (auth, context, lock, run slot,
 *   run row, title event);
 * - sandbox: ensure (create or reuse) of the conversation's sandbox;
 * - restore: S3 → /workspace (cold runs only);
 * - agent: the agent's start (after restore, or after the sandbox when warm) → `workspace_sync
 *   started`: Claude Code in the sandbox, every model call, the event stores;
 * - agent_to_first_model: of `agent`, its start → the first request the scripted model received;
 * - model_to_agent_end: of `agent`, the last model request → `workspace_sync started`;
 * - sync: sync-back (scan, hash, upload of the changed files);
 * - finish: `workspace_sync done` stored → `done` received (the final transaction, delivery).
 */
export interface ExecutePhases {
  admission: number;
  sandbox: number;
  restore: number;
  agent: number;
  agent_to_first_model: number;
  model_to_agent_end: number;
  sync: number;
  finish: number;
  total: number;
}

export const PHASE_KEYS = [
  'admission',
  'sandbox',
  'restore',
  'agent',
  'agent_to_first_model',
  'model_to_agent_end',
  'sync',
  'finish',
  'total',
] as const satisfies readonly (keyof ExecutePhases)[];

/** Splits an execute into phases; `modelTimes` are the scripted model's receive times (Date.now()) during it. */
export function executePhases(r: ExecuteResult, modelTimes: readonly number[]): ExecutePhases {
  const ts = (step: string, status: string): number => progressEvent(r, step, status)?.ts ?? NaN;
  const sandboxStarted = ts('sandbox', 'started');
  const sandboxDone = ts('sandbox', 'done');
  const restoreStarted = ts('workspace_restore', 'started');
  const restoreDone = ts('workspace_restore', 'done');
  const syncStarted = ts('workspace_sync', 'started');
  const syncDone = ts('workspace_sync', 'done');
  const doneEvent = r.events.find((e) => e.event === 'done');
  const agentStart = Number.isNaN(restoreDone) ? sandboxDone : restoreDone;
  const inAgent = modelTimes.filter((t) => t >= agentStart - 5 && t <= syncStarted + 5);
  const firstModel = inAgent.length > 0 ? Math.min(...inAgent) : NaN;
  const lastModel = inAgent.length > 0 ? Math.max(...inAgent) : NaN;
  return {
    admission: sandboxStarted - r.startWall,
    sandbox: sandboxDone - sandboxStarted,
    restore: Number.isNaN(restoreDone) ? 0 : restoreDone - restoreStarted,
    agent: syncStarted - agentStart,
    agent_to_first_model: firstModel - agentStart,
    model_to_agent_end: syncStarted - lastModel,
    sync: syncDone - syncStarted,
    finish: doneEvent ? doneEvent.recvWall - syncDone : NaN,
    total: r.wallMs,
  };
}
