/** A sandbox's lifecycle as a small state machine; the resources it holds are on its cleanup stack. */
import { AppError } from '@hako/core';
import { CleanupStack } from './cleanup-stack.js';
import type { NetworkAttachment, SandboxLimits } from './types.js';

export type SandboxState = 'creating' | 'running' | 'stopping' | 'gone' | 'failed';

const TRANSITIONS: Record<SandboxState, readonly SandboxState[]> = {
  creating: ['running', 'failed', 'stopping'],
  running: ['stopping'],
  stopping: ['gone', 'failed'],
  gone: [],
  failed: ['stopping', 'gone'],
};

export type NetworkMode = 'none' | 'egress';

export interface SandboxOptions {
  /** `host` or an imported image name/digest. */
  readonly image: string;
  readonly limits: SandboxLimits;
  readonly network: NetworkMode;
  /** Egress allowlist (`host:port` patterns); only meaningful with network `egress`. */
  readonly allow: readonly string[];
  /** Environment for processes, on top of PATH, HOME, LANG (and the proxy variables with egress). */
  readonly env: Readonly<Record<string, string>>;
  /** Caller labels, stored as OCI annotations `hako.label.{key}`. */
  readonly labels: Readonly<Record<string, string>>;
  /**
   * A host directory whose contents become /workspace. It is copied onto the quota volume before
   * the run and the result is mirrored back afterwards (see docs/security-model.md, "Disk").
   * Undefined: a fresh, empty workspace.
   */
  readonly workspaceDir?: string | undefined;
}

export class Sandbox {
  readonly id: string;
  /** `hako-{env}-{id}`: the name of every host resource this sandbox holds. */
  readonly name: string;
  readonly options: SandboxOptions;
  readonly cleanup = new CleanupStack();
  readonly createdAt = new Date();
  private _state: SandboxState = 'creating';
  network: NetworkAttachment | undefined;
  /** The workspace directory on the quota volume. */
  workspaceDir = '';
  /**
   * The host directory mounted read-only at /skills (inside the bundle directory, so the bundle's
   * cleanup step and the GC remove it with the bundle); only hakod writes it.
   */
  skillsDir = '';
  bundleDir = '';
  /** The sandbox cgroup's `cgroup.procs` files, for a runtime that joins instead of managing it. */
  cgroupProcs: readonly string[] = [];
  /** Set once the runtime's container is deleted, so cleanup does not ask the runtime again. */
  containerDeleted = false;
  /** The image's manifest digest (`host` for the built-in image). */
  imageDigest = '';
  /** The environment every process of the sandbox starts with (KEY=VALUE), as in its spec. */
  processEnv: readonly string[] = [];
  /** The sandbox cgroup's OOM-kill count when it was last read (to tell which exec an OOM hit). */
  oomKillsSeen = 0;

  constructor(id: string, name: string, options: SandboxOptions) {
    this.id = id;
    this.name = name;
    this.options = options;
  }

  get state(): SandboxState {
    return this._state;
  }

  transition(to: SandboxState): void {
    if (!TRANSITIONS[this._state].includes(to)) {
      throw new AppError(
        'SANDBOX_STATE_INVALID',
        `sandbox ${this.id} cannot go from ${this._state} to ${to}`,
      );
    }
    this._state = to;
  }
}
