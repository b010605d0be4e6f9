/**
 * A conversation's files (bearer API key): upload, list, download, delete. Files live in the object
 * store at `workspaces/{tenant}/{conversation}/{path}` and are registered in conversation_files and
 * in the workspace manifest, so the next run restores them and its sync-back does not take them
 * for the agent's.
 *
 * Upload: `POST /v1/conversations/{id}/files?path=dir/name.txt` with the file as the raw body and
 * its own Content-Type (no multipart). The body is streamed into memory and refused with 413
 * FILE_TOO_LARGE as soon as it passes the limit of its media type.
 *
 * Uploads and deletes take the conversation's lock (the one an execute holds) for their commit, so
 * they never land in the middle of a run: a run restores the workspace before it starts and syncs
 * it back after, and a file changed in between would be lost or resurrected. While a run holds the
 * lock they answer 409 CONVERSATION_LOCKED; another upload's short hold is waited for.
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { Transform, pipeline } from 'node:stream';
import type { Readable } from 'node:stream';
import { AppError, isAppError } from '@hako/core';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Conversation, ConversationFile, LockManager, ObjectStore } from '../types.js';
import { withConversationLock } from '../execute/conversation-lock.js';
import { tenantIdOf } from '../http/auth.js';
import { assertFilePath, workspaceObjectKey } from '../http/file-path.js';
import { EXAMPLE_CONVERSATION_ID, assertNotArchived, conversationParams } from './conversations.js';

const MIB = 1024 ** 2;

/** Largest upload per media type. */
export interface UploadLimits {
  /** By exact media type (`application/json`) or by major type (`text/*`); exact wins. */
  byType: Readonly<Record<string, number>>;
  /** Media types not listed. */
  defaultBytes: number;
}

export const DEFAULT_UPLOAD_LIMITS: UploadLimits = {
  byType: {
    'text/*': 10 * MIB,
    'application/json': 10 * MIB,
    'image/*': 20 * MIB,
    'application/octet-stream': 50 * MIB,
  },
  defaultBytes: 50 * MIB,
};

/** The limit of `mediaType` (a lowercase `type/subtype`). */
export function uploadLimitFor(limits: UploadLimits, mediaType: string): number {
  const exact = limits.byType[mediaType];
  if (exact !== undefined) return exact;
  const major = limits.byType[`${mediaType.slice(0, mediaType.indexOf('/'))}/*`];
  return major ?? limits.defaultBytes;
}

/** `10 MiB` for whole MiB, bytes otherwise. */
export function sizeText(bytes: number): string {
  return bytes % MIB === 0 ? `${bytes / MIB} MiB` : `${bytes} bytes`;
}

/** The largest limit of any media type: the hard cap of the upload route. */
export function largestUploadLimit(limits: UploadLimits): number {
  return Math.max(limits.defaultBytes, ...Object.values(limits.byType));
}

const TOKEN = "[a-z0-9!#$&^_.+'*`|~-]+";
const MEDIA_TYPE_RE = new RegExp(`^(${TOKEN})/(${TOKEN})$`);

/**
 * The media type of an upload from its Content-Type: `type/subtype` lowercased, with a charset
 * parameter kept (`text/plain; charset=utf-8`); application/octet-stream when there is none.
 * UNSUPPORTED_MEDIA_TYPE when it is malformed.
 */
export function uploadMediaType(contentType: string | undefined): { essence: string; stored: string } {
  if (contentType === undefined || contentType.trim() === '') {
    return { essence: 'application/octet-stream', stored: 'application/octet-stream' };
  }
  const [first, ...params] = contentType.split(';');
  const essence = (first ?? '').trim().toLowerCase();
  if (!MEDIA_TYPE_RE.test(essence) || contentType.length > 200) {
    throw new AppError(
      'UNSUPPORTED_MEDIA_TYPE',
      `"${contentType.slice(0, 100)}" is not a media type (type/subtype)`,
    );
  }
  let stored = essence;
  for (const p of params) {
    const m = /^\s*charset\s*=\s*"?([A-Za-z0-9._:-]{1,40})"?\s*$/i.exec(p);
    if (m) stored = `${essence}; charset=${m[1]!.toLowerCase()}`;
  }
  return { essence, stored };
}

/** What the file routes need from the repositories (a FileRepository and manifest in one transaction). */
export interface FileRouteDeps {
  store: ObjectStore;
  locks: LockManager;
  limits: UploadLimits;
  /** CONVERSATION_NOT_FOUND when it is not one of the tenant's. */
  getConversation: (tenantId: string, id: string) => Promise<Conversation>;
  listFiles: (tenantId: string, conversationId: string) => Promise<ConversationFile[]>;
  /** The registered file, or undefined. */
  getFile: (tenantId: string, conversationId: string, path: string) => Promise<ConversationFile | undefined>;
  /** Registers an upload in conversation_files and the workspace manifest, in one transaction. */
  registerUpload: (
    tenantId: string,
    conversationId: string,
    file: { path: string; size: number; sha256: string; mimeType: string; runId?: string | undefined },
  ) => Promise<ConversationFile>;
  /** Removes the file from conversation_files and the manifest, in one transaction; true when it was registered. */
  unregisterFile: (tenantId: string, conversationId: string, path: string) => Promise<boolean>;
  /** How long an upload waits for another upload's hold on the lock (default 5 s). */
  lockWaitMs?: number;
  /**
   * Called holding the lock before an upload or delete changes the workspace in S3: the
   * conversation's live sandbox would no longer match S3 (the next run's sync-back would undo the
   * change), so server.ts releases it and the next run restores the workspace from S3. A failure
   * refuses the change (nothing stored).
   */
  beforeWorkspaceChange?: (tenantId: string, conversationId: string) => Promise<void>;
}

/** CONVERSATION_LOCKED for an upload or delete: a run holds the conversation, or others kept it too long. */
function fileLockErrors(waitMs: number): { running: () => AppError; busy: () => AppError } {
  return {
    running: () =>
      new AppError(
        'CONVERSATION_LOCKED',
        'a run is in progress on this conversation; change its files after the run sent its done event',
      ),
    busy: () =>
      new AppError(
        'CONVERSATION_LOCKED',
        `the conversation is busy: a run started, or other uploads and deletes held it for ${Math.round(waitMs / 1000)} s; retry later`,
      ),
  };
}

export function fileNotFound(path: string): AppError {
  return new AppError('FILE_NOT_FOUND', `the conversation has no file ${JSON.stringify(path.slice(0, 300))}`);
}

function isObjectNotFound(err: unknown): boolean {
  return isAppError(err) && (err.code as string) === 'OBJECT_NOT_FOUND';
}

export const fileSchema = {
  type: 'object',
  required: ['path', 'size', 'sha256', 'mime_type', 'version', 'source', 'created_at', 'updated_at'],
  properties: {
    path: { type: 'string', description: 'Relative to the workspace.' },
    size: { type: 'integer' },
    sha256: { type: 'string', description: 'Content hash, lowercase hex (also the ETag of a download).' },
    mime_type: { type: 'string' },
    version: { type: 'integer', description: 'Goes up each time the content changes.' },
    source: { type: 'string', enum: ['user_upload', 'ai_created', 'ai_modified'] },
    created_at: { type: 'string', format: 'date-time' },
    updated_at: { type: 'string', format: 'date-time' },
  },
} as const;

export function fileToWire(f: ConversationFile): Record<string, unknown> {
  return {
    path: f.path,
    size: f.size,
    sha256: f.sha256,
    mime_type: f.mimeType,
    version: f.version,
    source: f.source,
    created_at: f.createdAt,
    updated_at: f.updatedAt,
  };
}

const EXAMPLE_FILE = {
  path: 'data/notes.txt',
  size: 12,
  sha256: 'a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447',
  mime_type: 'text/plain; charset=utf-8',
  version: 1,
  source: 'user_upload',
  created_at: '2025-01-01T12:00:00.000Z',
  updated_at: '2025-01-01T12:00:00.000Z',
};

export const filePathParams = {
  type: 'object',
  required: ['id', '*'],
  additionalProperties: false,
  properties: {
    id: conversationParams.properties.id,
    '*': {
      type: 'string',
      description:
        'The file path relative to the workspace, slashes as they are (`dir/name.txt`) or percent-encoded.',
    },
  },
} as const;

/** An upload read into memory (by the route's content-type parser, or an execute's attachment). */
export interface UploadBody {
  data: Buffer;
  sha256: string;
  mediaType: string;
}

/**
 * Stores an upload whole: the object at `workspaces/{tenant}/{conversation}/{path}` (with its
 * media type `contentType`, charset kept), then its registration as `user_upload` in
 * conversation_files and the workspace manifest. The caller holds the conversation's lock (an
 * upload's short hold, or the execute whose attachment it is: `runId`).
 */
export async function storeUpload(
  deps: Pick<FileRouteDeps, 'store' | 'registerUpload'>,
  tenantId: string,
  conversationId: string,
  upload: { path: string; body: UploadBody; contentType: string; runId?: string | undefined },
): Promise<ConversationFile> {
  const { path, body } = upload;
  await deps.store.put(workspaceObjectKey(tenantId, conversationId, path), body.data, {
    contentType: upload.contentType,
    sha256: body.sha256,
  });
  return deps.registerUpload(tenantId, conversationId, {
    path,
    size: body.data.length,
    sha256: body.sha256,
    mimeType: upload.contentType,
    ...(upload.runId === undefined ? {} : { runId: upload.runId }),
  });
}

/**
 * Reads the upload into memory, hashing it; FILE_TOO_LARGE as soon as it passes `limit` bytes.
 * The rest of a refused body is read and dropped (not kept), so the client still gets the answer
 * rather than a reset connection; the answer closes the connection.
 */
export function readUpload(payload: Readable, limit: number, mediaType: string): Promise<UploadBody> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        payload.resume();
        reject(
          new AppError('FILE_TOO_LARGE', `a ${mediaType} upload may have at most ${limit} bytes`, {
            details: { limit },
          }),
        );
        return;
      }
      hash.update(chunk);
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve({ data: Buffer.concat(chunks, size), sha256: hash.digest('hex'), mediaType });
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const cleanup = (): void => {
      payload.off('data', onData);
      payload.off('end', onEnd);
      payload.off('error', onError);
    };
    payload.on('data', onData);
    payload.on('end', onEnd);
    payload.on('error', onError);
  });
}

/** Fails a download whose object does not have the registered size (rather than answer wrong bytes). */
function exactLength(expected: number, path: string): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > expected)
        cb(new AppError('INTERNAL', `stored object of ${path} is longer than its ${expected} bytes`));
      else cb(null, chunk);
    },
    flush(cb) {
      if (seen !== expected)
        cb(new AppError('INTERNAL', `stored object of ${path} has ${seen} of its ${expected} bytes`));
      else cb();
    },
  });
}

/** `attachment; filename*=UTF-8''…` for the last segment of `path`. */
function contentDisposition(path: string): string {
  const name = path.slice(path.lastIndexOf('/') + 1);
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`;
}

export function wildcardPath(req: FastifyRequest<{ Params: { '*': string } }>): string {
  return assertFilePath(req.params['*']);
}

export async function registerFileRoutes(app: FastifyInstance, deps: FileRouteDeps): Promise<void> {
  const lockWaitMs = deps.lockWaitMs ?? 5_000;

  /** The tenant's conversation, refused when it has no workspace. */
  const workspaceConversation = async (tenantId: string, id: string): Promise<Conversation> => {
    const conv = await deps.getConversation(tenantId, id);
    if (!conv.workspaceEnabled) {
      throw new AppError(
        'WORKSPACE_DISABLED',
        'the conversation was created with workspace_enabled false; it has no files',
      );
    }
    return conv;
  };

  // The upload route lives in its own context: its body is raw bytes of any media type.
  await app.register((scope, _opts, done) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser(
      '*',
      { bodyLimit: largestUploadLimit(deps.limits) },
      async (req: FastifyRequest, payload: IncomingMessage) => {
        const { essence } = uploadMediaType(req.headers['content-type']);
        return await readUpload(payload, uploadLimitFor(deps.limits, essence), essence);
      },
    );

    scope.post<{ Params: { id: string }; Querystring: { path: string }; Body: UploadBody | undefined }>(
      '/v1/conversations/:id/files',
      {
        bodyLimit: largestUploadLimit(deps.limits),
        schema: {
          summary: 'Upload a file into the conversation workspace (the raw body is the file)',
          description:
            'The body is the file itself, with its own Content-Type (application/octet-stream when none). Size limits by media type: ' +
            Object.entries(deps.limits.byType)
              .map(([t, n]) => `${t} ${sizeText(n)}`)
              .join(', ') +
            `, anything else ${sizeText(deps.limits.defaultBytes)}. Uploading the same path again replaces the file (its version goes up when the content changed). Refused with 409 CONVERSATION_LOCKED while a run is in progress.`,
          tags: ['files'],
          params: conversationParams,
          querystring: {
            type: 'object',
            required: ['path'],
            additionalProperties: false,
            properties: {
              path: {
                type: 'string',
                minLength: 1,
                maxLength: 4096,
                description:
                  'Where the file goes, relative to the workspace: segments separated by "/", no "..", ".", empty segment, leading "/", backslash, control character, or `.hako/`.',
              },
            },
          },
          response: { 201: fileSchema },
        },
        // The path is checked before the body is read: a bad path costs no upload.
        onRequest: (req: FastifyRequest<{ Querystring: { path?: unknown } }>, _reply, next) => {
          try {
            if (typeof req.query.path === 'string') assertFilePath(req.query.path);
            const { essence } = uploadMediaType(req.headers['content-type']);
            const declared = Number(req.headers['content-length']);
            const limit = uploadLimitFor(deps.limits, essence);
            if (Number.isFinite(declared) && declared > limit) {
              throw new AppError('FILE_TOO_LARGE', `a ${essence} upload may have at most ${limit} bytes`, {
                details: { limit },
              });
            }
            next();
          } catch (err) {
            next(err as Error);
          }
        },
        config: {
          auth: 'tenant',
          docs: {
            errors: [
              'CONVERSATION_NOT_FOUND',
              'FILE_PATH_INVALID',
              'FILE_TOO_LARGE',
              'CONVERSATION_LOCKED',
              'WORKSPACE_DISABLED',
              'CONVERSATION_ARCHIVED',
            ],
            rawBody: {
              mediaTypes: ['*/*'],
              description: 'The file content, sent with its own Content-Type.',
            },
            example: {
              params: { id: EXAMPLE_CONVERSATION_ID },
              query: { path: 'data/notes.txt' },
              contentType: 'text/plain; charset=utf-8',
              body: 'hello world\n',
              response: { status: 201, body: EXAMPLE_FILE },
            },
          },
        },
      },
      async (req, reply) => {
        const tenantId = tenantIdOf(req);
        const path = assertFilePath(req.query.path);
        const upload = req.body ?? {
          data: Buffer.alloc(0),
          sha256: createHash('sha256').digest('hex'),
          mediaType: '',
        };
        const { stored } = uploadMediaType(req.headers['content-type']);
        const conv = await workspaceConversation(tenantId, req.params.id);
        const file = await withConversationLock(
          deps.locks,
          conv,
          lockWaitMs,
          fileLockErrors(lockWaitMs),
          async () => {
            // Read again under the lock: archived or deleted meanwhile, nothing may land in S3.
            assertNotArchived(await deps.getConversation(tenantId, conv.id));
            await deps.beforeWorkspaceChange?.(tenantId, conv.id);
            return storeUpload(deps, tenantId, conv.id, { path, body: upload, contentType: stored });
          },
        );
        req.log.info(
          { tenantId, conversationId: conv.id, path, size: file.size, version: file.version },
          'file uploaded',
        );
        return reply.code(201).send(fileToWire(file));
      },
    );
    done();
  });

  app.get<{ Params: { id: string } }>(
    '/v1/conversations/:id/files',
    {
      schema: {
        summary: "List the conversation's files (uploads and what the agent created or changed)",
        tags: ['files'],
        params: conversationParams,
        response: {
          200: {
            type: 'object',
            required: ['files'],
            properties: { files: { type: 'array', items: fileSchema } },
          },
        },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['CONVERSATION_NOT_FOUND'],
          example: {
            params: { id: EXAMPLE_CONVERSATION_ID },
            response: { status: 200, body: { files: [EXAMPLE_FILE] } },
          },
        },
      },
    },
    async (req) => {
      const files = await deps.listFiles(tenantIdOf(req), req.params.id);
      return {
        files: files.filter((f) => f.path !== '.hako' && !f.path.startsWith('.hako/')).map(fileToWire),
      };
    },
  );

  app.get<{ Params: { id: string; '*': string } }>(
    '/v1/conversations/:id/files/*',
    {
      schema: {
        summary: 'Download a file',
        description:
          'Streams the file with its Content-Type, Content-Length and ETag (its sha256); If-None-Match with that ETag answers 304.',
        tags: ['files'],
        params: filePathParams,
        response: {
          200: {
            description: 'The file content.',
            headers: {
              ETag: { schema: { type: 'string' }, description: 'The quoted sha256 of the content.' },
              'Content-Disposition': { schema: { type: 'string' } },
            },
            content: {
              'application/octet-stream': {
                schema: { type: 'string', contentMediaType: 'application/octet-stream' },
              },
            },
          },
          304: { description: 'Not modified (If-None-Match matched the ETag)' },
        },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['CONVERSATION_NOT_FOUND', 'FILE_NOT_FOUND', 'FILE_PATH_INVALID'],
          example: {
            params: { id: EXAMPLE_CONVERSATION_ID, '*': 'data/notes.txt' },
            response: {
              status: 200,
              contentType: 'text/plain; charset=utf-8',
              headers: { ETag: `"${EXAMPLE_FILE.sha256}"`, 'Content-Length': '12' },
              body: 'hello world\n',
            },
          },
        },
      },
    },
    async (req, reply) => {
      const tenantId = tenantIdOf(req);
      const path = wildcardPath(req);
      const file = await deps.getFile(tenantId, req.params.id, path);
      if (!file) throw fileNotFound(path);
      const etag = `"${file.sha256}"`;
      reply.header('etag', etag).header('cache-control', 'private, no-cache');
      const inm = req.headers['if-none-match'];
      if (inm !== undefined && inm.split(',').some((t) => t.trim().replace(/^W\//, '') === etag)) {
        return reply.code(304).send();
      }
      let stream: Readable;
      try {
        stream = await deps.store.getStream(workspaceObjectKey(tenantId, req.params.id, path));
      } catch (err) {
        if (isObjectNotFound(err)) throw fileNotFound(path);
        throw err;
      }
      const body = pipeline(stream, exactLength(file.size, path), (err) => {
        if (err) req.log.error({ err, path }, 'a download stopped short');
      });
      return reply
        .type(file.mimeType)
        .header('content-length', String(file.size))
        .header('content-disposition', contentDisposition(path))
        .header('x-content-type-options', 'nosniff')
        .send(body);
    },
  );

  app.delete<{ Params: { id: string; '*': string } }>(
    '/v1/conversations/:id/files/*',
    {
      schema: {
        summary: 'Delete a file (from the object store, the file list and the workspace manifest)',
        description: 'Refused with 409 CONVERSATION_LOCKED while a run is in progress.',
        tags: ['files'],
        params: filePathParams,
        response: { 204: { description: 'Deleted' } },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: [
            'CONVERSATION_NOT_FOUND',
            'FILE_NOT_FOUND',
            'FILE_PATH_INVALID',
            'CONVERSATION_LOCKED',
            'CONVERSATION_ARCHIVED',
          ],
          example: {
            params: { id: EXAMPLE_CONVERSATION_ID, '*': 'data/notes.txt' },
            response: { status: 204 },
          },
        },
      },
    },
    async (req, reply) => {
      const tenantId = tenantIdOf(req);
      const path = wildcardPath(req);
      const conv = await deps.getConversation(tenantId, req.params.id);
      await withConversationLock(deps.locks, conv, lockWaitMs, fileLockErrors(lockWaitMs), async () => {
        assertNotArchived(await deps.getConversation(tenantId, conv.id));
        if (!(await deps.getFile(tenantId, conv.id, path))) throw fileNotFound(path);
        await deps.beforeWorkspaceChange?.(tenantId, conv.id);
        // The object first: a failure after it leaves a registered file whose download answers
        // FILE_NOT_FOUND and whose delete can be retried, never an unlisted object a run restores.
        await deps.store.delete(workspaceObjectKey(tenantId, conv.id, path));
        await deps.unregisterFile(tenantId, conv.id, path);
      });
      req.log.info({ tenantId, conversationId: conv.id, path }, 'file deleted');
      return reply.code(204).send();
    },
  );
}
