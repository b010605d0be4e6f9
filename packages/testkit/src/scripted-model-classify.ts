// Telling the scripted model's requests apart, from the request alone (no per-session state).
//
// Claude Code 2.1.330 sends these Messages API requests (observed against this server):
// - the main conversation's turns: the session's `tools`, a large `max_tokens` (128000), no
//   `x-claude-code-agent-id` header, messages from the user's prompt on;
// - sub-agent turns (the Agent tool): the same shape plus an `x-claude-code-agent-id` header
//   and `cc_is_subagent=true` in the billing line of `system`, starting at the prompt the
//   parent gave in its Agent tool call;
// - compaction (auto-compact when the context nears the window): a fork of the main request
//   with identical tools, system and parameters; only its last user message differs, asking
//   for "a detailed summary of the conversation" as "TEXT ONLY";
// - other helpers (titles, topic checks, quota probes, classifiers, WebFetch digests, cache
//   warms): no `tools`, a `tool_choice` forcing one tool, a tiny `max_tokens`, or a
//   conversation that ends with an assistant message (a prefill).
// Only main-conversation requests consume scripted turns. Which turn is derived from the
// request's own history, not from a counter: the number of assistant messages after the last
// user prompt (a user message without tool_result blocks). So a new prompt restarts the
// script, a retried request gets the same turn again, and concurrent sessions never take each
// other's turns. A compaction is answered with a summary that carries the turn reached
// (`[scripted-model turn=N]`); the continued conversation starts from that summary and the
// script goes on at turn N instead of restarting.

/** What a request is, and for a conversation request which turn of the script answers it. */
export type RequestClass =
  | { kind: 'main'; turn: number }
  | { kind: 'subagent'; turn: number }
  | { kind: 'compaction'; turn: number }
  | { kind: 'aux'; reason: string };

/** Requests asking for at most this many output tokens are helpers, never a conversation turn. */
export const AUX_MAX_TOKENS = 1024;

/** The header Claude Code sets on the requests of sub-agents and forked helper agents. */
export const AGENT_ID_HEADER = 'x-claude-code-agent-id';

const COMPACTION_PROMPT = /Your task is to create a detailed summary of|CRITICAL: Respond with TEXT ONLY/;
const TURN_MARKER = /\[scripted-model turn=(\d+)\]/;

/** The marker a compaction summary carries so the continued conversation resumes at `turn`. */
export function turnMarker(turn: number): string {
  return `[scripted-model turn=${turn}]`;
}

interface Msg {
  role?: unknown;
  content?: unknown;
}

export interface ClassifyContext {
  /** The request headers (lower-case names, as node:http gives them). */
  headers?: Readonly<Record<string, string | string[] | undefined>>;
  /**
   * Prompts this server handed to sub-agents (the `prompt` input of Agent/Task tool calls it
   * streamed): a conversation that starts with one of them is that sub-agent's.
   */
  subagentPrompts?: ReadonlySet<string>;
}

function blocksOf(m: Msg): Record<string, unknown>[] {
  if (typeof m.content === 'string') return [{ type: 'text', text: m.content }];
  if (!Array.isArray(m.content)) return [];
  return m.content.filter((b): b is Record<string, unknown> => typeof b === 'object' && b !== null);
}

function isPrompt(m: Msg): boolean {
  return m.role === 'user' && !blocksOf(m).some((b) => b.type === 'tool_result');
}

/**
 * The user's own words in a message: its text blocks without the `<system-reminder>` blocks
 * Claude Code adds, joined by newlines and trimmed.
 */
export function promptText(m: Msg): string {
  return blocksOf(m)
    .filter((b) => b.type === 'text' && typeof b.text === 'string')
    .map((b) => (b.text as string).trim())
    .filter((t) => !t.startsWith('<system-reminder>'))
    .join('\n')
    .trim();
}

function systemText(system: unknown): string {
  if (typeof system === 'string') return system;
  if (!Array.isArray(system)) return '';
  return system
    .map((b) =>
      typeof b === 'object' && b !== null && typeof (b as { text?: unknown }).text === 'string'
        ? (b as { text: string }).text
        : '',
    )
    .join('\n');
}

/** Turns played since the last prompt: its marker's turn (after a compaction) plus the assistant messages after it. */
function turnOf(messages: readonly Msg[]): number | undefined {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i] as Msg;
    if (isPrompt(m)) {
      const marker = TURN_MARKER.exec(promptText(m));
      const base = marker ? Number(marker[1]) : 0;
      return base + messages.slice(i + 1).filter((x) => x.role === 'assistant').length;
    }
  }
  return undefined;
}

/** Classifies one `POST /v1/messages` request (see the rules at the top of this file). */
export function classifyRequest(body: unknown, ctx: ClassifyContext = {}): RequestClass {
  if (typeof body !== 'object' || body === null) return { kind: 'aux', reason: 'body is not an object' };
  const b = body as Record<string, unknown>;
  if (!Array.isArray(b.tools) || b.tools.length === 0) return { kind: 'aux', reason: 'no tools' };
  const choice = b.tool_choice as { type?: unknown } | undefined;
  if (choice?.type === 'tool') return { kind: 'aux', reason: 'tool_choice forces one tool' };
  if (typeof b.max_tokens === 'number' && b.max_tokens <= AUX_MAX_TOKENS) {
    return { kind: 'aux', reason: `max_tokens ${b.max_tokens} <= ${AUX_MAX_TOKENS}` };
  }
  // Claude Code may put role "system" messages between turns; they are context, not turns.
  const messages = (Array.isArray(b.messages) ? (b.messages as Msg[]) : []).filter(
    (m) => m.role !== 'system',
  );
  const last = messages.at(-1);
  if (!last || last.role !== 'user') return { kind: 'aux', reason: 'does not end with a user message' };

  const header = ctx.headers?.[AGENT_ID_HEADER];
  const isAgent =
    (header !== undefined && header !== '') || /\bcc_is_subagent=true\b/.test(systemText(b.system));
  if (isAgent) {
    const first = messages.find((m) => m.role === 'user');
    const known = first !== undefined && (ctx.subagentPrompts?.has(promptText(first)) ?? false);
    if (!known) return { kind: 'aux', reason: 'agent request this script did not start (a forked helper)' };
    return { kind: 'subagent', turn: turnOf(messages) ?? 0 };
  }

  const lastText = promptText(last);
  if (COMPACTION_PROMPT.test(lastText)) {
    // The instruction is the last user message (or appended to the last tool results): count
    // the turns played before it.
    const before = isPrompt(last) ? messages.slice(0, -1) : messages;
    return { kind: 'compaction', turn: turnOf(before) ?? 0 };
  }
  const turn = turnOf(messages);
  if (turn === undefined) return { kind: 'aux', reason: 'no user prompt' };
  return { kind: 'main', turn };
}
