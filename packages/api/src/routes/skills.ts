/**
 * The tenant's skills (bearer API key): `PUT /v1/skills/{name}` uploads a skill package (a tar or
 * tar.gz of one folder with SKILL.md) creating or replacing it, `GET /v1/skills` lists them,
 * `GET /v1/skills/{name}` describes one with its files, `DELETE /v1/skills/{name}` removes it.
 * Sandboxes see them read-only at /skills/{tenant_id} from their next execute on.
 *
 * Nothing is half-stored: the package is validated whole first (skills/skill-package.ts); then the
 * new version's object is written, then the row swapped, then the old version's object removed,
 * so a reader always finds a complete version.
 */
import { AppError } from '@hako/core';
import type { FastifyInstance } from 'fastify';
import type { ObjectStore } from '../types.js';
import { tenantIdOf } from '../http/auth.js';
import type { Skill, SkillRepository } from '../repositories/skills.js';
import {
  DEFAULT_SKILL_LIMITS,
  RESERVED_SKILL_NAMES,
  SKILL_NAME_RE,
  parseSkillPackage,
} from '../skills/skill-package.js';
import type { SkillLimits } from '../skills/skill-package.js';
import { skillObjectKey } from '../skills/skill-sync.js';

export interface SkillRouteDeps {
  store: ObjectStore;
  skills: Pick<SkillRepository, 'list' | 'get' | 'upsert' | 'delete'>;
  limits?: Partial<SkillLimits>;
}

const TAR_TYPES = ['application/x-tar', 'application/gzip', 'application/x-gzip', 'application/octet-stream'];

const nameParams = {
  type: 'object',
  required: ['name'],
  additionalProperties: false,
  properties: {
    name: {
      type: 'string',
      description:
        'The skill name: lowercase letters, digits and "-", starting with a letter or digit, at most 64 characters.',
    },
  },
} as const;

const skillFileSchema = {
  type: 'object',
  required: ['path', 'size', 'sha256'],
  properties: {
    path: { type: 'string', description: "Relative to the skill's folder." },
    size: { type: 'integer' },
    sha256: { type: 'string' },
  },
} as const;

const skillProperties = {
  name: { type: 'string' },
  description: { type: 'string', description: "SKILL.md's frontmatter description." },
  version: { type: 'integer', description: 'Goes up by one on every replace.' },
  sha256: { type: 'string', description: "sha256 of the stored package (hako's normalised tar)." },
  size_bytes: { type: 'integer', description: 'Sum of the file sizes.' },
  file_count: { type: 'integer' },
  sandbox_path: { type: 'string', description: 'Where the agent sees it (read-only).' },
  created_at: { type: 'string', format: 'date-time' },
  updated_at: { type: 'string', format: 'date-time' },
} as const;
const skillRequired = [
  'name',
  'description',
  'version',
  'sha256',
  'size_bytes',
  'file_count',
  'sandbox_path',
  'created_at',
  'updated_at',
];

const skillSchema = {
  type: 'object',
  required: [...skillRequired, 'files'],
  properties: { ...skillProperties, files: { type: 'array', items: skillFileSchema } },
} as const;

function skillToWire(s: Skill, withFiles: boolean): Record<string, unknown> {
  return {
    name: s.name,
    description: s.description,
    version: s.version,
    sha256: s.sha256,
    size_bytes: s.sizeBytes,
    file_count: s.files.length,
    sandbox_path: `/skills/${s.tenantId}/${s.name}`,
    created_at: s.createdAt,
    updated_at: s.updatedAt,
    ...(withFiles ? { files: s.files.map((f) => ({ path: f.path, size: f.size, sha256: f.sha256 })) } : {}),
  };
}

function skillNotFound(name: string): AppError {
  return new AppError(
    'SKILL_NOT_FOUND',
    `the tenant has no skill ${JSON.stringify(name.slice(0, 100))}; GET /v1/skills lists them`,
  );
}

/** SKILL_INVALID unless `name` can name a skill. */
export function assertSkillName(name: string): void {
  if (!SKILL_NAME_RE.test(name)) {
    throw new AppError(
      'SKILL_INVALID',
      `${JSON.stringify(name.slice(0, 100))} is not a skill name: use lowercase letters, digits and "-", starting with a letter or digit, at most 64 characters`,
    );
  }
  if (RESERVED_SKILL_NAMES.has(name)) {
    throw new AppError(
      'SKILL_INVALID',
      `"${name}" is reserved (a folder Claude Code reads in a plugin); choose another skill name`,
    );
  }
}

const EXAMPLE_TENANT = '7d3c9a8e-2b1f-4e6d-8c5a-1f0e9d8c7b6a';
const EXAMPLE_SKILL = {
  name: 'pdf-report',
  description: 'Builds PDF reports from CSV files. Use when the user asks for a report.',
  version: 1,
  sha256: '4f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f',
  size_bytes: 1432,
  file_count: 2,
  sandbox_path: `/skills/${EXAMPLE_TENANT}/pdf-report`,
  created_at: '2025-01-01T12:00:00.000Z',
  updated_at: '2025-01-01T12:00:00.000Z',
};
const EXAMPLE_FILES = [
  { path: 'SKILL.md', size: 312, sha256: '9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c' },
  {
    path: 'scripts/report.py',
    size: 1120,
    sha256: '1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b',
  },
];

export async function registerSkillRoutes(app: FastifyInstance, deps: SkillRouteDeps): Promise<void> {
  const limits: SkillLimits = { ...DEFAULT_SKILL_LIMITS, ...deps.limits };

  // The upload lives in its own context: its body is the raw tar.
  await app.register((scope, _opts, done) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser(
      '*',
      { parseAs: 'buffer', bodyLimit: limits.maxBodyBytes },
      (_req, body, next) => {
        next(null, body);
      },
    );

    scope.put<{ Params: { name: string }; Body: Buffer | undefined }>(
      '/v1/skills/:name',
      {
        bodyLimit: limits.maxBodyBytes,
        schema: {
          summary: 'Upload a skill package (create or replace)',
          description:
            `The body is a tar (or gzip-compressed tar) of one skill folder: SKILL.md at its root (or in its only top-level folder) with YAML frontmatter holding a description and, optionally, a name equal to {name}; any other files beside it. Regular files and directories only (no links or devices); paths relative, without "..", control characters or backslashes, each once; at most ${limits.maxFiles} files, ${limits.maxFileBytes} bytes per file, ${limits.maxTotalBytes} bytes in all (the body at most ${limits.maxBodyBytes}); at most ${limits.maxSkills} skills and ${limits.maxTenantBytes} bytes per tenant. ` +
            'Answers 201 for a new skill and 200 for a replaced one (its version goes up). Sandboxes see the change from their next execute on.',
          tags: ['skills'],
          params: nameParams,
          response: { 200: skillSchema, 201: skillSchema },
        },
        onRequest: (req: { params: unknown }, _reply, next) => {
          try {
            const name = (req.params as { name?: unknown }).name;
            if (typeof name === 'string') assertSkillName(name);
            next();
          } catch (err) {
            next(err as Error);
          }
        },
        config: {
          auth: 'tenant',
          docs: {
            errors: ['SKILL_INVALID', 'PAYLOAD_TOO_LARGE'],
            rawBody: {
              mediaTypes: TAR_TYPES,
              description: 'The skill folder as a tar or tar.gz (e.g. `tar -czf - -C skills pdf-report`).',
            },
            example: {
              params: { name: 'pdf-report' },
              contentType: 'application/gzip',
              body: '(the bytes of pdf-report.tar.gz: pdf-report/SKILL.md, pdf-report/scripts/report.py)',
              response: { status: 201, body: { ...EXAMPLE_SKILL, files: EXAMPLE_FILES } },
            },
          },
        },
      },
      async (req, reply) => {
        const tenantId = tenantIdOf(req);
        const name = req.params.name;
        assertSkillName(name);
        const pkg = await parseSkillPackage(req.body ?? Buffer.alloc(0), name, limits);
        const existing = await deps.skills.list(tenantId);
        const others = existing.filter((s) => s.name !== name);
        if (others.length + 1 > limits.maxSkills) {
          throw new AppError(
            'SKILL_INVALID',
            `the tenant already has ${others.length} skills, the most it may have; delete one first`,
          );
        }
        const tenantBytes = others.reduce((n, s) => n + s.sizeBytes, 0) + pkg.sizeBytes;
        if (tenantBytes > limits.maxTenantBytes) {
          throw new AppError(
            'SKILL_INVALID',
            `the tenant's skills would total ${tenantBytes} bytes, over the ${limits.maxTenantBytes}-byte limit; delete or shrink a skill first`,
          );
        }
        const objectKey = skillObjectKey(tenantId, name);
        await deps.store.put(objectKey, pkg.tar, { contentType: 'application/x-tar', sha256: pkg.sha256 });
        let stored: Awaited<ReturnType<SkillRouteDeps['skills']['upsert']>>;
        try {
          stored = await deps.skills.upsert(tenantId, {
            name,
            description: pkg.description,
            sha256: pkg.sha256,
            sizeBytes: pkg.sizeBytes,
            objectKey,
            files: pkg.files.map((f) => ({ path: f.path, size: f.size, sha256: f.sha256 })),
          });
        } catch (err) {
          await deps.store.delete(objectKey).catch(() => undefined);
          throw err;
        }
        if (stored.replacedObjectKey !== undefined && stored.replacedObjectKey !== objectKey) {
          await deps.store.delete(stored.replacedObjectKey).catch((err: unknown) => {
            req.log.warn(
              { err, key: stored.replacedObjectKey },
              "a replaced skill version's object was not removed",
            );
          });
        }
        req.log.info({ tenantId, skill: name, version: stored.skill.version }, 'skill stored');
        return reply
          .code(stored.replacedObjectKey === undefined ? 201 : 200)
          .send(skillToWire(stored.skill, true));
      },
    );
    done();
  });

  app.get(
    '/v1/skills',
    {
      schema: {
        summary: "List the tenant's skills",
        tags: ['skills'],
        response: {
          200: {
            type: 'object',
            required: ['skills'],
            properties: {
              skills: {
                type: 'array',
                items: { type: 'object', required: skillRequired, properties: skillProperties },
              },
            },
          },
        },
      },
      config: {
        auth: 'tenant',
        docs: { example: { response: { status: 200, body: { skills: [EXAMPLE_SKILL] } } } },
      },
    },
    async (req) => {
      const skills = await deps.skills.list(tenantIdOf(req));
      return { skills: skills.map((s) => skillToWire(s, false)) };
    },
  );

  app.get<{ Params: { name: string } }>(
    '/v1/skills/:name',
    {
      schema: {
        summary: 'Describe one skill, with its files',
        tags: ['skills'],
        params: nameParams,
        response: { 200: skillSchema },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['SKILL_NOT_FOUND'],
          example: {
            params: { name: 'pdf-report' },
            response: { status: 200, body: { ...EXAMPLE_SKILL, files: EXAMPLE_FILES } },
          },
        },
      },
    },
    async (req) => {
      const skill = await deps.skills.get(tenantIdOf(req), req.params.name);
      if (skill === undefined) throw skillNotFound(req.params.name);
      return skillToWire(skill, true);
    },
  );

  app.delete<{ Params: { name: string } }>(
    '/v1/skills/:name',
    {
      schema: {
        summary: 'Delete a skill',
        description: 'Sandboxes no longer see it from their next execute on.',
        tags: ['skills'],
        params: nameParams,
        response: { 204: { description: 'Deleted' } },
      },
      config: {
        auth: 'tenant',
        docs: {
          errors: ['SKILL_NOT_FOUND'],
          example: { params: { name: 'pdf-report' }, response: { status: 204 } },
        },
      },
    },
    async (req, reply) => {
      const tenantId = tenantIdOf(req);
      const objectKey = await deps.skills.delete(tenantId, req.params.name);
      if (objectKey === undefined) throw skillNotFound(req.params.name);
      await deps.store.delete(objectKey).catch((err: unknown) => {
        req.log.warn({ err, key: objectKey }, "a deleted skill's object was not removed");
      });
      req.log.info({ tenantId, skill: req.params.name }, 'skill deleted');
      return reply.code(204).send();
    },
  );
}
