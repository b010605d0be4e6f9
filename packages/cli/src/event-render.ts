/**
 * Terminal rendering of hako-api's agent events (the SSE stream of POST .../execute and
 * GET .../events), and a small Server-Sent Events parser to read that stream with fetch.
 *
 * renderEvent gives one readable block per event, without a trailing newline, or undefined for
 * events that are not worth a line (ping, context_status). It never throws on odd data: a field
 * of the wrong type is shown as best it can be, an unknown event type as its name and JSON.
 */

export interface RenderableEvent {
  event: string;
  data: Record<string, unknown>;
}

export interface RenderOptions {
  /** ANSI colours (a TTY that did not ask for NO_COLOR). */
  color: boolean;
}

/** One parsed SSE event. `data` is the JSON object of its data lines ({ text } when not JSON). */
export interface SseEvent {
  /** The `id:` field (hako: the event's seq), undefined when the event had none. */
  id: string | undefined;
  /** The `event:` field; `message` when the event had none (as the SSE spec says). */
  event: string;
  data: Record<string, unknown>;
}

/** Lines of tool output shown before "… N more lines". */
export const TOOL_OUTPUT_MAX_LINES = 12;
/** Characters of one shown line of tool output (or of a one-line summary) before it is cut. */
export const LINE_MAX_CHARS = 160;

const ANSI = {
  reset: '\x1b[0m',
  bold: '\x1b[1m',
  dim: '\x1b[2m',
  red: '\x1b[31m',
  green: '\x1b[32m',
  yellow: '\x1b[33m',
  blue: '\x1b[34m',
  magenta: '\x1b[35m',
  cyan: '\x1b[36m',
} as const;
type Style = keyof typeof ANSI;

function painter(color: boolean): (style: Style, s: string) => string {
  return (style, s) => (color && s !== '' ? `${ANSI[style]}${s}${ANSI.reset}` : s);
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Cuts a string to `max` characters, marking the cut with an ellipsis. */
export function truncate(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, Math.max(0, max - 1))}…`;
}

/** The first line of a string, cut to LINE_MAX_CHARS; "(+N lines)" when there were more. */
function oneLine(s: string): string {
  const lines = s.split('\n');
  const first = truncate(lines[0] ?? '', LINE_MAX_CHARS);
  return lines.length > 1 ? `${first} (+${lines.length - 1} lines)` : first;
}

function countLines(s: string): number {
  if (s === '') return 0;
  const n = s.split('\n').length;
  return s.endsWith('\n') ? n - 1 : n;
}

/** 1234567 → "1,234,567". */
function grouped(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}

/** Bytes as "512 B", "1.5 KiB", "3.2 MiB". */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** Milliseconds as "850 ms", "4.2 s", "3m 05s". */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
}

/** A short, one-line summary of a tool's input: the argument that says what the call does. */
export function summarizeToolInput(name: string, input: unknown): string {
  const i = isRecord(input) ? input : {};
  const path = str(i.file_path) ?? str(i.path) ?? str(i.notebook_path);
  switch (name) {
    case 'Bash': {
      const cmd = str(i.command) ?? '';
      return `$ ${oneLine(cmd)}`;
    }
    case 'Write': {
      const content = str(i.content) ?? '';
      const lines = countLines(content);
      return `${path ?? '?'} (${lines} line${lines === 1 ? '' : 's'}, ${formatBytes(Buffer.byteLength(content))})`;
    }
    case 'Edit':
    case 'MultiEdit':
    case 'Read':
    case 'NotebookEdit':
      return path ?? oneLine(JSON.stringify(i));
    case 'Glob':
    case 'Grep': {
      const pattern = str(i.pattern) ?? '';
      return path === undefined ? pattern : `${pattern} in ${path}`;
    }
    case 'WebFetch':
    case 'WebSearch':
      return oneLine(str(i.url) ?? str(i.query) ?? JSON.stringify(i));
    case 'Task':
    case 'Agent':
      return oneLine(str(i.description) ?? str(i.prompt) ?? JSON.stringify(i));
    case 'TodoWrite': {
      const todos = Array.isArray(i.todos) ? i.todos.length : 0;
      return `${todos} item${todos === 1 ? '' : 's'}`;
    }
    default: {
      const json = JSON.stringify(i);
      return json === '{}' ? '' : truncate(json, LINE_MAX_CHARS);
    }
  }
}

/** Tool output indented by four spaces, at most TOOL_OUTPUT_MAX_LINES lines of LINE_MAX_CHARS. */
export function indentOutput(output: string): string[] {
  const trimmed = output.replace(/\s+$/, '');
  if (trimmed === '') return ['    (no output)'];
  const lines = trimmed.split('\n');
  const shown = lines.slice(0, TOOL_OUTPUT_MAX_LINES).map((l) => `    ${truncate(l, LINE_MAX_CHARS)}`);
  if (lines.length > TOOL_OUTPUT_MAX_LINES) {
    const more = lines.length - TOOL_OUTPUT_MAX_LINES;
    shown.push(`    … ${more} more line${more === 1 ? '' : 's'}`);
  }
  return shown;
}

const STEP_LABELS: Record<string, string> = {
  sandbox: 'sandbox',
  workspace_restore: 'workspace restore',
  workspace_sync: 'workspace sync',
};

function renderProgress(d: Record<string, unknown>, p: ReturnType<typeof painter>): string {
  const step = str(d.step) ?? 'step';
  const label = STEP_LABELS[step] ?? step.replace(/_/g, ' ');
  const status = str(d.status) ?? '';
  if (status === 'started') return p('dim', `· ${label}…`);
  const details: string[] = [];
  if (step === 'sandbox') {
    if (d.created === true) details.push('new');
    else if (d.created === false) details.push('reused');
    const node = str(d.node);
    if (node !== undefined) details.push(`node ${node}`);
  } else if (step === 'workspace_restore') {
    const files = num(d.files);
    const bytes = num(d.bytes);
    if (files !== undefined) details.push(`${files} file${files === 1 ? '' : 's'}`);
    if (bytes !== undefined) details.push(formatBytes(bytes));
  } else if (step === 'workspace_sync') {
    for (const k of ['uploaded', 'deleted', 'unchanged'] as const) {
      const n = num(d[k]);
      if (n !== undefined) details.push(`${n} ${k}`);
    }
  }
  const word = status === 'done' ? 'done' : status;
  const tail = details.length > 0 ? ` (${details.join(', ')})` : '';
  const line = `· ${label} ${word}${tail}`;
  return status === 'done' ? p('dim', line) : p('yellow', line);
}

function tokensOf(usage: unknown): { input: number; output: number } | undefined {
  if (!isRecord(usage)) return undefined;
  const input =
    (num(usage.input_tokens) ?? 0) +
    (num(usage.cache_creation_input_tokens) ?? 0) +
    (num(usage.cache_read_input_tokens) ?? 0);
  const output = num(usage.output_tokens) ?? 0;
  return { input, output };
}

function renderDone(d: Record<string, unknown>, p: ReturnType<typeof painter>): string {
  const status = str(d.status) ?? 'done';
  const ok = status === 'completed' && d.is_error !== true;
  const parts: string[] = [];
  const turns = num(d.turn_count);
  if (turns !== undefined) parts.push(`${turns} turn${turns === 1 ? '' : 's'}`);
  const tokens = tokensOf(d.usage);
  if (tokens !== undefined) parts.push(`${grouped(tokens.input)} in / ${grouped(tokens.output)} out tokens`);
  const cost = num(d.cost_usd);
  if (cost !== undefined) parts.push(`$${cost.toFixed(4)}`);
  const ms = num(d.duration_ms);
  if (ms !== undefined) parts.push(formatDuration(ms));
  const nested = isRecord(d.error) ? str(d.error.code) : undefined;
  const code = str(d.error_code) ?? nested;
  const head = ok ? p('green', `✓ ${status}`) : p('red', `✗ ${status}${code ? ` [${code}]` : ''}`);
  return `${head}${parts.length > 0 ? p('dim', ` · ${parts.join(' · ')}`) : ''}`;
}

/**
 * One readable block (possibly several lines, no trailing newline) for an event, or undefined when
 * the event is not shown (ping, context_status).
 */
export function renderEvent(ev: RenderableEvent, opts: RenderOptions): string | undefined {
  const p = painter(opts.color);
  const d = isRecord(ev.data) ? ev.data : {};
  const nested = str(d.parent_tool_use_id) !== undefined ? p('dim', '  ↳ ') : '';
  switch (ev.event) {
    case 'ping':
    case 'context_status':
      return undefined;
    case 'init': {
      const model = str(d.model);
      const tools = Array.isArray(d.tools) ? d.tools.length : undefined;
      const version = str(d.claude_code_version);
      const parts = [
        model === undefined ? undefined : `model ${model}`,
        tools === undefined ? undefined : `${tools} tools`,
        version === undefined ? undefined : `Claude Code ${version}`,
      ].filter((x): x is string => x !== undefined);
      return p('dim', `· session started${parts.length > 0 ? ` (${parts.join(', ')})` : ''}`);
    }
    case 'title':
      return p('dim', `· title: ${oneLine(str(d.title) ?? '')}`);
    case 'thinking': {
      if (d.redacted === true) return `${nested}${p('dim', '✻ (thinking redacted)')}`;
      const text = (str(d.text) ?? '').trim();
      return `${nested}${p('dim', `✻ ${text === '' ? 'thinking…' : oneLine(text)}`)}`;
    }
    case 'assistant': {
      const text = (str(d.text) ?? '').replace(/\s+$/, '');
      const err =
        d.error === undefined ? '' : p('red', ` [${typeof d.error === 'string' ? d.error : 'error'}]`);
      if (nested !== '') return `${nested}${text.split('\n').join(`\n${nested}`)}${err}`;
      return `${text}${err}`;
    }
    case 'tool_call': {
      const name = str(d.name) ?? 'tool';
      const summary = summarizeToolInput(name, d.input);
      return `${nested}${p('cyan', '▶')} ${p('bold', name)}${summary === '' ? '' : ` ${summary}`}`;
    }
    case 'tool_result': {
      const output = str(d.output) ?? (d.output === undefined ? '' : JSON.stringify(d.output));
      const lines = indentOutput(output);
      if (d.truncated !== undefined && d.truncated !== false) lines.push('    … (output truncated by hako)');
      const body = lines.map((l) => `${nested}${d.is_error === true ? p('red', l) : p('dim', l)}`);
      if (d.is_error === true) body.unshift(`${nested}${p('red', '  ✗ tool error:')}`);
      return body.join('\n');
    }
    case 'subagent_start': {
      const type = str(d.subagent_type) ?? 'subagent';
      const desc = str(d.description) ?? '';
      return p('magenta', `⇢ subagent ${type} started${desc === '' ? '' : `: ${oneLine(desc)}`}`);
    }
    case 'subagent_end': {
      const type = str(d.subagent_type) ?? 'subagent';
      return d.is_error === true
        ? p('red', `⇠ subagent ${type} failed`)
        : p('magenta', `⇠ subagent ${type} finished`);
    }
    case 'progress':
      return renderProgress(d, p);
    case 'error': {
      const code = str(d.code) ?? 'ERROR';
      const message = str(d.message) ?? '';
      const reason = str(d.reason);
      return p('red', `✗ error [${code}] ${message}${reason === undefined ? '' : ` (${reason})`}`);
    }
    case 'done':
      return renderDone(d, p);
    default:
      return p('dim', `· ${ev.event}: ${truncate(JSON.stringify(d), LINE_MAX_CHARS)}`);
  }
}

function parseData(raw: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(raw);
    return isRecord(v) ? v : { value: v };
  } catch {
    return { text: raw };
  }
}

/**
 * Parses a Server-Sent Events byte stream (e.g. a fetch Response body) into events: fields
 * `id`, `event`, `data` (several data lines are joined by newlines, then parsed as JSON); comment
 * lines (`: …`) and `retry` are skipped; an event without data lines is not dispatched, as the
 * spec says. Ends when the body ends; a last event without its blank line is dropped.
 */
export async function* readSseEvents(body: AsyncIterable<Uint8Array>): AsyncIterable<SseEvent> {
  const decoder = new TextDecoder('utf-8');
  let buf = '';
  let id: string | undefined;
  let event = '';
  let data: string[] = [];
  let lastId: string | undefined;

  const takeLine = (line: string): SseEvent | undefined => {
    if (line === '') {
      const out =
        data.length > 0
          ? { id: id ?? lastId, event: event === '' ? 'message' : event, data: parseData(data.join('\n')) }
          : undefined;
      if (id !== undefined) lastId = id;
      id = undefined;
      event = '';
      data = [];
      return out;
    }
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') data.push(value);
    else if (field === 'event') event = value;
    else if (field === 'id' && !value.includes('\0')) id = value;
    return undefined;
  };

  for await (const chunk of body) {
    buf += decoder.decode(chunk, { stream: true });
    // A lone \r at the end might be the first half of \r\n: keep it for the next chunk.
    let start = 0;
    for (let i = 0; i < buf.length; i++) {
      const c = buf[i];
      if (c !== '\n' && c !== '\r') continue;
      if (c === '\r' && i === buf.length - 1) break;
      const line = buf.slice(start, i);
      if (c === '\r' && buf[i + 1] === '\n') i++;
      start = i + 1;
      const ev = takeLine(line);
      if (ev !== undefined) yield ev;
    }
    buf = buf.slice(start);
  }
  buf += decoder.decode();
  // The stream ended: a complete last line still counts, an unterminated event does not.
  if (buf.endsWith('\r')) {
    const ev = takeLine(buf.slice(0, -1));
    if (ev !== undefined) yield ev;
  }
}
