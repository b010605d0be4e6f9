/**
 * Baselines the sandbox bench compares hako with: a bare process spawn, the bare OCI runtimes on a
 * minimal bundle, `podman run --rm` of an equivalent locally built image, and Anthropic's
 * sandbox-runtime (bubblewrap). Each builder either returns a ready case or says why it is not
 * available; whatever it creates is undone through the cleanup stack it is given. Nothing here
 * touches the network: the image is imported from a local tarball (`--pull never`), podman runs
 * with `--network none`, and sandbox-runtime is configured with no allowed domains.
 */
import { access, chmod, constants, copyFile, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { crunUsable, findBinary } from '@hako/sandbox';
import type { CgroupLayout, CleanupStack } from '@hako/sandbox';
import type * as Srt from '@anthropic-ai/sandbox-runtime';
import { capture, run, timeCommand } from './lib/proc.js';
import type { BenchCase } from './lib/rounds.js';

export interface Unavailable {
  readonly name: string;
  readonly reason: string;
}

export type Built = BenchCase | Unavailable;

export function isUnavailable(b: Built): b is Unavailable {
  return 'reason' in b;
}

const BUSYBOX_CANDIDATES = ['/usr/bin/busybox', '/bin/busybox'];

/**
 * A root filesystem in `dir`/rootfs holding only the host's static busybox at /bin/busybox, with
 * /bin/true and /bin/sh links to it. Returns the rootfs path.
 */
export async function makeBusyboxRootfs(dir: string): Promise<string> {
  let busybox: string | undefined;
  for (const p of BUSYBOX_CANDIDATES) {
    if (
      await access(p, constants.X_OK).then(
        () => true,
        () => false,
      )
    ) {
      busybox = p;
      break;
    }
  }
  // it must be static (busybox-static): a dynamic one fails the probe run, which says so
  if (!busybox) throw new Error('no busybox (apt-get install -y busybox-static)');
  const rootfs = join(dir, 'rootfs');
  for (const d of ['bin', 'proc', 'dev', 'sys', 'tmp', 'etc'])
    await mkdir(join(rootfs, d), { recursive: true });
  await copyFile(busybox, join(rootfs, 'bin/busybox'));
  await chmod(join(rootfs, 'bin/busybox'), 0o755);
  await symlink('busybox', join(rootfs, 'bin/true'));
  await symlink('busybox', join(rootfs, 'bin/sh'));
  return rootfs;
}

/** `child_process.spawn('true')`: the floor for anything that starts a process. */
export function spawnCase(): BenchCase {
  return { name: 'spawn', critical: false, iterate: () => timeCommand('true', []) };
}

/**
 * Writes an OCI bundle around `rootfs` (a sibling directory): the runtime's own default spec
 * (`runc spec` / `crun spec`, namespaces as it gives them), read-only root, process /bin/true.
 */
async function writeBundle(bundle: string, specTool: string): Promise<void> {
  await run(specTool, ['spec'], { cwd: bundle });
  const path = join(bundle, 'config.json');
  const spec = JSON.parse(await readFile(path, 'utf8')) as {
    process: { terminal?: boolean; args?: string[] };
    root: { path: string; readonly?: boolean };
  };
  spec.process.terminal = false;
  spec.process.args = ['/bin/true'];
  spec.root = { path: 'rootfs', readonly: true };
  await writeFile(path, JSON.stringify(spec));
}

/**
 * `runc run` and `crun run` of the same minimal bundle (container deleted on exit), each with its
 * own state root under `workDir`. crun is probed first and reported unavailable with its reason
 * when it refuses this host.
 */
export async function runtimeCases(
  workDir: string,
  rootfs: string | Error,
  tag: string,
  layout: CgroupLayout,
  cleanup: CleanupStack,
): Promise<Built[]> {
  const names = ['runc', 'crun'] as const;
  const out: Built[] = [];
  if (rootfs instanceof Error) return names.map((n) => ({ name: n, reason: rootfs.message }));
  const bundle = dirname(rootfs);
  const binaries = new Map<string, string>();
  for (const n of names) {
    const b = await findBinary(n);
    if (b) binaries.set(n, b);
  }
  const specTool = binaries.get('runc') ?? binaries.get('crun');
  if (specTool) {
    try {
      await writeBundle(bundle, specTool);
    } catch (err) {
      return names.map((n) => ({ name: n, reason: `writing the bundle: ${(err as Error).message}` }));
    }
  }
  for (const name of names) {
    const bin = binaries.get(name);
    if (!bin) {
      out.push({ name, reason: `${name} not installed (apt-get install -y ${name})` });
      continue;
    }
    const root = join(workDir, `state-${name}`);
    await mkdir(root, { recursive: true, mode: 0o700 });
    cleanup.push(`${name} containers`, async () => {
      const ids = (await run(bin, ['--root', root, 'list', '-q']).catch(() => ''))
        .split('\n')
        .map((s) => s.trim())
        .filter(Boolean);
      for (const id of ids) await run(bin, ['--root', root, 'delete', '--force', id]);
    });
    let seq = 0;
    const once = (): Promise<number> =>
      timeCommand(bin, ['--root', root, 'run', '--bundle', bundle, `hb${tag}${name}${seq++}`]);
    try {
      await once();
    } catch (err) {
      const hint = name === 'crun' ? crunUsable(layout) : { ok: true };
      const why = hint.ok ? '' : ` (hako's check: ${hint.reason ?? ''}; fix: ${hint.fix ?? ''})`;
      out.push({ name, reason: `${name} run failed on this host: ${(err as Error).message}${why}` });
      continue;
    }
    out.push({ name, critical: false, iterate: once });
  }
  return out;
}

/**
 * `podman run --rm` of a local image built with `podman import` from the busybox root filesystem.
 * Never pulls (`--pull never`); the image is removed by the cleanup stack.
 */
export async function podmanCase(
  workDir: string,
  rootfs: string | Error,
  tag: string,
  cleanup: CleanupStack,
): Promise<Built> {
  const name = 'podman';
  if (rootfs instanceof Error) return { name, reason: rootfs.message };
  const podman = await findBinary('podman');
  if (!podman) return { name, reason: 'podman not installed (apt-get install -y podman)' };
  const image = `localhost/hako-bench-${tag}:latest`;
  const tarball = join(workDir, 'podman-image.tar');
  try {
    await run('tar', ['-C', rootfs, '-cf', tarball, '.']);
    cleanup.push('podman image', async () => {
      await run(podman, ['rmi', '--force', image]);
    });
    await run(podman, ['import', '--quiet', '--change', 'CMD ["/bin/true"]', tarball, image]);
  } catch (err) {
    return { name, reason: `building the local image: ${(err as Error).message}` };
  }
  const args = [
    'run',
    '--rm',
    '--pull',
    'never',
    '--network',
    'none',
    '--ulimit',
    'nofile=1024:1024',
    '--ulimit',
    'nproc=4096:4096',
    image,
    '/bin/true',
  ];
  const once = (): Promise<number> => timeCommand(podman, args);
  try {
    await once();
  } catch (err) {
    return { name, reason: `podman run failed: ${(err as Error).message}` };
  }
  return { name, critical: false, iterate: once };
}

/** sandbox-runtime's settings: no allowed domains (no network at all), no extra writable paths. */
const SRT_SETTINGS = {
  network: { allowedDomains: [], deniedDomains: [] },
  filesystem: { denyRead: [], allowWrite: [], denyWrite: [] },
};

/**
 * sandbox-runtime (`@anthropic-ai/sandbox-runtime`, bubblewrap on Linux), two ways:
 * - `srt`: the library, initialized once in this process (its proxies up), then per iteration
 *   wrapWithSandboxArgv('true') and running the result: what a long-lived host pays per command,
 *   comparable with hako's one-shot through the library.
 * - `srt_cli`: the whole `srt --settings … -- true` process, comparable with hako's CLI.
 * Before measuring, a wrapped `cat /proc/net/dev` must show only the loopback interface.
 */
export async function srtCases(workDir: string, cleanup: CleanupStack): Promise<Built[]> {
  const names = ['srt', 'srt_cli'];
  const fail = (reason: string): Built[] => names.map((n) => ({ name: n, reason }));
  for (const tool of ['bwrap', 'socat']) {
    if (!(await findBinary(tool)))
      return fail(`${tool} not installed (apt-get install -y ${tool === 'bwrap' ? 'bubblewrap' : tool})`);
  }
  let mod: typeof Srt;
  let pkgDir: string;
  try {
    mod = await import('@anthropic-ai/sandbox-runtime');
    pkgDir = dirname(createRequire(import.meta.url).resolve('@anthropic-ai/sandbox-runtime/package.json'));
  } catch (err) {
    return fail(`@anthropic-ai/sandbox-runtime cannot be loaded (npm install): ${(err as Error).message}`);
  }
  const { SandboxManager } = mod;
  const deps = SandboxManager.checkDependencies();
  if (deps.errors.length > 0) return fail(`sandbox-runtime dependencies: ${deps.errors.join('; ')}`);
  try {
    cleanup.push('sandbox-runtime', () => SandboxManager.reset());
    await SandboxManager.initialize(SRT_SETTINGS);
  } catch (err) {
    return fail(`sandbox-runtime initialize: ${(err as Error).message}`);
  }
  const wrapped = async (cmd: string): Promise<{ file: string; args: string[]; env: NodeJS.ProcessEnv }> => {
    const { argv, env } = await SandboxManager.wrapWithSandboxArgv(cmd);
    const [file, ...args] = argv;
    if (!file) throw new Error('sandbox-runtime returned an empty argv');
    return { file, args, env };
  };
  try {
    const probe = await wrapped('cat /proc/net/dev');
    const r = await capture(probe.file, probe.args, { env: probe.env, cwd: workDir });
    const ifaces = r.stdout
      .split('\n')
      .slice(2)
      .map((l) => l.split(':')[0]?.trim())
      .filter(Boolean);
    if (r.code !== 0) return fail(`sandbox-runtime probe exited ${r.code}: ${r.stderr.trim()}`);
    if (ifaces.join(',') !== 'lo')
      return fail(`sandbox-runtime left network interfaces visible: ${ifaces.join(', ')}`);
  } catch (err) {
    return fail(`sandbox-runtime probe: ${(err as Error).message}`);
  }
  const libCase: BenchCase = {
    name: 'srt',
    critical: false,
    iterate: async () => {
      const started = performance.now();
      const w = await wrapped('true');
      await timeCommand(w.file, w.args, { env: w.env, cwd: workDir });
      return performance.now() - started;
    },
  };
  const pkg = JSON.parse(await readFile(join(pkgDir, 'package.json'), 'utf8')) as {
    bin?: Record<string, string>;
  };
  const cliPath = pkg.bin?.srt ? join(pkgDir, pkg.bin.srt) : undefined;
  if (!cliPath) return [libCase, { name: 'srt_cli', reason: 'sandbox-runtime has no srt binary' }];
  const settings = join(workDir, 'srt-settings.json');
  await writeFile(settings, JSON.stringify(SRT_SETTINGS));
  const cliOnce = (): Promise<number> =>
    timeCommand(process.execPath, [cliPath, '--settings', settings, '--', 'true'], { cwd: workDir });
  try {
    await cliOnce();
  } catch (err) {
    return [libCase, { name: 'srt_cli', reason: `srt CLI failed: ${(err as Error).message}` }];
  }
  return [libCase, { name: 'srt_cli', critical: false, iterate: cliOnce }];
}
