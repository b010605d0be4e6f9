/** The machine-readable line every bench prints last on stdout. */

type JsonValue = string | number | boolean | null | JsonValue[] | { [k: string]: JsonValue | undefined };

/**
 * Serializes the result object to ONE line (no newlines inside), numbers rounded to two decimals
 * and non-finite numbers written as null, so `tail -n 1 | jq` always works.
 */
export function jsonLine(value: JsonValue): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (typeof v === 'number') return Number.isFinite(v) ? Math.round(v * 100) / 100 : null;
    return v;
  });
}

export type { JsonValue };
