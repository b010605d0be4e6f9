/**
 * `hako exec CONVERSATION "PROMPT"`: runs the conversation's agent on a prompt and streams the
 * events of POST /v1/conversations/{id}/execute as they come, rendered for a person, or with
 * --json one JSON object per line. Ctrl-C aborts the request; hako-api sees the stream close and
 * cancels the run. Exit code 0 when the done event says completed, 1 otherwise, 130 on Ctrl-C.
 */
import type { EnvRecord } from '@hako/core';
import { apiClientFromEnv } from '../api-client.js';
import { processIo, reportError, reportUsage, useColor } from '../cli-io.js';
import type { CliIo } from '../cli-io.js';
import { readSseEvents, renderEvent } from '../event-render.js';
import type { SseEvent } from '../event-render.js';
import { parseFlags, UsageError } from '../flags.js';
import { EXEC_USAGE } from '../usage.js';

export type ExecRequest =
  { kind: 'help' } | { kind: 'exec'; conversationId: string; prompt: string; json: boolean };

/** The exit code of a Ctrl-C'd exec (128 + SIGINT), as shells report it. */
export const EXIT_INTERRUPTED = 130;

/** Parses `hako exec ...` (argv after `exec`); every problem is a UsageError. */
export function parseExec(argv: readonly string[]): ExecRequest {
  const { flags, rest } = parseFlags(
    argv,
    { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    { stopAtPositional: false },
  );
  if (flags.help === true) return { kind: 'help' };
  if (rest.length === 0) throw new UsageError('missing CONVERSATION and PROMPT');
  if (rest.length === 1) throw new UsageError('missing PROMPT (- reads it from stdin)');
  if (rest.length > 2) {
    throw new UsageError(`PROMPT is one argument: quote it ("${rest.slice(1).join(' ')}")`);
  }
  const prompt = rest[1] ?? '';
  if (prompt.trim() === '') throw new UsageError('PROMPT is empty');
  return { kind: 'exec', conversationId: rest[0] ?? '', prompt, json: flags.json === true };
}

async function readAll(input: AsyncIterable<Uint8Array | string>): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of input)
    parts.push(typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk));
  return Buffer.concat(parts).toString('utf8');
}

/** One event as --json prints it: its data (which carries type and seq), the type added if missing. */
export function eventJson(ev: SseEvent): string {
  const data = typeof ev.data.type === 'string' ? ev.data : { type: ev.event, ...ev.data };
  return JSON.stringify(data);
}

export async function exec(
  argv: readonly string[],
  env: EnvRecord,
  io: CliIo = processIo(),
): Promise<number> {
  let req: ExecRequest;
  try {
    req = parseExec(argv);
  } catch (e) {
    if (e instanceof UsageError) return reportUsage(io, 'exec', e.message, EXEC_USAGE);
    throw e;
  }
  if (req.kind === 'help') {
    io.stdout.write(EXEC_USAGE);
    return 0;
  }
  let prompt = req.prompt;
  if (prompt === '-') {
    prompt = io.stdin === undefined ? '' : (await readAll(io.stdin)).trim();
    if (prompt === '') return reportUsage(io, 'exec', 'the prompt read from stdin is empty', EXEC_USAGE);
  }

  const abort = new AbortController();
  let interrupted = false;
  const stopListening = io.onInterrupt(() => {
    interrupted = true;
    abort.abort();
  });
  const color = useColor(io.stdout, env);
  let done: Record<string, unknown> | undefined;
  try {
    const client = apiClientFromEnv(env);
    const body = await client.execute(req.conversationId, prompt, abort.signal);
    for await (const ev of readSseEvents(body as AsyncIterable<Uint8Array>)) {
      if (req.json) io.stdout.write(`${eventJson(ev)}\n`);
      else {
        const text = renderEvent(ev, { color });
        if (text !== undefined) io.stdout.write(`${text}\n`);
      }
      if (ev.event === 'done') {
        done = ev.data;
        // The server ends the stream after done; nothing after it matters.
        break;
      }
    }
  } catch (e) {
    if (interrupted) return interruptedExit(io);
    if (
      e instanceof TypeError &&
      done === undefined &&
      !(e.cause instanceof Error && e.cause.name === 'AbortError')
    ) {
      // fetch's body broke off (`TypeError: terminated`): the server or the connection went away.
      io.stderr.write(`hako: the stream from hako-api broke off before the run ended: ${describeCause(e)}\n`);
      io.stderr.write(
        `  the run may still be going: replay it with GET /v1/conversations/${req.conversationId}/events\n`,
      );
      return 1;
    }
    return reportError(io, e);
  } finally {
    stopListening();
  }
  if (interrupted) return interruptedExit(io);
  if (done === undefined) {
    io.stderr.write("hako: the event stream ended before the run's done event\n");
    io.stderr.write(`  replay what was stored with GET /v1/conversations/${req.conversationId}/events\n`);
    return 1;
  }
  return done.status === 'completed' ? 0 : 1;
}

function interruptedExit(io: CliIo): number {
  io.stderr.write('hako: interrupted: the stream was closed, so hako-api cancels the run\n');
  return EXIT_INTERRUPTED;
}

function describeCause(e: Error): string {
  const cause = e.cause;
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return typeof code === 'string' ? `${cause.message} (${code})` : cause.message;
  }
  return e.message;
}
