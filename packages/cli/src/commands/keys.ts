/** `hako keys create TENANT_ID`: a new API key for a tenant (admin), shown this once. */
import type { EnvRecord } from '@hako/core';
import { apiClientFromEnv } from '../api-client.js';
import { processIo, reportError, reportUsage } from '../cli-io.js';
import type { CliIo } from '../cli-io.js';
import { parseFlags, UsageError } from '../flags.js';
import { KEYS_USAGE } from '../usage.js';

export type KeysRequest = { kind: 'help' } | { kind: 'create'; tenantId: string; json: boolean };

/** Parses `hako keys ...` (argv after `keys`); every problem is a UsageError. */
export function parseKeys(argv: readonly string[]): KeysRequest {
  const [sub, ...rest] = argv;
  if (sub === undefined) throw new UsageError('missing subcommand: create');
  if (sub === '--help' || sub === '-h' || sub === 'help') return { kind: 'help' };
  if (sub !== 'create') throw new UsageError(`unknown subcommand "${sub}"`);
  const { flags, rest: args } = parseFlags(
    rest,
    { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    { stopAtPositional: false },
  );
  if (flags.help === true) return { kind: 'help' };
  if (args.length !== 1)
    throw new UsageError(args.length === 0 ? 'missing TENANT_ID' : 'one TENANT_ID at a time');
  return { kind: 'create', tenantId: args[0] ?? '', json: flags.json === true };
}

/** The warning printed with every new key (on stderr, so stdout holds only the key). */
export const KEY_SHOWN_ONCE =
  'hako: this is the only time the key is shown (hako keeps only its hash): store it now, e.g. export HAKO_API_KEY=...';

export async function keys(
  argv: readonly string[],
  env: EnvRecord,
  io: CliIo = processIo(),
): Promise<number> {
  let req: KeysRequest;
  try {
    req = parseKeys(argv);
  } catch (e) {
    if (e instanceof UsageError) return reportUsage(io, 'keys', e.message, KEYS_USAGE);
    throw e;
  }
  if (req.kind === 'help') {
    io.stdout.write(KEYS_USAGE);
    return 0;
  }
  try {
    const created = await apiClientFromEnv(env).createApiKey(req.tenantId);
    io.stdout.write(
      req.json ? `${JSON.stringify({ ...created, tenant_id: req.tenantId })}\n` : `${created.key}\n`,
    );
    io.stderr.write(`${KEY_SHOWN_ONCE}\n`);
    return 0;
  } catch (e) {
    return reportError(io, e);
  }
}
