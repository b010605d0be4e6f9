/**
 * Presented files and file versions (bearer API key):
 * - `GET /v1/conversations/{id}/files/presented`: the files the agent presented to the user with
 *   the hako MCP server's `present_files` tool, as they are now (a static route: it wins over the
 *   download route's wildcard, so a workspace file named `presented` at the top level is listed
 *   and served by GET .../files/{path} only under another name).
 * - `GET /v1/conversations/{id}/file-versions/{path}`: every version a file had (metadata only:
 *   the object store keeps the current content, which GET .../files/{path} serves).
 */
import { AppError } from '@hako/core';
import type { FastifyInstance } from 'fastify';
import type { FileVersion, PresentedFile } from '../types.js';
import { tenantIdOf } from '../http/auth.js';
import { EXAMPLE_CONVERSATION_ID, conversationParams } from './conversations.js';
import { filePathParams, wildcardPath } from './files.js';

export interface PresentedFileRouteDeps {
  /** CONVERSATION_NOT_FOUND when it is not one of the tenant's. */
  listPresented: (tenantId: string, conversationId: string) => Promise<PresentedFile[]>;
  /** Oldest first; empty when the path never was a registered file. CONVERSATION_NOT_FOUND. */
  listVersions: (tenantId: string, conversationId: string, path: string) => Promise<FileVersion[]>;
}

const SOURCE = { type: 'string', enum: ['user_upload', 'ai_created', 'ai_modified'] } as const;

const presentedSchema = {
  type: 'object',
  required: [
    'path',
    'version',
    'presented_version',
    'size',
    'sha256',
    'mime_type',
    'description',
    'presented_at',
    'run_id',
  ],
  properties: {
    path: {
      type: 'string',
      description: 'Relative to the workspace; download it with GET .../files/{path}.',
    },
    version: { type: 'integer', description: "The file's current version." },
    presented_version: {
      type: 'integer',
      description: 'The version it had when the agent (last) presented it.',
    },
    size: { type: 'integer' },
    sha256: { type: 'string' },
    mime_type: { type: 'string' },
    description: { type: ['string', 'null'], description: 'What the agent said the file is.' },
    presented_at: { type: 'string', format: 'date-time' },
    run_id: { type: ['string', 'null'], description: 'The run that presented it.' },
  },
} as const;

const versionSchema = {
  type: 'object',
  required: ['version', 'size', 'sha256', 'mime_type', 'source', 'run_id', 'created_at', 'current'],
  properties: {
    version: { type: 'integer' },
    size: { type: 'integer' },
    sha256: { type: 'string' },
    mime_type: { type: 'string' },
    source: SOURCE,
    run_id: {
      type: ['string', 'null'],
      description: 'The run that wrote it (its sync-back or an attachment); null for an upload.',
    },
    created_at: { type: 'string', format: 'date-time' },
    current: {
      type: 'boolean',
      description:
        'Whether this is the content the workspace holds now (the only one kept in the object store).',
    },
  },
} as const;

const EXAMPLE_RUN_ID = '7c1e2d3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f';

function presentedToWire(p: PresentedFile): Record<string, unknown> {
  return {
    path: p.path,
    version: p.version,
    presented_version: p.presentedVersion,
    size: p.size,
    sha256: p.sha256,
    mime_type: p.mimeType,
    description: p.description,
    presented_at: p.presentedAt,
    run_id: p.runId,
  };
}

export function registerPresentedFileRoutes(app: FastifyInstance, deps: PresentedFileRouteDeps): void {
  app.get<{ Params: { id: string } }>(
    '/v1/conversations/:id/files/presented',
    {
      schema: {
        summary: 'List the files the agent presented to the user',
        description:
          "The agent presents files with the `present_files` tool of hako's MCP server (`mcp__hako__present_files`); a file becomes presented when the run that presented it ends and its workspace sync registered it. Each entry shows the file as it is now (`version`) and the version it had when presented. Oldest presentation first.",
        tags: ['files'],
        params: conversationParams,
        response: {
          200: {
            type: 'object',
            required: ['files'],
            properties: { files: { type: 'array', items: presentedSchema } },
          },
        },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['CONVERSATION_NOT_FOUND'],
          example: {
            params: { id: EXAMPLE_CONVERSATION_ID },
            response: {
              status: 200,
              body: {
                files: [
                  {
                    path: 'report.md',
                    version: 2,
                    presented_version: 2,
                    size: 2048,
                    sha256: 'b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c',
                    mime_type: 'text/markdown',
                    description: 'The quarterly report',
                    presented_at: '2026-11-23T10:02:00.000Z',
                    run_id: EXAMPLE_RUN_ID,
                  },
                ],
              },
            },
          },
        },
      },
    },
    async (req) => {
      const files = await deps.listPresented(tenantIdOf(req), req.params.id);
      return { files: files.map(presentedToWire) };
    },
  );

  app.get<{ Params: { id: string; '*': string } }>(
    '/v1/conversations/:id/file-versions/*',
    {
      schema: {
        summary: 'List the versions a file had',
        description:
          'Every version of the file, oldest first: a new one each time its content changed (an upload, an execute attachment, a run of the agent). Only metadata is kept for older versions; the content of the current one is downloaded with GET .../files/{path}. The history of a deleted file stays listed (no version is `current`); a file created again goes on from its last version.',
        tags: ['files'],
        params: filePathParams,
        response: {
          200: {
            type: 'object',
            required: ['path', 'versions'],
            properties: { path: { type: 'string' }, versions: { type: 'array', items: versionSchema } },
          },
        },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['CONVERSATION_NOT_FOUND', 'FILE_NOT_FOUND', 'FILE_PATH_INVALID'],
          example: {
            params: { id: EXAMPLE_CONVERSATION_ID, '*': 'report.md' },
            response: {
              status: 200,
              body: {
                path: 'report.md',
                versions: [
                  {
                    version: 1,
                    size: 1024,
                    sha256: '7d865e959b2466918c9863afca942d0fb89d7c9ac0c99bafc3749504ded97730',
                    mime_type: 'text/markdown',
                    source: 'ai_created',
                    run_id: '5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d',
                    created_at: '2026-11-23T10:00:00.000Z',
                    current: false,
                  },
                  {
                    version: 2,
                    size: 2048,
                    sha256: 'b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c',
                    mime_type: 'text/markdown',
                    source: 'ai_modified',
                    run_id: EXAMPLE_RUN_ID,
                    created_at: '2026-11-23T10:02:00.000Z',
                    current: true,
                  },
                ],
              },
            },
          },
        },
      },
    },
    async (req) => {
      const path = wildcardPath(req);
      const versions = await deps.listVersions(tenantIdOf(req), req.params.id, path);
      if (versions.length === 0) {
        throw new AppError(
          'FILE_NOT_FOUND',
          `the conversation never had a file ${JSON.stringify(path.slice(0, 300))}`,
        );
      }
      return { path, versions: versions.map(versionToWire) };
    },
  );
}

function versionToWire(v: FileVersion): Record<string, unknown> {
  return {
    version: v.version,
    size: v.size,
    sha256: v.sha256,
    mime_type: v.mimeType,
    source: v.source,
    run_id: v.runId,
    created_at: v.createdAt,
    current: v.current,
  };
}
