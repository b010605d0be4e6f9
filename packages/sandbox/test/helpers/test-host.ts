/**
 * A throw-away hako host environment for privileged tests: its own HAKO_ENV, state and run
 * directories, bridge, subnet and proxy ports, so tests never touch each other or a real hako.
 * teardown() removes everything the environment could have created, and leftovers() lists what is
 * still there (a test asserts it is empty).
 */
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../../..');
export const HAKO_BIN = join(REPO_ROOT, 'packages/cli/bin/hako.js');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface TestHost {
  readonly hakoEnv: string;
  readonly env: Record<string, string>;
  readonly stateDir: string;
  readonly runDir: string;
  readonly bridge: string;
  readonly subnet: string;
  readonly gateway: string;
  readonly proxyPort: number;
  /** Runs the real `hako` CLI with this environment. */
  cli(
    args: string[],
    opts?: { input?: string; extraEnv?: Record<string, string>; timeoutMs?: number },
  ): Promise<CliResult>;
  teardown(): Promise<void>;
  leftovers(): string[];
}

/** Runs a host tool; its stdout, or '' when it fails. */
export function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch {
    return '';
  }
}

/** The mount points of every cgroup hierarchy (v1 and v2) on this host. */
export function cgroupRoots(): string[] {
  const roots: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const parts = line.split(' ');
    const fstype = parts[parts.indexOf('-') + 1];
    if ((fstype === 'cgroup' || fstype === 'cgroup2') && parts[4]) roots.push(parts[4]);
  }
  return roots;
}

export function createTestHost(opts: { volume?: string } = {}): TestHost {
  if (!existsSync(join(REPO_ROOT, 'packages/cli/dist/main.js'))) {
    throw new Error('packages/cli is not built: run `bash scripts/setup` (npm test does)');
  }
  const tag = randomBytes(4).toString('hex').slice(0, 6);
  const hakoEnv = `t${tag}`;
  const stateDir = `/var/tmp/hako-test-${tag}`;
  const runDir = `/run/hako-test-${tag}`;
  const bridge = `hkt${tag.slice(0, 5)}`;
  const a = randomInt(200, 250);
  const b = randomInt(0, 256);
  const subnet = `10.${a}.${b}.0/24`;
  const gateway = `10.${a}.${b}.1`;
  const proxyPort = randomInt(20000, 30000);
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    HAKO_ENV: hakoEnv,
    HAKO_STATE_DIR: stateDir,
    HAKO_RUN_DIR: runDir,
    HAKO_BRIDGE: bridge,
    CNI_SUBNET: subnet,
    HAKO_PROXY_PORT: String(proxyPort),
    HAKO_PROXY_PORT_COUNT: '4',
    HAKO_QUOTA_VOLUME_SIZE: opts.volume ?? '2g',
    HAKO_LOG_LEVEL: 'warn',
  };

  const cli: TestHost['cli'] = (args, o = {}) =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [HAKO_BIN, ...args], {
        env: { ...env, ...o.extraEnv },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 120_000);
      child.on('error', reject);
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout, stderr });
      });
      child.stdin.end(o.input ?? '');
    });

  const leftovers = (): string[] => {
    const left: string[] = [];
    const prefix = `hako-${hakoEnv}-`;
    if (existsSync('/run/netns')) {
      for (const n of readdirSync('/run/netns')) if (n.startsWith(prefix)) left.push(`netns ${n}`);
    }
    if (sh('ip', ['-o', 'link', 'show', bridge]).trim()) left.push(`bridge ${bridge}`);
    const tables = sh('nft', ['list', 'tables']);
    if (tables.includes(`hako_${hakoEnv}`)) left.push(`nftables hako_${hakoEnv}`);
    for (const root of cgroupRoots()) {
      const p = join(root, 'hako', hakoEnv);
      if (existsSync(p)) left.push(`cgroup ${p}`);
    }
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8');
    if (mounts.includes(stateDir)) left.push(`mount under ${stateDir}`);
    if (sh('losetup', ['-j', join(stateDir, 'volume.img')]).trim()) left.push('loop device');
    if (existsSync(stateDir)) left.push(`dir ${stateDir}`);
    if (existsSync(runDir)) left.push(`dir ${runDir}`);
    const ps = sh('ps', ['-eo', 'pid,args']);
    for (const line of ps.split('\n'))
      if (line.includes(runDir) || line.includes(prefix)) left.push(`process ${line.trim()}`);
    return left;
  };

  const teardown = async (): Promise<void> => {
    await cli(['gc']).catch(() => undefined);
    for (const t of [`inet hako_${hakoEnv}`, `bridge hako_${hakoEnv}`]) {
      sh('nft', ['delete', 'table', ...t.split(' ')]);
    }
    sh('ip', ['link', 'delete', bridge]);
    if (existsSync('/run/netns')) {
      for (const n of readdirSync('/run/netns'))
        if (n.startsWith(`hako-${hakoEnv}-`)) sh('ip', ['netns', 'delete', n]);
    }
    for (const root of cgroupRoots()) {
      const p = join(root, 'hako', hakoEnv);
      if (!existsSync(p)) continue;
      // deepest first
      const dirs = sh('find', [p, '-depth', '-type', 'd']).split('\n').filter(Boolean);
      for (const d of dirs) sh('rmdir', [d]);
    }
    const data = join(stateDir, 'data');
    for (let i = 0; i < 3 && readFileSync('/proc/self/mountinfo', 'utf8').includes(data); i++)
      sh('umount', [data]);
    for (const line of sh('losetup', ['-j', join(stateDir, 'volume.img')]).split('\n')) {
      const dev = line.split(':')[0];
      if (dev) sh('losetup', ['-d', dev]);
    }
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(runDir, { recursive: true, force: true });
  };

  return { hakoEnv, env, stateDir, runDir, bridge, subnet, gateway, proxyPort, cli, teardown, leftovers };
}
