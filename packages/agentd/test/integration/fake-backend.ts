/**
 * A fake AgentBackend for testing the gRPC layer above the real one (the real one is SandboxManager).
 * It records every call, checks each input against the boundary's rules with its own independent
 * predicates (anything that should have been refused before reaching a backend lands in
 * `violations`), and runs fake processes whose output, stdin and signals the tests drive.
 */
import { PassThrough, Readable } from 'node:stream';
import type {
  AgentBackend,
  CreateInput,
  ExecExitInfo,
  ExecHandle,
  ExecInput,
  GcResult,
  ImageInfo,
  InvokeInput,
  InvokeOutput,
  NodeInfo,
  PullProgressInfo,
  SandboxInfo,
  SandboxMetrics,
} from '../../src/backend.js';

const OWNER = /^[A-Za-z0-9._:@-]{1,128}$/;
const SANDBOX = /^[a-z0-9]{8,32}$/;
const ENV = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** A fake running process. stdout may be replaced by a custom Readable (e.g. a generator). */
export class FakeProc {
  readonly pid: number;
  readonly stdout: Readable;
  readonly stderr = new PassThrough();
  readonly stdin: PassThrough | undefined;
  readonly signals: string[] = [];
  finished = false;
  stdinEnded = false;
  readonly stdinData: Buffer[] = [];
  private resolveExit!: (e: ExecExitInfo) => void;
  private readonly exitInfo: Promise<ExecExitInfo>;
  readonly handle: ExecHandle;

  constructor(opts: { pid: number; stdin: boolean; stdout?: Readable; collectStdin?: boolean }) {
    this.pid = opts.pid;
    this.stdout = opts.stdout ?? new PassThrough();
    this.stdin = opts.stdin ? new PassThrough() : undefined;
    if (this.stdin && opts.collectStdin !== false) {
      this.stdin.on('data', (c: Buffer) => this.stdinData.push(c));
      this.stdin.on('end', () => (this.stdinEnded = true));
    }
    this.exitInfo = new Promise((r) => (this.resolveExit = r));
    const ended = (s: Readable): Promise<void> =>
      new Promise((r) => {
        if (s.readableEnded) r();
        else s.once('end', () => r());
      });
    const exit = Promise.all([this.exitInfo, ended(this.stdout), ended(this.stderr)]).then(([e]) => e);
    this.handle = {
      pid: this.pid,
      stdout: this.stdout,
      stderr: this.stderr,
      stdin: this.stdin,
      signal: (sig: string) => this.onSignal(sig),
      exit,
    };
  }

  /** Default signal handling: record; TERM, INT and KILL end the process. */
  onSignal(sig: string): void {
    this.signals.push(sig);
    const n = { TERM: 15, SIGTERM: 15, INT: 2, SIGINT: 2, KILL: 9, SIGKILL: 9, '9': 9, '15': 15 }[sig];
    if (n !== undefined) {
      const name = n === 9 ? 'SIGKILL' : n === 15 ? 'SIGTERM' : 'SIGINT';
      this.finish({ code: 128 + n, signal: name, limitKilled: false, reason: 'signaled' });
    }
  }

  /**
   * The process exits: ends stdout/stderr (a PassThrough stdout; a custom one ends by itself) and
   * lets `exit` resolve once they are read.
   */
  finish(info: ExecExitInfo): void {
    if (this.finished) return;
    this.finished = true;
    if (this.stdout instanceof PassThrough) this.stdout.end();
    this.stderr.end();
    this.resolveExit(info);
  }
}

export interface FakeOptions {
  /** Builds the process for an exec; default: prints "ran <argv>" and exits 0. */
  exec?: (input: ExecInput, pid: number) => FakeProc | Promise<FakeProc>;
}

export class FakeBackend implements AgentBackend {
  readonly calls: { method: string; args: unknown[] }[] = [];
  readonly violations: string[] = [];
  readonly procs: FakeProc[] = [];
  /** Thrown (or rejected) by the next call of any method, then cleared. */
  failNext: Error | undefined;
  execImpl: NonNullable<FakeOptions['exec']>;
  writeFilesImpl: (tar: Readable) => Promise<{ files: number; bytes: number }> = async (tar) => {
    let bytes = 0;
    for await (const c of tar) bytes += (c as Buffer).length;
    return { files: 1, bytes };
  };
  readFilesImpl: () => Readable = () => Readable.from([Buffer.from('tar bytes')]);
  pullImpl: (onProgress: (p: PullProgressInfo) => void, signal: AbortSignal) => Promise<ImageInfo> = (
    onProgress,
  ) => {
    onProgress({ phase: 'resolving' });
    onProgress({ phase: 'blob', digest: 'sha256:aa', bytesDone: 5, bytesTotal: 10 });
    return Promise.resolve({ name: 'reg.local/x:1', digest: 'sha256:bb' });
  };
  private nextPid = 1000;

  constructor(opts: FakeOptions = {}) {
    this.execImpl =
      opts.exec ??
      ((input, pid) => {
        const p = new FakeProc({ pid, stdin: input.stdin });
        setImmediate(() => {
          (p.stdout as PassThrough).write(`ran ${input.argv.join(' ')}\n`);
          p.finish({ code: 0, signal: '', limitKilled: false, reason: 'exited' });
        });
        return p;
      });
  }

  callsTo(method: string): number {
    return this.calls.filter((c) => c.method === method).length;
  }

  private enter(method: string, ...args: unknown[]): void {
    this.calls.push({ method, args });
    const f = this.failNext;
    if (f) {
      this.failNext = undefined;
      throw f;
    }
  }

  private expect(ok: boolean, what: string): void {
    if (!ok) this.violations.push(what);
  }

  private checkOwnerAndId(method: string, owner: string, id: string): void {
    this.expect(OWNER.test(owner), `${method}: owner ${JSON.stringify(owner).slice(0, 60)}`);
    this.expect(SANDBOX.test(id), `${method}: sandbox id ${JSON.stringify(id).slice(0, 60)}`);
  }

  private checkStrings(
    method: string,
    what: string,
    rec: Readonly<Record<string, string>>,
    key: RegExp,
  ): void {
    for (const [k, v] of Object.entries(rec)) {
      this.expect(key.test(k), `${method}: ${what} key ${JSON.stringify(k).slice(0, 60)}`);
      this.expect(!v.includes('\0'), `${method}: ${what} value with NUL`);
    }
  }

  sandbox(ownerId: string, id: string): SandboxInfo {
    return {
      id,
      ownerId,
      image: 'host',
      imageDigest: 'sha256:00',
      labels: { a: 'b' },
      state: 'running',
      limits: { cpus: 1, memoryBytes: 512 << 20, pids: 256, diskBytes: 1 << 30, tmpBytes: 64 << 20 },
      network: 'none',
      ipAddress: undefined,
      createdAtMs: 1_700_000_000_000,
      lastActiveAtMs: 1_700_000_000_001,
      expiresAtMs: 1_700_000_360_000,
      fromPool: true,
      upstreams: [],
    };
  }

  async createSandbox(input: CreateInput): Promise<SandboxInfo> {
    this.enter('createSandbox', input);
    this.expect(OWNER.test(input.ownerId), 'createSandbox: owner');
    this.expect(input.image.length > 0 && !/\s/.test(input.image), 'createSandbox: image');
    this.expect(input.network === 'none' || input.network === 'egress', 'createSandbox: network');
    this.checkStrings('createSandbox', 'env', input.env, ENV);
    this.checkStrings('createSandbox', 'labels', input.labels, /^[A-Za-z0-9]/);
    for (const v of Object.values(input.limits)) {
      this.expect(v === undefined || (Number.isFinite(v) && v >= 0), `createSandbox: limit ${v}`);
    }
    if (input.network === 'none') {
      this.expect(
        input.egressAllow.length === 0 && input.upstreams.length === 0,
        'createSandbox: egress w/o net',
      );
    }
    return Promise.resolve(this.sandbox(input.ownerId, 'abcdef123456'));
  }

  async getSandbox(ownerId: string, id: string): Promise<SandboxInfo> {
    this.enter('getSandbox', ownerId, id);
    this.checkOwnerAndId('getSandbox', ownerId, id);
    return Promise.resolve(this.sandbox(ownerId, id));
  }

  async listSandboxes(ownerId: string, selector: Readonly<Record<string, string>>): Promise<SandboxInfo[]> {
    this.enter('listSandboxes', ownerId, selector);
    this.expect(OWNER.test(ownerId), 'listSandboxes: owner');
    this.checkStrings('listSandboxes', 'selector', selector, /^[A-Za-z0-9]/);
    return Promise.resolve([this.sandbox(ownerId, 'abcdef123456')]);
  }

  async destroySandbox(ownerId: string, id: string): Promise<void> {
    this.enter('destroySandbox', ownerId, id);
    this.checkOwnerAndId('destroySandbox', ownerId, id);
    return Promise.resolve();
  }

  async exec(input: ExecInput): Promise<ExecHandle> {
    this.enter('exec', input);
    this.checkOwnerAndId('exec', input.ownerId, input.sandboxId);
    this.expect(input.argv.length > 0 && input.argv[0] !== '', 'exec: argv');
    this.expect(
      input.argv.every((a) => !a.includes('\0')),
      'exec: argv NUL',
    );
    this.checkStrings('exec', 'env', input.env, ENV);
    this.expect(input.cwd === '' || input.cwd.startsWith('/'), 'exec: cwd');
    this.expect(!/^0(:|$)|:0$/.test(input.user), 'exec: root user');
    const p = await this.execImpl(input, this.nextPid++);
    this.procs.push(p);
    return p.handle;
  }

  async writeFiles(
    ownerId: string,
    id: string,
    destDir: string,
    tar: Readable,
  ): Promise<{ files: number; bytes: number }> {
    this.enter('writeFiles', ownerId, id, destDir);
    this.checkOwnerAndId('writeFiles', ownerId, id);
    this.expect(!destDir.includes('\0'), 'writeFiles: destDir NUL');
    return this.writeFilesImpl(tar);
  }

  async readFiles(ownerId: string, id: string, paths: readonly string[]): Promise<Readable> {
    this.enter('readFiles', ownerId, id, paths);
    this.checkOwnerAndId('readFiles', ownerId, id);
    this.expect(
      paths.every((p) => p !== '' && !p.includes('\0')),
      'readFiles: paths',
    );
    return Promise.resolve(this.readFilesImpl());
  }

  async invokeWorker(input: InvokeInput): Promise<InvokeOutput> {
    this.enter('invokeWorker', input);
    // container_id, or (seed compatibility) only ip_address: the target rules decide later
    if (input.containerId === '') {
      this.expect(input.ipAddress !== '', 'invokeWorker: neither container_id nor ip_address');
      this.expect(
        OWNER.test(input.ownerId),
        `invokeWorker: owner ${JSON.stringify(input.ownerId).slice(0, 60)}`,
      );
    } else this.checkOwnerAndId('invokeWorker', input.ownerId, input.containerId);
    this.expect(input.port >= 0 && input.port <= 65535, 'invokeWorker: port');
    this.expect(
      Object.entries(input.headers).every(
        ([k, v]) => /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(k) && !/[\r\n]/.test(v),
      ),
      'invokeWorker: headers',
    );
    return Promise.resolve({
      statusCode: 200,
      headers: { 'content-type': 'text/plain' },
      body: input.body,
      durationMs: 3,
    });
  }

  async garbageCollect(prefix: string, dryRun: boolean): Promise<GcResult> {
    this.enter('garbageCollect', prefix, dryRun);
    this.expect(/^[a-z][a-z0-9]{0,15}$/.test(prefix), 'garbageCollect: prefix');
    return Promise.resolve({
      removed: [{ name: 'hako-t-x', kinds: ['netns'] }],
      failed: [],
      kept: ['hako-t-y'],
    });
  }

  async pauseSandbox(ownerId: string, id: string): Promise<SandboxInfo> {
    this.enter('pauseSandbox', ownerId, id);
    this.checkOwnerAndId('pauseSandbox', ownerId, id);
    return Promise.resolve({ ...this.sandbox(ownerId, id), state: 'paused' });
  }

  async resumeSandbox(ownerId: string, id: string): Promise<SandboxInfo> {
    this.enter('resumeSandbox', ownerId, id);
    this.checkOwnerAndId('resumeSandbox', ownerId, id);
    return Promise.resolve(this.sandbox(ownerId, id));
  }

  async getSandboxMetrics(ownerId: string, id: string): Promise<SandboxMetrics> {
    this.enter('getSandboxMetrics', ownerId, id);
    this.checkOwnerAndId('getSandboxMetrics', ownerId, id);
    return Promise.resolve({
      memoryCurrentBytes: 1,
      memoryMaxBytes: 2,
      memoryPeakBytes: 3,
      oomKills: 0,
      cpuUsageNs: 4,
      pidsCurrent: 5,
      pidsLimit: 6,
      diskUsedBytes: 7,
      diskLimitBytes: 8,
      exitCode: undefined,
    });
  }

  async pullImage(
    reference: string,
    auth: { username: string; password: string } | undefined,
    onProgress: (p: PullProgressInfo) => void,
    signal: AbortSignal,
  ): Promise<ImageInfo> {
    this.enter('pullImage', reference, auth);
    this.expect(reference !== '' && !/\s/.test(reference), 'pullImage: reference');
    return this.pullImpl(onProgress, signal);
  }

  async listImages(): Promise<ImageInfo[]> {
    this.enter('listImages');
    return Promise.resolve([{ name: 'host', digest: 'sha256:00' }]);
  }

  async removeImage(reference: string): Promise<void> {
    this.enter('removeImage', reference);
    this.expect(reference !== '' && !/\s/.test(reference), 'removeImage: reference');
    return Promise.resolve();
  }

  async getNodeInfo(): Promise<NodeInfo> {
    this.enter('getNodeInfo');
    return Promise.resolve({
      version: '0.1.0-test',
      hostname: 'fake-node',
      runtime: 'crun',
      cgroupVersion: 1,
      cpus: 2,
      memoryBytes: 4 << 30,
      sandboxes: 3,
      sandboxesWarm: 2,
      maxSandboxes: 1000,
      images: 1,
      cniSubnet: '10.209.0.0/23',
      env: 'test',
    });
  }
}
