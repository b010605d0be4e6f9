/**
 * Execute attachments (the seed system's multipart execute): `POST .../execute` with
 * `multipart/form-data` holding a `request_data` part (the JSON body's fields) and `files[]` parts.
 *
 * parseExecuteMultipart() streams the body through busboy with limits and reads each file into
 * memory under the upload API's rules (routes/files.ts: its size limit by media type, its path
 * rules); the first problem refuses the whole request, before anything is stored. The path rule:
 * a file goes to its filename, relative to /workspace (`dir/name.txt` keeps its directories),
 * validated like an upload's `path`.
 *
 * createAttachmentPort() places them for the run, after the sandbox is ready and before the agent
 * starts: each is stored as an upload is (routes/files.ts storeUpload: S3, then `user_upload` in
 * conversation_files and the manifest), then all are written into the sandbox through hakod's
 * WriteFiles, so a reused sandbox has them too and the run's sync-back finds them unchanged.
 */
import type { IncomingMessage } from 'node:http';
import { Busboy } from '@fastify/busboy';
import type { BusboyFileStream, BusboyHeaders } from '@fastify/busboy';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { writeFilesTar } from '@hako/agentd';
import type { AgentClient } from '@hako/proto';
import tarStream from 'tar-stream';
import type { FastifyRequest } from 'fastify';
import { assertFilePath } from '../http/file-path.js';
import { readUpload, storeUpload, uploadLimitFor, uploadMediaType } from '../routes/files.js';
import type { FileRouteDeps, UploadLimits } from '../routes/files.js';
import type { Attachment, AttachmentPort, SandboxTarget } from './execute-run.js';

/** The form field of the request's JSON. */
export const REQUEST_DATA_FIELD = 'request_data';
/** The form field of the files (`files` is taken too). */
export const FILES_FIELDS: readonly string[] = ['files[]', 'files'];

export interface AttachmentLimits {
  /** Per file, by media type: the upload API's limits. */
  readonly upload: UploadLimits;
  /** Files in one execute. */
  readonly maxFiles: number;
  /** The whole multipart body, in bytes. */
  readonly maxTotalBytes: number;
  /** The request_data part, in bytes. */
  readonly maxRequestDataBytes: number;
}

export function defaultAttachmentLimits(upload: UploadLimits): AttachmentLimits {
  return {
    upload,
    maxFiles: 20,
    maxTotalBytes: 64 * 1024 ** 2,
    maxRequestDataBytes: 1024 ** 2,
  };
}

export interface ParsedMultipart {
  /** The request_data part parsed as JSON (validated by the route's body schema afterwards). */
  readonly requestData: unknown;
  readonly files: Attachment[];
}

function invalid(message: string): AppError {
  return new AppError('INVALID_ARGUMENT', message);
}

/**
 * Reads a multipart execute body. `parseJson` parses the request_data text (the app's JSON parser:
 * prototype poisoning refused). Refusals: INVALID_ARGUMENT (no or malformed request_data, an
 * unknown part, a file part without a filename, a path given twice, too many files),
 * FILE_PATH_INVALID, FILE_TOO_LARGE (a file over its media type's limit),
 * UNSUPPORTED_MEDIA_TYPE, PAYLOAD_TOO_LARGE (the whole body). On a refusal the rest of the body
 * is read and dropped, so the client still gets the answer.
 */
export function parseExecuteMultipart(
  req: FastifyRequest,
  payload: IncomingMessage,
  limits: AttachmentLimits,
  parseJson: (text: string) => Promise<unknown>,
): Promise<ParsedMultipart> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limits.maxTotalBytes) {
    payload.resume();
    return Promise.reject(tooLarge(limits.maxTotalBytes));
  }
  let bb: ReturnType<typeof Busboy>;
  try {
    bb = Busboy({
      headers: req.headers as BusboyHeaders,
      preservePath: true,
      limits: {
        files: limits.maxFiles,
        fields: 4,
        parts: limits.maxFiles + 4,
        fieldSize: limits.maxRequestDataBytes,
        headerPairs: 20,
      },
    });
  } catch (err) {
    payload.resume();
    return Promise.reject(
      invalid(
        `the multipart body cannot be read: ${(err as Error).message} (send multipart/form-data with a boundary)`,
      ),
    );
  }
  return new Promise<ParsedMultipart>((resolve, reject) => {
    const files: Attachment[] = [];
    const paths = new Set<string>();
    const pending: Promise<void>[] = [];
    let requestData: string | undefined;
    let failed = false;
    let total = 0;

    const fail = (err: unknown): void => {
      if (failed) return;
      failed = true;
      payload.unpipe(bb);
      payload.off('data', count);
      payload.resume(); // drop the rest
      reject(err instanceof Error ? err : new Error(String(err)));
    };
    const count = (chunk: Buffer): void => {
      total += chunk.length;
      if (total > limits.maxTotalBytes) fail(tooLarge(limits.maxTotalBytes));
    };
    const setRequestData = (text: string): void => {
      if (requestData !== undefined) throw invalid(`give one ${REQUEST_DATA_FIELD} part, not several`);
      requestData = text;
    };

    bb.on('field', (name, value, _nameTruncated, valueTruncated) => {
      if (failed) return;
      try {
        if (FILES_FIELDS.includes(name)) {
          throw invalid(
            `a ${name} part needs a filename (Content-Disposition: form-data; name="files[]"; filename="…")`,
          );
        }
        if (name !== REQUEST_DATA_FIELD) throw unknownPart(name);
        if (valueTruncated) {
          throw invalid(`${REQUEST_DATA_FIELD} is longer than ${limits.maxRequestDataBytes} bytes`);
        }
        setRequestData(value);
      } catch (err) {
        fail(err);
      }
    });

    bb.on('file', (name, stream, filename, _encoding, mimeType) => {
      if (failed) {
        stream.resume();
        return;
      }
      try {
        if (name === REQUEST_DATA_FIELD) {
          // request_data sent as a file part (a JSON blob): read it as its text.
          pending.push(
            readUpload(stream, limits.maxRequestDataBytes, 'application/json').then(
              (b) => setRequestData(b.data.toString('utf8')),
              () => {
                throw invalid(`${REQUEST_DATA_FIELD} is longer than ${limits.maxRequestDataBytes} bytes`);
              },
            ),
          );
          pending.at(-1)?.catch(fail);
          return;
        }
        if (!FILES_FIELDS.includes(name)) throw unknownPart(name);
        const path = assertFilePath(filename);
        if (paths.has(path))
          throw invalid(`two files are named ${JSON.stringify(path.slice(0, 200))}; each path once`);
        paths.add(path);
        const { essence, stored } = uploadMediaType(mimeType);
        const read = readUpload(stream, uploadLimitFor(limits.upload, essence), essence).then((body) => {
          files.push({ path, data: body.data, sha256: body.sha256, contentType: stored });
        });
        read.catch(fail);
        pending.push(read);
      } catch (err) {
        drain(stream);
        fail(err);
      }
    });
    bb.on('filesLimit', () => fail(invalid(`an execute takes at most ${limits.maxFiles} files`)));
    bb.on('fieldsLimit', () =>
      fail(invalid(`an execute takes one ${REQUEST_DATA_FIELD} part and files[] parts`)),
    );
    bb.on('partsLimit', () => fail(invalid(`an execute takes at most ${limits.maxFiles} files`)));
    bb.on('error', (err) => fail(invalid(`the multipart body is malformed: ${(err as Error).message}`)));
    bb.on('finish', () => {
      void Promise.all(pending).then(
        async () => {
          if (failed) return;
          if (requestData === undefined) {
            fail(invalid(`a multipart execute needs a ${REQUEST_DATA_FIELD} part (the JSON body's fields)`));
            return;
          }
          let parsed: unknown;
          try {
            parsed = await parseJson(requestData);
          } catch (err) {
            fail(invalid(`${REQUEST_DATA_FIELD} is not valid JSON: ${(err as Error).message}`));
            return;
          }
          if (failed) return;
          files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
          resolve({ requestData: parsed, files });
        },
        () => undefined, // fail() already rejected
      );
    });
    payload.on('error', fail);
    payload.on('data', count);
    payload.pipe(bb);
  });
}

function unknownPart(name: string): AppError {
  return invalid(
    `unexpected form part ${JSON.stringify(name.slice(0, 100))}: a multipart execute takes ${REQUEST_DATA_FIELD} and files[]`,
  );
}

function tooLarge(limit: number): AppError {
  return new AppError('PAYLOAD_TOO_LARGE', `a multipart execute may have at most ${limit} bytes in all`, {
    details: { limit },
  });
}

function drain(stream: BusboyFileStream): void {
  stream.on('error', () => undefined);
  stream.resume();
}

export interface AttachmentPortDeps {
  readonly store: FileRouteDeps['store'];
  /** The upload API's registration (app.ts registerUserUpload). */
  readonly registerUpload: FileRouteDeps['registerUpload'];
  /** Writes a tar into the sandbox's /workspace (sandboxWriter: hakod's WriteFiles). */
  readonly writeTar: (target: SandboxTarget, ownerId: string, tar: Buffer) => Promise<void>;
  readonly logger: Logger;
}

/** AttachmentPortDeps.writeTar through hakod's WriteFiles (`timeoutMs` per call; default 10 minutes). */
export function sandboxWriter(
  clientOf: (target: SandboxTarget) => AgentClient,
  timeoutMs = 600_000,
): AttachmentPortDeps['writeTar'] {
  return async (target, ownerId, tar) => {
    await writeFilesTar(clientOf(target), { ownerId, sandboxId: target.sandboxId, destDir: '' }, tar, {
      timeoutMs,
    });
  };
}

/** The execute flow's AttachmentPort (see the top of this file). */
export function createAttachmentPort(deps: AttachmentPortDeps): AttachmentPort {
  return {
    place: async (target, tenant, conversation, runId, files) => {
      let bytes = 0;
      for (const f of files) {
        await storeUpload(deps, tenant.id, conversation.id, {
          path: f.path,
          body: { data: f.data, sha256: f.sha256, mediaType: f.contentType },
          contentType: f.contentType,
          runId,
        });
        bytes += f.data.length;
      }
      await deps.writeTar(target, tenant.id, await packFiles(files));
      deps.logger.info(
        { tenantId: tenant.id, conversationId: conversation.id, runId, files: files.length, bytes },
        'execute attachments placed',
      );
      return { files: files.length, bytes };
    },
  };
}

/** The files as one tar (mode 0644; hakod creates the directories and owns them to the sandbox user). */
export async function packFiles(files: readonly Attachment[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const c of pack as AsyncIterable<Buffer>) chunks.push(c);
  })();
  for (const f of files) {
    await new Promise<void>((resolve, reject) => {
      pack.entry({ name: f.path, size: f.data.length, mode: 0o644 }, f.data, (err) =>
        err ? reject(err) : resolve(),
      );
    });
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}
