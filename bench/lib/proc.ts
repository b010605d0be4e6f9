/** Running host programs from a bench: timed runs and captured runs, argument arrays only. */
import { execFile, spawn } from 'node:child_process';

export interface ProcOptions {
  readonly env?: NodeJS.ProcessEnv | undefined;
  readonly cwd?: string | undefined;
  /** Kill the process after this long (default 60 s) and fail. */
  readonly timeoutMs?: number | undefined;
}

const STDERR_KEEP = 2000;

function tail(text: string): string {
  const t = text.trim();
  return t.length > STDERR_KEEP ? `…${t.slice(-STDERR_KEEP)}` : t;
}

/**
 * Runs `cmd args` with stdin and stdout ignored and returns its wall time in ms, from just before
 * spawn to the `close` event. A non-zero exit, a signal or a spawn error rejects with the command's
 * stderr in the message.
 */
export function timeCommand(cmd: string, args: readonly string[], opts: ProcOptions = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(cmd, args, { env: opts.env, cwd: opts.cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 64 * 1024) stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${cmd}: ${err.message}`));
    });
    child.once('close', (code, signal) => {
      const ms = performance.now() - started;
      clearTimeout(timer);
      if (code === 0) resolve(ms);
      else
        reject(
          new Error(
            `${cmd} ${args.join(' ')} ${signal ? `killed by ${signal}` : `exited ${code}`}: ${tail(stderr)}`,
          ),
        );
    });
  });
}

export interface Captured {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to completion and captures its output; rejects only when it cannot be spawned. */
export function capture(cmd: string, args: readonly string[], opts: ProcOptions = {}): Promise<Captured> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { env: opts.env, cwd: opts.cwd, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') {
          reject(new Error(`${cmd}: ${err.message}`));
          return;
        }
        resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
      },
    );
  });
}

/** Runs a command and returns its stdout; a non-zero exit rejects with its stderr. */
export async function run(cmd: string, args: readonly string[], opts: ProcOptions = {}): Promise<string> {
  const r = await capture(cmd, args, opts);
  if (r.code !== 0)
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${tail(r.stderr || r.stdout)}`);
  return r.stdout;
}

/** The first line of `cmd --version` (or the given args), or undefined when it cannot run. */
export async function versionOf(
  cmd: string,
  args: readonly string[] = ['--version'],
): Promise<string | undefined> {
  try {
    const r = await capture(cmd, args, { timeoutMs: 10_000 });
    if (r.code !== 0) return undefined;
    return (r.stdout || r.stderr).trim().split('\n')[0]?.trim();
  } catch {
    return undefined;
  }
}
