import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  mkdtempSync,
  mkdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mergeAccountFile, renderEtcFiles, seedEtcFromImage, writeEtcDir } from '../../src/etc-files.js';

const opts = { hostname: 'sbx', uid: 1000, gid: 1000, home: '/home/sandbox' };

test("an image's passwd keeps its service users; hako's root, sandbox and nobody win", () => {
  const image =
    'root:x:0:0:root:/root:/bin/sh\n' +
    'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n' +
    'app:x:1000:1000:image user with our uid:/app:/bin/sh\n' +
    '# comment\n' +
    'sandbox:x:4242:4242:same name:/x:/bin/sh\n' +
    'postgres:x:70:70::/var/lib/postgresql:/bin/sh\n';
  const curated = renderEtcFiles(opts).passwd ?? '';
  const merged = mergeAccountFile(image, curated, 1000);
  const names = merged
    .trim()
    .split('\n')
    .map((l) => l.split(':')[0]);
  assert.deepEqual(names, ['root', 'sandbox', 'nobody', 'daemon', 'postgres']);
  assert.ok(merged.startsWith(curated));
  assert.ok(!merged.includes('/bin/sh\nroot'), 'the image root line must not survive');
  assert.equal(merged.split('\n').filter((l) => l.split(':')[2] === '1000').length, 1);
});

test('seedEtcFromImage copies the image /etc (links as links) and writeEtcDir overrides only its files', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hako-etc-'));
  try {
    const img = join(dir, 'image-etc');
    mkdirSync(join(img, 'ssl'), { recursive: true });
    writeFileSync(join(img, 'os-release'), 'ID=tiny\n');
    writeFileSync(join(img, 'passwd'), 'root:x:0:0::/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n');
    writeFileSync(join(img, 'group'), 'root:x:0:\nweb:x:33:\n');
    writeFileSync(join(img, 'resolv.conf'), 'nameserver 8.8.8.8\n');
    symlinkSync('/usr/share/zoneinfo/UTC', join(img, 'localtime'));
    const out = join(dir, 'bundle-etc');
    const base = await seedEtcFromImage(out, img);
    await writeEtcDir(out, opts, [], base);
    assert.equal(readFileSync(join(out, 'os-release'), 'utf8'), 'ID=tiny\n');
    assert.equal(readlinkSync(join(out, 'localtime')), '/usr/share/zoneinfo/UTC');
    assert.match(readFileSync(join(out, 'passwd'), 'utf8'), /^sandbox:x:1000:1000:/m);
    assert.match(readFileSync(join(out, 'passwd'), 'utf8'), /^web:x:33:33:/m);
    assert.match(readFileSync(join(out, 'group'), 'utf8'), /^web:x:33:$/m);
    assert.doesNotMatch(readFileSync(join(out, 'resolv.conf'), 'utf8'), /8\.8\.8\.8/);
    // an image without /etc is fine
    assert.deepEqual(await seedEtcFromImage(join(dir, 'other'), join(dir, 'nope')), {});
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
