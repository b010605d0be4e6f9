// Skill packages (parse, validate, normalise), SKILL.md frontmatter, the sandbox sync fingerprint,
// and how the options builder loads the tenant's skills and preferred_skills.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import tarStream from 'tar-stream';
import { buildAgentOptions } from '../../src/agent/options-builder.js';
import type { AgentOptionsInput } from '../../src/agent/options-builder.js';
import {
  DEFAULT_SKILL_LIMITS,
  parseSkillFrontmatter,
  parseSkillPackage,
  readStoredSkill,
} from '../../src/skills/skill-package.js';
import { skillObjectKey, skillsFingerprint } from '../../src/skills/skill-sync.js';
import { testOptionsInput, testSettings } from '../helpers/fixtures.js';

type Entry = Partial<tarStream.Header> & { name: string; body?: string | Buffer };

async function tarOf(entries: Entry[]): Promise<Buffer> {
  const pack = tarStream.pack();
  for (const e of entries) {
    const { body, ...h } = e;
    if (h.type === undefined || h.type === 'file') pack.entry({ mode: 0o644, ...h }, body ?? '');
    else pack.entry(h);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const MD = '---\nname: pdf\ndescription: Makes PDFs\n---\nbody\n';

test('a package: folder or root layout, gzip or not, normalised to the same sorted, root-owned tar', async () => {
  const inFolder = await tarOf([
    { name: 'pdf/', type: 'directory', mode: 0o700 },
    { name: 'pdf/z.txt', body: 'z', mode: 0o600, uid: 1234, mtime: new Date(1e12) },
    { name: 'pdf/SKILL.md', body: MD },
    { name: 'pdf/bin/run.sh', body: '#!/bin/sh\n', mode: 0o4755 },
  ]);
  const atRoot = await tarOf([
    { name: './SKILL.md', body: MD },
    { name: './bin/run.sh', body: '#!/bin/sh\n', mode: 0o700 },
    { name: './z.txt', body: 'z' },
  ]);
  const a = await parseSkillPackage(gzipSync(inFolder), 'pdf');
  const b = await parseSkillPackage(atRoot, 'pdf');
  assert.deepEqual(
    a.files.map((f) => [f.path, f.size, f.executable]),
    [
      ['SKILL.md', MD.length, false],
      ['bin/run.sh', 10, true],
      ['z.txt', 1, false],
    ],
  );
  assert.equal(a.description, 'Makes PDFs');
  assert.equal(a.frontmatterName, 'pdf');
  assert.equal(a.sha256, b.sha256, 'the same files make the same version hash');
  assert.equal(a.sizeBytes, MD.length + 11);
  const extract = tarStream.extract();
  const headers: tarStream.Header[] = [];
  extract.on('entry', (h, s, next) => {
    headers.push(h);
    s.resume();
    s.on('end', next);
  });
  await new Promise<void>((resolve, reject) => {
    extract.on('finish', resolve);
    extract.on('error', reject);
    extract.end(a.tar);
  });
  assert.deepEqual(
    headers.map((h) => [h.name, h.mode, h.uid, h.gid, h.mtime?.getTime()]),
    [
      ['SKILL.md', 0o644, 0, 0, 0],
      ['bin/run.sh', 0o755, 0, 0, 0],
      ['z.txt', 0o644, 0, 0, 0],
    ],
  );
  assert.deepEqual(
    (await readStoredSkill(a.tar)).map((f) => [f.path, f.data.toString()]),
    a.files.map((f) => [f.path, f.data.toString()]),
  );
});

test('limits: file size, total size, file count, body size and a gzip bomb are SKILL_INVALID', async () => {
  const small = {
    ...DEFAULT_SKILL_LIMITS,
    maxFileBytes: 100,
    maxTotalBytes: 150,
    maxFiles: 3,
    maxBodyBytes: 4096,
  };
  const md = { name: 'SKILL.md', body: '---\ndescription: d\n---\n' };
  const refuse = async (body: Buffer, re: RegExp): Promise<void> => {
    await assert.rejects(parseSkillPackage(body, 'x', small), (e: { code?: string; message?: string }) => {
      assert.equal(e.code, 'SKILL_INVALID');
      assert.match(e.message ?? '', re);
      return true;
    });
  };
  await refuse(
    await tarOf([md, { name: 'big', body: Buffer.alloc(101) }]),
    /"big" is 101 bytes, over the 100-byte limit/,
  );
  await refuse(
    await tarOf([md, { name: 'a', body: Buffer.alloc(90) }, { name: 'b', body: Buffer.alloc(90) }]),
    /total over 150 bytes \(at "b"\)/,
  );
  await refuse(
    await tarOf([md, { name: 'a' }, { name: 'b' }, { name: 'c' }]),
    /more than 3 files \(at "c"\)/,
  );
  await refuse(Buffer.alloc(5000, 1), /over the 4096-byte limit/);
  // 1 MiB of zeros compresses to about 1 KiB: inflating stops at the limit
  await refuse(
    gzipSync(await tarOf([md, { name: 'zeros', body: Buffer.alloc(1024 * 1024) }])),
    /uncompressed within the limits/,
  );
  await refuse(await tarOf([md, { name: 'f/' + 'd/'.repeat(20) + 'x' }]), /deeper than 16/);
  await refuse(await tarOf([md, { name: 'a\\b' }]), /backslash/);
  await refuse(await tarOf([md, { name: 'a', body: 'x' }, { name: 'a/b', body: 'y' }]), /inside a file "a"/);
  await refuse(await tarOf([md, { name: 'fifo', type: 'fifo' }]), /fifo/);
});

test('SKILL.md frontmatter: plain, quoted and block descriptions; a missing one is refused', () => {
  assert.deepEqual(parseSkillFrontmatter('---\nname: a\ndescription: plain text # comment\n---\n'), {
    name: 'a',
    description: 'plain text',
  });
  assert.equal(parseSkillFrontmatter('---\ndescription: "a \\"q\\" b"\n---\n').description, 'a "q" b');
  assert.equal(parseSkillFrontmatter("---\ndescription: 'it''s'\n---").description, "it's");
  assert.equal(
    parseSkillFrontmatter('---\ndescription: >\n  folded\n  lines\nname: b\n---\n').description,
    'folded lines',
  );
  assert.equal(parseSkillFrontmatter('\uFEFF---\r\ndescription: crlf\r\n---\r\n').description, 'crlf');
  assert.equal(parseSkillFrontmatter('---\ndescription: x\n---\n').name, undefined);
  for (const bad of [
    'no frontmatter',
    '---\nname: a\n---\n',
    '---\ndescription:\n---\n',
    '---\ndescription: x\n',
  ]) {
    assert.throws(() => parseSkillFrontmatter(bad), { code: 'SKILL_INVALID' });
  }
});

test('the sync fingerprint changes with any name, version or hash, not with order; object keys are per version', () => {
  const a = { name: 'a', version: 1, sha256: '1'.repeat(64) };
  const b = { name: 'b', version: 3, sha256: '2'.repeat(64) };
  assert.equal(skillsFingerprint([a, b]), skillsFingerprint([b, a]));
  assert.notEqual(skillsFingerprint([a, b]), skillsFingerprint([a]));
  assert.notEqual(skillsFingerprint([a]), skillsFingerprint([{ ...a, version: 2 }]));
  assert.notEqual(skillsFingerprint([a]), skillsFingerprint([{ ...a, sha256: '3'.repeat(64) }]));
  assert.notEqual(skillsFingerprint([]), '');
  assert.match(skillObjectKey('t1', 'pdf'), /^skills\/t1\/pdf\/[0-9a-f-]{36}\.tar$/);
  assert.notEqual(skillObjectKey('t1', 'pdf'), skillObjectKey('t1', 'pdf'));
});

const settings = testSettings({
  limits: { requestsPerMinute: 1, maxTurns: 3 },
  systemPrompt: 'Be brief.',
});
const input = (over: Partial<AgentOptionsInput> = {}): AgentOptionsInput => testOptionsInput(settings, over);

test('options: the skills directory is the one plugin loaded (settings sources stay off); preferred skills are appended', () => {
  const o = buildAgentOptions(input({ skills: true, preferredSkills: ['pdf', 'docx'] }));
  assert.deepEqual(o.plugins, [{ type: 'local', path: '/skills/t1', skipMcpDiscovery: true }]);
  assert.deepEqual(o.settingSources, []);
  const sp = o.systemPrompt as { append?: string };
  assert.match(sp.append ?? '', /^Be brief\.\n\n.*prefer these skills.*: hako:pdf, hako:docx\.$/s);
  const plain = buildAgentOptions(input());
  assert.equal(plain.plugins, undefined);
  assert.equal((plain.systemPrompt as { append?: string }).append, 'Be brief.');
  const noPrompt = buildAgentOptions(
    input({ settings: { ...settings, systemPrompt: undefined }, preferredSkills: ['pdf'] }),
  );
  assert.match(
    (noPrompt.systemPrompt as { append?: string }).append ?? '',
    /^For this request, prefer .*hako:pdf\.$/,
  );
});
