// hakod's start-up reconcile under crashes. hakod runs as its own process, so SIGKILL is real:
// `node --conditions=source --import tsx -e <startAgent(process.env)>` runs the real wiring from the
// working tree's sources (`hako agent` runs packages/cli/dist, which may be older than the sources
// under test), with a throw-away env from createTestHost, mTLS from certsInit, AGENT_POOL_MIN=1,
// metrics off and the periodic sweep off (only reconcile may clean up).
//
// Twenty times, round-robin over six phases, the test fires an RPC, waits 0-150 ms (each phase's
// 1st/2nd/3rd/4th kill in 0-30/60-90/120-150/30-60 ms, random inside: kills land early, mid-way
// and late in the work), SIGKILLs hakod's pid (the runtime, CNI and quota tools it was running
// finish or fail on their own, as after a real crash), restarts it at once, waits until it serves
// (GetNodeInfo), and proves:
//   - every sandbox the client knew to exist is either usable (GetSandbox says RUNNING, an Exec of
//     `cat /workspace/marker` returns what was written, and an egress one reaches the restarted
//     egress proxy) or gone (SANDBOX_NOT_FOUND, and ListSandboxes agrees); listed but unusable fails;
//   - nothing leaked: every runtime container and runtime state dir, bundle, netns, cgroup (every
//     hierarchy's hako/<env>/), workspace (XFS project dir and project-id claim, or loop image,
//     mount point, mount and loop device; a half-formatted spare older than the 60 s after which a
//     start removes it), CNI lease and cached result, host veth on the env's bridge, and process in
//     a sandbox cgroup of the env or naming one of its sandboxes (runtime exec/run, catatonit by its
//     mounts) belongs to a sandbox the restarted hakod reports: ListSandboxes for every owner, plus
//     the warm ones (as many as GetNodeInfo.sandboxesWarm, named by their unclaimed records). And
//     the other way round: each of those has its container, bundle, cgroups, workspace and init
//     process (and netns and lease if egress), so the scan is shown to see what it looks for.
// At the end everything is destroyed, hakod stops on SIGTERM, teardown leaves nothing.
//
// Outcomes, per phase (what the assertions hold the code to):
//   create-cold (network none, own limits: a cold start) and create-egress (CNI + proxy): a create
//       killed before it answered is removed by the restart (no claim record, or one naming no
//       running container: gc takes the bundle, cgroup, workspace, netns and lease); if the claim
//       record was written the sandbox is adopted and usable, and ListSandboxes shows it although
//       the client never got the answer (tallied "adopted-unanswered"). A create that answered
//       before the kill is always adopted and usable.
//   create-pool (default profile: claims the warm sandbox, then the pool refills): as above for the
//       claim; the warm sandbox being refilled is always removed.
//   exec-sleep / exec-files (`sleep 30`; a loop writing 300 files): the exec dies with its stream;
//       the sandbox is always adopted and usable with its marker (the process it started goes on
//       inside the sandbox until it ends or the sandbox is destroyed).
//   destroy: killed before the runtime container was deleted, the sandbox is adopted and usable;
//       after that the restart finishes the destroy (SANDBOX_NOT_FOUND). A destroy that answered
//       before the kill never comes back.
//   Warm sandboxes never survive a restart: reconcile removes them and the pool refills.
// The tallies (adopted / removed per phase, the delays used) are printed as test diagnostics.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { randomBytes, randomInt } from 'node:crypto';
import type { AgentClient } from '@hako/proto';
import { NetworkMode, SandboxState } from '@hako/proto';
import { certsInit } from '../../../cli/src/certs.js';
import { callUnary, createAgentClient, runExec } from '../../src/client.js';
import { REPO_ROOT, cgroupRoots, createTestHost, sh } from '../../../sandbox/test/helpers/test-host.js';

const ITERATIONS = 20;
const PHASES = [
  'create-cold',
  'exec-sleep',
  'destroy',
  'create-egress',
  'exec-files',
  'create-pool',
] as const;
type Phase = (typeof PHASES)[number];
const OWNERS = ['tenant-a', 'tenant-b'] as const;
/** Claimed sandboxes the client keeps between iterations (older ones are destroyed normally). */
const KEEP = 3;

const th = createTestHost();
const env = th.hakoEnv;
const prefix = `hako-${env}-`;
const agentDir = join(th.runDir, env, '.agent');
let pkiDir = '';

interface Known {
  readonly id: string;
  readonly owner: string;
  /** What /workspace/marker holds; undefined when the create answered just before a kill. */
  marker: string | undefined;
  readonly egress: boolean;
}

interface Hakod {
  readonly child: ChildProcess;
  readonly address: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly log: string[];
}

// ------------------------------------------------------------------------------ hakod process

const MAIN_URL = pathToFileURL(join(REPO_ROOT, 'packages/agentd/src/main.ts')).href;
const CHILD_SCRIPT = `
const { startAgent } = await import(${JSON.stringify(MAIN_URL)});
const agent = await startAgent(process.env);
process.stdout.write('HAKOD_READY ' + agent.address + '\\n');
process.once('SIGTERM', () => {
  agent.close({ destroyAll: true }).then(() => process.exit(0), (err) => {
    process.stderr.write('close failed: ' + String(err) + '\\n');
    process.exit(1);
  });
});
`;

let current: Hakod | undefined;

function startHakod(): Promise<Hakod> {
  const child = spawn(
    process.execPath,
    ['--conditions=source', '--import', 'tsx', '--input-type=module', '-e', CHILD_SCRIPT],
    {
      cwd: REPO_ROOT,
      env: {
        ...th.env,
        AGENT_LISTEN: '127.0.0.1:0',
        AGENT_METRICS_LISTEN: '',
        AGENT_TLS_DIR: pkiDir,
        AGENT_POOL_MIN: '1',
        AGENT_POOL_MAX: '2',
        // the loop quota engine counts every workspace's limit against HAKO_QUOTA_VOLUME_SIZE (2g)
        AGENT_DEFAULT_DISK: '64m',
        // only reconcile may clean up: the periodic sweep must not hide a leak
        AGENT_GC_INTERVAL: '1h',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const log: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return new Promise<Hakod>((resolve, reject) => {
    let buf = '';
    let done = false;
    const timer = setTimeout(() => {
      if (done) return;
      done = true;
      child.kill('SIGKILL');
      reject(new Error(`hakod did not start within 60 s:\n${log.join('\n')}`));
    }, 60_000);
    const onData = (d: string): void => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        log.push(line);
        const m = /^HAKOD_READY (\S+)$/.exec(line);
        if (m && !done) {
          done = true;
          clearTimeout(timer);
          resolve({ child, address: m[1]!, exited, log });
        }
      }
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onData);
    void exited.then(({ code, signal }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      reject(new Error(`hakod exited (${code ?? signal}) before serving:\n${log.join('\n')}`));
    });
  });
}

async function waitServing(client: AgentClient): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await callUnary(client, 'getNodeInfo', {}, { timeoutMs: 2000 });
      return;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`hakod does not answer GetNodeInfo: ${String(err)}`);
      await sleep(100);
    }
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------ host objects

function readdirOr(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function readOr(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

const NAME_RE = new RegExp(`${prefix}[a-z0-9]{8,32}`);

/**
 * Every host object of this env that belongs to one sandbox, by sandbox name, plus the objects that
 * name none (`unnamed`: they are leaks by definition).
 */
function scanHost(runtime: string): { byName: Map<string, string[]>; unnamed: string[]; veths: string[] } {
  const byName = new Map<string, string[]>();
  const unnamed: string[] = [];
  const add = (name: string, what: string): void => {
    let l = byName.get(name);
    if (!l) byName.set(name, (l = []));
    l.push(what);
  };
  // runtime containers: the runtime's list and its state directory (a half-written state too)
  const root = join(th.runDir, env, `.${runtime}`);
  for (const id of sh(runtime, ['--root', root, 'list', '-q']).split('\n').filter(Boolean))
    if (id.startsWith(prefix)) add(id, `container (${runtime} list)`);
  for (const id of readdirOr(root)) if (id.startsWith(prefix)) add(id, `runtime state ${join(root, id)}`);
  // bundles
  for (const n of readdirOr(join(th.runDir, env))) if (n.startsWith(prefix)) add(n, 'bundle dir');
  // network namespaces
  for (const n of readdirOr('/run/netns')) if (n.startsWith(prefix)) add(n, `netns /run/netns/${n}`);
  // cgroups in every hierarchy
  for (const r of cgroupRoots()) {
    const dir = join(r, 'hako', env);
    for (const n of readdirOr(dir)) {
      if (n.startsWith(prefix)) add(n, `cgroup ${join(dir, n)}`);
    }
  }
  // quota: XFS project directories and their project-id claims; loop images and mounts
  const data = join(th.stateDir, 'data');
  for (const n of readdirOr(join(data, env))) {
    if (n.startsWith(prefix)) add(n, `workspace quota dir ${join(data, env, n)}`);
    else unnamed.push(`quota dir ${join(data, env, n)}`);
  }
  for (const f of readdirOr(join(data, '.projects'))) {
    const p = join(data, '.projects', f);
    const holder = readOr(p).trim();
    if (holder.startsWith(`${env}/`)) add(holder.slice(env.length + 1), `project-id claim ${p}`);
    else if (f.startsWith('.claim-')) unnamed.push(`project-id claim temp file ${p}`);
  }
  // (the loop engine: one volume directory per sandbox, workspaces/<env>/<name>, its image mounted
  // at fs/ inside; spare volumes in .pool/ are its cache (mounted), half-built ones are removed by
  // a start once stale: one older than that is a leak; .trash/ empties in the background)
  const volumes = join(th.stateDir, 'workspaces', env);
  for (const n of readdirOr(volumes)) {
    if (n === '.pool' || n === '.trash') continue;
    if (n.startsWith(prefix)) add(n, `workspace volume ${n}`);
    else unnamed.push(`workspace volume ${n}`);
  }
  for (const f of readdirOr(join(volumes, '.pool'))) {
    const p = join(volumes, '.pool', f);
    if (f.endsWith('.tmp') && Date.now() - statSync(p, { throwIfNoEntry: false })!.mtimeMs > 75_000)
      unnamed.push(`stale half-built spare ${p}`);
  }
  const spareOrTrash = (p: string): boolean =>
    p.startsWith(join(volumes, '.pool') + '/') || p.startsWith(join(volumes, '.trash') + '/');
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const mp = line.split(' ')[4] ?? '';
    if (!mp.startsWith(`${th.stateDir}/`) || mp === data || spareOrTrash(mp)) continue;
    const m = NAME_RE.exec(mp);
    if (m) add(m[0], `mount ${mp}`);
    else unnamed.push(`mount ${mp}`);
  }
  for (const line of sh('losetup', ['-a']).split('\n')) {
    if (!line.includes(`${th.stateDir}/`) || line.includes(join(th.stateDir, 'volume.img'))) continue;
    if (line.includes(join(volumes, '.pool') + '/') || line.includes(join(volumes, '.trash') + '/')) continue;
    const m = NAME_RE.exec(line);
    if (m) add(m[0], `loop device ${line.trim()}`);
    else unnamed.push(`loop device ${line.trim()}`);
  }
  // CNI: host-local leases and cached ADD results
  const cni = join(th.stateDir, 'cni');
  const leases = join(cni, 'ipam', `hako-${env}`);
  for (const f of readdirOr(leases)) {
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(f)) continue;
    const owner = readOr(join(leases, f)).split(/\r?\n/)[0]?.trim() ?? '';
    if (owner.startsWith(prefix)) add(owner, `CNI lease ${f}`);
    else unnamed.push(`CNI lease ${f} held by "${owner}"`);
  }
  for (const f of readdirOr(join(cni, 'results')))
    if (f.startsWith(prefix)) add(f.replace(/\.json$/, ''), `CNI result ${f}`);
  // processes: in a sandbox cgroup of this env, naming one of its sandboxes on the command line
  // (the runtime's exec and run), or a sandbox init (catatonit) whose mounts come from this env's
  // bundles wherever its cgroup is
  const cgRe = new RegExp(`/hako/${env}/(${prefix}[a-z0-9]{8,32})(/|$)`, 'm');
  for (const p of readdirOr('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = readOr(`/proc/${p}/cmdline`).split('\0').filter(Boolean).join(' ');
    if (cmd === '') continue;
    const cgText = readOr(`/proc/${p}/cgroup`);
    const cg = cgRe.exec(cgText);
    const named = cmd.includes(join(th.runDir, env)) ? NAME_RE.exec(cmd) : null;
    let name = cg?.[1] ?? named?.[0];
    if (!name && cmd.startsWith('/dev/.hako-init')) {
      const mounts = readOr(`/proc/${p}/mountinfo`);
      if (mounts.includes(`/${env}/${prefix}`)) name = NAME_RE.exec(mounts)?.[0];
    }
    if (name) add(name, `process ${p} ${cmd.slice(0, 120)}`);
    else if (cgText.includes(`/hako/${env}`))
      unnamed.push(`process ${p} ${cmd.slice(0, 120)} in no sandbox's cgroup: ${cgText.replace(/\n/g, ' ')}`);
  }
  // host veths on the env's bridge (one per egress sandbox)
  const veths = sh('ip', ['-o', 'link', 'show', 'master', th.bridge])
    .split('\n')
    .map((l) => l.split(':')[1]?.trim().split('@')[0])
    .filter((n): n is string => !!n);
  return { byName, unnamed, veths };
}

/** The records hakod keeps in the run dir: claimed (owner set) and warm (owner empty) sandbox ids. */
function records(): { claimed: Set<string>; warm: Set<string> } {
  const claimed = new Set<string>();
  const warm = new Set<string>();
  for (const f of readdirOr(agentDir)) {
    if (!f.endsWith('.json')) continue;
    try {
      const r = JSON.parse(readOr(join(agentDir, f))) as { id: string; ownerId: string };
      (r.ownerId === '' ? warm : claimed).add(r.id);
    } catch {
      claimed.add(`unreadable record ${f}`);
    }
  }
  return { claimed, warm };
}

// ------------------------------------------------------------------------------ the test

after(async () => {
  if (current) {
    current.child.kill('SIGKILL');
    await current.exited;
  }
  await rm(pkiDir, { recursive: true, force: true });
  await th.teardown();
  assert.deepEqual(th.leftovers(), []);
});

test('SIGKILL in create, exec and destroy, 20 restarts: survivors usable or removed, nothing leaked', async (t) => {
  const started = Date.now();
  pkiDir = await mkdtemp(join(tmpdir(), 'hakod-crash-pki-'));
  await certsInit({ dir: pkiDir, hosts: [], days: 1, force: false });

  const known = new Map<string, Known>();
  const tally: Record<Phase, { adopted: number; removed: number; unanswered: number; delays: number[] }> =
    Object.fromEntries(
      PHASES.map((p) => [p, { adopted: 0, removed: 0, unanswered: 0, delays: [] }]),
    ) as never;
  let warmRemoved = 0;

  current = await startHakod();
  let client = createAgentClient({ address: current.address, tls: { dir: pkiDir } });
  await waitServing(client);
  const runtime = (await callUnary(client, 'getNodeInfo', {})).runtime;

  const limits = (over: Record<string, number> = {}) => ({
    cpus: 0,
    memoryBytes: 0,
    pids: 0,
    diskBytes: 0,
    tmpBytes: 0,
    ...over,
  });
  const createReq = (owner: string, iter: number, o: { network: NetworkMode; own?: boolean }) => ({
    ownerId: owner,
    image: 'host',
    labels: { crash: `i${iter}` },
    // "own" limits differ from the node's defaults, so no warm sandbox fits: a cold start
    limits: o.own
      ? limits({
          cpus: 1,
          memoryBytes: 128 * 2 ** 20,
          pids: 128,
          diskBytes: 32 * 2 ** 20,
          tmpBytes: 8 * 2 ** 20,
        })
      : limits(),
    network: o.network,
    egressAllow: [],
    env: {},
    upstreams: [],
    ttlSeconds: 0,
    idleTimeoutSeconds: 0,
  });
  const writeMarker = async (k: Known): Promise<void> => {
    const marker = `m-${randomBytes(6).toString('hex')}`;
    const r = await runExec(client, {
      ownerId: k.owner,
      sandboxId: k.id,
      argv: ['sh', '-c', 'printf %s "$1" > /workspace/marker', 'sh', marker],
    });
    assert.equal(r.exit.code, 0, r.stderr.toString());
    k.marker = marker;
  };
  const createKnown = async (iter: number, network: NetworkMode): Promise<Known> => {
    const owner = OWNERS[iter % OWNERS.length]!;
    const { sandbox } = await callUnary(client, 'createSandbox', createReq(owner, iter, { network }));
    const k: Known = {
      id: sandbox!.id,
      owner,
      marker: undefined,
      egress: network === NetworkMode.NETWORK_MODE_EGRESS,
    };
    known.set(k.id, k);
    await writeMarker(k);
    return k;
  };

  /** The leak check: every host object of the env belongs to a sandbox hakod reports. */
  const checkNoLeaks = async (iter: number, phase: Phase): Promise<void> => {
    // quiescent first: the pool refilled to its minimum of one and its record is written
    const deadline = Date.now() + 60_000;
    let info = await callUnary(client, 'getNodeInfo', {});
    while (info.sandboxesWarm < 1 || records().warm.size !== info.sandboxesWarm) {
      if (Date.now() > deadline) {
        assert.fail(
          `iteration ${iter} (${phase}): the warm pool did not refill after the restart ` +
            `(warm ${info.sandboxesWarm}, warm records ${records().warm.size})\n${current!.log.join('\n')}`,
        );
      }
      await sleep(100);
      info = await callUnary(client, 'getNodeInfo', {});
    }
    const listed = new Set<string>();
    for (const owner of OWNERS) {
      const l = await callUnary(client, 'listSandboxes', { ownerId: owner, labelSelector: {} });
      for (const s of l.sandboxes) listed.add(s.id);
    }
    const recs = records();
    assert.deepEqual(
      [...recs.claimed].sort(),
      [...listed].sort(),
      `iteration ${iter} (${phase}): hakod's claimed records and ListSandboxes disagree`,
    );
    assert.equal(recs.warm.size, info.sandboxesWarm);
    const held = new Set([...listed, ...recs.warm].map((id) => `${prefix}${id}`));
    const scan = scanHost(runtime);
    const leaked: string[] = [...scan.unnamed];
    for (const [name, objs] of scan.byName) {
      if (!held.has(name)) leaked.push(`${name}: ${objs.join('; ')}`);
    }
    const netnsHeld = [...held].filter((n) => scan.byName.get(n)?.some((o) => o.startsWith('netns '))).length;
    if (scan.veths.length !== netnsHeld) {
      leaked.push(
        `${scan.veths.length} host veths on ${th.bridge} (${scan.veths.join(', ')}) for ${netnsHeld} netns`,
      );
    }
    // the other way round (and proof the scan sees what it should): every sandbox hakod holds has
    // its container, bundle, cgroups, workspace and init process, and an egress one its netns and lease
    const egressIds = new Set([...known.values()].filter((k) => k.egress).map((k) => k.id));
    for (const name of held) {
      const objs = scan.byName.get(name) ?? [];
      const want = ['container', 'bundle dir', 'cgroup', 'workspace', 'process'];
      if (egressIds.has(name.slice(prefix.length))) want.push('netns', 'CNI lease');
      const missing = want.filter((w) => !objs.some((o) => o.startsWith(w)));
      if (missing.length > 0) {
        leaked.push(`${name} is held by hakod but has no ${missing.join(', ')}: ${objs.join('; ')}`);
      }
    }
    assert.deepEqual(
      leaked,
      [],
      `iteration ${iter} (${phase}): host objects that no sandbox hakod reports owns:\n  ${leaked.join('\n  ')}\n` +
        `hakod log:\n${current!.log.join('\n')}`,
    );
  };

  try {
    // the first instance: its warm sandbox is up, nothing else
    await checkNoLeaks(-1, 'create-pool');

    for (let i = 0; i < ITERATIONS; i++) {
      const phase = PHASES[i % PHASES.length]!;
      const owner = OWNERS[i % OWNERS.length]!;
      // keep a few claimed sandboxes around between iterations
      while (known.size > KEEP) {
        const oldest = known.values().next().value!;
        await callUnary(client, 'destroySandbox', { ownerId: oldest.owner, sandboxId: oldest.id });
        known.delete(oldest.id);
      }

      // ---- fire
      let target: Known | undefined;
      let answeredId: string | undefined;
      let settled: 'ok' | 'failed' | undefined;
      let fired: Promise<unknown>;
      if (phase === 'create-cold' || phase === 'create-egress' || phase === 'create-pool') {
        const req =
          phase === 'create-cold'
            ? createReq(owner, i, { network: NetworkMode.NETWORK_MODE_NONE, own: true })
            : phase === 'create-egress'
              ? createReq(owner, i, { network: NetworkMode.NETWORK_MODE_EGRESS })
              : createReq(owner, i, { network: NetworkMode.NETWORK_MODE_NONE });
        fired = callUnary(client, 'createSandbox', req).then((r) => {
          // answered before the kill: the client knows it exists
          answeredId = r.sandbox!.id;
          known.set(answeredId, {
            id: answeredId,
            owner,
            marker: undefined,
            egress: phase === 'create-egress',
          });
        });
      } else {
        target =
          [...known.values()].find((k) => k.marker !== undefined) ??
          (await createKnown(
            i,
            i % 2 === 0 ? NetworkMode.NETWORK_MODE_EGRESS : NetworkMode.NETWORK_MODE_NONE,
          ));
        if (phase === 'exec-sleep') {
          fired = runExec(client, { ownerId: target.owner, sandboxId: target.id, argv: ['sleep', '30'] });
        } else if (phase === 'exec-files') {
          fired = runExec(client, {
            ownerId: target.owner,
            sandboxId: target.id,
            argv: ['sh', '-c', 'for i in $(seq 1 300); do echo "$i" > /workspace/f-$i; done; echo done'],
          });
        } else {
          fired = callUnary(client, 'destroySandbox', { ownerId: target.owner, sandboxId: target.id });
        }
      }
      fired = fired.then(
        () => (settled ??= 'ok'),
        () => (settled ??= 'failed'),
      );

      // ---- wait 0-150 ms, SIGKILL, restart. Each phase's 1st, 2nd, 3rd, 4th kill falls in
      // 0-30, 60-90, 120-150, 30-60 ms (random inside), so every phase is hit early, mid and late
      const bucket = [0, 2, 4, 1][Math.floor(i / PHASES.length)]!;
      const delay = bucket * 30 + randomInt(0, 31);
      tally[phase].delays.push(delay);
      await sleep(delay);
      const warmAtKill = records().warm;
      current.child.kill('SIGKILL');
      const ex: { code: number | null; signal: NodeJS.Signals | null } = await current.exited;
      assert.equal(ex.signal, 'SIGKILL', `iteration ${i}: hakod had already exited (${ex.code})`);
      // an answer hakod sent before it died may arrive after the kill: it still counts as answered
      await fired;
      const answered = settled === 'ok';
      client.close();
      if (phase === 'destroy' && answered) known.delete(target!.id);

      current = await startHakod();
      client = createAgentClient({ address: current.address, tls: { dir: pkiDir } });
      await waitServing(client);

      // ---- survivors: usable or gone
      const listed = new Map<string, { owner: string; labels: Record<string, string> }>();
      for (const o of OWNERS) {
        const l = await callUnary(client, 'listSandboxes', { ownerId: o, labelSelector: {} });
        for (const s of l.sandboxes) listed.set(s.id, { owner: o, labels: s.labels });
      }
      // warm sandboxes never survive (the one a create-pool was claiming may have become claimed)
      for (const w of warmAtKill) {
        const claimedNow = phase === 'create-pool' && listed.get(w)?.labels.crash === `i${i}`;
        assert.ok(
          claimedNow || (!listed.has(w) && !records().warm.has(w)),
          `iteration ${i} (${phase}): warm sandbox ${w} survived the restart`,
        );
        if (!claimedNow) warmRemoved++;
      }
      if (phase === 'create-cold' || phase === 'create-egress' || phase === 'create-pool') {
        const mine = [...listed].filter(([, s]) => s.labels.crash === `i${i}`).map(([id]) => id);
        assert.ok(mine.length <= 1, `iteration ${i}: one create made ${mine.length} sandboxes`);
        if (answeredId !== undefined) {
          assert.deepEqual(
            mine,
            [answeredId],
            `iteration ${i} (${phase}): a create that answered was not adopted`,
          );
          tally[phase].adopted++;
        } else if (mine[0] !== undefined) {
          // the claim was recorded, the answer lost: adopted, and the owner can find it by label
          known.set(mine[0], { id: mine[0], owner, marker: undefined, egress: phase === 'create-egress' });
          tally[phase].adopted++;
          tally[phase].unanswered++;
        } else {
          tally[phase].removed++;
        }
      }
      for (const [id, s] of listed) {
        assert.ok(
          known.has(id),
          `iteration ${i} (${phase}): hakod lists ${id} (labels ${JSON.stringify(s.labels)}), which the client never created`,
        );
      }
      if (phase === 'destroy' && answered) {
        await assert.rejects(
          callUnary(client, 'getSandbox', { ownerId: target!.owner, sandboxId: target!.id }),
          { code: 'SANDBOX_NOT_FOUND' },
          `iteration ${i}: a destroy that answered came back`,
        );
        tally[phase].removed++;
      }
      for (const k of [...known.values()]) {
        let state: SandboxState;
        try {
          const { sandbox } = await callUnary(client, 'getSandbox', { ownerId: k.owner, sandboxId: k.id });
          state = sandbox!.state;
        } catch (err) {
          assert.equal((err as { code?: string }).code, 'SANDBOX_NOT_FOUND', String(err));
          assert.ok(!listed.has(k.id), `iteration ${i}: ${k.id} is listed but GetSandbox says not found`);
          // only a sandbox being destroyed may be gone
          assert.ok(
            phase === 'destroy' && k.id === target?.id,
            `iteration ${i} (${phase}): sandbox ${k.id}, not part of the interrupted work, was removed`,
          );
          known.delete(k.id);
          tally[phase].removed++;
          continue;
        }
        assert.ok(listed.has(k.id), `iteration ${i}: GetSandbox finds ${k.id} but ListSandboxes does not`);
        assert.equal(
          state,
          SandboxState.SANDBOX_STATE_RUNNING,
          `iteration ${i}: ${k.id} is listed but not running`,
        );
        const r = await runExec(
          client,
          {
            ownerId: k.owner,
            sandboxId: k.id,
            argv: ['sh', '-c', 'cat /workspace/marker 2>/dev/null; echo .'],
          },
          { timeoutMs: 30_000 },
        );
        assert.equal(
          r.exit.code,
          0,
          `iteration ${i}: exec in adopted ${k.id} failed: ${r.stderr.toString()}`,
        );
        assert.equal(
          r.stdout.toString(),
          `${k.marker ?? ''}.\n`,
          `iteration ${i}: adopted ${k.id} lost its workspace marker`,
        );
        if (k.egress) {
          // its address is registered with the restarted proxy again (an unknown source gets
          // "not a registered sandbox"); the allowlist is empty, so nothing is resolved or dialled
          const web = await runExec(client, {
            ownerId: k.owner,
            sandboxId: k.id,
            argv: ['sh', '-c', 'curl -sS -m 10 -x "$HTTP_PROXY" http://blocked.hako.invalid/'],
          });
          assert.match(
            web.stdout.toString(),
            /not on this sandbox's allowlist/,
            `iteration ${i}: adopted egress sandbox ${k.id} has no working proxy: ${web.stdout.toString()} ${web.stderr.toString()}`,
          );
        }
        if (k.marker === undefined) await writeMarker(k);
        if (k.id === target?.id) tally[phase].adopted++;
      }
      await checkNoLeaks(i, phase);
    }

    // ---- the end: destroy everything, stop hakod, tear down
    for (const k of known.values()) {
      await callUnary(client, 'destroySandbox', { ownerId: k.owner, sandboxId: k.id });
    }
    known.clear();
    client.close();
    current.child.kill('SIGTERM');
    const ex = await current.exited;
    current = undefined;
    assert.equal(ex.code, 0, 'hakod did not stop cleanly on SIGTERM');
    const scan = scanHost(runtime);
    assert.deepEqual(
      [...scan.byName.keys(), ...scan.unnamed],
      [],
      'sandbox objects left after SIGTERM with destroyAll',
    );
  } catch (err) {
    t.diagnostic(`last hakod log:\n${current?.log.join('\n') ?? ''}`);
    throw err;
  } finally {
    client.close();
    const seconds = Math.round((Date.now() - started) / 1000);
    for (const p of PHASES) {
      const x = tally[p];
      t.diagnostic(
        `${p}: adopted ${x.adopted}, removed ${x.removed}, adopted-unanswered ${x.unanswered}, delays ${x.delays.join('/')} ms`,
      );
    }
    t.diagnostic(`warm sandboxes removed by restarts: ${warmRemoved}; ${ITERATIONS} kills in ${seconds} s`);
  }
});
