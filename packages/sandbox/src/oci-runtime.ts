import { spawn, execFile } from 'node:child_process';
import type { ChildProcess, StdioOptions } from 'node:child_process';
import { AppError } from '@hako/core';
import type { Logger } from '@hako/core';

export type RuntimeName = 'crun' | 'runc' | 'runsc';

export interface ContainerState {
  readonly id: string;
  readonly status: 'creating' | 'created' | 'running' | 'paused' | 'stopped';
  readonly pid: number;
  readonly bundle: string;
  readonly annotations: Readonly<Record<string, string>>;
}

/**
 * An OCI runtime driven through its command line (crun, runc and runsc share it).
 * Containers live under `root`, a state directory of this env only.
 */
export interface Runtime {
  readonly name: RuntimeName;
  /**
   * Runs the bundle's process in the foreground: create, start, wait. The container is kept after
   * it exits (so its cgroup counters can be read): call delete() afterwards. The returned child is
   * the runtime process; its exit code is the container process's (128+n when killed by signal n).
   */
  run(id: string, bundle: string, stdio: StdioOptions): ChildProcess;
  /** Creates the container (its init process waits for start()). Call start() next. */
  create(id: string, bundle: string): Promise<void>;
  start(id: string): Promise<void>;
  /** Runs another process inside a created or running container; `processJson` is an OCI process file. */
  exec(id: string, processJson: string, stdio: StdioOptions): ChildProcess;
  /** Sends a signal to the init process, or with `all` to every process of the container. */
  kill(id: string, signal: string, all?: boolean): Promise<void>;
  /** Deletes the container. With `force`, kills it first. A container that does not exist is not an error. */
  delete(id: string, force?: boolean): Promise<void>;
  /** The container's state, or undefined when it does not exist. */
  state(id: string): Promise<ContainerState | undefined>;
  /** Every container under this runtime root. */
  list(): Promise<ContainerState[]>;
}

function run(binary: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(binary, args, { maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const msg = (stderr || err.message).trim().split('\n').slice(-3).join(' ');
        reject(
          new AppError('RUNTIME_FAILED', `${binary} ${args[2] ?? args[0] ?? ''} failed: ${msg}`, {
            cause: err,
          }),
        );
      } else resolve(stdout);
    });
  });
}

const NOT_EXIST = /does not exist|not found|no such file/i;

export class OciCliRuntime implements Runtime {
  readonly name: RuntimeName;
  private readonly binary: string;
  private readonly root: string;
  private readonly logger: Logger;

  constructor(opts: { name: RuntimeName; binary?: string; root: string; logger: Logger }) {
    this.name = opts.name;
    this.binary = opts.binary ?? opts.name;
    this.root = opts.root;
    this.logger = opts.logger;
  }

  private global(): string[] {
    // runsc needs to be told the netns comes from the spec and not to use its own network stack
    return this.name === 'runsc' ? ['--root', this.root, '--network', 'sandbox'] : ['--root', this.root];
  }

  run(id: string, bundle: string, stdio: StdioOptions): ChildProcess {
    this.logger.debug({ id, bundle, runtime: this.name }, 'runtime run');
    return spawn(this.binary, [...this.global(), 'run', '--keep', '--bundle', bundle, id], { stdio });
  }

  async create(id: string, bundle: string): Promise<void> {
    await run(this.binary, [...this.global(), 'create', '--bundle', bundle, id]);
  }

  async start(id: string): Promise<void> {
    await run(this.binary, [...this.global(), 'start', id]);
  }

  exec(id: string, processJson: string, stdio: StdioOptions): ChildProcess {
    return spawn(this.binary, [...this.global(), 'exec', '--process', processJson, id], { stdio });
  }

  async kill(id: string, signal: string, all = false): Promise<void> {
    await run(this.binary, [...this.global(), 'kill', ...(all ? ['--all'] : []), id, signal]);
  }

  async delete(id: string, force = false): Promise<void> {
    try {
      await run(this.binary, [...this.global(), 'delete', ...(force ? ['--force'] : []), id]);
    } catch (err) {
      if (err instanceof AppError && NOT_EXIST.test(err.message)) return;
      throw err;
    }
  }

  async state(id: string): Promise<ContainerState | undefined> {
    try {
      return parseState(JSON.parse(await run(this.binary, [...this.global(), 'state', id])) as RawState);
    } catch (err) {
      if (err instanceof AppError && NOT_EXIST.test(err.message)) return undefined;
      throw err;
    }
  }

  async list(): Promise<ContainerState[]> {
    const out = (await run(this.binary, [...this.global(), 'list', '--format', 'json'])).trim();
    if (out === '' || out === 'null') return [];
    const raw = JSON.parse(out) as RawState[];
    return raw.map(parseState);
  }
}

interface RawState {
  id: string;
  status: ContainerState['status'];
  pid?: number;
  bundle: string;
  annotations?: Record<string, string> | null;
}

function parseState(r: RawState): ContainerState {
  return { id: r.id, status: r.status, pid: r.pid ?? 0, bundle: r.bundle, annotations: r.annotations ?? {} };
}
