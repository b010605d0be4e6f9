// WriteFiles/ReadFiles tar transfer against a real directory tree (runs as root, like hakod): the
// /proc/self/fd confinement technique itself, round trips, refusals with nothing touched outside
// the workspace, planted symlinks, limits, backpressure, and a hostile uid-1000 process swapping
// directories for symlinks to the outside while files are written and read.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants as C, readdirSync, statSync } from 'node:fs';
import {
  chmod,
  chown,
  link,
  lstat,
  mkdir,
  mkdtemp,
  open,
  readFile,
  readdir,
  readlink,
  rename,
  rm,
  stat,
  symlink,
  truncate,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { inspect, promisify } from 'node:util';
import tarStream from 'tar-stream';
import type { Header } from 'tar-stream';
import { AppError } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import { readTarFromWorkspace, writeTarToWorkspace, UPLOAD_TMP_PREFIX } from '../../src/workspace-files.js';
import type { FileTransferLimits } from '../../src/workspace-files.js';

const execFileP = promisify(execFile);
const UID = 1000;
const GID = 1000;
const OWNER = { uid: UID, gid: GID };
const MiB = 1024 * 1024;
const BIG: FileTransferLimits = { maxFileBytes: 256 * MiB, maxTotalBytes: 1024 * MiB, maxEntries: 100_000 };
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

assert.equal(process.getuid?.(), 0, 'these tests run as root (hakod does): they chown files to uid 1000');

interface Fixture {
  /** Root-only (0700) temp dir holding ws/ and outside/. */
  base: string;
  /** The workspace, owned by 1000:1000. */
  ws: string;
  /** A root-owned directory outside the workspace with `secret` in it. */
  outside: string;
  sentinel: string;
}

async function withFixture(fn: (f: Fixture) => Promise<void>): Promise<void> {
  const base = await mkdtemp('/tmp/hako-wf-');
  try {
    await chmod(base, 0o700);
    const ws = join(base, 'ws');
    const outside = join(base, 'outside');
    await mkdir(ws, { mode: 0o755 });
    await chown(ws, UID, GID);
    await mkdir(outside, { mode: 0o755 });
    const sentinel = `SENTINEL-${randomBytes(12).toString('hex')}`;
    await writeFile(join(outside, 'secret'), sentinel, { mode: 0o644 });
    await fn({ base, ws, outside, sentinel });
  } finally {
    await rm(base, { recursive: true, force: true });
  }
}

interface TarIn {
  name: string;
  type?: Header['type'];
  body?: Buffer | string;
  mode?: number;
  linkname?: string;
  mtime?: Date;
}

async function makeTar(entries: readonly TarIn[]): Promise<Buffer> {
  const pack = tarStream.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  for (const e of entries) {
    const body = e.body === undefined ? undefined : Buffer.from(e.body);
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      const h = {
        name: e.name,
        type: e.type ?? 'file',
        mode: e.mode ?? 0o644,
        mtime: e.mtime ?? new Date(1_700_000_000_000),
        ...(e.linkname === undefined ? {} : { linkname: e.linkname }),
        ...(e.type === 'character-device' ? { devmajor: 1, devminor: 3 } : {}),
      };
      if (body === undefined) pack.entry(h, cb);
      else pack.entry(h, body, cb);
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

interface TarOut {
  header: Header;
  body: Buffer;
}

async function parseTar(buf: Buffer): Promise<TarOut[]> {
  const extract = tarStream.extract();
  const out: TarOut[] = [];
  const done = (async () => {
    for await (const entry of extract) {
      const parts: Buffer[] = [];
      for await (const c of entry) parts.push(c as Buffer);
      out.push({ header: entry.header, body: Buffer.concat(parts) });
    }
  })();
  extract.end(buf);
  await done;
  return out;
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function write(
  ws: string,
  dest: string,
  tar: Buffer,
  limits: FileTransferLimits = BIG,
): Promise<{ files: number; bytes: number }> {
  return writeTarToWorkspace(ws, dest, Readable.from([tar]), OWNER, limits);
}

async function read(ws: string, paths: string[], limits: FileTransferLimits = BIG): Promise<TarOut[]> {
  return parseTar(await collect(readTarFromWorkspace(ws, paths, limits)));
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, pattern?: RegExp): Promise<AppError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  assert.ok(
    caught instanceof AppError,
    `want AppError ${code}, got ${caught === undefined ? 'success' : inspect(caught)}`,
  );
  assert.equal(caught.code, code, caught.message);
  if (pattern) assert.match(caught.message, pattern);
  return caught;
}

/** Every path under `dir` (relative, sorted), with type and, for files, content hash. */
async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(rel: string): Promise<void> {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = await lstat(join(dir, r));
      if (st.isSymbolicLink()) out.push(`${r} -> ${await readlink(join(dir, r))}`);
      else if (st.isDirectory()) {
        out.push(`${r}/ ${(st.mode & 0o7777).toString(8)} ${st.uid}`);
        await walk(r);
      } else {
        const h = createHash('sha256')
          .update(await readFile(join(dir, r)))
          .digest('hex');
        out.push(`${r} ${(st.mode & 0o7777).toString(8)} ${st.uid} ${h} ${st.mtimeMs}`);
      }
    }
  }
  await walk('');
  return out;
}

async function fileState(path: string): Promise<string> {
  const st = await stat(path);
  const h = createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
  return `${h} ${st.mtimeMs} ${st.ctimeMs} ${st.mode} ${st.uid}`;
}

async function openFdCount(): Promise<number> {
  return (await readdir('/proc/self/fd')).length;
}

test('the technique: /proc/self/fd/<dirfd>/<name> acts inside the open directory and never follows <name>', async () => {
  await withFixture(async ({ ws, outside }) => {
    await mkdir(join(ws, 'd'));
    const dir = await open(join(ws, 'd'), C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
    try {
      // the directory is moved away and its name now leads outside
      await rename(join(ws, 'd'), join(ws, 'moved'));
      await symlink(outside, join(ws, 'd'));
      const at = (name: string): string => `/proc/self/fd/${dir.fd}/${name}`;
      await mkdir(at('sub'));
      const f = await open(at('file'), C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
      await f.write('inside');
      await f.close();
      await rename(at('file'), at('renamed'));
      await writeFile(join(ws, 'moved', 'gone'), 'x');
      await unlink(at('gone'));
      assert.deepEqual((await readdir(join(ws, 'moved'))).sort(), ['renamed', 'sub']);
      assert.deepEqual(await readdir(outside), ['secret'], 'nothing may reach the symlink target');
      // a symlink as the last component is never followed
      await symlink(join(outside, 'secret'), join(ws, 'moved', 'ln'));
      await assert.rejects(open(at('ln'), C.O_RDONLY | C.O_NOFOLLOW), { code: 'ELOOP' });
      await assert.rejects(open(at('ln'), C.O_RDONLY | C.O_NOFOLLOW | C.O_DIRECTORY), { code: 'ENOTDIR' });
      assert.ok((await lstat(at('ln'))).isSymbolicLink());
      assert.equal(await readlink(at('ln')), join(outside, 'secret'));
      // rename over a symlink replaces the link, not its target
      await writeFile(at('new'), 'replacement');
      await rename(at('new'), at('ln'));
      assert.equal(await readFile(join(ws, 'moved', 'ln'), 'utf8'), 'replacement');
      assert.match(await readFile(join(outside, 'secret'), 'utf8'), /^SENTINEL-/);
      // `.` re-opens the directory itself
      const again = await open(at('.'), C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
      const [a, b] = [await again.stat(), await dir.stat()];
      await again.close();
      assert.equal(a.ino, b.ino);
    } finally {
      await dir.close();
    }
  });
});

test('round trip: nested directories and files keep content and modes, owned by 1000:1000', async () => {
  await withFixture(async ({ ws }) => {
    const big = randomBytes(3 * MiB + 123);
    const mtime = new Date(1_600_000_000_000);
    const tar = await makeTar([
      { name: 'src/', type: 'directory', mode: 0o750 },
      { name: 'src/lib/', type: 'directory', mode: 0o2775 },
      { name: 'src/main.ts', body: 'console.log(1);\n', mode: 0o4755, mtime },
      { name: 'src/lib/util.ts', body: 'export {};\n', mode: 0o644 },
      { name: 'README.md', body: '# hi\n', mode: 0o600 },
      { name: 'deep/a/b/c.txt', body: 'implicit parents', mode: 0o640 },
      { name: 'empty', body: '', mode: 0o644 },
      { name: 'big.bin', body: big, mode: 0o644 },
    ]);
    const r = await write(ws, '', tar);
    assert.deepEqual(r, { files: 6, bytes: 16 + 11 + 5 + 16 + 0 + big.length });

    const mode = async (p: string): Promise<number> => (await stat(join(ws, p))).mode & 0o7777;
    assert.equal(await readFile(join(ws, 'src/main.ts'), 'utf8'), 'console.log(1);\n');
    assert.equal(await mode('src/main.ts'), 0o755, 'setuid is masked off');
    assert.equal((await stat(join(ws, 'src/main.ts'))).mtimeMs, mtime.getTime());
    assert.equal(await mode('src'), 0o750);
    assert.equal(await mode('src/lib'), 0o775, 'setgid is masked off');
    assert.equal(await mode('README.md'), 0o600);
    assert.equal(await mode('deep'), 0o755, 'implicit directories are 0755');
    assert.equal(await mode('deep/a/b/c.txt'), 0o640);
    assert.ok(big.equals(await readFile(join(ws, 'big.bin'))));
    assert.equal((await readFile(join(ws, 'empty'))).length, 0);
    const snap = await snapshot(ws);
    for (const line of snap) assert.match(line, / 1000( |$)/, `owned by 1000: ${line}`);
    for (const p of ['src', 'src/lib', 'deep', 'deep/a', 'deep/a/b', 'src/main.ts', 'big.bin']) {
      const st = await stat(join(ws, p));
      assert.equal(`${st.uid}:${st.gid}`, '1000:1000', p);
    }
    assert.ok(!snap.some((l) => l.includes(UPLOAD_TMP_PREFIX)), 'no temporary files left');

    // read everything back
    const all = await read(ws, []);
    const byName = new Map(all.map((e) => [e.header.name, e]));
    assert.deepEqual(
      [...byName.keys()].sort(),
      [
        'README.md',
        'big.bin',
        'deep/',
        'deep/a/',
        'deep/a/b/',
        'deep/a/b/c.txt',
        'empty',
        'src/',
        'src/lib/',
        'src/lib/util.ts',
        'src/main.ts',
      ].sort(),
    );
    assert.ok(byName.get('big.bin')?.body.equals(big));
    assert.equal(byName.get('src/main.ts')?.body.toString(), 'console.log(1);\n');
    assert.equal(byName.get('src/main.ts')?.header.mode, 0o755);
    assert.equal(byName.get('src/main.ts')?.header.mtime.getTime(), mtime.getTime());
    assert.equal(byName.get('src/')?.header.type, 'directory');
    assert.equal(byName.get('src/')?.header.mode, 0o750);
    assert.equal(byName.get('README.md')?.header.uid, UID);
    // a parent comes before what is inside it
    const names = all.map((e) => e.header.name);
    assert.ok(names.indexOf('src/') < names.indexOf('src/lib/util.ts'));

    // a subtree, a single file
    assert.deepEqual(
      (await read(ws, ['src/lib'])).map((e) => e.header.name),
      ['src/lib/', 'src/lib/util.ts'],
    );
    const one = await read(ws, ['deep/a/b/c.txt']);
    assert.deepEqual(
      one.map((e) => [e.header.name, e.body.toString()]),
      [['deep/a/b/c.txt', 'implicit parents']],
    );

    // and the output is a tar GNU tar understands
    const out = join(ws, '..', 'gnu-out');
    await mkdir(out);
    const tarBytes = await collect(readTarFromWorkspace(ws, ['src', 'big.bin'], BIG));
    await new Promise<void>((resolve, reject) => {
      const child = spawn('tar', ['-x', '-C', out], { stdio: ['pipe', 'ignore', 'pipe'], env: { PATH } });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`tar -x: ${code}: ${err}`))));
      child.stdin.end(tarBytes);
    });
    assert.equal(await readFile(join(out, 'src/lib/util.ts'), 'utf8'), 'export {};\n');
    assert.ok(big.equals(await readFile(join(out, 'big.bin'))));
  });
});

test('a destination directory is created (owned by 1000) and archives from GNU tar, with ./ and long names, unpack', async () => {
  await withFixture(async ({ base, ws }) => {
    const src = join(base, 'src');
    const longDir = Array.from(
      { length: 4 },
      (_, i) => `directory-with-a-long-name-${i}-${'x'.repeat(30)}`,
    ).join('/');
    await mkdir(join(src, longDir), { recursive: true });
    await writeFile(join(src, longDir, 'leaf.txt'), 'long path');
    await writeFile(join(src, 'top.txt'), 'top');
    const { stdout } = await execFileP('tar', ['-C', src, '-cf', '-', '.'], {
      encoding: 'buffer',
      env: { PATH },
      maxBuffer: 16 * MiB,
    });
    const r = await write(ws, 'uploads/in', stdout);
    assert.equal(r.files, 2);
    assert.equal(await readFile(join(ws, 'uploads/in', longDir, 'leaf.txt'), 'utf8'), 'long path');
    assert.equal(await readFile(join(ws, 'uploads/in/top.txt'), 'utf8'), 'top');
    for (const p of ['uploads', 'uploads/in', 'uploads/in/top.txt']) {
      const st = await stat(join(ws, p));
      assert.equal(`${st.uid}:${st.gid}`, '1000:1000', p);
    }
    assert.equal((await stat(ws)).mode & 0o777, 0o755, 'the ./ entry does not change the destination');
    const back = await read(ws, ['uploads']);
    assert.ok(
      back.some(
        (e) => e.header.name === `uploads/in/${longDir}/leaf.txt` && e.body.toString() === 'long path',
      ),
    );
  });
});

test('an existing file is replaced, never written through: a planted hard link keeps its content', async () => {
  await withFixture(async ({ ws }) => {
    await writeFile(join(ws, 'other'), 'original');
    await link(join(ws, 'other'), join(ws, 'target'));
    const before = (await stat(join(ws, 'target'))).ino;
    await write(ws, '', await makeTar([{ name: 'target', body: 'new content' }]));
    assert.equal(await readFile(join(ws, 'target'), 'utf8'), 'new content');
    assert.equal(await readFile(join(ws, 'other'), 'utf8'), 'original');
    assert.notEqual((await stat(join(ws, 'target'))).ino, before);
    // a FIFO at the target does not block the write
    await execFileP('mkfifo', [join(ws, 'fifo')], { env: { PATH } });
    await write(ws, '', await makeTar([{ name: 'fifo', body: 'now a file' }]));
    assert.equal(await readFile(join(ws, 'fifo'), 'utf8'), 'now a file');
  });
});

test('entries that leave the workspace, links and special files are refused; nothing appears outside', async () => {
  const etcName = `hako-wf-${randomBytes(6).toString('hex')}`;
  try {
    await withFixture(async ({ base, ws, outside }) => {
      const baseBefore = await snapshot(base);
      const cases: { entries: TarIn[]; pattern: RegExp }[] = [
        { entries: [{ name: '../x', body: 'escape' }], pattern: /"\.\."/ },
        { entries: [{ name: `/etc/${etcName}`, body: 'escape' }], pattern: /absolute/ },
        { entries: [{ name: 'a/../../x', body: 'escape' }], pattern: /"\.\."/ },
        { entries: [{ name: 'ok/../../../outside/secret', body: 'escape' }], pattern: /"\.\."/ },
        { entries: [{ name: 'ln', type: 'symlink', linkname: outside }], pattern: /symlink/ },
        { entries: [{ name: 'hl', type: 'link', linkname: '../outside/secret' }], pattern: /link/ },
        { entries: [{ name: 'dev', type: 'character-device' }], pattern: /character-device/ },
        { entries: [{ name: 'p', type: 'fifo' }], pattern: /fifo/ },
      ];
      for (const c of cases) {
        await rejectsWith(write(ws, '', await makeTar(c.entries)), 'FILE_PATH_INVALID', c.pattern);
        await rejectsWith(write(ws, 'sub', await makeTar(c.entries)), 'FILE_PATH_INVALID', c.pattern);
      }
      // a bad destination
      for (const dest of ['../x', '/etc', 'a/../..', '.']) {
        await rejectsWith(write(ws, dest, await makeTar([{ name: 'f', body: 'x' }])), 'FILE_PATH_INVALID');
      }
      await assert.rejects(stat(`/etc/${etcName}`), { code: 'ENOENT' });
      await assert.rejects(stat(join(base, 'x')), { code: 'ENOENT' });
      // only the (empty) destination dir the second round created is new, and it is inside
      const after = await snapshot(base);
      assert.deepEqual(
        after.filter((l) => !baseBefore.includes(l)),
        ['ws/sub/ 755 1000'],
      );
      assert.deepEqual(await readdir(outside), ['secret']);

      // entries before the bad one stay (documented), the bad one and after it do not
      const mixed = await makeTar([
        { name: 'first.txt', body: '1' },
        { name: 'ln', type: 'symlink', linkname: '/etc' },
        { name: 'third.txt', body: '3' },
      ]);
      await rejectsWith(write(ws, '', mixed), 'FILE_PATH_INVALID');
      assert.equal(await readFile(join(ws, 'first.txt'), 'utf8'), '1');
      await assert.rejects(lstat(join(ws, 'ln')), { code: 'ENOENT' });
      await assert.rejects(lstat(join(ws, 'third.txt')), { code: 'ENOENT' });
    });
  } finally {
    await rm(`/etc/${etcName}`, { force: true, recursive: true });
  }
});

// A regression here must not wreck the host: every write that could land in /etc first goes to a
// fresh name (removed in `finally` if it ever appears), /etc/passwd is attempted only once those
// were refused, and overwrite and chmod attempts aim at the test's own `outside` directory.
test('pre-existing symlinks (evil -> /etc, evil2 -> ..) are never followed, for writing or reading', async () => {
  const probe = `hako-wf-${randomBytes(6).toString('hex')}`;
  try {
    await withFixture(async ({ base, ws, outside, sentinel }) => {
      await symlink('/etc', join(ws, 'evil'));
      await symlink('..', join(ws, 'evil2'));
      await symlink(outside, join(ws, 'evil3'));
      await symlink(join(outside, 'secret'), join(ws, 'leaf'));
      await mkdir(join(ws, 'real'));
      await symlink('../evil', join(ws, 'real', 'nested'));
      const passwdBefore = await fileState('/etc/passwd');
      const secretBefore = await fileState(join(outside, 'secret'));
      const outsideMode = (await stat(outside)).mode;
      const baseBefore = await snapshot(base);

      const probeTar = await makeTar([{ name: probe, body: 'x' }]);
      await rejectsWith(
        write(ws, '', await makeTar([{ name: `evil/${probe}`, body: 'x' }])),
        'FILE_PATH_INVALID',
        /"evil" is a symlink/,
      );
      await rejectsWith(write(ws, 'evil', probeTar), 'FILE_PATH_INVALID');
      await rejectsWith(
        write(ws, 'real/nested', probeTar),
        'FILE_PATH_INVALID',
        /"real\/nested" is a symlink/,
      );
      await assert.rejects(lstat(`/etc/${probe}`), { code: 'ENOENT' });
      // only now the real target
      const pw = await makeTar([{ name: 'evil/passwd', body: 'root::0:0::/:/bin/sh\n' }]);
      await rejectsWith(write(ws, '', pw), 'FILE_PATH_INVALID', /"evil" is a symlink/);

      await rejectsWith(
        write(ws, '', await makeTar([{ name: 'evil3/', type: 'directory', mode: 0o777 }])),
        'FILE_PATH_INVALID',
      );
      await rejectsWith(
        write(ws, '', await makeTar([{ name: 'evil3/secret', body: 'overwritten' }])),
        'FILE_PATH_INVALID',
      );
      await rejectsWith(
        write(ws, '', await makeTar([{ name: 'evil2/outside/secret', body: 'overwritten' }])),
        'FILE_PATH_INVALID',
      );
      await rejectsWith(
        write(ws, '', await makeTar([{ name: 'evil2/escape', body: 'x' }])),
        'FILE_PATH_INVALID',
      );
      await rejectsWith(
        write(ws, '', await makeTar([{ name: 'leaf', body: 'overwritten' }])),
        'FILE_PATH_INVALID',
        /symlink/,
      );
      assert.equal((await stat(outside)).mode, outsideMode);

      await rejectsWith(read(ws, ['evil/passwd']), 'FILE_PATH_INVALID', /"evil" is a symlink/);
      await rejectsWith(read(ws, ['evil2/outside/secret']), 'FILE_PATH_INVALID');
      await rejectsWith(read(ws, ['real/nested/passwd']), 'FILE_PATH_INVALID');

      // reading a symlink gives a symlink entry, not what it points at
      const leaf = await read(ws, ['leaf']);
      assert.deepEqual(
        leaf.map((e) => [e.header.name, e.header.type, e.header.linkname, e.body.length]),
        [['leaf', 'symlink', join(outside, 'secret'), 0]],
      );
      const whole = await collect(readTarFromWorkspace(ws, [], BIG));
      assert.ok(!whole.includes(sentinel), 'the secret outside must never be in the tar');
      assert.ok(!whole.includes('root:x:0:0'), '/etc/passwd must never be in the tar');
      const entries = await parseTar(whole);
      assert.deepEqual(
        entries.map((e) => [e.header.name, e.header.type, e.header.linkname ?? null]),
        [
          ['evil', 'symlink', '/etc'],
          ['evil2', 'symlink', '..'],
          ['evil3', 'symlink', outside],
          ['leaf', 'symlink', join(outside, 'secret')],
          ['real/', 'directory', null],
          ['real/nested', 'symlink', '../evil'],
        ],
      );

      assert.equal(await fileState('/etc/passwd'), passwdBefore);
      assert.equal(await fileState(join(outside, 'secret')), secretBefore);
      assert.deepEqual(await snapshot(base), baseBefore);
    });
  } finally {
    await rm(`/etc/${probe}`, { force: true, recursive: true });
  }
});

test('write limits: per file, total and entry count → FILE_TOO_LARGE, no partial file left', async () => {
  await withFixture(async ({ ws }) => {
    const limits: FileTransferLimits = { maxFileBytes: 1000, maxTotalBytes: 2000, maxEntries: 4 };
    await rejectsWith(
      write(ws, '', await makeTar([{ name: 'big', body: Buffer.alloc(1001, 1) }]), limits),
      'FILE_TOO_LARGE',
      /1001 bytes, over the 1000-byte limit/,
    );
    await assert.rejects(lstat(join(ws, 'big')), { code: 'ENOENT' });
    assert.equal(
      (await write(ws, '', await makeTar([{ name: 'exact', body: Buffer.alloc(1000, 1) }]), limits)).bytes,
      1000,
    );

    const three = ['a', 'b', 'c'].map((n) => ({ name: n, body: Buffer.alloc(800, 2) }));
    await rejectsWith(write(ws, '', await makeTar(three), limits), 'FILE_TOO_LARGE', /2000-byte limit/);
    assert.deepEqual(
      (await readdir(ws)).sort(),
      ['a', 'b', 'exact'],
      'files before the limit stay, nothing partial',
    );

    const five = ['d1/', 'd1/f1', 'd1/f2', 'f3', 'f4'].map((n) =>
      n.endsWith('/') ? { name: n, type: 'directory' as const } : { name: n, body: 'x' },
    );
    await rejectsWith(
      write(ws, 'five', await makeTar(five), limits),
      'FILE_TOO_LARGE',
      /more than 4 entries/,
    );
    await assert.rejects(lstat(join(ws, 'five/f4')), { code: 'ENOENT' });
    const snap = await snapshot(ws);
    assert.ok(!snap.some((l) => l.includes(UPLOAD_TMP_PREFIX)), snap.join('\n'));

    await rejectsWith(
      write(ws, '', await makeTar([]), { maxFileBytes: -1, maxTotalBytes: 1, maxEntries: 1 }),
      'INVALID_ARGUMENT',
    );
    // a truncated archive, a source that fails: no partial file either
    const whole = await makeTar([{ name: 'cut.bin', body: Buffer.alloc(600, 3) }]);
    await rejectsWith(write(ws, '', whole.subarray(0, 700)), 'INVALID_ARGUMENT', /not a valid tar/);
    const failing = new Readable({
      read() {
        this.push(whole.subarray(0, 700));
        this.destroy(new Error('the client went away'));
      },
    });
    await rejectsWith(
      writeTarToWorkspace(ws, '', failing, OWNER, BIG),
      'INVALID_ARGUMENT',
      /reading the tar stream failed: the client went away/,
    );
    await assert.rejects(lstat(join(ws, 'cut.bin')), { code: 'ENOENT' });
    assert.ok(!(await readdir(ws)).some((n) => n.startsWith(UPLOAD_TMP_PREFIX)));
    await rejectsWith(
      write(ws, '', Buffer.from('this is not a tar archive'.repeat(40))),
      'INVALID_ARGUMENT',
      /not a valid tar/,
    );
  });
});

test('read limits, missing paths, special files and bad paths fail the stream with the right code', async () => {
  await withFixture(async ({ ws }) => {
    await mkdir(join(ws, 'd'));
    for (let i = 0; i < 5; i++) await writeFile(join(ws, 'd', `f${i}`), Buffer.alloc(600, i));
    await execFileP('mkfifo', [join(ws, 'd', 'pipe')], { env: { PATH } });
    await writeFile(join(ws, 'huge'), Buffer.alloc(5000));

    // the FIFO is skipped (and reading does not block on it)
    const d = await read(ws, ['d']);
    assert.deepEqual(
      d.map((e) => e.header.name),
      ['d/', 'd/f0', 'd/f1', 'd/f2', 'd/f3', 'd/f4'],
    );
    await rejectsWith(read(ws, ['huge'], { ...BIG, maxFileBytes: 4999 }), 'FILE_TOO_LARGE', /5000 bytes/);
    await rejectsWith(read(ws, ['d'], { ...BIG, maxTotalBytes: 2000 }), 'FILE_TOO_LARGE', /2000-byte limit/);
    await rejectsWith(read(ws, [], { ...BIG, maxEntries: 5 }), 'FILE_TOO_LARGE', /more than 5 entries/);
    await rejectsWith(read(ws, ['nope']), 'FILE_NOT_FOUND');
    await rejectsWith(read(ws, ['d/nope']), 'FILE_NOT_FOUND');
    await rejectsWith(read(ws, ['nope/deeper']), 'FILE_NOT_FOUND');
    await rejectsWith(read(ws, ['huge/x']), 'FILE_PATH_INVALID', /not a directory/);
    for (const p of ['../ws', '/etc/passwd', 'd/../../x', '', 'd//f0', 'a\0b']) {
      await rejectsWith(read(ws, [p]), 'FILE_PATH_INVALID');
    }
    await rejectsWith(read(join(ws, 'missing-workspace'), []), 'WORKSPACE_INVALID');
  });
});

test('backpressure: neither direction holds a whole file in memory; a dropped reader closes every descriptor', async () => {
  await withFixture(async ({ ws }) => {
    const size = 96 * MiB;
    const chunk = 256 * 1024;
    // a tar produced lazily (one 96 MiB file, a fresh buffer per chunk); `ahead` is how far the
    // source got in front of what is on disk
    let produced = 0;
    let ahead = 0;
    const pack = tarStream.pack();
    const sink = pack.entry({ name: 'huge.bin', size, mode: 0o644 });
    sink.on('error', () => undefined);
    void (async () => {
      for (let off = 0; off < size; off += chunk) {
        const tmp = readdirSync(ws).find((n) => n.startsWith(UPLOAD_TMP_PREFIX));
        const onDisk =
          tmp === undefined ? 0 : (statSync(join(ws, tmp), { throwIfNoEntry: false })?.size ?? 0);
        ahead = Math.max(ahead, produced - onDisk);
        produced += chunk;
        if (!sink.write(Buffer.alloc(chunk, off / chunk)))
          await new Promise<void>((r) => sink.once('drain', () => r()));
      }
      sink.end(undefined);
      pack.finalize();
    })();
    const r = await writeTarToWorkspace(ws, '', Readable.from(pack, { objectMode: false }), OWNER, BIG);
    assert.equal(r.bytes, size);
    assert.ok(
      ahead < 8 * MiB,
      `the writer let the source run ${(ahead / MiB).toFixed(1)} MiB ahead of the disk`,
    );
    assert.equal((await stat(join(ws, 'huge.bin'))).size, size);

    // reading a sparse 1 GiB file that nobody consumes for a while: the producer must stop after a
    // bounded amount (nothing is consumed, so there is no garbage to hide a buffered file)
    await writeFile(join(ws, 'sparse.bin'), '');
    await truncate(join(ws, 'sparse.bin'), 1024 * MiB);
    const fdsBefore = await openFdCount();
    const base2 = process.memoryUsage().arrayBuffers;
    const stream = readTarFromWorkspace(ws, ['sparse.bin'], { ...BIG, maxFileBytes: 2048 * MiB });
    await sleep(500);
    const grown = process.memoryUsage().arrayBuffers - base2;
    assert.ok(grown < 32 * MiB, `an unread stream buffered ${(grown / MiB).toFixed(1)} MiB`);
    assert.ok(stream.readableLength <= 1 * MiB, `readableLength ${stream.readableLength}`);
    // read a little, then drop the stream: the walk stops and closes its descriptors
    let got = 0;
    for await (const c of stream) {
      got += (c as Buffer).length;
      if (got > 4 * MiB) break;
    }
    assert.ok(stream.destroyed);
    let fds = await openFdCount();
    for (let i = 0; i < 50 && fds > fdsBefore; i++) {
      await sleep(20);
      fds = await openFdCount();
    }
    assert.ok(fds <= fdsBefore, `descriptors left open: ${fds} > ${fdsBefore}`);
    // and a full read streams the right bytes
    let total = 0;
    const hash = createHash('sha256');
    const entries = await parseTar(await collect(readTarFromWorkspace(ws, ['huge.bin'], BIG)));
    for (const e of entries) {
      total += e.body.length;
      hash.update(e.body);
    }
    assert.equal(total, size);
    const want = createHash('sha256');
    for (let off = 0; off < size; off += chunk) want.update(Buffer.alloc(chunk, off / chunk));
    assert.equal(hash.digest('hex'), want.digest('hex'));
  });
});

/**
 * The hostile sandbox: as uid 1000 with its cwd in the workspace, it keeps swapping `d` (a
 * directory) and `e` (a directory) for symlinks to the outside and to `..`, and `f` (a file) for a
 * symlink to the secret, as fast as it can. It prints its flip count now and then.
 */
const ATTACKER = `
const fs = require('fs');
const [outside] = process.argv.slice(1);
try { fs.mkdirSync('park'); } catch {}
const swaps = [['d', outside], ['e', '..'], ['f', outside + '/secret']];
let n = 0;
for (;;) {
  for (const [name, target] of swaps) {
    const parked = 'park/' + name + n;
    try { fs.renameSync(name, parked); } catch {}
    try { fs.symlinkSync(target, name); } catch {}
  }
  for (const [name] of swaps) {
    try { fs.unlinkSync(name); } catch {}
    try { fs.renameSync('park/' + name + n, name); } catch {}
  }
  n++;
  if (n % 2000 === 0) fs.writeSync(1, n + '\\n');
}
`;

test('race: a uid-1000 process swapping directories for symlinks never gets a write or read outside', async () => {
  await withFixture(async ({ base, ws, outside, sentinel }) => {
    await mkdir(join(ws, 'd'));
    await mkdir(join(ws, 'e'));
    await writeFile(join(ws, 'd', 'secret'), 'benign');
    await writeFile(join(ws, 'f'), 'benign file');
    for (const p of ['d', 'e', 'd/secret', 'f']) await chown(join(ws, p), UID, GID);
    const outsideBefore = await snapshot(outside);
    const baseTop = (await readdir(base)).sort();

    const child = spawn(process.execPath, ['-e', ATTACKER, outside], {
      uid: UID,
      gid: GID,
      cwd: ws,
      env: { PATH },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let flips = 0;
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      const last = d.toString().trim().split('\n').pop();
      if (last) flips = Number(last);
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    const outcomes = new Map<string, number>();
    const note = (k: string): void => void outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
    try {
      for (let i = 0; i < 100 && flips === 0; i++) await sleep(20);
      assert.ok(flips > 0, `the attacker did not start: ${stderr}`);

      const rounds = 150;
      for (let i = 0; i < rounds; i++) {
        const body = `payload-${i}`;
        const tars = [
          await makeTar([{ name: `d/w${i}`, body }]),
          await makeTar([{ name: `e/w${i}`, body }]),
          await makeTar([{ name: 'f', body }]),
          await makeTar([
            { name: `d/sub${i}/`, type: 'directory' },
            { name: `d/sub${i}/x`, body },
          ]),
        ];
        for (const [j, tar] of tars.entries()) {
          try {
            await write(ws, j === 3 && i % 2 === 0 ? 'd' : '', tar);
            note('write ok');
          } catch (err) {
            assert.ok(err instanceof AppError, String(err));
            assert.ok(
              ['FILE_PATH_INVALID', 'FILE_NOT_FOUND'].includes(err.code),
              `${err.code}: ${err.message}`,
            );
            note(`write ${err.code}`);
          }
        }
        for (const paths of [['d'], ['d/secret'], ['f'], ['e'], []]) {
          try {
            const buf = await collect(readTarFromWorkspace(ws, paths, BIG));
            assert.ok(
              !buf.includes(sentinel),
              `reading ${JSON.stringify(paths)} returned the secret from outside`,
            );
            note('read ok');
          } catch (err) {
            assert.ok(err instanceof AppError, String(err));
            assert.ok(
              ['FILE_PATH_INVALID', 'FILE_NOT_FOUND'].includes(err.code),
              `${err.code}: ${err.message}`,
            );
            note(`read ${err.code}`);
          }
        }
      }
      const flipsDuring = flips;
      assert.equal(child.exitCode, null, `the attacker died early: ${stderr}`);
      assert.deepEqual(await snapshot(outside), outsideBefore, 'nothing outside the workspace changed');
      assert.deepEqual((await readdir(base)).sort(), baseTop, 'nothing appeared next to the workspace');
      assert.equal(await readFile(join(outside, 'secret'), 'utf8'), sentinel);
      assert.ok(
        (outcomes.get('write ok') ?? 0) > 0 && (outcomes.get('read ok') ?? 0) > 0,
        JSON.stringify([...outcomes]),
      );
      assert.ok(
        [...outcomes.keys()].some((k) => k.includes('FILE_PATH_INVALID')),
        `the race was never hit: ${JSON.stringify([...outcomes])}`,
      );

      // the control: the same race defeats naive path-based access, so the test can see an escape
      let naiveWrites = 0;
      let naiveReads = 0;
      for (let i = 0; i < 2000 && (naiveWrites === 0 || naiveReads === 0); i++) {
        await writeFile(join(ws, 'd', 'naive'), 'naive').catch(() => undefined);
        if ((await readdir(outside)).includes('naive')) {
          naiveWrites++;
          await unlink(join(outside, 'naive'));
        }
        const got = await readFile(join(ws, 'd', 'secret'), 'utf8').catch(() => '');
        if (got === sentinel) naiveReads++;
      }
      assert.ok(naiveWrites > 0 && naiveReads > 0, 'a naive write and read through the same race escape');
      console.log(
        `# race: ${flipsDuring}+ attacker rounds; outcomes ${JSON.stringify(Object.fromEntries(outcomes))}`,
      );
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
  });
});
