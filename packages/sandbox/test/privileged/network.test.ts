// The sandbox network against the real kernel: real netns, the real CNI bridge + host-local
// plugins, real nftables. Every name (env, bridge, subnet, ports) is unique to this run, and
// everything is removed in after(), even on failure. All traffic stays inside namespaces and a
// bridge this test creates.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, createConnection } from 'node:net';
import type { Server } from 'node:net';
import { createSocket } from 'node:dgram';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, randomInt } from 'node:crypto';
import { AppError, silentLogger } from '@hako/core';
import { CniNetworkManager } from '../../src/network-manager.js';
import { NftablesPolicy, policyTableName, sandboxPortGroup } from '../../src/nftables-policy.js';
import { leaseDir } from '../../src/cni-config.js';
import { runTool } from '../../src/cni-plugin.js';
import type { NetworkAttachment } from '../../src/types.js';

function rand(n: number): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const bytes = randomBytes(n);
  return [...bytes].map((b) => alphabet[b % alphabet.length]).join('');
}

const env = `t${rand(6)}`;
const bridge = `hkt${rand(5)}`;
// 10.2xx.y.0/24, avoiding the default 10.209.0.0/23
let second = 200 + randomInt(56);
if (second === 209) second = 210;
const third = randomInt(256);
const subnet = `10.${second}.${third}.0/24`;
// a second, routed network for the forwarding test: 10.{second}.{third ^ 1}.0/30
const outerHost = `10.${second}.${third ^ 1}.1`;
const outerPeer = `10.${second}.${third ^ 1}.2`;
const proxyFirst = 20000 + randomInt(20000);
const proxyPorts = { first: proxyFirst, count: 2 };
const name = (id: string): string => `hako-${env}-${id}${rand(6)}`;

let stateDir = '';
let scratch = '';
let net: CniNetworkManager;
let ipForwardBefore = '';
const extraNetns: string[] = [];
const extraLinks: string[] = [];
const children: ChildProcess[] = [];
const servers: Server[] = [];
const closers: (() => void)[] = [];

async function sh(
  file: string,
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runTool(file, args);
}

async function mustSh(file: string, args: string[]): Promise<string> {
  const r = await sh(file, args);
  assert.equal(r.code, 0, `${file} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function linkExists(dev: string): Promise<boolean> {
  return (await sh('ip', ['link', 'show', 'dev', dev])).code === 0;
}

async function nftTables(): Promise<string> {
  return mustSh('nft', ['list', 'tables']);
}

function ipToNum(ip: string): number {
  return ip.split('.').reduce((a, o) => a * 256 + Number(o), 0);
}

/** Listens on host:port (TCP) and greets every connection with `greeting`. */
async function tcpServer(host: string, port: number, greeting: string): Promise<Server> {
  const srv = createServer((s) => {
    s.on('error', () => undefined);
    s.end(greeting);
  });
  servers.push(srv);
  srv.listen(port, host);
  await once(srv, 'listening');
  return srv;
}

const PROBE = `
const [kind, host, port] = process.argv.slice(2);
const done = (code, what) => { process.stdout.write(what); process.exit(code); };
setTimeout(() => done(2, 'timeout'), 1500);
if (kind === 'tcp') {
  const s = require('net').connect({ host, port: Number(port) });
  let got = '';
  s.on('data', (d) => { got += d; });
  s.on('end', () => done(0, 'data:' + got));
  s.on('error', (e) => done(1, e.code || String(e)));
} else {
  const u = require('dgram').createSocket(host.includes(':') ? 'udp6' : 'udp4');
  u.on('message', (m) => done(0, 'data:' + m));
  u.on('error', (e) => done(1, e.code || String(e)));
  u.send('ping', Number(port), host);
}
`;

interface Probe {
  readonly code: number | null;
  readonly out: string;
}

/** Connects from inside netns `ns`: 0 = reached (greeting in out), 1 = error (e.g. refused), 2 = silently dropped. */
async function probe(ns: string, kind: 'tcp' | 'udp', host: string, port: number): Promise<Probe> {
  const r = await sh('ip', [
    'netns',
    'exec',
    ns,
    process.execPath,
    join(scratch, 'probe.cjs'),
    kind,
    host,
    String(port),
  ]);
  return { code: r.code, out: r.stdout + r.stderr };
}

/** Connects from the host (root netns). */
async function hostConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createConnection({ host, port });
    let got = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`host connect to ${host}:${port} timed out`));
    }, 3000);
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('end', () => {
      clearTimeout(timer);
      resolve(got);
    });
    s.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** Starts a TCP greeter inside netns `ns` on 0.0.0.0:port and waits until it listens. */
async function netnsServer(ns: string, port: number, greeting: string): Promise<void> {
  const code = `require('net').createServer((s)=>{s.on('error',()=>{});s.end(${JSON.stringify(greeting)})}).listen(${port},'0.0.0.0',()=>console.log('ready'))`;
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`listener in ${ns} did not start: ${err}`)), 10_000);
    child.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (c) => {
      clearTimeout(timer);
      reject(new Error(`listener in ${ns} exited with ${c}: ${err}`));
    });
  });
}

/** The MAC address netns `ns` has resolved for `ip`, if any. */
async function neighbourMac(ns: string, ip: string): Promise<string | undefined> {
  const out = JSON.parse(await mustSh('ip', ['-n', ns, '-j', 'neigh', 'show', 'to', ip])) as {
    lladdr?: string;
  }[];
  return out.find((e) => e.lladdr)?.lladdr;
}

/** The bridge's IPv6 link-local address once DAD is done (undefined if IPv6 is off). */
async function bridgeLinkLocal(): Promise<string | undefined> {
  for (let i = 0; i < 50; i++) {
    const out = JSON.parse(
      await mustSh('ip', ['-j', '-6', 'addr', 'show', 'dev', bridge, 'scope', 'link']),
    ) as {
      addr_info?: { local: string; tentative?: boolean }[];
    }[];
    const a = out[0]?.addr_info?.find((x) => !x.tentative);
    if (a) return a.local;
    await new Promise((r) => setTimeout(r, 100));
  }
  return undefined;
}

before(async () => {
  assert.equal(process.getuid?.(), 0, 'privileged tests must run as root');
  ipForwardBefore = (await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')).trim();
  stateDir = await mkdtemp(join(tmpdir(), `hako-net-${env}-`));
  scratch = await mkdtemp(join(tmpdir(), `hako-net-scratch-${env}-`));
  await writeFile(join(scratch, 'probe.cjs'), PROBE);
  net = new CniNetworkManager({
    env,
    bridge,
    subnet,
    pluginDirs: ['/usr/lib/cni', '/opt/cni/bin'],
    stateDir,
    proxyPorts,
    logger: silentLogger(),
  });
  await net.init();
});

after(async () => {
  const problems: string[] = [];
  for (const c of children) c.kill('SIGKILL');
  for (const s of servers) s.close();
  for (const c of closers) c();
  for (const ns of await readdir('/run/netns').catch(() => [] as string[])) {
    if (ns.startsWith(`hako-${env}-`)) await net.del(ns).catch((e: Error) => problems.push(e.message));
  }
  for (const ns of extraNetns) await sh('ip', ['netns', 'delete', ns]);
  for (const l of extraLinks) await sh('ip', ['link', 'delete', 'dev', l]);
  await net.teardown().catch((e: Error) => problems.push(e.message));
  await writeFile('/proc/sys/net/ipv4/ip_forward', ipForwardBefore);
  await rm(stateDir, { recursive: true, force: true });
  await rm(scratch, { recursive: true, force: true });
  assert.deepEqual(problems, []);
});

test('init writes the conflist and applies both nftables tables', async () => {
  const conf = JSON.parse(await readFile(join(stateDir, `hako-${env}.conflist`), 'utf8')) as {
    plugins: { ipam: { ranges: { subnet: string }[][] } }[];
  };
  assert.equal(conf.plugins[0]?.ipam.ranges[0]?.[0]?.subnet, subnet);
  const tables = await nftTables();
  assert.match(tables, new RegExp(`^table inet ${policyTableName(env)}$`, 'm'));
  assert.match(tables, new RegExp(`^table bridge ${policyTableName(env)}$`, 'm'));
  // idempotent: a second init replaces the tables instead of failing or duplicating rules
  await net.init();
  const ruleset = await mustSh('nft', ['list', 'table', 'inet', policyTableName(env)]);
  assert.equal(ruleset.match(/tcp dport/g)?.length, 1);
});

test('add leases inside the range with lo up; CHECK passes; DEL removes lease, netns and veth; DEL again succeeds', async (t) => {
  const a = name('a');
  const b = name('b');
  const range = net.ipam;
  let atA: NetworkAttachment | undefined;
  try {
    atA = await net.add(a);
    const atB = await net.add(b);
    for (const at of [atA, atB]) {
      assert.equal(at.gateway, range.gateway);
      assert.equal(at.prefixLength, 24);
      assert.ok(
        ipToNum(at.ip) >= ipToNum(range.rangeStart) && ipToNum(at.ip) <= ipToNum(range.rangeEnd),
        at.ip,
      );
      assert.equal(at.netnsPath, `/run/netns/${at.netnsName}`);
      assert.ok(await exists(at.netnsPath));
      // lease file written by host-local under our stateDir, owned by this sandbox
      const lease = await readFile(join(leaseDir(stateDir, env), at.ip), 'utf8');
      assert.equal(lease.split(/\r?\n/)[0], at.netnsName);
      // loopback is up inside the netns, eth0 holds the lease
      const lo = JSON.parse(await mustSh('ip', ['-n', at.netnsName, '-j', 'link', 'show', 'dev', 'lo'])) as {
        flags: string[];
      }[];
      assert.ok(lo[0]?.flags.includes('UP'), `lo flags: ${lo[0]?.flags.join(',')}`);
      const eth = await mustSh('ip', ['-n', at.netnsName, '-4', 'addr', 'show', 'dev', 'eth0']);
      assert.match(eth, new RegExp(`inet ${at.ip.replace(/\./g, '\\.')}/24`));
      // the host veth is a port of our bridge, marked with the env's port group
      assert.ok(at.hostVeth);
      const veth = JSON.parse(await mustSh('ip', ['-j', 'link', 'show', 'dev', at.hostVeth])) as {
        master?: string;
        group?: string;
      }[];
      assert.equal(veth[0]?.master, bridge);
      assert.equal(veth[0]?.group, String(sandboxPortGroup(env)));
    }
    assert.notEqual(atA.ip, atB.ip);
    assert.deepEqual((await net.list()).filter((n) => n === a || n === b).sort(), [a, b].sort());

    await net.check(a);

    await net.del(a);
    assert.equal(await exists(atA.netnsPath), false, 'netns removed');
    assert.equal(await exists(join(leaseDir(stateDir, env), atA.ip)), false, 'lease released');
    assert.equal(await linkExists(atA.hostVeth ?? ''), false, 'host veth gone');
    assert.equal(await exists(join(stateDir, 'results', `${a}.json`)), false, 'cached result removed');
    assert.ok(!(await net.list()).includes(a));
    await net.del(a); // second DEL: idempotent
    await net.del(name('never')); // DEL for something never added
    await assert.rejects(
      net.check(a),
      (e: unknown) => e instanceof AppError && e.code === 'NETWORK_SETUP_FAILED',
    );
    await net.del(b);
    assert.equal(await exists(atB.netnsPath), false);

    // rough timing of add() and del(), averaged over a few rounds
    const rounds = 5;
    let addMs = 0;
    let delMs = 0;
    for (let i = 0; i < rounds; i++) {
      const n = name('p');
      const t0 = performance.now();
      await net.add(n);
      const t1 = performance.now();
      await net.del(n);
      addMs += t1 - t0;
      delMs += performance.now() - t1;
    }
    t.diagnostic(
      `network add() ~${(addMs / rounds).toFixed(1)} ms, del() ~${(delMs / rounds).toFixed(1)} ms (mean of ${rounds})`,
    );
  } finally {
    await net.del(a).catch(() => undefined);
    await net.del(b).catch(() => undefined);
  }
});

test('a sandbox reaches only the proxy ports on the gateway: not other ports, host loopback, UDP, IPv6 link-local or another sandbox', async () => {
  const a = name('a');
  const b = name('b');
  const policy = new NftablesPolicy({ env, bridge, gateway: net.gateway, proxyPorts }, silentLogger());
  try {
    const atA = await net.add(a);
    const atB = await net.add(b);
    const gw = net.gateway;
    const other = proxyFirst + 2; // first port past the allowed range
    const below = proxyFirst - 1;
    const wildcard = proxyFirst + 3;
    const loopbackPort = proxyFirst + 4;
    const udpPort = proxyFirst + 5;
    const v6Port = proxyFirst + 6;
    const bPort = proxyFirst + 7;
    await tcpServer(gw, proxyFirst, 'proxy0');
    await tcpServer(gw, proxyFirst + 1, 'proxy1');
    await tcpServer(gw, other, 'other');
    await tcpServer(gw, below, 'below');
    await tcpServer('0.0.0.0', wildcard, 'wild');
    await tcpServer('127.0.0.1', loopbackPort, 'loop');
    const udp = createSocket('udp4');
    closers.push(() => udp.close());
    udp.on('message', (_m, rinfo) => udp.send('pong', rinfo.port, rinfo.address));
    udp.bind(udpPort, gw);
    await once(udp, 'listening');
    const v6 = await bridgeLinkLocal();
    assert.ok(v6, `bridge ${bridge} has no IPv6 link-local address`);
    await tcpServer('::', v6Port, 'v6');
    await netnsServer(b, bPort, 'B');
    // controls: the host reaches B's listener and its own v6 listener, so the services are up
    assert.equal(await hostConnect(atB.ip, bPort), 'B');
    assert.equal(await hostConnect(`${v6}%${bridge}`, v6Port), 'v6');

    const blocked = async (): Promise<Record<string, Probe>> => {
      const [toOther, toBelow, toWild, toLoop, toUdp, toV6, toB] = await Promise.all([
        probe(a, 'tcp', gw, other),
        probe(a, 'tcp', gw, below),
        probe(a, 'tcp', gw, wildcard),
        probe(a, 'tcp', '127.0.0.1', loopbackPort),
        probe(a, 'udp', gw, udpPort),
        probe(a, 'tcp', `${v6}%eth0`, v6Port),
        probe(a, 'tcp', atB.ip, bPort),
      ]);
      return { toOther, toBelow, toWild, toLoop, toUdp, toV6, toB };
    };

    // allowed: both proxy ports on the gateway
    assert.deepEqual(await probe(a, 'tcp', gw, proxyFirst), { code: 0, out: 'data:proxy0' });
    assert.deepEqual(await probe(a, 'tcp', gw, proxyFirst + 1), { code: 0, out: 'data:proxy1' });
    let r = await blocked();
    for (const [k, p] of Object.entries(r)) assert.notEqual(p.code, 0, `${k} should be blocked: ${p.out}`);
    // the gateway's other ports are dropped silently (a refusal would mean the host stack saw the SYN)
    assert.equal(r.toOther?.out, 'timeout');
    assert.equal(r.toWild?.out, 'timeout');
    assert.equal(r.toV6?.out, 'timeout');
    // the block is at L2 too: A never even resolves B's MAC (ARP is no IP, so only the bridge table stops it)
    assert.equal(await neighbourMac(a, atB.ip), undefined, 'ARP between sandboxes must not resolve');

    // control: without the policy the same probes get through, so the policy is what stops them
    await policy.remove();
    r = await blocked();
    assert.equal(r.toOther?.out, 'data:other');
    assert.equal(r.toWild?.out, 'data:wild');
    assert.equal(r.toUdp?.out, 'data:pong');
    assert.equal(r.toV6?.out, 'data:v6');
    assert.equal(r.toB?.out, 'data:B');
    assert.ok(await neighbourMac(a, atB.ip), 'without the policy ARP resolves');
    // host loopback stays out of reach regardless (the sandbox's 127.0.0.1 is its own lo)
    assert.notEqual(r.toLoop?.code, 0);

    // re-applying restores the lockdown for sandboxes that are already attached
    await net.init();
    r = await blocked();
    for (const [k, p] of Object.entries(r))
      assert.notEqual(p.code, 0, `${k} should be blocked again: ${p.out}`);
    assert.deepEqual(await probe(a, 'tcp', gw, proxyFirst), { code: 0, out: 'data:proxy0' });
    assert.ok(atA.ip);
  } finally {
    await policy.apply();
    await net.del(a).catch(() => undefined);
    await net.del(b).catch(() => undefined);
  }
});

test('nothing is routed from the bridge even with net.ipv4.ip_forward=1', async () => {
  const a = name('a');
  const outerNs = `hkt-${env}-outer`;
  const outerVeth = `hko${rand(8)}`;
  const port = proxyFirst + 20;
  const forwardBefore = (await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')).trim();
  const policy = new NftablesPolicy({ env, bridge, gateway: net.gateway, proxyPorts }, silentLogger());
  try {
    // a routed network of the test's own: host ${outerHost} <-> ${outerPeer} in netns outerNs
    await mustSh('ip', ['netns', 'add', outerNs]);
    extraNetns.push(outerNs);
    await mustSh('ip', ['link', 'add', outerVeth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', outerNs]);
    extraLinks.push(outerVeth);
    await mustSh('ip', ['addr', 'add', `${outerHost}/30`, 'dev', outerVeth]);
    await mustSh('ip', ['link', 'set', 'dev', outerVeth, 'up']);
    await mustSh('ip', ['-n', outerNs, 'addr', 'add', `${outerPeer}/30`, 'dev', 'eth0']);
    await mustSh('ip', ['-n', outerNs, 'link', 'set', 'dev', 'eth0', 'up']);
    await mustSh('ip', ['-n', outerNs, 'link', 'set', 'dev', 'lo', 'up']);
    await mustSh('ip', ['-n', outerNs, 'route', 'add', 'default', 'via', outerHost]);
    await netnsServer(outerNs, port, 'outer');
    assert.equal(await hostConnect(outerPeer, port), 'outer');

    await net.add(a);
    // root inside the test's sandbox netns can add a default route; a real sandbox cannot, but the
    // policy must hold even if it could
    await mustSh('ip', ['-n', a, 'route', 'add', 'default', 'via', net.gateway]);
    await writeFile('/proc/sys/net/ipv4/ip_forward', '1');

    const blocked = await probe(a, 'tcp', outerPeer, port);
    assert.notEqual(blocked.code, 0, `forwarded despite the policy: ${blocked.out}`);
    assert.equal(blocked.out, 'timeout');

    // control: without the policy, the same route works, so the forward chain is what stops it
    await policy.remove();
    assert.deepEqual(await probe(a, 'tcp', outerPeer, port), { code: 0, out: 'data:outer' });
    await net.init();
    assert.equal((await probe(a, 'tcp', outerPeer, port)).out, 'timeout');
  } finally {
    await policy.apply();
    await writeFile('/proc/sys/net/ipv4/ip_forward', forwardBefore);
    await net.del(a).catch(() => undefined);
    await sh('ip', ['netns', 'delete', outerNs]);
    await sh('ip', ['link', 'delete', 'dev', outerVeth]);
  }
  assert.equal(await linkExists(outerVeth), false);
});

test('a failed ADD (plugin fails after creating the veth and lease) leaves no netns, lease, veth or result', async () => {
  const a = name('f');
  const fakeDir = join(scratch, 'fake-plugins');
  const marker = join(scratch, 'real-add-result.json');
  await rm(fakeDir, { recursive: true, force: true });
  await mkdir(fakeDir);
  // a "bridge" that runs the real one (so a veth and a lease really exist), then reports failure
  await writeFile(
    join(fakeDir, 'bridge'),
    [
      '#!/bin/sh',
      'conf=$(cat)',
      'if [ "$CNI_COMMAND" = ADD ]; then',
      `  printf '%s' "$conf" | /usr/lib/cni/bridge > ${marker} || exit 1`,
      `  echo '{"cniVersion":"1.0.0","code":999,"msg":"injected failure after a real ADD","details":"test"}'`,
      '  exit 1',
      'fi',
      `printf '%s' "$conf" | /usr/lib/cni/bridge`,
      '',
    ].join('\n'),
  );
  await chmod(join(fakeDir, 'bridge'), 0o755);
  const failing = new CniNetworkManager({
    env,
    bridge,
    subnet,
    pluginDirs: [fakeDir, '/usr/lib/cni'],
    stateDir,
    proxyPorts,
    logger: silentLogger(),
  });
  try {
    await failing.init();
    await assert.rejects(failing.add(a), (e: unknown) => {
      assert.ok(e instanceof AppError);
      assert.equal(e.code, 'NETWORK_SETUP_FAILED');
      assert.match(e.message, /code 999/);
      assert.match(e.message, /injected failure after a real ADD/);
      return true;
    });
    // the real plugin did create a veth and a lease before the failure ...
    const real = JSON.parse(await readFile(marker, 'utf8')) as {
      interfaces: { name: string; sandbox?: string }[];
      ips: { address: string }[];
    };
    const ip = real.ips[0]?.address.split('/')[0] ?? '';
    const veth = real.interfaces.find((i) => !i.sandbox && i.name !== bridge)?.name ?? '';
    assert.ok(ip && veth, 'the real ADD ran');
    // ... and the rollback removed them all
    assert.equal(await exists(`/run/netns/${a}`), false, 'netns removed');
    assert.equal(await exists(join(leaseDir(stateDir, env), ip)), false, 'lease released');
    assert.equal(await linkExists(veth), false, 'veth removed');
    assert.equal(await exists(join(stateDir, 'results', `${a}.json`)), false);
    assert.ok(!(await failing.list()).includes(a));
  } finally {
    await net.del(a).catch(() => undefined);
  }
});

test('add refuses a netns that already exists and leaves it alone', async () => {
  const a = name('x');
  await mustSh('ip', ['netns', 'add', a]);
  extraNetns.push(a);
  try {
    await assert.rejects(
      net.add(a),
      (e: unknown) => e instanceof AppError && /already exists/.test(e.message),
    );
    assert.equal(await exists(`/run/netns/${a}`), true, 'a netns hako did not create is not deleted');
    assert.equal(
      (await readdir(leaseDir(stateDir, env))).some((f) => /^\d/.test(f)),
      false,
      'no lease was taken',
    );
  } finally {
    await sh('ip', ['netns', 'delete', a]);
  }
});

test('names outside the env are refused', async () => {
  await assert.rejects(
    net.add('hako-otherenv-abcdefgh'),
    (e: unknown) => e instanceof AppError && e.code === 'INVALID_ARGUMENT',
  );
  await assert.rejects(
    net.del('../../etc'),
    (e: unknown) => e instanceof AppError && e.code === 'INVALID_ARGUMENT',
  );
});

test('teardown removes the tables and the bridge, and nothing of this test is left', async () => {
  const a = name('z');
  const at = await net.add(a);
  await net.del(a);
  assert.equal(await linkExists(at.hostVeth ?? ''), false);
  assert.equal(await linkExists(bridge), true, 'the bridge existed before teardown');
  await net.teardown();
  await net.teardown(); // idempotent
  assert.doesNotMatch(await nftTables(), new RegExp(policyTableName(env)));
  assert.equal(await linkExists(bridge), false, 'bridge removed');
  const links = await mustSh('ip', ['-o', 'link', 'show']);
  assert.doesNotMatch(links, new RegExp(`master ${bridge}\\b`));
  assert.doesNotMatch(links, new RegExp(`group ${sandboxPortGroup(env)}\\b`));
  const netns = await mustSh('ip', ['netns', 'list']);
  assert.doesNotMatch(netns, new RegExp(env));
  assert.deepEqual(await net.list(), []);
  assert.equal(await exists(join(stateDir, `hako-${env}.conflist`)), false);
});
