// Small pieces every repository shares: id checks, tenant scoping of a conversation, row value
// conversions (pg and PGlite both answer timestamptz as Date, int8/numeric as string).
import { AppError } from '@hako/core';
import type { Queryable } from '../db/pool.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `id` is a uuid in its text form (anything else cannot name a row, and would make PostgreSQL fail). */
export function isUuid(id: string): boolean {
  return UUID_RE.test(id);
}

export function tenantNotFound(tenantId: string): AppError {
  return new AppError('TENANT_NOT_FOUND', `Tenant ${tenantId.slice(0, 64)} does not exist`);
}

export function conversationNotFound(conversationId: string): AppError {
  return new AppError(
    'CONVERSATION_NOT_FOUND',
    `Conversation ${conversationId.slice(0, 64)} does not exist for this tenant`,
  );
}

/**
 * Throws CONVERSATION_NOT_FOUND unless `conversationId` is a conversation of `tenantId`. Every
 * repository call on conversation data goes through this (or an equivalent join), so another
 * tenant's conversation is simply not found.
 */
export async function assertConversation(
  q: Queryable,
  tenantId: string,
  conversationId: string,
): Promise<void> {
  if (!isUuid(tenantId) || !isUuid(conversationId)) throw conversationNotFound(conversationId);
  const res = await q.query('SELECT 1 FROM conversations WHERE id = $1 AND tenant_id = $2', [
    conversationId,
    tenantId,
  ]);
  if (res.rowCount === 0) throw conversationNotFound(conversationId);
}

/** An ISO-8601 timestamp from a timestamptz column (Date from pg and PGlite; text accepted too). */
export function iso(value: unknown): string {
  if (value instanceof Date) return value.toISOString();
  return new Date(String(value)).toISOString();
}

export function isoOrNull(value: unknown): string | null {
  return value === null || value === undefined ? null : iso(value);
}

/** A number from an int8/numeric column (answered as text to keep precision). */
export function num(value: unknown): number {
  return typeof value === 'number' ? value : Number(value);
}

export function numOrNull(value: unknown): number | null {
  return value === null || value === undefined ? null : num(value);
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * JSON text for a jsonb parameter. PostgreSQL's jsonb refuses NUL characters and lone UTF-16
 * surrogates in strings (tool output can hold either); both become U+FFFD so the event is stored
 * rather than failing the run. `undefined` becomes SQL NULL.
 */
export function toJsonb(value: unknown): string | null {
  if (value === undefined) return null;
  return JSON.stringify(value, (_key, v: unknown) =>
    typeof v === 'string' ? v.replace(/\0/g, '\uFFFD').replace(LONE_SURROGATE, '\uFFFD') : v,
  );
}
