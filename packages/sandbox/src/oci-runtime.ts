import { spawn, execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
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
   * Whether the container outlives run(): true when the runtime keeps it (runc's `run --keep`) so
   * delete() must follow; false when it is gone once run()'s process has exited.
   */
  readonly keepsContainerAfterRun: boolean;
  /** Whether run() and exec() join the sandbox's cgroups instead of the runtime managing them. */
  readonly joinsCgroups: boolean;
  /**
   * Runs the bundle's process in the foreground: create, start, wait. When keepsContainerAfterRun,
   * call delete() afterwards. The returned child is the runtime process; its exit code is the
   * container process's (128+n when killed by signal n). `cgroupProcs` are the `cgroup.procs` files
   * of the sandbox's cgroup (one per hierarchy): a runtime that does not manage cgroups itself
   * (see OciCliRuntime's joinCgroups) moves itself there before it starts; others ignore them.
   */
  run(id: string, bundle: string, stdio: StdioOptions, cgroupProcs?: readonly string[]): ChildProcess;
  /**
   * Creates and starts the bundle's process in the background and returns once it runs (`run
   * --detach`); the container then lives until kill()/delete(). Its stdio is /dev/null.
   * `cgroupProcs` as for run().
   */
  runDetached(id: string, bundle: string, cgroupProcs?: readonly string[]): Promise<void>;
  /** Creates the container (its init process waits for start()). Call start() next. */
  create(id: string, bundle: string): Promise<void>;
  start(id: string): Promise<void>;
  /**
   * Runs another process inside a created or running container; `processJson` is an OCI process
   * file. `cgroupProcs` as for run(). With `pidFile`, the runtime writes the process's host pid there
   * once it has started. The child's exit code is the process's (128+n when killed by signal n).
   */
  exec(
    id: string,
    processJson: string,
    stdio: StdioOptions,
    cgroupProcs?: readonly string[],
    pidFile?: string,
  ): ChildProcess;
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

/**
 * Moves the shell into every cgroup named before `--` (writing its pid to each cgroup.procs file),
 * then execs the command after it, so the runtime and everything it forks start inside them.
 * Arguments are positional parameters: nothing is interpolated into the script.
 */
const JOIN_CGROUPS_SCRIPT =
  'for f in "$@"; do shift; [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; done; exec "$@"';

export class OciCliRuntime implements Runtime {
  readonly name: RuntimeName;
  readonly keepsContainerAfterRun: boolean;
  private readonly binary: string;
  private readonly root: string;
  private readonly logger: Logger;
  readonly joinsCgroups: boolean;

  /**
   * `joinCgroups`: the runtime does not manage cgroups (crun's `--cgroup-manager=disabled`); run()
   * and exec() start it inside the sandbox's cgroups instead, so the container's processes live
   * directly in the cgroup that holds the limits. hako uses this for crun on cgroup v1, where the
   * OOM-kill counter is not hierarchical and crun (which has no `run --keep`) would remove the
   * runtime's child cgroup, and the counter with it, as soon as the process exits.
   */
  constructor(opts: {
    name: RuntimeName;
    binary?: string;
    root: string;
    logger: Logger;
    joinCgroups?: boolean;
  }) {
    this.name = opts.name;
    this.binary = opts.binary ?? opts.name;
    this.root = opts.root;
    this.logger = opts.logger;
    this.joinsCgroups = opts.joinCgroups ?? false;
    if (this.joinsCgroups && this.name === 'runc') {
      throw new AppError('INVALID_ARGUMENT', `runtime ${this.name} cannot run with cgroup management off`);
    }
    // only runc has `run --keep`: crun's and runsc's containers are deleted when run() returns
    this.keepsContainerAfterRun = this.name === 'runc';
  }

  private global(): string[] {
    // runsc needs to be told the netns comes from the spec and not to use its own network stack
    if (this.name === 'runsc') {
      return ['--root', this.root, ...(this.joinsCgroups ? ['--ignore-cgroups'] : [])];
    }
    if (this.joinsCgroups) return ['--root', this.root, '--cgroup-manager=disabled'];
    return ['--root', this.root];
  }

  /**
   * Global flags that depend on the bundle. runsc: a spec that joins an existing network namespace
   * (network egress) gets `--network sandbox` (use that namespace's interfaces); a spec with a new,
   * empty one gets `--network none` (gVisor's own loopback only).
   */
  private bundleFlags(bundle: string): string[] {
    if (this.name !== 'runsc') return [];
    const spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as {
      linux?: { namespaces?: { type: string; path?: string }[] };
    };
    const net = spec.linux?.namespaces?.find((n) => n.type === 'network');
    return ['--network', net?.path ? 'sandbox' : 'none'];
  }

  /** Spawns the runtime, inside the sandbox's cgroups first when they are joined (see constructor). */
  private spawnRuntime(
    args: string[],
    stdio: StdioOptions,
    cgroupProcs: readonly string[] | undefined,
  ): ChildProcess {
    if (!this.joinsCgroups) return spawn(this.binary, args, { stdio });
    if (!cgroupProcs || cgroupProcs.length === 0) {
      throw new AppError(
        'INVALID_ARGUMENT',
        `${this.name} runs without cgroup management: the sandbox's cgroup.procs files are required`,
      );
    }
    return spawn(
      '/bin/sh',
      ['-c', JOIN_CGROUPS_SCRIPT, 'hako-join', ...cgroupProcs, '--', this.binary, ...args],
      {
        stdio,
      },
    );
  }

  run(id: string, bundle: string, stdio: StdioOptions, cgroupProcs?: readonly string[]): ChildProcess {
    this.logger.debug({ id, bundle, runtime: this.name }, 'runtime run');
    const keep = this.keepsContainerAfterRun ? ['--keep'] : [];
    return this.spawnRuntime(
      [...this.global(), ...this.bundleFlags(bundle), 'run', ...keep, '--bundle', bundle, id],
      stdio,
      cgroupProcs,
    );
  }

  runDetached(id: string, bundle: string, cgroupProcs?: readonly string[]): Promise<void> {
    this.logger.debug({ id, bundle, runtime: this.name }, 'runtime run --detach');
    const child = this.spawnRuntime(
      [...this.global(), ...this.bundleFlags(bundle), 'run', '--detach', '--bundle', bundle, id],
      ['ignore', 'ignore', 'pipe'],
      cgroupProcs,
    );
    return new Promise((resolve, reject) => {
      let stderr = '';
      child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.once('error', (err) =>
        reject(
          new AppError('RUNTIME_UNAVAILABLE', `cannot start ${this.name}: ${err.message}`, { cause: err }),
        ),
      );
      // 'exit', not 'close': the container's init inherits the runtime's stdio, so the stderr pipe
      // stays open for the sandbox's life. Our end is closed once the runtime is done; the init's
      // end then only gets EPIPE.
      child.once('exit', (code) => {
        const done = (): void => {
          child.stderr?.destroy();
          if (code === 0) resolve();
          else {
            const msg = stderr.trim().split('\n').slice(-3).join(' ');
            reject(new AppError('RUNTIME_FAILED', `${this.name} run --detach failed (exit ${code}): ${msg}`));
          }
        };
        // let what the runtime wrote before it exited be read first
        setImmediate(done);
      });
    });
  }

  async create(id: string, bundle: string): Promise<void> {
    await run(this.binary, [...this.global(), ...this.bundleFlags(bundle), 'create', '--bundle', bundle, id]);
  }

  async start(id: string): Promise<void> {
    await run(this.binary, [...this.global(), 'start', id]);
  }

  exec(
    id: string,
    processJson: string,
    stdio: StdioOptions,
    cgroupProcs?: readonly string[],
    pidFile?: string,
  ): ChildProcess {
    const pid = pidFile ? ['--pid-file', pidFile] : [];
    return this.spawnRuntime(
      [...this.global(), 'exec', ...pid, '--process', processJson, id],
      stdio,
      cgroupProcs,
    );
  }

  async kill(id: string, signal: string, all = false): Promise<void> {
    let everyProcess = all;
    if (all && this.joinsCgroups && this.name === 'crun') {
      // without cgroup management crun's --all finds no processes (and says nothing). Every sandbox
      // has its own pid namespace: SIGKILL to its init kills every process in it.
      if (signal !== 'KILL' && signal !== 'SIGKILL' && signal !== '9') {
        throw new AppError(
          'INVALID_ARGUMENT',
          `${this.name} without cgroup management can signal every process only with KILL, not ${signal}`,
        );
      }
      everyProcess = false;
    }
    await run(this.binary, [...this.global(), 'kill', ...(everyProcess ? ['--all'] : []), id, signal]);
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
