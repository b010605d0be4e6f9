// The scripted Messages API server: an offline stand-in for the Anthropic API that the real
// Claude Code binary talks to through ANTHROPIC_BASE_URL. It plays a script of turns (see
// scripted-model-script.ts), streams them exactly as the API does (scripted-model-sse.ts), and
// tells the conversation's turns from Claude Code's auxiliary calls (scripted-model-classify.ts).
// With `bedrock` credentials it also plays the Bedrock runtime (scripted-model-bedrock.ts): the
// same script answered to SigV4-signed InvokeModel[WithResponseStream] calls.
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import type { Readable } from 'node:stream';
import { AppError, silentLogger } from '@hako/core';
import type { Logger } from '@hako/core';
import { classifyRequest, turnMarker } from './scripted-model-classify.js';
import type { RequestClass } from './scripted-model-classify.js';
import { parseScript } from './scripted-model-script.js';
import type { Script, ScriptInput, ScriptTurn } from './scripted-model-script.js';
import { bedrockChunk, parseBedrockInvocation, verifyBedrockSigV4 } from './scripted-model-bedrock.js';
import type { BedrockCredentials } from './scripted-model-bedrock.js';
import { apiId, buildMessage, encodeSseEvent, estimateTokens, messageEvents } from './scripted-model-sse.js';
import type { ApiMessage } from './scripted-model-sse.js';

/** One request the server received, in arrival order. */
export interface RecordedRequest {
  method: string;
  /** Path without the query string, e.g. `/v1/messages`. */
  path: string;
  query: string;
  headers: IncomingHttpHeaders;
  /** The JSON body, or undefined when there was none or it was not JSON. */
  body: unknown;
  /**
   * What the server made of it: `main` conversation turns (with the script turn they got;
   * `turn >= script.turns.length` means the final text), `subagent` turns, `compaction`
   * (answered with a summary), `aux` helper calls (with `reason`), `count_tokens`, `models`,
   * `hello`, `inference_profiles` (Bedrock's ListInferenceProfiles), `unsigned` (a Bedrock request
   * whose signature failed: 403), or `unknown` (answered 404 and logged at warn).
   */
  kind:
    | RequestClass['kind']
    | 'count_tokens'
    | 'models'
    | 'hello'
    | 'inference_profiles'
    | 'unsigned'
    | 'unknown';
  /**
   * Bedrock mode: the model id of an invocation (from the path) and the SigV4 verdict ('ok' or
   * why the signature was refused).
   */
  bedrock?: { modelId?: string; signature: string };
  turn?: number;
  /** Why a request counted as auxiliary. */
  reason?: string;
  /** The assistant message answered to a messages request. */
  response?: ApiMessage;
  receivedAt: number;
}

export interface ScriptedModelOptions {
  /** The script: an object or its JSON text (validated; INVALID_ARGUMENT when malformed). */
  script: ScriptInput | Script | string;
  /** Address to listen on; loopback only by default. */
  host?: string;
  /** Port; 0 (default) picks a free one. */
  port?: number;
  logger?: Logger;
  /** Keep every request in `requests` (default true); off for long benchmarks. */
  record?: boolean;
  /**
   * Also answer as the Bedrock runtime: `POST /model/{id}/invoke-with-response-stream` (AWS
   * event-stream of the Anthropic events), `POST /model/{id}/invoke` (one JSON message) and
   * `GET /inference-profiles` (empty), each only when SigV4-signed with these credentials
   * (else 403 InvalidSignatureException).
   */
  bedrock?: BedrockCredentials;
}

export interface ScriptedModel {
  /** `http://HOST:PORT`, the value for ANTHROPIC_BASE_URL. */
  readonly url: string;
  readonly port: number;
  /** Every request so far, in arrival order (empty when `record` is false). */
  readonly requests: RecordedRequest[];
  /** Replaces the script for the requests that follow. */
  setScript(script: ScriptInput | Script | string): void;
  /** Stops listening and drops open connections. Idempotent. */
  close(): Promise<void>;
}

const MAX_BODY_BYTES = 64 * 1024 * 1024;
const SUBAGENT_TOOLS = new Set(['Agent', 'Task']);
const DEFAULT_MODEL = 'claude-scripted-1';

function isScript(s: unknown): s is Script {
  return (
    typeof s === 'object' &&
    s !== null &&
    typeof (s as Script).final === 'string' &&
    typeof (s as Script).aux === 'string' &&
    typeof (s as Script).subagent === 'string' &&
    Array.isArray((s as Script).turns) &&
    (s as Script).turns.every((t) => Array.isArray((t as Partial<ScriptTurn>).blocks))
  );
}

function toScript(s: ScriptInput | Script | string): Script {
  return isScript(s) ? s : parseScript(s);
}

function decoded(req: IncomingMessage): Readable {
  switch ((req.headers['content-encoding'] ?? '').toLowerCase()) {
    case 'gzip':
      return req.pipe(createGunzip());
    case 'deflate':
      return req.pipe(createInflate());
    case 'br':
      return req.pipe(createBrotliDecompress());
    default:
      return req;
  }
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of decoded(req)) {
    const b = c as Buffer;
    size += b.length;
    if (size > MAX_BODY_BYTES) throw new Error(`request body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

/** The input-token estimate of a messages or count_tokens body: what the model would read. */
function inputTokensOf(body: Record<string, unknown>): number {
  const read = JSON.stringify([body.system ?? null, body.messages ?? null, body.tools ?? null]);
  return estimateTokens(read.length);
}

function textTurn(text: string): ScriptTurn {
  return { blocks: [{ type: 'text', text }] };
}

/**
 * Starts the scripted model on `host:port` (127.0.0.1 and a free port by default).
 *
 * Endpoints: `POST /v1/messages` (streaming SSE when `stream` is true, else one JSON message),
 * `POST /v1/messages/count_tokens`, `GET /v1/models[/{id}]`, `HEAD|GET /api/hello` (Claude
 * Code's connectivity probe). Anything else is logged at warn and answered with the API's
 * 404 error body. A handler error answers 500 `api_error`; the server never crashes.
 */
export async function startScriptedModel(opts: ScriptedModelOptions): Promise<ScriptedModel> {
  const log = opts.logger ?? silentLogger();
  const record = opts.record ?? true;
  let script = toScript(opts.script);
  const requests: RecordedRequest[] = [];
  // Prompts this server handed to sub-agents (Agent/Task tool inputs): their conversations
  // answer plain text instead of replaying the main script.
  const subagentPrompts = new Set<string>();

  const sendJson = (res: ServerResponse, status: number, body: unknown): void => {
    const text = JSON.stringify(body);
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      'request-id': apiId('req'),
    });
    res.end(text);
  };
  const sendError = (res: ServerResponse, status: number, type: string, message: string): void => {
    sendJson(res, status, { type: 'error', error: { type, message } });
  };

  const answerMessages = async (
    req: IncomingMessage,
    res: ServerResponse,
    body: Record<string, unknown>,
    entry: RecordedRequest,
    bedrock?: { modelId: string; stream: boolean },
  ): Promise<void> => {
    const cls = classifyRequest(body, { headers: req.headers, subagentPrompts });
    const current = script;
    let turn: ScriptTurn;
    entry.kind = cls.kind;
    switch (cls.kind) {
      case 'aux':
        entry.reason = cls.reason;
        turn = textTurn(current.aux);
        break;
      case 'compaction':
        // Claude Code keeps what is inside <summary>; the marker lets the continued
        // conversation go on at the turn reached instead of restarting the script.
        entry.turn = cls.turn;
        turn = textTurn(
          `<analysis>Scripted session.</analysis>\n<summary>Scripted session, compacted. ${turnMarker(cls.turn)}</summary>`,
        );
        break;
      case 'subagent':
        entry.turn = cls.turn;
        turn = textTurn(current.subagent);
        break;
      case 'main':
        entry.turn = cls.turn;
        turn = current.turns[cls.turn] ?? textTurn(current.final);
        break;
    }
    log.debug({ ...cls, model: body.model }, 'scripted model: messages request');
    const model = bedrock?.modelId ?? (typeof body.model === 'string' ? body.model : DEFAULT_MODEL);
    const message = buildMessage(turn, { model, inputTokens: inputTokensOf(body) });
    for (const block of message.content) {
      if (
        block.type === 'tool_use' &&
        SUBAGENT_TOOLS.has(block.name) &&
        typeof block.input.prompt === 'string'
      ) {
        subagentPrompts.add(block.input.prompt.trim());
      }
    }
    entry.response = message;
    if (turn.delayMs) {
      // The response closes early when the client goes away (a cancelled run): stop waiting.
      const ac = new AbortController();
      const onClose = (): void => ac.abort();
      res.once('close', onClose);
      try {
        await sleep(turn.delayMs, undefined, { signal: ac.signal });
      } catch {
        return;
      } finally {
        res.off('close', onClose);
      }
    }
    if (bedrock !== undefined) {
      if (!bedrock.stream) {
        sendJson(res, 200, message);
        return;
      }
      res.writeHead(200, {
        'content-type': 'application/vnd.amazon.eventstream',
        'x-amzn-requestid': apiId('req'),
        'x-amzn-bedrock-content-type': 'application/json',
      });
      for (const e of messageEvents(message)) {
        if (res.destroyed) return;
        res.write(bedrockChunk(e.data));
      }
      res.end();
      return;
    }
    if (body.stream !== true) {
      sendJson(res, 200, message);
      return;
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      'request-id': apiId('req'),
    });
    for (const e of messageEvents(message)) {
      if (res.destroyed) return;
      res.write(encodeSseEvent(e));
    }
    res.end();
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const [path = '/', query = ''] = (req.url ?? '/').split('?', 2);
    const method = req.method ?? 'GET';
    const raw = await readBody(req);
    let body: unknown;
    if (raw.length > 0) {
      try {
        body = JSON.parse(raw.toString('utf8')) as unknown;
      } catch {
        body = undefined;
      }
    }
    const entry: RecordedRequest = {
      method,
      path,
      query,
      headers: req.headers,
      body,
      kind: 'unknown',
      receivedAt: Date.now(),
    };
    if (record) requests.push(entry);

    const invocation = opts.bedrock && method === 'POST' ? parseBedrockInvocation(path) : undefined;
    const profiles = opts.bedrock && method === 'GET' && path === '/inference-profiles';
    if (opts.bedrock && (invocation !== undefined || profiles)) {
      const signature = verifyBedrockSigV4(
        { method, path, query, headers: req.headers, body: raw },
        opts.bedrock,
      );
      entry.bedrock = { ...(invocation ? { modelId: invocation.modelId } : {}), signature };
      if (signature !== 'ok') {
        entry.kind = 'unsigned';
        log.warn({ method, path, signature }, 'scripted model: Bedrock request refused (SigV4)');
        const text = JSON.stringify({ message: `scripted Bedrock: ${signature}` });
        res.writeHead(403, {
          'content-type': 'application/json',
          'x-amzn-errortype': 'InvalidSignatureException',
          'content-length': Buffer.byteLength(text),
        });
        res.end(text);
        return;
      }
      if (profiles) {
        entry.kind = 'inference_profiles';
        sendJson(res, 200, { inferenceProfileSummaries: [] });
        return;
      }
      if (
        typeof body !== 'object' ||
        body === null ||
        !Array.isArray((body as { messages?: unknown }).messages)
      ) {
        sendJson(res, 400, { message: 'messages: field required (the body must be a JSON object)' });
        return;
      }
      await answerMessages(req, res, body as Record<string, unknown>, entry, invocation);
      return;
    }

    if (method === 'POST' && path === '/v1/messages') {
      if (
        typeof body !== 'object' ||
        body === null ||
        !Array.isArray((body as { messages?: unknown }).messages)
      ) {
        sendError(
          res,
          400,
          'invalid_request_error',
          'messages: field required (the body must be a JSON object)',
        );
        return;
      }
      await answerMessages(req, res, body as Record<string, unknown>, entry);
      return;
    }
    if (method === 'POST' && path === '/v1/messages/count_tokens') {
      entry.kind = 'count_tokens';
      const b = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {};
      sendJson(res, 200, { input_tokens: inputTokensOf(b) });
      return;
    }
    if (method === 'GET' && (path === '/v1/models' || path.startsWith('/v1/models/'))) {
      entry.kind = 'models';
      const model = (id: string): Record<string, unknown> => ({
        type: 'model',
        id,
        display_name: `Scripted (${id})`,
        created_at: '2025-01-01T00:00:00Z',
      });
      if (path === '/v1/models') {
        sendJson(res, 200, {
          data: [model(DEFAULT_MODEL)],
          has_more: false,
          first_id: DEFAULT_MODEL,
          last_id: DEFAULT_MODEL,
        });
      } else {
        sendJson(res, 200, model(decodeURIComponent(path.slice('/v1/models/'.length))));
      }
      return;
    }
    if ((method === 'HEAD' || method === 'GET') && path === '/api/hello') {
      entry.kind = 'hello';
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(method === 'HEAD' ? undefined : '{"message":"hello"}');
      return;
    }
    log.warn({ method, path, query }, 'scripted model: unknown request answered 404');
    sendError(res, 404, 'not_found_error', `scripted model: no endpoint ${method} ${path}`);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error({ err, method: req.method, url: req.url }, 'scripted model: handler failed');
      if (!res.headersSent) sendError(res, 500, 'api_error', `scripted model: ${(err as Error).message}`);
      else res.destroy();
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err }, 'scripted model: server error'));
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  let closed: Promise<void> | undefined;
  log.info({ url: `http://${host}:${addr.port}` }, 'scripted model listening');

  return {
    url: `http://${host}:${addr.port}`,
    port: addr.port,
    requests,
    setScript(s) {
      script = toScript(s);
    },
    close() {
      closed ??= new Promise<void>((resolve, reject) => {
        server.close((err) =>
          err ? reject(new AppError('INTERNAL', `scripted model: close failed: ${err.message}`)) : resolve(),
        );
        server.closeAllConnections();
      });
      return closed;
    },
  };
}
