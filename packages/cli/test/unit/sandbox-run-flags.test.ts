import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSandboxRun } from '../../src/commands/sandbox-run.js';
import { UsageError } from '../../src/flags.js';

test('defaults are safe when flags are omitted', () => {
  const r = parseSandboxRun(['--', 'true']);
  assert.notEqual(r, 'help');
  if (r === 'help') return;
  assert.deepEqual(r.command, ['true']);
  assert.deepEqual(r.options.limits, {
    memoryBytes: 512 * 1024 ** 2,
    pids: 256,
    cpus: 1,
    diskBytes: 1024 ** 3,
    tmpBytes: 64 * 1024 ** 2,
  });
  assert.equal(r.options.network, 'none');
  assert.equal(r.options.image, 'host');
  assert.equal(r.timeoutMs, 600_000);
  assert.equal(r.options.workspaceDir, undefined);
});

test('every flag of the contract parses', () => {
  const r = parseSandboxRun([
    '--workspace',
    '/tmp/w',
    '--image',
    'alpine:3',
    '--runtime',
    'runc',
    '--memory',
    '256m',
    '--cpus',
    '0.5',
    '--pids',
    '64',
    '--disk',
    '10m',
    '--tmp',
    '8m',
    '--network',
    'egress',
    '--allow',
    '127.0.0.1:8080',
    '--allow',
    '*.example.com:443',
    '--env',
    'A=1',
    '--env',
    'B=x=y',
    '--timeout',
    '5s',
    '--',
    'sh',
    '-c',
    'echo --memory',
  ]);
  if (r === 'help') throw new Error('help');
  assert.equal(r.options.workspaceDir, '/tmp/w');
  assert.equal(r.runtime, 'runc');
  assert.equal(r.options.limits.memoryBytes, 256 * 1024 ** 2);
  assert.equal(r.options.limits.cpus, 0.5);
  assert.deepEqual(r.options.allow, ['127.0.0.1:8080', '*.example.com:443']);
  assert.deepEqual(r.options.env, { A: '1', B: 'x=y' });
  assert.equal(r.timeoutMs, 5000);
  assert.deepEqual(r.command, ['sh', '-c', 'echo --memory'], 'flags after -- belong to the command');
});

test('the command may start without --, and its own flags are not ours', () => {
  const r = parseSandboxRun(['--memory', '64m', 'ls', '-la']);
  if (r === 'help') throw new Error('help');
  assert.deepEqual(r.command, ['ls', '-la']);
});

test('bad flags are usage errors', () => {
  const bad: string[][] = [
    [],
    ['--'],
    ['--memory', 'lots', '--', 'true'],
    ['--memory', '1k', '--', 'true'],
    ['--cpus', 'x', '--', 'true'],
    ['--pids', '3', '--', 'true'],
    ['--pids', '1.5', '--', 'true'],
    ['--network', 'host', '--', 'true'],
    ['--allow', '127.0.0.1:80', '--', 'true'],
    ['--network', 'egress', '--allow', 'nope', '--', 'true'],
    ['--runtime', 'docker', '--', 'true'],
    ['--env', 'NOEQUALS', '--', 'true'],
    ['--env', '1A=x', '--', 'true'],
    ['--timeout', 'forever', '--', 'true'],
    ['--bogus', '--', 'true'],
    ['--memory'],
    ['--memory', '1g', '--memory', '2g', '--', 'true'],
  ];
  for (const argv of bad) assert.throws(() => parseSandboxRun(argv), UsageError, argv.join(' '));
});
