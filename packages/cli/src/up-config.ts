/**
 * The variables `hako up` and `hako demo` read themselves, on top of hakod's and hako-api's (which
 * they pass on). docs/configuration.md is generated from this schema; stack-up.ts checks the
 * values, and a unit test keeps its checks and this schema in step.
 */
import { z } from 'zod';

export const upConfigSchema = z.object({
  HAKO_HOME: z
    .string()
    .default('~/.hako')
    .describe(
      'Where `hako up` keeps its state: tls/ (mTLS between hako-api and hakod, made on first run), admin-token (0600), pgdata/ (the embedded PostgreSQL), s3/ (the embedded object store), spool/. `hako demo` uses a temporary one unless this is set.',
    ),
  HAKO_MODEL: z
    .enum(['', 'scripted', 'anthropic'])
    .optional()
    .describe(
      '`scripted`: the offline scripted model (the default without ANTHROPIC_API_KEY); `anthropic`: the real API (the default with ANTHROPIC_API_KEY).',
    ),
  HAKO_MODEL_SCRIPT: z
    .string()
    .optional()
    .describe("The scripted model's script (JSON, the testkit's format); unset: the built-in demo script."),
  ANTHROPIC_API_KEY: z
    .string()
    .optional()
    .describe(
      'The Anthropic API key. `hako up` gives it to hakod only (AGENT_UPSTREAM_ANTHROPIC_API_KEY), whose egress proxy adds it to model requests; it never reaches hako-api or a sandbox.',
    ),
});
