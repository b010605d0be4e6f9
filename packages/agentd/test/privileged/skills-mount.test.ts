// The read-only /skills tree of every sandbox, through real hakod (startAgent, mTLS on loopback)
// and real sandboxes: empty at creation and read-only inside; WriteFiles with target SKILLS
// replaces one directory whole (root's files, EROFS for the sandbox user); a refused tar leaves
// the old tree; ReadFiles reads it back; another owner is refused; destroy removes the host dir.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tar from 'tar-stream';
import { createLogger } from '@hako/core';
import type { AgentClient } from '@hako/proto';
import { FilesTarget, NetworkMode } from '@hako/proto';
import { certsInit } from '../../../cli/src/certs.js';
import { createAgentClient, callUnary, runExec, readFilesTar, writeFilesTar } from '../../src/client.js';
import { startAgent } from '../../src/main.js';
import type { RunningAgent } from '../../src/main.js';
import { createTestHost } from '../../../sandbox/test/helpers/test-host.js';

const th = createTestHost();
const owner = 'tenant-skills';
let pkiDir = '';
let agent: RunningAgent | undefined;
let client: AgentClient;

const createReq = {
  ownerId: owner,
  image: 'host',
  labels: {},
  limits: { cpus: 1, memoryBytes: 256 * 2 ** 20, pids: 128, diskBytes: 64 * 2 ** 20, tmpBytes: 16 * 2 ** 20 },
  network: NetworkMode.NETWORK_MODE_NONE,
  egressAllow: [],
  env: {},
  upstreams: [],
  ttlSeconds: 0,
  idleTimeoutSeconds: 0,
};

const sh = (sandboxId: string, script: string) =>
  runExec(client, { ownerId: owner, sandboxId, argv: ['sh', '-c', script] });

async function tarOf(
  entries: (Partial<tar.Header> & { name: string })[],
  bodies: Record<string, string>,
): Promise<Buffer> {
  const pack = tar.pack();
  for (const h of entries) {
    if (h.type === 'file' || h.type === undefined) pack.entry(h, bodies[h.name] ?? '');
    else pack.entry(h);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function untar(buf: Buffer): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  const extract = tar.extract();
  extract.on('entry', (h, stream, next) => {
    const parts: Buffer[] = [];
    stream.on('data', (d: unknown) => parts.push(d as Buffer));
    stream.on('end', () => {
      files[h.name] = Buffer.concat(parts).toString();
      next();
    });
  });
  await new Promise<void>((resolve, reject) => {
    extract.on('finish', () => resolve());
    extract.on('error', reject);
    extract.end(buf);
  });
  return files;
}

const writeSkills = (sandboxId: string, destDir: string, body: Buffer, ownerId = owner) =>
  writeFilesTar(client, { ownerId, sandboxId, destDir, target: FilesTarget.FILES_TARGET_SKILLS }, body);

before(async () => {
  pkiDir = await mkdtemp(join(tmpdir(), 'hakod-skills-pki-'));
  await certsInit({ dir: pkiDir, hosts: [], days: 1, force: false });
  agent = await startAgent(
    { ...th.env, AGENT_LISTEN: '127.0.0.1:0', AGENT_TLS_DIR: pkiDir, AGENT_POOL_MIN: '0' },
    { logger: createLogger({ level: 'error', name: 'hakod-skills-test' }) },
  );
  client = createAgentClient({ address: agent.address, tls: { dir: pkiDir } });
});

after(async () => {
  client?.close();
  await agent?.close({ destroyAll: true });
  await rm(pkiDir, { recursive: true, force: true });
  await th.teardown();
  assert.deepEqual(th.leftovers(), []);
});

test('a new sandbox has an empty, read-only /skills; a SKILLS write replaces one directory whole', async () => {
  const { sandbox } = await callUnary(client, 'createSandbox', createReq);
  const id = sandbox!.id;
  const hostDir = agent!.manager.skillsOf(owner, id);
  try {
    assert.ok(existsSync(hostDir), 'the host directory exists while the sandbox lives');
    const empty = await sh(id, 'ls -A /skills; (touch /skills/x) 2>&1; echo rc=$?');
    assert.match(empty.stdout.toString(), /^(?:.*Read-only file system.*\n)rc=1\n$/);

    const v1 = await tarOf(
      [
        { name: '.claude-plugin/plugin.json', mode: 0o644 },
        { name: 'pdf/', type: 'directory', mode: 0o755 },
        { name: 'pdf/SKILL.md', mode: 0o644 },
        { name: 'pdf/run.sh', mode: 0o755 },
      ],
      {
        '.claude-plugin/plugin.json': '{"name":"hako"}',
        'pdf/SKILL.md': '---\nname: pdf\ndescription: v1\n---\n',
        'pdf/run.sh': '#!/bin/sh\necho ran-from-skill\n',
      },
    );
    const w = await writeSkills(id, 't1', v1);
    assert.equal(w.filesWritten, 3);
    const seen = await sh(
      id,
      'cat /skills/t1/pdf/SKILL.md; stat -c %u:%a /skills/t1/pdf/SKILL.md; /skills/t1/pdf/run.sh; ' +
        '(echo x >> /skills/t1/pdf/SKILL.md) 2>&1; echo rc=$?; rm -rf /skills/t1 2>&1; ls /skills/t1',
    );
    const out = seen.stdout.toString();
    assert.match(out, /^---\nname: pdf\ndescription: v1\n---\n0:644\nran-from-skill\n/);
    // root's 0644 file: the permission check answers first; rm (a directory entry) meets the mount
    assert.match(out, /(Permission denied|Read-only file system)\nrc=2\n/);
    assert.match(out, /rm: cannot remove '\/skills\/t1\/pdf\/SKILL.md': Read-only file system\n/);
    assert.match(out, /pdf\n$/, 'rm -rf could not remove anything');

    // v2 replaces the whole directory: pdf/ is gone, docx/ is there, no staging directory is left
    const v2 = await tarOf([{ name: 'docx/SKILL.md', mode: 0o644 }], {
      'docx/SKILL.md': '---\nname: docx\ndescription: v2\n---\n',
    });
    await writeSkills(id, 't1', v2);
    const after2 = await sh(id, 'ls -A /skills /skills/t1; cat /skills/t1/docx/SKILL.md');
    assert.equal(
      after2.stdout.toString(),
      '/skills:\nt1\n\n/skills/t1:\ndocx\n---\nname: docx\ndescription: v2\n---\n',
    );

    // a refused tar (a symlink entry) fails the call and leaves v2 in place
    const bad = await tarOf(
      [
        { name: 'evil/SKILL.md', mode: 0o644 },
        { name: 'evil/link', type: 'symlink', linkname: '/etc/shadow' },
      ],
      { 'evil/SKILL.md': 'x' },
    );
    await assert.rejects(writeSkills(id, 't1', bad), { code: 'FILE_PATH_INVALID' });
    await assert.rejects(writeSkills(id, '../escape', v2), { code: 'FILE_PATH_INVALID' });
    await assert.rejects(writeSkills(id, 'a/b', v2), { code: 'FILE_PATH_INVALID' });
    const after3 = await sh(id, 'ls -A /skills /skills/t1');
    assert.equal(after3.stdout.toString(), '/skills:\nt1\n\n/skills/t1:\ndocx\n');

    // ReadFiles reads /skills with the SKILLS target; another owner is refused
    const read = await untar(
      await readFilesTar(client, {
        ownerId: owner,
        sandboxId: id,
        paths: ['t1/docx/SKILL.md'],
        target: FilesTarget.FILES_TARGET_SKILLS,
      }),
    );
    assert.equal(read['t1/docx/SKILL.md'], '---\nname: docx\ndescription: v2\n---\n');
    await assert.rejects(writeSkills(id, 't1', v1, 'tenant-other'), { code: 'PERMISSION_DENIED' });
    // the workspace target is unchanged by all of this
    const ws = await sh(id, 'ls -A /workspace');
    assert.equal(ws.stdout.toString(), '');
  } finally {
    await callUnary(client, 'destroySandbox', { ownerId: owner, sandboxId: id });
  }
  assert.equal(existsSync(hostDir), false, 'destroy removed the host directory');
});

test('a warm-pool sandbox (created before it had an owner) has /skills too', async () => {
  const m = agent!.manager;
  m.warm('host', createReq.limits, 'none');
  for (let i = 0; i < 300 && m.warmCount() === 0; i++) await new Promise((r) => setTimeout(r, 200));
  assert.ok(m.warmCount() > 0, 'a warm sandbox was started');
  const { sandbox } = await callUnary(client, 'createSandbox', createReq);
  const id = sandbox!.id;
  try {
    assert.equal(sandbox!.fromPool, true);
    const body = await tarOf([{ name: 'x/SKILL.md', mode: 0o644 }], { 'x/SKILL.md': 'pool\n' });
    await writeSkills(id, 't2', body);
    const seen = await sh(id, 'cat /skills/t2/x/SKILL.md; (mkdir /skills/y) 2>&1; true');
    assert.match(
      seen.stdout.toString(),
      /^pool\nmkdir: cannot create directory .\/skills\/y.: Read-only file system\n$/,
    );
  } finally {
    await callUnary(client, 'destroySandbox', { ownerId: owner, sandboxId: id });
  }
});
