/**
 * The real AgentBackend: the sandbox manager plus the parts that live in their own modules
 * (workspace file transfer, InvokeWorker, images, node info).
 */
import { cpus, hostname, totalmem } from 'node:os';
import type { Readable } from 'node:stream';
import { AppError } from '@hako/core';
import { ensureImage } from '@hako/sandbox';
import type { LocalImageStore } from '@hako/sandbox';
import type {
  AgentBackend,
  CreateInput,
  ExecHandle,
  ExecInput,
  FilesTargetName,
  GcResult,
  ImageInfo,
  InvokeInput,
  InvokeOutput,
  NodeInfo,
  PullProgressInfo,
  SandboxInfo,
  SandboxMetrics,
} from './backend.js';
import { callWorker, resolveInvokeTarget } from './invoke-worker.js';
import type { InvokeNetwork, InvokeSandboxView } from './invoke-worker.js';
import type { SandboxManager } from './sandbox-manager.js';
import { readTarFromWorkspace, writeTarToWorkspace } from './workspace-files.js';
import { replaceSkillsDir } from './skills-files.js';
import type { FileTransferLimits } from './workspace-files.js';

export interface HakodBackendDeps {
  readonly manager: SandboxManager;
  readonly images: LocalImageStore;
  readonly version: string;
  readonly runtime: string;
  readonly cgroupVersion: number;
  readonly env: string;
  readonly network: InvokeNetwork;
  readonly maxSandboxes: number;
  readonly invokeMaxResponseBytes: number;
  readonly fileLimits: FileTransferLimits;
  readonly sandboxUid: number;
}

export class HakodBackend implements AgentBackend {
  private readonly d: HakodBackendDeps;

  constructor(deps: HakodBackendDeps) {
    this.d = deps;
  }

  async createSandbox(input: CreateInput): Promise<SandboxInfo> {
    // seed P2-1: pull only when the store says the image is not there; any other store error is
    // the answer, never hidden behind a pull
    await ensureImage(this.d.images, input.image);
    return this.d.manager.createSandbox(input);
  }

  getSandbox(ownerId: string, id: string): Promise<SandboxInfo> {
    return this.d.manager.getSandbox(ownerId, id);
  }

  listSandboxes(ownerId: string, selector: Readonly<Record<string, string>>): Promise<SandboxInfo[]> {
    return this.d.manager.listSandboxes(ownerId, selector);
  }

  destroySandbox(ownerId: string, id: string): Promise<void> {
    return this.d.manager.destroySandbox(ownerId, id);
  }

  exec(input: ExecInput): Promise<ExecHandle> {
    return this.d.manager.exec(input);
  }

  async writeFiles(
    ownerId: string,
    id: string,
    destDir: string,
    tar: Readable,
    target: FilesTargetName = 'workspace',
  ): Promise<{ files: number; bytes: number }> {
    if (target === 'skills') {
      const root = this.d.manager.skillsOf(ownerId, id);
      return replaceSkillsDir(root, destDir, tar, this.d.fileLimits);
    }
    const root = this.d.manager.workspaceOf(ownerId, id);
    const uid = this.d.sandboxUid;
    return writeTarToWorkspace(root, destDir, tar, { uid, gid: uid }, this.d.fileLimits);
  }

  readFiles(
    ownerId: string,
    id: string,
    paths: readonly string[],
    target: FilesTargetName = 'workspace',
  ): Promise<Readable> {
    const root =
      target === 'skills' ? this.d.manager.skillsOf(ownerId, id) : this.d.manager.workspaceOf(ownerId, id);
    return Promise.resolve(readTarFromWorkspace(root, paths, this.d.fileLimits));
  }

  async invokeWorker(input: InvokeInput): Promise<InvokeOutput> {
    const views = this.d.manager.claimed();
    const view = (v: (typeof views)[number]): InvokeSandboxView => ({
      id: v.id,
      ownerId: v.ownerId,
      ip: v.ip,
      running: v.running,
    });
    const target = resolveInvokeTarget(
      {
        ownerId: input.ownerId,
        containerId: input.containerId,
        ipAddress: input.ipAddress,
        port: input.port,
      },
      {
        byId: (id) => {
          const v = views.find((x) => x.id === id);
          return v && view(v);
        },
        byIp: (ip) => {
          const v = views.find((x) => x.ip === ip);
          return v && view(v);
        },
      },
      this.d.network,
    );
    this.d.manager.touch(target.sandboxId);
    const res = await callWorker(
      target,
      {
        method: input.method,
        path: input.path,
        headers: input.headers,
        body: input.body,
        timeoutMs: input.timeoutMs,
      },
      { maxResponseBytes: this.d.invokeMaxResponseBytes },
    );
    return { statusCode: res.statusCode, headers: res.headers, body: res.body, durationMs: res.durationMs };
  }

  garbageCollect(prefix: string, dryRun: boolean): Promise<GcResult> {
    return this.d.manager.garbageCollect(prefix, dryRun);
  }

  pauseSandbox(ownerId: string, id: string): Promise<SandboxInfo> {
    return this.d.manager.pauseSandbox(ownerId, id);
  }

  resumeSandbox(ownerId: string, id: string): Promise<SandboxInfo> {
    return this.d.manager.resumeSandbox(ownerId, id);
  }

  getSandboxMetrics(ownerId: string, id: string): Promise<SandboxMetrics> {
    return this.d.manager.getSandboxMetrics(ownerId, id);
  }

  async pullImage(
    reference: string,
    auth: { username: string; password: string } | undefined,
    onProgress: (p: PullProgressInfo) => void,
    signal: AbortSignal,
  ): Promise<ImageInfo> {
    const img = await this.d.images.pull(reference, { auth, onProgress, signal });
    return { name: img.name, digest: img.digest };
  }

  async listImages(): Promise<ImageInfo[]> {
    return (await this.d.images.list()).map((i) => ({ name: i.name, digest: i.digest }));
  }

  async removeImage(reference: string): Promise<void> {
    if (reference === 'host')
      throw new AppError('INVALID_ARGUMENT', 'the built-in image "host" cannot be removed');
    const img = await this.d.images.get(reference);
    if (this.d.manager.imageInUse(img.name) || this.d.manager.imageInUse(img.digest)) {
      throw new AppError(
        'IMAGE_IN_USE',
        `image ${reference} is used by a sandbox on this node; destroy it first`,
      );
    }
    await this.d.images.remove(reference);
  }

  async getNodeInfo(): Promise<NodeInfo> {
    const counts = this.d.manager.counts();
    return {
      version: this.d.version,
      hostname: hostname(),
      runtime: this.d.runtime,
      cgroupVersion: this.d.cgroupVersion,
      cpus: cpus().length,
      memoryBytes: totalmem(),
      sandboxes: counts.running + counts.paused + counts.stopping,
      sandboxesWarm: counts.warm,
      maxSandboxes: this.d.maxSandboxes,
      images: (await this.d.images.list()).length,
      cniSubnet: this.d.network.subnet,
      env: this.d.env,
    };
  }
}
