/**
 * SDK messages -> hako's event vocabulary (types.ts EVENT_TYPES). Pure: the only state is the
 * MapperState passed in (open sub-agents, the last context size reported). Every event keeps the
 * SDK message it came from in `sdkMessage`.
 *
 * - system/init -> init {session_id, tools, model, mcp_servers, claude_code_version}
 * - assistant content: text -> assistant {text}; thinking -> thinking {text}; tool_use -> tool_call
 *   {id, name, input}, and subagent_start {id, subagent_type, description} when the tool is
 *   Task/Agent; then context_status {tokens_used, limit} once per model response with usage
 *   (main thread only: a sub-agent's context is its own)
 * - user tool_result blocks -> tool_result {id, output (text, at most MAX_TOOL_OUTPUT_CHARS),
 *   is_error}, and subagent_end {id, is_error} for a Task/Agent call's result
 * - result -> done {status, subtype, result, is_error, usage, cost_usd, turn_count, duration_ms,
 *   session_id} (+ errors for error results)
 * - a message with parent_tool_use_id (inside a sub-agent) carries it in every event's data
 * - anything else: no events (reported through `onIgnored`)
 */
import type { AgentEvent, Usage } from '../types.js';

/** Longest tool output (characters) an event carries; the rest is cut and counted. */
export const MAX_TOOL_OUTPUT_CHARS = 32 * 1024;

/** Tools whose calls start a sub-agent (Claude Code renamed Task to Agent). */
export const SUBAGENT_TOOLS: ReadonlySet<string> = new Set(['Task', 'Agent']);

export interface MapperState {
  /** The tenant's context limit, reported in context_status. */
  readonly contextLimit: number;
  /** Open sub-agent tool calls by tool_use id. */
  readonly subagents: Map<string, { readonly subagentType: string | undefined }>;
  /** The last main-thread context size reported, by model response id (no repeats per block). */
  lastContext: { readonly messageId: string; readonly tokens: number } | undefined;
  /** Context tokens after the last main-thread model response (0 before the first). */
  contextTokens: number;
  /** From init (and every later message that names it). */
  sessionId: string | undefined;
}

export function createMapperState(opts: { contextLimit: number }): MapperState {
  return {
    contextLimit: opts.contextLimit,
    subagents: new Map(),
    lastContext: undefined,
    contextTokens: 0,
    sessionId: undefined,
  };
}

/** `text` cut to `max` characters with a note of how much went. */
export function truncateText(
  text: string,
  max = MAX_TOOL_OUTPUT_CHARS,
): { text: string; truncated: boolean } {
  if (text.length <= max) return { text, truncated: false };
  return { text: `${text.slice(0, max)}\n… [${text.length - max} more characters]`, truncated: true };
}

type Block = { type?: unknown } & Record<string, unknown>;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}

/** A tool_result's content (string, or text/image blocks) as text. */
export function toolOutputText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content))
    return content === undefined || content === null ? '' : JSON.stringify(content);
  return content
    .map((b: unknown) => {
      if (!isRecord(b)) return '';
      if (b.type === 'text' && typeof b.text === 'string') return b.text;
      if (b.type === 'image') return '[image]';
      if (b.type === 'document') return '[document]';
      return JSON.stringify(b);
    })
    .join('\n');
}

/** A Messages API usage object in hako's snake-case event shape. */
export function usageOf(u: unknown): {
  input_tokens: number;
  output_tokens: number;
  cache_creation_input_tokens: number;
  cache_read_input_tokens: number;
} {
  const r = isRecord(u) ? u : {};
  return {
    input_tokens: num(r.input_tokens),
    output_tokens: num(r.output_tokens),
    cache_creation_input_tokens: num(r.cache_creation_input_tokens),
    cache_read_input_tokens: num(r.cache_read_input_tokens),
  };
}

/** The same usage as types.ts `Usage` (camel case, for the runs table). */
export function toUsage(u: ReturnType<typeof usageOf>): Usage {
  return {
    inputTokens: u.input_tokens,
    outputTokens: u.output_tokens,
    cacheCreationInputTokens: u.cache_creation_input_tokens,
    cacheReadInputTokens: u.cache_read_input_tokens,
  };
}

/** Tokens a model response leaves in the context: everything it read (cached or not) plus what it wrote. */
export function contextTokensOf(u: ReturnType<typeof usageOf>): number {
  return u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens + u.output_tokens;
}

function withParent(data: Record<string, unknown>, parent: unknown): Record<string, unknown> {
  return typeof parent === 'string' && parent !== '' ? { ...data, parent_tool_use_id: parent } : data;
}

/**
 * Maps one SDK message (an SDKMessage; anything else is ignored) to the events it stands for
 * (often none or one; an assistant message with several blocks gives several). `onIgnored` hears
 * about messages that map to nothing.
 */
export function mapSdkMessage(
  msg: unknown,
  state: MapperState,
  onIgnored?: (msg: unknown, why: string) => void,
): AgentEvent[] {
  if (!isRecord(msg) || typeof msg.type !== 'string') {
    onIgnored?.(msg, 'not an SDK message');
    return [];
  }
  const ev = (type: AgentEvent['type'], data: Record<string, unknown>): AgentEvent => ({
    type,
    data: withParent(data, msg.parent_tool_use_id),
    sdkMessage: msg,
  });
  if (typeof msg.session_id === 'string' && msg.session_id !== '') state.sessionId = msg.session_id;

  switch (msg.type) {
    case 'system': {
      if (msg.subtype !== 'init') break;
      return [
        ev('init', {
          session_id: msg.session_id,
          tools: Array.isArray(msg.tools) ? msg.tools : [],
          model: msg.model,
          mcp_servers: Array.isArray(msg.mcp_servers) ? msg.mcp_servers : [],
          claude_code_version: msg.claude_code_version,
        }),
      ];
    }
    case 'assistant': {
      const message = isRecord(msg.message) ? msg.message : {};
      const content = Array.isArray(message.content) ? (message.content as unknown[]) : [];
      const out: AgentEvent[] = [];
      for (const raw of content) {
        if (!isRecord(raw)) continue;
        const b = raw as Block;
        switch (b.type) {
          case 'text':
            out.push(
              ev('assistant', {
                text: typeof b.text === 'string' ? b.text : '',
                ...(msg.error === undefined ? {} : { error: msg.error }),
              }),
            );
            break;
          case 'thinking':
            out.push(ev('thinking', { text: typeof b.thinking === 'string' ? b.thinking : '' }));
            break;
          case 'redacted_thinking':
            out.push(ev('thinking', { text: '', redacted: true }));
            break;
          case 'tool_use':
          case 'server_tool_use':
          case 'mcp_tool_use': {
            const id = typeof b.id === 'string' ? b.id : '';
            const name = typeof b.name === 'string' ? b.name : '';
            out.push(ev('tool_call', { id, name, input: b.input ?? {} }));
            if (SUBAGENT_TOOLS.has(name)) {
              const input = isRecord(b.input) ? b.input : {};
              const subagentType = typeof input.subagent_type === 'string' ? input.subagent_type : undefined;
              state.subagents.set(id, { subagentType });
              out.push(
                ev('subagent_start', {
                  id,
                  subagent_type: subagentType ?? 'general-purpose',
                  description: typeof input.description === 'string' ? input.description : '',
                }),
              );
            }
            break;
          }
          default:
            break;
        }
      }
      const parent = msg.parent_tool_use_id;
      if (isRecord(message.usage) && (parent === null || parent === undefined)) {
        const tokens = contextTokensOf(usageOf(message.usage));
        const messageId = typeof message.id === 'string' ? message.id : '';
        const last = state.lastContext;
        if (tokens > 0 && (last === undefined || last.messageId !== messageId || last.tokens !== tokens)) {
          state.lastContext = { messageId, tokens };
          state.contextTokens = tokens;
          out.push(ev('context_status', { tokens_used: tokens, limit: state.contextLimit }));
        }
      }
      if (out.length === 0) onIgnored?.(msg, 'assistant message without text, thinking or tool use');
      return out;
    }
    case 'user': {
      const message = isRecord(msg.message) ? msg.message : {};
      const content = Array.isArray(message.content) ? (message.content as unknown[]) : [];
      const out: AgentEvent[] = [];
      for (const raw of content) {
        if (!isRecord(raw) || raw.type !== 'tool_result') continue;
        const id = typeof raw.tool_use_id === 'string' ? raw.tool_use_id : '';
        const isError = raw.is_error === true;
        const { text, truncated } = truncateText(toolOutputText(raw.content));
        out.push(
          ev('tool_result', { id, output: text, is_error: isError, ...(truncated ? { truncated } : {}) }),
        );
        const sub = state.subagents.get(id);
        if (sub) {
          state.subagents.delete(id);
          out.push(
            ev('subagent_end', {
              id,
              subagent_type: sub.subagentType ?? 'general-purpose',
              is_error: isError,
            }),
          );
        }
      }
      if (out.length === 0) onIgnored?.(msg, 'user message without tool results');
      return out;
    }
    case 'result': {
      const usage = usageOf(msg.usage);
      const success = msg.subtype === 'success';
      const isError = msg.is_error === true || !success;
      return [
        ev('done', {
          status: isError ? 'failed' : 'completed',
          subtype: msg.subtype,
          result: typeof msg.result === 'string' ? msg.result : '',
          is_error: isError,
          usage,
          cost_usd: num(msg.total_cost_usd),
          turn_count: num(msg.num_turns),
          duration_ms: num(msg.duration_ms),
          session_id: msg.session_id,
          ...(Array.isArray(msg.errors) ? { errors: msg.errors } : {}),
        }),
      ];
    }
    default:
      break;
  }
  onIgnored?.(
    msg,
    `no event for ${String(msg.type)}${typeof msg.subtype === 'string' ? `/${msg.subtype}` : ''}`,
  );
  return [];
}
