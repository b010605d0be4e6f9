// SandboxProcess over a scripted Exec call: what it sends hakod (start, stdin chunks with the
// call's backpressure, stdinClose, signals), how it surfaces stdout, stderr, exit and failures to
// the SDK (SpawnedProcess semantics), and that an abort kills the process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { GrpcStatus, createLogger } from '@hako/core';
import type { AgentClient, ExecRequest } from '@hako/proto';
import { ExitReason } from '@hako/proto';
import { spawnInSandbox } from '../../src/agent/sandbox-process.js';
import type { SpawnInSandboxInput } from '../../src/agent/sandbox-process.js';

const logger = createLogger({ level: 'silent', name: 'test' });

/** A client-side Exec call whose server side the test plays. */
class FakeCall extends EventEmitter {
  readonly sent: ExecRequest[] = [];
  /** write() answers false (backpressure) while this is true. */
  full = false;
  paused = false;
  ended = false;
  cancelled = false;
  write(m: ExecRequest): boolean {
    if (this.ended) throw new Error('write after end');
    this.sent.push(m);
    return !this.full;
  }
  pause(): this {
    this.paused = true;
    return this;
  }
  resume(): this {
    this.paused = false;
    return this;
  }
  end(): this {
    this.ended = true;
    return this;
  }
  cancel(): void {
    this.cancelled = true;
    const e = Object.assign(new Error('1 CANCELLED: Cancelled on client'), {
      code: GrpcStatus.CANCELLED,
      details: 'Cancelled on client',
    });
    setImmediate(() => this.emit('error', e));
  }
  /** The server answers. */
  reply(msg: Record<string, unknown>): void {
    this.emit('data', { msg });
  }
  exit(code: number, signal = '', reason = ExitReason.EXIT_REASON_EXITED): void {
    this.reply({ $case: 'exit', exit: { code, signal, limitKilled: false, reason } });
    this.emit('end');
  }
  kinds(): string[] {
    return this.sent.map((m) => m.msg?.$case ?? '?');
  }
}

function setup(over: Partial<SpawnInSandboxInput> = {}) {
  const call = new FakeCall();
  const client = { exec: () => call } as unknown as AgentClient;
  const p = spawnInSandbox({
    client,
    ownerId: 'tenant-1',
    sandboxId: 'sb1',
    argv: ['/opt/hako/bin/claude', '--output-format', 'stream-json'],
    env: { CLAUDE_CODE_ENTRYPOINT: 'sdk-ts' },
    cwd: '/workspace',
    logger,
    ...over,
  });
  return { call, p };
}

const exitOf = (p: EventEmitter): Promise<[number | null, string | null]> =>
  new Promise((resolve) => p.once('exit', (code: number | null, sig: string | null) => resolve([code, sig])));

test('start carries the argv, env, cwd and an open stdin for the owner and sandbox', () => {
  const { call } = setup();
  const first = call.sent[0]?.msg;
  assert.equal(first?.$case, 'start');
  if (first?.$case !== 'start') return;
  assert.deepEqual(first.start, {
    ownerId: 'tenant-1',
    sandboxId: 'sb1',
    argv: ['/opt/hako/bin/claude', '--output-format', 'stream-json'],
    env: { CLAUDE_CODE_ENTRYPOINT: 'sdk-ts' },
    cwd: '/workspace',
    user: '',
    stdin: true,
    timeoutMs: 0,
  });
});

test('stdin: big writes go as 64 KiB chunks, wait for drain, and end() closes stdin only', async () => {
  const { call, p } = setup();
  call.full = true;
  let written = false;
  p.stdin.write(Buffer.alloc(150 * 1024, 1), () => (written = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(written, false, 'the write waits for the call to drain');
  assert.deepEqual(call.kinds(), ['start', 'stdin']);
  call.full = false;
  call.emit('drain');
  await new Promise((r) => setImmediate(r));
  assert.equal(written, true);
  const sizes = call.sent
    .filter((m) => m.msg?.$case === 'stdin')
    .map((m) => (m.msg as { stdin: Buffer }).stdin.length);
  assert.deepEqual(sizes, [65536, 65536, 22528]);
  p.stdin.end();
  await new Promise((r) => setImmediate(r));
  assert.equal(call.kinds().at(-1), 'stdinClose');
  assert.equal(call.ended, false, 'the call stays open for signals after stdin closes');
});

test('stdout is a readable of the process output; a full reader pauses the call', async () => {
  const { call, p } = setup();
  p.stdout.pause();
  const big = Buffer.alloc(20 * 1024, 120);
  call.reply({ $case: 'started', started: { pid: 4242 } });
  assert.equal(p.pid, 4242);
  call.reply({ $case: 'stdout', stdout: big });
  assert.equal(call.paused, true, 'over the highWaterMark the call is paused');
  const chunks: Buffer[] = [];
  p.stdout.on('data', (c: Buffer) => chunks.push(c));
  p.stdout.resume();
  await new Promise((r) => setImmediate(r));
  assert.equal(call.paused, false, 'reading resumes the call');
  call.reply({ $case: 'stdout', stdout: Buffer.from('{"type":"result"}\n') });
  const exit = exitOf(p);
  const ended = new Promise((r) => p.stdout.once('end', r));
  call.exit(0);
  assert.deepEqual(await exit, [0, null]);
  await ended;
  assert.equal(Buffer.concat(chunks).length, big.length + 18);
  assert.equal(p.exitCode, 0);
  assert.equal(p.signalCode, null);
  assert.equal(call.ended, true);
});

test('stderr is kept as a bounded tail, and handed to onStderr', () => {
  const seen: string[] = [];
  const { call, p } = setup({ stderrTailBytes: 10, onStderr: (t) => seen.push(t) });
  call.reply({ $case: 'stderr', stderr: Buffer.from('first line\n') });
  call.reply({ $case: 'stderr', stderr: Buffer.from('0123456789abc') });
  assert.equal(p.stderrTail(), '3456789abc');
  assert.deepEqual(seen, ['first line\n', '0123456789abc']);
});

test('kill() sends the signal through hakod; a signal exit reads as signalCode', async () => {
  const { call, p } = setup();
  assert.equal(p.killed, false);
  assert.equal(p.kill('SIGTERM'), true);
  assert.equal(p.killed, true);
  const last = call.sent.at(-1)?.msg;
  assert.deepEqual(last, { $case: 'signal', signal: { signal: 'SIGTERM' } });
  const exit = exitOf(p);
  call.exit(143, 'SIGTERM', ExitReason.EXIT_REASON_SIGNALED);
  assert.deepEqual(await exit, [null, 'SIGTERM']);
  assert.equal(p.exitCode, null);
  assert.equal(p.signalCode, 'SIGTERM');
  assert.equal(p.exitInfo?.reason, ExitReason.EXIT_REASON_SIGNALED);
  assert.equal(p.kill('SIGKILL'), false, 'nothing to kill after the exit');
  assert.equal(call.sent.at(-1)?.msg?.$case, 'signal');
  assert.equal(call.sent.length, 2);
});

test('a failed Exec (sandbox gone) is an error event with hakod code, then an exit', async () => {
  const { call, p } = setup();
  const errors: { code?: string }[] = [];
  p.on('error', (e: { code?: string }) => errors.push(e));
  const exit = exitOf(p);
  const md = { get: (k: string) => (k === 'hako-error-code' ? ['SANDBOX_NOT_FOUND'] : []) };
  call.emit(
    'error',
    Object.assign(new Error('5 NOT_FOUND: no sandbox sb1'), {
      code: GrpcStatus.NOT_FOUND,
      details: 'no sandbox sb1',
      metadata: md,
    }),
  );
  assert.deepEqual(await exit, [null, null]);
  assert.equal(errors[0]?.code, 'SANDBOX_NOT_FOUND');
  assert.equal(p.error?.code, 'SANDBOX_NOT_FOUND');
  // writing now fails like a closed pipe, through the stream's error
  const werr = await new Promise<NodeJS.ErrnoException>((r) => {
    p.stdin.on('error', r);
    p.stdin.write('{}\n');
  });
  assert.equal(werr.code, 'EPIPE');
});

test('the stream ending without an exit message is an error', async () => {
  const { call, p } = setup();
  const err = new Promise<{ code?: string }>((r) => p.once('error', r));
  call.emit('end');
  assert.equal((await err).code, 'INTERNAL');
});

test('abort asks hakod for SIGKILL; the real exit is reported', async () => {
  const ac = new AbortController();
  const { call, p } = setup({ signal: ac.signal });
  ac.abort();
  assert.deepEqual(call.sent.at(-1)?.msg, { $case: 'signal', signal: { signal: 'SIGKILL' } });
  assert.equal(p.killed, true);
  const exit = exitOf(p);
  call.exit(137, 'SIGKILL', ExitReason.EXIT_REASON_SIGNALED);
  assert.deepEqual(await exit, [null, 'SIGKILL']);
  assert.equal(call.cancelled, false);
});

test('abort with no exit in time cancels the call (hakod kills the process with it)', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const ac = new AbortController();
  const { call, p } = setup({ signal: ac.signal });
  const exit = exitOf(p);
  ac.abort();
  t.mock.timers.tick(5_000);
  assert.equal(call.cancelled, true);
  t.mock.timers.reset();
  assert.deepEqual(await exit, [null, 'SIGKILL']);
});

test('an already aborted signal kills at once', () => {
  const ac = new AbortController();
  ac.abort();
  const { call, p } = setup({ signal: ac.signal });
  assert.deepEqual(call.kinds(), ['start', 'signal']);
  assert.equal(p.killed, true);
});

test('reapOnKill: a killed process exits only after everything else in the sandbox was killed', async () => {
  const main = new FakeCall();
  const reaper = new FakeCall();
  const calls = [main, reaper];
  const client = { exec: () => calls.shift() } as unknown as AgentClient;
  const p = spawnInSandbox({
    client,
    ownerId: 'tenant-1',
    sandboxId: 'sb1',
    argv: ['/opt/hako/bin/claude'],
    env: {},
    cwd: '/workspace',
    logger,
    reapOnKill: true,
  });
  let exited = false;
  const exit = exitOf(p).then((v) => ((exited = true), v));
  p.kill('SIGTERM');
  main.exit(143, 'SIGTERM', ExitReason.EXIT_REASON_SIGNALED);
  await new Promise((r) => setImmediate(r));
  const start = reaper.sent[0]?.msg;
  assert.equal(start?.$case, 'start');
  assert.deepEqual(start?.$case === 'start' ? start.start.argv : [], [
    '/bin/sh',
    '-c',
    'kill -KILL -1 2>/dev/null; exit 0',
  ]);
  assert.equal(start?.$case === 'start' ? start.start.sandboxId : '', 'sb1');
  assert.equal(exited, false, 'exit waits for the reaper');
  reaper.exit(0);
  assert.deepEqual(await exit, [null, 'SIGTERM']);
});

test('without a kill there is no reaping (processes the agent started in the background stay)', async () => {
  const main = new FakeCall();
  let execs = 0;
  const client = {
    exec: () => {
      execs++;
      return main;
    },
  } as unknown as AgentClient;
  const p = spawnInSandbox({
    client,
    ownerId: 't',
    sandboxId: 's',
    argv: ['x'],
    env: {},
    cwd: '/workspace',
    logger,
    reapOnKill: true,
  });
  const exit = exitOf(p);
  main.exit(0);
  assert.deepEqual(await exit, [0, null]);
  assert.equal(execs, 1);
});
