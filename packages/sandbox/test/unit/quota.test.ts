import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppError } from '@hako/core';
import { findMount, parseMountInfo, unescapeMountField } from '../../src/mount-info.js';
import { loopImageBytes, mkfsExt4Args } from '../../src/quota-loop.js';
import {
  PROJECT_ID_BASE,
  PROJECT_ID_PROBES,
  PROJECT_ID_RANGE,
  assertQuotaName,
  detectXfsQuotaSupport,
  inodeLimitFor,
  projectIdCandidates,
  withHostLock,
  xfsQuotaClearCommand,
  xfsQuotaCreateCommands,
} from '../../src/quota-xfs.js';
import { chooseQuotaEngine } from '../../src/quota.js';

const MiB = 1024 * 1024;

const MOUNTINFO = [
  '27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard',
  '99 27 7:0 / /var/lib/hako/data rw,nosuid,nodev,relatime - xfs /dev/loop0 rw,attr2,inode64,logbufs=8,logbsize=32k,prjquota',
  '100 27 7:1 / /var/tmp/with\\040space rw shared:5 master:2 - ext4 /dev/loop1 rw',
  '101 99 7:2 / /var/lib/hako/data rw - tmpfs tmpfs rw',
  'garbage line',
  '',
].join('\n');

test('mountinfo parsing: fields, optional fields, escapes, stacked mounts', () => {
  const entries = parseMountInfo(MOUNTINFO);
  assert.equal(entries.length, 4);
  const xfs = entries[1];
  assert.equal(xfs?.fsType, 'xfs');
  assert.equal(xfs?.source, '/dev/loop0');
  assert.ok(xfs?.superOptions.includes('prjquota'));
  assert.deepEqual(xfs?.mountOptions, ['rw', 'nosuid', 'nodev', 'relatime']);
  assert.equal(entries[2]?.mountPoint, '/var/tmp/with space');
  assert.equal(entries[2]?.fsType, 'ext4', 'optional fields before the separator are skipped');
  // the last mount stacked on a point is the visible one
  assert.equal(findMount(entries, '/var/lib/hako/data')?.fsType, 'tmpfs');
  assert.equal(findMount(entries, '/var/lib/hako'), undefined);
  assert.equal(unescapeMountField('a\\011b\\134c'), 'a\tb\\c');
});

test('inode limits scale with bytes, within bounds', () => {
  assert.equal(inodeLimitFor(20 * MiB), 5120);
  assert.equal(inodeLimitFor(MiB), 1024);
  assert.equal(inodeLimitFor(1024 * 1024 * MiB), 4 * 1024 * 1024);
});

test('project id candidates are deterministic, in range, distinct, and differ between names', () => {
  const a = projectIdCandidates('dev/hako-dev-aaaaaaaaaaaa');
  assert.deepEqual(a, projectIdCandidates('dev/hako-dev-aaaaaaaaaaaa'));
  assert.equal(a.length, PROJECT_ID_PROBES);
  assert.equal(new Set(a).size, a.length);
  for (const id of a) assert.ok(id >= PROJECT_ID_BASE && id < PROJECT_ID_BASE + PROJECT_ID_RANGE);
  assert.notEqual(projectIdCandidates('dev/hako-dev-bbbbbbbbbbbb')[0], a[0]);
});

test('xfs_quota commands: project with inheritance and hard limits in one invocation; clear zeroes all', () => {
  assert.deepEqual(xfsQuotaCreateCommands('/x/data/dev/hako-dev-aaaaaaaaaaaa', 1048577, 20 * MiB), [
    'project -s -p /x/data/dev/hako-dev-aaaaaaaaaaaa 1048577',
    `limit -p bhard=${20 * MiB} ihard=5120 1048577`,
  ]);
  assert.equal(xfsQuotaClearCommand(7), 'limit -p bhard=0 bsoft=0 ihard=0 isoft=0 7');
});

test("quota directory names must be this env's sandbox names", () => {
  assert.equal(assertQuotaName('dev', 'hako-dev-abcdefgh1234'), 'hako-dev-abcdefgh1234');
  for (const bad of ['hako-prod-abcdefgh1234', '../etc', 'hako-dev-../../x', 'hako-dev-ABCDEFGH', '']) {
    assert.throws(
      () => assertQuotaName('dev', bad),
      (e: unknown) => e instanceof AppError && e.code === 'INVALID_ARGUMENT',
    );
  }
});

test('loop images: the limit plus inode tables; mkfs keeps the file sparse and owned by the sandbox user', () => {
  assert.equal(loopImageBytes(20 * MiB), 20 * MiB + 5120 * 256);
  assert.equal(loopImageBytes(MiB + 1) % 4096, 0);
  const args = mkfsExt4Args('/s/x.img', 20 * MiB, 1000, 1001);
  assert.equal(args.at(-1), '/s/x.img');
  assert.deepEqual(args.slice(args.indexOf('-N'), args.indexOf('-N') + 2), ['-N', '5120']);
  assert.match(args.join(' '), /assume_storage_prezeroed=1,nodiscard,root_owner=1000:1001/);
  assert.match(args.join(' '), /\^has_journal/);
});

test('XFS quota support and the engine choice are read from /proc', async () => {
  const root = await mkdtemp(join(tmpdir(), 'hako-proc-'));
  try {
    assert.equal((await detectXfsQuotaSupport(root)).supported, undefined);
    assert.equal((await chooseQuotaEngine(root)).engine, 'xfs');
    await mkdir(join(root, 'fs/xfs'), { recursive: true });
    await writeFile(join(root, 'fs/xfs/stat'), '');
    const no = await detectXfsQuotaSupport(root);
    assert.equal(no.supported, false);
    assert.match(no.detail, /CONFIG_XFS_QUOTA/);
    assert.equal((await chooseQuotaEngine(root)).engine, 'loop');
    await writeFile(join(root, 'fs/xfs/xqmstat'), '');
    assert.equal((await detectXfsQuotaSupport(root)).supported, true);
    assert.equal((await chooseQuotaEngine(root)).engine, 'xfs');
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('the host lock serializes holders and is released after a failure', async () => {
  const key = `unit-${process.pid}-${Math.random()}`;
  const order: string[] = [];
  const hold = (tag: string, ms: number): Promise<void> =>
    withHostLock(key, async () => {
      order.push(`${tag}+`);
      await new Promise((r) => setTimeout(r, ms));
      order.push(`${tag}-`);
    });
  await Promise.all([hold('a', 60), hold('b', 10), hold('c', 10)]);
  for (let i = 0; i < order.length; i += 2) {
    assert.equal(order[i]?.[0], order[i + 1]?.[0], `holders overlapped: ${order.join(' ')}`);
  }
  await assert.rejects(
    withHostLock(key, () => Promise.reject(new Error('boom'))),
    /boom/,
  );
  assert.equal(await withHostLock(key, () => Promise.resolve(42)), 42);
});
