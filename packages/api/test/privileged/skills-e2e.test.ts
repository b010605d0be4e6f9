// Skills end to end: the whole stack (PostgreSQL, Redis, S3, hakod with real sandboxes, one
// hako-api process, the scripted model) and the real Claude Code binary. A tenant uploads a skill;
// an execute on a conversation without a workspace runs in the read-only /skills/{tenant}; Claude
// Code discovers the skill (init message), its description and the preferred_skills instruction
// reach the model, and the Skill tool answers SKILL.md's body. A reused sandbox sees an upload and
// a delete on its next execute, and an unchanged one is not rewritten.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { gzipSync } from 'node:zlib';
import tarStream from 'tar-stream';
import type { ScriptInput } from '@hako/testkit';
import { parseSse, startStack } from '../helpers/stack.js';
import type { Stack } from '../helpers/stack.js';
import { callApi as call } from '../helpers/http-call.js';

const SMALL_DISK = 128 * 2 ** 20;
let stack: Stack | undefined;
const S = (): Stack => {
  if (!stack) throw new Error('the stack did not start');
  return stack;
};

async function skillTarGz(folder: string, files: Record<string, string>): Promise<Buffer> {
  const pack = tarStream.pack();
  pack.entry({ name: `${folder}/`, type: 'directory', mode: 0o755 });
  for (const [path, body] of Object.entries(files)) {
    pack.entry({ name: `${folder}/${path}`, mode: path.endsWith('.sh') ? 0o755 : 0o644 }, body);
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return gzipSync(Buffer.concat(chunks));
}

before(async () => {
  stack = await startStack({ apiProcesses: 1, script: { turns: [{ text: 'hi' }] } });
});

after(async () => {
  await stack?.close();
});

test('uploaded skills reach the agent read-only, are discovered by Claude Code and honour preferred_skills', async () => {
  const s = S();
  const api = s.apis[0]!.url;
  const t = await call(api, s.adminToken, 'POST', '/v1/tenants', {
    name: 'skills-e2e',
    settings: { limits: { memory_bytes: 1024 ** 3, disk_bytes: SMALL_DISK } },
  });
  assert.equal(t.status, 201, t.text);
  const tenantId = String(t.json.id);
  const key = String((await call(api, s.adminToken, 'POST', `/v1/tenants/${tenantId}/api-keys`)).json.key);

  const up = await call(
    api,
    key,
    'PUT',
    '/v1/skills/pdf-tool',
    await skillTarGz('pdf-tool', {
      'SKILL.md':
        '---\nname: pdf-tool\ndescription: Frobnicates PDF files (marker DESC-ZEBRA-42)\n---\n\nSKILL-BODY-MARKER-77: run scripts/hello.sh\n',
      'scripts/hello.sh': '#!/bin/sh\necho hello-from-skill-script\n',
    }),
    { 'content-type': 'application/gzip' },
  );
  assert.equal(up.status, 201, up.text);

  const conv = await call(api, key, 'POST', '/v1/conversations', { workspace_enabled: false });
  assert.equal(conv.status, 201, conv.text);
  const id = String(conv.json.id);

  // an unknown preferred skill is refused before the stream
  const refused = await call(api, key, 'POST', `/v1/conversations/${id}/execute`, {
    prompt: 'x',
    preferred_skills: ['pdf-tool', 'nope'],
  });
  assert.equal(refused.status, 422, refused.text);
  assert.equal(refused.json.code, 'SKILL_UNKNOWN');

  const execute = async (script: ScriptInput, body: Record<string, unknown>) => {
    s.model.setScript(script);
    const from = s.model.requests.length;
    const r = await call(api, key, 'POST', `/v1/conversations/${id}/execute`, body);
    assert.equal(r.status, 200, r.text);
    const events = parseSse(r.text);
    const done = events.at(-1)!;
    assert.equal(done.event, 'done');
    assert.equal(
      done.data.status,
      'completed',
      `${JSON.stringify(done.data)}\n${s.apis[0]!.log.join('').slice(-3000)}`,
    );
    return { events, requests: s.model.requests.slice(from).filter((q) => q.kind === 'main') };
  };
  const outputs = (events: ReturnType<typeof parseSse>): string[] =>
    events.filter((e) => e.event === 'tool_result').map((e) => String(e.data.output));
  const progress = (events: ReturnType<typeof parseSse>, step: string) =>
    events.filter((e) => e.event === 'progress' && e.data.step === step).map((e) => e.data);

  // 1: the Skill tool, then a look around the read-only cwd
  const r1 = await execute(
    {
      turns: [
        { tool: 'Skill', input: { skill: 'hako:pdf-tool' } },
        {
          tool: 'Bash',
          input: {
            command:
              'pwd; ls -A; ./pdf-tool/scripts/hello.sh; (touch new.txt) 2>&1; (echo x >> pdf-tool/SKILL.md) 2>&1; true',
          },
        },
        { text: 'used the skill' },
      ],
    },
    { prompt: 'make a pdf', preferred_skills: ['pdf-tool'] },
  );
  const init = r1.events.find((e) => e.event === 'init');
  assert.ok(init, 'an init event');
  const initMsg = init.data.sdk_message as { skills?: string[]; slash_commands?: string[]; cwd?: string };
  assert.ok(initMsg.skills?.includes('hako:pdf-tool'), `init skills: ${JSON.stringify(initMsg.skills)}`);
  assert.equal(initMsg.cwd, `/skills/${tenantId}`);
  const firstBody = JSON.stringify(r1.requests[0]?.body ?? {});
  assert.ok(firstBody.includes('DESC-ZEBRA-42'), 'the skill description reaches the model');
  assert.ok(
    firstBody.includes('prefer these skills') && firstBody.includes('hako:pdf-tool'),
    'preferred_skills reaches the model',
  );
  // the Skill tool's answer (SKILL.md's body) is in the model's next request
  assert.ok(
    JSON.stringify(r1.requests[1]?.body ?? {}).includes('SKILL-BODY-MARKER-77'),
    'SKILL.md came back',
  );
  const bash = outputs(r1.events).find((o) => o.includes('hello-from-skill-script'));
  assert.ok(bash, `bash output: ${JSON.stringify(outputs(r1.events))}`);
  assert.match(bash, new RegExp(`^/skills/${tenantId}\\n`));
  assert.match(bash, /\.claude-plugin\npdf-tool\n/);
  assert.match(bash, /touch: cannot touch 'new.txt': Read-only file system/);
  assert.match(bash, /(Permission denied|Read-only file system)/);
  const sync1 = progress(r1.events, 'skills_sync').at(-1);
  assert.deepEqual([sync1?.status, sync1?.changed, sync1?.skills], ['done', true, 1]);
  assert.equal(
    progress(r1.events, 'workspace_restore').length,
    0,
    'no workspace restore without a workspace',
  );
  assert.equal(progress(r1.events, 'workspace_sync').length, 0, 'no sync-back without a workspace');
  const files = await call(api, key, 'GET', `/v1/conversations/${id}/files`);
  assert.equal(files.status, 200, files.text);
  assert.deepEqual(files.json.files, [], 'nothing was registered: there is no workspace');

  // 2: nothing changed: the reused sandbox is not rewritten
  const lsScript: ScriptInput = {
    turns: [{ tool: 'Bash', input: { command: `ls /skills/${tenantId}` } }, { text: 'listed' }],
  };
  const r2 = await execute(lsScript, { prompt: 'list' });
  assert.equal(progress(r2.events, 'skills_sync').at(-1)?.changed, false);
  const sandboxOf = (events: ReturnType<typeof parseSse>) =>
    progress(events, 'sandbox').find((p) => p.status === 'done')?.sandbox_id;
  assert.equal(sandboxOf(r2.events), sandboxOf(r1.events), 'the same sandbox');

  // 3: an upload and a delete reach the reused sandbox on its next execute
  const up2 = await call(
    api,
    key,
    'PUT',
    '/v1/skills/docx-tool',
    await skillTarGz('docx-tool', { 'SKILL.md': '---\ndescription: Writes DOCX files\n---\nbody\n' }),
    { 'content-type': 'application/x-tar' },
  );
  assert.equal(up2.status, 201, up2.text);
  assert.equal((await call(api, key, 'DELETE', '/v1/skills/pdf-tool')).status, 204);
  const r3 = await execute(lsScript, { prompt: 'list again' });
  assert.equal(sandboxOf(r3.events), sandboxOf(r1.events), 'still the same sandbox');
  assert.equal(progress(r3.events, 'skills_sync').at(-1)?.changed, true);
  assert.ok(
    outputs(r3.events).some((o) => o.trim() === 'docx-tool'),
    `ls after the change: ${JSON.stringify(outputs(r3.events))}`,
  );
  const init3 = r3.events.find((e) => e.event === 'init')?.data.sdk_message as
    { skills?: string[] } | undefined;
  assert.ok(init3?.skills?.includes('hako:docx-tool') && !init3.skills.includes('hako:pdf-tool'));
});

test('with a workspace the skills are loaded too, and skills the agent writes itself never are', async () => {
  const s = S();
  const api = s.apis[0]!.url;
  const t = await call(api, s.adminToken, 'POST', '/v1/tenants', {
    name: 'skills-ws',
    settings: { limits: { memory_bytes: 1024 ** 3, disk_bytes: SMALL_DISK } },
  });
  const key = String(
    (await call(api, s.adminToken, 'POST', `/v1/tenants/${String(t.json.id)}/api-keys`)).json.key,
  );
  const up = await call(
    api,
    key,
    'PUT',
    '/v1/skills/real-skill',
    await skillTarGz('real-skill', { 'SKILL.md': '---\ndescription: The uploaded one\n---\nbody\n' }),
    { 'content-type': 'application/gzip' },
  );
  assert.equal(up.status, 201, up.text);
  const conv = await call(api, key, 'POST', '/v1/conversations', {});
  const id = String(conv.json.id);
  const plant = (dir: string, name: string) =>
    `mkdir -p ${dir}/${name} && printf -- '---\\nname: ${name}\\ndescription: planted by the agent\\n---\\nx\\n' > ${dir}/${name}/SKILL.md`;
  const run = async (script: ScriptInput) => {
    s.model.setScript(script);
    const r = await call(api, key, 'POST', `/v1/conversations/${id}/execute`, { prompt: 'go' });
    assert.equal(r.status, 200, r.text);
    const events = parseSse(r.text);
    assert.equal(events.at(-1)?.data.status, 'completed', JSON.stringify(events.at(-1)?.data));
    const init = events.find((e) => e.event === 'init')?.data.sdk_message as
      { skills?: string[] } | undefined;
    const outputs = events.filter((e) => e.event === 'tool_result').map((e) => String(e.data.output));
    return { skills: init?.skills ?? [], outputs };
  };
  const first = await run({
    turns: [
      {
        tool: 'Bash',
        input: {
          command: `${plant('/workspace/.claude/skills', 'planted-project')} && ${plant('$HOME/.claude/skills', 'planted-user')} && ${plant('/workspace/.hako/claude/skills', 'planted-config')} && echo PLANTED`,
        },
      },
      { text: 'planted' },
    ],
  });
  assert.ok(first.skills.includes('hako:real-skill'), JSON.stringify(first));
  assert.ok(
    first.outputs.some((o) => o.trim() === 'PLANTED'),
    `planting failed: ${JSON.stringify(first.outputs)}`,
  );
  const second = (await run({ turns: [{ text: 'looked' }] })).skills;
  assert.ok(second.includes('hako:real-skill'), JSON.stringify(second));
  assert.deepEqual(
    second.filter((n) => n.includes('planted')),
    [],
    `skills the agent wrote were loaded: ${JSON.stringify(second)}`,
  );
});
