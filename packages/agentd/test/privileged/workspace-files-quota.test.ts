// WriteFiles into a real quota'd workspace (LoopQuotaManager: a loop-mounted ext4 image per
// sandbox): files hakod writes as root count against the sandbox's disk limit. The image has no
// root-reserved blocks, so once the sandbox has filled its workspace root cannot add a byte either,
// and a tar bigger than the limit fails with QUOTA_EXCEEDED leaving no partial file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, rm, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { inspect, promisify } from 'node:util';
import tarStream from 'tar-stream';
import { AppError, silentLogger } from '@hako/core';
import { LoopQuotaManager, newSandboxId, resourceName } from '@hako/sandbox';
import { UPLOAD_TMP_PREFIX, writeTarToWorkspace } from '../../src/workspace-files.js';
import type { FileTransferLimits } from '../../src/workspace-files.js';

const execFileP = promisify(execFile);
const MiB = 1024 * 1024;
const UID = 1000;
const GID = 1000;
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const LIMITS: FileTransferLimits = { maxFileBytes: 256 * MiB, maxTotalBytes: 256 * MiB, maxEntries: 1000 };

function rand(n: number): string {
  let s = '';
  while (s.length < n) s += randomBytes(8).toString('hex');
  return s.slice(0, n);
}

/** A tar of one file of `size` bytes, generated lazily. */
function fileTar(name: string, size: number): Readable {
  const pack = tarStream.pack();
  const sink = pack.entry({ name, size, mode: 0o644 });
  sink.on('error', () => undefined); // destroyed when the writer gives up
  void (async () => {
    const chunk = 256 * 1024;
    for (let off = 0; off < size; off += chunk) {
      const n = Math.min(chunk, size - off);
      if (!sink.write(Buffer.alloc(n, 0x61))) await new Promise<void>((r) => sink.once('drain', () => r()));
    }
    sink.end(undefined);
    pack.finalize();
  })();
  return Readable.from(pack, { objectMode: false });
}

async function rejectsWithCode(p: Promise<unknown>, code: string): Promise<AppError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.ok(err instanceof AppError, `want ${code}, got ${err === undefined ? 'success' : inspect(err)}`);
  assert.equal(err.code, code, err.message);
  return err;
}

/** As uid 1000 in `dir` (entered before the uid switch, like a sandbox's /workspace): writes until ENOSPC. */
function fillAsSandbox(dir: string): Promise<{ written: number; code: string | null }> {
  const script = `
const fs = require('node:fs');
const buf = Buffer.alloc(64 * 1024, 120);
let written = 0, code = null;
try {
  const fd = fs.openSync('fill', 'w');
  try { for (;;) { written += fs.writeSync(fd, buf); } } finally { fs.closeSync(fd); }
} catch (e) { code = e.code; }
console.log(JSON.stringify({ written, code }));
`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script], {
      uid: UID,
      gid: GID,
      cwd: dir,
      env: { PATH },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      try {
        resolve(JSON.parse(out.trim()) as { written: number; code: string | null });
      } catch {
        reject(new Error(`filler exited ${String(code)}: ${out} ${err}`));
      }
    });
  });
}

test('WriteFiles into a loop-quota workspace: QUOTA_EXCEEDED at the limit, root gets no reserved room', async () => {
  const env = `t${rand(6)}`;
  const stateDir = `/var/tmp/hako-test-${rand(10)}`;
  const mgr = new LoopQuotaManager({ env, stateDir, volumeBytes: 64 * MiB, logger: silentLogger() });
  const name = resourceName(env, newSandboxId());
  try {
    await mgr.init();
    const ws = await mgr.create(name, 8 * MiB, UID, GID);
    const image = join(stateDir, 'workspaces', env, name, 'disk.img');
    const { stdout } = await execFileP('dumpe2fs', ['-h', image], { env: { PATH, LC_ALL: 'C' } });
    assert.match(
      stdout,
      /^Reserved block count:\s+0$/m,
      'the workspace image must have no root-reserved blocks',
    );

    // a tar that fits is written, owned by the sandbox
    const ok = await writeTarToWorkspace(
      ws,
      'in',
      fileTar('fits.bin', 3 * MiB),
      { uid: UID, gid: GID },
      LIMITS,
    );
    assert.deepEqual(ok, { files: 1, bytes: 3 * MiB });
    const st = await stat(join(ws, 'in', 'fits.bin'));
    assert.equal(`${st.uid}:${st.gid}:${st.size}`, `${UID}:${GID}:${3 * MiB}`);

    // one bigger than what is left fails with QUOTA_EXCEEDED and leaves no partial file
    const err = await rejectsWithCode(
      writeTarToWorkspace(ws, 'in', fileTar('big.bin', 16 * MiB), { uid: UID, gid: GID }, LIMITS),
      'QUOTA_EXCEEDED',
    );
    assert.match(err.message, /full/);
    assert.deepEqual(await readdir(join(ws, 'in')), ['fits.bin']);
    const afterFail = await statfs(ws);
    assert.ok(
      (afterFail.blocks - afterFail.bfree) * afterFail.bsize < 4 * MiB,
      'the failed file must not keep its blocks',
    );

    // once the sandbox has filled the rest, root (hakod) cannot add a byte either
    const fill = await fillAsSandbox(ws);
    assert.equal(fill.code, 'ENOSPC', JSON.stringify(fill));
    assert.ok(fill.written > 2 * MiB, `the sandbox could write ${fill.written} bytes`);
    await rejectsWithCode(
      writeTarToWorkspace(ws, '', fileTar('more.bin', 64 * 1024), { uid: UID, gid: GID }, LIMITS),
      'QUOTA_EXCEEDED',
    );
    const names = await readdir(ws);
    assert.ok(!names.includes('more.bin'), names.join(' '));
    assert.ok(!names.some((n) => n.startsWith(UPLOAD_TMP_PREFIX)), names.join(' '));
    const usage = await mgr.usage(name);
    assert.ok(usage.usedBytes <= usage.limitBytes, JSON.stringify(usage));
  } finally {
    await mgr.remove(name).catch(() => undefined);
    await mgr.drainSpares();
    await rm(stateDir, { recursive: true, force: true });
  }
});
