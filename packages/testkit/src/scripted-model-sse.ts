// Messages API wire shapes for the scripted model: building a message from a scripted turn,
// framing it as the API's server-sent events, and (for tests and consumers) parsing such a
// stream back into a message the way an SDK client does.
import { randomBytes } from 'node:crypto';
import type { ScriptBlock, ScriptTurn } from './scripted-model-script.js';

export interface ApiUsage {
  input_tokens: number;
  output_tokens: number;
  cache_creation_input_tokens: number;
  cache_read_input_tokens: number;
}

export type ApiContentBlock =
  | { type: 'text'; text: string }
  | { type: 'tool_use'; id: string; name: string; input: Record<string, unknown> }
  | { type: 'thinking'; thinking: string; signature: string };

export interface ApiMessage {
  id: string;
  type: 'message';
  role: 'assistant';
  model: string;
  content: ApiContentBlock[];
  stop_reason: 'end_turn' | 'tool_use' | 'max_tokens' | null;
  stop_sequence: string | null;
  usage: ApiUsage;
}

export interface SseEvent {
  event: string;
  data: Record<string, unknown>;
}

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** A random id in the API's style: `msg_01…`, `toolu_01…`, `req_01…` (24 base62 characters). */
export function apiId(prefix: string): string {
  const bytes = randomBytes(22);
  let s = '01';
  for (const b of bytes) s += ALPHABET[b % ALPHABET.length];
  return `${prefix}_${s}`;
}

/** The token estimate used everywhere: a quarter of the characters, at least 1. */
export function estimateTokens(chars: number): number {
  return Math.max(1, Math.ceil(chars / 4));
}

const PLACEHOLDER_SIGNATURE = 'c2NyaXB0ZWQtbW9kZWwtc2lnbmF0dXJl';

function contentOf(block: ScriptBlock): ApiContentBlock {
  switch (block.type) {
    case 'text':
      return { type: 'text', text: block.text };
    case 'tool_use':
      return { type: 'tool_use', id: block.id ?? apiId('toolu'), name: block.name, input: block.input };
    case 'thinking':
      return {
        type: 'thinking',
        thinking: block.thinking,
        signature: block.signature ?? PLACEHOLDER_SIGNATURE,
      };
  }
}

/**
 * The complete assistant message for one scripted turn. `inputTokens` is the request's
 * estimate; the turn's `usage` overrides any number. stop_reason is `tool_use` when the turn
 * calls a tool, else `end_turn`.
 */
export function buildMessage(turn: ScriptTurn, opts: { model: string; inputTokens: number }): ApiMessage {
  const content = turn.blocks.map(contentOf);
  const usage: ApiUsage = {
    input_tokens: opts.inputTokens,
    output_tokens: estimateTokens(JSON.stringify(content).length),
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 0,
    ...turn.usage,
  };
  return {
    id: apiId('msg'),
    type: 'message',
    role: 'assistant',
    model: opts.model,
    content,
    stop_reason: content.some((c) => c.type === 'tool_use') ? 'tool_use' : 'end_turn',
    stop_sequence: null,
    usage,
  };
}

/** Splits `s` into pieces of at most `size` characters (at least one piece, maybe empty). */
export function chunk(s: string, size: number): string[] {
  if (s.length <= size) return [s];
  const out: string[] = [];
  for (let i = 0; i < s.length; i += size) out.push(s.slice(i, i + size));
  return out;
}

const TEXT_CHUNK = 24;
const JSON_CHUNK = 16;

/**
 * The events the real API streams for `message`: message_start (usage with the input numbers
 * and output_tokens 1), a ping, then per block content_block_start / *_delta… /
 * content_block_stop, message_delta (stop_reason and the final usage), message_stop.
 */
export function messageEvents(message: ApiMessage): SseEvent[] {
  const events: SseEvent[] = [];
  const add = (event: string, data: Record<string, unknown>): void => {
    events.push({ event, data: { type: event, ...data } });
  };
  add('message_start', {
    message: {
      ...message,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { ...message.usage, output_tokens: 1, service_tier: 'standard' },
    },
  });
  add('ping', {});
  message.content.forEach((block, index) => {
    switch (block.type) {
      case 'text':
        add('content_block_start', { index, content_block: { type: 'text', text: '' } });
        for (const text of chunk(block.text, TEXT_CHUNK)) {
          add('content_block_delta', { index, delta: { type: 'text_delta', text } });
        }
        break;
      case 'tool_use': {
        add('content_block_start', {
          index,
          content_block: { type: 'tool_use', id: block.id, name: block.name, input: {} },
        });
        for (const partial_json of chunk(JSON.stringify(block.input), JSON_CHUNK)) {
          add('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json } });
        }
        break;
      }
      case 'thinking':
        add('content_block_start', {
          index,
          content_block: { type: 'thinking', thinking: '', signature: '' },
        });
        for (const thinking of chunk(block.thinking, TEXT_CHUNK)) {
          add('content_block_delta', { index, delta: { type: 'thinking_delta', thinking } });
        }
        add('content_block_delta', { index, delta: { type: 'signature_delta', signature: block.signature } });
        break;
    }
    add('content_block_stop', { index });
  });
  add('message_delta', {
    delta: { stop_reason: message.stop_reason, stop_sequence: message.stop_sequence },
    usage: { ...message.usage },
  });
  add('message_stop', {});
  return events;
}

/** One SSE frame: `event: NAME\ndata: JSON\n\n`. */
export function encodeSseEvent(e: SseEvent): string {
  return `event: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`;
}

/** Parses an SSE body into its events (frames without data are skipped; data lines joined). */
export function parseSse(body: string): SseEvent[] {
  const out: SseEvent[] = [];
  for (const frame of body.split(/\r?\n\r?\n/)) {
    let event = 'message';
    const data: string[] = [];
    for (const line of frame.split(/\r?\n/)) {
      if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
    }
    if (data.length > 0) out.push({ event, data: JSON.parse(data.join('\n')) as Record<string, unknown> });
  }
  return out;
}

/**
 * Rebuilds the message from its events the way an SDK accumulates a stream: blocks from
 * content_block_start, text/thinking/signature deltas appended, tool input JSON concatenated
 * and parsed at content_block_stop, stop_reason and usage from message_delta. Throws on a
 * malformed stream (a delta for an unknown block, an event after message_stop, bad JSON).
 */
export function assembleMessage(events: readonly SseEvent[]): ApiMessage {
  let message: ApiMessage | undefined;
  const partialJson = new Map<number, string>();
  let stopped = false;
  for (const { event, data } of events) {
    if (stopped) throw new Error(`event ${event} after message_stop`);
    if (data.type !== event) throw new Error(`event ${event} carries data.type ${String(data.type)}`);
    switch (event) {
      case 'message_start':
        message = structuredClone(data.message as ApiMessage);
        break;
      case 'ping':
        break;
      case 'content_block_start': {
        if (!message) throw new Error('content_block_start before message_start');
        const index = data.index as number;
        if (index !== message.content.length) throw new Error(`block ${index} started out of order`);
        message.content.push(structuredClone(data.content_block as ApiContentBlock));
        break;
      }
      case 'content_block_delta': {
        const index = data.index as number;
        const block = message?.content[index];
        if (!block) throw new Error(`delta for unknown block ${index}`);
        const delta = data.delta as Record<string, string>;
        if (delta.type === 'text_delta' && block.type === 'text') block.text += delta.text;
        else if (delta.type === 'thinking_delta' && block.type === 'thinking')
          block.thinking += delta.thinking;
        else if (delta.type === 'signature_delta' && block.type === 'thinking')
          block.signature += delta.signature;
        else if (delta.type === 'input_json_delta' && block.type === 'tool_use') {
          partialJson.set(index, (partialJson.get(index) ?? '') + delta.partial_json);
        } else throw new Error(`delta ${String(delta.type)} does not fit a ${block.type} block`);
        break;
      }
      case 'content_block_stop': {
        const index = data.index as number;
        const block = message?.content[index];
        if (!block) throw new Error(`stop for unknown block ${index}`);
        if (block.type === 'tool_use') {
          const json = partialJson.get(index) ?? '';
          block.input = json === '' ? {} : (JSON.parse(json) as Record<string, unknown>);
        }
        break;
      }
      case 'message_delta': {
        if (!message) throw new Error('message_delta before message_start');
        const delta = data.delta as { stop_reason: ApiMessage['stop_reason']; stop_sequence: string | null };
        message.stop_reason = delta.stop_reason;
        message.stop_sequence = delta.stop_sequence;
        message.usage = { ...message.usage, ...(data.usage as Partial<ApiUsage>) };
        break;
      }
      case 'message_stop':
        stopped = true;
        break;
      default:
        throw new Error(`unknown event ${event}`);
    }
  }
  if (!message || !stopped) throw new Error('stream ended before message_stop');
  return message;
}
