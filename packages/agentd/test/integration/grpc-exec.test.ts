/**
 * Exec over real gRPC (mTLS) with a fake backend whose processes the tests drive: output streamed
 * as produced, backpressure both ways, stdin and its close, signals, cancel → KILL, keepalives,
 * protocol errors, and many concurrent execs in one sandbox.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { Metadata, status } from '@grpc/grpc-js';
import type { ClientDuplexStream, ServiceError } from '@grpc/grpc-js';
import { AppError } from '@hako/core';
import { ExecStart, ExitReason } from '@hako/proto';
import type { AgentClient, ExecRequest, ExecResponse } from '@hako/proto';
import { runExec } from '../../src/client.js';
import { FakeBackend, FakeProc } from './fake-backend.js';
import { makePki, sleep, startHarness, trailerCode } from './grpc-harness.js';
import type { Harness, Pki } from './grpc-harness.js';

const ID = 'abcdef123456';
const START = ExecStart.fromPartial({ ownerId: 'o1', sandboxId: ID, argv: ['prog'] });
let pki: Pki;

before(async () => {
  pki = await makePki();
});
after(async () => {
  await pki.cleanup();
});

async function withServer(
  backend: FakeBackend,
  fn: (h: Harness, c: AgentClient) => Promise<void>,
  keepaliveMs?: number,
): Promise<void> {
  const h = await startHarness(backend, {}, pki, { keepaliveMs });
  try {
    await fn(h, h.client());
  } finally {
    await h.close();
  }
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Opens an Exec call and collects everything it answers. */
function openExec(c: AgentClient, md?: Metadata) {
  const call: ClientDuplexStream<ExecRequest, ExecResponse> = c.exec(md ?? new Metadata());
  const msgs: NonNullable<ExecResponse['msg']>[] = [];
  const done = new Promise<ServiceError | undefined>((resolve) => {
    call.on('data', (m: ExecResponse) => {
      if (m.msg) msgs.push(m.msg);
    });
    call.on('error', (e: ServiceError) => resolve(e));
    call.on('end', () => resolve(undefined));
  });
  return { call, msgs, done };
}

test('output is streamed as it is produced, before the process ends', async () => {
  const backend = new FakeBackend({
    exec: (input, pid) => {
      const p = new FakeProc({ pid, stdin: false });
      let i = 0;
      const timer = setInterval(() => {
        (p.stdout as PassThrough).write(`tick ${i}\n`);
        if (i % 3 === 0) p.stderr.write(`err ${i}\n`);
        if (++i === 10) {
          clearInterval(timer);
          p.finish({ code: 3, signal: '', limitKilled: false, reason: 'exited' });
        }
      }, 40);
      return p;
    },
  });
  await withServer(backend, async (_h, c) => {
    const seen: { text: string; procFinished: boolean }[] = [];
    const { call, msgs, done } = openExec(c);
    call.on('data', (m: ExecResponse) => {
      if (m.msg?.$case === 'stdout') {
        seen.push({ text: m.msg.stdout.toString(), procFinished: backend.procs[0]?.finished ?? false });
      }
    });
    call.write({ msg: { $case: 'start', start: START } });
    call.end();
    assert.equal(await done, undefined);
    assert.equal(msgs[0]?.$case, 'started');
    assert.equal(msgs.at(-1)?.$case, 'exit');
    const exit = msgs.at(-1);
    assert.ok(exit?.$case === 'exit');
    assert.deepEqual(exit.exit, {
      code: 3,
      signal: '',
      limitKilled: false,
      reason: ExitReason.EXIT_REASON_EXITED,
    });
    assert.equal(
      seen.map((s) => s.text).join(''),
      Array.from({ length: 10 }, (_, i) => `tick ${i}\n`).join(''),
    );
    const early = seen.filter((s) => !s.procFinished).length;
    assert.ok(early >= 5, `${early} of ${seen.length} stdout chunks arrived while the process ran`);
    const stderr = msgs.flatMap((m) => (m.$case === 'stderr' ? [m.stderr.toString()] : [])).join('');
    assert.equal(stderr, 'err 0\nerr 3\nerr 6\nerr 9\n');
  });
});

test('backpressure: a slow client pauses a process writing 50 MiB; nothing like all of it is buffered', async () => {
  const TOTAL = 50 * 1024 * 1024;
  let produced = 0;
  let gen: Readable | undefined;
  const backend = new FakeBackend({
    exec: (input, pid) => {
      gen = new Readable({
        highWaterMark: 64 * 1024,
        read() {
          if (produced >= TOTAL) {
            this.push(null);
            return;
          }
          const n = Math.min(64 * 1024, TOTAL - produced);
          produced += n;
          this.push(Buffer.alloc(n, 0x61));
        },
      });
      const p = new FakeProc({ pid, stdin: false, stdout: gen });
      gen.on('end', () => p.finish({ code: 0, signal: '', limitKilled: false, reason: 'exited' }));
      return p;
    },
  });
  await withServer(backend, async (_h, c) => {
    const call = c.exec();
    let received = 0;
    let exit: ExecResponse['msg'] | undefined;
    const done = new Promise<ServiceError | undefined>((resolve) => {
      call.on('error', resolve);
      call.on('end', () => resolve(undefined));
    });
    const started = new Promise<void>((resolve) => {
      call.on('data', (m: ExecResponse) => {
        if (m.msg?.$case === 'started') {
          call.pause(); // the client stops reading
          resolve();
        } else if (m.msg?.$case === 'stdout') received += m.msg.stdout.length;
        else if (m.msg?.$case === 'exit') exit = m.msg;
      });
    });
    call.write({ msg: { $case: 'start', start: START } });
    call.end();
    await started;
    await sleep(1500);
    const ahead1 = produced;
    await sleep(500);
    const ahead2 = produced;
    assert.ok(gen?.isPaused(), 'the server paused the process stdout');
    assert.equal(ahead2, ahead1, 'production stopped while the client does not read');
    assert.ok(
      ahead2 < 8 * 1024 * 1024,
      `only ${ahead2} bytes were pulled ahead of a client that read nothing`,
    );
    call.resume();
    assert.equal(await done, undefined);
    assert.equal(received, TOTAL);
    assert.equal(produced, TOTAL);
    assert.ok(exit?.$case === 'exit' && exit.exit.code === 0);
  });
});

test('stdin chunks and close reach the process, in order, with backpressure into a slow reader', async () => {
  let maxBuffered = 0;
  const backend = new FakeBackend({
    exec: (input, pid) => {
      const p = new FakeProc({ pid, stdin: false });
      const stdin = new PassThrough({ highWaterMark: 16 * 1024 });
      const hash = createHash('sha256');
      let bytes = 0;
      // A slow reader: at most 16 KiB every few milliseconds (about 4 MB/s).
      const pump = (): void => {
        maxBuffered = Math.max(maxBuffered, stdin.writableLength + stdin.readableLength);
        const n = Math.min(16 * 1024, stdin.readableLength);
        const chunk = (n > 0 ? stdin.read(n) : stdin.read()) as Buffer | null;
        if (chunk) {
          hash.update(chunk);
          bytes += chunk.length;
        }
        if (stdin.readableEnded) {
          (p.stdout as PassThrough).write(`${bytes} ${hash.digest('hex')}\n`);
          p.finish({ code: 0, signal: '', limitKilled: false, reason: 'exited' });
          return;
        }
        setTimeout(pump, 4);
      };
      stdin.on('end', () => undefined);
      setTimeout(pump, 2);
      Object.assign(p.handle, { stdin });
      return p;
    },
  });
  await withServer(backend, async (_h, c) => {
    const input = randomBytes(2 * 1024 * 1024 + 3);
    const r = await runExec(c, START, { stdin: input });
    assert.equal(
      r.stdout.toString(),
      `${input.length} ${createHash('sha256').update(input).digest('hex')}\n`,
    );
    assert.equal(r.exit.code, 0);
    assert.ok(
      maxBuffered < 512 * 1024,
      `the server kept at most ${maxBuffered} bytes queued in a slow stdin`,
    );
  });

  // The default fake collects stdin and sees its end.
  const echo = new FakeBackend({
    exec: (input, pid) => {
      const p = new FakeProc({ pid, stdin: input.stdin });
      p.stdin?.on('end', () => {
        (p.stdout as PassThrough).write(Buffer.concat(p.stdinData));
        p.finish({ code: 0, signal: '', limitKilled: false, reason: 'exited' });
      });
      return p;
    },
  });
  await withServer(echo, async (_h, c) => {
    const { call, msgs, done } = openExec(c);
    call.write({ msg: { $case: 'start', start: { ...START, stdin: true } } });
    call.write({ msg: { $case: 'stdin', stdin: Buffer.from('hello ') } });
    call.write({ msg: { $case: 'stdin', stdin: Buffer.from('world') } });
    await until(() => echo.procs[0]?.stdinData.length === 2, 'stdin chunks');
    assert.equal(echo.procs[0]?.stdinEnded, false);
    call.write({ msg: { $case: 'stdinClose', stdinClose: {} } });
    await until(() => echo.procs[0]?.stdinEnded === true, 'stdin close');
    call.end();
    assert.equal(await done, undefined);
    const out = msgs.flatMap((m) => (m.$case === 'stdout' ? [m.stdout] : []));
    assert.equal(Buffer.concat(out).toString(), 'hello world');
  });
});

test('a process that closes its stdin does not stall the stream: later input is dropped, signals still arrive', async () => {
  const backend = new FakeBackend({
    exec: (input, pid) => {
      const p = new FakeProc({ pid, stdin: false });
      const stdin = new PassThrough({ highWaterMark: 1024 }); // never read: the first write fills it
      Object.assign(p.handle, { stdin });
      setTimeout(() => stdin.destroy(), 200);
      return p;
    },
  });
  await withServer(backend, async (_h, c) => {
    const call = c.exec(new Metadata(), { deadline: Date.now() + 8000 });
    const msgs: NonNullable<ExecResponse['msg']>[] = [];
    const done = new Promise<ServiceError | undefined>((resolve) => {
      call.on('data', (m: ExecResponse) => m.msg && msgs.push(m.msg));
      call.on('error', resolve);
      call.on('end', () => resolve(undefined));
    });
    call.write({ msg: { $case: 'start', start: { ...START, stdin: true } } });
    for (let i = 0; i < 32; i++) call.write({ msg: { $case: 'stdin', stdin: Buffer.alloc(64 * 1024, i) } });
    call.write({ msg: { $case: 'signal', signal: { signal: 'TERM' } } });
    assert.equal(await done, undefined);
    assert.deepEqual(backend.procs[0]?.signals, ['TERM']);
    const exit = msgs.at(-1);
    assert.ok(exit?.$case === 'exit' && exit.exit.code === 143);
  });
});

test('signals reach the process; a bad signal name is INVALID_ARGUMENT and kills it', async () => {
  const backend = new FakeBackend({ exec: (input, pid) => new FakeProc({ pid, stdin: false }) });
  await withServer(backend, async (_h, c) => {
    const { call, msgs, done } = openExec(c);
    call.write({ msg: { $case: 'start', start: START } });
    await until(() => msgs.length > 0, 'started');
    call.write({ msg: { $case: 'signal', signal: { signal: 'TERM' } } });
    assert.equal(await done, undefined);
    assert.deepEqual(backend.procs[0]?.signals, ['TERM']);
    const exit = msgs.at(-1);
    assert.ok(exit?.$case === 'exit');
    assert.equal(exit.exit.code, 143);
    assert.equal(exit.exit.signal, 'SIGTERM');
    assert.equal(exit.exit.reason, ExitReason.EXIT_REASON_SIGNALED);

    const second = openExec(c);
    second.call.write({ msg: { $case: 'start', start: START } });
    await until(() => second.msgs.length > 0, 'started');
    second.call.write({ msg: { $case: 'signal', signal: { signal: 'NOT-A-SIGNAL' } } });
    const err = await second.done;
    assert.equal(err?.code, status.INVALID_ARGUMENT);
    assert.equal(trailerCode(err), 'INVALID_ARGUMENT');
    assert.deepEqual(backend.procs[1]?.signals, ['KILL']);
  });
});

test('a client cancel or deadline kills the process', async () => {
  const backend = new FakeBackend({ exec: (input, pid) => new FakeProc({ pid, stdin: true }) });
  await withServer(backend, async (_h, c) => {
    const { call, msgs, done } = openExec(c);
    call.write({ msg: { $case: 'start', start: { ...START, stdin: true } } });
    await until(() => msgs.length > 0, 'started');
    call.cancel();
    assert.equal((await done)?.code, status.CANCELLED);
    await until(() => backend.procs[0]?.signals.includes('KILL') === true, 'KILL after cancel');

    const timed = c.exec(new Metadata(), { deadline: Date.now() + 400 });
    timed.on('error', () => undefined);
    timed.on('data', () => undefined);
    timed.write({ msg: { $case: 'start', start: START } });
    await until(() => backend.procs[1]?.signals.includes('KILL') === true, 'KILL at the deadline');
  });
});

test('protocol errors: the first message must be start, once; stdin only when opened', async () => {
  const backend = new FakeBackend({ exec: (input, pid) => new FakeProc({ pid, stdin: input.stdin }) });
  await withServer(backend, async (_h, c) => {
    const first = openExec(c);
    first.call.write({ msg: { $case: 'stdin', stdin: Buffer.from('x') } });
    const e1 = await first.done;
    assert.equal(e1?.code, status.FAILED_PRECONDITION);
    assert.equal(trailerCode(e1), 'EXEC_NOT_STARTED');

    const empty = openExec(c);
    empty.call.end();
    const e2 = await empty.done;
    assert.equal(trailerCode(e2), 'EXEC_NOT_STARTED');

    const unset = openExec(c);
    unset.call.write({ msg: undefined });
    assert.equal(trailerCode(await unset.done), 'INVALID_ARGUMENT');

    const badStart = openExec(c);
    badStart.call.write({ msg: { $case: 'start', start: { ...START, argv: [] } } });
    const e3 = await badStart.done;
    assert.equal(e3?.code, status.INVALID_ARGUMENT);
    assert.match(e3?.details ?? '', /argv/);
    assert.equal(backend.callsTo('exec'), 0, 'nothing refused reached the backend');

    const twice = openExec(c);
    twice.call.write({ msg: { $case: 'start', start: START } });
    twice.call.write({ msg: { $case: 'start', start: START } });
    const e4 = await twice.done;
    assert.equal(e4?.code, status.FAILED_PRECONDITION);
    assert.equal(trailerCode(e4), 'EXEC_NOT_STARTED');
    assert.deepEqual(
      backend.procs[0]?.signals,
      ['KILL'],
      'the started process does not outlive the failed stream',
    );

    const noStdin = openExec(c);
    noStdin.call.write({ msg: { $case: 'start', start: START } });
    noStdin.call.write({ msg: { $case: 'stdin', stdin: Buffer.from('x') } });
    const e5 = await noStdin.done;
    assert.equal(e5?.code, status.INVALID_ARGUMENT);
    assert.match(e5?.details ?? '', /stdin was not opened/);

    backend.failNext = new AppError('SANDBOX_NOT_FOUND', `no sandbox ${ID}`);
    await assert.rejects(runExec(c, START), { code: 'SANDBOX_NOT_FOUND' });
  });
});

test('keepalive messages flow while the process runs', async () => {
  const backend = new FakeBackend({
    exec: (input, pid) => {
      const p = new FakeProc({ pid, stdin: false });
      setTimeout(() => p.finish({ code: 0, signal: '', limitKilled: false, reason: 'exited' }), 450);
      return p;
    },
  });
  await withServer(
    backend,
    async (_h, c) => {
      const { call, msgs, done } = openExec(c);
      call.write({ msg: { $case: 'start', start: START } });
      call.end();
      assert.equal(await done, undefined);
      const keepalives = msgs.filter((m) => m.$case === 'keepalive').length;
      assert.ok(keepalives >= 4, `${keepalives} keepalives in 450 ms at a 50 ms interval`);
      assert.equal(msgs.at(-1)?.$case, 'exit');
    },
    50,
  );
});

test('20 concurrent execs in one sandbox each get their own output', async () => {
  let live = 0;
  let maxLive = 0;
  const backend = new FakeBackend({
    exec: (input, pid) => {
      const p = new FakeProc({ pid, stdin: false });
      live++;
      maxLive = Math.max(maxLive, live);
      setTimeout(() => {
        (p.stdout as PassThrough).write(`out ${input.argv.join(' ')}\n`);
        p.stderr.write(`err ${pid}\n`);
        live--;
        p.finish({ code: pid % 256, signal: '', limitKilled: false, reason: 'exited' });
      }, 300);
      return p;
    },
  });
  await withServer(backend, async (_h, c) => {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => runExec(c, { ...START, argv: ['echo', `n${i}`] })),
    );
    assert.equal(maxLive, 20, 'all 20 ran at the same time');
    results.forEach((r, i) => {
      assert.equal(r.stdout.toString(), `out echo n${i}\n`);
      assert.equal(r.stderr.toString(), `err ${r.pid}\n`);
      assert.equal(r.exit.code, r.pid % 256);
    });
    assert.equal(new Set(results.map((r) => r.pid)).size, 20);
  });
});
