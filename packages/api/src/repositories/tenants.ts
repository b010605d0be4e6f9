// Tenants: the unit of isolation. Their settings (limits, tool policy, egress allowlist, MCP
// servers, system prompt) are stored whole as jsonb; validating and defaulting them is the
// caller's job.
import { randomUUID } from 'node:crypto';
import { AppError } from '@hako/core';
import type { Queryable } from '../db/pool.js';
import type { Tenant, TenantSettings } from '../types.js';
import { isUuid, iso } from './common.js';

interface TenantRow {
  id: string;
  name: string;
  settings: TenantSettings;
  created_at: Date;
}

function toTenant(r: TenantRow): Tenant {
  return { id: r.id, name: r.name, settings: r.settings, createdAt: iso(r.created_at) };
}

export class TenantRepository {
  constructor(private readonly db: Queryable) {}

  /** Creates a tenant with a new id. INVALID_ARGUMENT when the name is empty or over 200 characters. */
  async create(input: { name: string; settings: TenantSettings }): Promise<Tenant> {
    if (input.name.length < 1 || input.name.length > 200) {
      throw new AppError('INVALID_ARGUMENT', 'A tenant name has 1 to 200 characters');
    }
    const res = await this.db.query<TenantRow>(
      `INSERT INTO tenants (id, name, settings) VALUES ($1, $2, $3::jsonb)
       RETURNING id, name, settings, created_at`,
      [randomUUID(), input.name, JSON.stringify(input.settings)],
    );
    return toTenant(res.rows[0] as TenantRow);
  }

  /** The tenant, or undefined when no tenant has that id (a malformed id included). */
  async get(id: string): Promise<Tenant | undefined> {
    if (!isUuid(id)) return undefined;
    const res = await this.db.query<TenantRow>(
      'SELECT id, name, settings, created_at FROM tenants WHERE id = $1',
      [id],
    );
    const row = res.rows[0];
    return row ? toTenant(row) : undefined;
  }
}
