/**
 * The model-registry entry the usage and provider tests share, and exact cost arithmetic in units
 * of 1e-8 USD (the API's cost_usd has at most 8 decimals), so sums are compared without floats.
 */
import assert from 'node:assert/strict';
import type { Usage } from '../../src/types.js';

/** Claude Sonnet 4.5 on the anthropic upstream, with its per-million-token prices. */
export const SONNET_MODEL = {
  id: 'claude-sonnet-4-5',
  display_name: 'Claude Sonnet 4.5',
  provider: 'anthropic',
  prices: { input: 3, output: 15, cache_creation: 3.75, cache_read: 0.3 },
};

export type ModelPrices = typeof SONNET_MODEL.prices;

/** A JSON cost (at most 8 decimals) in units of 1e-8 USD, exactly. */
export function cost8(v: unknown): bigint {
  assert.equal(typeof v, 'number', `cost ${String(v)}`);
  const n = v as number;
  const units = Math.round(n * 1e8);
  assert.equal(units / 1e8, n, `${n} has at most 8 decimals`);
  return BigInt(units);
}

/**
 * Exact cost in units of 1e-8 USD: sum(tokens * price) / 1e6, rounded half up once (prices have
 * at most 6 decimals).
 */
export function expectedCost8(prices: ModelPrices, u: Usage): bigint {
  const micro = (p: number): bigint => BigInt(Math.round(p * 1e6));
  const s =
    BigInt(u.inputTokens) * micro(prices.input) +
    BigInt(u.outputTokens) * micro(prices.output) +
    BigInt(u.cacheCreationInputTokens) * micro(prices.cache_creation) +
    BigInt(u.cacheReadInputTokens) * micro(prices.cache_read);
  // s is in 1e-12 USD; in 1e-8 units: s / 1e4
  return (s + 5000n) / 10000n;
}
