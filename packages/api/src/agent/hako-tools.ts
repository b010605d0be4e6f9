/**
 * hako's own tools for the agent: an in-process MCP server named `hako` (the SDK's
 * createSdkMcpServer) whose tools run in the API process, not in the sandbox. Claude Code, running
 * in the sandbox through our custom spawn, reaches them over the SDK's control channel (its
 * stdin/stdout, i.e. hakod's Exec stream): no network and no credential is involved.
 *
 * `present_files({paths, description?})` marks workspace files to present to the user. A mark is
 * only recorded here; the file becomes presented when the run ends and its sync-back registered it
 * (RunStore.finishRun), and a marked path that is not a file then is reported in `done`.
 */
import { createSdkMcpServer, tool } from '@anthropic-ai/claude-agent-sdk';
import type { McpSdkServerConfigWithInstance } from '@anthropic-ai/claude-agent-sdk';
import { z } from 'zod/v4';
import { filePathProblem } from '../http/file-path.js';
import type { PresentMark } from '../types.js';
import { SANDBOX_WORKSPACE } from './options-builder.js';

/** The MCP server's name: its tools are `mcp__hako__…`. */
export const HAKO_MCP_SERVER = 'hako';
/** The present_files tool as Claude Code names it (for allowedTools). */
export const PRESENT_FILES_TOOL = `mcp__${HAKO_MCP_SERVER}__present_files`;
/** Paths one call may mark; descriptions are cut to this many characters. */
export const MAX_PRESENT_PATHS = 100;
export const MAX_PRESENT_DESCRIPTION_CHARS = 2000;
/** Marks one run may hold (distinct paths). */
export const MAX_PRESENT_MARKS = 1000;

/**
 * A path the agent gave, as a workspace path (`report.md`): relative to /workspace, or absolute
 * under it; a leading `./` is dropped. Answers the path, or why it was refused.
 */
export function presentedPath(given: string): { path: string } | { problem: string } {
  let p = given.trim();
  const root = `${SANDBOX_WORKSPACE}/`;
  if (p.startsWith(root)) p = p.slice(root.length);
  else if (p.startsWith('/')) return { problem: `is outside ${SANDBOX_WORKSPACE}` };
  while (p.startsWith('./')) p = p.slice(2);
  const problem = filePathProblem(p);
  if (problem === 'reserved') return { problem: 'is under .hako/ (hako state, never presented)' };
  if (problem !== undefined)
    return { problem: `is not a workspace file path (${problem.replace(/_/g, ' ')})` };
  return { path: p };
}

/** The marks of one run, in the order they were first made (a later mark of a path replaces it). */
export class PresentMarks {
  private readonly marks = new Map<string, PresentMark>();

  /** Records the marks; false (nothing recorded) when they would pass MAX_PRESENT_MARKS. */
  add(marks: readonly PresentMark[]): boolean {
    const fresh = marks.filter((m) => !this.marks.has(m.path)).length;
    if (this.marks.size + fresh > MAX_PRESENT_MARKS) return false;
    for (const m of marks) this.marks.set(m.path, m);
    return true;
  }

  list(): PresentMark[] {
    return [...this.marks.values()];
  }
}

type ToolResult = { content: { type: 'text'; text: string }[]; isError?: boolean };

function text(t: string, isError = false): ToolResult {
  return { content: [{ type: 'text', text: t }], ...(isError ? { isError: true } : {}) };
}

/** The present_files handler (exported for unit tests): validates every path, then marks them all. */
export function presentFiles(
  marks: PresentMarks,
  args: { paths: string[]; description?: string | undefined },
): Promise<ToolResult> {
  return Promise.resolve(presentFilesNow(marks, args));
}

function presentFilesNow(
  marks: PresentMarks,
  args: { paths: string[]; description?: string | undefined },
): ToolResult {
  const ok: string[] = [];
  const refused: string[] = [];
  for (const given of args.paths) {
    const r = presentedPath(given);
    if ('path' in r) ok.push(r.path);
    else refused.push(`${JSON.stringify(given.slice(0, 200))} ${r.problem}`);
  }
  if (refused.length > 0) {
    return text(
      `Nothing was marked. Give files inside ${SANDBOX_WORKSPACE} (relative paths such as report.md, or ${SANDBOX_WORKSPACE}/report.md): ${refused.join('; ')}`,
      true,
    );
  }
  const description = args.description?.trim().slice(0, MAX_PRESENT_DESCRIPTION_CHARS);
  const added = marks.add([...new Set(ok)].map((path) => (description ? { path, description } : { path })));
  if (!added) return text(`Nothing was marked: a run may present at most ${MAX_PRESENT_MARKS} files.`, true);
  return text(
    `Marked for the user: ${[...new Set(ok)].join(', ')}. They are presented when this turn ends, as the workspace holds them then; make sure they exist.`,
  );
}

/** The `hako` in-process MCP server of one run, recording present_files calls into `marks`. */
export function createHakoMcpServer(marks: PresentMarks): McpSdkServerConfigWithInstance {
  return createSdkMcpServer({
    name: HAKO_MCP_SERVER,
    version: '0.1.0',
    tools: [
      tool(
        'present_files',
        `Present workspace files to the user: the files you made for them (reports, charts, exports). Paths are relative to ${SANDBOX_WORKSPACE} (or absolute under it). The files are shown to the user as they are when your turn ends, so write them first.`,
        {
          paths: z
            .array(z.string().min(1).max(4096))
            .min(1)
            .max(MAX_PRESENT_PATHS)
            .describe('The files to present.'),
          description: z
            .string()
            .max(MAX_PRESENT_DESCRIPTION_CHARS)
            .optional()
            .describe('What the files are, in a sentence, for the user.'),
        },
        (args) => presentFiles(marks, args),
      ),
    ],
  });
}
