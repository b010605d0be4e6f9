import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError, GrpcStatus } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import { resolveInvokeTarget } from '../../src/invoke-worker.js';
import type { InvokeSandboxView, InvokeTargetLookup, InvokeTargetRequest } from '../../src/invoke-worker.js';

// A /24 with the usual layout: .0 network, .1 gateway, .255 broadcast, sandboxes from .2.
const NET = { subnet: '10.213.7.0/24', gateway: '10.213.7.1' };

const SANDBOXES: InvokeSandboxView[] = [
  { id: 'hako-t-aaaaaa', ownerId: 'alice', ip: '10.213.7.10', running: true },
  { id: 'hako-t-bbbbbb', ownerId: 'bob', ip: '10.213.7.11', running: true },
  // Stopped: its record still carries the address it had.
  { id: 'hako-t-cccccc', ownerId: 'alice', ip: '10.213.7.12', running: false },
  // Network mode none.
  { id: 'hako-t-dddddd', ownerId: 'alice', ip: undefined, running: true },
  // Unclaimed warm-pool sandbox.
  { id: 'hako-t-eeeeee', ownerId: '', ip: '10.213.7.14', running: true },
  // A corrupt record whose address is the gateway.
  { id: 'hako-t-ffffff', ownerId: 'alice', ip: '10.213.7.1', running: true },
  // A record whose address lies outside the subnet.
  { id: 'hako-t-gggggg', ownerId: 'alice', ip: '10.99.0.5', running: true },
];

function lookup(list: readonly InvokeSandboxView[] = SANDBOXES): InvokeTargetLookup {
  return {
    byId: (id) => list.find((s) => s.id === id),
    byIp: (ip) => list.find((s) => s.ip === ip),
  };
}

function req(partial: Partial<InvokeTargetRequest>): InvokeTargetRequest {
  return { ownerId: 'alice', containerId: '', ipAddress: '', port: 0, ...partial };
}

function assertCode(fn: () => unknown, code: ErrorCode, grpc?: keyof typeof GrpcStatus): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof AppError, `expected an AppError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (grpc !== undefined) assert.equal(err.grpcStatus, GrpcStatus[grpc]);
    return true;
  });
}

test('container_id of a running sandbox of the caller resolves to its address on 8080', () => {
  assert.deepEqual(resolveInvokeTarget(req({ containerId: 'hako-t-aaaaaa' }), lookup(), NET), {
    sandboxId: 'hako-t-aaaaaa',
    ip: '10.213.7.10',
    port: 8080,
  });
});

test('container_id with a matching ip_address and port 8080 is accepted', () => {
  const t = resolveInvokeTarget(
    req({ containerId: 'hako-t-aaaaaa', ipAddress: '10.213.7.10', port: 8080 }),
    lookup(),
    NET,
  );
  assert.deepEqual(t, { sandboxId: 'hako-t-aaaaaa', ip: '10.213.7.10', port: 8080 });
});

test('container_id wins, but an ip_address or port that disagrees with it is forbidden', () => {
  assertCode(
    () =>
      resolveInvokeTarget(
        req({ containerId: 'hako-t-aaaaaa', ipAddress: '10.213.7.11', port: 8080 }),
        lookup(),
        NET,
      ),
    'INVOKE_TARGET_FORBIDDEN',
    'PERMISSION_DENIED',
  );
  assertCode(
    () => resolveInvokeTarget(req({ containerId: 'hako-t-aaaaaa', port: 22 }), lookup(), NET),
    'INVOKE_TARGET_FORBIDDEN',
  );
  assertCode(
    () => resolveInvokeTarget(req({ containerId: 'hako-t-aaaaaa', ipAddress: '127.0.0.1' }), lookup(), NET),
    'INVOKE_TARGET_FORBIDDEN',
  );
});

test('container_id: unknown → SANDBOX_NOT_FOUND, another owner → PERMISSION_DENIED', () => {
  assertCode(
    () => resolveInvokeTarget(req({ containerId: 'hako-t-zzzzzz' }), lookup(), NET),
    'SANDBOX_NOT_FOUND',
    'NOT_FOUND',
  );
  assertCode(
    () => resolveInvokeTarget(req({ containerId: 'hako-t-bbbbbb' }), lookup(), NET),
    'PERMISSION_DENIED',
    'PERMISSION_DENIED',
  );
  // An unclaimed pool sandbox has no owner and is nobody's target.
  assertCode(
    () => resolveInvokeTarget(req({ containerId: 'hako-t-eeeeee' }), lookup(), NET),
    'PERMISSION_DENIED',
  );
});

test('container_id: not running → SANDBOX_STATE_INVALID, no network → INVOKE_TARGET_FORBIDDEN', () => {
  assertCode(
    () => resolveInvokeTarget(req({ containerId: 'hako-t-cccccc' }), lookup(), NET),
    'SANDBOX_STATE_INVALID',
    'FAILED_PRECONDITION',
  );
  assertCode(
    () => resolveInvokeTarget(req({ containerId: 'hako-t-dddddd' }), lookup(), NET),
    'INVOKE_TARGET_FORBIDDEN',
  );
});

test("container_id: hakod's own record is checked too (gateway, outside the subnet)", () => {
  assertCode(
    () => resolveInvokeTarget(req({ containerId: 'hako-t-ffffff' }), lookup(), NET),
    'INVOKE_TARGET_FORBIDDEN',
  );
  assertCode(
    () => resolveInvokeTarget(req({ containerId: 'hako-t-gggggg' }), lookup(), NET),
    'INVOKE_TARGET_FORBIDDEN',
  );
});

test('ip_address + port 8080 of a running sandbox of the caller is accepted (seed compatibility)', () => {
  assert.deepEqual(resolveInvokeTarget(req({ ipAddress: '10.213.7.10', port: 8080 }), lookup(), NET), {
    sandboxId: 'hako-t-aaaaaa',
    ip: '10.213.7.10',
    port: 8080,
  });
});

test('ip_address path: every refused target is INVOKE_TARGET_FORBIDDEN (PERMISSION_DENIED)', () => {
  // Each case names the reason it must be refused for, so a case cannot pass by tripping an
  // earlier rule. The network/broadcast cases put a live sandbox record on that address to show
  // they are refused by rule and not only because nothing lives there.
  const alice = (ip: string): InvokeSandboxView[] => [{ id: 'x', ownerId: 'alice', ip, running: true }];
  const NOT_MINE = /not the address of a running sandbox of yours/;
  const cases: [label: string, ip: string, port: number, reason: RegExp, list?: InvokeSandboxView[]][] = [
    ['outside the range', '10.213.8.10', 8080, /outside CNI_SUBNET/, alice('10.213.8.10')],
    ['outside the range (private elsewhere)', '192.168.1.10', 8080, /outside CNI_SUBNET/],
    ['cloud metadata', '169.254.169.254', 8080, /outside CNI_SUBNET/],
    ['0.0.0.0', '0.0.0.0', 8080, /outside CNI_SUBNET/],
    ['the gateway', '10.213.7.1', 8080, /gateway/],
    ['the gateway even if a record claims it', '10.213.7.1', 8080, /gateway/, alice('10.213.7.1')],
    ['loopback', '127.0.0.1', 8080, /loopback/, alice('127.0.0.1')],
    ['loopback elsewhere in 127/8', '127.1.2.3', 8080, /loopback/],
    ['a stopped sandbox’s old address', '10.213.7.12', 8080, NOT_MINE],
    ['a free address in the range', '10.213.7.200', 8080, NOT_MINE],
    ['another owner’s sandbox', '10.213.7.11', 8080, NOT_MINE],
    ['an unclaimed pool sandbox', '10.213.7.14', 8080, NOT_MINE],
    ['another port', '10.213.7.10', 8081, /port 8081 is not the worker port/],
    ['ssh port', '10.213.7.10', 22, /port 22 is not the worker port/],
    ['port missing', '10.213.7.10', 0, /port 0 is not the worker port/],
    ['the network address', '10.213.7.0', 8080, /network address/, alice('10.213.7.0')],
    ['the broadcast address', '10.213.7.255', 8080, /broadcast address/, alice('10.213.7.255')],
    ['leading zero', '010.213.7.10', 8080, /canonical/, alice('010.213.7.10')],
    ['leading zero in last octet', '10.213.7.010', 8080, /canonical/],
    ['IPv4-mapped IPv6', '::ffff:10.213.7.10', 8080, /canonical/],
    ['IPv6 loopback', '::1', 8080, /canonical/],
    ['host name', 'localhost', 8080, /canonical/],
    ['host name in range by DNS', 'worker.internal', 8080, /canonical/],
    ['trailing space', '10.213.7.10 ', 8080, /canonical/, alice('10.213.7.10 ')],
    ['leading space', ' 10.213.7.10', 8080, /canonical/],
    ['with port', '10.213.7.10:8080', 8080, /canonical/],
    ['three octets', '10.213.7', 8080, /canonical/],
    ['integer form', '181733130', 8080, /canonical/],
    ['hex octet', '0x0a.213.7.10', 8080, /canonical/],
    ['octet over 255', '10.213.7.256', 8080, /canonical/],
    ['with CIDR', '10.213.7.10/32', 8080, /canonical/],
  ];
  for (const [label, ip, port, reason, list] of cases) {
    assert.throws(
      () => resolveInvokeTarget(req({ ipAddress: ip, port }), lookup(list), NET),
      (err: unknown) => {
        assert.ok(err instanceof AppError, label);
        assert.equal(err.code, 'INVOKE_TARGET_FORBIDDEN', `${label}: ${err.message}`);
        assert.equal(err.grpcStatus, GrpcStatus.PERMISSION_DENIED, label);
        assert.match(err.message, reason, label);
        return true;
      },
      label,
    );
  }
});

test('ip_address path: a sandbox whose address moved is refused at the old address', () => {
  // byIp may be implemented from a stale index; the view's current ip must still match.
  const moved: InvokeTargetLookup = {
    byId: () => undefined,
    byIp: () => ({ id: 'hako-t-aaaaaa', ownerId: 'alice', ip: '10.213.7.50', running: true }),
  };
  assertCode(
    () => resolveInvokeTarget(req({ ipAddress: '10.213.7.10', port: 8080 }), moved, NET),
    'INVOKE_TARGET_FORBIDDEN',
  );
});

test('the refusal for another owner and for an empty address read the same (no probing)', () => {
  const messageOf = (ip: string): string => {
    try {
      resolveInvokeTarget(req({ ipAddress: ip, port: 8080 }), lookup(), NET);
    } catch (err) {
      return (err as Error).message.replace(ip, '<ip>');
    }
    return 'accepted';
  };
  assert.equal(messageOf('10.213.7.11'), messageOf('10.213.7.200'));
  assert.equal(messageOf('10.213.7.12'), messageOf('10.213.7.200'));
});

test('/31 and /32 subnets have no network or broadcast address to refuse', () => {
  const net31 = { subnet: '10.213.9.0/31', gateway: '10.213.9.0' };
  const only = [{ id: 's', ownerId: 'alice', ip: '10.213.9.1', running: true }];
  assert.equal(
    resolveInvokeTarget(req({ ipAddress: '10.213.9.1', port: 8080 }), lookup(only), net31).ip,
    '10.213.9.1',
  );
  assertCode(
    () => resolveInvokeTarget(req({ ipAddress: '10.213.9.0', port: 8080 }), lookup(only), net31),
    'INVOKE_TARGET_FORBIDDEN',
  );
});

test('neither container_id nor ip_address, or no owner → INVALID_ARGUMENT', () => {
  assertCode(() => resolveInvokeTarget(req({}), lookup(), NET), 'INVALID_ARGUMENT', 'INVALID_ARGUMENT');
  assertCode(() => resolveInvokeTarget(req({ port: 8080 }), lookup(), NET), 'INVALID_ARGUMENT');
  assertCode(
    () => resolveInvokeTarget(req({ ownerId: '', containerId: 'hako-t-eeeeee' }), lookup(), NET),
    'INVALID_ARGUMENT',
  );
  assertCode(
    () => resolveInvokeTarget(req({ ownerId: '', ipAddress: '10.213.7.14', port: 8080 }), lookup(), NET),
    'INVALID_ARGUMENT',
  );
});

test('undefined fields mean "not given", like proto3 defaults', () => {
  const t = resolveInvokeTarget(
    { ownerId: 'alice', containerId: 'hako-t-aaaaaa', ipAddress: undefined, port: undefined },
    lookup(),
    NET,
  );
  assert.equal(t.ip, '10.213.7.10');
});

test('a broken network config is CONFIG_INVALID, not a silent allow', () => {
  assertCode(
    () =>
      resolveInvokeTarget(req({ containerId: 'hako-t-aaaaaa' }), lookup(), {
        subnet: '10.213.7.5/24',
        gateway: '10.213.7.1',
      }),
    'CONFIG_INVALID',
  );
  assertCode(
    () =>
      resolveInvokeTarget(req({ containerId: 'hako-t-aaaaaa' }), lookup(), {
        subnet: '10.213.7.0/24',
        gateway: 'gw',
      }),
    'CONFIG_INVALID',
  );
});
