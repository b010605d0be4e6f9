/**
 * Tenant settings + conversation -> the Claude Agent SDK's Options for one execute, with Claude
 * Code running in the conversation's sandbox (makeSpawner).
 *
 * Choices, and why:
 * - permissionMode `bypassPermissions`: nobody is there to answer a permission prompt, and the
 *   boundary is the sandbox (no capabilities, non-root, read-only rootfs, quota'd /workspace,
 *   egress only through hakod's allowlisting proxy), not Claude Code's own permission rules.
 *   Tenant policy still applies: `disallowedTools` removes tools, and a non-empty `allowedTools`
 *   also becomes the set of built-in tools Claude Code offers (`tools`), so the allowlist holds
 *   even though nothing prompts.
 * - systemPrompt: Claude Code's `claude_code` preset with the tenant's prompt appended. The preset
 *   carries the tool-use instructions the built-in tools depend on; replacing it would break
 *   Bash/Edit/Task behaviour for every tenant that only wants to add context or rules.
 * - settingSources `[]` and strictMcpConfig: no settings, CLAUDE.md or .mcp.json from the
 *   workspace (which the agent itself writes) change the next run's tools or permissions.
 * - MCP servers: exactly the conversation's effective set from the tenant's registry
 *   (mcp/effective-set.ts). stdio servers are children of the sandboxed Claude Code, so they run in
 *   the sandbox; http servers are reached by Claude Code through the sandbox's HTTP(S)_PROXY, i.e.
 *   hakod's allowlisting egress proxy (Claude Code's HTTP MCP client honours it; there is no other
 *   way out). They are delivered over stdin (`initialize`), so env values and headers never appear
 *   on a command line.
 * - env: only what Claude Code needs from hako; the API process's environment is never inherited
 *   (Options.env replaces it) and the spawner filters again (claudeCodeEnv).
 * - cwd: /workspace when the workspace is enabled, else the tenant's read-only skills directory
 *   /skills/{tenant}. Claude Code's state (CLAUDE_CONFIG_DIR, the session transcripts `resume`
 *   reads) lives in /workspace/.hako/claude so it is synced with the workspace and survives a new
 *   sandbox; without a workspace it stays in the sandbox's HOME and resume works only while the
 *   same sandbox lives.
 * - skills: the tenant's skills are /skills/{tenant} (read-only, written only by hakod from the
 *   skills API; see skills/skill-sync.ts), loaded as a local plugin (`plugins`, MCP discovery off)
 *   whose manifest points its skills at the directory's root. That is the one mechanism that loads
 *   exactly that directory: settingSources 'project' would also load the agent-writable
 *   /workspace/.claude, and 'user' the agent-writable ~/.claude. Claude Code names them `hako:<name>`
 *   (the Skill tool also takes the bare name). preferred_skills is appended to the system prompt.
 */
import type {
  McpSdkServerConfigWithInstance,
  McpServerConfig,
  Options,
} from '@anthropic-ai/claude-agent-sdk';
import type { Logger } from '@hako/core';
import { CLAUDE_CODE_SANDBOX_PATH } from '@hako/agentd';
import type { AgentClient } from '@hako/proto';
import type { Conversation, McpServer, TenantSettings } from '../types.js';
import { SKILLS_PLUGIN_NAME, sandboxSkillsDir } from '../skills/skill-sync.js';
import { makeSpawner } from './claude-spawner.js';
import type { SandboxProcess } from './sandbox-process.js';

/** The workspace inside a sandbox. */
export const SANDBOX_WORKSPACE = '/workspace';
/** Claude Code's config dir (sessions, transcripts) inside the workspace: synced, never listed. */
export const SANDBOX_CLAUDE_CONFIG_DIR = '/workspace/.hako/claude';
/** Identifies hako in Claude Code's User-Agent. */
export const CLIENT_APP = 'hako-api/0.1.0';

/** The agent's working directory inside the sandbox. */
export function agentWorkingDir(tenantId: string, workspaceEnabled: boolean): string {
  return workspaceEnabled ? SANDBOX_WORKSPACE : `/skills/${tenantId}`;
}

/**
 * The built-in tools a tenant's allowlist names, for Options.tools: entries without a permission
 * rule pattern (`Bash(git:*)` names Bash) and not MCP tools (`mcp__server__tool`, which `tools`
 * does not cover). Undefined when the allowlist is empty: every built-in tool.
 */
export function builtInToolsOf(allowedTools: readonly string[]): string[] | undefined {
  if (allowedTools.length === 0) return undefined;
  const names = new Set<string>();
  for (const t of allowedTools) {
    const name = t.replace(/\(.*$/s, '').trim();
    if (name !== '' && !name.startsWith('mcp__')) names.add(name);
  }
  return [...names];
}

/** Registry servers (the run's effective set) as the SDK's server configs, by name. */
export function mcpServersOf(servers: readonly McpServer[]): Record<string, McpServerConfig> {
  const out: Record<string, McpServerConfig> = {};
  for (const s of servers) {
    out[s.name] =
      s.type === 'stdio'
        ? { type: 'stdio', command: s.command, args: [...s.args], env: { ...s.env } }
        : { type: 'http', url: s.url, headers: { ...s.headers } };
  }
  return out;
}

export interface AgentOptionsInput {
  readonly tenantId: string;
  readonly settings: TenantSettings;
  /** The MCP servers the run gets: the conversation's effective set (none when undefined). */
  readonly mcpServers?: readonly McpServer[] | undefined;
  readonly conversation: Pick<Conversation, 'id' | 'workspaceEnabled' | 'sessionId'>;
  /** The conversation's sandbox (owner = the tenant) and a client of its hakod. */
  readonly sandbox: { readonly client: AgentClient; readonly sandboxId: string };
  /** Aborting it ends the run and kills Claude Code in the sandbox. */
  readonly abortController: AbortController;
  readonly logger: Logger;
  /**
   * Load the tenant's skills from /skills/{tenant} (the sandbox's copy must have been synced);
   * default false.
   */
  readonly skills?: boolean | undefined;
  /** Skill names the agent is told to prefer (appended to the system prompt). */
  readonly preferredSkills?: readonly string[] | undefined;
  /** Claude Code's stderr as text. */
  readonly onStderr?: ((text: string) => void) | undefined;
  /** Each Claude Code process started (for its stderr tail and exit reason). */
  readonly onSpawn?: ((process: SandboxProcess) => void) | undefined;
  /**
   * hako's in-process MCP servers by name (agent/hako-tools.ts: `hako`), running in the API
   * process. They replace a tenant server of the same name and stay offered (and allowed) when
   * the tenant's allowlist is non-empty.
   */
  readonly inProcessMcpServers?: Readonly<Record<string, McpSdkServerConfigWithInstance>> | undefined;
}

/** SDK Options that carry the AbortController which cancels the run (what runAgent takes). */
export type AgentOptions = Options & { abortController: AbortController };

/** The system prompt's addition naming the skills to prefer; empty for none. */
export function preferredSkillsPrompt(names: readonly string[]): string {
  if (names.length === 0) return '';
  const listed = names.map((n) => `${SKILLS_PLUGIN_NAME}:${n}`).join(', ');
  return `For this request, prefer these skills of the user's organisation when they fit the task, and invoke them with the Skill tool before anything else: ${listed}.`;
}

/** Builds the SDK Options of one execute. Pure apart from the spawner it closes over. */
export function buildAgentOptions(input: AgentOptionsInput): AgentOptions {
  const { settings, conversation } = input;
  const cwd = agentWorkingDir(input.tenantId, conversation.workspaceEnabled);
  const spawnEnv: Record<string, string> = {};
  if (conversation.workspaceEnabled) spawnEnv.CLAUDE_CONFIG_DIR = SANDBOX_CLAUDE_CONFIG_DIR;
  const tools = builtInToolsOf(settings.allowedTools);
  const inProcess = input.inProcessMcpServers ?? {};
  const mcpServers: Record<string, McpServerConfig> = {
    ...mcpServersOf(input.mcpServers ?? []),
    ...inProcess,
  };
  // `mcp__{server}` allows every tool of the server: hako's own tools are not the tenant's to allowlist.
  const allowedTools =
    settings.allowedTools.length === 0
      ? []
      : [...settings.allowedTools, ...Object.keys(inProcess).map((name) => `mcp__${name}`)];
  const append = [settings.systemPrompt ?? '', preferredSkillsPrompt(input.preferredSkills ?? [])]
    .filter((p) => p !== '')
    .join('\n\n');
  const options: AgentOptions = {
    cwd,
    // the SDK never looks for it (custom spawn); Claude Code runs from this path in the sandbox
    pathToClaudeCodeExecutable: CLAUDE_CODE_SANDBOX_PATH,
    systemPrompt:
      append !== ''
        ? { type: 'preset', preset: 'claude_code', append }
        : { type: 'preset', preset: 'claude_code' },
    ...(input.skills === true
      ? { plugins: [{ type: 'local', path: sandboxSkillsDir(input.tenantId), skipMcpDiscovery: true }] }
      : {}),
    allowedTools,
    disallowedTools: [...settings.disallowedTools],
    ...(tools === undefined ? {} : { tools }),
    mcpServers,
    mcpServersDelivery: 'initialize',
    strictMcpConfig: true,
    maxTurns: settings.limits.maxTurns,
    ...(settings.model === undefined ? {} : { model: settings.model }),
    ...(conversation.sessionId === null ? {} : { resume: conversation.sessionId }),
    permissionMode: 'bypassPermissions',
    allowDangerouslySkipPermissions: true,
    settingSources: [],
    includePartialMessages: false,
    env: { CLAUDE_AGENT_SDK_CLIENT_APP: CLIENT_APP },
    abortController: input.abortController,
    spawnClaudeCodeProcess: makeSpawner({
      client: input.sandbox.client,
      ownerId: input.tenantId,
      sandboxId: input.sandbox.sandboxId,
      cwd,
      env: spawnEnv,
      logger: input.logger,
      onStderr: input.onStderr,
      onSpawn: input.onSpawn,
    }),
  };
  return options;
}
