// The cgroup v1 manager on this host's real hierarchies: limits written, enforced on real
// processes (pids, memory OOM, CPU quota), freeze/thaw, and remove() leaving nothing behind.
// Processes are placed in a `ctr` child the way runc would, since the runtime owns that level.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { silentLogger } from '@hako/core';
import { detectCgroupLayout, v1MountFor } from '../../src/cgroup-layout.js';
import { createCgroupManager } from '../../src/cgroup-factory.js';
import { CgroupV1Manager } from '../../src/cgroup-v1.js';
import { resourceName, newSandboxId } from '../../src/names.js';

const MiB = 1024 * 1024;

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

async function read(p: string): Promise<string> {
  return (await readFile(p, 'utf8')).trim();
}

function keyed(text: string, key: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${key} `));
  return line ? Number(line.split(' ')[1]) : Number.NaN;
}

async function until(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** Dead: no such process, or a zombie waiting for its (re)parent to reap it. */
async function pidDead(pid: number): Promise<boolean> {
  try {
    return (await read(`/proc/${pid}/stat`)).split(') ')[1]?.startsWith('Z') ?? false;
  } catch {
    return true;
  }
}

test('cgroup v1 manager on the real hierarchies', { timeout: 120_000 }, async (t) => {
  const layout = await detectCgroupLayout();
  assert.ok(
    layout.mode === 'v1' || layout.mode === 'hybrid',
    `this test needs a v1/hybrid host, found ${layout.mode}`,
  );
  const env = `t${randomBytes(4).toString('hex').slice(0, 6)}`;
  const name = resourceName(env, newSandboxId());
  const mgr = createCgroupManager(layout, { env, logger: silentLogger() });
  assert.ok(mgr instanceof CgroupV1Manager);

  const hierarchies = layout.v1Mounts.map((m) => m.path);
  if (layout.mode === 'hybrid' && layout.unifiedPath) hierarchies.push(layout.unifiedPath);
  const mount = (c: string): string => {
    const m = v1MountFor(layout, c);
    assert.ok(m, `controller ${c} is not mounted`);
    return m.path;
  };
  const parentIn = (h: string): string => join(h, 'hako', env, name);
  // the manager makes the sandbox cgroup only in the hierarchies of the controllers hako uses
  const joined = [
    ...new Set(['memory', 'pids', 'cpu', 'cpuacct', 'freezer', 'devices'].map((c) => mount(c))),
  ];
  const mem = parentIn(mount('memory'));
  const pids = parentIn(mount('pids'));
  const cpu = parentIn(mount('cpu'));
  const freezer = parentIn(mount('freezer'));
  const cpusetMount = v1MountFor(layout, 'cpuset')?.path;

  const children: ChildProcess[] = [];
  /** Starts cmd with its pid already in every hierarchy's ctr child (as the runtime would). */
  const spawnInCtr = async (
    cmd: string,
    args: string[],
  ): Promise<{ child: ChildProcess; stderr: () => string }> => {
    const child = spawn('bash', ['-c', 'read -r _ && exec "$@"', 'bash', cmd, ...args], {
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    children.push(child);
    let err = '';
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    for (const h of joined) await writeFile(join(parentIn(h), 'ctr', 'cgroup.procs'), String(child.pid));
    child.stdin?.end('go\n');
    return { child, stderr: () => err };
  };
  const exitOf = (child: ChildProcess): Promise<[number | null, NodeJS.Signals | null]> =>
    child.exitCode !== null || child.signalCode !== null
      ? Promise.resolve([child.exitCode, child.signalCode])
      : new Promise((resolve) => child.once('exit', (code, sig) => resolve([code, sig])));
  const killCtr = async (): Promise<void> => {
    const procs = (await read(join(pids, 'ctr', 'cgroup.procs'))).split('\n').filter((l) => l !== '');
    for (const p of procs) process.kill(Number(p), 'SIGKILL');
    await until(
      async () => (await read(join(pids, 'pids.current'))) === '0',
      5000,
      'pids.current to drop to 0',
    );
  };

  let removed = false;
  try {
    // ---- create
    const t0 = performance.now();
    const { cgroupsPath, procsFiles, notJoined } = await mgr.create(name, {
      memoryBytes: 64 * MiB,
      pids: 16,
      cpus: 0.5,
    });
    const createMs = performance.now() - t0;
    t.diagnostic(`create() took ${createMs.toFixed(1)} ms for ${hierarchies.length} hierarchies`);
    assert.equal(cgroupsPath, `/hako/${env}/${name}/ctr`);
    for (const h of joined) assert.ok(await exists(parentIn(h)), `parent cgroup missing in ${h}`);
    for (const h of hierarchies.filter((x) => !joined.includes(x))) {
      assert.equal(await exists(parentIn(h)), false, `no cgroup expected in unused hierarchy ${h}`);
    }
    assert.deepEqual(
      [...procsFiles].sort(),
      joined.map((h) => join(parentIn(h), 'cgroup.procs')).sort(),
      'procsFiles: the parent in every hierarchy of a used controller',
    );
    assert.deepEqual(
      [...notJoined].sort(),
      hierarchies
        .filter((h) => !joined.includes(h))
        .map((h) => relative('/sys/fs/cgroup', h))
        .sort(),
    );
    const devices = joined.find((h) => h.endsWith('/devices'));
    assert.ok(devices, 'the devices hierarchy is mounted');
    const devList = (await read(join(parentIn(devices), 'devices.list'))).split('\n');
    assert.ok(!devList.includes('a *:* rwm'), 'the parent must not allow every device');
    assert.ok(devList.includes('c 1:3 rwm') && devList.includes('c 136:* rwm'), devList.join(','));
    assert.ok(!devList.some((l) => l.startsWith('b ') && l.endsWith('rwm')), 'no block device may be opened');
    assert.equal(await read(join(mem, 'memory.limit_in_bytes')), String(64 * MiB));
    if (await exists(join(mem, 'memory.memsw.limit_in_bytes'))) {
      assert.equal(await read(join(mem, 'memory.memsw.limit_in_bytes')), String(64 * MiB));
    } else {
      t.diagnostic('no memory.memsw.limit_in_bytes on this kernel (no swap accounting)');
    }
    assert.equal(keyed(await read(join(mem, 'memory.oom_control')), 'oom_kill_disable'), 0);
    assert.equal(await read(join(pids, 'pids.max')), '16');
    assert.equal(await read(join(cpu, 'cpu.cfs_period_us')), '100000');
    assert.equal(await read(join(cpu, 'cpu.cfs_quota_us')), '50000');
    if (cpusetMount && joined.includes(cpusetMount)) {
      for (const f of ['cpuset.cpus', 'cpuset.mems']) {
        const want = await read(join(cpusetMount, f));
        assert.equal(await read(join(cpusetMount, 'hako', f)), want);
        assert.equal(await read(join(cpusetMount, 'hako', env, f)), want);
        assert.equal(await read(join(parentIn(cpusetMount), f)), want);
      }
    }
    assert.deepEqual(await mgr.list(), [name]);
    // Creating again (a retried create) keeps the same limits and does not fail.
    await mgr.create(name, { memoryBytes: 64 * MiB, pids: 16, cpus: 0.5 });
    assert.equal(await read(join(mem, 'memory.limit_in_bytes')), String(64 * MiB));

    // The runtime's child, in every hierarchy (cpuset needs cpus/mems before a task can join).
    for (const h of joined) await mkdir(join(parentIn(h), 'ctr'));
    if (cpusetMount && joined.includes(cpusetMount)) {
      for (const f of ['cpuset.cpus', 'cpuset.mems']) {
        await writeFile(join(parentIn(cpusetMount), 'ctr', f), await read(join(parentIn(cpusetMount), f)));
      }
    }

    // ---- CPU quota and freeze/thaw
    await t.test('a busy loop gets half a core, stops while frozen and resumes when thawed', async () => {
      const { child } = await spawnInCtr('sh', ['-c', 'while :; do :; done']);
      await sleep(200);
      const a = (await mgr.stats(name)).cpuUsageNs;
      const ta = performance.now();
      await sleep(1500);
      const b = (await mgr.stats(name)).cpuUsageNs;
      const rate = (b - a) / ((performance.now() - ta) * 1e6);
      t.diagnostic(`busy loop CPU rate under a 0.5 quota: ${rate.toFixed(2)} cores`);
      assert.ok(rate > 0.3 && rate < 0.65, `expected about 0.5 cores, got ${rate.toFixed(2)}`);

      await mgr.setFrozen(name, true);
      assert.equal(await read(join(freezer, 'freezer.state')), 'FROZEN');
      const state = (await read(`/proc/${child.pid}/stat`)).split(' ')[2];
      t.diagnostic(`frozen task state in /proc/<pid>/stat: ${state}`);
      assert.notEqual(state, 'R', 'a frozen task is not runnable');
      const c = (await mgr.stats(name)).cpuUsageNs;
      await sleep(400);
      const d = (await mgr.stats(name)).cpuUsageNs;
      assert.ok(d - c < 1_000_000, `frozen tasks used ${(d - c) / 1e6} ms of CPU`);

      await mgr.setFrozen(name, false);
      assert.equal(await read(join(freezer, 'freezer.state')), 'THAWED');
      const e = (await mgr.stats(name)).cpuUsageNs;
      await sleep(400);
      const f = (await mgr.stats(name)).cpuUsageNs;
      assert.ok(f - e > 50_000_000, `thawed loop used only ${(f - e) / 1e6} ms of CPU in 400 ms`);
      child.kill('SIGKILL');
      await exitOf(child);
    });

    // ---- pids
    await t.test('forks past pids.max=16 fail and are counted', async () => {
      const { child, stderr } = await spawnInCtr('bash', [
        '-c',
        'for i in $(seq 40); do sleep 30 & done; wait',
      ]);
      let maxSeen = 0;
      await until(
        async () => {
          const s = await mgr.stats(name);
          maxSeen = Math.max(maxSeen, s.pidsCurrent);
          return s.pidsLimitHits > 0 && /fork/.test(stderr());
        },
        10_000,
        'a failed fork',
      );
      const s = await mgr.stats(name);
      assert.equal(s.pidsLimit, 16);
      assert.ok(s.pidsLimitHits > 0);
      assert.ok(
        maxSeen <= 16 && s.pidsCurrent <= 16,
        `pids.current reached ${Math.max(maxSeen, s.pidsCurrent)}`,
      );
      assert.match(stderr(), /Resource temporarily unavailable/);
      if (await exists(join(pids, 'pids.peak'))) assert.ok(Number(await read(join(pids, 'pids.peak'))) <= 16);
      await killCtr();
      await exitOf(child);
    });

    // ---- memory
    await t.test('a memory hog is OOM-killed at 64 MiB and counted', async () => {
      const { child } = await spawnInCtr('tail', ['/dev/zero']);
      const ac = new AbortController();
      const [code, signal] = await Promise.race([
        exitOf(child),
        sleep(30_000, undefined, { signal: ac.signal }).then(() => {
          throw new Error('memory hog was not killed within 30 s');
        }),
      ]).finally(() => ac.abort());
      assert.equal(code, null);
      assert.equal(signal, 'SIGKILL');
      const s = await mgr.stats(name);
      t.diagnostic(
        `oom_kill on the parent itself: ${keyed(await read(join(mem, 'memory.oom_control')), 'oom_kill')}, ` +
          `in ctr: ${keyed(await read(join(mem, 'ctr', 'memory.oom_control')), 'oom_kill')}`,
      );
      assert.ok(s.oomKills >= 1, `oomKills = ${s.oomKills}`);
      assert.equal(s.memoryLimitBytes, 64 * MiB);
      assert.ok(s.memoryPeakBytes <= 64 * MiB, `peak ${s.memoryPeakBytes} over the limit`);
      assert.ok(s.memoryPeakBytes > 32 * MiB, `peak ${s.memoryPeakBytes}: the hog never grew`);
    });

    // ---- remove
    await t.test('remove() kills frozen leftovers and leaves no cgroup in any hierarchy', async () => {
      const a = await spawnInCtr('bash', ['-c', 'sleep 30 & sleep 30 & wait']);
      const b = await spawnInCtr('sleep', ['30']);
      await until(async () => (await read(join(pids, 'pids.current'))) === '4', 5000, 'four processes');
      const inside = (await read(join(pids, 'ctr', 'cgroup.procs'))).split('\n').map(Number);
      assert.equal(inside.length, 4);
      // The runtime's own pause freezes its child; hako's freeze is on the parent: both must be undone.
      await writeFile(join(freezer, 'ctr', 'freezer.state'), 'FROZEN');
      await mgr.setFrozen(name, true);
      const t1 = performance.now();
      await mgr.remove(name);
      const removeMs = performance.now() - t1;
      removed = true;
      t.diagnostic(
        `remove() took ${removeMs.toFixed(1)} ms (4 frozen processes, ${hierarchies.length} hierarchies)`,
      );
      assert.deepEqual(await exitOf(a.child), [null, 'SIGKILL']);
      assert.deepEqual(await exitOf(b.child), [null, 'SIGKILL']);
      const t2 = performance.now();
      await until(
        async () => (await Promise.all(inside.map(pidDead))).every(Boolean),
        3000,
        'every process of the sandbox to be gone',
      );
      t.diagnostic(`all dead ${(performance.now() - t2).toFixed(0)} ms after remove()`);
      for (const h of hierarchies) assert.equal(await exists(parentIn(h)), false, `left behind in ${h}`);
      assert.deepEqual(await mgr.list(), []);
      await mgr.remove(name); // idempotent
      assert.equal(await mgr.removeEnvRoot(), true);
      for (const h of hierarchies)
        assert.equal(await exists(join(h, 'hako', env)), false, `hako/${env} left in ${h}`);
    });
  } finally {
    // Thaw first (best effort, the dirs may be gone): frozen children would never exit on SIGKILL.
    for (const d of [freezer, join(freezer, 'ctr')]) {
      await writeFile(join(d, 'freezer.state'), 'THAWED').catch(() => undefined);
    }
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    const errors: unknown[] = [];
    if (!removed) await mgr.remove(name).catch((e: unknown) => errors.push(e));
    await mgr.removeEnvRoot().catch((e: unknown) => errors.push(e));
    const left: string[] = [];
    for (const h of hierarchies) if (await exists(join(h, 'hako', env))) left.push(join(h, 'hako', env));
    if (errors.length > 0 || left.length > 0) {
      throw new Error(`cleanup failed: ${errors.map(String).join('; ')} left: ${left.join(', ')}`);
    }
  }
});
