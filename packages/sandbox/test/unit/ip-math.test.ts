import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '@hako/core';
import {
  broadcastAddress,
  cidrContains,
  cidrSize,
  compareIpv4,
  formatCidr,
  formatIpv4,
  networkAddress,
  nthAddress,
  parseCidr,
  parseIpv4,
  prefixMask,
  tryParseIpv4,
} from '../../src/ip-math.js';

const isInvalid = (e: unknown): boolean => e instanceof AppError && e.code === 'INVALID_ARGUMENT';

test('parses and formats addresses across the whole range', () => {
  assert.equal(parseIpv4('0.0.0.0'), 0);
  assert.equal(parseIpv4('255.255.255.255'), 0xffffffff);
  assert.equal(parseIpv4('10.1.2.3'), 0x0a010203);
  assert.equal(parseIpv4('192.168.0.1'), 0xc0a80001);
  assert.equal(formatIpv4(0xc0a80001), '192.168.0.1');
  assert.equal(formatIpv4(0xffffffff), '255.255.255.255');
  assert.equal(formatIpv4(0), '0.0.0.0');
  for (const s of ['1.2.3.4', '172.16.254.1', '128.0.0.0']) assert.equal(formatIpv4(parseIpv4(s)), s);
});

test('rejects malformed addresses and bad octets', () => {
  for (const bad of [
    '',
    '1.2.3',
    '1.2.3.4.5',
    '256.0.0.1',
    '1.2.3.999',
    '01.2.3.4', // leading zero: octal in some parsers, so ambiguous
    '1.2.3.-1',
    '1.2..4',
    ' 1.2.3.4',
    '1.2.3.4 ',
    'a.b.c.d',
    '1.2.3.0x1',
    '1e2.0.0.1',
  ]) {
    assert.equal(tryParseIpv4(bad), undefined, bad);
    assert.throws(() => parseIpv4(bad), isInvalid, bad);
  }
  assert.throws(() => formatIpv4(-1), isInvalid);
  assert.throws(() => formatIpv4(2 ** 32), isInvalid);
  assert.throws(() => formatIpv4(1.5), isInvalid);
});

test('parses CIDRs and computes network and broadcast', () => {
  const c = parseCidr('10.2.0.0/24');
  assert.deepEqual(c, { network: 0x0a020000, prefix: 24 });
  assert.equal(formatIpv4(networkAddress(c)), '10.2.0.0');
  assert.equal(formatIpv4(broadcastAddress(c)), '10.2.0.255');
  assert.equal(formatCidr(c), '10.2.0.0/24');

  const c23 = parseCidr('10.209.0.0/23');
  assert.equal(formatIpv4(broadcastAddress(c23)), '10.209.1.255');
  assert.equal(cidrSize(23), 512);
});

test('rejects a CIDR whose address is not the network address, naming the fix', () => {
  assert.throws(
    () => parseCidr('10.0.0.5/24'),
    (e: unknown) =>
      isInvalid(e) &&
      /not a network address/.test((e as Error).message) &&
      /10\.0\.0\.0\/24/.test((e as Error).message),
  );
  assert.throws(() => parseCidr('10.0.1.0/23'), isInvalid);
  assert.throws(() => parseCidr('10.0.0.1/32/'), isInvalid);
});

test('rejects malformed CIDRs', () => {
  for (const bad of [
    '10.0.0.0',
    '10.0.0.0/',
    '10.0.0.0/33',
    '10.0.0.0/-1',
    '10.0.0.0/024',
    '10.0.0.0/2a',
    '300.0.0.0/8',
    '/8',
  ]) {
    assert.throws(() => parseCidr(bad), isInvalid, bad);
  }
});

test('/32 is a single address', () => {
  const c = parseCidr('10.0.0.7/32');
  assert.equal(cidrSize(32), 1);
  assert.equal(broadcastAddress(c), networkAddress(c));
  assert.equal(cidrContains(c, parseIpv4('10.0.0.7')), true);
  assert.equal(cidrContains(c, parseIpv4('10.0.0.8')), false);
  assert.equal(cidrContains(c, parseIpv4('10.0.0.6')), false);
  assert.equal(nthAddress(c, 0), parseIpv4('10.0.0.7'));
  assert.throws(() => nthAddress(c, 1), isInvalid);
});

test('/31 holds exactly two addresses', () => {
  const c = parseCidr('10.0.0.6/31');
  assert.equal(formatIpv4(broadcastAddress(c)), '10.0.0.7');
  assert.equal(cidrContains(c, parseIpv4('10.0.0.6')), true);
  assert.equal(cidrContains(c, parseIpv4('10.0.0.7')), true);
  assert.equal(cidrContains(c, parseIpv4('10.0.0.8')), false);
  assert.throws(() => parseCidr('10.0.0.7/31'), isInvalid);
});

test('/0 covers everything without shift overflow', () => {
  const c = parseCidr('0.0.0.0/0');
  assert.equal(prefixMask(0), 0);
  assert.equal(cidrSize(0), 2 ** 32);
  assert.equal(broadcastAddress(c), 0xffffffff);
  assert.equal(cidrContains(c, 0), true);
  assert.equal(cidrContains(c, 0xffffffff), true);
  assert.throws(() => parseCidr('1.0.0.0/0'), isInvalid);
});

test('prefix masks', () => {
  assert.equal(prefixMask(32), 0xffffffff);
  assert.equal(prefixMask(24), 0xffffff00);
  assert.equal(prefixMask(1), 0x80000000);
  assert.throws(() => prefixMask(33), isInvalid);
});

test('nth address and compare', () => {
  const c = parseCidr('192.168.4.0/22');
  assert.equal(formatIpv4(nthAddress(c, 1)), '192.168.4.1');
  assert.equal(formatIpv4(nthAddress(c, 256)), '192.168.5.0');
  assert.equal(formatIpv4(nthAddress(c, 1023)), '192.168.7.255');
  assert.throws(() => nthAddress(c, 1024), isInvalid);
  assert.throws(() => nthAddress(c, -1), isInvalid);
  assert.ok(compareIpv4(parseIpv4('10.0.0.2'), parseIpv4('10.0.0.10')) < 0);
  // numeric, not lexicographic, and no sign trouble above 128.0.0.0
  assert.ok(compareIpv4(parseIpv4('200.0.0.1'), parseIpv4('100.0.0.1')) > 0);
  assert.equal(compareIpv4(parseIpv4('1.1.1.1'), parseIpv4('1.1.1.1')), 0);
});

test('contains at the edges of a block', () => {
  const c = parseCidr('10.2.0.0/24');
  assert.equal(cidrContains(c, parseIpv4('10.1.255.255')), false);
  assert.equal(cidrContains(c, parseIpv4('10.2.0.0')), true);
  assert.equal(cidrContains(c, parseIpv4('10.2.0.255')), true);
  assert.equal(cidrContains(c, parseIpv4('10.2.1.0')), false);
  const high = parseCidr('255.255.255.0/24');
  assert.equal(cidrContains(high, 0xffffffff), true);
});
