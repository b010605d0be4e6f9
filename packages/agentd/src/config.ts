/**
 * hakod's configuration: the sandbox host settings shared with the CLI plus every hakod variable,
 * parsed from an env record (tests pass their own). The refinements carry the boundary's security
 * rules: TLS with a verified client certificate unless plaintext is asked for explicitly, and
 * plaintext only on a unix socket or a loopback address.
 */
import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { z } from 'zod';
import { AppError, configIssue, envFields, parseConfig, sandboxHostConfigSchema } from '@hako/core';
import type { EnvRecord } from '@hako/core';

/** The files `hako certs init` writes that hakod reads from AGENT_TLS_DIR. */
export const AGENT_TLS_DIR_FILES = { ca: 'ca.pem', cert: 'server.pem', key: 'server-key.pem' } as const;

/** Where the Claude Code binary (AGENT_CLAUDE_CODE_BINARY) is inside every sandbox. */
export const CLAUDE_CODE_SANDBOX_PATH = '/opt/hako/bin/claude';

/** Where hakod listens: a TCP host and port, or a unix socket path. */
export type AgentListenAddress =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string };

/**
 * Parses `host:port`, `[v6]:port` or `unix:/absolute/path`. Throws a plain Error with the reason
 * (the schema turns it into an issue on the variable).
 */
export function parseAgentListen(value: string): AgentListenAddress {
  const v = value.trim();
  if (v.startsWith('unix:')) {
    const path = v.slice('unix:'.length);
    if (!path.startsWith('/') || path.includes('\0') || path.length > 107) {
      throw new Error(
        `"${value}": a unix socket needs an absolute path of at most 107 bytes (unix:/run/hako/hakod.sock)`,
      );
    }
    return { kind: 'unix', path };
  }
  const m = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(v) ?? /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(v);
  if (!m) throw new Error(`"${value}" is not host:port, [ipv6]:port or unix:/path`);
  const host = m[1] ?? '';
  const port = Number(m[2]);
  if (port > 65535) throw new Error(`"${value}": port ${port} is over 65535`);
  if (v.startsWith('[') && isIP(host) !== 6) throw new Error(`"${value}": ${host} is not an IPv6 address`);
  return { kind: 'tcp', host, port };
}

/** True for unix sockets and for 127.0.0.0/8, ::1 (also as ::ffff:127.x.x.x) and `localhost`. */
export function isLoopbackListen(addr: AgentListenAddress): boolean {
  if (addr.kind === 'unix') return true;
  const host = addr.host.toLowerCase();
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  if (isIP(host) === 6) {
    if (host === '::1' || host === '0:0:0:0:0:0:0:1') return true;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(host);
    return mapped !== null && (mapped[1] ?? '').startsWith('127.');
  }
  return false;
}

/** The string form grpc-js binds and dials: `host:port`, `[v6]:port`, `unix:/path`. */
export function formatAgentListen(addr: AgentListenAddress): string {
  if (addr.kind === 'unix') return `unix:${addr.path}`;
  return isIP(addr.host) === 6 ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
}

const bytesString = envFields.bytes();
const durationString = envFields.duration();
const flag = envFields.flag();
const optionalString = envFields.optionalString;

const listenString = z.string().superRefine((v, ctx) => {
  try {
    parseAgentListen(v);
  } catch (e) {
    configIssue(ctx, e);
  }
});

/** Every variable hakod reads, without the cross-field rules (the docs are generated from this). */
export const agentConfigBaseSchema = sandboxHostConfigSchema.extend({
  AGENT_LISTEN: listenString
    .default('127.0.0.1:7443')
    .describe(
      'Where the gRPC API listens: `host:port`, `[v6]:port` or `unix:/path`. Port 0 picks a free port (tests).',
    ),
  AGENT_TLS_DIR: optionalString().describe(
    'Directory written by `hako certs init`: hakod reads ca.pem, server.pem and server-key.pem from it. The explicit AGENT_GRPC_*_PATH variables win over it.',
  ),
  AGENT_GRPC_CERT_PATH: optionalString().describe(
    'Server certificate (PEM), chain included. Seed system name.',
  ),
  AGENT_GRPC_KEY_PATH: optionalString().describe('Server private key (PEM). Seed system name.'),
  AGENT_GRPC_CA_CERT_PATH: optionalString().describe(
    'CA certificate (PEM) that client certificates must chain to; a client without one is refused (mTLS). Seed system name.',
  ),
  AGENT_INSECURE: flag.describe(
    'Plaintext gRPC without TLS. Refused unless AGENT_LISTEN is a unix socket or a loopback address.',
  ),
  AGENT_GRPC_TLS_DISABLED: flag.describe(
    'Seed system name for AGENT_INSECURE: the same rule (loopback or unix socket only).',
  ),
  AGENT_AUTH_TOKEN: optionalString(
    z
      .string()
      .min(16, 'at least 16 characters')
      .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces'),
  ).describe(
    'Optional bearer token required on every call (`authorization: Bearer <token>`) on top of mTLS; compared in constant time.',
  ),
  AGENT_GRPC_REFLECTION: flag.describe('Serve gRPC server reflection (off by default; seed system name).'),
  AGENT_METRICS_LISTEN: z
    .string()
    .superRefine((v, ctx) => {
      if (v === '') return;
      try {
        if (parseAgentListen(v).kind !== 'tcp') throw new Error(`"${v}": metrics listen on host:port`);
      } catch (e) {
        configIssue(ctx, e);
      }
    })
    .default('127.0.0.1:9464')
    .describe('Prometheus metrics endpoint (`host:port`, plain HTTP); empty disables it.'),
  AGENT_INVOKE_MAX_RESPONSE_SIZE: bytesString
    .default('10m')
    .describe('Largest worker response InvokeWorker returns; more is INVOKE_RESPONSE_TOO_LARGE.'),
  AGENT_POOL_MIN: z.coerce
    .number()
    .int()
    .min(0)
    .max(1000)
    .default(2)
    .describe(
      'Fewest warm sandboxes kept ready per profile (image, limits, network) in use, and for the default profile (host image, default limits, no network).',
    ),
  AGENT_POOL_MAX: z.coerce
    .number()
    .int()
    .min(0)
    .max(1000)
    .default(10)
    .describe(
      'Most warm sandboxes kept ready per profile (the pool follows the claims of the last minute between min and max); at least AGENT_POOL_MIN.',
    ),
  AGENT_GC_INTERVAL: durationString
    .default('60s')
    .describe('How often hakod removes expired and idle sandboxes and leftovers.'),
  AGENT_IDLE_TTL: durationString
    .default('1h')
    .describe('A sandbox with no RPC on it for this long is removed (per sandbox: idle_timeout_seconds).'),
  AGENT_SANDBOX_TTL: durationString
    .default('8h')
    .describe('Absolute lifetime of a sandbox (per sandbox: ttl_seconds).'),
  AGENT_MAX_SANDBOXES: z.coerce
    .number()
    .int()
    .min(1)
    .max(100_000)
    .default(1000)
    .describe(
      'Most sandboxes (claimed and warm) on this node; past it CreateSandbox answers POOL_EXHAUSTED.',
    ),
  AGENT_DEFAULT_CPUS: z.coerce
    .number()
    .positive()
    .max(1024)
    .default(1)
    .describe('CPU quota in cores for a sandbox that asks for none (fractions allowed: 0.5).'),
  AGENT_DEFAULT_MEMORY: bytesString
    .default('512m')
    .describe('Memory (and swap) limit for a sandbox that asks for none.'),
  AGENT_DEFAULT_PIDS: z.coerce
    .number()
    .int()
    .min(8)
    .max(4_194_304)
    .default(256)
    .describe('Process and thread limit for a sandbox that asks for none.'),
  AGENT_DEFAULT_DISK: bytesString
    .default('1g')
    .describe('Workspace disk quota for a sandbox that asks for none.'),
  AGENT_DEFAULT_TMP: bytesString
    .default('64m')
    .describe('Size of tmpfs /tmp for a sandbox that asks for none.'),
  AGENT_MAX_FILE_BYTES: bytesString
    .default('64m')
    .describe('Largest single file WriteFiles and ReadFiles move.'),
  AGENT_MAX_TRANSFER_BYTES: bytesString
    .default('256m')
    .describe('Largest tar stream one WriteFiles or ReadFiles call moves.'),
  AGENT_CLAUDE_CODE_BINARY: z
    .string()
    .refine((v) => v === '' || (v.startsWith('/') && !v.includes('\0')), 'an absolute path, or empty')
    .optional()
    .describe(
      `Host file bind-mounted read-only (nosuid, nodev) at ${CLAUDE_CODE_SANDBOX_PATH} in every sandbox hakod creates: the Claude Code binary hako-api runs the agent with. Unset: the one in the Claude Agent SDK's native package for this platform (@anthropic-ai/claude-agent-sdk-linux-x64 or -arm64, resolved from node_modules). Empty: no binary is mounted. A binary that is missing at start-up stops hakod with CONFIG_INVALID.`,
    ),
  AGENT_UPSTREAM_ANTHROPIC_URL: z
    .string()
    .url()
    .refine((v) => /^https?:\/\//.test(v), 'an http(s) URL')
    .default('https://api.anthropic.com')
    .describe('Anthropic API base URL the egress proxy forwards the `anthropic` upstream to.'),
  AGENT_UPSTREAM_ANTHROPIC_API_KEY: optionalString().describe(
    'API key the egress proxy adds for the `anthropic` upstream; it never enters a sandbox. Unset: sandboxes cannot ask for that upstream.',
  ),
  AGENT_UPSTREAM_BEDROCK_REGION: optionalString(
    z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d{1,2}$/, 'an AWS region such as us-east-1'),
  ).describe('AWS region of the `bedrock` upstream (requests are SigV4-signed by the egress proxy).'),
  AGENT_UPSTREAM_BEDROCK_ACCESS_KEY_ID: optionalString().describe(
    'AWS access key id for the `bedrock` upstream.',
  ),
  AGENT_UPSTREAM_BEDROCK_SECRET_ACCESS_KEY: optionalString().describe(
    'AWS secret access key for the `bedrock` upstream; it never enters a sandbox.',
  ),
  AGENT_UPSTREAM_BEDROCK_SESSION_TOKEN: optionalString().describe(
    'AWS session token for temporary `bedrock` credentials (optional).',
  ),
  AGENT_UPSTREAM_BEDROCK_ENDPOINT: optionalString(z.string().url()).describe(
    'Bedrock runtime endpoint override; default https://bedrock-runtime.{region}.amazonaws.com.',
  ),
});

type BaseConfig = z.infer<typeof agentConfigBaseSchema>;

/**
 * The packages that carry Claude Code's native binary for this platform, in the order tried: the
 * glibc build first (the `host` image runs the host's /usr), then the musl one.
 */
export function claudeCodePackages(arch: string = process.arch): string[] {
  return [
    `@anthropic-ai/claude-agent-sdk-linux-${arch}`,
    `@anthropic-ai/claude-agent-sdk-linux-${arch}-musl`,
  ];
}

/**
 * The host path of the Claude Code binary hakod mounts into sandboxes, or undefined when
 * AGENT_CLAUDE_CODE_BINARY is empty (disabled). Unset resolves the SDK's native package from
 * node_modules with `resolve` (default: Node's resolution from this module). Does not check that
 * the file exists (checkClaudeCodeBinary does). CONFIG_INVALID when no package resolves.
 */
export function claudeCodeBinaryPath(
  c: Pick<BaseConfig, 'AGENT_CLAUDE_CODE_BINARY'>,
  resolve: (specifier: string) => string = createRequire(import.meta.url).resolve,
  arch: string = process.arch,
): string | undefined {
  if (c.AGENT_CLAUDE_CODE_BINARY === '') return undefined;
  if (c.AGENT_CLAUDE_CODE_BINARY !== undefined) return c.AGENT_CLAUDE_CODE_BINARY;
  const tried = claudeCodePackages(arch);
  for (const pkg of tried) {
    try {
      return resolve(`${pkg}/claude`);
    } catch {
      // not installed for this platform: try the next
    }
  }
  throw new AppError(
    'CONFIG_INVALID',
    `invalid configuration: AGENT_CLAUDE_CODE_BINARY: unset, and none of ${tried.join(', ')} is installed (npm installs the one for this platform with @anthropic-ai/claude-agent-sdk); set it to the Claude Code binary's path, or to empty to mount none`,
  );
}

/**
 * Checks that the Claude Code binary hakod is about to mount is an executable regular file;
 * CONFIG_INVALID naming AGENT_CLAUDE_CODE_BINARY otherwise.
 */
export async function checkClaudeCodeBinary(path: string): Promise<void> {
  const bad = (why: string): AppError =>
    new AppError(
      'CONFIG_INVALID',
      `invalid configuration: AGENT_CLAUDE_CODE_BINARY: ${path} ${why}; set it to the Claude Code binary (node_modules/@anthropic-ai/claude-agent-sdk-linux-x64/claude), or to empty to mount none`,
    );
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    throw bad(`cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (!st.isFile()) throw bad('is not a regular file');
  if ((st.mode & 0o111) === 0) throw bad('is not executable');
}

/** The TLS files hakod serves with, after AGENT_TLS_DIR expansion (explicit paths win). */
export interface AgentTlsFiles {
  readonly caPath: string;
  readonly certPath: string;
  readonly keyPath: string;
}

function tlsFilesOf(c: BaseConfig): Partial<AgentTlsFiles> {
  const dir = c.AGENT_TLS_DIR;
  return {
    caPath: c.AGENT_GRPC_CA_CERT_PATH ?? (dir === undefined ? undefined : join(dir, AGENT_TLS_DIR_FILES.ca)),
    certPath: c.AGENT_GRPC_CERT_PATH ?? (dir === undefined ? undefined : join(dir, AGENT_TLS_DIR_FILES.cert)),
    keyPath: c.AGENT_GRPC_KEY_PATH ?? (dir === undefined ? undefined : join(dir, AGENT_TLS_DIR_FILES.key)),
  };
}

function checkAgentConfig(c: BaseConfig, ctx: z.RefinementCtx): void {
  const add = (path: string, message: string): void =>
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: [path], message });
  const plaintext = c.AGENT_INSECURE || c.AGENT_GRPC_TLS_DISABLED;
  if (plaintext) {
    let loopback = false;
    try {
      loopback = isLoopbackListen(parseAgentListen(c.AGENT_LISTEN));
    } catch {
      // AGENT_LISTEN's own issue says why.
    }
    if (!loopback) {
      const which = c.AGENT_INSECURE ? 'AGENT_INSECURE' : 'AGENT_GRPC_TLS_DISABLED';
      add(
        which,
        `plaintext gRPC is allowed only on a unix socket or a loopback address, not on "${c.AGENT_LISTEN}"; set AGENT_TLS_DIR (from \`hako certs init\`) for TLS, or listen on 127.0.0.1 / unix:/path`,
      );
    }
  } else {
    const files = tlsFilesOf(c);
    const missing: [keyof AgentTlsFiles, string][] = [
      ['caPath', 'AGENT_GRPC_CA_CERT_PATH'],
      ['certPath', 'AGENT_GRPC_CERT_PATH'],
      ['keyPath', 'AGENT_GRPC_KEY_PATH'],
    ];
    for (const [k, name] of missing) {
      if (files[k] === undefined) {
        add(
          name,
          'TLS is on and needs a CA, a server certificate and its key: set AGENT_TLS_DIR to a directory from `hako certs init` (or the three AGENT_GRPC_*_PATH variables); plaintext needs AGENT_INSECURE=1 on loopback',
        );
      }
    }
  }
  if (c.AGENT_POOL_MIN > c.AGENT_POOL_MAX) {
    add(
      'AGENT_POOL_MIN',
      `AGENT_POOL_MIN (${c.AGENT_POOL_MIN}) is over AGENT_POOL_MAX (${c.AGENT_POOL_MAX})`,
    );
  }
  if (c.AGENT_POOL_MAX > c.AGENT_MAX_SANDBOXES) {
    add(
      'AGENT_POOL_MAX',
      `AGENT_POOL_MAX (${c.AGENT_POOL_MAX}) is over AGENT_MAX_SANDBOXES (${c.AGENT_MAX_SANDBOXES})`,
    );
  }
  if (c.AGENT_MAX_FILE_BYTES > c.AGENT_MAX_TRANSFER_BYTES) {
    add('AGENT_MAX_FILE_BYTES', 'AGENT_MAX_FILE_BYTES is over AGENT_MAX_TRANSFER_BYTES');
  }
  const bedrockKey = c.AGENT_UPSTREAM_BEDROCK_ACCESS_KEY_ID !== undefined;
  const bedrockSecret = c.AGENT_UPSTREAM_BEDROCK_SECRET_ACCESS_KEY !== undefined;
  if (bedrockKey !== bedrockSecret) {
    add(
      bedrockKey ? 'AGENT_UPSTREAM_BEDROCK_SECRET_ACCESS_KEY' : 'AGENT_UPSTREAM_BEDROCK_ACCESS_KEY_ID',
      'the bedrock upstream needs both AGENT_UPSTREAM_BEDROCK_ACCESS_KEY_ID and AGENT_UPSTREAM_BEDROCK_SECRET_ACCESS_KEY',
    );
  }
  if (bedrockKey && c.AGENT_UPSTREAM_BEDROCK_REGION === undefined) {
    add('AGENT_UPSTREAM_BEDROCK_REGION', 'the bedrock upstream needs AGENT_UPSTREAM_BEDROCK_REGION');
  }
}

/**
 * The full schema: the variables, the cross-field rules, and three derived fields: `listen` (the
 * parsed AGENT_LISTEN), `plaintext` (AGENT_INSECURE or AGENT_GRPC_TLS_DISABLED) and `tls` (the
 * files to serve with; undefined exactly when `plaintext`).
 */
export const agentConfigSchema = agentConfigBaseSchema.superRefine(checkAgentConfig).transform((c) => {
  const plaintext = c.AGENT_INSECURE || c.AGENT_GRPC_TLS_DISABLED;
  const files = tlsFilesOf(c);
  const tls: AgentTlsFiles | undefined =
    plaintext || files.caPath === undefined || files.certPath === undefined || files.keyPath === undefined
      ? undefined
      : { caPath: files.caPath, certPath: files.certPath, keyPath: files.keyPath };
  return { ...c, listen: parseAgentListen(c.AGENT_LISTEN), plaintext, tls };
});

export type AgentConfig = z.infer<typeof agentConfigSchema>;

/** Parses hakod's configuration; CONFIG_INVALID names every bad variable. */
export function loadAgentConfig(env: EnvRecord): AgentConfig {
  return parseConfig(agentConfigSchema, env);
}
