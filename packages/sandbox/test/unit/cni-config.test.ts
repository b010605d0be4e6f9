import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '@hako/core';
import { buildConflist, leaseDir, resolveIpamRange } from '../../src/cni-config.js';
import { renderPolicy, renderRemoval, sandboxPortGroup } from '../../src/nftables-policy.js';

function subnetError(fn: () => unknown): AppError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof AppError, `expected AppError, got ${String(err)}`);
    assert.equal(err.code, 'CNI_SUBNET_INVALID');
    return err;
  }
  assert.fail('expected CNI_SUBNET_INVALID');
}

test('derives gateway and range from the subnet', () => {
  const r = resolveIpamRange({ subnet: '10.209.0.0/23' });
  assert.equal(r.subnet, '10.209.0.0/23');
  assert.equal(r.prefixLength, 23);
  assert.equal(r.gateway, '10.209.0.1');
  assert.equal(r.rangeStart, '10.209.0.2');
  assert.equal(r.rangeEnd, '10.209.1.254');
});

test('derives for the smallest allowed subnet (/30)', () => {
  const r = resolveIpamRange({ subnet: '10.0.0.4/30' });
  assert.equal(r.gateway, '10.0.0.5');
  assert.equal(r.rangeStart, '10.0.0.6');
  assert.equal(r.rangeEnd, '10.0.0.6');
});

test('empty strings count as unset', () => {
  const r = resolveIpamRange({ subnet: '10.2.0.0/24', rangeStart: '', rangeEnd: '', gateway: '' });
  assert.equal(r.rangeStart, '10.2.0.2');
});

test('accepts an explicit, consistent range and gateway', () => {
  const r = resolveIpamRange({
    subnet: '10.2.0.0/24',
    gateway: '10.2.0.254',
    rangeStart: '10.2.0.10',
    rangeEnd: '10.2.0.200',
  });
  assert.deepEqual(
    { g: r.gateway, s: r.rangeStart, e: r.rangeEnd },
    { g: '10.2.0.254', s: '10.2.0.10', e: '10.2.0.200' },
  );
});

test('rejects a range start outside the subnet, naming both values (seed P0-1)', () => {
  const e = subnetError(() => resolveIpamRange({ subnet: '10.2.0.0/24', rangeStart: '10.1.0.5' }));
  assert.match(e.message, /CNI_RANGE_START=10\.1\.0\.5 is outside CNI_SUBNET=10\.2\.0\.0\/24/);
});

test('rejects a range end and a gateway outside the subnet, all in one message', () => {
  const e = subnetError(() =>
    resolveIpamRange({
      subnet: '10.2.0.0/24',
      rangeStart: '10.3.0.2',
      rangeEnd: '10.3.0.9',
      gateway: '10.9.9.9',
    }),
  );
  assert.match(e.message, /CNI_RANGE_START=10\.3\.0\.2 is outside/);
  assert.match(e.message, /CNI_RANGE_END=10\.3\.0\.9 is outside/);
  assert.match(e.message, /CNI_GATEWAY=10\.9\.9\.9 is outside/);
});

test('rejects a subnet that is not a network address', () => {
  const e = subnetError(() => resolveIpamRange({ subnet: '10.0.0.5/24' }));
  assert.match(e.message, /CNI_SUBNET=10\.0\.0\.5\/24/);
  assert.match(e.message, /10\.0\.0\.0\/24/);
});

test('rejects subnets that are too small or malformed', () => {
  assert.match(
    subnetError(() => resolveIpamRange({ subnet: '10.0.0.0/31' })).message,
    /CNI_SUBNET=10\.0\.0\.0\/31 is too small/,
  );
  assert.match(
    subnetError(() => resolveIpamRange({ subnet: '10.0.0.1/32' })).message,
    /CNI_SUBNET=10\.0\.0\.1\/32/,
  );
  assert.match(subnetError(() => resolveIpamRange({ subnet: '0.0.0.0/0' })).message, /too large/);
  assert.match(subnetError(() => resolveIpamRange({ subnet: 'banana' })).message, /CNI_SUBNET=banana/);
  assert.match(
    subnetError(() => resolveIpamRange({ subnet: '10.0.0.0/40' })).message,
    /CNI_SUBNET=10\.0\.0\.0\/40/,
  );
});

test('rejects start after end', () => {
  const e = subnetError(() =>
    resolveIpamRange({ subnet: '10.2.0.0/24', rangeStart: '10.2.0.100', rangeEnd: '10.2.0.50' }),
  );
  assert.match(e.message, /CNI_RANGE_START=10\.2\.0\.100 is after CNI_RANGE_END=10\.2\.0\.50/);
});

test('rejects a gateway inside the lease range, also against derived bounds', () => {
  const e = subnetError(() =>
    resolveIpamRange({
      subnet: '10.2.0.0/24',
      gateway: '10.2.0.20',
      rangeStart: '10.2.0.10',
      rangeEnd: '10.2.0.30',
    }),
  );
  assert.match(e.message, /CNI_GATEWAY=10\.2\.0\.20 is inside the lease range CNI_RANGE_START=10\.2\.0\.10/);
  const d = subnetError(() => resolveIpamRange({ subnet: '10.2.0.0/24', gateway: '10.2.0.2' }));
  assert.match(
    d.message,
    /CNI_GATEWAY=10\.2\.0\.2 is inside .*CNI_RANGE_START=10\.2\.0\.2 \(derived from CNI_SUBNET\)/,
  );
});

test('rejects network and broadcast addresses as gateway or range bounds', () => {
  assert.match(
    subnetError(() => resolveIpamRange({ subnet: '10.2.0.0/24', gateway: '10.2.0.0' })).message,
    /CNI_GATEWAY=10\.2\.0\.0 is the network address/,
  );
  assert.match(
    subnetError(() => resolveIpamRange({ subnet: '10.2.0.0/24', rangeEnd: '10.2.0.255' })).message,
    /CNI_RANGE_END=10\.2\.0\.255 is the broadcast address/,
  );
  assert.match(
    subnetError(() =>
      resolveIpamRange({ subnet: '10.2.0.0/24', rangeStart: '10.2.0.0', gateway: '10.2.0.254' }),
    ).message,
    /CNI_RANGE_START=10\.2\.0\.0 is the network address/,
  );
});

test('rejects values that are not addresses', () => {
  const e = subnetError(() =>
    resolveIpamRange({ subnet: '10.2.0.0/24', gateway: '10.2.0.300', rangeStart: 'x' }),
  );
  assert.match(e.message, /CNI_GATEWAY=10\.2\.0\.300 is not an IPv4 address/);
  assert.match(e.message, /CNI_RANGE_START=x is not an IPv4 address/);
});

test('the conflist: bridge without masquerade, host-local with the exact subnet and our dataDir', () => {
  const c = buildConflist({
    env: 'dev',
    bridge: 'hako0',
    subnet: '10.209.0.0/23',
    stateDir: '/var/lib/hako/cni',
  });
  assert.equal(c.cniVersion, '1.0.0');
  assert.equal(c.name, 'hako-dev');
  assert.equal(c.plugins.length, 1);
  const p = c.plugins[0] as Record<string, unknown>;
  assert.equal(p.type, 'bridge');
  assert.equal(p.bridge, 'hako0');
  assert.equal(p.isGateway, true);
  assert.equal(p.ipMasq, false);
  assert.equal(p.hairpinMode, false);
  assert.deepEqual(p.ipam, {
    type: 'host-local',
    ranges: [
      [
        {
          subnet: '10.209.0.0/23',
          rangeStart: '10.209.0.2',
          rangeEnd: '10.209.1.254',
          gateway: '10.209.0.1',
        },
      ],
    ],
    dataDir: '/var/lib/hako/cni/ipam',
  });
  assert.equal((p.ipam as Record<string, unknown>).routes, undefined);
  assert.equal(leaseDir('/var/lib/hako/cni', 'dev'), '/var/lib/hako/cni/ipam/hako-dev');
  // the conflist survives a JSON round trip unchanged (it is written to disk and sent on stdin)
  assert.deepEqual(JSON.parse(JSON.stringify(c)), c);
});

test('the conflist rejects a bad range, env or bridge name', () => {
  subnetError(() =>
    buildConflist({
      env: 'dev',
      bridge: 'hako0',
      subnet: '10.2.0.0/24',
      rangeStart: '10.1.0.5',
      stateDir: '/x',
    }),
  );
  assert.throws(
    () => buildConflist({ env: 'Dev!', bridge: 'hako0', subnet: '10.2.0.0/24', stateDir: '/x' }),
    (e: unknown) => e instanceof AppError && e.code === 'CONFIG_INVALID',
  );
  assert.throws(
    () =>
      buildConflist({ env: 'dev', bridge: 'a-bridge-name-too-long', subnet: '10.2.0.0/24', stateDir: '/x' }),
    (e: unknown) => e instanceof AppError && e.code === 'CONFIG_INVALID',
  );
});

test('the nftables policy script: per-env tables, replace-on-apply, proxy ports only on the gateway', () => {
  const script = renderPolicy({
    env: 'dev',
    bridge: 'hako0',
    gateway: '10.209.0.1',
    proxyPorts: { first: 3128, count: 32 },
  });
  const lines = script.split('\n').map((l) => l.trim());
  // add + delete first, so re-applying replaces the tables in the same transaction
  assert.deepEqual(lines.slice(0, 4), [
    'add table bridge hako_dev',
    'delete table bridge hako_dev',
    'add table inet hako_dev',
    'delete table inet hako_dev',
  ]);
  assert.ok(lines.includes('iifname "hako0" ip daddr 10.209.0.1 tcp dport 3128-3159 ct state new accept'));
  assert.ok(lines.includes('iifname "hako0" drop'));
  assert.ok(lines.includes('oifname "hako0" drop'));
  assert.ok(lines.includes(`meta iifgroup ${sandboxPortGroup('dev')} drop`));
  assert.equal(
    renderPolicy({
      env: 'dev',
      bridge: 'hako0',
      gateway: '10.209.0.1',
      proxyPorts: { first: 3128, count: 1 },
    }).includes('tcp dport 3128 ct state new accept'),
    true,
  );
  assert.notEqual(sandboxPortGroup('dev'), sandboxPortGroup('prod'));
  assert.equal(renderRemoval('dev').includes('delete table inet hako_dev'), true);
  assert.throws(() =>
    renderPolicy({
      env: 'dev',
      bridge: 'br"; flush ruleset',
      gateway: '10.0.0.1',
      proxyPorts: { first: 1, count: 1 },
    }),
  );
  assert.throws(() =>
    renderPolicy({
      env: 'dev',
      bridge: 'hako0',
      gateway: '10.0.0.1',
      proxyPorts: { first: 65535, count: 2 },
    }),
  );
});
