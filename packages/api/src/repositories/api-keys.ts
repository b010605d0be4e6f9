// Tenant API keys: `hk_` + 32 random bytes in base64url, shown once at creation. Only the
// key's sha256 is stored, with its first 8 characters after `hk_` as a lookup prefix; a
// presented key is hashed and compared in constant time against the rows of its prefix.
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Queryable } from '../db/pool.js';
import { PG_ERROR, pgErrorCode } from '../db/pool.js';
import { isUuid, iso, isoOrNull, tenantNotFound } from './common.js';

const KEY_RE = /^hk_[A-Za-z0-9_-]{43}$/;

export interface CreatedApiKey {
  id: string;
  tenantId: string;
  /** The plain key; it exists only in this answer. */
  key: string;
  prefix: string;
  createdAt: string;
}

export interface ApiKeyInfo {
  id: string;
  tenantId: string;
  prefix: string;
  createdAt: string;
  revokedAt: string | null;
}

export interface AuthenticatedKey {
  tenantId: string;
  keyId: string;
}

/** A new plain key: `hk_` + base64url of 32 random bytes (43 characters). */
export function generateApiKey(): string {
  return `hk_${randomBytes(32).toString('base64url')}`;
}

/** The stored form of a key: sha256 of its text, lowercase hex. */
export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** The lookup prefix of a well-formed key: the 8 characters after `hk_`. */
export function apiKeyPrefix(key: string): string {
  return key.slice(3, 11);
}

interface KeyRow {
  id: string;
  tenant_id: string;
  prefix: string;
  hash: string;
  created_at: Date;
  revoked_at: Date | null;
}

export class ApiKeyRepository {
  constructor(private readonly db: Queryable) {}

  /** Creates a key for `tenantId` and answers it in plain text, once. TENANT_NOT_FOUND when there is no such tenant. */
  async create(tenantId: string): Promise<CreatedApiKey> {
    if (!isUuid(tenantId)) throw tenantNotFound(tenantId);
    const key = generateApiKey();
    try {
      const res = await this.db.query<KeyRow>(
        `INSERT INTO api_keys (id, tenant_id, prefix, hash) VALUES ($1, $2, $3, $4)
         RETURNING id, tenant_id, prefix, created_at`,
        [randomUUID(), tenantId, apiKeyPrefix(key), hashApiKey(key)],
      );
      const row = res.rows[0] as KeyRow;
      return { id: row.id, tenantId: row.tenant_id, key, prefix: row.prefix, createdAt: iso(row.created_at) };
    } catch (err) {
      if (pgErrorCode(err) === PG_ERROR.FOREIGN_KEY_VIOLATION) throw tenantNotFound(tenantId);
      throw err;
    }
  }

  /**
   * The tenant and key a presented key belongs to, or undefined when it is malformed, unknown or
   * revoked. The hash comparison is constant-time and runs over every candidate of the prefix.
   */
  async authenticate(plainKey: string): Promise<AuthenticatedKey | undefined> {
    if (!KEY_RE.test(plainKey)) return undefined;
    const presented = Buffer.from(hashApiKey(plainKey), 'hex');
    const res = await this.db.query<Pick<KeyRow, 'id' | 'tenant_id' | 'hash'>>(
      'SELECT id, tenant_id, hash FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL',
      [apiKeyPrefix(plainKey)],
    );
    let found: AuthenticatedKey | undefined;
    for (const row of res.rows) {
      const stored = Buffer.from(row.hash, 'hex');
      if (stored.length === presented.length && timingSafeEqual(stored, presented)) {
        found = { tenantId: row.tenant_id, keyId: row.id };
      }
    }
    return found;
  }

  /** Revokes a key of `tenantId`; true when it was active, false when unknown or already revoked. */
  async revoke(tenantId: string, keyId: string): Promise<boolean> {
    if (!isUuid(tenantId) || !isUuid(keyId)) return false;
    const res = await this.db.query(
      'UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL',
      [keyId, tenantId],
    );
    return res.rowCount > 0;
  }

  /** The keys of `tenantId` (never their hashes), oldest first. */
  async list(tenantId: string): Promise<ApiKeyInfo[]> {
    if (!isUuid(tenantId)) return [];
    const res = await this.db.query<KeyRow>(
      'SELECT id, tenant_id, prefix, created_at, revoked_at FROM api_keys WHERE tenant_id = $1 ORDER BY created_at, id',
      [tenantId],
    );
    return res.rows.map((r) => ({
      id: r.id,
      tenantId: r.tenant_id,
      prefix: r.prefix,
      createdAt: iso(r.created_at),
      revokedAt: isoOrNull(r.revoked_at),
    }));
  }
}
