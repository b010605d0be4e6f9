/**
 * `POST /v1/conversations/{id}/execute` (the agent's run as Server-Sent Events) and
 * `GET /v1/conversations/{id}/events` (the stored event log, resumable with Last-Event-ID, following
 * a live run to its end). Refusals before the stream starts are problem+json like every error.
 */
import type { IncomingMessage } from 'node:http';
import { AppError } from '@hako/core';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Conversation, Executor, StoredEvent, Tenant } from '../types.js';
import { beginExecute, conversationLockKey } from '../execute/execute-run.js';
import type { Attachment, ExecuteDeps } from '../execute/execute-run.js';
import { defaultAttachmentLimits, parseExecuteMultipart } from '../execute/attachments.js';
import type { AttachmentLimits } from '../execute/attachments.js';
import { SseWriter, parseLastEventId } from '../sse.js';
import { DEFAULT_UPLOAD_LIMITS, sizeText } from './files.js';

export interface ExecuteRouteDeps {
  readonly execute: ExecuteDeps;
  /** The caller's tenant id, set by the API-key auth hook. */
  readonly tenantOf: (req: FastifyRequest) => string;
  /** The tenant and its conversation; CONVERSATION_NOT_FOUND for another tenant's id. */
  readonly loadContext: (
    tenantId: string,
    conversationId: string,
  ) => Promise<{ tenant: Tenant; conversation: Conversation }>;
  /** Stored events after `afterSeq`, oldest first, at most `limit`. */
  readonly listEvents: (
    tenantId: string,
    conversationId: string,
    afterSeq: number,
    limit: number,
  ) => Promise<StoredEvent[]>;
  /** How often a follower of a live run looks for new events. */
  readonly followIntervalMs: number;
  /** Longest prompt accepted, in characters. */
  readonly maxPromptChars: number;
  /** Limits of a multipart execute's files (default: the upload API's, 20 files, 64 MiB in all). */
  readonly attachmentLimits?: AttachmentLimits | undefined;
}

/** The execute request's JSON body (the seed's `request_data` names are accepted too). */
export interface ExecuteBody {
  prompt?: string;
  /** The seed system's name for `prompt`. */
  user_input?: string;
  executor?: { user_id: string; name?: string; email?: string };
  preferred_skills?: string[];
}

/** The JSON schema of ExecuteBody: exactly one of prompt and user_input. */
export function executeBodySchema(maxPromptChars: number) {
  const text = {
    type: 'string',
    minLength: 1,
    maxLength: maxPromptChars,
  } as const;
  return {
    type: 'object',
    additionalProperties: false,
    oneOf: [{ required: ['prompt'] }, { required: ['user_input'] }],
    properties: {
      prompt: {
        ...text,
        description: "The user's message; a later execute resumes the conversation's agent session.",
      },
      user_input: { ...text, description: "Same as prompt (the seed system's name); give one of the two." },
      executor: {
        type: 'object',
        required: ['user_id'],
        additionalProperties: false,
        description: "Who runs it, as the calling application names its user; recorded with the run's usage.",
        properties: {
          user_id: { type: 'string', minLength: 1, maxLength: 200 },
          name: { type: 'string', maxLength: 200 },
          email: { type: 'string', maxLength: 320 },
        },
      },
      preferred_skills: {
        type: 'array',
        maxItems: 20,
        uniqueItems: true,
        items: { type: 'string', minLength: 1, maxLength: 64 },
        description: "Names of the tenant's skills the agent should prefer for this execute.",
      },
    },
  } as const;
}

/** ExecuteBody -> the flow's request fields. */
export function executeInput(body: ExecuteBody): {
  prompt: string;
  executor: Executor | undefined;
  preferredSkills: string[] | undefined;
} {
  const e = body.executor;
  return {
    prompt: body.prompt ?? body.user_input ?? '',
    executor: e === undefined ? undefined : { userId: e.user_id, name: e.name, email: e.email },
    preferredSkills: body.preferred_skills,
  };
}

const idParams = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: { id: { type: 'string', format: 'uuid', description: 'The conversation id.' } },
} as const;

const EXAMPLE_ID = '0b9f3c1e-6a52-4d1b-9a8e-2f4c7d1e5a10';

/** What an execute stream looks like (abridged: each event also carries sdk_message). */
const EXAMPLE_STREAM = [
  'id: 1\nevent: title\ndata: {"title":"Write hello.py that prints hello, and run it","type":"title","seq":1,"timestamp":"2026-11-23T10:00:00.000Z","run_id":"…"}',
  'id: 3\nevent: progress\ndata: {"step":"sandbox","status":"done","created":true,"type":"progress","seq":3,…}',
  'id: 6\nevent: init\ndata: {"session_id":"…","tools":["Bash","Edit","Read","Write",…],"model":"…","type":"init","seq":6,…}',
  'id: 7\nevent: tool_call\ndata: {"id":"toolu_01","name":"Bash","input":{"command":"python3 hello.py"},"type":"tool_call","seq":7,…}',
  'id: 8\nevent: tool_result\ndata: {"id":"toolu_01","output":"hello\\n","is_error":false,"type":"tool_result","seq":8,…}',
  'id: 10\nevent: assistant\ndata: {"text":"hello.py prints hello.","type":"assistant","seq":10,…}',
  'id: 13\nevent: done\ndata: {"status":"completed","result":"hello.py prints hello.","is_error":false,"usage":{"input_tokens":1520,"output_tokens":96,"cache_creation_input_tokens":0,"cache_read_input_tokens":0},"cost_usd":0.0061,"turn_count":2,"duration_ms":2410,"session_id":"…","type":"done","seq":13,…}',
].join('\n\n');

const sseResponse = {
  200: {
    description:
      'text/event-stream: init, thinking, assistant, tool_call, tool_result, subagent_start, subagent_end, progress, title, context_status, ping, error, and last done. Every event has an increasing id (also `seq` in its data), a timestamp and the SDK message it came from (`sdk_message`).',
    content: { 'text/event-stream': { schema: { type: 'string' } } },
  },
} as const;

export function registerExecuteRoutes(app: FastifyInstance, deps: ExecuteRouteDeps): void {
  // The execute route has its own context: it also takes multipart/form-data (attachments).
  void app.register((scope, _opts, done) => {
    registerExecuteRoute(scope, deps);
    done();
  });
  registerEventsRoute(app, deps);
}

function registerExecuteRoute(app: FastifyInstance, deps: ExecuteRouteDeps): void {
  const limits = deps.attachmentLimits ?? defaultAttachmentLimits(DEFAULT_UPLOAD_LIMITS);
  // The files of a multipart execute, by request (its body is the request_data part).
  const attached = new WeakMap<FastifyRequest, Attachment[]>();
  const jsonParser = app.getDefaultJsonParser('error', 'error');
  const parseJson = (req: FastifyRequest, text: string): Promise<unknown> =>
    new Promise((resolve, reject) => {
      void jsonParser(req, text, (err, body) => (err ? reject(err) : resolve(body)));
    });
  if (app.hasContentTypeParser('multipart/form-data')) app.removeContentTypeParser('multipart/form-data');
  app.addContentTypeParser('multipart/form-data', async (req: FastifyRequest, payload: IncomingMessage) => {
    const parsed = await parseExecuteMultipart(req, payload, limits, (text) => parseJson(req, text));
    attached.set(req, parsed.files);
    return parsed.requestData;
  });

  app.post<{ Params: { id: string }; Body: ExecuteBody }>(
    '/v1/conversations/:id/execute',
    {
      config: {
        auth: 'tenant',
        docs: {
          errors: [
            'CONVERSATION_NOT_FOUND',
            'CONVERSATION_ARCHIVED',
            'WORKSPACE_DISABLED',
            'SKILL_UNKNOWN',
            'CONTEXT_LIMIT_EXCEEDED',
            'MODEL_UNKNOWN',
            'MODEL_DISABLED',
            'CONVERSATION_LOCKED',
            'CONCURRENCY_LIMITED',
            'FILE_PATH_INVALID',
            'FILE_TOO_LARGE',
          ],
          multipart: {
            description: `The seed system's form: a \`request_data\` part (JSON with the fields of the JSON body) and up to ${limits.maxFiles} \`files[]\` parts, ${sizeText(limits.maxTotalBytes)} in all. Each file goes into the workspace before the agent starts, at its filename (relative to the workspace; \`dir/name.txt\` keeps its directories; the upload API's path rules), registered as \`user_upload\` like an upload, under the upload API's size limit for its Content-Type (text/plain when the part has none, as RFC 7578 defines; a charset parameter is not kept). Any invalid file or request_data refuses the whole execute before the stream, storing nothing; a conversation without a workspace refuses attachments (WORKSPACE_DISABLED).`,
            parts: {
              request_data: {
                contentType: 'application/json',
                description: 'The JSON body (prompt or user_input, executor, preferred_skills).',
              },
              'files[]': { contentType: '*/*', description: 'A file; its filename is its workspace path.' },
            },
          },
          example: {
            params: { id: EXAMPLE_ID },
            body: { prompt: 'Write hello.py that prints hello, and run it' },
            response: { status: 200, contentType: 'text/event-stream', body: EXAMPLE_STREAM },
          },
        },
      },
      schema: {
        summary: 'Run the agent on a prompt; the answer is a Server-Sent Events stream',
        tags: ['conversations'],
        params: idParams,
        body: executeBodySchema(deps.maxPromptChars),
        response: sseResponse,
      },
    },
    async (req, reply) => {
      const tenantId = deps.tenantOf(req);
      const { tenant, conversation } = await deps.loadContext(tenantId, req.params.id);
      // Refusals (context limit, lock, run slots) throw here, before any byte of the stream.
      const attachments = attached.get(req) ?? [];
      if (attachments.length > 0 && !conversation.workspaceEnabled) {
        throw new AppError(
          'WORKSPACE_DISABLED',
          'the conversation was created with workspace_enabled false: it has no workspace for attachments; send the execute without files',
        );
      }
      const handle = await beginExecute(deps.execute, {
        tenant,
        conversation,
        ...executeInput(req.body),
        ...(attachments.length > 0 ? { attachments } : {}),
      });
      reply.hijack();
      const sse = new SseWriter(reply.raw);
      sse.open();
      let finished = false;
      sse.onClose(() => {
        if (!finished) handle.cancel('client');
      });
      try {
        await handle.run({ onEvent: (ev) => sse.write(ev) });
      } finally {
        finished = true;
        sse.end();
      }
    },
  );
}

function registerEventsRoute(app: FastifyInstance, deps: ExecuteRouteDeps): void {
  app.get<{ Params: { id: string }; Querystring: { after?: number } }>(
    '/v1/conversations/:id/events',
    {
      schema: {
        summary:
          'Replay the stored events (resume with Last-Event-ID), following a live run to its done event',
        tags: ['conversations'],
        params: idParams,
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { after: { type: 'integer', minimum: 0, description: 'Same as Last-Event-ID.' } },
        },
        response: sseResponse,
      },
    },
    async (req, reply) => {
      const tenantId = deps.tenantOf(req);
      const { conversation } = await deps.loadContext(tenantId, req.params.id);
      let after = Math.max(parseLastEventId(req.headers['last-event-id']), req.query.after ?? 0);
      reply.hijack();
      const sse = new SseWriter(reply.raw);
      sse.open();
      try {
        for (;;) {
          const batch = await deps.listEvents(tenantId, conversation.id, after, 500);
          let sawDone = false;
          for (const ev of batch) {
            if (sse.closed) return;
            await sse.write(ev);
            after = ev.seq;
            if (ev.type === 'done') sawDone = true;
          }
          if (batch.length === 500) continue;
          // Follow only while a run holds the conversation; a done event ends the follow.
          const live = await deps.execute.locks.isHeld(conversationLockKey(conversation.id));
          if (!live || (sawDone && batch.at(-1)?.type === 'done') || sse.closed) return;
          await new Promise((r) => setTimeout(r, deps.followIntervalMs));
        }
      } catch (err) {
        req.log.error({ err }, 'the event replay stopped');
      } finally {
        sse.end();
      }
    },
  );
}
