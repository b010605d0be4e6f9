import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '@hako/core';
import {
  canonicalIp,
  classifyAddress,
  decide,
  needsResolution,
  parseAllowEntry,
  parseAllowlist,
  socketIp,
} from '../../src/egress-policy.js';

const PUBLIC = ['93.184.216.34'];

function allowed(
  entries: readonly string[],
  host: string,
  port: number,
  resolved: readonly string[] = PUBLIC,
): boolean {
  return decide(parseAllowlist(entries), host, port, resolved).allow;
}

function reasonOf(
  entries: readonly string[],
  host: string,
  port: number,
  resolved: readonly string[],
): string {
  const d = decide(parseAllowlist(entries), host, port, resolved);
  assert.equal(d.allow, false, `expected ${host}:${port} to be denied`);
  return d.reason;
}

test('parses names, wildcards, IPv4, bracketed IPv6 and the * port', () => {
  assert.deepEqual(parseAllowEntry('api.anthropic.com:443'), {
    text: 'api.anthropic.com:443',
    host: { kind: 'name', name: 'api.anthropic.com' },
    port: 443,
  });
  assert.deepEqual(parseAllowEntry('*.example.com:*').host, { kind: 'wildcard', suffix: 'example.com' });
  assert.equal(parseAllowEntry('*.example.com:*').port, '*');
  assert.deepEqual(parseAllowEntry('127.0.0.1:8080').host, { kind: 'ip', address: '127.0.0.1' });
  assert.deepEqual(parseAllowEntry('[2001:DB8:0:0:0:0:0:1]:443'), {
    text: '[2001:db8::1]:443',
    host: { kind: 'ip', address: '2001:db8::1' },
    port: 443,
  });
  assert.deepEqual(parseAllowEntry('[::ffff:10.0.0.1]:80').host, { kind: 'ip', address: '::ffff:10.0.0.1' });
});

test('entries are case-insensitive and ignore a trailing dot', () => {
  assert.equal(parseAllowEntry('API.Example.COM.:443').text, 'api.example.com:443');
  assert.equal(parseAllowEntry('*.Example.Com.:1').text, '*.example.com:1');
  assert.ok(allowed(['Example.COM:443'], 'example.com.', 443));
  assert.ok(allowed(['example.com.:443'], 'EXAMPLE.com', 443));
});

test('malformed entries are rejected with INVALID_ARGUMENT naming the entry', () => {
  const bad = [
    '',
    'example.com',
    'example.com:',
    ':443',
    'example.com:0',
    'example.com:65536',
    'example.com:http',
    'example.com:-1',
    'example.com:44 3',
    '*:443',
    '*',
    'foo*.example.com:443',
    'a.*.example.com:443',
    '*.*.example.com:443',
    '*.:443',
    '::1:443',
    '2001:db8::1:443',
    '[2001:db8::1]',
    '[2001:db8::1]443',
    '[2001:db8::1:443',
    '[example.com]:443',
    '[1.2.3.4]:443',
    '[fe80::1%eth0]:443',
    '256.1.1.1:80',
    '01.2.3.4:80',
    '2130706433:80',
    '1.2.3:80',
    '-bad.example.com:443',
    'bad-.example.com:443',
    'under_score.example.com:443',
    'exa mple.com:443',
    `${'a'.repeat(64)}.com:443`,
    'http://example.com:443',
  ];
  for (const entry of bad) {
    assert.throws(
      () => parseAllowEntry(entry),
      (err: unknown) =>
        err instanceof AppError && err.code === 'INVALID_ARGUMENT' && err.message.includes(`"${entry}"`),
      `entry ${JSON.stringify(entry)} should be rejected`,
    );
  }
  assert.throws(() => parseAllowlist(['example.com:443', 'nope']), /"nope"/);
});

test('exact names match only themselves, on the listed port', () => {
  const list = ['example.com:443'];
  assert.ok(allowed(list, 'example.com', 443));
  assert.equal(allowed(list, 'example.com', 80), false);
  assert.equal(allowed(list, 'www.example.com', 443), false);
  assert.equal(allowed(list, 'example.com.evil.net', 443), false);
  assert.equal(allowed(list, 'notexample.com', 443), false);
  assert.equal(reasonOf(list, 'example.com', 80, PUBLIC), 'no allowlist entry matches');
});

test('a wildcard matches subdomains at any depth but not the apex', () => {
  const list = ['*.example.com:443'];
  assert.ok(allowed(list, 'api.example.com', 443));
  assert.ok(allowed(list, 'a.b.example.com', 443));
  assert.equal(allowed(list, 'example.com', 443), false);
  assert.equal(allowed(list, 'badexample.com', 443), false);
  assert.equal(allowed(list, 'api.example.com', 444), false);
  assert.ok(allowed(['example.com:443', '*.example.com:443'], 'example.com', 443));
});

test('port * allows any port for that host only', () => {
  assert.ok(allowed(['example.com:*'], 'example.com', 1));
  assert.ok(allowed(['example.com:*'], 'example.com', 65535));
  assert.equal(allowed(['example.com:*'], 'other.com', 443), false);
  assert.equal(allowed(['example.com:*'], 'example.com', 0), false);
  assert.equal(allowed(['example.com:*'], 'example.com', 65536), false);
});

test('an empty allowlist allows nothing', () => {
  assert.equal(allowed([], 'example.com', 443), false);
  assert.equal(allowed([], '1.1.1.1', 443), false);
});

test('a name entry is denied when the name resolves to a loopback or private address', () => {
  const list = ['internal.example.com:80'];
  const cases: [string, string][] = [
    ['127.0.0.1', 'loopback'],
    ['127.8.9.10', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'shared'],
    ['100.127.255.254', 'shared'],
    ['169.254.169.254', 'link-local'],
    ['169.254.1.1', 'link-local'],
    ['0.0.0.0', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['255.255.255.255', 'reserved'],
    ['::1', 'loopback'],
    ['::', 'unspecified'],
    ['fc00::1', 'private'],
    ['fd12:3456::1', 'private'],
    ['fe80::1', 'link-local'],
    ['febf::1', 'link-local'],
    ['ff02::1', 'multicast'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['::ffff:169.254.169.254', 'link-local'],
    ['::ffff:10.0.0.1', 'private'],
    ['64:ff9b::a9fe:a9fe', 'link-local'],
    ['2002:c0a8:101::1', 'private'],
  ];
  for (const [ip, cls] of cases) {
    const reason = reasonOf(list, 'internal.example.com', 80, [ip]);
    assert.match(reason, new RegExp(`resolves to ${cls} address`), `${ip}: ${reason}`);
  }
});

test('ANY private address among the resolved ones denies, even next to public ones', () => {
  const list = ['*.example.com:443'];
  assert.equal(allowed(list, 'a.example.com', 443, ['93.184.216.34', '10.0.0.5']), false);
  assert.equal(allowed(list, 'a.example.com', 443, ['169.254.169.254', '93.184.216.34']), false);
  assert.equal(allowed(list, 'a.example.com', 443, ['2606:2800:220:1::1', 'fe80::1']), false);
});

test('a matching name that did not resolve, or resolved to garbage, is denied', () => {
  assert.match(reasonOf(['example.com:443'], 'example.com', 443, []), /did not resolve/);
  assert.match(reasonOf(['example.com:443'], 'example.com', 443, ['not-an-ip']), /not an IP address/);
  assert.match(reasonOf(['example.com:443'], 'example.com', 443, ['fe80::1%eth0']), /not an IP address/);
});

test('public resolutions are allowed and returned as the addresses to connect to', () => {
  const d = decide(parseAllowlist(['example.com:443']), 'example.com', 443, [
    '93.184.216.34',
    '2606:2800:0220:0001:0248:1893:25C8:1946',
    '93.184.216.34',
  ]);
  assert.deepEqual(d, {
    allow: true,
    addresses: ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946'],
    reason: 'matches "example.com:443"',
  });
  // 172.32/12 and 100.128/10 are just outside the private and shared ranges.
  assert.ok(allowed(['example.com:443'], 'example.com', 443, ['172.32.0.1', '100.128.0.1', '11.0.0.1']));
});

test('an IP-literal entry allows exactly that address and port', () => {
  const list = ['127.0.0.1:8080'];
  assert.deepEqual(decide(parseAllowlist(list), '127.0.0.1', 8080, []), {
    allow: true,
    addresses: ['127.0.0.1'],
    reason: 'matches "127.0.0.1:8080"',
  });
  assert.equal(allowed(list, '127.0.0.1', 8081), false);
  assert.equal(allowed(list, '127.0.0.2', 8080), false);
  assert.equal(allowed(list, '[::ffff:127.0.0.1]', 8080), false);
  assert.ok(allowed(['169.254.169.254:80'], '169.254.169.254', 80));
  assert.equal(allowed(['169.254.169.254:80'], '169.254.169.254', 443), false);
});

test('IP destinations are never allowed by name entries, and cloud metadata is unreachable by default', () => {
  assert.equal(allowed(['example.com:*', '*.example.com:*'], '93.184.216.34', 443), false);
  assert.equal(allowed(['example.com:80'], '169.254.169.254', 80), false);
  assert.match(
    reasonOf(['metadata.google.internal:80'], 'metadata.google.internal', 80, ['169.254.169.254']),
    /link-local address 169\.254\.169\.254/,
  );
});

test('IPv6 literals match in any spelling, with or without brackets', () => {
  const list = ['[2001:db8::1]:443', '[::1]:*'];
  assert.ok(allowed(list, '[2001:db8::1]', 443));
  assert.ok(allowed(list, '2001:0db8:0000:0000:0000:0000:0000:0001', 443));
  assert.ok(allowed(list, '[2001:DB8::0:1]', 443));
  assert.equal(allowed(list, '[2001:db8::2]', 443), false);
  assert.ok(allowed(list, '::1', 9));
  assert.equal(allowed(list, '127.0.0.1', 9), false);
});

test('a name resolving to a private address is allowed only when that address is listed as a literal', () => {
  const nameOnly = ['svc.test:8080'];
  assert.match(reasonOf(nameOnly, 'svc.test', 8080, ['127.0.0.1']), /list 127\.0\.0\.1:8080 to allow it/);
  assert.ok(allowed(['svc.test:8080', '127.0.0.1:8080'], 'svc.test', 8080, ['127.0.0.1']));
  assert.equal(allowed(['svc.test:8080', '127.0.0.1:9090'], 'svc.test', 8080, ['127.0.0.1']), false);
  assert.equal(
    allowed(['svc.test:8080', '127.0.0.1:8080'], 'svc.test', 8080, ['127.0.0.1', '10.0.0.1']),
    false,
  );
  assert.match(reasonOf(['v6.test:443'], 'v6.test', 443, ['fd00::5']), /list \[fd00::5\]:443/);
  // The IP-literal entry alone does not let an arbitrary name through.
  assert.equal(allowed(['127.0.0.1:8080'], 'svc.test', 8080, ['127.0.0.1']), false);
});

test('destinations that are not host names are denied', () => {
  for (const host of [
    '',
    'exa mple.com',
    '2130706433',
    '0x7f.0.0.1',
    'a..b',
    '[example.com]',
    'x'.repeat(300),
  ]) {
    assert.equal(allowed(['*.com:*', 'example.com:*'], host, 80), false, JSON.stringify(host));
  }
  assert.match(reasonOf(['example.com:80'], 'example.com', 0, PUBLIC), /invalid port/);
});

test('needsResolution is true only for names a name or wildcard entry allows', () => {
  const list = parseAllowlist(['example.com:443', '*.svc.test:*', '10.0.0.1:80']);
  assert.equal(needsResolution(list, 'example.com', 443), true);
  assert.equal(needsResolution(list, 'EXAMPLE.com.', 443), true);
  assert.equal(needsResolution(list, 'example.com', 80), false);
  assert.equal(needsResolution(list, 'a.svc.test', 1), true);
  assert.equal(needsResolution(list, 'svc.test', 1), false);
  assert.equal(needsResolution(list, 'exfiltrate-secret.attacker.net', 443), false);
  assert.equal(needsResolution(list, '10.0.0.1', 80), false);
});

test('address helpers canonicalise and classify', () => {
  assert.equal(canonicalIp('2001:0DB8:0:0:1:0:0:1'), '2001:db8::1:0:0:1');
  assert.equal(canonicalIp('0:0:0:0:0:0:0:0'), '::');
  assert.equal(canonicalIp('1:0:0:2:0:0:0:3'), '1:0:0:2::3');
  assert.equal(canonicalIp('::ffff:7f00:1'), '::ffff:127.0.0.1');
  assert.equal(canonicalIp('[::1]'), '::1');
  assert.equal(canonicalIp('1:2:3:4:5:6:7:8:9'), undefined);
  assert.equal(canonicalIp('1::2::3'), undefined);
  assert.equal(canonicalIp('example.com'), undefined);
  assert.equal(socketIp('::ffff:10.0.0.7'), '10.0.0.7');
  assert.equal(socketIp('fd00::7'), 'fd00::7');
  assert.equal(classifyAddress('8.8.8.8'), 'public');
  assert.equal(classifyAddress('2606:4700::1111'), 'public');
  assert.equal(classifyAddress('::127.0.0.1'), 'reserved');
  assert.equal(classifyAddress('nope'), undefined);
});
