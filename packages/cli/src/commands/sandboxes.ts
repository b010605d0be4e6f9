/**
 * `hako sandboxes list --owner ID`: hakod's ListSandboxes over gRPC (mTLS with the client files in
 * HAKO_TLS_DIR, default ${HAKO_HOME:-~/.hako}/tls). hakod scopes every call to an owner and answers
 * INVALID_ARGUMENT for an empty owner_id, so --owner is required; hako-api's sandboxes are owned by
 * the tenant id.
 */
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { EnvRecord } from '@hako/core';
import { callUnary, createAgentClient } from '@hako/agentd';
import type { ResponseOf } from '@hako/agentd';
import { isAppError } from '@hako/core';
import { processIo, reportError, reportUsage } from '../cli-io.js';
import type { CliIo } from '../cli-io.js';
import { list, parseFlags, str, UsageError } from '../flags.js';
import { SANDBOXES_USAGE } from '../usage.js';

export const DEFAULT_AGENT_ADDRESS = '127.0.0.1:7443';

/** How long the list may take, connecting included. */
const CALL_TIMEOUT_MS = 10_000;

export type SandboxesRequest =
  { kind: 'help' } | { kind: 'list'; ownerId: string; labels: Record<string, string>; json: boolean };

/** Parses `hako sandboxes ...` (argv after `sandboxes`); every problem is a UsageError. */
export function parseSandboxes(argv: readonly string[]): SandboxesRequest {
  const [sub, ...rest] = argv;
  if (sub === undefined) throw new UsageError('missing subcommand: list');
  if (sub === '--help' || sub === '-h' || sub === 'help') return { kind: 'help' };
  if (sub !== 'list' && sub !== 'ls') throw new UsageError(`unknown subcommand "${sub}"`);
  const { flags, rest: args } = parseFlags(
    rest,
    {
      owner: { type: 'string' },
      label: { type: 'string', multiple: true },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    { stopAtPositional: false },
  );
  if (flags.help === true) return { kind: 'help' };
  if (args.length > 0)
    throw new UsageError(`list takes no arguments, got "${args[0]}" (the owner is --owner ID)`);
  const ownerId = str(flags, 'owner');
  if (ownerId === undefined || ownerId === '') {
    throw new UsageError(
      "--owner is required: hakod lists one owner's sandboxes at a time (hako-api's are owned by the tenant id)",
    );
  }
  const labels: Record<string, string> = {};
  for (const kv of list(flags, 'label')) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new UsageError(`--label: expected K=V, got "${kv}"`);
    labels[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return { kind: 'list', ownerId, labels, json: flags.json === true };
}

function expandHome(p: string, env: EnvRecord): string {
  const home = env.HOME !== undefined && env.HOME !== '' ? env.HOME : homedir();
  if (p === '~') return home;
  return p.startsWith('~/') ? join(home, p.slice(2)) : p;
}

function set(v: string | undefined): string | undefined {
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

export interface AgentTarget {
  readonly address: string;
  /** The client certificate directory; undefined with `insecure`. */
  readonly tlsDir: string | undefined;
  readonly insecure: boolean;
  readonly token: string | undefined;
}

/**
 * Where hakod is and how to reach it: AGENT_ADDRESS or HAKO_AGENT (default 127.0.0.1:7443),
 * HAKO_TLS_DIR (default ${HAKO_HOME:-~/.hako}/tls), AGENT_INSECURE, AGENT_AUTH_TOKEN.
 */
export function agentTarget(env: EnvRecord): AgentTarget {
  const address = set(env.AGENT_ADDRESS) ?? set(env.HAKO_AGENT) ?? DEFAULT_AGENT_ADDRESS;
  const insecure = /^(1|true|yes)$/i.test(env.AGENT_INSECURE ?? '');
  const home = expandHome(set(env.HAKO_HOME) ?? '~/.hako', env);
  const tlsDir = insecure ? undefined : expandHome(set(env.HAKO_TLS_DIR) ?? join(home, 'tls'), env);
  return { address, tlsDir, insecure, token: set(env.AGENT_AUTH_TOKEN) ?? set(env.HAKO_NODE_AUTH_TOKEN) };
}

type SandboxMessage = ResponseOf<'listSandboxes'>['sandboxes'][number];

/** hakod's SandboxState numbers (agent.proto) as the words a person reads. */
const STATES: Record<number, string> = {
  0: 'unspecified',
  1: 'creating',
  2: 'running',
  3: 'paused',
  4: 'stopping',
  5: 'stopped',
  6: 'failed',
};
const NETWORKS: Record<number, string> = { 0: 'unspecified', 1: 'none', 2: 'egress' };

/** A sandbox as --json prints it (plain JSON: states and network as words, times as ISO strings). */
export function sandboxToJson(s: SandboxMessage): Record<string, unknown> {
  const iso = (ms: number): string | null => (ms > 0 ? new Date(ms).toISOString() : null);
  return {
    id: s.id,
    owner_id: s.ownerId,
    state: STATES[s.state] ?? `unknown(${s.state})`,
    image: s.image,
    image_digest: s.imageDigest,
    labels: { ...s.labels },
    network: NETWORKS[s.network] ?? `unknown(${s.network})`,
    ip_address: s.ipAddress === '' ? null : s.ipAddress,
    limits: s.limits ?? null,
    upstreams: [...s.upstreams],
    from_pool: s.fromPool,
    created_at: iso(s.createdAtMs),
    last_active_at: iso(s.lastActiveAtMs),
    expires_at: iso(s.expiresAtMs),
  };
}

/** The sandboxes as an aligned table. */
export function formatSandboxTable(sandboxes: readonly SandboxMessage[]): string {
  const rows = sandboxes.map((s) => {
    const conv = s.labels['hako.conversation'];
    return [
      s.id,
      STATES[s.state] ?? String(s.state),
      s.image,
      (NETWORKS[s.network] ?? String(s.network)) + (s.ipAddress === '' ? '' : ` ${s.ipAddress}`),
      s.createdAtMs > 0 ? new Date(s.createdAtMs).toISOString().slice(0, 16).replace('T', ' ') : '-',
      conv === undefined ? '-' : conv,
    ];
  });
  const header = ['ID', 'STATE', 'IMAGE', 'NETWORK', 'CREATED (UTC)', 'CONVERSATION'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]): string =>
    r
      .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

function agentHint(err: unknown, target: AgentTarget): string | undefined {
  if (!isAppError(err)) return undefined;
  if (err.code === 'AGENT_UNAVAILABLE') {
    return `is \`hako up\` (or \`hako agent\`) running? hakod was expected at ${target.address} (set AGENT_ADDRESS if it listens elsewhere)`;
  }
  if (err.code === 'CONFIG_INVALID' && target.tlsDir !== undefined) {
    return `hakod's client certificates are read from ${target.tlsDir}: \`hako up\` writes them there; set HAKO_TLS_DIR to a directory from \`hako certs init --dir DIR\``;
  }
  if (err.code === 'UNAUTHENTICATED') return "set AGENT_AUTH_TOKEN to hakod's token";
  return undefined;
}

export async function sandboxes(
  argv: readonly string[],
  env: EnvRecord,
  io: CliIo = processIo(),
): Promise<number> {
  let req: SandboxesRequest;
  try {
    req = parseSandboxes(argv);
  } catch (e) {
    if (e instanceof UsageError) return reportUsage(io, 'sandboxes', e.message, SANDBOXES_USAGE);
    throw e;
  }
  if (req.kind === 'help') {
    io.stdout.write(SANDBOXES_USAGE);
    return 0;
  }
  const target = agentTarget(env);
  let client: ReturnType<typeof createAgentClient> | undefined;
  try {
    client = createAgentClient({
      address: target.address,
      ...(target.insecure ? { insecure: true } : { tls: { dir: target.tlsDir ?? '' } }),
      ...(target.token === undefined ? {} : { token: target.token }),
    });
    const res = await callUnary(
      client,
      'listSandboxes',
      { ownerId: req.ownerId, labelSelector: req.labels },
      { timeoutMs: CALL_TIMEOUT_MS },
    );
    const found = [...res.sandboxes].sort((a, b) => a.createdAtMs - b.createdAtMs);
    if (req.json) io.stdout.write(`${JSON.stringify(found.map(sandboxToJson))}\n`);
    else if (found.length === 0) io.stdout.write(`no sandboxes of owner ${req.ownerId}\n`);
    else io.stdout.write(formatSandboxTable(found));
    return 0;
  } catch (e) {
    return reportError(io, e, agentHint(e, target));
  } finally {
    client?.close();
  }
}
