// The script the scripted Messages API server plays: its format (zod), its parser, and the
// normalised turns the server streams. One turn answers one model request of the main
// conversation; each new prompt starts the script again from its first turn.
import { z } from 'zod';
import { AppError } from '@hako/core';

const usageOverride = z
  .object({
    input_tokens: z.number().int().nonnegative().optional(),
    output_tokens: z.number().int().nonnegative().optional(),
    cache_creation_input_tokens: z.number().int().nonnegative().optional(),
    cache_read_input_tokens: z.number().int().nonnegative().optional(),
  })
  .strict()
  .describe('Usage numbers reported for this turn instead of the estimates (any subset).');

const toolInput = z
  .record(z.unknown())
  .default({})
  .describe('The tool input object, streamed as input_json_delta chunks.');
const toolId = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,64}$/, 'letters, digits, _ and -, at most 64')
  .optional()
  .describe('The tool_use id; a fresh random toolu_… id when omitted.');

const textBlock = z.object({ text: z.string().describe('A text block.') }).strict();
const toolBlock = z
  .object({ tool: z.string().min(1).describe('The tool name, e.g. Bash.'), input: toolInput, id: toolId })
  .strict();
const thinkingBlock = z
  .object({
    thinking: z.string().describe('A thinking block (streamed as thinking_delta, then a signature).'),
    signature: z.string().optional().describe('The signature_delta; a fixed placeholder when omitted.'),
  })
  .strict();

/**
 * Validates `value` against the schema its keys select (not a z.union: a union reports every
 * branch's complaints, which hides the one that matters).
 */
function dispatch<T extends z.ZodTypeAny>(
  pick: (v: Record<string, unknown>) => T,
): z.ZodType<z.output<T>, z.ZodTypeDef, unknown> {
  return z.unknown().transform((v, ctx): z.output<T> => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'expected an object' });
      return z.NEVER;
    }
    const r = pick(v as Record<string, unknown>).safeParse(v);
    if (r.success) return r.data as z.output<T>;
    for (const issue of r.error.issues) ctx.addIssue(issue);
    return z.NEVER;
  });
}

const blockSchema = dispatch((v) => ('tool' in v ? toolBlock : 'thinking' in v ? thinkingBlock : textBlock));
type BlockOut = z.output<typeof toolBlock> | z.output<typeof thinkingBlock> | z.output<typeof textBlock>;

const turnCommon = {
  usage: usageOverride.optional(),
  delayMs: z
    .number()
    .int()
    .nonnegative()
    .max(600_000)
    .optional()
    .describe('Wait this long before answering (nothing is sent meanwhile), e.g. to test cancellation.'),
};

/** A turn of several blocks, in order: `{"blocks":[{"text":"…"},{"tool":"Write","input":{…}}]}`. */
const blocksTurn = z
  .object({ blocks: z.array(blockSchema).min(1, 'a turn needs at least one block'), ...turnCommon })
  .strict();

/**
 * The shorthand turn: `{"tool":"Bash","input":{…}}`, `{"text":"done"}`, optionally with
 * `thinking` (streamed first) and both text and tool (text first).
 */
const shortTurn = z
  .object({
    thinking: z.string().optional(),
    text: z.string().optional(),
    tool: z.string().min(1).optional(),
    input: toolInput.optional(),
    id: toolId,
    ...turnCommon,
  })
  .strict()
  .superRefine((t, ctx) => {
    if (t.text === undefined && t.tool === undefined) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        message: 'a turn needs "text", "tool" (with "input") or "blocks"',
      });
    }
    if (t.tool === undefined && (t.input !== undefined || t.id !== undefined)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: '"input" and "id" belong to a "tool" turn' });
    }
  });

const turnSchema = dispatch((v) => ('blocks' in v ? blocksTurn : shortTurn));
type TurnOut = z.output<typeof blocksTurn> | z.output<typeof shortTurn>;

export const scriptSchema = z
  .object({
    turns: z.array(turnSchema).describe('One turn per model request of the main conversation, in order.'),
    final: z
      .string()
      .optional()
      .describe('The text of the plain final turn answered once the turns run out (default "Done.").'),
    aux: z
      .string()
      .optional()
      .describe('The text answered to auxiliary requests (titles, classifiers; default "Scripted session").'),
    subagent: z
      .string()
      .optional()
      .describe(
        'The text every turn of a sub-agent started by an Agent tool call answers (default "Sub-agent finished.").',
      ),
  })
  .strict();

/** A block of a `blocks` turn. */
export type ScriptBlockInput =
  | { text: string }
  | { tool: string; input?: Record<string, unknown>; id?: string }
  | { thinking: string; signature?: string };

interface TurnOptionsInput {
  usage?: ScriptUsage;
  delayMs?: number;
}

/** A turn as written in a script (see {@link scriptSchema}). */
export type ScriptTurnInput =
  | ({ blocks: ScriptBlockInput[] } & TurnOptionsInput)
  | ({
      thinking?: string;
      text?: string;
      tool?: string;
      input?: Record<string, unknown>;
      id?: string;
    } & TurnOptionsInput);

/** A script as written: `{"turns":[{"tool":"Bash","input":{…}},{"text":"done"}]}`. */
export interface ScriptInput {
  turns: ScriptTurnInput[];
  final?: string;
  aux?: string;
  subagent?: string;
}

export type ScriptBlock =
  | { type: 'text'; text: string }
  | { type: 'tool_use'; name: string; input: Record<string, unknown>; id?: string }
  | { type: 'thinking'; thinking: string; signature?: string };

export interface ScriptUsage {
  input_tokens?: number;
  output_tokens?: number;
  cache_creation_input_tokens?: number;
  cache_read_input_tokens?: number;
}

export interface ScriptTurn {
  blocks: ScriptBlock[];
  usage?: ScriptUsage;
  delayMs?: number;
}

export interface Script {
  turns: ScriptTurn[];
  /** Answered when the turns ran out. */
  final: string;
  /** Answered to auxiliary requests. */
  aux: string;
  /** Answered by sub-agents. */
  subagent: string;
}

export const DEFAULT_FINAL_TEXT = 'Done.';
export const DEFAULT_AUX_TEXT = 'Scripted session';
export const DEFAULT_SUBAGENT_TEXT = 'Sub-agent finished.';

function blockOf(b: BlockOut): ScriptBlock {
  if ('tool' in b) return { type: 'tool_use', name: b.tool, input: b.input, ...(b.id ? { id: b.id } : {}) };
  if ('thinking' in b) {
    return { type: 'thinking', thinking: b.thinking, ...(b.signature ? { signature: b.signature } : {}) };
  }
  return { type: 'text', text: b.text };
}

function turnOf(t: TurnOut): ScriptTurn {
  let blocks: ScriptBlock[];
  if ('blocks' in t) {
    blocks = t.blocks.map(blockOf);
  } else {
    blocks = [];
    if (t.thinking !== undefined) blocks.push({ type: 'thinking', thinking: t.thinking });
    if (t.text !== undefined) blocks.push({ type: 'text', text: t.text });
    if (t.tool !== undefined) {
      blocks.push({ type: 'tool_use', name: t.tool, input: t.input ?? {}, ...(t.id ? { id: t.id } : {}) });
    }
  }
  return {
    blocks,
    ...(t.usage ? { usage: t.usage } : {}),
    ...(t.delayMs !== undefined ? { delayMs: t.delayMs } : {}),
  };
}

function describeIssues(err: z.ZodError): string {
  return err.issues
    .map((i) => {
      const where = i.path.length > 0 ? i.path.join('.') : '(script)';
      return `${where}: ${i.message}`;
    })
    .join('; ');
}

/**
 * Validates a script (an object, or its JSON text) and normalises every turn into blocks.
 * Throws INVALID_ARGUMENT naming the offending path, e.g. `turns.0.input: Expected object`.
 */
export function parseScript(input: unknown): Script {
  let value = input;
  if (typeof input === 'string') {
    try {
      value = JSON.parse(input) as unknown;
    } catch (e) {
      throw new AppError(
        'INVALID_ARGUMENT',
        `scripted model: the script is not JSON (${(e as Error).message}); pass e.g. {"turns":[{"text":"done"}]}`,
      );
    }
  }
  const parsed = scriptSchema.safeParse(value);
  if (!parsed.success) {
    throw new AppError(
      'INVALID_ARGUMENT',
      `scripted model: invalid script: ${describeIssues(parsed.error)} (turns look like {"tool":"Bash","input":{…}}, {"text":"…"} or {"blocks":[…]})`,
    );
  }
  return {
    turns: parsed.data.turns.map(turnOf),
    final: parsed.data.final ?? DEFAULT_FINAL_TEXT,
    aux: parsed.data.aux ?? DEFAULT_AUX_TEXT,
    subagent: parsed.data.subagent ?? DEFAULT_SUBAGENT_TEXT,
  };
}
