/** `hako tenants create NAME` and `hako tenants get ID`: the admin API's tenants (HAKO_ADMIN_TOKEN). */
import { readFile } from 'node:fs/promises';
import type { EnvRecord } from '@hako/core';
import { apiClientFromEnv } from '../api-client.js';
import type { TenantWire } from '../api-client.js';
import { processIo, reportError, reportUsage, tip } from '../cli-io.js';
import type { CliIo } from '../cli-io.js';
import { parseFlags, str, UsageError } from '../flags.js';
import { TENANTS_CREATE_USAGE, TENANTS_GET_USAGE, TENANTS_USAGE } from '../usage.js';

const FLAGS = {
  settings: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export type TenantsRequest =
  | { kind: 'help'; usage: string }
  | { kind: 'create'; name: string; settings: string | undefined; json: boolean }
  | { kind: 'get'; id: string; json: boolean };

/** Parses `hako tenants ...` (argv after `tenants`); every problem is a UsageError. */
export function parseTenants(argv: readonly string[]): TenantsRequest {
  const [sub, ...rest] = argv;
  if (sub === undefined) throw new UsageError('missing subcommand: create or get');
  if (sub === '--help' || sub === '-h' || sub === 'help') return { kind: 'help', usage: TENANTS_USAGE };
  if (sub !== 'create' && sub !== 'get') throw new UsageError(`unknown subcommand "${sub}"`);
  const { flags, rest: args } = parseFlags(rest, FLAGS, { stopAtPositional: false });
  const json = flags.json === true;
  if (sub === 'create') {
    if (flags.help === true) return { kind: 'help', usage: TENANTS_CREATE_USAGE };
    if (args.length === 0) throw new UsageError('missing NAME');
    if (args.length > 1)
      throw new UsageError(`NAME is one argument (quote a name with spaces): got ${args.length}`);
    const name = args[0] ?? '';
    if (name.trim() === '') throw new UsageError('NAME is empty');
    return { kind: 'create', name, settings: str(flags, 'settings'), json };
  }
  if (flags.help === true) return { kind: 'help', usage: TENANTS_GET_USAGE };
  if (flags.settings !== undefined) throw new UsageError('--settings is for create');
  if (args.length !== 1) throw new UsageError(args.length === 0 ? 'missing ID' : 'one ID at a time');
  return { kind: 'get', id: args[0] ?? '', json };
}

/**
 * The value of --settings: JSON text, or `@FILE` whose content is JSON. Must be an object.
 * UsageError (exit 2) when it is not.
 */
export async function readSettings(value: string): Promise<Record<string, unknown>> {
  let text = value;
  let source = '--settings';
  if (value.startsWith('@')) {
    const file = value.slice(1);
    if (file === '') throw new UsageError('--settings @FILE: the file name is missing');
    source = `--settings ${value}`;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new UsageError(`${source}: cannot read ${file}: ${(e as Error).message}`);
    }
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${source} is not JSON: ${(e as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new UsageError(`${source} must be a JSON object, e.g. '{"limits":{"requests_per_minute":120}}'`);
  }
  return parsed as Record<string, unknown>;
}

/** The tenant as `hako tenants get` shows it: aligned fields, then the settings as indented JSON. */
export function formatTenant(t: TenantWire): string {
  const settings = JSON.stringify(t.settings, null, 2).split('\n').join('\n  ');
  return `id        ${t.id}\nname      ${t.name}\ncreated   ${t.created_at}\nsettings\n  ${settings}\n`;
}

export async function tenants(
  argv: readonly string[],
  env: EnvRecord,
  io: CliIo = processIo(),
): Promise<number> {
  let req: TenantsRequest;
  let settings: Record<string, unknown> | undefined;
  try {
    req = parseTenants(argv);
    if (req.kind === 'create' && req.settings !== undefined) settings = await readSettings(req.settings);
  } catch (e) {
    if (e instanceof UsageError) return reportUsage(io, 'tenants', e.message, TENANTS_USAGE);
    throw e;
  }
  if (req.kind === 'help') {
    io.stdout.write(req.usage);
    return 0;
  }
  try {
    const client = apiClientFromEnv(env);
    if (req.kind === 'create') {
      const t = await client.createTenant({
        name: req.name,
        ...(settings === undefined ? {} : { settings }),
      });
      if (req.json) io.stdout.write(`${JSON.stringify(t)}\n`);
      else {
        io.stdout.write(`created tenant ${t.name}: ${t.id}\n`);
        tip(io, `next: hako keys create ${t.id}`);
      }
      return 0;
    }
    const t = await client.getTenant(req.id);
    io.stdout.write(req.json ? `${JSON.stringify(t)}\n` : formatTenant(t));
    return 0;
  } catch (e) {
    return reportError(io, e);
  }
}
