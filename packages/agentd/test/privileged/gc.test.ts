// GarbageCollect (seed P1-3) against the real host: it removes every piece of what hakod made and
// no longer holds (runtime container, CNI DEL with or without a task, netns, veth, IP lease,
// cgroups, quota volume, bundle, state), and nothing else: foreign containers, netns and leases
// (including ones with only hako's name prefix or only its created-by label) survive it, and so do
// the sandboxes the manager holds or is creating. Also: sweep() reaps sandboxes past their TTL or
// idle timeout, and not one that still runs an exec.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { createLogger, parseConfig, sandboxHostConfigSchema } from '@hako/core';
import { leaseDir, resourceName } from '@hako/sandbox';
import type { BuiltSandboxHost } from '@hako/sandbox';
import type { SandboxManager } from '../../src/sandbox-manager.js';
import type { SandboxRecordStore } from '../../src/sandbox-registry.js';
import type { SandboxRecord } from '../../src/sandbox-registry.js';
import type { ExecInput, GcResult } from '../../src/backend.js';
import { createInput, execInput, newTestManager } from '../helpers/test-manager.js';
import { cgroupRoots, createTestHost } from '../../../sandbox/test/helpers/test-host.js';

const th = createTestHost();
const config = parseConfig(sandboxHostConfigSchema, th.env);
const env = th.hakoEnv;
const logger = createLogger({ level: 'warn', name: 'test' });
const built: BuiltSandboxHost[] = [];
const managers: SandboxManager[] = [];
const envRunDir = join(config.HAKO_RUN_DIR, env);
const recordsDir = join(envRunDir, '.agent');
const cniStateDir = join(config.HAKO_STATE_DIR, 'cni');
const leases = leaseDir(cniStateDir, env);
let runtimeName = '';
let runtimeRoot = '';

interface Hakod {
  readonly m: SandboxManager;
  readonly b: BuiltSandboxHost;
  readonly records: SandboxRecordStore;
}

/** A hakod's manager on this test env (each with its own SandboxHost, like a separate process). */
async function newHakod(pool: { min: number; max: number }): Promise<Hakod> {
  const h = await newTestManager(config, logger, { poolMin: pool.min, poolMax: pool.max });
  built.push(h.b);
  runtimeName = h.b.runtimeName;
  runtimeRoot = join(envRunDir, `.${h.b.runtimeName}`);
  managers.push(h.m);
  return h;
}

const create = createInput;
const execIn = (id: string, argv: string[]): ExecInput => execInput(id, argv);

async function run(m: SandboxManager, id: string, argv: string[]) {
  const h = await m.exec(execIn(id, argv));
  const [stdout, exit] = await Promise.all([buffer(h.stdout), h.exit, buffer(h.stderr)]);
  return { stdout: stdout.toString(), code: exit.code };
}

async function assertExecs(m: SandboxManager, id: string): Promise<void> {
  assert.deepEqual(await run(m, id, ['sh', '-c', 'echo alive']), { stdout: 'alive\n', code: 0 });
}

/** Waits until the manager starts no sandbox and its warm pool stopped changing. */
async function poolSettled(m: SandboxManager): Promise<void> {
  let last = -1;
  let stable = 0;
  for (let i = 0; i < 150 && stable < 3; i++) {
    await new Promise((r) => setTimeout(r, 200));
    const warm = m.warmCount();
    stable = m.counts().creating === 0 && warm === last ? stable + 1 : 0;
    last = warm;
  }
  assert.equal(stable, 3, 'the warm pool settled within 30 s');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------- host observations
// read straight from the kernel and the tools, not through the code under test

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

interface RuntimeEntry {
  id: string;
  status: string;
  pid: number;
}

function runtimeContainers(): RuntimeEntry[] {
  if (!existsSync(runtimeRoot)) return [];
  const out = sh(runtimeName, ['--root', runtimeRoot, 'list', '--format', 'json']).trim();
  return out === '' || out === 'null' ? [] : (JSON.parse(out) as RuntimeEntry[]);
}

function hostLinks(): Set<string> {
  const names = new Set<string>();
  for (const line of sh('ip', ['-o', 'link', 'show']).split('\n')) {
    const m = /^\d+:\s+([^:@\s]+)[@:]/.exec(line);
    if (m?.[1]) names.add(m[1]);
  }
  return names;
}

/** Lease files (by IP) and the container id on each one's first line. */
function leaseOwners(): Map<string, string> {
  const out = new Map<string, string>();
  if (!existsSync(leases)) return out;
  for (const f of readdirSync(leases)) {
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(f)) continue;
    out.set(f, readFileSync(join(leases, f), 'utf8').split('\n')[0]?.trim() ?? '');
  }
  return out;
}

function mountPoints(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter(Boolean);
}

/** Paths under the state dir (not the image store) whose name mentions `name`. */
function stateFilesOf(name: string): string[] {
  const dir = config.HAKO_STATE_DIR;
  return sh('find', [dir, '-path', join(dir, 'images'), '-prune', '-o', '-name', `*${name}*`, '-print'])
    .split('\n')
    .filter(Boolean);
}

interface Expect {
  readonly name: string;
  readonly id: string;
  /** Egress sandboxes: the host veth and leased address. */
  readonly hostVeth?: string | undefined;
  readonly ip?: string | undefined;
}

function expectOf(r: SandboxRecord): Expect {
  return { name: resourceName(env, r.id), id: r.id, hostVeth: r.hostVeth, ip: r.ip };
}

/**
 * The egress identities a host keeps ready (SandboxHost): a netns of this env with a bundle that
 * holds only the owner record, and no sandbox record. A crashed hakod leaves them as orphans.
 */
function readyIdentities(recs: readonly SandboxRecord[]): Expect[] {
  const prefix = `hako-${env}-`;
  const recorded = new Set(recs.map((r) => resourceName(env, r.id)));
  return (existsSync('/run/netns') ? readdirSync('/run/netns') : [])
    .filter(
      (n) =>
        n.startsWith(prefix) &&
        !recorded.has(n) &&
        !foreign.netns.includes(n) &&
        existsSync(join(envRunDir, n, 'owner.json')) &&
        !existsSync(join(envRunDir, n, 'config.json')),
    )
    .map((n) => ({ name: n, id: n.slice(prefix.length) }));
}

/** What of each sandbox is still on the host (one line per piece). */
function piecesOf(sbs: readonly Expect[]): string[] {
  const found: string[] = [];
  const containers = new Map(runtimeContainers().map((c) => [c.id, c]));
  const links = hostLinks();
  const owners = leaseOwners();
  const mounts = mountPoints();
  const loops = sh('losetup', ['-a']);
  for (const s of sbs) {
    if (containers.has(s.name)) found.push(`${s.name}: container`);
    if (existsSync(`/run/netns/${s.name}`)) found.push(`${s.name}: netns`);
    if (s.hostVeth && links.has(s.hostVeth)) found.push(`${s.name}: veth ${s.hostVeth}`);
    if (s.ip && owners.has(s.ip)) found.push(`${s.name}: lease ${s.ip}`);
    for (const [ip, owner] of owners) if (owner === s.name) found.push(`${s.name}: lease ${ip} (by owner)`);
    for (const root of cgroupRoots()) {
      const p = join(root, 'hako', env, s.name);
      if (existsSync(p)) found.push(`${s.name}: cgroup ${p}`);
    }
    for (const mp of mounts) if (mp.includes(s.name)) found.push(`${s.name}: mount ${mp}`);
    if (loops.includes(s.name)) found.push(`${s.name}: loop device`);
    for (const f of stateFilesOf(s.name)) found.push(`${s.name}: state ${f}`);
    if (existsSync(join(envRunDir, s.name))) found.push(`${s.name}: bundle`);
    if (existsSync(join(recordsDir, `${s.id}.json`))) found.push(`${s.name}: record`);
  }
  return found;
}

/** Asserts the sandboxes are fully on the host before a GC (so the GC has something to remove). */
function assertWhole(sbs: readonly Expect[]): void {
  for (const s of sbs) {
    const p = piecesOf([s]);
    const kinds = ['container', 'bundle', 'cgroup', 'state', 'record'];
    if (s.hostVeth) kinds.push('netns', 'veth', 'lease');
    for (const kind of kinds)
      assert.ok(
        p.some((l) => l.startsWith(`${s.name}: ${kind}`)),
        `${s.name} has its ${kind}: ${p.join('; ')}`,
      );
  }
}

function byName(r: GcResult): Map<string, string[]> {
  return new Map(r.removed.map((x) => [x.name, [...x.kinds].sort()]));
}

// ---------------------------------------------------------------------------- foreign look-alikes

/** Things on this host that look like hako's in one way but are not hakod's. */
const foreign = {
  dir: '',
  /** Name `hako-{env}-{id}` but no created-by annotation. */
  prefixOnly: resourceName(env, randomBytes(6).toString('hex')),
  /** created-by=hakod, but the name is not `hako-{env}-…`. */
  labelOnly: [
    `other-${env}-${randomBytes(6).toString('hex')}`,
    `hako-o${env}-${randomBytes(6).toString('hex')}`,
  ],
  /** netns nobody of hakod's owns: one named like a sandbox, one like the prefix-only container, one other. */
  netns: [] as string[],
  leaseIp: '',
  leaseOwner: `foreign-${randomBytes(6).toString('hex')}`,
  started: [] as string[],
};

function runForeignContainer(name: string, annotations: Record<string, string>): void {
  const bundle = join(foreign.dir, name);
  const rootfs = join(bundle, 'rootfs');
  mkdirSync(rootfs, { recursive: true });
  for (const d of ['usr', 'proc', 'dev', 'tmp']) mkdirSync(join(rootfs, d));
  for (const l of ['bin', 'lib', 'lib64', 'sbin']) symlinkSync(`usr/${l}`, join(rootfs, l));
  // `spec` writes a default config.json into the working directory
  const gen = spawnSync(runtimeName, ['spec'], { cwd: bundle, encoding: 'utf8' });
  if (gen.status !== 0) throw new Error(`${runtimeName} spec failed: ${gen.stderr}`);
  const spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as {
    process: { terminal: boolean; args: string[] };
    hostname: string;
    mounts: unknown[];
    annotations?: Record<string, string>;
    linux: { cgroupsPath?: string; namespaces: { type: string }[] };
  };
  spec.process.terminal = false;
  spec.process.args = ['/usr/bin/sleep', '600'];
  spec.hostname = 'foreign';
  spec.mounts = [
    { destination: '/proc', type: 'proc', source: 'proc' },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755', 'size=1m'] },
    { destination: '/usr', type: 'bind', source: '/usr', options: ['rbind', 'ro'] },
  ];
  spec.linux.namespaces = spec.linux.namespaces.filter((n) => n.type !== 'cgroup');
  spec.annotations = annotations;
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
  const log = join(bundle, 'run.log');
  const fd = openSync(log, 'w');
  try {
    const cg = runtimeName === 'crun' ? ['--cgroup-manager=disabled'] : [];
    const r = spawnSync(
      runtimeName,
      ['--root', runtimeRoot, ...cg, 'run', '--detach', '--bundle', bundle, name],
      { stdio: ['ignore', 'ignore', fd] },
    );
    if (r.status !== 0) throw new Error(`${runtimeName} run ${name} failed: ${readFileSync(log, 'utf8')}`);
  } finally {
    closeSync(fd);
  }
  foreign.started.push(name);
}

function plantForeign(): void {
  foreign.dir = mkdtempSync(join(tmpdir(), 'hako-gc-foreign-'));
  runForeignContainer(foreign.prefixOnly, { 'hako.env': env, 'hako.id': foreign.prefixOnly.slice(-12) });
  for (const n of foreign.labelOnly) runForeignContainer(n, { 'hako.created-by': 'hakod', 'hako.env': env });
  foreign.netns = [
    resourceName(env, randomBytes(6).toString('hex')),
    foreign.prefixOnly,
    `foreign-${randomBytes(4).toString('hex')}`,
  ];
  for (const n of foreign.netns) sh('ip', ['netns', 'add', n]);
  // an unused address near the end of the env's range, leased to somebody else's container
  foreign.leaseIp = th.subnet.replace(/\.0\/24$/, '.250');
  mkdirSync(leases, { recursive: true });
  writeFileSync(join(leases, foreign.leaseIp), `${foreign.leaseOwner}\r\neth0`);
}

function removeForeign(): void {
  for (const n of foreign.started) {
    spawnSync(runtimeName, ['--root', runtimeRoot, 'delete', '--force', n], { stdio: 'ignore' });
  }
  for (const n of foreign.netns) spawnSync('ip', ['netns', 'delete', n], { stdio: 'ignore' });
  if (foreign.leaseIp) rmSync(join(leases, foreign.leaseIp), { force: true });
  if (foreign.dir) rmSync(foreign.dir, { recursive: true, force: true });
}

/** Every foreign look-alike is still there, its containers still running. */
function assertForeignIntact(): void {
  const containers = new Map(runtimeContainers().map((c) => [c.id, c]));
  for (const n of [foreign.prefixOnly, ...foreign.labelOnly]) {
    const c = containers.get(n);
    assert.equal(c?.status, 'running', `foreign container ${n} still runs`);
    assert.doesNotThrow(() => process.kill(c.pid, 0), `foreign container ${n}'s process is alive`);
  }
  for (const n of foreign.netns)
    assert.ok(existsSync(`/run/netns/${n}`), `foreign netns ${n} is still there`);
  assert.equal(leaseOwners().get(foreign.leaseIp), foreign.leaseOwner, 'the foreign lease is still there');
  assert.ok(existsSync(join(foreign.dir, foreign.prefixOnly, 'config.json')), 'foreign bundles are intact');
}

function assertNoForeignIn(r: GcResult): void {
  const all = [...r.removed.map((x) => x.name), ...r.failed.map((x) => x.name)];
  for (const n of [...foreign.labelOnly, ...foreign.netns]) assert.ok(!all.includes(n), `GC names ${n}`);
}

before(async () => {
  // a host built first makes the runtime root, state dirs and names known
  const first = await newHakod({ min: 0, max: 0 });
  await first.m.close({ destroyAll: true });
  plantForeign();
});

after(async () => {
  for (const m of managers) await m.close({ destroyAll: true }).catch(() => undefined);
  removeForeign();
  for (const b of built) await b.close().catch(() => undefined);
  await th.teardown();
  assert.deepEqual(th.leftovers(), []);
});

// ---------------------------------------------------------------------------- tests

test("a crashed hakod's sandboxes: dry run lists them and removes nothing; GC removes every piece; foreign look-alikes survive", async () => {
  const a = await newHakod({ min: 0, max: 1 });
  const e1 = await a.m.createSandbox(create({ network: 'egress' }));
  const e2 = await a.m.createSandbox(create({ network: 'egress' }));
  const n1 = await a.m.createSandbox(create());
  for (const s of [e1, e2, n1]) await assertExecs(a.m, s.id);
  await poolSettled(a.m);
  // everything hakod holds has a record (claimed and warm): that is the set GC must find
  const recs = (await a.records.list()).records;
  const orphans = recs.map(expectOf).sort((x, y) => x.name.localeCompare(y.name));
  const ids = new Set(recs.map((r) => r.id));
  for (const s of [e1, e2, n1]) assert.ok(ids.has(s.id), `${s.id} has a record`);
  for (const s of [e1, e2]) assert.ok(recs.find((r) => r.id === s.id)?.hostVeth, 'egress has a host veth');
  const egress = new Set(recs.filter((r) => r.network === 'egress').map((r) => resourceName(env, r.id)));
  assertWhole(orphans);
  // e2's task is already gone (as when hakod died mid-destroy): its network must still be detached
  const e2name = resourceName(env, e2.id);
  sh(runtimeName, ['--root', runtimeRoot, 'delete', '--force', e2name]);
  // `a` is dropped without close(), as after SIGKILL (its proxy dies with the process); the egress
  // identities it kept ready are orphans too
  await a.b.host.settled();
  const identities = readyIdentities(recs);
  assert.ok(identities.length > 0, 'the host kept egress identities ready');
  orphans.push(...identities);
  await a.b.proxy.close();

  const b = await newHakod({ min: 0, max: 0 });
  for (const p of ['other', 'hak', `hako-${env}`, 'HAKO']) {
    const r = await b.m.garbageCollect(p, false);
    assert.deepEqual([r.removed, r.failed], [[], []], `prefix ${p} removes nothing`);
  }
  const expectKinds = (name: string): string[] =>
    identities.some((x) => x.name === name)
      ? ['bundle', 'netns']
      : [
          ...(name === e2name ? [] : ['container']),
          'bundle',
          'cgroup',
          'quota',
          ...(egress.has(name) ? ['netns'] : []),
        ].sort();
  const expected = new Map(orphans.map((o) => [o.name, expectKinds(o.name)]));

  const dry = await b.m.garbageCollect('hako', true);
  assert.deepEqual(dry.failed, []);
  assert.deepEqual(byName(dry), expected);
  assertNoForeignIn(dry);
  assert.equal(
    runtimeContainers().filter((c) => expected.has(c.id)).length,
    orphans.length - 1 - identities.length,
    'dry run deleted nothing',
  );
  assertWhole(orphans.filter((o) => o.name !== e2name && !identities.includes(o)));

  const real = await b.m.garbageCollect('', false);
  assert.deepEqual(real.failed, []);
  assert.deepEqual(byName(real), expected);
  assertNoForeignIn(real);
  assert.deepEqual(piecesOf(orphans), [], 'nothing of the orphans is left');
  assertForeignIntact();

  const again = await b.m.garbageCollect('hako', false);
  assert.deepEqual([again.removed, again.failed], [[], []], 'a second GC finds nothing');
  assertForeignIntact();
});

test('foreign look-alikes survive GC next to a real orphan: only the prefix, only the label, foreign netns and lease', async () => {
  assertForeignIntact();
  const a = await newHakod({ min: 0, max: 0 });
  const s = await a.m.createSandbox(create({ network: 'egress' }));
  await assertExecs(a.m, s.id);
  const recs = (await a.records.list()).records;
  const orphan = expectOf(recs.find((r) => r.id === s.id)!);
  assertWhole([orphan]);
  await a.b.host.settled();
  const orphans = [orphan, ...readyIdentities(recs)];
  const names = orphans.map((o) => o.name).sort();
  await a.b.proxy.close();
  const b = await newHakod({ min: 0, max: 0 });
  const dry = await b.m.garbageCollect('hako', true);
  assert.deepEqual(
    dry.removed.map((x) => x.name).sort(),
    names,
    "the dry run lists only the orphan (and its host's egress identities), none of the look-alikes",
  );
  const r = await b.m.garbageCollect('hako', false);
  assert.deepEqual(r.failed, []);
  assert.deepEqual(r.removed.map((x) => x.name).sort(), names);
  assert.deepEqual(piecesOf(orphans), []);
  assertForeignIntact();
});

test("a manager's own GC leaves what it holds alone: claimed, warm, and sandboxes being created", async () => {
  const h = await newHakod({ min: 1, max: 2 });
  try {
    h.m.warm('host', {}, 'none');
    const c1 = await h.m.createSandbox(create({ network: 'egress' }));
    const c2 = await h.m.createSandbox(create());
    await poolSettled(h.m);
    assert.ok(h.m.warmCount() >= 1, 'a warm sandbox waits');
    let r = await h.m.garbageCollect('hako', false);
    assert.deepEqual([r.removed, r.failed], [[], []]);

    // GC over and over while a cold create (its own profile) and the pool refill are under way
    const pending = h.m.createSandbox(create({ limits: { pids: 77 }, network: 'egress' }));
    let settled = false;
    void pending.then(
      () => (settled = true),
      () => (settled = true),
    );
    let gcs = 0;
    while (!settled) {
      r = await h.m.garbageCollect('hako', false);
      gcs++;
      assert.deepEqual([r.removed, r.failed], [[], []], 'GC during a create removes nothing');
    }
    const c3 = await pending;
    assert.ok(gcs >= 1);
    await poolSettled(h.m);
    r = await h.m.garbageCollect('hako', false);
    assert.deepEqual([r.removed, r.failed], [[], []]);

    for (const s of [c1, c2, c3]) await assertExecs(h.m, s.id);
    const recs = (await h.records.list()).records;
    const warm = recs.filter((x) => x.ownerId === '');
    assert.equal(warm.length, h.m.warmCount());
    const running = new Map(runtimeContainers().map((c) => [c.id, c.status]));
    for (const x of recs) assert.equal(running.get(resourceName(env, x.id)), 'running', `${x.id} runs`);
    assertWhole(recs.map(expectOf));
    // a warm one is still usable: a matching create claims it and it runs
    const claimed = await h.m.createSandbox(create());
    assert.equal(claimed.fromPool, true);
    await assertExecs(h.m, claimed.id);
    await h.m.close({ destroyAll: true });
    assert.deepEqual(piecesOf(recs.map(expectOf)), [], 'close(destroyAll) left nothing');
    assertForeignIntact();
  } finally {
    await h.m.close({ destroyAll: true });
    await h.b.close();
  }
});

test('sweep reaps sandboxes past their TTL or idle timeout, not one with a running exec; GC in it spares the rest', async () => {
  const h = await newHakod({ min: 0, max: 0 });
  try {
    const ttl = await h.m.createSandbox(create({ ttlSeconds: 1, network: 'egress' }));
    const idle = await h.m.createSandbox(create({ idleTimeoutSeconds: 1 }));
    const busy = await h.m.createSandbox(create({ idleTimeoutSeconds: 1 }));
    const keep = await h.m.createSandbox(create());
    const recs = new Map((await h.records.list()).records.map((r) => [r.id, expectOf(r)]));
    const ex = (id: string): Expect => recs.get(id)!;
    assert.ok(ex(ttl.id).hostVeth);
    // an exec keeps `busy` from being idle; TTL ends `ttl` even while it runs one
    const long = await h.m.exec(execIn(busy.id, ['sleep', '60']));
    const ttlLong = await h.m.exec(execIn(ttl.id, ['sleep', '60']));
    await sleep(1500);

    const first = await h.m.sweep();
    assert.deepEqual([...first.expired].sort(), [ttl.id, idle.id].sort());
    assert.equal((await ttlLong.exit).reason, 'sandbox_gone');
    assert.deepEqual(piecesOf([ex(ttl.id), ex(idle.id)]), [], 'nothing of the reaped sandboxes is left');
    await assert.rejects(h.m.getSandbox('tenant-a', ttl.id), { code: 'SANDBOX_NOT_FOUND' });
    assertWhole([ex(busy.id), ex(keep.id)]);
    await assertExecs(h.m, keep.id);
    await assertExecs(h.m, busy.id);

    // once its exec ends and it sits idle past its timeout, `busy` goes too
    long.signal('KILL');
    assert.equal((await long.exit).code, 137);
    await sleep(1200);
    const second = await h.m.sweep();
    assert.deepEqual(second.expired, [busy.id]);
    assert.deepEqual(piecesOf([ex(busy.id)]), []);
    await assertExecs(h.m, keep.id);
    assertWhole([ex(keep.id)]);
    assertForeignIntact();

    await h.m.close({ destroyAll: true });
    assert.deepEqual(piecesOf([ex(keep.id)]), []);
  } finally {
    await h.m.close({ destroyAll: true });
    await h.b.close();
  }
});

test("a CNI result write cut short by a crash (writeAtomic's temporary file) is hakod's and goes with GC", async () => {
  const a = await newHakod({ min: 0, max: 0 });
  const s = await a.m.createSandbox(create({ network: 'egress' }));
  await a.m.destroySandbox('tenant-a', s.id);
  await a.b.host.settled(); // its workspace volume is unmounted in the background
  const name = resourceName(env, s.id);
  assert.deepEqual(stateFilesOf(name), [], 'the destroy left nothing');
  const tmp = join(config.HAKO_STATE_DIR, 'cni', 'results', `${name}.json.4242.tmp`);
  writeFileSync(tmp, '{"cniVersion":');
  const r = await a.m.garbageCollect('hako', false);
  assert.deepEqual(r.failed, []);
  assert.deepEqual(byName(r).get(name), ['netns']);
  assert.equal(existsSync(tmp), false, 'the temporary result file was removed');
  assertForeignIntact();
});

test("a bundle whose owner record never landed (only writeAtomic's temporary file) goes with GC; one holding other files stays", async () => {
  const a = await newHakod({ min: 0, max: 0 });
  const cutShort = resourceName(env, randomBytes(6).toString('hex'));
  const unknown = resourceName(env, randomBytes(6).toString('hex'));
  mkdirSync(join(envRunDir, cutShort), { recursive: true });
  writeFileSync(join(envRunDir, cutShort, 'owner.json.4242.tmp'), '{"pid":');
  mkdirSync(join(envRunDir, unknown), { recursive: true });
  writeFileSync(join(envRunDir, unknown, 'owner.json'), '{"pid":');
  writeFileSync(join(envRunDir, unknown, 'config.json'), '{}');
  try {
    const r = await a.m.garbageCollect('hako', false);
    assert.deepEqual(r.failed, []);
    assert.deepEqual(byName(r).get(cutShort), ['bundle']);
    assert.equal(existsSync(join(envRunDir, cutShort)), false, 'the cut-short bundle was removed');
    assert.equal(byName(r).get(unknown), undefined);
    assert.equal(
      existsSync(join(envRunDir, unknown, 'config.json')),
      true,
      'an unreadable record with more beside it is left alone',
    );
  } finally {
    rmSync(join(envRunDir, cutShort), { recursive: true, force: true });
    rmSync(join(envRunDir, unknown), { recursive: true, force: true });
  }
  assertForeignIntact();
});
