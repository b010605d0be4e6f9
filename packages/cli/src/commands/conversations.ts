/** `hako conversations list | create | get`: the conversations of HAKO_API_KEY's tenant. */
import type { EnvRecord } from '@hako/core';
import { apiClientFromEnv } from '../api-client.js';
import type { ConversationWire } from '../api-client.js';
import { processIo, reportError, reportUsage, tip } from '../cli-io.js';
import type { CliIo } from '../cli-io.js';
import { parseFlags, str, UsageError } from '../flags.js';
import { CONVERSATIONS_USAGE } from '../usage.js';

const FLAGS = {
  limit: { type: 'string' },
  before: { type: 'string' },
  title: { type: 'string' },
  'no-workspace': { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export type ConversationsRequest =
  | { kind: 'help' }
  | { kind: 'list'; limit: number | undefined; before: string | undefined; json: boolean }
  | { kind: 'create'; title: string | undefined; workspaceEnabled: boolean; json: boolean }
  | { kind: 'get'; id: string; json: boolean };

/** Parses `hako conversations ...` (argv after `conversations`); every problem is a UsageError. */
export function parseConversations(argv: readonly string[]): ConversationsRequest {
  const [sub, ...rest] = argv;
  if (sub === undefined) throw new UsageError('missing subcommand: list, create or get');
  if (sub === '--help' || sub === '-h' || sub === 'help') return { kind: 'help' };
  const verb = sub === 'ls' ? 'list' : sub;
  if (verb !== 'list' && verb !== 'create' && verb !== 'get')
    throw new UsageError(`unknown subcommand "${sub}"`);
  const { flags, rest: args } = parseFlags(rest, FLAGS, { stopAtPositional: false });
  if (flags.help === true) return { kind: 'help' };
  const json = flags.json === true;
  const only = (allowed: readonly string[]): void => {
    for (const f of ['limit', 'before', 'title', 'no-workspace'] as const) {
      if (flags[f] !== undefined && !allowed.includes(f))
        throw new UsageError(`--${f} is not a flag of ${verb}`);
    }
  };
  switch (verb) {
    case 'list': {
      only(['limit', 'before']);
      if (args.length > 0) throw new UsageError(`list takes no arguments, got "${args[0]}"`);
      const limitText = str(flags, 'limit');
      let limit: number | undefined;
      if (limitText !== undefined) {
        limit = Number(limitText);
        if (!/^\d+$/.test(limitText) || limit < 1 || limit > 500) {
          throw new UsageError(`--limit must be a whole number from 1 to 500, not "${limitText}"`);
        }
      }
      return { kind: 'list', limit, before: str(flags, 'before'), json };
    }
    case 'create':
      only(['title', 'no-workspace']);
      if (args.length > 0)
        throw new UsageError(`create takes no arguments (a title is --title "${args[0]}")`);
      return {
        kind: 'create',
        title: str(flags, 'title'),
        workspaceEnabled: flags['no-workspace'] !== true,
        json,
      };
    case 'get':
      only([]);
      if (args.length !== 1) throw new UsageError(args.length === 0 ? 'missing ID' : 'one ID at a time');
      return { kind: 'get', id: args[0] ?? '', json };
  }
}

/** "2025-01-01T12:00:00.000Z" → "2025-01-01 12:00" (UTC, like the API). */
function shortTime(iso: string): string {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})/.exec(iso);
  return m ? `${m[1]} ${m[2]}` : iso;
}

/** The conversations as an aligned table (ID, STATUS, CONTEXT, UPDATED, TITLE). */
export function formatConversationTable(list: readonly ConversationWire[]): string {
  const rows = list.map((c) => [
    c.id,
    c.status,
    `${c.context_tokens}/${c.context_limit}`,
    shortTime(c.updated_at),
    (c.title ?? '-') + (c.workspace_enabled ? '' : ' (no workspace)'),
  ]);
  const header = ['ID', 'STATUS', 'CONTEXT', 'UPDATED (UTC)', 'TITLE'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]): string =>
    r
      .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

/** One conversation, field by field. */
export function formatConversation(c: ConversationWire): string {
  return (
    [
      `id          ${c.id}`,
      `title       ${c.title ?? '-'}`,
      `status      ${c.status}`,
      `workspace   ${c.workspace_enabled ? 'yes' : 'no'}`,
      `context     ${c.context_tokens} of ${c.context_limit} tokens`,
      `session     ${c.session_id ?? '-'}`,
      `created     ${c.created_at}`,
      `updated     ${c.updated_at}`,
    ].join('\n') + '\n'
  );
}

export async function conversations(
  argv: readonly string[],
  env: EnvRecord,
  io: CliIo = processIo(),
): Promise<number> {
  let req: ConversationsRequest;
  try {
    req = parseConversations(argv);
  } catch (e) {
    if (e instanceof UsageError) return reportUsage(io, 'conversations', e.message, CONVERSATIONS_USAGE);
    throw e;
  }
  if (req.kind === 'help') {
    io.stdout.write(CONVERSATIONS_USAGE);
    return 0;
  }
  try {
    const client = apiClientFromEnv(env);
    switch (req.kind) {
      case 'list': {
        const list = await client.listConversations({
          ...(req.limit === undefined ? {} : { limit: req.limit }),
          ...(req.before === undefined ? {} : { before: req.before }),
        });
        if (req.json) io.stdout.write(`${JSON.stringify(list)}\n`);
        else if (list.length === 0) {
          io.stdout.write('no conversations\n');
          tip(io, 'next: hako conversations create');
        } else io.stdout.write(formatConversationTable(list));
        return 0;
      }
      case 'create': {
        const c = await client.createConversation({
          ...(req.title === undefined ? {} : { title: req.title }),
          workspaceEnabled: req.workspaceEnabled,
        });
        if (req.json) io.stdout.write(`${JSON.stringify(c)}\n`);
        else {
          io.stdout.write(`created conversation ${c.id}\n`);
          tip(io, `next: hako exec ${c.id} "your prompt"`);
        }
        return 0;
      }
      case 'get': {
        const c = await client.getConversation(req.id);
        io.stdout.write(req.json ? `${JSON.stringify(c)}\n` : formatConversation(c));
        return 0;
      }
    }
  } catch (e) {
    return reportError(io, e);
  }
}
