// A tenant's skill packages (the skills table): what the skills API lists and what a sandbox's
// /skills/{tenant} is synced to. Every call is scoped by tenant id; another tenant's skill is
// simply not found.
import type { Queryable } from '../db/pool.js';
import { isUuid, iso, num } from './common.js';

export interface SkillFile {
  /** Relative to the skill's folder ('SKILL.md', 'scripts/run.py'). */
  path: string;
  size: number;
  sha256: string;
}

export interface Skill {
  tenantId: string;
  name: string;
  description: string;
  version: number;
  /** sha256 of the stored (normalised) tar. */
  sha256: string;
  /** Sum of the file sizes. */
  sizeBytes: number;
  /** Where the stored tar is in the object store. */
  objectKey: string;
  files: SkillFile[];
  createdAt: string;
  updatedAt: string;
}

export interface SkillInput {
  name: string;
  description: string;
  sha256: string;
  sizeBytes: number;
  objectKey: string;
  files: SkillFile[];
}

interface SkillRow {
  tenant_id: string;
  name: string;
  description: string;
  version: number;
  sha256: string;
  size_bytes: string | number;
  object_key: string;
  files: SkillFile[] | string;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS =
  'tenant_id, name, description, version, sha256, size_bytes, object_key, files, created_at, updated_at';

function toSkill(r: SkillRow): Skill {
  return {
    tenantId: r.tenant_id,
    name: r.name,
    description: r.description,
    version: r.version,
    sha256: r.sha256,
    sizeBytes: num(r.size_bytes),
    objectKey: r.object_key,
    files: typeof r.files === 'string' ? (JSON.parse(r.files) as SkillFile[]) : r.files,
    createdAt: iso(r.created_at),
    updatedAt: iso(r.updated_at),
  };
}

export class SkillRepository {
  constructor(private readonly db: Queryable) {}

  /** The tenant's skills in name order. */
  async list(tenantId: string): Promise<Skill[]> {
    if (!isUuid(tenantId)) return [];
    const res = await this.db.query<SkillRow>(
      `SELECT ${COLUMNS} FROM skills WHERE tenant_id = $1 ORDER BY name`,
      [tenantId],
    );
    return res.rows.map(toSkill);
  }

  /** The skill, or undefined. */
  async get(tenantId: string, name: string): Promise<Skill | undefined> {
    if (!isUuid(tenantId)) return undefined;
    const res = await this.db.query<SkillRow>(
      `SELECT ${COLUMNS} FROM skills WHERE tenant_id = $1 AND name = $2`,
      [tenantId, name],
    );
    const row = res.rows[0];
    return row === undefined ? undefined : toSkill(row);
  }

  /**
   * Creates the skill (version 1) or replaces it (version + 1). Answers the stored skill and the
   * object key the replaced version used (undefined for a create), which the caller removes.
   */
  async upsert(tenantId: string, input: SkillInput): Promise<{ skill: Skill; replacedObjectKey?: string }> {
    const values = [
      tenantId,
      input.name,
      input.description,
      input.sha256,
      input.sizeBytes,
      input.objectKey,
      JSON.stringify(input.files),
    ];
    // An UPDATE first (it can answer the old object key), an INSERT when there was no row; a
    // concurrent create of the same name makes the INSERT do nothing, and the UPDATE runs again.
    for (let attempt = 0; attempt < 3; attempt++) {
      const updated = await this.db.query<SkillRow & { old_key: string }>(
        `UPDATE skills s SET description = $3, version = s.version + 1, sha256 = $4, size_bytes = $5,
                object_key = $6, files = $7::jsonb, updated_at = now()
           FROM (SELECT object_key FROM skills WHERE tenant_id = $1 AND name = $2 FOR UPDATE) old
          WHERE s.tenant_id = $1 AND s.name = $2
          RETURNING ${COLUMNS.split(', ')
            .map((c) => `s.${c}`)
            .join(', ')}, old.object_key AS old_key`,
        values,
      );
      const u = updated.rows[0];
      if (u !== undefined) return { skill: toSkill(u), replacedObjectKey: u.old_key };
      const inserted = await this.db.query<SkillRow>(
        `INSERT INTO skills (tenant_id, name, description, sha256, size_bytes, object_key, files)
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
         ON CONFLICT (tenant_id, name) DO NOTHING
         RETURNING ${COLUMNS}`,
        values,
      );
      const i = inserted.rows[0];
      if (i !== undefined) return { skill: toSkill(i) };
    }
    throw new Error(`skill ${input.name} kept changing while it was stored; retry`);
  }

  /** Deletes the skill; answers its object key, or undefined when there was none. */
  async delete(tenantId: string, name: string): Promise<string | undefined> {
    if (!isUuid(tenantId)) return undefined;
    const res = await this.db.query<{ object_key: string }>(
      'DELETE FROM skills WHERE tenant_id = $1 AND name = $2 RETURNING object_key',
      [tenantId, name],
    );
    return res.rows[0]?.object_key;
  }
}
